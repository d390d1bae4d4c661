"""`FullSoftmax`: an exact full-softmax output head that never builds `[batch, V]`.

The training loss is the exact cross-entropy `logsumexp_j(logit_j) - logit_label`, as
`Dense(num_classes)` followed by sparse categorical cross-entropy, computed in the manner
of Cut Cross-Entropy (Wijmans et al., 2024, "Cut Your Losses in Large-Vocabulary Language
Models"; apple/ml-cross-entropy): the forward pass runs a streaming log-sum-exp over
chunks of classes and gathers only the true rows; the backward pass recomputes each
chunk's logits from the saved log-sum-exp and turns them into that chunk's gradient at
once (`tf_sampling._chunked.full_softmax_nll`). Neither the `[batch, V]` logits nor their
gradient ever exist: the extra memory is O(batch x chunk), plus the dense `[V, dim]`
kernel gradient that `Dense` has too. The cost is one more `[batch, dim] x [dim, V]`
matmul per step than `Dense` (the recomputed logits).
"""

import keras
import tensorflow as tf

from tf_sampling import _chunked
from tf_sampling._variables import read_without_copy
from tf_sampling.layers import base
from tf_sampling.losses import _sampled_logits as _sl


@keras.saving.register_keras_serializable(package="tf_sampling")
class FullSoftmax(base.OutputWeights, base.OutputHead):
    """Exact softmax output layer over `num_classes` classes, in bounded memory.

    The exact reference for the sampled and tree heads, with their calling convention
    (`tfs.layers.OutputHead`):

    - `head([inputs, labels], training=True)` (as in `fit`) and `head([inputs, labels])`
      (`evaluate`): add the mean exact cross-entropy with `add_loss` and return the
      per-example loss `[...]`.
    - `head(inputs)`: log-probabilities `[..., num_classes]`, or `(values, indices)` of
      the best classes, as `top_k` says.

    Loss and gradients equal those of `keras.layers.Dense(num_classes)` (kernel
    transposed: here `[num_classes, dim]`, as the other heads and an Embedding) followed
    by `sparse_categorical_crossentropy(from_logits=True)`, but the `[batch, num_classes]`
    logits are never built: classes are processed `chunk_size` at a time, and the backward
    pass recomputes each chunk (see the module docstring).

    Args:
        num_classes: number of classes.
        use_bias: whether the head has a `[num_classes]` bias.
        tied_embedding: optional `keras.layers.Embedding(num_classes, dim)` whose
            `embeddings` are the output weights (weight tying).
        top_k: inference output. An integer k: `(values, indices)` of the k most probable
            classes. None: all log-probabilities. "auto" (default): None up to 65536
            classes, the top 10 above.
        chunk_size: classes per chunk; None (default) chooses it from the batch size so
            that one `[batch, chunk]` float32 tensor stays under 2 MiB (cache-sized) for
            the loss and its gradient, under 64 MiB for the top k.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
        kernel_constraint, bias_constraint: as in `keras.layers.Dense`.

    Example:
    >>> hidden = keras.layers.Dense(64, activation="tanh")(features)
    >>> head = tfs.layers.FullSoftmax(1_000_000)
    >>> model = keras.Model([features, labels], head([hidden, labels]))
    >>> model.compile(optimizer="adam")     # no loss: the head adds it
    >>> model.fit(train_ds)                 # exact cross-entropy, no [batch, V] tensor
    """

    def __init__(self, num_classes, use_bias=True, tied_embedding=None, top_k="auto",
                 chunk_size=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, bias_constraint=None, **kwargs):
        # The weights are read at float32 under mixed precision (no autocast copy of the
        # whole kernel); the loss is computed in float32.
        kwargs.setdefault("autocast", False)
        super().__init__(num_classes, top_k=top_k, **kwargs)
        self.chunk_size = _chunked.check_chunk_size(chunk_size)
        self._init_output_weights(use_bias, tied_embedding, kernel_initializer,
                                  bias_initializer, kernel_regularizer, bias_regularizer,
                                  kernel_constraint, bias_constraint)

    # ------------------------------------------------------------------ building
    def build(self, input_shape):
        self._build_output_weights(input_shape)

    # ------------------------------------------------------------------ inputs
    def _prepare(self, inputs):
        """`inputs` as `[n, dim]` in the compute dtype, its leading shape, the weights."""
        inputs = tf.convert_to_tensor(inputs)
        dtype = _sl.compute_dtype(inputs.dtype)
        if inputs.shape.rank is None or inputs.shape.rank < 2:
            raise ValueError(f"`inputs` must have shape [batch, ..., dim], got {inputs.shape}.")
        if not self.built:
            self.build(inputs.shape)
        _sl.check_inputs(inputs, self.kernel.shape[-1])
        inputs, lead = base.flatten_leading(inputs)
        return tf.cast(inputs, dtype), lead

    def _tf_weights(self):
        # The backing tf.Variables, read at their own (float32) dtype.
        kernel = self.kernel.value
        bias = None if self.bias is None else self.bias.value
        return kernel, bias

    # ------------------------------------------------------------------ forward
    def full_softmax_loss(self, inputs, labels):
        """Exact per-example cross-entropy `[...]` (the training loss), differentiable.

        `labels` are int class ids of shape `inputs.shape[:-1]`.
        """
        inputs = tf.convert_to_tensor(inputs)
        x, lead = self._prepare(inputs)
        labels = tf.convert_to_tensor(labels)
        if not labels.dtype.is_integer:
            raise TypeError(f"`labels` must be an integer tensor (int32 or int64), got dtype "
                            f"{labels.dtype.name}.")
        if labels.shape.rank is not None and inputs.shape.rank is not None and \
                labels.shape.rank not in (inputs.shape.rank - 1, inputs.shape.rank):
            raise ValueError(f"`labels` must have shape {inputs.shape[:-1]}, got "
                             f"{labels.shape}.")
        labels = _sl.check_labels(tf.reshape(labels, [-1]), 1, self.num_classes)
        _sl.check_batch(labels, x)
        kernel, bias = self._tf_weights()
        # Shared buffers, not copies, once a sparse-aware optimizer's blocked dense step
        # (scatters) has put the variables in copy-on-read mode.
        loss = _chunked.full_softmax_nll(
            x, labels[:, 0], read_without_copy(kernel),
            None if bias is None else read_without_copy(bias), chunk_size=self.chunk_size)
        return base.restore_leading(lead, loss)

    def logits(self, inputs):
        """Full `[..., num_classes]` logits (builds the whole matrix)."""
        x, lead = self._prepare(inputs)
        kernel, bias = self._tf_weights()
        out = tf.matmul(x, tf.cast(kernel, x.dtype), transpose_b=True)
        if bias is not None:
            out += tf.cast(bias, x.dtype)
        return base.restore_leading(lead, out)

    def log_prob(self, inputs):
        """Full-softmax log-probabilities `[..., num_classes]` (builds the whole matrix)."""
        return tf.nn.log_softmax(self.logits(inputs))

    def top_k(self, inputs, k=None):
        """Exact `(log_probs, indices)` `[..., k]` of the k most probable classes, equal to
        `tf.math.top_k(self.log_prob(inputs), k)` (indices int32), chunk by chunk. `k`
        defaults to the head's `top_k` argument when it is an integer, else 1."""
        k = self._resolve_k(k)
        x, lead = self._prepare(inputs)
        kernel, bias = self._tf_weights()
        values, ids = _chunked.top_k(x, [kernel], None if bias is None else [bias], k=k,
                                     chunk_size=self.chunk_size)
        return base.restore_leading(lead, values, ids)

    # ------------------------------------------------------------------ Keras plumbing
    def get_config(self):
        config = super().get_config()
        config.update(self._output_weights_config())
        config["chunk_size"] = self.chunk_size
        return config

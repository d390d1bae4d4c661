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
from tf_sampling.layers import _contract
from tf_sampling.losses import _sampled_logits as _sl


@keras.saving.register_keras_serializable(package="tf_sampling")
class FullSoftmax(_contract.FullSoftmaxPlumbing, keras.layers.Layer):
    """Exact softmax output layer over `num_classes` classes, in bounded memory.

    The exact reference for the sampled and tree heads, with their calling convention:

    - `head([inputs, labels], training=True)` (as in `fit`): adds the mean exact
      cross-entropy with `add_loss` and returns the per-example loss `[...]`.
    - `head([inputs, labels], training=False)` (`evaluate`): adds the same exact loss and
      returns the inference output below, except that with a top-k output (`top_k` an
      integer, or "auto" above 65536 classes) it returns the per-example loss, so that
      a functional model has one output structure in `fit` and `evaluate`.
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
        super().__init__(**kwargs)
        self.num_classes = _sl.check_positive_int(num_classes, "num_classes")
        self.use_bias = bool(use_bias)
        self.top_k = _chunked.check_top_k(top_k, self.num_classes)
        self.chunk_size = _chunked.check_chunk_size(chunk_size)
        if isinstance(tied_embedding, dict):
            tied_embedding = keras.saving.deserialize_keras_object(tied_embedding)
        if tied_embedding is not None:
            if not isinstance(tied_embedding, keras.layers.Embedding):
                raise TypeError("`tied_embedding` must be a keras.layers.Embedding, got "
                                f"{type(tied_embedding).__name__}.")
            if tied_embedding.input_dim != self.num_classes:
                raise ValueError(f"`tied_embedding` has input_dim={tied_embedding.input_dim}, "
                                 f"but `num_classes` is {self.num_classes}.")
        self.tied_embedding = tied_embedding
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    # ------------------------------------------------------------------ building
    def build(self, input_shape):
        dim = self._hidden_shape(input_shape)[-1]
        if dim is None:
            raise ValueError("The last dimension of `inputs` must be known to build the head.")
        if self.tied_embedding is not None:
            _contract.build_tied_embedding(self.tied_embedding, dim)
            self._kernel = None
        else:
            self._kernel = self.add_weight(
                name="kernel", shape=(self.num_classes, dim),
                initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.num_classes,), initializer=self.bias_initializer,
                regularizer=self.bias_regularizer, constraint=self.bias_constraint)
        self.built = True

    @property
    def kernel(self):
        """The `[num_classes, dim]` output weights (the tied embeddings, if tied)."""
        if self.tied_embedding is not None:
            return self.tied_embedding.embeddings
        return getattr(self, "_kernel", None)

    # ------------------------------------------------------------------ inputs
    def _prepare(self, inputs):
        """`inputs` as `[n, dim]` in the compute dtype, its leading shape, the weights."""
        inputs = tf.convert_to_tensor(inputs)
        dtype = _sl.compute_dtype(inputs.dtype)
        if inputs.shape.rank is None or inputs.shape.rank < 2:
            raise ValueError(f"`inputs` must have shape [batch, ..., dim], got {inputs.shape}.")
        if not self.built:
            self.build(inputs.shape)
        lead = None
        if inputs.shape.rank > 2:
            lead = tf.shape(inputs)[:-1]
            inputs = tf.reshape(inputs, [-1, inputs.shape[-1]])
        return tf.cast(inputs, dtype), lead

    def _tf_weights(self):
        # The backing tf.Variables, read at their own (float32) dtype.
        kernel = self.kernel.value
        bias = None if self.bias is None else self.bias.value
        return kernel, bias

    # ------------------------------------------------------------------ forward
    @tf.autograph.experimental.do_not_convert
    def call(self, inputs, training=None):
        hidden, labels = self._split(inputs)
        if training and labels is None:
            raise _contract.missing_labels(self)
        k = _chunked.output_top_k(self.top_k, self.num_classes)
        if labels is not None:
            loss = self.full_softmax_loss(hidden, labels)
            self.add_loss(tf.reduce_mean(loss))
            # A top-k head's output given labels is the per-example loss, so that a
            # functional model has one output structure in fit and evaluate.
            if training or k is not None:
                return loss
        if k is not None:
            return self.predict_top_k(hidden, k)
        return self.log_prob(hidden)

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
        loss = _chunked.full_softmax_nll(
            x, labels[:, 0], tf.convert_to_tensor(kernel),
            None if bias is None else tf.convert_to_tensor(bias), chunk_size=self.chunk_size)
        return loss if lead is None else tf.reshape(loss, lead)

    def logits(self, inputs):
        """Full `[..., num_classes]` logits (builds the whole matrix)."""
        x, lead = self._prepare(inputs)
        kernel, bias = self._tf_weights()
        out = tf.matmul(x, tf.cast(kernel, x.dtype), transpose_b=True)
        if bias is not None:
            out += tf.cast(bias, x.dtype)
        return out if lead is None else tf.reshape(out, tf.concat([lead, [-1]], 0))

    def log_prob(self, inputs):
        """Full-softmax log-probabilities `[..., num_classes]` (builds the whole matrix)."""
        return tf.nn.log_softmax(self.logits(inputs))

    def predict_top_k(self, inputs, k):
        """Exact `(log_probs, indices)` `[..., k]` of the k most probable classes, equal to
        `tf.math.top_k(self.log_prob(inputs), k)` (indices int32), chunk by chunk."""
        k = _sl.check_positive_int(k, "k")
        if k > self.num_classes:
            raise ValueError(f"`k`={k} is larger than `num_classes`={self.num_classes}.")
        x, lead = self._prepare(inputs)
        kernel, bias = self._tf_weights()
        values, ids = _chunked.top_k(x, [kernel], None if bias is None else [bias], k=k,
                                     chunk_size=self.chunk_size)
        if lead is not None:
            shape = tf.concat([lead, [k]], 0)
            values, ids = tf.reshape(values, shape), tf.reshape(ids, shape)
        return values, ids

    # ------------------------------------------------------------------ Keras plumbing
    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "use_bias": self.use_bias,
            "tied_embedding": (None if self.tied_embedding is None else
                               keras.saving.serialize_keras_object(self.tied_embedding)),
            "top_k": self.top_k,
            "chunk_size": self.chunk_size,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        })
        return config

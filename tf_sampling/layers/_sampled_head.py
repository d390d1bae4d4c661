"""Shared machinery of the sampled output heads (SampledSoftmax, NCE, NegativeSampling).

A head holds the output layer of a classifier over `num_classes` classes: `kernel`
`[num_classes, dim]` (or the `embeddings` of a tied `keras.layers.Embedding`) and `bias`
`[num_classes]`. While training it computes only the logits of the true and the sampled
classes; otherwise the full softmax.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tf_sampling import samplers as samplers_lib
from tf_sampling.losses import _sampled_logits as _sl


def _is_shape(x):
    return isinstance(x, (tuple, list, tf.TensorShape)) and all(
        d is None or isinstance(d, (int, np.integer)) for d in x)


class SampledHead(keras.layers.Layer):
    """Base class; subclasses set `_loss_kind` ("softmax" or "logistic") and defaults.

    See `SampledSoftmax` for the arguments.
    """

    _loss_kind = None
    # Target of a true class in the logistic losses, as a function of num_true.
    _true_target = staticmethod(lambda num_true: 1.0)

    def __init__(self, num_classes, num_sampled, num_true=1, sampler="log_uniform",
                 tied_embedding=None, use_bias=True, remove_accidental_hits=False,
                 subtract_log_q=True, unique=True, top_k=None, seed=None,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, **kwargs):
        # The weights are read at their own dtype (float32 under mixed precision): the
        # sampled rows are gathered without an autocast copy of the whole matrix, and the
        # loss and log-probs are computed in float32.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.num_classes = _sl.check_positive_int(num_classes, "num_classes")
        self.num_true = _sl.check_positive_int(num_true, "num_true")
        self.unique = bool(unique)
        self.num_sampled = _sl.check_num_sampled(num_sampled, self.num_classes, self.unique)
        self.remove_accidental_hits = bool(remove_accidental_hits)
        self.subtract_log_q = bool(subtract_log_q)
        self.use_bias = bool(use_bias)
        if top_k is not None:
            top_k = _sl.check_positive_int(top_k, "top_k")
            if top_k > self.num_classes:
                raise ValueError(
                    f"`top_k`={top_k} is larger than `num_classes`={self.num_classes}.")
        self.top_k = top_k
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an integer or None, got {seed!r}.")
        self.seed = seed

        try:
            if isinstance(sampler, str):
                sampler = samplers_lib.get(sampler, self.num_classes, seed=seed)
            else:
                sampler = samplers_lib.get(sampler, self.num_classes)
        except (TypeError, ValueError) as e:
            raise type(e)(f"`sampler`: {e}") from None
        self.sampler = sampler
        # Keras' jit_compile="auto" compiles only models whose layers all support XLA.
        self.supports_jit = bool(getattr(sampler, "supports_xla", False))

        if isinstance(tied_embedding, dict):
            tied_embedding = keras.saving.deserialize_keras_object(tied_embedding)
        if tied_embedding is not None:
            if not isinstance(tied_embedding, keras.layers.Embedding):
                raise TypeError(
                    "`tied_embedding` must be a keras.layers.Embedding, got "
                    f"{type(tied_embedding).__name__}.")
            if tied_embedding.input_dim != self.num_classes:
                raise ValueError(
                    f"`tied_embedding` has input_dim={tied_embedding.input_dim}, but "
                    f"`num_classes` is {self.num_classes}.")
        self.tied_embedding = tied_embedding

        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    # ------------------------------------------------------------------ building
    @staticmethod
    def _hidden_shape(input_shape):
        if _is_shape(input_shape):
            return tuple(input_shape)
        if isinstance(input_shape, (list, tuple)) and len(input_shape) in (1, 2):
            return tuple(input_shape[0])
        raise ValueError(
            f"Expected `inputs` or `[inputs, labels]`, got shapes {input_shape}.")

    def build(self, input_shape):
        hidden = self._hidden_shape(input_shape)
        dim = hidden[-1]
        if dim is None:
            raise ValueError(f"The last dimension of `inputs` must be known, got {hidden}.")
        if self.tied_embedding is not None:
            if not self.tied_embedding.built:
                self.tied_embedding.build()
            if self.tied_embedding.output_dim != dim:
                raise ValueError(
                    f"`tied_embedding` has output_dim={self.tied_embedding.output_dim}, but "
                    f"`inputs` have dimension {dim}.")
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
        self.dim = dim
        self.built = True

    @property
    def kernel(self):
        """The `[num_classes, dim]` output weights (the tied embeddings, if tied)."""
        if self.tied_embedding is not None:
            return self.tied_embedding.embeddings
        return self._kernel

    def _weights_tf(self):
        # The backing tf.Variables: tf.gather on them is a sparse read, and they are read
        # at float32 whatever the layer's dtype policy.
        bias = None if self.bias is None else [self.bias.value]
        return [self.kernel.value], bias

    # ------------------------------------------------------------------ inputs
    def _split(self, inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) == 2:
                return inputs[0], inputs[1]
            if len(inputs) == 1:
                return inputs[0], None
            raise ValueError(f"Expected `inputs` or `[inputs, labels]`, got {len(inputs)} "
                             "tensors.")
        return inputs, None

    def _flatten(self, hidden, labels):
        """hidden `[..., dim]` -> `[n, dim]`; labels `[...]`/`[..., num_true]` -> `[n, nt]`."""
        hidden = tf.convert_to_tensor(hidden)
        _sl.compute_dtype(hidden.dtype)
        rank = hidden.shape.rank
        if rank is None or rank < 2:
            raise ValueError(f"`inputs` must have shape [batch, ..., dim], got {hidden.shape}.")
        if labels is None:
            return hidden, None, None
        labels = tf.convert_to_tensor(labels)
        if not labels.dtype.is_integer:
            raise TypeError(f"`labels` must be an integer tensor (int32 or int64), got dtype "
                            f"{labels.dtype.name}.")
        lead = None
        if rank > 2:
            lead = tf.shape(hidden)[:-1]
            hidden = tf.reshape(hidden, [-1, hidden.shape[-1]])
            if labels.shape.rank == rank - 1 and self.num_true == 1:
                labels = tf.reshape(labels, [-1])
            elif labels.shape.rank == rank:
                labels = tf.reshape(labels, [-1, labels.shape[-1] or self.num_true])
            else:
                raise ValueError(
                    f"`labels` must have shape {hidden.shape[:-1]} or [..., num_true], got "
                    f"{labels.shape} for inputs of rank {rank}.")
        labels = _sl.check_labels(labels, self.num_true, self.num_classes)
        _sl.check_batch(labels, hidden)
        return hidden, labels, lead

    # ------------------------------------------------------------------ forward
    # Plain TF ops only: autograph conversion would only slow down tracing.
    @tf.autograph.experimental.do_not_convert
    def call(self, inputs, training=None):
        hidden, labels = self._split(inputs)
        if training and labels is not None:
            hidden, labels, lead = self._flatten(hidden, labels)
            loss = self._sampled_loss(hidden, labels)
            self.add_loss(tf.reduce_mean(loss))
            return loss if lead is None else tf.reshape(loss, lead)
        log_probs = self.log_prob(hidden)
        if labels is not None:
            # Evaluation: the exact cross-entropy, so `val_loss` is exact and
            # exp(val_loss) is the perplexity.
            self.add_loss(tf.reduce_mean(self._nll(log_probs, labels)))
        if self.top_k is not None:
            values, indices = tf.math.top_k(log_probs, k=self.top_k)
            return values, indices
        return log_probs

    def _sampled_loss(self, hidden, labels, update=True):
        weights, biases = self._weights_tf()
        sampled_values = self.sampler.sample(labels, self.num_sampled, unique=self.unique)
        if update and self.sampler.learns:
            # After the draw, as TF's learned-unigram op: this step samples from the
            # counts of the steps before it.
            self.sampler.update(labels)
        true_logits, logits = _sl.sampled_logits(
            weights, biases, labels, hidden, sampled_values, self.num_true,
            self.subtract_log_q, self.remove_accidental_hits,
            weight_rows=[self.num_classes])
        if self._loss_kind == "softmax":
            return _sl.softmax_loss(true_logits, logits, self.num_true)
        return _sl.logistic_loss(true_logits, logits, self._true_target(self.num_true))

    def sampled_loss(self, inputs, labels):
        """The per-example sampled training loss (what a training call returns), without
        `add_loss` and without updating the sampler. A noisy, biased training objective,
        not an evaluation metric."""
        hidden, labels, lead = self._flatten(inputs, labels)
        loss = self._sampled_loss(hidden, labels, update=False)
        return loss if lead is None else tf.reshape(loss, lead)

    def logits(self, inputs):
        """Full `[..., num_classes]` logits `inputs @ kernel^T + bias` (float32 or float64)."""
        inputs = tf.convert_to_tensor(inputs)
        dtype = _sl.compute_dtype(inputs.dtype)
        if inputs.shape.rank is None or inputs.shape.rank < 2:
            raise ValueError(f"`inputs` must have shape [batch, ..., dim], got {inputs.shape}.")
        if not self.built:
            self.build(inputs.shape)
        weights, biases = self._weights_tf()
        w = tf.cast(weights[0], dtype) if weights[0].dtype != dtype else weights[0]
        inputs = tf.cast(inputs, dtype)
        if inputs.shape.rank == 2:
            out = tf.matmul(inputs, w, transpose_b=True)
        else:
            out = tf.tensordot(inputs, w, [[inputs.shape.rank - 1], [1]])
        if biases is not None:
            out += tf.cast(biases[0], dtype)
        return out

    def log_prob(self, inputs):
        """Full-softmax log-probabilities `[..., num_classes]` of every class."""
        return tf.nn.log_softmax(self.logits(inputs))

    def _nll(self, log_probs, labels):
        lead_rank = log_probs.shape.rank - 1
        labels = tf.convert_to_tensor(labels)
        if not labels.dtype.is_integer:
            raise TypeError(f"`labels` must be an integer tensor (int32 or int64), got dtype "
                            f"{labels.dtype.name}.")
        if labels.shape.rank == lead_rank:
            if self.num_true != 1:
                raise ValueError(f"`labels` must have a last dimension num_true="
                                 f"{self.num_true}, got shape {labels.shape}.")
            labels = tf.expand_dims(labels, -1)
        elif labels.shape.rank != lead_rank + 1:
            raise ValueError(f"`labels` must have shape {log_probs.shape[:-1]} or "
                             f"[..., num_true], got {labels.shape}.")
        if labels.shape[:-1].is_fully_defined() and log_probs.shape[:-1].is_fully_defined() \
                and labels.shape[:-1] != log_probs.shape[:-1]:
            raise ValueError(f"`labels` has shape {labels.shape}, which does not match "
                             f"`inputs` (leading shape {log_probs.shape[:-1]}).")
        flat = _sl.check_labels(tf.reshape(labels, [-1, labels.shape[-1] or self.num_true]),
                                self.num_true, self.num_classes)
        labels = tf.reshape(flat, tf.shape(labels))
        # Target 1/num_true on each true class, the distribution the sampled softmax fits.
        picked = tf.gather(log_probs, labels, batch_dims=lead_rank)
        return -tf.reduce_mean(picked, -1)

    def full_softmax_loss(self, inputs, labels):
        """Exact per-example cross-entropy under the full softmax (for evaluation).

        With num_true > 1 it is the cross-entropy against the target 1/num_true on each
        true class, the distribution the sampled softmax is trained towards.
        """
        return self._nll(self.log_prob(inputs), labels)

    def perplexity(self, inputs, labels, batch_size=1024):
        """exp(mean exact cross-entropy) over all examples, in batches of `batch_size`.

        `inputs`/`labels` are arrays or tensors (the hidden states fed to this head and
        the true ids). Returns a Python float.
        """
        batch_size = _sl.check_positive_int(batch_size, "batch_size")
        inputs = tf.convert_to_tensor(inputs)
        labels = tf.convert_to_tensor(labels)
        n = int(inputs.shape[0])
        if n == 0:
            raise ValueError("`inputs` is empty.")
        total, count = 0.0, 0
        for start in range(0, n, batch_size):
            nll = self.full_softmax_loss(inputs[start:start + batch_size],
                                         labels[start:start + batch_size])
            total += float(tf.reduce_sum(tf.cast(nll, tf.float64)))
            count += int(tf.size(nll))
        return math.exp(total / count)

    # ------------------------------------------------------------------ Keras plumbing
    def compute_output_shape(self, input_shape):
        hidden = self._hidden_shape(input_shape)
        if self.top_k is not None:
            return hidden[:-1] + (self.top_k,), hidden[:-1] + (self.top_k,)
        return hidden[:-1] + (self.num_classes,)

    def compute_output_spec(self, inputs, training=None):
        hidden, _ = self._split(inputs)
        shape = self.compute_output_shape(tuple(hidden.shape))
        dtype = "float64" if hidden.dtype == "float64" else "float32"
        if self.top_k is not None:
            return (keras.KerasTensor(shape[0], dtype=dtype),
                    keras.KerasTensor(shape[1], dtype="int32"))
        return keras.KerasTensor(shape, dtype=dtype)

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "num_sampled": self.num_sampled,
            "num_true": self.num_true,
            "sampler": keras.saving.serialize_keras_object(self.sampler),
            # Serialized in full; inside model.save() Keras' object sharing makes the
            # loaded head and the loaded model share one Embedding instance again.
            "tied_embedding": (None if self.tied_embedding is None else
                               keras.saving.serialize_keras_object(self.tied_embedding)),
            "use_bias": self.use_bias,
            "remove_accidental_hits": self.remove_accidental_hits,
            "subtract_log_q": self.subtract_log_q,
            "unique": self.unique,
            "top_k": self.top_k,
            "seed": self.seed,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        })
        return config

"""`OutputHead`: the base class of every output head, and the one `call` they share.

A head owns the output layer of a classifier over `num_classes` classes. Every head of
this package is called the same way:

- `head([inputs, labels], training=True)` (as in `model.fit`): adds the mean training
  loss with `add_loss` and returns the per-example training loss `inputs.shape[:-1]`.
- `head([inputs, labels])` with `training` False or None (`model.evaluate`, plain calls):
  adds the mean exact loss (the full-softmax cross-entropy, or the exact NLL of a tree or
  adaptive softmax) and returns the per-example exact loss. So `val_loss` is exact, and a
  functional model has one output structure in `fit` and `evaluate`.
- `head(inputs)` with `training` False or None (`model.predict`): all log-probabilities
  `[..., num_classes]`, or `(values, indices)` `[..., k]` of the k most probable classes,
  as the head's `top_k` argument says ("auto": all up to 65536 classes, the top 10 above).
- `head(inputs, training=True)`: a `ValueError` that says how to pass the labels.

`training=None` is inference, as in Keras' own layers outside `fit`.

A subclass implements what differs (fastText's `Loss` interface, where hierarchical
softmax overrides only `predict`):
- `full_softmax_loss(inputs, labels)`: the exact per-example loss;
- `log_prob(inputs)`: the `[..., num_classes]` log-probabilities;
- `top_k(inputs, k=None)`: the exact top k, fast where the head has a fast path (the
  default takes `tf.math.top_k` of `log_prob`);
- `_training_loss(inputs, labels)` if its training loss is not the exact one (the
  sampled heads).
Input splitting, the label requirement, `add_loss`, the output spec, `perplexity` and
the `num_classes`/`top_k` part of the config live here once.

Example: a head of one's own.
>>> @keras.saving.register_keras_serializable()
... class DenseHead(tfs.layers.OutputHead):
...     def build(self, input_shape):
...         dim = self.hidden_shape(input_shape)[-1]
...         self.kernel = self.add_weight(shape=(dim, self.num_classes))
...     def log_prob(self, inputs):
...         return tf.nn.log_softmax(inputs @ self.kernel)
...     def full_softmax_loss(self, inputs, labels):
...         return -tf.gather(self.log_prob(inputs), labels, batch_dims=1)
"""

import numbers
import warnings

import keras
import numpy as np
import tensorflow as tf

from tf_sampling import _chunked


def is_shape(x):
    """Whether `x` is one shape (a tuple/list of ints and Nones), not a list of shapes."""
    return isinstance(x, (tuple, list, tf.TensorShape)) and all(
        d is None or isinstance(d, (int, np.integer)) for d in x)


def check_num_classes(num_classes, minimum=1):
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) \
            or num_classes < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`num_classes` must be {what}, got {num_classes!r}.")
    return int(num_classes)


def check_k(k, num_classes):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= num_classes:
        raise ValueError(f"`k` must be an integer in [1, num_classes={num_classes}], got "
                         f"{k!r}.")
    return int(k)


def deprecated_argument(kwargs, old, new, value, default, owner):
    """`value`, or the value passed under the old name `old` (with a DeprecationWarning).

    `default` is `new`'s default: passing both names with a non-default `value` is an
    error rather than a silent choice.
    """
    if old not in kwargs:
        return value
    old_value = kwargs.pop(old)
    warnings.warn(f"{owner}: `{old}` is deprecated and will be removed in the next release; "
                  f"use `{new}`.", DeprecationWarning, stacklevel=3)
    if value is not default and value != old_value:
        raise ValueError(f"{owner}: pass `{new}` only (`{old}` is its deprecated name).")
    return old_value


def build_tied_embedding(tied_embedding, dim):
    """Builds a tied `keras.layers.Embedding` if needed and checks its width is `dim`."""
    if not tied_embedding.built:
        tied_embedding.build()
    if tied_embedding.output_dim != dim:
        raise ValueError(
            f"`tied_embedding` has output_dim={tied_embedding.output_dim}, but `inputs` have "
            f"dimension {dim}.")


def check_tied_embedding(tied_embedding, num_classes):
    if tied_embedding is None:
        return None
    if not isinstance(tied_embedding, keras.layers.Embedding):
        raise TypeError("`tied_embedding` must be a keras.layers.Embedding, got "
                        f"{type(tied_embedding).__name__}.")
    if tied_embedding.input_dim != num_classes:
        raise ValueError(f"`tied_embedding` has input_dim={tied_embedding.input_dim}, "
                         f"but `num_classes` is {num_classes}.")
    return tied_embedding


class OutputWeights:
    """The `[num_classes, dim]` kernel and `[num_classes]` bias of a head, or the table of a
    tied `keras.layers.Embedding(num_classes, dim)` as its kernel: their arguments, build
    and config, once. Mixed into the heads that score classes by `inputs @ kernel^T +
    bias`."""

    def _init_output_weights(self, use_bias, tied_embedding, kernel_initializer,
                             bias_initializer, kernel_regularizer, bias_regularizer,
                             kernel_constraint, bias_constraint):
        if isinstance(tied_embedding, dict):
            # Inside a model's deserialization this resolves to the model's own Embedding
            # layer (Keras shares objects serialized more than once), so tying survives.
            tied_embedding = keras.saving.deserialize_keras_object(tied_embedding)
        self.tied_embedding = check_tied_embedding(tied_embedding, self.num_classes)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    @staticmethod
    def _input_dim(input_shape):
        dim = OutputHead.hidden_shape(input_shape)[-1]
        if dim is None:
            raise ValueError("The last dimension of `inputs` must be known to build the head.")
        return int(dim)

    def _build_output_weights(self, input_shape):
        dim = self._input_dim(input_shape)
        if self.tied_embedding is not None:
            build_tied_embedding(self.tied_embedding, dim)
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

    def _output_weights_config(self):
        return {
            "use_bias": self.use_bias,
            # Serialized in full; inside model.save() Keras' object sharing makes the
            # loaded head and the loaded model share one Embedding instance again.
            "tied_embedding": (None if self.tied_embedding is None else
                               keras.saving.serialize_keras_object(self.tied_embedding)),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
        }


def flatten_leading(inputs):
    """`[..., dim]` -> (`[n, dim]`, the leading shape or None if already rank 2)."""
    if inputs.shape.rank is not None and inputs.shape.rank > 2:
        return tf.reshape(inputs, [-1, inputs.shape[-1]]), tf.shape(inputs)[:-1]
    return inputs, None


def restore_leading(lead, *tensors):
    """Reshapes each `[n, k]` (or `[n]`) tensor back to `lead + [k]` (or `lead`)."""
    if lead is None:
        return tensors if len(tensors) > 1 else tensors[0]
    out = tuple(tf.reshape(t, tf.concat([lead, tf.shape(t)[1:]], 0)) for t in tensors)
    return out if len(out) > 1 else out[0]


def missing_labels(head, call="head([inputs, labels], training=True)"):
    """The error of a training call without labels, saying how to pass them."""
    return ValueError(
        f"{type(head).__name__} was called with `training=True` but without labels: a "
        f"training call needs them, as `{call}`. In a functional model, add the labels as "
        "an input, `labels = keras.Input(shape=(), dtype='int32')`, build "
        "`keras.Model([x, labels], head([hidden, labels]))` and compile without a loss; or "
        "wrap a features model as `tfs.models.HeadModel(features, head)` to train with "
        "`model.fit(x, y)` and predict with `model.predict(x)`.")


class OutputHead(keras.layers.Layer):
    """Base class of the output heads: one `call` (see the module docstring).

    Args:
        num_classes: number of classes.
        top_k: what inference returns. An integer k: `(values, indices)` of the k most
            probable classes (the head's exact `top_k`). None: all `[..., num_classes]`
            log-probabilities. "auto": None up to 65536 classes
            (`tf_sampling._chunked.AUTO_FULL_MAX_CLASSES`), the top 10 above, so that
            `model.predict` stays in bounded memory at any number of classes.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).
    """

    # How a training call passes the labels, for the error of a call without them.
    _labelled_call = "head([inputs, labels], training=True)"
    _min_classes = 1

    def __init__(self, num_classes, top_k="auto", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_num_classes(num_classes, self._min_classes)
        self.default_top_k = _chunked.check_top_k(top_k, self.num_classes)

    # ------------------------------------------------------------------ what heads implement
    def full_softmax_loss(self, inputs, labels):
        """Exact per-example loss `inputs.shape[:-1]`: the cross-entropy of the head's
        normalised distribution (what `model.evaluate` reports)."""
        raise NotImplementedError(f"{type(self).__name__} does not define full_softmax_loss.")

    def log_prob(self, inputs):
        """Log-probabilities `[..., num_classes]` of every class."""
        raise NotImplementedError(f"{type(self).__name__} does not define log_prob.")

    def top_k(self, inputs, k=None):
        """Exact `(log_probs, indices)` `[..., k]` of the k most probable classes, equal to
        `tf.math.top_k(self.log_prob(inputs), k)` (indices int32, ties: lower id first).

        `k` defaults to the head's `top_k` argument when it is an integer, else 1.
        """
        k = self._resolve_k(k)
        values, indices = tf.math.top_k(self.log_prob(inputs), k)
        return values, tf.cast(indices, tf.int32)

    def _training_loss(self, inputs, labels):
        """Per-example training loss of a training call (the exact loss by default)."""
        return self.full_softmax_loss(inputs, labels)

    # ------------------------------------------------------------------ the shared call
    @tf.autograph.experimental.do_not_convert
    def call(self, inputs, training=None):
        hidden, labels, context = self._split(inputs)
        if labels is None:
            if training:
                raise missing_labels(self, self._labelled_call)
            return self._inference(hidden, context)
        loss = self._loss(hidden, labels, context, training=bool(training))
        self.add_loss(tf.reduce_mean(loss))
        return loss

    def _split(self, inputs):
        """`(hidden, labels, context)` from `inputs` or `[inputs, labels]`; `context` is
        what a head needs besides (CandidateSoftmax's candidates)."""
        if isinstance(inputs, (list, tuple)):
            if len(inputs) == 2:
                return inputs[0], inputs[1], None
            if len(inputs) == 1:
                return inputs[0], None, None
            raise ValueError(f"{type(self).__name__} takes `inputs` or `[inputs, labels]`, "
                             f"got {len(inputs)} tensors.")
        return inputs, None, None

    def _loss(self, hidden, labels, context, training):
        if training:
            return self._training_loss(hidden, labels)
        return self.full_softmax_loss(hidden, labels)

    def _inference(self, hidden, context):
        k = self.output_k
        return self.log_prob(hidden) if k is None else self.top_k(hidden, k)

    @property
    def output_k(self):
        """The k of an inference call's top-k output, or None for all log-probabilities."""
        return _chunked.output_top_k(self.default_top_k, self.num_classes)

    def _resolve_k(self, k):
        if k is None:
            k = self.default_top_k if isinstance(self.default_top_k, int) else 1
        return check_k(k, self.num_classes)

    # ------------------------------------------------------------------ helpers
    def perplexity(self, inputs, labels, batch_size=1024):
        """exp(mean exact loss) over all examples, in batches of `batch_size`.

        `inputs`/`labels` are arrays or tensors (the hidden states fed to this head and
        the true ids). Returns a Python float.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        return _chunked.perplexity(self.full_softmax_loss, inputs, labels, int(batch_size))

    def predict_top_k(self, inputs, k):
        """Deprecated name of `top_k(inputs, k)`."""
        warnings.warn("`predict_top_k` is deprecated and will be removed in the next release; "
                      "use `top_k(inputs, k)`.", DeprecationWarning, stacklevel=2)
        return self.top_k(inputs, k)

    @staticmethod
    def hidden_shape(input_shape):
        """The shape of `inputs` from `input_shape` (one shape, or a list of shapes whose
        first is that of `inputs`)."""
        if is_shape(input_shape):
            return tuple(input_shape)
        if isinstance(input_shape, (list, tuple)) and input_shape and is_shape(input_shape[0]):
            return tuple(input_shape[0])
        raise ValueError(f"Expected the shape of `inputs` or of `[inputs, labels]`, got "
                         f"{input_shape}.")

    # ------------------------------------------------------------------ Keras plumbing
    def _output_dtype(self, hidden_dtype):
        return "float64" if hidden_dtype == "float64" else "float32"

    def compute_output_shape(self, input_shape):
        lead = self.hidden_shape(input_shape)[:-1]
        if not is_shape(input_shape) and len(input_shape) >= 2:
            return lead  # the per-example loss
        k = self.output_k
        if k is not None:
            return lead + (k,), lead + (k,)
        return lead + (self.num_classes,)

    def compute_output_spec(self, inputs, training=None):
        hidden, labels, context = self._split(inputs)
        dtype = self._output_dtype(hidden.dtype)
        lead = tuple(hidden.shape)[:-1]
        if labels is not None:
            return keras.KerasTensor(lead, dtype=dtype)
        return self._inference_spec(hidden, context, dtype)

    def _inference_spec(self, hidden, context, dtype):
        lead = tuple(hidden.shape)[:-1]
        k = self.output_k
        if k is not None:
            return (keras.KerasTensor(lead + (k,), dtype=dtype),
                    keras.KerasTensor(lead + (k,), dtype="int32"))
        return keras.KerasTensor(lead + (self.num_classes,), dtype=dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "top_k": self.default_top_k})
        return config

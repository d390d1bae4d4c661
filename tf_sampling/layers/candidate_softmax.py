"""Keras head for softmax over per-example candidate sets (see `losses.candidate_softmax`)."""

import numbers

import keras
import tensorflow as tf

from tf_sampling import _chunked
from tf_sampling.layers import _contract
from tf_sampling.losses.candidate_softmax import candidate_log_softmax, loss_and_log_softmax

_POSITIVE_MODES = ("index", "id")


def _is_shape_list(input_shape):
    return isinstance(input_shape, (list, tuple)) and len(input_shape) > 0 and \
        isinstance(input_shape[0], (list, tuple, tf.TensorShape))


@keras.saving.register_keras_serializable(package="tf_sampling")
class CandidateSoftmax(keras.layers.Layer):
    """Output head: softmax over each example's own candidate classes.

    Each example comes with its own candidates (legal moves, items shown to a user), a
    `tf.RaggedTensor` `[batch, (n_i)]` of class ids, or a dense `[batch, n]` int tensor in
    which `padding_id` marks unused slots. The loss is the cross-entropy of the softmax
    over those candidates only, computed in O(sum n_i * dim) for ragged input.

    Call with:
        - `[inputs, candidates, positives]` (optionally a 4th entry, `candidate_log_q`,
          laid out like `candidates`): adds the mean loss with `add_loss`; with
          `training=True` (as in `fit`) returns the per-example loss `[batch]`, otherwise
          (`evaluate`, `predict`, plain calls) the log-probabilities below. `positives`
          are positions within each row (`positive="index"`) or class ids (`positive="id"`).
        - `[inputs, candidates]`: log-probabilities over each row's candidates, ragged
          `[batch, (n_i)]` (dense `[batch, n]` with -inf in padded slots for dense
          candidates).
        - `inputs` alone: full log-probabilities `[batch, num_classes]`, or
          `(values, indices)` of the best classes, as `top_k` says.
        A call with `training=True` but without `positives` raises a `ValueError`:
        training needs them.

    Args:
        num_classes: number of classes (rows of the output weights).
        positive: "index" (default) or "id": how `positives` name the positive.
        use_bias: whether to learn a `[num_classes]` bias.
        tied_embedding: optional `keras.layers.Embedding(num_classes, dim)` whose table is
            used as the output weights (weight tying); the head then owns only the bias.
        padding_id: for dense candidates, the id that marks padding (default -1); None
            means dense candidates have no padding.
        allow_duplicates: whether a class may appear twice in one row of candidates (it
            then counts twice in the softmax). Default False: a repeat raises
            `InvalidArgumentError` (in `fit` too), since it is usually a data bug; padding
            slots are not checked. True suits candidates drawn with replacement, given
            with their `candidate_log_q`.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer: as in
            `keras.layers.Embedding` / `Dense`, for the owned weights.
        top_k: output of a call on `inputs` alone. An integer k: `(values, indices)` of
            the k most probable classes over all classes, found chunk by chunk. None: the
            `[batch, num_classes]` log-probabilities. "auto" (default): None up to 65536
            classes, the top 10 above.
        chunk_size: classes per chunk of `full_softmax_loss`, `perplexity` and
            `predict_top_k`; None (default) chooses it from the batch size: batch x chunk
            float32 under 2 MiB (cache-sized) for the loss, under 64 MiB for the top k.

    The loss is over the given candidates only; `full_softmax_loss(inputs, labels)` and
    `perplexity(inputs, labels)` give the exact NLL over all classes for evaluation,
    computed over chunks of classes without the `[batch, num_classes]` logits.

    Example:
    >>> x = keras.Input((16,))
    >>> cands = keras.Input((None,), ragged=True, dtype="int64")
    >>> pos = keras.Input((), dtype="int64")
    >>> h = keras.layers.Dense(32)(x)
    >>> loss = tfs.layers.CandidateSoftmax(num_classes=5000)([h, cands, pos])
    >>> model = keras.Model([x, cands, pos], loss)
    >>> model.compile(optimizer="adam")
    >>> model.fit(dataset.ragged_batch(64), epochs=3)   # yields ((x, cands, pos),)
    """

    def __init__(self, num_classes, positive="index", use_bias=True, tied_embedding=None,
                 padding_id=-1, allow_duplicates=False, kernel_initializer="uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 top_k="auto", chunk_size=None,
                 **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) \
                or num_classes <= 0:
            raise ValueError(f"`num_classes` must be a positive integer, got {num_classes!r}.")
        if positive not in _POSITIVE_MODES:
            raise ValueError(f"`positive` must be one of {_POSITIVE_MODES}, got {positive!r}.")
        if padding_id is not None and (isinstance(padding_id, bool)
                                       or not isinstance(padding_id, numbers.Integral)):
            raise ValueError(f"`padding_id` must be an integer or None, got {padding_id!r}.")
        if not isinstance(allow_duplicates, bool):
            raise ValueError(f"`allow_duplicates` must be a bool, got {allow_duplicates!r}.")
        if isinstance(tied_embedding, dict):
            # Inside a model's deserialization this resolves to the model's own Embedding
            # layer (Keras shares objects serialized more than once), so tying survives.
            tied_embedding = keras.saving.deserialize_keras_object(tied_embedding)
        if tied_embedding is not None:
            if not isinstance(tied_embedding, keras.layers.Embedding):
                raise TypeError(
                    f"`tied_embedding` must be a keras.layers.Embedding, got {tied_embedding!r}.")
            if tied_embedding.input_dim != num_classes:
                raise ValueError(
                    f"`tied_embedding` has input_dim={tied_embedding.input_dim} but "
                    f"`num_classes`={num_classes}.")
        self.num_classes = int(num_classes)
        self.top_k = _chunked.check_top_k(top_k, self.num_classes)
        self.chunk_size = _chunked.check_chunk_size(chunk_size)
        self.positive = positive
        self.use_bias = bool(use_bias)
        self.tied_embedding = tied_embedding
        self.padding_id = None if padding_id is None else int(padding_id)
        self.allow_duplicates = allow_duplicates
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        # Ragged segment reductions, dynamic-shape id checks: no XLA.
        self.supports_jit = False
        # Under a mixed policy, autocasting would copy the whole [num_classes, dim] kernel
        # to float16 at each step; the loss casts only the gathered rows instead.
        self.autocast = False

    # ----------------------------------------------------------------- build
    def build(self, input_shape):
        shape = input_shape[0] if _is_shape_list(input_shape) else input_shape
        dim = shape[-1]
        if dim is None:
            raise ValueError("The last dimension of `inputs` must be known to build the head.")
        if self.tied_embedding is not None:
            _contract.build_tied_embedding(self.tied_embedding, dim)
            self.kernel = None
        else:
            self.kernel = self.add_weight(
                shape=(self.num_classes, dim), initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer, name="kernel")
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(self.num_classes,), initializer=self.bias_initializer,
                regularizer=self.bias_regularizer, name="bias")
        else:
            self.bias = None
        self.built = True

    def _weights(self):
        if self.tied_embedding is not None:
            return self.tied_embedding.embeddings
        return self.kernel

    # ----------------------------------------------------------------- call
    def _unpack(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            return inputs, None, None, None
        if not 1 <= len(inputs) <= 4:
            raise ValueError(
                "Expected `inputs`, `[inputs, candidates]`, `[inputs, candidates, positives]` "
                f"or `[inputs, candidates, positives, candidate_log_q]`; got {len(inputs)} "
                "entries.")
        parts = list(inputs) + [None] * (4 - len(inputs))
        if parts[1] is None and parts[2] is not None:
            raise ValueError("`positives` were given without `candidates`.")
        return tuple(parts)

    def _mask(self, candidates):
        if isinstance(candidates, tf.RaggedTensor) or self.padding_id is None:
            return None
        return tf.not_equal(candidates, tf.cast(self.padding_id, candidates.dtype))

    def call(self, inputs, training=None):
        x, candidates, positives, log_q = self._unpack(inputs)
        if training and positives is None:
            raise _contract.missing_labels(
                self, call="head([inputs, candidates, positives], training=True)")
        if candidates is None:
            k = _chunked.output_top_k(self.top_k, self.num_classes)
            return self.log_prob(x) if k is None else self.predict_top_k(x, k)
        if positives is None:
            return self.candidate_log_prob(x, candidates, candidate_log_q=log_q)
        kw = {"positive_index": None, "positive_ids": None}
        kw["positive_index" if self.positive == "index" else "positive_ids"] = positives
        # The candidate loss is exact (not sampled), so evaluation adds the same loss:
        # `val_loss` from `model.evaluate` is the candidate NLL.
        loss, log_probs = loss_and_log_softmax(
            self._weights(), self.bias, x, candidates, candidate_mask=self._mask(candidates),
            candidate_log_q=log_q, with_log_softmax=not training,
            allow_duplicates=self.allow_duplicates, **kw)
        self.add_loss(tf.reduce_mean(loss))
        return loss if training else log_probs

    # ----------------------------------------------------------------- evaluation
    def candidate_log_prob(self, inputs, candidates, candidate_log_q=None):
        """Log-probabilities over each row's candidates (ragged in, ragged out)."""
        return candidate_log_softmax(
            self._weights(), self.bias, inputs, candidates,
            candidate_mask=self._mask(candidates), candidate_log_q=candidate_log_q,
            allow_duplicates=self.allow_duplicates)

    def logits(self, inputs):
        """Full logits `[batch, num_classes]`."""
        w = tf.cast(self._weights(), inputs.dtype)
        out = tf.matmul(inputs, w, transpose_b=True)
        if out.dtype in (tf.float16, tf.bfloat16):
            out = tf.cast(out, tf.float32)
        if self.bias is not None:
            out += tf.cast(self.bias, out.dtype)
        return out

    def log_prob(self, inputs):
        """Full log-probabilities `[batch, num_classes]` (the softmax over every class)."""
        return tf.nn.log_softmax(self.logits(inputs), axis=-1)

    def _chunked_weights(self, inputs):
        inputs = tf.convert_to_tensor(inputs)
        if not inputs.dtype.is_floating:
            raise TypeError(f"`inputs` must be a float tensor, got dtype {inputs.dtype.name}.")
        if not self.built:
            self.build(inputs.shape)
        dtype = tf.float32 if inputs.dtype in (tf.float16, tf.bfloat16) else inputs.dtype
        # The tf.Variables: chunks are then read with a sparse ResourceGather.
        bias = None if self.bias is None else [self.bias.value]
        return [self._weights().value], bias, tf.cast(inputs, dtype)

    def predict_top_k(self, inputs, k):
        """Exact `(log_probs, indices)` `[batch, k]` of the `k` most probable classes over
        all classes, equal to `tf.math.top_k(self.log_prob(inputs), k)` (indices int32),
        computed chunk by chunk without the `[batch, num_classes]` logits."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) \
                or not 1 <= k <= self.num_classes:
            raise ValueError(
                f"`k` must be an integer in [1, num_classes={self.num_classes}], got {k!r}.")
        weights, bias, x = self._chunked_weights(inputs)
        return _chunked.top_k(x, weights, bias, k=int(k), chunk_size=self.chunk_size)

    def perplexity(self, inputs, labels, batch_size=1024):
        """exp(mean exact NLL over all classes), in batches of `batch_size`; a float."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        return _chunked.perplexity(self.full_softmax_loss, inputs, labels, int(batch_size))

    def full_softmax_loss(self, inputs, labels):
        """Exact per-example NLL `[batch]` over all classes, for evaluation (computed over
        chunks of classes, without the `[batch, num_classes]` logits)."""
        labels = tf.convert_to_tensor(labels)
        if not labels.dtype.is_integer:
            raise TypeError(f"`labels` must be integer, got dtype {labels.dtype.name}.")
        labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
        msg = f"`labels` has ids outside [0, num_classes={self.num_classes})"
        with tf.control_dependencies([
                tf.debugging.assert_non_negative(labels, message=msg),
                tf.debugging.assert_less(labels, tf.constant(self.num_classes, tf.int64),
                                         message=msg)]):
            labels = tf.identity(labels)
        weights, bias, x = self._chunked_weights(inputs)
        return _chunked.nll(x, labels[:, None], weights, bias, chunk_size=self.chunk_size)

    # ----------------------------------------------------------------- keras plumbing
    def compute_output_shape(self, input_shape):
        """Shape of the inference output: candidate log-probs `[batch, n]`, or full
        log-probs `[batch, num_classes]` without candidates. (A training call with
        positives returns the loss, `[batch]`.)"""
        if not _is_shape_list(input_shape):
            k = _chunked.output_top_k(self.top_k, self.num_classes)
            if k is not None:
                return (input_shape[0], k), (input_shape[0], k)
            return (input_shape[0], self.num_classes)
        if len(input_shape) >= 2:
            return (input_shape[0][0], input_shape[1][1])
        return (input_shape[0][0], self.num_classes)

    def compute_output_spec(self, inputs, training=None):
        x, candidates, positives, _ = self._unpack(inputs)
        dtype = "float64" if x.dtype == "float64" else "float32"
        if candidates is None:
            k = _chunked.output_top_k(self.top_k, self.num_classes)
            if k is not None:
                return (keras.KerasTensor((x.shape[0], k), dtype=dtype),
                        keras.KerasTensor((x.shape[0], k), dtype="int32"))
            return keras.KerasTensor((x.shape[0], self.num_classes), dtype=dtype)
        if positives is not None and training:
            return keras.KerasTensor((x.shape[0],), dtype=dtype)
        return keras.KerasTensor((x.shape[0], candidates.shape[1]), dtype=dtype,
                                 ragged=bool(getattr(candidates, "ragged", False)))

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_classes": self.num_classes,
            "positive": self.positive,
            "use_bias": self.use_bias,
            "tied_embedding": None if self.tied_embedding is None
            else keras.saving.serialize_keras_object(self.tied_embedding),
            "padding_id": self.padding_id,
            "allow_duplicates": self.allow_duplicates,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "top_k": self.top_k,
            "chunk_size": self.chunk_size,
        })
        return config

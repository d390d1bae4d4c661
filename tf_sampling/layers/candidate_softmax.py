"""Keras head for softmax over per-example candidate sets (see `losses.candidate_softmax`)."""

import numbers

import keras
import tensorflow as tf

from tf_sampling import _chunked
from tf_sampling.layers import base
from tf_sampling.losses import _sampled_logits as _sl
from tf_sampling.losses.candidate_softmax import candidate_log_softmax, candidate_softmax_loss

_POSITIVE_MODES = ("index", "id")


def _is_shape_list(input_shape):
    return isinstance(input_shape, (list, tuple)) and len(input_shape) > 0 and \
        isinstance(input_shape[0], (list, tuple, tf.TensorShape))


@keras.saving.register_keras_serializable(package="tf_sampling")
class CandidateSoftmax(base.OutputWeights, base.OutputHead):
    """Output head: softmax over each example's own candidate classes.

    Each example comes with its own candidates (legal moves, items shown to a user), a
    `tf.RaggedTensor` `[batch, (n_i)]` of class ids, or a dense `[batch, n]` int tensor in
    which `padding_id` marks unused slots. The loss is the cross-entropy of the softmax
    over those candidates only, computed in O(sum n_i * dim) for ragged input.

    Call with:
        - `[inputs, candidates, positives]` (optionally a 4th entry, `candidate_log_q`,
          laid out like `candidates`): adds the mean loss with `add_loss` and returns the
          per-example loss `[batch]`, in training and evaluation alike (the loss over
          the candidates is exact). `positives` are positions within each row
          (`positive="index"`) or class ids (`positive="id"`).
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
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
        kernel_constraint, bias_constraint: as in `keras.layers.Dense`, for the owned
            weights (kernel default "glorot_uniform", as every head but
            HierarchicalSoftmax).
        top_k: output of a call on `inputs` alone. An integer k: `(values, indices)` of
            the k most probable classes over all classes, found chunk by chunk. None: the
            `[batch, num_classes]` log-probabilities. "auto" (default): None up to 65536
            classes, the top 10 above.
        chunk_size: classes per chunk of `full_softmax_loss`, `perplexity` and
            `top_k`; None (default) chooses it from the batch size: batch x chunk
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
                 padding_id=-1, allow_duplicates=False, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 top_k="auto", chunk_size=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(num_classes, top_k=top_k, **kwargs)
        if positive not in _POSITIVE_MODES:
            raise ValueError(f"`positive` must be one of {_POSITIVE_MODES}, got {positive!r}.")
        if padding_id is not None and (isinstance(padding_id, bool)
                                       or not isinstance(padding_id, numbers.Integral)):
            raise ValueError(f"`padding_id` must be an integer or None, got {padding_id!r}.")
        if not isinstance(allow_duplicates, bool):
            raise ValueError(f"`allow_duplicates` must be a bool, got {allow_duplicates!r}.")
        self._init_output_weights(use_bias, tied_embedding, kernel_initializer,
                                  bias_initializer, kernel_regularizer, bias_regularizer,
                                  kernel_constraint, bias_constraint)
        self.chunk_size = _chunked.check_chunk_size(chunk_size)
        self.positive = positive
        self.padding_id = None if padding_id is None else int(padding_id)
        self.allow_duplicates = allow_duplicates
        # Ragged segment reductions, dynamic-shape id checks: no XLA.
        self.supports_jit = False
        # Under a mixed policy, autocasting would copy the whole [num_classes, dim] kernel
        # to float16 at each step; the loss casts only the gathered rows instead.
        self.autocast = False

    # ----------------------------------------------------------------- build
    def build(self, input_shape):
        self._build_output_weights(input_shape)

    def _weights(self):
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

    def _split(self, inputs):
        x, candidates, positives, log_q = self._unpack(inputs)
        return x, positives, None if candidates is None else (candidates, log_q)

    def _loss(self, hidden, labels, context, training):
        # The loss over the candidates is exact: training and evaluation add the same one.
        candidates, log_q = context
        kw = {"positive_index": None, "positive_ids": None}
        kw["positive_index" if self.positive == "index" else "positive_ids"] = labels
        return candidate_softmax_loss(
            self._weights(), self.bias, hidden, candidates,
            candidate_mask=self._mask(candidates), candidate_log_q=log_q,
            allow_duplicates=self.allow_duplicates, **kw)

    def _inference(self, hidden, context):
        if context is None:
            return super()._inference(hidden, None)
        candidates, log_q = context
        return self.candidate_log_prob(hidden, candidates, candidate_log_q=log_q)

    # ----------------------------------------------------------------- evaluation
    def candidate_log_prob(self, inputs, candidates, candidate_log_q=None):
        """Log-probabilities over each row's candidates (ragged in, ragged out)."""
        return candidate_log_softmax(
            self._weights(), self.bias, inputs, candidates,
            candidate_mask=self._mask(candidates), candidate_log_q=candidate_log_q,
            allow_duplicates=self.allow_duplicates)

    def logits(self, inputs):
        """Full logits `[batch, num_classes]`."""
        inputs = _sl.check_inputs(inputs, self._weights().shape[-1])
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
        _sl.check_inputs(inputs, self._weights().shape[-1])
        dtype = tf.float32 if inputs.dtype in (tf.float16, tf.bfloat16) else inputs.dtype
        # The tf.Variables: chunks are then read with a sparse ResourceGather.
        bias = None if self.bias is None else [self.bias.value]
        return [self._weights().value], bias, tf.cast(inputs, dtype)

    def top_k(self, inputs, k=None):
        """Exact `(log_probs, indices)` `[batch, k]` of the `k` most probable classes over
        all classes, equal to `tf.math.top_k(self.log_prob(inputs), k)` (indices int32),
        computed chunk by chunk without the `[batch, num_classes]` logits. `k` defaults
        to the head's `top_k` argument when it is an integer, else 1."""
        k = self._resolve_k(k)
        weights, bias, x = self._chunked_weights(inputs)
        # Never compiled with XLA (supports_jit is False): the fused CPU op may run.
        return _chunked.top_k(x, weights, bias, k=k, chunk_size=self.chunk_size, fused=True)

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
        # Never compiled with XLA (supports_jit is False): the fused CPU op may run.
        return _chunked.nll(x, labels[:, None], weights, bias, chunk_size=self.chunk_size,
                            fused=True)

    # ----------------------------------------------------------------- keras plumbing
    def compute_output_shape(self, input_shape):
        """Shape of the output: the loss `[batch]` given positives, candidate log-probs
        `[batch, n]` given candidates, else the full inference output."""
        if _is_shape_list(input_shape) and len(input_shape) == 2:
            return (input_shape[0][0], input_shape[1][1])
        return super().compute_output_shape(input_shape)

    def _inference_spec(self, hidden, context, dtype):
        if context is None:
            return super()._inference_spec(hidden, None, dtype)
        candidates = context[0]
        return keras.KerasTensor((hidden.shape[0], candidates.shape[1]), dtype=dtype,
                                 ragged=bool(getattr(candidates, "ragged", False)))

    def get_config(self):
        config = super().get_config()
        config.update(self._output_weights_config())
        config.update({
            "positive": self.positive,
            "padding_id": self.padding_id,
            "allow_duplicates": self.allow_duplicates,
            "chunk_size": self.chunk_size,
        })
        return config

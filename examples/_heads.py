"""Output heads for the examples: the exact full softmax, and the package's heads by name.

`FullSoftmax` follows the package's head convention (`[inputs, labels]` while training,
`add_loss` of the mean loss, per-example loss returned; full log-probabilities otherwise),
so that the examples swap heads without changing anything else. It is the reference the
sampled heads are timed and scored against.

Example:
>>> head = make_head("sampled", num_classes=V, counts=vocab.counts, num_sampled=512)
>>> out = head([hidden, labels])
"""

import functools
import math

import keras
import tensorflow as tf

import tf_sampling as tfs

HEADS = ("full", "sampled", "nce", "negative", "hierarchical", "adaptive")


@keras.saving.register_keras_serializable(package="tf_sampling_examples")
class FullSoftmax(keras.layers.Layer):
    """Dense softmax output layer over all `num_classes` classes (the exact reference).

    Called on `[inputs, labels]` it adds the mean cross-entropy with `add_loss`; in
    training it returns the per-example loss, otherwise the log-probabilities
    `[..., num_classes]`.
    """

    def __init__(self, num_classes, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive integer, got {num_classes!r}.")
        self.num_classes = num_classes
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        hidden = input_shape[0] if isinstance(input_shape[0], (list, tuple)) else input_shape
        self.kernel = self.add_weight(name="kernel", shape=(self.num_classes, hidden[-1]),
                                      initializer=self.kernel_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.num_classes,),
                                    initializer="zeros")

    def logits(self, inputs):
        inputs = tf.convert_to_tensor(inputs)
        out = tf.tensordot(inputs, tf.convert_to_tensor(self.kernel),
                           [[inputs.shape.rank - 1], [1]])
        return out + tf.convert_to_tensor(self.bias)

    def log_prob(self, inputs):
        return tf.nn.log_softmax(self.logits(inputs))

    def full_softmax_loss(self, inputs, labels):
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=tf.cast(labels, tf.int32), logits=self.logits(inputs))

    def call(self, inputs, training=None):
        hidden, labels = (inputs if isinstance(inputs, (list, tuple)) else (inputs, None))
        if labels is None:
            return self.log_prob(hidden)
        loss = self.full_softmax_loss(hidden, labels)
        self.add_loss(tf.reduce_mean(loss))
        if training:
            return loss
        return self.log_prob(hidden)

    def compute_output_spec(self, inputs, training=None):
        hidden = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        return keras.KerasTensor(tuple(hidden.shape[:-1]) + (self.num_classes,), "float32")

    def compute_output_shape(self, input_shape):
        hidden = input_shape[0] if isinstance(input_shape[0], (list, tuple)) else input_shape
        return tuple(hidden[:-1]) + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes,
                       "kernel_initializer": keras.initializers.serialize(
                           self.kernel_initializer)})
        return config


class SplitSampledSoftmax(tfs.layers.SampledSoftmax):
    """An experiment on where more samples act: a `SampledSoftmax` whose output rows (kernel
    and bias) get the gradient of a sampled loss with `rows_sampled` samples, and whose
    inputs (the body: hidden states, LSTM, embeddings) get that of a separate loss with
    `num_sampled` samples. Each loss is the head's own, on its own draw; each sees the other
    side's values with `tf.stop_gradient`, so the training loss reported is their sum.
    Exact evaluation is the head's. The frozen copy of the rows is a dense read of the
    table: for vocabularies of the benchmark's size (33K rows), not for 10^7.
    """

    def __init__(self, *args, rows_sampled, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows_sampled = int(rows_sampled)

    def _sampled_loss(self, hidden, labels, update=True):
        from tf_sampling.losses import _sampled_logits as _sl

        weights, biases = self._weights_tf()

        def loss(h, w, b, k):
            sampled = self.sampler.sample(labels, k, unique=self.unique)
            true_logits, logits = _sl.sampled_logits(
                w, b, labels, h, sampled, self.num_true, self.subtract_log_q,
                self.remove_accidental_hits)
            return _sl.softmax_loss(true_logits, logits, self.num_true)

        frozen = [tf.stop_gradient(tf.convert_to_tensor(w)) for w in weights]
        frozen_b = (None if biases is None
                    else [tf.stop_gradient(tf.convert_to_tensor(b)) for b in biases])
        return (loss(hidden, frozen, frozen_b, self.num_sampled)
                + loss(tf.stop_gradient(hidden), weights, biases, self.rows_sampled))

    def get_config(self):
        return {**super().get_config(), "rows_sampled": self.rows_sampled}


class RowStepSampledSoftmax(tfs.layers.SampledSoftmax):
    """An experiment on Adam's per-row step: a log-uniform `SampledSoftmax` whose output
    row j is `s_j * w_j`, with `w_j` the trained variable, so that an optimizer that
    normalises each coordinate's step (Adam) moves row j by `s_j` times its usual step.
    `s_j = sqrt(E_j(row_step_from) / E_j(num_sampled))`, E_j the class's inclusion
    probability: a row sampled on a fraction E of the steps has a second moment about
    1/E times that of its mean gradient, so Adam moves it about `sqrt(E) * lr` per step,
    and `s_j` gives each row the step it would have with `row_step_from` samples while
    the gradients stay those of `num_sampled` samples. The scaled copy of the table is a
    dense read: for vocabularies of the benchmark's size (33K rows), not for 10^7. The
    library's form of it is `tfs.optimizers.SparseAdam(row_step_samples=...)`, the same
    update applied in the optimizer step; this head gives it to keras Adam.
    """

    def __init__(self, *args, row_step_from, **kwargs):
        super().__init__(*args, **kwargs)
        self.row_step_from = int(row_step_from)

    def build(self, input_shape):
        super().build(input_shape)
        if not isinstance(self.sampler, tfs.samplers.LogUniformSampler):
            raise ValueError("RowStepSampledSoftmax needs the log-uniform sampler.")
        # The library's per-row multipliers (what SparseAdam(row_step_samples=...) uses).
        scale = self._row_step_scale(0, tf.range(self.num_classes),
                                     self.row_step_from).numpy()
        self._row_scale = tf.constant(scale)
        # The trained variable starts at w / s, so the model starts where the plain head does.
        for k in self.kernel_shards:
            k.assign(k.value / scale[:, None])
        for b in self.bias_shards or []:
            b.assign(b.value / scale)

    def _weights_tf(self):
        weights, biases = super()._weights_tf()
        s = self._row_scale
        weights = [w * s[:, None] for w in weights]
        biases = None if biases is None else [b * s for b in biases]
        return weights, biases

    def get_config(self):
        return {**super().get_config(), "row_step_from": self.row_step_from}


def unigram_sampler(counts, distortion, seed=None):
    """A fixed unigram sampler over word counts (word2vec's noise is distortion=0.75)."""
    counts = [max(int(c), 0) for c in counts]
    return tfs.samplers.FixedUnigramSampler(
        num_classes=len(counts), counts=counts, distortion=distortion, seed=seed)


def make_head(kind, num_classes, counts=None, num_sampled=None, sampler=None,
              distortion=0.75, unique=True, use_bias=True, kernel_initializer="glorot_uniform",
              seed=None, samples_per=None, cutoffs=None, div_value=None,
              remove_accidental_hits=None, rows_sampled=None, row_step_from=None):
    """Builds an output head by name: one of `HEADS`.

    `counts` (class frequencies) are needed for the Huffman tree of "hierarchical" and for
    the unigram sampler that "negative" uses by default (word2vec's counts^0.75).
    `sampler` (a name or sampler) defaults to "log_uniform" for "sampled" and "nce".
    `samples_per` ("batch" or "example") and `remove_accidental_hits` are passed to the
    sampled heads when given. "adaptive" needs `cutoffs` (ids must be sorted by decreasing
    frequency); `div_value` is passed when given (the layer's default is 4).
    `rows_sampled` (an experiment, "sampled" only): `SplitSampledSoftmax`, whose output rows
    learn from `rows_sampled` samples and the body from `num_sampled`.
    `row_step_from` (an experiment, "sampled" with the log-uniform sampler only):
    `RowStepSampledSoftmax`, whose rows take the per-row Adam steps of that many samples.
    """
    if kind == "full":
        return FullSoftmax(num_classes, kernel_initializer=kernel_initializer, name="head")
    if kind == "adaptive":
        if cutoffs is None:
            raise ValueError("The adaptive head needs `cutoffs`.")
        extra = {} if div_value is None else {"div_value": div_value}
        return tfs.layers.AdaptiveSoftmax(num_classes, cutoffs=list(cutoffs),
                                          kernel_initializer=kernel_initializer,
                                          name="head", **extra)
    if kind == "hierarchical":
        if counts is None:
            raise ValueError("The hierarchical head needs `counts` for its Huffman tree.")
        return tfs.layers.HierarchicalSoftmax(
            num_classes, tree="huffman", counts=[int(c) for c in counts], use_bias=use_bias,
            name="head")
    if kind in ("sampled", "nce", "negative"):
        if num_sampled is None:
            raise ValueError(f"The {kind} head needs `num_sampled`.")
        if sampler is None:
            if kind == "negative":
                if counts is None:
                    raise ValueError("The negative head needs `counts` for its sampler.")
                sampler = unigram_sampler(counts, distortion, seed=seed)
            else:
                sampler = "log_uniform"
        cls = {"sampled": tfs.layers.SampledSoftmax, "nce": tfs.layers.NCE,
               "negative": tfs.layers.NegativeSampling}[kind]
        if rows_sampled is not None:
            if kind != "sampled":
                raise ValueError("`rows_sampled` is for the sampled head only.")
            cls = functools.partial(SplitSampledSoftmax, rows_sampled=rows_sampled)
        if row_step_from is not None:
            if kind != "sampled" or rows_sampled is not None:
                raise ValueError("`row_step_from` is for the plain sampled head only.")
            cls = functools.partial(RowStepSampledSoftmax, row_step_from=row_step_from)
        # NCE learns self-normalised scores (log p, not log p + const): starting the biases
        # at log(1/V) starts it at the uniform distribution, not at a total mass of V
        # (Zoph et al. 2016, "Simple, fast noise-contrastive estimation").
        bias_init = (keras.initializers.Constant(-math.log(num_classes)) if kind == "nce"
                     else "zeros")
        extra = {} if samples_per is None else {"samples_per": samples_per}
        if remove_accidental_hits is not None:
            extra["remove_accidental_hits"] = remove_accidental_hits
        return cls(num_classes, num_sampled=num_sampled, sampler=sampler, unique=unique,
                   use_bias=use_bias, kernel_initializer=kernel_initializer,
                   bias_initializer=bias_init, seed=seed, name="head", **extra)
    raise ValueError(f"Unknown head {kind!r}; expected one of {HEADS}.")

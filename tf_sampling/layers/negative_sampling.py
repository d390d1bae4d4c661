"""`NegativeSampling`: an output head trained with word2vec's negative sampling."""

import keras

from tf_sampling.layers._sampled_head import SampledHead


@keras.saving.register_keras_serializable(package="tf_sampling")
class NegativeSampling(SampledHead):
    """Output layer trained with negative sampling (the SGNS objective of word2vec).

    Training calls on `[inputs, labels]` return and add (mean) the per-example loss
    `sum_true -log sigmoid(s_true) + sum_sampled -log sigmoid(-s_sampled)`, without the
    `-log Q` correction of NCE (`subtract_log_q=False` by default) and with target 1 for
    every true class; see `tf_sampling.losses.negative_sampling_loss`.

    This is a training objective: it learns useful scores/embeddings but not calibrated
    probabilities. At inference (`training=False` or no labels) the head returns the
    full-softmax log-probabilities of its scores (or `top_k` values and indices) and,
    given labels, adds their exact cross-entropy; also `head.full_softmax_loss` and
    `head.perplexity`.

    The arguments are those of `tf_sampling.layers.SampledSoftmax`, with defaults
    `remove_accidental_hits=False`, `subtract_log_q=False`. For word2vec pass
    `sampler=tfs.samplers.FixedUnigramSampler(counts=..., distortion=0.75)`,
    `unique=False`, `use_bias=False`, a small `num_sampled` (5 to 20), and
    `samples_per="example"`: word2vec gives every (center, context) pair its own
    `num_sampled` negatives, whereas the default `samples_per="batch"` (as TF) shares one
    set of negatives across the batch. With per-example draws the loss of an example is
    exactly `tfs.losses.per_example_negative_sampling_loss` (for `num_true=1`).

    Example:
    >>> words = keras.Input((), dtype="int32")
    >>> contexts = keras.Input((), dtype="int32")
    >>> vectors = keras.layers.Embedding(V, 100)(words)
    >>> noise = tfs.samplers.FixedUnigramSampler(V, counts=word_counts, distortion=0.75)
    >>> head = tfs.layers.NegativeSampling(V, num_sampled=5, sampler=noise, unique=False,
    ...                                    use_bias=False, samples_per="example")
    >>> model = keras.Model([words, contexts], head([vectors, contexts]))
    >>> model.compile(optimizer="adam")
    """

    _loss_kind = "logistic"

    _default_remove_accidental_hits = False
    _default_subtract_log_q = False

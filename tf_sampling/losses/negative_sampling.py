"""Negative sampling (word2vec's SGNS objective, Mikolov et al., 2013)."""

import tensorflow as tf

from tf_sampling.losses import _sampled_logits as _sl


# Plain TF ops only: autograph would only slow down tracing (seconds per trace).
@tf.autograph.experimental.do_not_convert
def negative_sampling_loss(weights, biases, labels, inputs, num_sampled, num_classes,
                           num_true=1, sampler=None, sampled_values=None,
                           remove_accidental_hits=False, unique=True, seed=None, name=None):
    """Per-example negative-sampling loss, without the log Q correction.

    `sum_true -log sigmoid(x.w_t + b_t) + sum_sampled -log sigmoid(-(x.w_s + b_s))`: the
    skip-gram negative-sampling objective. Unlike NCE there is no `-log Q` term (TF's
    public `tf.nn.nce_loss` cannot turn it off), and each true class has target 1 (TF's
    NCE uses 1/num_true). Pass `biases=None` for word2vec's bias-free form.

    This is a *training* objective; it does not estimate the softmax cross-entropy. For
    evaluation use the full softmax (`head.full_softmax_loss` / `head.perplexity`).

    Arguments are as in `tf_sampling.losses.sampled_softmax_loss`. For word2vec's noise
    distribution use `sampler=tfs.samplers.FixedUnigramSampler(counts=..., distortion=0.75)`
    and `unique=False`.

    Returns:
        `[batch]` per-example losses (float32 for half-precision inputs, else inputs' dtype).

    Example:
    >>> w = tf.Variable(tf.random.normal([10000, 64]) * 0.05)
    >>> h = tf.random.normal([32, 64])
    >>> y = tf.random.uniform([32], maxval=10000, dtype=tf.int64)
    >>> loss = tf.reduce_mean(tfs.losses.negative_sampling_loss(w, None, y, h, 5, 10000))
    """
    return _sl.functional_loss(
        name or "negative_sampling_loss", "logistic", weights, biases, labels, inputs,
        num_sampled, num_classes, num_true, sampler, sampled_values, remove_accidental_hits,
        False, unique, seed, true_target=1.0)

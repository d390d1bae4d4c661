"""Noise-contrastive estimation loss (Gutmann & Hyvarinen, 2010), as `tf.nn.nce_loss`."""

import tensorflow as tf

from tf_sampling.losses import _sampled_logits as _sl


# Plain TF ops only: autograph would only slow down tracing (seconds per trace).
@tf.autograph.experimental.do_not_convert
def nce_loss(weights, biases, labels, inputs, num_sampled, num_classes, num_true=1,
             sampler=None, sampled_values=None, remove_accidental_hits=False,
             subtract_log_q=True, unique=True, seed=None, name=None):
    """Per-example NCE loss: binary logistic regression of true against sampled classes.

    Each true class has logit `x.w + b - log Q(true)` and target `1/num_true` (as TF); each
    sampled class has logit `x.w + b - log Q(sampled)` and target 0. This is a *training*
    objective, not the model's cross-entropy: for evaluation compute the full softmax
    (`head.full_softmax_loss` / `head.perplexity` of a `tf_sampling.layers` head, or
    `tf.nn.sparse_softmax_cross_entropy_with_logits` on the full logits).

    With the same `sampled_values`, the result equals `tf.nn.nce_loss` (values and
    gradients). Arguments are as in `tf_sampling.losses.sampled_softmax_loss`, except that
    `remove_accidental_hits` defaults to False as in TF. `subtract_log_q=False` gives
    negative sampling with TF's 1/num_true targets; see `negative_sampling_loss` for
    word2vec's objective.

    Returns:
        `[batch]` per-example losses (float32 for half-precision inputs, else inputs' dtype).

    Example:
    >>> w = tf.Variable(tf.random.normal([10000, 64]) * 0.05)
    >>> b = tf.Variable(tf.zeros([10000]))
    >>> h = tf.random.normal([32, 64])
    >>> y = tf.random.uniform([32, 1], maxval=10000, dtype=tf.int64)
    >>> loss = tf.reduce_mean(tfs.losses.nce_loss(w, b, y, h, 64, 10000))
    """
    return _sl.functional_loss(
        name or "nce_loss", "logistic", weights, biases, labels, inputs, num_sampled,
        num_classes, num_true, sampler, sampled_values, remove_accidental_hits,
        subtract_log_q, unique, seed)

"""Sampled softmax loss (Jean et al., 2015), as `tf.nn.sampled_softmax_loss`."""

import tensorflow as tf

from tf_sampling.losses import _sampled_logits as _sl


# Plain TF ops only: autograph would only slow down tracing (seconds per trace).
@tf.autograph.experimental.do_not_convert
def sampled_softmax_loss(weights, biases, labels, inputs, num_sampled, num_classes,
                         num_true=1, sampler=None, sampled_values=None,
                         remove_accidental_hits=True, subtract_log_q=True, unique=True,
                         seed=None, name=None):
    """Per-example sampled softmax loss: a cheap training objective for many classes.

    The softmax is taken over the true classes and `num_sampled` sampled classes only, with
    the sampled logits corrected by `-log Q` (their expected count in the sample). This is
    a *training* objective: it is a biased, noisy estimate of the full softmax
    cross-entropy and must not be reported as a loss or perplexity. For evaluation compute
    the full logits, e.g. `tf.nn.sparse_softmax_cross_entropy_with_logits(labels,
    inputs @ tf.transpose(weights) + biases)`, or use `head.full_softmax_loss` /
    `head.perplexity` of a `tf_sampling.layers` head.

    With the same `sampled_values`, the result equals `tf.nn.sampled_softmax_loss` (values
    and gradients). The differences from TF are in the options: any `sampler`, `labels` of
    shape `[batch]`, `subtract_log_q`, float16/bfloat16 inputs or weights (computed in
    float32, so large logits do not overflow; the loss is float32).

    Args:
        weights: `[num_classes, dim]` tensor or variable, or a list of row shards whose
            concatenation is that (TF's "div" partitioning, e.g. a sharded variable).
        biases: `[num_classes]` tensor or variable, a list of row shards, or None.
        labels: int `[batch, num_true]` (or `[batch]` when num_true == 1) true class ids.
        inputs: float `[batch, dim]` activations.
        num_sampled: number of classes to sample per batch.
        num_classes: number of classes.
        num_true: number of true classes per example; each gets target 1/num_true.
        sampler: a `tf_sampling.samplers.CandidateSampler`, a sampler name
            ("log_uniform", "uniform", ...), or None for "log_uniform" (as TF). The sampler
            is not updated: for a learning sampler call `sampler.update(labels)` yourself.
        sampled_values: optional `(sampled_candidates, true_expected_count,
            sampled_expected_count)` from any `*_candidate_sampler`; then `sampler`,
            `unique` and `seed` are not used.
        remove_accidental_hits: whether a sampled class equal to a true class of an
            example is dropped from that example's softmax.
        subtract_log_q: whether to subtract the log expected counts from the logits.
        unique: sample without replacement.
        seed: None (fresh draws from the sampler's seed generator at every call), a Python
            int (the same draws at every call), or an int `[2]` tensor (stateless seed).
        name: name scope.

    Returns:
        `[batch]` per-example losses (float32 for half-precision inputs, else inputs' dtype).

    Example:
    >>> w = tf.Variable(tf.random.normal([10000, 64]) * 0.05)
    >>> b = tf.Variable(tf.zeros([10000]))
    >>> h = tf.random.normal([32, 64])
    >>> y = tf.random.uniform([32], maxval=10000, dtype=tf.int64)
    >>> loss = tf.reduce_mean(tfs.losses.sampled_softmax_loss(w, b, y, h, 256, 10000))
    """
    return _sl.functional_loss(
        name or "sampled_softmax_loss", "softmax", weights, biases, labels, inputs,
        num_sampled, num_classes, num_true, sampler, sampled_values, remove_accidental_hits,
        subtract_log_q, unique, seed)

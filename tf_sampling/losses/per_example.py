"""Per-example negative sampling: every example gets its own `num_sampled` draws.

TF's candidate samplers draw one set of `num_sampled` classes that the whole batch shares.
word2vec does not: each (center, context) pair gets its own K negatives. This module draws
`[batch, num_sampled]` ids from any `CandidateSampler` (`sampler.sample(...,
per_example=True)`), with expected counts that are right for that scheme, and computes
sampled softmax, NCE and negative-sampling losses on them, with the logits of
`_sampled_logits` (which tells the schemes apart by the rank of the sampled ids).
"""

import tensorflow as tf

from tf_sampling.losses import _sampled_logits as _sl
from tf_sampling.samplers.base import CandidateSampler

__all__ = [
    "sample_per_example",
    "per_example_logits",
    "per_example_sampled_softmax_loss",
    "per_example_nce_loss",
    "per_example_negative_sampling_loss",
]


# ---------------------------------------------------------------------------- sampling
# Plain TF ops: autograph conversion would only slow down tracing.
@tf.autograph.experimental.do_not_convert
def sample_per_example(sampler, true_classes, num_sampled, unique=False, seed=None):
    """Draws `num_sampled` candidates independently for each example.

    The same as `sampler.sample(true_classes, num_sampled, unique=unique, seed=seed,
    per_example=True)`.

    Args:
        sampler: a `tfs.samplers.CandidateSampler`.
        true_classes: int `[batch, num_true]` tensor of the true class ids.
        num_sampled: positive Python int, draws per example.
        unique: False (default, as word2vec): i.i.d. draws, repeats allowed within a row,
            expected count `p * num_sampled`. True: each row holds `num_sampled` distinct
            ids, the first ones seen in that row's own i.i.d. stream, and the expected
            count is `1 - (1 - p)^tries_b` with `tries_b` that row's stream length (TF's
            formula, per row).
        seed: None (the sampler's seed generator), a Python int (same int, same draws for
            the same batch size), or an int `[2]` tensor (stateless seed).

    Returns:
        `SampledValues(sampled_candidates, true_expected_count, sampled_expected_count)`:
        int64 `[batch, num_sampled]`, float32 `[batch, num_true]`, float32
        `[batch, num_sampled]`. Pass it as `sampled_values=` to the `per_example_*` losses.

    Example:
    >>> s = tfs.samplers.UniformSampler(num_classes=10000, seed=1)
    >>> sv = tfs.losses.sample_per_example(s, [[3], [7]], num_sampled=5)
    >>> sv.sampled_candidates.shape   # (2, 5): each example its own 5 negatives
    """
    if not isinstance(sampler, CandidateSampler):
        raise TypeError(f"`sampler` must be a tfs.samplers.CandidateSampler, got {sampler!r}.")
    return sampler.sample(true_classes, num_sampled, unique=unique, seed=seed,
                          per_example=True)


# ---------------------------------------------------------------------------- logits
# Plain TF ops: autograph conversion would only slow down tracing.
@tf.autograph.experimental.do_not_convert
def per_example_logits(weights, biases, labels, inputs, sampled_values, num_true=1,
                       subtract_log_q=True, remove_accidental_hits=True, num_classes=None):
    """Logits of each example's true classes and of its own sampled classes.

    The per-example counterpart of TF's `_compute_sampled_logits`: a loss is then any
    function of the two (softmax cross-entropy, sigmoid cross-entropy, ...). The distinct
    ids' rows are read once, so the weight gradient has one row per distinct id (which
    Keras' optimizers need; see `_unique_rows`).

    Args:
        weights: `[num_classes, dim]` tensor or variable, or a list of row shards.
        biases: `[num_classes]` tensor or variable, a list of row shards, or None.
        labels: int `[batch, num_true]` (or `[batch]` when num_true == 1).
        inputs: float `[batch, dim]`.
        sampled_values: per-example triple as from `sample_per_example`: int
            `[batch, num_sampled]`, float `[batch, num_true]`, float `[batch, num_sampled]`.
        num_true: number of true classes per example.
        subtract_log_q: subtract the log expected counts from the logits.
        remove_accidental_hits: a sampled id equal to one of the same example's labels gets
            TF's accidental-hit logit (-FLT_MAX), so it counts for nothing.
        num_classes: optional; checked against the rows of `weights` when given.

    Returns:
        `(true_logits [batch, num_true], sampled_logits [batch, num_sampled])`, float32
        for float16/bfloat16 inputs (which are computed in float32), else the inputs' dtype.
    """
    w, b, labels, inputs, num_true, sampled_values = _sl.prepare(
        weights, biases, labels, inputs, None, num_classes, num_true, None, sampled_values,
        False, None, per_example=True)
    return _sl.sampled_logits(w, b, labels, inputs, sampled_values, num_true, subtract_log_q,
                              remove_accidental_hits)


# ---------------------------------------------------------------------------- losses
# Plain TF ops only: autograph would only slow down tracing (seconds per trace).
@tf.autograph.experimental.do_not_convert
def per_example_sampled_softmax_loss(weights, biases, labels, inputs, num_sampled,
                                     num_classes=None, num_true=1, sampler=None,
                                     sampled_values=None, remove_accidental_hits=True,
                                     subtract_log_q=True, unique=False, seed=None, name=None):
    """Sampled softmax where each example has its own `num_sampled` negatives.

    Same arguments and conventions as `tf.nn.sampled_softmax_loss`, except:
        num_classes: optional; taken from `weights` when None.
        sampler: a `tfs.samplers.CandidateSampler`; needed unless `sampled_values` is given.
        sampled_values: optional per-example triple from `sample_per_example`: int
            `[batch, num_sampled]`, float `[batch, num_true]`, float `[batch, num_sampled]`.
        subtract_log_q: subtract log(expected count) from each logit (True, as TF).
        unique: passed to `sample_per_example` (default False: i.i.d. draws per example).
        biases may be None.

    Returns:
        float `[batch]` per-example loss (float32 for float16/bfloat16 inputs).

    Example:
    >>> s = tfs.samplers.UniformSampler(num_classes=V, seed=0)
    >>> loss = tfs.losses.per_example_sampled_softmax_loss(
    ...     w, b, labels[:, None], x, num_sampled=20, sampler=s)
    """
    return _sl.functional_loss(
        name or "per_example_sampled_softmax_loss", "softmax", weights, biases, labels,
        inputs, num_sampled, num_classes, num_true, sampler, sampled_values,
        remove_accidental_hits, subtract_log_q, unique, seed, per_example=True)


@tf.autograph.experimental.do_not_convert
def per_example_nce_loss(weights, biases, labels, inputs, num_sampled, num_classes=None,
                         num_true=1, sampler=None, sampled_values=None,
                         remove_accidental_hits=False, subtract_log_q=True, unique=False,
                         seed=None, name=None):
    """NCE (as `tf.nn.nce_loss`) where each example has its own `num_sampled` negatives.

    Arguments as `per_example_sampled_softmax_loss`; `remove_accidental_hits` defaults to
    False, as in TF. The per-example loss is the sum over the example's true and sampled
    logits of the sigmoid cross-entropy (true targets `1/num_true`, sampled targets 0).
    """
    return _sl.functional_loss(
        name or "per_example_nce_loss", "logistic", weights, biases, labels, inputs,
        num_sampled, num_classes, num_true, sampler, sampled_values, remove_accidental_hits,
        subtract_log_q, unique, seed, per_example=True)


@tf.autograph.experimental.do_not_convert
def per_example_negative_sampling_loss(weights, biases, labels, inputs, num_sampled,
                                       num_classes=None, num_true=1, sampler=None,
                                       sampled_values=None, remove_accidental_hits=False,
                                       subtract_log_q=False, unique=False, seed=None,
                                       name=None):
    """word2vec's negative sampling (SGNS) with each example's own negatives, as word2vec
    draws them: `-log sigmoid(z_true) - sum_k log sigmoid(-z_k)` for `num_true=1`.

    It is `per_example_nce_loss` without the log Q correction (`subtract_log_q=False`)
    and with target 1 for every true class (as `negative_sampling_loss`; NCE uses
    1/num_true). Arguments as `per_example_sampled_softmax_loss`.

    Example:
    >>> s = tfs.samplers.UniformSampler(num_classes=V, seed=0)   # word2vec uses unigram^0.75
    >>> loss = tfs.losses.per_example_negative_sampling_loss(
    ...     out_emb, None, context[:, None], center_vec, num_sampled=5, sampler=s)
    """
    return _sl.functional_loss(
        name or "per_example_negative_sampling_loss", "logistic", weights, biases, labels,
        inputs, num_sampled, num_classes, num_true, sampler, sampled_values,
        remove_accidental_hits, subtract_log_q, unique, seed, per_example=True,
        true_target=1.0)

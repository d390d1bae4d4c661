"""Per-example negative sampling: every example gets its own `num_sampled` draws.

TF's candidate samplers draw one set of `num_sampled` classes that the whole batch shares.
word2vec does not: each (center, context) pair gets its own K negatives. This module draws
`[batch, num_sampled]` ids from any `CandidateSampler`, with expected counts that are right
for that scheme, and computes sampled softmax, NCE and negative-sampling losses on them.

The logits come from a batched gather of weight rows, `[batch, num_sampled, dim]`: the same
O(batch * num_sampled * dim) flops as the shared scheme's `[batch, dim] x [dim, num_sampled]`
matmul, but `batch` times more weight rows are read (and their gradient is as many rows),
and a batched dot product instead of one matmul. The distinct ids' rows are read once, so the
weight gradient has one row per distinct id (which Keras' optimizers need; see
`_unique_rows`).
"""

import collections
import numbers

import numpy as np
import tensorflow as tf

from tf_sampling.losses import _unique_rows
from tf_sampling.losses.candidate_softmax import (
    _check_biases, _gather_rows, _low_precision, _num_classes, _weight_shards)
from tf_sampling.ops import _unique
from tf_sampling.samplers.base import (
    CandidateSampler, SampledValues, _check_positive_int, expected_counts)

# TF marks accidental hits with -FLT_MAX (float32), whatever the logits' dtype.
_ACCIDENTAL_HIT = float(-np.finfo(np.float32).max)

__all__ = [
    "sample_per_example",
    "per_example_logits",
    "per_example_sampled_softmax_loss",
    "per_example_nce_loss",
    "per_example_negative_sampling_loss",
]


# ---------------------------------------------------------------------------- sampling
def sample_per_example(sampler, true_classes, num_sampled, unique=False, seed=None):
    """Draws `num_sampled` candidates independently for each example.

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
    num_sampled = _check_positive_int(num_sampled, "num_sampled")
    if unique and num_sampled > sampler.num_classes:
        raise ValueError(
            f"`num_sampled`={num_sampled} is larger than `num_classes`={sampler.num_classes}, "
            "which is impossible with `unique=True`.")
    true_classes = sampler._check_ids(true_classes, "true_classes", rank=2)
    seed = sampler._make_seed(seed)
    batch = tf.shape(true_classes)[0]
    if unique:
        sampled, num_tries = _sample_unique_rows(sampler, batch, num_sampled, seed)
        num_tries = num_tries[:, None]
    else:
        draws = sampler._draw(batch * num_sampled, seed)
        sampled = tf.reshape(tf.cast(draws, tf.int64), [batch, num_sampled])
        num_tries = num_sampled
    true_p = sampler._probability(true_classes)
    sampled_p = sampler._probability(sampled)
    return SampledValues(
        tf.stop_gradient(sampled),
        tf.stop_gradient(expected_counts(true_p, num_tries, num_sampled, unique)),
        tf.stop_gradient(expected_counts(sampled_p, num_tries, num_sampled, unique)),
    )


def _sample_unique_rows(sampler, batch, num_sampled, seed):
    """Each row's first `num_sampled` distinct ids of its own i.i.d. stream, drawn in rounds
    (round r from `fold_in(seed, r)`, each as long as all before it), with the draw bound of
    `tf_sampling/ops/_unique.py`, and each row's stream length (`tries`)."""
    def draw(length, s):
        flat = sampler._draw(tf.cast(tf.cast(batch, tf.int64) * length, tf.int32), s)
        return tf.reshape(tf.cast(flat, tf.int64), [tf.cast(batch, tf.int64), length])

    support = sampler._support_size()
    if support is not None:
        # Fail at once rather than drawing up to the bound.
        with tf.control_dependencies([tf.debugging.assert_greater_equal(
                tf.cast(support, tf.int64), tf.constant(num_sampled, tf.int64),
                message=f"`num_sampled`={num_sampled} with unique=True needs that many "
                        "classes of nonzero probability, but the sampler has fewer")]):
            seed = tf.identity(seed)
    return _unique.unique_rows(draw, batch, num_sampled, seed, sampler._all_probabilities,
                               sampler.num_classes)


# ---------------------------------------------------------------------------- logits
_Logits = collections.namedtuple("_Logits", ["true", "sampled"])


def _check_labels(labels, num_true):
    labels = tf.convert_to_tensor(labels)
    if not labels.dtype.is_integer:
        raise TypeError(f"`labels` must be an integer tensor, got dtype {labels.dtype.name}.")
    if labels.shape.rank == 1 and num_true == 1:
        labels = labels[:, None]
    if labels.shape.rank != 2:
        raise ValueError(
            f"`labels` must have shape [batch, num_true], got {labels.shape}.")
    if labels.shape[1] is not None and labels.shape[1] != num_true:
        raise ValueError(
            f"`labels` has {labels.shape[1]} columns but `num_true`={num_true}.")
    return tf.cast(labels, tf.int64)


def _check_sampled_values(sampled_values, num_true):
    if not isinstance(sampled_values, (tuple, list)) or len(sampled_values) != 3:
        raise ValueError(
            "`sampled_values` must be a (sampled_candidates, true_expected_count, "
            "sampled_expected_count) triple.")
    sampled, true_ec, sampled_ec = (tf.convert_to_tensor(v) for v in sampled_values)
    if not sampled.dtype.is_integer:
        raise TypeError(
            f"`sampled_values[0]` must hold integer ids, got dtype {sampled.dtype.name}.")
    if sampled.shape.rank != 2:
        raise ValueError(
            "`sampled_values[0]` must have shape [batch, num_sampled] (per-example samples), "
            f"got {sampled.shape}; a shared [num_sampled] sample goes to the shared losses.")
    num_sampled = sampled.shape[1]
    for value, shape, name in ((true_ec, [None, num_true], "sampled_values[1]"),
                               (sampled_ec, [None, num_sampled], "sampled_values[2]")):
        if not value.dtype.is_floating:
            raise TypeError(f"`{name}` must be floating point, got dtype {value.dtype.name}.")
        if not value.shape.is_compatible_with(shape):
            raise ValueError(f"`{name}` must have shape {shape}, got {value.shape}.")
    return tf.cast(sampled, tf.int64), true_ec, sampled_ec


def _check_num_classes(num_classes, shards):
    rows = _num_classes(shards)
    if num_classes is None:
        return rows
    if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) \
            or num_classes <= 0:
        raise ValueError(f"`num_classes` must be a positive integer, got {num_classes!r}.")
    if isinstance(rows, int) and rows != num_classes:
        raise ValueError(f"`num_classes`={num_classes} but `weights` has {rows} rows.")
    return int(num_classes)


def _check_ids(ids, num_classes, name):
    msg = f"`{name}` has ids outside [0, num_classes={num_classes})"
    with tf.control_dependencies([
            tf.debugging.assert_non_negative(ids, message=msg),
            tf.debugging.assert_less(ids, tf.cast(num_classes, tf.int64), message=msg)]):
        return tf.identity(ids)


def per_example_logits(weights, biases, labels, inputs, sampled_values, num_true=1,
                       subtract_log_q=True, remove_accidental_hits=True, num_classes=None):
    """Logits of each example's true classes and of its own sampled classes.

    The per-example counterpart of TF's `_compute_sampled_logits`: a loss is then any
    function of the two (softmax cross-entropy, sigmoid cross-entropy, ...).

    Args:
        weights: `[num_classes, dim]` tensor or variable, or a list of row shards.
        biases: `[num_classes]` tensor or variable, or None.
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
        for float16/bfloat16 inputs, else the inputs' dtype.
    """
    num_true = _check_positive_int(num_true, "num_true")
    shards = _weight_shards(weights)
    num_classes = _check_num_classes(num_classes, shards)
    inputs = tf.convert_to_tensor(inputs)
    if not inputs.dtype.is_floating:
        raise TypeError(f"`inputs` must be floating point, got dtype {inputs.dtype.name}.")
    if inputs.shape.rank != 2:
        raise ValueError(f"`inputs` must have rank 2 ([batch, dim]), got shape {inputs.shape}.")
    if biases is not None:
        biases = _check_biases(biases, num_classes)
    labels = _check_labels(labels, num_true)
    sampled, true_ec, sampled_ec = _check_sampled_values(sampled_values, num_true)
    batch = tf.shape(inputs, out_type=tf.int64)[0]
    with tf.control_dependencies([
            tf.debugging.assert_equal(tf.shape(labels, out_type=tf.int64)[0], batch,
                                      message="`labels` must have one row per row of `inputs`"),
            tf.debugging.assert_equal(
                tf.stack([tf.shape(v, out_type=tf.int64)[0]
                          for v in (sampled, true_ec, sampled_ec)]), batch,
                message="`sampled_values` must have one row per row of `inputs`")]):
        labels = _check_ids(labels, num_classes, "labels")
        sampled = _check_ids(sampled, num_classes, "sampled_values[0]")

    # The distinct ids' rows are read once and expanded: with `batch * num_sampled` draws
    # many ids repeat, and a repeated row must be one row of the weight gradient (see
    # `_unique_rows`) for Keras' optimizers to apply it as the dense gradient.
    unique, (true_index, sampled_index) = _unique_rows.unique_index(labels, sampled)
    unique_w = tf.cast(_gather_rows(shards, unique), inputs.dtype)    # [num_unique, dim]
    true_w = tf.gather(unique_w, true_index)                          # [batch, num_true, dim]
    sampled_w = tf.gather(unique_w, sampled_index)                    # [batch, num_sampled, dim]
    true_logits = tf.einsum("bd,btd->bt", inputs, true_w)
    sampled_logits = tf.einsum("bd,bsd->bs", inputs, sampled_w)
    if _low_precision(inputs.dtype):
        true_logits = tf.cast(true_logits, tf.float32)
        sampled_logits = tf.cast(sampled_logits, tf.float32)
    dtype = true_logits.dtype
    if biases is not None:
        unique_b = tf.cast(tf.gather(biases, unique), dtype)
        true_logits += tf.gather(unique_b, true_index)
        sampled_logits += tf.gather(unique_b, sampled_index)
    if subtract_log_q:
        true_logits -= tf.math.log(tf.cast(true_ec, dtype))
        sampled_logits -= tf.math.log(tf.cast(sampled_ec, dtype))
    if remove_accidental_hits:
        hit = tf.reduce_any(tf.equal(sampled[:, :, None], labels[:, None, :]), axis=2)
        sampled_logits = tf.where(hit, tf.constant(_ACCIDENTAL_HIT, dtype), sampled_logits)
    return true_logits, sampled_logits


def _per_example_logits(weights, biases, labels, inputs, num_sampled, num_classes, num_true,
                        sampler, sampled_values, remove_accidental_hits, subtract_log_q,
                        unique, seed):
    """Draws (unless `sampled_values` are given), then `per_example_logits`."""
    num_sampled = _check_positive_int(num_sampled, "num_sampled")
    num_true = _check_positive_int(num_true, "num_true")
    num_classes = _check_num_classes(num_classes, _weight_shards(weights))
    if sampled_values is None:
        if sampler is None:
            raise ValueError("Give a `sampler` (a tfs.samplers.CandidateSampler) or "
                             "`sampled_values`.")
        if isinstance(num_classes, int) and sampler.num_classes != num_classes:
            raise ValueError(f"`sampler` has num_classes={sampler.num_classes} but the "
                             f"weights have {num_classes} rows.")
        labels = _check_ids(_check_labels(labels, num_true), num_classes, "labels")
        sampled_values = sample_per_example(sampler, labels, num_sampled, unique=unique,
                                            seed=seed)
    else:
        sampled = _check_sampled_values(sampled_values, num_true)[0]
        if sampled.shape[1] is not None and sampled.shape[1] != num_sampled:
            raise ValueError(
                f"`sampled_values[0]` has {sampled.shape[1]} columns but `num_sampled`="
                f"{num_sampled}.")
    return _Logits(*per_example_logits(
        weights, biases, labels, inputs, sampled_values, num_true=num_true,
        subtract_log_q=subtract_log_q, remove_accidental_hits=remove_accidental_hits,
        num_classes=num_classes))


def _targets(logits, num_true, true_target=None):
    if true_target is None:
        true_target = 1.0 / num_true
    true_target = tf.constant(true_target, logits.true.dtype)
    return tf.concat([tf.fill(tf.shape(logits.true), true_target),
                      tf.zeros_like(logits.sampled)], 1)


# ---------------------------------------------------------------------------- losses
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
    with tf.name_scope(name or "per_example_sampled_softmax_loss"):
        logits = _per_example_logits(
            weights, biases, labels, inputs, num_sampled, num_classes, num_true, sampler,
            sampled_values, remove_accidental_hits, subtract_log_q, unique, seed)
        return tf.nn.softmax_cross_entropy_with_logits(
            labels=_targets(logits, num_true), logits=tf.concat(logits, 1))


def per_example_nce_loss(weights, biases, labels, inputs, num_sampled, num_classes=None,
                         num_true=1, sampler=None, sampled_values=None,
                         remove_accidental_hits=False, subtract_log_q=True, unique=False,
                         seed=None, name=None):
    """NCE (as `tf.nn.nce_loss`) where each example has its own `num_sampled` negatives.

    Arguments as `per_example_sampled_softmax_loss`; `remove_accidental_hits` defaults to
    False, as in TF. The per-example loss is the sum over the example's true and sampled
    logits of the sigmoid cross-entropy (true targets `1/num_true`, sampled targets 0).
    """
    return _per_example_logistic_loss(
        weights, biases, labels, inputs, num_sampled, num_classes, num_true, sampler,
        sampled_values, remove_accidental_hits, subtract_log_q, unique, seed,
        name or "per_example_nce_loss", true_target=1.0 / num_true)


def _per_example_logistic_loss(weights, biases, labels, inputs, num_sampled, num_classes,
                               num_true, sampler, sampled_values, remove_accidental_hits,
                               subtract_log_q, unique, seed, name, true_target):
    with tf.name_scope(name):
        logits = _per_example_logits(
            weights, biases, labels, inputs, num_sampled, num_classes, num_true, sampler,
            sampled_values, remove_accidental_hits, subtract_log_q, unique, seed)
        per_logit = tf.nn.sigmoid_cross_entropy_with_logits(
            labels=_targets(logits, num_true, true_target), logits=tf.concat(logits, 1))
        return tf.reduce_sum(per_logit, axis=1)


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
    return _per_example_logistic_loss(
        weights, biases, labels, inputs, num_sampled, num_classes, num_true, sampler,
        sampled_values, remove_accidental_hits, subtract_log_q, unique, seed,
        name or "per_example_negative_sampling_loss", true_target=1.0)

"""Softmax cross-entropy over per-example candidate sets.

Some problems bring their own negatives: the legal moves of a game position, the items a
user was shown, the answers offered to a question. Each example has its own set of
candidate class ids, of its own size, and one of them is the positive. TF's sampled losses
cannot express this (they share one sampled set across the batch and want dense tensors).

Here the candidates are a `tf.RaggedTensor` `[batch, (n_i)]` of class ids, or a dense
`[batch, n]` tensor with a boolean mask. For ragged input all work is done on the flat
values (`sum(n_i)` rows of the weight matrix, segment reductions over the row ids), so the
cost is O(sum n_i * dim) and nothing is padded to the longest row. A class that is a
candidate of several examples is read once and is one row of the weight gradient, as Keras'
optimizers need (see `_unique_rows`).
"""

import tensorflow as tf

from tf_sampling.losses import _sampled_logits as _sl
from tf_sampling.losses import _unique_rows

__all__ = ["candidate_softmax_loss", "candidate_log_softmax", "candidate_logits"]


# ---------------------------------------------------------------------------- checks
def _check_candidates(candidates, candidate_mask):
    if isinstance(candidates, tf.RaggedTensor):
        if candidate_mask is not None:
            raise ValueError(
                "`candidate_mask` is only for dense `candidates`; a RaggedTensor's rows "
                "already have their own lengths.")
        if candidates.shape.rank != 2 or candidates.ragged_rank != 1:
            raise ValueError(
                "`candidates` must be a RaggedTensor of shape [batch, (n_i)] (rank 2, "
                f"ragged_rank 1), got shape {candidates.shape}, ragged_rank "
                f"{candidates.ragged_rank}.")
        if not candidates.dtype.is_integer:
            raise TypeError(
                f"`candidates` must hold integer class ids, got dtype {candidates.dtype.name}.")
        return tf.cast(candidates, tf.int64).with_row_splits_dtype(tf.int64), None
    candidates = tf.convert_to_tensor(candidates)
    if not candidates.dtype.is_integer:
        raise TypeError(
            f"`candidates` must hold integer class ids, got dtype {candidates.dtype.name}.")
    if candidates.shape.rank != 2:
        raise ValueError(
            f"`candidates` must have rank 2 ([batch, n]), got shape {candidates.shape}.")
    if candidate_mask is None:
        candidate_mask = tf.ones_like(candidates, dtype=tf.bool)
    else:
        candidate_mask = tf.convert_to_tensor(candidate_mask)
        if candidate_mask.dtype != tf.bool:
            raise TypeError(
                f"`candidate_mask` must be boolean, got dtype {candidate_mask.dtype.name}.")
        if not candidate_mask.shape.is_compatible_with(candidates.shape):
            raise ValueError(
                f"`candidate_mask` has shape {candidate_mask.shape} but `candidates` has "
                f"shape {candidates.shape}.")
    return tf.cast(candidates, tf.int64), candidate_mask


def _check_log_q(candidate_log_q, candidates, float_dtype):
    """`candidate_log_q` with the layout of `candidates`, as flat values or dense."""
    if candidate_log_q is None:
        return None
    name = "candidate_log_q"
    if isinstance(candidates, tf.RaggedTensor):
        if not isinstance(candidate_log_q, tf.RaggedTensor):
            raise TypeError(f"`{name}` must be a RaggedTensor like `candidates`.")
        if not candidate_log_q.dtype.is_floating:
            raise TypeError(f"`{name}` must be floating point, got {candidate_log_q.dtype.name}.")
        if candidate_log_q.shape.rank != 2 or candidate_log_q.ragged_rank != 1:
            raise ValueError(f"`{name}` must have shape [batch, (n_i)] like `candidates`.")
        same = tf.debugging.assert_equal(
            tf.cast(candidate_log_q.row_splits, tf.int64),
            tf.cast(candidates.row_splits, tf.int64),
            message=f"`{name}` must have the same row lengths as `candidates`")
        with tf.control_dependencies([same]):
            return tf.cast(tf.identity(candidate_log_q.flat_values), float_dtype)
    candidate_log_q = tf.convert_to_tensor(candidate_log_q)
    if not candidate_log_q.dtype.is_floating:
        raise TypeError(f"`{name}` must be floating point, got {candidate_log_q.dtype.name}.")
    if not candidate_log_q.shape.is_compatible_with(candidates.shape):
        raise ValueError(
            f"`{name}` has shape {candidate_log_q.shape} but `candidates` has shape "
            f"{candidates.shape}.")
    return tf.cast(candidate_log_q, float_dtype)


def _check_positive(value, name, batch_static):
    value = tf.convert_to_tensor(value)
    if not value.dtype.is_integer:
        raise TypeError(f"`{name}` must be an integer tensor, got dtype {value.dtype.name}.")
    # [batch, 1] is what Keras label pipelines usually produce; accept it.
    if value.shape.rank == 2 and value.shape[1] == 1:
        value = tf.squeeze(value, 1)
    if value.shape.rank != 1:
        raise ValueError(f"`{name}` must have shape [batch] (or [batch, 1]), got {value.shape}.")
    if batch_static is not None and value.shape[0] is not None and value.shape[0] != batch_static:
        raise ValueError(
            f"`{name}` has {value.shape[0]} entries but `inputs` has {batch_static} rows.")
    return tf.cast(value, tf.int64)


def _range_checks(ids, num_classes, name):
    return [_sl.range_check(ids, num_classes, name, noun="class ids")]


def _repeat_check(ids, row_ids, num_classes):
    """Asserts that no class id occurs twice in one row.

    A repeat is one class counted twice in the softmax's normalizer, almost always a data
    bug (a candidate list built with a join that duplicated rows, say); `allow_duplicates`
    turns the check off for multisets that are meant, such as candidates drawn with
    replacement together with their log Q. Cost: one `tf.unique_with_counts` over the
    `(row, id)` pairs, O(sum n_i). The key `row * num_classes + id` is unique per pair
    only for ids in range, so this runs after the range checks.
    """
    key = row_ids * tf.cast(num_classes, tf.int64) + ids
    unique, _, count = tf.unique_with_counts(key)
    repeated = count > 1
    # The first repeated pair, reported as (row, id); (0, 0) is only read when none is.
    pair = tf.gather(unique, tf.argmax(tf.cast(repeated, tf.int32), output_type=tf.int64))
    pair = tf.where(tf.size(unique) > 0, pair, tf.zeros_like(pair))
    num = tf.cast(num_classes, tf.int64)
    return tf.debugging.Assert(
        tf.logical_not(tf.reduce_any(repeated)),
        ["`candidates` has a class id repeated within a row; each row must list a class "
         "at most once (a repeat counts twice in the softmax). Pass "
         "`allow_duplicates=True` if the repeats are meant (e.g. candidates sampled with "
         "replacement, with their log Q). First repeat (row, id):",
         tf.saturate_cast(pair // num, tf.int32), tf.saturate_cast(pair % num, tf.int32)],
        summarize=2)


# ---------------------------------------------------------------------------- logits
def _logits(shards, biases, inputs, ids, log_q, row_ids=None):
    """`<inputs[b], weights[c]> + biases[c] - log_q` for the checked int64 ids: flat `[N]`
    with the row of each in `row_ids`, or dense `[batch, n]`.

    Each distinct id's row is read once (one row of the weight gradient; see
    `_unique_rows`), then expanded to the candidates. The dot products are taken in the
    inputs' dtype; the logits come out in `compute_dtype` (float32 for half precision).
    """
    unique, (index,) = _unique_rows.unique_index(ids)
    w = tf.gather(tf.cast(_sl.gather_rows(shards, unique), inputs.dtype), index)
    if row_ids is None:
        logits = tf.einsum("bd,bnd->bn", inputs, w)
    else:
        logits = tf.reduce_sum(w * tf.gather(inputs, row_ids), axis=-1)
    logits = tf.cast(logits, _sl.compute_dtype(logits.dtype))
    if biases is not None:
        logits += tf.gather(tf.cast(_sl.gather_rows(biases, unique), logits.dtype), index)
    if log_q is not None:
        logits -= tf.cast(log_q, logits.dtype)
    return logits


def _ragged_logits(shards, biases, inputs, candidates, log_q_flat, num_classes,
                   allow_duplicates):
    """Flat logits `[sum n_i]` and the row id of each, with the input checks run first."""
    ids = candidates.flat_values
    row_ids = candidates.value_rowids()
    nrows = candidates.nrows()
    checks = _range_checks(ids, num_classes, "candidates") + [
        tf.debugging.assert_equal(
            nrows, tf.shape(inputs, out_type=tf.int64)[0],
            message="`candidates` must have one row per row of `inputs`"),
        tf.debugging.assert_positive(
            candidates.row_lengths(),
            message="`candidates` has an empty row: every example needs at least one "
                    "candidate"),
    ]
    with tf.control_dependencies(checks):
        ids = tf.identity(ids)
    if not allow_duplicates:
        with tf.control_dependencies([_repeat_check(ids, row_ids, num_classes)]):
            ids = tf.identity(ids)
    return _logits(shards, biases, inputs, ids, log_q_flat, row_ids), row_ids, nrows


def _segment_logsumexp(logits, row_ids, nrows):
    # The shift is only for stability; the result does not depend on it, so no gradient.
    m = tf.stop_gradient(tf.math.unsorted_segment_max(logits, row_ids, nrows))
    s = tf.math.unsorted_segment_sum(tf.exp(logits - tf.gather(m, row_ids)), row_ids, nrows)
    return tf.math.log(s) + m


def _dense_logits(shards, biases, inputs, candidates, mask, log_q, num_classes,
                  allow_duplicates):
    """Logits `[batch, n]`; masked-out slots hold -inf."""
    checks = _range_checks(tf.boolean_mask(candidates, mask), num_classes, "candidates") + [
        tf.debugging.assert_equal(
            tf.shape(candidates)[0], tf.shape(inputs)[0],
            message="`candidates` must have one row per row of `inputs`"),
        tf.debugging.assert_equal(
            tf.reduce_all(tf.reduce_any(mask, axis=1)), True,
            message="`candidates` has an empty row (`candidate_mask` is all False there): "
                    "every example needs at least one candidate"),
    ]
    if not allow_duplicates:
        # Only the real slots: padding (e.g. -1 in every unused slot) repeats by design.
        rows = tf.broadcast_to(tf.range(tf.shape(candidates, out_type=tf.int64)[0])[:, None],
                               tf.shape(candidates, out_type=tf.int64))
        with tf.control_dependencies(checks):
            checks = checks + [_repeat_check(tf.boolean_mask(candidates, mask),
                                             tf.boolean_mask(rows, mask), num_classes)]
    with tf.control_dependencies(checks):
        # Padded slots may hold anything (often -1); look up row 0 there instead.
        safe = tf.where(mask, candidates, tf.zeros_like(candidates))
    # Padding shares row 0's entry of the distinct ids.
    logits = _logits(shards, biases, inputs, safe, log_q)
    return tf.where(mask, logits, tf.constant(-float("inf"), logits.dtype))


def _prepare(weights, biases, inputs, candidates, candidate_mask, candidate_log_q):
    shards, num_classes = _sl.as_shards(weights, "weights", 2)
    inputs = _sl.check_inputs(inputs, shards[0].shape[1], rank=2, layer=False)
    if biases is not None:
        biases = _sl.as_shards(biases, "biases", 1, num_classes)[0]
    candidates, mask = _check_candidates(candidates, candidate_mask)
    log_q = _check_log_q(candidate_log_q, candidates, _sl.compute_dtype(inputs.dtype))
    return shards, num_classes, biases, inputs, candidates, mask, log_q


# Plain TF ops: autograph conversion would only slow down tracing.
@tf.autograph.experimental.do_not_convert
def candidate_logits(weights, biases, inputs, candidates, candidate_mask=None,
                     candidate_log_q=None, allow_duplicates=False):
    """Logits of each example's candidates: `<inputs[b], weights[c]> + biases[c] - log_q`.

    Same arguments as `candidate_softmax_loss`. Returns a RaggedTensor `[batch, (n_i)]` for
    ragged `candidates`, or a dense `[batch, n]` tensor with -inf in masked-out slots.
    """
    shards, num_classes, biases, inputs, candidates, mask, log_q = _prepare(
        weights, biases, inputs, candidates, candidate_mask, candidate_log_q)
    if mask is None:
        logits, _, _ = _ragged_logits(shards, biases, inputs, candidates, log_q, num_classes,
                                      allow_duplicates)
        return candidates.with_flat_values(logits)
    return _dense_logits(shards, biases, inputs, candidates, mask, log_q, num_classes,
                         allow_duplicates)


# Plain TF ops: autograph conversion would only slow down tracing.
@tf.autograph.experimental.do_not_convert
def candidate_log_softmax(weights, biases, inputs, candidates, candidate_mask=None,
                          candidate_log_q=None, allow_duplicates=False):
    """Log-probabilities of each example's candidates under the softmax over that set.

    Same arguments as `candidate_softmax_loss`. Returns a RaggedTensor `[batch, (n_i)]` for
    ragged `candidates`, or a dense `[batch, n]` tensor with -inf in masked-out slots.

    Example:
    >>> cands = tf.ragged.constant([[4, 9, 2], [7, 1]], dtype=tf.int64)
    >>> logp = tfs.losses.candidate_log_softmax(w, b, x, cands)  # rows sum to 1 after exp
    """
    shards, num_classes, biases, inputs, candidates, mask, log_q = _prepare(
        weights, biases, inputs, candidates, candidate_mask, candidate_log_q)
    if mask is None:
        logits, row_ids, nrows = _ragged_logits(
            shards, biases, inputs, candidates, log_q, num_classes, allow_duplicates)
        lse = _segment_logsumexp(logits, row_ids, nrows)
        return candidates.with_flat_values(logits - tf.gather(lse, row_ids))
    logits = _dense_logits(shards, biases, inputs, candidates, mask, log_q, num_classes,
                           allow_duplicates)
    return logits - tf.reduce_logsumexp(logits, axis=1, keepdims=True)


# ---------------------------------------------------------------------------- the loss
# Plain TF ops: autograph conversion would only slow down tracing.
@tf.autograph.experimental.do_not_convert
def candidate_softmax_loss(weights, biases, inputs, candidates, positive_index=None,
                           positive_ids=None, candidate_mask=None, candidate_log_q=None,
                           allow_duplicates=False, name=None):
    """Softmax cross-entropy of each example over its own set of candidate classes.

    For example `b` with candidates `c_1..c_n` (its own n), logits
    `z_j = <inputs[b], weights[c_j]> + biases[c_j] - candidate_log_q[b, j]` and positive
    `p`, the loss is `logsumexp_j(z_j) - z_p`.

    Args:
        weights: `[num_classes, dim]` float tensor or variable, or a list of row shards whose
            concatenation is that matrix (TF's "div" sharding, as
            `tf.nn.sampled_softmax_loss`).
        biases: `[num_classes]` float tensor, or None for no bias.
        inputs: `[batch, dim]` float tensor (float16/bfloat16 is fine: logits and the
            loss are computed in float32 then).
        candidates: int `tf.RaggedTensor` `[batch, (n_i)]` of class ids (cost
            O(sum n_i * dim), no padding), or a dense int `[batch, n]` tensor; with
            dense candidates, `candidate_mask` marks the real ones.
        positive_index: int `[batch]` (or `[batch, 1]`): position of the positive within
            each row (the column, for dense candidates). Give this or `positive_ids`.
        positive_ids: int `[batch]` (or `[batch, 1]`): class id of the positive; it must
            appear among that row's candidates (its first occurrence is the positive).
        candidate_mask: bool `[batch, n]`, only with dense `candidates`; None means all
            are real. Masked-out slots may hold any id (e.g. -1 padding).
        candidate_log_q: optional float tensor with the layout of `candidates` (ragged
            with the same row lengths, or dense `[batch, n]`): log of each candidate's
            sampling probability or expected count, subtracted from its logit (the
            "log Q" correction when candidates were sampled). Applied to every candidate,
            the positive included.
        allow_duplicates: whether a class may appear more than once in one row (it then
            counts once per appearance in the softmax, and `positive_ids` names its first
            appearance). Default False: a repeat is an `InvalidArgumentError`, since it is
            usually a data bug; pass True for multisets that are meant, such as candidates
            drawn with replacement along with their `candidate_log_q`. Padding (masked-out
            slots of dense `candidates`) is never checked.
        name: optional name scope.

    Returns:
        float `[batch]` per-example loss (float32 for float16/bfloat16 inputs).

    Raises:
        ValueError / TypeError on bad ranks, dtypes or static shapes, naming the argument;
        `tf.errors.InvalidArgumentError` when run on an empty candidate row, a class id
        outside `[0, num_classes)`, a class repeated within a row (unless
        `allow_duplicates`), a `positive_index` outside its row (or on a masked
        slot), or a `positive_ids` entry that is not among its row's candidates.

    Example:
    >>> cands = tf.ragged.constant([[4, 9, 2], [7, 1]], dtype=tf.int64)
    >>> loss = tfs.losses.candidate_softmax_loss(
    ...     weights, biases, inputs, cands, positive_ids=[9, 7])   # shape [2]
    """
    with tf.name_scope(name or "candidate_softmax_loss"):
        return loss_and_log_softmax(
            weights, biases, inputs, candidates, positive_index, positive_ids,
            candidate_mask, candidate_log_q, with_log_softmax=False,
            allow_duplicates=allow_duplicates)[0]


def loss_and_log_softmax(weights, biases, inputs, candidates, positive_index, positive_ids,
                         candidate_mask, candidate_log_q, with_log_softmax,
                         allow_duplicates=False):
    """`candidate_softmax_loss`, and with `with_log_softmax` also `candidate_log_softmax`
    from the same logits (else None): the head's evaluation call wants both."""
    if (positive_index is None) == (positive_ids is None):
        raise ValueError("Give exactly one of `positive_index` and `positive_ids`.")
    shards, num_classes, biases, inputs, candidates, mask, log_q = _prepare(
        weights, biases, inputs, candidates, candidate_mask, candidate_log_q)
    batch_static = inputs.shape[0]
    if positive_index is not None:
        positive = _check_positive(positive_index, "positive_index", batch_static)
    else:
        positive = _check_positive(positive_ids, "positive_ids", batch_static)
    positive_checks = [tf.debugging.assert_equal(
        tf.size(positive, out_type=tf.int64), tf.shape(inputs, out_type=tf.int64)[0],
        message="`positive_index`/`positive_ids` must have one entry per row of `inputs`")]

    if mask is None:
        logits, row_ids, nrows = _ragged_logits(
            shards, biases, inputs, candidates, log_q, num_classes, allow_duplicates)
        lse = _segment_logsumexp(logits, row_ids, nrows)
        with tf.control_dependencies(positive_checks):
            flat_pos = _ragged_positive_position(candidates, row_ids, nrows, positive,
                                                 positive_index is not None, num_classes)
        loss = lse - tf.gather(logits, flat_pos)
        log_softmax = candidates.with_flat_values(logits - tf.gather(lse, row_ids)) \
            if with_log_softmax else None
        return loss, log_softmax

    logits = _dense_logits(shards, biases, inputs, candidates, mask, log_q, num_classes,
                           allow_duplicates)
    lse = tf.reduce_logsumexp(logits, axis=1)
    with tf.control_dependencies(positive_checks):
        col = _dense_positive_column(candidates, mask, positive,
                                     positive_index is not None, num_classes)
    loss = lse - tf.gather(logits, col, batch_dims=1)
    return loss, (logits - lse[:, None]) if with_log_softmax else None


def _ragged_positive_position(candidates, row_ids, nrows, positive, by_index, num_classes):
    """Position of each row's positive in the flat values."""
    starts = candidates.row_splits[:-1]
    if by_index:
        checks = [
            tf.debugging.assert_non_negative(
                positive, message="`positive_index` is negative"),
            tf.debugging.assert_less(
                positive, candidates.row_lengths(),
                message="`positive_index` is outside its row: it must be less than the "
                        "row's number of candidates"),
        ]
        with tf.control_dependencies(checks):
            return starts + positive
    ids = candidates.flat_values
    total = tf.size(ids, out_type=tf.int64)
    match = tf.equal(ids, tf.gather(positive, row_ids))
    where = tf.where(match, tf.range(total, dtype=tf.int64), total)
    first = tf.math.unsorted_segment_min(where, row_ids, nrows)
    checks = _range_checks(positive, num_classes, "positive_ids") + [
        tf.debugging.assert_less(
            first, total,
            message="`positive_ids` has an id that is not among that row's `candidates`"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(first)


def _dense_positive_column(candidates, mask, positive, by_index, num_classes):
    n = tf.shape(candidates, out_type=tf.int64)[1]
    if by_index:
        checks = [
            tf.debugging.assert_non_negative(positive, message="`positive_index` is negative"),
            tf.debugging.assert_less(
                positive, n, message="`positive_index` is outside the candidate columns"),
        ]
        with tf.control_dependencies(checks):
            positive = tf.identity(positive)
        on_real = tf.gather(mask, tf.minimum(positive, n - 1), batch_dims=1)
        with tf.control_dependencies([tf.debugging.assert_equal(
                tf.reduce_all(on_real), True,
                message="`positive_index` points at a slot that `candidate_mask` marks as "
                        "padding")]):
            return tf.identity(positive)
    match = tf.logical_and(mask, tf.equal(candidates, positive[:, None]))
    checks = _range_checks(positive, num_classes, "positive_ids") + [
        tf.debugging.assert_equal(
            tf.reduce_all(tf.reduce_any(match, axis=1)), True,
            message="`positive_ids` has an id that is not among that row's `candidates`"),
    ]
    with tf.control_dependencies(checks):
        return tf.argmax(tf.cast(match, tf.int32), axis=1, output_type=tf.int64)

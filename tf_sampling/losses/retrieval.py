"""Softmax losses for two-tower retrieval models, whose candidates are items, not words.

A batch holds `B` (query, item) pairs embedded by two towers. Each query's positive is its
own item (the diagonal of the `[B, B]` score matrix); the other items of the batch serve as
negatives ("in-batch negatives"). Three corrections make this a sound sampled softmax:

- **log Q correction** (Yi et al., RecSys 2019): in-batch items are drawn with the data's
  item frequency, so popular items are over-represented as negatives. Subtracting
  `log q(item)` from every logit makes the sampled softmax consistent again. `q` can come
  from `tf_sampling.FrequencyEstimator` when ids are hashed and the distribution drifts.
- **accidental hits**: the same item can be in the batch twice; for a query whose positive
  is item `y`, another copy of `y` in the batch is not a negative. Those logits are masked
  (by candidate id), the diagonal excepted.
- **hard-negative mining**: keep only the `k` largest negative logits of each row.

Mixed negative sampling (Yang et al., WWW 2020 companion) adds `num_sampled` items drawn by
any `tf_sampling.samplers` sampler (e.g. uniform over the corpus, so that items that are
rare in the data still appear as negatives), embedded by the candidate tower, to the in-batch
negatives in one softmax.

Order of operations, as in TensorFlow Recommenders' `Retrieval` task: scores / temperature,
then log Q, then accidental-hit masking, then hard-negative mining. All functions return the
per-example loss `[B]` (take `tf.reduce_mean` for a scalar).
"""

import numbers
import warnings

import tensorflow as tf

from tf_sampling import samplers as _samplers

__all__ = ["in_batch_softmax_loss", "mixed_negative_sampling_loss", "retrieval_logits"]

# Masked logits get a large finite negative: exp() underflows to exactly 0, and unlike -inf
# it cannot produce inf - inf = NaN anywhere downstream.
_MASKED = -1e9


# ---------------------------------------------------------------------------- checks
def _check_embeddings(query_embeddings, candidate_embeddings):
    q = tf.convert_to_tensor(query_embeddings)
    c = tf.convert_to_tensor(candidate_embeddings)
    for t, name in ((q, "query_embeddings"), (c, "candidate_embeddings")):
        if not t.dtype.is_floating:
            raise TypeError(f"`{name}` must be a float tensor, got dtype {t.dtype.name}.")
        if t.shape.rank is not None and t.shape.rank != 2:
            raise ValueError(f"`{name}` must have shape [batch, dim], got {t.shape}.")
    if not q.shape[-1:].is_compatible_with(c.shape[-1:]):
        raise ValueError(
            f"`query_embeddings` and `candidate_embeddings` must have the same dim, got "
            f"{q.shape} and {c.shape}.")
    if not q.shape[:1].is_compatible_with(c.shape[:1]):
        raise ValueError(
            f"`query_embeddings` and `candidate_embeddings` must have the same batch size "
            f"(candidate i is the positive of query i), got {q.shape} and {c.shape}.")
    same = tf.debugging.assert_equal(
        tf.shape(q)[0], tf.shape(c)[0],
        message="`query_embeddings` and `candidate_embeddings` must have the same batch size")
    with tf.control_dependencies([same]):
        q = tf.identity(q)
    return q, tf.cast(c, q.dtype)


def _check_vector(x, name, batch_size, integer):
    x = tf.convert_to_tensor(x)
    if integer and not x.dtype.is_integer:
        raise TypeError(f"`{name}` must be an integer tensor, got dtype {x.dtype.name}.")
    if not integer and not x.dtype.is_floating:
        raise TypeError(f"`{name}` must be a float tensor, got dtype {x.dtype.name}.")
    if x.shape.rank is not None and x.shape.rank != 1:
        raise ValueError(f"`{name}` must have shape [batch], got {x.shape}.")
    if isinstance(batch_size, int) and x.shape[0] is not None and x.shape[0] != batch_size:
        raise ValueError(f"`{name}` must have {batch_size} entries (the batch), got {x.shape}.")
    same = tf.debugging.assert_equal(
        tf.size(x), tf.cast(batch_size, tf.int32),
        message=f"`{name}` must have one entry per example of the batch")
    with tf.control_dependencies([same]):
        return tf.identity(x)


def _check_in_range(x, name, batch_size, log):
    """A float `[B]` vector of probabilities in (0, 1] (or, with `log`, of their logs),
    checked at run time."""
    x = _check_vector(x, name, batch_size, integer=False)
    if x.dtype in (tf.float16, tf.bfloat16):
        x = tf.cast(x, tf.float32)
    if log:
        msg = f"`{name}` must be the log of a probability: <= 0, not -inf, not NaN"
        low, high = tf.constant(-float("inf"), x.dtype), tf.zeros([], x.dtype)
    else:
        msg = f"`{name}` must be in (0, 1] (positive, finite, not NaN)"
        low, high = tf.zeros([], x.dtype), tf.ones([], x.dtype)
    checks = [tf.debugging.assert_greater(x, low, message=msg),
              tf.debugging.assert_less_equal(x, high, message=msg)]
    with tf.control_dependencies(checks):
        return tf.identity(x)


def _resolve_log_q(candidate_log_q, candidate_sampling_probability, batch, fn):
    """The checked `[B]` log Q from `candidate_log_q`, or from the deprecated
    `candidate_sampling_probability` (with a DeprecationWarning); None if neither."""
    if candidate_sampling_probability is None:
        if candidate_log_q is None:
            return None
        return _check_in_range(candidate_log_q, "candidate_log_q", batch, log=True)
    warnings.warn(f"{fn}: `candidate_sampling_probability` is deprecated and will be removed "
                  "in the next release; pass its log as `candidate_log_q`.",
                  DeprecationWarning, stacklevel=3)
    if candidate_log_q is not None:
        raise ValueError(f"{fn}: pass `candidate_log_q` only (`candidate_sampling_probability`"
                         " is its deprecated form).")
    return tf.math.log(_check_in_range(candidate_sampling_probability,
                                       "candidate_sampling_probability", batch, log=False))


def _check_temperature(temperature):
    if (isinstance(temperature, bool) or not isinstance(temperature, numbers.Real)
            or not 0 < temperature < float("inf")):
        raise ValueError(f"`temperature` must be a positive finite number, got {temperature!r}.")
    return float(temperature)


def _check_hard_negatives(k):
    if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral) or k <= 0):
        raise ValueError(f"`num_hard_negatives` must be None or a positive integer, got {k!r}.")
    return k


def _batch_size(t):
    return t.shape[0] if t.shape[0] is not None else tf.shape(t)[0]


# ---------------------------------------------------------------------------- core
def _scores(q, c, temperature):
    """q c^T / temperature, in float32 at least (half precision would round small probs)."""
    logits = tf.matmul(q, c, transpose_b=True)
    if logits.dtype in (tf.float16, tf.bfloat16):
        logits = tf.cast(logits, tf.float32)
    if temperature != 1.0:
        logits = logits / temperature
    return logits


def _mask_accidental_hits(logits, positive_ids, column_ids):
    """Masks column j of row i where column_ids[j] == positive_ids[i], except j == i."""
    hits = tf.equal(positive_ids[:, None], column_ids[None, :])
    diagonal = tf.cast(tf.eye(tf.shape(logits)[0], tf.shape(logits)[1]), tf.bool)
    return tf.where(hits & ~diagonal, tf.constant(_MASKED, logits.dtype), logits)


def _diagonal_softmax_loss(logits, num_hard_negatives):
    """-log softmax(logits)[i, i] per row; optionally over the positive + top-k negatives."""
    rows = tf.range(tf.shape(logits)[0])
    if num_hard_negatives is None:
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=rows, logits=logits)
    positive = tf.gather(logits, rows, batch_dims=1)
    is_positive = tf.cast(tf.eye(tf.shape(logits)[0], tf.shape(logits)[1]), tf.bool)
    negatives = tf.where(is_positive, tf.constant(_MASKED, logits.dtype), logits)
    k = tf.minimum(num_hard_negatives, tf.shape(logits)[1] - 1)
    hardest = tf.math.top_k(negatives, k).values
    kept = tf.concat([positive[:, None], hardest], axis=1)
    return tf.reduce_logsumexp(kept, axis=1) - positive


# Plain TF ops: autograph conversion would only slow down tracing.
@tf.autograph.experimental.do_not_convert
def retrieval_logits(query_embeddings, candidate_embeddings, candidate_ids=None,
                     candidate_log_q=None, positive_ids=None, temperature=1.0):
    """Corrected `[B, C]` logits: scores / temperature - log Q, accidental hits masked.

    Row `i`'s positive is column `i` (so `C >= B`); the other columns are its negatives.
    `candidate_log_q` (`[C]`) is subtracted from each column. If `candidate_ids` (`[C]`) are
    given, column `j` of row `i` is masked where `candidate_ids[j] == positive_ids[i]`
    (`positive_ids` defaults to `candidate_ids[:B]`), the positive column excepted. The
    building block of the losses below, for custom losses.
    """
    temperature = _check_temperature(temperature)
    q = tf.convert_to_tensor(query_embeddings)
    c = tf.cast(tf.convert_to_tensor(candidate_embeddings), q.dtype)
    logits = _scores(q, c, temperature)
    if candidate_log_q is not None:
        logits = logits - tf.stop_gradient(tf.cast(candidate_log_q, logits.dtype))[None, :]
    if candidate_ids is not None:
        ids = tf.cast(candidate_ids, tf.int64)
        pos = ids[:tf.shape(logits)[0]] if positive_ids is None else tf.cast(positive_ids,
                                                                              tf.int64)
        logits = _mask_accidental_hits(logits, pos, ids)
    return logits


# ---------------------------------------------------------------------------- losses
# Plain TF ops: autograph conversion would only slow down tracing.
@tf.autograph.experimental.do_not_convert
def in_batch_softmax_loss(query_embeddings, candidate_embeddings, candidate_ids=None,
                          candidate_sampling_probability=None, temperature=1.0,
                          num_hard_negatives=None, *, candidate_log_q=None):
    """Sampled softmax with in-batch negatives, for two-tower retrieval.

    Logits are `<query_i, candidate_j> / temperature`; candidate `i` is the positive of
    query `i` and the other candidates of the batch are its negatives.

    Args:
        query_embeddings: float `[B, d]` (query tower output).
        candidate_embeddings: float `[B, d]` (item tower output), row `i` the positive item
            of query `i`.
        candidate_ids: optional integer `[B]` item ids. When given, accidental hits are
            removed: a column holding the same item as the row's positive is masked (the
            diagonal excepted).
        candidate_log_q: optional float `[B]`, `log q_j` with `q_j` the probability with
            which item `j` is drawn into a batch (its frequency in the training stream; see
            `tf_sampling.FrequencyEstimator`). When given, it is subtracted from column
            `j` (Yi et al. 2019's log Q correction). Must be <= 0 and finite. The name of
            the log-Q argument in every loss and head of this package.
        candidate_sampling_probability: deprecated: `q_j` itself (in `(0, 1]`); pass
            `candidate_log_q=tf.math.log(q)` instead.
        temperature: logits are divided by it.
        num_hard_negatives: if set, each row keeps only its `k` largest (corrected, masked)
            negative logits besides the positive.

    Returns:
        float32 `[B]` per-example loss.

    Example:
    >>> q = query_tower(features)          # [B, d]
    >>> c = item_tower(item_features)      # [B, d]
    >>> p = estimator(item_ids, training=True)
    >>> loss = tf.reduce_mean(tfs.losses.in_batch_softmax_loss(
    ...     q, c, candidate_ids=item_ids, candidate_log_q=tf.math.log(p)))
    """
    temperature = _check_temperature(temperature)
    num_hard_negatives = _check_hard_negatives(num_hard_negatives)
    q, c = _check_embeddings(query_embeddings, candidate_embeddings)
    batch = _batch_size(c)
    ids = None
    log_q = _resolve_log_q(candidate_log_q, candidate_sampling_probability, batch,
                           "in_batch_softmax_loss")
    if candidate_ids is not None:
        ids = _check_vector(candidate_ids, "candidate_ids", batch, integer=True)
    logits = retrieval_logits(q, c, ids, log_q, temperature=temperature)
    return _diagonal_softmax_loss(logits, num_hard_negatives)


# Plain TF ops: autograph conversion would only slow down tracing.
@tf.autograph.experimental.do_not_convert
def mixed_negative_sampling_loss(query_embeddings, candidate_embeddings, candidate_ids,
                                 candidate_tower, sampler=None, num_sampled=None,
                                 candidate_sampling_probability=None, subtract_log_q=True,
                                 temperature=1.0, num_hard_negatives=None, unique=True,
                                 seed=None, sampled_values=None, *, candidate_log_q=None):
    """Mixed negative sampling (Yang et al. 2020): in-batch plus sampled negatives.

    The softmax of row `i` runs over the `B` in-batch candidates and `num_sampled` items
    drawn by `sampler` (shared by the batch) and embedded by `candidate_tower`.

    log Q: each group is corrected by the log of its candidates' expected count in that
    group, which puts the two groups on one scale (each is then an importance-sampling
    estimate of the full softmax denominator with its own proposal):
    - in-batch item `j`: `log B + candidate_log_q[j]`;
    - sampled item `s`: `log(sampled_expected_count[s])` from the sampler, i.e.
      `log(num_sampled * sampler.probability(s))` when `unique=False`, and TF's
      `log(1 - (1 - p)^num_tries)` for unique sampling (as `tf.nn.sampled_softmax_loss`).

    Accidental hits are always removed, in both groups: any column whose id equals the row's
    positive id is masked, the diagonal excepted. `num_hard_negatives`, if set, keeps the `k`
    largest negatives of each row over both groups.

    Args:
        query_embeddings, candidate_embeddings: float `[B, d]`; candidate `i` is the
            positive of query `i`.
        candidate_ids: integer `[B]` ids of the in-batch candidates (in the sampler's id
            space).
        candidate_tower: callable mapping int64 ids `[num_sampled]` to embeddings
            `[num_sampled, d]`, usually the item tower applied to the items' features.
        sampler: a `tf_sampling.samplers.CandidateSampler` (or its serialized config), e.g.
            `UniformSampler(num_items)` for the paper's uniform index sampling.
        num_sampled: number of sampled negatives (with `sampler`).
        candidate_log_q: float `[B]`, the log of the per-draw probability of each
            in-batch item (<= 0, finite); required when `subtract_log_q`.
        candidate_sampling_probability: deprecated: that probability itself; pass
            `candidate_log_q=tf.math.log(p)` instead.
        subtract_log_q: apply the log Q correction above (default True).
        temperature: logits are divided by it.
        num_hard_negatives: optional top-k hard-negative mining over all negatives.
        unique, seed: passed to `sampler.sample`.
        sampled_values: optional `SampledValues` triple to use instead of sampling (only its
            `sampled_candidates` and `sampled_expected_count` are used).

    Returns:
        float32 `[B]` per-example loss.

    Example:
    >>> uniform = tfs.samplers.UniformSampler(num_classes=num_items)
    >>> loss = tfs.losses.mixed_negative_sampling_loss(
    ...     q, c, item_ids, candidate_tower=lambda ids: item_tower(ids),
    ...     sampler=uniform, num_sampled=256, candidate_log_q=tf.math.log(p))
    """
    temperature = _check_temperature(temperature)
    num_hard_negatives = _check_hard_negatives(num_hard_negatives)
    if not callable(candidate_tower):
        raise TypeError(
            f"`candidate_tower` must be a callable from ids to embeddings, got "
            f"{candidate_tower!r}.")
    q, c = _check_embeddings(query_embeddings, candidate_embeddings)
    batch = _batch_size(c)
    ids = tf.cast(_check_vector(candidate_ids, "candidate_ids", batch, integer=True), tf.int64)

    if sampled_values is None:
        if sampler is None:
            raise ValueError("`sampler` (with `num_sampled`) or `sampled_values` is required.")
        if num_sampled is None:
            raise ValueError("`num_sampled` is required when sampling with `sampler`.")
        sampler = _samplers.get(sampler)
        sampled_values = sampler.sample(ids[:, None], num_sampled, unique=unique, seed=seed)
    sampled_ids = tf.cast(sampled_values[0], tf.int64)
    sampled_expected = tf.cast(sampled_values[2], tf.float32)
    if sampled_ids.shape.rank is not None and sampled_ids.shape.rank != 1:
        raise ValueError(f"sampled candidates must have shape [num_sampled], got "
                         f"{sampled_ids.shape}.")

    sampled_embeddings = tf.convert_to_tensor(candidate_tower(sampled_ids))
    if (sampled_embeddings.shape.rank is not None and
            (sampled_embeddings.shape.rank != 2
             or not sampled_embeddings.shape[-1:].is_compatible_with(c.shape[-1:]))):
        raise ValueError(
            f"`candidate_tower` must return [num_sampled, {c.shape[-1]}] embeddings, got "
            f"shape {sampled_embeddings.shape}.")
    all_candidates = tf.concat([c, tf.cast(sampled_embeddings, c.dtype)], axis=0)
    all_ids = tf.concat([ids, sampled_ids], axis=0)

    log_q = None
    if subtract_log_q:
        in_batch = _resolve_log_q(candidate_log_q, candidate_sampling_probability, batch,
                                  "mixed_negative_sampling_loss")
        if in_batch is None:
            raise ValueError(
                "`candidate_log_q` is required when `subtract_log_q=True` "
                "(pass subtract_log_q=False to train without the log Q correction).")
        positive = tf.debugging.assert_positive(
            sampled_expected, message="sampled expected counts must be positive")
        with tf.control_dependencies([positive]):
            log_q = tf.concat([tf.math.log(tf.cast(batch, in_batch.dtype)) + in_batch,
                               tf.math.log(tf.cast(sampled_expected, in_batch.dtype))],
                              axis=0)
    logits = retrieval_logits(q, all_candidates, all_ids, log_q, positive_ids=ids,
                              temperature=temperature)
    return _diagonal_softmax_loss(logits, num_hard_negatives)

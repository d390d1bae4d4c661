"""Unique sampling in pure TF: the first k distinct ids of i.i.d. streams, with a draw bound.

ALGORITHM
    Each of `batch` rows draws its own i.i.d. stream in rounds (round r from
    `fold_in(seed, r)`: 2k draws, then as many as all rounds before, at most
    `max(2k, MAX_ROUND_ELEMENTS // batch)` per round) and keeps, per row, the distinct ids
    found so far (at most k). A round is deduplicated against them with one stable sort of
    `[found | round]` per row: an entry is new iff it differs from its predecessor in sort
    order. So memory is O(batch * (k + round)), never the whole stream.

    Draw bound (the same as the compiled op's; custom_ops/cc/kernels/alias_table.h, "draw
    bound"): with S_j the sum of the j largest class probabilities, after j distinct ids a
    draw is new with probability >= r_j = 1 - S_j, so a row's number of draws T is
    stochastically below a sum of geometric variables of mean mu = sum_{j<k} 1 / r_j, and
    Janson's tail bound (Statist. Probab. Lett. 135, 2018, Thm 2.1) gives
    P(T >= lambda mu) <= 2^-40 for lambda = 1 + 2c + sqrt(2c), c = ln(2^40) / (r_{k-1} mu).
    A row may use max(2^20 / batch, 2k, lambda mu) draws. The bound costs O(V) (every
    class's probability and a top-k), so it is computed only when the streams pass
    max(2^20 / batch, 2k) draws per row; past it, or if it exceeds 2^32 draws, the call
    fails with InvalidArgumentError.

COST
    O(batch * T log(k + T)) for T draws per row (a sort per round).
"""

import math

import tensorflow as tf

# Draws a row may use before the bound is computed (O(V)); then the bound itself.
FREE_DRAWS = 2**20
# Largest bound accepted: more draws than this is refused as soon as the bound is known.
MAX_DRAWS = 2**32
# ln(2^40): a correct stream passes the bound with probability <= 2^-40.
LOG_INV_DELTA = 40 * math.log(2.0)
# Entries (rows x draws) of one round, unless 2k per row is more.
MAX_ROUND_ELEMENTS = 2**22

TOO_SKEWED = (
    "unique sampling of {k} distinct classes from this distribution needs more draws than "
    "the limit of 2^32: a few classes hold almost all of the mass. Use unique=False, fewer "
    "samples, or a flatter distribution (e.g. a distortion below 1). The draw bound (a "
    "number of draws exceeded with probability < 2^-40) is:")
PAST_BOUND = (
    "no {k} distinct classes within the draw bound, which a stream of this distribution "
    "passes with probability < 2^-40: the draws do not follow the stated probabilities "
    "(a sampler bug). The bound was:")


def draw_bound(probabilities, k):
    """float64 lambda * mu (see the module docstring) for `k` distinct ids of the float64
    `[V]` class `probabilities` (any positive scale), or +inf if fewer than k are > 0."""
    p = tf.convert_to_tensor(probabilities, tf.float64)
    top = tf.math.top_k(p, k)
    # Summed directly, not as 1 - S_j, which would cancel for a dominant class.
    rest = tf.reduce_sum(tf.tensor_scatter_nd_update(p, top.indices[:, None],
                                                     tf.zeros([k], tf.float64)))
    total = rest + tf.reduce_sum(top.values)
    r = (rest + tf.cumsum(top.values, reverse=True)) / total  # r[j] = 1 - S_j
    r_min = r[k - 1]
    ok = r_min > 0.0
    safe_r = tf.where(r > 0.0, r, tf.ones_like(r))
    mu = tf.reduce_sum(1.0 / safe_r)
    c = LOG_INV_DELTA / (tf.where(ok, r_min, 1.0) * mu)
    lam = 1.0 + 2.0 * c + tf.sqrt(2.0 * c)
    return tf.where(ok, lam * mu, tf.constant(math.inf, tf.float64))


def _merge_round(found, count, tries, pos, draws, k):
    """Adds a round `draws` [batch, L] to the rows' distinct ids `found` [batch, k]
    (the first count[b] real, the rest padding < 0)."""
    batch = tf.shape(draws)[0]
    combined = tf.concat([found, draws], 1)
    order = tf.argsort(combined, axis=1, stable=True)
    in_order = tf.gather(combined, order, batch_dims=1)
    new = tf.concat([tf.ones([batch, 1], tf.bool), in_order[:, 1:] != in_order[:, :-1]], 1)
    first = tf.gather(new, tf.argsort(order, axis=1), batch_dims=1) & (combined >= 0)
    seen = tf.cumsum(tf.cast(first, tf.int64), axis=1)
    keep = first & (seen <= k)
    slots = tf.where(keep)  # (row, column) of each id kept, in row-major order
    new_found = tf.tensor_scatter_nd_update(
        _padding(batch, k), tf.stack([slots[:, 0], tf.gather_nd(seen, slots) - 1], 1),
        tf.gather_nd(combined, slots))
    total = seen[:, -1]
    done_now = (count < k) & (total >= k)
    # The column of the k-th distinct id, minus the k columns of `found`.
    at = tf.argmax(tf.cast(seen >= k, tf.int32), axis=1, output_type=tf.int64) - k
    tries = tf.where(done_now, pos + at + 1, tries)
    return new_found, tf.minimum(total, k), tries


def _padding(batch, k):
    # Distinct negative values: they never equal each other or an id.
    return tf.tile(-1 - tf.range(k, dtype=tf.int64)[None], [batch, 1])


def unique_rows(draw, batch, k, seed, probabilities, num_classes):
    """Per row of `batch`, the first `k` distinct ids of its own i.i.d. stream.

    Args:
        draw: `draw(length, seed)` -> int `[batch, length]` i.i.d. ids in [0, num_classes).
        batch: int32 scalar tensor; k: Python int >= 1; seed: int `[2]` tensor.
        probabilities: `probabilities()` -> float64 `[num_classes]` class probabilities
            of the draws (any scale), called only if the streams pass max(2k, 2^20 / batch)
            draws per row.
        num_classes: int scalar; draws outside [0, num_classes) are an error.

    Returns:
        (int64 `[batch, k]` ids in order of first appearance, int64 `[batch]` tries: the
        stream position of each row's k-th distinct id + 1).
    """
    batch = tf.cast(batch, tf.int64)
    # Draws per row before the bound is computed: 2^20 in all, split between the rows (a
    # per-row bound is what matters, and the O(V) bound costs less than batch * 2^20 draws).
    free = tf.maximum(tf.constant(2 * k, tf.int64), FREE_DRAWS // tf.maximum(batch, 1))
    round_cap = tf.maximum(tf.constant(2 * k, tf.int64),
                           MAX_ROUND_ELEMENTS // tf.maximum(batch, 1))
    msg = "the sampler drew ids outside [0, num_classes): a bug in its draws"

    def body(r, pos, found, count, tries, limit):
        length = tf.where(pos == 0, tf.constant(2 * k, tf.int64),
                          tf.minimum(pos, round_cap))
        length = tf.minimum(length, limit - pos)
        ids = tf.cast(draw(length, tf.random.experimental.stateless_fold_in(seed, r)),
                      tf.int64)
        with tf.control_dependencies([
                tf.debugging.assert_non_negative(ids, message=msg),
                tf.debugging.assert_less(ids, tf.cast(num_classes, tf.int64), message=msg)]):
            ids = tf.reshape(ids, [batch, length])
        found, count, tries = _merge_round(found, count, tries, pos, ids, k)
        return r + 1, pos + length, found, count, tries, limit

    # Named functions, not lambdas, throughout: AutoGraph locates a lambda by parsing its
    # source line, and several lambdas near each other can make it convert the wrong one.
    def cond(r, pos, found, count, tries, limit):
        return tf.reduce_any(count < k) & (pos < limit)

    def run(state):
        return tf.while_loop(
            cond, body, state,
            shape_invariants=(tf.TensorShape([]),) * 2 + (tf.TensorShape([None, k]),) +
            (tf.TensorShape([None]),) * 2 + (tf.TensorShape([]),))

    # An int32 round counter: fold_in(seed, r) then gives the same streams as an int r.
    state = (tf.constant(0, tf.int32), tf.constant(0, tf.int64), _padding(batch, k),
             tf.zeros([batch], tf.int64), tf.zeros([batch], tf.int64), free)
    state = run(state)

    def with_bound():
        p = tf.convert_to_tensor(probabilities(), tf.float64)
        support = tf.math.count_nonzero(p > 0.0)
        enough = tf.debugging.Assert(
            support >= k, [f"fewer than num_sampled={k} classes have nonzero probability; "
                           "cannot draw a unique sample. Classes of nonzero probability:",
                           support])
        with tf.control_dependencies([enough]):
            bound = draw_bound(p, k)
        check = tf.debugging.Assert(
            bound <= float(MAX_DRAWS), [TOO_SKEWED.format(k=k), bound],
            summarize=1)
        with tf.control_dependencies([check]):
            limit = tf.maximum(tf.cast(tf.math.ceil(bound), tf.int64), free)
        return run(state[:5] + (limit,))

    def without_bound():
        return state

    state = tf.cond(tf.reduce_all(state[3] >= k), without_bound, with_bound)
    _, _, found, count, tries, limit = state
    check = tf.debugging.Assert(
        tf.reduce_all(count >= k), [PAST_BOUND.format(k=k), limit],
        summarize=1)
    with tf.control_dependencies([check]):
        return tf.identity(found), tf.identity(tries)

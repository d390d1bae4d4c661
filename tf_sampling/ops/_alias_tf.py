"""Pure-TensorFlow alias tables: the fallback of the compiled ops, usable in `tf.function`.

The build makes the same table as the C++ sweep (custom_ops/cc/kernels/alias_table.h),
vectorized: with DL the prefix sums of the lights' fixed-point deficits and EH those of
the heavies' excesses, the sweep is a merge of the two sorted sequences (a heavy is
closed before a light iff its EH <= the light's DL; the last heavy after every light),
so two `searchsorted` calls give every bucket at once: O(n log n), no loop. Only W (a
`reduce_sum`, whose association may differ from the C++ loop) can round differently.

The table is the op's packed int64 vector (alias << 32 | keep threshold; see `pack`).
Sampling is a vectorized gather over it with TF's stateless Philox ops: the same
distribution as the compiled op (the same bucket-keep rule, a 32-bit coin against the
threshold), not the same stream.
"""

import tensorflow as tf

from tf_sampling.ops import _unique

_FIXED_ONE = 2.0**32
_INT64_MAX = 2**63 - 1
_LOW32 = 0xFFFFFFFF


def check_weights(weights):
    """float64 weights after checks that raise InvalidArgumentError naming `weights`."""
    w = tf.cast(weights, tf.float64)
    total = tf.reduce_sum(w)
    checks = [
        tf.debugging.Assert(tf.size(w) > 0, ["`weights` is empty"]),
        tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(w)),
                            ["`weights` must be finite (found NaN or inf)"]),
        tf.debugging.Assert(tf.reduce_all(w >= 0.0), ["`weights` must be non-negative"]),
        tf.debugging.Assert(tf.math.is_finite(total), ["the sum of `weights` overflows"]),
        tf.debugging.Assert(total > 0.0, ["`weights` are all zero"]),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(w), tf.identity(total)


def pack(prob, alias):
    """The int64 table entries of keep probabilities `prob` (float32) and aliases (int32),
    as alias_table.h's PackEntry: threshold ceil(prob * 2^32) in the low 32 bits (so that a
    32-bit coin < threshold <=> coin < prob * 2^32), the alias in the high 32 bits; a bucket
    with prob >= 1 gets itself as alias, prob <= 0 threshold 0."""
    p = tf.cast(tf.cast(prob, tf.float32), tf.float64)
    full = p >= 1.0
    threshold = tf.where(full, tf.constant(_LOW32, tf.int64),
                         tf.where(p > 0.0, tf.cast(tf.math.ceil(p * _FIXED_ONE), tf.int64),
                                  tf.constant(0, tf.int64)))
    self_ids = tf.range(tf.size(p, out_type=tf.int64))
    a = tf.where(full, self_ids, tf.bitwise.bitwise_and(tf.cast(alias, tf.int64), _LOW32))
    return tf.bitwise.bitwise_or(tf.bitwise.left_shift(a, 32), threshold)


def unpack(table):
    """(keep threshold, alias) of int64 table entries, both int64 in [0, 2^32)."""
    table = tf.cast(table, tf.int64)
    threshold = tf.bitwise.bitwise_and(table, _LOW32)
    alias = tf.bitwise.bitwise_and(tf.bitwise.right_shift(table, 32), _LOW32)
    return threshold, alias


def build(weights):
    """The packed int64 [n] table for a vector of weights."""
    w, total = check_weights(weights)
    n = tf.size(w, out_type=tf.int64)
    q = w * (tf.cast(n, tf.float64) / total)
    is_light = q < 1.0
    light = tf.where(is_light)[:, 0]
    heavy = tf.where(tf.logical_not(is_light))[:, 0]
    b = tf.size(heavy, out_type=tf.int64)

    def general():
        q_light = tf.gather(q, light)
        q_heavy = tf.gather(q, heavy)
        deficit = tf.cast((1.0 - q_light) * _FIXED_ONE, tf.int64)  # truncates, as in C++
        excess = tf.cast((q_heavy - 1.0) * _FIXED_ONE, tf.int64)
        dl = tf.cumsum(deficit, exclusive=True)  # DL[i] for light i
        dl_ext = tf.concat([dl, [tf.reduce_sum(deficit)]], 0)  # ... and DL[a]
        eh = tf.cumsum(excess)  # EH[h + 1] for heavy h
        key_heavy = tf.concat([eh[:-1], [tf.constant(_INT64_MAX, tf.int64)]], 0)
        # Light i is filled by the first heavy not closed before it.
        closed_before = tf.searchsorted(key_heavy, dl, side="right", out_type=tf.int64)
        light_alias = tf.gather(heavy, tf.minimum(closed_before, b - 1))
        light_prob = tf.cast(q_light, tf.float32)
        # Heavy h is closed after `lights_before` lights; what is left of it stays.
        lights_before = tf.searchsorted(dl, key_heavy, side="left", out_type=tf.int64)
        slack = eh - tf.gather(dl_ext, lights_before)
        heavy_prob = tf.cast(
            tf.clip_by_value(1.0 + tf.cast(slack, tf.float64) / _FIXED_ONE, 0.0, 1.0),
            tf.float32)
        is_last = tf.equal(tf.range(b), b - 1)
        heavy_prob = tf.where(is_last, 1.0, heavy_prob)
        heavy_alias = tf.concat([heavy[1:], heavy[-1:]], 0)  # the last one: itself
        shape = tf.reshape(n, [1])
        prob = (tf.scatter_nd(light[:, None], light_prob, shape)
                + tf.scatter_nd(heavy[:, None], heavy_prob, shape))
        alias = (tf.scatter_nd(light[:, None], light_alias, shape)
                 + tf.scatter_nd(heavy[:, None], heavy_alias, shape))
        return pack(prob, alias)

    def all_equal():  # every q < 1 only by rounding: every bucket keeps its class
        return pack(tf.ones(tf.reshape(n, [1]), tf.float32), tf.range(tf.cast(n, tf.int32)))

    return tf.cond(b > 0, general, all_equal)


def probabilities(table):
    """float64 class probabilities that a (valid) table represents."""
    threshold, alias = unpack(table)
    keep = tf.cast(threshold, tf.float64) / _FIXED_ONE
    n = tf.size(table)
    given = tf.math.unsorted_segment_sum(1.0 - keep, alias, n)
    return (keep + given) / tf.cast(n, tf.float64)


def sample(table, num_samples, seed):
    """`num_samples` int64 i.i.d. draws; `seed` is an int [2] tensor."""
    n = tf.size(table, out_type=tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    shape = tf.reshape(tf.cast(num_samples, tf.int32), [1])
    bucket = tf.random.stateless_uniform(shape, seeds[0], minval=tf.constant(0, tf.int64),
                                         maxval=n, dtype=tf.int64)
    # The op's keep rule (alias_table.h, Resolve): a uniform 32-bit coin below the
    # bucket's threshold. One gather per draw, as in the op.
    coin = tf.random.stateless_uniform(shape, seeds[1], minval=None, maxval=None,
                                       dtype=tf.uint32)
    threshold, alias = unpack(tf.gather(table, bucket))
    return tf.where(tf.cast(coin, tf.int64) < threshold, bucket, alias)


def mixture_sample(table, table_mass, extra_ids, extra_cum, num_samples, seed):
    """Draws from the table (mass `table_mass`) or the weighted list `extra_ids` (running
    weight sums `extra_cum`), in proportion to their masses; the table alone if the
    list is empty."""
    m = tf.size(extra_ids)

    def mixture():
        seeds = tf.random.experimental.stateless_split(seed, 2)
        from_table = sample(table, num_samples, seeds[0])
        shape = tf.reshape(tf.cast(num_samples, tf.int32), [1])
        u = tf.random.stateless_uniform(shape, seeds[1], dtype=tf.float64) * (
            table_mass + extra_cum[m - 1])
        # u >= table_mass with probability (list mass) / (total); then u - table_mass is
        # uniform over the list's mass and picks an entry in proportion to its weight.
        chosen = u >= table_mass
        offset = tf.boolean_mask(u, chosen) - table_mass
        k = tf.searchsorted(extra_cum, offset, side="right", out_type=tf.int32)
        ids = tf.gather(extra_ids, tf.minimum(k, m - 1))
        return tf.tensor_scatter_nd_update(from_table, tf.where(chosen), ids)

    return tf.cond(m > 0, mixture, lambda: sample(table, num_samples, seed))


def sample_unique(table, num_samples, seed):
    """(first `num_samples` distinct ids of an i.i.d. stream, the stream length used)."""
    def draw(k, s):
        return sample(table, k, s)

    return _unique_from_stream(draw, num_samples, seed, probabilities(table))


def mixture_sample_unique(table, table_mass, extra_ids, extra_cum, num_samples, seed):
    """`sample_unique` for the `mixture_sample` stream."""
    n = tf.size(table)
    amounts = extra_cum - tf.concat([[0.0], extra_cum[:-1]], 0)
    mass = (probabilities(table) * table_mass
            + tf.math.unsorted_segment_sum(amounts, extra_ids, n))

    def draw(k, s):
        return mixture_sample(table, table_mass, extra_ids, extra_cum, k, s)

    return _unique_from_stream(draw, num_samples, seed, mass)


def _unique_from_stream(draw, num_samples, seed, mass):
    """The first distinct ids of `draw`'s stream, with the draw bound of `_unique` for the
    class masses `mass` (float64 [n], any scale)."""
    support = tf.math.count_nonzero(mass > 0.0)
    enough = tf.debugging.Assert(
        support >= num_samples,
        ["fewer classes than `num_samples` have a positive probability:", support])
    with tf.control_dependencies([enough]):
        seed = tf.identity(seed)
    def all_mass():
        return mass

    found, tries = _unique.unique_rows(draw, 1, num_samples, seed, all_mass, tf.size(mass))
    return tf.ensure_shape(found[0], [num_samples]), tries[0]

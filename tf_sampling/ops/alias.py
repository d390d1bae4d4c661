"""Alias tables: O(1) draws from a discrete distribution over many classes.

`alias_build` makes a table from weights in O(n); `alias_sample` draws from it. Both use
the compiled ops (custom_ops/, C++ and CUDA) when they are available and otherwise a
pure-TensorFlow fallback with the same distributions; `use_custom_op` picks one.

A table is one int64 tensor with an entry per class (bucket): the bucket's alias in the
high 32 bits and its keep threshold t in the low 32 bits; bucket i gives class i with
probability t / 2^32 and its alias otherwise. One 8-byte entry per draw keeps a draw to
one cache miss at millions of classes. `alias_unpack` and `alias_pack` convert from and
to (keep probability, alias) vectors.

Example:
>>> table = tfs.ops.alias_build([1.0, 0.0, 3.0, 4.0])
>>> ids = tfs.ops.alias_sample(table, num_samples=5, seed=[1, 2])
>>> ids, num_tries = tfs.ops.alias_sample(table, num_samples=3, seed=7, unique=True)
"""

import collections
import numbers

import tensorflow as tf

from tf_sampling.ops import _alias_tf
from tf_sampling.ops import _loader

AliasTable = collections.namedtuple("AliasTable", ["prob", "alias"])
AliasTable.__doc__ = """A table unpacked: float64 keep probabilities and int32 aliases."""
UniqueSample = collections.namedtuple("UniqueSample", ["samples", "num_tries"])


def _ops(use_custom_op):
    """The compiled op module, or None for the fallback."""
    if use_custom_op is False:
        return None
    module = _loader.LIBRARY.get()
    if module is None and use_custom_op is True:
        raise RuntimeError(
            f"use_custom_op=True, but the custom ops are unavailable: {_loader.LIBRARY.reason}")
    return module


def _seed_tensor(seed):
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        seed = int(seed)
        return tf.constant([seed & 0x7FFFFFFF, (seed >> 31) & 0x7FFFFFFF], tf.int64)
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer or seed.shape.rank != 1 or seed.shape[0] != 2:
        raise ValueError(f"`seed` must be an int or an integer tensor of shape [2], got {seed!r}.")
    return tf.cast(seed, tf.int64)


def _num_tensor(num_samples):
    """int64 scalar; a Python int becomes one constant (no Cast op in the graph)."""
    if isinstance(num_samples, numbers.Integral) and not isinstance(num_samples, bool):
        return tf.constant(num_samples, tf.int64)
    return tf.cast(num_samples, tf.int64)


def _check_vector(x, name):
    if x.shape.rank is not None and x.shape.rank != 1:
        raise ValueError(f"`{name}` must be a vector, got shape {x.shape}.")


def alias_build(weights, use_custom_op=None, name=None):
    """Builds an alias table for sampling class i with probability weights[i] / sum(weights).

    Args:
        weights: vector of non-negative weights (any real or integer dtype; float64 keeps
            large counts exact). Zero weights are never sampled.
        use_custom_op: None (the compiled op if it loaded, else the fallback), True (the
            op, or RuntimeError) or False (the pure-TF fallback).
        name: optional name scope.

    Returns:
        The table: int64 `[n]` (see the module docstring; `alias_unpack` reads it).

    Raises:
        InvalidArgumentError: for negative, NaN, infinite or all-zero weights, or an empty
            vector (at run time inside `tf.function`).

    Example:
    >>> table = tfs.ops.alias_build(tf.constant([1.0, 0.0, 3.0]))
    >>> tfs.ops.alias_probabilities(table)  # [0.25, 0.0, 0.75]
    """
    with tf.name_scope(name or "alias_build"):
        weights = tf.convert_to_tensor(weights)
        _check_vector(weights, "weights")
        if weights.dtype not in (tf.float32, tf.float64):
            if not (weights.dtype.is_floating or weights.dtype.is_integer):
                raise TypeError(f"`weights` must be real numbers, got dtype {weights.dtype.name}.")
            weights = tf.cast(weights, tf.float64 if weights.dtype.is_integer else tf.float32)
        ops = _ops(use_custom_op)
        if ops is not None:
            return ops.tf_sampling_alias_build(weights)
        return _alias_tf.build(weights)


def _table_tensor(table):
    table = tf.convert_to_tensor(table)
    if table.dtype != tf.int64:
        raise TypeError(f"`table` must be an int64 tensor from `alias_build` or `alias_pack`, "
                        f"got dtype {table.dtype.name}.")
    _check_vector(table, "table")
    return table


def alias_pack(prob, alias, name=None):
    """The table of keep probabilities `prob` and aliases `alias` (pure TF).

    Bucket i keeps class i with probability prob[i] (rounded to float32, then up to a
    multiple of 2^-32) and gives class alias[i] otherwise; prob[i] >= 1 always keeps.
    For tables made elsewhere; `alias_build` is the usual way to get one.

    Args:
        prob: float `[n]` keep probabilities; alias: int `[n]` class ids in [0, n).

    Returns:
        int64 `[n]`, as from `alias_build`.

    Example:
    >>> table = tfs.ops.alias_pack([0.5, 1.0], [1, 1])  # P = [0.25, 0.75]
    """
    with tf.name_scope(name or "alias_pack"):
        prob = tf.convert_to_tensor(prob, tf.float32)
        alias = tf.convert_to_tensor(alias, tf.int32)
        _check_vector(prob, "prob")
        _check_vector(alias, "alias")
        if (prob.shape.rank is not None and alias.shape.rank is not None
                and not prob.shape.is_compatible_with(alias.shape)):
            raise ValueError(f"`prob` and `alias` must have one length, got shapes "
                             f"{prob.shape} and {alias.shape}.")
        with tf.control_dependencies([tf.debugging.assert_equal(
                tf.size(prob), tf.size(alias),
                message="`prob` and `alias` must have one length")]):
            return _alias_tf.pack(prob, alias)


def alias_unpack(table, name=None):
    """`AliasTable(prob, alias)` of a table: float64 keep probabilities and int32 aliases.

    prob[i] is exactly the threshold / 2^32 that the draws use, or 1 where alias[i] == i
    (such a bucket is class i whatever the coin).

    >>> prob, alias = tfs.ops.alias_unpack(tfs.ops.alias_build([1.0, 3.0]))  # [0.5, 1], [1, 1]
    """
    with tf.name_scope(name or "alias_unpack"):
        threshold, alias = _alias_tf.unpack(_table_tensor(table))
        own = tf.equal(alias, tf.range(tf.size(alias, out_type=tf.int64)))
        prob = tf.where(own, tf.constant(1.0, tf.float64),
                        tf.cast(threshold, tf.float64) / 2.0**32)
        return AliasTable(prob, tf.cast(alias, tf.int32))


def _sample(op_name, fallback, fallback_unique, args, num_samples, seed, unique,
            use_custom_op):
    """The draws of `alias_sample` and `alias_mixture_sample`: the compiled op `op_name`
    called as `op(*args, num_samples, seed, unique=...)`, else the pure-TF
    `fallback(*args, num_samples, seed)` or, if `unique`, `fallback_unique`."""
    if isinstance(num_samples, numbers.Integral) and not isinstance(num_samples, bool):
        if num_samples < 0:
            raise ValueError(f"`num_samples` must be >= 0, got {num_samples}.")
    elif unique:
        raise TypeError("`num_samples` must be a Python int when `unique=True`.")
    seed = _seed_tensor(seed)
    ops = _ops(use_custom_op)
    op = getattr(ops, op_name) if ops is not None else None
    if unique:
        if op is not None:
            samples, num_tries = op(*args, tf.constant(num_samples, tf.int64), seed,
                                    unique=True)
        elif num_samples == 0:
            samples, num_tries = tf.zeros([0], tf.int64), tf.constant(0, tf.int64)
        else:
            samples, num_tries = fallback_unique(*args, num_samples, seed)
        return UniqueSample(samples, num_tries)
    num = _num_tensor(num_samples)
    if op is not None:
        return op(*args, num, seed).samples
    return fallback(*args, num, seed)


def alias_sample(table, num_samples, seed, unique=False, use_custom_op=None, name=None):
    """Draws class ids from an alias table.

    The compiled op draws i.i.d. ids from a counter-based Philox stream keyed by `seed`:
    draw t depends only on the table, the seed and t, so the result is the same whatever
    the number of CPU threads (large draws are split across the TF thread pool), and the
    same on CPU and GPU. The fallback draws the same distribution from TF's stateless ops.

    Args:
        table: a table from `alias_build`.
        num_samples: number of ids (int or int scalar tensor; a Python int if `unique`).
        seed: an int, or an int32/int64 tensor of shape [2] (like TF's stateless ops).
        unique: if True, return the first `num_samples` distinct ids of the stream and the
            number of draws that took (`num_tries`); the expected count of a class of
            probability p in such a sample is `1 - (1 - p) ** num_tries`.
        use_custom_op: as in `alias_build`.
        name: optional name scope.

    Returns:
        int64 `[num_samples]` ids, or `UniqueSample(samples, num_tries)` if `unique`.

    Example:
    >>> table = tfs.ops.alias_build([1.0, 2.0, 3.0])
    >>> ids = tfs.ops.alias_sample(table, num_samples=1000, seed=[0, 1])
    """
    with tf.name_scope(name or "alias_sample"):
        return _sample("tf_sampling_alias_sample", _alias_tf.sample, _alias_tf.sample_unique,
                       (_table_tensor(table),), num_samples, seed, unique, use_custom_op)


def alias_mixture_sample(table, table_mass, extra_ids, extra_cum, num_samples, seed,
                         unique=False, use_custom_op=None, name=None):
    """Draws from an alias table together with a weighted list of extra ids.

    A draw comes from the table with probability `table_mass / (table_mass + W_extra)`,
    else it is `extra_ids[k]` with probability `w_k / W_extra`, where `extra_cum` holds the
    running sums of the weights `w_k` (nondecreasing, last entry `W_extra`). So the draws
    follow `table_mass * p_table + (weights of extra_ids)`, exactly: this is how
    `DynamicAliasSampler` draws from weights that grew since its table was built. With an
    empty list it is `alias_sample` (the compiled op gives the same stream).

    Args:
        table: a table from `alias_build`.
        table_mass: float64 scalar, the mass the table stands for (>= 0).
        extra_ids: int64 `[m]` class ids; extra_cum: float64 `[m]` running weight sums.
        num_samples, seed, unique, use_custom_op, name: as in `alias_sample`.

    Returns:
        int64 `[num_samples]` ids, or `UniqueSample(samples, num_tries)` if `unique`.

    Example:
    >>> table = tfs.ops.alias_build([1.0, 1.0, 0.0])
    >>> ids = tfs.ops.alias_mixture_sample(table, 2.0, [2], [2.0], 100, seed=1)  # 1:1:2
    """
    with tf.name_scope(name or "alias_mixture_sample"):
        table = _table_tensor(table)
        table_mass = tf.cast(table_mass, tf.float64)
        extra_ids = tf.cast(extra_ids, tf.int64)
        extra_cum = tf.cast(extra_cum, tf.float64)
        for x, label in ((extra_ids, "extra_ids"), (extra_cum, "extra_cum")):
            _check_vector(x, label)
        return _sample("tf_sampling_alias_mixture_sample", _alias_tf.mixture_sample,
                       _alias_tf.mixture_sample_unique,
                       (table, table_mass, extra_ids, extra_cum), num_samples, seed, unique,
                       use_custom_op)


def variable_gather(variable, indices):
    """`variable.sparse_read(indices)` for a vector `tf.Variable` of float32, float64 or
    int64: the same values, through the compiled op where it can run (the op loaded and
    the variable on a CPU), which prefetches the entries it reads.
    """
    module = _ops(None)
    op = getattr(module, "tf_sampling_variable_gather", None)  # None: a library of before
    device = tf.DeviceSpec.from_string(variable.device or "").device_type
    if (op is None or device not in (None, "CPU")
            or variable.dtype not in (tf.float32, tf.float64, tf.int64)):
        return variable.sparse_read(indices)
    return op(variable.handle, tf.cast(indices, tf.int64), dtype=variable.dtype)


def alias_probabilities(table):
    """float64 `[n]`: the probability of each class under a table, exactly as drawn up to
    float64 rounding (pure TF; for checks).

    >>> p = tfs.ops.alias_probabilities(tfs.ops.alias_build([1.0, 3.0]))  # [0.25, 0.75]
    """
    return _alias_tf.probabilities(_table_tensor(table))

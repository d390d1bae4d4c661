"""Unique sampling on every path: the result is the first k distinct ids of the path's own
i.i.d. stream and `num_tries` is that stream's length, checked by recomputing the stream;
and the draw bound (tf_sampling/ops/_unique.py, alias_table.h "draw bound") stops skewed
or broken distributions with an error instead of an endless, memory-eating stream."""

import math

import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs
from tf_sampling.ops import _alias_tf, _unique
from tf_sampling.samplers import (FixedUnigramSampler, LearnedUnigramSampler,
                                  LogUniformSampler, UniformSampler)
from tf_sampling.samplers.dynamic_alias import DynamicAliasSampler


def first_distinct(stream, k):
    """The first k distinct ids of a numpy stream and the position of the k-th + 1."""
    _, first = np.unique(stream, return_index=True)
    first = np.sort(first)
    assert len(first) >= k, "the recomputed stream is too short"
    return stream[first[:k]], int(first[k - 1]) + 1


def round_stream(draw, k, tries, seed):
    """The TF paths' stream (tf_sampling/ops/_unique.py): round 0 has 2k draws, round r
    as many as all before it, round r drawn from fold_in(seed, r); `tries` draws of it."""
    parts, length, r = [], 0, 0
    while length < tries:
        size = 2 * k if r == 0 else length
        parts.append(np.asarray(draw(size, tf.random.experimental.stateless_fold_in(seed, r))))
        length += size
        r += 1
    return np.concatenate(parts, axis=-1)


def make(name, v):
    if name == "uniform":
        return UniformSampler(v, seed=1)
    if name == "log_uniform":
        return LogUniformSampler(v, seed=1)
    if name == "learned_unigram":
        s = LearnedUnigramSampler(v, seed=1)
        s.update(np.arange(v) % 5)
        return s
    return FixedUnigramSampler(v, counts=np.arange(v) % 7, seed=1)


@pytest.mark.parametrize("name", ["uniform", "log_uniform", "learned_unigram",
                                  "fixed_unigram"])
def test_sampler_unique_is_the_first_distinct_ids_of_its_stream(name):
    """The shared-sample path (CandidateSampler._sample_unique). Log-uniform with k close
    to V needs several rounds, so the round structure is covered too."""
    v, k = 60, 40
    s = make(name, v)
    seed = tf.constant([4, 2], tf.int32)
    ids, tries = s._sample_unique(k, seed)
    stream = round_stream(lambda n, sd: s._draw(tf.constant(n, tf.int32), sd), k,
                          int(tries), seed)
    want, want_tries = first_distinct(stream, k)
    np.testing.assert_array_equal(ids, want)
    assert int(tries) == want_tries
    # ... and the expected counts use exactly that stream length.
    out = s.sample([[0]], k, unique=True, seed=seed)
    p = s.probability(ids).numpy().astype(np.float64)
    np.testing.assert_allclose(out.sampled_expected_count,
                               -np.expm1(want_tries * np.log1p(-p)), rtol=1e-6)


@pytest.mark.parametrize("name", ["log_uniform", "fixed_unigram"])
def test_per_example_unique_is_the_first_distinct_ids_of_each_rows_stream(name):
    """Per-example unique sampling: each row's ids and tries from its own stream (the
    flat draws of a round, reshaped to [batch, length])."""
    v, k, batch = 50, 30, 6
    s = make(name, v)
    seed = tf.constant([9, 3], tf.int32)
    sv = tfs.losses.sample_per_example(s, np.zeros((batch, 1), np.int64), k, unique=True,
                                       seed=seed)
    ids = sv.sampled_candidates.numpy()
    p = s.probability(ids).numpy().astype(np.float64)
    # tries per row, read off the expected counts of the row's rarest id (float32).
    rare = np.argmin(p, axis=1)
    ec = sv.sampled_expected_count.numpy().astype(np.float64)[np.arange(batch), rare]
    est = np.log1p(-ec) / np.log1p(-p[np.arange(batch), rare])
    tries = np.round(est).astype(int)
    np.testing.assert_allclose(est, tries, atol=1e-2)  # float32 counts: a few 1e-3
    stream = round_stream(
        lambda n, sd: tf.reshape(s._draw(tf.constant(batch * n, tf.int32), sd), [batch, n]),
        k, tries.max(), seed)
    for b in range(batch):
        want, want_tries = first_distinct(stream[b], k)
        np.testing.assert_array_equal(ids[b], want)
        assert tries[b] == want_tries, b
    # The true classes' expected counts use the same per-row tries.
    p0 = s.probability([0]).numpy()[0].astype(np.float64)
    np.testing.assert_allclose(sv.true_expected_count[:, 0],
                               -np.expm1(tries * np.log1p(-p0)), rtol=1e-5)


def test_fallback_mixture_unique_is_the_first_distinct_ids_of_its_stream():
    """The fallback's mixture-unique draws (DynamicAliasSampler with a pending list) get
    the op's stream check: the first k distinct ids of its own stream, and num_tries."""
    rng = np.random.default_rng(3)
    w = rng.random(80)
    w[:10] = 0.0
    ids = np.array([3, 50, 3, 77], np.int64)  # class 3 has weight 0 in the table
    cum = np.cumsum([5.0, 1.0, 2.0, 0.5])
    table = tfs.ops.alias_build(w, use_custom_op=False)
    k, seed = 60, tf.constant([2, 8], tf.int64)
    got, tries = tfs.ops.alias_mixture_sample(table, w.sum(), ids, cum, k, seed, unique=True,
                                              use_custom_op=False)
    stream = round_stream(
        lambda n, sd: _alias_tf.mixture_sample(table, tf.constant(w.sum(), tf.float64),
                                               ids, cum, n, sd), k, int(tries), seed)
    want, want_tries = first_distinct(stream, k)
    np.testing.assert_array_equal(got, want)
    assert int(tries) == want_tries


# ---------------------------------------------------------------- the draw bound


def test_draw_bound_formula():
    """lambda * mu of the module docstring, against a NumPy transcription, and mu against
    the coupon collector's expectation for a uniform distribution."""
    rng = np.random.default_rng(0)
    p = rng.random(500) ** 4
    for k in (1, 7, 200, 500):
        q = np.sort(p / p.sum())[::-1]
        r = np.array([q[j:].sum() for j in range(k)])
        mu = (1 / r).sum()
        c = 40 * math.log(2) / (r[-1] * mu)
        want = (1 + 2 * c + math.sqrt(2 * c)) * mu
        np.testing.assert_allclose(_unique.draw_bound(p * 3.0, k), want, rtol=1e-9)
    v, k = 1000, 300
    got = float(_unique.draw_bound(np.ones(v), k))
    mu = sum(v / (v - j) for j in range(k))
    c = 40 * math.log(2) / ((v - k + 1) / v * mu)
    assert got == pytest.approx((1 + 2 * c + math.sqrt(2 * c)) * mu, rel=1e-9)
    assert math.isinf(float(_unique.draw_bound([1.0, 0.0, 2.0], 3)))  # 2 classes > 0
    # lambda - 1 - ln(lambda) >= c for every c, which the tail bound needs.
    c = np.logspace(-9, 4, 2000)
    lam = 1 + 2 * c + np.sqrt(2 * c)
    assert np.all(lam - 1 - np.log(lam) >= c)


def test_long_streams_within_the_bound_succeed(impl):
    """100 distinct of 1000 classes when one class has 99.995% of the mass: about 2.1e6
    draws on average (sd about 2e5, so more than the 2^20 drawn before the bound is
    computed), bound about 4.9e6: it must succeed, with the op's stream check."""
    v, k = 1000, 100
    w = np.ones(v)
    w[0] = 2e7
    table = tfs.ops.alias_build(w)
    seed = tf.constant([1, 1], tf.int64)
    ids, tries = tfs.ops.alias_sample(table, k, seed, unique=True)
    assert len(set(ids.numpy().tolist())) == k and int(tries) > 2**20
    assert int(tries) < float(_unique.draw_bound(w, k))
    if impl == "op":
        stream = tfs.ops.alias_sample(table, int(tries), seed).numpy()
        want, want_tries = first_distinct(stream, k)
        np.testing.assert_array_equal(ids, want)
        assert int(tries) == want_tries


@pytest.mark.parametrize("mixture", [False, True])
def test_too_skewed_unique_request_is_refused_with_the_documented_bound(impl, mixture):
    """The issue's case: 100 distinct of 10^4 classes, one of weight 1e12. Its bound (about
    2.3e10 draws) exceeds 2^32: an InvalidArgumentError that says what to do, after at
    most 2^20 draws, on the op (whose message states the bound, the same number as the
    documented formula) and on the fallback."""
    v, k = 10_000, 100
    w = np.ones(v)
    w[0] = 1e12
    table = tfs.ops.alias_build(w)
    bound = float(_unique.draw_bound(tfs.ops.alias_probabilities(table), k))
    assert 2**32 < bound < 1e11
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="limit of 2\\^32.*unique=False.*distortion below 1") as e:
        if mixture:
            tfs.ops.alias_mixture_sample(table, w.sum(), [5], [1.0], k, seed=2, unique=True)
        else:
            tfs.ops.alias_sample(table, k, seed=2, unique=True)
    if impl == "op":
        stated = float(e.value.message.split("needs up to ")[1].split(" draws")[0])
        # The op prints 6 significant digits; the mixture adds a weight-1 class to 10^4.
        assert stated == pytest.approx(bound, rel=1e-3 if mixture else 1e-5)

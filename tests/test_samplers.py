"""Tests of the candidate samplers: distributions, TF references, seeds, state, bad input.

Statistical tests use fixed seeds, so they are deterministic; each bound is the chi-square
(or normal) quantile that a correct sampler exceeds with probability 1e-3 or less for a
random seed, and a negative control shows that the same data reject a slightly wrong
distribution, so the bound is not vacuous.
"""

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs
from _helpers import SamplerHolder, sampler_model
from _stats import assert_cells
from tf_sampling.samplers import (FixedUnigramSampler, LearnedUnigramSampler,
                                  LogUniformSampler, UniformSampler)

# Upper 1e-3 quantiles of the chi-square distribution, chi2.ppf(0.999, df), computed once
# with scipy (not a dependency of the package or its tests).
CHI2_CRIT_1E3 = {9: 27.877, 19: 43.820, 24: 51.179, 29: 58.301, 49: 85.351}


def chi_square(observed, probs):
    """Pearson's statistic over the classes of nonzero probability, and its df."""
    observed = np.asarray(observed, np.float64)
    probs = np.asarray(probs, np.float64)
    keep = probs > 0
    expected = observed.sum() * probs[keep]
    assert expected.min() >= 5, "chi-square approximation needs >= 5 expected per cell"
    return float(((observed[keep] - expected) ** 2 / expected).sum()), int(keep.sum()) - 1


def draw_counts(sampler, num_classes, num_draws, seed):
    values = sampler.sample([[0]], num_draws, unique=False, seed=seed)
    return np.bincount(values.sampled_candidates.numpy(), minlength=num_classes)


def log_uniform_probs(v):
    k = np.arange(v, dtype=np.float64)
    return np.log((k + 2) / (k + 1)) / np.log(v + 1)


# Counts with zeros inside and at the end, so zero-weight classes are exercised.
FIXED_COUNTS = np.array([5, 0, 1, 3, 7, 2, 9, 0, 4, 6, 8, 1, 2, 3, 5, 11, 2, 0, 6, 1,
                         3, 4, 2, 8, 1, 7, 3, 2, 0, 0], np.float64)


def fixed_probs(counts, distortion=1.0, num_reserved_ids=0, num_shards=1, shard=0):
    w = np.concatenate([np.zeros(num_reserved_ids), counts ** distortion])
    w = w[shard::num_shards]
    return w / w.sum()


def make(name, num_classes, seed=None):
    """Each sampler, with a non-uniform distribution where it has one."""
    if name == "uniform":
        return UniformSampler(num_classes, seed=seed)
    if name == "log_uniform":
        return LogUniformSampler(num_classes, seed=seed)
    if name == "learned_unigram":
        s = LearnedUnigramSampler(num_classes, seed=seed)
        s.update(np.arange(num_classes) % 3)  # counts [k+1, k'+1, ...]: skewed to 0..2
        return s
    if name == "fixed_unigram":
        counts = np.resize(FIXED_COUNTS, num_classes)
        counts[0] = 1  # at least one positive count
        return FixedUnigramSampler(num_classes, counts=counts, distortion=0.75, seed=seed)
    raise AssertionError(name)


def stated_probs(name, s):
    v = s.num_classes
    if name == "uniform":
        return np.full(v, 1.0 / v)
    if name == "log_uniform":
        return log_uniform_probs(v)
    if name == "learned_unigram":
        c = s.counts.numpy().astype(np.float64)
        return c / c.sum()
    if name == "fixed_unigram":
        counts = np.resize(FIXED_COUNTS, v)
        counts[0] = 1
        return fixed_probs(counts, distortion=0.75)
    raise AssertionError(name)


ALL = ["uniform", "log_uniform", "learned_unigram", "fixed_unigram"]


# ---------------------------------------------------------------- distributions


@pytest.mark.parametrize("name", ALL)
def test_probability_matches_stated_distribution(name):
    s = make(name, 30, seed=0)
    p = stated_probs(name, s)
    got = s.probability(np.arange(30)).numpy()
    np.testing.assert_allclose(got, p, rtol=1e-6, atol=1e-12)
    assert got.dtype == np.float32
    # Other shapes and integer dtypes are accepted.
    np.testing.assert_allclose(s.probability(tf.constant([[3, 4]], tf.int32)).numpy(),
                               [p[3:5]], rtol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_non_unique_draws_chi_square(name):
    v = 30 if name != "log_uniform" else 50
    s = make(name, v, seed=0)
    p = stated_probs(name, s)
    observed = draw_counts(s, v, 200_000, seed=1234)
    assert observed[p == 0].sum() == 0, "a class of probability 0 was drawn"
    stat, df = chi_square(observed, p)
    assert stat < CHI2_CRIT_1E3[df], (stat, df)
    # Every cell too (tests/_stats.py), at the same 1e-3 for a random seed. The median
    # class's expected count is about 2000 (log-uniform) to 6600 (fixed unigram), so a 20%
    # bias on it moves its z by 8.8 to 16, against a cut of at most 4.3 (50 cells).
    assert_cells(observed, p, alpha=1e-3)
    # Negative control: moving 10% of the mass to the uniform distribution over the same
    # support (for uniform: 5% from one half to the other) is rejected by the same data;
    # the noncentrality N * chi2(p, wrong) of these cases is 240 to 940, far above the
    # critical values.
    if name != "uniform":
        wrong = 0.9 * p + 0.1 * (p > 0) / (p > 0).sum()
    else:
        wrong = p * np.where(np.arange(v) < v // 2, 1.05, 0.95)
    assert chi_square(observed, wrong)[0] > CHI2_CRIT_1E3[df]


def test_log_uniform_closed_form_and_tf_reference():
    v = 1000
    s = LogUniformSampler(v)
    ids = np.arange(v)
    np.testing.assert_allclose(s.probability(ids).numpy(), log_uniform_probs(v), rtol=1e-6)
    # TF's non-unique expected count is p * num_sampled: the same distribution.
    tf_values = tf.random.log_uniform_candidate_sampler(
        ids[None], v, 7, unique=False, range_max=v, seed=1)
    ours = s.sample(ids[None], 7, unique=False, seed=1)
    np.testing.assert_allclose(ours.true_expected_count.numpy(),
                               tf_values.true_expected_count.numpy(), rtol=1e-5)
    # Draws are TF's inverse CDF floor(exp(u log(V+1))) - 1, never outside [0, V).
    big = LogUniformSampler(2**40).sample([[0]], 50_000, unique=False, seed=3)
    c = big.sampled_candidates.numpy()
    assert c.min() >= 0 and c.max() < 2**40
    assert (c == 0).mean() == pytest.approx(math.log(2) / math.log1p(2**40), abs=0.01)


def test_fixed_unigram_matches_tf_op():
    counts = FIXED_COUNTS
    ids = np.arange(32)[None]
    ours = FixedUnigramSampler(32, counts=counts, distortion=0.75, num_reserved_ids=2)
    ref = tf.random.fixed_unigram_candidate_sampler(
        ids, 32, 5, unique=False, range_max=32, unigrams=list(counts), distortion=0.75,
        num_reserved_ids=2, seed=1)
    got = ours.sample(ids, 5, unique=False, seed=1)
    np.testing.assert_allclose(got.true_expected_count.numpy(),
                               ref.true_expected_count.numpy(), rtol=1e-5, atol=1e-7)
    assert got.true_expected_count.numpy()[0, :2].tolist() == [0, 0]

    # Sharding without reserved ids: TF numbers the shard's ids locally (g // num_shards).
    shard_size = len(range(1, 30, 3))
    ours = FixedUnigramSampler(shard_size, counts=counts, num_shards=3, shard=1)
    local = np.arange(shard_size)[None]
    ref = tf.random.fixed_unigram_candidate_sampler(
        local, shard_size, 4, unique=False, range_max=shard_size, unigrams=list(counts),
        num_shards=3, shard=1, seed=1)
    got = ours.sample(local, 4, unique=False, seed=1)
    np.testing.assert_allclose(got.true_expected_count.numpy(),
                               ref.true_expected_count.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours.probability(local[0]).numpy(),
                               fixed_probs(counts, num_shards=3, shard=1), rtol=1e-6)


def test_fixed_unigram_reserved_and_sharded_rule():
    # Global ids 0..2 reserved, 3..32 carry FIXED_COUNTS; shard 2 of 4 keeps g % 4 == 2.
    size = len(range(2, 33, 4))
    s = FixedUnigramSampler(size, counts=FIXED_COUNTS, num_reserved_ids=3, num_shards=4,
                            shard=2, distortion=0.5)
    expected = fixed_probs(FIXED_COUNTS, 0.5, num_reserved_ids=3, num_shards=4, shard=2)
    assert expected[0] == 0  # global id 2 is reserved
    np.testing.assert_allclose(s.probability(np.arange(size)).numpy(), expected, rtol=1e-6)


def test_fixed_unigram_distortion_zero_is_uniform_over_non_reserved():
    s = FixedUnigramSampler(4, counts=[0, 3, 9], num_reserved_ids=1, distortion=0.0)
    np.testing.assert_allclose(s.probability([0, 1, 2, 3]).numpy(), [0, 1 / 3, 1 / 3, 1 / 3])


def test_learned_unigram_matches_tf_op_state_sequence():
    # TF's op updates its counts after each call, within one graph; three calls of one
    # tf.function give its expected counts after 0, 1 and 2 updates.
    true = tf.constant([[0, 0, 0, 1, 4]], tf.int64)
    tf_op = tf.function(lambda: tf.random.learned_unigram_candidate_sampler(
        true, 5, 4, unique=False, range_max=6, seed=3).true_expected_count)
    ours = LearnedUnigramSampler(6)
    for _ in range(3):
        expected = tf_op().numpy()
        got = ours.sample(true, 4, unique=False, seed=3).true_expected_count.numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        ours.update(true)
    assert ours.counts.numpy().tolist() == [10, 4, 1, 1, 4, 1]


# ---------------------------------------------------------------- unique sampling


def _unique_trials(sampler, num_sampled, trials):
    """`trials` unique samples with seeds [7, i], run in one graph (fast), as numpy."""

    @tf.function
    def run(seeds):
        def one(seed):
            out = sampler.sample([[0]], num_sampled, unique=True, seed=seed)
            return out.sampled_candidates, out.sampled_expected_count
        return tf.map_fn(one, seeds, fn_output_signature=(tf.int64, tf.float32))

    seeds = tf.stack([tf.fill([trials], 7), tf.range(trials)], axis=1)
    candidates, expected = run(seeds)
    return zip(candidates.numpy(), expected.numpy())


def test_unique_uniform_num_tries_is_coupon_collector():
    v, n, trials = 20, 10, 2000
    s = UniformSampler(v)
    tries = []
    for c, ec in _unique_trials(s, n, trials):
        assert len(set(c.tolist())) == n
        assert np.all(ec == ec[0])
        # ec = 1 - (1 - 1/V)^T: recover T, the number of draws made.
        t = math.log1p(-float(ec[0])) / math.log1p(-1.0 / v)
        assert abs(t - round(t)) < 1e-2 and round(t) >= n
        tries.append(round(t))
    # Draws until n distinct of V: a sum of geometric variables with success rates
    # (V - i) / V, i < n. The mean of 2000 runs is within 4.5 standard errors of the
    # expectation except with probability < 1e-5.
    q = (v - np.arange(n)) / v
    mean, var = (1 / q).sum(), ((1 - q) / q**2).sum()
    assert abs(np.mean(tries) - mean) < 4.5 * math.sqrt(var / trials), (np.mean(tries), mean)


def test_unique_non_uniform_pairs_chi_square():
    # Unique sampling keeps the first n distinct ids of an i.i.d. stream, so a pair {a, b}
    # is drawn with probability p_a p_b (1 / (1 - p_a) + 1 / (1 - p_b)).
    counts = np.array([1, 2, 3, 4, 20], np.float64)
    p = counts / counts.sum()
    s = FixedUnigramSampler(5, counts=counts)
    pairs = [(a, b) for a in range(5) for b in range(a + 1, 5)]
    probs = [p[a] * p[b] * (1 / (1 - p[a]) + 1 / (1 - p[b])) for a, b in pairs]
    observed = np.zeros(len(pairs))
    for c, ec in _unique_trials(s, 2, 3000):
        observed[pairs.index(tuple(sorted(c.tolist())))] += 1
        # Every expected count is 1 - (1 - p)^T for one shared integer T >= 2; T is read
        # off the rarer class (the other's count may round to 1 in float32).
        ec = ec.astype(np.float64)
        ps = p[c]
        rare = np.argmin(ps)
        t = math.log1p(-ec[rare]) / math.log1p(-ps[rare])
        assert abs(t - round(t)) < 1e-3 and round(t) >= 2
        np.testing.assert_allclose(ec, -np.expm1(round(t) * np.log1p(-ps)), rtol=1e-6)
    stat, df = chi_square(observed, probs)
    assert df == 9 and stat < CHI2_CRIT_1E3[9], stat
    assert_cells(observed, probs, alpha=1e-3)  # every pair too (cut 3.9 sigma, 10 cells)
    # Negative control: pairs of distinct i.i.d. draws (probability proportional to
    # 2 p_a p_b) are rejected; the noncentrality is about 94 for these counts.
    iid = [2 * p[a] * p[b] for a, b in pairs]
    assert chi_square(observed, np.array(iid) / sum(iid))[0] > CHI2_CRIT_1E3[9]


@pytest.mark.parametrize("name", ALL)
def test_unique_sample_all_classes(name):
    s = make(name, 12, seed=5)
    support = int((stated_probs(name, s) > 0).sum())
    out = s.sample([[1]], support, unique=True)
    assert sorted(out.sampled_candidates.numpy().tolist()) == \
        sorted(np.flatnonzero(stated_probs(name, s)).tolist())


# ---------------------------------------------------------------- shapes and seeds


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("unique", [True, False])
def test_shapes_and_dtypes(name, unique):
    s = make(name, 40, seed=0)
    out = s.sample(tf.constant([[1, 2, 3], [4, 5, 6]], tf.int32), 8, unique=unique)
    assert isinstance(out, tfs.samplers.SampledValues)
    assert out.sampled_candidates.shape == [8] and out.sampled_candidates.dtype == tf.int64
    assert out.true_expected_count.shape == [2, 3]
    assert out.true_expected_count.dtype == tf.float32
    assert out.sampled_expected_count.shape == [8]
    assert out.sampled_expected_count.dtype == tf.float32
    # Works inside a tf.function with an unknown batch size, too.
    f = tf.function(lambda t: s.sample(t, 8, unique=unique),
                    input_signature=[tf.TensorSpec([None, 3], tf.int64)])
    assert f(tf.constant([[1, 2, 3]], tf.int64)).true_expected_count.shape == [1, 3]


@pytest.mark.parametrize("name", ALL)
def test_seeds_repeat(name):
    def run(s, seed, unique=True):
        return s.sample([[1]], 10, unique=unique, seed=seed).sampled_candidates.numpy()

    a, b = make(name, 1000, seed=0), make(name, 1000, seed=0)
    for unique in (True, False):
        np.testing.assert_array_equal(run(a, 42, unique), run(b, 42, unique))
        assert not np.array_equal(run(a, 42, unique), run(a, 43, unique))
        pair = tf.constant([3, 9])
        np.testing.assert_array_equal(run(a, pair, unique), run(b, pair, unique))

    # Seed generators built with the same seed give the same sequence, eagerly and in a
    # tf.function (where next() advances the state variable, as in model.fit).
    c, d = make(name, 1000, seed=11), make(name, 1000, seed=11)
    seq_c = [run(c, None) for _ in range(3)]
    f = tf.function(lambda: d.sample([[1]], 10, seed=None).sampled_candidates)
    seq_d = [f().numpy() for _ in range(3)]
    for x, y in zip(seq_c, seq_d):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(seq_c[0], seq_c[1])
    e = make(name, 1000, seed=12)
    assert not np.array_equal(run(e, None), seq_c[0])


# ---------------------------------------------------------------- learned state


def test_learned_counts_and_updates():
    s = LearnedUnigramSampler(5)
    assert s.learns and not UniformSampler(5).learns
    assert s.counts.dtype == "int64" and not s.counts.trainable
    assert s.counts.numpy().tolist() == [1] * 5  # TF's initial weight of 1 per class
    s.update(tf.constant([[1, 1], [4, 1]], tf.int32))
    s.update([0])
    assert s.counts.numpy().tolist() == [2, 4, 1, 1, 2]
    np.testing.assert_allclose(s.probability([0, 1, 2]).numpy(), [0.2, 0.4, 0.1], rtol=1e-6)
    assert s.trainable_weights == [] and s.non_trainable_weights == [s.counts]


def test_learned_counts_beyond_int32():
    s = LearnedUnigramSampler(4)
    big = 2**31 + 5
    s.counts.assign([1, big, 1, 2**40])
    s.update([1, 1, 3])
    assert s.counts.numpy().tolist() == [1, big + 2, 1, 2**40 + 1]
    total = 2 + big + 2 + 2**40 + 1
    np.testing.assert_allclose(s.probability([1, 3]).numpy(),
                               [(big + 2) / total, (2**40 + 1) / total], rtol=1e-6)
    # Classes 0 and 2 have probability ~1e-12, so 100k draws essentially never pick them.
    n = 100_000
    c = s.sample([[0]], n, unique=False, seed=1).sampled_candidates.numpy()
    assert set(c.tolist()) <= {1, 3}
    # Class 1 (p = 0.00195) is drawn a binomial number of times: mean 195, sd 14; within
    # 4.9 sd (two-sided 1e-6 for a correct sampler), so a sampler that never draws it, or
    # draws it 2^31 / 2^40 off in the way an int32 wrap would, fails.
    p1 = (big + 2) / total
    assert abs((c == 1).sum() - n * p1) < 4.9 * math.sqrt(n * p1 * (1 - p1)), (c == 1).sum()


def test_learned_blocked_draws_equal_inverse_cdf():
    # Large vocabularies draw through block sums (see learned_unigram._block_size); the
    # draws must be exactly numpy's inverse CDF for the same uniform numbers. V is not a
    # multiple of the block, and zero counts (inside, and the whole tail) are never drawn.
    from tf_sampling.samplers.learned_unigram import _block_size, _CountsSnapshot

    v = 200_003
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, v) * (rng.random(v) < 0.5)
    counts[-5:] = 0
    counts[7] = 10**12  # one huge count: exactness beyond float32 and int32
    u = tf.random.stateless_uniform([4000], seed=[5, 6], dtype=tf.float64).numpy()
    cdf = np.cumsum(counts.astype(np.float64))
    expected = np.searchsorted(cdf, u * cdf[-1], side="right")
    assert _block_size(v, 2048) == 8 and _block_size(v, 64) == 32
    for block in (1, 8, 32, 64):
        got = _CountsSnapshot(tf.constant(counts), block).draw(tf.constant(4000), [5, 6])
        np.testing.assert_array_equal(got.numpy(), expected)
    assert counts[expected].min() > 0


def test_learned_update_under_distribution_strategy():
    # Under a strategy the update is a dense delta that the "sum" aggregation adds up
    # across replicas (a scatter would be refused there); one CPU replica here.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        s = LearnedUnigramSampler(5)

    @tf.function
    def step(labels):
        def replica_fn(x):
            out = s.sample(x, 2)
            s.update(x)
            return out.true_expected_count
        return strategy.run(replica_fn, args=(labels,))

    step(tf.constant([[1], [3], [3]], tf.int64))
    assert s.counts.numpy().tolist() == [1, 2, 1, 3, 1]
    with strategy.scope():
        s.update([4])  # cross-replica context
    assert s.counts.numpy().tolist() == [1, 2, 1, 3, 2]


def test_samplers_under_mixed_precision():
    # float64 state must not be autocast to float16 inside layers.
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        s = FixedUnigramSampler(4, counts=[1, 2, 3, 1e6])
        t = LearnedUnigramSampler(4)
        assert s.cdf.dtype == "float64" and t.counts.dtype == "int64"
        np.testing.assert_allclose(s.probability([0]).numpy(), [1 / (6 + 1e6)], rtol=1e-6)
        assert s.sample([[0]], 2).true_expected_count.dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_learned_counts_survive_retracing():
    s = LearnedUnigramSampler(6)

    @tf.function
    def step(labels):
        out = s.sample(labels, 3)
        s.update(labels)
        return out.true_expected_count

    step(tf.constant([[2]]))
    step(tf.constant([[2], [3]]))           # a new shape: retraced
    step(tf.constant([[2]], tf.int64))      # a new dtype: retraced again
    assert step.experimental_get_tracing_count() == 3
    # A brand new function sees the same counts.
    again = tf.function(lambda: tf.convert_to_tensor(s.counts))
    assert again().numpy().tolist() == [1, 1, 4, 2, 1, 1]


def test_checkpoint_round_trip(tmp_path):
    s = LearnedUnigramSampler(6, seed=3)
    s.update([1, 1, 5])
    s.sample([[1]], 2)  # advance the seed generator
    path = tf.train.Checkpoint(sampler=s).write(str(tmp_path / "ckpt"))
    expected_next = s.sample([[1]], 4).sampled_candidates.numpy()

    t = LearnedUnigramSampler(6, seed=99)
    t.update([0, 0, 0, 0])
    tf.train.Checkpoint(sampler=t).read(path).assert_consumed()
    assert t.counts.numpy().tolist() == [1, 3, 1, 1, 1, 2]
    # The seed generator state is checkpointed too: draws resume where they were.
    np.testing.assert_array_equal(t.sample([[1]], 4).sampled_candidates.numpy(), expected_next)


def test_learned_counts_in_model_fit_and_keras_round_trip(tmp_path):
    v = 8
    s = LearnedUnigramSampler(v, seed=4)
    model = sampler_model(s)
    state_before = s.seed_generator.state.numpy().copy()
    labels = np.array([[1], [1], [2], [7], [1], [0]], np.int64)
    x = np.ones((6, 3), np.float32)
    model.fit([x, labels], batch_size=2, epochs=2, verbose=0)  # 6 graph-mode steps
    expected = 1 + 2 * np.bincount(labels[:, 0], minlength=v)
    assert s.counts.numpy().tolist() == expected.tolist()
    assert s.seed_generator.state.numpy()[1] - state_before[1] == 6  # one next() per step
    # Inference does not learn.
    model.predict([x, labels], verbose=0)
    model.evaluate([x, labels], verbose=0)
    assert s.counts.numpy().tolist() == expected.tolist()

    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    holder = [layer for layer in loaded.layers if isinstance(layer, SamplerHolder)][0]
    assert isinstance(holder.sampler, LearnedUnigramSampler)
    assert holder.sampler.counts.numpy().tolist() == expected.tolist()
    assert holder.sampler.seed == 4


def test_saved_model_export(tmp_path):
    s = LearnedUnigramSampler(10, seed=1)
    s.update([3, 3, 4])
    module = tf.Module()
    module.sampler = s
    module.sample = tf.function(lambda t: s.sample(t, 3),
                                input_signature=[tf.TensorSpec([None, 1], tf.int64)])
    module.update = tf.function(lambda t: s.update(t),
                                input_signature=[tf.TensorSpec([None], tf.int64)])
    module.counts = tf.function(lambda: tf.convert_to_tensor(s.counts), input_signature=[])
    tf.saved_model.save(module, str(tmp_path))
    s.update([0])  # after export: not in the SavedModel

    loaded = tf.saved_model.load(str(tmp_path))
    assert loaded.counts().numpy().tolist() == [1, 1, 1, 3, 2, 1, 1, 1, 1, 1]
    loaded.update(tf.constant([9, 9], tf.int64))  # still a variable, still learning
    assert loaded.counts().numpy().tolist() == [1, 1, 1, 3, 2, 1, 1, 1, 1, 3]
    first = loaded.sample(tf.constant([[3]], tf.int64))
    second = loaded.sample(tf.constant([[3]], tf.int64))
    assert first.sampled_candidates.shape == [3]
    assert not np.array_equal(first.sampled_candidates, second.sampled_candidates)


# ---------------------------------------------------------------- fixed unigram storage


def test_fixed_unigram_vocab_file(tmp_path):
    path = tmp_path / "vocab.csv"
    # Commas inside the word are fine: the count is the last field, as in TF.
    path.write_text("<unk>,0\nthe,50\n\"a,b\",20\nof,7.5\n")
    s = FixedUnigramSampler(5, vocab_file=str(path), num_reserved_ids=1, distortion=0.75)
    t = FixedUnigramSampler(5, counts=[0, 50, 20, 7.5], num_reserved_ids=1, distortion=0.75)
    np.testing.assert_array_equal(s.cdf.numpy(), t.cdf.numpy())
    ids = np.arange(5)[None]
    ref = tf.random.fixed_unigram_candidate_sampler(
        ids, 5, 2, unique=False, range_max=5, vocab_file=str(path), distortion=0.75,
        num_reserved_ids=1, seed=1)
    np.testing.assert_allclose(s.sample(ids, 2, unique=False).true_expected_count.numpy(),
                               ref.true_expected_count.numpy(), rtol=1e-5)
    # The file is read once: the sampler does not need it afterwards.
    os.remove(path)
    assert s.sample([[1]], 3).sampled_candidates.shape == [3]
    assert "vocab_file" not in s.get_config() and "counts" not in s.get_config()


def test_fixed_unigram_keras_round_trip_and_config(tmp_path):
    counts = np.arange(1, 41, dtype=np.float64)
    s = FixedUnigramSampler(42, counts=counts, num_reserved_ids=2, distortion=0.5, seed=9)
    config = tfs.samplers.serialize(s)
    assert "counts" not in config["config"]
    # From the config alone: the options, but no distribution until weights load.
    empty = tfs.samplers.get(config)
    assert (empty.num_classes, empty.distortion, empty.num_reserved_ids) == (42, 0.5, 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="load its weights"):
        empty.sample([[3]], 2)

    model = sampler_model(s)
    path = str(tmp_path / "fixed.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    holder = [layer for layer in loaded.layers if isinstance(layer, SamplerHolder)][0]
    np.testing.assert_array_equal(holder.sampler.cdf.numpy(), s.cdf.numpy())
    np.testing.assert_allclose(holder.sampler.probability(np.arange(42)).numpy(),
                               fixed_probs(counts, 0.5, num_reserved_ids=2), rtol=1e-6)
    np.testing.assert_array_equal(
        holder.sampler.sample([[3]], 5, seed=2).sampled_candidates.numpy(),
        s.sample([[3]], 5, seed=2).sampled_candidates.numpy())


def test_fixed_unigram_saved_model_holds_a_variable_not_a_constant(tmp_path):
    def export(v, where):
        s = FixedUnigramSampler(v, counts=np.arange(1, v + 1), seed=1)
        module = tf.Module()
        module.sampler = s
        module.sample = tf.function(lambda t: s.sample(t, 3),
                                    input_signature=[tf.TensorSpec([None, 1], tf.int64)])
        tf.saved_model.save(module, str(where))
        return os.path.getsize(where / "saved_model.pb")

    small, large = export(100, tmp_path / "a"), export(100_000, tmp_path / "b")
    # TF's op would add 4 bytes per class to the graph (400 kB here); ours is the same
    # graph whatever the size (names differ by a few bytes).
    assert abs(large - small) < 1000, (small, large)
    loaded = tf.saved_model.load(str(tmp_path / "b"))
    out = loaded.sample(tf.constant([[99_999]], tf.int64))
    # Three distinct draws from 10^5 classes with p_k = (k + 1) / 5e9: a repeat among the
    # first draws has probability about 3 * sum p^2 = 4e-5, so the stream length is 3 and
    # the expected count 1 - (1 - p)^3, to float32 precision.
    p = 100_000 / (100_000 * 100_001 / 2)
    np.testing.assert_allclose(out.true_expected_count.numpy()[0, 0],
                               -math.expm1(3 * math.log1p(-p)), rtol=1e-5)


# ---------------------------------------------------------------- registry


@pytest.mark.parametrize("name", ALL)
def test_get_by_name_and_config(name):
    if name == "fixed_unigram":
        s = tfs.samplers.get(name, num_classes=3, counts=[1, 2, 3])
    else:
        s = tfs.samplers.get(name, num_classes=7)
    assert type(s).__name__.lower().replace("sampler", "") == name.replace("_", "")
    config = tfs.samplers.serialize(s)
    again = tfs.samplers.get(config, num_classes=s.num_classes)
    assert type(again) is type(s) and again.get_config() == s.get_config()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", ALL)
def test_bad_sample_arguments(name):
    s = make(name, 10, seed=0)
    with pytest.raises(ValueError, match="num_sampled"):
        s.sample([[1]], 0)
    with pytest.raises(ValueError, match="num_sampled"):
        s.sample([[1]], 11, unique=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="true_classes"):
        s.sample([[10]], 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="true_classes"):
        s.sample([[-1]], 2)
    with pytest.raises(ValueError, match="true_classes.*rank 2"):
        s.sample([1, 2], 2)
    with pytest.raises(TypeError, match="true_classes.*integer"):
        s.sample([[1.0]], 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="class_ids"):
        s.probability([10])
    with pytest.raises(ValueError, match="seed"):
        s.sample([[1]], 2, seed=tf.constant([1, 2, 3]))


@pytest.mark.parametrize("cls", [LogUniformSampler, LearnedUnigramSampler])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None])
def test_bad_num_classes(cls, bad):
    with pytest.raises(ValueError, match="num_classes"):
        cls(bad)


def test_learned_update_bad_ids():
    s = LearnedUnigramSampler(5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="class_ids"):
        s.update([5])
    with pytest.raises(tf.errors.InvalidArgumentError, match="class_ids"):
        s.update([-1])
    with pytest.raises(TypeError, match="class_ids"):
        s.update([1.0])
    assert s.counts.numpy().tolist() == [1] * 5  # nothing was counted


@pytest.mark.parametrize("kwargs, match", [
    (dict(counts=[1, -2, 3]), "counts.*negative.*counts\\[1\\]"),
    (dict(counts=[1, float("nan"), 3]), "counts.*NaN"),
    (dict(counts=[1, float("inf"), 3]), "counts.*infinite"),
    (dict(counts=[0, 0, 0]), "counts.*all zero"),
    (dict(counts=[[1, 2, 3]]), "counts.*1-D"),
    (dict(counts=["a", "b", "c"]), "counts.*numbers"),
    (dict(counts=[1, 2]), "num_classes.*num_reserved_ids \\+ len\\(counts\\) = 0 \\+ 2"),
    (dict(counts=[1, 2, 3], num_reserved_ids=1), "num_classes.*1 \\+ 3"),
    (dict(counts=[1, 2, 3, 4, 5, 6, 7, 8], num_shards=2),
     "num_classes.*g % num_shards == 0, which is 4"),
    (dict(counts=[0, 1, 0, 2, 0, 3], num_shards=2, shard=0), "No class of shard 0"),
    (dict(counts=[1, 2, 3], distortion=-0.5), "distortion"),
    (dict(counts=[1, 2, 3], distortion=float("nan")), "distortion"),
    (dict(counts=[1, 2, 3], num_reserved_ids=-1), "num_reserved_ids"),
    (dict(counts=[1, 2, 3], num_shards=0), "num_shards"),
    (dict(counts=[1, 2, 3], num_shards=2, shard=2), "shard.*\\[0, num_shards=2\\)"),
    (dict(counts=[1, 2, 3], shard=-1), "shard"),
    (dict(), "exactly one of `counts` and `vocab_file`.*neither"),
    (dict(counts=[1, 2, 3], vocab_file="x.csv"), "exactly one.*both"),
])
def test_fixed_unigram_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FixedUnigramSampler(3, **kwargs)


def test_fixed_unigram_bad_vocab_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab_file.*missing.csv"):
        FixedUnigramSampler(3, vocab_file=str(tmp_path / "missing.csv"))
    cases = {
        "the,5\nof,x\nand,3\n": "line 2.*count.*'of,x'",
        "the,5\nof,3\n\nand,3\n": "line 3",
        "the,5\nof,-3\n": "line 2.*nonnegative",
        "the,5\nof,nan\n": "line 2.*finite",
        "": "empty",
    }
    for i, (text, match) in enumerate(cases.items()):
        path = tmp_path / f"v{i}.csv"
        path.write_text(text)
        with pytest.raises(ValueError, match=match):
            FixedUnigramSampler(3, vocab_file=str(path))


def test_unique_needs_enough_positive_classes():
    s = FixedUnigramSampler(6, counts=[0, 4, 0, 0, 1, 0])
    assert s.sample([[1]], 2).sampled_candidates.numpy().tolist() in ([1, 4], [4, 1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_sampled`=3 with unique"):
        s.sample([[1]], 3)

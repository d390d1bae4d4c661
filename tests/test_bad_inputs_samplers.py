"""Bad inputs to the samplers, one test each, eagerly, in a `tf.function` and in
`model.fit` where a head feeds them: every one is a clear error, never a wrapped id, an
aborted process or a half-applied update."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs
from tf_sampling.ops import _loader
from tf_sampling.samplers import (DynamicAliasSampler, FixedUnigramSampler,
                                  LearnedUnigramSampler, LogUniformSampler, UniformSampler)

V = 50
NAMES = ["uniform", "log_uniform", "learned_unigram", "fixed_unigram", "dynamic_alias"]
# 2^32 + 3 would be class 3 after an int32 cast; 2^31 is negative in int32; V is one past
# the last class; -1 is negative.
BAD_IDS = [2**32 + 3, 2**31, V, -1]
# Per sampler and method, the two that matter most (the wrap and the plain overflow);
# the others once per method on one sampler.
PAIRS = ([(n, b) for n in NAMES for b in (2**32 + 3, V)]
         + [("dynamic_alias", b) for b in (2**31, -1)])


def make(name, v=V, seed=1):
    return {
        "uniform": lambda: UniformSampler(v, seed=seed),
        "log_uniform": lambda: LogUniformSampler(v, seed=seed),
        "learned_unigram": lambda: LearnedUnigramSampler(v, seed=seed),
        "fixed_unigram": lambda: FixedUnigramSampler(v, counts=np.arange(1, v + 1), seed=seed),
        "dynamic_alias": lambda: DynamicAliasSampler(v, seed=seed),
    }[name]()


@pytest.fixture(params=["op", "tf"])
def impl(request, monkeypatch):
    """The compiled op, then the pure-TF fallback (forced by the env var)."""
    if request.param == "tf":
        monkeypatch.setenv(_loader.ENV_FORCE_FALLBACK, "1")
    elif _loader.LIBRARY.get() is None:
        pytest.skip(f"custom ops unavailable: {_loader.LIBRARY.reason}")
    _loader.LIBRARY.reset()
    yield request.param
    _loader.LIBRARY.reset()


def both_modes(fn):
    """fn() eagerly and inside a tf.function; each must raise InvalidArgumentError."""
    for run in (fn, tf.function(fn)):
        with pytest.raises(tf.errors.InvalidArgumentError, match="outside \\[0, num_classes"):
            run()


# ---------------------------------------------------------------- int64 ids


@pytest.mark.parametrize("name, bad", PAIRS)
def test_sample_rejects_out_of_range_true_classes(name, bad):
    s = make(name)
    ids = tf.constant([[1], [bad]], tf.int64)
    both_modes(lambda: s.sample(ids, 3).true_expected_count)


@pytest.mark.parametrize("name, bad", PAIRS)
def test_probability_rejects_out_of_range_ids(name, bad):
    s = make(name)
    both_modes(lambda: s.probability(tf.constant([bad], tf.int64)))


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("name", ["learned_unigram", "dynamic_alias"])
def test_update_rejects_out_of_range_ids_and_changes_nothing(name, bad):
    s = make(name)
    before = [w.numpy().copy() for w in s.weights]
    both_modes(lambda: s.update(tf.constant([[2], [bad]], tf.int64)))
    for a, w in zip(before, s.weights):
        np.testing.assert_array_equal(a, w.numpy(), err_msg=w.path)


@pytest.mark.parametrize("bad", BAD_IDS)
def test_add_weights_rejects_out_of_range_ids(bad):
    s = DynamicAliasSampler(V)
    both_modes(lambda: s.add_weights(tf.constant([1, bad], tf.int64), [1.0, 1.0]))
    np.testing.assert_array_equal(s.class_weights.numpy(), np.ones(V))


@pytest.mark.parametrize("bad", [2**32 + 3, V])
@pytest.mark.parametrize("unique", [False, True])
def test_per_example_rejects_out_of_range_true_classes(bad, unique):
    s = make("log_uniform")
    ids = tf.constant([[1], [bad]], tf.int64)
    both_modes(lambda: tfs.losses.sample_per_example(s, ids, 4, unique=unique)
               .true_expected_count)


def _head_model(sampler):
    tokens = keras.Input((4,))
    labels = keras.Input((), dtype="int64")
    head = tfs.layers.SampledSoftmax(V, num_sampled=5, sampler=sampler)
    model = keras.Model([tokens, labels], head([tokens, labels]))
    model.compile(optimizer="sgd")
    return model


@pytest.mark.parametrize("name", ["learned_unigram", "dynamic_alias"])
def test_fit_rejects_a_label_that_int32_would_wrap(name):
    """Label 2^32 + 3 in `fit` raises (it would train as class 3 after an int32 cast), and
    the sampler's learned state is untouched."""
    s = make(name)
    before = [w.numpy().copy() for w in s.weights if "seed" not in w.path]
    model = _head_model(s)
    x = np.ones((2, 4), np.float32)
    y = np.array([3, 2**32 + 3], np.int64)
    with pytest.raises(tf.errors.InvalidArgumentError):
        model.fit([x, y], epochs=1, batch_size=2, verbose=0)
    after = [w.numpy() for w in s.weights if "seed" not in w.path]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- unique-draw bound

SKEWED = np.ones(10_000)
SKEWED[0] = 1e12  # the case: 100 distinct ids need ~1e10 draws
BOUND_MSG = "limit of 2\\^32.*unique=False.*distortion below 1"


def skewed(name):
    if name == "fixed_unigram":
        return FixedUnigramSampler(10_000, counts=SKEWED, seed=1)
    if name == "learned_unigram":
        s = LearnedUnigramSampler(10_000, seed=1)
        s.counts.assign(SKEWED.astype(np.int64))
        return s
    return DynamicAliasSampler(10_000, initial_weights=SKEWED, seed=1)


@pytest.mark.parametrize("name", ["fixed_unigram", "learned_unigram"])
def test_too_skewed_unique_sample_is_an_error(name):
    s = skewed(name)
    for run in (lambda: s.sample([[0]], 100), tf.function(lambda: s.sample([[0]], 100))):
        with pytest.raises(tf.errors.InvalidArgumentError, match=BOUND_MSG):
            run()


def test_too_skewed_unique_sample_is_an_error_dynamic(impl):
    s = skewed("dynamic_alias")
    s.update([[3], [4]])  # a pending list: the mixture path
    assert s.pending_size.numpy() == 2
    for run in (lambda: s.sample([[0]], 100), tf.function(lambda: s.sample([[0]], 100))):
        with pytest.raises(tf.errors.InvalidArgumentError, match=BOUND_MSG):
            run()


def test_too_skewed_per_example_unique_sample_is_an_error():
    s = skewed("fixed_unigram")
    with pytest.raises(tf.errors.InvalidArgumentError, match=BOUND_MSG):
        tfs.losses.sample_per_example(s, np.zeros((3, 1), np.int64), 100, unique=True)


def test_too_skewed_unique_sample_is_an_error_in_fit():
    # Per-example sampling takes the same code path (tf_sampling/ops/_unique.py), tested
    # eagerly above; in `fit` it only adds time.
    tokens = keras.Input((4,))
    labels = keras.Input((), dtype="int64")
    head = tfs.layers.SampledSoftmax(10_000, num_sampled=100, sampler=skewed("fixed_unigram"),
                                     samples_per="batch")
    model = keras.Model([tokens, labels], head([tokens, labels]))
    model.compile(optimizer="sgd")
    with pytest.raises(tf.errors.InvalidArgumentError, match=BOUND_MSG):
        model.fit([np.ones((2, 4), np.float32), np.array([1, 2])], epochs=1, verbose=0)


def test_too_skewed_unique_sample_does_not_abort_under_a_memory_limit():
    """The issue's reproduction in a subprocess under an 8 GB address-space limit (the
    library aborted there with std::bad_alloc, rc 134): now an InvalidArgumentError with
    the pure-TF sampler, the op and the op's fallback, and a small peak memory."""
    script = textwrap.dedent("""
        import resource, os
        resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))
        import numpy as np, tensorflow as tf, tf_sampling as tfs
        from tf_sampling.ops import _loader
        w = np.ones(10_000); w[0] = 1e12
        for make in (lambda: tfs.samplers.FixedUnigramSampler(10_000, counts=w, seed=1),
                     lambda: tfs.samplers.DynamicAliasSampler(10_000, initial_weights=w,
                                                              seed=1),
                     "fallback"):
            if make == "fallback":
                os.environ[_loader.ENV_FORCE_FALLBACK] = "1"
                _loader.LIBRARY.reset()
                make = lambda: tfs.samplers.DynamicAliasSampler(
                    10_000, initial_weights=w, seed=1)
            s = make()
            try:
                tf.function(lambda: s.sample([[0]], 100))()
                print("no error")
            except tf.errors.InvalidArgumentError as e:
                print("refused" if "2^32" in e.message else e.message)
        print(tfs.ops.custom_ops_available())
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop(_loader.ENV_FORCE_FALLBACK, None)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    assert lines[:4] == ["refused", "refused", "refused", "False"], out.stdout
    # TF itself takes ~600 MB; the refused draws add at most 2^20 ids (8 MB) per round,
    # so the peak (MB) stays far below the GBs of the aborting runs.
    assert int(lines[4]) < 1500, out.stdout


class _BrokenCdf(LogUniformSampler):
    """A log-uniform sampler with a CDF off by one: class V - 1 is never drawn, and -1
    is, although the probabilities say otherwise."""

    def _draw(self, num_draws, seed):
        return super()._draw(num_draws, seed) - 1


class _NeverLast(LogUniformSampler):
    """Draws that never reach the last class (clipped to V - 2), with its probabilities
    unchanged: a unique sample of all V classes can never finish."""

    def _draw(self, num_draws, seed):
        return tf.minimum(super()._draw(num_draws, seed), self.num_classes - 2)


def test_a_sampler_drawing_ids_out_of_range_fails_unique_sampling():
    s = _BrokenCdf(12, seed=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="drew ids outside"):
        s.sample([[1]], 12)


def test_a_sampler_whose_draws_miss_a_class_fails_at_the_bound_not_later():
    """All 12 classes asked for, one never drawn: an error once the bound (2^20 draws
    here) is reached, instead of doubling rounds until memory runs out."""
    s = _NeverLast(12, seed=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="within the draw bound"):
        s.sample([[1]], 12)
    with pytest.raises(tf.errors.InvalidArgumentError, match="within the draw bound"):
        tfs.losses.sample_per_example(s, np.zeros((2, 1), np.int64), 12, unique=True)


# ---------------------------------------------------------------- atomic updates


@pytest.mark.parametrize("amounts", [[1e308, 1e308], [1.0, np.nan]])
@pytest.mark.parametrize("max_pending", [1, 100])  # with and without a rebuild
def test_rejected_add_weights_leaves_the_state_exactly_as_before(impl, amounts, max_pending):
    s = DynamicAliasSampler(V, seed=3, max_pending=max_pending)
    s.add_weights([7], [2.0])  # some pending state or a rebuild first
    before = {w.path: w.numpy().copy() for w in s.weights}
    for run in (lambda: s.add_weights([1, 2], amounts),
                tf.function(lambda: s.add_weights([1, 2], amounts))):
        with pytest.raises(tf.errors.InvalidArgumentError, match="amounts"):
            run()
        for w in s.weights:
            np.testing.assert_array_equal(before[w.path], w.numpy(), err_msg=w.path)
    # ... and the sampler still works.
    assert np.isfinite(s.table_mass.numpy())
    assert s.sample([[0]], 5).sampled_candidates.shape == [5]


def test_rejected_assign_weights_leaves_the_state_exactly_as_before(impl):
    s = DynamicAliasSampler(V, seed=3)
    before = {w.path: w.numpy().copy() for w in s.weights}
    for bad in (np.full(V, 1e308), np.full(V, np.nan), np.zeros(V)):
        with pytest.raises(tf.errors.InvalidArgumentError):
            s.assign_weights(bad)
        for w in s.weights:
            np.testing.assert_array_equal(before[w.path], w.numpy(), err_msg=w.path)


def test_rejected_add_weights_in_fit_leaves_the_state_as_before(impl):
    """A layer that adds weights from its inputs: an infinite amount fails `fit` and
    leaves the sampler as it was (Keras feeds float32 data, so a finite amount cannot
    overflow the float64 weights here; the eager tests above cover that)."""
    s = DynamicAliasSampler(V, seed=3, max_pending=4)

    class Adder(keras.layers.Layer):
        def call(self, ids, amounts):
            s.add_weights(ids, amounts)
            return amounts

    ids, amounts = keras.Input((), dtype="int64"), keras.Input((), dtype="float64")
    out = keras.layers.Dense(1)(keras.ops.expand_dims(Adder()(ids, amounts), -1))
    model = keras.Model([ids, amounts], out)
    model.compile(optimizer="sgd", loss="mse")
    before = {w.path: w.numpy().copy() for w in s.weights}
    with pytest.raises(tf.errors.InvalidArgumentError, match="amounts"):
        model.fit([np.array([1, 2]), np.array([1.0, np.inf])], np.zeros(2), verbose=0)
    for w in s.weights:
        np.testing.assert_array_equal(before[w.path], w.numpy(), err_msg=w.path)


def test_unique_sample_of_more_classes_than_have_probability_is_an_error():
    """A learned sampler whose counts were set to zero for most classes has no support
    check of its own: the bound's computation reports the support instead."""
    s = LearnedUnigramSampler(20, seed=1)
    s.counts.assign(np.r_[np.zeros(15, np.int64), np.ones(5, np.int64)])
    for run in (lambda: s.sample([[19]], 6), tf.function(lambda: s.sample([[19]], 6))):
        with pytest.raises(tf.errors.InvalidArgumentError, match="fewer than num_sampled=6"):
            run()

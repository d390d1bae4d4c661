"""DynamicAliasSampler: exact draws from changing weights, on the compiled op and the
pure-TF fallback. Chi-square bounds are df + 6 sqrt(2 df) with fixed seeds (a correct
sampler exceeds them with probability < 1e-6), on cells of expected count >= 20."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs
from _helpers import AddSquareLoss, SamplerHolder, sampler_model
from _stats import assert_cells, chi2_bound, chi_square
from tf_sampling.samplers.dynamic_alias import DynamicAliasSampler


def chi2_ok(counts, p):
    stat, df = chi_square(counts, p)
    return stat < chi2_bound(df), (stat, df)


def draw_counts(s, n, seed, v):
    ids = s.sample([[0]], n, unique=False, seed=seed).sampled_candidates.numpy()
    return np.bincount(ids, minlength=v)


def test_static_weights_exact(impl):
    rng = np.random.default_rng(0)
    w = rng.random(300) * 5
    w[rng.random(300) < 0.2] = 0.0
    s = DynamicAliasSampler(300, initial_weights=w, seed=1)
    np.testing.assert_allclose(s.probability(np.arange(300)), w / w.sum(), rtol=1e-6)
    counts = draw_counts(s, 500_000, 3, 300)
    assert counts[w == 0].sum() == 0
    ok, info = chi2_ok(counts, w / w.sum())
    assert ok, info
    # Every cell (tests/_stats.py, cut about 5.9 sigma): the median class expects 2100
    # draws, so a 20% bias on it would be 9.2 sigma.
    assert_cells(counts, w / w.sum())


@pytest.mark.parametrize("max_pending, threshold", [(150, 0.3), (100_000, 1000.0)])
def test_exact_after_many_dynamic_updates(impl, max_pending, threshold):
    """Labels and explicit increments over 60 steps, with rebuilds (first case) or with the
    increments outweighing the table (second): draws follow the current weights."""
    v = 400
    rng = np.random.default_rng(1)
    w = rng.random(v)
    w[:50] = 0.0  # these never get an increment: never drawn
    s = DynamicAliasSampler(v, initial_weights=w, rebuild_threshold=threshold,
                            max_pending=max_pending, seed=2)
    ref = w.copy()
    step = tf.function(lambda ids: s.update(ids))
    for t in range(60):
        labels = rng.integers(50, v, size=(16, 1)) if t % 3 else rng.zipf(1.5, (16, 1)) % 350 + 50
        step(tf.constant(labels, tf.int64))
        np.add.at(ref, labels.ravel(), 1.0)
        if t % 10 == 0:
            ids = rng.integers(50, v, size=7)
            amounts = rng.random(7) * 20
            s.add_weights(ids, amounts)
            np.add.at(ref, ids, amounts)
    if s.pending_size.numpy() == 0:  # make sure the mixture path is what gets tested
        s.update([[77]])
        ref[77] += 1
    assert s.pending_size.numpy() > 0
    if max_pending == 150:
        assert s.num_rebuilds.numpy() >= 3
    else:
        assert s.num_rebuilds.numpy() == 0
        assert s._pending_mass(s.pending_size).numpy() > s.table_mass.numpy()
    np.testing.assert_allclose(s.class_weights.numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(s.probability(np.arange(v)), ref / ref.sum(), rtol=1e-6)
    counts = draw_counts(s, 600_000, 4, v)
    assert counts[:50].sum() == 0
    ok, info = chi2_ok(counts, ref / ref.sum())
    assert ok, info
    assert_cells(counts, ref / ref.sum())  # median class ~1700 draws: 20% is 8.2 sigma


def test_expected_counts_are_exact(impl):
    v = 200
    w = np.arange(1.0, v + 1.0)
    s = DynamicAliasSampler(v, initial_weights=w, seed=5)
    for pending in (False, True):
        if pending:
            s.update([[3], [3], [150]])
            w[3] += 2
            w[150] += 1
            assert s.pending_size.numpy() == 3
        p = w / w.sum()
        true = np.array([[3], [150]])
        seed = s._make_seed(11)
        sampled, tries = s._sample_unique(40, seed)
        out = s.sample(true, 40, unique=True, seed=11)
        np.testing.assert_array_equal(out.sampled_candidates, sampled)
        assert len(set(sampled.numpy())) == 40
        tries = float(tries)
        np.testing.assert_allclose(out.true_expected_count, 1 - (1 - p[true]) ** tries, rtol=1e-5)
        np.testing.assert_allclose(out.sampled_expected_count,
                                   1 - (1 - p[sampled.numpy()]) ** tries, rtol=1e-5)
        out = s.sample(true, 40, unique=False, seed=11)
        np.testing.assert_allclose(out.true_expected_count, p[true] * 40, rtol=1e-5)


def test_seeds_repeat(impl):
    s = DynamicAliasSampler(1000, seed=3)
    s.update(np.arange(100)[:, None])
    for unique in (True, False):
        a = s.sample([[1]], 50, unique=unique, seed=9).sampled_candidates.numpy()
        b = s.sample([[1]], 50, unique=unique, seed=9).sampled_candidates.numpy()
        c = s.sample([[1]], 50, unique=unique, seed=10).sampled_candidates.numpy()
        np.testing.assert_array_equal(a, b)
        assert np.mean(a != c) > 0.5


def test_state_read_without_copy_keeps_its_values_through_updates():
    """The draws read the pending lists, and a rebuild the weights, without the copy of
    copy-on-read mode: a value read that is still held when an update scatters into the
    variable must keep the values it was read with (TF copies the buffer then)."""
    from tf_sampling._variables import read_without_copy

    s = DynamicAliasSampler(100, max_pending=50, rebuild_threshold=10.0, seed=1)
    s.update(np.arange(10)[:, None])
    held = {v.path: (read_without_copy(v.value), v.numpy().copy())
            for v in (s.pending_ids, s.pending_cum, s.class_weights)}
    mix = s._read_mixture()
    s.update(np.arange(20, 40)[:, None])  # appends 20 entries, adds to 20 weights
    s.add_weights([3, 4], [5.0, 6.0])
    assert s.pending_size.numpy() == 32 and s.num_rebuilds.numpy() == 0
    for path, (value, before) in held.items():
        np.testing.assert_array_equal(value.numpy(), before, err_msg=path)
    np.testing.assert_array_equal(mix.ids, np.arange(10))
    assert float(mix.total) == 110.0 and float(s._total_mass()) == 141.0


def test_rebuild_triggers():
    s = DynamicAliasSampler(100, max_pending=10, rebuild_threshold=0.5)
    s.update(np.arange(8)[:, None])  # 8 pending, mass 8 < 0.5 * 100
    assert s.pending_size.numpy() == 8 and s.num_rebuilds.numpy() == 0
    s.update([[1], [2], [3]])  # 11 > max_pending
    assert s.pending_size.numpy() == 0 and s.num_rebuilds.numpy() == 1
    s.add_weights([5], [60.0])  # mass 60 > 0.5 * 111
    assert s.pending_size.numpy() == 0 and s.num_rebuilds.numpy() == 2
    s.assign_weights(np.ones(100))
    assert s.num_rebuilds.numpy() == 3
    np.testing.assert_allclose(s.probability([0, 5]), [0.01, 0.01])


def test_assign_weights_and_zero_classes(impl):
    s = DynamicAliasSampler(50, seed=1)
    w = np.zeros(50)
    w[[3, 10, 40]] = [1.0, 2.0, 5.0]
    s.assign_weights(w)
    counts = draw_counts(s, 20_000, 1, 50)
    assert set(np.nonzero(counts)[0]) == {3, 10, 40}
    with pytest.raises(tf.errors.InvalidArgumentError, match="positive probability|nonzero"):
        s.sample([[3]], 4, unique=True)
    s.update([[20]])  # a fourth class becomes possible
    ids = s.sample([[3]], 4, unique=True).sampled_candidates.numpy()
    assert sorted(ids) == [3, 10, 20, 40]


def test_bad_arguments():
    with pytest.raises(ValueError, match="initial_weights"):
        DynamicAliasSampler(3, initial_weights=[1.0, -1.0, 2.0])
    with pytest.raises(ValueError, match="initial_weights"):
        DynamicAliasSampler(3, initial_weights=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="initial_weights"):
        DynamicAliasSampler(3, initial_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="rebuild_threshold"):
        DynamicAliasSampler(3, rebuild_threshold=0)
    with pytest.raises(ValueError, match="max_pending"):
        DynamicAliasSampler(3, max_pending=0)
    s = DynamicAliasSampler(4)
    before = s.class_weights.numpy().copy()
    with pytest.raises(tf.errors.InvalidArgumentError, match="weights"):
        s.assign_weights([1.0, np.nan, 1.0, 1.0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="weights"):
        s.assign_weights([0.0, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="weights"):
        s.assign_weights([1.0, 2.0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="amounts"):
        s.add_weights([1], [-1.0])
    with pytest.raises(ValueError, match="amounts"):
        s.add_weights([1, 2], [1.0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="class_ids"):
        s.update([[4]])
    np.testing.assert_array_equal(s.class_weights.numpy(), before)


def test_checkpoint_round_trip(tmp_path):
    s = DynamicAliasSampler(30, seed=3, max_pending=8)
    s.update(np.arange(12)[:, None])  # rebuilt once
    s.update([[5], [5]])  # then pending
    s.sample([[1]], 4)  # advance the seed generator
    path = tf.train.Checkpoint(sampler=s).write(str(tmp_path / "ckpt"))
    expected = [s.sample([[1]], 6, unique=u).sampled_candidates.numpy() for u in (True, False)]

    t = DynamicAliasSampler(30, seed=99, max_pending=8)
    t.update([[0], [0]])
    tf.train.Checkpoint(sampler=t).read(path).assert_consumed()
    for name in ("class_weights", "alias_table", "table_mass", "pending_ids",
                 "pending_cum", "pending_size", "num_positive"):
        np.testing.assert_array_equal(getattr(t, name).numpy(), getattr(s, name).numpy(), name)
    got = [t.sample([[1]], 6, unique=u).sampled_candidates.numpy() for u in (True, False)]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_model_fit_learns_and_keras_round_trip(tmp_path):
    v = 8
    s = tfs.samplers.get("dynamic_alias", num_classes=v, seed=4, max_pending=5,
                         initial_weights=[1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    assert isinstance(s, DynamicAliasSampler)
    model = sampler_model(s, num_sampled=3)
    y = np.array([[1], [1], [2], [6], [1], [0]], np.int64)
    xs = np.ones((6, 3), np.float32)
    model.fit([xs, y], batch_size=2, epochs=2, verbose=0)  # 6 graph-mode steps
    expected = np.array([1.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    np.add.at(expected, np.tile(y[:, 0], 2), 1.0)
    np.testing.assert_array_equal(s.class_weights.numpy(), expected)
    assert s.num_rebuilds.numpy() >= 1  # 12 increments with max_pending=5
    model.predict([xs, y], verbose=0)  # inference does not learn
    np.testing.assert_array_equal(s.class_weights.numpy(), expected)

    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    holder = [layer for layer in loaded.layers if isinstance(layer, SamplerHolder)][0]
    t = holder.sampler
    assert isinstance(t, DynamicAliasSampler)
    assert t.get_config() == s.get_config()
    np.testing.assert_array_equal(t.class_weights.numpy(), expected)
    np.testing.assert_array_equal(t.alias_table.numpy(), s.alias_table.numpy())
    assert t.pending_size.numpy() == s.pending_size.numpy()
    np.testing.assert_allclose(t.probability(np.arange(v)), expected / expected.sum())


def test_one_replica_strategy_matches_no_strategy():
    """Under a strategy the state lives in distributed variables, read and written through
    each replica's copy (tests/test_distribute.py runs 2 replicas and 2 workers); with one
    replica, the draws and the state must be those of the same calls without a strategy."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        s = DynamicAliasSampler(50, seed=7, max_pending=6)
    ref = DynamicAliasSampler(50, seed=7, max_pending=6)
    assert isinstance(s.class_weights.value, tf.distribute.DistributedValues)

    def train_step(sampler, labels):
        out = sampler.sample(labels, 5, unique=True)
        sampler.update(labels)
        return out.sampled_candidates, out.true_expected_count

    replicated = tf.function(lambda y: strategy.run(train_step, args=(s, y)))
    plain = tf.function(lambda y: train_step(ref, y))
    labels = np.random.default_rng(0).integers(0, 50, (8, 4, 1))
    for batch in labels:  # 8 steps of 4 labels: rebuilds (max_pending=6) and pending
        for a, b in zip(replicated(tf.constant(batch)), plain(tf.constant(batch))):
            np.testing.assert_array_equal(a, b)
    with strategy.scope():  # cross-replica context: through strategy.run
        s.add_weights([1, 2], [0.5, 3.0])
    ref.add_weights([1, 2], [0.5, 3.0])
    assert ref.num_rebuilds.numpy() >= 1 and ref.pending_size.numpy() > 0
    for a, b in zip(s.weights, ref.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    np.testing.assert_array_equal(s.sample([[1]], 10, seed=3).sampled_candidates,
                                  ref.sample([[1]], 10, seed=3).sampled_candidates)


def test_initial_weights_are_saved_as_weights_not_in_the_config(tmp_path):
    """`initial_weights` are state: a config holds only the options, whatever the size
    (issue 19: at V=1e7 they made a 198 MB config.json), and the weights come back from
    the saved variables. A `.keras` file written with them in its config still loads."""
    import json
    import zipfile

    v = 100_000
    w = np.random.default_rng(0).random(v)
    s = DynamicAliasSampler(v, initial_weights=w, seed=2)
    config = s.get_config()
    assert "initial_weights" not in config and len(json.dumps(config)) < 1000
    labels = keras.Input((1,), dtype="int64")
    model = keras.Model(labels, AddSquareLoss()(SamplerHolder(s, num_sampled=3)(labels)))
    path = str(tmp_path / "m.keras")
    model.save(path)
    for old_format in (False, True):
        if old_format:  # the config as older versions wrote it
            old = str(tmp_path / "old.keras")
            with zipfile.ZipFile(path) as src, zipfile.ZipFile(old, "w") as dst:
                for item in src.infolist():
                    data = src.read(item.filename)
                    if item.filename == "config.json":
                        text = data.decode()
                        marker = '"learn_from_labels"'
                        assert text.count(marker) == 1
                        data = text.replace(marker, '"initial_weights": %s, %s' % (
                            json.dumps(w[:3].tolist() + [1.0] * (v - 3)), marker)).encode()
                    dst.writestr(item, data)
            path = old
        loaded = keras.models.load_model(path)
        t = [layer for layer in loaded.layers if isinstance(layer, SamplerHolder)][0].sampler
        np.testing.assert_array_equal(t.class_weights.numpy(), w)
        np.testing.assert_array_equal(t.alias_table.numpy(), s.alias_table.numpy())
        assert "initial_weights" not in t.get_config()

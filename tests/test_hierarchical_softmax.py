"""Tests for tf_sampling.layers.HierarchicalSoftmax against NumPy brute force."""

import json
import os
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs

import _helpers
from tf_sampling import trees
from tf_sampling.layers import hierarchical_softmax as hs_module

V, DIM, BATCH = 37, 6, 9
RNG = np.random.default_rng(0)
COUNTS = RNG.integers(0, 60, V)


def _make_tree(kind):
    if kind == "huffman":
        return trees.huffman_tree(COUNTS)
    if kind == "balanced":
        return trees.balanced_tree(V)
    return trees.two_level_tree(np.random.default_rng(1).integers(0, 6, V))


def _head(tree, **kwargs):
    layer = tfs.layers.HierarchicalSoftmax(
        V, tree=tree, kernel_initializer=keras.initializers.RandomNormal(stddev=0.7, seed=1),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=2), **kwargs)
    layer.build((None, DIM))
    return layer


def _brute_log_prob(layer, x):
    """log P(c | x) by walking every class's path in NumPy (float64)."""
    tree = layer.tree
    s = x.astype(np.float64) @ layer.kernel.numpy().T.astype(np.float64)
    if layer.use_bias:
        s = s + layer.bias.numpy()
    out = np.zeros((x.shape[0], tree.num_classes))
    for c in range(tree.num_classes):
        nodes, codes = tree.path(c)
        out[:, c] = -np.logaddexp(0.0, -(1 - 2 * codes) * s[:, nodes]).sum(axis=1)
    return out


def _inputs(n=BATCH, seed=0):
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


@pytest.mark.parametrize("kind", ["huffman", "balanced", "two_level"])
def test_log_prob_matches_brute_force(kind):
    layer = _head(_make_tree(kind))
    x = _inputs()
    lp = layer.log_prob(x).numpy()
    assert lp.shape == (BATCH, V)
    np.testing.assert_allclose(lp, _brute_log_prob(layer, x), atol=2e-5)
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-5)
    # The inference call returns the same.
    np.testing.assert_allclose(layer(x, training=False).numpy(), lp, atol=1e-6)


@pytest.mark.parametrize("kind", ["huffman", "balanced", "two_level"])
def test_training_loss_is_exact_nll(kind):
    layer = _head(_make_tree(kind))
    x = _inputs()
    y = np.random.default_rng(5).integers(0, V, BATCH)
    nll = layer([x, y], training=True).numpy()
    ref = -_brute_log_prob(layer, x)[np.arange(BATCH), y]
    np.testing.assert_allclose(nll, ref, atol=2e-5)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(layer.losses[0].numpy(), ref.mean(), atol=2e-5)
    # [batch, 1] labels and the evaluation method give the same.
    np.testing.assert_allclose(layer([x, y[:, None]], training=True).numpy(), nll, atol=1e-6)
    np.testing.assert_allclose(layer.full_softmax_loss(x, y).numpy(), nll, atol=1e-6)


def test_gradients_match_numpy():
    layer = _head(_make_tree("huffman"))
    x = tf.constant(_inputs())
    y = np.random.default_rng(6).integers(0, V, BATCH)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_mean(layer([x, y], training=True))
    gx, gk, gb = tape.gradient(loss, [x, layer.kernel.value, layer.bias.value])
    # d(-log sigmoid(sign * s)) / ds = -sign * sigmoid(-sign * s), averaged over the batch.
    k, b, xn = layer.kernel.numpy().astype(np.float64), layer.bias.numpy(), x.numpy()
    ref_x, ref_k, ref_b = np.zeros_like(xn, np.float64), np.zeros_like(k), np.zeros_like(b)
    for i in range(BATCH):
        nodes, codes = layer.tree.path(y[i])
        sign = 1.0 - 2.0 * codes
        s = k[nodes] @ xn[i] + b[nodes]
        g = -sign / (1.0 + np.exp(sign * s)) / BATCH
        ref_x[i] = g @ k[nodes]
        np.add.at(ref_k, nodes, g[:, None] * xn[i][None, :])
        np.add.at(ref_b, nodes, g)
    np.testing.assert_allclose(gx.numpy(), ref_x, atol=1e-6)
    np.testing.assert_allclose(tf.convert_to_tensor(gk).numpy(), ref_k, atol=1e-6)
    np.testing.assert_allclose(tf.convert_to_tensor(gb).numpy(), ref_b, atol=1e-6)
    # Only the path nodes get gradient rows (O(depth x dim) per example, not O(V)).
    assert isinstance(gk, tf.IndexedSlices)
    # One row per distinct node on the batch's paths (unique rows: see test_sparse_gradients).
    path_nodes = np.unique(np.concatenate([layer.tree.path(c)[0] for c in y]))
    np.testing.assert_array_equal(np.sort(gk.indices.numpy()), path_nodes)


@pytest.mark.parametrize("kind", ["huffman", "balanced", "two_level"])
def test_top_k_equals_brute_force(kind):
    layer = _head(_make_tree(kind))
    x = _inputs(n=32, seed=3)
    lp = layer.log_prob(x)
    for k in (1, 5, V):
        values, ids = layer.top_k(x, k)
        ref_v, ref_i = tf.math.top_k(lp, k)
        np.testing.assert_array_equal(ids.numpy(), ref_i.numpy())
        np.testing.assert_allclose(values.numpy(), ref_v.numpy(), atol=1e-5)


def test_top_k_certifies_without_fallback_and_falls_back_exactly():
    # A confident model: the search should finish and certify every row by itself.
    layer = tfs.layers.HierarchicalSoftmax(
        500, tree="balanced",
        kernel_initializer=keras.initializers.RandomNormal(stddev=2.0, seed=3))
    layer.build((None, 16))
    x = np.random.default_rng(4).normal(size=(64, 16)).astype(np.float32)
    steps, certified = layer.search_stats(x, k=3)
    assert certified == 1.0 and steps <= 2 * layer.tree.max_depth + 3
    ref_v, ref_i = tf.math.top_k(layer.log_prob(x), 3)
    # Starve the search (tiny frontier, 2 steps): rows go to the exact fallback.
    _, certified = layer.search_stats(x, k=3, width=1, capacity=3, max_steps=2)
    assert certified < 0.5
    for kwargs in ({}, {"width": 1, "capacity": 3, "max_steps": 2},
                   {"width": 2, "capacity": 5, "max_steps": 40}):
        values, ids = layer.top_k(x, 3, **kwargs)
        np.testing.assert_array_equal(ids.numpy(), ref_i.numpy())
        np.testing.assert_allclose(values.numpy(), ref_v.numpy(), atol=1e-5)


def test_top_k_in_tf_function_and_call():
    layer = _head(_make_tree("huffman"), top_k=4)
    x = _inputs()
    fn = tf.function(lambda t: layer(t, training=False))
    values, ids = fn(tf.constant(x))
    ref_v, ref_i = tf.math.top_k(layer.log_prob(x), 4)
    np.testing.assert_array_equal(ids.numpy(), ref_i.numpy())
    assert ids.dtype == tf.int32 and values.shape == (BATCH, 4)
    assert layer.compute_output_shape((None, DIM)) == ((None, 4), (None, 4))
    assert layer.compute_output_shape([(None, DIM), (None,)]) == (None,)


def _synthetic(n, seed):
    """Labels from a Zipf prior; inputs are noisy class centers, so x predicts y well."""
    rng = np.random.default_rng(seed)
    prior = 1.0 / np.arange(1, V + 1)
    prior /= prior.sum()
    y = rng.choice(V, size=n, p=prior)
    centers = np.random.default_rng(99).normal(size=(V, DIM)) * 2.0
    x = (centers[y] + rng.normal(size=(n, DIM)) * 0.5).astype(np.float32)
    return x, y.astype(np.int32), prior


def test_model_fit_learns_beyond_unigram():
    keras.utils.set_random_seed(0)
    x, y, prior = _synthetic(3000, seed=0)
    xv, yv, _ = _synthetic(1000, seed=1)
    counts = np.bincount(y, minlength=V)
    x_in = keras.Input((DIM,))
    y_in = keras.Input((), dtype="int32")
    hidden = keras.layers.Dense(32, activation="tanh")(x_in)
    head = tfs.layers.HierarchicalSoftmax(V, tree="huffman", counts=counts)
    model = keras.Model([x_in, y_in], head([hidden, y_in]))
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    hist = model.fit([x, y], epochs=8, batch_size=100, verbose=0)
    losses = hist.history["loss"]
    # The best input-independent model has loss = entropy of the label prior.
    unigram_nll = -(prior * np.log(prior)).sum()
    assert losses[-1] < losses[0]
    val = model.evaluate([xv, yv], verbose=0, return_dict=True)["loss"]
    assert val < 0.5 * unigram_nll, (val, unigram_nll)
    # evaluate() reports the exact NLL of the held-out data.
    exact = -np.mean(head.log_prob(keras.Model(x_in, hidden)(xv)).numpy()[np.arange(1000), yv])
    np.testing.assert_allclose(val, exact, rtol=1e-4)
    # The zero-initialized head starts at P(c) = 2^-depth, close to the prior for Huffman.
    fresh = tfs.layers.HierarchicalSoftmax(V, tree="huffman", counts=counts)
    start = np.mean(fresh([np.zeros((len(y), 4), np.float32), y], training=True).numpy())
    assert start < unigram_nll + 0.1


def _round_trip(tmp_path, layer_kwargs):
    x_in = keras.Input((DIM,))
    head = tfs.layers.HierarchicalSoftmax(
        V, kernel_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=7),
        **layer_kwargs)
    model = keras.Model(x_in, head(x_in))
    path = str(tmp_path / "hs.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = _inputs()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)
    return head, loaded.layers[-1]


def test_keras_round_trip_small_tree_in_config(tmp_path):
    head, loaded = _round_trip(tmp_path, {"tree": "huffman", "counts": COUNTS})
    assert loaded.tree == head.tree
    config = head.get_config()
    assert config["tree"]["children"] == head.tree.children.tolist()
    json.dumps(config)
    # from_config alone (no weights) rebuilds the same tree.
    clone = tfs.layers.HierarchicalSoftmax.from_config(config)
    assert clone.tree == head.tree


def test_keras_round_trip_tree_in_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(hs_module, "_CONFIG_TREE_MAX_CLASSES", 4)
    tree = _make_tree("two_level")
    head, loaded = _round_trip(tmp_path, {"tree": tree, "top_k": 3})
    assert loaded.tree == tree
    config = head.get_config()
    assert "children" not in config["tree"] and config["tree"]["stored_in_weights"]
    # Without its weights such a layer refuses to run rather than using a wrong tree.
    bare = tfs.layers.HierarchicalSoftmax.from_config(config)
    with pytest.raises(RuntimeError, match="load its weights"):
        bare.log_prob(_inputs())


def test_bad_inputs_raise():
    layer = _head(_make_tree("balanced"))
    x = _inputs()
    y = np.zeros(BATCH, np.int32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        layer([x, np.full(BATCH, V, np.int32)], training=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        layer([x, np.full(BATCH, -1, np.int32)], training=True)
    with pytest.raises(TypeError, match="`labels` must be integers"):
        layer([x, y.astype(np.float32)], training=True)
    with pytest.raises(ValueError, match="`labels` must have shape"):
        layer([x, np.zeros((BATCH, 2), np.int32)], training=True)
    with pytest.raises(ValueError, match="`labels` has batch size"):
        layer([x, y[:3]], training=True)
    with pytest.raises(ValueError, match="`inputs` has last dimension"):
        layer.log_prob(np.zeros((2, DIM + 1), np.float32))
    with pytest.raises(TypeError, match="`inputs` must be floating"):
        layer.top_k(np.zeros((2, DIM), np.int32), 1)
    with pytest.raises(ValueError, match="`inputs` must have shape"):
        layer.log_prob(np.zeros((2, 3, DIM), np.float32))
    with pytest.raises(ValueError, match="`k`"):
        layer.top_k(x, V + 1)
    with pytest.raises(ValueError, match="`k`"):
        layer.top_k(x, 0)
    # Out-of-range labels inside a compiled function fail too (not silently on GPU).
    fn = tf.function(lambda a, b: layer([a, b], training=True))
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        fn(x, np.full(BATCH, V + 3, np.int32))


@pytest.mark.parametrize("kwargs, match", [
    ({"tree": "huffman"}, "needs `counts`"),
    ({"tree": "huffman", "counts": np.ones(V - 1)}, "`counts` must have shape"),
    ({"tree": "huffman", "counts": np.r_[np.ones(V - 1), np.nan]}, "`counts` has NaN"),
    ({"tree": "huffman", "counts": np.r_[np.ones(V - 1), -2.0]}, "`counts` has negative"),
    ({"tree": "balanced", "counts": np.ones(V)}, "only used with"),
    ({"tree": trees.balanced_tree(V + 1)}, "covers 38 classes"),
    ({"tree": "octree"}, "`tree` must be"),
    ({"tree": 3}, "`tree` must be"),
    ({"tree": "balanced", "top_k": V + 1}, "`top_k`"),
    ({"tree": "balanced", "top_k": 0}, "`top_k`"),
])
def test_bad_constructor_args(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfs.layers.HierarchicalSoftmax(V, **kwargs)


def test_bad_num_classes():
    for bad in (1, 0, "10", 2.0):
        with pytest.raises(ValueError, match="num_classes"):
            tfs.layers.HierarchicalSoftmax(bad, tree="balanced")


def test_zero_counts_are_fine():
    counts = np.zeros(V)
    counts[:5] = [10, 5, 3, 0, 1]
    layer = tfs.layers.HierarchicalSoftmax(V, tree="huffman", counts=counts)
    lp = layer.log_prob(_inputs()).numpy()
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-5)


def test_saved_model_served_without_tf_sampling(tmp_path):
    layer = _head(_make_tree("huffman"))
    archive = keras.export.ExportArchive()
    archive.track(layer)
    spec = [tf.TensorSpec([None, DIM], tf.float32, name="x")]
    archive.add_endpoint("log_prob", lambda t: layer.log_prob(t), input_signature=spec)
    archive.add_endpoint("top_k", lambda t: layer.top_k(t, 5), input_signature=spec)
    path = str(tmp_path / "export")
    archive.write_out(path, verbose=False)
    x = _inputs(n=17, seed=11)
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import os, sys
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import numpy as np
        import tensorflow as tf
        m = tf.saved_model.load({path!r})
        x = tf.constant(np.load({str(tmp_path / 'x.npy')!r}))
        v, i = m.top_k(x)
        np.savez({str(tmp_path / 'out.npz')!r}, lp=m.log_prob(x).numpy(), v=v.numpy(),
                 i=i.numpy())
        assert "tf_sampling" not in sys.modules, "tf_sampling was imported"
    """)
    proc = _helpers.run_clean(script, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_allclose(out["lp"], layer.log_prob(x).numpy(), atol=1e-6)
    values, ids = layer.top_k(x, 5)
    np.testing.assert_array_equal(out["i"], ids.numpy())
    np.testing.assert_allclose(out["v"], values.numpy(), atol=1e-6)

"""Chunked exact softmax: loss, log-sum-exp, top-k and FullSoftmax without [batch, V].

References are the unchunked computations: a float64 NumPy softmax over the same weights,
`tf.math.top_k` of the full log-probabilities, and `Dense` + sparse categorical
cross-entropy under `GradientTape`. Random normal weights make ties between logits
improbable (probability ~0 for continuous draws), so the top-k ids must match exactly.

Tolerances: the chunked log-sum-exp sums the same exp terms in a different order and
rescales partial sums by exp(m - m'), so it differs from a float32 full log-softmax by a
few float32 ulps of the result (|lse| < 20 here, ulp ~2e-6): atol 1e-5 (rtol 1e-5 for the
gradients, whose sums over the batch reorder the same way).
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs
import _background
from _helpers import without_package
from tf_sampling import _chunked

V, D, B = 300, 6, 9
TOL = dict(rtol=1e-5, atol=1e-5)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _np_reference(x, w, b):
    logits = x.astype(np.float64) @ w.astype(np.float64).T + b
    m = logits.max(1, keepdims=True)
    lse = np.log(np.exp(logits - m).sum(1)) + m[:, 0]
    return logits, lse


def _data(seed=0, v=V):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(v, D)).astype(np.float32)
    b = rng.normal(size=v).astype(np.float32)
    x = rng.normal(size=(B, D)).astype(np.float32)
    y = rng.integers(0, v, (B, 2))
    return x, w, b, y


# 7 does not divide V; V itself is one chunk; 1000 > V; None is the automatic size.
@pytest.mark.parametrize("chunk_size", [7, 64, V, 1000, None])
@pytest.mark.parametrize("splits", [[V], [100, 200], [1, 150, 149]])
def test_chunked_equals_unchunked(chunk_size, splits):
    x, w, b, y = _data()
    logits, lse = _np_reference(x, w, b)
    cuts = np.cumsum([0] + splits)
    kernels = [tf.Variable(w[a:c]) for a, c in zip(cuts[:-1], cuts[1:])]
    biases = [tf.constant(b[a:c]) for a, c in zip(cuts[:-1], cuts[1:])]
    got = _chunked.softmax_stats(tf.constant(x), kernels, biases, chunk_size=chunk_size)
    np.testing.assert_allclose(got, lse, **TOL)
    nll = _chunked.nll(tf.constant(x), y, kernels, biases, chunk_size=chunk_size)
    want = lse - logits[np.arange(B)[:, None], y].mean(1)
    np.testing.assert_allclose(nll, want, **TOL)
    for k in (1, 5, 12):
        values, ids = _chunked.top_k(tf.constant(x), kernels, biases, k=k,
                                     chunk_size=chunk_size)
        order = np.argsort(-logits, 1, kind="stable")[:, :k]
        np.testing.assert_array_equal(ids, order)
        np.testing.assert_allclose(values, np.take_along_axis(logits, order, 1)
                                   - lse[:, None], **TOL)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_block_maxima_top_k_is_exact_with_ties(k, jit, monkeypatch):
    """Chunks of 20 blocks of 128 classes take the block-maxima path (k <= 7 < 20 / 2).
    The kernel repeats 40 rows, so logits are tied across blocks and within them: the
    ids must still be those of `tf.math.top_k` (lower id first among equals), with and
    without XLA."""
    monkeypatch.setattr(_chunked, "JIT_MIN_ROWS", 1 if jit else 2 ** 40)
    rng = np.random.default_rng(k)
    # Small integers: every dot product is exact in float32, so equal rows tie exactly
    # in any summation order.
    distinct = rng.integers(-3, 4, size=(40, 4)).astype(np.float32)
    # Rows drawn with probabilities from 1/40^2 to 1: some values have one or two copies,
    # others hundreds, so the k-th best value is often tied across blocks whose maxima
    # differ (the case that needs the chosen blocks read in block order).
    p = 1.0 / rng.permutation(np.arange(1, 41)) ** 2
    kernel = tf.constant(distinct[rng.choice(40, 5000, p=p / p.sum())])
    bias = tf.constant(np.zeros(5000, np.float32))
    x = tf.constant(rng.integers(-2, 3, size=(9, 4)).astype(np.float32))
    assert 2560 % _chunked.TOP_K_BLOCK == 0 and 2560 // _chunked.TOP_K_BLOCK > 2 * k
    values, ids = _chunked.top_k(x, [kernel], [bias], k=k, chunk_size=2560)
    want = tf.math.top_k(tf.nn.log_softmax(tf.matmul(x, kernel, transpose_b=True)), k)
    np.testing.assert_array_equal(ids, want.indices)
    np.testing.assert_allclose(values, want.values, rtol=1e-6, atol=1e-6)


def test_chunk_size_is_automatic_and_bounded():
    # 2 MiB (64 MiB for top-k) per [batch, chunk] float32 tensor, a multiple of 256, at
    # most the rows.
    assert _chunked.chunk_size_for(1024, 10 ** 7) == 512
    assert _chunked.chunk_size_for(1024, 10 ** 7, top_k=True) == 16384
    assert _chunked.chunk_size_for(None, 10 ** 7, top_k=True) == 8192
    assert _chunked.chunk_size_for(10 ** 6, 10 ** 7) == 256
    assert _chunked.chunk_size_for(1, 1000) == 1000
    assert _chunked.chunk_size_for(1024, 10 ** 7, chunk_size=300) == 300
    # Inference outputs: full log-probs up to 2^16 classes, the top 10 above.
    assert _chunked.output_top_k("auto", 2 ** 16) is None
    assert _chunked.output_top_k("auto", 2 ** 16 + 1) == 10
    assert _chunked.output_top_k(None, 10 ** 7) is None
    assert _chunked.output_top_k(3, 10 ** 7) == 3


def _head(kind, **kw):
    if kind == "sampled":
        return tfs.layers.SampledSoftmax(V, 5, chunk_size=64, **kw)
    if kind == "nce":
        return tfs.layers.NCE(V, 5, chunk_size=64, num_shards=2, **kw)
    if kind == "candidate":
        return tfs.layers.CandidateSoftmax(V, chunk_size=64, kernel_initializer="random_normal",
                                           bias_initializer="random_normal", **kw)
    return tfs.layers.FullSoftmax(V, chunk_size=64, bias_initializer="random_normal", **kw)


@pytest.mark.parametrize("kind", ["sampled", "nce", "candidate", "full"])
def test_heads_use_the_chunked_path(kind):
    x, _, _, y = _data(1)
    y = y[:, 0]
    head = _head(kind, top_k=None)
    head.build(x.shape)
    if kind in ("sampled", "nce"):
        for s in head.bias_shards:
            s.assign(np.random.default_rng(2).normal(size=s.shape))
    w = keras.ops.convert_to_numpy(head.kernel)
    b = keras.ops.convert_to_numpy(head.bias)
    logits, lse = _np_reference(x, w, b)
    nll = lse - logits[np.arange(B), y]
    np.testing.assert_allclose(head.full_softmax_loss(x, y), nll, **TOL)
    assert head.perplexity(x, y, batch_size=4) == pytest.approx(np.exp(nll.mean()), rel=1e-5)
    values, ids = head.top_k(x, 4)
    order = np.argsort(-logits, 1)[:, :4]
    np.testing.assert_array_equal(ids, order)
    np.testing.assert_allclose(values, np.take_along_axis(logits, order, 1) - lse[:, None],
                               **TOL)
    ref_v, ref_i = tf.math.top_k(head.log_prob(x), 4)
    np.testing.assert_array_equal(ids, ref_i)
    if kind != "candidate":
        head([x, y], training=False)
        np.testing.assert_allclose(head.losses[-1], nll.mean(), **TOL)
        # [batch, time, dim] inputs.
        seq_v, seq_i = head.top_k(x[:8].reshape(2, 4, D), 4)
        np.testing.assert_array_equal(seq_i, order[:8].reshape(2, 4, 4))


@pytest.mark.parametrize("kind", ["sampled", "candidate", "full"])
def test_auto_top_k_above_the_size_threshold(kind):
    v = _chunked.AUTO_FULL_MAX_CLASSES + 1
    x = np.random.default_rng(3).normal(size=(4, D)).astype(np.float32)
    # Unit-variance weights: the top 10 of 65537 logits are then ~1e-2 apart, far from
    # float32 near-ties.
    init = keras.initializers.RandomNormal(stddev=1.0, seed=1)
    if kind == "sampled":
        head = tfs.layers.SampledSoftmax(v, 5, kernel_initializer=init)
    elif kind == "candidate":
        head = tfs.layers.CandidateSoftmax(v, kernel_initializer=init)
    else:
        head = tfs.layers.FullSoftmax(v, kernel_initializer=init)
    out = head(x)
    assert isinstance(out, tuple) and out[1].shape == (4, _chunked.AUTO_TOP_K)
    np.testing.assert_array_equal(out[1], tf.math.top_k(head.log_prob(x), 10).indices)
    assert head.compute_output_spec(keras.KerasTensor((None, D)))[1].shape == (None, 10)
    full = head.__class__.from_config({**head.get_config(), "top_k": None})
    full.build(x.shape)
    assert full(x).shape == (4, v)
    if kind != "candidate":
        # Given labels, the output is the per-example loss (the training call's structure).
        spec = head.compute_output_spec([keras.KerasTensor((None, D)),
                                         keras.KerasTensor((None,), dtype="int32")])
        assert spec.shape == (None,)
        y = np.arange(4)
        np.testing.assert_allclose(head([x, y], training=False),
                                   head.full_softmax_loss(x, y), **TOL)


def test_full_softmax_loss_and_gradients_equal_dense_cross_entropy():
    x, _, _, y = _data(4)
    y = y[:, 0]
    head = tfs.layers.FullSoftmax(V, chunk_size=48, bias_initializer="random_normal")
    head.build(x.shape)
    dense = keras.layers.Dense(V)
    dense.build(x.shape)
    dense.kernel.assign(tf.transpose(head.kernel))
    dense.bias.assign(head.bias)
    xt = tf.constant(x)
    scale = tf.range(1.0, B + 1)  # a non-uniform upstream gradient
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        got = head([xt, y], training=True)
        want = keras.losses.sparse_categorical_crossentropy(y, dense(xt), from_logits=True)
        got_s, want_s = tf.reduce_sum(got * scale), tf.reduce_sum(want * scale)
    np.testing.assert_allclose(got, want, **TOL)
    np.testing.assert_allclose(head.losses[0], tf.reduce_mean(want), **TOL)
    gx, gk, gb = tape.gradient(got_s, [xt, head.kernel, head.bias])
    dx, dk, db = tape.gradient(want_s, [xt, dense.kernel, dense.bias])
    np.testing.assert_allclose(gx, dx, **TOL)
    np.testing.assert_allclose(gk, tf.transpose(dk), **TOL)
    np.testing.assert_allclose(gb, db, **TOL)


def test_full_softmax_graph_has_no_batch_by_classes_tensor(monkeypatch):
    # Unfused (the XLA path compiles the same Python code), so the ops are in the graph.
    monkeypatch.setattr(_chunked, "JIT_COMPILE", False)
    head = tfs.layers.FullSoftmax(V, chunk_size=64)
    head.build((B, D))

    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(head([x, y], training=True))
        return tape.gradient(loss, head.trainable_variables)

    graph = tf.function(step).get_concrete_function(
        tf.TensorSpec([B, D]), tf.TensorSpec([B], tf.int32)).graph
    shapes = [tuple(t.shape) for op in graph.get_operations() for t in op.outputs
              if t.dtype.is_floating and t.shape.rank == 2]
    # The kernel gradient and the chunks' logits are there: the check below sees the graph.
    assert (V, D) in shapes and (B, V % 64) in shapes
    assert (B, V) not in shapes and (V, B) not in shapes


def test_full_softmax_fit_evaluate_config_and_keras_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(5)
    xs = rng.normal(size=(256, D)).astype(np.float32)
    ys = (np.abs(xs[:, 0] * 40).astype(np.int64) % V).astype(np.int32)
    inp = keras.Input((D,), name="x")
    lab = keras.Input((), dtype="int32", name="y")
    hidden = keras.layers.Dense(16, activation="tanh")(inp)
    head = tfs.layers.FullSoftmax(V, chunk_size=100, top_k=3, name="head")
    model = keras.Model([inp, lab], head([hidden, lab]))
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    first = model.evaluate([xs, ys], verbose=0, batch_size=64)
    model.fit([xs, ys], epochs=3, batch_size=64, verbose=0)
    last = model.evaluate([xs, ys], verbose=0, batch_size=64)
    assert last < first - 0.5
    h = keras.Model(inp, hidden)(xs)
    assert last == pytest.approx(float(np.mean(head.full_softmax_loss(h, ys))), rel=1e-4)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    lhead = loaded.get_layer("head")
    assert lhead.get_config() == head.get_config()
    assert lhead.chunk_size == 100 and lhead.default_top_k == 3
    np.testing.assert_array_equal(lhead.kernel, head.kernel)
    # Given labels, a top-k head returns the exact per-example loss (fit's structure).
    np.testing.assert_allclose(loaded.predict([xs[:8], ys[:8]], verbose=0),
                               head.full_softmax_loss(h[:8], ys[:8]), **TOL)
    values, ids = lhead.top_k(h[:8], 3)
    np.testing.assert_array_equal(ids, tf.math.top_k(head.log_prob(h[:8]), 3).indices)


_SHARDED = textwrap.dedent(r"""
    import contextlib, json, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import tf_sampling as tfs
    from tf_sampling import _chunked
    V, D, B, K = 1000, 6, 8, 3
    head = tfs.layers.SampledSoftmax(V, 5, num_shards=2, shard_devices=["/cpu:0", "/cpu:1"],
                                     chunk_size=64, bias_initializer="random_normal")
    ref = tfs.layers.SampledSoftmax(V, 5, chunk_size=64)
    x = tf.random.stateless_normal([B, D], seed=[1, 2])
    y = tf.range(B) * 97
    head.build(x.shape); ref.build(x.shape)
    ref.kernel.assign(head.kernel); ref.bias.assign(head.bias)
    fn = tf.function(lambda x, y: (head.full_softmax_loss(x, y), head.top_k(x, K)))
    (loss, (values, ids)) = fn(x, y)
    # The chunk loops, and (where the compiled ops load on this CPU-only machine) the
    # fused op that replaces them for this head: both must run on each shard's device.
    chunk_ops, unplaced = {}, []
    for fused in (True, False):
        with contextlib.ExitStack() as stack:
            if not fused:
                stack.enter_context(_chunked.no_fused_ops())
            graph = tf.function(lambda x, y: (head.full_softmax_loss(x, y),
                                              head.top_k(x, K))).get_concrete_function(x, y).graph
        chunk_ops[str(fused)] = sorted({(op.type, op.device) for op in graph.get_operations()
                                        if op.type in ("While", "MatMul",
                                                       "TfSampling>SoftmaxStats")})
        # Float tensors with a class dimension (a chunk, 52 the last chunk of a 500-row
        # shard, or a shard) produced outside the shards' device scopes.
        unplaced += [tuple(t.shape) for op in graph.get_operations() if not op.device
                     for t in op.outputs if t.dtype.is_floating and t.shape.rank == 2
                     and t.shape[1] in (64, 52, 500, V)]
    ref_v, ref_i = ref.top_k(x, K)
    print("RESULT " + json.dumps({
        "devices": [v.value.device[-5:] for v in head.kernel_shards],
        "chunk_ops": chunk_ops, "unplaced": unplaced,
        "fused_available": _chunked._fused_op.available(),
        "loss_err": float(np.abs(loss - ref.full_softmax_loss(x, y)).max()),
        "value_err": float(np.abs(values - ref_v).max()),
        "ids_equal": bool(np.array_equal(ids, ref_i)),
        "ids_full": bool(np.array_equal(ids, tf.math.top_k(ref.log_prob(x), K).indices))}))
""")


def _run(script, *args, timeout=240):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


_background.register("sharded_partials", lambda: _run(_SHARDED))


@pytest.mark.background("sharded_partials")
def test_sharded_partials_are_computed_where_each_shard_lives():
    out = _background.result("sharded_partials")
    assert out["devices"] == ["CPU:0", "CPU:1"]
    both = {"/device:CPU:0", "/device:CPU:1"}
    loops = out["chunk_ops"]["False"]
    assert {d for t, d in loops if t == "While"} == both, loops
    fused = out["chunk_ops"]["True"]
    kind = "TfSampling>SoftmaxStats" if out["fused_available"] else "While"
    assert {d for t, d in fused if t == kind} == both, fused
    assert out["unplaced"] == []
    assert out["loss_err"] < 1e-5 and out["value_err"] < 1e-5  # float32 ulps, see top
    assert out["ids_equal"] and out["ids_full"]


_MEMORY = textwrap.dedent(r"""
    import json, resource, sys, numpy as np, tensorflow as tf, keras
    import tf_sampling as tfs
    V, D, BATCH, SUB = 3_000_000, 8, 1024, 32
    keras.utils.set_random_seed(0)
    inp = keras.Input((D,), name="x")
    lab = keras.Input((), dtype="int32", name="y")
    head = tfs.layers.SampledSoftmax(
        V, 16, sampler="uniform", name="head",
        kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=2))
    # No labels: top_k="auto" gives the top 10. Built first: Keras' functional check of
    # a model reads the outputs of the layer's first call, and given labels a top-k head
    # returns one tensor (the per-example loss), not two.
    infer = keras.Model(inp, head(inp))
    model = keras.Model([inp, lab], head([inp, lab]))
    model.compile(optimizer="sgd")
    rng = np.random.default_rng(0)
    # One batch of 1024 rows: SUB distinct examples, each 32 times, so the batch's mean
    # loss is the mean over the SUB examples, which NumPy computes exactly.
    xs = rng.normal(size=(SUB, D)).astype(np.float32)
    ys = rng.integers(0, V, SUB).astype(np.int32)
    x, y = np.tile(xs, (BATCH // SUB, 1)), np.tile(ys, BATCH // SUB)
    loss = model.evaluate([x, y], batch_size=BATCH, verbose=0)
    values, ids = infer.predict(x, batch_size=BATCH, verbose=0)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    # NumPy float64 reference, 500k classes at a time.
    w, b = head.kernel.numpy(), head.bias.numpy()
    x64 = xs.astype(np.float64)
    m, s, cand_ids, cand_sc = np.full(SUB, -np.inf), np.zeros(SUB), [], []
    for lo in range(0, V, 500_000):
        lg = x64 @ w[lo:lo + 500_000].T.astype(np.float64) + b[lo:lo + 500_000]
        m2 = np.maximum(m, lg.max(1))
        s = s * np.exp(m - m2) + np.exp(lg - m2[:, None]).sum(1)
        m = m2
        idx = np.argpartition(-lg, 10, 1)[:, :10]
        cand_ids.append(idx + lo)
        cand_sc.append(np.take_along_axis(lg, idx, 1))
    lse = m + np.log(s)
    cand_ids, cand_sc = np.concatenate(cand_ids, 1), np.concatenate(cand_sc, 1)
    order = np.argsort(-cand_sc, 1)[:, :10]
    nll = lse - ((x64 * w[ys]).sum(1) + b[ys])
    print("RESULT " + json.dumps({
        "peak_gb": peak_gb, "loss": float(loss), "ref": float(nll.mean()),
        "ids_shape": list(ids.shape),
        "ids_equal": bool(np.array_equal(ids[:SUB], np.take_along_axis(cand_ids, order, 1))),
        "value_err": float(np.abs(values[:SUB] - (np.take_along_axis(cand_sc, order, 1)
                                                   - lse[:, None])).max())}))
""")


# The child runs beside the other tests (tests/_background.py); its peak RSS is its own.
_background.register("memory_3e6", lambda: _run(_MEMORY, timeout=400))


@pytest.mark.background("memory_3e6")
def test_evaluate_and_predict_at_3e6_classes_in_bounded_memory():
    out = _background.result("memory_3e6")
    # Logits for a batch of 1024 at V=3e6 are 12 GB (24 GB with their log-softmax);
    # the weights (0.1 GB), TF's runtime and the chunks need well under 2.5 GB.
    assert out["peak_gb"] < 2.5, out
    assert out["ids_shape"] == [1024, 10]
    assert out["ids_equal"], out
    # float32: |logits| and |lse| below ~30 here, a few ulps (2e-6 each) of error.
    assert out["value_err"] < 3e-5, out
    assert out["loss"] == pytest.approx(out["ref"], rel=1e-5)


_SERVE = without_package(r"""
    import json, resource, sys
    import numpy as np
    import tensorflow as tf
    path = sys.argv[1]
    served = tf.saved_model.load(path).signatures["serving_default"]
    data = np.load(path + ".npz")
    out = served(x=tf.constant(data["x"]))
    print("RESULT " + json.dumps({
        "ids": out["top_k_ids"].numpy().tolist(),
        "values": out["top_k_log_probs"].numpy().tolist(),
        "keys": sorted(out),
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}))
""")


def test_export_serves_the_chunked_top_k_in_a_clean_process(tmp_path):
    v = 100_000
    inp = keras.Input((D,), name="x")
    lab = keras.Input((), dtype="int32", name="y")
    hidden = keras.layers.Dense(D)(inp)
    head = tfs.layers.SampledSoftmax(v, 8, chunk_size=4096, name="head",
                                     kernel_initializer="random_normal")
    model = keras.Model([inp, lab], head([hidden, lab]))
    path = str(tmp_path / "m" / "1")
    fn = tfs.serving.export(path, model, top_k=5)
    x = np.random.default_rng(6).normal(size=(16, D)).astype(np.float32)
    np.savez(path + ".npz", x=x)
    graph = tf.function(fn).get_concrete_function(tf.TensorSpec([None, D])).graph
    assert not [t for op in graph.get_operations() for t in op.outputs
                if t.shape.rank == 2 and t.shape[1] == v]
    served = _run(_SERVE, path)
    assert served["keys"] == ["top_k_ids", "top_k_log_probs"]
    h = tfs.serving.inference_parts(model)[0](x)
    ref_v, ref_i = tf.math.top_k(head.log_prob(h), 5)
    np.testing.assert_array_equal(served["ids"], ref_i)
    np.testing.assert_allclose(served["values"], ref_v, **TOL)


def test_serving_function_uses_the_heads_own_top_k(monkeypatch):
    # The exported function must use AdaptiveSoftmax's pruned search (its `top_k`),
    # not the full log-probabilities.
    inp = keras.Input((D,))
    features = keras.Model(inp, keras.layers.Dense(D)(inp))
    head = tfs.layers.AdaptiveSoftmax(V, [20, 100], div_value=2.0)
    x = np.random.default_rng(7).normal(size=(5, D)).astype(np.float32)
    h = features(x)
    want_v, want_i = tf.math.top_k(head.log_prob(h), 4)

    def no_full(inputs):
        raise AssertionError("the serving function built the full log-probabilities")

    monkeypatch.setattr(head, "log_prob", no_full)
    out = tfs.serving.serving_function(features, head, top_k=4)(tf.constant(x))
    np.testing.assert_array_equal(out["top_k_ids"], want_i)
    np.testing.assert_allclose(out["top_k_log_probs"], want_v, **TOL)

"""The fused log-normaliser op (TfSampling>SoftmaxStats, custom_ops/cc/kernels/softmax_stats.h).

Reference: a float64 NumPy log-sum-exp of the same float32 inputs. Tolerance: each float32
logit is a sum of `dim` products, off by at most about dim * 2^-24 * sum|x_k w_k| (below
1e-6 for the sizes here, |logit| < 40); the vectorised exp is within 2 ulp (relative
2.4e-7) of exp, so the log of the sum moves by under 3e-7 more. atol 1e-5 leaves a margin
of about 10x; dropping one class, or one tile's rescaling, moves the result by far more
than that (the tests with a dominant class and with shifted tiles check it).
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs
import _background
from tf_sampling import _chunked
from tf_sampling.ops import _loader
from tf_sampling.ops import softmax as fused

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATOL = 1e-5

pytestmark = pytest.mark.skipif(not fused.available(),
                                reason="the fused op needs the compiled ops on a CPU-only machine")
# The heads use the op only where its AVX2+FMA loop runs.
needs_fast = pytest.mark.skipif(not fused.fast(), reason="the heads use the op on AVX2+FMA CPUs")


def _reference(x, w, b=None):
    logits = x.astype(np.float64) @ w.astype(np.float64).T
    if b is not None:
        logits += b
    m = logits.max(1, keepdims=True)
    return np.log(np.exp(logits - m).sum(1)) + m[:, 0]


def _data(batch, classes, dim, seed, scale=1.0, bias=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, dim)).astype(np.float32)
    w = (rng.normal(size=(classes, dim)) * scale / np.sqrt(dim)).astype(np.float32)
    b = rng.normal(size=classes).astype(np.float32) if bias else None
    return x, w, b


# Batches and class counts off the micro-kernel's 6 x 16 block and the tiles (512 classes
# at dim 16), several task splits (1024 rows, up to 32768 classes per task), dims from 1 to
# above one tile's width.
@pytest.mark.parametrize("batch,classes,dim,bias", [
    (1, 1, 1, False), (3, 17, 5, True), (9, 300, 6, True), (4, 16, 16, False),
    (1030, 300, 16, True), (70, 40000, 8, True), (5, 70000, 3, False),
    (6, 2000, 100, True), (2, 700, 1100, True)])
def test_equals_a_float64_reference(batch, classes, dim, bias):
    x, w, b = _data(batch, classes, dim, seed=batch * 7 + classes, scale=3.0, bias=bias)
    got = fused.log_normalizer(tf.constant(x), tf.constant(w),
                               None if b is None else tf.constant(b)).numpy()
    np.testing.assert_allclose(got, _reference(x, w, b), rtol=0, atol=ATOL)


@pytest.mark.parametrize("batch,classes,dim,k", [
    (1, 1, 1, 1), (3, 17, 5, 17), (9, 300, 6, 5), (70, 40000, 8, 10), (5, 70000, 3, 100)])
def test_top_k_equals_tf_top_k(batch, classes, dim, k):
    x, w, b = _data(batch, classes, dim, seed=classes + k, scale=3.0)
    lse, values, ids = fused.softmax_stats(tf.constant(x), tf.constant(w), tf.constant(b), k=k)
    logits = tf.constant(x) @ tf.constant(w).numpy().T + b
    want_v, want_i = tf.math.top_k(logits, k)
    np.testing.assert_array_equal(ids.numpy(), want_i.numpy())
    np.testing.assert_allclose(values.numpy(), want_v.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(lse.numpy(), _reference(x, w, b), rtol=0, atol=ATOL)


def test_top_k_ties_go_to_the_lower_id_across_tiles_and_tasks():
    # Equal logits everywhere (zero weights): tf.math.top_k returns ids 0..k-1; with a few
    # classes raised, they come first, in id order among equals. 70000 classes: several
    # class ranges (tasks) and tiles.
    x = np.ones((4, 8), np.float32)
    w = np.zeros((70000, 8), np.float32)
    b = np.zeros(70000, np.float32)
    b[[69999, 40000, 5]] = 1.0
    b[33000] = 2.0
    _, values, ids = fused.softmax_stats(tf.constant(x), tf.constant(w), tf.constant(b), k=6)
    np.testing.assert_array_equal(ids.numpy(), [[33000, 5, 40000, 69999, 0, 1]] * 4)
    np.testing.assert_array_equal(values.numpy(), [[2, 1, 1, 1, 0, 0]] * 4)
    # -inf classes never enter: fewer than k finite classes leave (-inf, -1) slots.
    b[:] = -np.inf
    b[[7, 3]] = 0.5
    _, values, ids = fused.softmax_stats(tf.constant(x), tf.constant(w), tf.constant(b), k=4)
    np.testing.assert_array_equal(ids.numpy(), [[3, 7, -1, -1]] * 4)
    assert np.all(values.numpy()[:, 2:] == -np.inf)


@needs_fast
def test_head_top_k_uses_the_op_but_exports_without_it(tmp_path):
    v, d = 5000, 8
    head = tfs.layers.SampledSoftmax(v, 16, num_shards=2, kernel_initializer="random_normal",
                                     bias_initializer="random_normal")
    x = tf.constant(np.random.default_rng(9).normal(size=(10, d)).astype(np.float32))
    head(x)
    fn = tf.function(lambda x: head.top_k(x, 7))
    ops = {op.type for op in fn.get_concrete_function(x).graph.get_operations()}
    assert "TfSampling>SoftmaxStats" in ops
    got_v, got_i = fn(x)
    w = np.concatenate([k.numpy() for k in head.kernel_shards])
    logp = tf.nn.log_softmax(x @ w.T + np.concatenate([b.numpy() for b in head.bias_shards]))
    want_v, want_i = tf.math.top_k(logp, 7)
    np.testing.assert_array_equal(got_i.numpy(), want_i.numpy())
    np.testing.assert_allclose(got_v.numpy(), want_v.numpy(), rtol=0, atol=ATOL)
    serve = tf.function(tfs.serving.serving_function(lambda x, training: x, head, top_k=7))
    ops = {op.type for op in serve.get_concrete_function(x).graph.get_operations()}
    assert not any(op.startswith("TfSampling") for op in ops), ops
    np.testing.assert_array_equal(serve(x)["top_k_ids"].numpy(), want_i.numpy())


def test_heads_keep_the_chunk_loop_without_the_vectorised_path(monkeypatch):
    # The portable loop is slower than XLA's: TF_SAMPLING_NO_AVX2=1 (as on a CPU without
    # AVX2 or FMA) leaves the heads on the chunk loop, with the same results.
    head = tfs.layers.SampledSoftmax(3000, 16, bias_initializer="random_normal")
    x = tf.constant(np.random.default_rng(10).normal(size=(6, 8)).astype(np.float32))
    y = tf.constant([0, 5, 2999, 7, 100, 42])
    head(x)
    graphs = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("TF_SAMPLING_NO_AVX2", flag)
        fn = tf.function(lambda x, y: head.full_softmax_loss(x, y))
        ops = {op.type for op in fn.get_concrete_function(x, y).graph.get_operations()}
        graphs[flag] = ("TfSampling>SoftmaxStats" in ops, fn(x, y).numpy(), fused.fast())
    assert graphs["1"][0] is False and graphs["1"][2] is False
    assert graphs["0"][0] is graphs["0"][2]
    np.testing.assert_allclose(graphs["0"][1], graphs["1"][1], rtol=0, atol=ATOL)


def test_stable_for_large_logits_and_a_dominant_class():
    # Logits near 80 overflow exp in float32 without the running maximum; one class far
    # above the rest in the last tile forces every earlier partial sum to be rescaled.
    x, w, b = _data(8, 5000, 16, seed=3, scale=1.0)
    b = b + 80.0
    b[4999] = 120.0
    got = fused.log_normalizer(tf.constant(x), tf.constant(w), tf.constant(b)).numpy()
    np.testing.assert_allclose(got, _reference(x, w, b), rtol=0, atol=ATOL)
    # The dominant class alone gives lse ~ its logit; the rest adds ~exp(-40) relative.
    logit = x @ w[4999] + b[4999]
    np.testing.assert_allclose(got, logit, rtol=0, atol=1e-4)


def test_minus_inf_bias_and_nan():
    x, w, b = _data(3, 600, 8, seed=4)
    b[:300] = -np.inf  # classes that can never be chosen
    got = fused.log_normalizer(tf.constant(x), tf.constant(w), tf.constant(b)).numpy()
    np.testing.assert_allclose(got, _reference(x[:, :], w[300:], b[300:]), rtol=0, atol=ATOL)
    b[:] = -np.inf
    got = fused.log_normalizer(tf.constant(x), tf.constant(w), tf.constant(b)).numpy()
    assert np.all(got == -np.inf)
    x[1, 0] = np.nan
    b = np.zeros(600, np.float32)
    got = fused.log_normalizer(tf.constant(x), tf.constant(w), tf.constant(b)).numpy()
    assert np.isnan(got[1]) and np.all(np.isfinite(got[[0, 2]]))


def test_bad_shapes_are_invalid_argument():
    op = _loader.LIBRARY.get().tf_sampling_softmax_stats
    x = tf.zeros([2, 4])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="kernel is"):
        op(x, tf.zeros([5, 3]), tf.zeros([0]))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="bias"):
        op(x, tf.zeros([5, 4]), tf.zeros([4]))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="rank|matrix|batch"):
        op(tf.zeros([4]), tf.zeros([5, 4]), tf.zeros([0]))
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="larger than"):
        op(x, tf.zeros([5, 4]), tf.zeros([0]), k=6)
    assert op(tf.zeros([0, 4]), tf.zeros([5, 4]), tf.zeros([0]), k=2)[2].shape == [0, 2]


def test_gradient_equals_the_chunked_path():
    """`nll(fused=True)`'s gradient (the chunked backward pass) against the XLA chunk path."""
    x, w, b = _data(6, 900, 8, seed=5, scale=2.0)
    labels = np.array([[0], [5], [899], [300], [7], [42]])
    out = []
    for fuse in (True, False):
        xv, wv, bv = tf.Variable(x), tf.Variable(w), tf.Variable(b)
        with tf.GradientTape() as tape:
            loss = _chunked.nll(xv, labels, [wv], [bv], chunk_size=256, fused=fuse)
            total = tf.reduce_sum(loss * tf.range(1.0, 7.0))
        grads = tape.gradient(total, [xv, wv, bv])
        out.append([loss.numpy()] + [tf.convert_to_tensor(g).numpy() for g in grads])
    for got, want in zip(*out):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=ATOL)


@needs_fast
def test_sampled_head_evaluation_uses_the_op_and_matches_the_reference():
    v, d = 5000, 8
    head = tfs.layers.SampledSoftmax(v, 16, num_shards=2, kernel_initializer="random_normal",
                                     bias_initializer="random_normal")
    x = tf.constant(np.random.default_rng(6).normal(size=(10, d)).astype(np.float32))
    y = tf.constant(np.arange(10) * 401 % v)
    head([x, y])
    fn = tf.function(lambda x, y: head.full_softmax_loss(x, y))
    ops = {op.type for op in fn.get_concrete_function(x, y).graph.get_operations()}
    assert "TfSampling>SoftmaxStats" in ops
    w = np.concatenate([k.numpy() for k in head.kernel_shards])
    b = np.concatenate([k.numpy() for k in head.bias_shards])
    want = _reference(x.numpy(), w, b) - (np.sum(x.numpy() * w[y.numpy()], 1) + b[y.numpy()])
    np.testing.assert_allclose(fn(x, y).numpy(), want, rtol=0, atol=ATOL)


_PATHS = textwrap.dedent(r"""
    import sys
    import numpy as np
    import tensorflow as tf
    threads = int(sys.argv[1])
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    from tf_sampling.ops import softmax
    rng = np.random.default_rng(8)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    w = (rng.normal(size=(70000, 16)) * 0.7).astype(np.float32)
    b = rng.normal(size=70000).astype(np.float32)
    out = softmax.log_normalizer(tf.constant(x), tf.constant(w), tf.constant(b)).numpy()
    np.save(sys.argv[2], out)
""")


def _run_paths():
    """(one thread, the default pool, the portable path) results, in child processes."""
    tmp = _background.temp_dir("fused_lse")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_SAMPLING_NO_AVX2", None)
    out = []
    for i, (threads, extra) in enumerate([(1, {}), (0, {}), (0, {"TF_SAMPLING_NO_AVX2": "1"})]):
        path = os.path.join(tmp, f"{i}.npy")
        subprocess.run([sys.executable, "-c", _PATHS, str(threads), path], env=dict(env, **extra),
                       check=True, capture_output=True, timeout=300, cwd=ROOT)
        out.append(np.load(path))
    return out


_background.register("fused_lse_paths", _run_paths)


@pytest.mark.background("fused_lse_paths")
def test_threads_and_instruction_sets():
    """The fixed task split makes one thread and the default pool agree to the bit; the
    portable path (std::exp, no FMA) agrees with the AVX2 one to the tolerance above."""
    one, pool, portable = _background.result("fused_lse_paths")
    np.testing.assert_array_equal(one, pool)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    w = (rng.normal(size=(70000, 16)) * 0.7).astype(np.float32)
    b = rng.normal(size=70000).astype(np.float32)
    want = _reference(x, w, b)
    np.testing.assert_allclose(pool, want, rtol=0, atol=ATOL)
    np.testing.assert_allclose(portable, want, rtol=0, atol=ATOL)


_NO_COPY = textwrap.dedent(r"""
    import json, sys
    import numpy as np, keras
    import tf_sampling as tfs
    V, d = 4_000_000, 16
    c_in = keras.Input((), dtype="int32")
    y_in = keras.Input((), dtype="int32")
    head = tfs.layers.SampledSoftmax(V, 64, sampler="log_uniform")
    model = keras.Model([c_in, y_in], head([keras.layers.Embedding(100, d)(c_in), y_in]))
    model.compile(optimizer=tfs.optimizers.SparseAdam(1e-3))
    rng = np.random.default_rng(0)
    c = rng.integers(0, 100, 2048).astype(np.int32)
    y = rng.integers(0, V, 2048).astype(np.int32)
    model.fit([c, y], batch_size=1024, epochs=1, verbose=0)  # scatters: copy-on-read mode
    model.evaluate([c, y], batch_size=1024, verbose=0)  # traced once
    def status(key):
        return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak RSS to the current RSS
    before = status("VmRSS")
    model.evaluate([c, y], batch_size=1024, verbose=0)
    print("RESULT " + json.dumps({"extra": status("VmHWM") - before, "kernel": V * d * 4}))
""")


def _run_no_copy():
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _NO_COPY], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


_background.register("fused_lse_no_copy", _run_no_copy)


@pytest.mark.background("fused_lse_no_copy")
def test_evaluation_after_sparse_updates_does_not_copy_the_kernel():
    """A scatter-updated variable is in copy-on-read mode; the fused path's dense read
    must leave that mode first (and gather the true rows before it), or each evaluation
    batch copies the whole output layer (256 MB here)."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("needs Linux's /proc/self/clear_refs")
    out = _background.result("fused_lse_no_copy")
    assert out["extra"] < out["kernel"] / 4, out

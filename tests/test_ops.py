"""Alias-table ops (tf_sampling.ops): the compiled op and the pure-TF fallback, both paths.

Statistical tests use fixed seeds, so each either always passes or flags a real bias; the
bound for a chi-square statistic with df degrees of freedom is df + 6 * sqrt(2 df), which
a correct sampler exceeds with probability below 1e-6 (normal approximation).
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs
import _background
from _stats import assert_cells, chi2_bound, chi_square
from tf_sampling.ops import _alias_tf, _loader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORCED_FALLBACK = os.environ.get(_loader.ENV_FORCE_FALLBACK) == "1"


@pytest.fixture(params=["op", "tf"])
def use_op(request):
    """True: the compiled op; False: the pure-TF fallback."""
    if request.param == "op":
        if not tfs.ops.custom_ops_available():
            pytest.skip(f"custom ops unavailable: {_loader.LIBRARY.reason}")
        return True
    return False


def weight_cases():
    rng = np.random.default_rng(0)
    zipf = 1.0 / (1.0 + rng.permutation(5000))
    zipf[3::7] = 0.0
    return {
        "random_with_zeros": np.where(rng.random(1000) < 0.2, 0.0, rng.random(1000)),
        "zipf_float64": zipf,
        "large_counts_float64": np.floor(1e12 * rng.random(3000) ** 3),
        "exact_ties": np.tile([0.0, 2.0], 500),
        "single_nonzero": np.eye(1, 777, 300)[0],
        "all_equal": np.full(1000, 2.5),
        "one_class": np.array([3.0]),
        "wide_range": 10.0 ** rng.uniform(-30, 30, 2000),
    }


# ----------------------------------------------------------------------- the C++ header

def test_alias_table_header_standalone_test(tmp_path):
    """custom_ops/cc/kernels/alias_table_test.cc, compiled without TF and run: Philox
    known answers, sweep == split method bit for bit, table validity, errors, sampling
    chi-square, stream independent of chunking, unique-draw semantics."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path / "alias_table_test"
    cc = os.path.join(ROOT, "custom_ops", "cc")
    subprocess.run([cxx, "-O2", "-std=c++17", "-ffp-contract=off", "-I", cc,
                    os.path.join(cc, "kernels", "alias_table_test.cc"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all checks passed" in run.stdout


# ----------------------------------------------------------------------- loading

@pytest.mark.skipif(FORCED_FALLBACK, reason="TF_SAMPLING_PY_OPS=1")
def test_custom_ops_are_built_and_load():
    assert tfs.ops.custom_ops_available(), (
        f"{_loader.LIBRARY.reason} (build with `pip install -e .` or `make -C custom_ops`)")
    gpu_lib = _loader._find(_loader._HERE, _loader.LIBRARY.gpu_stem)
    if gpu_lib is not None:  # built where nvcc and a CUDA TensorFlow exist
        assert _loader.LIBRARY.gpu_loaded


def _fake_library(directory, content):
    path = os.path.join(directory, "_tf_sampling_ops.so")
    with open(path, "wb") as f:
        f.write(content)
    return path


@pytest.mark.parametrize("case", ["missing", "garbage", "other_patch", "other_tf_version"])
def test_unusable_library_warns_once_and_falls_back(tmp_path, monkeypatch, case):
    monkeypatch.delenv(_loader.ENV_FORCE_FALLBACK, raising=False)
    marker = f"TF_SAMPLING_BUILT_WITH_TF={tf.__version__};".encode()
    major_minor = ".".join(tf.__version__.split(".")[:2])
    if case == "garbage":  # right version marker, but not a shared library
        _fake_library(str(tmp_path), b"\x7fELF garbage " + marker)
    elif case == "other_patch":  # same major.minor: passes the version check, so it is
        # the load itself that fails here (the ABI is the minor version's)
        _fake_library(str(tmp_path),
                      f"\x7fELF garbage TF_SAMPLING_BUILT_WITH_TF={major_minor}.99;".encode())
    elif case == "other_tf_version":
        _fake_library(str(tmp_path), b"TF_SAMPLING_BUILT_WITH_TF=2.0.0;")
    lib = _loader.CustomOpLibrary(directory=str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert lib.get() is None
        assert lib.get() is None
    ours = [w for w in caught if issubclass(w.category, tfs.ops.CustomOpWarning)]
    assert len(ours) == 1, [str(w.message) for w in caught]
    expected = {"missing": "not found", "garbage": "loading", "other_patch": "loading",
                "other_tf_version": "2.0.0"}[case]
    message = str(ours[0].message)
    assert expected in message and "fallback" in message
    if case in ("missing", "other_tf_version"):  # the exact rebuild command
        assert "-m pip install --no-build-isolation --no-deps -e ." in message
        assert "make -C custom_ops PYTHON=" in message



def test_library_of_the_earlier_name_is_not_loaded(tmp_path, monkeypatch):
    """`_alias_ops.so` (the library's earlier name) has other op signatures: a directory
    holding only it falls back with one warning that names it and says how to build."""
    monkeypatch.delenv(_loader.ENV_FORCE_FALLBACK, raising=False)
    with open(tmp_path / "_alias_ops.cpython-311-x86_64-linux-gnu.so", "wb") as f:
        f.write(f"TF_SAMPLING_BUILT_WITH_TF={tf.__version__};".encode())
    lib = _loader.CustomOpLibrary(directory=str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert lib.get() is None
    ours = [str(w.message) for w in caught if issubclass(w.category, tfs.ops.CustomOpWarning)]
    assert len(ours) == 1, ours
    assert "_alias_ops.cpython-311-x86_64-linux-gnu.so" in ours[0]
    assert "earlier version" in ours[0] and "make -C custom_ops PYTHON=" in ours[0]
    assert lib.path is None

def test_runtime_requirement_is_the_build_minor_version():
    # The op is built in pip's isolated environment against the build requirement; it
    # loads only in the same TF minor version, so the runtime requirement must be equal.
    text = open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml")).read()
    specs = re.findall(r'"tensorflow([^"]*)"', text)
    assert len(specs) == 2 and specs[0] == specs[1], specs
    assert re.fullmatch(r">=(\d+)\.(\d+),<\1\.(\d+)", specs[0]), specs[0]
    low, high = re.fullmatch(r">=\d+\.(\d+),<\d+\.(\d+)", specs[0]).groups()
    assert int(high) == int(low) + 1, specs[0]  # one minor version, every patch of it
    assert _loader.same_abi(tf.__version__, tf.__version__)
    assert not _loader.same_abi("2.0.0", tf.__version__)


def test_env_var_forces_fallback_silently(tmp_path, monkeypatch):
    monkeypatch.setenv(_loader.ENV_FORCE_FALLBACK, "1")
    lib = _loader.CustomOpLibrary(directory=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lib.get() is None
    assert "TF_SAMPLING_PY_OPS" in lib.reason


def test_use_custom_op_true_without_library_raises(monkeypatch):
    monkeypatch.delenv(_loader.ENV_FORCE_FALLBACK, raising=False)
    monkeypatch.setattr(_loader, "LIBRARY", _loader.CustomOpLibrary(directory="/nonexistent"))
    with pytest.warns(tfs.ops.CustomOpWarning):
        with pytest.raises(RuntimeError, match="unavailable"):
            tfs.ops.alias_build([1.0, 2.0], use_custom_op=True)
    # The default then quietly uses the fallback (the warning was given once).
    table = tfs.ops.alias_build([1.0, 3.0])
    np.testing.assert_allclose(tfs.ops.alias_probabilities(table), [0.25, 0.75])


# ----------------------------------------------------------------------- build

@pytest.mark.parametrize("name", sorted(weight_cases()))
def test_build_represents_the_weights(use_op, name):
    w = weight_cases()[name]
    for dtype in (np.float32, np.float64):
        wd = w.astype(dtype)
        table = tfs.ops.alias_build(wd, use_custom_op=use_op)
        assert table.dtype == tf.int64 and table.shape == w.shape
        prob, alias = (x.numpy() for x in tfs.ops.alias_unpack(table))
        assert np.all((prob >= 0) & (prob <= 1))
        assert np.all((alias >= 0) & (alias < len(w)))
        # Zero weights are never kept and never an alias target.
        assert np.all(prob[wd == 0] == 0.0)
        assert not np.any(np.isin(alias, np.flatnonzero(wd == 0)))
        p = tfs.ops.alias_probabilities(table).numpy()
        target = wd.astype(np.float64) / wd.astype(np.float64).sum()
        # float32 keep-probabilities: each bucket (mass 1/n) is off by <= 2^-25 and feeds
        # two classes, so TV <= 2^-24 ~ 6e-8 (+ 2^-32 fixed point); 1e-6 leaves a margin.
        assert 0.5 * np.abs(p - target).sum() < 1e-6
        assert np.all(p[wd == 0] == 0.0)


def test_op_and_fallback_build_the_same_distribution():
    if not tfs.ops.custom_ops_available():
        pytest.skip("custom ops unavailable")
    for name, w in weight_cases().items():
        a = tfs.ops.alias_build(w, use_custom_op=True)
        b = tfs.ops.alias_build(w, use_custom_op=False)
        pa = tfs.ops.alias_probabilities(a).numpy()
        pb = tfs.ops.alias_probabilities(b).numpy()
        # Both make the sweep's table (alias_table.h); only W's rounding may differ.
        assert 0.5 * np.abs(pa - pb).sum() < 1e-6, name


def test_op_and_fallback_build_identical_tables_when_the_sum_is_exact():
    if not tfs.ops.custom_ops_available():
        pytest.skip("custom ops unavailable")
    # Integer weights sum exactly in any order, so the two builds, which differ only in
    # how they sum W, must make the same table bit for bit.
    rng = np.random.default_rng(1)
    for w in (rng.integers(0, 50, size=10_000).astype(np.float64), np.arange(1.0, 200.0),
              np.array([0.0, 3.0, 0.0, 1.0]), np.ones(5)):
        a = tfs.ops.alias_build(w, use_custom_op=True).numpy()
        b = tfs.ops.alias_build(w, use_custom_op=False).numpy()
        np.testing.assert_array_equal(a, b)


def test_pack_and_unpack_follow_the_keep_rule():
    p32 = np.float32(0.3)
    table = tfs.ops.alias_pack([0.0, 0.5, 1.0, p32, 1.5], [1, 2, 0, 4, 3])
    assert table.dtype == tf.int64
    entries = table.numpy().astype(np.uint64)
    threshold = entries & np.uint64(0xFFFFFFFF)
    alias = entries >> np.uint64(32)
    # Keep iff a 32-bit coin < threshold = ceil(p 2^32); p >= 1 keeps whatever the coin,
    # through alias == itself; p = 0 never keeps.
    np.testing.assert_array_equal(threshold, [0, 2**31, 2**32 - 1,
                                              int(np.ceil(np.float64(p32) * 2.0**32)),
                                              2**32 - 1])
    np.testing.assert_array_equal(alias, [1, 2, 2, 4, 4])
    prob, al = tfs.ops.alias_unpack(table)
    np.testing.assert_array_equal(al, [1, 2, 2, 4, 4])
    np.testing.assert_array_equal(prob, [0.0, 0.5, 1.0,
                                         np.ceil(np.float64(p32) * 2.0**32) / 2.0**32, 1.0])
    np.testing.assert_allclose(tfs.ops.alias_probabilities(table),
                               np.array([0.0, 1.0 + 0.5, 0.5 + 1.0, p32, 1.0 - p32 + 1.0]) / 5,
                               rtol=1e-7)
    # A built table unpacks to keep probabilities that represent the weights.
    prob, al = tfs.ops.alias_unpack(tfs.ops.alias_build([1.0, 3.0]))
    np.testing.assert_array_equal(prob, [0.5, 1.0])
    np.testing.assert_array_equal(al, [1, 1])


@pytest.mark.parametrize("bad, match", [
    ([1.0, -1.0, 2.0], "non-negative"),
    ([1.0, np.nan], "finite"),
    ([np.inf, 1.0], "finite"),
    ([0.0, 0.0, 0.0], "all zero"),
    (np.zeros([0], np.float32), "empty"),
])
def test_bad_weights_raise(use_op, bad, match):
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        tfs.ops.alias_build(np.asarray(bad, np.float32), use_custom_op=use_op)


def test_bad_weights_raise_inside_tf_function(use_op):
    build = tf.function(lambda w: tfs.ops.alias_build(w, use_custom_op=use_op))
    with pytest.raises(tf.errors.InvalidArgumentError, match="weights"):
        build(tf.constant([1.0, -2.0]))


def test_bad_shapes_and_dtypes_raise():
    with pytest.raises(ValueError, match="weights"):
        tfs.ops.alias_build(tf.ones([2, 3]))
    with pytest.raises(TypeError, match="weights"):
        tfs.ops.alias_build(tf.constant(["a", "b"]))
    table = tfs.ops.alias_build([1.0])
    with pytest.raises(ValueError, match="seed"):
        tfs.ops.alias_sample(table, 3, seed=[1, 2, 3])
    with pytest.raises(ValueError, match="num_samples"):
        tfs.ops.alias_sample(table, -1, seed=1)
    with pytest.raises(TypeError, match="int64"):
        tfs.ops.alias_sample([1.0, 2.0], 3, seed=1)
    with pytest.raises(ValueError, match="table"):
        tfs.ops.alias_sample(tf.zeros([2, 2], tf.int64), 3, seed=1)
    with pytest.raises(ValueError, match="one length"):
        tfs.ops.alias_pack([0.5, 1.0], [1, 1, 1])


def test_corrupted_table_is_an_error_not_a_bad_read():
    if not tfs.ops.custom_ops_available():
        pytest.skip("custom ops unavailable")
    table = tfs.ops.alias_pack(tf.zeros([10]), tf.fill([10], 1 << 30))
    with pytest.raises(tf.errors.InvalidArgumentError, match="alias"):
        tfs.ops.alias_sample(table, 100, seed=1, use_custom_op=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="alias"):
        tfs.ops.alias_sample(table, 5, seed=1, unique=True, use_custom_op=True)
    # Any int64 pattern: a negative entry has an alias >= 2^31.
    with pytest.raises(tf.errors.InvalidArgumentError, match="alias"):
        tfs.ops.alias_sample(tf.fill([10], tf.constant(-1, tf.int64)), 100, seed=1,
                             use_custom_op=True)


# ----------------------------------------------------------------------- sampling

def test_samples_follow_the_weights(use_op):
    rng = np.random.default_rng(1)
    w = rng.random(300) * np.arange(1, 301)
    w[rng.random(300) < 0.15] = 0.0
    table = tfs.ops.alias_build(w, use_custom_op=use_op)
    n = 600_000
    ids = tfs.ops.alias_sample(table, n, seed=[12, 34], use_custom_op=use_op).numpy()
    assert ids.dtype == np.int64 and ids.shape == (n,)
    counts = np.bincount(ids, minlength=len(w))
    assert counts[w == 0].sum() == 0
    stat, df = chi_square(counts, w / w.sum())
    assert stat < chi2_bound(df), (stat, df)
    # Every cell (tests/_stats.py): 260 cells of expected count >= 20, cut 5.9 sigma. The
    # median class expects 1600 draws, so a 20% bias on it is 8.0 sigma (detected with
    # probability 0.98 for a random seed); this seed's draws are fixed.
    assert_cells(counts, w / w.sum())


def test_samples_follow_the_weights_large_table(use_op):
    rng = np.random.default_rng(2)
    w = 1.0 / (1.0 + rng.permutation(200_000))  # Zipf, shuffled
    table = tfs.ops.alias_build(w.astype(np.float32), use_custom_op=use_op)
    ids = tfs.ops.alias_sample(table, 2_000_000, seed=5, use_custom_op=use_op).numpy()
    counts = np.bincount(ids, minlength=len(w))
    stat, df = chi_square(counts, w / w.sum())
    assert stat < chi2_bound(df), (stat, df)
    # The cells of expected count >= 20 (the ~5000 most likely classes) one by one.
    assert_cells(counts, w / w.sum())


def test_op_and_fallback_samples_agree_in_distribution():
    """Two-sample chi-square between op and fallback draws of one table."""
    if not tfs.ops.custom_ops_available():
        pytest.skip("custom ops unavailable")
    w = np.random.default_rng(3).random(100) ** 2
    table = tfs.ops.alias_build(w)
    n = 400_000
    a = np.bincount(tfs.ops.alias_sample(table, n, 1, use_custom_op=True), minlength=100)
    b = np.bincount(tfs.ops.alias_sample(table, n, 1, use_custom_op=False), minlength=100)
    keep = (a + b) > 0
    stat = np.sum((a[keep] - b[keep]) ** 2 / (a[keep] + b[keep]))  # equal sample sizes
    assert stat < chi2_bound(keep.sum() - 1)


def test_seeds_repeat_and_differ(use_op):
    table = tfs.ops.alias_build(np.arange(1.0, 51.0), use_custom_op=use_op)

    def draw(seed):
        return tfs.ops.alias_sample(table, 1000, seed, use_custom_op=use_op).numpy()

    np.testing.assert_array_equal(draw([3, 4]), draw([3, 4]))
    np.testing.assert_array_equal(draw([3, 4]), draw(tf.constant([3, 4], tf.int32)))
    np.testing.assert_array_equal(draw(7), draw(7))
    assert np.mean(draw([3, 4]) != draw([3, 5])) > 0.5
    # Inside tf.function too.
    f = tf.function(lambda s: tfs.ops.alias_sample(table, 1000, s, use_custom_op=use_op))
    np.testing.assert_array_equal(f(tf.constant([3, 4], tf.int64)), draw([3, 4]))


def test_op_stream_is_a_prefix_stream():
    """Draw t depends only on (seed, t): the first k of n draws are the k draws."""
    if not tfs.ops.custom_ops_available():
        pytest.skip("custom ops unavailable")
    table = tfs.ops.alias_build(np.random.default_rng(4).random(1000))
    long = tfs.ops.alias_sample(table, 100_001, seed=9, use_custom_op=True).numpy()
    short = tfs.ops.alias_sample(table, 333, seed=9, use_custom_op=True).numpy()
    np.testing.assert_array_equal(long[:333], short)


_THREADS_SCRIPT = textwrap.dedent("""
    import hashlib, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np, tensorflow as tf
    threads = int(sys.argv[1])
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    import tf_sampling as tfs
    assert tfs.ops.custom_ops_available()
    w = np.random.default_rng(0).random(100_000)
    table = tfs.ops.alias_build(w, use_custom_op=True)
    ids = tfs.ops.alias_sample(table, 1_000_000, seed=[5, 6], use_custom_op=True)
    uniq, tries = tfs.ops.alias_sample(table, 50_000, seed=[7, 8], unique=True,
                                       use_custom_op=True)
    mix = tfs.ops.alias_mixture_sample(table, 3.0, [5, 99_999], [1.0, 1.5], 100_001,
                                       seed=[9, 9], use_custom_op=True)
    h = hashlib.sha256()
    for x in (table, ids, uniq, tries, mix):
        h.update(x.numpy().tobytes())
    print(tf.config.threading.get_intra_op_parallelism_threads(), h.hexdigest())
""")


def _thread_runs():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_SAMPLING_NO_AVX2", None)
    runs = [(1, {}), (0, {}), (0, {"TF_SAMPLING_NO_AVX2": "1"})]
    return [subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, str(t)],
                           env=dict(env, **extra), capture_output=True, text=True,
                           check=True).stdout.split()
            for t, extra in runs]


# The processes run beside the other tests (tests/_background.py).
_background.register("thread_runs", _thread_runs)


@pytest.mark.background("thread_runs")
def test_results_do_not_depend_on_the_thread_count_or_instruction_set():
    """1e6 draws are split over the intra-op pool in 16384-draw pieces; one thread and
    the default pool (one thread per core) must give identical bytes. So must the
    generic draw loop (TF_SAMPLING_NO_AVX2=1) and the AVX2 one (picked at run time
    where the CPU has it)."""
    if not tfs.ops.custom_ops_available():
        pytest.skip("custom ops unavailable")
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs at least 2 cores for a multithreaded pool")
    outs = _background.result("thread_runs")
    assert [o[0] for o in outs] == ["1", "0", "0"]  # 0: TF's default, one per core
    assert outs[0][1] == outs[1][1] == outs[2][1]


# ----------------------------------------------------------------------- unique

def test_unique_sampling(use_op):
    rng = np.random.default_rng(5)
    w = rng.random(500)
    w[::5] = 0.0
    table = tfs.ops.alias_build(w, use_custom_op=use_op)
    for k in (1, 10, 300):
        ids, tries = tfs.ops.alias_sample(table, k, seed=[k, 1], unique=True,
                                          use_custom_op=use_op)
        ids, tries = ids.numpy(), int(tries)
        assert ids.shape == (k,) and len(set(ids)) == k
        assert np.all(w[ids] > 0)
        assert tries >= k


def test_unique_num_tries_is_the_stream_length(use_op):
    """num_tries = position of the last new id in the i.i.d. stream + 1, the quantity in
    the expected counts 1 - (1 - p)^num_tries; checked against the stream itself."""
    w = np.random.default_rng(6).random(200) ** 3
    table = tfs.ops.alias_build(w, use_custom_op=use_op)
    k = 120
    seed = tf.constant([3, 9], tf.int64)
    ids, tries = tfs.ops.alias_sample(table, k, seed, unique=True, use_custom_op=use_op)
    tries = int(tries)
    if use_op:
        stream = tfs.ops.alias_sample(table, tries, seed, use_custom_op=True).numpy()
    else:  # the fallback's stream: rounds of doubling length, round r from fold_in(seed, r)
        parts, length, r = [], 0, 0
        while length < tries:
            size = 2 * k if r == 0 else length
            parts.append(_alias_tf.sample(table, size,
                                          tf.random.experimental.stateless_fold_in(seed, r)))
            length += size
            r += 1
        stream = np.concatenate(parts)[:tries]
    _, first = np.unique(stream, return_index=True)
    np.testing.assert_array_equal(stream[np.sort(first)], ids)
    assert np.sum(stream == stream[-1]) == 1  # the last draw was a new id


@pytest.mark.parametrize("k", [3, 4000])
def test_unique_on_a_large_table_is_the_first_distinct_ids(k):
    """The op keeps the ids met in a hash set when few are wanted from a large table
    and in a bitmap of the classes otherwise; either way the result is the first k
    distinct ids of its own stream."""
    if not tfs.ops.custom_ops_available():
        pytest.skip("custom ops unavailable")
    w = 1.0 / (1.0 + np.random.default_rng(9).permutation(300_000))
    table = tfs.ops.alias_build(w)
    seed = tf.constant([8, 1], tf.int64)
    ids, tries = tfs.ops.alias_sample(table, k, seed, unique=True, use_custom_op=True)
    stream = tfs.ops.alias_sample(table, int(tries), seed, use_custom_op=True).numpy()
    _, first = np.unique(stream, return_index=True)
    np.testing.assert_array_equal(stream[np.sort(first)], ids)


def test_unique_needs_enough_positive_classes(use_op):
    table = tfs.ops.alias_build([1.0, 0.0, 2.0, 0.0, 3.0], use_custom_op=use_op)
    ids, _ = tfs.ops.alias_sample(table, 3, seed=1, unique=True, use_custom_op=use_op)
    assert sorted(ids.numpy()) == [0, 2, 4]
    with pytest.raises(tf.errors.InvalidArgumentError, match="positive probability"):
        tfs.ops.alias_sample(table, 4, seed=1, unique=True, use_custom_op=use_op)


def test_works_in_tf_function(use_op):
    @tf.function
    def f(w, seed):
        table = tfs.ops.alias_build(w, use_custom_op=use_op)
        ids = tfs.ops.alias_sample(table, 64, seed, use_custom_op=use_op)
        uniq, tries = tfs.ops.alias_sample(table, 8, seed, unique=True,
                                           use_custom_op=use_op)
        return ids, uniq, tries

    ids, uniq, tries = f(tf.constant([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]),
                         tf.constant([1, 2], tf.int64))
    assert ids.shape == (64,) and uniq.shape == (8,)
    assert 0 not in ids.numpy() and 0 not in uniq.numpy()
    assert int(tries) >= 8


# ----------------------------------------------------------------------- mixture

def _mixture_case():
    rng = np.random.default_rng(8)
    w = rng.random(120)
    w[::6] = 0.0
    ids = rng.integers(0, 120, 50)
    amounts = rng.random(50) * 3.0
    amounts[::7] = 0.0
    target = w.copy()
    np.add.at(target, ids, amounts)
    return w, ids, np.cumsum(amounts), target


def test_mixture_samples_follow_table_plus_list(use_op):
    w, ids, cum, target = _mixture_case()
    table = tfs.ops.alias_build(w, use_custom_op=use_op)
    draws = tfs.ops.alias_mixture_sample(table, w.sum(), ids, cum, 500_000, seed=[4, 4],
                                         use_custom_op=use_op).numpy()
    counts = np.bincount(draws, minlength=len(w))
    assert counts[target == 0].sum() == 0
    stat, df = chi_square(counts, target / target.sum())
    assert stat < chi2_bound(df), (stat, df)
    assert_cells(counts, target / target.sum())  # every cell, as in the test above


def test_mixture_with_an_empty_list_is_the_table_stream(use_op):
    table = tfs.ops.alias_build(np.arange(1.0, 30.0), use_custom_op=use_op)
    a = tfs.ops.alias_mixture_sample(table, 5.0, tf.zeros([0], tf.int64), tf.zeros([0], tf.float64),
                                     500, seed=3, use_custom_op=use_op)
    b = tfs.ops.alias_sample(table, 500, seed=3, use_custom_op=use_op)
    np.testing.assert_array_equal(a, b)


def test_mixture_unique(use_op):
    w, ids, cum, target = _mixture_case()
    table = tfs.ops.alias_build(w, use_custom_op=use_op)
    k = int(np.count_nonzero(target)) - 5
    seed = tf.constant([1, 5], tf.int64)
    got, tries = tfs.ops.alias_mixture_sample(table, w.sum(), ids, cum, k, seed, unique=True,
                                              use_custom_op=use_op)
    got = got.numpy()
    assert len(set(got)) == k and np.all(target[got] > 0) and int(tries) >= k
    # The first k distinct ids of its own stream (the fallback's: rounds of doubling
    # length, round r from fold_in(seed, r)), and num_tries is that stream's length.
    if use_op:
        stream = tfs.ops.alias_mixture_sample(table, w.sum(), ids, cum, int(tries), seed,
                                              use_custom_op=True).numpy()
    else:
        parts, length, r = [], 0, 0
        while length < int(tries):
            size = 2 * k if r == 0 else length
            parts.append(_alias_tf.mixture_sample(
                table, tf.constant(w.sum(), tf.float64), ids, cum, size,
                tf.random.experimental.stateless_fold_in(seed, r)))
            length += size
            r += 1
        stream = np.concatenate(parts)[:int(tries)]
    _, first = np.unique(stream, return_index=True)
    np.testing.assert_array_equal(stream[np.sort(first)], got)
    assert np.sum(stream == stream[-1]) == 1  # the last draw was a new id
    with pytest.raises(tf.errors.InvalidArgumentError, match="positive probability"):
        tfs.ops.alias_mixture_sample(table, w.sum(), ids, cum, k + 6, seed, unique=True,
                                     use_custom_op=use_op)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_variable_gather_is_sparse_read(dtype):
    """The compiled gather of a variable's entries (DynamicAliasSampler's weights for the
    expected counts) gives ResourceGather's values, shapes and dtype, after scatters
    (copy-on-read mode) too, eagerly and in a tf.function."""
    from tf_sampling.ops.alias import variable_gather

    if not tfs.ops.custom_ops_available():
        pytest.skip("custom ops unavailable")
    rng = np.random.default_rng(0)
    var = tf.Variable((rng.random(50_000) * 1e6).astype(dtype))
    var.scatter_add(tf.IndexedSlices(tf.ones([3], dtype), tf.constant([0, 7, 49_999])))
    gather = tf.function(variable_gather)
    for indices in (rng.integers(0, 50_000, 10_000), rng.integers(0, 50_000, (3, 4, 5)),
                    np.zeros([0], np.int64), np.array([49_999, 0, 0])):
        indices = tf.constant(indices, tf.int64)
        for out in (variable_gather(var, indices), gather(var, indices)):
            assert out.dtype == var.dtype and out.shape == indices.shape
            np.testing.assert_array_equal(out, var.sparse_read(indices))
    graph = gather.get_concrete_function(var, indices).graph.as_graph_def()
    assert "TfSampling>VariableGather" in {n.op for n in graph.node}
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"not in \[0, 50000\)"):
        variable_gather(var, tf.constant([3, 50_000], tf.int64))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"not in \[0, 50000\)"):
        variable_gather(var, tf.constant([-1], tf.int64))


def test_mixture_bad_inputs():
    if not tfs.ops.custom_ops_available():
        pytest.skip("custom ops unavailable")
    table = tfs.ops.alias_build([1.0, 2.0])
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="extra"):
        tfs.ops.alias_mixture_sample(table, 3.0, [0, 1], [1.0], 4, seed=1, use_custom_op=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="table_mass"):
        tfs.ops.alias_mixture_sample(table, -1.0, [0], [1.0], 4, seed=1, use_custom_op=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="extra_ids"):
        tfs.ops.alias_mixture_sample(table, 0.0, [7], [1.0], 4, seed=1, use_custom_op=True)

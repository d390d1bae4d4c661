"""Scaling out: MirroredStrategy and MultiWorkerMirroredStrategy training, sharded output
weights, and BackupAndRestore.

The strategy scenarios need devices and strategies configured before TensorFlow starts, so
they run in subprocesses (tests/_distribute_worker.py), all started at once by one
module fixture: a process with 2 logical CPUs (single device, MirroredStrategy, shard
placement, BackupAndRestore, DynamicAliasSampler and FrequencyEstimator state kept by
every replica), a 2-worker MultiWorkerMirroredStrategy cluster on loopback
ports, and a ParameterServerStrategy cluster (1 worker, 2 parameter servers) served from
one process. The sharding checks that need no second device run in this process.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs

import _background

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_distribute_worker.py")
# A bound on the whole fixture: on 2 idle cores the runs take about a minute.
TIMEOUT_S = 420

# Must match tests/_distribute_worker.py.
V, D, S, N, BATCH, EPOCHS = 60, 8, 12, 64, 16, 2


def _worker_labels():
    rng = np.random.default_rng(0)
    rng.normal(size=(N, D))
    return ((rng.zipf(1.3, N) - 1) % V).astype(np.int64)


# Counts start at 1 per class; each label is counted once per epoch, whatever replica or
# worker its example was sent to.
EXPECTED_COUNTS = 1 + EPOCHS * np.bincount(_worker_labels(), minlength=V)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run_scenarios():
    """Runs every scenario; returns {name: npz results or the failure text}."""
    tmp = pathlib.Path(_background.temp_dir("distribute"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(HERE)] + [p for p in [env.get("PYTHONPATH")] if p])
    env.pop("TF_CONFIG", None)
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    commands = {"local": (["local", str(tmp / "local.npz")], env),
                "ps": (["ps", str(tmp / "ps.npz")], env)}
    for i in range(2):
        worker_env = dict(env, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": i}}))
        commands[f"mwms{i}"] = (["mwms", str(tmp / f"mwms{i}.npz")], worker_env)

    procs, outputs = {}, {}
    try:
        for name, (args, run_env) in commands.items():
            procs[name] = subprocess.Popen(
                [sys.executable, WORKER] + args, env=run_env, cwd=os.path.dirname(HERE),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + TIMEOUT_S
        for name, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                outputs[name] = (proc.returncode, out)
            except subprocess.TimeoutExpired:
                outputs[name] = (None, f"timed out after {TIMEOUT_S} s")
    finally:
        # A worker whose peer died waits on collectives forever: end every process.
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    results = {}
    for name, (code, out) in outputs.items():
        path = tmp / f"{name}.npz"
        if code == 0 and path.exists():
            with np.load(path) as data:
                results[name] = {k: data[k] for k in data.files}
        else:
            results[name] = f"{name} exited with {code}:\n{out[-6000:]}"
    return results


# The processes run beside the other tests (tests/_background.py).
_background.register("distribute", _run_scenarios)


@pytest.fixture(scope="module")
def runs():
    return _background.result("distribute")


def _get(runs, name):
    result = runs[name]
    if isinstance(result, str):
        pytest.fail(result)
    return result


def _variables(result, prefix):
    names = [str(n) for n in result[f"{prefix}/names"]]
    return {i: (names[i], result[f"{prefix}/var/{i}"]) for i in range(len(names))}


def _counts(result, prefix):
    (value,) = [v for n, v in _variables(result, prefix).values() if n.endswith("/counts")]
    return value


def _assert_matches_single_device(result, prefix, single, ref="single"):
    # The same sampled classes on every step (each replica draws from the same seed
    # state as the single device), so only the order of floating-point sums differs:
    # the all-reduced gradient of the replicas' halves against the gradient of the
    # whole batch. Over 8 SGD steps that moves losses and weights by ~1e-6 relative.
    np.testing.assert_allclose(result[f"{prefix}/losses"], single[f"{ref}/losses"],
                               rtol=2e-5, err_msg=f"{prefix}: per-step losses")
    want = _variables(single, ref)
    got = _variables(result, prefix)
    assert len(got) == len(want)
    for i, (name, value) in got.items():
        ref_name, ref = want[i]
        assert value.shape == ref.shape, (name, ref_name)
        if value.dtype.kind in "iu":  # counts, trees, seed states: exact
            np.testing.assert_array_equal(value, ref, err_msg=name)
        else:
            np.testing.assert_allclose(value, ref, rtol=1e-4, atol=2e-5, err_msg=name)


# ---------------------------------------------------------------------- strategies
@pytest.mark.background("distribute")
def test_mirrored_strategy_matches_single_device(runs):
    local = _get(runs, "local")
    assert int(local["mirrored/num_replicas"]) == 2
    _assert_matches_single_device(local, "mirrored", local)
    # Every replica holds the same copy of every variable.
    for key in [k for k in local if k.startswith("mirrored/copies/")]:
        copies = local[key]
        for c in copies[1:]:
            np.testing.assert_array_equal(c, copies[0], err_msg=key)


@pytest.mark.background("distribute")
def test_multi_worker_mirrored_strategy_matches_single_device(runs):
    single = _get(runs, "local")
    for name in ("mwms0", "mwms1"):
        result = _get(runs, name)
        assert int(result["mwms/num_replicas"]) == 2
        _assert_matches_single_device(result, "mwms", single)
    w0, w1 = _get(runs, "mwms0"), _get(runs, "mwms1")
    for key in [k for k in w0 if k.startswith("mwms/var/")]:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)


@pytest.mark.parametrize("name,prefix", [("local", "single"), ("local", "mirrored"),
                                         ("mwms0", "mwms"), ("mwms1", "mwms")])
@pytest.mark.background("distribute")
def test_learned_counts_count_every_replicas_labels_once(runs, name, prefix):
    np.testing.assert_array_equal(_counts(_get(runs, name), prefix), EXPECTED_COUNTS)


def _error(result, prefix):
    """The traceback of a scenario that raised, or None."""
    return str(result[f"{prefix}/error"]) if f"{prefix}/error" in result else None


def _state(result, prefix, layer):
    """{variable name: value} of the variables of `layer` (a path component)."""
    return {n.split("/")[-1]: v for n, v in _variables(result, prefix).values()
            if n.split("/")[0].startswith(layer)}


@pytest.mark.background("distribute")
def test_dynamic_alias_sampler_under_strategies(runs):
    local, w0, w1 = _get(runs, "local"), _get(runs, "mwms0"), _get(runs, "mwms1")
    runs_ = [(local, "single_dynamic"), (local, "mirrored_dynamic"), (w0, "mwms_dynamic"),
             (w1, "mwms_dynamic")]
    for result, prefix in runs_:
        assert _error(result, prefix) is None, _error(result, prefix)
    single = _state(local, "single_dynamic", "dynamic_alias_sampler")
    # Weights after training: 1 + the labels seen, each counted once.
    np.testing.assert_array_equal(single["class_weights"], EXPECTED_COUNTS.astype(np.float64))
    # Both ways of taking in increments were used: a rebuild, then pending increments.
    assert single["num_rebuilds"] >= 1 and single["pending_size"] > 0, single
    # Every replica applied the all-gathered labels (in replica order, which is the
    # order of the global batch) to its copy: the whole sampler state (weights, table,
    # pending increments) is that of the single device, bit for bit; same state, same
    # seeds: the same draws, so losses and weights as on the single device.
    _assert_replicated_state(runs_, single, "dynamic_alias_sampler", "dynamic", local, w0, w1)


@pytest.mark.background("distribute")
def test_frequency_estimator_under_strategies(runs):
    """The estimator's step is the global step and its batch the global batch: replicas
    all-gather their ids, so its state equals one device's fed the concatenated batch."""
    local, w0, w1 = _get(runs, "local"), _get(runs, "mwms0"), _get(runs, "mwms1")
    runs_ = [(local, "single_retrieval"), (local, "mirrored_retrieval"),
             (w0, "mwms_retrieval"), (w1, "mwms_retrieval")]
    for result, prefix in runs_:
        assert _error(result, prefix) is None, _error(result, prefix)
    # The replicated case matters: some ids are seen by both replicas in one step (the
    # halves of a batch share ids), so per-replica updates could not give this state.
    labels = _worker_labels().reshape(-1, 2, BATCH // 2)
    assert any(set(a) & set(b) for a, b in labels)
    single = _state(local, "single_retrieval", "estimator")
    assert int(single["step"]) == EPOCHS * N // BATCH  # one step per global batch
    assert int(single["num_seen"]) == EPOCHS * N
    assert np.count_nonzero(single["gap"]) > 10
    assert single.keys() == {"last_step", "gap", "step", "num_seen"}
    # The estimates feed the log Q correction of each replica's in-batch loss; the single
    # device computes the same per-half losses (see _distribute_worker.py).
    _assert_replicated_state(runs_, single, "estimator", "retrieval", local, w0, w1)


def _assert_replicated_state(runs_, single, state_name, case, local, w0, w1):
    """Each distributed run's state `state_name` equals the single device's, its losses
    and weights match the single device's, the Mirrored copies agree with each other and
    the two MultiWorker workers hold the same variables."""
    for result, prefix in runs_[1:]:
        state = _state(result, prefix, state_name)
        assert state.keys() == single.keys()
        for name, value in state.items():
            np.testing.assert_array_equal(value, single[name], err_msg=f"{prefix}: {name}")
        _assert_matches_single_device(result, prefix, local, ref=f"single_{case}")
    copies = [k for k in local if k.startswith(f"mirrored_{case}/copies/")]
    assert copies
    for key in copies:
        for copy in local[key][1:]:
            np.testing.assert_array_equal(copy, local[key][0], err_msg=key)
    worker_vars = [k for k in w0 if k.startswith(f"mwms_{case}/var/")]
    assert worker_vars
    for key in worker_vars:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)


@pytest.mark.background("distribute")
def test_replicated_state_outside_training_steps(runs):
    """Eager calls under the scope (cross-replica context) update every copy alike, a
    replica-context assign_weights takes replica 0's weights, and a checkpoint restores
    every copy."""
    local = _get(runs, "local")
    keys = [k[:-len("/copies")] for k in local if k.endswith("/copies")
            and k.startswith(("outside/", "restored/"))]
    # Every variable of both layers, after the calls and after the restore.
    assert len(keys) == 2 * (8 + 4) + 1, keys
    for key in keys:
        copies, ref = local[f"{key}/copies"], local[f"{key}/ref"]
        assert len(copies) == 2
        for copy in copies:
            np.testing.assert_array_equal(copy, ref, err_msg=key)
    # The calls did change the state (not a comparison of initial values).
    assert local["outside/sampler/num_rebuilds/ref"] == 1
    assert local["outside/sampler/pending_size/ref"] == 4
    assert local["outside/estimator/step/ref"] == 2


# ---------------------------------------------------------------------- sharding
@pytest.mark.background("distribute")
def test_shards_live_on_their_devices_and_match_the_unsharded_head(runs):
    local = _get(runs, "local")
    cpu = "/job:localhost/replica:0/task:0/device:CPU:"
    assert list(local["shard/kernel_devices"]) == [cpu + "0", cpu + "1"]
    assert list(local["shard/bias_devices"]) == [cpu + "0", cpu + "1"]
    assert list(local["shard/kernel_rows"]) == [V // 2, V // 2]
    # Each shard's block of logits is computed on the shard's device.
    assert list(local["shard/matmul_devices"]) == ["/device:CPU:0", "/device:CPU:1"]
    # The same weights split in two give the same numbers: the sampled path gathers the
    # same rows (bit for bit); the full path computes the same dot products block by
    # block (to rounding: see test_sharded_head_is_the_unsharded_head_split).
    for what in ("sampled_loss", "kernel_grad"):
        np.testing.assert_array_equal(local[f"shard/sharded/{what}"],
                                      local[f"shard/ref/{what}"], err_msg=what)
    for what in ("log_prob", "full_loss"):
        np.testing.assert_allclose(local[f"shard/sharded/{what}"], local[f"shard/ref/{what}"],
                                   rtol=1e-6, atol=0, err_msg=what)


@pytest.mark.background("distribute")
def test_shards_on_parameter_servers_train_like_the_unsharded_head(runs):
    ps = _get(runs, "ps")
    # Variables go round-robin over the parameter servers: the two kernel shards (and
    # the two bias shards) land on different servers.
    for what in ("kernel_devices", "bias_devices"):
        tasks = sorted(str(d).split("/task:")[1][0] for d in ps[f"ps/{what}"])
        assert all(str(d).startswith("/job:ps/") for d in ps[f"ps/{what}"]), ps[f"ps/{what}"]
        assert tasks == ["0", "1"], ps[f"ps/{what}"]
    # Two SGD steps scheduled on the worker, against the same steps on one device from
    # the same weights and sampler seed: the same gathers and arithmetic, bit for bit.
    for what in ("losses", "kernel", "bias"):
        np.testing.assert_array_equal(ps[f"ps/sharded/{what}"], ps[f"ps/ref/{what}"],
                                      err_msg=what)


def _sampled_kernels_got_slices(result, prefix):
    """Every sampled head's kernel reached SparseAdam's update as an `IndexedSlices`."""
    types = {str(path): str(kind) for path, kind in result[f"{prefix}/gradient_types"]}
    kernels = {p: k for p, k in types.items()
               if p.split("/")[0] in ("learned", "nce", "neg", "sharded") and "kernel" in p}
    assert len(kernels) >= 4, types
    assert set(kernels.values()) == {"IndexedSlices"}, kernels


@pytest.mark.background("distribute")
def test_sparse_adam_under_multi_worker_mirrored_strategy(runs):
    """SparseAdam(catch_up=True) on every head, 2 workers: the replicas' sparse gradients
    stay `IndexedSlices` through the collective all-reduce (an all-gather of the slices),
    and SparseAdam sums repeated rows before its step, so training matches one device fed
    the whole batch."""
    local = _get(runs, "local")
    assert _error(local, "single_sparse_adam") is None, _error(local, "single_sparse_adam")
    _sampled_kernels_got_slices(local, "single_sparse_adam")
    for name in ("mwms0", "mwms1"):
        result = _get(runs, name)
        assert _error(result, "mwms_sparse_adam") is None, _error(result, "mwms_sparse_adam")
        _sampled_kernels_got_slices(result, "mwms_sparse_adam")
        _assert_matches_single_device(result, "mwms_sparse_adam", local,
                                      ref="single_sparse_adam")
    w0, w1 = _get(runs, "mwms0"), _get(runs, "mwms1")
    for key in [k for k in w0 if k.startswith("mwms_sparse_adam/var/")]:
        np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)


@pytest.mark.background("distribute")
def test_sparse_adam_on_parameter_servers(runs):
    """A 2-shard head trained by SparseAdam(catch_up=True) under ParameterServerStrategy:
    each slot on its variable's parameter server, sparse gradients, and the losses and
    weights of the same three steps on one device."""
    ps = _get(runs, "ps")
    placement = ps["ps_adam/placement"]
    # Four variables (2 kernel shards, 2 bias shards), m and v each, last step for kernels.
    assert len(placement) >= 10, placement
    for var_device, slot_device in placement:
        assert str(var_device).startswith("/job:ps/") and var_device == slot_device, placement
    assert {str(k) for _, k in ps["ps_adam/gradient_types"]} == {"IndexedSlices"}
    for what in ("losses", "kernel", "bias"):
        np.testing.assert_allclose(ps[f"ps_adam/sharded/{what}"], ps[f"ps_adam/ref/{what}"],
                                   rtol=1e-6, atol=1e-7, err_msg=what)
    # Three Adam steps moved the weights (the comparison is not of initial values).
    assert np.abs(ps["ps_adam/ref/losses"][0] - ps["ps_adam/ref/losses"][-1]).max() > 1e-3


# ---------------------------------------------------------------------- fault tolerance
@pytest.mark.background("distribute")
def test_backup_and_restore_resumes_sampler_counts(runs):
    local = _get(runs, "local")
    assert "ft/error" not in local, str(local.get("ft/error"))
    after_first_epoch = 1 + np.bincount(_worker_labels(), minlength=V)
    # At the interruption the counts include 3 batches of the unfinished epoch...
    interrupted = local["ft/at_interruption"]
    assert interrupted.sum() == after_first_epoch.sum() + 3 * BATCH
    # ...which the restart rolls back to the end-of-epoch backup before redoing that
    # epoch: the resumed run ends with the counts of the uninterrupted run.
    np.testing.assert_array_equal(local["ft/resumed"], _counts(local, "mirrored"))
    np.testing.assert_array_equal(local["ft/resumed"], EXPECTED_COUNTS)


# ---------------------------------------------------------------------- in-process
HEADS = [tfs.layers.SampledSoftmax, tfs.layers.NCE, tfs.layers.NegativeSampling]


def _pair(cls, num_shards, **kwargs):
    """A sharded head and an unsharded one, built from the same Keras seed."""
    heads = []
    for shards in (num_shards, 1):
        keras.utils.set_random_seed(3)
        head = cls(V, S, sampler=tfs.samplers.UniformSampler(V, seed=5), num_shards=shards,
                   bias_initializer="random_normal", **kwargs)
        head.build((None, D))
        heads.append(head)
    return heads


@pytest.mark.parametrize("cls", HEADS)
def test_sharded_head_is_the_unsharded_head_split(cls):
    sharded, plain = _pair(cls, 7, num_true=2, remove_accidental_hits=True)
    # "div" layout: the first V % 7 = 4 shards get one row more.
    assert [int(s.shape[0]) for s in sharded.kernel_shards] == [9, 9, 9, 9, 8, 8, 8]
    assert [int(s.shape[0]) for s in sharded.bias_shards] == [9, 9, 9, 9, 8, 8, 8]
    assert len(sharded.trainable_weights) == 14
    # Initialised from the full matrix, so the same seed gives the same weights.
    np.testing.assert_array_equal(sharded.kernel, plain.kernel)
    np.testing.assert_array_equal(sharded.bias, plain.bias)
    # The shards cover the rows in order, as tf.nn.embedding_lookup's "div" strategy.
    ids = tf.range(V)
    np.testing.assert_array_equal(
        tf.nn.embedding_lookup([tf.convert_to_tensor(s) for s in sharded.kernel_shards], ids),
        plain.kernel)

    rng = np.random.default_rng(1)
    h = rng.normal(size=(BATCH, D)).astype(np.float32)
    y = rng.integers(0, V, (BATCH, 2))
    y[:, 1] = y[:, 0]  # a repeated true class in some rows: accidental hits twice
    losses, grads = [], []
    for head in (sharded, plain):
        with tf.GradientTape() as tape:
            loss = head([h, y], training=True)
        dense = [tf.convert_to_tensor(g) for g in tape.gradient(loss, head.trainable_weights)]
        k = len(head.kernel_shards)
        grads.append((tf.concat(dense[:k], 0), tf.concat(dense[k:], 0)))
        losses.append(loss)
    # Training gathers the same rows and does the same arithmetic: bit for bit.
    np.testing.assert_array_equal(losses[0], losses[1])
    np.testing.assert_array_equal(grads[0][0], grads[1][0])
    np.testing.assert_array_equal(grads[0][1], grads[1][1])
    # Inference multiplies by each shard separately, where the shard lives: a matmul
    # against a block of columns may use other BLAS kernels than the full matmul (for
    # the remainder columns), which round differently; seen: 1.2e-7 relative.
    np.testing.assert_allclose(sharded.log_prob(h), plain.log_prob(h), rtol=1e-6, atol=0)
    np.testing.assert_allclose(sharded.full_softmax_loss(h, y), plain.full_softmax_loss(h, y),
                               rtol=1e-6, atol=0)


def test_sharded_training_reads_only_the_sampled_rows():
    head, _ = _pair(tfs.layers.SampledSoftmax, 3)
    graph = tf.function(lambda a, b: head([a, b], training=True)).get_concrete_function(
        tf.TensorSpec([BATCH, D]), tf.TensorSpec([BATCH], tf.int32)).graph
    ops = graph.get_operations()
    # No shard is read whole: the only full reads are of small state (the seed).
    full_reads = [tuple(op.outputs[0].shape) for op in ops if op.type == "ReadVariableOp"]
    assert all(shape[:1] != (V // 3,) for shape in full_reads), full_reads
    # Row gathers do the reading: one gather of the unique true and sampled rows per kernel
    # and bias shard.
    assert sum(op.type == "ResourceGather" for op in ops) == 6


def test_sharded_head_config_and_keras_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    h_in = keras.Input((D,))
    y_in = keras.Input((), dtype="int32")
    head = tfs.layers.SampledSoftmax(V, S, num_shards=3, shard_devices=["/cpu:0"],
                                     sampler="uniform", seed=2, name="head")
    model = keras.Model([h_in, y_in], head([h_in, y_in]))
    config = head.get_config()
    assert config["num_shards"] == 3 and config["shard_devices"] == ["/cpu:0"]
    clone = tfs.layers.SampledSoftmax.from_config(config)
    assert clone.num_shards == 3 and clone.shard_devices == ["/cpu:0"]

    path = str(tmp_path / "sharded.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    loaded_head = loaded.get_layer("head")
    assert loaded_head.num_shards == 3
    for a, b in zip(head.kernel_shards + head.bias_shards,
                    loaded_head.kernel_shards + loaded_head.bias_shards):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    h = np.random.default_rng(0).normal(size=(4, D)).astype(np.float32)
    np.testing.assert_array_equal(loaded_head(h), head(h))


@pytest.mark.parametrize("kwargs,match", [
    ({"num_shards": 0}, "num_shards"),
    ({"num_shards": 2.0}, "num_shards"),
    ({"num_shards": True}, "num_shards"),
    ({"num_shards": V + 1}, "num_shards"),
    ({"shard_devices": "/cpu:0"}, "shard_devices"),
    ({"shard_devices": []}, "shard_devices"),
    ({"shard_devices": ["/cpu:0", 1]}, "shard_devices"),
    ({"num_shards": 2, "tied_embedding": "embedding"}, "tied_embedding"),
])
def test_bad_sharding_arguments(kwargs, match):
    if kwargs.get("tied_embedding") == "embedding":
        kwargs = dict(kwargs, tied_embedding=keras.layers.Embedding(V, D))
    with pytest.raises(ValueError, match=match):
        tfs.layers.SampledSoftmax(V, S, **kwargs)

"""Fault tolerance: a training process killed at a random step and resumed with
`tfs.callbacks.BackupAndRestore` ends in exactly the state of an uninterrupted run.

Each run is a subprocess (tests/_backup_worker.py) that trains a tiny model whose every
training step updates a LearnedUnigramSampler, a DynamicAliasSampler (with table rebuilds)
and a FrequencyEstimator, and draws negatives from the samplers' seed generators. A crash
is `os._exit(1)` after a given global step: no cleanup, no `on_train_end`. The comparison
is exact (every weight, optimizer iterations, seed states, and the negatives drawn after
training): the resumed process runs the same ops on the same data from the same state.

Also: the samplers' seed state is saved in `.keras` / `.weights.h5` files, and a `.keras`
file written without it (tests/data, written by tf-sampling 0.1.0 before the seed state
was saved) still loads.
"""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import tf_sampling as tfs

import _background

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_backup_worker.py")
DATA = os.path.join(HERE, "data")
TOTAL_STEPS = 30  # _backup_worker: 3 epochs of 10 steps
TIMEOUT_S = 300

# Kill steps drawn once with a fixed seed (np.random.default_rng(19)): for save_freq=5,
# k1 = 18 (backup at step 15, mid epoch 1: 3 steps are lost) and k2 = 24 (in the resumed
# process: backup at step 20, the end of epoch 1 written as epoch 1 with all 10 steps
# done); for save_freq="epoch", k = 11 (one step into epoch 1). Each process costs about
# 8 CPU seconds (4 of them importing TensorFlow), so there are six: the uninterrupted
# run and the two chains' crashed and resumed processes.
_rng = np.random.default_rng(19)
K1 = int(_rng.integers(1, TOTAL_STEPS))
K2 = int(_rng.integers(K1 + 1, TOTAL_STEPS + 1))
K_EPOCH = int(_rng.integers(1, TOTAL_STEPS))

# name: (save_freq, steps_per_execution, kill steps, one process each, then a resume)
CHAINS = {
    "batches": ("5", 1, [K1, K2]),
    "epoch": ("epoch", 1, [K_EPOCH]),
}


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(HERE)] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


def _start(out, backup_dir, save_freq, kill_at, spe):
    return subprocess.Popen(
        [sys.executable, WORKER, out, backup_dir, save_freq, str(kill_at), "tfs", str(spe)],
        env=_env(), cwd=os.path.dirname(HERE), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


def _finish(proc, expect_rc):
    out, _ = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == expect_rc, out[-3000:]


def _run_chains():
    """The uninterrupted run and each chain's resumed run, as {name: {key: array}}, plus
    each chain's backup metadata after every crash. Independent processes run at once."""
    tmp = pathlib.Path(_background.temp_dir("backup"))
    steps = {name: list(kills) + [0] for name, (_, _, kills) in CHAINS.items()}
    metadata = {name: [] for name in CHAINS}
    procs = {"uninterrupted": (_start(str(tmp / "uninterrupted.npz"), str(tmp / "b_ref"),
                                      "5", 0, 1), 0)}
    try:
        while steps:
            for name in list(steps):
                save_freq, spe, _ = CHAINS[name]
                kill_at = steps[name].pop(0)
                procs[name] = (_start(str(tmp / f"{name}.npz"), str(tmp / f"b_{name}"),
                                      save_freq, kill_at, spe), 1 if kill_at else 0)
                if not steps[name]:
                    del steps[name]
            for name, (proc, rc) in list(procs.items()):
                _finish(proc, rc)
                del procs[name]
                if rc:
                    with open(tmp / f"b_{name}" / "training_metadata.json") as f:
                        metadata[name].append(json.load(f))
    finally:
        for proc, _ in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    results = {}
    for name in ["uninterrupted"] + list(CHAINS):
        with np.load(tmp / f"{name}.npz") as data:
            results[name] = {k: data[k] for k in data.files}
    return results, metadata


# The processes run beside the other tests (tests/_background.py).
_background.register("backup_restore", _run_chains)


@pytest.fixture(scope="module")
def runs():
    return _background.result("backup_restore")


@pytest.mark.background("backup_restore")
def test_kill_steps_lose_work_and_resume_mid_epoch(runs):
    """The drawn kill steps are cases where Keras' callback would train batches twice."""
    _, metadata = runs
    # Step 18 is 3 steps past the backup at 15 = epoch 1, step 5 of 10.
    assert metadata["batches"][0] == {"epoch": 1, "batch": 4, "steps_done": 5}
    # The second process resumed at epoch 1; its backup at step 20 keeps that epoch
    # number (Keras' own callback writes epoch 0 there).
    assert metadata["batches"][1] == {"epoch": 1, "batch": 9, "steps_done": 10}
    assert metadata["epoch"][0] == {"epoch": 1, "batch": 0, "steps_done": 0}


@pytest.mark.parametrize("chain", list(CHAINS))
@pytest.mark.background("backup_restore")
def test_resumed_run_equals_uninterrupted_run(runs, chain):
    results, _ = runs
    expected, got = results["uninterrupted"], results[chain]
    assert sorted(got) == sorted(expected)
    # The learned state really moved, so equality is not that of untouched variables.
    counts = next(k for k in expected if k.endswith("learned_unigram_sampler/counts"))
    assert expected[counts].sum() == 40 + TOTAL_STEPS * 8  # ones + one count per label
    assert int(expected["iterations"]) == TOTAL_STEPS
    rebuilds = next(k for k in expected if k.endswith("num_rebuilds"))
    assert expected[rebuilds] > 1
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def _heads_model(seed_learned, seed_dynamic):
    v = 50
    tokens = keras.Input((), dtype="int32")
    labels = keras.Input((), dtype="int32")
    h = keras.layers.Embedding(v, 4)(tokens)
    a = tfs.layers.SampledSoftmax(v, num_sampled=5, name="learned",
                                  sampler=tfs.samplers.LearnedUnigramSampler(v, seed=seed_learned))
    b = tfs.layers.SampledSoftmax(
        v, num_sampled=5, name="dyn",
        sampler=tfs.samplers.DynamicAliasSampler(v, seed=seed_dynamic, max_pending=16))
    return keras.Model([tokens, labels], keras.layers.Add()([a([h, labels]), b([h, labels])]))


def test_seed_state_round_trips_through_weights_file(tmp_path):
    model = _heads_model(3, 4)
    sampler = model.get_layer("learned").sampler
    for _ in range(3):
        sampler.seed_generator.next()
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    expected = sampler.sample([[0]], 5)[0].numpy()  # the draw right after the save

    other = _heads_model(3, 4)
    other.load_weights(path)
    restored = other.get_layer("learned").sampler
    np.testing.assert_array_equal(restored.seed_generator.state.numpy(), [3, 3])
    np.testing.assert_array_equal(restored.sample([[0]], 5)[0].numpy(), expected)
    # The other sampler's state (never advanced) is restored as saved, not shared.
    np.testing.assert_array_equal(
        other.get_layer("dyn").sampler.seed_generator.state.numpy(), [4, 0])


def test_keras_file_without_seed_state_loads(tmp_path):
    # Written by tf_sampling 0.1.0: the same two heads, after one epoch of 4 steps. Its
    # reference arrays are the sampler state read in that process right after saving.
    model = keras.models.load_model(os.path.join(DATA, "sampled_heads_v0_1_0.keras"))
    ref = np.load(os.path.join(DATA, "sampled_heads_v0_1_0_ref.npz"))
    learned, dynamic = model.get_layer("learned").sampler, model.get_layer("dyn").sampler
    np.testing.assert_array_equal(learned.counts.numpy(), ref["counts"])
    np.testing.assert_array_equal(dynamic.class_weights.numpy(), ref["weights"])
    # The file has no seed state: the streams stay at their seeds.
    np.testing.assert_array_equal(learned.seed_generator.state.numpy(), [3, 0])
    np.testing.assert_array_equal(dynamic.seed_generator.state.numpy(), [4, 0])
    # Saved again, the file has it.
    learned.seed_generator.state.assign(ref["seed_a"])
    path = str(tmp_path / "again.keras")
    model.save(path)
    again = keras.models.load_model(path)
    np.testing.assert_array_equal(
        again.get_layer("learned").sampler.seed_generator.state.numpy(), ref["seed_a"])


class _RaiseAfter(keras.callbacks.Callback):
    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def on_train_batch_end(self, batch, logs=None):
        if batch + 1 == self.steps:
            raise RuntimeError("interrupted")


def test_fit_that_raises_while_skipping_leaves_later_fits_training(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((40, 2), "float32"), np.zeros((40, 1), "float32")  # 10 steps of 4

    def fit(*callbacks):
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
                  callbacks=list(callbacks))
        return int(model.optimizer.iterations.numpy())

    def backup():
        return tfs.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq=6)

    with pytest.raises(RuntimeError):
        fit(backup(), _RaiseAfter(7))  # backup after step 6
    assert int(model.optimizer.iterations.numpy()) == 7
    with pytest.raises(RuntimeError):
        fit(backup(), _RaiseAfter(2))  # restores step 6, raises while skipping
    assert int(model.optimizer.iterations.numpy()) == 6
    assert fit() == 16  # a plain fit trains all 10 steps
    assert fit(backup()) == 10  # restores step 6 again, skips 6 steps, trains 4


def test_save_freq_is_checked():
    for bad in (0, -1, 2.5, True, "batch"):
        with pytest.raises(ValueError, match="save_freq"):
            tfs.callbacks.BackupAndRestore("/tmp/unused_backup_dir", save_freq=bad)

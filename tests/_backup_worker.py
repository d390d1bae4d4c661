"""One training process for tests/test_backup_restore.py.

    python _backup_worker.py OUT.npz BACKUP_DIR SAVE_FREQ KILL_AT CALLBACK [STEPS_PER_EXECUTION]

Trains a tiny model (two sampled heads, one with a LearnedUnigramSampler and one with a
DynamicAliasSampler, and a FrequencyEstimator, all updated by every training step) with a
BackupAndRestore callback (CALLBACK: "tfs" or "keras"). With KILL_AT > 0 the process dies
with os._exit(1) (as in a crash: no cleanup, no on_train_end) once global step KILL_AT is
done;
otherwise it finishes and writes every weight, the optimizer's iterations, the seed
states and the negatives the samplers draw next to OUT.npz.
"""

import os
import sys

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tf_sampling as tfs  # noqa: E402

V, BATCH, STEPS_PER_EPOCH, EPOCHS = 40, 8, 10, 3


class KillAt(keras.callbacks.Callback):
    """Ends the process once global step `step` (1-based, counted over epochs) is done."""

    def __init__(self, step):
        super().__init__()
        self.step = step
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch * STEPS_PER_EPOCH + batch + 1 >= self.step:
            os._exit(1)


def build(steps_per_execution=1):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((), dtype="int32", name="tokens")
    labels = keras.Input((), dtype="int32", name="labels")
    hidden = keras.layers.Embedding(V, 4, name="embedding")(tokens)
    learned = tfs.layers.SampledSoftmax(
        V, num_sampled=6, sampler=tfs.samplers.LearnedUnigramSampler(V, seed=3), name="learned")
    # max_pending=16: the table is rebuilt during the run, so rebuilds are covered too.
    dynamic = tfs.layers.SampledSoftmax(
        V, num_sampled=6, sampler=tfs.samplers.DynamicAliasSampler(V, max_pending=16, seed=4),
        name="dynamic")
    estimator = tfs.FrequencyEstimator(num_buckets=32, name="estimator")
    model = keras.Model([tokens, labels], [learned([hidden, labels]),
                                           dynamic([hidden, labels]), estimator(labels)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), steps_per_execution=steps_per_execution)
    return model


def data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, V, STEPS_PER_EPOCH * BATCH).astype("int32")
    # Skewed labels, so the learned distributions move away from uniform.
    y = np.minimum(rng.geometric(0.15, x.size) - 1, V - 1).astype("int32")
    return x, y


def main(out, backup_dir, save_freq, kill_at, callback, steps_per_execution=1):
    save_freq = save_freq if save_freq == "epoch" else int(save_freq)
    model = build(steps_per_execution)
    x, y = data()
    backup_cls = (tfs.callbacks.BackupAndRestore if callback == "tfs"
                  else keras.callbacks.BackupAndRestore)
    callbacks = [backup_cls(backup_dir, save_freq=save_freq)]
    if kill_at > 0:
        callbacks.append(KillAt(kill_at))
    model.fit([x, y], epochs=EPOCHS, batch_size=BATCH, shuffle=False, verbose=0,
              callbacks=callbacks)
    state = {f"w{i}_{w.path}": np.asarray(w) for i, w in enumerate(model.weights)}
    state["iterations"] = np.asarray(model.optimizer.iterations)
    for name in ("learned", "dynamic"):
        sampler = model.get_layer(name).sampler
        state[f"seed_{name}"] = np.asarray(sampler.seed_generator.state)
        state[f"next_negatives_{name}"] = np.asarray(sampler.sample([[0]], 6)[0])
    np.savez(out, **state)


if __name__ == "__main__":
    main(*sys.argv[1:4], int(sys.argv[4]), sys.argv[5], *map(int, sys.argv[6:]))

"""`BackupAndRestore` that resumes an interrupted epoch where its backup was taken.

`keras.callbacks.BackupAndRestore` (Keras 3.15) with `save_freq=N` saves the weights
every N batches, but on restart it restores them and then trains the interrupted epoch
from its first batch: the batches before the backup are trained on twice. The weights,
the optimizer, and every counter that a training step updates (learned sampler counts,
dynamic sampler weights, `FrequencyEstimator` state, seed generator streams) then differ
from an uninterrupted run. (Its epoch number is also the one of the last completed epoch
of the current process, so a second interruption in a resumed epoch restarts an earlier
one.)

This callback records, with each backup, the epoch and how many of its steps are done.
On restart it restores the backup (weights, optimizer state, sampler state and seed
streams, see `CandidateSampler`), starts `fit` at that epoch, and passes over the steps
that the backup already contains: for those, `model.train_function` only advances the
data iterator (one `get_next` per batch, no training step, no sampler update). The
resumed run then trains on the same batches in the same order, from the same state, as
the uninterrupted run.
"""

import json
import math
import os
import warnings

import keras
import tensorflow as tf

_POSITION_KEY = "steps_done"
_UNWRAPPED = "_tfs_train_function"  # on a skipping wrapper: the train_function it replaces


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Backs up the training state and, after an interruption, resumes at the batch of the
    last backup instead of the start of its epoch.

    A drop-in replacement for `keras.callbacks.BackupAndRestore`, with the same arguments
    and files (`latest.weights.h5` and `training_metadata.json` in `backup_dir`; the
    metadata also records `steps_done` in the epoch). A backup holds the model's weights,
    the optimizer's variables (its `iterations` included), and the samplers' state: learned
    counts, dynamic weights and seed-generator states.

    After an interruption at any step and a restart with the same model, data and
    arguments, training continues exactly as if it had not been interrupted (weights,
    sampler state and the negatives drawn), provided that:

    - the data comes in the same order in every process: arrays with `shuffle=False`, or
      with `shuffle=True` after `keras.utils.set_random_seed`, or a `tf.data` pipeline
      whose order depends only on the epoch. The skipped batches are read and dropped, so
      skipping costs the input pipeline's time only;
    - the model's other random state is seeded or restored the same way (Dropout and
      other layers' seed generators are not saved by Keras);
    - the ops are deterministic (`tf.config.experimental.enable_op_determinism()` on GPU).

    The epoch's logged metrics cover only the steps run after the restart: Keras resets
    metrics at the start of each epoch and does not back them up.

    Args:
        backup_dir: directory for the backup files; used by this callback only.
        save_freq: `"epoch"` (back up at the end of each epoch) or a positive int (back up
            every `save_freq` batches, counting across epochs as Keras does), or `False`
            (never back up; only restore).
        double_checkpoint: also keep the previous backup, used if the latest one cannot be
            read.
        delete_checkpoint: delete `backup_dir` when `fit` completes.

    Example:
    >>> backup = tfs.callbacks.BackupAndRestore("/tmp/backup", save_freq=100)
    >>> model.fit(dataset, epochs=10, callbacks=[backup])   # rerun the same line after a crash
    """

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False,
                 delete_checkpoint=True):
        if save_freq is not False and save_freq != "epoch" and (
                isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1):
            raise ValueError(f"`save_freq` must be 'epoch', a positive integer or False, got "
                             f"{save_freq!r}.")
        super().__init__(backup_dir, save_freq=save_freq, double_checkpoint=double_checkpoint,
                         delete_checkpoint=delete_checkpoint)
        self._files = os.path.join(backup_dir, "latest.weights.h5"), os.path.join(
            backup_dir, "training_metadata.json")
        self._previous_files = tuple(f + ".bkp" for f in self._files)
        self._epoch = 0
        self._steps_done = 0        # steps of self._epoch done, by any process
        self._since_backup = 0      # steps trained since the last backup
        self._skip = None           # while skipping: the model's own train_function

    # ------------------------------------------------------------------ restore
    def on_train_begin(self, logs=None):
        if not self.model.built:
            raise ValueError(
                "To use BackupAndRestore, the model must be built before `fit()`; call it "
                f"on a batch of data first. Model {self.model.name} is not built.")
        self._stop_skipping()
        self._epoch, self._steps_done, self._since_backup = -1, 0, 0
        try:
            metadata = self._restore(self._files)
        except (OSError, ValueError):
            if not all(tf.io.gfile.exists(f) for f in self._previous_files):
                raise
            metadata = self._restore(self._previous_files)
        if metadata is None:
            return
        epoch = int(metadata["epoch"])
        self.model._initial_epoch = epoch  # how Keras' own callback sets the start epoch
        self._epoch = epoch
        if _POSITION_KEY not in metadata and int(metadata.get("batch", 0)) > 0:
            warnings.warn(
                f"The backup in {self.backup_dir} was written by keras.callbacks."
                "BackupAndRestore, which does not record how many steps of epoch "
                f"{epoch} it contains: that epoch is trained from its first batch, and the "
                "batches before the backup are trained on (and counted by learning "
                "samplers) twice.", stacklevel=2)
        self._steps_done = int(metadata.get(_POSITION_KEY, 0))
        if self._steps_done > 0:
            self._start_skipping(self._steps_done)

    def _restore(self, files):
        weights, metadata = files
        if not tf.io.gfile.exists(weights):
            return None
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(weights)
        if not tf.io.gfile.exists(metadata):
            return None
        with tf.io.gfile.GFile(metadata, "r") as f:
            return json.loads(f.read())

    def _start_skipping(self, steps):
        model = self.model
        # A wrapper left by a fit that raised while skipping is replaced, not wrapped.
        train_function = getattr(model.train_function, _UNWRAPPED, model.train_function)
        per_call = int(getattr(model, "steps_per_execution", 1) or 1)
        calls_left = [math.ceil(steps / per_call)]
        seen = []  # the iterator of the epoch being skipped

        def skip_batches(iterator):
            # What the fit loop calls for a step the backup already contains: consume its
            # batches, run nothing. Returns the metrics as they are (reset at epoch start).
            if seen and iterator is not seen[0]:
                # Another epoch or another fit: the fit that installed this wrapper ended
                # (by an exception) before all its skipped steps were read. Train.
                model.train_function = train_function
                return train_function(iterator)
            seen[:] = [iterator]
            for _ in range(per_call):
                if hasattr(iterator, "get_next_as_optional"):
                    if not iterator.get_next_as_optional().has_value():
                        raise StopIteration
                else:
                    next(iterator)
            calls_left[0] -= 1
            if calls_left[0] == 0:
                self._stop_skipping()
            return model.get_metrics_result()

        setattr(skip_batches, _UNWRAPPED, train_function)
        self._skip = train_function
        model.train_function = skip_batches

    def _stop_skipping(self):
        if self._skip is not None:
            if getattr(self.model.train_function, _UNWRAPPED, None) is self._skip:
                self.model.train_function = self._skip
            self._skip = None

    # ------------------------------------------------------------------ back up
    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self._epoch:
            self._epoch = epoch
            self._steps_done = 0

    def on_train_batch_end(self, batch, logs=None):
        done = batch + 1  # `batch` is the last step of the execution, 0-based
        if done <= self._steps_done:  # a step the restored backup already contains
            return
        self._since_backup += done - self._steps_done
        self._steps_done = done
        if self.save_freq != "epoch" and self.save_freq is not False and (
                self._since_backup >= self.save_freq):
            self._since_backup = 0
            self._back_up(self._epoch, done, batch)

    def on_epoch_end(self, epoch, logs=None):
        self._stop_skipping()  # an epoch ended before all its skipped steps were read
        self._epoch = epoch + 1
        self._steps_done = 0
        if self.save_freq == "epoch":
            self._back_up(epoch + 1, 0, 0)

    def _back_up(self, epoch, steps_done, batch):
        weights, metadata = self._files
        tf.io.gfile.makedirs(self.backup_dir)
        if self.double_checkpoint:
            for current, previous in zip(self._files, self._previous_files):
                if tf.io.gfile.exists(current):
                    tf.io.gfile.copy(current, previous, overwrite=True)
        # Written to a temporary file and renamed, so a crash while writing leaves the
        # previous backup readable. "epoch" and "batch" as Keras writes them.
        tmp = os.path.join(self.backup_dir, "incomplete.weights.h5")
        self.model.save_weights(tmp, overwrite=True)
        tf.io.gfile.rename(tmp, weights, overwrite=True)
        with tf.io.gfile.GFile(metadata + ".tmp", "w") as f:
            f.write(json.dumps({"epoch": epoch, "batch": batch, _POSITION_KEY: steps_done}))
        tf.io.gfile.rename(metadata + ".tmp", metadata, overwrite=True)

    def on_train_end(self, logs=None):
        self._stop_skipping()
        if self.delete_checkpoint and tf.io.gfile.exists(self.backup_dir):
            tf.io.gfile.rmtree(self.backup_dir)

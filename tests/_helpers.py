"""Helpers shared by several test files: gradients of a loss, a layer that owns a sampler,
and the prelude of child processes that must run without the package."""

import textwrap

import keras
import tensorflow as tf

import tf_sampling as tfs


def value_and_grads(fn, w, b, x):
    """[per-example loss, d/dx, d/dw, d/db] of `fn(w, b, x)`, on fresh variables."""
    w, b, x = tf.Variable(w), tf.Variable(b), tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = fn(w, b, x)
        # A non-uniform weighting so that a per-example error cannot cancel out.
        weights = tf.cast(tf.range(1, tf.shape(loss)[0] + 1), loss.dtype)
        total = tf.reduce_sum(loss * weights)
    grads = tape.gradient(total, [x, w, b])
    return [loss.numpy()] + [tf.convert_to_tensor(g).numpy() for g in grads]


@keras.saving.register_keras_serializable(package="tf_sampling_tests")
class SamplerHolder(keras.layers.Layer):
    """A minimal layer owning a sampler, as the output heads do: it draws `num_sampled`
    classes, learns from the labels in training, and returns their expected counts."""

    def __init__(self, sampler, num_sampled=4, **kwargs):
        super().__init__(**kwargs)
        self.sampler = tfs.samplers.get(sampler)
        self.num_sampled = num_sampled
        # As the heads do: Keras compiles with XLA only where every layer supports it.
        self.supports_jit = bool(getattr(self.sampler, "supports_xla", False))

    def call(self, labels, training=False):
        labels = tf.cast(labels, tf.int64)
        out = self.sampler.sample(labels, self.num_sampled, unique=True)
        if training:
            self.sampler.update(labels)
        return out.true_expected_count

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "sampler": tfs.samplers.serialize(self.sampler),
                "num_sampled": self.num_sampled}


@keras.saving.register_keras_serializable(package="tf_sampling_tests")
class AddSquareLoss(keras.layers.Layer):
    def call(self, x):
        self.add_loss(keras.ops.mean(keras.ops.square(x)))
        return x


def sampler_model(sampler, num_sampled=4):
    """A compiled model `[x [n, 3], labels [n, 1]]` whose `fit` updates `sampler` (held by
    a `SamplerHolder`) through its own `add_loss`."""
    x = keras.Input((3,))
    labels = keras.Input((1,), dtype="int64")
    ec = SamplerHolder(sampler, num_sampled)(labels)
    model = keras.Model([x, labels], AddSquareLoss()(keras.layers.Dense(1)(x) * ec))
    model.compile(optimizer="sgd")  # no loss: the model's own add_loss
    return model


# Any import of tf_sampling after this fails loudly: what a child process starting with it
# serves needs plain TensorFlow only.
_BLOCK_PACKAGE = textwrap.dedent(r"""
    import importlib.abc, sys

    class _BlockPackage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tf_sampling" or name.startswith("tf_sampling."):
                raise ImportError("tf_sampling must not be needed to serve")
            return None

    sys.meta_path.insert(0, _BlockPackage())
""")


def without_package(script):
    """`script`, the source of a child process, run after a hook that makes every import
    of tf_sampling fail."""
    return _BLOCK_PACKAGE + textwrap.dedent(script)


# One long-lived child process, started by the first clean-process script of the run,
# serves them all: it has TensorFlow imported and tf_sampling blocked, and runs each script
# sent to it in a fresh namespace, so only the first such test pays a Python and
# TensorFlow start.
_SERVER = _BLOCK_PACKAGE + textwrap.dedent(r"""
    import contextlib, io, json, os, sys, traceback
    import tensorflow as tf  # noqa: F401 (the start every script would pay)

    for line in sys.stdin:
        request = json.loads(line)
        out, err, code = io.StringIO(), io.StringIO(), 0
        os.chdir(request["cwd"])
        sys.argv = ["-c"] + request["argv"]
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                exec(compile(request["script"], "<clean script>", "exec"),
                     {"__name__": "__main__"})
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            code = 1
            err.write(traceback.format_exc())
        sys.__stdout__.write(json.dumps({"returncode": code, "stdout": out.getvalue(),
                                         "stderr": err.getvalue()}) + "\n")
        sys.__stdout__.flush()
""")


class _CleanServer:
    def __init__(self):
        import atexit
        import os
        import subprocess
        import sys
        import tempfile
        import threading

        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, env=env, cwd=tempfile.gettempdir())
        atexit.register(self.close)

    def run(self, script, argv=(), cwd=None, timeout=300):
        import json
        import os
        import subprocess
        import threading

        request = {"script": script, "argv": [str(a) for a in argv],
                   "cwd": str(cwd or os.getcwd())}
        with self._lock:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the clean server exited with {self._proc.returncode}")
            timer = threading.Timer(timeout, self._proc.kill)
            timer.start()
            try:
                self._proc.stdin.write(json.dumps(request) + "\n")
                self._proc.stdin.flush()
                line = self._proc.stdout.readline()
            finally:
                timer.cancel()
        if not line:
            raise RuntimeError(f"the clean server died (timeout {timeout} s?)")
        reply = json.loads(line)
        return subprocess.CompletedProcess(["<clean server>"], reply["returncode"],
                                           reply["stdout"], reply["stderr"])

    def close(self):
        if self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=10)
            except Exception:  # noqa: BLE001
                self._proc.kill()


_CLEAN = None


def run_clean(script, argv=(), cwd=None, timeout=300):
    """Runs `script` (Python source) with `argv` in the suite's clean process: plain
    TensorFlow with tf_sampling blocked and not importable, as a fresh `python -c` would,
    but without its start. Returns a `subprocess.CompletedProcess` (stdout: what the
    script printed)."""
    global _CLEAN
    if _CLEAN is None:
        _CLEAN = _CleanServer()
    return _CLEAN.run(script, argv, cwd, timeout)

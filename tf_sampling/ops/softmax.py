"""The fused log-normaliser and top k of a linear output layer
(custom_ops/cc/kernels/softmax_stats.h).

`log_normalizer(x, kernel, bias)` is `logsumexp(x @ kernel^T + bias, axis=1)` computed by
the compiled CPU op, which fuses the product with a streaming log-sum-exp in cache-sized
tiles (AVX2+FMA where the CPU has it): the `[batch, classes]` logits never exist, and the
exps cost about what the product does. `softmax_stats(..., k)` also gives each row's k
largest logits, kept in a heap as the tiles pass. Both return None where the op cannot
run: the library not loaded (or `TF_SAMPLING_PY_OPS=1`), a GPU visible (the op has a CPU
kernel only, and the XLA chunk loop of `tf_sampling._chunked` is the better path there),
or inputs that are not float32. `tf_sampling._chunked` also requires `fast()` (a CPU with
AVX2 and FMA, where the op's vectorised loop runs), and calls the op only for heads that
Keras never compiles with XLA (`supports_jit` False): the op has no XLA kernel.
"""

import functools
import os
import platform

import tensorflow as tf

from tf_sampling.ops import _loader


def available():
    """Whether `log_normalizer` and `softmax_stats` run the compiled op in this process."""
    module = _loader.LIBRARY.get()
    if module is None or getattr(module, "tf_sampling_softmax_stats", None) is None:
        return False
    return not tf.config.list_logical_devices("GPU")


@functools.lru_cache(maxsize=None)
def _cpu_has_avx2_fma():
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


def fast():
    """Whether the op is available and runs its AVX2+FMA loop here (an x86-64 CPU with both,
    `TF_SAMPLING_NO_AVX2` unset). Its portable loop (scalar `std::exp`) is several times
    slower than the XLA chunk loop, so `tf_sampling._chunked` uses the op only where this
    holds."""
    return (available() and os.environ.get("TF_SAMPLING_NO_AVX2", "") != "1"
            and _cpu_has_avx2_fma())


def softmax_stats(x, kernel, bias=None, k=0):
    """`(lse [batch], top_values [batch, k], top_ids [batch, k] int32)` of the logits
    `x @ kernel^T + bias` by the compiled op (the top k largest logits, best first, ties
    to the lower id); None where the op cannot run. No gradient is defined for the op;
    callers that differentiate the log-normaliser wrap it (`tf_sampling._chunked`).
    """
    if not available():
        return None
    if x.dtype != tf.float32 or kernel.dtype != tf.float32 or (
            bias is not None and bias.dtype != tf.float32):
        return None
    bias = tf.zeros([0], tf.float32) if bias is None else tf.convert_to_tensor(bias)
    return _loader.LIBRARY.get().tf_sampling_softmax_stats(
        x, tf.convert_to_tensor(kernel), bias, k=k)


def log_normalizer(x, kernel, bias=None):
    """`[batch]` log-normaliser of `x [batch, dim]` against `kernel [classes, dim]` and
    `bias [classes]` (or None), by the compiled op; None where it cannot run."""
    out = softmax_stats(x, kernel, bias)
    return None if out is None else out[0]

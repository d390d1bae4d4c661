"""Lazy loading of the compiled ops, after tensorflow/addons' `LazySO`.

The CPU library (`_tf_sampling_ops*.so`: the alias-table ops, the fused skip-gram training
op and their CPU kernels) is loaded on first use, not at import. If it is missing, was built
against another TensorFlow minor version, or fails to load, ONE warning is issued, saying
how to (re)build it, and callers use the pure-TF fallback. C++ ops have no stable ABI across TF minor releases; any patch release of the
build's minor version is accepted, as tensorflow/addons did (its resource_loader.py loads
ops built for 2.4 in [2.4.0, 2.5.0)). `TF_SAMPLING_PY_OPS=1` selects the fallback without a
warning.
The CUDA kernels live in a separate library (`_tf_sampling_ops_gpu*.so`), loaded after the
CPU one when present; if it fails to load, the CPU kernels still serve.
A library of the earlier name `_alias_ops*.so` is not loaded (its ops have other
signatures): when it is the only one there, the warning says to rebuild.
"""

import glob
import os
import sys
import threading
import warnings

import tensorflow as tf

_HERE = os.path.dirname(os.path.abspath(__file__))
ENV_FORCE_FALLBACK = "TF_SAMPLING_PY_OPS"
_MARKER = b"TF_SAMPLING_BUILT_WITH_TF="
# pyproject.toml's build and runtime requirements name one minor version, so a normal
# install never meets a mismatch; these say how to build for the running TensorFlow.
_HOW_TO_BUILD = (
    "{what} against the running TensorFlow from the source checkout: `{python} -m pip "
    "install --no-build-isolation --no-deps -e .` (--no-build-isolation compiles against "
    "the installed TensorFlow, --no-deps keeps pip from replacing it), or `make -C "
    "custom_ops PYTHON={python}`")


def _how_to_build(rebuild):
    what = ("Install the TensorFlow it was built for, or rebuild it" if rebuild
            else "Build it")
    return _HOW_TO_BUILD.format(what=what, python=sys.executable)


def same_abi(built, running):
    """Whether a library built against TF `built` loads in TF `running`: same major.minor."""
    def minor(version):
        return tuple(version.split(".")[:2]) if version else None
    return built is not None and minor(built) == minor(running)


class CustomOpWarning(RuntimeWarning):
    """The compiled ops could not be used; the pure-TF fallback is used instead."""


def _find(directory, stem):
    # `STEM.so` (make) or `STEM.cpython-311-x86_64-linux-gnu.so` (setuptools); the pattern
    # needs the '.' so that `STEM_gpu*` does not match `STEM`.
    paths = glob.glob(os.path.join(directory, stem + ".so")) + glob.glob(
        os.path.join(directory, stem + ".*.so"))
    return max(paths, key=os.path.getmtime) if paths else None


def built_with_tf_version(path):
    """The TF version a library of ours was compiled against, read from the file
    without loading it (a marker string compiled into it), or None."""
    with open(path, "rb") as f:
        data = f.read()
    start = data.find(_MARKER)
    if start < 0:
        return None
    start += len(_MARKER)
    end = data.find(b";", start, start + 64)
    return data[start:end].decode("ascii", "replace") if end > 0 else None


class CustomOpLibrary:
    """One compiled op library, loaded on first `get()`; `None` if unusable."""

    def __init__(self, directory=_HERE, stem="_tf_sampling_ops",
                 gpu_stem="_tf_sampling_ops_gpu", old_stem="_alias_ops"):
        self.directory = directory
        self.stem = stem
        self.gpu_stem = gpu_stem
        self.old_stem = old_stem  # the earlier name, only to say "rebuild"
        self._lock = threading.Lock()
        self.reset()

    def reset(self):
        """Forgets the load attempt (tests use this after changing the environment)."""
        self._tried = False
        self._module = None
        self.reason = None  # why the library is unusable, if it is
        self.path = None
        self.gpu_loaded = False

    def get(self):
        """The loaded op module, or None (then the fallback must be used)."""
        if not self._tried:
            with self._lock:
                if not self._tried:
                    self._module = self._load()
                    self._tried = True
        return self._module

    def _unusable(self, reason, warn=True):
        self.reason = reason
        if warn:
            warnings.warn(f"tf_sampling: {reason}; using the pure-TensorFlow fallback "
                          "(same distributions, slower).", CustomOpWarning, stacklevel=4)
        return None

    def _load(self):
        if os.environ.get(ENV_FORCE_FALLBACK, "") == "1":
            return self._unusable(f"{ENV_FORCE_FALLBACK}=1", warn=False)
        path = _find(self.directory, self.stem)
        if path is None:
            old = _find(self.directory, self.old_stem) if self.old_stem else None
            if old is not None:
                return self._unusable(
                    f"{os.path.basename(old)} in {self.directory} is a library of an earlier "
                    f"version of tf-sampling (its ops differ); {self.stem}.so was not found. "
                    f"{_how_to_build(rebuild=False)}")
            return self._unusable(
                f"the custom op library ({self.stem}.so) was not found in {self.directory}. "
                f"{_how_to_build(rebuild=False)}")
        self.path = path
        built = built_with_tf_version(path)
        if not same_abi(built, tf.__version__):
            return self._unusable(
                f"{os.path.basename(path)} was built against TensorFlow {built}, but "
                f"TensorFlow {tf.__version__} is running (compiled ops need the same "
                f"major.minor version). {_how_to_build(rebuild=True)}")
        try:
            module = tf.load_op_library(path)
        except Exception as e:  # NotFoundError (undefined symbol), OSError, ...
            return self._unusable(f"loading {path} failed ({type(e).__name__}: {e})")
        self._load_gpu_kernels()
        return module

    def _load_gpu_kernels(self):
        gpu_path = _find(self.directory, self.gpu_stem)
        if gpu_path is None:
            return
        if not same_abi(built_with_tf_version(gpu_path), tf.__version__):
            warnings.warn(f"tf_sampling: {os.path.basename(gpu_path)} was built against another "
                          "TensorFlow version; the alias ops run on the CPU only.",
                          CustomOpWarning, stacklevel=5)
            return
        try:
            tf.load_library(gpu_path)
            self.gpu_loaded = True
        except Exception as e:
            warnings.warn(f"tf_sampling: loading the CUDA kernels ({gpu_path}) failed "
                          f"({type(e).__name__}: {e}); the alias ops run on the CPU only.",
                          CustomOpWarning, stacklevel=5)


LIBRARY = CustomOpLibrary()


def custom_ops_available():
    """Whether the compiled ops are loaded (loads them on first call).

    >>> tfs.ops.custom_ops_available()
    True
    """
    return LIBRARY.get() is not None

"""Builds the optional custom ops (custom_ops/: alias tables, fused skip-gram training) into
the package.

`pip install .` and `pip install -e .` run `make -C custom_ops` with the compile and link
flags of the TensorFlow in the build environment (pyproject.toml pins it; use
`--no-build-isolation` to build against the TensorFlow already installed). The CPU
library is always attempted; the CUDA library only when nvcc is on the PATH and that
TensorFlow is built with CUDA, or when TF_SAMPLING_BUILD_CUDA=1 (TF_SAMPLING_BUILD_CUDA=0
skips it). A failed compile does not fail the install: the package then uses its
pure-TensorFlow fallback, and says so once when first used.

Re-installs reuse the earlier build: the libraries, objects and TensorFlow flags live in
build/custom_ops/ in the source tree (setuptools builds extensions in a temporary directory
for an editable install, then copies them into the package), make rebuilds only what
changed sources or another TensorFlow make stale (see custom_ops/Makefile), and the
libraries are then copied to where setuptools wants them. With unchanged sources and the
same TensorFlow nothing is compiled.

The build ends with one summary line: which libraries were compiled or found up to date,
and why the CUDA library was or was not built. pip shows a build's output only with -v
(or when the build fails), so the line is also written to the terminal (/dev/tty) when
there is one.
"""

import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_ROOT = os.path.dirname(os.path.abspath(__file__))
_CPU = "tf_sampling.ops._tf_sampling_ops"
_GPU = "tf_sampling.ops._tf_sampling_ops_gpu"


def _say(msg, to_terminal=False):
    # pip shows a build's output only with -v; stderr lines still land in its log.
    line = f"tf-sampling: {msg}"
    print(line, file=sys.stderr, flush=True)
    if to_terminal:
        # pip captures the backend's stdout and stderr, but the controlling terminal, when
        # there is one, is still reachable: the summary is seen without -v.
        try:
            with open("/dev/tty", "w") as tty:
                tty.write(line + "\n")
        except OSError:
            pass


def _tf_built_with_cuda():
    code = ("import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'; import tensorflow as tf; "
            "print(tf.test.is_built_with_cuda())")
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=600)
    except (OSError, subprocess.SubprocessError):
        return False
    return out.stdout.strip().endswith("True")


def _build_cuda():
    env = os.environ.get("TF_SAMPLING_BUILD_CUDA", "")
    if env == "0":
        return False, "TF_SAMPLING_BUILD_CUDA=0"
    if env == "1":
        return True, "TF_SAMPLING_BUILD_CUDA=1"
    nvcc = os.environ.get("NVCC", "nvcc")
    if shutil.which(nvcc) is None:
        return False, f"{nvcc} is not on the PATH"
    if not _tf_built_with_cuda():
        return False, "TensorFlow is not built with CUDA"
    return True, "nvcc and a CUDA-enabled TensorFlow found"


class BuildCustomOps(build_ext):
    """Runs custom_ops/Makefile instead of setuptools' compiler; never fails the install."""

    def run(self):
        self._cuda, self._cuda_reason = _build_cuda()
        self._summary = []
        super().run()
        _say("custom ops: " + "; ".join(self._summary), to_terminal=True)

    def build_extension(self, ext):
        out = os.path.abspath(self.get_ext_fullpath(ext.name))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        if ext.name == _GPU:
            if not self._cuda:
                self._summary.append(f"CUDA library not built ({self._cuda_reason})")
                return
            target, var, what = "gpu", "GPU_LIB", "CUDA library"
        else:
            target, var, what = "cpu", "CPU_LIB", "CPU library"
        build_dir = os.path.join(_ROOT, "build", "custom_ops")
        lib = os.path.join(build_dir, os.path.basename(out))
        before = os.path.getmtime(lib) if os.path.exists(lib) else None
        cmd = ["make", "-C", os.path.join(_ROOT, "custom_ops"), target,
               f"PYTHON={sys.executable}", f"{var}={lib}", f"BUILD_DIR={build_dir}"]
        if os.environ.get("NVCC"):
            cmd.append(f"NVCC={os.environ['NVCC']}")
        _say("building " + os.path.basename(out) + ": " + " ".join(cmd))
        try:
            subprocess.run(cmd, check=True)
            if os.path.abspath(out) != os.path.abspath(lib):
                shutil.copy2(lib, out)
        except (OSError, subprocess.CalledProcessError) as e:
            if os.path.exists(out):
                os.remove(out)
            _say(f"WARNING: building the {what} failed ({e}). The install goes on; "
                 + ("the ops will run on the CPU only." if ext.name == _GPU else
                    "tf_sampling.ops will use its pure-TensorFlow fallback."))
            self._summary.append(f"{what} FAILED, pip -v shows why (" + (
                "the ops run on the CPU only)" if ext.name == _GPU else
                "the pure-TensorFlow fallback is used)"))
            return
        name = os.path.basename(out)
        if ext.name == _GPU:
            name += f" [{self._cuda_reason}]"
        if before is not None and os.path.getmtime(lib) == before:
            self._summary.append(f"{what} {name}: up to date, nothing compiled (same "
                                 "sources, same TensorFlow)")
        else:
            self._summary.append(f"{what} {name}: compiled")

    def get_outputs(self):
        return [p for p in super().get_outputs() if os.path.exists(p)]


setup(
    ext_modules=[Extension(_CPU, sources=[], optional=True),
                 Extension(_GPU, sources=[], optional=True)],
    cmdclass={"build_ext": BuildCustomOps},
)

"""The CUDA code compiles with nvcc (skipped where nvcc is absent). No GPU is needed: this
checks the build, not the kernels; custom_ops/gpu_harness tests those on a GPU
(results in custom_ops/GPU_RESULTS.md)."""

import os
import shutil
import subprocess

import pytest

import _background

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NVCC = shutil.which(os.environ.get("NVCC", "nvcc"))


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
def test_cuda_kernels_compile_with_nvcc(tmp_path):
    """alias_kernels.cu.cc (the split-method build and the sampler of alias_gpu.cu.h) to an
    object file, with the flags of custom_ops/Makefile and one architecture to stay fast."""
    cc = os.path.join(ROOT, "custom_ops", "cc")
    obj = tmp_path / "alias_kernels.cu.o"
    cmd = [NVCC, "-std=c++17", "-O3", "-c", "-x", "cu", "-DGOOGLE_CUDA=1",
           "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC", "-fmad=false", "-I", cc,
           "-gencode", "arch=compute_80,code=sm_80",
           os.path.join(cc, "kernels", "alias_kernels.cu.cc"), "-o", str(obj)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert obj.stat().st_size > 10_000
    # The kernels are really in it (not compiled away by a wrong #if).
    symbols = subprocess.run(["nm", "-C", str(obj)], capture_output=True, text=True).stdout
    if symbols:
        for kernel in ("SampleKernel", "SweepKernel", "SplitKernel", "ScatterKernel"):
            assert kernel in symbols, kernel


def _build_harness():
    """nvcc on custom_ops/gpu_harness/alias_harness.cu, as run.sh builds it, for one
    architecture: `(returncode, stderr, size of the executable)`. A child process that takes
    ~13 s, so it runs beside the other tests (tests/_background.py)."""
    tmp = _background.temp_dir("gpu_harness")
    cc = os.path.join(ROOT, "custom_ops", "cc")
    exe = os.path.join(tmp, "alias_harness")
    cmd = [NVCC, "-O3", "-std=c++17", "-fmad=false", "-I", cc,
           "-gencode", "arch=compute_80,code=sm_80",
           os.path.join(ROOT, "custom_ops", "gpu_harness", "alias_harness.cu"), "-o", exe]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    return run.returncode, run.stderr, (os.path.getsize(exe) if os.path.exists(exe) else 0)


HARNESS = _background.register("gpu_harness", _build_harness) if NVCC else None


@(pytest.mark.background(HARNESS) if HARNESS else pytest.mark.skip(reason="nvcc not found"))
def test_gpu_harness_compiles_with_nvcc():
    """custom_ops/gpu_harness/alias_harness.cu (the standalone GPU test and benchmark,
    which compares the kernels with the CPU code of the alias-table headers) builds as run.sh
    builds it, for one architecture."""
    returncode, stderr, size = _background.result(HARNESS)
    assert returncode == 0, stderr
    assert size > 100_000

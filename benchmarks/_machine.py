"""What a benchmark ran on, for its output header (shared by the benchmark scripts)."""

import os
import platform

import keras
import numpy as np
import tensorflow as tf


def machine():
    """CPU model, core counts and library versions, as a dict."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "usable_cores": usable,
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__,
            "gpus": len(tf.config.list_physical_devices("GPU"))}

"""Paths into the checkout, shared by the benchmark scripts that use the examples' code."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# WikiText-2 and the word-similarity sets live beside the checkout, not in it.
SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")


def use_examples():
    """Makes examples/ importable (the example scripts and their helpers), and the
    checkout's own tf_sampling where none is installed."""
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        import tf_sampling  # noqa: F401
    except ImportError:  # a checkout without `pip install -e .`
        sys.path.insert(0, ROOT)

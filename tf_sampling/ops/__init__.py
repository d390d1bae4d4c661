"""Custom C++/CUDA ops with pure-TF fallbacks.

The alias-table ops (custom_ops/) are compiled at install time and loaded lazily on first
use; `custom_ops_available()` says whether they loaded. Without them (or with
`TF_SAMPLING_PY_OPS=1`), the same functions run a pure-TensorFlow implementation.
"""

from tf_sampling.ops._loader import CustomOpWarning, custom_ops_available
from tf_sampling.ops.alias import (
    AliasTable,
    UniqueSample,
    alias_build,
    alias_mixture_sample,
    alias_pack,
    alias_probabilities,
    alias_sample,
    alias_unpack,
)
from tf_sampling.ops.skipgram import skipgram_train

__all__ = [
    "AliasTable",
    "CustomOpWarning",
    "UniqueSample",
    "alias_build",
    "alias_mixture_sample",
    "alias_pack",
    "alias_probabilities",
    "alias_sample",
    "alias_unpack",
    "custom_ops_available",
    "skipgram_train",
]

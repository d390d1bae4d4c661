"""Keras layers (output heads) built on the samplers and losses, and an `Embedding` input
table whose lookup reads only the rows it needs.

Every head is a `tfs.layers.OutputHead` and shares its `call`: see `base.py`.
"""

from tf_sampling.layers.base import OutputHead  # noqa: F401
from tf_sampling.layers.adaptive_softmax import AdaptiveSoftmax  # noqa: F401
from tf_sampling.layers.nce import NCE  # noqa: F401
from tf_sampling.layers.negative_sampling import NegativeSampling  # noqa: F401
from tf_sampling.layers.sampled_softmax import SampledSoftmax  # noqa: F401
from tf_sampling.layers.candidate_softmax import CandidateSoftmax  # noqa: F401
from tf_sampling.layers.hierarchical_softmax import HierarchicalSoftmax  # noqa: F401
from tf_sampling.layers.full_softmax import FullSoftmax  # noqa: F401
from tf_sampling.layers.embedding import Embedding  # noqa: F401

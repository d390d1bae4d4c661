"""Sampled losses: sampled softmax, NCE, negative sampling."""

from tf_sampling.losses.nce import nce_loss  # noqa: F401
from tf_sampling.losses.negative_sampling import negative_sampling_loss  # noqa: F401
from tf_sampling.losses.sampled_softmax import sampled_softmax_loss  # noqa: F401
from tf_sampling.losses.retrieval import (  # noqa: F401
    in_batch_softmax_loss, mixed_negative_sampling_loss, retrieval_logits)
from tf_sampling.losses.candidate_softmax import (  # noqa: F401
    candidate_log_softmax, candidate_logits, candidate_softmax_loss)
from tf_sampling.losses.per_example import (  # noqa: F401
    per_example_logits, per_example_nce_loss, per_example_negative_sampling_loss,
    per_example_sampled_softmax_loss, sample_per_example)

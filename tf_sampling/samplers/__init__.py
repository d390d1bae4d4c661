"""Candidate samplers: each returns TF's (sampled, true_expected_count, sampled_expected_count)."""

import keras

from tf_sampling.samplers.base import (CandidateSampler, SampledValues, expected_counts,
                                       inclusion_probability, unique_tries)
from tf_sampling.samplers.uniform import UniformSampler
from tf_sampling.samplers.log_uniform import LogUniformSampler
from tf_sampling.samplers.learned_unigram import LearnedUnigramSampler
from tf_sampling.samplers.fixed_unigram import FixedUnigramSampler, read_vocab_counts
from tf_sampling.samplers.dynamic_alias import DynamicAliasSampler

# `get()` resolves string names through this.
_BY_NAME = {
    "uniform": UniformSampler,
    "log_uniform": LogUniformSampler,
    "learned_unigram": LearnedUnigramSampler,
    "fixed_unigram": FixedUnigramSampler,
    "dynamic_alias": DynamicAliasSampler,
}


def get(identifier, num_classes=None, **kwargs):
    """Resolves a sampler from an instance, a registered name, or a serialized config.

    `get("log_uniform", num_classes=V)` builds a new `LogUniformSampler(V)`.
    """
    if isinstance(identifier, CandidateSampler):
        if num_classes is not None and identifier.num_classes != num_classes:
            raise ValueError(
                f"sampler has num_classes={identifier.num_classes}, but the layer has "
                f"num_classes={num_classes}.")
        return identifier
    if isinstance(identifier, str):
        if identifier not in _BY_NAME:
            raise ValueError(
                f"Unknown sampler {identifier!r}; expected one of {sorted(_BY_NAME)} "
                "or a CandidateSampler instance.")
        if num_classes is None:
            raise ValueError(f"`num_classes` is needed to build sampler {identifier!r}.")
        return _BY_NAME[identifier](num_classes=num_classes, **kwargs)
    if isinstance(identifier, dict):
        return get(keras.saving.deserialize_keras_object(identifier), num_classes)
    raise TypeError(f"Cannot interpret {identifier!r} as a sampler.")


def serialize(sampler):
    return keras.saving.serialize_keras_object(sampler)

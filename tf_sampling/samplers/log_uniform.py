"""Log-uniform (Zipfian) sampler: P(k) = log((k+2)/(k+1)) / log(num_classes+1)."""

import math

import keras
import tensorflow as tf

from tf_sampling.samplers.base import CandidateSampler


@keras.saving.register_keras_serializable(package="tf_sampling")
class LogUniformSampler(CandidateSampler):
    """Draws class k with probability `log((k+2)/(k+1)) / log(num_classes+1)`, like
    `tf.random.log_uniform_candidate_sampler`.

    This approximates a Zipf law when ids are sorted by decreasing frequency (id 0 the most
    frequent class). Draws use TF's inverse CDF, `floor(exp(u * log(num_classes+1))) - 1`
    with u uniform in [0, 1), in float64, and keep no state besides the seed generator.

    Example:
    >>> s = tfs.samplers.LogUniformSampler(num_classes=50_000, seed=1)
    >>> sampled, true_ec, sampled_ec = s.sample([[3], [7]], num_sampled=64)
    >>> s.probability([0, 1])  # [log(2), log(1.5)] / log(50_001)
    """

    def __init__(self, num_classes, seed=None, **kwargs):
        super().__init__(num_classes, seed=seed, **kwargs)
        self._log_range = math.log1p(self.num_classes)

    def _probability(self, class_ids):
        # log1p(1/(k+1)) = log((k+2)/(k+1)) without the cancellation of a ratio near 1.
        k = tf.cast(class_ids, tf.float64)
        return tf.math.log1p(1.0 / (k + 1.0)) / self._log_range

    def _draw(self, num_draws, seed):
        u = tf.random.stateless_uniform(tf.reshape(num_draws, [1]), seed=seed, dtype=tf.float64)
        k = tf.cast(tf.floor(tf.exp(u * self._log_range)), tf.int64) - 1
        # exp(u * log(V+1)) < V+1 mathematically; rounding may reach it, so clip as TF does
        # (TF takes it modulo V, which maps the same single value to 0 instead).
        return tf.minimum(k, self.num_classes - 1)

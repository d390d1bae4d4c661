"""Uniform sampler: every class has probability 1 / num_classes."""

import keras
import tensorflow as tf

from tf_sampling.samplers.base import CandidateSampler


@keras.saving.register_keras_serializable(package="tf_sampling")
class UniformSampler(CandidateSampler):
    """Draws classes uniformly from `[0, num_classes)`, like
    `tf.random.uniform_candidate_sampler`.

    Example:
    >>> s = tfs.samplers.UniformSampler(num_classes=1000, seed=1)
    >>> sampled, true_ec, sampled_ec = s.sample([[3], [7]], num_sampled=16)
    """

    def _probability(self, class_ids):
        return tf.fill(tf.shape(class_ids), tf.constant(1.0 / self.num_classes, tf.float64))

    def _draw(self, num_draws, seed):
        return tf.random.stateless_uniform(
            tf.reshape(num_draws, [1]), seed=seed, minval=0, maxval=self.num_classes,
            dtype=tf.int64)

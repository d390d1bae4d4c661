"""Learned unigram sampler: draws classes in proportion to how often they were seen."""

import keras
import tensorflow as tf

from tf_sampling.samplers.base import CandidateSampler, _check_positive_int, draw_from_cdf


@keras.saving.register_keras_serializable(package="tf_sampling")
class LearnedUnigramSampler(CandidateSampler):
    """Draws class k with probability `counts[k] / sum(counts)`, where `counts` starts at 1
    per class and `update(class_ids)` adds 1 per occurrence, like
    `tf.random.learned_unigram_candidate_sampler`.

    Unlike TF's op, the counts live in a non-trainable int64 variable (`self.counts`): they
    are saved by `tf.train.Checkpoint` and in `.keras` files, exported in SavedModels, and
    shared by every `tf.function` trace (TF's op starts from scratch in each new graph and
    stops counting at 2^31 - 1 in total; these counts go to 2^63 - 1 per class, and draws
    stay exact while the total is below 2^53).

    Draws are by inverse CDF over the counts at the time of the call, exactly (integer
    sums in float64). A call costs O(num_classes + num_sampled * log(num_classes)): one
    pass over the counts, then binary searches; for large vocabularies the running sum is
    taken over blocks of counts, which gives the same draws several times faster than
    `tf.cumsum` over all of them. Layers call `update(labels)` on training steps only.

    Under a `tf.distribute` strategy the per-replica updates are summed (the variable has
    `aggregation="sum"`).

    Example:
    >>> s = tfs.samplers.LearnedUnigramSampler(num_classes=4, seed=1)
    >>> s.update([[2], [2], [3]])          # counts are now [1, 1, 3, 2]
    >>> s.probability([0, 2])              # [1/7, 3/7]
    >>> sampled, true_ec, sampled_ec = s.sample([[2]], num_sampled=2)
    """

    learns = True

    def __init__(self, num_classes, seed=None, **kwargs):
        super().__init__(num_classes, seed=seed, **kwargs)
        self.counts = self.add_weight(
            shape=(self.num_classes,), dtype="int64", initializer="ones", trainable=False,
            autocast=False, aggregation="sum", name="counts")
        self._snapshot = None

    @tf.autograph.experimental.do_not_convert
    def update(self, class_ids):
        """Adds 1 to the count of every id in `class_ids` (any shape; repeats count)."""
        ids = tf.reshape(self._check_ids(class_ids, "class_ids", rank=None), [-1])
        var = self.counts.value  # the backing tf.Variable on the TensorFlow backend
        if tf.distribute.has_strategy():
            # Distributed variables refuse scatters unless their aggregation is "none", and
            # "none" refuses updates in replica context; a dense delta works with "sum",
            # which adds up the replicas' deltas.
            var.assign_add(tf.math.bincount(ids, minlength=self.num_classes,
                                            maxlength=self.num_classes, dtype=tf.int64))
        else:
            var.scatter_add(tf.IndexedSlices(tf.ones_like(ids), ids))

    @tf.autograph.experimental.do_not_convert
    def sample(self, true_classes, num_sampled, unique=True, seed=None, per_example=False):
        # One snapshot of the counts serves the draws and both expected counts, so they
        # describe the same distribution and the O(V) pass over the counts happens once.
        num_sampled = _check_positive_int(num_sampled, "num_sampled")
        # See base._sample_unique_rows; an unknown batch size counts as 1.
        first_round = 2 * num_sampled if unique else num_sampled
        if per_example:
            shape = tf.TensorShape(getattr(true_classes, "shape", None))
            if shape.rank and shape[0] is not None:
                first_round *= shape[0]
        self._snapshot = _CountsSnapshot(tf.convert_to_tensor(self.counts),
                                         _block_size(self.num_classes, first_round))
        try:
            return super().sample(true_classes, num_sampled, unique=unique, seed=seed,
                                  per_example=per_example)
        finally:
            self._snapshot = None

    def _view(self, for_draws=False):
        if self._snapshot is not None:
            return self._snapshot
        # Outside sample(): probability() needs only the total, not a running sum.
        return _CountsSnapshot(tf.convert_to_tensor(self.counts), block=1 if for_draws else 0)

    def _probability(self, class_ids):
        return self._view().probability(class_ids)

    def _draw(self, num_draws, seed):
        return self._view(for_draws=True).draw(num_draws, seed)


def _block_size(num_classes, num_draws):
    """Block length for two-level inverse-CDF draws, or 1 for a plain running sum.

    A running sum (`tf.cumsum`) costs several times a plain reduction per element on
    CPU. With blocks of length B, a draw needs only the block sums (one reduction over
    the counts), a running sum over V / B of them, and one over the B counts of each
    drawn block: V / B + n * B running-sum elements, least at B = sqrt(V / n).
    """
    block = 1
    while block * block * 4 * num_draws <= num_classes:  # largest power of 2 <= sqrt(V/n)
        block *= 2
    return block if block >= 8 else 1


class _CountsSnapshot:
    """Exact inverse-CDF draws and probabilities for one read of the integer counts.

    Sums of int64 counts are exact in float64 below 2^53, so both ways of drawing pick the
    same class for the same uniform number: the class k with
    cdf[k-1] <= u * total < cdf[k].
    """

    def __init__(self, counts, block):
        """`block`: 0 for probabilities only, 1 for a plain running sum, or a block length."""
        self.counts = counts
        self.block = block
        v = counts.shape[0]
        if block == 0:
            self.total = tf.reduce_sum(tf.cast(counts, tf.float64))
            return
        if block == 1:
            self.cdf = tf.cumsum(tf.cast(counts, tf.float64))
            self.total = self.cdf[-1]
            return
        full = v // block
        # A prefix slice and a reshape share the counts' buffer: no copy of V elements.
        sums = tf.reduce_sum(tf.reshape(counts[:full * block], [full, block]), axis=1)
        if full * block < v:
            sums = tf.concat([sums, tf.reduce_sum(counts[full * block:], keepdims=True)], 0)
        self.block_sums = tf.cast(sums, tf.float64)
        self.block_cdf = tf.cumsum(self.block_sums)
        self.total = self.block_cdf[-1]

    @tf.autograph.experimental.do_not_convert
    def probability(self, class_ids):
        return tf.cast(tf.gather(self.counts, class_ids), tf.float64) / self.total

    def draw(self, num_draws, seed):
        if self.block == 1:
            return draw_from_cdf(self.cdf, num_draws, seed)
        v = self.counts.shape[0]
        u = tf.random.stateless_uniform(tf.reshape(num_draws, [1]), seed=seed,
                                        dtype=tf.float64)
        # As in draw_from_cdf: stay strictly below the total, whatever the rounding.
        below_total = tf.math.nextafter(self.total, tf.zeros_like(self.total))
        target = tf.minimum(u * self.total, below_total)
        b = tf.searchsorted(self.block_cdf, target, side="right", out_type=tf.int64)
        # Exact: both terms are integers below 2^53 and target >= their difference.
        residual = target - (tf.gather(self.block_cdf, b) - tf.gather(self.block_sums, b))
        ids = b[:, None] * self.block + tf.range(self.block, dtype=tf.int64)[None]
        rows = tf.where(ids < v, tf.gather(self.counts, tf.minimum(ids, v - 1)),
                        tf.zeros([], self.counts.dtype))
        row_cdf = tf.cumsum(tf.cast(rows, tf.float64), axis=1)
        j = tf.searchsorted(row_cdf, residual[:, None], side="right", out_type=tf.int64)
        return b * self.block + j[:, 0]

"""Dynamic alias sampler: O(1) draws from class weights that change every step, exactly."""

import collections
import numbers

import keras
import numpy as np
import tensorflow as tf

from tf_sampling import _replicated_state as replicas
from tf_sampling import ops
from tf_sampling._variables import read_without_copy
from tf_sampling.ops import alias as alias_ops
from tf_sampling.samplers.base import CandidateSampler, _check_positive_int


_Mixture = collections.namedtuple("_Mixture", ["table", "table_mass", "ids", "cum", "total"])


@keras.saving.register_keras_serializable(package="tf_sampling")
class DynamicAliasSampler(CandidateSampler):
    """Draws class k with probability `w[k] / sum(w)` for weights `w` that change during
    training: counted from the labels (like `LearnedUnigramSampler`) and/or set with
    `assign_weights` / `add_weights`.

    Every draw is exact for the current weights. The sampler keeps an alias table built
    from the weights at its last rebuild (mass `W_table`) and the list of increments since
    (ids and amounts, mass `W_pending`); the current weights are exactly their sum, so a
    draw picks the table with probability `W_table / (W_table + W_pending)` (an O(1)
    alias draw) and otherwise an increment with probability proportional to its amount
    (a binary search in their running sum), all in one call of
    `tfs.ops.alias_mixture_sample` (unique draws and `num_tries` included). This is exact
    while weights only grow; `assign_weights` (which may lower weights) rebuilds at once.
    The table is rebuilt, O(num_classes), when more than `max_pending` increments or a
    pending mass above `rebuild_threshold * W_table` have accumulated: the thresholds
    trade rebuild time against draw time, never exactness.

    All state (weights, table, increments) is in non-trainable variables, so it is saved
    by `tf.train.Checkpoint` and in `.keras` files and shared by every `tf.function`.
    `get_config()` holds the options, never the weights (`initial_weights` could be
    millions of numbers): a sampler rebuilt from its config alone starts from all ones
    until its saved weights are loaded.
    Updates are atomic: an `add_weights` or `assign_weights` that raises (bad amounts, a
    sum that overflows) leaves every variable as it was.
    Expected counts come from the exact weights (`1 - (1 - p)^num_tries` when unique).

    Under `tf.distribute.MirroredStrategy` or `MultiWorkerMirroredStrategy` every replica
    keeps a full copy of this state. An update in a replica context (as in a training
    step) first all-gathers the replicas' ids and amounts, in replica order, and every
    replica then applies the whole gathered update to its copy: each replica's labels
    are counted exactly once, the copies stay identical, and the state equals that of
    one device fed the concatenated global batch (so draws stay exact). The cost is one
    all-gather of the ids per step, not a reduction over `num_classes`. (Label counts are
    exact; fractional `amounts` summed on GPUs may round differently per replica unless
    `tf.config.experimental.enable_op_determinism()` is on.) `assign_weights` in a
    replica context uses replica 0's weights.

    Args:
        num_classes: number of classes.
        initial_weights: None (all ones, as TF's learned unigram sampler starts) or a
            vector of `num_classes` non-negative weights, not all zero.
        learn_from_labels: if True, `update(labels)` adds 1 per occurrence of a label.
        rebuild_threshold: rebuild once the pending mass exceeds this fraction of the
            table's mass (> 0).
        max_pending: rebuild once more than this many increments are pending (> 0).
        seed: optional int seed of the sampler's seed generator.

    Example:
    >>> s = tfs.samplers.DynamicAliasSampler(num_classes=1000, seed=1)
    >>> s.update([[3], [3], [7]])                 # weights of 3 and 7 grow by 2 and 1
    >>> s.add_weights([5], [10.0])
    >>> sampled, true_ec, sampled_ec = s.sample([[3]], num_sampled=64)
    >>> s.assign_weights(tf.ones([1000]))         # back to uniform (rebuilds)
    """

    learns = True

    def __init__(self, num_classes, initial_weights=None, learn_from_labels=True,
                 rebuild_threshold=1.0, max_pending=65536, seed=None, **kwargs):
        super().__init__(num_classes, seed=seed, **kwargs)
        self.learn_from_labels = bool(learn_from_labels)
        if (isinstance(rebuild_threshold, bool) or not isinstance(rebuild_threshold, numbers.Real)
                or not rebuild_threshold > 0):
            raise ValueError(f"`rebuild_threshold` must be a positive number, got "
                             f"{rebuild_threshold!r}.")
        self.rebuild_threshold = float(rebuild_threshold)
        self.max_pending = _check_positive_int(max_pending, "max_pending")
        init = self._check_initial_weights(initial_weights)
        with tf.init_scope():  # the first table is built eagerly, once
            table = ops.alias_build(init).numpy()

        def const(value):
            return lambda shape, dtype: tf.constant(value, dtype=dtype, shape=shape)

        v = self.num_classes

        # Every replica updates its own copy the same way (see _replicated_state);
        # "only_first_replica": checkpoints save one copy and restores write them all.
        self._replica_strategy = replicas.creation_strategy()

        def state(name, shape, dtype, value):
            return self.add_weight(shape=shape, dtype=dtype, initializer=const(value),
                                   trainable=False, autocast=False,
                                   aggregation="only_first_replica", name=name)

        self.class_weights = state("class_weights", (v,), "float64", init)
        self.num_positive = state("num_positive", (), "int64", int(np.count_nonzero(init)))
        self.alias_table = state("alias_table", (v,), "int64", table)
        self.table_mass = state("table_mass", (), "float64", float(init.sum()))
        self.pending_ids = state("pending_ids", (self.max_pending,), "int64", 0)
        self.pending_cum = state("pending_cum", (self.max_pending,), "float64", 0.0)
        self.pending_size = state("pending_size", (), "int64", 0)
        self.num_rebuilds = state("num_rebuilds", (), "int64", 0)
        self._snapshot = None  # the state read once for all of a sample() call

    def _check_initial_weights(self, initial_weights):
        if initial_weights is None:
            return np.ones(self.num_classes, np.float64)
        w = np.asarray(initial_weights, dtype=np.float64)
        if w.shape != (self.num_classes,):
            raise ValueError(f"`initial_weights` must have shape ({self.num_classes},), got "
                             f"{w.shape}.")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("`initial_weights` must be finite and non-negative.")
        if not np.any(w > 0):
            raise ValueError("`initial_weights` are all zero; at least one must be positive.")
        return w

    # ------------------------------------------------------------- weights
    def update(self, class_ids):
        """Adds 1 to the weight of every id in `class_ids` (any shape; repeats count), if
        `learn_from_labels`. Layers call this on training steps only."""
        if not self.learn_from_labels:
            return None
        return self.add_weights(class_ids)

    def add_weights(self, class_ids, amounts=None):
        """Adds `amounts` (default 1 each; same size as `class_ids`, finite, >= 0) to the
        weights of `class_ids`. Rebuilds the table if a threshold is passed."""
        ids = tf.reshape(self._check_ids(class_ids, "class_ids", rank=None), [-1])
        if amounts is None:
            amounts = tf.ones_like(ids, tf.float64)
        else:
            amounts = tf.reshape(tf.cast(tf.convert_to_tensor(amounts, dtype_hint=tf.float64),
                                         tf.float64), [-1])
            if (ids.shape[0] is not None and amounts.shape[0] is not None
                    and ids.shape[0] != amounts.shape[0]):
                raise ValueError(f"`amounts` must have one entry per class id: {ids.shape[0]} "
                                 f"ids, {amounts.shape[0]} amounts.")
            checks = [
                tf.debugging.assert_equal(tf.size(amounts), tf.size(ids), message=(
                    "`amounts` must have one entry per class id")),
                tf.debugging.Assert(
                    tf.reduce_all(tf.math.is_finite(amounts) & (amounts >= 0.0)),
                    ["`amounts` must be finite and non-negative (weights only grow here; "
                     "use assign_weights to lower them)"]),
            ]
            with tf.control_dependencies(checks):
                amounts = tf.identity(amounts)
        ids, amounts = replicas.gather(ids, amounts)
        return replicas.on_every_copy(self._replica_strategy, self._add_to_copy, ids, amounts)

    def _local(self, variable):
        return replicas.local_copy(variable, self._replica_strategy)

    def _add_to_copy(self, ids, amounts):
        # Atomic: everything that can fail (sums overflowing, the table build) is checked
        # or done before the first write, so a rejected update leaves the state as it was.
        weights = self._local(self.class_weights)
        num_new = tf.size(ids, out_type=tf.int64)
        # Classes whose weight becomes positive (for the support of unique draws).
        uniq, where = tf.unique(ids)
        per_class = tf.math.unsorted_segment_sum(amounts, where, tf.size(uniq))
        old = weights.sparse_read(uniq)
        newly = tf.math.count_nonzero((old == 0.0) & (per_class > 0.0), dtype=tf.int64)

        size = tf.convert_to_tensor(self._local(self.pending_size))
        pending = self._pending_mass(size)
        table_mass = tf.convert_to_tensor(self._local(self.table_mass))
        new_pending = pending + tf.reduce_sum(amounts)
        finite = tf.debugging.Assert(
            tf.reduce_all(tf.math.is_finite(old + per_class))
            & tf.math.is_finite(table_mass + new_pending),
            ["`amounts` would make a weight or the sum of the weights overflow float64; "
             "the sampler is left unchanged"])
        with tf.control_dependencies([finite]):
            full = (size + num_new > self.max_pending) | (
                new_pending > self.rebuild_threshold * table_mass)

        def add():
            weights.scatter_add(tf.IndexedSlices(per_class, uniq))
            self._local(self.num_positive).assign_add(newly)

        def append():
            add()
            # One contiguous slice each: a slice assignment copies the values where
            # scatter_nd_update checks and writes them index by index (12 us against
            # 32 us per step at 512 labels).
            end = size + num_new
            self._local(self.pending_ids)[size:end].assign(ids)
            self._local(self.pending_cum)[size:end].assign(pending + tf.cumsum(amounts))
            self._local(self.pending_size).assign(end)
            return tf.constant(False)

        def rebuild():
            # Read without copying: tensor_scatter_nd_add makes the one copy needed.
            w = tf.tensor_scatter_nd_add(read_without_copy(weights), uniq[:, None],
                                         per_class)
            table = ops.alias_build(w)
            with tf.control_dependencies([table]):
                add()
                self._set_table(table, tf.reduce_sum(w))
            return tf.constant(True)

        return tf.cond(full, rebuild, append)

    def assign_weights(self, weights):
        """Sets all weights (shape `[num_classes]`, finite, >= 0, not all zero) and rebuilds
        the table. InvalidArgumentError on bad weights, leaving the state unchanged."""
        w = tf.cast(tf.convert_to_tensor(weights), tf.float64)
        if w.shape.rank is not None and w.shape.as_list() != [self.num_classes]:
            raise ValueError(f"`weights` must have shape [{self.num_classes}], got {w.shape}.")
        w = replicas.first_replicas(w)
        replicas.on_every_copy(self._replica_strategy, self._assign_to_copy, w)

    def _assign_to_copy(self, w):
        table = ops.alias_build(w)  # checks the weights first
        with tf.control_dependencies([table]):
            self._local(self.class_weights).assign(w)
            self._local(self.num_positive).assign(
                tf.math.count_nonzero(w > 0.0, dtype=tf.int64))
            self._set_table(table, tf.reduce_sum(w))

    def rebuild(self):
        """Rebuilds the alias table from the current weights (O(num_classes))."""
        replicas.on_every_copy(self._replica_strategy, self._rebuild_copy)

    def _rebuild_copy(self):
        w = read_without_copy(self._local(self.class_weights))
        self._set_table(ops.alias_build(w), tf.reduce_sum(w))

    def _set_table(self, table, mass):
        self._local(self.alias_table).assign(table)
        self._local(self.table_mass).assign(mass)
        self._local(self.pending_size).assign(0)
        self._local(self.num_rebuilds).assign_add(1)

    # class_weights is read with gathers, and densely only for a rebuild: every dense
    # read of a scatter-updated variable copies it unless made with read_without_copy
    # (8 MB at 1e6 classes).
    def _pending_mass(self, size):
        last = self._local(self.pending_cum).sparse_read(tf.maximum(size - 1, 0))
        return tf.where(size > 0, last, tf.constant(0.0, tf.float64))

    # ------------------------------------------------------------- sampling
    @tf.autograph.experimental.do_not_convert
    def sample(self, true_classes, num_sampled, unique=True, seed=None, per_example=False):
        # One read of the state serves the draws and both expected counts (the total
        # mass comes from the pending list read for the draws, not from another gather).
        self._snapshot = self._read_mixture()
        try:
            return super().sample(true_classes, num_sampled, unique=unique, seed=seed,
                                  per_example=per_example)
        finally:
            self._snapshot = None

    def _read_mixture(self):
        """The state that draws need: `_Mixture` (table, its mass, the pending lists up to
        their size) and the total mass of the weights."""
        size = tf.convert_to_tensor(self._local(self.pending_size))
        table_mass = tf.convert_to_tensor(self._local(self.table_mass))
        ids = read_without_copy(self._local(self.pending_ids))
        cum = read_without_copy(self._local(self.pending_cum))
        pending_mass = tf.where(size > 0, cum[tf.maximum(size - 1, 0)],
                                tf.constant(0.0, tf.float64))
        return _Mixture(tf.convert_to_tensor(self._local(self.alias_table)), table_mass,
                        ids[:size], cum[:size], table_mass + pending_mass)

    def _total_mass(self):
        if self._snapshot is not None:
            return self._snapshot.total
        size = tf.convert_to_tensor(self._local(self.pending_size))
        return tf.convert_to_tensor(self._local(self.table_mass)) + self._pending_mass(size)

    def _mixture(self):
        mix = self._snapshot if self._snapshot is not None else self._read_mixture()
        return mix.table, mix.table_mass, mix.ids, mix.cum

    def _probability(self, class_ids):
        weights = alias_ops.variable_gather(self._local(self.class_weights), class_ids)
        return weights / self._total_mass()

    def _support_size(self):
        return tf.convert_to_tensor(self._local(self.num_positive))

    def _draw(self, num_draws, seed):
        return ops.alias_mixture_sample(*self._mixture(), num_draws, seed)

    def _sample_unique(self, num_sampled, seed):
        # The op dedupes the mixture stream itself (same semantics as the base class:
        # the first num_sampled distinct ids of an i.i.d. stream, num_tries = its
        # length), in one call instead of rounds of TF ops; it also checks the support.
        return tuple(ops.alias_mixture_sample(*self._mixture(), num_sampled, seed,
                                              unique=True))

    def get_config(self):
        config = super().get_config()
        config.update({
            "learn_from_labels": self.learn_from_labels,
            "rebuild_threshold": self.rebuild_threshold,
            "max_pending": self.max_pending,
        })
        return config

    @classmethod
    def from_config(cls, config):
        # The weights are state, saved and restored with the variables. A config from a
        # version that stored `initial_weights` (num_classes numbers) still loads: they
        # would only be overwritten by the saved weights, so they are dropped.
        config = dict(config)
        config.pop("initial_weights", None)
        return cls(**config)

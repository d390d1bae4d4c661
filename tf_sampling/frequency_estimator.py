"""Streaming item-frequency estimation for the log Q correction (Yi et al., RecSys 2019).

"Sampling-bias-corrected neural modeling for large corpus item recommendations", Algorithm 2:
instead of counting ids (unbounded vocabulary, and counts that never forget), keep for each
hashed id the step `A` at which it was last seen and an exponential moving average `B` of the
number of steps between sightings. An item seen every `B` steps on average has frequency
`1 / B` per step. With `H` independent hash arrays, a collision can only make a bucket look
*more* frequent (shorter gaps), so the estimate takes the largest `B` over the arrays.

Per batch at global step `t`, for each hash array `h` and bucket `b = hash_h(id)`:

    B[h, b] <- (1 - alpha) * B[h, b] + alpha * (t - A[h, b])
    A[h, b] <- t

An id that occurs `c` times in one batch is treated as `c` sightings in a row (the first with
gap `t - A`, the rest with gap 0), computed in closed form so that the update is vectorised
and deterministic: `B <- (1 - alpha)^(c-1) * ((1 - alpha) * B + alpha * (t - A))`. The mean gap
per sighting is then 1 / (expected occurrences per step), whether or not an item appears
several times per batch. A bucket's first sighting initialises `B = t - A = t` (no sightings
during the first `t - 1` steps) instead of blending with an arbitrary prior.

`probability(ids)` turns the per-step frequency into a per-draw probability by dividing by
the mean number of ids per step, so it is on the scale of `sampler.probability()` and of
`candidate_log_q=tf.math.log(p)` in `tf_sampling.losses.in_batch_softmax_loss`.

Under `tf.distribute.MirroredStrategy` or `MultiWorkerMirroredStrategy`, a step is one
global training step and its batch is the global batch: `update` all-gathers every
replica's ids (in replica order) and each replica applies the whole gathered batch to its
own full copy of the arrays. So `t` advances by one per global step; an id seen `c_0`
times by one replica and `c_1` times by another in the same step is `c_0 + c_1`
sightings at step `t`; the state is exactly that of one device fed the concatenated
batch, and all copies stay identical. Updating each replica's copy from its own ids
would let the copies diverge, and reducing the replicas' updated `B` (as a mirrored
variable's "mean" aggregation would) is not an EMA of any sequence of sightings: an id
seen by one replica only would get half its update. The per-draw `probability` does not
depend on how the global batch is split: a replica's local batch is drawn from the same
stream, so its items have the same probability per id.
"""

import numbers

import keras
import tensorflow as tf

from tf_sampling import _replicated_state as replicas

_MASK64 = (1 << 64) - 1


def _splitmix64_int(x):
    """splitmix64 finaliser on a Python int (used to derive per-array salts)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _splitmix64(x):
    """splitmix64 finaliser on a uint64 tensor (uint64 arithmetic wraps modulo 2^64)."""
    def shift_xor(v, s):
        return tf.bitwise.bitwise_xor(v, tf.bitwise.right_shift(v, tf.constant(s, tf.uint64)))
    x = x + tf.constant(0x9E3779B97F4A7C15, tf.uint64)
    x = shift_xor(x, 30) * tf.constant(0xBF58476D1CE4E5B9, tf.uint64)
    x = shift_xor(x, 27) * tf.constant(0x94D049BB133111EB, tf.uint64)
    return shift_xor(x, 31)


@keras.saving.register_keras_serializable(package="tf_sampling")
class FrequencyEstimator(keras.layers.Layer):
    """Estimates item sampling probabilities from a stream of (hashed) ids; drift-aware.

    State (all non-trainable variables, so it checkpoints with `tf.train.Checkpoint`, is saved
    in `.keras` files and survives retracing): `last_step` `A` and `gap` `B`, each
    `[num_hash_arrays * num_buckets]`, the global `step`, and `num_seen` (ids seen in total).

    Args:
        num_buckets: size `m` of each hash array. Collisions grow as the number of distinct
            live ids approaches `m`; the paper uses far more buckets than ids.
        num_hash_arrays: `H` independent hash functions; the estimate uses the largest gap.
        alpha: EMA rate in (0, 1]. Each item's estimate averages about its last `1/alpha`
            sightings: smaller is less noisy, larger follows drift faster.
        seed: integer that picks the hash functions.

    Use `update(ids)` once per training batch, and `probability(ids)` for the log Q
    correction; or call the layer: `est(ids, training=True)` updates then returns
    `probability(ids)` (with `training` False or None it only estimates).

    Under a strategy the update all-gathers the replicas' ids (see the module docstring),
    in the forward pass when the layer is called there. With `MirroredStrategy`, whose
    replicas are threads that take turns at each gather, Keras 3 then reports the
    `add_loss` losses of the model's layers wrongly (its loss lists are shared by the
    threads, so a replica's reported loss includes the others'; gradients are right).
    Return the loss as a model output with a compiled loss (`loss=lambda y, out: out`),
    or compute it in `compute_loss` or a custom step, instead of `add_loss`.

    Example:
    >>> est = tfs.FrequencyEstimator(num_buckets=2**20, num_hash_arrays=2, alpha=0.01)
    >>> p = est(item_ids, training=True)         # update with this batch, then estimate
    >>> loss = tfs.losses.in_batch_softmax_loss(
    ...     q, c, candidate_ids=item_ids, candidate_log_q=tf.math.log(p))
    """

    def __init__(self, num_buckets, num_hash_arrays=2, alpha=0.01, seed=0, **kwargs):
        super().__init__(**kwargs)
        for value, name in ((num_buckets, "num_buckets"), (num_hash_arrays, "num_hash_arrays")):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if (isinstance(alpha, bool) or not isinstance(alpha, numbers.Real)
                or not 0 < alpha <= 1):
            raise ValueError(f"`alpha` must be a number in (0, 1], got {alpha!r}.")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"`seed` must be an integer, got {seed!r}.")
        self.num_buckets = int(num_buckets)
        self.num_hash_arrays = int(num_hash_arrays)
        self.alpha = float(alpha)
        self.seed = int(seed)
        self._salts = [_splitmix64_int((self.seed * 0x10001 + h) & _MASK64)
                       for h in range(self.num_hash_arrays)]
        size = self.num_hash_arrays * self.num_buckets
        # Every replica updates its own full copy the same way (see _replicated_state);
        # "only_first_replica": checkpoints save one copy and restores write them all.
        self._replica_strategy = replicas.creation_strategy()

        def state(name, shape, dtype):
            return self.add_weight(name=name, shape=shape, dtype=dtype, initializer="zeros",
                                   trainable=False, autocast=False,
                                   aggregation="only_first_replica")

        self.last_step = state("last_step", (size,), "int64")
        # gap == 0 marks a bucket never seen (a seen bucket always has gap > 0).
        self.gap = state("gap", (size,), "float32")
        self.step = state("step", (), "int64")
        self.num_seen = state("num_seen", (), "int64")
        # tf.unique has no XLA kernel.
        self.supports_jit = False
        self.built = True

    def _check_ids(self, ids):
        ids = tf.convert_to_tensor(ids)
        if not ids.dtype.is_integer:
            raise TypeError(
                f"`ids` must be an integer tensor (hash string ids first, e.g. with "
                f"tf.strings.to_hash_bucket_fast), got dtype {ids.dtype.name}.")
        return tf.cast(ids, tf.int64)

    def _keys(self, flat_ids):
        """Flat state indices `[H, n]`: array h's bucket of each id, offset by h * m."""
        x = tf.bitcast(flat_ids, tf.uint64)
        m = tf.constant(self.num_buckets, tf.uint64)
        keys = []
        for h, salt in enumerate(self._salts):
            hashed = _splitmix64(tf.bitwise.bitwise_xor(x, tf.constant(salt, tf.uint64)))
            bucket = tf.cast(tf.math.floormod(hashed, m), tf.int64)
            keys.append(bucket + h * self.num_buckets)
        return tf.stack(keys)

    def _local(self, variable):
        return replicas.local_copy(variable, self._replica_strategy)

    @tf.autograph.experimental.do_not_convert
    def update(self, ids):
        """Records one step in which `ids` (any shape) were seen. In a replica context, the
        step's ids are those of all replicas (see the module docstring)."""
        flat = tf.reshape(self._check_ids(ids), [-1])
        flat, = replicas.gather(flat)
        replicas.on_every_copy(self._replica_strategy, self._update_copy, flat)

    def _update_copy(self, flat):
        t = tf.convert_to_tensor(self._local(self.step)) + 1
        keys, _, counts = tf.unique_with_counts(tf.reshape(self._keys(flat), [-1]))
        old_last = self._local(self.last_step).sparse_read(keys)
        old_gap = self._local(self.gap).sparse_read(keys)
        decay = tf.constant(1.0 - self.alpha, tf.float32)
        # (1 - alpha)^(c - 1): the c - 1 repeat sightings within this step have gap 0.
        repeat = tf.pow(decay, tf.cast(counts, tf.float32) - 1.0)
        gap_now = tf.cast(t - old_last, tf.float32)
        new_gap = repeat * tf.where(old_gap > 0, decay * old_gap + self.alpha * gap_now,
                                    gap_now)
        self._local(self.gap).scatter_nd_update(keys[:, None], new_gap)
        self._local(self.last_step).scatter_nd_update(keys[:, None], tf.fill(tf.shape(keys), t))
        self._local(self.step).assign(t)
        self._local(self.num_seen).assign_add(tf.size(flat, out_type=tf.int64))

    @tf.autograph.experimental.do_not_convert
    def step_frequency(self, ids):
        """Estimated occurrences per step `1 / max_h B[h, hash_h(id)]` (the paper's `p`).

        An id whose buckets were never seen gets `1 / step` (it was absent for all steps).
        """
        ids = self._check_ids(ids)
        gaps = self._local(self.gap).sparse_read(self._keys(tf.reshape(ids, [-1])))
        steps = tf.cast(tf.maximum(self._local(self.step), 1), tf.float32)
        seen = tf.reduce_min(gaps, axis=0) > 0
        gap = tf.where(seen, tf.reduce_max(gaps, axis=0), steps)
        return tf.reshape(1.0 / gap, tf.shape(ids))

    @tf.autograph.experimental.do_not_convert
    def probability(self, ids):
        """Per-draw probability of each id (float32, shape of `ids`), clipped to (0, 1]."""
        steps = tf.cast(tf.maximum(self._local(self.step), 1), tf.float32)
        ids_per_step = tf.cast(tf.maximum(self._local(self.num_seen), 1), tf.float32) / steps
        return tf.minimum(self.step_frequency(ids) / ids_per_step, 1.0)

    @tf.autograph.experimental.do_not_convert
    def call(self, ids, training=None):
        if training:
            self.update(ids)
        return self.probability(ids)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, ids, training=None):
        return keras.KerasTensor(ids.shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update({"num_buckets": self.num_buckets, "num_hash_arrays": self.num_hash_arrays,
                       "alpha": self.alpha, "seed": self.seed})
        return config

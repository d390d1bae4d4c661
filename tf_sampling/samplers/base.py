"""The interface every candidate sampler shares.

A sampler draws `num_sampled` class ids for a batch and reports, for the true classes and
for each draw, the expected number of times that class appears in the sample. That is TF's
`(sampled_candidates, true_expected_count, sampled_expected_count)` triple, with TF's
shapes and dtypes, so the result can be injected into `tf.nn.sampled_softmax_loss` too.

Samplers are Keras layers so that their state (learned counts, RNG state) lives in
variables: it is tracked by `tf.train.Checkpoint`, saved in `.keras` files, exported in
SavedModels, and survives retracing.

Subclasses implement `_probability(ids)` (float64 probabilities) and `_draw(n, seed)`
(n i.i.d. int64 draws from a stateless `[2]` seed). Unique sampling, expected counts,
seeding and input checks are done here once.
"""

import collections
import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from tf_sampling.ops import _unique

SampledValues = collections.namedtuple(
    "SampledValues",
    ["sampled_candidates", "true_expected_count", "sampled_expected_count"],
)


def draw_from_cdf(cdf, num_draws, seed):
    """`num_draws` i.i.d. int64 draws by inverse CDF.

    `cdf` is a float64 `[V]` running sum of nonnegative class weights (unnormalised, so
    integer counts stay exact); class k is drawn with probability
    `(cdf[k] - cdf[k-1]) / cdf[-1]`, which is what `probability_from_cdf` returns, and a
    class of weight 0 is never drawn. O(num_draws * log V).
    """
    total = cdf[-1]
    u = tf.random.stateless_uniform(tf.reshape(num_draws, [1]), seed=seed, dtype=tf.float64)
    # u < 1, but u * total can round up to total, which lies past every bucket (and would
    # pick a trailing zero-weight class); the largest double below total stays inside.
    target = tf.minimum(u * total, tf.math.nextafter(total, tf.zeros_like(total)))
    return tf.searchsorted(cdf, target, side="right", out_type=tf.int64)


def probability_from_cdf(cdf, class_ids):
    """float64 probabilities of int64 `class_ids` (any shape) under `draw_from_cdf(cdf)`.

    Differences of the running sum are exactly the bucket widths the draw uses, so these
    are the probabilities of the distribution actually sampled, rounding included.
    """
    upper = tf.gather(cdf, class_ids)
    lower = tf.where(class_ids > 0, tf.gather(cdf, tf.maximum(class_ids - 1, 0)),
                     tf.zeros_like(upper))
    return (upper - lower) / cdf[-1]


def _check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def expected_counts(p, num_tries, num_sampled, unique):
    """Expected occurrences of a class of probability `p` in a sample.

    Non-unique: `p * num_sampled`. Unique (draws until `num_sampled` distinct ids were seen,
    after `num_tries` draws): `1 - (1 - p)^num_tries`, computed stably, as TF does.
    `p` is float64; the result is float32.
    """
    if unique:
        out = _unique_inclusion(p, num_tries)
    else:
        out = p * float(num_sampled)
    return tf.cast(out, tf.float32)


def _unique_inclusion(p, num_tries):
    """float64 `1 - (1 - p)^num_tries`, computed stably."""
    return -tf.math.expm1(tf.cast(num_tries, tf.float64) * tf.math.log1p(-p))


def unique_tries(sampler, num_sampled):
    """The stream length T at which a unique sample of `sampler` holds `num_sampled`
    distinct classes on average: `sum_j 1 - (1 - q_j)^T = num_sampled`, q the sampler's
    class probabilities. Infinite when `num_sampled` is the number of classes of nonzero
    probability (every such class is always in the sample).

    Solved once per (sampler, num_sampled) by bisection on all `num_classes`
    probabilities (O(num_classes) per iteration; measured 2.6 s and a transient 0.3 GB at
    10^7 log-uniform classes) and cached on the sampler. For samplers whose distribution
    is fixed (`learns` False).
    """
    num_sampled = _check_positive_int(num_sampled, "num_sampled")
    if sampler.learns:
        raise ValueError(f"{type(sampler).__name__} changes its distribution while "
                         "training; the inclusion probability of its unique samples is "
                         "not fixed.")
    cache = sampler.__dict__.setdefault("_unique_tries_cache", {})
    if num_sampled in cache:
        return cache[num_sampled]
    with tf.init_scope():
        q = np.asarray(sampler._all_probabilities(), np.float64)
    q = q / q.sum()
    if num_sampled >= np.count_nonzero(q):
        cache[num_sampled] = math.inf
        return math.inf
    log_keep = np.log1p(-q[q > 0])

    def distinct(tries):
        return -np.expm1(tries * log_keep).sum()

    lo = hi = float(num_sampled)
    while distinct(hi) < num_sampled:
        lo, hi = hi, 2.0 * hi
    # Relative precision 1e-7 of T: below float32's step of the counts it gives.
    while hi - lo > 1e-7 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if distinct(mid) < num_sampled else (lo, mid)
    cache[num_sampled] = hi
    return hi


def inclusion_probability(sampler, class_ids, num_sampled, unique=True):
    """The probability that each of `class_ids` is in a sample of `num_sampled` draws
    (unique: `1 - (1 - q)^T`, T from `unique_tries`; not unique: the expected count
    `q * num_sampled`, which is that probability's first-order value). float64, the
    shape of `class_ids`.

    Example:

    ```python
    sampler = tfs.samplers.LogUniformSampler(33_278)
    tfs.samplers.inclusion_probability(sampler, [0, 300, 30_000], 1024)
    # [1.0, 0.453, 0.0060]
    ```
    """
    ids = sampler._check_ids(class_ids, "class_ids", rank=None)
    q = sampler._probability(ids)
    if not unique:
        return q * float(_check_positive_int(num_sampled, "num_sampled"))
    return inclusion_from_probability(sampler, q, num_sampled)


def inclusion_from_probability(sampler, q, num_sampled):
    """`inclusion_probability` (unique) of classes of draw probabilities `q` (float64)."""
    tries = unique_tries(sampler, num_sampled)
    if math.isinf(tries):
        return tf.cast(q > 0, tf.float64)
    return _unique_inclusion(q, tries)


_SEED_STATE_KEY = "seed_generator_state"


class _StoreWithout:
    """Read-only view of a Keras weights store (H5 group or dict) minus one key, so that
    `Layer.load_own_variables` sees exactly the layer's weights."""

    def __init__(self, store, key):
        self._store = store
        self._key = key

    def keys(self):
        return [k for k in self._store.keys() if k != self._key]

    def __len__(self):
        return len(self.keys())

    def __contains__(self, key):
        return key != self._key and key in self._store

    def __getitem__(self, key):
        if key == self._key:
            raise KeyError(key)
        return self._store[key]


class CandidateSampler(keras.layers.Layer):
    """Base class for candidate samplers.

    Args:
        num_classes: number of classes; ids are in `[0, num_classes)`.
        seed: optional integer. Draws made with `seed=None` in `sample()` come from a
            `keras.random.SeedGenerator` seeded with it. Its state is a variable, saved by
            `tf.train.Checkpoint`, in SavedModels, and in `.keras` and `.weights.h5`
            files (as the entry `seed_generator_state` next to the layer's weights), so a
            restored sampler continues the stream where it was saved. A file without that
            entry loads too, with the stream left where it is (at `seed` for a new
            sampler).

    Subclasses set `learns = True` if `update()` changes the distribution.
    """

    learns = False
    # No sampler here has an XLA kernel (unique sampling needs dynamic shapes); layers
    # copy this into `supports_jit`.
    supports_xla = False

    def __init__(self, num_classes, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = _check_positive_int(num_classes, "num_classes")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"`seed` must be an integer or None, got {seed!r}.")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")
        # A SeedGenerator is not a TF trackable, so neither tf.train.Checkpoint nor
        # tf.saved_model.save would reach its state (export even fails: the sampling
        # function captures an unreachable variable). This holder makes it reachable
        # without adding it to the layer's Keras weights.
        self._seed_state = tf.Module(name="seed_state")
        self._seed_state.state = self.seed_generator.state
        self.built = True

    # ----------------------------------------------------------------- to implement
    def _probability(self, class_ids):
        """float64 probabilities of int64 `class_ids` (any shape)."""
        raise NotImplementedError

    def _draw(self, num_draws, seed):
        """`num_draws` (scalar tensor) i.i.d. int64 draws; `seed` is an int32 `[2]` tensor."""
        raise NotImplementedError

    def update(self, class_ids):
        """Tell the sampler these ids were seen as true classes. No-op unless it learns."""
        return None

    def _all_probabilities(self):
        """float64 `[num_classes]` probabilities of every class (any positive scale), for
        the unique-draw bound. O(num_classes); called only for long unique streams."""
        return self._probability(tf.range(self.num_classes, dtype=tf.int64))

    def _support_size(self):
        """Number of classes with nonzero probability (int scalar), or None if all have.

        Checked before a unique draw, so asking for more distinct classes than exist fails
        at once instead of drawing ever longer streams.
        """
        return None

    # ----------------------------------------------------------------- public API
    # Plain TF ops and Python-level branches only: autograph conversion (in a user's
    # tf.function) would only slow down tracing, by seconds per trace.
    @tf.autograph.experimental.do_not_convert
    def probability(self, class_ids):
        """Probability of drawing each of `class_ids` in one draw (float32, same shape)."""
        ids = self._check_ids(class_ids, "class_ids", rank=None)
        return tf.cast(self._probability(ids), tf.float32)

    @tf.autograph.experimental.do_not_convert
    def sample(self, true_classes, num_sampled, unique=True, seed=None, per_example=False):
        """Draws `num_sampled` candidates for a batch, or for each example of it.

        Args:
            true_classes: int `[batch, num_true]` tensor of the true class ids.
            num_sampled: positive Python int.
            unique: if True, the sample has no repeats (drawn with rejection, as TF), and
                expected counts are `1 - (1 - p)^num_tries`.
            seed: None (use the sampler's seed generator), a Python int (the same int
                gives the same draws, for the same batch size with `per_example`), or an
                int `[2]` tensor (a stateless seed).
            per_example: False (TF's scheme): one sample of `num_sampled` ids shared by
                the batch. True (word2vec's scheme): each example draws its own
                `num_sampled` ids; with `unique`, each row holds distinct ids, the first
                ones of that row's own i.i.d. stream, and its expected counts use that
                row's stream length.

        Returns:
            `SampledValues(sampled_candidates, true_expected_count, sampled_expected_count)`:
            int64 `[num_sampled]`, float32 `[batch, num_true]`, float32 `[num_sampled]`;
            with `per_example`, int64 `[batch, num_sampled]`, float32 `[batch, num_true]`,
            float32 `[batch, num_sampled]`.
        """
        num_sampled = _check_positive_int(num_sampled, "num_sampled")
        if unique and num_sampled > self.num_classes:
            raise ValueError(
                f"`num_sampled`={num_sampled} is larger than `num_classes`="
                f"{self.num_classes}, which is impossible with `unique=True`."
            )
        true_classes = self._check_ids(true_classes, "true_classes", rank=2)
        seed = self._make_seed(seed)
        if per_example:
            batch = tf.shape(true_classes)[0]
            if unique:
                sampled, num_tries = self._sample_unique_rows(batch, num_sampled, seed)
                num_tries = num_tries[:, None]
            else:
                draws = self._draw(batch * num_sampled, seed)
                sampled = tf.reshape(tf.cast(draws, tf.int64), [batch, num_sampled])
                num_tries = num_sampled
        elif unique:
            sampled, num_tries = self._sample_unique(num_sampled, seed)
        else:
            sampled = self._draw(tf.constant(num_sampled, tf.int32), seed)
            sampled = tf.ensure_shape(tf.cast(sampled, tf.int64), [num_sampled])
            num_tries = num_sampled
        true_p = self._probability(true_classes)
        sampled_p = self._probability(sampled)
        return SampledValues(
            tf.stop_gradient(sampled),
            tf.stop_gradient(expected_counts(true_p, num_tries, num_sampled, unique)),
            tf.stop_gradient(expected_counts(sampled_p, num_tries, num_sampled, unique)),
        )

    @tf.autograph.experimental.do_not_convert
    def call(self, true_classes, num_sampled=1, unique=True):
        return self.sample(true_classes, num_sampled, unique=unique)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "seed": self.seed})
        return config

    # Keras saves a layer's weights only, not its SeedGenerator states. Without the seed
    # state a restored model (BackupAndRestore, load_model) draws other negatives than
    # the run it was saved from, so it is saved as one more entry of this layer.
    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[_SEED_STATE_KEY] = keras.ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        if _SEED_STATE_KEY in store:
            self.seed_generator.state.assign(store[_SEED_STATE_KEY])
            store = _StoreWithout(store, _SEED_STATE_KEY)
        super().load_own_variables(store)

    # ----------------------------------------------------------------- helpers
    def _make_seed(self, seed):
        if seed is None:
            return tf.cast(self.seed_generator.next(), tf.int32)
        if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
            return tf.constant([int(seed) & 0x7FFFFFFF, int(seed) >> 31 & 0x7FFFFFFF], tf.int32)
        seed = tf.convert_to_tensor(seed)
        if not seed.dtype.is_integer or seed.shape.rank != 1 or seed.shape[0] != 2:
            raise ValueError(
                f"`seed` must be None, an int or an integer tensor of shape [2], got {seed!r}."
            )
        return tf.cast(seed, tf.int32)

    def _check_ids(self, ids, name, rank):
        ids = tf.convert_to_tensor(ids)
        if not ids.dtype.is_integer:
            raise TypeError(f"`{name}` must be an integer tensor, got dtype {ids.dtype.name}.")
        if rank is not None and ids.shape.rank is not None and ids.shape.rank != rank:
            raise ValueError(
                f"`{name}` must have rank {rank} ([batch, num_true]), got shape {ids.shape}."
            )
        ids = tf.cast(ids, tf.int64)
        msg = f"`{name}` has ids outside [0, num_classes={self.num_classes})"
        checks = [
            tf.debugging.assert_non_negative(ids, message=msg),
            tf.debugging.assert_less(ids, tf.constant(self.num_classes, tf.int64), message=msg),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(ids)

    def _sample_unique(self, num_sampled, seed):
        """First `num_sampled` distinct ids of an i.i.d. stream, and the stream length used.

        The shared sample is one row of `_sample_unique_rows`: the same stream, rounds and
        draw bound. Subclasses with a faster unique draw of one stream override this.
        """
        found, tries = self._sample_unique_rows(1, num_sampled, seed)
        return tf.ensure_shape(found[0], [num_sampled]), tries[0]

    def _sample_unique_rows(self, batch, num_sampled, seed):
        """Each row's first `num_sampled` distinct ids of its own i.i.d. stream, and each
        row's stream length (`tries`): int64 `[batch, num_sampled]` and `[batch]`.

        The streams are drawn in rounds (round r from `fold_in(seed, r)`), each as long as
        all before it (up to 2^22 draws in all rows), so the total work is at most about
        twice the tries needed. At most a bound of draws is made
        (`tf_sampling/ops/_unique.py`): past it, or if the bound is above 2^32 draws,
        InvalidArgumentError.
        """
        support = self._support_size()
        if support is not None:
            # Fail at once rather than drawing up to the bound.
            enough_support = tf.debugging.assert_greater_equal(
                tf.cast(support, tf.int64), tf.constant(num_sampled, tf.int64),
                message=f"`num_sampled`={num_sampled} with unique=True needs that many classes "
                        "of nonzero probability, but the sampler has fewer",
            )
            with tf.control_dependencies([enough_support]):
                seed = tf.identity(seed)

        def draw(length, s):
            flat = self._draw(tf.cast(tf.cast(batch, tf.int64) * length, tf.int32), s)
            return tf.reshape(tf.cast(flat, tf.int64), [tf.cast(batch, tf.int64), length])

        return _unique.unique_rows(draw, batch, num_sampled, seed, self._all_probabilities,
                                   self.num_classes)

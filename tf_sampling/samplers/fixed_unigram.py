"""Fixed unigram sampler: draws classes in proportion to given counts, raised to a power."""

import math
import numbers

import keras
import numpy as np
import tensorflow as tf

from tf_sampling.samplers.base import CandidateSampler, draw_from_cdf, probability_from_cdf


def _check_nonnegative_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"`{name}` must be a nonnegative integer, got {value!r}.")
    return int(value)


def _check_counts(counts):
    counts = np.asarray(counts.numpy() if isinstance(counts, tf.Tensor) else counts)
    if counts.ndim != 1:
        raise ValueError(f"`counts` must be a 1-D list of numbers, got shape {counts.shape}.")
    if not (np.issubdtype(counts.dtype, np.number) or counts.dtype == bool):
        raise ValueError(f"`counts` must be numbers, got dtype {counts.dtype}.")
    counts = counts.astype(np.float64)
    for bad, what in ((np.isnan(counts), "NaN"), (np.isinf(counts), "infinite"),
                      (counts < 0, "negative")):
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"`counts` has {what} values, e.g. counts[{i}]={counts[i]}.")
    if counts.size and not counts.any():
        raise ValueError("`counts` are all zero; at least one class needs a positive count.")
    return counts


def read_vocab_counts(vocab_file):
    """Counts from a CSV vocabulary file: one class per line, its count in the last column.

    This is the format of `tf.random.fixed_unigram_candidate_sampler`'s `vocab_file`, e.g.
    `the,1061396`, read as UTF-8. Either every line is `word,count` (the count after the
    last comma) or no line has a comma and each is a bare count. Errors name the file and
    the line:
    - an empty line (skipping it would shift the ids of all classes after it);
    - a line without a comma in a `word,count` file (`2024` there is a word whose count
      is missing, not a count);
    - a word on two lines (two ids for one word);
    - a count that is not a finite nonnegative number, and bytes that are not UTF-8.
    """
    if not tf.io.gfile.exists(vocab_file):
        raise FileNotFoundError(f"`vocab_file` {vocab_file!r} does not exist.")
    counts = []
    first_line_of = {}
    with_words = None  # whether lines are `word,count`, decided by line 1
    # Bytes, decoded line by line, so that a decoding error can name its line.
    with tf.io.gfile.GFile(vocab_file, "rb") as f:
        for line_number, raw in enumerate(f, start=1):
            where = f"`vocab_file` {vocab_file!r}, line {line_number}"
            try:
                # utf-8-sig on line 1: a byte-order mark is not part of the first word.
                line = raw.decode("utf-8-sig" if line_number == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{where}: not valid UTF-8 ({e.reason} at byte {e.start} of the line: "
                    f"{raw[max(e.start - 10, 0):e.end + 10]!r}).") from None
            if not line.strip():
                raise ValueError(f"{where}: empty line; every line must be a class.")
            has_comma = "," in line
            if with_words is None:
                with_words = has_comma
            elif has_comma != with_words:
                raise ValueError(
                    f"{where}: {line!r} " + (
                        "has no comma, but line 1 is `word,count`: each line needs its "
                        "word and its count." if with_words else
                        "has a comma, but line 1 is a bare count: either every line is "
                        "`word,count` or none is."))
            word, field = line.rsplit(",", 1) if has_comma else (None, line)
            field = field.strip()
            try:
                count = float(field)
            except ValueError:
                raise ValueError(
                    f"{where}: the last comma-separated field must be a count, got "
                    f"{line!r}.") from None
            if not math.isfinite(count) or count < 0:
                raise ValueError(
                    f"{where}: counts must be finite and nonnegative, got {field!r}.")
            if word is not None:
                seen = first_line_of.setdefault(word, line_number)
                if seen != line_number:
                    raise ValueError(
                        f"{where}: the word {word!r} is also on line {seen}; each word "
                        f"must be listed once.")
            counts.append(count)
    if not counts:
        raise ValueError(f"`vocab_file` {vocab_file!r} is empty.")
    return counts


@keras.saving.register_keras_serializable(package="tf_sampling")
class FixedUnigramSampler(CandidateSampler):
    """Draws classes in proportion to fixed counts raised to `distortion`, like
    `tf.random.fixed_unigram_candidate_sampler`.

    Class ids: the first `num_reserved_ids` ids (e.g. an unknown-word token) have weight 0
    and are never drawn; id `num_reserved_ids + i` has weight `counts[i] ** distortion`
    (as in TF, `0 ** 0` is 1: `distortion=0` is uniform over the non-reserved ids). With
    `num_shards > 1` the sampler covers only the ids `g` with `g % num_shards == shard`,
    and, as TF's op, it numbers them locally: it returns and accepts `g // num_shards`.
    So `num_classes` is the number of ids in this shard; with one shard it is
    `num_reserved_ids + len(counts)`. (TF's op miscounts ids when it has both reserved ids
    and several shards; this class uses the rule above in every case.)

    The weights are turned into a float64 running sum kept in a non-trainable variable
    (`self.cdf`), so a draw costs O(num_sampled * log(num_classes)), and after
    construction the sampler depends neither on the vocabulary file nor on a graph
    constant: a SavedModel holds the distribution as a variable, while TF's op embeds
    `unigrams` in the graph and loses `vocab_file`.

    Serialization: `get_config()` holds `num_classes` and the options, not the counts
    (they could be millions of numbers); the distribution is saved with the weights, so
    `.keras` files, checkpoints and SavedModels restore it. A sampler rebuilt from its
    config alone has no distribution and refuses to sample until weights are loaded.

    Args:
        num_classes: number of ids this sampler covers (see above).
        counts: nonnegative finite numbers, one per non-reserved class; or None with
            `vocab_file`.
        vocab_file: path of a CSV file with one class per line and its count in the last
            column (e.g. `word,count`); read once, here.
        distortion: weights are `counts ** distortion`; `>= 0`. 0.75 is word2vec's choice.
        num_reserved_ids: number of leading ids of weight 0.
        num_shards, shard: cover only the ids `g % num_shards == shard`.
        seed: integer seed of the sampler's seed generator.

    Example:
    >>> s = tfs.samplers.FixedUnigramSampler(
    ...     num_classes=4, counts=[10, 5, 1], num_reserved_ids=1, distortion=0.75)
    >>> s.probability([0, 1])  # [0, 10**0.75 / (10**0.75 + 5**0.75 + 1)]
    >>> sampled, true_ec, sampled_ec = s.sample([[1], [3]], num_sampled=2)
    """

    def __init__(self, num_classes, counts=None, vocab_file=None, distortion=1.0,
                 num_reserved_ids=0, num_shards=1, shard=0, seed=None, **kwargs):
        # Set only by `from_config`: the distribution comes later, with the weights.
        from_weights = kwargs.pop("_from_weights", False)
        super().__init__(num_classes, seed=seed, **kwargs)
        if (isinstance(distortion, bool) or not isinstance(distortion, numbers.Real)
                or not math.isfinite(distortion) or distortion < 0):
            raise ValueError(f"`distortion` must be a finite number >= 0, got {distortion!r}.")
        self.distortion = float(distortion)
        self.num_reserved_ids = _check_nonnegative_int(num_reserved_ids, "num_reserved_ids")
        if isinstance(num_shards, bool) or not isinstance(num_shards, numbers.Integral) \
                or num_shards < 1:
            raise ValueError(f"`num_shards` must be a positive integer, got {num_shards!r}.")
        self.num_shards = int(num_shards)
        if isinstance(shard, bool) or not isinstance(shard, numbers.Integral) \
                or not 0 <= shard < self.num_shards:
            raise ValueError(
                f"`shard` must be an integer in [0, num_shards={self.num_shards}), "
                f"got {shard!r}.")
        self.shard = int(shard)

        if from_weights:
            if counts is not None or vocab_file is not None:
                raise ValueError("`counts` and `vocab_file` must be None when the "
                                 "distribution is to be loaded from saved weights.")
            cdf = None
        else:
            if (counts is None) == (vocab_file is None):
                raise ValueError("Pass exactly one of `counts` and `vocab_file`, got "
                                 f"{'both' if counts is not None else 'neither'}.")
            if vocab_file is not None:
                counts = read_vocab_counts(vocab_file)
            cdf = self._cumulative_weights(_check_counts(counts),
                                           "vocab_file" if vocab_file is not None else "counts")

        self.cdf = self.add_weight(
            shape=(self.num_classes,), dtype="float64", initializer="zeros", trainable=False,
            autocast=False, name="cdf")
        # Kept so that a unique draw of more classes than have weight fails at once.
        self.num_positive = self.add_weight(
            shape=(), dtype="int64", initializer="zeros", trainable=False, autocast=False,
            name="num_positive")
        if cdf is not None:
            self.cdf.assign(cdf)
            self.num_positive.assign(int(np.count_nonzero(np.diff(cdf, prepend=0.0))))

    def _cumulative_weights(self, counts, source):
        num_ids = self.num_reserved_ids + counts.size
        shard_size = len(range(self.shard, num_ids, self.num_shards))
        if shard_size != self.num_classes:
            if self.num_shards == 1:
                rule = (f"`num_classes`={self.num_classes} must equal num_reserved_ids + "
                        f"len(counts) = {self.num_reserved_ids} + {counts.size}")
            else:
                rule = (f"`num_classes`={self.num_classes} must equal the number of ids g in "
                        f"[0, num_reserved_ids + len(counts) = {num_ids}) with "
                        f"g % num_shards == {self.shard}, which is {shard_size}")
            raise ValueError(f"{rule} (counts read from `{source}`).")
        weights = np.concatenate([np.zeros(self.num_reserved_ids), counts ** self.distortion])
        weights = weights[self.shard::self.num_shards]
        if not weights.any():
            raise ValueError(
                f"No class of shard {self.shard} of {self.num_shards} has a positive weight "
                f"(all of its `{source}` are zero or reserved).")
        cdf = np.cumsum(weights)
        if not np.isfinite(cdf[-1]):
            raise ValueError(f"The sum of `{source}` ** distortion overflows float64.")
        return cdf

    def _assert_loaded(self):
        return tf.debugging.assert_positive(
            self.num_positive, message="FixedUnigramSampler has no distribution: it was "
            "rebuilt from its config, which has no `counts`; load its weights first")

    def _checked_cdf(self):
        with tf.control_dependencies([self._assert_loaded()]):
            return tf.identity(self.cdf)

    def _support_size(self):
        with tf.control_dependencies([self._assert_loaded()]):
            return tf.identity(self.num_positive)

    def _probability(self, class_ids):
        return probability_from_cdf(self._checked_cdf(), class_ids)

    def _draw(self, num_draws, seed):
        return draw_from_cdf(self._checked_cdf(), num_draws, seed)

    def get_config(self):
        config = super().get_config()
        config.update({"distortion": self.distortion, "num_reserved_ids": self.num_reserved_ids,
                       "num_shards": self.num_shards, "shard": self.shard})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("counts", None)
        config.pop("vocab_file", None)
        return cls(**config, _from_weights=True)

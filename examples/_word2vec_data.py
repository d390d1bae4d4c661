"""word2vec's preprocessing as a `tf.data` pipeline: subsampling, dynamic window, batching.

The corpus (in-vocabulary ids plus a sentence id per token) is cut into chunks that end on
sentence boundaries. Each chunk of each epoch becomes one map call that, with vectorised TF
ops and a stateless seed derived from (seed, epoch, chunk):

1. drops frequent words with word2vec's probability (`keep_probabilities`);
2. draws each kept word's reduced window b uniformly in [1, window], as word2vec does;
3. makes every (center, context) pair at distance <= b of the center, inside one sentence
   (skip-gram), or every center with its context words (CBOW);
4. shuffles the chunk's examples.

`rebatch` then slices the chunks into fixed-size batches without touching single examples.
Because the seeds are stateless, a counting pass (`count_examples`) sees exactly the
examples that training will see, which gives the exact number of steps for the progress
bar and for word2vec's linearly decaying learning rate.

Example:
>>> pipe = Word2VecPipeline(ids, sentence_ids, keep_probabilities(vocab.counts, 1e-3),
...                         window=5, model="skipgram", batch_size=1024, epochs=5)
>>> steps, pairs, words = pipe.count_examples()
>>> model.fit(pipe.dataset(), ...)
"""

import numpy as np
import tensorflow as tf

from tf_sampling.word2vec import keep_probabilities  # noqa: F401 (re-exported)


def chunk_bounds(sentence_ids, chunk_tokens):
    """[start, end) token ranges of about `chunk_tokens` tokens, ending on sentence ends."""
    n = len(sentence_ids)
    ends = np.flatnonzero(np.diff(sentence_ids)) + 1  # first token of each new sentence
    ends = np.append(ends, n)
    bounds, start = [], 0
    targets = np.arange(chunk_tokens, n + chunk_tokens, chunk_tokens)
    for t in targets:
        k = np.searchsorted(ends, t)  # first sentence end at or after the target
        end = int(ends[min(k, len(ends) - 1)])
        if end > start:
            bounds.append((start, end))
            start = end
        if start >= n:
            break
    return np.asarray(bounds, dtype=np.int64)


class Word2VecPipeline:
    """Training examples for skip-gram or CBOW, as word2vec makes them.

    Args:
        ids: int32 `[n]` in-vocabulary token ids.
        sentence_ids: int32 `[n]` sentence of each token (windows stay inside one).
        keep_prob: float32 `[V]` per-word keep probability (see `keep_probabilities`).
        window: maximum window size; each center uses a window drawn from [1, window].
        model: "skipgram" gives `{"center": [B], "context": [B]}` pairs (the center word
            predicts one context word, as in word2vec); "cbow" gives
            `{"context": [B, 2*window], "center": [B]}` with -1 where a slot is empty.
        batch_size: examples per batch (the last batch of the run may be smaller).
        epochs: passes over the corpus, each with fresh subsampling and windows.
        seed: integer seed; the same seed gives the same batches.
        chunk_tokens: tokens per map call; larger chunks shuffle more widely and cost less
            per token, smaller ones start training sooner.
    """

    def __init__(self, ids, sentence_ids, keep_prob, window, model="skipgram",
                 batch_size=1024, epochs=1, seed=0, chunk_tokens=200_000):
        if model not in ("skipgram", "cbow"):
            raise ValueError(f"`model` must be 'skipgram' or 'cbow', got {model!r}.")
        if window < 1:
            raise ValueError(f"`window` must be >= 1, got {window}.")
        if len(ids) != len(sentence_ids):
            raise ValueError("`ids` and `sentence_ids` must have the same length.")
        self.model = model
        self.window = int(window)
        self.batch_size = int(batch_size)
        self.epochs = int(epochs)
        self.seed = int(seed)
        self.ids = tf.constant(np.asarray(ids, np.int32))
        self.sentence_ids = tf.constant(np.asarray(sentence_ids, np.int32))
        self.keep_prob = tf.constant(np.asarray(keep_prob, np.float32))
        self.bounds = chunk_bounds(np.asarray(sentence_ids), chunk_tokens)

    # ------------------------------------------------------------------ per chunk
    def _subsample(self, start, end, seed):
        ids = self.ids[start:end]
        sents = self.sentence_ids[start:end]
        u = tf.random.stateless_uniform(tf.shape(ids), seed)
        keep = u < tf.gather(self.keep_prob, ids)
        return tf.boolean_mask(ids, keep), tf.boolean_mask(sents, keep)

    def _examples(self, epoch, chunk):
        """The shuffled examples of one chunk of one epoch, and the number of words kept."""
        seed = tf.stack([tf.constant(self.seed, tf.int64), epoch * 1_000_003 + chunk])
        s_keep, s_win, s_shuf = tf.unstack(
            tf.random.experimental.stateless_split(seed, 3))
        start, end = self.bounds_t[chunk, 0], self.bounds_t[chunk, 1]
        ids, sents = self._subsample(start, end, s_keep)
        n = tf.size(ids)
        # word2vec: b = window - (rand % window), i.e. uniform in [1, window].
        b = tf.random.stateless_uniform([n], s_win, minval=1, maxval=self.window + 1,
                                        dtype=tf.int32)
        if self.model == "skipgram":
            centers, contexts = [], []
            for d in range(1, self.window + 1):
                same = tf.equal(sents[:-d], sents[d:])
                right = same & (b[:-d] >= d)  # center i, context i + d
                left = same & (b[d:] >= d)    # center i + d, context i
                centers += [tf.boolean_mask(ids[:-d], right), tf.boolean_mask(ids[d:], left)]
                contexts += [tf.boolean_mask(ids[d:], right), tf.boolean_mask(ids[:-d], left)]
            center = tf.concat(centers, 0)
            context = tf.concat(contexts, 0)
            order = tf.random.experimental.stateless_shuffle(tf.range(tf.size(center)), s_shuf)
            out = {"center": tf.gather(center, order), "context": tf.gather(context, order)}
        else:
            cols = []
            pad_ids = tf.pad(ids, [[self.window, self.window]], constant_values=-1)
            pad_sents = tf.pad(sents, [[self.window, self.window]], constant_values=-1)
            for d in list(range(-self.window, 0)) + list(range(1, self.window + 1)):
                other = pad_ids[self.window + d:self.window + d + n]
                ok = tf.equal(pad_sents[self.window + d:self.window + d + n], sents)
                ok &= b >= abs(d)
                cols.append(tf.where(ok, other, -1))
            ctx = tf.stack(cols, axis=1)
            has_ctx = tf.reduce_any(ctx >= 0, axis=1)
            ctx = tf.boolean_mask(ctx, has_ctx)
            center = tf.boolean_mask(ids, has_ctx)
            order = tf.random.experimental.stateless_shuffle(tf.range(tf.size(center)), s_shuf)
            out = {"context": tf.gather(ctx, order), "center": tf.gather(center, order)}
        return out, n

    # ------------------------------------------------------------------ datasets
    @property
    def bounds_t(self):
        return tf.constant(self.bounds)

    def _chunks(self):
        n_chunks = len(self.bounds)
        epochs = tf.data.Dataset.range(self.epochs)
        return epochs.flat_map(
            lambda e: tf.data.Dataset.range(n_chunks).map(lambda c: (e, c)))

    def dataset(self):
        """The batches of all epochs, in order (each epoch's subsampling is different)."""
        ds = self._chunks().map(lambda e, c: self._examples(e, c)[0],
                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.rebatch(self.batch_size).prefetch(tf.data.AUTOTUNE)

    def count_examples(self):
        """(batches, examples, kept words) over all epochs: what `dataset()` will yield."""
        def count(e, c):
            examples, words = self._examples(e, c)
            return tf.stack([tf.size(examples["center"], tf.int64), tf.cast(words, tf.int64)])

        ds = self._chunks().map(count, num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=False)
        total = ds.reduce(tf.zeros([2], tf.int64), lambda acc, x: acc + x).numpy()
        examples, words = int(total[0]), int(total[1])
        batches = -(-examples // self.batch_size)
        return batches, examples, words

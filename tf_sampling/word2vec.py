"""Skip-gram word vectors trained by the fused custom op, at word2vec.c's speed.

`Word2Vec` is the fast path for the classic word2vec recipe: its `train` hands whole
chunks of the corpus to one op call (`tfs.ops.skipgram_train`) that runs word2vec's inner
loop in C++ on several Hogwild threads, updating two `tf.Variable`s in place. The
hyperparameters and their defaults are gensim's (`sg=1`). For any other model (a Keras
model with `tfs.layers.NegativeSampling` or `tfs.layers.HierarchicalSoftmax` heads, on a
GPU, under `tf.distribute`) use the layers; examples/word2vec.py shows both.
"""

import collections
import numbers
import time

import keras
import numpy as np
import tensorflow as tf

from tf_sampling import trees
from tf_sampling.ops import skipgram as _skipgram


def keep_probabilities(counts, sample):
    """word2vec's probability of keeping each occurrence of a word (1 for sample <= 0).

    With t = sample * total, a word seen c times is kept with probability
    (sqrt(c / t) + 1) * t / c, capped at 1 (word2vec.c and gensim use this formula).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if sample <= 0:
        return np.ones_like(counts, dtype=np.float32)
    threshold = sample * counts.sum()
    p = (np.sqrt(counts / threshold) + 1.0) * threshold / np.maximum(counts, 1.0)
    return np.minimum(p, 1.0).astype(np.float32)


def _positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _non_negative_float(value, name):
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    return value


class Word2Vec(tf.Module):
    """Skip-gram word2vec (negative sampling or hierarchical softmax) on the fused op.

    Args:
        words: the vocabulary, most frequent first (see `from_sentences`).
        counts: their corpus counts (> 0).
        dim: vector size.
        window: maximum distance between center and context; each center word draws its
            window uniformly in `[1, window]`.
        negative: noise words per pair; 0 with `hs=True`.
        hs: hierarchical softmax over the Huffman tree of the counts instead.
        sample: subsampling threshold (word2vec's `-sample`; 0 disables).
        alpha, min_alpha: learning rate, decayed linearly to `min_alpha` over all epochs.
        ns_exponent: noise distribution counts ** ns_exponent.
        workers: training threads (Hogwild: with more than one, results vary run to run).
        seed: seed of the initial vectors and of the op's random streams.
        max_sentence_length: longer sentences are cut, as gensim does (10000).

    Example:
    >>> sentences = [line.split() for line in open("wiki.train.tokens")]
    >>> w2v = tfs.Word2Vec.from_sentences(sentences, min_count=5, workers=2)
    >>> w2v.train(sentences, epochs=5)
    >>> w2v.most_similar("king", k=5)
    """

    def __init__(self, words, counts, dim=100, window=5, negative=5, hs=False, sample=1e-3,
                 alpha=0.025, min_alpha=1e-4, ns_exponent=0.75, workers=1, seed=1,
                 max_sentence_length=10000, name=None):
        super().__init__(name=name)
        self.words = list(words)
        self.counts = np.asarray(counts, dtype=np.int64)
        if self.counts.shape != (len(self.words),):
            raise ValueError(f"`counts` must have one entry per word ({len(self.words)}), "
                             f"got shape {self.counts.shape}.")
        if len(self.words) < 2:
            raise ValueError("The vocabulary needs at least 2 words.")
        if np.any(self.counts <= 0):
            bad = int(np.flatnonzero(self.counts <= 0)[0])
            raise ValueError(f"`counts` must be positive, got counts[{bad}] = "
                             f"{self.counts[bad]} for {self.words[bad]!r}.")
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            dup = next(w for w, c in collections.Counter(self.words).items() if c > 1)
            raise ValueError(f"`words` has duplicates, e.g. {dup!r}.")
        self.dim = _positive_int(dim, "dim")
        self.window = _positive_int(window, "window")
        self.negative = _positive_int(negative, "negative", 0)
        self.hs = bool(hs)
        if self.hs == (self.negative > 0):
            raise ValueError("Choose one objective: negative > 0 with hs=False (negative "
                             f"sampling), or negative=0 with hs=True; got negative="
                             f"{self.negative}, hs={hs}.")
        self.sample = _non_negative_float(sample, "sample")
        self.alpha = _non_negative_float(alpha, "alpha")
        self.min_alpha = _non_negative_float(min_alpha, "min_alpha")
        self.ns_exponent = float(ns_exponent)
        self.workers = _positive_int(workers, "workers")
        self.seed = _positive_int(seed, "seed", 0)
        self.max_sentence_length = _positive_int(max_sentence_length, "max_sentence_length")

        vocab = len(self.words)
        rng = np.random.default_rng(self.seed)
        # word2vec's initialization: inputs uniform in +-0.5/dim, outputs zero.
        self.w_in = tf.Variable(
            rng.uniform(-0.5, 0.5, (vocab, self.dim)).astype(np.float32) / self.dim,
            name="w_in")
        out_rows = vocab - 1 if self.hs else vocab
        self.w_out = tf.Variable(tf.zeros([out_rows, self.dim]), name="w_out")
        self.epochs_trained = tf.Variable(0, dtype=tf.int64, trainable=False,
                                          name="epochs_trained")
        self._keep = keep_probabilities(self.counts, self.sample)
        if self.hs:
            self._tree = trees.huffman_tree(self.counts)
            nodes, codes, splits = self._tree.flat_paths()
            self._hs_paths = (nodes, codes.astype(np.int32), splits)
            self._noise = None
        else:
            self._noise = (self.counts.astype(np.float64) ** self.ns_exponent).astype(
                np.float32)
            self._hs_paths = None

    @classmethod
    def from_sentences(cls, sentences, min_count=5, **kwargs):
        """Counts the words of an iterable of token lists and keeps those seen at least
        `min_count` times, most frequent first (ties in order of first appearance)."""
        min_count = _positive_int(min_count, "min_count")
        counter = collections.Counter()
        for tokens in sentences:
            counter.update(tokens)
        kept = [(w, c) for w, c in counter.items() if c >= min_count]
        if len(kept) < 2:
            raise ValueError(f"Fewer than 2 words occur at least min_count={min_count} times.")
        kept.sort(key=lambda wc: -wc[1])
        return cls([w for w, _ in kept], [c for _, c in kept], **kwargs)

    def encode(self, sentences):
        """Ids of the in-vocabulary words and the sentence boundaries, for `train`.

        Out-of-vocabulary words are dropped before windows are drawn (as word2vec and
        gensim do), and sentences longer than `max_sentence_length` are cut.

        Returns:
            `(ids int32 [n], splits int64 [S + 1], raw_words)`.
        """
        get = self.index.get
        ids, lengths, raw = [], [], 0
        cap = self.max_sentence_length
        for tokens in sentences:
            raw += len(tokens)
            x = np.fromiter((get(t, -1) for t in tokens), np.int32, count=len(tokens))
            x = x[x >= 0]
            for start in range(0, len(x), cap):
                ids.append(x[start:start + cap])
                lengths.append(min(cap, len(x) - start))
        splits = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=splits[1:])
        corpus = np.concatenate(ids) if ids else np.zeros([0], np.int32)
        return corpus, splits, raw

    def train(self, sentences=None, epochs=5, encoded=None, chunk_words=1_000_000,
              callback=None, verbose=1):
        """Trains for `epochs` passes over the corpus.

        Args:
            sentences: iterable of token lists (or pass `encoded`).
            epochs: passes; alpha decays linearly from `alpha` to `min_alpha` over all.
            encoded: the output of `encode(sentences)`, to encode once and train often.
            chunk_words: words per op call (the op splits each chunk among `workers`).
                Progress is reported after each call, so this is also the granularity
                of the progress bar.
            callback: called as `callback(epoch, stats)` after every epoch.
            verbose: 0 silent; 1 a Keras `Progbar` per epoch, as `model.fit` shows
                (in-vocabulary words done of the epoch's total, ETA, words/s, mean pair
                loss so far), updated after each chunk; 2 one line per epoch.

        Returns:
            One dict per epoch: `words` kept after subsampling, `pairs`, mean pair `loss`,
            `raw_words` (in-vocabulary and not) and `seconds`.
        """
        epochs = _positive_int(epochs, "epochs")
        chunk_words = _positive_int(chunk_words, "chunk_words")
        if verbose not in (0, 1, 2):
            raise ValueError(f"`verbose` must be 0, 1 or 2, got {verbose!r}.")
        if encoded is None:
            if sentences is None:
                raise ValueError("Pass `sentences` or `encoded`.")
            encoded = self.encode(sentences)
        corpus, splits, raw = encoded
        n = len(corpus)
        if n == 0:
            raise ValueError("The corpus has no in-vocabulary words.")
        # Chunk boundaries on sentence ends, about chunk_words apart.
        targets = np.arange(chunk_words, n, chunk_words)
        cuts = np.unique(np.concatenate(
            [[0], np.searchsorted(splits, targets), [len(splits) - 1]]))
        history = []
        base_epoch = int(self.epochs_trained.numpy())
        for epoch in range(epochs):
            start = time.perf_counter()
            words = pairs = 0
            loss = 0.0
            bar = None
            if verbose:
                print(f"Epoch {epoch + 1}/{epochs}", flush=True)
                bar = keras.utils.Progbar(n, verbose=verbose, unit_name="word",
                                          stateful_metrics=["words/s", "loss"])
            for k in range(len(cuts) - 1):
                s0, s1 = int(cuts[k]), int(cuts[k + 1])
                t0, t1 = int(splits[s0]), int(splits[s1])
                progress = (epoch + np.array([t0, t1]) / n) / epochs
                alpha = self.alpha - (self.alpha - self.min_alpha) * progress
                w, p, l = _skipgram.skipgram_train(
                    self.w_in, self.w_out, corpus[t0:t1], splits[s0:s1 + 1] - t0, self._keep,
                    alpha=alpha, seed=[self.seed, (base_epoch + epoch) * 1_000_003 + k],
                    window=self.window, negative=self.negative,
                    noise_weights=self._noise, hs_paths=self._hs_paths,
                    num_threads=self.workers)
                words += int(w)
                pairs += int(p)
                loss += float(l)
                if bar is not None:
                    elapsed = max(time.perf_counter() - start, 1e-9)
                    bar.update(t1, [("words/s", t1 / elapsed), ("loss", loss / max(pairs, 1))])
            self.epochs_trained.assign_add(1)
            stats = {"words": words, "pairs": pairs, "raw_words": raw,
                     "loss": loss / max(pairs, 1), "seconds": time.perf_counter() - start}
            history.append(stats)
            if callback is not None:
                callback(epoch, stats)
        return history

    @property
    def vectors(self):
        """The word vectors, float32 `[V, dim]` (NumPy)."""
        return self.w_in.numpy()

    def most_similar(self, word, k=10):
        """The `k` nearest words to `word` by cosine similarity, as (word, similarity)."""
        if word not in self.index:
            raise KeyError(f"{word!r} is not in the vocabulary.")
        v = self.vectors
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        sims = v @ v[self.index[word]]
        sims[self.index[word]] = -np.inf
        top = np.argsort(-sims)[:k]
        return [(self.words[i], float(sims[i])) for i in top]

    def save_word2vec_format(self, path):
        """Writes the vectors in word2vec's text format (gensim's `load_word2vec_format`)."""
        v = self.vectors
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"{len(self.words)} {self.dim}\n")
            for w, row in zip(self.words, v):
                f.write(w + " " + " ".join(f"{x:.6f}" for x in row) + "\n")

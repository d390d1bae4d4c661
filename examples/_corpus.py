"""Reading whitespace-tokenized text, vocabularies, and the language-model input pipelines.

Shared by `word2vec.py` and `language_model.py`. NumPy for the one-off work (counting,
encoding), `tf.data` for everything done per epoch, so that batches are made in TF's
thread pool while the model trains.

Example:
>>> vocab = Vocab.from_tokens(read_lines("wiki.train.tokens"), min_count=5)
>>> ids, sentence_ids, raw_words = encode_sentences(read_lines("wiki.train.tokens"), vocab)
"""

import collections

import numpy as np
import tensorflow as tf


def read_lines(path, lowercase=False, keep_empty=False):
    """Yields the token list of every line of a whitespace-tokenized text file; empty lines
    are skipped unless `keep_empty`."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if lowercase:
                line = line.lower()
            tokens = line.split()
            if tokens or keep_empty:
                yield tokens


def read_lm_lines(path, eos="<eos>"):
    """Language-model lines: every line, empty ones included, with `eos` appended (the
    usual WikiText convention, which gives its published token counts)."""
    for tokens in read_lines(path, keep_empty=True):
        tokens.append(eos)
        yield tokens


class Vocab:
    """Words sorted by decreasing count (ties keep first-seen order, as gensim does).

    Attributes:
        words: list of words; a word's id is its position.
        counts: int64 array of their counts.
        index: dict word -> id.
    """

    def __init__(self, words, counts):
        self.words = list(words)
        self.counts = np.asarray(counts, dtype=np.int64)
        if len(self.words) != len(self.counts):
            raise ValueError("`words` and `counts` must have the same length.")
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("`words` has duplicates.")

    @classmethod
    def from_tokens(cls, sentences, min_count=1, extra=()):
        """Counts the tokens of an iterable of token lists; keeps words seen >= min_count times.

        `extra` words (e.g. "<eos>") are added with their counts if absent.
        """
        if min_count < 1:
            raise ValueError(f"`min_count` must be >= 1, got {min_count}.")
        counter = collections.Counter()
        for tokens in sentences:
            counter.update(tokens)
        for w in extra:
            counter.setdefault(w, 0)
        kept = [(w, c) for w, c in counter.items() if c >= min_count or w in extra]
        kept.sort(key=lambda wc: -wc[1])  # stable: ties stay in first-seen order
        if not kept:
            raise ValueError(f"No word occurs at least min_count={min_count} times.")
        return cls([w for w, _ in kept], [c for _, c in kept])

    def __len__(self):
        return len(self.words)

    def encode(self, tokens, unk=None):
        """int32 ids of `tokens`; out-of-vocabulary tokens get `unk`'s id, or -1 if unk is None."""
        oov = -1 if unk is None else self.index[unk]
        get = self.index.get
        return np.fromiter((get(t, oov) for t in tokens), dtype=np.int32, count=len(tokens))


def encode_sentences(sentences, vocab):
    """Encodes sentences for word2vec: out-of-vocabulary words are dropped, as word2vec does.

    Returns:
        ids: int32 `[n]` in-vocabulary token ids, sentences concatenated.
        sentence_ids: int32 `[n]`, the sentence each token belongs to; windows never cross a
            sentence (a line of the file).
        raw_words: number of tokens read, in vocabulary or not (gensim's "raw words").
    """
    ids, sents = [], []
    raw = 0
    for k, tokens in enumerate(sentences):
        raw += len(tokens)
        x = vocab.encode(tokens)
        x = x[x >= 0]
        ids.append(x)
        sents.append(np.full(len(x), k, dtype=np.int32))
    if not ids:
        raise ValueError("The corpus is empty.")
    return np.concatenate(ids), np.concatenate(sents), raw


def encode_stream(path, vocab, eos="<eos>", unk="<unk>"):
    """A language-model token stream: every line's ids followed by `eos` (see
    `read_lm_lines`), out-of-vocabulary words mapped to `unk`."""
    out = [vocab.encode(tokens, unk=unk) for tokens in read_lm_lines(path, eos)]
    if not out:
        raise ValueError(f"{path} has no lines.")
    return np.concatenate(out)


# ------------------------------------------------------------------ language-model windows
def _epochs(epochs):
    """int64 epoch numbers 0, 1, ...: `epochs` of them, or forever if None."""
    return tf.data.Dataset.counter() if epochs is None else tf.data.Dataset.range(epochs)


def context_windows(stream, context, positions, pad_id):
    """`[len(positions), context]` ids of the `context` tokens before each target position.

    Positions before the start of the stream are `pad_id`. This is NumPy, for small inputs
    (serving examples, tests); the training pipeline does the same gather in `tf.data`.
    """
    positions = np.asarray(positions)
    idx = positions[:, None] + np.arange(-context, 0)[None, :]
    padded = np.concatenate([np.full(context, pad_id, np.int32), stream])
    return padded[idx + context]


def window_dataset(stream, context, batch_size, pad_id, shuffle=False, seed=0, epochs=1,
                   first_target=1):
    """Batches of `({"context": [B, context]}, {"label": [B]})`-style dicts for an n-gram model.

    Every position from `first_target` on is a target once per epoch; its context is the
    `context` tokens before it (padded with `pad_id` at the stream start). With `shuffle`,
    the order is a fresh permutation every epoch, the last partial batch is dropped
    (< batch_size targets per epoch), and `epochs=None` repeats forever; without it, all
    targets come once, in order.
    """
    stream = np.asarray(stream, dtype=np.int32)
    padded = tf.constant(np.concatenate([np.full(context, pad_id, np.int32), stream]))
    offsets = tf.range(context, dtype=tf.int32)  # padded[p .. p+context-1] precede target p
    positions = tf.range(first_target, len(stream), dtype=tf.int32)
    n = len(stream) - first_target

    def gather(pos):
        ctx = tf.gather(padded, pos[:, None] + offsets[None, :])
        return {"context": ctx, "label": tf.gather(padded, pos + context)}

    if shuffle:
        num_batches = n // batch_size

        def epoch(e):
            perm = tf.random.experimental.stateless_shuffle(
                positions, seed=tf.stack([tf.constant(seed, tf.int64), e]))
            return tf.data.Dataset.from_tensor_slices(
                tf.reshape(perm[:num_batches * batch_size], [num_batches, batch_size]))

        ds = _epochs(epochs).flat_map(epoch)
    else:
        ds = tf.data.Dataset.from_tensor_slices(positions).batch(batch_size)
    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def sequence_dataset(stream, length, batch_size, shuffle=False, seed=0, epochs=1):
    """Batches of `{"context": [B, T], "label": [B, T]}` for a recurrent model.

    The targets are positions 1..n-1 cut into pieces of `length`; each piece's inputs are
    the tokens one step earlier, so a piece sees no context from before its start (the
    model is not stateful across batches). With `shuffle`, pieces come in a fresh order
    every epoch (`epochs=None`: forever); without it, the last piece is shorter and comes
    as its own batch, so that every target is scored exactly once.
    """
    stream = np.asarray(stream, dtype=np.int32)
    n_targets = len(stream) - 1
    n_full = n_targets // length
    full_x = stream[:n_full * length].reshape(n_full, length)
    full_y = stream[1:n_full * length + 1].reshape(n_full, length)
    if shuffle:
        num_batches = n_full // batch_size
        x, y = tf.constant(full_x), tf.constant(full_y)
        idx = tf.range(n_full, dtype=tf.int32)

        def epoch(e):
            perm = tf.random.experimental.stateless_shuffle(
                idx, seed=tf.stack([tf.constant(seed, tf.int64), e]))
            return tf.data.Dataset.from_tensor_slices(
                tf.reshape(perm[:num_batches * batch_size], [num_batches, batch_size]))

        ds = _epochs(epochs).flat_map(epoch).map(
            lambda b: {"context": tf.gather(x, b), "label": tf.gather(y, b)},
            num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)
    ds = tf.data.Dataset.from_tensor_slices({"context": full_x, "label": full_y}).batch(batch_size)
    rest = n_targets - n_full * length
    if rest:
        tail = {"context": stream[n_full * length:n_targets][None, :],
                "label": stream[n_full * length + 1:][None, :]}
        ds = ds.concatenate(tf.data.Dataset.from_tensors(tail))
    return ds.prefetch(tf.data.AUTOTUNE)

"""A synthetic Zipfian bigram source whose entropy rate is known exactly.

Every next word is drawn from the same Zipf law over ranks, P(rank r) = r^-a / H(V, a),
r = 1..V; only the ordering of the vocabulary by rank depends on the previous word s. So
each conditional distribution P(. | s) is a permutation of one Zipf distribution and has
exactly its entropy

    H = -sum_r P(r) log P(r),

whatever s is. Hence every token's conditional entropy given the whole past is H, the
entropy rate of the stream is H, and no model can have an expected cross-entropy below it:
exp(H) bounds any model's perplexity from below (up to the sampling noise of a finite test
set), for every token, without any assumption of stationarity.

The orderings are built to be learnable and to keep Zipfian word frequencies: word w has
a base key log(1 + w), and context s reorders words by

    key_s(w) = log(1 + w) - coupling * <u_s, v_w>,

with random latent vectors u, v in R^latent_dim. Since ranks grow roughly like exp(key),
log P(w | s) is close to -a log(1 + w) + a * coupling * <u_s, v_w> + const: a bias plus a
low-rank bilinear term, which an embedding model can learn. Word ids are the base order,
so small ids are frequent.

The stream is made of independent chains of `chain_length` tokens, run side by side
(vectorised) and then concatenated. A chain's first word is drawn from the Zipf law over
the base order, independently of the past, so it also has entropy exactly H: the bound
holds for every token of the concatenation.

Example:
>>> src = ZipfianBigramSource(vocab_size=2000, seed=0)
>>> tokens = src.sample(100_000, seed=1)
>>> src.entropy_rate, src.perplexity_bound
"""

import numpy as np


class ZipfianBigramSource:
    """A bigram source with Zipfian conditionals over context-dependent orderings.

    Args:
        vocab_size: number of words V.
        exponent: Zipf exponent a of the rank distribution (> 0).
        coupling: how strongly the previous word reorders the next word's ranks (0 gives
            an i.i.d. Zipf unigram source).
        latent_dim: dimension of the latent vectors that define the orderings.
        seed: integer seed of the orderings.
    """

    def __init__(self, vocab_size=5000, exponent=1.0, coupling=2.0, latent_dim=8, seed=0):
        if vocab_size < 2:
            raise ValueError(f"`vocab_size` must be >= 2, got {vocab_size}.")
        if exponent <= 0:
            raise ValueError(f"`exponent` must be > 0, got {exponent}.")
        self.vocab_size = int(vocab_size)
        self.exponent = float(exponent)
        self.coupling = float(coupling)
        self.latent_dim = int(latent_dim)
        rng = np.random.default_rng(seed)
        ranks = np.arange(1, vocab_size + 1, dtype=np.float64)
        p = ranks ** -exponent
        self.rank_probs = p / p.sum()
        self._rank_cdf = np.cumsum(self.rank_probs)
        self._rank_cdf[-1] = 1.0
        scale = 1.0 / np.sqrt(latent_dim)
        self.u = (rng.standard_normal((vocab_size, latent_dim)) * scale).astype(np.float32)
        self.v = (rng.standard_normal((vocab_size, latent_dim)) * scale).astype(np.float32)
        base = np.log1p(np.arange(vocab_size, dtype=np.float32))
        keys = base[None, :] - np.float32(coupling) * (self.u @ self.v.T)
        id_dtype = np.int16 if vocab_size <= np.iinfo(np.int16).max else np.int32
        # order[s, r] = the word of rank r + 1 after word s.
        self.order = np.argsort(keys, axis=1, kind="stable").astype(id_dtype)
        self._rank_of = None

    @property
    def entropy_rate(self):
        """Entropy rate in nats per token (the entropy of the Zipf rank law)."""
        p = self.rank_probs
        return float(-(p * np.log(p)).sum())

    @property
    def perplexity_bound(self):
        """exp(entropy rate): no model's expected perplexity can be lower."""
        return float(np.exp(self.entropy_rate))

    @property
    def words(self):
        return [f"w{i}" for i in range(self.vocab_size)]

    def _draw_ranks(self, rng, shape):
        return np.searchsorted(self._rank_cdf, rng.random(shape), side="right").clip(
            max=self.vocab_size - 1)

    def sample(self, num_tokens, seed=0, chain_length=1000):
        """int32 `[num_tokens]` word ids: independent chains of `chain_length` tokens
        (the last one shorter), generated side by side and concatenated."""
        rng = np.random.default_rng(seed)
        num_chains = max(1, -(-num_tokens // chain_length))
        ranks = self._draw_ranks(rng, (chain_length, num_chains))
        out = np.empty((chain_length, num_chains), dtype=np.int32)
        out[0] = ranks[0]  # a chain starts from the base order: word id = rank - 1
        for t in range(1, chain_length):
            out[t] = self.order[out[t - 1], ranks[t]]
        return out.T.reshape(-1)[:num_tokens]

    def sequence_log_prob(self, ids, chain_length=1000):
        """True log-probability of every token of a `sample(..., chain_length)` stream
        given its past (float64 `[len(ids)]`): chain starts under the start law, the other
        tokens under the bigram conditional. Its mean is an unbiased estimate of -H."""
        ids = np.asarray(ids)
        out = np.empty(len(ids), dtype=np.float64)
        starts = np.arange(len(ids)) % chain_length == 0
        out[starts] = np.log(self.rank_probs[ids[starts]])
        rest = np.flatnonzero(~starts)
        out[rest] = self.log_prob(ids[rest - 1], ids[rest])
        return out

    def log_prob(self, prev, nxt):
        """True log P(nxt | prev) of the bigram conditionals (float64, vectorised)."""
        if self._rank_of is None:
            rank_of = np.empty_like(self.order)
            rows = np.arange(self.vocab_size)[:, None]
            rank_of[rows, self.order] = np.arange(self.vocab_size, dtype=self.order.dtype)
            self._rank_of = rank_of
        return np.log(self.rank_probs[self._rank_of[np.asarray(prev), np.asarray(nxt)]])

    def write_text(self, path, num_tokens, seed=0, line_length=1000):
        """Writes a sample as a whitespace-tokenized text file, `line_length` words per line."""
        ids = self.sample(num_tokens, seed=seed)
        words = np.array(self.words)
        with open(path, "w", encoding="utf-8") as f:
            for s in range(0, len(ids), line_length):
                f.write(" ".join(words[ids[s:s + line_length]]) + "\n")
        return ids


def plant_twins(tokens, twin_words, seed=0):
    """Writes each occurrence of a word of `twin_words` as itself or as `word + "_twin"`,
    at random (a copy of `tokens`, an array of str).

    A word and its twin then have exactly the same contexts, so word vectors that capture
    context should put them close together: a ground truth for word similarity.
    """
    rng = np.random.default_rng(seed)
    tokens = np.array(tokens, dtype=object)
    flip = np.isin(tokens, list(twin_words)) & (rng.random(len(tokens)) < 0.5)
    tokens[flip] = [t + "_twin" for t in tokens[flip]]
    return tokens


def write_twin_pairs(path, twin_words, seed=0):
    """A WordSim-format file: every (word, its twin) pair scores 1, and as many pairs of a
    word with another word's twin (same frequencies, different contexts) score 0."""
    rng = np.random.default_rng(seed)
    words = list(twin_words)
    other = rng.permutation(len(words))
    other = np.where(other == np.arange(len(words)), (other + 1) % len(words), other)
    with open(path, "w", encoding="utf-8") as f:
        f.write("# planted twins (1) against frequency-matched non-twins (0)\n")
        for w in words:
            f.write(f"{w}\t{w}_twin\t1\n")
        for w, j in zip(words, other):
            f.write(f"{w}\t{words[j]}_twin\t0\n")

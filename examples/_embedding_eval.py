"""Evaluating and saving word vectors: WordSim-style Spearman, analogies, neighbours.

The metrics follow gensim's `evaluate_word_pairs` and `evaluate_word_analogies` with their
defaults (case-insensitive; where a word occurs in several casings the most frequent one
stands for it), so that results can be compared with gensim's on the same data:

- word pairs: Spearman correlation between the human scores and the cosine similarities,
  over the pairs whose two words are in the vocabulary; the others are counted and skipped.
- analogies (questions-words format, "a b c d" meaning a:b = c:d): the answer is the
  nearest word by cosine to b - a + c over unit vectors, excluding a, b and c; accuracy is
  over the questions whose four words are all in the vocabulary, and coverage is the
  fraction of questions that are.

Only NumPy is used; ranks for Spearman average ties, as `scipy.stats.spearmanr` does.

Example:
>>> ev = EmbeddingEvaluator(vocab.words, vectors)
>>> ev.word_pairs("wordsim353.tsv")["spearman"]
>>> ev.analogies("questions-words.txt")["accuracy"]
"""

import numpy as np


def rankdata(x):
    """Ranks starting at 1, ties given their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sorted_x = x[order]
    # Boundaries of runs of equal values; each run gets the mean of its positions.
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def spearman(a, b):
    """Spearman's rank correlation (Pearson correlation of the tie-averaged ranks)."""
    if len(a) != len(b):
        raise ValueError("`a` and `b` must have the same length.")
    if len(a) < 2:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def unit_rows(vectors):
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class EmbeddingEvaluator:
    """Word-vector metrics over `words` (most frequent first) and their `vectors`.

    Args:
        words: list of words, most frequent first (casing variants are resolved to the
            most frequent one, as gensim does).
        vectors: `[len(words), dim]` array.
        case_insensitive: match evaluation words in upper case (gensim's default).
    """

    def __init__(self, words, vectors, case_insensitive=True):
        if len(words) != len(vectors):
            raise ValueError(f"{len(words)} words but {len(vectors)} vectors.")
        self.words = list(words)
        self.unit = unit_rows(vectors)
        self.case_insensitive = case_insensitive
        self._key = str.upper if case_insensitive else (lambda w: w)
        self.index = {}
        for i in range(len(self.words) - 1, -1, -1):  # reversed: the most frequent wins
            self.index[self._key(self.words[i])] = i
        # The case-folded form of every id, to exclude a, b, c in any casing.
        keys = sorted(self.index)
        key_id = {k: j for j, k in enumerate(keys)}
        self._key_of = np.array([key_id[self._key(w)] for w in self.words], dtype=np.int64)

    def lookup(self, word):
        return self.index.get(self._key(word))

    # ------------------------------------------------------------------ word pairs
    def word_pairs(self, path):
        """Spearman on a tab-separated `word1 word2 score` file ('#' lines are comments).

        Returns a dict: spearman, pairs (evaluated), oov_pairs (skipped), oov_ratio.
        """
        human, model = [], []
        total = oov = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 3:
                    parts = line.split()
                a, b, score = parts[0], parts[1], float(parts[2])
                total += 1
                ia, ib = self.lookup(a), self.lookup(b)
                if ia is None or ib is None:
                    oov += 1
                    continue
                human.append(score)
                model.append(float(self.unit[ia] @ self.unit[ib]))
        return {"spearman": spearman(human, model), "pairs": len(human), "oov_pairs": oov,
                "oov_ratio": oov / total if total else float("nan")}

    # ------------------------------------------------------------------ analogies
    def analogies(self, path, batch_size=512):
        """Accuracy of b - a + c on a questions-words file (': section' headers).

        Returns a dict: accuracy (over covered questions), correct, covered, total,
        coverage, and per-section accuracy in `sections`.
        """
        questions, sections = [], []
        section = None
        total = 0
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.startswith(":"):
                    section = line[1:].strip()
                    continue
                parts = line.split()
                if len(parts) != 4:
                    continue
                total += 1
                ids = [self.lookup(w) for w in parts]
                if any(i is None for i in ids):
                    continue
                questions.append(ids)
                sections.append(section)
        if not questions:
            return {"accuracy": float("nan"), "correct": 0, "covered": 0, "total": total,
                    "coverage": 0.0 if total else float("nan"), "sections": {}}
        q = np.asarray(questions, dtype=np.int64)
        correct = np.zeros(len(q), dtype=bool)
        for s in range(0, len(q), batch_size):
            a, b, c, d = q[s:s + batch_size].T
            query = self.unit[b] - self.unit[a] + self.unit[c]
            scores = query @ self.unit.T
            # Exclude a, b, c in every casing: compare case-folded keys.
            keys = self._key_of[None, :]
            for x in (a, b, c):
                scores[keys == self._key_of[x][:, None]] = -np.inf
            pred = scores.argmax(axis=1)
            correct[s:s + batch_size] = self._key_of[pred] == self._key_of[d]
        per_section = {}
        for name in dict.fromkeys(sections):
            mask = np.array([x == name for x in sections])
            per_section[name] = float(correct[mask].mean())
        return {"accuracy": float(correct.mean()), "correct": int(correct.sum()),
                "covered": len(q), "total": total, "coverage": len(q) / total,
                "sections": per_section}

    # ------------------------------------------------------------------ neighbours
    def neighbours(self, word, k=8):
        """The k nearest words by cosine, with their similarities, excluding `word` itself."""
        i = self.lookup(word)
        if i is None:
            raise KeyError(f"{word!r} is not in the vocabulary.")
        sims = self.unit @ self.unit[i]
        sims[i] = -np.inf
        top = np.argpartition(-sims, min(k, len(sims) - 1))[:k]
        top = top[np.argsort(-sims[top])]
        return [(self.words[j], float(sims[j])) for j in top]


def frequent_probe_words(words, count=5, skip=50):
    """A few frequent content-like words (alphabetic, longer than 3) after the first `skip`."""
    skip = min(skip, len(words) // 10)
    out = [w for w in words[skip:] if w.isalpha() and len(w) > 3][:count]
    return out or list(words[skip:skip + count])


def save_word2vec_format(path, words, vectors):
    """Writes word2vec's text format: a 'count dim' header, then 'word v1 v2 ...' lines."""
    vectors = np.asarray(vectors, dtype=np.float32)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{len(words)} {vectors.shape[1]}\n")
        for w, v in zip(words, vectors):
            f.write(w + " " + " ".join(f"{x:.6f}" for x in v) + "\n")


def load_word2vec_format(path):
    """Reads word2vec's text format back: (words, float32 vectors)."""
    with open(path, encoding="utf-8") as f:
        n, dim = map(int, f.readline().split())
        words, vectors = [], np.empty((n, dim), dtype=np.float32)
        for i in range(n):
            parts = f.readline().rstrip("\n").split(" ")
            words.append(parts[0])
            vectors[i] = np.asarray(parts[1:], dtype=np.float32)
    return words, vectors

"""The fused skip-gram op (tfs.ops.skipgram_train) and tfs.Word2Vec.

Exactness: with keep probability 1 and window 1 the op draws no random numbers for
hierarchical softmax, and with all noise mass on one word its negative draws are fixed too,
so a NumPy transcription of word2vec's loop (same sigmoid table) must give the same
vectors and loss to float rounding. The random parts (subsampling, reduced windows, noise
draws) are checked against their expected counts with 6-sigma bounds.
"""

import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs
from tf_sampling.ops import _loader

pytestmark = pytest.mark.skipif(
    not tfs.ops.custom_ops_available(),
    reason=f"custom ops unavailable: {_loader.LIBRARY.reason}")

# word2vec's sigmoid table, as word2vec_train.h builds it (float32 index arithmetic).
_X = (2.0 * np.arange(1000) / 1000 - 1.0) * 6.0
SIGMOID = (1.0 / (1.0 + np.exp(-_X))).astype(np.float32)
LOG_SIGMOID = np.log(1.0 / (1.0 + np.exp(-_X))).astype(np.float32)
SCALE = np.float32(1000) / np.float32(6.0) / np.float32(2)


def reference_train(w_in, w_out, corpus, splits, alpha, targets_of):
    """word2vec's skip-gram loop, window 1, no subsampling. `targets_of(center)` lists the
    (output row, label, skip_saturated) steps of a pair."""
    w_in, w_out = w_in.astype(np.float32).copy(), w_out.astype(np.float32).copy()
    loss, pairs = 0.0, 0
    for s in range(len(splits) - 1):
        ids = corpus[splits[s]:splits[s + 1]]
        for i, center in enumerate(ids):
            for j in (i - 1, i + 1):
                if j < 0 or j >= len(ids):
                    continue
                v = w_in[ids[j]]
                e = np.zeros_like(v)
                for row, label, skip in targets_of(center):
                    u = w_out[row]
                    f = np.float32(v @ u)
                    if f >= 6 or f <= -6:
                        if skip:
                            continue
                        if (f > 0) != (label > 0.5):
                            loss += abs(float(f))
                        g = np.float32((label - (1.0 if f > 0 else 0.0)) * alpha)
                    else:
                        k = int((np.float32(f) + np.float32(6)) * SCALE)
                        loss -= float(LOG_SIGMOID[k] if label > 0.5 else LOG_SIGMOID[999 - k])
                        g = np.float32((label - SIGMOID[k]) * alpha)
                    e += g * u
                    w_out[row] = u + g * v
                w_in[ids[j]] = v + e
                pairs += 1
    return w_in, w_out, loss, pairs


def small_problem(seed=0, vocab=7, dim=8, sentences=(9, 5, 1, 12)):
    rng = np.random.default_rng(seed)
    corpus = np.concatenate([rng.integers(0, vocab, n) for n in sentences]).astype(np.int32)
    splits = np.concatenate([[0], np.cumsum(sentences)]).astype(np.int64)
    w_in = rng.uniform(-0.5, 0.5, (vocab, dim)).astype(np.float32)
    return corpus, splits, w_in


def test_negative_sampling_matches_reference():
    corpus, splits, w_in0 = small_problem()
    vocab, dim = w_in0.shape
    w_out0 = np.random.default_rng(1).normal(0, 0.3, (vocab, dim)).astype(np.float32)
    noise_word, negative, alpha = 3, 2, 0.2
    noise = np.zeros(vocab, np.float32)
    noise[noise_word] = 1.0  # every draw is this word: the loop is deterministic

    def targets(center):
        return [(center, 1.0, False)] + [(noise_word, 0.0, False)] * (
            negative if center != noise_word else 0)

    ref_in, ref_out, ref_loss, ref_pairs = reference_train(
        w_in0, w_out0, corpus, splits, alpha, targets)
    w_in, w_out = tf.Variable(w_in0), tf.Variable(w_out0)
    words, pairs, loss = tfs.ops.skipgram_train(
        w_in, w_out, corpus, splits, np.ones(vocab, np.float32), alpha=(alpha, alpha),
        seed=[5, 6], window=1, negative=negative, noise_weights=noise)
    assert int(words) == len(corpus)
    assert int(pairs) == ref_pairs == sum(2 * (n - 1) for n in (9, 5, 1, 12))
    np.testing.assert_allclose(w_in.numpy(), ref_in, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w_out.numpy(), ref_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    assert not np.allclose(w_in.numpy(), w_in0)  # it trained


def test_hierarchical_softmax_matches_reference():
    corpus, splits, w_in0 = small_problem(seed=2)
    vocab, dim = w_in0.shape
    counts = np.bincount(corpus, minlength=vocab) + 1
    nodes, codes, row_splits = tfs.trees.huffman_tree(counts).flat_paths()
    # Large weights, so that some dot products saturate and are skipped.
    w_out0 = np.random.default_rng(3).normal(0, 1.5, (vocab - 1, dim)).astype(np.float32)
    alpha = 0.1

    def targets(center):
        return [(int(nodes[k]), 1.0 - float(codes[k]), True)
                for k in range(row_splits[center], row_splits[center + 1])]

    ref_in, ref_out, ref_loss, _ = reference_train(w_in0, w_out0, corpus, splits, alpha,
                                                   targets)
    w_in, w_out = tf.Variable(w_in0), tf.Variable(w_out0)
    _, _, loss = tfs.ops.skipgram_train(
        w_in, w_out, corpus, splits, np.ones(vocab, np.float32), alpha=(alpha, alpha),
        seed=[0, 0], window=1, negative=0, hs_paths=(nodes, codes, row_splits))
    np.testing.assert_allclose(w_in.numpy(), ref_in, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w_out.numpy(), ref_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)


def _zero_rate_call(corpus, splits, keep, window, vocab=7, seed=(1, 2), threads=1):
    """A call with alpha 0: counts what the op would train, changes nothing."""
    w_in = tf.Variable(np.zeros((vocab, 4), np.float32))
    w_out = tf.Variable(np.zeros((vocab, 4), np.float32))
    words, pairs, _ = tfs.ops.skipgram_train(
        w_in, w_out, corpus, splits, keep, alpha=(0.0, 0.0), seed=seed, window=window,
        negative=1, noise_weights=np.ones(vocab, np.float32), num_threads=threads)
    return int(words), int(pairs)


def test_subsampling_keeps_expected_fraction():
    rng = np.random.default_rng(4)
    corpus = rng.integers(0, 7, 200_000).astype(np.int32)
    splits = np.arange(0, 200_001, 100, dtype=np.int64)
    keep = np.array([1.0, 0.5, 0.5, 0.25, 0.25, 0.1, 0.0], np.float32)
    words, _ = _zero_rate_call(corpus, splits, keep, window=2)
    p = keep[corpus].astype(np.float64)
    mean, sd = p.sum(), np.sqrt((p * (1 - p)).sum())
    assert abs(words - mean) < 6 * sd  # binomial sum, 6 sigma


def test_reduced_windows_give_expected_pair_count():
    # One sentence, no subsampling: center i pairs with min(b, i) + min(b, n - 1 - i)
    # words, b uniform in [1, window] and independent across centers.
    n, window = 100_000, 5
    corpus = np.zeros(n, np.int32)
    splits = np.array([0, n], np.int64)
    _, pairs = _zero_rate_call(corpus, splits, np.ones(7, np.float32), window=window)
    i = np.arange(n)[:, None]
    b = np.arange(1, window + 1)[None, :]
    per_center = np.minimum(b, i) + np.minimum(b, n - 1 - i)  # [n, window], one column per b
    mean = per_center.mean(axis=1).sum()
    sd = np.sqrt(per_center.var(axis=1).sum())
    assert abs(pairs - mean) < 6 * sd


def test_windows_stay_inside_sentences():
    sentences = [1, 2, 3, 1, 4]
    splits = np.concatenate([[0], np.cumsum(sentences)]).astype(np.int64)
    corpus = np.zeros(splits[-1], np.int32)
    _, pairs = _zero_rate_call(corpus, splits, np.ones(7, np.float32), window=10)
    assert pairs == sum(n * (n - 1) for n in sentences)  # every in-sentence pair, once


@pytest.mark.parametrize("word", range(5))
def test_noise_draws_follow_weights(word):
    # All vectors zero and alpha 0: every dot product is 0, so each target adds a known
    # table loss, and the loss tells how many noise draws were kept. A corpus of one word
    # c: draws equal to c are skipped, so the skip rate estimates q[c] (binomial, 6 sigma);
    # the zero-weight word is never drawn.
    vocab, negative, n = 5, 4, 20_000
    corpus = np.full(n, word, np.int32)
    splits = np.array([0, n], np.int64)
    noise = np.array([4.0, 3.0, 2.0, 1.0, 0.0], np.float32)
    w_in = tf.Variable(np.zeros((vocab, 4), np.float32))
    w_out = tf.Variable(np.zeros((vocab, 4), np.float32))
    _, pairs, loss = tfs.ops.skipgram_train(
        w_in, w_out, corpus, splits, np.ones(vocab, np.float32), alpha=(0.0, 0.0),
        seed=[9, word], window=1, negative=negative, noise_weights=noise)
    pairs = int(pairs)
    assert pairs == 2 * (n - 1)
    k = int(np.float32(6) * SCALE)  # table index of f = 0
    positive, negative_loss = -float(LOG_SIGMOID[k]), -float(LOG_SIGMOID[999 - k])
    kept = (float(loss) - pairs * positive) / negative_loss
    skipped = pairs * negative - kept
    assert abs(skipped - round(skipped)) < 1e-3 * pairs  # the loss really decomposes
    q = noise[word] / noise.sum()
    trials = pairs * negative
    assert abs(skipped - trials * q) <= 6 * np.sqrt(trials * q * (1 - q)) + 0.5


def test_same_seed_same_vectors_one_thread():
    corpus, splits, w_in0 = small_problem(seed=6, sentences=(300, 200))
    vocab = w_in0.shape[0]

    def run(seed):
        w_in = tf.Variable(w_in0)
        w_out = tf.Variable(np.zeros_like(w_in0))
        tfs.ops.skipgram_train(w_in, w_out, corpus, splits, np.full(vocab, 0.7, np.float32),
                               alpha=(0.05, 0.01), seed=seed, window=3, negative=3,
                               noise_weights=np.ones(vocab, np.float32))
        return w_in.numpy()

    np.testing.assert_array_equal(run([1, 2]), run([1, 2]))
    assert not np.array_equal(run([1, 2]), run([1, 3]))


def test_reads_before_training_are_not_changed():
    corpus, splits, w_in0 = small_problem(seed=7)
    vocab = w_in0.shape[0]
    w_in = tf.Variable(w_in0)
    w_out = tf.Variable(np.zeros_like(w_in0))
    before = w_in.read_value()  # shares the variable's buffer until a write
    tfs.ops.skipgram_train(w_in, w_out, corpus, splits, np.ones(vocab, np.float32),
                           alpha=(0.5, 0.5), seed=[1, 1], window=2, negative=2,
                           noise_weights=np.ones(vocab, np.float32))
    np.testing.assert_array_equal(before.numpy(), w_in0)
    assert not np.array_equal(w_in.numpy(), w_in0)


def test_op_inside_tf_function():
    corpus, splits, w_in0 = small_problem(seed=8)
    vocab = w_in0.shape[0]
    w_in, w_out = tf.Variable(w_in0), tf.Variable(np.zeros_like(w_in0))

    @tf.function
    def step(seed):
        return tfs.ops.skipgram_train(w_in, w_out, corpus, splits, np.ones(vocab, np.float32),
                                      alpha=(0.1, 0.1), seed=seed, window=2, negative=2,
                                      noise_weights=np.ones(vocab, np.float32))

    words, pairs, _ = step(tf.constant([1, 2], tf.int64))
    assert int(words) == len(corpus) and int(pairs) > 0
    assert not np.array_equal(w_in.numpy(), w_in0)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(corpus=np.array([0, 9, 1], np.int32)), "out of range"),
    (lambda a: a.update(corpus=np.array([0, -1, 1], np.int32)), "out of range"),
    (lambda a: a.update(sentence_splits=np.array([0, 2], np.int64)), "end at"),
    (lambda a: a.update(sentence_splits=np.array([0, 3, 1, 3], np.int64)), "non-decreasing"),
    (lambda a: a.update(keep_prob=np.array([1, np.nan, 1, 1], np.float32)), "probability"),
    (lambda a: a.update(keep_prob=np.ones(3, np.float32)), "keep_prob"),
    (lambda a: a.update(noise_weights=np.array([1, -1, 1, 1], np.float32)), "non-negative"),
    (lambda a: a.update(noise_weights=np.zeros(4, np.float32)), "all zero"),
    (lambda a: a.update(noise_weights=np.ones(3, np.float32)), "noise_weights"),
    (lambda a: a.update(w_out=tf.Variable(np.zeros((4, 3), np.float32))), "same number"),
    (lambda a: a.update(w_out=tf.Variable(np.zeros((3, 2), np.float32))), "rows"),
    (lambda a: a.update(w_out=a["w_in"]), "different variables"),
])
def test_bad_inputs_raise(change, message):
    args = dict(w_in=tf.Variable(np.zeros((4, 2), np.float32)),
                w_out=tf.Variable(np.zeros((4, 2), np.float32)),
                corpus=np.array([0, 1, 3], np.int32), sentence_splits=np.array([0, 3], np.int64),
                keep_prob=np.ones(4, np.float32), alpha=(0.1, 0.1), seed=[1, 1], window=2,
                negative=2, noise_weights=np.ones(4, np.float32))
    change(args)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        tfs.ops.skipgram_train(**args)


def test_bad_tree_raises():
    w_in = tf.Variable(np.zeros((3, 2), np.float32))
    w_out = tf.Variable(np.zeros((2, 2), np.float32))
    args = dict(corpus=np.array([0, 1, 2], np.int32), sentence_splits=np.array([0, 3], np.int64),
                keep_prob=np.ones(3, np.float32), alpha=(0.1, 0.1), seed=[1, 1], window=2,
                negative=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="hs_nodes"):
        tfs.ops.skipgram_train(w_in, w_out, hs_paths=([0, 5], [0, 1], [0, 1, 2, 2]), **args)
    with pytest.raises(ValueError, match="hs_paths"):
        tfs.ops.skipgram_train(w_in, w_out, **args)


# ------------------------------------------------------------------ Word2Vec


def topic_sentences(seed=0, n=3000):
    """Two topics with disjoint words: a sentence uses one topic's words only."""
    rng = np.random.default_rng(seed)
    topics = [[f"a{i}" for i in range(10)], [f"b{i}" for i in range(10)]]
    return [list(rng.choice(topics[rng.integers(2)], size=8)) for _ in range(n)]


@pytest.mark.parametrize("objective", [{"negative": 5}, {"negative": 0, "hs": True}])
def test_word2vec_learns_topics(objective):
    sentences = topic_sentences()
    model = tfs.Word2Vec.from_sentences(sentences, min_count=1, dim=16, window=3, sample=0,
                                        workers=2, seed=3, alpha=0.05, **objective)
    history = model.train(sentences, epochs=3)
    assert len(history) == 3 and history[-1]["pairs"] > 0
    v = model.vectors / np.linalg.norm(model.vectors, axis=1, keepdims=True)
    topic = np.array([w[0] for w in model.words])
    sims = v @ v.T
    same = sims[topic[:, None] == topic[None, :]]
    other = sims[topic[:, None] != topic[None, :]]
    # 20 words: a clean split shows as a wide gap between the two cosine populations.
    assert same.mean() - other.mean() > 0.5
    nearest = [w for w, _ in model.most_similar("a0", k=5)]
    assert all(w.startswith("a") for w in nearest)


def test_word2vec_vocabulary_and_encoding():
    sentences = [["x", "y", "x", "rare"], ["y", "x"], ["x"] * 7]
    model = tfs.Word2Vec.from_sentences(sentences, min_count=2, dim=4,
                                        max_sentence_length=3)
    assert model.words == ["x", "y"] and list(model.counts) == [10, 2]
    ids, splits, raw = model.encode(sentences)
    assert raw == 13
    # "rare" is dropped before windows; the 7 x's are cut into 3 + 3 + 1.
    np.testing.assert_array_equal(ids, [0, 1, 0, 1, 0] + [0] * 7)
    np.testing.assert_array_equal(splits, [0, 3, 5, 8, 11, 12])


def test_word2vec_seed_repeats_and_checkpoints(tmp_path):
    sentences = topic_sentences(seed=1, n=300)

    def trained(seed):
        m = tfs.Word2Vec.from_sentences(sentences, min_count=1, dim=8, workers=1, seed=seed)
        m.train(sentences, epochs=2)
        return m

    a, b = trained(4), trained(4)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    assert not np.array_equal(a.vectors, trained(5).vectors)
    path = tf.train.Checkpoint(model=a).save(str(tmp_path / "ckpt"))
    c = tfs.Word2Vec.from_sentences(sentences, min_count=1, dim=8, seed=9)
    tf.train.Checkpoint(model=c).restore(path).assert_consumed()
    np.testing.assert_array_equal(c.vectors, a.vectors)
    assert int(c.epochs_trained.numpy()) == 2


def test_word2vec_progress_bar_and_verbose_0(capsys):
    sentences = topic_sentences(seed=2, n=200)  # 1600 words: 4 chunks of about 400

    def trained(verbose):
        m = tfs.Word2Vec.from_sentences(sentences, min_count=1, dim=8, workers=1, seed=4)
        history = m.train(sentences, epochs=2, chunk_words=400, verbose=verbose)
        return m, history, capsys.readouterr().out

    quiet, quiet_history, quiet_out = trained(0)
    assert quiet_out == ""
    loud, loud_history, out = trained(1)
    # A progress bar per epoch, in words of the epoch, with speed and the running loss.
    assert "Epoch 1/2" in out and "Epoch 2/2" in out
    assert out.count("1600/1600") == 2 and "words/s:" in out and "loss:" in out
    final_loss = float(out.rsplit("loss:", 1)[1].split()[0])
    assert final_loss == pytest.approx(loud_history[-1]["loss"], abs=1e-4)  # 4 decimals shown
    # The bar only reports: the training itself is the same.
    np.testing.assert_array_equal(quiet.vectors, loud.vectors)
    assert [h["loss"] for h in quiet_history] == [h["loss"] for h in loud_history]
    with pytest.raises(ValueError, match="verbose"):
        quiet.train(sentences, epochs=1, verbose=3)


def test_word2vec_text_format_round_trip(tmp_path):
    sentences = topic_sentences(seed=2, n=50)
    m = tfs.Word2Vec.from_sentences(sentences, min_count=1, dim=3)
    m.save_word2vec_format(tmp_path / "v.txt")
    lines = (tmp_path / "v.txt").read_text().splitlines()
    assert lines[0] == f"{len(m.words)} 3"
    word, *vals = lines[1].split()
    assert word == m.words[0]
    np.testing.assert_allclose(np.array(vals, np.float32), m.vectors[0], atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"negative": 5, "hs": True}, "Choose one"),
    ({"negative": 0}, "Choose one"),
    ({"dim": 0}, "dim"),
    ({"window": 0}, "window"),
    ({"sample": -1.0}, "sample"),
    ({"alpha": float("nan")}, "alpha"),
    ({"workers": 0}, "workers"),
])
def test_word2vec_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfs.Word2Vec(["a", "b"], [2, 1], **kwargs)


def test_word2vec_bad_vocabulary():
    with pytest.raises(ValueError, match="positive"):
        tfs.Word2Vec(["a", "b"], [2, 0])
    with pytest.raises(ValueError, match="duplicates"):
        tfs.Word2Vec(["a", "a"], [2, 1])
    with pytest.raises(ValueError, match="one entry per word"):
        tfs.Word2Vec(["a", "b"], [2, 1, 1])
    with pytest.raises(ValueError, match="min_count"):
        tfs.Word2Vec.from_sentences([["a"]], min_count=1)


def test_word2vec_without_the_op_says_how_to_proceed(monkeypatch):
    monkeypatch.setenv(_loader.ENV_FORCE_FALLBACK, "1")
    _loader.LIBRARY.reset()
    try:
        m = tfs.Word2Vec(["a", "b"], [2, 1], dim=2)
        with pytest.raises(RuntimeError, match="NegativeSampling"):
            m.train([["a", "b", "a"]], epochs=1)
    finally:
        monkeypatch.delenv(_loader.ENV_FORCE_FALLBACK)
        _loader.LIBRARY.reset()
        assert tfs.ops.custom_ops_available()

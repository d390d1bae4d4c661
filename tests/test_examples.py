"""The examples run end to end on tiny data, and their data and evaluation helpers are right.

The helpers are checked against hand-computed values and brute force; the examples are
run on small synthetic corpora, in-process through `main(argv)` or, for the longest runs,
as child processes beside the other tests (tests/_background.py), and their `RESULT`
line is parsed and checked for sane numbers (e.g. the language model beats the unigram
baseline and does not beat the source's own conditionals).
"""

import json
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "examples")
sys.path.insert(0, EXAMPLES)

import _corpus  # noqa: E402
import _embedding_eval as ev  # noqa: E402
import _word2vec_data as w2v_data  # noqa: E402
import _zipf_source  # noqa: E402
import language_model  # noqa: E402
import word2vec  # noqa: E402

import _background  # noqa: E402


def _result(capsys):
    return _parse(capsys.readouterr().out)


def _parse(out):
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert lines, out[-2000:]
    return json.loads(lines[-1][len("RESULT "):]), out


# The longest example runs share one child process (one TensorFlow start instead of one
# per run), which runs them one after another through `main(argv)` and returns each run's
# stdout.
_RUNNER = r"""
import contextlib, io, json, os, sys
sys.path.insert(0, sys.argv[1])
out = {}
for key, module, argv in json.loads(sys.argv[2]):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        __import__(module).main(argv)
    out[key] = buf.getvalue()
print("RUNS " + json.dumps(out))
"""


def run_examples(runs, cwd, timeout=600):
    """Runs `[(key, module, argv)]` of examples/ in one child process; returns
    {key: (RESULT dict, stdout)}."""
    root = os.path.dirname(EXAMPLES)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _RUNNER, EXAMPLES, json.dumps(runs)],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(cwd))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RUNS ")][-1]
    return {key: _parse(out) for key, out in json.loads(line[len("RUNS "):]).items()}


# ------------------------------------------------------------------ evaluation helpers
def test_spearman_hand_computed_with_ties():
    assert ev.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert ev.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]: r = 4.5 / sqrt(4.5 * 5) = 3 / sqrt(10)
    assert ev.spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / math.sqrt(10))
    np.testing.assert_array_equal(ev.rankdata([3, 1, 3, 2]), [3.5, 1, 3.5, 2])


def _toy_vectors():
    # Most frequent first; "Paris" (id 1) is more frequent than "paris" (id 5).
    words = ["the", "Paris", "cat", "dog", "car", "paris"]
    vectors = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [1, 0.9, 0.1], [0, 0, 1],
                        [0, -1, 0]], dtype=np.float32)
    return words, vectors


def test_word_pairs_skip_and_count_oov_pairs_case_insensitively(tmp_path):
    words, vectors = _toy_vectors()
    path = tmp_path / "pairs.tsv"
    path.write_text("# comment\ncat\tdog\t9\nPARIS\tcar\t1\ncat\tthe\t5\n"
                    "cat\tunicorn\t3\nparis\tthe\t2\n")
    res = ev.EmbeddingEvaluator(words, vectors).word_pairs(str(path))
    assert res["pairs"] == 4 and res["oov_pairs"] == 1
    assert res["oov_ratio"] == pytest.approx(1 / 5)
    unit = ev.unit_rows(vectors)
    # "paris" in any casing is "Paris" (id 1), the most frequent casing, as in gensim.
    model = [unit[2] @ unit[3], unit[1] @ unit[4], unit[2] @ unit[0], unit[1] @ unit[0]]
    assert res["spearman"] == pytest.approx(ev.spearman([9, 1, 5, 2], model))


def test_analogies_exclude_the_question_words_and_report_coverage(tmp_path):
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((8, 8)))[0]
    man, woman, royal, noise = basis[0], basis[1], basis[2], basis[3]
    words = ["man", "woman", "king", "queen", "prince", "apple"]
    vectors = np.stack([man, woman, man + royal, woman + royal,
                        man + royal + 0.1 * noise, basis[4]])
    path = tmp_path / "q.txt"
    path.write_text(": royals\nman king woman queen\nwoman queen man king\n"
                    ": hard\nman king king prince\n"
                    ": oov\nman king woman empress\n")
    res = ev.EmbeddingEvaluator(words, vectors).analogies(str(path))
    assert res["total"] == 4 and res["covered"] == 3
    assert res["coverage"] == pytest.approx(0.75)
    # b - a + c = king - man + king is nearest to "king" itself, which is excluded, so
    # the answer is the next one, "prince": correct.
    assert res["correct"] == 3 and res["accuracy"] == 1.0
    assert res["sections"] == {"royals": 1.0, "hard": 1.0}


def test_neighbours_and_word2vec_text_format(tmp_path):
    words, vectors = _toy_vectors()
    evaluator = ev.EmbeddingEvaluator(words, vectors)
    near = evaluator.neighbours("cat", k=2)
    assert [w for w, _ in near] == ["dog", "the"]
    path = tmp_path / "v.txt"
    ev.save_word2vec_format(str(path), words, vectors)
    assert path.read_text().splitlines()[0] == "6 3"
    words2, vectors2 = ev.load_word2vec_format(str(path))
    assert words2 == words
    np.testing.assert_allclose(vectors2, vectors, atol=1e-6)


# ------------------------------------------------------------------ word2vec data
def test_keep_probability_is_word2vecs_formula():
    counts = np.array([1000, 100, 10, 1])
    sample = 1e-2
    t = sample * counts.sum()  # 11.11
    expected = np.minimum((np.sqrt(counts / t) + 1) * t / counts, 1)
    np.testing.assert_allclose(w2v_data.keep_probabilities(counts, sample), expected,
                               rtol=1e-6)
    assert expected[0] < 0.15 and expected[-1] == 1.0
    np.testing.assert_array_equal(w2v_data.keep_probabilities(counts, 0), 1.0)


def _position_corpus():
    """Token ids equal to positions (so a pair gives its distance); two sentences."""
    ids = np.arange(30, dtype=np.int32)
    sents = np.array([0] * 18 + [1] * 12, dtype=np.int32)
    return ids, sents, np.ones(30, np.float32)


def _collect(pipe):
    out = {}
    for batch in pipe.dataset():
        for k, v in batch.items():
            out.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def test_skipgram_pairs_with_window_1_are_exactly_the_neighbours():
    ids, sents, keep = _position_corpus()
    pipe = w2v_data.Word2VecPipeline(ids, sents, keep, window=1, batch_size=7, epochs=1,
                                     chunk_tokens=8)
    got = _collect(pipe)
    pairs = sorted(zip(got["center"].tolist(), got["context"].tolist()))
    expected = sorted([(i, i + 1) for i in range(29) if sents[i] == sents[i + 1]]
                      + [(i + 1, i) for i in range(29) if sents[i] == sents[i + 1]])
    assert pairs == expected
    batches, examples, words = pipe.count_examples()
    assert examples == len(expected) and words == 30 and batches == -(-examples // 7)


def test_skipgram_dynamic_window_distribution():
    """Each center draws b uniform in [1, 5] and pairs with words at distance <= b, so
    a pair at distance d (away from sentence edges) appears with probability (6 - d) / 5."""
    ids, sents, keep = _position_corpus()
    pipe = w2v_data.Word2VecPipeline(ids, sents, keep, window=5, batch_size=256,
                                     epochs=400, seed=3)
    got = _collect(pipe)
    dist = got["context"] - got["center"]
    assert np.all(np.abs(dist) >= 1) and np.all(np.abs(dist) <= 5)
    assert np.all(sents[got["center"]] == sents[got["context"]])
    # Centers 5..12 of sentence 0 have all 10 neighbours inside the sentence.
    inner = (got["center"] >= 5) & (got["center"] <= 12)
    n_centers = 8 * 400
    for d in range(1, 6):
        frac = np.sum(inner & (dist == d)) / n_centers
        p = (6 - d) / 5
        # Binomial standard error <= 0.5 / sqrt(3200) ~ 0.009; allow 5 of them.
        assert abs(frac - p) < 0.045, (d, frac, p)


def test_cbow_contexts_are_the_window_around_the_center():
    ids, sents, keep = _position_corpus()
    pipe = w2v_data.Word2VecPipeline(ids, sents, keep, window=3, model="cbow",
                                     batch_size=16, epochs=3, seed=1)
    got = _collect(pipe)
    assert got["context"].shape[1] == 6
    for center, ctx in zip(got["center"], got["context"]):
        present = ctx[ctx >= 0]
        assert len(present) >= 1
        d = np.abs(present - center)
        assert np.all((d >= 1) & (d <= 3)) and np.all(sents[present] == sents[center])
        # The window is symmetric: the reduced window b keeps both sides up to b.
        b = d.max()
        want = [p for p in range(center - b, center + b + 1)
                if p != center and 0 <= p < 30 and sents[p] == sents[center]]
        assert sorted(present.tolist()) == want
    assert sorted(set(got["center"].tolist())) == list(range(30))


def test_subsampling_keeps_frequent_words_at_the_right_rate():
    rng = np.random.default_rng(0)
    ids = np.where(rng.random(20000) < 0.5, 0, rng.integers(1, 200, 20000)).astype(np.int32)
    counts = np.bincount(ids, minlength=200)
    keep = w2v_data.keep_probabilities(counts, 1e-3)
    sents = (np.arange(20000) // 100).astype(np.int32)
    pipe = w2v_data.Word2VecPipeline(ids, sents, keep, window=2, batch_size=4096, epochs=5)
    _, _, kept = pipe.count_examples()
    expected = 5 * float((keep * counts).sum())
    # Sum of 100000 Bernoulli draws: standard deviation < sqrt(100000) / 2 ~ 160.
    assert abs(kept - expected) < 5 * 160, (kept, expected)
    assert keep[0] < 0.1


def test_chunks_end_on_sentence_boundaries():
    sents = np.repeat(np.arange(10), 7).astype(np.int32)
    bounds = w2v_data.chunk_bounds(sents, 20)
    assert bounds[0, 0] == 0 and bounds[-1, 1] == 70
    assert np.all(bounds[1:, 0] == bounds[:-1, 1])
    assert all(b % 7 == 0 for b in bounds.ravel())


# ------------------------------------------------------------------ corpus / LM data
def test_vocab_and_encoding(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("a b a c\n\nb a d a\n")
    vocab = _corpus.Vocab.from_tokens(_corpus.read_lines(str(path)), min_count=2)
    assert vocab.words == ["a", "b"] and vocab.counts.tolist() == [4, 2]
    ids, sents, raw = _corpus.encode_sentences(_corpus.read_lines(str(path)), vocab)
    assert ids.tolist() == [0, 1, 0, 1, 0, 0] and sents.tolist() == [0, 0, 0, 1, 1, 1]
    assert raw == 8
    full = _corpus.Vocab.from_tokens([["a", "b"]], extra=("<eos>", "<unk>"))
    stream = _corpus.encode_stream(str(path), full)
    eos, unk = full.index["<eos>"], full.index["<unk>"]
    # Every line ends with <eos>, the empty one too (WikiText's convention).
    assert stream.tolist() == [0, 1, 0, unk, eos, eos, 1, 0, unk, 0, eos]
    with pytest.raises(ValueError, match="min_count"):
        _corpus.Vocab.from_tokens([["a"]], min_count=0)


def test_window_dataset_scores_every_target_once_with_its_context():
    stream = np.arange(1, 24, dtype=np.int32)
    batches = list(_corpus.window_dataset(stream, 3, 5, pad_id=0))
    ctx = np.concatenate([b["context"].numpy() for b in batches])
    lab = np.concatenate([b["label"].numpy() for b in batches])
    assert lab.tolist() == stream[1:].tolist()
    np.testing.assert_array_equal(ctx, _corpus.context_windows(stream, 3,
                                                               np.arange(1, 23), 0))
    assert ctx[0].tolist() == [0, 0, 1] and ctx[-1].tolist() == [20, 21, 22]
    shuffled = _corpus.window_dataset(stream, 3, 4, pad_id=0, shuffle=True, epochs=2)
    labs = np.concatenate([b["label"].numpy() for b in shuffled])
    assert len(labs) == 2 * (22 // 4 * 4) and len(set(labs[:20].tolist())) == 20


def test_sequence_dataset_scores_every_target_once():
    stream = np.arange(100, 147, dtype=np.int32)  # 46 targets = 4 pieces of 10 + 6
    batches = list(_corpus.sequence_dataset(stream, 10, 3))
    labels = np.concatenate([b["label"].numpy().ravel() for b in batches])
    inputs = np.concatenate([b["context"].numpy().ravel() for b in batches])
    assert labels.tolist() == stream[1:].tolist()
    assert inputs.tolist() == stream[:-1].tolist()


# ------------------------------------------------------------------ synthetic source
def test_zipf_source_entropy_and_conditionals():
    src = _zipf_source.ZipfianBigramSource(vocab_size=300, exponent=1.1, coupling=6.0,
                                           seed=0)
    r = np.arange(1, 301)
    p = r ** -1.1 / (r ** -1.1).sum()
    assert src.entropy_rate == pytest.approx(-(p * np.log(p)).sum(), rel=1e-12)
    assert src.perplexity_bound == pytest.approx(math.exp(src.entropy_rate))
    # Every conditional is a permutation of the same Zipf law.
    for s in (0, 17, 299):
        assert sorted(src.order[s].tolist()) == list(range(300))
        lp = src.log_prob(np.full(300, s), np.arange(300))
        assert np.exp(lp).sum() == pytest.approx(1.0, abs=1e-9)
        np.testing.assert_allclose(np.sort(np.exp(lp))[::-1], p, rtol=1e-9)
    ids = src.sample(60_000, seed=1)
    nll = -src.sequence_log_prob(ids)
    # The true conditionals' mean NLL is an unbiased estimate of H; 4 standard errors.
    assert abs(nll.mean() - src.entropy_rate) < 4 * nll.std() / math.sqrt(len(nll))
    # Frequencies stay Zipf-like: small ids (the base order) are much more frequent.
    counts = np.bincount(ids, minlength=300)
    assert counts[:30].mean() > 5 * counts[150:].mean()


# ------------------------------------------------------------------ examples end to end
@pytest.mark.background("examples")
def test_language_model_quick_start_on_tiny_synthetic_corpus():
    runs, tmp = _background.result("examples")
    res, out = runs["lm_quick_start"]
    export = str(tmp / "lm")
    assert res["true_perplexity_bound"] == pytest.approx(math.exp(res["entropy_rate_nats"]))
    # Learned more than word frequencies, and not "better" than the true source.
    assert res["test_ppl"] < 0.9 * res["unigram_ppl"], res
    assert res["test_ppl"] > 0.9 * res["true_model_test_ppl"], res
    assert res["valid_tokens"] == 3999 and res["test_tokens"] == 3999
    assert len(res["valid_ppl_per_epoch"]) == 2
    assert res["tokens_per_sec"] > 0 and res["full_tokens_per_sec"] > 0
    assert res["speedup_vs_full"] > 0
    assert "lower bound" in out and "faster per token" in out
    assert os.path.exists(os.path.join(export, "saved_model.pb"))
    with open(os.path.join(export, "vocab.txt")) as f:
        assert len(f.read().split()) == res["vocab_size"]


def _result_of(main, argv, capsys):
    main(argv)
    return _result(capsys)


def _write_text_corpus(root):
    """Train/valid/test text files from a small synthetic source, valid with an OOV word."""
    src = _zipf_source.ZipfianBigramSource(vocab_size=200, exponent=1.1, coupling=6.0,
                                           seed=5)
    paths = {}
    for i, (split, n) in enumerate((("train", 30_000), ("valid", 3000), ("test", 3000))):
        paths[split] = str(root / f"{split}.txt")
        src.write_text(paths[split], n, seed=i, line_length=100)
    with open(paths["valid"], "a") as f:
        f.write("w1 neverseen w2\n")
    return paths


@pytest.fixture(scope="module")
def text_corpus(tmp_path_factory):
    return _write_text_corpus(tmp_path_factory.mktemp("corpus"))


LM_CASES = [
    ("nplm", "nce", ["--batch-size", "128", "--optimizer", "sparse_adam",
                     "--row-step-samples", "128"]),
    ("nplm", "hierarchical", ["--direct", "--batch-size", "128"]),
    ("lstm", "full", ["--seq-len", "20", "--batch-size", "8", "--lr", "0.005"]),
]


@pytest.mark.background("examples")
@pytest.mark.parametrize("arch,head,extra", LM_CASES, ids=[f"{a}-{h}" for a, h, _ in LM_CASES])
def test_language_model_heads_and_archs_on_text_files(arch, head, extra):
    runs, _ = _background.result("examples")
    res, _ = runs[f"{arch}-{head}"]
    assert res["optimizer"] == (extra[extra.index("--optimizer") + 1]
                                if "--optimizer" in extra else "adam")
    # Tokens plus one <eos> per line (30 and 31 lines), minus the first: all scored once.
    assert res["test_tokens"] == 3000 + 30 - 1
    assert res["valid_tokens"] == 3000 + 30 + 3 + 1 - 1
    assert np.isfinite(res["valid_ppl"]) and np.isfinite(res["test_ppl"])
    assert res["test_ppl"] < res["unigram_ppl"], res
    assert "speedup_vs_full" not in res


def _example_runs():
    """The background job "examples": the quick start, the language model on text files
    with each architecture and a head, and word2vec on its planted twins."""
    tmp = pathlib.Path(_background.temp_dir("examples"))
    paths = _write_text_corpus(tmp)
    runs = [("lm_quick_start", "language_model", [
        "--synthetic-vocab", "300", "--synthetic-tokens", "40000", "--epochs", "2",
        "--batch-size", "256", "--hidden", "64", "--emb", "32", "--num-sampled", "64",
        "--compare-steps", "16", "--export", str(tmp / "lm"), "--verbose", "0"])]
    runs += [(f"{arch}-{head}", "language_model", [
        "--train", paths["train"], "--valid", paths["valid"], "--test", paths["test"],
        "--arch", arch, "--head", head, "--epochs", "2", "--hidden", "32", "--emb", "16",
        "--num-sampled", "32", "--export", "", "--verbose", "0"] + extra)
        for arch, head, extra in LM_CASES]
    runs.append(("word2vec_twins", "word2vec", [
        "--synthetic-tokens", "100000", "--epochs", "2", "--dim", "32", "--batch-size",
        "512", "--output", str(tmp / "vectors.txt"), "--verbose", "0"]))
    return run_examples(runs, tmp), tmp


_background.register("examples", _example_runs)


@pytest.mark.background("examples")
def test_word2vec_skipgram_negative_finds_the_planted_twins():
    runs, tmp = _background.result("examples")
    res, out = runs["word2vec_twins"]
    out_path = str(tmp / "vectors.txt")
    assert res["words_per_sec"] > 0 and res["raw_words_per_sec"] >= res["words_per_sec"]
    # 40 twin pairs (1) against 40 frequency-matched non-twin pairs (0): separating them
    # perfectly gives sqrt(3)/2 = 0.87, random vectors give 0 +- 0.11.
    assert res["wordsim_file"] == "synthetic planted twins"
    assert res["wordsim_pairs"] == 80 and res["wordsim_oov_pairs"] == 0
    assert res["wordsim_spearman"] > 0.3, res
    words, vectors = ev.load_word2vec_format(out_path)
    assert len(words) == res["vocab_size"] and vectors.shape == (len(words), 32)
    # Neighbours of a few frequent words: "  word: neighbour 0.87, ..." lines.
    assert len(re.findall(r"^  w\d+(_twin)?: w\d+(_twin)? -?\d\.\d\d, ", out, re.M)) == 5


@pytest.mark.parametrize("head", ["negative", "hierarchical"])
def test_word2vec_fused_trainer_finds_the_planted_twins(tmp_path, capsys, head):
    import tf_sampling as tfs

    if not tfs.ops.custom_ops_available():
        pytest.skip("the fused trainer needs the compiled custom ops")
    out_path = str(tmp_path / "vectors.txt")
    res, _ = _result_of(word2vec.main, [
        "--trainer", "fused", "--head", head, "--synthetic-tokens", "100000", "--epochs", "2",
        "--dim", "32", "--output", out_path, "--verbose", "0"], capsys)
    assert res["trainer"] == "fused" and res["words_per_sec"] > 0
    assert res["wordsim_pairs"] == 80
    assert res["wordsim_spearman"] > 0.3, res  # same bound as the Keras trainer above
    words, vectors = ev.load_word2vec_format(out_path)
    assert vectors.shape == (res["vocab_size"], 32)


def test_word2vec_fused_trainer_rejects_cbow():
    with pytest.raises(SystemExit):
        word2vec.parse_args(["--trainer", "fused", "--model", "cbow"])


def test_twin_pairs_file_and_planting(tmp_path):
    tokens = _zipf_source.plant_twins(np.array(["a", "b", "c"] * 1000), ["a", "b"], seed=0)
    assert set(tokens) == {"a", "a_twin", "b", "b_twin", "c"}
    assert abs(np.mean(tokens[::3] == "a_twin") - 0.5) < 5 * 0.5 / math.sqrt(1000)
    path = tmp_path / "p.tsv"
    _zipf_source.write_twin_pairs(str(path), ["a", "b", "c"], seed=0)
    rows = [ln.split("\t") for ln in path.read_text().splitlines()[1:]]
    assert [r[2] for r in rows] == ["1"] * 3 + ["0"] * 3
    assert all(r[1] == r[0] + "_twin" for r in rows[:3])
    assert all(r[1] != r[0] + "_twin" for r in rows[3:])


@pytest.mark.parametrize("model,head,extra", [
    ("cbow", "hierarchical", []),
    ("skipgram", "sampled", []),
    ("cbow", "negative", ["--negatives", "batch"]),
])
def test_word2vec_on_a_text_file_with_evaluation_files(text_corpus, tmp_path, model, head,
                                                       extra, capsys):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("w1\tw2\t3\nw3\tw10\t1\nw5\tunknownword\t2\nw0\tw4\t5\n")
    questions = tmp_path / "q.txt"
    questions.write_text(": s\nw1 w2 w3 w4\nw1 w2 w3 nothere\nw5 w6 w7 w8\n")
    res, _ = _result_of(word2vec.main, [
        "--corpus", text_corpus["train"], "--model", model, "--head", head,
        "--epochs", "1", "--dim", "16", "--min-count", "5", "--output", "",
        "--wordsim", str(pairs), "--analogies", str(questions), "--verbose", "0"] + extra,
        capsys)
    assert res["wordsim_pairs"] == 3 and res["wordsim_oov_pairs"] == 1
    assert -1 <= res["wordsim_spearman"] <= 1
    assert res["analogy_covered"] == 2 and res["analogy_total"] == 3
    assert res["analogy_coverage"] == pytest.approx(2 / 3)
    assert 0 <= res["analogy_accuracy"] <= 1
    assert res["words_per_sec"] > 0


# ------------------------------------------------------- experiment heads of examples/_heads.py
def test_row_step_head_starts_as_the_plain_head_and_scales_its_rows():
    import keras
    import tensorflow as tf

    import _heads

    V, D = 300, 8
    kw = dict(num_classes=V, num_sampled=32, sampler="log_uniform", seed=1)
    plain = _heads.make_head("sampled", **kw)
    scaled = _heads.make_head("sampled", row_step_from=128, **kw)
    x = tf.random.stateless_normal([5, D], [1, 2])
    plain.build(x.shape)
    keras.utils.set_random_seed(0)
    scaled.build(x.shape)
    scaled.kernel.assign(plain.kernel.numpy() / scaled._row_scale.numpy()[:, None])
    np.testing.assert_allclose(scaled.log_prob(x), plain.log_prob(x), rtol=1e-5, atol=1e-6)
    s = scaled._row_scale.numpy()
    # The most frequent row is in (nearly) every sample of both sizes and keeps its step;
    # the rarer a row, the larger its share of extra draws with 128 samples.
    assert s[0] == pytest.approx(1.0, rel=0.01) and s[-1] > 2.0
    assert np.all(np.diff(s) >= -1e-6)
    with pytest.raises(ValueError, match="plain sampled head"):
        _heads.make_head("nce", row_step_from=128, **kw)

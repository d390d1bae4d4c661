"""The benchmark scripts still run end to end (tiny sizes, a subprocess each).

They are not timed here (speed goals live in the scripts' own output); this only catches a
script broken by a change to the library or to a shared helper. lm_perplexity runs on a
tiny corpus in WikiText-2's format, so it needs no ../shared data.
"""

import json
import os
import subprocess
import sys

import pathlib

import pytest

import _background

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name, *args, timeout=240):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", name), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def smoke(name, script, *args, json_out=False, setup=None, timeout=240):
    """Registers a background job (tests/_background.py) that runs `script` with `args` in
    a temporary directory `tmp` (`setup(tmp)` first; `{tmp}` in an argument is replaced)
    and returns `(stdout, tmp)`."""
    def job():
        tmp = pathlib.Path(_background.temp_dir(name))
        if setup is not None:
            setup(tmp)
        return run_script(script, *(a.format(tmp=tmp) for a in args),
                          timeout=timeout), tmp
    return _background.register(name, job)


SAMPLERS = smoke(
    "bench_samplers", "bench_samplers.py", "--vocab", "10000", "--num-sampled", "300",
    "--min-time", "0.01", "--calls-in-graph", "3", "--labels", "16", "--steps-in-graph", "2",
    "--step-labels", "16", "--dynamic-sampled", "64", "--cpu-allocator", "bfc",
    "--json-out", "{tmp}/s.json")


# V >= 8192 in SAMPLERS: the unique and in-graph sections draw 8192 distinct ids.
@pytest.mark.background(SAMPLERS)
def test_bench_samplers_smoke():
    out, tmp = _background.result(SAMPLERS)
    result = json.loads((tmp / "s.json").read_text())
    assert result["cpu_allocator"] == "bfc" and "CPU allocator: bfc" in out
    rows = result["rows"]
    sections = {r["section"] for r in rows}
    assert sections >= {"draws", "unique", "in-graph", "build", "dynamic"}, sections
    assert all(r["ms"] > 0 for r in rows)
    # Each TF sampler row is compared with the op row of its own kind (plain or unique).
    methods = {(r["section"], r["method"]) for r in rows}
    assert ("in-graph", "alias op, unique") in methods or "NOT loaded" in out
    assert ("in-graph", "DynamicAliasSampler, step") in methods
    assert "Goals at V = 1e6" in out and "| section |" in out


LOSSES = smoke("bench_losses", "bench_losses.py", "--vocab", "3000", "--batch", "16",
               "--dim", "8", "--num-sampled", "32", "--reps", "2", "--full-reps", "1",
               "--warmup", "1")


@pytest.mark.background(LOSSES)
def test_bench_losses_smoke():
    out, _ = _background.result(LOSSES)
    assert "tf.nn.sampled_softmax_loss" in out and "3000" in out


HIERARCHICAL = smoke(
    "bench_hierarchical", "bench_hierarchical.py", "--vocab", "3000", "--huffman-vocab",
    "3000", "--batch", "16", "--dim", "8", "--num-sampled", "32", "--reps", "2",
    "--full-reps", "1", "--top-k-reps", "1", "--warmup", "1")


@pytest.mark.background(HIERARCHICAL)
def test_bench_hierarchical_smoke():
    out, _ = _background.result(HIERARCHICAL)
    assert "HierarchicalSoftmax" in out and "trees.huffman_tree" in out


def write_tiny_wikitext(directory, seed=0):
    """wiki.{train,valid,test}.tokens of Zipf-distributed words, in WikiText's line format."""
    import numpy as np

    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(300)])
    p = 1.0 / np.arange(1, 301)
    for split, lines in (("train", 400), ("valid", 60), ("test", 60)):
        text = "\n".join(" ".join(rng.choice(words, size=12, p=p / p.sum()))
                         for _ in range(lines))
        (directory / f"wiki.{split}.tokens").write_text(text + "\n")


# Runs everywhere (no ../shared): both architectures, two epochs, per-epoch valid ppl.
LM = smoke("lm_perplexity", "lm_perplexity.py", "--data-dir", "{tmp}", "--arch", "both",
           "--heads", "full,sampled", "--num-sampled", "64", "--epochs", "2",
           "--eval-each-epoch", "--hidden", "16", "--emb", "8", "--json-out", "{tmp}/lm.json",
           setup=write_tiny_wikitext, timeout=400)


@pytest.mark.background(LM)
def test_lm_perplexity_runs_on_a_tiny_corpus_with_per_epoch_scores():
    out, tmp = _background.result(LM)
    rows = json.loads((tmp / "lm.json").read_text())["rows"]
    assert [(r["arch"], r["head"]) for r in rows] == [
        ("nplm", "full"), ("nplm", "sampled"), ("lstm", "full"), ("lstm", "sampled")]
    for r in rows:
        assert len(r["valid_ppl_by_epoch"]) == 2
        # The last per-epoch score is the final model's, scored by the same evaluator.
        assert abs(r["valid_ppl_by_epoch"][-1] - r["valid_ppl"]) <= 1e-6 * r["valid_ppl"]
        # A vocabulary of ~300 words: any trained model is far below a uniform guess.
        assert r["valid_ppl"] < 300
    assert "valid ppl after each epoch, lstm / sampled" in out and "goal (#6), lstm" in out


def test_lm_perplexity_plot_draws_per_epoch_curves(tmp_path):
    # The plotted data are checked everywhere; CI has no matplotlib (the `bench` extra),
    # so the PNG itself is drawn only where it is installed.
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import lm_perplexity
    finally:
        sys.path.pop(0)
    rows = [{"arch": "lstm", "head": head, "epochs": 3, "epoch_seconds": sec,
             "test_ppl": ppl, "valid_ppl_by_epoch": [ppl * 1.6, ppl * 1.2, ppl * 1.07]}
            for head, sec, ppl in (("full", 1000.0, 210.0), ("sampled", 130.0, 215.0))]
    points, curves, ylabel = lm_perplexity.plot_series(rows)
    assert [(p["label"], p["x"], p["y"]) for p in points] == [
        ("lstm full", 3000.0, 210.0), ("lstm sampled", 390.0, 215.0)]
    assert [c["x"] for c in curves] == [[1000.0, 2000.0, 3000.0], [130.0, 260.0, 390.0]]
    assert [c["y"] for c in curves] == [r["valid_ppl_by_epoch"] for r in rows]
    # Each head keeps one color for its point and its curve; the two heads differ.
    assert [c["color"] for c in curves] == [p["color"] for p in points]
    assert points[0]["color"] != points[1]["color"]
    assert "after each epoch" in ylabel
    rows[1]["valid_ppl_by_epoch"] = []  # scored only at the end: a point, no curve
    assert len(lm_perplexity.plot_series(rows)[1]) == 1
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    path = tmp_path / "lm.png"
    lm_perplexity.plot(rows, str(path), "title")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# The comparison part (--compare-vocab) runs the same child code per V and head as the
# scale part; it is left out here to keep the suite short.
SCALE = smoke("bench_scale", "bench_scale.py", "--vocab", "3000", "--dim", "4", "--contexts",
              "20", "--num-sampled", "16", "--batch-size", "32", "--fit-steps", "2",
              "--eval-examples", "64", "--compare-vocab", "", "--json-out",
              "{tmp}/scale.json")


@pytest.mark.background(SCALE)
def test_bench_scale_smoke():
    out, tmp = _background.result(SCALE)
    result = json.loads((tmp / "scale.json").read_text())
    assert result["scale"]["served_ids_equal_predict"]
    assert set(result["goals"]) == {"eval_predict_memory", "eval_vs_matmul_floor"}
    assert "Goals" in out and ("PASS" in out or "MISS" in out)


EXPECTED_COUNTS = smoke("expected_count_weights", "expected_count_weights.py", "--vocab",
                        "2000", "--num-sampled", "100,400", "--draws", "1000")


@pytest.mark.background(EXPECTED_COUNTS)
def test_expected_count_weights_prints_unbiased_band_means():
    # 1,000 draws of 100 and 400 distinct classes out of 2,000. Over seeds 1-4 the band
    # means were within 0.022 of 1 (32 bands); the bound is about three times that. Counts
    # taken as num_sampled * q (the formula for sampling with replacement) put the 0-10
    # band's mean at 0.11 at 400 samples.
    out, _ = _background.result(EXPECTED_COUNTS)
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 2 * 4, out
    for band, mean, *_ in rows:
        assert abs(float(mean) - 1) < 0.06, out

"""Hierarchical softmax: training-step time, exact top-k latency, Huffman build time.

One run prints three tables:

1. Training step (forward + backward to the inputs and weights + SGD apply, in a
   tf.function) of the full softmax, `tf.nn.sampled_softmax_loss` (TF's log-uniform
   sampler) and `tf_sampling.layers.HierarchicalSoftmax` on a Huffman tree, timed
   round-robin as in `bench_losses.py` (same method, same columns; wall and CPU time).
   Labels are Zipfian (log-uniform) and the Huffman tree is built from that distribution.
   Goal (issue 4): at V = 5e5 the HS step is >= 50x faster than the full softmax.
2. Exact top-1 / top-10 latency for a batch: full matmul + `tf.math.top_k` against the
   layer's best-first search (`top_k`). The search cost depends on how peaked the model
   is, so HS is timed with random node vectors at two scales (node logits with standard
   deviation 1 and 4; a zero-initialized model would be the flattest case); the note gives
   the search steps and the share of rows certified exact without the fallback.
   Goal: at V = 1e6 top-1 is >= 10x faster than the full matmul.
3. Huffman tree build time (`trees.huffman_tree`) from Zipfian integer counts.

Functions `step_rows(V, cfg)`, `top_k_rows(V, cfg)` and `huffman_rows(V)` return rows, so
they can be folded into `bench_losses.py`'s `SECTIONS`.

Usage:
    python benchmarks/bench_hierarchical.py                      # V in 1e4,1e5,5e5,1e6
    python benchmarks/bench_hierarchical.py --vocab 1e4,1e5 --reps 5 --huffman-vocab 1e6
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tf_sampling as tfs  # noqa: E402
from tf_sampling import trees  # noqa: E402

import bench_losses  # same folder: the shared harness, Row and timing
from bench_losses import Row, _log_uniform_labels, _sgd_step, _time_round_robin


@dataclasses.dataclass
class Config(bench_losses.Config):
    top_k_reps: int = 5


def _log_uniform_counts(vocab, total=1e9):
    k = np.arange(vocab, dtype=np.float64)
    return np.floor(total * np.log((k + 2) / (k + 1)) / np.log(vocab + 1.0)) + 1


def step_rows(vocab, cfg):
    """Training step: full softmax, tf.nn.sampled_softmax_loss, HierarchicalSoftmax."""
    rng = np.random.default_rng(cfg.seed)
    hidden = tf.constant(rng.normal(size=(cfg.batch, cfg.dim)).astype(np.float32))
    labels_np = _log_uniform_labels(rng, vocab, cfg.batch)
    labels1d = tf.constant(labels_np)
    labels2d = tf.constant(labels_np[:, None])
    w0 = (rng.normal(size=(vocab, cfg.dim)) * 0.05).astype(np.float32)
    steps = {}
    w, b = tf.Variable(w0), tf.Variable(tf.zeros([vocab]))
    steps["full softmax"] = _sgd_step(
        lambda h, y, w=w, b=b: tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=tf.matmul(h, w, transpose_b=True) + b),
        [w, b], hidden, labels1d)
    ws, bs = tf.Variable(w0), tf.Variable(tf.zeros([vocab]))
    steps["tf.nn.sampled_softmax_loss"] = _sgd_step(
        lambda h, y, w=ws, b=bs: tf.nn.sampled_softmax_loss(w, b, y, h, cfg.num_sampled,
                                                            vocab),
        [ws, bs], hidden, labels2d)
    head = tfs.layers.HierarchicalSoftmax(vocab, tree="huffman",
                                          counts=_log_uniform_counts(vocab))
    head.build((cfg.batch, cfg.dim))
    steps["HierarchicalSoftmax"] = _sgd_step(
        lambda h, y: head([h, y], training=True), list(head.trainable_variables), hidden,
        labels1d)
    med = _time_round_robin(steps, cfg.reps, cfg.warmup, {"full softmax": cfg.full_reps})
    tree = head.tree
    notes = {"tf.nn.sampled_softmax_loss": f"num_sampled={cfg.num_sampled}",
             "HierarchicalSoftmax": f"Huffman, depth max {tree.max_depth} "
                                    f"mean {tree.lengths.mean():.1f}"}
    return [Row(vocab, name, wall * 1e3, cpu * 1e3,
                raw=None if name == "full softmax" else "tf.nn.sampled_softmax_loss",
                note=notes.get(name, ""))
            for name, (wall, cpu) in med.items()]


def _time(fn, reps, warmup=1):
    """Median (wall, CPU) milliseconds of `fn()`, results fetched to the host."""
    for _ in range(warmup):
        tf.nest.map_structure(lambda t: t.numpy(), fn())
    wall, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        tf.nest.map_structure(lambda t: t.numpy(), fn())
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def top_k_rows(vocab, cfg, ks=(1, 10), scales=(1.0, 4.0)):
    """Exact top-k: full matmul + tf.math.top_k against the best-first search."""
    rng = np.random.default_rng(cfg.seed + 1)
    x = tf.constant(rng.normal(size=(cfg.batch, cfg.dim)).astype(np.float32))
    w = tf.Variable((rng.normal(size=(vocab, cfg.dim)) / np.sqrt(cfg.dim)).astype(np.float32))
    b = tf.Variable(tf.zeros([vocab]))
    head = tfs.layers.HierarchicalSoftmax(vocab, tree="huffman",
                                          counts=_log_uniform_counts(vocab))
    head.build((cfg.batch, cfg.dim))
    rows = []
    for k in ks:
        full = tf.function(lambda k=k: tf.math.top_k(tf.matmul(x, w, transpose_b=True) + b, k))
        ref = f"top-{k} full matmul + tf.math.top_k"
        rows.append(Row(vocab, ref, *_time(full, cfg.top_k_reps)))
        for scale in scales:
            # Node logits x . v ~ N(0, scale^2) for x ~ N(0, I).
            head.kernel.assign((rng.normal(size=(vocab - 1, cfg.dim)) * scale
                                / np.sqrt(cfg.dim)).astype(np.float32))
            search = tf.function(lambda k=k: head.top_k(x, k))
            wall, cpu = _time(search, cfg.top_k_reps)
            steps, certified = head.search_stats(x, k)
            rows.append(Row(vocab, f"top-{k} HS best-first (logit sd {scale:g})", wall, cpu,
                            raw=ref, note=f"{steps} steps, {certified:.0%} certified"))
    return rows


def huffman_rows(vocab, seed=0):
    counts = np.minimum(np.random.default_rng(seed).zipf(1.1, vocab), 10**9).astype(float)
    wall, cpu = time.perf_counter(), time.process_time()
    tree = trees.huffman_tree(counts)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return [Row(vocab, "trees.huffman_tree", wall * 1e3, cpu * 1e3,
                note=f"max depth {tree.max_depth}")]


def format_top_k_table(rows):
    by_key = {(r.vocab, r.method): r for r in rows}
    lines = [f"{'V':>8}  {'method':<38} {'ms':>9} {'CPU ms':>9} {'full/this':>10}  note",
             "-" * 100]
    for r in rows:
        ref = by_key.get((r.vocab, r.raw)) if r.raw else None
        speedup = f"{ref.ms / r.ms:10.1f}" if ref is not None else f"{'-':>10}"
        lines.append(f"{r.vocab:>8}  {r.method:<38} {r.ms:9.2f} {r.cpu_ms:9.2f} {speedup}  "
                     f"{r.note}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    bench_losses.add_step_arguments(p, vocab="1e4,1e5,5e5,1e6", reps=20, full_reps=3,
                                    warmup=2)
    p.add_argument("--huffman-vocab", type=bench_losses.vocab_sizes, default="1e6,1e7",
                   help="vocabulary sizes for the Huffman build time (table 3)")
    p.add_argument("--top-k-reps", type=int, default=5)
    p.add_argument("--skip", default="", help="comma-separated: step,topk,huffman")
    args = p.parse_args(argv)
    cfg = bench_losses.step_config(args, Config, top_k_reps=args.top_k_reps)
    skip = set(args.skip.split(","))
    print(f"{bench_losses.setting()}, load average {os.getloadavg()[0]:.1f}")
    print(f"B={cfg.batch} d={cfg.dim} num_sampled={cfg.num_sampled}; median times")
    results = {}
    if "step" not in skip:
        rows = [r for v in args.vocab for r in step_rows(v, cfg)]
        print("\nTraining step (SGD apply, round-robin; x raw = this / sampled softmax)")
        print(bench_losses.format_table(rows))
        results["step"] = rows
    if "topk" not in skip:
        rows = [r for v in args.vocab for r in top_k_rows(v, cfg)]
        print(f"\nExact top-k latency, batch {cfg.batch} (full/this = speed-up)")
        print(format_top_k_table(rows))
        results["topk"] = rows
    if "huffman" not in skip:
        rows = [r for v in args.huffman_vocab for r in huffman_rows(v, args.seed)]
        print("\nHuffman tree build (Zipf(1.1) integer counts; ms is wall time)")
        print(format_top_k_table(rows))
        results["huffman"] = rows
    print(f"load average at the end {os.getloadavg()[0]:.1f} (shared machine: timings are "
          f"noisy)")
    return results


if __name__ == "__main__":
    main()

"""Training-step time of the sampled heads against raw TF and the full softmax.

One table from one run. For each vocabulary size V it times one training step
(forward + backward to the inputs and weights + SGD apply, in a tf.function) of:

* the full softmax (`inputs @ W^T + b`, sparse softmax cross-entropy, dense update);
* `tf.nn.sampled_softmax_loss` and `tf.nn.nce_loss` on tf.Variables, with TF's default
  log-uniform sampler ("raw");
* the `tf_sampling.layers.SampledSoftmax` and `NCE` layers with their default
  "log_uniform" sampler ("layer").

Columns: median wall-clock step time (ms), median process CPU time per step (ms, all
threads), `x raw` (this / raw TF of the same loss, by wall time and by CPU time) and
`full/this` (full softmax / this method, wall time). Goals (issue 2): layer <= 1.05x raw,
and >= 100x faster than the full softmax at V = 5e5.

The methods are timed round-robin (one step of each in turn, repeated), so that load
from other processes on a shared machine hits all of them alike; medians are reported.
Each step ends with a host fetch of its loss. On a busy machine the wall times are noisy;
the CPU times (the work done) are steadier, especially with `--threads 1`.

Other sections (e.g. hierarchical softmax) add a function `rows(V, cfg) -> [Row]` to
`SECTIONS`.

Usage:
    python benchmarks/bench_losses.py                       # V in 1e4, 1e5, 5e5
    python benchmarks/bench_losses.py --vocab 10000 --reps 10 --full-reps 3
    python benchmarks/bench_losses.py --vocab 100000 --num-sampled 64 --per-example only
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tf_sampling as tfs  # noqa: E402


@dataclasses.dataclass
class Row:
    vocab: int
    method: str
    ms: float
    cpu_ms: float = float("nan")
    raw: str = None      # the method whose time is this one's "x raw" reference
    note: str = ""


@dataclasses.dataclass
class Config:
    batch: int
    dim: int
    num_sampled: int
    reps: int
    full_reps: int
    warmup: int
    seed: int


def _log_uniform_labels(rng, vocab, n):
    # Zipf-like labels, as in a frequency-sorted vocabulary (P(k) ~ log((k+2)/(k+1))).
    u = rng.random(n)
    return np.minimum(np.floor(np.exp(u * np.log(vocab + 1.0))) - 1, vocab - 1).astype(np.int64)


def _sgd_step(loss_fn, variables, hidden, labels):
    """A tf.function doing forward, backward (to the inputs too) and an SGD apply."""
    opt = keras.optimizers.SGD(0.01)
    opt.build(variables)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(hidden)
            loss = tf.reduce_mean(loss_fn(hidden, labels))
        grads = tape.gradient(loss, [hidden] + variables)
        opt.apply(grads[1:], variables)
        # d(loss)/d(inputs) is returned so that the backward pass to the inputs (which a
        # real model needs) is not pruned.
        return loss, tf.reduce_sum(grads[0])

    return step


def _time_round_robin(steps, reps, warmup, rep_counts):
    """Median (wall, CPU) seconds per step of each named step, timed in turns, so that
    load from other processes on a shared machine hits all methods alike."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()[0].numpy()
    wall = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    for r in range(reps):
        for name, fn in steps.items():
            if r >= rep_counts.get(name, reps):
                continue
            start, start_cpu = time.perf_counter(), time.process_time()
            loss, _ = fn()
            loss.numpy()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name]))
            for name in steps}


def sampled_rows(vocab, cfg):
    """Full softmax, raw TF and the two layers at one vocabulary size."""
    rng = np.random.default_rng(cfg.seed)
    hidden = tf.constant(rng.normal(size=(cfg.batch, cfg.dim)).astype(np.float32))
    labels_np = _log_uniform_labels(rng, vocab, cfg.batch)
    labels2d = tf.constant(labels_np[:, None])
    labels1d = tf.constant(labels_np)
    w0 = (rng.normal(size=(vocab, cfg.dim)) * 0.05).astype(np.float32)
    s = cfg.num_sampled
    steps = {}

    def tf_vars():
        return tf.Variable(w0), tf.Variable(tf.zeros([vocab]))

    w, b = tf_vars()
    steps["full softmax"] = _sgd_step(
        lambda h, y, w=w, b=b: tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=tf.matmul(h, w, transpose_b=True) + b),
        [w, b], hidden, labels1d)

    for raw_name, raw_fn, cls in [
            ("tf.nn.sampled_softmax_loss", tf.nn.sampled_softmax_loss,
             tfs.layers.SampledSoftmax),
            ("tf.nn.nce_loss", tf.nn.nce_loss, tfs.layers.NCE)]:
        w, b = tf_vars()
        steps[raw_name] = _sgd_step(
            lambda h, y, w=w, b=b, f=raw_fn: f(w, b, y, h, s, vocab),
            [w, b], hidden, labels2d)
        head = cls(vocab, s, sampler="log_uniform", seed=cfg.seed)
        head.build((cfg.batch, cfg.dim))
        head.kernel.assign(w0)
        steps[f"{cls.__name__} layer"] = _sgd_step(
            lambda h, y, head=head: head([h, y], training=True),
            list(head.trainable_variables), hidden, labels1d)

    med = _time_round_robin(steps, cfg.reps, cfg.warmup, {"full softmax": cfg.full_reps})
    def row(name, raw=None):
        return Row(vocab, name, med[name][0] * 1e3, med[name][1] * 1e3, raw=raw)

    rows = [row("full softmax")]
    for raw_name, layer_name in [("tf.nn.sampled_softmax_loss", "SampledSoftmax layer"),
                                 ("tf.nn.nce_loss", "NCE layer")]:
        rows.append(row(raw_name, raw=raw_name))
        rows.append(row(layer_name, raw=raw_name))
    return rows


def per_example_rows(vocab, cfg):
    """Per-example draws (`samples_per="example"`) against one shared draw per batch.

    The same head, sampler and `num_sampled` both ways; `x raw` is per-example / shared.
    Shared: one `[batch, dim] x [dim, S]` matmul over S gathered rows. Per example: the
    same flops as a batched dot product over `[batch, S, dim]` gathered rows, whose
    gradient is `batch * S` rows for the optimizer to scatter.
    """
    rng = np.random.default_rng(cfg.seed)
    hidden = tf.constant(rng.normal(size=(cfg.batch, cfg.dim)).astype(np.float32))
    labels = tf.constant(_log_uniform_labels(rng, vocab, cfg.batch))
    w0 = (rng.normal(size=(vocab, cfg.dim)) * 0.05).astype(np.float32)
    variants = {  # name: (head class, unique, samples_per)
        "NegSampling iid shared": (tfs.layers.NegativeSampling, False, "batch"),
        "NegSampling iid per-ex": (tfs.layers.NegativeSampling, False, "example"),
        "SampledSoftmax uniq shared": (tfs.layers.SampledSoftmax, True, "batch"),
        "SampledSoftmax uniq per-ex": (tfs.layers.SampledSoftmax, True, "example"),
    }
    steps = {}
    for name, (cls, unique, samples_per) in variants.items():
        head = cls(vocab, cfg.num_sampled, sampler="log_uniform", seed=cfg.seed,
                   unique=unique, samples_per=samples_per)
        head.build((cfg.batch, cfg.dim))
        head.kernel.assign(w0)
        steps[name] = _sgd_step(lambda h, y, head=head: head([h, y], training=True),
                                list(head.trainable_variables), hidden, labels)
    med = _time_round_robin(steps, cfg.reps, cfg.warmup, {})
    rows = []
    for name in variants:
        shared = name.replace("per-ex", "shared") if name.endswith("per-ex") else None
        rows.append(Row(vocab, name, med[name][0] * 1e3, med[name][1] * 1e3, raw=shared,
                        note="x raw = / shared" if shared else ""))
    return rows


SECTIONS = [sampled_rows]


def format_table(rows):
    by_key = {(r.vocab, r.method): r for r in rows}
    lines = [f"{'V':>8}  {'method':<28} {'wall ms':>9} {'cpu ms':>9} {'x raw':>7} "
             f"{'x raw cpu':>9} {'full/this':>10}  note", "-" * 96]
    for r in rows:
        raw = by_key.get((r.vocab, r.raw)) if r.raw else None
        full = by_key.get((r.vocab, "full softmax"))
        if raw is not None:
            x_raw, x_raw_cpu = f"{r.ms / raw.ms:7.3f}", f"{r.cpu_ms / raw.cpu_ms:9.3f}"
        else:
            x_raw, x_raw_cpu = f"{'-':>7}", f"{'-':>9}"
        vs_full = f"{full.ms / r.ms:10.1f}" if full is not None else f"{'-':>10}"
        lines.append(f"{r.vocab:>8}  {r.method:<28} {r.ms:9.2f} {r.cpu_ms:9.2f} {x_raw} "
                     f"{x_raw_cpu} {vs_full}  {r.note}")
    return "\n".join(lines)


def vocab_sizes(text):
    """Comma-separated sizes, such as "1e4,1e5", as integers."""
    return [int(float(v)) for v in text.split(",") if v]


def add_step_arguments(p, vocab, reps, full_reps, warmup):
    """The options of a step-time table; the scripts that print one (this one and
    bench_hierarchical.py) differ only in these defaults."""
    p.add_argument("--vocab", type=vocab_sizes, default=vocab,
                   help=f"comma-separated vocabulary sizes (default: {vocab})")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--num-sampled", type=int, default=1024)
    p.add_argument("--reps", type=int, default=reps, help="timed steps per method")
    p.add_argument("--full-reps", type=int, default=full_reps,
                   help="timed steps of the (slow) full softmax")
    p.add_argument("--warmup", type=int, default=warmup)
    p.add_argument("--seed", type=int, default=0)


def step_config(args, cls=Config, **extra):
    """The `Config` (or subclass `cls`, with its `extra` fields) of `add_step_arguments`."""
    return cls(args.batch, args.dim, args.num_sampled, args.reps,
               min(args.full_reps, args.reps), args.warmup, args.seed, **extra)


def setting():
    """Library versions, CPU and TF's devices, for a table's header."""
    devices = [d.device_type for d in tf.config.list_logical_devices()]
    return (f"TF {tf.__version__}, Keras {keras.__version__}, {platform.processor() or 'cpu'}, "
            f"{os.cpu_count()} CPUs, devices {devices}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_step_arguments(p, vocab="1e4,1e5,5e5", reps=30, full_reps=5, warmup=3)
    p.add_argument("--per-example", choices=["no", "also", "only"], default="no",
                   help="add (also) or run only (only) the per-example vs shared-draw rows")
    p.add_argument("--threads", type=int, default=0,
                   help="TF intra-/inter-op threads (default 0: TF's choice)")
    args = p.parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    # Each method is its own tf.function; TF's retracing warning does not apply.
    tf.get_logger().setLevel("ERROR")
    cfg = step_config(args)

    print(setting())
    print(f"B={cfg.batch} d={cfg.dim} num_sampled={cfg.num_sampled} reps={cfg.reps} "
          f"(full softmax: {cfg.full_reps}); threads {args.threads or 'default'}; "
          "median step time, SGD apply, round-robin")
    rows = []
    for vocab in args.vocab:
        sections = {"no": SECTIONS, "also": SECTIONS + [per_example_rows],
                    "only": [per_example_rows]}[args.per_example]
        for section in sections:
            rows.extend(section(vocab, cfg))
    print(format_table(rows))
    return rows


if __name__ == "__main__":
    main()

"""Optimizer step time and state: keras SGD/Adam/Adagrad against tfs.optimizers.

One run, one table. For each vocabulary size V, head and optimizer it trains a small model
with `model.fit` (`steps_per_execution`, d=64, batch 512) and reports the median step time:

* `sampled`: `SampledSoftmax(V, num_sampled=1024)` on a 64-wide input (log-uniform labels);
* `hierarchical`: `HierarchicalSoftmax(V)` on a Huffman tree of log-uniform counts;
* `embedding`: an input `keras.layers.Embedding(V, 64)` table looked up by 4 log-uniform
  tokens per example (repeats included), under a Dense softmax over 1024 classes;
* `embedding (tf.gather)`: the same with a two-line `Embedding` subclass whose `call` is
  `tf.gather(self.embeddings.value, ids)`. Why: TF puts a variable in "copy-on-read" mode
  once a sparse op (a scatter, by any optimizer, SGD included) has touched it, after which
  every dense read (`ReadVariableOp`) copies the whole variable; Keras' `Embedding` reads
  the table densely (`ops.take` converts it to a tensor), so each of its steps copies
  V x 64 floats, whatever the optimizer. `tf.gather` on the `tf.Variable` is a sparse read
  (`ResourceGather`) and copies nothing. The heads of this library read that way.
* `embedding (tfs)`: the same with `tfs.layers.Embedding`, the library's drop-in for
  Keras' `Embedding`: one `ResourceGather` of the distinct ids, a gradient of one summed
  slice per distinct row, and, under `SparseAdam(catch_up=True)`, rows read through the
  optimizer's catch-up.

Optimizers: keras SGD (the sparse reference: its step over an IndexedSlices scatters the
touched rows), keras Adam and Adagrad (dense: every row of the table and its slots each
step), `tfs.optimizers.SparseAdam` (lazy; with `catch_up=True`; and with `catch_up=True,
row_step_samples=4096`, sampled head only) and `tfs.optimizers.RowwiseAdagrad`. Keras Adam and
Adagrad are skipped at V > `--dense-max-vocab` (default 1e6), where a step would take
seconds to minutes; the table says so. Keras' `Embedding` is skipped above
`--keras-embedding-max-vocab` (default 1e6): there each step copies the whole table (see
above), seconds per step at 1e7 whatever the optimizer; `embedding (tf.gather)` runs there.
Slow configurations (keras Adam/Adagrad and Keras' `Embedding` at V >= 1e6) are timed over
`--slow-steps` steps of 1 step per execution.

Also in the same run:
* optimizer state in bytes (the sum of `optimizer.variables`: slots, counters), and per
  table row beyond the weights (bytes of state / V);
* the dense-math floor of the sampled step: in one tf.function, the gather of 1024 rows,
  the three matmuls (logits, d/dinputs, d/drows) and one scatter of 1024 rows into
  [V, 64], with no sampler, no softmax, no optimizer state;
* peak RSS: each (V, optimizer) runs in its own subprocess (the three heads one after the
  other) and reports its `resource.getrusage(RUSAGE_SELF).ru_maxrss`, so the column is the
  peak of the largest of the three models with that optimizer, TF itself included (~0.5
  GB on CPU). State bytes are exact; RSS adds TF's temporaries (gradients, initializers).

Each step time is timed inside one `fit` call: a callback stamps the end of each
execution (`steps_per_execution` steps); the first execution (tracing, warm-up) is left
out and the median of the remaining executions' times per step is reported.

Ratios: `/SGD` = this step / keras SGD's step on the same head and V; `/floor` = this
step / the floor at that V (meaningful for `sampled`). Goals (issue 16) at V = 1e6:
SparseAdam within 1.2x SGD and >= 30x faster than keras Adam (sampled head);
RowwiseAdagrad state <= 8 bytes per row beyond the weights; the sampled step under
SparseAdam within 2x the floor. Each is printed PASS or MISS.

Usage:
    python benchmarks/bench_optimizers.py                          # V in 1e5, 1e6, 1e7
    python benchmarks/bench_optimizers.py --vocab 1e4 --steps 4 --steps-per-execution 2
    python benchmarks/bench_optimizers.py --json-out results/optimizers.json
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")

HEADS = ["sampled", "hierarchical", "embedding", "embedding (tf.gather)", "embedding (tfs)"]
OPTIMIZERS = ["keras SGD", "keras Adam", "keras Adagrad", "SparseAdam", "SparseAdam catch_up",
              "SparseAdam catch_up row steps", "RowwiseAdagrad"]
DENSE = {"keras Adam", "keras Adagrad"}
# Optimizers for the sampled head only (row_step_samples scales a sampled head's rows).
SAMPLED_ONLY = {"SparseAdam catch_up row steps"}
ROW_STEP_SAMPLES = 4096
DIM, BATCH, NUM_SAMPLED, TOKENS, EMB_CLASSES = 64, 512, 1024, 4, 1024


def _log_uniform(rng, vocab, shape):
    # Zipf-like ids, as in a frequency-sorted vocabulary (P(k) ~ log((k+2)/(k+1))).
    u = rng.random(shape)
    return np.minimum(np.floor(np.exp(u * np.log(vocab + 1.0))) - 1, vocab - 1).astype(np.int64)


def _log_uniform_counts(vocab, total=1e9):
    k = np.arange(vocab, dtype=np.float64)
    return np.floor(total * np.log((k + 2) / (k + 1)) / np.log(vocab + 1.0)) + 1


# ---- child process: one (V, optimizer), the three heads ----

def _make_optimizer(name):
    import keras
    import tf_sampling as tfs
    return {"keras SGD": lambda: keras.optimizers.SGD(0.01),
            "keras Adam": lambda: keras.optimizers.Adam(1e-3),
            "keras Adagrad": lambda: keras.optimizers.Adagrad(0.01),
            "SparseAdam": lambda: tfs.optimizers.SparseAdam(1e-3),
            "SparseAdam catch_up": lambda: tfs.optimizers.SparseAdam(1e-3, catch_up=True),
            "SparseAdam catch_up row steps": lambda: tfs.optimizers.SparseAdam(
                1e-3, catch_up=True, row_step_samples=ROW_STEP_SAMPLES),
            "RowwiseAdagrad": lambda: tfs.optimizers.RowwiseAdagrad(0.01)}[name]()


def _model_and_data(head, vocab, seed):
    import keras
    import tensorflow as tf
    import tf_sampling as tfs
    rng = np.random.default_rng(seed)
    batches = 4  # distinct batches, cycled
    labels = _log_uniform(rng, vocab, (batches * BATCH,))
    if head.startswith("embedding"):
        tokens = keras.Input((TOKENS,), dtype="int64")
        table = {"embedding": keras.layers.Embedding, "embedding (tf.gather)": _GatherEmbedding,
                 "embedding (tfs)": tfs.layers.Embedding}[head](vocab, DIM)
        x = keras.layers.Flatten()(table(tokens))
        out = keras.layers.Dense(EMB_CLASSES)(keras.layers.Dense(DIM, activation="tanh")(x))
        model = keras.Model(tokens, out)
        data = (_log_uniform(rng, vocab, (batches * BATCH, TOKENS)), labels % EMB_CLASSES)
        return model, data, keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    hidden = keras.Input((DIM,))
    y = keras.Input((), dtype="int64")
    if head == "sampled":
        layer = tfs.layers.SampledSoftmax(vocab, NUM_SAMPLED, sampler="log_uniform", seed=seed)
    else:
        layer = tfs.layers.HierarchicalSoftmax(vocab, tree="huffman",
                                               counts=_log_uniform_counts(vocab))
    model = keras.Model([hidden, y], layer([hidden, y]))
    data = ((rng.normal(size=(batches * BATCH, DIM)).astype(np.float32), labels),)
    return model, data, None


def _gather_embedding_class():
    import keras
    import tensorflow as tf

    class GatherEmbedding(keras.layers.Embedding):
        def call(self, inputs):
            return tf.gather(self.embeddings.value, inputs)
    return GatherEmbedding


def _GatherEmbedding(*args, **kwargs):
    return _gather_embedding_class()(*args, **kwargs)


def _slow(head, opt_name, vocab):
    return vocab >= 1_000_000 and (opt_name in DENSE or head == "embedding")


class _Stamps:
    def __init__(self):
        import keras

        class Cb(keras.callbacks.Callback):
            def on_train_begin(cb, logs=None):
                self.times = [time.perf_counter()]

            def on_train_batch_end(cb, batch, logs=None):
                self.times.append(time.perf_counter())
        self.callback = Cb()
        self.times = []


def _time_fit(head, vocab, opt_name, steps, spe, seed):
    import tensorflow as tf
    model, data, loss = _model_and_data(head, vocab, seed)
    opt = _make_optimizer(opt_name)
    model.compile(optimizer=opt, loss=loss, steps_per_execution=spe)
    ds = tf.data.Dataset.from_tensor_slices(data)
    ds = ds.batch(BATCH, drop_remainder=True).repeat()
    executions = max(2, -(-steps // spe)) + 1  # the first one is warm-up
    stamps = _Stamps()
    model.fit(ds, steps_per_epoch=executions * spe, epochs=1, verbose=0,
              callbacks=[stamps.callback])
    per_step = np.diff(stamps.times)[1:] / spe
    sizes = [(tuple(v.shape), int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize)
             for v in opt.variables]
    state = sum(n for _, n in sizes)
    # The per-row state: variables with one entry (or row) per class, table row or tree
    # node (a tree over V classes has V - 1 nodes).
    row_state = sum(n for shape, n in sizes if shape and shape[0] >= vocab - 1)
    del model, opt
    return {"ms": statistics.median(per_step) * 1e3, "state_bytes": state,
            "row_state_bytes": row_state,
            "timed_steps": len(per_step) * spe}


def _floor(vocab, reps, seed):
    """Gather, three matmuls and a scatter of NUM_SAMPLED rows, in one tf.function."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    w = tf.Variable(tf.random.normal([vocab, DIM], stddev=0.05, seed=seed))
    h = tf.constant(rng.normal(size=(BATCH, DIM)).astype(np.float32))
    ids = tf.constant(rng.choice(vocab, NUM_SAMPLED, replace=False).astype(np.int64))

    @tf.function
    def step():
        rows = tf.gather(w, ids)
        logits = tf.matmul(h, rows, transpose_b=True)         # [B, S]
        d_inputs = tf.matmul(logits, rows)                    # [B, d]
        d_rows = tf.matmul(logits, h, transpose_a=True)       # [S, d]
        w.scatter_sub(tf.IndexedSlices(0.01 * d_rows, ids))
        return tf.reduce_sum(d_inputs)

    step().numpy()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step().numpy()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def child(spec):
    import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    vocab, opt_name = spec["vocab"], spec["optimizer"]
    out = {}
    if opt_name == "floor":
        out["floor"] = {"ms": _floor(vocab, spec["steps"], spec["seed"])}
    else:
        for head in spec["heads"]:
            slow = _slow(head, opt_name, vocab)
            out[head] = _time_fit(head, vocab, opt_name,
                                  spec["slow_steps"] if slow else spec["steps"],
                                  1 if slow else spec["spe"], spec["seed"])
            out[head]["slow"] = slow
    out["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))


# ---- parent process: one subprocess per (V, optimizer) (and head, from SPLIT_VOCAB), then the table ----

SPLIT_VOCAB = 5_000_000


def _run_child(spec, timeout):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                           json.dumps(spec)], capture_output=True, text=True, env=env,
                          timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{spec} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_s"] = time.perf_counter() - start
    return result


def _fmt_bytes(n):
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", default="1e5,1e6,1e7",
                   help="comma-separated vocabulary sizes (default: 1e5,1e6,1e7)")
    p.add_argument("--steps", type=int, default=24,
                   help="timed steps per (head, optimizer), warm-up execution excluded")
    p.add_argument("--slow-steps", type=int, default=4,
                   help="timed steps (1 per execution) for keras Adam/Adagrad and Keras' "
                        "Embedding at V >= 1e6 (seconds a step)")
    p.add_argument("--heads", default=",".join(HEADS),
                   help=f"comma-separated subset of {HEADS}")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                   help=f"comma-separated subset of {OPTIMIZERS}")
    p.add_argument("--steps-per-execution", type=int, default=8)
    p.add_argument("--dense-max-vocab", type=float, default=1e6,
                   help="skip keras Adam and Adagrad above this V")
    p.add_argument("--keras-embedding-max-vocab", type=float, default=1e6,
                   help="skip the Keras Embedding head above this V")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=int, default=900, help="seconds per subprocess")
    p.add_argument("--json-out", default=None, help="write all results to this JSON file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))

    sys.path.insert(0, HERE)
    from _machine import machine
    info = machine()
    vocabs = [int(float(v)) for v in args.vocab.split(",")]
    spe = args.steps_per_execution
    heads = args.heads.split(",")
    optimizers = args.optimizers.split(",")
    for name, chosen, known in (("--heads", heads, HEADS), ("--optimizers", optimizers,
                                                             OPTIMIZERS)):
        if not set(chosen) <= set(known):
            p.error(f"{name}: unknown {sorted(set(chosen) - set(known))}; known: {known}")
    if "keras SGD" not in optimizers:
        p.error("--optimizers must include 'keras SGD' (the reference of /SGD)")
    print(f"{info['cpu']}, {info['usable_cores']} usable cores; TF {info['tensorflow']}, "
          f"Keras {info['keras']}")
    print(f"d={DIM} batch={BATCH} num_sampled={NUM_SAMPLED} steps_per_execution={spe}; "
          f"median ms per step over >= {args.steps} steps ({args.slow_steps}, 1 per "
          "execution, for keras Adam/Adagrad and Keras' Embedding at V >= 1e6); one "
          "subprocess per (V, optimizer), and per head as well from V = 5e6; peak RSS is that "
          "subprocess's")
    start = time.perf_counter()
    results = {}
    for vocab in vocabs:
        results[vocab] = {"floor": _run_child(
            {"vocab": vocab, "optimizer": "floor", "steps": 20, "spe": spe,
             "seed": args.seed}, args.timeout)}
        for opt in optimizers:
            if opt in DENSE and vocab > args.dense_max_vocab:
                results[vocab][opt] = None
                continue
            run_heads = [h for h in heads if h != "embedding"
                         or vocab <= args.keras_embedding_max_vocab]
            if opt in SAMPLED_ONLY:
                run_heads = [h for h in run_heads if h == "sampled"]
            # Above SPLIT_VOCAB the heads' tables and slots do not fit in memory together
            # (V=1e7, d=64, Adam: 7.7 GB per head), so each head gets its own process.
            groups = [run_heads] if vocab < SPLIT_VOCAB else [[h] for h in run_heads]
            merged = {"wall_s": 0.0}
            for group in groups:
                r = _run_child(
                    {"vocab": vocab, "optimizer": opt, "steps": args.steps,
                     "slow_steps": args.slow_steps, "spe": spe, "heads": group,
                     "seed": args.seed}, args.timeout)
                for head in group:
                    merged[head] = dict(r[head], max_rss_mb=r["max_rss_mb"])
                merged["wall_s"] += r["wall_s"]
            results[vocab][opt] = merged
            print(f"  V={vocab:.0e} {opt}: done in {merged['wall_s']:.0f} s",
                  file=sys.stderr, flush=True)

    header = (f"| V | head | optimizer | ms/step | /SGD | /floor | state | state B/row "
              f"| peak RSS MB | note |")
    lines = [header, "|" + "---|" * 10]
    for vocab in vocabs:
        floor = results[vocab]["floor"]["floor"]["ms"]
        lines.append(f"| {vocab:.0e} | floor | gather+3 matmuls+scatter | {floor:.2f} | - | "
                     f"1.00 | - | - | {results[vocab]['floor']['max_rss_mb']:.0f} | |")
        for head in heads:
            if head not in results[vocab]["keras SGD"]:
                lines.append(f"| {vocab:.0e} | {head} | all | skipped | | | | | | V > "
                             f"{args.keras_embedding_max_vocab:.0e}: Keras' Embedding copies "
                             "the whole table each step (TF copy-on-read), any optimizer |")
                continue
            sgd = results[vocab]["keras SGD"][head]["ms"]
            for opt in optimizers:
                r = results[vocab][opt]
                if r is None:
                    lines.append(f"| {vocab:.0e} | {head} | {opt} | skipped | | | | | | "
                                 f"V > {args.dense_max_vocab:.0e}: a dense step over all V "
                                 "rows and slots would take seconds to minutes |")
                    continue
                h = r.get(head)
                if h is None:
                    lines.append(f"| {vocab:.0e} | {head} | {opt} | n/a | | | | | | for the "
                                 "sampled head only |")
                    continue
                lines.append(
                    f"| {vocab:.0e} | {head} | {opt} | {h['ms']:.2f} | {h['ms'] / sgd:.2f} | "
                    f"{h['ms'] / floor:.2f} | {_fmt_bytes(h['state_bytes'])} | "
                    f"{h['row_state_bytes'] / vocab:.1f} | {h['max_rss_mb']:.0f} |"
                    + (f" {h['timed_steps']} steps, 1 per execution |" if h["slow"] else " |"))
    print("\n".join(lines))
    print("state: all optimizer variables; state B/row: the optimizer variables with V rows "
          "(slots of the table and of its bias), / V. The weights are 256 B/row (d=64 "
          "float32), plus 4 for a bias.")

    goals = []
    if 1_000_000 in results and {"SparseAdam", "RowwiseAdagrad"} <= set(optimizers) \
            and "sampled" in heads:
        r = results[1_000_000]
        sgd = r["keras SGD"]["sampled"]["ms"]
        sparse = r["SparseAdam"]["sampled"]["ms"]
        goals.append(("SparseAdam step <= 1.2x keras SGD (sampled, V=1e6)",
                      sparse / sgd, sparse <= 1.2 * sgd, f"{sparse / sgd:.2f}x"))
        if r.get("keras Adam") is not None:
            adam = r["keras Adam"]["sampled"]["ms"]
            goals.append(("SparseAdam >= 30x faster than keras Adam (sampled, V=1e6)",
                          adam / sparse, adam >= 30 * sparse, f"{adam / sparse:.1f}x"))
        # The head's kernel [V, 64] gets one accumulator per row and its bias [V] one per
        # entry: 4 + 4 bytes per class.
        per_row = r["RowwiseAdagrad"]["sampled"]["row_state_bytes"] / 1_000_000
        goals.append(("RowwiseAdagrad state <= 8 B/row beyond weights (sampled, V=1e6)",
                      per_row, per_row <= 8, f"{per_row:.2f} B/row"))
        floor = r["floor"]["floor"]["ms"]
        goals.append(("sampled step under SparseAdam <= 2x the dense-math floor (V=1e6)",
                      sparse / floor, sparse <= 2 * floor, f"{sparse / floor:.2f}x"))
        goals.append(("(reference) sampled step under keras SGD / floor (V=1e6)",
                      sgd / floor, None, f"{sgd / floor:.2f}x"))
        print("\nGoals at V = 1e6:")
        for name, _, ok, text in goals:
            mark = "info" if ok is None else ("PASS" if ok else "MISS")
            print(f"  {mark}  {name}: {text}")
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")
    if args.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, "w") as f:
            json.dump({"machine": info, "args": vars(args),
                       "results": {str(k): v for k, v in results.items()},
                       "goals": [{"goal": g, "value": v, "pass": ok}
                                 for g, v, ok, _ in goals]}, f, indent=1)
    return results


if __name__ == "__main__":
    main()

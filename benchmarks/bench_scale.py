"""Large vocabularies end to end: train, exact evaluation, top-k and serving at V = 1e7.

Three parts, each measured in its own subprocess so that its peak RSS is its own:

1. **Scale run** at `--vocab` (default 1e7) classes on a synthetic Zipfian task whose
   entropy is known exactly: context c in [0, --contexts) is uniform, and the next word is
   `(r + shift_c) mod V` with rank r drawn from the Zipf law P(r) ~ r^-a, r = 1..V, and a
   random shift per context. Every conditional is a rotation of one Zipf law, so every
   token's conditional entropy is H = -sum_r P(r) log P(r) and exp(H) bounds any model's
   perplexity from below (as examples/_zipf_source.py, whose V x V orderings do not fit
   at V = 1e7). Model: Embedding(contexts, d) -> SampledSoftmax(V). Phases, each timed
   with its peak RSS (the kernel's high-water mark, reset between phases through
   /proc/self/clear_refs):
   - `fit` with the sampled head and `--optimizer` (keras "adam", or "sparse_adam" /
     "sparse_adam_catch_up": `tf_sampling.optimizers.SparseAdam`, lazy or with
     `catch_up=True` as the README recommends; imported only if asked);
   - exact `evaluate` (chunked log-sum-exp, no [batch, V] tensor), timed to the end of
     its last batch (Keras' `on_test_end`); the whole call, whose end can wait seconds for
     tf.data's autotuning thread as it destroys the iterator, is reported beside it;
   - `predict` without labels (top_k="auto": the top 10, chunked);
   - the matmul floor of exact evaluation: the same chunks' `x @ W^T` alone (XLA), the
     least work any exact evaluation does; evaluate and the floor are timed in alternation,
     `--repeats` pairs, and the goal takes the median of the pairs' ratios;
   - `tfs.serving.export`, then serving the SavedModel's top 10 in a clean process that
     cannot import tf_sampling (its own peak RSS).
2. **Training step, FullSoftmax vs Dense + cross-entropy** at V in `--compare-vocab`
   (default 1e5, 1e6), both trained with `--compare-optimizer` (default: SparseAdam with
   `catch_up`, the README's recommendation, whose dense step works in row blocks; "adam" for
   keras Adam, which keeps two or three [V, d] temporaries beside the gradient): step time
   (median of `--steps` steps after one warm-up) and the
   step's memory: peak RSS during the timed steps minus the RSS they start from (weights,
   optimizer state, and the one-off tracing and XLA compilation of the first step,
   reported apart, already allocated).

Goals (issue 17), printed with PASS/MISS:
- peak RSS during evaluate and predict <= weights + optimizer state + 1 GB;
- FullSoftmax step memory <= 1/10 of Dense + CE at the largest compared V, and its step
  time <= 1.0x Dense + CE;
- exact evaluation throughput within 2x of the matmul floor (time ratio <= 2).

Usage:
    python benchmarks/bench_scale.py                              # full run (see NOTES)
    python benchmarks/bench_scale.py --vocab 2e5 --compare-vocab 1e4,3e4 --fit-steps 5 \
        --eval-examples 256 --steps 2                               # quick check
    ... --json-out results/bench_scale.json --plot results/bench_scale.png
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GB = 2 ** 30


def _vocab(text):
    return int(float(text))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=_vocab, default=10 ** 7, help="classes of the scale run")
    p.add_argument("--dim", type=int, default=16, help="hidden size d")
    p.add_argument("--contexts", type=int, default=1000, help="distinct contexts")
    p.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent a")
    p.add_argument("--num-sampled", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--fit-steps", type=int, default=100)
    p.add_argument("--eval-examples", type=int, default=1024)
    p.add_argument("--optimizer", choices=("adam", "sparse_adam", "sparse_adam_catch_up"),
                   default="adam")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--compare-vocab", default="1e5,1e6",
                   help="comma-separated V for FullSoftmax vs Dense + CE")
    p.add_argument("--compare-batch", type=int, default=512)
    p.add_argument("--compare-dim", type=int, default=32)
    p.add_argument("--compare-optimizer", choices=("adam", "sparse_adam", "sparse_adam_catch_up"),
                   default="sparse_adam_catch_up",
                   help="optimizer of both paths in the FullSoftmax / Dense + CE comparison")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per config")
    p.add_argument("--repeats", type=int, default=5,
                   help="timed (evaluate, matmul floor) pairs; medians reported")
    p.add_argument("--skip-scale", action="store_true", help="only the comparison")
    p.add_argument("--json-out", help="write the results as JSON here")
    p.add_argument("--plot", help="write a PNG of memory against V (needs matplotlib)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- children
def _rss():
    """(current RSS, peak RSS since the last reset) in bytes, from /proc/self/status."""
    vals = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                vals[key] = int(value.split()[0]) * 1024
    return vals["VmRSS"], vals["VmHWM"]


def _reset_peak():
    # "5" resets the peak RSS (VmHWM) to the current RSS (Linux >= 4.0).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class _Phase:
    """Times a block and records the peak RSS reached inside it."""

    def __init__(self, results, name):
        self.results, self.name = results, name

    def __enter__(self):
        _reset_peak()
        self.cpu0 = time.process_time()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            self.results[self.name] = {"seconds": time.perf_counter() - self.t0,
                                       "cpu_seconds": time.process_time() - self.cpu0,
                                       "peak_rss_gb": _rss()[1] / GB}
        return False


def _zipf(vocab, a):
    import numpy as np
    p = np.arange(1, vocab + 1, dtype=np.float64) ** -a
    p /= p.sum()
    return p


def scale_child(cfg):
    """Part 1, in a subprocess."""
    import keras
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, ROOT)
    import tf_sampling as tfs
    from tf_sampling import _chunked

    res = {"phases": {}}
    ph = res["phases"]
    V, d, C, B = cfg["vocab"], cfg["dim"], cfg["contexts"], cfg["batch_size"]
    rng = np.random.default_rng(0)
    with _Phase(ph, "data"):
        p = _zipf(V, cfg["zipf"])
        res["entropy"] = float(-(p * np.log(p)).sum())
        cdf = np.cumsum(p)
        cdf[-1] = 1.0
        del p
        shifts = rng.integers(0, V, C)
        n_train = cfg["fit_steps"] * B
        n = n_train + cfg["eval_examples"]
        ctx = rng.integers(0, C, n).astype(np.int32)
        ranks = np.searchsorted(cdf, rng.random(n), side="right").clip(max=V - 1)
        del cdf
        nxt = ((ranks + shifts[ctx]) % V).astype(np.int32)
        train = (ctx[:n_train], nxt[:n_train])
        test = (ctx[n_train:], nxt[n_train:])
    with _Phase(ph, "build"):
        keras.utils.set_random_seed(0)
        c_in = keras.Input((), dtype="int32", name="context")
        y_in = keras.Input((), dtype="int32", name="label")
        hidden = keras.layers.Embedding(C, d)(c_in)
        # top_k "auto" (the default) is the top 10 above 65536 classes; a quick run with
        # a smaller V asks for the top 10 explicitly.
        top_k = "auto" if V > _chunked.AUTO_FULL_MAX_CLASSES else 10
        head = tfs.layers.SampledSoftmax(V, cfg["num_sampled"], sampler="log_uniform",
                                         top_k=top_k, name="head")
        # The inference model first: Keras' functional check reads a layer's first call.
        infer = keras.Model(c_in, head(hidden))
        model = keras.Model({"context": c_in, "label": y_in}, head([hidden, y_in]))
        if cfg["optimizer"].startswith("sparse_adam"):
            from tf_sampling.optimizers import SparseAdam
            opt = SparseAdam(cfg["lr"], catch_up=cfg["optimizer"].endswith("catch_up"))
        else:
            opt = keras.optimizers.Adam(cfg["lr"])
        model.compile(optimizer=opt)
        opt.build(model.trainable_variables)
    state = sum(int(np.prod(v.shape)) * 4 for v in model.weights + opt.variables)
    res["weights_and_optimizer_gb"] = state / GB
    with _Phase(ph, "fit"):
        model.fit({"context": train[0], "label": train[1]}, batch_size=B, epochs=1,
                  verbose=0)
    ph["fit"]["steps_per_s"] = cfg["fit_steps"] / ph["fit"]["seconds"]
    feed = {"context": test[0], "label": test[1]}
    model.evaluate(feed, batch_size=B, verbose=0, steps=1)  # traces and compiles

    # The matmul floor: each chunk's x @ W^T and one reduction over it (a running max,
    # so that every logit is computed), with the chunk size and the XLA compilation of
    # the exact evaluation.
    features = keras.Model(c_in, hidden)
    h = tf.constant(features.predict(test[0][:B], batch_size=B, verbose=0))
    kernel = head.kernel_shards[0].value
    chunk = _chunked.chunk_size_for(B, V)  # the exact evaluation's chunk size

    @tf.function(jit_compile=True)
    def floor(x):
        def body(lo, size, state):
            logits, _ = _chunked._chunk_logits(x, kernel, None, lo, size)
            return (tf.maximum(state[0], tf.reduce_max(logits, 1)),)
        return _chunked._for_chunks(V, chunk, body, (tf.fill([x.shape[0]], -1e30),))

    floor(h)
    batches = -(-len(test[0]) // B)
    # Evaluate and the floor alternate, so that each pair sees the same machine (on a
    # shared machine one call's time varies by tens of percent, the CPU seconds with it):
    # the goal takes the median of the pairs' ratios.
    # `evaluate` is timed to Keras' on_test_end, after its last batch: the call then
    # destroys its tf.data iterator, and that waits for tf.data's autotuning thread, which
    # was seen (gdb) to hold the call up to about 4 s more, both cores idle, in some calls
    # and not others. That wait is per call, not per batch, and not this library's; the
    # whole call is reported apart ("evaluate_call").
    class _EndOfLastBatch(keras.callbacks.Callback):
        def on_test_end(self, logs=None):
            self.at = (time.perf_counter(), time.process_time())

    runs = {"evaluate": [], "matmul_floor": []}
    calls = []
    for _ in range(cfg["repeats"]):
        one = {}
        end = _EndOfLastBatch()
        with _Phase(one, "evaluate") as phase:
            loss = model.evaluate(feed, batch_size=B, verbose=0, callbacks=[end])
        calls.append(one["evaluate"]["seconds"])
        one["evaluate"]["seconds"] = end.at[0] - phase.t0
        one["evaluate"]["cpu_seconds"] = end.at[1] - phase.cpu0
        with _Phase(one, "matmul_floor"):
            for _ in range(batches):
                floor(h)[0].numpy()
        for name in runs:
            runs[name].append(one[name])
    for name, rs in runs.items():
        times = sorted(r["seconds"] for r in rs)
        ph[name] = {"seconds": times[len(times) // 2],
                    "peak_rss_gb": max(r["peak_rss_gb"] for r in rs),
                    "runs_seconds": [r["seconds"] for r in rs],
                    "runs_cpu_seconds": [r["cpu_seconds"] for r in rs]}
    ph["evaluate"]["call_seconds"] = calls
    ratios = sorted(e["seconds"] / f["seconds"]
                    for e, f in zip(runs["evaluate"], runs["matmul_floor"]))
    res["eval_floor_ratio"] = ratios[len(ratios) // 2]
    res["eval_floor_ratios"] = [e["seconds"] / f["seconds"]
                                for e, f in zip(runs["evaluate"], runs["matmul_floor"])]
    # The same in CPU seconds (all threads): the work, whatever else shares the cores.
    cpu = sorted(e["cpu_seconds"] / f["cpu_seconds"]
                 for e, f in zip(runs["evaluate"], runs["matmul_floor"]))
    res["eval_floor_cpu_ratio"] = cpu[len(cpu) // 2]
    res["eval_loss"] = float(loss)
    res["eval_perplexity"] = float(np.exp(loss))
    res["perplexity_bound"] = float(np.exp(res["entropy"]))
    infer.predict(test[0][:B], batch_size=B, verbose=0)
    with _Phase(ph, "predict"):
        values, ids = infer.predict(test[0], batch_size=B, verbose=0)
    with _Phase(ph, "export"):
        path = os.path.join(cfg["tmp"], "scale", "1")
        tfs.serving.export(path, features=features, head=head, top_k=10)
    np.save(os.path.join(cfg["tmp"], "ctx.npy"), test[0])
    served = _run_child("serve", {"path": path, "ctx": os.path.join(cfg["tmp"], "ctx.npy")})
    ph["serve_clean_process"] = {"seconds": served["seconds"],
                                 "peak_rss_gb": served["peak_rss_gb"],
                                 "load_seconds": served["load_seconds"]}
    res["served_ids_equal_predict"] = bool(np.array_equal(np.load(served["ids"]), ids))
    res["eval_examples_per_s"] = len(test[0]) / ph["evaluate"]["seconds"]
    return res


def serve_child(cfg):
    """Serves the SavedModel's top 10 without tf_sampling (imports of it fail)."""
    import importlib.abc

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tf_sampling" or name.startswith("tf_sampling."):
                raise ImportError("tf_sampling must not be needed to serve")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np
    import tensorflow as tf

    t0 = time.perf_counter()
    fn = tf.saved_model.load(cfg["path"]).signatures["serving_default"]
    t1 = time.perf_counter()
    ctx = np.load(cfg["ctx"])
    ids = []
    for lo in range(0, len(ctx), 1024):
        ids.append(fn(context=tf.constant(ctx[lo:lo + 1024]))["top_k_ids"].numpy())
    out = cfg["ctx"] + ".served.npy"
    np.save(out, np.concatenate(ids))
    return {"load_seconds": t1 - t0, "seconds": time.perf_counter() - t0, "ids": out,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def step_child(cfg):
    """Part 2, one configuration: `path` is "full_softmax" or "dense_ce"."""
    import keras
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, ROOT)
    import tf_sampling as tfs

    V, d, B = cfg["vocab"], cfg["dim"], cfg["batch"]
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(B, d)).astype(np.float32))
    y = tf.constant(rng.integers(0, V, B).astype(np.int32))
    if cfg["path"] == "full_softmax":
        layer = tfs.layers.FullSoftmax(V)
        loss_fn = lambda: tf.reduce_mean(layer([x, y], training=True))  # noqa: E731
    else:
        layer = keras.layers.Dense(V)
        loss_fn = lambda: tf.reduce_mean(  # noqa: E731
            keras.losses.sparse_categorical_crossentropy(y, layer(x), from_logits=True))
    layer.build(x.shape)
    if cfg["optimizer"].startswith("sparse_adam"):
        opt = tfs.optimizers.SparseAdam(1e-3, catch_up=cfg["optimizer"].endswith("catch_up"))
    else:
        opt = keras.optimizers.Adam(1e-3)
    opt.build(layer.trainable_variables)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn()
        opt.apply_gradients(zip(tape.gradient(loss, layer.trainable_variables),
                                layer.trainable_variables))
        return loss

    rss0 = _rss()[0]
    _reset_peak()
    step().numpy()  # trace, compile and first step
    first_peak = _rss()[1]
    # The step's memory: the peak over the timed steps above the RSS they start from
    # (tracing and XLA compilation, which happen once, are in the first step).
    before = _rss()[0]
    _reset_peak()
    times = []
    for _ in range(cfg["steps"]):
        t0 = time.perf_counter()
        step().numpy()
        times.append(time.perf_counter() - t0)
    peak = _rss()[1]
    times.sort()
    return {"step_s": times[len(times) // 2], "step_memory_gb": (peak - before) / GB,
            "peak_rss_gb": peak / GB, "rss_before_gb": before / GB,
            "first_step_memory_gb": (first_peak - rss0) / GB}


CHILDREN = {"scale": scale_child, "serve": serve_child, "step": step_child}

_CHILD_MAIN = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {here!r})
    import bench_scale
    out = bench_scale.CHILDREN[sys.argv[1]](json.loads(sys.argv[2]))
    print("RESULT " + json.dumps(out))
""")


def _run_child(kind, cfg, timeout=900):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # The clean serving process must not find the package on its path.
    if kind == "serve":
        env.pop("PYTHONPATH", None)
    code = _CHILD_MAIN.format(here=os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", code, kind, json.dumps(cfg)],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=tempfile.gettempdir())
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} child failed:\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


# ----------------------------------------------------------------------------- parent
def _goal(goals, name, ok, text, **values):
    """Records goal `name`: its measured `values`, whether it holds, and the line that
    states it in the summary."""
    goals[name] = dict(values, text=text, **{"pass": bool(ok)})


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _machine import machine

    result = {"args": vars(args), "machine": machine(), "goals": {}}
    print(f"machine: {result['machine']}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_scale:
            cfg = {k: getattr(args, k) for k in ("vocab", "dim", "contexts", "zipf",
                                                  "num_sampled", "batch_size", "fit_steps",
                                                  "eval_examples", "optimizer", "lr",
                                                  "repeats")}
            cfg["tmp"] = tmp
            scale = _run_child("scale", cfg, timeout=1800)
            result["scale"] = scale
            print(f"\n1. Scale run: V={args.vocab:.0e}, d={args.dim}, optimizer "
                  f"{args.optimizer}; weights + optimizer state "
                  f"{scale['weights_and_optimizer_gb']:.2f} GB")
            print(f"   {'phase':<22}{'seconds':>10}{'peak RSS GB':>14}")
            for name, ph in scale["phases"].items():
                runs = ph.get("runs_seconds")
                runs = ("  (median of " + ", ".join(
                    f"{t:.2f} ({c:.1f} CPU s)" for t, c in zip(runs, ph["runs_cpu_seconds"]))
                    + ")") if runs else ""
                print(f"   {name:<22}{ph['seconds']:>10.2f}{ph['peak_rss_gb']:>14.2f}{runs}")
                if "call_seconds" in ph:
                    print(f"   {'':<22}{'':>10}{'':>14}  (whole calls, iterator teardown "
                          f"included: " + ", ".join(f"{t:.2f}" for t in ph["call_seconds"])
                          + ")")
            print(f"   exact eval loss {scale['eval_loss']:.3f}, perplexity "
                  f"{scale['eval_perplexity']:.1f} (bound exp(H) = "
                  f"{scale['perplexity_bound']:.1f}); served top-10 ids == predict: "
                  f"{scale['served_ids_equal_predict']}")
            budget = scale["weights_and_optimizer_gb"] + 1.0
            peak_ep = max(scale["phases"]["evaluate"]["peak_rss_gb"],
                          scale["phases"]["predict"]["peak_rss_gb"])
            ratio = scale["eval_floor_ratio"]
            _goal(result["goals"], "eval_predict_memory", peak_ep <= budget,
                  f"peak RSS in evaluate/predict {peak_ep:.2f} GB <= weights + optimizer "
                  f"state + 1 GB = {budget:.2f} GB", peak_gb=peak_ep, budget_gb=budget)
            _goal(result["goals"], "eval_vs_matmul_floor", ratio <= 2.0,
                  f"exact evaluation time / matmul floor = {ratio:.2f} <= 2 (median of "
                  f"{len(scale['eval_floor_ratios'])} pairs; in CPU seconds "
                  f"{scale['eval_floor_cpu_ratio']:.2f})", ratio=ratio)

        compare = []
        # Each path under keras Adam (what a Dense user runs today) and under the compared
        # optimizer; the goals take FullSoftmax under the compared optimizer against the
        # better Dense + CE of the two (least memory, least time).
        optimizers = list(dict.fromkeys(("adam", args.compare_optimizer)))
        for v in [_vocab(t) for t in args.compare_vocab.split(",") if t]:
            for path in ("dense_ce", "full_softmax"):
                for opt in optimizers:
                    row = _run_child("step", {"path": path, "vocab": v,
                                              "dim": args.compare_dim,
                                              "batch": args.compare_batch,
                                              "steps": args.steps, "optimizer": opt})
                    row.update(path=path, vocab=v, optimizer=opt)
                    compare.append(row)
                    print(f"   step {path:<13} {opt:<21} V={v:.0e}: "
                          f"{row['step_s'] * 1e3:9.1f} ms, step memory "
                          f"{row['step_memory_gb']:.3f} GB (peak RSS "
                          f"{row['peak_rss_gb']:.2f} GB)", flush=True)
        result["compare"] = compare

    if compare:
        print(f"\n2. Training step, batch {args.compare_batch}, d={args.compare_dim}: "
              f"FullSoftmax under {args.compare_optimizer} / the better Dense + CE")
        print(f"   {'V':>8}{'time ratio':>12}{'memory ratio':>14}")
        ratios = {}  # V: (time ratio, memory ratio)
        for v in sorted({r["vocab"] for r in compare}):
            dense = [r for r in compare if r["vocab"] == v and r["path"] == "dense_ce"]
            full = next(r for r in compare if r["vocab"] == v and r["path"] == "full_softmax"
                        and r["optimizer"] == args.compare_optimizer)
            ratios[v] = (full["step_s"] / min(r["step_s"] for r in dense),
                         full["step_memory_gb"]
                         / max(min(r["step_memory_gb"] for r in dense), 1e-9))
            print(f"   {v:>8.0e}{ratios[v][0]:>12.2f}{ratios[v][1]:>14.3f}")
        top = max(ratios)
        t_ratio, m_ratio = ratios[top]
        _goal(result["goals"], "full_softmax_memory", m_ratio <= 0.1,
              f"FullSoftmax step memory / Dense + CE at V={top:.0e} = {m_ratio:.3f} <= 0.1",
              vocab=top, ratio=m_ratio)
        _goal(result["goals"], "full_softmax_time", t_ratio <= 1.0,
              f"FullSoftmax step time / Dense + CE at V={top:.0e} = {t_ratio:.2f} <= 1.0",
              vocab=top, ratio=t_ratio)

    print("\nGoals")
    for goal in result["goals"].values():
        print(f"  {'PASS' if goal['pass'] else 'MISS'}  {goal['text']}")

    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot:
        plot(result, args.plot)
    return result


def plot(result, path):
    try:
        import matplotlib
    except ImportError:
        sys.exit("--plot needs matplotlib (pip install matplotlib); the JSON is written.")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, label in (("dense_ce", "Dense + CE, training step"),
                        ("full_softmax", "FullSoftmax, training step")):
        for opt in dict.fromkeys(r.get("optimizer", "adam") for r in result.get("compare", [])):
            rows = sorted((r for r in result.get("compare", [])
                           if r["path"] == name and r.get("optimizer", "adam") == opt),
                          key=lambda r: r["vocab"])
            if rows:
                ax.plot([r["vocab"] for r in rows], [r["step_memory_gb"] for r in rows],
                        "o-" if name == "full_softmax" else "o--", label=f"{label}, {opt}")
    scale = result.get("scale")
    if scale:
        v = result["args"]["vocab"]
        base = scale["phases"]["build"]["peak_rss_gb"]
        for phase in ("evaluate", "predict"):
            ax.plot([v], [scale["phases"][phase]["peak_rss_gb"] - base], "s",
                    label=f"chunked {phase} (peak RSS above the built model)")
    ax.set_xscale("log")
    ax.set_xlabel("classes V")
    ax.set_ylabel("memory above weights + optimizer (GB)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()

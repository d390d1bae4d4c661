"""Language-model perplexity on WikiText-2: every output head against the full softmax, one run.

Trains the NPLM of `examples/language_model.py` (Bengio et al. 2003; with `--arch lstm` or
`both`, its LSTM too) once per output head, with that example's own model builder, training
loop and evaluator (`language_model.train`), and the same body, initial body weights,
optimizer (`--optimizer`, Adam by default), learning rate, batch, epochs and data order:

* `full`: the reference, the example's exact softmax (`FullSoftmax` of
  `examples/_heads.py`: logits `h W^T + b` over all V classes, sparse softmax cross-entropy);
* `sampled`: `tfs.layers.SampledSoftmax` (`--num-sampled` classes from `--sampler`);
* `nce`: `tfs.layers.NCE` (same sampler and number of samples);
* `hierarchical`: `tfs.layers.HierarchicalSoftmax` over a Huffman tree of the training counts;
* `adaptive`: `tfs.layers.AdaptiveSoftmax` with `--cutoffs` (ids are sorted by frequency).

Each head keeps its layer's defaults except where noted in the table header. Perplexities
are always exact: exp of the mean negative log-likelihood of the head's full normalized
distribution (`full_softmax_loss`, i.e. log-softmax over all V classes for full / sampled /
NCE, the tree's and the clusters' exact probabilities for hierarchical / adaptive) over
every token of wiki.valid and wiki.test, never the sampled training loss.

The default trains one epoch over the first 300,000 training tokens (a subset, flagged in
the table header), 12 minutes for the five NPLM heads on two CPU cores. `--max-train-tokens 0`
uses all 2.09M tokens: 40 minutes for the same run, 22 of them the full softmax's epoch
(benchmarks/results/lm_perplexity_whole.txt). Valid and test are always
scored in full (unless `--max-eval-tokens`, for smoke runs).

Time per epoch is training only (no evaluation runs during training): the steady-state
time per step, measured after the first execution (tracing and XLA compilation) and
multiplied by the steps of one epoch. Evaluation is timed separately. The ratios are
against the full softmax of the same architecture measured in the same run. On a shared
machine the times are noisy (the load average is printed at the start and the end).

    python benchmarks/lm_perplexity.py                      # NPLM, all five heads
    python benchmarks/lm_perplexity.py --arch both --json-out lm.json --plot lm.png
    python benchmarks/lm_perplexity.py --max-train-tokens 200000 --epochs 1   # smoke run

Goal (issue #6): the sampled softmax within 5% of the full-softmax perplexity, with at
least 2x less wall time per epoch.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import _common  # noqa: E402

_common.use_examples()

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_sampling as tfs  # noqa: E402
import language_model  # noqa: E402
from _machine import machine  # noqa: E402

HEADS = ("full", "sampled", "nce", "hierarchical", "adaptive")
OPTIMIZERS = {  # name -> (learning rate, epsilon) -> optimizer
    "adam": lambda lr, eps: keras.optimizers.Adam(lr, epsilon=eps),
    "sparse_adam": lambda lr, eps, **kw: tfs.optimizers.SparseAdam(lr, epsilon=eps, **kw),
    "sparse_adam_per_row": lambda lr, eps, **kw: tfs.optimizers.SparseAdam(
        lr, epsilon=eps, bias_correction="per_row", **kw),
    "sparse_adam_catch_up": lambda lr, eps, **kw: tfs.optimizers.SparseAdam(
        lr, epsilon=eps, catch_up=True, **kw),
    "rowwise_adagrad": lambda lr, eps, **kw: tfs.optimizers.RowwiseAdagrad(
        lr, epsilon=eps, **kw),
    # Plain SGD (no per-coordinate scaling; epsilon unused), with Zaremba et al.'s (2014)
    # global gradient-norm clip of 5 for the LSTM.
    "sgd": lambda lr, eps: keras.optimizers.SGD(lr, global_clipnorm=5.0),
}
# Training-frequency bands of the target word for --by-frequency: ranks [0, 100), [100,
# 1000), ... (rank 0 the most frequent word).
FREQUENCY_BANDS = (100, 1000, 10000)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=_common.SHARED_DATA,
                   help="folder with wikitext-2/wiki.{train,valid,test}.tokens, or that "
                        "wikitext-2 folder itself (default: ../shared/data)")
    p.add_argument("--arch", choices=("nplm", "lstm", "both"), default="nplm")
    p.add_argument("--heads", default=",".join(HEADS),
                   help=f"comma list of {', '.join(HEADS)} (full is the reference)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-train-tokens", type=int, default=300_000,
                   help="train on the first N tokens of wiki.train only (0: all 2.09M). "
                        "The default is a subset: one full-softmax epoch over all of it takes "
                        "30+ min on 2 shared CPU cores")
    p.add_argument("--max-eval-tokens", type=int, default=0,
                   help="score only the first N tokens of valid and test (0: all; for "
                        "smoke runs, flagged in the table header)")
    p.add_argument("--context", type=int, default=4, help="NPLM: n-1 context words")
    p.add_argument("--emb", type=int, default=64, help="embedding size")
    p.add_argument("--hidden", type=int, default=128, help="NPLM tanh / LSTM units")
    p.add_argument("--seq-len", type=int, default=35, help="LSTM: tokens per piece")
    p.add_argument("--batch-size", type=int, default=None,
                   help="NPLM targets / LSTM pieces per step (default 512 / 32)")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate, every head")
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="adam",
                   help="every head's optimizer: keras Adam, tfs.optimizers.SparseAdam "
                        "(global or per-row bias correction, or catch_up), "
                        "RowwiseAdagrad, or keras SGD (global_clipnorm 5)")
    p.add_argument("--epsilon", type=float, default=1e-7,
                   help="the optimizer's epsilon (Keras' default 1e-7)")
    p.add_argument("--by-frequency", action="store_true",
                   help="also the test perplexity per band of target words by training "
                        "frequency rank (%s)" % ", ".join(map(str, FREQUENCY_BANDS)))
    p.add_argument("--num-sampled", type=int, default=1024, help="sampled and nce heads")
    p.add_argument("--sampler", default="log_uniform",
                   help="sampled and nce heads: a sampler name of tfs.samplers.get, or "
                        "'unigram' (fixed unigram of the training counts)")
    p.add_argument("--remove-accidental-hits", choices=("default", "yes", "no"),
                   default="default",
                   help="sampled and nce heads ('default': the layer's default)")
    p.add_argument("--rows-sampled", type=int, default=None,
                   help="experiment, sampled head: the output rows learn from this many "
                        "samples, the body from --num-sampled (examples/_heads.py "
                        "SplitSampledSoftmax)")
    p.add_argument("--row-step-from", type=int, default=None,
                   help="experiment, sampled head with the log-uniform sampler: each output "
                        "row takes the Adam step it would take with this many samples "
                        "(examples/_heads.py RowStepSampledSoftmax)")
    p.add_argument("--row-step-samples", type=int, default=None,
                   help="tfs optimizers: the sampled and nce heads' output rows take the "
                        "step they would take with this many samples "
                        "(SparseAdam(row_step_samples=...))")
    p.add_argument("--no-bias", action="store_true",
                   help="sampled and nce heads without a bias (experiment)")
    p.add_argument("--embedding", choices=("tfs", "keras"), default="tfs",
                   help="input table: tfs.layers.Embedding (default) or keras' Embedding")
    p.add_argument("--cutoffs", default="2000,10000", help="adaptive head cutoffs")
    p.add_argument("--div-value", type=float, default=None,
                   help="adaptive head (default: the layer's, 4)")
    p.add_argument("--eval-batch", type=int, default=2048,
                   help="NPLM targets per evaluation batch (LSTM: this / seq-len pieces)")
    p.add_argument("--jit", choices=("on", "off"), default="off",
                   help="XLA for training and evaluation of every head; Keras falls back "
                        "to plain tf.function for heads without XLA support (the xla column)")
    p.add_argument("--steps-per-execution", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="TF intra/inter-op threads")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json-out", help="write every row and the run's settings here")
    p.add_argument("--plot", help="PNG of test perplexity against training time per head "
                                  "(needs matplotlib: pip install .[bench])")
    p.add_argument("--eval-each-epoch", action="store_true",
                   help="also score valid ppl after every epoch (not counted as training time)")
    p.add_argument("--verbose", type=int, default=0, help="Keras fit verbosity")
    args = p.parse_args(argv)
    args.heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    bad = [h for h in args.heads if h not in HEADS]
    if bad or not args.heads:
        p.error(f"--heads: unknown {bad}; choose from {HEADS}")
    args.cutoffs = [int(c) for c in args.cutoffs.split(",")]
    if args.epochs < 1:
        p.error("--epochs must be >= 1")
    return args


def data_paths(data_dir):
    for d in (os.path.join(data_dir, "wikitext-2"), data_dir):
        paths = [os.path.join(d, f"wiki.{s}.tokens") for s in ("train", "valid", "test")]
        if all(os.path.exists(q) for q in paths):
            return paths
    raise SystemExit(f"No wiki.{{train,valid,test}}.tokens under {data_dir} or "
                     f"{data_dir}/wikitext-2; pass --data-dir.")


# ---------------------------------------------------------------------------- training
def normalization_check(parts, stream, context, seq_len, rows=64):
    """On `rows` valid targets: max |sum_y p(y | x) - 1| of the head's `log_prob`, and max
    |full_softmax_loss - (-log_prob[label])|: the scored NLL is that of a normalized
    distribution over all V classes. Raises if either is off by more than 1e-3."""
    arch = "nplm" if parts[2] is None else "lstm"
    batch = next(iter(language_model.eval_dataset(stream, arch, context, seq_len)))
    hidden, labels = language_model.head_inputs(parts, batch["context"], batch["label"])
    hidden, labels = hidden[:rows], labels[:rows]
    head = parts[1]
    log_p = tf.cast(head.log_prob(hidden), tf.float64)
    mass_err = float(tf.reduce_max(tf.abs(tf.exp(tf.reduce_logsumexp(log_p, -1)) - 1)))
    picked = -tf.gather(log_p, labels[:, None], batch_dims=1)[:, 0]
    nll_err = float(tf.reduce_max(tf.abs(
        tf.cast(head.full_softmax_loss(hidden, labels), tf.float64) - picked)))
    if not (mass_err < 1e-3 and nll_err < 1e-3):
        raise RuntimeError(f"{type(head).__name__}: probabilities sum to 1 +- {mass_err:.2g}, "
                           f"full_softmax_loss differs from -log_prob by {nll_err:.2g}.")
    return mass_err, nll_err


def head_options(args, kind):
    """The example's `make_head` options of head `kind` (layer defaults unless set)."""
    if kind in ("sampled", "nce"):
        hits = {"default": None, "yes": True, "no": False}[args.remove_accidental_hits]
        extra = ({"rows_sampled": args.rows_sampled}
                 if kind == "sampled" and args.rows_sampled is not None else {})
        if kind == "sampled" and args.row_step_from is not None:
            extra["row_step_from"] = args.row_step_from
        if args.no_bias:
            extra["use_bias"] = False
        return {"num_sampled": args.num_sampled, "sampler": args.sampler,
                "remove_accidental_hits": hits, **extra}
    if kind == "adaptive":
        return {"cutoffs": args.cutoffs, "div_value": args.div_value}
    return {}


def log_epoch(sampled):
    def log(epoch, seconds, loss, valid_ppl):
        print(f"    epoch {epoch + 1}: {seconds:.1f} s, training loss {loss:.3f}"
              + (" (sampled, not exact)" if sampled else ""), flush=True)
        if valid_ppl is not None:
            print(f"    after epoch {epoch + 1}: valid ppl {valid_ppl:.2f}", flush=True)

    return log


def make_optimizer(args, kind):
    extra = {}
    if args.row_step_samples is not None and kind in ("sampled", "nce"):
        if args.optimizer in ("adam", "sgd"):
            raise SystemExit("--row-step-samples needs a tfs optimizer (sparse_adam*, "
                             "rowwise_adagrad).")
        extra["row_step_samples"] = args.row_step_samples
    return OPTIMIZERS[args.optimizer](args.lr, args.epsilon, **extra)


def run_head(args, arch, kind, data, batch_size):
    """Trains and scores one head with the language-model example's own code; the seed,
    body, optimizer settings and data order are the same for every head."""
    # NPLM evaluation batches are --eval-batch targets, LSTM ones as many pieces as fit.
    eval_batch = args.eval_batch if arch == "nplm" else max(1, args.eval_batch // args.seq_len)
    stats, parts, evaluate = language_model.train(
        data, kind, arch=arch, epochs=args.epochs, batch_size=batch_size,
        context=args.context, seq_len=args.seq_len, emb=args.emb, hidden=args.hidden,
        optimizer=make_optimizer(args, kind),
        steps_per_execution=args.steps_per_execution, jit_compile=args.jit == "on",
        eval_batch_size=eval_batch, validate=args.eval_each_epoch,
        log=log_epoch(sampled=kind in ("sampled", "nce")), verbose=args.verbose,
        seed=args.seed, embedding=args.embedding, **head_options(args, kind))
    spe = stats["steps_per_epoch"]
    tokens_per_step = batch_size * (args.seq_len if arch == "lstm" else 1)

    t = time.perf_counter()
    valid_ppl, valid_n = evaluate(data.valid)
    test_ppl, test_n = evaluate(data.test)
    eval_seconds = time.perf_counter() - t
    mass_err, nll_err = normalization_check(parts, data.valid, args.context, args.seq_len)
    bands = (test_ppl_by_frequency(parts, data, args.context, args.seq_len)
             if args.by_frequency else None)
    return {"test_ppl_by_frequency": bands,"arch": arch, "head": kind, "valid_ppl": valid_ppl, "test_ppl": test_ppl,
            "valid_tokens": valid_n, "test_tokens": test_n,
            "epoch_seconds": stats["step_seconds"] * spe, "fit_seconds": stats["train_seconds"],
            "fit_epoch_seconds": stats["epoch_seconds"], "eval_seconds": eval_seconds,
            "steps_per_epoch": spe, "tokens_per_sec": tokens_per_step / stats["step_seconds"],
            "xla": stats["xla"], "params": stats["params"],
            "max_abs_prob_sum_minus_1": mass_err, "max_abs_nll_vs_log_prob": nll_err,
            "valid_ppl_by_epoch": stats["valid_ppl_per_epoch"] or None}


def test_ppl_by_frequency(parts, data, context, seq_len):
    """Exact test perplexity over the targets in each band of training-frequency rank
    (FREQUENCY_BANDS), with each band's share of the test targets: where a change of
    setting gains or loses (frequent words against rare ones)."""
    arch = "nplm" if parts[2] is None else "lstm"
    order = np.argsort(-np.asarray(data.counts, np.int64), kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    band_of = np.searchsorted(np.asarray(FREQUENCY_BANDS), rank, side="right")
    n_bands = len(FREQUENCY_BANDS) + 1
    head = parts[1]

    @tf.function
    def batch_nll(ctx, lab):
        hidden, labels = language_model.head_inputs(parts, ctx, lab)
        return tf.cast(head.full_softmax_loss(hidden, labels), tf.float64), labels

    total, count = np.zeros(n_bands), np.zeros(n_bands, np.int64)
    for batch in language_model.eval_dataset(data.test, arch, context, seq_len):
        nll, labels = batch_nll(batch["context"], batch["label"])
        b = band_of[labels.numpy()]
        total += np.bincount(b, nll.numpy(), n_bands)
        count += np.bincount(b, minlength=n_bands)
    edges = (0,) + FREQUENCY_BANDS + (len(order),)
    return [{"ranks": [edges[i], edges[i + 1]], "targets": int(count[i]),
             "ppl": float(np.exp(total[i] / count[i])) if count[i] else None}
            for i in range(n_bands)]


# ---------------------------------------------------------------------------- report
def head_note(args, kind, V):
    if kind == "full":
        return "exact softmax"
    if kind in ("sampled", "nce"):
        hits = {"default": "", "yes": ", remove hits", "no": ", keep hits"}[
            args.remove_accidental_hits]
        rows = (f", rows learn from {args.rows_sampled}"
                if kind == "sampled" and args.rows_sampled is not None else "")
        rows += (f", rows step as with {args.row_step_from}"
                 if kind == "sampled" and args.row_step_from is not None else "")
        bias = ", no bias" if args.no_bias else ""
        return f"{min(args.num_sampled, V - 1)} x {args.sampler}{hits}{rows}{bias}"
    if kind == "hierarchical":
        return "Huffman tree"
    return f"cutoffs {args.cutoffs}" + (f", div {args.div_value:g}" if args.div_value else "")


def table(rows, args, V):
    head = (f"| arch | head | setting | valid ppl | test ppl | train s/epoch | x full time "
            f"| ppl / full | eval s | tokens/s | xla |\n"
            f"|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    lines = [head]
    for r in rows:
        full = next((f for f in rows if f["arch"] == r["arch"] and f["head"] == "full"), None)
        speed = f"{full['epoch_seconds'] / r['epoch_seconds']:.2f}x less" if full else "-"
        ppl = f"{r['test_ppl'] / full['test_ppl']:.3f}" if full else "-"
        if full is r:
            speed, ppl = "1 (ref)", "1 (ref)"
        lines.append(
            f"| {r['arch']} | {r['head']} | {head_note(args, r['head'], V)} "
            f"| {r['valid_ppl']:.2f} | {r['test_ppl']:.2f} | {r['epoch_seconds']:.1f} "
            f"| {speed} | {ppl} | {r['eval_seconds']:.1f} | {r['tokens_per_sec']:,.0f} "
            f"| {'yes' if r['xla'] else 'no'} |")
    return "\n".join(lines)


def goal_lines(rows):
    out = []
    for arch in dict.fromkeys(r["arch"] for r in rows):
        by = {r["head"]: r for r in rows if r["arch"] == arch}
        if "full" not in by or "sampled" not in by:
            continue
        f, s = by["full"], by["sampled"]
        ppl = s["test_ppl"] / f["test_ppl"] - 1
        vppl = s["valid_ppl"] / f["valid_ppl"] - 1
        speed = f["epoch_seconds"] / s["epoch_seconds"]
        ok = ppl <= 0.05 and vppl <= 0.05 and speed >= 2
        out.append(f"goal (#6), {arch}: sampled test ppl {ppl:+.1%} vs full (valid "
                   f"{vppl:+.1%}; at most +5% allowed), {speed:.2f}x less time per epoch "
                   f"(>= 2x needed): {'HOLDS' if ok else 'DOES NOT HOLD'}"
                   + ("; note: sampled beats full by more than 5%, so the full softmax is "
                      "undertrained at this budget" if min(ppl, vppl) < -0.05 else ""))
    return out


def plot_series(rows):
    """What `plot` draws, as plain data (no matplotlib): one filled point per row at
    (training seconds of all epochs, test perplexity), and, for rows scored after each
    epoch, a dashed curve of (seconds after epoch k, valid perplexity after epoch k)."""
    markers = {"nplm": "o", "lstm": "s"}
    colors = dict(zip(HEADS, ("black", "tab:orange", "tab:green", "tab:red", "tab:purple")))
    points, curves = [], []
    for r in rows:
        style = {"marker": markers[r["arch"]], "color": colors[r["head"]]}
        points.append(dict(style, x=r["epoch_seconds"] * r["epochs"], y=r["test_ppl"],
                           label=f"{r['arch']} {r['head']}"))
        by_epoch = r.get("valid_ppl_by_epoch") or []
        if len(by_epoch) > 1:  # --eval-each-epoch
            curves.append(dict(style, x=[r["epoch_seconds"] * (k + 1)
                                         for k in range(len(by_epoch))], y=list(by_epoch)))
    ylabel = "exact test perplexity" + (
        " (filled); valid after each epoch (dashed)" if curves else "")
    return points, curves, ylabel


def plot(rows, path, title):
    import matplotlib  # lazily: an optional benchmark extra

    matplotlib.use("Agg")
    import matplotlib.ticker  # noqa: F401
    import matplotlib.pyplot as plt
    import textwrap

    points, curves, ylabel = plot_series(rows)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for p in points:
        ax.scatter(p["x"], p["y"], marker=p["marker"], s=60, color=p["color"])
        ax.annotate(p["label"], (p["x"], p["y"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=9)
    for c in curves:
        ax.plot(c["x"], c["y"], linestyle="--", marker=c["marker"], markerfacecolor="none",
                color=c["color"], alpha=0.7)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("training wall-clock time, s (steady state, all epochs)")
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(textwrap.wrap(title, 95)), fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # retracing notices: every head is a new model
    command = shlex.join(["python", os.path.relpath(os.path.abspath(__file__))]
                         + (sys.argv[1:] if argv is None else list(argv)))
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    info = machine()
    load_start = os.getloadavg()
    print(f"# command: {command}")
    print(f"# machine: {info['cpu']}, {info['logical_cores']} logical cores "
          f"({info['usable_cores']} usable), {info['gpus']} GPU(s); Python {info['python']}, "
          f"TF {info['tensorflow']}, Keras {info['keras']}, NumPy {info['numpy']}")
    print(f"# load average at the start: {load_start[0]:.2f} (1 min), "
          f"{load_start[1]:.2f} (5 min)", flush=True)

    train_path, valid_path, test_path = data_paths(args.data_dir)
    data = language_model.load_data(train_path, valid_path, test_path)
    full_train = len(data.train)
    if args.max_train_tokens and args.max_train_tokens < full_train:
        data.train = data.train[:args.max_train_tokens]
    if args.max_eval_tokens:
        data.valid = data.valid[:args.max_eval_tokens]
        data.test = data.test[:args.max_eval_tokens]
    V = data.vocab_size
    archs = ["nplm", "lstm"] if args.arch == "both" else [args.arch]
    subset = len(data.train) < full_train
    scope = (f"SUBSET: first {len(data.train):,} of {full_train:,} training tokens"
             if subset else f"all {full_train:,} training tokens")
    if args.max_eval_tokens:
        scope += (f"; SUBSET: first {len(data.valid):,} valid / {len(data.test):,} test "
                  f"tokens scored")
    print(f"# WikiText-2: vocabulary {V:,}; {scope}; valid {len(data.valid):,}, test "
          f"{len(data.test):,} tokens scored", flush=True)

    rows = []
    t_all = time.perf_counter()
    for arch in archs:
        batch_size = args.batch_size or language_model.BATCH_SIZE[arch]
        for kind in args.heads:
            print(f"  {arch} / {kind}:", flush=True)
            r = run_head(args, arch, kind, data, batch_size)
            r.update(epochs=args.epochs, batch_size=batch_size)
            rows.append(r)
            print(f"    valid ppl {r['valid_ppl']:.2f}, test ppl {r['test_ppl']:.2f}; "
                  f"{r['epoch_seconds']:.1f} s/epoch ({r['tokens_per_sec']:,.0f} tokens/s), "
                  f"eval {r['eval_seconds']:.1f} s, xla {r['xla']}", flush=True)
    total = time.perf_counter() - t_all
    load_end = os.getloadavg()

    bodies = []
    for arch in archs:
        b = args.batch_size or language_model.BATCH_SIZE[arch]
        bodies.append(
            f"NPLM: {args.context} context words, emb {args.emb}, tanh {args.hidden}, batch "
            f"{b} targets" if arch == "nplm" else
            f"LSTM: emb {args.emb}, {args.hidden} units, pieces of {args.seq_len}, batch {b}")
    title = (f"WikiText-2 (V = {V:,}), {scope}, {args.epochs} epoch(s); "
             + "; ".join(bodies) + f"; {args.optimizer} lr {args.lr:g}"
             + (f" epsilon {args.epsilon:g}" if args.epsilon != 1e-7 else "")
             + (f" row_step_samples {args.row_step_samples}"
                if args.row_step_samples is not None else "")
             + " for every head")
    print()
    print(f"## {title}")
    worst = max(max(r["max_abs_prob_sum_minus_1"], r["max_abs_nll_vs_log_prob"]) for r in rows)
    print("Perplexities are exact (full normalized distribution of each head) on every "
          f"valid/test token (checked on 64 valid rows per head: probabilities sum to 1 and "
          f"the scored NLL is -log_prob[label], within {worst:.1e}). train s/epoch: training only, steady state; eval s: valid + "
          "test evaluation. x full time = full s/epoch / this s/epoch.")
    print()
    print(table(rows, args, V))
    print()
    for r in rows:
        if r.get("valid_ppl_by_epoch"):
            print(f"valid ppl after each epoch, {r['arch']} / {r['head']}: "
                  + ", ".join(f"{p:.1f}" for p in r["valid_ppl_by_epoch"]))
    for r in rows:
        if r.get("test_ppl_by_frequency"):
            print(f"test ppl by training-frequency rank of the target, {r['arch']} / "
                  f"{r['head']}: " + "; ".join(
                      f"ranks {b['ranks'][0]}-{b['ranks'][1]}: {b['ppl']:.1f} "
                      f"({b['targets']:,} targets)"
                      for b in r["test_ppl_by_frequency"] if b["targets"]))
    for line in goal_lines(rows):
        print(line)
    print(f"machine: {info['cpu']}, {info['usable_cores']} cores, TF {info['tensorflow']}; "
          f"load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end "
          f"(shared machine: the times are noisy); whole run {total / 60:.1f} min")
    print(f"command: {command}", flush=True)

    if args.json_out:
        settings = {k: v for k, v in vars(args).items()}
        with open(args.json_out, "w") as f:
            json.dump({"command": command, "machine": info, "title": title,
                       "load_average_start": load_start, "load_average_end": load_end,
                       "train_tokens": len(data.train), "full_train_tokens": full_train,
                       "vocab_size": V, "settings": settings, "rows": rows,
                       "goals": goal_lines(rows), "total_seconds": total}, f, indent=1)
        print(f"wrote {args.json_out}")
    if args.plot:
        plot(rows, args.plot, title)
        print(f"wrote {args.plot}")
    return rows


if __name__ == "__main__":
    main()

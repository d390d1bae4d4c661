"""The neural probabilistic language model of Bengio et al. (2003), and an LSTM variant.

NPLM: the n-1 previous words are embedded (size --emb, "m"), concatenated, passed through
a tanh layer of --hidden ("h") units, and an output head scores the next word; with
--direct the concatenated embeddings also connect straight to the output (the paper's W x
term: the head reads [tanh(H x + d), x]). LSTM: an LSTM reads pieces of --seq-len tokens
and predicts every next token.

The output head is --head full (the exact softmax), sampled (sampled softmax), nce, or
hierarchical (Huffman tree). Whatever the head trains with, the reported perplexities are
exact: the full softmax of the trained model (the tree's exact distribution for the
hierarchical head) over every token of --valid and --test, never the sampled loss.

    python examples/language_model.py                  # synthetic quick start (below)
    python examples/language_model.py --data-dir ../shared/data/wikitext-2 --head sampled

Without --train it draws a synthetic corpus from a Zipfian bigram source whose entropy rate
is known exactly (see _zipf_source.py), prints the model's perplexity next to that lower
bound and to a unigram baseline, times a full-softmax model on the same data to report the
speed-up of the sampled head, and exports the trained model for TensorFlow Serving
(--export). The last line printed is `RESULT {json}`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import tf_sampling  # noqa: F401,E402
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_sampling as tfs  # noqa: E402
import _corpus  # noqa: E402
import _heads  # noqa: E402
import _zipf_source  # noqa: E402

EOS, UNK = "<eos>", "<unk>"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", help="training text (default: synthetic Zipfian corpus)")
    p.add_argument("--valid", help="validation text")
    p.add_argument("--test", help="test text")
    p.add_argument("--data-dir", help="directory with wiki.{train,valid,test}.tokens "
                   "(e.g. ../shared/data/wikitext-2)")
    p.add_argument("--arch", choices=("nplm", "lstm"), default="nplm")
    p.add_argument("--head", choices=("full", "sampled", "nce", "hierarchical"),
                   default="sampled")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--context", type=int, default=4, help="NPLM: n-1 context words")
    p.add_argument("--emb", type=int, default=64, help="embedding size m")
    p.add_argument("--hidden", type=int, default=128, help="tanh / LSTM units h")
    p.add_argument("--direct", action="store_true",
                   help="NPLM: direct connections from the embeddings to the output")
    p.add_argument("--seq-len", type=int, default=35, help="LSTM: tokens per piece")
    p.add_argument("--num-sampled", type=int, default=256,
                   help="sampled / nce heads: classes sampled per step")
    p.add_argument("--sampler", default="log_uniform",
                   choices=("log_uniform", "uniform", "unigram", "learned_unigram"),
                   help="sampled / nce heads (ids are sorted by frequency, so log_uniform "
                        "approximates a Zipfian unigram)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="examples per step (default 512 NPLM tokens, 32 LSTM pieces)")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--optimizer", choices=("adam", "sparse_adam"), default="adam",
                   help="keras Adam (dense: every row each step, affordable at this size) "
                        "or the recommended sparse optimizer, SparseAdam(catch_up=True) "
                        "(`recommended_optimizer`)")
    p.add_argument("--row-step-samples", type=int, default=None,
                   help="with --optimizer sparse_adam and the sampled or nce head: its "
                        "output rows take the steps of this many samples")
    p.add_argument("--compare-full", choices=("auto", "yes", "no"), default="auto",
                   help="also time a full-softmax model for --compare-steps steps on the "
                        "same data (auto: on the synthetic corpus when --head is not full)")
    p.add_argument("--compare-steps", type=int, default=200)
    p.add_argument("--export", default="lm_savedmodel",
                   help="SavedModel directory for serving ('' to skip)")
    p.add_argument("--top-k", type=int, default=10, help="classes returned by the export")
    p.add_argument("--synthetic-vocab", type=int, default=5000)
    p.add_argument("--synthetic-tokens", type=int, default=1_000_000,
                   help="training tokens of the synthetic corpus (valid/test get 1/10 each)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--steps-per-execution", type=int, default=8)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--verbose", type=int, default=1, help="Keras fit verbosity")
    args = p.parse_args(argv)
    if args.row_step_samples is not None and (
            args.optimizer != "sparse_adam" or args.head not in ("sampled", "nce")):
        p.error("--row-step-samples needs --optimizer sparse_adam and --head sampled or nce")
    if args.data_dir:
        for split in ("train", "valid", "test"):
            if getattr(args, split) is None:
                setattr(args, split, os.path.join(args.data_dir, f"wiki.{split}.tokens"))
    if args.batch_size is None:
        args.batch_size = BATCH_SIZE[args.arch]
    if args.compare_full == "auto":
        args.compare_full = "yes" if (args.train is None and args.head != "full") else "no"
    return args


# ---------------------------------------------------------------------------- data
# Examples per training step when --batch-size is not given: NPLM targets, LSTM pieces.
BATCH_SIZE = {"nplm": 512, "lstm": 32}


class Data:
    """Token id streams of the three splits, the vocabulary, and what is known of them."""

    def __init__(self, train, valid, test, words, counts, source=None):
        self.train, self.valid, self.test = train, valid, test
        self.words, self.counts, self.source = words, counts, source

    @property
    def vocab_size(self):
        return len(self.words)


def load_data(train=None, valid=None, test=None, synthetic_vocab=5000,
              synthetic_tokens=1_000_000, seed=1):
    """The text files `train`, `valid`, `test` (valid and test optional), or without
    `train` a synthetic Zipfian bigram corpus of `synthetic_tokens` training tokens."""
    if train:
        # Ids sorted by frequency (log_uniform relies on it), <eos> ending every line.
        vocab = _corpus.Vocab.from_tokens(_corpus.read_lm_lines(train, EOS),
                                          extra=(EOS, UNK))
        splits = [_corpus.encode_stream(path, vocab, EOS, UNK) if path else None
                  for path in (train, valid, test)]
        return Data(*splits, vocab.words, vocab.counts)
    src = _zipf_source.ZipfianBigramSource(vocab_size=synthetic_vocab, exponent=1.1,
                                           coupling=6.0, seed=seed)
    n = synthetic_tokens
    train = src.sample(n, seed=seed + 1)
    valid = src.sample(max(n // 10, 1000), seed=seed + 2)
    test = src.sample(max(n // 10, 1000), seed=seed + 3)
    counts = np.bincount(train, minlength=src.vocab_size)
    # Ids in order of training frequency, so that log_uniform fits the corpus.
    order = np.argsort(-counts, kind="stable")
    remap = np.empty_like(order)
    remap[order] = np.arange(len(order))
    words = [src.words[i] for i in order]
    data = Data(remap[train].astype(np.int32), remap[valid].astype(np.int32),
                remap[test].astype(np.int32), words, counts[order], source=src)
    data.source_ids = (train, valid, test)
    return data


def train_dataset(stream, arch, batch_size, context=4, seq_len=35, seed=1):
    """Shuffled batches, repeated forever (fit stops after epochs * steps_per_epoch)."""
    if arch == "nplm":
        return _corpus.window_dataset(stream, context, batch_size, pad_id=0,
                                      shuffle=True, seed=seed, epochs=None)
    return _corpus.sequence_dataset(stream, seq_len, batch_size, shuffle=True,
                                    seed=seed, epochs=None)


def eval_dataset(stream, arch, context=4, seq_len=35, batch_size=None):
    """Every target of `stream` once, in order; `batch_size` NPLM targets (default 2048)
    or LSTM pieces (default 64) per batch."""
    if arch == "nplm":
        return _corpus.window_dataset(stream, context, batch_size or 2048, pad_id=0)
    return _corpus.sequence_dataset(stream, seq_len, batch_size or 64)


def steps_per_epoch(stream, arch, batch_size, seq_len=35):
    n = len(stream) - 1
    return n // batch_size if arch == "nplm" else (n // seq_len) // batch_size


# ---------------------------------------------------------------------------- models
def make_head(kind, data, num_sampled=256, sampler="log_uniform", seed=None, **options):
    """`_heads.make_head(kind, ...)` for `data`'s vocabulary: the Huffman tree of the
    hierarchical head is built from the training counts, and `sampler="unigram"` (sampled
    and nce heads) is a fixed unigram sampler of them. `options` go to `_heads.make_head`
    (e.g. `remove_accidental_hits`; `cutoffs` and `div_value` of the adaptive head)."""
    V = data.vocab_size
    if kind in ("sampled", "nce") and sampler == "unigram":
        sampler = _heads.unigram_sampler(data.counts, 1.0, seed=seed)
    return _heads.make_head(kind, V, counts=data.counts, num_sampled=min(num_sampled, V - 1),
                            sampler=sampler, seed=seed, **options)


def build_model(data, head_kind, arch="nplm", context=4, emb=64, hidden=128, direct=False,
                seed=1, embedding="tfs", **head_options):
    """(training model, features model for serving, head, sequence model or None).

    The sequence model (LSTM only) maps a piece to the hidden state at every position, for
    scoring every target; the features model gives the last position's, for serving.
    `head_options` go to `make_head`. Models built with the same seed and body sizes start
    from the same body weights, whatever their head. `embedding`: "tfs" for
    `tfs.layers.Embedding` (a sparse lookup that reads rows as `SparseAdam(catch_up=True)`
    has them), "keras" for `keras.layers.Embedding` (the same weights and values).
    """
    if embedding not in ("tfs", "keras"):
        raise ValueError(f"`embedding` must be 'tfs' or 'keras', got {embedding!r}.")
    keras.utils.set_random_seed(seed)
    layer = tfs.layers.Embedding if embedding == "tfs" else keras.layers.Embedding
    embed = layer(data.vocab_size, emb, name="embedding")
    if arch == "nplm":
        ctx = keras.Input((context,), dtype="int32", name="context")
        label = keras.Input((), dtype="int32", name="label")
        x = keras.layers.Flatten(name="concat")(embed(ctx))
        h = keras.layers.Dense(hidden, activation="tanh", name="hidden")(x)
        if direct:
            h = keras.layers.Concatenate(name="direct")([h, x])
        features, sequence = keras.Model(ctx, h, name="nplm_features"), None
        head_in = [h, label]
    else:
        ctx = keras.Input((None,), dtype="int32", name="context")
        label = keras.Input((None,), dtype="int32", name="label")
        seq = keras.layers.LSTM(hidden, return_sequences=True, name="lstm")(embed(ctx))
        # Serving predicts the word after the last input token.
        features = keras.Model(ctx, seq[:, -1, :], name="lstm_features")
        sequence = keras.Model(ctx, seq, name="lstm_sequence")
        # Every position is an example: the head sees [batch * time, hidden].
        head_in = [keras.ops.reshape(seq, (-1, hidden)), keras.ops.reshape(label, (-1,))]
    # The head is made after the body: making a layer draws the seeds of its initializers
    # from the global seed, and heads differ in how many they draw.
    head = make_head(head_kind, data, seed=seed, **head_options)
    model = keras.Model({"context": ctx, "label": label}, head(head_in),
                        name=f"{arch}_{head_kind}")
    return model, features, head, sequence


def head_inputs(parts, context, labels):
    """The head's inputs for a batch: (hidden states [n, h], labels [n]), one row per
    target. `parts` is `(features, head, sequence model or None)` from `build_model`."""
    features, _, sequence = parts
    if sequence is None:
        return features(context, training=False), labels
    hidden = sequence(context, training=False)
    return tf.reshape(hidden, [-1, hidden.shape[-1]]), tf.reshape(labels, [-1])


def make_evaluator(parts, context=4, seq_len=35, batch_size=None, jit_compile=None):
    """A function stream -> (exp(mean exact NLL) over every target, number of targets).

    `parts` is `(features, head, sequence model or None)` from `build_model`; batches as
    `eval_dataset`'s.
    """
    head, arch = parts[1], "nplm" if parts[2] is None else "lstm"
    shape = [None, context] if arch == "nplm" else [None, None]
    label_shape = [None] if arch == "nplm" else [None, None]

    @tf.function(jit_compile=jit_compile, input_signature=[
        tf.TensorSpec(shape, tf.int32), tf.TensorSpec(label_shape, tf.int32)])
    def batch_nll(ctx, lab):
        nll = tf.cast(head.full_softmax_loss(*head_inputs(parts, ctx, lab)), tf.float64)
        return tf.reduce_sum(nll), tf.size(nll)

    def evaluate(stream):
        total, count = 0.0, 0
        for batch in eval_dataset(stream, arch, context, seq_len, batch_size):
            s, n = batch_nll(batch["context"], batch["label"])
            total += float(s)
            count += int(n)
        return math.exp(total / count), count

    return evaluate


def unigram_perplexity(train, stream, vocab_size):
    """Add-one unigram model of the training stream, scored on `stream` (a baseline)."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(np.exp(-logp[stream[1:]].mean()))


def print_valid_ppl(epoch, seconds, loss, valid_ppl):
    if valid_ppl is not None:
        print(f"  epoch {epoch + 1}: exact valid perplexity {valid_ppl:.2f}", flush=True)


class Monitor(keras.callbacks.Callback):
    """Exact validation perplexity after every epoch, and steady-state training time.

    The clock starts after the first `train_function` call (which includes tracing) and
    leaves out the validation passes, so tokens/s compares heads fairly. After every epoch
    `log(epoch, training seconds of the epoch, training loss, valid perplexity or None)`.
    """

    def __init__(self, validate=None, log=print_valid_ppl):
        super().__init__()
        self.validate, self.log = validate, log
        self.history = []
        self.epoch_seconds = []
        self.start = None
        self.paused = 0.0
        self.end = None

    def on_train_batch_end(self, batch, logs=None):
        if self.start is None:
            self.start = time.perf_counter()
            self.first_steps = batch + 1

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        t = time.perf_counter()
        self.epoch_seconds.append(t - self._epoch_start)
        ppl = None
        if self.validate is not None:
            ppl = self.validate()
            self.paused += time.perf_counter() - t
            self.history.append(ppl)
        if self.log is not None:
            self.log(epoch, self.epoch_seconds[-1], (logs or {}).get("loss"), ppl)

    def on_train_end(self, logs=None):
        self.end = time.perf_counter()


def train(data, head_kind, arch="nplm", epochs=2, steps=None, batch_size=None, context=4,
          seq_len=35, emb=64, hidden=128, direct=False, optimizer=None, lr=2e-3,
          steps_per_execution=8, jit_compile="auto", eval_batch_size=None, validate=True,
          log=print_valid_ppl, verbose=1, seed=1, **head_options):
    """Builds (`build_model`) and trains one model for `epochs` epochs (or `steps` steps,
    one "epoch"), with `optimizer` (default Adam(`lr`)).

    The epoch is cut to whole executions of `steps_per_execution` steps. With `validate`,
    the exact valid perplexity is scored after every epoch (`log` reports it) and left out
    of the training time. `jit_compile=True` also compiles the evaluator where the head
    supports XLA. Returns (stats, (features, head, sequence model), evaluate function);
    stats has the steady-state `step_seconds` (after the first execution; over all steps
    if there is no other) and `tokens_per_sec` (None then), `train_seconds` (all of fit,
    without validation), `epoch_seconds` (each epoch's training time) and `xla`.
    """
    batch_size = batch_size or BATCH_SIZE[arch]
    model, features, head, sequence = build_model(
        data, head_kind, arch=arch, context=context, emb=emb, hidden=hidden, direct=direct,
        seed=seed, **head_options)
    parts = (features, head, sequence)
    evaluate = make_evaluator(parts, context, seq_len, eval_batch_size, jit_compile=bool(
        jit_compile is True and getattr(head, "supports_jit", False)))
    spe = steps_per_epoch(data.train, arch, batch_size, seq_len)
    if spe < 2:
        raise ValueError("The training corpus is smaller than two batches; lower --batch-size.")
    if steps is not None:
        spe, epochs = steps, 1
    # Keras runs whole executions of steps_per_execution steps: keep epochs a multiple.
    per_exec = max(1, min(steps_per_execution, spe // 2))
    spe = spe // per_exec * per_exec
    # At this vocabulary (33K words) keras Adam's dense step over every row is affordable.
    # With 10^5+ classes pass `recommended_optimizer(lr)` (--optimizer sparse_adam): dense
    # Adam's trajectory at the cost of the rows a step touches (README, "Optimizers").
    model.compile(optimizer=optimizer or keras.optimizers.Adam(lr),
                  steps_per_execution=per_exec, jit_compile=jit_compile)
    monitor = Monitor((lambda: evaluate(data.valid)[0])
                      if validate and data.valid is not None else None, log=log)
    t0 = time.perf_counter()
    model.fit(train_dataset(data.train, arch, batch_size, context, seq_len, seed),
              epochs=epochs, steps_per_epoch=spe, callbacks=[monitor], verbose=verbose,
              shuffle=False)
    wall = monitor.end - t0 - monitor.paused
    tokens_per_step = batch_size * (seq_len if arch == "lstm" else 1)
    timed_steps = spe * epochs - monitor.first_steps
    steady = monitor.end - monitor.start - monitor.paused
    step_seconds = steady / timed_steps if timed_steps > 0 else wall / (spe * epochs)
    out = {"head": head_kind, "epochs": epochs, "steps_per_epoch": spe,
           "steps": spe * epochs, "train_seconds": wall, "step_seconds": step_seconds,
           "tokens_per_sec": timed_steps * tokens_per_step / steady
           if timed_steps > 0 else None,
           "epoch_seconds": monitor.epoch_seconds, "valid_ppl_per_epoch": monitor.history,
           "xla": bool(model.jit_compile), "params": int(model.count_params())}
    return out, parts, evaluate


def recommended_optimizer(lr, row_step_samples=None):
    """The README's optimizer ("Optimizers"): `SparseAdam(catch_up=True)`, dense Adam's
    trajectory at the cost of the rows a step touches. Tune `lr` at the sample count you
    train with: on WikiText-2 the one-epoch LSTM's better rate was 1.2e-2 and the NPLM's
    3e-3, and at those rates perplexity fell as num_sampled grew from 256 to 4,096.
    `row_step_samples` (sampled and NCE heads with a sampler of fixed distribution) gives
    their output rows the steps of that many samples. 4 x num_sampled gave 6-13% better
    one-epoch LSTMs at 1,024 and 4,096 samples and a 4-16% worse NPLM, so it is an option
    to validate on your model, not a default."""
    extra = {} if row_step_samples is None else {"row_step_samples": row_step_samples}
    return tfs.optimizers.SparseAdam(lr, catch_up=True, **extra)


def model_options(args):
    """`train`'s keyword arguments from the command line, but for the head and epochs."""
    return {"arch": args.arch, "batch_size": args.batch_size, "context": args.context,
            "seq_len": args.seq_len, "emb": args.emb, "hidden": args.hidden,
            "direct": args.direct, "lr": args.lr, "num_sampled": args.num_sampled,
            "sampler": args.sampler, "steps_per_execution": args.steps_per_execution,
            "verbose": args.verbose, "seed": args.seed,
            "optimizer": (recommended_optimizer(args.lr, args.row_step_samples)
                          if args.optimizer == "sparse_adam" else None)}


def reported(stats):
    """`train`'s stats as the RESULT line gives them (rounded)."""
    tps = stats["tokens_per_sec"]
    return dict(stats, train_seconds=round(stats["train_seconds"], 2),
                tokens_per_sec=None if tps is None else round(tps),
                valid_ppl_per_epoch=[round(p, 3) for p in stats["valid_ppl_per_epoch"]] or None)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    data = load_data(args.train, args.valid, args.test, args.synthetic_vocab,
                     args.synthetic_tokens, args.seed)
    src = data.source
    print(f"corpus: {'synthetic Zipfian bigram source' if src else args.train}; vocabulary "
          f"{data.vocab_size:,}; tokens train {len(data.train):,}"
          + (f", valid {len(data.valid):,}" if data.valid is not None else "")
          + (f", test {len(data.test):,}" if data.test is not None else ""), flush=True)
    result = {"arch": args.arch, "head": args.head, "vocab_size": data.vocab_size,
              "context": args.context if args.arch == "nplm" else None,
              "emb": args.emb, "hidden": args.hidden, "direct": args.direct,
              "batch_size": args.batch_size, "epochs": args.epochs,
              "optimizer": args.optimizer}
    if src is not None:
        result["entropy_rate_nats"] = src.entropy_rate
        result["true_perplexity_bound"] = src.perplexity_bound
        print(f"source entropy rate {src.entropy_rate:.4f} nats/token: no model can have an "
              f"expected perplexity below exp(H) = {src.perplexity_bound:.2f}")
    eval_split = data.test if data.test is not None else data.valid
    if eval_split is not None:
        result["unigram_ppl"] = unigram_perplexity(data.train, eval_split, data.vocab_size)

    stats, parts, evaluate = train(data, args.head, epochs=args.epochs, **model_options(args))
    stats = reported(stats)
    features, head, _ = parts
    result.update({k: stats[k] for k in ("train_seconds", "tokens_per_sec",
                                          "valid_ppl_per_epoch")})
    for split in ("valid", "test"):
        stream = getattr(data, split)
        if stream is not None:
            ppl, n = evaluate(stream)
            result[f"{split}_ppl"] = ppl
            result[f"{split}_tokens"] = n
    print(f"{args.arch} + {args.head} head: "
          + ", ".join(f"{s} perplexity {result[f'{s}_ppl']:.2f}" for s in ("valid", "test")
                      if f"{s}_ppl" in result)
          + f" (exact full softmax); {stats['tokens_per_sec']:,} tokens/s", flush=True)
    if src is not None:
        train_ids, _, test_ids = data.source_ids
        oracle = float(np.exp(-src.sequence_log_prob(test_ids)[1:].mean()))
        result["true_model_test_ppl"] = oracle
        print(f"  true lower bound exp(H) {src.perplexity_bound:.2f}; the source's own "
              f"conditionals score {oracle:.2f} on this test sample; unigram baseline "
              f"{result['unigram_ppl']:.2f}")
    elif "unigram_ppl" in result:
        print(f"  unigram baseline perplexity {result['unigram_ppl']:.2f}")

    if args.compare_full == "yes" and args.head != "full":
        full, _, _ = train(data, "full", steps=args.compare_steps, validate=False,
                           **model_options(args))
        full = reported(full)
        result["full_tokens_per_sec"] = full["tokens_per_sec"]
        result["speedup_vs_full"] = stats["tokens_per_sec"] / full["tokens_per_sec"]
        print(f"full softmax, same model and data: {full['tokens_per_sec']:,} tokens/s "
              f"(timed over {full['steps']} steps); the {args.head} head trains "
              f"{result['speedup_vs_full']:.1f}x faster per token", flush=True)

    if args.export:
        tfs.serving.export(args.export, features=features, head=head, top_k=min(
            args.top_k, data.vocab_size))
        # The ids' words, one per line (line i is id i), to read the served predictions.
        with open(os.path.join(args.export, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(data.words) + "\n")
        result["export"] = os.path.abspath(args.export)
        print(f"exported the inference path to {args.export} (signature serving_default: "
              f"context ids -> top_k_ids, top_k_log_probs; words in vocab.txt); try\n"
              f"  saved_model_cli show --all --dir {args.export}", flush=True)
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

"""word2vec on WikiText-2: tf-sampling's fused op against gensim, side by side, one run.

Trains skip-gram with negative sampling and with hierarchical softmax, ours
(`tfs.Word2Vec`, the fused C++ op) and gensim's `Word2Vec` (its optimized Cython path),
with identical hyperparameters: dim 100, window 5, min_count 5, sample 1e-3, 5 epochs,
negative 5 (or hs=1, negative 0), alpha 0.025 -> 0.0001, 2 workers. Both get the same
token lists; gensim's defaults are kept for everything else. Runs alternate (ours, gensim,
ours, ...) so that a noisy shared machine slows both alike.

Reported per run: training seconds (vocabulary building excluded for both), raw words/s
(tokens read, in vocabulary or not, as gensim counts "raw words") and effective words/s
(words left after min_count and subsampling, gensim's "effective words", its usual
words/s figure), WordSim-353 Spearman and analogy accuracy with coverage. The metrics are
computed by one evaluator (examples/_embedding_eval.py, gensim's conventions) for both.

    pip install -e ".[bench]"
    python benchmarks/word2vec_vs_gensim.py --repeats 3 --json-out w2v.json

Goals (issue #6): WordSim at least gensim's - 0.03, analogy at least gensim's - 1.5
points, words/s at least gensim's, on the same cores.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import _common  # noqa: E402

_common.use_examples()

import tf_sampling as tfs  # noqa: E402
import _embedding_eval  # noqa: E402
import _machine  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=_common.SHARED_DATA,
                   help="folder with wikitext-2/ and eval/ (default: ../shared/data)")
    p.add_argument("--configs", default="negative,hs",
                   help="comma list of: negative (negative=5), hs (hs=1, negative=0)")
    p.add_argument("--impls", default="tf_sampling,gensim")
    p.add_argument("--repeats", type=int, default=1, help="runs per (config, impl), seeds 1..")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--sample", type=float, default=1e-3)
    p.add_argument("--negative", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-lines", type=int, default=0, help="use only the first N lines")
    p.add_argument("--json-out", help="write all runs and the summary as JSON here")
    return p.parse_args(argv)


def read_sentences(path, max_lines=0):
    sentences = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if max_lines and i >= max_lines:
                break
            sentences.append(line.split())
    return sentences


def config_params(config, args):
    if config == "negative":
        return {"negative": args.negative, "hs": False}
    if config == "hs":
        return {"negative": 0, "hs": True}
    raise ValueError(f"unknown config {config!r}")


def train_ours(sentences, config, args, seed):
    params = config_params(config, args)
    model = tfs.Word2Vec.from_sentences(
        sentences, min_count=args.min_count, dim=args.dim, window=args.window,
        sample=args.sample, workers=args.workers, seed=seed, **params)
    encoded = model.encode(sentences)
    start = time.perf_counter()
    history = model.train(encoded=encoded, epochs=args.epochs, verbose=0)
    seconds = time.perf_counter() - start
    effective = sum(h["words"] for h in history)
    raw = sum(h["raw_words"] for h in history)
    return model.words, model.vectors, seconds, raw, effective


def train_gensim(sentences, config, args, seed):
    from gensim.models import Word2Vec

    params = config_params(config, args)
    model = Word2Vec(vector_size=args.dim, window=args.window, min_count=args.min_count,
                     sample=args.sample, sg=1, hs=int(params["hs"]),
                     negative=params["negative"], workers=args.workers, seed=seed,
                     epochs=args.epochs)
    model.build_vocab(sentences)
    start = time.perf_counter()
    effective, raw = model.train(sentences, total_examples=model.corpus_count,
                                 epochs=args.epochs)
    seconds = time.perf_counter() - start
    return list(model.wv.index_to_key), model.wv.vectors, seconds, raw, effective


def evaluate(words, vectors, args):
    ev = _embedding_eval.EmbeddingEvaluator(words, vectors)
    ws = ev.word_pairs(os.path.join(args.data_dir, "eval", "wordsim353.tsv"))
    an = ev.analogies(os.path.join(args.data_dir, "eval", "questions-words.txt"))
    return {"wordsim": ws["spearman"], "wordsim_pairs": ws["pairs"],
            "analogy": an["accuracy"], "analogy_covered": an["covered"],
            "analogy_coverage": an["coverage"]}


def machine():
    m = _machine.machine()
    return (f"{m['cpu']}, {m['logical_cores']} logical cores, Python {m['python']}, "
            f"TF {m['tensorflow']}")


def mean_sd(values, digits=3):
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger("gensim").setLevel(logging.WARNING)
    corpus = os.path.join(args.data_dir, "wikitext-2", "wiki.train.tokens")
    if not os.path.exists(corpus):
        sys.exit(f"{corpus} not found: pass --data-dir (see ../shared/README.md)")
    impls = args.impls.split(",")
    if "tf_sampling" in impls and not tfs.ops.custom_ops_available():
        sys.exit("the fused skip-gram op is not built: pip install -e . (needs g++)")
    sentences = read_sentences(corpus, args.max_lines)
    print(f"# word2vec vs gensim on {corpus} ({len(sentences)} lines)")
    print(f"# machine: {machine()}")
    script = os.path.relpath(__file__, _common.ROOT)
    print(f"# command: python {' '.join([script] + sys.argv[1:])}")
    print(f"# dim {args.dim}, window {args.window}, min_count {args.min_count}, sample "
          f"{args.sample}, epochs {args.epochs}, workers {args.workers}, skip-gram")
    trainers = {"tf_sampling": train_ours, "gensim": train_gensim}
    runs = []
    for config in args.configs.split(","):
        for rep in range(args.repeats):
            for impl in impls:  # alternate, so that machine noise hits both
                words, vectors, seconds, raw, effective = trainers[impl](
                    sentences, config, args, seed=rep + 1)
                row = {"config": config, "impl": impl, "seed": rep + 1, "seconds": seconds,
                       "raw_words_per_s": raw / seconds,
                       "effective_words_per_s": effective / seconds,
                       **evaluate(words, vectors, args)}
                runs.append(row)
                print(f"  {config:8s} {impl:11s} seed {rep + 1}: {seconds:6.1f} s, "
                      f"{row['effective_words_per_s'] / 1e3:6.0f}K eff. words/s, "
                      f"WS {row['wordsim']:.3f}, analogy {100 * row['analogy']:.1f}%",
                      flush=True)

    print()
    print("| config | implementation | train s | raw words/s | effective words/s | "
          "words/s vs gensim | WordSim-353 | analogy (coverage) |")
    print("|---|---|---|---|---|---|---|---|")
    summary = []
    for config in args.configs.split(","):
        ref = [r for r in runs if r["config"] == config and r["impl"] == "gensim"]
        ref_speed = statistics.mean(r["effective_words_per_s"] for r in ref) if ref else None
        for impl in impls:
            rs = [r for r in runs if r["config"] == config and r["impl"] == impl]
            speed = statistics.mean(r["effective_words_per_s"] for r in rs)
            raw_speed = statistics.mean(r["raw_words_per_s"] for r in rs)
            ratio = speed / ref_speed if ref_speed else float("nan")
            item = {"config": config, "impl": impl, "runs": len(rs),
                    "seconds": statistics.mean(r["seconds"] for r in rs),
                    "effective_words_per_s": speed, "raw_words_per_s": raw_speed,
                    "speed_vs_gensim": ratio,
                    "wordsim": statistics.mean(r["wordsim"] for r in rs),
                    "analogy": statistics.mean(r["analogy"] for r in rs)}
            summary.append(item)
            print(f"| {config} | {impl} | {item['seconds']:.1f} | {raw_speed / 1e3:.0f}K | "
                  f"{speed / 1e3:.0f}K | {ratio:.2f}x | {mean_sd([r['wordsim'] for r in rs])} | "
                  f"{mean_sd([100 * r['analogy'] for r in rs], 1)}% "
                  f"({100 * rs[0]['analogy_coverage']:.0f}%) |")
    if set(impls) >= {"tf_sampling", "gensim"}:
        print()
        for config in args.configs.split(","):
            ours = next(s for s in summary if s["config"] == config and s["impl"] == "tf_sampling")
            ref = next(s for s in summary if s["config"] == config and s["impl"] == "gensim")
            checks = [
                ("WordSim >= gensim - 0.03", ours["wordsim"] >= ref["wordsim"] - 0.03),
                ("analogy >= gensim - 1.5 pt", ours["analogy"] >= ref["analogy"] - 0.015),
                ("words/s >= gensim", ours["effective_words_per_s"] >= ref["effective_words_per_s"]),
            ]
            print(f"goals ({config}): " + "; ".join(
                f"{name}: {'met' if ok else 'MISSED'}" for name, ok in checks))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"machine": machine(), "args": vars(args), "runs": runs,
                       "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()

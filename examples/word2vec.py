"""word2vec (skip-gram or CBOW) with negative sampling, hierarchical or sampled softmax.

Trains word vectors on any whitespace-tokenized text file, one sentence per line, with
word2vec's preprocessing: words seen fewer than --min-count times are dropped, frequent
words are subsampled (--sample), and each center word uses a window drawn uniformly from
[1, --window]. Training is `model.fit` on a `tf.data` pipeline (see _word2vec_data.py)
with plain SGD whose learning rate decays linearly to 1e-4 of its start, as word2vec's.

    python examples/word2vec.py --corpus ../shared/data/wikitext-2/wiki.train.tokens \\
        --model skipgram --head negative --dim 100 --window 5 --negative 5 \\
        --min-count 5 --epochs 5 --output vectors.txt \\
        --wordsim ../shared/data/eval/wordsim353.tsv \\
        --analogies ../shared/data/eval/questions-words.txt

Without --corpus it trains on a synthetic Zipfian corpus with planted "twin" words (see
_zipf_source.py) and scores the vectors on finding the twins. The last line printed is
`RESULT {json}` with words/s, the WordSim Spearman and the analogy accuracy.

Learning rates: the heads add the *mean* loss of a batch, so a per-pair step of word2vec's
alpha is `alpha * batch_size` here; --lr is word2vec's alpha (default 0.025 for skip-gram,
0.05 for CBOW) and is multiplied by the batch size.

Negatives: by default every pair gets its own --negative draws from counts^0.75, as in
word2vec (--negatives example). With --negatives batch the batch shares one set, as TF's
samplers do; then a sampled word's output vector receives the summed gradient of the whole
batch in one step, and word2vec's alpha diverges above batches of about 1000 (measured on
WikiText-2: batch 1024 is stable, 4096 is not).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import tf_sampling  # noqa: F401,E402
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import _corpus  # noqa: E402
import _embedding_eval  # noqa: E402
import _heads  # noqa: E402
import _word2vec_data  # noqa: E402
import _zipf_source  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", help="whitespace-tokenized text, one sentence per line "
                   "(default: a synthetic Zipfian corpus)")
    p.add_argument("--trainer", choices=("keras", "fused"), default="keras",
                   help="keras: model.fit with a tf_sampling head; fused: tfs.Word2Vec, "
                        "word2vec's loop in one custom op (skip-gram, negative or "
                        "hierarchical head only; --workers threads)")
    p.add_argument("--workers", type=int, default=2, help="threads of the fused trainer")
    p.add_argument("--model", choices=("skipgram", "cbow"), default="skipgram")
    p.add_argument("--head", choices=("negative", "hierarchical", "sampled"),
                   default="negative")
    p.add_argument("--dim", type=int, default=100)
    p.add_argument("--window", type=int, default=5)
    p.add_argument("--negative", type=int, default=5,
                   help="negative samples (negative head) or samples (sampled head) per pair")
    p.add_argument("--negatives", choices=("example", "batch"), default="example",
                   help="negative head: fresh negatives for every pair, as word2vec draws "
                        "them, or one set shared by the batch (cheaper, noisier)")
    p.add_argument("--min-count", type=int, default=5)
    p.add_argument("--sample", type=float, default=1e-3,
                   help="subsampling threshold of frequent words (0 turns it off)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=None,
                   help="examples per step (default 1024)")
    p.add_argument("--lr", type=float, default=None,
                   help="word2vec's per-example alpha (default 0.025 skip-gram, 0.05 CBOW); "
                        "the SGD learning rate is alpha * batch size")
    p.add_argument("--output", default="vectors.txt",
                   help="word2vec text format output ('' to skip)")
    p.add_argument("--wordsim", help="word-pair similarity file (e.g. wordsim353.tsv)")
    p.add_argument("--analogies", help="questions-words.txt style analogy file")
    p.add_argument("--neighbours", help="comma-separated words to show neighbours of")
    p.add_argument("--lowercase", action="store_true")
    p.add_argument("--threads", type=int, default=0,
                   help="TF intra- and inter-op threads (0: TF's default)")
    p.add_argument("--steps-per-execution", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--synthetic-tokens", type=int, default=300_000,
                   help="corpus size when no --corpus is given")
    p.add_argument("--verbose", type=int, default=1, help="Keras fit verbosity")
    args = p.parse_args(argv)
    if args.batch_size is None:
        args.batch_size = 1024
    if args.lr is None:
        args.lr = 0.025 if args.model == "skipgram" else 0.05
    if args.trainer == "fused" and (args.model != "skipgram" or args.head == "sampled"):
        p.error("--trainer fused trains skip-gram with the negative or hierarchical head")
    return args


def train_fused(args, vocab, sentences):
    """word2vec's own loop in the fused op: (vectors, seconds, effective words, raw words)."""
    import tf_sampling as tfs

    hs = args.head == "hierarchical"
    model = tfs.Word2Vec(vocab.words, vocab.counts, dim=args.dim, window=args.window,
                         negative=0 if hs else args.negative, hs=hs, sample=args.sample,
                         alpha=args.lr, workers=args.workers, seed=args.seed)
    encoded = model.encode(sentences)
    t0 = time.perf_counter()
    history = model.train(encoded=encoded, epochs=args.epochs, verbose=args.verbose)
    seconds = time.perf_counter() - t0
    return (model.vectors, seconds, sum(h["words"] for h in history),
            sum(h["raw_words"] for h in history), history[-1]["loss"])


def build_model(args, vocab_size, counts):
    """The training model: inputs {center, context} -> head([hidden, target])."""
    dim = args.dim
    vectors = keras.layers.Embedding(
        vocab_size, dim, name="vectors",
        embeddings_initializer=keras.initializers.RandomUniform(-0.5 / dim, 0.5 / dim,
                                                                seed=args.seed))
    # word2vec starts the output weights at zero.
    if args.head == "negative":
        head = _heads.make_head("negative", vocab_size, counts=counts,
                                num_sampled=args.negative, unique=False, use_bias=False,
                                kernel_initializer="zeros", seed=args.seed,
                                samples_per=args.negatives)
    elif args.head == "sampled":
        head = _heads.make_head("sampled", vocab_size, num_sampled=args.negative,
                                sampler=_heads.unigram_sampler(counts, 0.75, seed=args.seed),
                                kernel_initializer="zeros", seed=args.seed)
    else:
        # word2vec's tree: Huffman over the counts, node vectors from zero, no biases.
        head = _heads.make_head("hierarchical", vocab_size, counts=counts, use_bias=False)
    if args.model == "skipgram":
        center = keras.Input((), dtype="int32", name="center")
        context = keras.Input((), dtype="int32", name="context")
        out = head([vectors(center), context])
        inputs = {"center": center, "context": context}
    else:
        context = keras.Input((2 * args.window,), dtype="int32", name="context")
        center = keras.Input((), dtype="int32", name="center")
        # Empty slots are -1: look up id 0 and give it weight 0 (cbow_mean, as word2vec).
        mask = keras.ops.cast(keras.ops.greater_equal(context, 0), "float32")
        emb = vectors(keras.ops.maximum(context, 0))
        mean = keras.ops.sum(emb * mask[..., None], axis=1) / keras.ops.maximum(
            keras.ops.sum(mask, axis=1, keepdims=True), 1.0)
        out = head([mean, center])
        inputs = {"context": context, "center": center}
    return keras.Model(inputs, out, name=f"word2vec_{args.model}_{args.head}"), vectors


def load_corpus(args):
    """(sentences, list of twin words or None).

    Without --corpus: a synthetic Zipfian corpus in which 40 fairly frequent words have
    planted "twins" (see _zipf_source.plant_twins) that word vectors should find.
    """
    if args.corpus:
        return list(_corpus.read_lines(args.corpus, lowercase=args.lowercase)), None
    src = _zipf_source.ZipfianBigramSource(vocab_size=2000, exponent=1.1, coupling=6.0,
                                           seed=args.seed)
    ids = src.sample(args.synthetic_tokens, seed=args.seed + 1)
    twins = [f"w{i}" for i in range(10, 50)]
    tokens = _zipf_source.plant_twins(np.array(src.words, dtype=object)[ids], twins,
                                      seed=args.seed)
    sentences = [list(tokens[s:s + 1000]) for s in range(0, len(tokens), 1000)]
    return sentences, twins


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(args.seed)
    t_start = time.perf_counter()

    sentences, twins = load_corpus(args)
    vocab = _corpus.Vocab.from_tokens(sentences, min_count=args.min_count)
    if args.trainer == "fused":
        emb, train_time, effective, raw, final_loss = train_fused(args, vocab, sentences)
        words_per_sec, raw_per_sec = effective / train_time, raw / train_time
        print(f"trained {args.epochs} epochs in {train_time:.1f}s: {words_per_sec:,.0f} "
              f"words/s (after subsampling), {raw_per_sec:,.0f} raw words/s", flush=True)
        return report(args, vocab, emb, twins, {
            "trainer": "fused", "words_per_sec": round(words_per_sec),
            "raw_words_per_sec": round(raw_per_sec), "train_seconds": round(train_time, 2),
            "final_loss": final_loss})
    ids, sentence_ids, raw_words = _corpus.encode_sentences(sentences, vocab)
    del sentences
    keep = _word2vec_data.keep_probabilities(vocab.counts, args.sample)
    pipe = _word2vec_data.Word2VecPipeline(
        ids, sentence_ids, keep, window=args.window, model=args.model,
        batch_size=args.batch_size, epochs=args.epochs, seed=args.seed)
    total_steps, total_examples, effective_words = pipe.count_examples()
    t_prep = time.perf_counter() - t_start
    print(f"corpus: {raw_words:,} words, vocabulary {len(vocab):,} (min_count "
          f"{args.min_count}), {len(ids):,} in-vocabulary words; per epoch after "
          f"subsampling ~{effective_words // args.epochs:,} words, "
          f"~{total_examples // args.epochs:,} {args.model} examples; "
          f"preprocessing {t_prep:.1f}s", flush=True)

    model, vectors = build_model(args, len(vocab), vocab.counts)
    # Keras runs whole executions of steps_per_execution steps, so an epoch is a multiple
    # of it; the few leftover batches of the run (< epochs * steps_per_execution) are
    # not trained on.
    per_exec = max(1, min(args.steps_per_execution, total_steps // args.epochs))
    steps_per_epoch = max(1, total_steps // args.epochs // per_exec) * per_exec
    lr0 = args.lr * args.batch_size
    schedule = keras.optimizers.schedules.PolynomialDecay(
        lr0, decay_steps=steps_per_epoch * args.epochs, end_learning_rate=lr0 * 1e-4)
    model.compile(optimizer=keras.optimizers.SGD(schedule), steps_per_execution=per_exec)

    t0 = time.perf_counter()
    # One dataset for all epochs (each with its own subsampling); Keras keeps reading it
    # across epochs because steps_per_epoch is given. The < epochs leftover batches of the
    # rounding are not trained on.
    history = model.fit(pipe.dataset(), epochs=args.epochs, steps_per_epoch=steps_per_epoch,
                        verbose=args.verbose, shuffle=False)
    train_time = time.perf_counter() - t0
    trained_fraction = steps_per_epoch * args.epochs / total_steps
    words_per_sec = effective_words * trained_fraction / train_time
    raw_per_sec = raw_words * args.epochs * trained_fraction / train_time
    print(f"trained {args.epochs} epochs in {train_time:.1f}s: {words_per_sec:,.0f} words/s "
          f"(after subsampling, as gensim counts effective words), {raw_per_sec:,.0f} raw "
          f"words/s, {total_examples * trained_fraction / train_time:,.0f} examples/s",
          flush=True)

    return report(args, vocab, vectors.embeddings.numpy(), twins, {
        "trainer": "keras", "words_per_sec": round(words_per_sec),
        "raw_words_per_sec": round(raw_per_sec), "train_seconds": round(train_time, 2),
        "final_loss": float(history.history["loss"][-1])})


def report(args, vocab, emb, twins, timing):
    """Prints neighbours and the scores, writes the vectors, returns the RESULT dict."""
    if not np.all(np.isfinite(emb)):
        raise FloatingPointError("training diverged: the vectors have NaN/inf values; "
                                 "try a smaller --lr or --batch-size")
    ev = _embedding_eval.EmbeddingEvaluator(vocab.words, emb)
    probes = (args.neighbours.split(",") if args.neighbours
              else _embedding_eval.frequent_probe_words(vocab.words))
    for w in probes:
        if ev.lookup(w) is None:
            print(f"  {w}: not in the vocabulary")
            continue
        near = ", ".join(f"{n} {s:.2f}" for n, s in ev.neighbours(w, 8))
        print(f"  {w}: {near}")

    result = {"model": args.model, "head": args.head, "dim": args.dim,
              "negatives": args.negatives if args.head == "negative" else None,
              "window": args.window, "negative": args.negative, "epochs": args.epochs,
              "batch_size": args.batch_size, "vocab_size": len(vocab), **timing}
    wordsim, synthetic_pairs = args.wordsim, None
    if wordsim is None and twins is not None:
        # The synthetic corpus knows which words are alike: its planted twins.
        synthetic_pairs = tempfile.NamedTemporaryFile("w", suffix=".tsv", delete=False).name
        _zipf_source.write_twin_pairs(synthetic_pairs, twins, seed=args.seed)
        wordsim = synthetic_pairs
    if wordsim:
        ws = ev.word_pairs(wordsim)
        result.update({"wordsim_spearman": ws["spearman"], "wordsim_pairs": ws["pairs"],
                       "wordsim_oov_pairs": ws["oov_pairs"]})
        if synthetic_pairs:
            result["wordsim_file"] = "synthetic planted twins"
            os.unlink(synthetic_pairs)
        print(f"word pairs: Spearman {ws['spearman']:.4f} on {ws['pairs']} pairs "
              f"({ws['oov_pairs']} with unknown words skipped)")
    if args.analogies:
        an = ev.analogies(args.analogies)
        result.update({"analogy_accuracy": an["accuracy"], "analogy_coverage": an["coverage"],
                       "analogy_covered": an["covered"], "analogy_total": an["total"]})
        print(f"analogies: accuracy {an['accuracy']:.4f} on {an['covered']} of "
              f"{an['total']} questions (coverage {an['coverage']:.3f})")
    if args.output:
        _embedding_eval.save_word2vec_format(args.output, vocab.words, emb)
        print(f"saved {len(vocab)} vectors to {args.output}")
    print("RESULT " + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

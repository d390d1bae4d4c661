"""Are the importance weights of unique log-uniform sampling unbiased at 1,024 and 4,096
samples over WikiText-2's vocabulary? A check made for the README's 4,096 anomaly.

The sampled softmax estimates the normaliser sum_j exp(o_j) by sum over the sampled set S of
exp(o_j) / E_j, where E_j is the reported `sampled_expected_count`: for unique sampling,
TF's `1 - (1 - q_j)^tries`, with `tries` the draws it took to collect `num_sampled`
distinct classes. That is a Horvitz-Thompson estimate, unbiased exactly when
E[1{j in S} / E_j] = 1 for every class j. `tries` is random and depends on which classes
came up, so the formula could be off where most of the head is drawn every time (4,096 of
33,278 classes). This draws `--draws` sample sets from the library's `log_uniform` sampler
(the heads' default) and prints, per band of class rank, the mean of 1{j in S} / E_j
(1 = unbiased; a class's Monte-Carlo error is about sqrt((1/P(j in S) - 1) / draws)) and
how often the band's classes are drawn.

    python benchmarks/expected_count_weights.py            # 2,000 draws each, about 1 min
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tf_sampling as tfs  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=33278, help="classes (WikiText-2's 33,278)")
    p.add_argument("--num-sampled", default="1024,4096")
    p.add_argument("--draws", type=int, default=2000, help="sample sets per size")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    V = args.vocab
    edges = [e for e in (0, 10, 100, 1000, 3000, 10000) if e < V] + [V]
    labels = tf.zeros([1, 1], tf.int64)
    for k in (int(t) for t in args.num_sampled.split(",")):
        sampler = tfs.samplers.get("log_uniform", num_classes=V, seed=args.seed)
        draw = tf.function(lambda: sampler.sample(labels, k, unique=True))
        weight, hits = np.zeros(V), np.zeros(V)
        for _ in range(args.draws):
            ids, _, expected = (t.numpy() for t in draw())
            weight[ids] += 1.0 / expected
            hits[ids] += 1
        weight /= args.draws
        print(f"num_sampled {k}: mean of 1{{j in S}} / E_j per rank band (1 = unbiased), "
              f"{args.draws} draws")
        print(f"  {'ranks':<14}{'mean':>8}{'min':>8}{'max':>8}{'drawn':>8}")
        for a, b in zip(edges[:-1], edges[1:]):
            w = weight[a:b]
            print(f"  {f'{a}-{b}':<14}{w.mean():>8.4f}{w.min():>8.3f}{w.max():>8.3f}"
                  f"{hits[a:b].mean() / args.draws:>8.3f}")


if __name__ == "__main__":
    main()

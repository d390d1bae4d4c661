"""The fused skip-gram training op (custom_ops/cc/kernels/word2vec_train.h).

`skipgram_train` runs word2vec's whole inner loop (subsampling, reduced windows, negative
sampling or hierarchical softmax, Hogwild SGD on several threads) over a corpus in one op
call, updating two float32 variables in place. Most users want `tf_sampling.Word2Vec`,
which builds the inputs; this is the raw op.
"""

import numbers

import numpy as np
import tensorflow as tf

from tf_sampling.ops import _loader


def _module():
    module = _loader.LIBRARY.get()
    if module is None:
        raise RuntimeError(
            "The fused skip-gram op needs the compiled custom ops, which are unavailable: "
            f"{_loader.LIBRARY.reason}. Without them, train word vectors with Keras "
            "(`tfs.layers.NegativeSampling` or `tfs.layers.HierarchicalSoftmax` heads; see "
            "examples/word2vec.py).")
    return module


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def skipgram_train(w_in, w_out, corpus, sentence_splits, keep_prob, alpha, seed, window,
                   negative=5, noise_weights=None, hs_paths=None, num_threads=1):
    """Trains skip-gram vectors in place over `corpus`, as word2vec.c does.

    Args:
        w_in: float32 `tf.Variable` `[V, dim]`, the input (word) vectors.
        w_out: float32 `tf.Variable`: `[V, dim]` output vectors for negative sampling, or
            `[V - 1, dim]` inner-node vectors for hierarchical softmax.
        corpus: int32 word ids in `[0, V)`, sentences concatenated.
        sentence_splits: int64 `[S + 1]`; sentence s is `corpus[splits[s]:splits[s+1]]`.
        keep_prob: float32 `[V]`, word2vec's subsampling keep probability per word.
        alpha: `(start, end)` learning rates; alpha decays linearly over the call.
        seed: `[2]` integers.
        window: maximum window; each center word draws its window in `[1, window]`.
        negative: noise words per pair (> 0), or 0 for hierarchical softmax.
        noise_weights: float32 `[V]` noise weights (e.g. counts ** 0.75), for negative > 0.
        hs_paths: `(nodes, codes, row_splits)` of the tree (`Tree.flat_paths()`), for
            negative == 0.
        num_threads: Hogwild threads (results depend on thread timing when > 1).

    Returns:
        `(words, pairs, loss_sum)`: words kept after subsampling, pairs trained, and the
        summed loss of those pairs.

    Example:
    >>> words, pairs, loss = tfs.ops.skipgram_train(
    ...     w_in, w_out, ids, splits, keep, alpha=(0.025, 0.0125), seed=[1, 0], window=5,
    ...     negative=5, noise_weights=counts ** 0.75)
    """
    window = _check_int(window, "window", 1)
    negative = _check_int(negative, "negative", 0)
    num_threads = _check_int(num_threads, "num_threads", 1)
    empty_f = tf.zeros([0], tf.float32)
    empty_i = tf.zeros([0], tf.int32)
    if negative > 0:
        if noise_weights is None:
            raise ValueError("`noise_weights` is required when negative > 0.")
        noise = tf.convert_to_tensor(noise_weights, tf.float32)
        nodes, codes, splits = empty_i, empty_i, tf.zeros([0], tf.int64)
    else:
        if hs_paths is None:
            raise ValueError("`hs_paths` (nodes, codes, row_splits) is required when "
                             "negative == 0 (hierarchical softmax).")
        noise = empty_f
        nodes, codes, splits = hs_paths
        nodes = tf.convert_to_tensor(nodes, tf.int32)
        codes = tf.convert_to_tensor(codes, tf.int32)
        splits = tf.convert_to_tensor(splits, tf.int64)
    alpha = np.asarray(alpha, np.float32)
    if alpha.shape != (2,):
        raise ValueError(f"`alpha` must be (start, end), got {alpha!r}.")
    seed = tf.convert_to_tensor(seed, tf.int64)
    return _module().tf_sampling_skip_gram_train(
        w_in=w_in.handle, w_out=w_out.handle,
        corpus=tf.convert_to_tensor(corpus, tf.int32),
        sentence_splits=tf.convert_to_tensor(sentence_splits, tf.int64),
        keep_prob=tf.convert_to_tensor(keep_prob, tf.float32),
        noise_weights=noise, hs_nodes=nodes, hs_codes=codes, hs_splits=splits,
        alpha=tf.constant(alpha), seed=seed,
        window=window, negative=negative, num_threads=num_threads)

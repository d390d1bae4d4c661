"""The index of the bad inputs tf_sampling defends against: one test each.

The README's "Errors" section links here. Each test feeds one kind of bad input and checks
the error's type and that its message names the argument (or the file and line). Where a
check runs on values (not on static shapes or dtypes) it is tested in eager mode, inside a
`tf.function` and in `model.fit`, since a check that only works eagerly protects nothing
in training. Other test files test many of these cases at length; a case here is a short,
cheap representative of each.

Error types, library-wide:
- `TypeError`: a wrong dtype (float labels, integer inputs, ...), raised when the call
  is made or traced.
- `ValueError`: a bad constructor argument, a wrong rank or static shape, a bad vocabulary
  file or tree.
- `tf.errors.InvalidArgumentError`: bad values seen only at run time (ids out of range,
  int64 ids >= 2^31, a candidate repeated within a row, an empty candidate row), raised by
  `tf.debugging` assertions, so also inside `tf.function` and `model.fit`.

Not defended, by design (see the README):
- NaN or inf in a head's inputs poisons its weights, as with any Keras layer; pass
  `keras.callbacks.TerminateOnNaN()` to `fit` to stop at the first NaN loss.
- A Keras functional model casts each input to its `keras.Input` dtype before any layer
  sees it, so an `int32` label Input wraps int64 ids >= 2^31 silently (2**32 + 3 becomes
  3). Declare label Inputs `int64` when ids may be that large: the heads then raise
  (`test_int32_keras_input_narrows_before_any_layer` shows the cast).

Sections:
1. Heads: labels out of range, int64 labels >= 2^31.
2. Heads: dtypes, ranks and shapes.
3. Heads: constructor arguments.
4. CandidateSoftmax: candidate sets.
5. HierarchicalSoftmax: trees.
6. Vocabulary files.
7. Samplers: counts and weights.
8. Word2Vec.
9. Samplers: int64 ids, the unique-draw bound, atomic updates (eagerly, in a
   `tf.function` and in `model.fit` where a head feeds them: every one is a clear error,
   never a wrapped id, an aborted process or a half-applied update).
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs
from tf_sampling import trees
from tf_sampling.ops import _loader
from tf_sampling.samplers import (DynamicAliasSampler, FixedUnigramSampler,
                                  LearnedUnigramSampler, LogUniformSampler, UniformSampler)

V, D, B = 12, 4, 6

HEADS = {
    "SampledSoftmax": lambda: tfs.layers.SampledSoftmax(V, 4, seed=1),
    "NCE": lambda: tfs.layers.NCE(V, 4, seed=1),
    "NegativeSampling": lambda: tfs.layers.NegativeSampling(V, 4, seed=1),
    "HierarchicalSoftmax": lambda: tfs.layers.HierarchicalSoftmax(V, tree="balanced"),
    "AdaptiveSoftmax": lambda: tfs.layers.AdaptiveSoftmax(V, [4, 8], div_value=2.0),
}

# Each is out of [0, V). The int64 ones would land inside it after a cast to int32:
# 2**32 + 3 -> 3, -2**32 + 5 -> 5; 2**31 -> -2**31.
BAD_LABELS = {
    "V": (V, np.int32),
    "-1": (-1, np.int32),
    "2**31": (2**31, np.int64),
    "2**32+3": (2**32 + 3, np.int64),
    "-2**32+5": (-2**32 + 5, np.int64),
}


def _x(batch=B):
    return np.random.default_rng(0).normal(size=(batch, D)).astype(np.float32)


def _labels(value, dtype, batch=B):
    y = np.arange(batch, dtype=np.int64) % V
    y[batch // 2] = value  # one bad label among good ones
    return y.astype(dtype)


def _model(make_head, label_dtype="int64"):
    x_in = keras.Input((D,))
    y_in = keras.Input((), dtype=label_dtype)
    model = keras.Model([x_in, y_in], make_head()([x_in, y_in]))
    model.compile(optimizer="sgd")
    return model


# ------------------------------------------------------------ 1. labels out of range
@pytest.mark.parametrize("bad", sorted(BAD_LABELS))
@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_labels_out_of_range_eager(name, bad):
    head = HEADS[name]()
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        head([_x(), _labels(*BAD_LABELS[bad])], training=True)


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_int64_labels_beyond_int32_in_tf_function(name):
    head = HEADS[name]()
    head([_x(), _labels(0, np.int64)], training=True)  # builds the weights
    step = tf.function(lambda x, y: head([x, y], training=True))
    for value in (2**32 + 3, -2**32 + 5):
        with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
            step(_x(), _labels(value, np.int64))


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_labels_out_of_range_in_fit(name):
    model = _model(HEADS[name])
    before = [w.numpy().copy() for w in model.trainable_weights]
    for value in (V, -1, 2**32 + 3):
        with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
            model.fit([_x(), _labels(value, np.int64)], epochs=1, batch_size=B, verbose=0)
    # The failing steps changed no weight.
    for w, b in zip(model.trainable_weights, before):
        np.testing.assert_array_equal(w.numpy(), b)


def test_int32_keras_input_narrows_before_any_layer():
    # Keras' functional model converts each input to its Input's dtype
    # (keras/src/models/functional.py, `ops.convert_to_tensor(x, dtype=input.dtype)`): with
    # an int32 Input the layer receives 3 for 2**32 + 3 and cannot know. This is why the
    # README says to declare label Inputs int64.
    y_in = keras.Input((), dtype="int32")
    echo = keras.Model(y_in, keras.layers.Identity()(y_in))
    assert echo(np.array([2**32 + 3], np.int64)).numpy().tolist() == [3]


# ------------------------------------------------------------ 2. dtypes, ranks and shapes
@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_wrong_dtypes_shapes_and_ranks(name):
    head = HEADS[name]()
    x, y = _x(), _labels(0, np.int32)
    head([x, y], training=True)
    with pytest.raises(TypeError, match="`labels` must be"):
        head([x, y.astype(np.float32)], training=True)
    with pytest.raises(TypeError, match="`inputs` must be"):
        head([np.ones((B, D), np.int32), y], training=True)
    with pytest.raises(ValueError, match="labels"):  # batch sizes differ
        head([x, y[:3]], training=True)
    with pytest.raises(ValueError, match="labels"):  # [batch, 2] labels for one true class
        head([x, np.zeros((B, 2), np.int32)], training=True)
    with pytest.raises(ValueError, match="inputs|dim"):  # another feature size than built
        head([np.ones((B, D + 1), np.float32), y], training=True)


# ------------------------------------------------------------ 3. constructor arguments
@pytest.mark.parametrize("make, match", [
    (lambda: tfs.layers.SampledSoftmax(0, 4), "`num_classes`"),
    (lambda: tfs.layers.SampledSoftmax(V, 0), "`num_sampled`"),
    (lambda: tfs.layers.SampledSoftmax(V, V + 1), "`num_sampled`"),
    (lambda: tfs.layers.NCE(V, 4, num_true=0), "`num_true`"),
    (lambda: tfs.layers.NegativeSampling(V, 4, top_k=V + 1), "`top_k`"),
    (lambda: tfs.layers.SampledSoftmax(V, 4, sampler="nope"), "`sampler`"),
    (lambda: tfs.layers.SampledSoftmax(V, 4, sampler=tfs.samplers.UniformSampler(V + 1)),
     "`sampler`"),
    (lambda: tfs.layers.SampledSoftmax(V, 4, seed="x"), "`seed`"),
    (lambda: tfs.layers.HierarchicalSoftmax(1, tree="balanced"), "`num_classes`"),
    (lambda: tfs.layers.HierarchicalSoftmax(V, tree="balanced", top_k=V + 1), "`top_k`"),
    (lambda: tfs.layers.HierarchicalSoftmax(V, tree="nope"), "`tree`"),
    (lambda: tfs.layers.AdaptiveSoftmax(V, [8, 4]), "`cutoffs`"),
    (lambda: tfs.layers.AdaptiveSoftmax(V, [4], div_value=0.0), "`div_value`"),
    (lambda: tfs.layers.CandidateSoftmax(0), "`num_classes`"),
    (lambda: tfs.layers.CandidateSoftmax(V, positive="x"), "`positive`"),
    (lambda: tfs.layers.CandidateSoftmax(V, padding_id=1.5), "`padding_id`"),
    (lambda: tfs.layers.CandidateSoftmax(V, allow_duplicates="yes"), "`allow_duplicates`"),
])
def test_head_bad_constructor_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ------------------------------------------------------------ 4. CandidateSoftmax
def _candidate_head(**kwargs):
    head = tfs.layers.CandidateSoftmax(V, **kwargs)
    head.build((None, D))
    return head


def _ragged(rows):
    return tf.ragged.constant(rows, dtype=tf.int64)


def test_candidate_repeated_within_a_row_ragged():
    head = _candidate_head()
    x = _x(2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="repeated within a row"):
        head([x, _ragged([[1, 2, 3], [4, 5, 4]]), np.array([0, 1])], training=True)
    # The same class in two rows is fine, and so is a repeat that is meant.
    head([x, _ragged([[1, 2, 3], [4, 5, 1]]), np.array([0, 1])], training=True)
    _candidate_head(allow_duplicates=True)(
        [x, _ragged([[1, 2, 3], [4, 5, 4]]), np.array([0, 1])], training=True)


def test_candidate_repeated_within_a_row_dense_but_not_padding():
    head = _candidate_head(padding_id=-1)
    x = _x(2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="repeated within a row"):
        head([x, np.array([[1, 2, 1, -1], [4, 5, -1, -1]]), np.array([0, 1])], training=True)
    # -1 padding repeats in every short row: it is not a candidate.
    loss = head([x, np.array([[1, 2, 3, -1], [4, 5, -1, -1]]), np.array([0, 1])],
                training=True)
    assert np.all(np.isfinite(loss.numpy()))


def test_candidate_repeated_within_a_row_in_functional_loss():
    w, x = tf.ones([V, D]), _x(2)
    with pytest.raises(tf.errors.InvalidArgumentError, match="repeated within a row"):
        tfs.losses.candidate_softmax_loss(w, None, x, _ragged([[1, 2], [7, 7]]),
                                          positive_index=[0, 0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="repeated within a row"):
        tfs.losses.candidate_log_softmax(w, None, x, np.array([[1, 2, 0], [7, 7, 0]]),
                                         candidate_mask=np.array([[True, True, False]] * 2))


def _candidate_fit_model():
    x = keras.Input((D,))
    c = keras.Input((None,), ragged=True, dtype="int64")
    p = keras.Input((), dtype="int64")
    model = keras.Model([x, c, p], tfs.layers.CandidateSoftmax(V)([x, c, p]))
    model.compile(optimizer="sgd")
    return model


def test_candidate_bad_sets_in_fit():
    model = _candidate_fit_model()
    before = [w.numpy().copy() for w in model.trainable_weights]
    for rows, positions, match in [
        ([[1, 2, 3], [4, 5, 4]], [0, 1], "repeated within a row"),
        ([[1, 2, 3], [4, V]], [0, 1], "`candidates` has class ids outside"),
        ([[1, 2, 3], [4, 2**32 + 3]], [0, 1], "`candidates` has class ids outside"),
        ([[1, 2, 3], []], [0, 0], "empty row"),
        ([[1, 2, 3], [4, 5]], [0, 2], "`positive_index` is outside its row"),
    ]:
        data = tf.data.Dataset.from_tensor_slices(
            ((_x(2), _ragged(rows), np.array(positions, np.int64)),)).batch(2)
        with pytest.raises(tf.errors.InvalidArgumentError, match=match):
            model.fit(data, epochs=1, verbose=0)
    for w, b in zip(model.trainable_weights, before):
        np.testing.assert_array_equal(w.numpy(), b)


def test_candidate_positive_id_not_among_candidates():
    head = _candidate_head(positive="id")
    with pytest.raises(tf.errors.InvalidArgumentError, match="positive_ids"):
        head([_x(2), _ragged([[1, 2, 3], [4, 5]]), np.array([2, 6])], training=True)


def test_candidate_full_softmax_labels_out_of_range():
    head = _candidate_head()
    for value in (V, 2**32 + 3):
        with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
            head.full_softmax_loss(_x(2), np.array([0, value], np.int64))


# ------------------------------------------------------------ 5. HierarchicalSoftmax trees
@pytest.mark.parametrize("kwargs, match", [
    ({"tree": "huffman"}, "needs `counts`"),
    ({"tree": "huffman", "counts": np.ones(V - 1)}, "`counts` must have shape"),
    ({"tree": "huffman", "counts": np.r_[np.ones(V - 1), -1.0]}, "negative"),
    ({"tree": "huffman", "counts": np.r_[np.ones(V - 1), np.nan]}, "NaN|finite"),
    ({"tree": "balanced", "counts": np.ones(V)}, "`counts` is only used"),
    ({"tree": trees.balanced_tree(V + 1)}, "covers 13 classes"),
    ({"tree": {"foo": 1}}, "Unrecognized tree config"),
    ({"tree": 3}, "`tree` must be"),
])
def test_hierarchical_softmax_bad_tree(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfs.layers.HierarchicalSoftmax(V, **kwargs)


@pytest.mark.parametrize("make, match", [
    # A node with one child (class 1's path ends at an inner node's only branch).
    (lambda: trees.tree_from_paths([[0, 1, 2], [0, 1, 2], [0]],
                                   [[0, 0, 0], [0, 0, 1], [1]]), "only one child"),
    # Two classes at the same leaf.
    (lambda: trees.tree_from_paths([[0], [0], [0]], [[0], [0], [1]]), "twice|same"),
    # A cycle detached from the root.
    (lambda: trees.Tree(np.array([[~0, ~1], [2, ~2], [1, ~3]])), "cycle"),
    (lambda: trees.tree_from_groups([[0, 3], [1, 2, 3]], num_classes=4), "repeats"),
    (lambda: trees.tree_from_groups([[0, 3], [1]], num_classes=4), "misses"),
])
def test_bad_custom_tree(make, match):
    with pytest.raises(ValueError, match=match):
        make()


# ------------------------------------------------------------ 6. vocabulary files
@pytest.mark.parametrize("content, match", [
    (b"", "is empty"),
    (b"the,5\nof,3\n\nand,3\n", "line 3: empty line"),
    (b"the,5\nof,x\n", "line 2: the last comma-separated field must be a count"),
    (b"the,5\nof,-3\n", "line 2: counts must be finite and nonnegative"),
    (b"the,5\nof,nan\n", "line 2: counts must be finite and nonnegative"),
    (b"the,5\nof,inf\n", "line 2: counts must be finite and nonnegative"),
    (b"the,5\nof,3\nthe,2\n", "line 3: the word 'the' is also on line 1"),
    (b"the,5\n2024\nof,3\n", "line 2: '2024' has no comma"),
    (b"5\nof,3\n", "line 2: 'of,3' has a comma"),
    (b"the,5\ncaf\xe9,3\n", "line 2: not valid UTF-8"),  # Latin-1 bytes
])
def test_bad_vocab_file(tmp_path, content, match):
    path = tmp_path / "vocab.csv"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="vocab.csv'.*" + match):
        tfs.samplers.FixedUnigramSampler(3, vocab_file=str(path))


def test_missing_vocab_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab_file.*missing.csv"):
        tfs.samplers.FixedUnigramSampler(3, vocab_file=str(tmp_path / "missing.csv"))


def test_good_vocab_files_still_read(tmp_path):
    # The accepted forms: word,count (commas inside the word are fine: the count is the
    # last field), bare counts, CRLF line ends, a UTF-8 byte-order mark, non-ASCII words.
    for content, counts in [
        (b'the,5\n"a,b",3\nof,2\n', [5, 3, 2]),
        (b"5\n3\n2\n", [5, 3, 2]),
        (b"\xef\xbb\xbfthe,5\r\ncaf\xc3\xa9,3\r\n", [5, 3]),
    ]:
        path = tmp_path / "v.csv"
        path.write_bytes(content)
        assert tfs.samplers.fixed_unigram.read_vocab_counts(str(path)) == counts


# ------------------------------------------------------------ 7. samplers
@pytest.mark.parametrize("counts, match", [
    ([1.0, -1.0, 2.0], "negative"),
    ([1.0, np.nan, 2.0], "NaN"),
    ([1.0, np.inf, 2.0], "infinite"),
    ([0.0, 0.0, 0.0], "all zero"),
    ([[1.0, 2.0, 3.0]], "1-D"),
])
def test_fixed_unigram_bad_counts(counts, match):
    with pytest.raises(ValueError, match="`counts`.*" + match):
        tfs.samplers.FixedUnigramSampler(3, counts=counts)


@pytest.mark.parametrize("weights", [[1.0, -1.0], [1.0, np.nan], [1.0, np.inf], [0.0, 0.0]])
@pytest.mark.parametrize("use_custom_op", [True, False])
def test_alias_build_bad_weights(weights, use_custom_op):
    if use_custom_op and not tfs.ops.custom_ops_available():
        pytest.skip("the compiled op is not loaded")
    with pytest.raises(tf.errors.InvalidArgumentError, match="weights"):
        tfs.ops.alias_build(np.array(weights, np.float32), use_custom_op=use_custom_op)


# ------------------------------------------------------------ 8. Word2Vec
@pytest.mark.parametrize("kwargs, match", [
    ({"counts": [3, 0]}, "`counts` must be positive"),
    ({"words": ["a", "a"]}, "duplicates"),
    ({"negative": 0}, "Choose one objective"),
    ({"hs": True}, "Choose one objective"),
    ({"dim": 0}, "`dim`"),
    ({"sample": -1.0}, "`sample`"),
])
def test_word2vec_bad_arguments(kwargs, match):
    args = dict({"words": ["a", "b"], "counts": [3, 2]}, **kwargs)
    with pytest.raises(ValueError, match=match):
        tfs.Word2Vec(args.pop("words"), args.pop("counts"), **args)


def test_word2vec_bad_train_arguments():
    model = tfs.Word2Vec(["a", "b"], [3, 2], dim=2)
    with pytest.raises(ValueError, match="no in-vocabulary words"):
        model.train([["c", "d"]], epochs=1, verbose=0)
    with pytest.raises(ValueError, match="`verbose`"):
        model.train([["a", "b"]], epochs=1, verbose=5)
    with pytest.raises(ValueError, match="`epochs`"):
        model.train([["a", "b"]], epochs=0, verbose=0)


# ------------------------------------------------------------ 9. samplers: ids, unique bound, atomic updates
# SV classes: 2^32 + 3 would be class 3 after an int32 cast.
SV = 50
NAMES = ["uniform", "log_uniform", "learned_unigram", "fixed_unigram", "dynamic_alias"]
# 2^32 + 3 would be class 3 after an int32 cast; 2^31 is negative in int32; SV is one past
# the last class; -1 is negative.
BAD_IDS = [2**32 + 3, 2**31, SV, -1]
# Per sampler and method, the two that matter most (the wrap and the plain overflow);
# the others once per method on one sampler.
PAIRS = ([(n, b) for n in NAMES for b in (2**32 + 3, SV)]
         + [("dynamic_alias", b) for b in (2**31, -1)])


def make(name, v=SV, seed=1):
    return {
        "uniform": lambda: UniformSampler(v, seed=seed),
        "log_uniform": lambda: LogUniformSampler(v, seed=seed),
        "learned_unigram": lambda: LearnedUnigramSampler(v, seed=seed),
        "fixed_unigram": lambda: FixedUnigramSampler(v, counts=np.arange(1, v + 1), seed=seed),
        "dynamic_alias": lambda: DynamicAliasSampler(v, seed=seed),
    }[name]()


def both_modes(fn):
    """fn() eagerly and inside a tf.function; each must raise InvalidArgumentError."""
    for run in (fn, tf.function(fn)):
        with pytest.raises(tf.errors.InvalidArgumentError, match="outside \\[0, num_classes"):
            run()


# ---------------------------------------------------------------- int64 ids


@pytest.mark.parametrize("name, bad", PAIRS)
def test_sample_rejects_out_of_range_true_classes(name, bad):
    s = make(name)
    ids = tf.constant([[1], [bad]], tf.int64)
    both_modes(lambda: s.sample(ids, 3).true_expected_count)


@pytest.mark.parametrize("name, bad", PAIRS)
def test_probability_rejects_out_of_range_ids(name, bad):
    s = make(name)
    both_modes(lambda: s.probability(tf.constant([bad], tf.int64)))


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("name", ["learned_unigram", "dynamic_alias"])
def test_update_rejects_out_of_range_ids_and_changes_nothing(name, bad):
    s = make(name)
    before = [w.numpy().copy() for w in s.weights]
    both_modes(lambda: s.update(tf.constant([[2], [bad]], tf.int64)))
    for a, w in zip(before, s.weights):
        np.testing.assert_array_equal(a, w.numpy(), err_msg=w.path)


@pytest.mark.parametrize("bad", BAD_IDS)
def test_add_weights_rejects_out_of_range_ids(bad):
    s = DynamicAliasSampler(SV)
    both_modes(lambda: s.add_weights(tf.constant([1, bad], tf.int64), [1.0, 1.0]))
    np.testing.assert_array_equal(s.class_weights.numpy(), np.ones(SV))


@pytest.mark.parametrize("bad", [2**32 + 3, SV])
@pytest.mark.parametrize("unique", [False, True])
def test_per_example_rejects_out_of_range_true_classes(bad, unique):
    s = make("log_uniform")
    ids = tf.constant([[1], [bad]], tf.int64)
    both_modes(lambda: tfs.losses.sample_per_example(s, ids, 4, unique=unique)
               .true_expected_count)


def _head_model(sampler):
    tokens = keras.Input((4,))
    labels = keras.Input((), dtype="int64")
    head = tfs.layers.SampledSoftmax(SV, num_sampled=5, sampler=sampler)
    model = keras.Model([tokens, labels], head([tokens, labels]))
    model.compile(optimizer="sgd")
    return model


@pytest.mark.parametrize("name", ["learned_unigram", "dynamic_alias"])
def test_fit_rejects_a_label_that_int32_would_wrap(name):
    """Label 2^32 + 3 in `fit` raises (it would train as class 3 after an int32 cast), and
    the sampler's learned state is untouched."""
    s = make(name)
    before = [w.numpy().copy() for w in s.weights if "seed" not in w.path]
    model = _head_model(s)
    x = np.ones((2, 4), np.float32)
    y = np.array([3, 2**32 + 3], np.int64)
    with pytest.raises(tf.errors.InvalidArgumentError):
        model.fit([x, y], epochs=1, batch_size=2, verbose=0)
    after = [w.numpy() for w in s.weights if "seed" not in w.path]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- unique-draw bound

SKEWED = np.ones(10_000)
SKEWED[0] = 1e12  # the case: 100 distinct ids need ~1e10 draws
BOUND_MSG = "limit of 2\\^32.*unique=False.*distortion below 1"


def skewed(name):
    if name == "fixed_unigram":
        return FixedUnigramSampler(10_000, counts=SKEWED, seed=1)
    if name == "learned_unigram":
        s = LearnedUnigramSampler(10_000, seed=1)
        s.counts.assign(SKEWED.astype(np.int64))
        return s
    return DynamicAliasSampler(10_000, initial_weights=SKEWED, seed=1)


@pytest.mark.parametrize("name", ["fixed_unigram", "learned_unigram"])
def test_too_skewed_unique_sample_is_an_error(name):
    s = skewed(name)
    for run in (lambda: s.sample([[0]], 100), tf.function(lambda: s.sample([[0]], 100))):
        with pytest.raises(tf.errors.InvalidArgumentError, match=BOUND_MSG):
            run()


def test_too_skewed_unique_sample_is_an_error_dynamic(impl):
    s = skewed("dynamic_alias")
    s.update([[3], [4]])  # a pending list: the mixture path
    assert s.pending_size.numpy() == 2
    for run in (lambda: s.sample([[0]], 100), tf.function(lambda: s.sample([[0]], 100))):
        with pytest.raises(tf.errors.InvalidArgumentError, match=BOUND_MSG):
            run()


def test_too_skewed_per_example_unique_sample_is_an_error():
    s = skewed("fixed_unigram")
    with pytest.raises(tf.errors.InvalidArgumentError, match=BOUND_MSG):
        tfs.losses.sample_per_example(s, np.zeros((3, 1), np.int64), 100, unique=True)


def test_too_skewed_unique_sample_is_an_error_in_fit():
    # Per-example sampling takes the same code path (tf_sampling/ops/_unique.py), tested
    # eagerly above; in `fit` it only adds time.
    tokens = keras.Input((4,))
    labels = keras.Input((), dtype="int64")
    head = tfs.layers.SampledSoftmax(10_000, num_sampled=100, sampler=skewed("fixed_unigram"),
                                     samples_per="batch")
    model = keras.Model([tokens, labels], head([tokens, labels]))
    model.compile(optimizer="sgd")
    with pytest.raises(tf.errors.InvalidArgumentError, match=BOUND_MSG):
        model.fit([np.ones((2, 4), np.float32), np.array([1, 2])], epochs=1, verbose=0)


def test_too_skewed_unique_sample_does_not_abort_under_a_memory_limit():
    """The issue's reproduction in a subprocess under an 8 GB address-space limit (the
    library aborted there with std::bad_alloc, rc 134): now an InvalidArgumentError with
    the pure-TF sampler, the op and the op's fallback, and a small peak memory."""
    script = textwrap.dedent("""
        import resource, os
        resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))
        import numpy as np, tensorflow as tf, tf_sampling as tfs
        from tf_sampling.ops import _loader
        w = np.ones(10_000); w[0] = 1e12
        for make in (lambda: tfs.samplers.FixedUnigramSampler(10_000, counts=w, seed=1),
                     lambda: tfs.samplers.DynamicAliasSampler(10_000, initial_weights=w,
                                                              seed=1),
                     "fallback"):
            if make == "fallback":
                os.environ[_loader.ENV_FORCE_FALLBACK] = "1"
                _loader.LIBRARY.reset()
                make = lambda: tfs.samplers.DynamicAliasSampler(
                    10_000, initial_weights=w, seed=1)
            s = make()
            try:
                tf.function(lambda: s.sample([[0]], 100))()
                print("no error")
            except tf.errors.InvalidArgumentError as e:
                print("refused" if "2^32" in e.message else e.message)
        print(tfs.ops.custom_ops_available())
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop(_loader.ENV_FORCE_FALLBACK, None)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    assert lines[:4] == ["refused", "refused", "refused", "False"], out.stdout
    # TF itself takes ~600 MB; the refused draws add at most 2^20 ids (8 MB) per round,
    # so the peak (MB) stays far below the GBs of the aborting runs.
    assert int(lines[4]) < 1500, out.stdout


class _BrokenCdf(LogUniformSampler):
    """A log-uniform sampler with a CDF off by one: class SV - 1 is never drawn, and -1
    is, although the probabilities say otherwise."""

    def _draw(self, num_draws, seed):
        return super()._draw(num_draws, seed) - 1


class _NeverLast(LogUniformSampler):
    """Draws that never reach the last class (clipped to SV - 2), with its probabilities
    unchanged: a unique sample of all SV classes can never finish."""

    def _draw(self, num_draws, seed):
        return tf.minimum(super()._draw(num_draws, seed), self.num_classes - 2)


def test_a_sampler_drawing_ids_out_of_range_fails_unique_sampling():
    s = _BrokenCdf(12, seed=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="drew ids outside"):
        s.sample([[1]], 12)


def test_a_sampler_whose_draws_miss_a_class_fails_at_the_bound_not_later():
    """All 12 classes asked for, one never drawn: an error once the bound (2^20 draws
    here) is reached, instead of doubling rounds until memory runs out."""
    s = _NeverLast(12, seed=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="within the draw bound"):
        s.sample([[1]], 12)
    with pytest.raises(tf.errors.InvalidArgumentError, match="within the draw bound"):
        tfs.losses.sample_per_example(s, np.zeros((2, 1), np.int64), 12, unique=True)


# ---------------------------------------------------------------- atomic updates


@pytest.mark.parametrize("amounts", [[1e308, 1e308], [1.0, np.nan]])
@pytest.mark.parametrize("max_pending", [1, 100])  # with and without a rebuild
def test_rejected_add_weights_leaves_the_state_exactly_as_before(impl, amounts, max_pending):
    s = DynamicAliasSampler(SV, seed=3, max_pending=max_pending)
    s.add_weights([7], [2.0])  # some pending state or a rebuild first
    before = {w.path: w.numpy().copy() for w in s.weights}
    for run in (lambda: s.add_weights([1, 2], amounts),
                tf.function(lambda: s.add_weights([1, 2], amounts))):
        with pytest.raises(tf.errors.InvalidArgumentError, match="amounts"):
            run()
        for w in s.weights:
            np.testing.assert_array_equal(before[w.path], w.numpy(), err_msg=w.path)
    # ... and the sampler still works.
    assert np.isfinite(s.table_mass.numpy())
    assert s.sample([[0]], 5).sampled_candidates.shape == [5]


def test_rejected_assign_weights_leaves_the_state_exactly_as_before(impl):
    s = DynamicAliasSampler(SV, seed=3)
    before = {w.path: w.numpy().copy() for w in s.weights}
    for bad in (np.full(SV, 1e308), np.full(SV, np.nan), np.zeros(SV)):
        with pytest.raises(tf.errors.InvalidArgumentError):
            s.assign_weights(bad)
        for w in s.weights:
            np.testing.assert_array_equal(before[w.path], w.numpy(), err_msg=w.path)


def test_rejected_add_weights_in_fit_leaves_the_state_as_before(impl):
    """A layer that adds weights from its inputs: an infinite amount fails `fit` and
    leaves the sampler as it was (Keras feeds float32 data, so a finite amount cannot
    overflow the float64 weights here; the eager tests above cover that)."""
    s = DynamicAliasSampler(SV, seed=3, max_pending=4)

    class Adder(keras.layers.Layer):
        def call(self, ids, amounts):
            s.add_weights(ids, amounts)
            return amounts

    ids, amounts = keras.Input((), dtype="int64"), keras.Input((), dtype="float64")
    out = keras.layers.Dense(1)(keras.ops.expand_dims(Adder()(ids, amounts), -1))
    model = keras.Model([ids, amounts], out)
    model.compile(optimizer="sgd", loss="mse")
    before = {w.path: w.numpy().copy() for w in s.weights}
    with pytest.raises(tf.errors.InvalidArgumentError, match="amounts"):
        model.fit([np.array([1, 2]), np.array([1.0, np.inf])], np.zeros(2), verbose=0)
    for w in s.weights:
        np.testing.assert_array_equal(before[w.path], w.numpy(), err_msg=w.path)


def test_unique_sample_of_more_classes_than_have_probability_is_an_error():
    """A learned sampler whose counts were set to zero for most classes has no support
    check of its own: the bound's computation reports the support instead."""
    s = LearnedUnigramSampler(20, seed=1)
    s.counts.assign(np.r_[np.zeros(15, np.int64), np.ones(5, np.int64)])
    for run in (lambda: s.sample([[19]], 6), tf.function(lambda: s.sample([[19]], 6))):
        with pytest.raises(tf.errors.InvalidArgumentError, match="fewer than num_sampled=6"):
            run()

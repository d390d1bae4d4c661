"""The contract every output head follows (issue #18), in the style of Keras'
`run_layer_test`: one list of head cases, `HEADS`, and every check runs on each of them.
A head added later gets every check by adding one line to `HEADS`.

The calling convention checked here is the one of `tfs.layers.OutputHead`
(tf_sampling/layers/base.py): training with labels returns the per-example training loss;
`training` False or None is inference (None included); a call with labels outside
training adds and returns the per-example exact loss; a training call without labels
raises an error that says how to pass them. Each check compares against
the head's own `log_prob` (the reference for the top k) or `full_softmax_loss`, which
tests/test_layers.py, test_chunked.py and the head-specific files check against NumPy.
"""

import json
import os
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs

import _helpers

# Tiny sizes: the contract does not depend on them, and the file must stay fast.
V, D, B, K, N_CAND = 12, 8, 5, 3, 4
# Two float32 computations of the same quantity in different orders (chunked log-sum-exp
# or tree paths against `log_prob`'s log_softmax) differ by a few float32 ulps of values
# of order 1-10, about 1e-6; 1e-5 leaves a tenfold margin.
TOL = dict(rtol=1e-5, atol=1e-5)
# The same ops on the same weights (a loaded model against the saved one, a mean against
# the added mean): only the reduction order of a [B] mean may differ.
SAME = dict(rtol=1e-6)

# Unit-variance weights: the 12 log-probabilities of a row are then ~0.1 or more apart,
# far from float32 near-ties, so the top k of two exact computations agree exactly.
def _init(seed):
    return keras.initializers.RandomNormal(stddev=1.0, seed=seed)


class Case:
    """One head under test.

    make(top_k): a new, unbuilt head whose inference output is all log-probabilities
        (top_k None) or the top `top_k` pair.
    labels(rng): the label tensors that follow `inputs` in a call.
    candidates: whether the labels are (candidates, positives) (CandidateSoftmax), whose
        exact loss is the NLL over each row's candidates.
    """

    def __init__(self, name, make, labels=None, candidates=False):
        self.name, self.make, self.candidates = name, make, candidates
        self.labels = labels or (lambda rng: [tf.constant(rng.integers(0, V, B), tf.int32)])

    def __repr__(self):
        return self.name


def _candidate_labels(rng):
    cands = np.stack([rng.permutation(V)[:N_CAND] for _ in range(B)]).astype(np.int32)
    return [tf.constant(cands), tf.constant(rng.integers(0, N_CAND, B), tf.int32)]


HEADS = [
    Case("SampledSoftmax", lambda top_k: tfs.layers.SampledSoftmax(
        V, 4, seed=1, top_k=top_k, kernel_initializer=_init(1))),
    Case("NCE", lambda top_k: tfs.layers.NCE(
        V, 4, seed=2, top_k=top_k, kernel_initializer=_init(2))),
    Case("NegativeSampling", lambda top_k: tfs.layers.NegativeSampling(
        V, 4, seed=3, top_k=top_k, samples_per="example", kernel_initializer=_init(3))),
    Case("FullSoftmax", lambda top_k: tfs.layers.FullSoftmax(
        V, top_k=top_k, kernel_initializer=_init(4))),
    Case("HierarchicalSoftmax", lambda top_k: tfs.layers.HierarchicalSoftmax(
        V, tree="balanced", top_k=top_k, kernel_initializer=_init(5),
        bias_initializer=_init(6))),
    Case("AdaptiveSoftmax", lambda top_k: tfs.layers.AdaptiveSoftmax(
        V, [4, 8], div_value=2.0, use_bias=True, top_k=top_k,
        kernel_initializer=_init(7), bias_initializer=_init(8))),
    Case("CandidateSoftmax", lambda top_k: tfs.layers.CandidateSoftmax(
        V, top_k=top_k, kernel_initializer=_init(9), bias_initializer=_init(10)),
        labels=_candidate_labels, candidates=True),
]


def _data(case, seed=0):
    rng = np.random.default_rng(seed)
    return tf.constant(rng.normal(size=(B, D)).astype(np.float32)), case.labels(rng)


def _built(case, top_k=None):
    head = case.make(top_k)
    head.build((None, D))
    return head


def _symbolic(x, labels):
    spec_x = keras.KerasTensor((None, D), dtype="float32")
    spec_labels = [keras.KerasTensor((None,) + tuple(t.shape[1:]), dtype=t.dtype.name)
                   for t in labels]
    return spec_x, spec_labels


def _exact_loss(head, case, x, labels):
    """The per-example exact loss of `[x, *labels]`, from the head's own methods."""
    if case.candidates:
        log_p = head.candidate_log_prob(x, labels[0])
        return -tf.gather(log_p, labels[1], batch_dims=1)
    return head.full_softmax_loss(x, labels[0])


def _check_spec(spec, out):
    spec_flat, out_flat = tf.nest.flatten(spec), tf.nest.flatten(out)
    assert len(spec_flat) == len(out_flat)
    for s, o in zip(spec_flat, out_flat):
        assert len(s.shape) == len(o.shape)
        assert all(a is None or a == b for a, b in zip(s.shape, o.shape)), (s.shape, o.shape)
        assert s.dtype == o.dtype.name


@pytest.mark.parametrize("case", HEADS, ids=repr)
def test_build(case):
    head = case.make(None)
    assert not head.built
    head.build((None, D))
    assert head.built and head.trainable_weights
    # Building from the `[inputs, labels]` shapes gives the same weights.
    x, labels = _data(case)
    pair = case.make(None)
    pair.build([(None, D)] + [tuple(t.shape) for t in labels])
    assert [w.shape for w in pair.weights] == [w.shape for w in head.weights]


@pytest.mark.parametrize("top_k", [None, K])
@pytest.mark.parametrize("training", [None, False, True])
@pytest.mark.parametrize("case", HEADS, ids=repr)
def test_calls_outputs_and_output_spec(case, training, top_k):
    head = _built(case, top_k)
    x, labels = _data(case)
    spec_x, spec_labels = _symbolic(x, labels)
    log_p = head.log_prob(x)

    # Without labels.
    if training:
        with pytest.raises(ValueError, match="without labels.*keras.Input"):
            head(x, training=True)
    else:
        out = head(x, training=training)
        _check_spec(head.compute_output_spec(spec_x, training=training), out)
        assert not head.losses
        if top_k is None:
            np.testing.assert_allclose(out, log_p, **TOL)
        else:
            # The top k of the inference output is the top of `log_prob` (random weights).
            want = tf.math.top_k(log_p, K)
            np.testing.assert_array_equal(out[1], want.indices)
            np.testing.assert_allclose(out[0], want.values, **TOL)

    # With labels.
    out = head([x] + labels, training=training)
    _check_spec(head.compute_output_spec([spec_x] + spec_labels, training=training), out)
    (added,) = head.losses
    if training:
        # The per-example training loss, whose mean is added.
        assert out.shape == (B,)
        np.testing.assert_allclose(added, tf.reduce_mean(out), **SAME)
        return
    # Outside training, a call with labels adds and returns the exact loss (the sampled
    # heads too), whatever the inference output.
    exact = _exact_loss(head, case, x, labels)
    np.testing.assert_allclose(added, tf.reduce_mean(exact), **TOL)
    np.testing.assert_allclose(out, exact, **TOL)


@pytest.mark.parametrize("case", HEADS, ids=repr)
def test_top_k_equals_top_of_log_prob(case):
    head = _built(case)
    assert isinstance(head, tfs.layers.OutputHead)
    x, _ = _data(case, seed=1)
    values, ids = head.top_k(x, K)
    want = tf.math.top_k(head.log_prob(x), K)
    np.testing.assert_array_equal(ids, want.indices)
    np.testing.assert_allclose(values, want.values, **TOL)
    # The deprecated spelling still works, with a warning.
    with pytest.warns(DeprecationWarning, match="predict_top_k"):
        old = head.predict_top_k(x, K)
    np.testing.assert_array_equal(old[1], ids)


@pytest.mark.parametrize("case", HEADS, ids=repr)
def test_same_mistake_same_error(case):
    """One exception type per mistake, in every head: a wrong dtype is a TypeError, a
    wrong value or shape a ValueError."""
    head = _built(case)
    x, labels = _data(case)
    with pytest.raises(TypeError, match="labels|positive"):
        head([x] + labels[:-1] + [tf.cast(labels[-1], tf.float32)])
    with pytest.raises(TypeError, match="inputs"):
        head(tf.cast(x, tf.int32))
    with pytest.raises(ValueError, match="dim|features"):
        head(tf.zeros((B, D + 1)))
    for k in (0, V + 1, 2.0, True):
        with pytest.raises(ValueError, match="k"):
            head.top_k(x, k)
    with pytest.raises(ValueError, match="without labels"):
        head(x, training=True)
    with pytest.raises(ValueError, match="num_classes"):
        type(head)(**dict(head.get_config(), num_classes=0))
    with pytest.raises(ValueError, match="top_k"):
        type(head)(**dict(head.get_config(), top_k=V + 1))


def _head_model(case, top_k=None):
    inp = keras.Input((D,), name="features")
    hidden = keras.layers.Dense(D, kernel_initializer=_init(11), name="tower")(inp)
    return tfs.models.HeadModel(keras.Model(inp, hidden, name="tower_model"),
                                case.make(top_k))


def _y(labels):
    return labels[0] if len(labels) == 1 else tuple(labels)


@pytest.mark.parametrize("case", HEADS, ids=repr)
def test_get_config_and_keras_round_trips(case, tmp_path):
    head = _built(case)
    config = head.get_config()
    clone = head.__class__.from_config(config)
    assert clone.get_config() == config

    x, labels = _data(case, seed=2)
    # The labels-input pattern: a functional model compiled without a loss.
    x_in = keras.Input((D,))
    label_ins = [keras.Input(t.shape[1:], dtype=t.dtype.name) for t in labels]
    model = keras.Model([x_in] + label_ins, head([x_in] + label_ins))
    path = str(tmp_path / "functional.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    (loaded_head,) = [lyr for lyr in loaded.layers if isinstance(lyr, type(head))]
    np.testing.assert_allclose(loaded_head.log_prob(x), head.log_prob(x), **SAME)


@pytest.mark.parametrize("case", HEADS, ids=repr)
def test_head_model_fit_evaluate_predict_and_keras_round_trip(case, tmp_path):
    x, labels = _data(case, seed=3)
    model = _head_model(case)
    with pytest.raises(ValueError, match="adds its own loss"):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [w.numpy() for w in model.trainable_weights]
    history = model.fit(x, _y(labels), batch_size=B, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, w.numpy())
               for a, w in zip(before, model.trainable_weights))
    # `evaluate` reports the exact loss (one batch: the mean over it).
    hidden = model.features(x)
    exact = _exact_loss(model.head, case, hidden, labels)
    loss = model.evaluate(x, _y(labels), batch_size=B, verbose=0)
    np.testing.assert_allclose(loss, tf.reduce_mean(exact), **TOL)
    # `predict` takes no labels and gives the head's inference output.
    np.testing.assert_allclose(model.predict(x, verbose=0), model.head.log_prob(hidden),
                               **TOL)
    with pytest.raises(ValueError, match="without labels"):
        model(x, training=True)
    # `.keras` round trip of the wrapper, compiled, with its optimizer state.
    path = str(tmp_path / "wrapped.keras")
    model.save(path)
    back = keras.saving.load_model(path)
    assert isinstance(back, tfs.models.HeadModel) and back.compiled
    assert back.optimizer.iterations.numpy() == 1
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0),
                               **SAME)


_SERVE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    x = np.asarray(json.loads(sys.argv[2]), np.float32)
    out = {}
    for name, path in json.loads(sys.argv[1]).items():
        fn = tf.saved_model.load(path).signatures["serving_default"]
        res = fn(features=tf.constant(x))
        out[name] = [res["top_k_ids"].numpy().tolist(),
                     res["top_k_log_probs"].numpy().tolist()]
    assert not [m for m in sys.modules if m.startswith("tf_sampling")]
    print(json.dumps(out))
""")


def test_export_and_serve_in_a_clean_process(tmp_path):
    x = np.random.default_rng(4).normal(size=(B, D)).astype(np.float32)
    paths, want = {}, {}
    for case in HEADS:
        model = _head_model(case, top_k=K)
        paths[case.name] = str(tmp_path / case.name / "1")
        tfs.serving.export(paths[case.name], model, top_k=K)
        values, ids = model.predict(x, verbose=0)
        want[case.name] = (ids, values)
    proc = _helpers.run_clean(_SERVE, [json.dumps(paths), json.dumps(x.tolist())])
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (ids, values) in want.items():
        np.testing.assert_array_equal(served[name][0], ids, err_msg=name)
        np.testing.assert_allclose(served[name][1], values, err_msg=name, **TOL)


BEFORE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                      "heads_before_contract")
OLD_FILES = ["sampled_softmax", "nce", "negative_sampling", "full_softmax",
             "hierarchical_softmax", "adaptive_softmax", "candidate_softmax"]


@pytest.mark.parametrize("name", OLD_FILES)
def test_keras_files_saved_before_the_base_class_still_load(name):
    """`.keras` files of every head saved at c94f5d8 (before OutputHead; AdaptiveSoftmax
    then took `head_bias`) load with the same weights: the same log-probabilities and
    exact loss, and the loaded model trains on."""
    ref = np.load(os.path.join(BEFORE, "heads_ref.npz"))
    model = keras.saving.load_model(os.path.join(BEFORE, f"{name}.keras"))
    head = model.layers[-1]
    assert isinstance(head, tfs.layers.OutputHead)
    hidden = model.get_layer("tower")(ref["x"])
    np.testing.assert_allclose(head.log_prob(hidden), ref[f"{name}/log_prob"], **SAME,
                               atol=1e-6)
    np.testing.assert_allclose(head.full_softmax_loss(hidden, ref["y"]),
                               ref[f"{name}/exact_loss"], **SAME, atol=1e-6)
    data = ([ref["x"], ref["candidates"], ref["positives"]] if name == "candidate_softmax"
            else [ref["x"], ref["y"]])
    assert np.isfinite(model.fit(data, batch_size=len(ref["x"]), verbose=0)
                       .history["loss"][0])

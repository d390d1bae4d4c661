"""Per-example candidate sets (`candidate_softmax_loss`, `CandidateSoftmax`) and per-example
negative sampling (`tfs.losses.per_example`), against NumPy references and TF's own losses."""

import importlib.util
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs
from _helpers import value_and_grads
from _stats import assert_cells
from tf_sampling.ops import _unique

V, D, B = 40, 6, 7
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


# ---------------------------------------------------------------------------- references
def _problem(seed=0, dtype=np.float32, dup=False):
    """Weights, inputs and ragged candidate rows of lengths 1..11 (one row of length 1)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(V, D)).astype(dtype)
    b = rng.normal(size=V).astype(dtype)
    x = rng.normal(size=(B, D)).astype(dtype)
    lengths = [1, 11, 3, 7, 2, 5, 9]
    rows = [rng.choice(V, size=n, replace=False) for n in lengths]
    if dup:  # a class listed twice in a row: two candidates, gradients must add up
        rows[3][4] = rows[3][1]
    pos = np.array([rng.integers(n) for n in lengths])
    log_q = [rng.normal(size=n).astype(dtype) for n in lengths]
    return w, b, x, rows, pos, log_q


def _np_loss_and_grads(w, b, x, rows, pos, log_q=None):
    """Per-example loop in float64: loss_b = logsumexp(z) - z[pos_b], and its gradients."""
    w, b, x = (np.asarray(a, np.float64) for a in (w, b, x))
    loss = np.zeros(len(rows))
    dw, db, dx = np.zeros_like(w), np.zeros_like(b), np.zeros_like(x)
    weight = np.arange(1.0, len(rows) + 1)  # d(sum_b weight_b * loss_b)
    for i, r in enumerate(rows):
        z = w[r] @ x[i] + b[r] - (0 if log_q is None else log_q[i])
        m = z.max()
        lse = m + np.log(np.exp(z - m).sum())
        loss[i] = lse - z[pos[i]]
        g = np.exp(z - lse)
        g[pos[i]] -= 1
        g *= weight[i]
        np.add.at(dw, r, g[:, None] * x[i][None, :])
        np.add.at(db, r, g)
        dx[i] = g @ w[r]
    return loss, dx, dw, db


def _dense(rows, log_q=None, pad=-1):
    n = max(len(r) for r in rows)
    ids = np.full((len(rows), n), pad, np.int64)
    mask = np.zeros((len(rows), n), bool)
    lq = np.full((len(rows), n), np.nan, np.float32)  # garbage in padding must not leak
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = r, True
        if log_q is not None:
            lq[i, :len(r)] = log_q[i]
    return ids, mask, lq


def _close(ours, ref, tol):
    for name, a, r in zip(["loss", "d_inputs", "d_weights", "d_biases"], ours, ref):
        np.testing.assert_allclose(a, r, rtol=tol, atol=tol, err_msg=name)


# ---------------------------------------------------------------------------- the loss
@pytest.mark.parametrize("layout", ["ragged", "dense"])
@pytest.mark.parametrize("by", ["index", "id"])
@pytest.mark.parametrize("with_log_q", [False, True])
def test_loss_matches_numpy_values_and_gradients(layout, by, with_log_q):
    w, b, x, rows, pos, log_q = _problem()
    ref = _np_loss_and_grads(w, b, x, rows, pos, log_q if with_log_q else None)
    pos_kw = ({"positive_index": pos} if by == "index"
              else {"positive_ids": [r[p] for r, p in zip(rows, pos)]})
    if layout == "ragged":
        cands = tf.ragged.constant(rows, dtype=tf.int64)
        kw = {"candidate_log_q": tf.ragged.constant(log_q) if with_log_q else None}
    else:
        ids, mask, lq = _dense(rows, log_q)
        cands = ids
        kw = {"candidate_mask": mask, "candidate_log_q": lq if with_log_q else None}

    def fn(w_, b_, x_):
        return tfs.losses.candidate_softmax_loss(w_, b_, x_, cands, **pos_kw, **kw)

    _close(value_and_grads(fn, w, b, x), ref, 2e-5)


@pytest.mark.parametrize("layout", ["ragged", "dense"])
def test_float64_duplicates_and_shards_match_numpy_tightly(layout):
    w, b, x, rows, pos, _ = _problem(seed=3, dtype=np.float64, dup=True)
    ref = _np_loss_and_grads(w, b, x, rows, pos)
    ids, mask, _ = _dense(rows)
    cands = (tf.ragged.constant(rows, dtype=tf.int32, row_splits_dtype=tf.int32)
             if layout == "ragged" else ids.astype(np.int32))
    mask = None if layout == "ragged" else mask

    def fn(w_, b_, x_):
        # Uneven shards (not TF's "div" sizes): rows are read as their concatenation.
        shards = [w_[:13], w_[13:31], w_[31:]]
        return tfs.losses.candidate_softmax_loss(shards, b_, x_, cands, positive_index=pos,
                                                 candidate_mask=mask, allow_duplicates=True)

    _close(value_and_grads(fn, w, b, x), ref, 1e-10)


def test_no_bias_positive_as_column_and_first_id_match():
    w, b, x, rows, pos, _ = _problem(seed=5, dup=True)
    ref = _np_loss_and_grads(w, np.zeros_like(b), x, rows, pos)[0]
    got = tfs.losses.candidate_softmax_loss(
        w, None, x, tf.ragged.constant(rows), positive_index=pos[:, None],
        allow_duplicates=True)
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5)
    # By id, a class listed twice is positive at its first occurrence.
    first = [list(r).index(r[p]) for r, p in zip(rows, pos)]
    ref_first = _np_loss_and_grads(w, np.zeros_like(b), x, rows, first)[0]
    got_id = tfs.losses.candidate_softmax_loss(
        w, None, x, tf.ragged.constant(rows), positive_ids=[r[p] for r, p in zip(rows, pos)],
        allow_duplicates=True)
    np.testing.assert_allclose(got_id, ref_first, rtol=2e-5, atol=2e-5)


def test_log_softmax_and_logits():
    w, b, x, rows, pos, log_q = _problem()
    cands = tf.ragged.constant(rows, dtype=tf.int64)
    logp = tfs.losses.candidate_log_softmax(w, b, x, cands,
                                            candidate_log_q=tf.ragged.constant(log_q))
    logits = tfs.losses.candidate_logits(w, b, x, cands)
    ids, mask, _ = _dense(rows)
    dense_logp = tfs.losses.candidate_log_softmax(w, b, x, ids, candidate_mask=mask)
    for i, r in enumerate(rows):
        z = w[r].astype(np.float64) @ x[i] + b[r]
        np.testing.assert_allclose(logits[i].numpy(), z, rtol=1e-5, atol=1e-5)
        zq = z - log_q[i]
        np.testing.assert_allclose(logp[i].numpy(), zq - np.log(np.exp(zq).sum()),
                                   rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(dense_logp[i, :len(r)].numpy(), z - np.log(np.exp(z).sum()),
                                   rtol=1e-5, atol=1e-5)
        assert np.all(np.isneginf(dense_logp[i, len(r):].numpy()))


def test_ragged_graph_never_pads():
    """The ragged path works on flat values: no op in the graph pads to the longest row."""
    w, b, x, rows, pos, _ = _problem()
    fn = tf.function(lambda c, p: tfs.losses.candidate_softmax_loss(w, b, x, c,
                                                                     positive_index=p))
    graph = fn.get_concrete_function(
        tf.RaggedTensorSpec([B, None], tf.int64, 1, tf.int64),
        tf.TensorSpec([B], tf.int64)).graph
    op_types = {op.type for op in graph.get_operations()}
    assert not op_types & {"RaggedTensorToTensor", "Pad", "PadV2", "ScatterNd"}, op_types
    assert "UnsortedSegmentSum" in op_types


def test_half_precision_inputs_do_not_overflow():
    w, b, x, rows, pos, _ = _problem(seed=2)
    big_w, big_x = w * 10, x * 10
    for dtype, eps in ((tf.float16, 2.0 ** -11), (tf.bfloat16, 2.0 ** -8)):
        w_h, x_h = tf.cast(big_w, dtype), tf.cast(big_x, dtype)
        got = tfs.losses.candidate_softmax_loss(w_h, None, x_h, tf.ragged.constant(rows),
                                                positive_index=pos)
        assert got.dtype == tf.float32
        w64, x64 = (tf.cast(a, tf.float64).numpy() for a in (w_h, x_h))
        biggest = max(np.abs(w64[r] @ x64[i]).max() for i, r in enumerate(rows))
        assert biggest > 200  # logits in the hundreds: exp in float16 would overflow
        ref = _np_loss_and_grads(w64, np.zeros(V), x64, rows, pos)[0]
        # Only the dot products are rounded to the half type: a few units of its
        # rounding error (eps) of the largest logit.
        np.testing.assert_allclose(got, ref, rtol=0, atol=8 * eps * biggest)


# ---------------------------------------------------------------------------- bad input
def _run(cands, **kw):
    w, b, x, _, _, _ = _problem()
    kw.setdefault("positive_index", np.zeros(B, np.int64))
    return tfs.losses.candidate_softmax_loss(w, b, x, cands, **kw)


def _rows(first=None):
    """B rows [1, 2, 3], the first replaced by `first` (which may be empty)."""
    rows = [[1, 2, 3]] * B if first is None else [first] + [[1, 2, 3]] * (B - 1)
    return tf.RaggedTensor.from_row_lengths(
        np.concatenate([np.asarray(r, np.int64) for r in rows]), [len(r) for r in rows])


@pytest.mark.parametrize("case, kwargs, match", [
    ("empty row", {}, "empty row"),
    ("id too big", {}, r"`candidates` has class ids outside \[0, num_classes=40\)"),
    ("id negative", {}, r"`candidates` has class ids outside"),
    ("positive not among", {"positive_ids": [9] + [1] * (B - 1)},
     "`positive_ids` has an id that is not among"),
    ("positive id out of range", {"positive_ids": [99] + [1] * (B - 1)},
     r"`positive_ids` has class ids outside"),
    ("index past row", {"positive_index": [3] + [0] * (B - 1)}, "`positive_index` is outside"),
    ("index negative", {"positive_index": [-1] + [0] * (B - 1)}, "`positive_index` is negative"),
    ("too few rows", {}, "`candidates` must have one row per row of `inputs`"),
])
def test_ragged_runtime_errors(case, kwargs, match):
    cands = {
        "empty row": _rows([]),
        "id too big": _rows([1, 40]),
        "id negative": _rows([-1, 2]),
        "too few rows": tf.ragged.constant([[1, 2]] * (B - 1), dtype=tf.int64),
    }.get(case, _rows())
    if "positive_ids" in kwargs:
        kwargs["positive_index"] = None
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        _run(cands, **kwargs)


@pytest.mark.parametrize("case, match", [
    ("empty row", "empty row"),
    ("id too big", r"`candidates` has class ids outside"),
    ("positive not among", "`positive_ids` has an id that is not among"),
    ("index on padding", "`positive_index` points at a slot that `candidate_mask` marks"),
    ("index past columns", "`positive_index` is outside the candidate columns"),
])
def test_dense_runtime_errors(case, match):
    ids = np.tile([[1, 2, 3, -1]], (B, 1))
    mask = ids >= 0
    kw = {"candidate_mask": mask, "positive_index": np.zeros(B, np.int64)}
    if case == "empty row":
        mask = mask.copy()
        mask[2] = False
        kw["candidate_mask"] = mask
    elif case == "id too big":
        ids = ids.copy()
        ids[1, 0] = 40
    elif case == "positive not among":
        kw.update(positive_index=None, positive_ids=[3] * (B - 1) + [7])
    elif case == "index on padding":
        kw["positive_index"] = [0] * (B - 1) + [3]
    elif case == "index past columns":
        kw["positive_index"] = [0] * (B - 1) + [4]
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        _run(ids, **kw)


def test_padding_ids_outside_range_are_ignored_under_the_mask():
    ids = np.tile([[1, 2, 3, -7]], (B, 1))
    got = _run(ids, candidate_mask=ids >= 0)
    ref = _run(tf.ragged.constant([[1, 2, 3]] * B))
    np.testing.assert_allclose(got, ref, rtol=1e-6)


def test_runtime_error_inside_tf_function():
    w, b, x, _, _, _ = _problem()
    fn = tf.function(lambda c, p: tfs.losses.candidate_softmax_loss(w, b, x, c, positive_ids=p))
    with pytest.raises(tf.errors.InvalidArgumentError, match="not among that row"):
        fn(_rows(), tf.constant([5] * B, tf.int64))


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"positive_index": None}, ValueError, "exactly one of `positive_index` and `positive_ids`"),
    ({"positive_ids": [1] * B}, ValueError, "exactly one of"),
    ({"cands": tf.ragged.constant([[1.0, 2.0]] * B)}, TypeError, "`candidates` must hold integer"),
    ({"cands": np.ones((B, 2), np.float32)}, TypeError, "`candidates` must hold integer"),
    ({"cands": np.ones((B, 2, 2), np.int64)}, ValueError, "`candidates` must have rank 2"),
    ({"cands": tf.ragged.constant([[[1], [2]]] * B, dtype=tf.int64)}, ValueError,
     "`candidates` must be a RaggedTensor of shape"),
    ({"candidate_mask": np.ones((B, 3), bool)}, ValueError, "`candidate_mask` is only for dense"),
    ({"cands": np.ones((B, 3), np.int64), "candidate_mask": np.ones((B, 3), np.int32)},
     TypeError, "`candidate_mask` must be boolean"),
    ({"cands": np.ones((B, 3), np.int64), "candidate_mask": np.ones((B, 2), bool)},
     ValueError, "`candidate_mask` has shape"),
    ({"positive_index": np.zeros((B, 2), np.int64)}, ValueError,
     "`positive_index` must have shape"),
    ({"positive_index": np.zeros(B, np.float32)}, TypeError, "`positive_index` must be an integer"),
    ({"positive_index": np.zeros(B + 1, np.int64)}, ValueError, "`positive_index` has 8 entries"),
    ({"candidate_log_q": np.zeros((B, 3), np.float32)}, TypeError,
     "`candidate_log_q` must be a RaggedTensor"),
    ({"candidate_log_q": tf.ragged.constant([[0.0, 0.0]] * B)},
     tf.errors.InvalidArgumentError, "`candidate_log_q` must have the same row lengths"),
    ({"x": np.ones((B, D), np.int32)}, TypeError, "`inputs` must be floating point"),
    ({"x": np.ones((D,), np.float32)}, ValueError, "`inputs` must have rank 2"),
    ({"x": np.ones((B, D + 1), np.float32)}, ValueError, "`inputs` has dim 7 but `weights`"),
    ({"w": np.ones((V,), np.float32)}, ValueError, r"`weights` must be a \[num_classes, dim\]"),
    ({"w": np.ones((V, D), np.int32)}, TypeError, "`weights` must be floating point"),
    ({"b": np.ones((V + 1,), np.float32)}, ValueError, "`biases` has 41 entries"),
])
def test_static_errors_name_the_argument(kwargs, exc, match):
    w, b, x, _, _, _ = _problem()
    w, b, x = kwargs.pop("w", w), kwargs.pop("b", b), kwargs.pop("x", x)
    cands = kwargs.pop("cands", tf.ragged.constant([[1, 2, 3]] * B, dtype=tf.int64))
    kwargs.setdefault("positive_index", np.zeros(B, np.int64))
    with pytest.raises(exc, match=match):
        tfs.losses.candidate_softmax_loss(w, b, x, cands, **kwargs)


# ---------------------------------------------------------------------------- the layer
def _ragged_model(num_classes=V, positive="index", **kw):
    x = keras.Input((D,), name="x")
    c = keras.Input((None,), ragged=True, dtype="int64", name="c")
    p = keras.Input((), dtype="int64", name="p")
    head = tfs.layers.CandidateSoftmax(num_classes, positive=positive, name="head", **kw)
    model = keras.Model([x, c, p], head([keras.layers.Dense(D, name="tower")(x), c, p]))
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    return model


def _click_data(n=96, seed=0):
    """Rows of 2..8 candidates; the positive is the candidate whose class id is smallest
    modulo 5 plus a feature-dependent shift, so it is learnable from x and the class."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D)).astype(np.float32)
    rows = [rng.choice(V, size=rng.integers(2, 9), replace=False) for _ in range(n)]
    pos = np.array([int(np.argmax(-(r % 5) + (x[i, 0] > 0) * (r % 2))) for i, r in enumerate(rows)])
    return x, tf.ragged.constant(rows, dtype=tf.int64), pos


def _candidate_nll(model, x, c, pos):
    h = model.get_layer("tower")(x)
    logp = model.get_layer("head").candidate_log_prob(h, c)
    return -float(np.mean([logp[i, p] for i, p in enumerate(pos)]))


def test_fit_with_ragged_tf_data_learns():
    x, c, pos = _click_data()
    model = _ragged_model()
    before = _candidate_nll(model, x, c, pos)
    ds = tf.data.Dataset.from_tensor_slices(((x, c, pos),)).batch(16)
    assert isinstance(ds.element_spec[0][1], tf.RaggedTensorSpec)
    hist = model.fit(ds, epochs=6, verbose=0)
    after = _candidate_nll(model, x, c, pos)
    # The loss reported by fit is the layer's added loss: the candidate NLL.
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert after < 0.6 * before, (before, after)


def test_fit_with_ragged_batch_from_generator_and_positive_ids():
    x, c, pos = _click_data(n=48)
    ids = np.array([c[i, p].numpy() for i, p in enumerate(pos)])

    def gen():
        for i in range(len(x)):
            yield (x[i], c[i].numpy(), ids[i])

    ds = tf.data.Dataset.from_generator(gen, output_signature=(
        tf.TensorSpec([D], tf.float32), tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([], tf.int64)))
    ds = ds.ragged_batch(8).map(lambda a, b, p: ((a, b, p),))
    model = _ragged_model(positive="id")
    before = model.evaluate(ds, verbose=0)
    model.fit(ds, epochs=4, verbose=0)
    assert model.evaluate(ds, verbose=0) < before
    # The per-example output is the functional loss with the layer's weights.
    (xb, cb, pb), = next(iter(ds))
    head = model.get_layer("head")
    h = model.get_layer("tower")(xb)
    np.testing.assert_allclose(
        model((xb, cb, pb), training=True).numpy(),
        tfs.losses.candidate_softmax_loss(head.kernel, head.bias, h, cb, positive_ids=pb),
        rtol=1e-5, atol=1e-6)


def test_dense_padded_fit_equals_ragged_fit():
    x, c, pos = _click_data(n=64, seed=1)
    ragged = _ragged_model()
    xi = keras.Input((D,)), keras.Input((None,), dtype="int64"), keras.Input((), dtype="int64")
    head = tfs.layers.CandidateSoftmax(V, padding_id=-1, name="head")
    dense = keras.Model(list(xi), head([keras.layers.Dense(D, name="tower")(xi[0]), xi[1], xi[2]]))
    dense.compile(optimizer=keras.optimizers.Adam(0.05))
    dense.set_weights(ragged.get_weights())
    ragged.fit(tf.data.Dataset.from_tensor_slices(((x, c, pos),)).batch(16), epochs=2, verbose=0)
    dense.fit(tf.data.Dataset.from_tensor_slices(((x, c.to_tensor(-1), pos),)).batch(16),
              epochs=2, verbose=0)
    for a, b in zip(ragged.get_weights(), dense.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_inference_outputs():
    x, c, pos = _click_data(n=10)
    x, pos = tf.constant(x), tf.constant(pos)  # Keras refuses numpy mixed with tensors
    model = _ragged_model()
    head = model.get_layer("head")
    h = model.get_layer("tower")(x)
    logp = head([h, c])                                        # no positives: log-probs
    assert isinstance(logp, tf.RaggedTensor)
    np.testing.assert_allclose(tf.reduce_logsumexp(logp, axis=1).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(logp.flat_values, head.candidate_log_prob(h, c).flat_values)
    # With positives, outside training as in it, the call gives the per-example candidate
    # NLL (the head contract: a call with labels returns its loss); predict on such a
    # model gives it too, and evaluate reports its mean.
    nll = -np.array([logp[i, p].numpy() for i, p in enumerate(pos.numpy())])
    np.testing.assert_allclose(model((x, c, pos), training=False), nll, rtol=1e-5)
    ds = tf.data.Dataset.from_tensor_slices(((x, c, pos),)).batch(5)
    np.testing.assert_allclose(model.predict(ds, verbose=0), nll, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.evaluate(ds, verbose=0), nll.mean(), rtol=1e-5)
    full = head(h)                                              # no candidates
    assert full.shape == (10, V)
    np.testing.assert_allclose(tf.reduce_logsumexp(full, axis=1).numpy(), 0, atol=1e-5)
    # A row's candidate log-probs are the full log-probs renormalized over the row.
    row = c[0].numpy()
    sub = tf.gather(full[0], row).numpy()
    np.testing.assert_allclose(logp[0].numpy(), sub - np.log(np.exp(sub).sum()), atol=1e-5)
    # Exact full-softmax NLL for evaluation.
    labels = np.array([c[i, p].numpy() for i, p in enumerate(pos.numpy())])
    np.testing.assert_allclose(head.full_softmax_loss(h, labels),
                               -full.numpy()[np.arange(10), labels], rtol=1e-5, atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`labels` has ids outside"):
        head.full_softmax_loss(h, labels + V)
    assert head.compute_output_shape([(None, D), (None, 9), (None,)]) == (None,)
    assert head.compute_output_shape([(None, D), (None, 9)]) == (None, 9)
    assert head.compute_output_shape([(None, D), (None, None)]) == (None, None)
    assert head.compute_output_shape((None, D)) == (None, V)


def test_keras_round_trip_owned_and_tied(tmp_path):
    x, c, pos = _click_data(n=16)
    owned = _ragged_model(use_bias=False, padding_id=None, kernel_regularizer="l2")
    config = owned.get_layer("head").get_config()
    assert {"num_classes", "positive", "use_bias", "tied_embedding", "padding_id",
            "allow_duplicates", "kernel_initializer", "bias_initializer", "kernel_regularizer",
            "bias_regularizer"} <= set(config)
    clone = tfs.layers.CandidateSoftmax.from_config(config)
    assert clone.get_config() == config

    tok = keras.Input((), dtype="int64", name="tok")
    ci, pi = keras.Input((None,), ragged=True, dtype="int64"), keras.Input((), dtype="int64")
    emb = keras.layers.Embedding(V, D, name="emb")
    head = tfs.layers.CandidateSoftmax(V, positive="id", tied_embedding=emb, name="head")
    tied = keras.Model([tok, ci, pi], head([emb(tok), ci, pi]))
    tied.compile(optimizer="adam")
    toks = np.arange(16) % V
    ids = np.array([c[i, p].numpy() for i, p in enumerate(pos)])
    tied.fit(tf.data.Dataset.from_tensor_slices(((toks, c, ids),)).batch(8), epochs=1, verbose=0)
    assert len(tied.trainable_weights) == 2  # the table once, and the head's bias

    for model, inputs in ((owned, (x, c, pos)), (tied, (toks, c, ids))):
        inputs = (tf.constant(inputs[0]), inputs[1], tf.constant(inputs[2]))
        path = str(tmp_path / f"{model.name}.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_allclose(loaded(inputs, training=True).numpy(),
                                   model(inputs, training=True).numpy(), rtol=1e-6)
        np.testing.assert_allclose(loaded(inputs).numpy(), model(inputs).numpy(), rtol=1e-6)
    # Tying survives loading: the head reads the loaded model's own Embedding layer.
    assert loaded.get_layer("head").tied_embedding is loaded.get_layer("emb")


def test_layer_under_mixed_precision():
    x, c, pos = _click_data(n=8)
    head = tfs.layers.CandidateSoftmax(V, dtype="mixed_float16")
    h16 = tf.constant(x * 30, tf.float16)
    head(h16)  # builds
    head.kernel.assign(head.kernel * 200)  # logits in the hundreds: a naive exp overflows
    loss = head([h16, c, tf.constant(pos)], training=True)
    assert head.kernel.dtype == "float32" and loss.dtype == tf.float32
    kernel16 = tf.cast(tf.cast(head.kernel, tf.float16), tf.float32)
    ref = tfs.losses.candidate_softmax_loss(kernel16, head.bias, tf.cast(h16, tf.float32), c,
                                            positive_index=pos)
    biggest = float(tf.reduce_max(tf.abs(tfs.losses.candidate_logits(
        kernel16, None, tf.cast(h16, tf.float32), c).flat_values)))
    assert biggest > 100
    # Only the float16 dot products differ from the float32 reference: a few units of
    # float16 rounding (2^-11) of the largest logit.
    np.testing.assert_allclose(loss, ref, rtol=0, atol=8 * 2.0 ** -11 * biggest)
    assert np.all(np.isfinite(head(h16).numpy()))


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "`num_classes` must be a positive integer"),
    ({"positive": "column"}, "`positive` must be one of"),
    ({"padding_id": 1.5}, "`padding_id` must be an integer or None"),
    ({"tied_embedding": keras.layers.Embedding(V + 1, D)}, "`tied_embedding` has input_dim=41"),
])
def test_layer_init_errors(kwargs, match):
    kwargs.setdefault("num_classes", V)
    with pytest.raises(ValueError, match=match):
        tfs.layers.CandidateSoftmax(**kwargs)


def test_layer_call_errors():
    head = tfs.layers.CandidateSoftmax(V, tied_embedding=keras.layers.Embedding(V, D + 1))
    with pytest.raises(ValueError, match="`tied_embedding` has output_dim=7"):
        head(np.ones((2, D), np.float32))
    head = tfs.layers.CandidateSoftmax(V)
    with pytest.raises(ValueError, match="`positives` were given without `candidates`"):
        head([np.ones((2, D), np.float32), None, np.zeros(2, np.int64)])
    with pytest.raises(TypeError, match="`tied_embedding` must be a keras.layers.Embedding"):
        tfs.layers.CandidateSoftmax(V, tied_embedding=keras.layers.Dense(3))


# ---------------------------------------------------------------------------- per example
class _TableSampler(tfs.samplers.CandidateSampler):
    """A fixed non-uniform distribution, drawn by TF's categorical op (independent of the
    sampling code under test)."""

    P = np.array([0.3, 0.2, 0.15, 0.1, 0.1, 0.08, 0.05, 0.02])

    def _probability(self, ids):
        return tf.gather(tf.constant(self.P, tf.float64), ids)

    def _draw(self, n, seed):
        logits = tf.math.log(tf.constant(self.P, tf.float64))[None, :]
        return tf.random.stateless_categorical(logits, n, seed, dtype=tf.int64)[0]


def test_per_example_draws_follow_the_distribution():
    sampler = _TableSampler(num_classes=8, seed=0)
    batch, s = 400, 25
    sv = tfs.losses.sample_per_example(sampler, np.zeros((batch, 1), np.int64), s, seed=11)
    ids = sv.sampled_candidates.numpy()
    assert ids.shape == (batch, s) and ids.dtype == np.int64
    counts = np.bincount(ids.ravel(), minlength=8)
    expected = _TableSampler.P * batch * s
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # 7 degrees of freedom: P(chi2 > 24.3) = 0.001 for a correct sampler; the seed is fixed.
    assert chi2 < 24.3, chi2
    # Every cell as well (tests/_stats.py; cut 4.0 sigma for 1e-3 over 8 cells): the
    # median class expects 1000 draws, so a 20% bias on it would be 6.6 sigma.
    assert_cells(counts, _TableSampler.P, alpha=1e-3)
    # Each example has its own draws: with 8^25 possible rows, equal rows would mean sharing.
    assert len({tuple(r) for r in ids}) == batch
    np.testing.assert_allclose(sv.sampled_expected_count, _TableSampler.P[ids] * s, rtol=1e-6)
    np.testing.assert_allclose(sv.true_expected_count, np.full((batch, 1), 0.3 * s), rtol=1e-6)


def test_per_example_seeds_repeat():
    sampler = tfs.samplers.UniformSampler(num_classes=1000, seed=5)
    labels = np.zeros((6, 1), np.int64)
    a = tfs.losses.sample_per_example(sampler, labels, 8, seed=3).sampled_candidates
    b = tfs.losses.sample_per_example(sampler, labels, 8, seed=3).sampled_candidates
    c = tfs.losses.sample_per_example(sampler, labels, 8, seed=4).sampled_candidates
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    d = tfs.losses.sample_per_example(sampler, labels, 8).sampled_candidates
    e = tfs.losses.sample_per_example(sampler, labels, 8).sampled_candidates
    assert not np.array_equal(d, e)  # the generator advances
    again = tfs.losses.sample_per_example(
        tfs.samplers.UniformSampler(num_classes=1000, seed=5), labels, 8).sampled_candidates
    np.testing.assert_array_equal(d, again)  # ... from the sampler's own seed


def test_first_distinct_per_row():
    stream = tf.constant([[3, 3, 1, 2, 1, 5], [0, 1, 2, 3, 4, 5], [7, 7, 7, 7, 7, 8]], tf.int64)
    none = tf.zeros([3], tf.int64)
    found, count, tries = _unique._merge_round(_unique._padding(3, 3), none, none,
                                               tf.constant(10, tf.int64), stream, 3)
    np.testing.assert_array_equal(found[:2], [[3, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(found[2, :2], [7, 8])
    assert found[2, 2] < 0  # row 2 has only two distinct ids: one padding slot left
    np.testing.assert_array_equal(count, [3, 3, 2])
    np.testing.assert_array_equal(tries, [14, 13, 0])  # 10 draws before this round
    # A next round adds to row 2 only; rows 0 and 1 keep their ids and tries.
    found, count, tries = _unique._merge_round(found, count, tries, tf.constant(16, tf.int64),
                                               tf.constant([[9, 9], [9, 9], [8, 4]], tf.int64), 3)
    np.testing.assert_array_equal(found, [[3, 1, 2], [0, 1, 2], [7, 8, 4]])
    np.testing.assert_array_equal(tries, [14, 13, 18])


def test_per_example_unique():
    sampler = _TableSampler(num_classes=8, seed=0)
    sv = tfs.losses.sample_per_example(sampler, np.zeros((50, 2), np.int64), 6, unique=True,
                                       seed=2)
    ids = sv.sampled_candidates.numpy()
    assert all(len(set(r)) == 6 for r in ids)
    # Expected counts are 1 - (1 - p)^tries with one tries >= 6 per row, shared by the row.
    p = _TableSampler.P
    tries = np.log1p(-sv.sampled_expected_count.numpy()) / np.log1p(-p[ids])
    assert np.all(np.abs(tries - tries[:, :1]) < 1e-3) and np.all(tries > 6 - 1e-3)
    np.testing.assert_allclose(tries, np.round(tries), atol=1e-3)
    np.testing.assert_allclose(  # both true classes are class 0, p = 0.3
        sv.true_expected_count, np.tile(-np.expm1(tries[:, :1] * np.log1p(-0.3)), [1, 2]),
        rtol=1e-5)
    with pytest.raises(ValueError, match="`num_sampled`=9 is larger than `num_classes`=8"):
        tfs.losses.sample_per_example(sampler, np.zeros((2, 1), np.int64), 9, unique=True)

    class TwoClasses(_TableSampler):
        P = np.array([0.5, 0.5, 0, 0, 0, 0, 0, 0])

        def _support_size(self):
            return tf.constant(2)

    with pytest.raises(tf.errors.InvalidArgumentError, match="needs that many classes"):
        tfs.losses.sample_per_example(TwoClasses(8), np.zeros((2, 1), np.int64), 3, unique=True)


def _per_example_problem(num_true, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(V, D)).astype(np.float32) * 0.5
    b = rng.normal(size=V).astype(np.float32) * 0.5
    x = rng.normal(size=(B, D)).astype(np.float32)
    labels = rng.integers(0, 6, size=(B, num_true)).astype(np.int64)
    sampled = rng.integers(0, 6, size=(B, 5)).astype(np.int64)  # small ids: many hits
    true_ec = rng.uniform(0.1, 2, size=(B, num_true)).astype(np.float32)
    sampled_ec = rng.uniform(0.1, 2, size=(B, 5)).astype(np.float32)
    return w, b, x, labels, (sampled, true_ec, sampled_ec)


def _np_per_example(kind, w, b, x, labels, sv, remove_hits, log_q):
    """kind: "softmax", "nce" (true target 1/num_true) or "negative_sampling" (target 1)."""
    sampled, true_ec, sampled_ec = sv
    out = []
    for i in range(len(x)):
        t = w[labels[i]] @ x[i] + b[labels[i]] - (np.log(true_ec[i]) if log_q else 0)
        s = w[sampled[i]] @ x[i] + b[sampled[i]] - (np.log(sampled_ec[i]) if log_q else 0)
        if remove_hits:
            s = np.where(np.isin(sampled[i], labels[i]), -np.inf, s)
        nt = len(t)
        if kind == "softmax":
            z = np.concatenate([t, s])
            lse = np.log(np.exp(z - z.max()).sum()) + z.max()
            out.append(-np.mean(t - lse))
        else:
            sig = lambda v: np.log1p(np.exp(-v))  # -log sigmoid(v)  # noqa: E731
            target = 1.0 if kind == "negative_sampling" else 1.0 / nt
            out.append(np.sum(sig(t) * target + sig(-t) * (1 - target)) + np.sum(sig(-s)))
    return np.array(out)


@pytest.mark.parametrize("kind, log_q, remove_hits", [
    ("softmax", True, True), ("softmax", False, False), ("nce", True, True),
    ("nce", True, False), ("negative_sampling", False, False)])
@pytest.mark.parametrize("num_true", [1, 2])
def test_per_example_losses_match_numpy(kind, log_q, remove_hits, num_true):
    w, b, x, labels, sv = _per_example_problem(num_true)
    fn = {"softmax": tfs.losses.per_example_sampled_softmax_loss,
          "nce": tfs.losses.per_example_nce_loss,
          "negative_sampling": tfs.losses.per_example_negative_sampling_loss}[kind]
    kw = {} if kind == "negative_sampling" else {"subtract_log_q": log_q,
                                                  "remove_accidental_hits": remove_hits}
    got = fn(w, b, labels, x, 5, num_true=num_true, sampled_values=sv, **kw)
    ref = _np_per_example(kind, w.astype(np.float64), b, x, labels, sv, remove_hits, log_q)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["softmax", "nce"])
def test_per_example_with_one_shared_sample_equals_tf(kind):
    """Every row given the same sample: values and gradients equal TF's shared-sample loss."""
    w, b, x, labels, _ = _per_example_problem(2, seed=4)
    shared = tf.random.uniform_candidate_sampler(labels, 2, 5, True, 8, seed=1)
    assert int(tf.size(tf.nn.compute_accidental_hits(labels, shared[0], 2)[0])) > 0
    tiled = (tf.tile(shared[0][None], [B, 1]), shared[1], tf.tile(shared[2][None], [B, 1]))
    ours = {"softmax": tfs.losses.per_example_sampled_softmax_loss,
            "nce": tfs.losses.per_example_nce_loss}[kind]
    ref = {"softmax": tf.nn.sampled_softmax_loss, "nce": tf.nn.nce_loss}[kind]
    got = value_and_grads(lambda w_, b_, x_: ours(
        w_, b_, labels, x_, 5, V, num_true=2, sampled_values=tiled,
        remove_accidental_hits=True), w, b, x)
    want = value_and_grads(lambda w_, b_, x_: ref(
        w_, b_, labels, x_, 5, V, num_true=2, sampled_values=shared,
        remove_accidental_hits=True), w, b, x)
    _close(got, want, 1e-5)


def test_per_example_losses_with_sampler_in_tf_function():
    w, b, x, labels, _ = _per_example_problem(1)
    sampler = tfs.samplers.UniformSampler(num_classes=V, seed=0)

    @tf.function
    def step(unique):
        return tfs.losses.per_example_negative_sampling_loss(
            w, b, labels, x, 5, sampler=sampler, unique=unique)

    for unique in (False, True):
        a, c = step(unique).numpy(), step(unique).numpy()
        assert a.shape == (B,) and np.all(np.isfinite(a)) and np.all(a > 0)
        assert not np.allclose(a, c)  # fresh draws at every step
    # With an int seed the draws, so the loss, repeat, and equal the injected version.
    sv = tfs.losses.sample_per_example(sampler, labels, 5, seed=9)
    np.testing.assert_allclose(
        tfs.losses.per_example_sampled_softmax_loss(w, b, labels, x, 5, sampler=sampler, seed=9),
        tfs.losses.per_example_sampled_softmax_loss(w, b, labels, x, 5, sampled_values=sv),
        rtol=1e-6)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"sampled_values": None}, ValueError, "Give a `sampler`"),
    ({"sampled_values": (np.zeros(5, np.int64), np.ones((B, 1)), np.ones(5))}, ValueError,
     r"`sampled_values\[0\]` must have shape \[batch, num_sampled\]"),
    ({"sampled_values": (np.zeros((B, 4), np.int64), np.ones((B, 1)), np.ones((B, 4)))},
     ValueError, r"`sampled_values\[0\]` has 4 columns but `num_sampled`=5"),
    ({"sampled_values": (np.zeros((B, 5), np.int64), np.ones((B, 1)), np.ones((B, 4)))},
     ValueError, r"`sampled_values\[2\]` must have shape \[None, 5\]"),
    ({"sampled_values": (np.zeros((B + 1, 5), np.int64), np.ones((B + 1, 1)),
                         np.ones((B + 1, 5)))},
     tf.errors.InvalidArgumentError, "`sampled_values` must have one row per row"),
    ({"sampled_values": (np.full((B, 5), V), np.ones((B, 1)), np.ones((B, 5)))},
     tf.errors.InvalidArgumentError,
     r"`sampled_values\[0\]` has ids outside \[0, num_classes=40\)"),
    ({"num_sampled": 0}, ValueError, "`num_sampled` must be a positive integer"),
    ({"labels": np.full((B, 1), V)}, tf.errors.InvalidArgumentError, "`labels` has ids outside"),
    ({"labels": np.full((B, 1), -1), "sampled_values": None,
      "sampler": tfs.samplers.UniformSampler(V)},
     tf.errors.InvalidArgumentError, "`labels` has ids outside"),
    ({"labels": np.zeros((B, 1), np.float32)}, TypeError, "`labels` must be an integer"),
    ({"labels": np.zeros((B, 3), np.int64)}, ValueError, "`labels` has 3 columns but `num_true`=1"),
    ({"sampler": tfs.samplers.UniformSampler(V + 1), "sampled_values": None}, ValueError,
     "`sampler` has num_classes=41"),
    ({"num_classes": V + 1}, ValueError, "`num_classes`=41 but `weights` has 40 rows"),
])
def test_per_example_errors(kwargs, exc, match):
    w, b, x, labels, sv = _per_example_problem(1)
    kwargs.setdefault("labels", labels)
    kwargs.setdefault("num_sampled", 5)
    kwargs.setdefault("sampled_values", sv)
    with pytest.raises(exc, match=match):
        tfs.losses.per_example_sampled_softmax_loss(w, b, inputs=x, **kwargs)


# ---------------------------------------------------------------------------- the example
def test_ranking_example_runs_and_ragged_equals_dense(capsys):
    spec = importlib.util.spec_from_file_location(
        "ranking_example", os.path.join(REPO, "examples", "ranking.py"))
    ranking = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ranking)
    res = ranking.main(["--num-items", "200", "--train", "600", "--test", "300", "--dim", "16",
                        "--epochs", "2", "--batch", "64", "--median-shown", "8",
                        "--max-shown", "60", "--lr", "0.02"])
    line = [l for l in capsys.readouterr().out.splitlines() if l.startswith("RESULT ")][-1]
    assert json.loads(line[len("RESULT "):]) == json.loads(json.dumps(res))
    # Same start, same batches, same loss: the two runs end with the same weights.
    assert res["max_abs_weight_diff_ragged_vs_dense"] < 1e-3
    assert res["ragged"]["train_loss"][-1] < res["ragged"]["train_loss"][0]
    assert abs(res["ragged"]["top1"] - res["dense"]["top1"]) <= 2 / 300
    # Learned something: well above guessing among the shown items.
    assert res["ragged"]["top1"] > 2 * res["random_top1"]
    assert res["dense_slots_per_real_candidate"] > 1.5

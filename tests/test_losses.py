"""The functional sampled losses against TF's own functions and NumPy references."""

import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs
from _helpers import value_and_grads

V, D, B, S = 1000, 16, 24, 64


def _data(num_true, seed=0, dtype=np.float32, scale=0.3):
    rng = np.random.default_rng(seed)
    w = (rng.normal(size=(V, D)) * scale).astype(dtype)
    b = (rng.normal(size=V) * scale).astype(dtype)
    x = (rng.normal(size=(B, D))).astype(dtype)
    # Labels from the frequent (low) ids, so that the log-uniform sample hits them.
    labels = rng.integers(0, 40, size=(B, num_true)).astype(np.int64)
    return w, b, x, labels


def _sampled(labels, num_true, seed=1):
    return tf.random.log_uniform_candidate_sampler(
        labels, num_true=num_true, num_sampled=S, unique=True, range_max=V, seed=seed)


def _assert_all_close(ours, ref):
    for name, a, r in zip(["loss", "d_inputs", "d_weights", "d_biases"], ours, ref):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("num_true", [1, 3])
@pytest.mark.parametrize("remove_hits", [True, False])
@pytest.mark.parametrize("kind", ["softmax", "nce"])
def test_equals_tf_values_and_gradients(kind, num_true, remove_hits):
    w, b, x, labels = _data(num_true)
    if num_true == 3:
        labels[0] = [1, 1, 0]  # a repeated true class: still one -FLT_MAX, as TF
    sv = _sampled(labels, num_true)
    hits = tf.nn.compute_accidental_hits(labels, sv[0], num_true=num_true)[0]
    assert int(tf.size(hits)) > 0  # the remove_accidental_hits path is exercised
    ours_fn = {"softmax": tfs.losses.sampled_softmax_loss, "nce": tfs.losses.nce_loss}[kind]
    ref_fn = {"softmax": tf.nn.sampled_softmax_loss, "nce": tf.nn.nce_loss}[kind]

    def ours(w_, b_, x_):
        return ours_fn(w_, b_, labels, x_, S, V, num_true=num_true, sampled_values=sv,
                       remove_accidental_hits=remove_hits)

    def ref(w_, b_, x_):
        return ref_fn(w_, b_, labels, x_, S, V, num_true=num_true, sampled_values=sv,
                      remove_accidental_hits=remove_hits)

    _assert_all_close(value_and_grads(ours, w, b, x), value_and_grads(ref, w, b, x))


@pytest.mark.parametrize("kind", ["softmax", "nce"])
def test_three_shards_equal_unsharded_and_tf(kind):
    num_true = 2
    w, b, x, labels = _data(num_true, seed=3)
    # Ids 0 and 999 and a shard boundary (334) are among the true classes.
    labels[:3] = [[0, 999], [333, 334], [666, 667]]
    sv = _sampled(labels, num_true, seed=4)
    ours_fn = {"softmax": tfs.losses.sampled_softmax_loss, "nce": tfs.losses.nce_loss}[kind]
    ref_fn = {"softmax": tf.nn.sampled_softmax_loss, "nce": tf.nn.nce_loss}[kind]
    div = [334, 333, 333]  # TF's "div" layout of 1000 rows in 3 shards
    bounds = np.cumsum([0] + div)

    def sharded(fn):
        def f(w_, b_, x_):
            shards = [w_[bounds[i]:bounds[i + 1]] for i in range(3)]
            return fn(shards, b_, labels, x_, S, V, num_true=num_true, sampled_values=sv)
        return f

    def whole(w_, b_, x_):
        return ours_fn(w_, b_, labels, x_, S, V, num_true=num_true, sampled_values=sv)

    ref = value_and_grads(whole, w, b, x)
    _assert_all_close(value_and_grads(sharded(ours_fn), w, b, x), ref)
    _assert_all_close(value_and_grads(sharded(ref_fn), w, b, x), ref)


def test_uneven_shards_and_sharded_biases_read_as_concatenation():
    w, b, x, labels = _data(1, seed=5)
    labels[:2] = [[99], [100]]
    sv = _sampled(labels, 1, seed=6)
    cuts = [0, 100, 150, V]  # not TF's div layout
    w_shards = [tf.Variable(w[cuts[i]:cuts[i + 1]]) for i in range(3)]
    b_shards = [tf.Variable(b[cuts[i]:cuts[i + 1]]) for i in range(3)]
    with tf.GradientTape() as tape:
        got = tfs.losses.sampled_softmax_loss(w_shards, b_shards, labels, x, S, V,
                                              sampled_values=sv)
        total = tf.reduce_sum(got)
    grads = tape.gradient(total, w_shards)
    want = tf.nn.sampled_softmax_loss(w, b, labels, x, S, V, sampled_values=sv)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # The weight gradients stay sparse (IndexedSlices), as with an embedding lookup.
    assert all(isinstance(g, tf.IndexedSlices) for g in grads)


def _np_log_sigmoid(z):
    return -np.logaddexp(0.0, -z)


@pytest.mark.parametrize("num_true", [1, 3])
@pytest.mark.parametrize("use_bias", [True, False])
def test_negative_sampling_equals_numpy_sgns(num_true, use_bias):
    w, b, x, labels = _data(num_true, seed=7)
    sampled = np.array([5, 17, 2, 400, 999, 0, 31], np.int64)  # 0 and 2 can be hits
    n = len(sampled)
    sv = (sampled, np.full((B, num_true), 0.5, np.float32), np.full(n, 0.25, np.float32))
    got = tfs.losses.negative_sampling_loss(
        w, b if use_bias else None, labels, x, n, V, num_true=num_true, sampled_values=sv)
    bias = b if use_bias else np.zeros(V, np.float32)
    x64, w64, b64 = x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64)
    want = np.zeros(B)
    for i in range(B):
        for t in labels[i]:
            want[i] -= _np_log_sigmoid(x64[i] @ w64[t] + b64[t])  # no log Q, target 1
        for s in sampled:
            want[i] -= _np_log_sigmoid(-(x64[i] @ w64[s] + b64[s]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_sampled_softmax_without_log_q_equals_numpy():
    w, b, x, labels = _data(1, seed=8)
    sampled = np.array([3, 1, 500, 77], np.int64)
    labels[0, 0] = 500  # an accidental hit in row 0
    sv = (sampled, np.full((B, 1), 0.1, np.float32), np.full(4, 0.2, np.float32))
    got = tfs.losses.sampled_softmax_loss(w, b, labels[:, 0], x, 4, V, sampled_values=sv,
                                          subtract_log_q=False)
    logits = x.astype(np.float64) @ w.astype(np.float64).T + b
    want = []
    for i in range(B):
        keep = sampled[sampled != labels[i, 0]]
        row = np.concatenate([[logits[i, labels[i, 0]]], logits[i, keep]])
        want.append(np.logaddexp.reduce(row) - row[0])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("loss_fn", [tfs.losses.sampled_softmax_loss, tfs.losses.nce_loss,
                                     tfs.losses.negative_sampling_loss])
def test_half_precision_large_logits_stay_finite(dtype, loss_fn):
    # Logits around 1e5 overflow float16 (max 65504); computing in float32 they do not.
    w, b, x, labels = _data(1, seed=9, scale=1.0)
    w = w * 300.0
    x = x * 100.0
    sv = _sampled(labels, 1, seed=10)
    w_h, b_h, x_h = (tf.cast(t, dtype) for t in (w, b, x))
    assert float(tf.reduce_max(tf.abs(tf.cast(x_h, tf.float32) @ tf.transpose(
        tf.cast(w_h, tf.float32))))) > 65504.0
    xv = tf.Variable(x_h)
    with tf.GradientTape() as tape:
        loss = loss_fn(w_h, b_h, labels, xv, S, V, sampled_values=sv)
        total = tf.reduce_sum(loss)
    grad = tape.gradient(total, xv)
    assert loss.dtype == tf.float32
    assert np.all(np.isfinite(loss.numpy()))
    assert np.all(np.isfinite(tf.cast(grad, tf.float32).numpy()))
    # Same result as float32 on the same (rounded) values.
    ref = loss_fn(*(tf.cast(t, tf.float32) for t in (w_h, b_h)), labels,
                  tf.cast(x_h, tf.float32), S, V, sampled_values=sv)
    np.testing.assert_allclose(loss, ref, rtol=1e-6)


def test_own_sampler_seeded_and_fresh_draws():
    w, b, x, labels = _data(1, seed=11)
    a = tfs.losses.sampled_softmax_loss(w, b, labels, x, S, V, seed=5)
    again = tfs.losses.sampled_softmax_loss(w, b, labels, x, S, V, seed=5)
    np.testing.assert_array_equal(a, again)
    sampler = tfs.samplers.UniformSampler(V, seed=3)
    first = tfs.losses.nce_loss(w, b, labels, x, S, V, sampler=sampler)
    second = tfs.losses.nce_loss(w, b, labels, x, S, V, sampler=sampler)
    assert not np.allclose(first, second)  # the sampler's seed generator advanced

    @tf.function
    def step(y, h):
        return tfs.losses.sampled_softmax_loss(w, b, y, h, S, V, sampler="uniform")

    # Named samplers are created outside the trace, so a retrace (new shape) works.
    assert step(labels, x).shape == [B]
    assert step(labels[:5], x[:5]).shape == [5]


def test_labels_of_rank_one_equal_rank_two():
    w, b, x, labels = _data(1, seed=12)
    sv = _sampled(labels, 1)
    a = tfs.losses.sampled_softmax_loss(w, b, labels[:, 0].astype(np.int32), x, S, V,
                                        sampled_values=sv)
    c = tfs.losses.sampled_softmax_loss(w, b, labels, x, S, V, sampled_values=sv)
    np.testing.assert_array_equal(a, c)


def test_bad_arguments_name_the_argument():
    w, b, x, labels = _data(1, seed=13)
    sv = _sampled(labels, 1)
    ssl = tfs.losses.sampled_softmax_loss
    with pytest.raises(tf.errors.InvalidArgumentError, match="`labels` has ids outside"):
        ssl(w, b, labels + V, x, S, V, sampled_values=sv)
    with pytest.raises(tf.errors.InvalidArgumentError, match="`labels` has ids outside"):
        ssl(w, b, labels - 100, x, S, V, sampled_values=sv)
    with pytest.raises(TypeError, match="`labels` must be an integer"):
        ssl(w, b, labels.astype(np.float32), x, S, V, sampled_values=sv)
    with pytest.raises(ValueError, match="`labels` must have shape"):
        ssl(w, b, labels[:, :, None], x, S, V, sampled_values=sv)
    with pytest.raises(ValueError, match="`labels` must have shape"):
        ssl(w, b, labels, x, S, V, num_true=2, sampled_values=sv)
    with pytest.raises(ValueError, match="`num_sampled` must be a positive"):
        ssl(w, b, labels, x, 0, V)
    with pytest.raises(ValueError, match="`num_sampled`=1001 is larger than `num_classes`"):
        ssl(w, b, labels, x, V + 1, V)
    with pytest.raises(ValueError, match="`weights` has 1000 rows"):
        ssl(w, b, labels, x, S, V + 1, sampled_values=sv)
    with pytest.raises(ValueError, match="`weights` must be"):
        ssl(w[0], b, labels, x, S, V, sampled_values=sv)
    with pytest.raises(ValueError, match="`inputs` must have shape"):
        ssl(w, b, labels, x[0], S, V, sampled_values=sv)
    with pytest.raises(TypeError, match="`inputs` must be a float"):
        ssl(w, b, labels, labels, S, V, sampled_values=sv)
    with pytest.raises(ValueError, match="`labels` has 24 rows but `inputs` has 23"):
        ssl(w, b, labels, x[1:], S, V, sampled_values=sv)
    with pytest.raises(ValueError, match="`sampler` has num_classes=10"):
        ssl(w, b, labels, x, 5, V, sampler=tfs.samplers.UniformSampler(10))
    with pytest.raises(ValueError, match="`sampled_values"):
        ssl(w, b, labels, x, S, V, sampled_values=sv[:2])
    with pytest.raises(ValueError, match="num_sampled=5"):
        ssl(w, b, labels, x, 5, V, sampled_values=sv)

    @tf.function
    def in_graph(y):
        return ssl(w, b, y, x, S, V, sampled_values=sv)

    # In a graph the check runs before anything that uses the labels.
    with pytest.raises(tf.errors.InvalidArgumentError, match="`labels` has ids outside"):
        in_graph(tf.constant(labels + V))

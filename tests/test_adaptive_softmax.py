"""AdaptiveSoftmax against a NumPy transcription of PyTorch's AdaptiveLogSoftmaxWithLoss."""

import json
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs

import _helpers


# ---------------------------------------------------------------------------------------------
# NumPy reference, transcribed from torch/nn/modules/adaptive.py (AdaptiveLogSoftmaxWithLoss):
# same constructor checks, parameter shapes in PyTorch's [out, in] layout, `forward`,
# `_get_full_log_prob` and `predict`, step by step.
def np_log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


class TorchAdaptiveRef:
    def __init__(self, in_features, n_classes, cutoffs, div_value, head_bias, rng, scale=0.5):
        self.cutoffs = list(cutoffs) + [n_classes]
        self.n_classes = n_classes
        self.shortlist_size = self.cutoffs[0]
        self.n_clusters = len(self.cutoffs) - 1
        self.head_size = self.shortlist_size + self.n_clusters
        # head = Linear(in_features, head_size, bias=head_bias): weight [out, in]
        self.head_weight = scale * rng.standard_normal((self.head_size, in_features))
        self.head_bias = scale * rng.standard_normal(self.head_size) if head_bias else None
        self.tail = []
        for i in range(self.n_clusters):
            hsz = int(in_features // (div_value ** (i + 1)))
            osz = self.cutoffs[i + 1] - self.cutoffs[i]
            self.tail.append((scale * rng.standard_normal((hsz, in_features)),
                              scale * rng.standard_normal((osz, hsz))))

    def head(self, x):
        out = x @ self.head_weight.T
        return out if self.head_bias is None else out + self.head_bias

    def tail_forward(self, i, x):
        i2h, h2o = self.tail[i]
        return (x @ i2h.T) @ h2o.T

    def forward(self, x, target):
        batch_size = target.shape[0]
        output = np.zeros(batch_size)
        gather_inds = np.empty(batch_size, dtype=np.int64)
        cutoff_values = [0] + self.cutoffs
        used_rows = 0
        for i in range(len(cutoff_values) - 1):
            low_idx, high_idx = cutoff_values[i], cutoff_values[i + 1]
            target_mask = (target >= low_idx) & (target < high_idx)
            row_indices = np.nonzero(target_mask)[0]
            if row_indices.size == 0:
                continue
            if i == 0:
                gather_inds[row_indices] = target[target_mask]
            else:
                relative_target = target[target_mask] - low_idx
                cluster_output = self.tail_forward(i - 1, x[row_indices])
                gather_inds[row_indices] = self.shortlist_size + i - 1
                cluster_logprob = np_log_softmax(cluster_output)
                output[row_indices] = cluster_logprob[np.arange(row_indices.size),
                                                      relative_target]
            used_rows += row_indices.size
        assert used_rows == batch_size
        head_logprob = np_log_softmax(self.head(x))
        output += head_logprob[np.arange(batch_size), gather_inds]
        return output, (-output).mean()

    def log_prob(self, x):
        head_output = self.head(x)
        out = np.empty((x.shape[0], self.n_classes))
        head_logprob = np_log_softmax(head_output)
        out[:, :self.shortlist_size] = head_logprob[:, :self.shortlist_size]
        for i, (start, stop) in enumerate(zip(self.cutoffs, self.cutoffs[1:])):
            cluster_logprob = np_log_softmax(self.tail_forward(i, x))
            out[:, start:stop] = cluster_logprob + head_logprob[:, self.shortlist_size + i, None]
        return out

    def predict(self, x):
        output = np.argmax(self.head(x), axis=1)
        not_in_shortlist = output >= self.shortlist_size
        if not not_in_shortlist.any():
            return output
        output[not_in_shortlist] = np.argmax(self.log_prob(x[not_in_shortlist]), axis=1)
        return output

    def load_into(self, layer):
        """Copies the PyTorch-layout weights into the Keras layer (kernels are transposed)."""
        layer.head_kernel.assign(self.head_weight.T)
        if self.head_bias is not None:
            layer.head_bias_weight.assign(self.head_bias)
        for i, (i2h, h2o) in enumerate(self.tail):
            layer.tail_projections[i].assign(i2h.T)
            layer.tail_kernels[i].assign(h2o.T)


def make_pair(in_features=16, n_classes=30, cutoffs=(6, 14), div_value=2.0, head_bias=False,
              seed=0, dtype="float32", scale=0.5):
    rng = np.random.default_rng(seed)
    ref = TorchAdaptiveRef(in_features, n_classes, cutoffs, div_value, head_bias, rng, scale)
    layer = tfs.layers.AdaptiveSoftmax(n_classes, list(cutoffs), div_value=div_value,
                                       use_bias=head_bias, dtype=dtype)
    layer.build((None, in_features))
    ref.load_into(layer)
    return ref, layer, rng


# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", [
    dict(cutoffs=(6, 14), div_value=2.0, head_bias=False),
    dict(cutoffs=(6, 14), div_value=4.0, head_bias=True),
    dict(cutoffs=(3, 9, 20), div_value=1.5, head_bias=True),
])
def test_matches_pytorch_definition(config):
    ref, layer, rng = make_pair(**config)
    x = rng.standard_normal((40, 16)).astype(np.float32)
    # Labels cover the shortlist and every cluster (and leave no cluster empty by chance).
    y = np.concatenate([np.arange(30), rng.integers(0, 30, 10)])
    ref_out, ref_loss = ref.forward(x.astype(np.float64), y)

    np.testing.assert_allclose(layer.log_prob(x).numpy(), ref.log_prob(x.astype(np.float64)),
                               atol=2e-5)
    per_example = layer([x, y], training=True)
    np.testing.assert_allclose(per_example.numpy(), -ref_out, atol=2e-5)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), ref_loss, atol=2e-5)
    np.testing.assert_array_equal(layer.predict(x).numpy(), ref.predict(x.astype(np.float64)))


def test_float64_matches_reference_tightly_and_finite_differences():
    ref, layer, rng = make_pair(cutoffs=(4, 10), n_classes=18, in_features=8, div_value=2.0,
                                head_bias=True, dtype="float64", seed=1)
    x = rng.standard_normal((12, 8))
    y = np.array([0, 3, 4, 9, 10, 17, 1, 5, 11, 16, 2, 7])
    np.testing.assert_allclose(layer.log_prob(x).numpy(), ref.log_prob(x), atol=1e-12)

    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_mean(layer.nll(xt, y))
    grads = tape.gradient(loss, [xt] + layer.trainable_weights)

    # Central differences of the NumPy reference loss at a few coordinates of every tensor.
    # float64, eps=1e-6: truncation O(eps^2) and rounding O(1e-16/eps) are both << 1e-7.
    def ref_loss():
        return ref.forward(x, y)[1]

    targets = [(x, grads[0], False)]
    params = [ref.head_weight, ref.head_bias] + [w for pair in ref.tail for w in pair]
    for p, g in zip(params, grads[1:]):
        targets.append((p, g, p.ndim == 2))  # Keras kernels are the transposed torch weights
    eps = 1e-6
    for array, grad, transposed in targets:
        grad = grad.numpy().T if transposed else grad.numpy()
        for flat in rng.choice(array.size, size=min(4, array.size), replace=False):
            idx = np.unravel_index(flat, array.shape)
            old = array[idx]
            array[idx] = old + eps
            up = ref_loss()
            array[idx] = old - eps
            down = ref_loss()
            array[idx] = old
            np.testing.assert_allclose(grad[idx], (up - down) / (2 * eps), atol=1e-7)


def test_gradients_match_brute_force_full_log_prob():
    ref, layer, rng = make_pair(head_bias=True, seed=2)
    x = tf.constant(rng.standard_normal((32, 16)), tf.float32)
    y = tf.constant(rng.integers(0, 30, 32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        fast = tf.reduce_mean(layer.nll(x, y))
        brute = -tf.reduce_mean(tf.gather(layer.log_prob(x), y, batch_dims=1))
    variables = [x] + layer.trainable_weights
    for g_fast, g_brute in zip(tape.gradient(fast, variables), tape.gradient(brute, variables)):
        np.testing.assert_allclose(g_fast.numpy(), g_brute.numpy(), atol=1e-6)


def test_log_prob_normalised_with_leading_axes():
    _, layer, rng = make_pair(seed=3, scale=1.5)
    x = rng.standard_normal((2, 5, 16)).astype(np.float32)
    lp = layer.log_prob(x)
    assert lp.shape == (2, 5, 30)
    np.testing.assert_allclose(tf.reduce_sum(tf.exp(lp), -1).numpy(), 1.0, atol=1e-5)
    y = rng.integers(0, 30, (2, 5))
    nll = layer([x, y])
    assert nll.shape == (2, 5)
    picked = np.take_along_axis(lp.numpy(), y[..., None], -1)[..., 0]
    np.testing.assert_allclose(nll.numpy(), -picked, atol=1e-5)
    # A trailing label axis of 1 is accepted too.
    np.testing.assert_allclose(layer([x, y[..., None]]).numpy(), nll.numpy())


@pytest.mark.parametrize("boost", [0.0, 4.0])
@pytest.mark.parametrize("k", [1, 3, 8, 30])
def test_predict_top_k_is_exact(boost, k):
    ref, layer, rng = make_pair(cutoffs=(6, 14), seed=4, scale=1.0)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    if boost:
        # Raise the cluster logits along one input direction: rows with x[:, 0] > 0 then
        # need the tails and the others mostly do not, so both branches of the pruning run.
        w = layer.head_kernel.numpy()
        w[0, 6:] += boost
        layer.head_kernel.assign(w)
    lp = layer.log_prob(x)
    want_v, want_i = tf.math.top_k(lp, k)
    got_v, got_i = layer.top_k(x, k)
    np.testing.assert_array_equal(got_i.numpy(), want_i.numpy())
    np.testing.assert_allclose(got_v.numpy(), want_v.numpy(), atol=1e-5)
    np.testing.assert_array_equal(layer.predict(x).numpy(), np.argmax(lp.numpy(), axis=1))
    if boost:
        in_clusters = np.argmax(lp.numpy(), 1) >= 6
        assert 0 < in_clusters.sum() < len(x)


def test_call_conventions_and_top_k_option():
    layer = tfs.layers.AdaptiveSoftmax(30, [6, 14], top_k=4)
    x = tf.random.stateless_normal([5, 16], seed=[1, 2])
    y = tf.constant([0, 7, 20, 29, 3])
    values, indices = layer(x)
    assert values.shape == (5, 4) and indices.dtype == tf.int32
    want = tf.math.top_k(layer.log_prob(x), 4)
    np.testing.assert_array_equal(indices.numpy(), want.indices.numpy())
    # Inference with labels still reports the exact loss for model.evaluate.
    layer([x, y], training=False)
    np.testing.assert_allclose(float(layer.losses[0]), float(tf.reduce_mean(layer.nll(x, y))),
                               rtol=1e-6)
    assert layer.compute_output_shape((None, 16)) == ((None, 4), (None, 4))
    assert layer.compute_output_shape([(None, 16), (None,)]) == (None,)
    plain = tfs.layers.AdaptiveSoftmax(30, [6, 14])
    assert plain.compute_output_shape((3, 7, 16)) == (3, 7, 30)


def _toy_data(n, d=16, classes=30, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, d)).astype(np.float32)
    y = np.minimum(rng.zipf(1.3, n) - 1, classes - 1).astype(np.int64)
    x = centers[y] + 0.3 * rng.standard_normal((n, d)).astype(np.float32)
    return x, y


def _train_model(layer):
    hidden = keras.Input((16,))
    labels = keras.Input((), dtype="int64")
    model = keras.Model([hidden, labels], layer([hidden, labels]))
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    return model


def test_fit_evaluate_and_keras_round_trip(tmp_path):
    layer = tfs.layers.AdaptiveSoftmax(30, [6, 14], use_bias=True)
    model = _train_model(layer)
    x, y = _toy_data(512)
    before = model.evaluate([x, y], verbose=0, batch_size=128)
    # evaluate adds the exact NLL (training=False path): it equals the mean per-example NLL.
    np.testing.assert_allclose(before, float(tf.reduce_mean(layer.nll(x, y))), rtol=1e-5)
    hist = model.fit([x, y], epochs=5, batch_size=64, verbose=0)
    after = model.evaluate([x, y], verbose=0, batch_size=128)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    # A well-separated toy problem: the trained NLL is far below the untrained one.
    assert after < 0.5 * before

    path = str(tmp_path / "adaptive.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    head = [lyr for lyr in loaded.layers if isinstance(lyr, tfs.layers.AdaptiveSoftmax)][0]
    assert head.get_config() == layer.get_config()
    np.testing.assert_allclose(head.log_prob(x[:50]).numpy(), layer.log_prob(x[:50]).numpy(),
                               atol=1e-6)
    np.testing.assert_allclose(loaded.evaluate([x, y], verbose=0, batch_size=128), after,
                               rtol=1e-5)


def test_saved_model_serves_without_tf_sampling(tmp_path):
    _, layer, rng = make_pair(seed=5, head_bias=True)
    x = rng.standard_normal((6, 16)).astype(np.float32)

    class Serving(tf.Module):
        def __init__(self, head):
            super().__init__()
            self.head = head

        @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32)])
        def log_prob(self, hidden):
            return {"log_probs": self.head.log_prob(hidden)}

        @tf.function(input_signature=[tf.TensorSpec([None, 16], tf.float32)])
        def top_k(self, hidden):
            values, indices = self.head.top_k(hidden, 5)
            return {"values": values, "indices": indices}

    module = Serving(layer)
    export_dir = str(tmp_path / "export")
    tf.saved_model.save(module, export_dir, signatures={
        "serving_default": module.log_prob, "top_k": module.top_k})
    np.save(tmp_path / "x.npy", x)
    # Keras' own export of a model whose output is the head's inference path.
    hidden = keras.Input((16,))
    keras.Model(hidden, layer(hidden)).export(str(tmp_path / "keras_export"),
                                              format="tf_saved_model", verbose=False)

    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load({export_dir!r})
        x = tf.constant(np.load({str(tmp_path / "x.npy")!r}))
        lp = m.signatures["serving_default"](hidden=x)["log_probs"].numpy()
        top = m.signatures["top_k"](hidden=x)
        keras_model = tf.saved_model.load({str(tmp_path / "keras_export")!r})
        keras_lp = keras_model.serve(x).numpy()
        assert np.allclose(keras_lp, lp, atol=1e-6)
        assert not any(name.startswith("tf_sampling") for name in sys.modules)
        print(json.dumps({{"lp": lp.tolist(), "idx": top["indices"].numpy().tolist()}}))
    """)
    proc = _helpers.run_clean(script, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(np.array(served["lp"]), layer.log_prob(x).numpy(), atol=1e-6)
    np.testing.assert_array_equal(np.array(served["idx"]),
                                  tf.math.top_k(layer.log_prob(x), 5).indices.numpy())


# --------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("cutoffs, match", [
    ([], "at least one"),
    ([0, 5], r"\[1, num_classes - 1\]"),
    ([-3], r"\[1, num_classes - 1\]"),
    ([5, 30], r"\[1, num_classes - 1\]"),
    ([10, 5], "sorted"),
    ([5, 5, 9], "unique"),
    ([2.5, 6], "integers"),
    (7, "sequence"),
])
def test_bad_cutoffs(cutoffs, match):
    with pytest.raises(ValueError, match="cutoffs"):
        tfs.layers.AdaptiveSoftmax(30, cutoffs)
    with pytest.raises(ValueError, match=match):
        tfs.layers.AdaptiveSoftmax(30, cutoffs)


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_classes=1, cutoffs=[1]), "num_classes"),
    (dict(num_classes=30.0, cutoffs=[5]), "num_classes"),
    (dict(num_classes=30, cutoffs=[5], div_value=0.0), "div_value"),
    (dict(num_classes=30, cutoffs=[5], div_value=float("nan")), "div_value"),
    (dict(num_classes=30, cutoffs=[5], use_bias="yes"), "use_bias"),
    (dict(num_classes=30, cutoffs=[5], top_k=0), "top_k"),
    (dict(num_classes=30, cutoffs=[5], top_k=31), "top_k"),
])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        tfs.layers.AdaptiveSoftmax(**kwargs)


def test_head_bias_is_the_deprecated_name_of_use_bias():
    with pytest.warns(DeprecationWarning, match="`head_bias` is deprecated"):
        layer = tfs.layers.AdaptiveSoftmax(30, [6, 14], head_bias=True)
    assert layer.use_bias and layer.get_config()["use_bias"] is True
    with pytest.raises(ValueError, match="use_bias"):
        tfs.layers.AdaptiveSoftmax(30, [6, 14], head_bias=False, use_bias=True)
    # A config saved under the old name loads without a warning.
    old = dict(layer.get_config())
    old["head_bias"] = old.pop("use_bias")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tfs.layers.AdaptiveSoftmax.from_config(old).use_bias


def test_bad_inputs_and_labels():
    layer = tfs.layers.AdaptiveSoftmax(30, [6, 14])
    x = tf.zeros([4, 16])
    layer.build((None, 16))
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        layer.nll(x, tf.constant([0, 1, 30, 2]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels"):
        layer.nll(x, tf.constant([0, -1, 3, 2]))
    with pytest.raises(TypeError, match="labels"):
        layer.nll(x, tf.constant([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="labels"):
        layer.nll(x, tf.constant([[0, 1], [2, 3], [4, 5], [6, 7]]))
    with pytest.raises(ValueError, match="labels"):
        layer.nll(x, tf.constant([0, 1, 2]))
    with pytest.raises(ValueError, match="inputs"):
        layer.log_prob(tf.zeros([4, 8]))
    with pytest.raises(TypeError, match="inputs"):
        layer.log_prob(tf.zeros([4, 16], tf.int32))
    with pytest.raises(ValueError, match="`k`"):
        layer.top_k(x, 0)
    # div_value so large that a tail projection would have zero units.
    too_deep = tfs.layers.AdaptiveSoftmax(30, [6, 14], div_value=32.0)
    with pytest.raises(ValueError, match="div_value"):
        too_deep.build((None, 16))


def test_mixed_precision_keeps_log_probs_in_float32():
    layer = tfs.layers.AdaptiveSoftmax(30, [6, 14], dtype="mixed_float16")
    x = tf.random.stateless_normal([4, 16], seed=[3, 4])
    lp = layer.log_prob(x)
    # float16 matmuls, float32 log_softmax: rare classes keep their small probabilities.
    assert lp.dtype == tf.float32
    np.testing.assert_allclose(tf.reduce_sum(tf.exp(lp), -1).numpy(), 1.0, atol=1e-5)
    assert layer([x, tf.constant([1, 2, 20, 29])]).dtype == tf.float32

"""Row step multipliers: `SparseAdam(row_step_samples=R)` / `RowwiseAdagrad(...)` and the
inclusion probabilities behind them (`tfs.samplers.inclusion_probability`).

The claim checked end to end: training a sampled head with `row_step_samples=R` is plain
Adam on the reparameterised rows `s_j * w_j`, `s_j = sqrt(E_j(R) / E_j(num_sampled))`.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs

V, D, B, N, R = 300, 8, 16, 20, 80


# ----------------------------------------------------------------- inclusion probability
@pytest.mark.parametrize("make", [
    lambda: tfs.samplers.LogUniformSampler(V),
    lambda: tfs.samplers.UniformSampler(V),
    lambda: tfs.samplers.FixedUnigramSampler(V, counts=[(i % 7) * (i % 3) for i in range(V)]),
], ids=["log_uniform", "uniform", "fixed_unigram_with_zeros"])
def test_inclusion_probabilities_sum_to_the_sample_size(make):
    sampler = make()
    for k in (1, N, R, 150):
        e = tfs.samplers.inclusion_probability(sampler, np.arange(V), k).numpy()
        assert np.all((e >= 0) & (e <= 1))
        np.testing.assert_allclose(e.sum(), k, rtol=1e-6)
    q = sampler.probability(np.arange(V)).numpy()
    np.testing.assert_array_equal(e[q == 0], 0.0)
    # Not unique: the expected count.
    np.testing.assert_allclose(
        tfs.samplers.inclusion_probability(sampler, np.arange(V), N, unique=False).numpy(),
        q * N, rtol=1e-6)


def test_inclusion_probability_matches_the_sampled_frequencies():
    """4,000 independent unique log-uniform samples of 20 of 300 classes (one per row, each
    row its own stream): each class's frequency against its inclusion probability E, which
    uses one stream length T for all samples. A class's count is a sum of 4,000 independent
    Bernoulli draws, so its z-score has variance 1. For classes with E < 0.5 the largest
    |z| of ~290 stays below 4.5 (a 2e-3 chance under the normal approximation). Above, the
    fixed T overstates E (E is concave in T, and T varies between samples; measured 0.008
    for class 0 at E = 0.994), so those get 0.015 beside 4.5 standard deviations."""
    sampler = tfs.samplers.LogUniformSampler(V, seed=5)
    n = 4000
    sampled, _, _ = sampler.sample(tf.zeros([n, 1], tf.int64), N, per_example=True)
    freq = np.bincount(sampled.numpy().ravel(), minlength=V) / n
    e = tfs.samplers.inclusion_probability(sampler, np.arange(V), N).numpy()
    sd = np.sqrt(e * (1 - e) / n)
    rare = e < 0.5
    assert rare.sum() > 250
    assert np.abs((freq - e)[rare] / sd[rare]).max() < 4.5
    assert np.all(np.abs(freq - e)[~rare] < 0.015 + 4.5 * sd[~rare])


def test_inclusion_probability_is_the_samplers_average_expected_count():
    """The sampler's expected count of a class uses the draw's own stream length, which
    varies; its average over 200 draws is within 2% of the inclusion probability."""
    sampler = tfs.samplers.LogUniformSampler(500, seed=0)
    ids = np.array([0, 3, 30, 200, 499])
    got = np.mean([sampler.sample(tf.constant(ids[:, None]), 64).true_expected_count
                   .numpy()[:, 0] for _ in range(200)], axis=0)
    want = tfs.samplers.inclusion_probability(sampler, ids, 64).numpy()
    np.testing.assert_allclose(want, got, rtol=0.02)


def test_inclusion_probability_edges():
    sampler = tfs.samplers.UniformSampler(V)
    np.testing.assert_array_equal(
        tfs.samplers.inclusion_probability(sampler, [0, 7], V).numpy(), [1.0, 1.0])
    assert tfs.samplers.unique_tries(sampler, V) == np.inf
    with pytest.raises(ValueError, match="changes its distribution"):
        tfs.samplers.inclusion_probability(tfs.samplers.LearnedUnigramSampler(V), [0], N)
    with pytest.raises(ValueError, match="num_sampled"):
        tfs.samplers.unique_tries(sampler, 0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside"):
        tfs.samplers.inclusion_probability(sampler, [V], N)


# ----------------------------------------------------------------- the optimizer step
def _scales(head, num_sampled, reference):
    e_own = tfs.samplers.inclusion_probability(head.sampler, np.arange(V), num_sampled)
    e_ref = tfs.samplers.inclusion_probability(head.sampler, np.arange(V),
                                               min(reference, V))
    return np.sqrt(e_ref.numpy() / e_own.numpy()).astype(np.float32)


class _Reparameterised(tfs.layers.SampledSoftmax):
    """The reference: row j of the output layer is `s_j * w_j` (a dense read of the
    table), so that plain Adam moves it `s_j` times as far."""

    def __init__(self, *args, scale, **kwargs):
        super().__init__(*args, **kwargs)
        self._scale = tf.constant(scale)

    def _weights_tf(self):
        weights, biases = super()._weights_tf()
        s = self._scale
        return ([w * s[:, None] for w in weights],
                None if biases is None else [b * s for b in biases])


def _batches(steps=10):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * B, D)).astype(np.float32)
    y = (rng.zipf(1.3, steps * B) % V).astype(np.int32)
    return [(x[i * B:(i + 1) * B], y[i * B:(i + 1) * B]) for i in range(steps)]


def _dense():
    return keras.layers.Dense(D, kernel_initializer=keras.initializers.GlorotUniform(seed=2))


def _train(head, optimizer, batches, divide=None):
    """Losses of `train_on_batch` over `batches` (Dense, then `head`), and the head after
    `finalize_variable_values`. `divide`: the head's rows start at w0 / divide."""
    keras.utils.set_random_seed(1)
    x, y = keras.Input((D,)), keras.Input((), dtype="int32")
    model = keras.Model([x, y], head([_dense()(x), y]))
    model.compile(optimizer=optimizer)
    if divide is not None:
        head.kernel.assign(head.kernel / divide[:, None])
        head.bias.assign(head.bias / divide)
    losses = [float(model.train_on_batch(list(b))) for b in batches]
    optimizer.finalize_variable_values(model.trainable_variables)
    return np.array(losses), model


def _log_uniform_head(cls=tfs.layers.SampledSoftmax, **kwargs):
    kwargs.setdefault("sampler", tfs.samplers.LogUniformSampler(V, seed=3))
    return cls(V, N, kernel_initializer=keras.initializers.GlorotUniform(seed=4), **kwargs)


def test_row_steps_are_adam_on_the_reparameterised_rows():
    """8 batches: a `SampledSoftmax` under `SparseAdam(catch_up=True, row_step_samples=80)`
    against the reference head (`s_j * w_j`, its w started at w0 / s so both start at the
    same model) under keras Adam; both draw the same classes. Their losses agree to 1e-5
    (measured 1e-6), the output rows (w against s * w) after `finalize_variable_values` to
    5e-5 (measured 1.5e-5: the reference's rows are w0 / s times s). Without the
    multipliers the losses differ by more than 0.01."""
    batches = _batches(8)
    s = _scales(_log_uniform_head(), N, R)
    want, ref = _train(_log_uniform_head(_Reparameterised, scale=s),
                       keras.optimizers.Adam(0.05, epsilon=1e-10), batches, divide=s)
    got, model = _train(_log_uniform_head(), tfs.optimizers.SparseAdam(
        0.05, epsilon=1e-10, catch_up=True, row_step_samples=R), batches)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    ref_head, head = ref.layers[-1], model.layers[-1]
    np.testing.assert_allclose(head.kernel.numpy(), ref_head.kernel.numpy() * s[:, None],
                               rtol=0, atol=5e-5)
    np.testing.assert_allclose(head.bias.numpy(), ref_head.bias.numpy() * s, rtol=0,
                               atol=5e-5)
    unscaled, _ = _train(_log_uniform_head(), tfs.optimizers.SparseAdam(
        0.05, epsilon=1e-10, catch_up=True), batches)
    assert np.abs(unscaled - want).max() > 0.01


def _one_step(head, optimizer):
    """The change of the head's kernel and bias over one (eager) training step."""
    x, y = (tf.constant(a) for a in _batches(1)[0])
    head.build((None, D))
    before = head.kernel.numpy(), head.bias.numpy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(head([x, y], training=True))
    optimizer.apply(tape.gradient(loss, head.trainable_variables), head.trainable_variables)
    return head.kernel.numpy() - before[0], head.bias.numpy() - before[1]


_OPTIMIZERS = {
    "sparse_adam": lambda **kw: tfs.optimizers.SparseAdam(0.05, **kw),
    "per_row": lambda **kw: tfs.optimizers.SparseAdam(0.05, bias_correction="per_row", **kw),
    "catch_up": lambda **kw: tfs.optimizers.SparseAdam(0.05, catch_up=True, **kw),
    "rowwise_adagrad": lambda **kw: tfs.optimizers.RowwiseAdagrad(0.5, **kw),
}


@pytest.mark.parametrize("optimizer, head_kwargs", [
    ("sparse_adam", {}), ("per_row", {}), ("rowwise_adagrad", {}),
    ("catch_up", {"num_shards": 3}), ("sparse_adam", {"unique": False}),
], ids=["sparse_adam", "per_row", "rowwise_adagrad", "catch_up-sharded",
        "sparse_adam-not_unique"])
def test_first_step_is_the_plain_step_times_the_multipliers(optimizer, head_kwargs):
    """From the same weights and the same sample: row j's first step with
    `row_step_samples=R` is s_j times its step without (kernel and bias; across shards;
    with repeated draws s = sqrt(R / N) for every row), and untouched rows stay put."""
    make = _OPTIMIZERS[optimizer]
    plain = _one_step(_log_uniform_head(**head_kwargs), make())
    scaled = _one_step(_log_uniform_head(**head_kwargs), make(row_step_samples=R))
    if head_kwargs.get("unique", True):
        s = _scales(_log_uniform_head(), N, R)
    else:
        s = np.full(V, np.sqrt(R / N), np.float32)
    touched = np.abs(plain[0]).sum(1) > 0
    assert 10 < touched.sum() < V
    np.testing.assert_array_equal(scaled[0][~touched], 0.0)
    np.testing.assert_allclose(scaled[0], plain[0] * s[:, None], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(scaled[1], plain[1] * s, rtol=1e-5, atol=1e-7)
    assert s[touched].max() > 1.5  # the multipliers are not all 1


def test_dense_gradient_of_a_scaled_variable_gets_the_multipliers():
    """A dense gradient (every row) of a head variable: the step is the same row step,
    all rows at once, so row j moves s_j times keras Adam's step."""
    head = _log_uniform_head()
    head.build((None, D))
    var = head.kernel
    grad = tf.random.stateless_normal((V, D), [1, 2])
    start = var.numpy()
    opt = tfs.optimizers.SparseAdam(0.05, row_step_samples=R)
    opt.apply([grad], [var])
    ref = keras.Variable(start)
    keras.optimizers.Adam(0.05).apply([grad], [ref])
    s = _scales(head, N, R)
    np.testing.assert_allclose(var.numpy() - start, (ref.numpy() - start) * s[:, None],
                               rtol=1e-5, atol=1e-7)


def test_config_and_keras_save_load(tmp_path):
    opt = tfs.optimizers.SparseAdam(0.05, catch_up=True, row_step_samples=R)
    assert tfs.optimizers.SparseAdam.from_config(opt.get_config()).row_step_samples == R
    losses, model = _train(_log_uniform_head(), opt, _batches(3))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    # The loaded model's next step is the original's (the multipliers are declared again
    # when the loaded head is built).
    batch = list(_batches(4)[3])
    np.testing.assert_allclose(loaded.train_on_batch(batch), model.train_on_batch(batch),
                               rtol=1e-6)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("value", [0, -5, 2.5, True, "4096"])
def test_bad_row_step_samples(value):
    for make in (tfs.optimizers.SparseAdam, tfs.optimizers.RowwiseAdagrad):
        with pytest.raises(ValueError, match="row_step_samples"):
            make(row_step_samples=value)


@pytest.mark.parametrize("head", [
    lambda: None,
    lambda: _log_uniform_head(sampler=tfs.samplers.LearnedUnigramSampler(V)),
    lambda: _log_uniform_head(samples_per="example"),
], ids=["no_head", "learning_sampler", "per_example"])
def test_row_step_samples_without_a_head_to_scale_is_an_error(head):
    keras.utils.set_random_seed(1)
    x, y = keras.Input((D,)), keras.Input((), dtype="int32")
    h = keras.layers.Dense(D)(x)
    layer = head()
    out = keras.layers.Dense(1)(h) if layer is None else layer([h, y])
    model = keras.Model([x, y], out)
    model.compile(optimizer=tfs.optimizers.SparseAdam(0.05, row_step_samples=R),
                  loss=None if layer is not None else "mse")
    xb, yb = _batches(1)[0]
    with pytest.raises(ValueError, match="row_step_samples"):
        if layer is None:
            model.train_on_batch([xb, yb], np.zeros((B, 1), "float32"))
        else:
            model.train_on_batch([xb, yb])

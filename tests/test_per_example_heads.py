"""The sampled heads with `samples_per="example"`: each example gets its own draws.

The per-example functional losses (`tfs.losses.per_example_*`) are checked against NumPy
in tests/test_candidate_softmax.py; here the heads are checked against them with the same
sampler seed, and against NumPy where a head's convention differs (NegativeSampling's
target 1 per true class). Last, the parts they share: the samplers' `per_example` option,
and the sampled-logits core given per-example ids, against NumPy.
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

import tf_sampling as tfs
from tf_sampling.layers._sampled_head import shard_rows
from tf_sampling.losses import _sampled_logits

V, D, B, S = 500, 8, 12, 6
HEADS = [tfs.layers.SampledSoftmax, tfs.layers.NCE, tfs.layers.NegativeSampling]
FUNCTIONAL = {
    tfs.layers.SampledSoftmax: tfs.losses.per_example_sampled_softmax_loss,
    tfs.layers.NCE: tfs.losses.per_example_nce_loss,
    tfs.layers.NegativeSampling: tfs.losses.per_example_negative_sampling_loss,
}


def _inputs(seed=0, num_true=1):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(B, D)).astype(np.float32)
    # Labels among the first ids, which log-uniform draws often: accidental hits happen.
    y = rng.integers(0, 10, size=(B, num_true) if num_true > 1 else (B,))
    return h, y.astype(np.int32)


def _sampler(seed=7):
    # Log-uniform: the expected counts differ per class, so a wrong log Q shows.
    return tfs.samplers.LogUniformSampler(V, seed=seed)


def _built(cls, seed=0, **kwargs):
    kwargs.setdefault("sampler", _sampler())
    head = cls(V, S, samples_per="example", bias_initializer="random_normal", **kwargs)
    head.build((None, D))
    head.kernel.assign(np.random.default_rng(seed).normal(size=(V, D)).astype(np.float32))
    return head


def _functional(cls, head, h, y, **kwargs):
    """The per-example functional loss with the head's options and weights."""
    return FUNCTIONAL[cls](
        head.kernel, head.bias, y, h, S, num_classes=V, num_true=head.num_true,
        remove_accidental_hits=head.remove_accidental_hits,
        subtract_log_q=head.subtract_log_q, unique=head.unique, **kwargs)


@pytest.mark.parametrize("unique", [False, True])
@pytest.mark.parametrize("num_true", [1, 2])
@pytest.mark.parametrize("cls", HEADS)
def test_training_loss_equals_the_per_example_functional_loss(cls, num_true, unique):
    head = _built(cls, num_true=num_true, unique=unique)
    h, y = _inputs(num_true=num_true)
    loss = head([h, y], training=True)
    assert loss.shape == [B]
    np.testing.assert_allclose(head.losses[0], tf.reduce_mean(loss), rtol=1e-6)

    y2 = np.reshape(y, (B, num_true))
    # The head's first draw is the first per-example draw of a fresh sampler, same seed.
    sv = tfs.losses.sample_per_example(_sampler(), y2, S, unique=unique)
    assert sv.sampled_candidates.shape == [B, S]
    rows = {tuple(r) for r in sv.sampled_candidates.numpy()}
    assert len(rows) > 1, "every example got the same draws"
    if cls is tfs.layers.NegativeSampling and num_true > 1:
        # Target 1 per true class (as negative_sampling_loss), checked against NumPy too.
        w, b = head.kernel.numpy().astype(np.float64), head.bias.numpy().astype(np.float64)
        ids = sv.sampled_candidates.numpy()
        z_true = np.einsum("bd,btd->bt", h, w[y2]) + b[y2]
        z_sampled = np.einsum("bd,bsd->bs", h, w[ids]) + b[ids]
        want = np.logaddexp(0, -z_true).sum(1) + np.logaddexp(0, z_sampled).sum(1)
        np.testing.assert_allclose(_functional(cls, head, h, y2, sampled_values=sv), want,
                                   rtol=1e-5, atol=1e-5)
    else:
        want = _functional(cls, head, h, y2, sampled_values=sv)
        # A fresh sampler with the same seed gives the same draws inside the loss too.
        np.testing.assert_allclose(_functional(cls, head, h, y2, sampler=_sampler()), want,
                                   rtol=1e-6)
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-5)


def test_example_and_batch_modes_draw_differently():
    h, y = _inputs(seed=1)
    ex = _built(tfs.layers.SampledSoftmax)
    batch = tfs.layers.SampledSoftmax(V, S, sampler=_sampler(), bias_initializer="zeros")
    batch.build((None, D))
    batch.kernel.assign(ex.kernel)
    batch.bias.assign(ex.bias)
    # Batch mode is unchanged: it still equals TF with the shared sample.
    sv = _sampler().sample(np.reshape(y, (B, 1)).astype(np.int64), S)
    want = tf.nn.sampled_softmax_loss(ex.kernel, ex.bias, np.reshape(y, (B, 1)), h, S, V,
                                      sampled_values=sv)
    np.testing.assert_allclose(batch([h, y], training=True), want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(ex([h, y], training=True), want, rtol=1e-3)


@pytest.mark.parametrize("cls", [tfs.layers.SampledSoftmax, tfs.layers.NegativeSampling])
def test_gradients_match_the_functional_loss(cls):
    head = _built(cls, unique=False, num_true=1)
    h, y = _inputs(seed=2)
    hv = tf.Variable(h)
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(head([hv, y], training=True))
    got = tape.gradient(total, [hv, head.kernel, head.bias])

    w, b = tf.Variable(head.kernel.numpy()), tf.Variable(head.bias.numpy())
    with tf.GradientTape() as tape:
        ref = FUNCTIONAL[cls](w, b, y[:, None], hv, S, sampler=_sampler(), unique=False,
                              remove_accidental_hits=head.remove_accidental_hits,
                              subtract_log_q=head.subtract_log_q)
        total_ref = tf.reduce_sum(ref)
    want = tape.gradient(total_ref, [hv, w, b])
    np.testing.assert_allclose(total, total_ref, rtol=1e-6)
    for g, r in zip(got, want):
        g, r = tf.convert_to_tensor(g).numpy(), tf.convert_to_tensor(r).numpy()
        assert np.abs(g).sum() > 0
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
    # Only the rows of the labels and of the examples' own draws get a gradient.
    sv = tfs.losses.sample_per_example(_sampler(), y[:, None], S, unique=False)
    touched = np.union1d(y, sv.sampled_candidates.numpy().ravel())
    dense_w = tf.convert_to_tensor(got[1]).numpy()
    assert set(np.flatnonzero(np.abs(dense_w).sum(1))) <= set(touched)


def test_sharded_weights_give_the_unsharded_loss_and_gradients():
    # Per-example draws with the kernel and bias split into row shards (`num_shards`).
    h, y = _inputs(seed=6)
    sharded = tfs.layers.NCE(V, S, sampler=_sampler(), samples_per="example", num_shards=3,
                             bias_initializer="random_normal")
    sharded.build((None, D))
    with tf.GradientTape() as tape:
        loss = sharded([h, y], training=True)
        total = tf.reduce_sum(loss)
    grads = tape.gradient(total, sharded.kernel_shards + sharded.bias_shards)
    assert len(sharded.kernel_shards) == 3
    w, b = tf.Variable(sharded.kernel), tf.Variable(sharded.bias)
    with tf.GradientTape() as tape:
        want = tfs.losses.per_example_nce_loss(w, b, y, h, S, sampler=_sampler(), unique=True)
        total_want = tf.reduce_sum(want)
    want_w, want_b = tape.gradient(total_want, [w, b])
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-5)
    got_w = np.concatenate([tf.convert_to_tensor(g).numpy() for g in grads[:3]])
    got_b = np.concatenate([tf.convert_to_tensor(g).numpy() for g in grads[3:]])
    assert isinstance(grads[3], tf.IndexedSlices)  # the bias gradient stays sparse
    np.testing.assert_allclose(got_w, tf.convert_to_tensor(want_w), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_b, tf.convert_to_tensor(want_b), rtol=1e-5, atol=1e-6)


def test_learned_sampler_updates_once_per_training_step():
    sampler = tfs.samplers.LearnedUnigramSampler(V, seed=1)
    head = tfs.layers.NCE(V, S, sampler=sampler, samples_per="example", unique=False)
    h, y = _inputs(seed=3)
    head([h, y], training=False)
    assert head.sampled_loss(h, y).shape == [B]
    np.testing.assert_array_equal(sampler.counts.numpy(), np.ones(V))
    head([h, y], training=True)
    np.testing.assert_array_equal(sampler.counts.numpy(), 1 + np.bincount(y, minlength=V))


def _model(cls, **kwargs):
    tokens = keras.Input((), dtype="int32")
    labels = keras.Input((), dtype="int32")
    hidden = keras.layers.Embedding(V, D, name="emb")(tokens)
    head = cls(V, S, samples_per="example", **kwargs)
    return keras.Model([tokens, labels], head([hidden, labels])), head


def test_fit_learns_and_updates_the_learned_sampler_once_per_step():
    # word2vec-like: unique=False, no bias; the context of word a is a deterministic
    # (a * 7 + 3) % V, so the exact full-softmax loss must fall well below log V: from
    # log V = 6.21 to 2.2-2.5 in 3 epochs with init seeds 0, 1, 2; the bound asks for
    # 2.5 nats of the ~3.8 gained.
    keras.utils.set_random_seed(0)
    model, head = _model(tfs.layers.NegativeSampling, sampler="learned_unigram", seed=5,
                         unique=False, use_bias=False)
    model.compile(optimizer=keras.optimizers.Adam(0.05))
    x = np.random.default_rng(0).integers(0, 100, 2048).astype(np.int32)
    y = (x * 7 + 3) % V
    before = float(tf.reduce_mean(head.full_softmax_loss(model.get_layer("emb")(x), y)))
    hist = model.fit([x, y], epochs=3, batch_size=128, verbose=0)
    assert np.isfinite(hist.history["loss"]).all()
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    after = float(tf.reduce_mean(head.full_softmax_loss(model.get_layer("emb")(x), y)))
    assert before > np.log(V) - 0.1
    assert after < before - 2.5
    # 16 steps a epoch, each counting its 128 labels once.
    assert head.sampler.counts.numpy().sum() == V + 3 * 2048


@pytest.mark.parametrize("cls", HEADS)
def test_get_config_round_trip(cls):
    head = cls(V, S, sampler="uniform", seed=4, unique=False, samples_per="example")
    config = head.get_config()
    assert config["samples_per"] == "example"
    clone = cls.from_config(config)
    assert clone.samples_per == "example" and clone.get_config() == config
    assert cls(V, S).get_config()["samples_per"] == "batch"


def test_keras_save_load_round_trip(tmp_path):
    model, head = _model(tfs.layers.SampledSoftmax, sampler="log_uniform", seed=3)
    model.compile(optimizer="adam")
    x = np.random.default_rng(1).integers(0, V, 256).astype(np.int32)
    model.fit([x, (x + 1) % V], epochs=1, batch_size=64, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    new_head = loaded.layers[-1]
    assert new_head.samples_per == "example"
    np.testing.assert_allclose(loaded.predict([x[:8], x[:8]], verbose=0),
                               model.predict([x[:8], x[:8]], verbose=0), rtol=1e-6)
    # The loaded head still draws per example: its training loss equals the functional
    # loss drawn from the same seed-generator state.
    hidden = loaded.get_layer("emb")(x[:B])
    labels = (x[:B] + 1) % V
    state = new_head.sampler.seed_generator.state
    saved = state.numpy()
    loss = new_head.sampled_loss(hidden, labels)
    state.assign(saved)
    want = tfs.losses.per_example_sampled_softmax_loss(
        new_head.kernel, new_head.bias, labels, hidden, S, sampler=new_head.sampler,
        unique=True)
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-5)


def test_bad_samples_per_raises_naming_the_argument():
    for bad in ["examples", "Example", "", None, 1, ("example",)]:
        for cls in HEADS:
            with pytest.raises(ValueError, match="`samples_per` must be one of"):
                cls(V, S, samples_per=bad)
    with pytest.raises(ValueError, match="`num_sampled`=501 is larger than `num_classes`"):
        tfs.layers.NCE(V, V + 1, samples_per="example")
    assert tfs.layers.NCE(V, V + 1, samples_per="example", unique=False).num_sampled == V + 1
    head = _built(tfs.layers.SampledSoftmax)
    h, y = _inputs()
    with pytest.raises(tf.errors.InvalidArgumentError, match="`labels` has ids outside"):
        head([h, y + V], training=True)


def test_supports_jit():
    class XlaUniform(tfs.samplers.UniformSampler):
        supports_xla = True

    assert tfs.layers.NCE(V, S, sampler=XlaUniform(V), samples_per="example",
                          unique=False).supports_jit
    # Distinct draws per row need data-dependent shapes.
    assert not tfs.layers.NCE(V, S, sampler=XlaUniform(V), samples_per="example",
                              unique=True).supports_jit


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_large_logits(policy):
    head = tfs.layers.SampledSoftmax(V, S, dtype=policy, sampler=_sampler(),
                                     samples_per="example")
    h, y = _inputs(seed=5)
    head.build((None, D))
    head.kernel.assign(np.random.default_rng(1).normal(size=(V, D)).astype(np.float32) * 300)
    hv = tf.Variable(tf.cast(h * 100.0, head.compute_dtype))
    with tf.GradientTape() as tape:
        loss = head([hv, y], training=True)
        total = tf.reduce_sum(loss)
    grad = tape.gradient(total, [hv, head.kernel])
    assert loss.dtype == tf.float32 and np.isfinite(loss.numpy()).all()
    assert all(np.isfinite(tf.cast(tf.convert_to_tensor(g), tf.float32).numpy()).all()
               for g in grad)


# ---------------------------------------------------------------------------- the core
SAMPLER_KINDS = ["uniform", "log_uniform", "learned_unigram", "fixed_unigram",
                 "dynamic_alias"]


def _sampler_of(kind, v=60):
    if kind == "learned_unigram":
        s = tfs.samplers.LearnedUnigramSampler(v, seed=3)
        s.update(np.arange(v) % 9)
        return s
    if kind == "fixed_unigram":
        return tfs.samplers.FixedUnigramSampler(v, counts=np.arange(v) % 7 + 1, seed=3)
    if kind == "dynamic_alias":
        return tfs.samplers.DynamicAliasSampler(v, initial_weights=np.arange(v) % 5 + 1.0,
                                                seed=3)
    return tfs.samplers.get(kind, v, seed=3)


@pytest.mark.parametrize("unique", [False, True])
@pytest.mark.parametrize("kind", SAMPLER_KINDS)
def test_sample_per_example_is_the_samplers_per_example_option(kind, unique):
    labels = np.random.default_rng(4).integers(0, 60, size=(B, 2))
    got = _sampler_of(kind).sample(labels, S, unique=unique, seed=11, per_example=True)
    want = tfs.losses.sample_per_example(_sampler_of(kind), labels, S, unique=unique, seed=11)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    ids = got.sampled_candidates.numpy()
    assert ids.shape == (B, S) and got.sampled_expected_count.shape == [B, S]
    assert got.true_expected_count.shape == [B, 2]
    assert len({tuple(r) for r in ids}) > 1, "every example got the same draws"
    p = _sampler_of(kind).probability(ids).numpy().astype(np.float64)
    if unique:
        assert all(len(set(r)) == S for r in ids)
    else:
        # The batch's i.i.d. stream, row by row.
        s = _sampler_of(kind)
        stream = s._draw(tf.constant(B * S, tf.int32), s._make_seed(11))
        np.testing.assert_array_equal(ids, np.reshape(stream, (B, S)))
        np.testing.assert_allclose(got.sampled_expected_count, p * S, rtol=1e-5)
    # The seed generator path too: same sampler seed, same draws.
    a = _sampler_of(kind).sample(labels, S, unique=unique, per_example=True)
    c = tfs.losses.sample_per_example(_sampler_of(kind), labels, S, unique=unique)
    np.testing.assert_array_equal(a.sampled_candidates, c.sampled_candidates)


@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("num_true", [1, 2])
@pytest.mark.parametrize("log_q, remove_hits", [(True, True), (False, False), (True, False)])
def test_sampled_logits_with_per_example_ids_equal_numpy(log_q, remove_hits, num_true,
                                                        num_shards):
    v, d, s = 20, 5, 7
    rng = np.random.default_rng(num_true * 10 + num_shards)
    w = rng.normal(size=(v, d)).astype(np.float32)
    b = rng.normal(size=v).astype(np.float32)
    x = rng.normal(size=(B, d)).astype(np.float32)
    labels = rng.integers(0, 6, size=(B, num_true))
    sampled = rng.integers(0, 6, size=(B, s))  # small ids: repeats and accidental hits
    true_ec = rng.uniform(0.1, 2, size=(B, num_true)).astype(np.float32)
    sampled_ec = rng.uniform(0.1, 2, size=(B, s)).astype(np.float32)
    cuts = np.cumsum(shard_rows(v, num_shards))[:-1]  # TF's "div" layout
    w_shards = [tf.constant(p) for p in np.split(w, cuts)]
    b_shards = [tf.constant(p) for p in np.split(b, cuts)]
    true_logits, logits = _sampled_logits.sampled_logits(
        w_shards, b_shards, tf.constant(labels, tf.int64), tf.constant(x),
        (tf.constant(sampled), tf.constant(true_ec), tf.constant(sampled_ec)), num_true,
        log_q, remove_hits)

    w64, b64, x64 = w.astype(np.float64), b.astype(np.float64), x.astype(np.float64)
    want_true = np.einsum("bd,btd->bt", x64, w64[labels]) + b64[labels]
    want = np.einsum("bd,bsd->bs", x64, w64[sampled]) + b64[sampled]
    if log_q:
        want_true -= np.log(true_ec)
        want -= np.log(sampled_ec)
    hit = (sampled[:, :, None] == labels[:, None, :]).any(2)
    assert hit.any() and not hit.all()
    np.testing.assert_allclose(true_logits, want_true, rtol=1e-5, atol=1e-5)
    if remove_hits:
        got = logits.numpy()
        assert np.all(got[hit] == -np.finfo(np.float32).max)
        np.testing.assert_allclose(got[~hit], want[~hit], rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)

    # One sample shared by the batch, given as [S] or tiled to [batch, S]: the same logits
    # from either branch of the core. (Distinct ids: of a repeated id, the shared branch
    # marks one position as an accidental hit, as tf.nn.compute_accidental_hits does.)
    shared = (tf.constant(rng.permutation(8)[:s]), tf.constant(true_ec),
              tf.constant(sampled_ec[0]))
    tiled = (tf.tile(shared[0][None], [B, 1]), shared[1], tf.tile(shared[2][None], [B, 1]))
    outs = [_sampled_logits.sampled_logits(
        w_shards, b_shards, tf.constant(labels, tf.int64), tf.constant(x), sv, num_true,
        log_q, remove_hits) for sv in (shared, tiled)]
    for a, c in zip(*outs):
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-6)

    # Half precision inputs are computed (and returned) in float32.
    half = _sampled_logits.sampled_logits(
        w_shards, b_shards, tf.constant(labels, tf.int64), tf.constant(x, tf.float16),
        (tf.constant(sampled), tf.constant(true_ec), tf.constant(sampled_ec)), num_true,
        log_q, remove_hits)
    assert half[0].dtype == tf.float32 and half[1].dtype == tf.float32

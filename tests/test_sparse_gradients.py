"""Weight gradients of the heads and losses hold every row once.

Keras 3 optimizers apply a `tf.IndexedSlices` gradient slice by slice: a row that appears
twice gets e.g. Adam's second moment from `a^2 + b^2` instead of `(a + b)^2`. So every
gather of a weight matrix must give a gradient with unique row ids (and the summed rows):
checked here for each loss and head against a reference gradient computed densely (from
the full logits `x W^T + b`, or TF's own losses), and end to end against Adam steps driven
by the densified gradient.

The ids are chosen so that duplicates are certain: labels repeat within the batch, the
sampled ids repeat and include labels.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs
from tf_sampling import trees
from tf_sampling.losses import _unique_rows

V, D, B, S = 30, 6, 12, 10
_FLT_MIN = float(-np.finfo(np.float32).max)


class _CycleSampler(tfs.samplers.UniformSampler):
    """Uniform probabilities, but draws that repeat a short cycle of ids (the seed is
    ignored): the same sample at every call, full of repeats and of the labels' ids."""

    def _draw(self, num_draws, seed):
        return tf.math.floormod(tf.range(tf.cast(num_draws, tf.int64)) * 3 + 1, 8)


class _XlaCycleSampler(_CycleSampler):
    supports_xla = True


def _rng(seed=0):
    return np.random.default_rng(seed)


def _data(num_true=1, seed=0):
    rng = _rng(seed)
    w = (rng.normal(size=(V, D)) * 0.5).astype(np.float32)
    b = (rng.normal(size=V) * 0.5).astype(np.float32)
    x = rng.normal(size=(B, D)).astype(np.float32)
    labels = rng.integers(0, 8, size=(B, num_true)).astype(np.int64)  # repeats certain
    return w, b, x, labels


def _shared_sample(labels, num_true):
    sampled = tf.constant([3, 1, 4, 1, 5, 9, 2, 6, 5, 3], tf.int64)  # repeats, hits labels
    p = 1.0 / V
    return (sampled, tf.fill([B, num_true], p * S), tf.fill([S], p * S))


def _example_sample(num_true, seed=1):
    sampled = tf.constant(_rng(seed).integers(0, 10, size=(B, S)), tf.int64)
    p = 1.0 / V
    return (sampled, tf.fill([B, num_true], p * S), tf.fill([B, S], p * S))


def _shards(w, n):
    return [tf.Variable(p) for p in np.array_split(w, n)]  # TF's "div" row layout


def _read(shards):
    # A dense read: the reference's gradient with respect to each shard is a dense tensor.
    return tf.concat([tf.convert_to_tensor(s) for s in shards], 0)


def _dense_logits(w, b, labels, x, sampled_values, num_true, subtract_log_q, remove_hits):
    """True and sampled logits picked from the full `[B, V]` logits."""
    full = tf.matmul(x, w, transpose_b=True)
    if b is not None:
        full += b
    sampled, true_ec, sampled_ec = sampled_values
    true = tf.gather(full, labels, batch_dims=1)
    if sampled.shape.rank == 1:
        picked = tf.gather(full, sampled, axis=1)
        # TF's hits, which the shared losses follow: a sampled id that is drawn twice and
        # is a label is removed at one of its positions only.
        rows, cols, _ = tf.nn.compute_accidental_hits(labels, sampled, num_true=num_true)
        hit = tf.scatter_nd(tf.stack([rows, tf.cast(cols, tf.int32)], 1),
                            tf.ones_like(rows, tf.bool), tf.shape(picked))
    else:
        picked = tf.gather(full, sampled, batch_dims=1)
        hit = tf.reduce_any(labels[:, :, None] == sampled[:, None, :], 1)
    if subtract_log_q:
        true -= tf.math.log(true_ec)
        picked -= tf.math.log(sampled_ec)
    if remove_hits:
        picked = tf.where(hit, _FLT_MIN, picked)
    return true, picked


def _dense_loss(kind, true, sampled, num_true):
    logits = tf.concat([true, sampled], 1)
    if kind == "softmax":
        targets = tf.concat([tf.fill(tf.shape(true), 1.0 / num_true), tf.zeros_like(sampled)], 1)
        return tf.nn.softmax_cross_entropy_with_logits(targets, logits)
    target = 1.0 / num_true if kind == "nce" else 1.0
    targets = tf.concat([tf.fill(tf.shape(true), target), tf.zeros_like(sampled)], 1)
    return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(targets, logits), 1)


def _grads(loss_fn, variables):
    with tf.GradientTape() as tape:
        loss = loss_fn()
        # Unequal example weights, so that a misplaced per-example gradient shows.
        total = tf.reduce_sum(loss * tf.range(1.0, 1.0 + B))
    return tape.gradient(total, variables)


def _assert_unique_and_equal(ours_fn, ref_fn, variables):
    ours, ref = _grads(ours_fn, variables), _grads(ref_fn, variables)
    for g, r, v in zip(ours, ref, variables):
        assert isinstance(g, tf.IndexedSlices), (v.name, type(g))
        ids = g.indices.numpy()
        assert len(np.unique(ids)) == len(ids), (v.name, np.sort(ids))
        assert np.all((ids >= 0) & (ids < v.shape[0]))
        np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(),
                                   tf.convert_to_tensor(r).numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=v.name)


# ---------------------------------------------------------------------------- the premise
@pytest.mark.parametrize("make", [lambda: keras.optimizers.Adam(0.1),
                                  lambda: keras.optimizers.RMSprop(0.1),
                                  lambda: keras.optimizers.Adagrad(0.1)])
def test_repeated_rows_mislead_keras_optimizers_and_unique_rows_do_not(make):
    # The defect the heads work around; if a Keras release fixes it, the first assertion
    # fails and the deduplication is merely harmless.
    def run(gather, densify):
        v = keras.Variable(tf.ones([3, 2]))
        opt = make()
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(gather(v.value, tf.constant([0, 0])) ** 2) / 2
            g = tape.gradient(loss, v.value)
            opt.apply_gradients([(tf.convert_to_tensor(g) if densify else g, v)])
        return v.numpy()

    dense = run(tf.gather, densify=True)
    assert np.abs(run(tf.gather, densify=False) - dense).max() > 1e-3
    np.testing.assert_allclose(run(_unique_rows.gather_unique, densify=False), dense,
                               rtol=1e-6)


def test_unique_index_splits_back():
    a = tf.constant([[5, 2], [5, 7]], tf.int64)
    b = tf.constant([7, 7, 1], tf.int64)
    unique, (ia, ib) = _unique_rows.unique_index(a, b)
    assert sorted(unique.numpy()) == [1, 2, 5, 7]
    np.testing.assert_array_equal(tf.gather(unique, ia), a)
    np.testing.assert_array_equal(tf.gather(unique, ib), b)


# ---------------------------------------------------------------------------- functional
@pytest.mark.parametrize("num_shards", [1, 3])
@pytest.mark.parametrize("num_true", [1, 2])
@pytest.mark.parametrize("kind", ["softmax", "nce", "negative_sampling"])
def test_shared_sample_losses(kind, num_true, num_shards):
    w, b, x, labels = _data(num_true)
    sv = _shared_sample(labels, num_true)
    ws, bv = _shards(w, num_shards), tf.Variable(b)
    remove_hits = kind == "softmax"
    ours = {"softmax": tfs.losses.sampled_softmax_loss, "nce": tfs.losses.nce_loss,
            "negative_sampling": tfs.losses.negative_sampling_loss}[kind]
    weights = ws[0] if num_shards == 1 else ws

    def ours_fn():
        return ours(weights, bv, labels, x, S, V, num_true=num_true, sampled_values=sv,
                    remove_accidental_hits=remove_hits)

    subtract = kind != "negative_sampling"
    loss_kind = "nce" if kind == "nce" else kind

    def dense_fn():
        true, sampled = _dense_logits(_read(ws), tf.convert_to_tensor(bv), labels, x, sv,
                                      num_true, subtract, remove_hits)
        return _dense_loss(loss_kind, true, sampled, num_true)

    np.testing.assert_allclose(ours_fn().numpy(), dense_fn().numpy(), rtol=1e-5)
    _assert_unique_and_equal(ours_fn, dense_fn, ws + [bv])
    if kind != "negative_sampling":
        # TF's own loss (duplicate slices, summed by the densification) agrees too.
        ref = {"softmax": tf.nn.sampled_softmax_loss, "nce": tf.nn.nce_loss}[kind]
        tf_grads = _grads(lambda: ref(weights, bv, labels, x, S, V, num_true=num_true,
                                      sampled_values=sv, remove_accidental_hits=remove_hits),
                          ws + [bv])
        dense_grads = _grads(dense_fn, ws + [bv])
        for t, r in zip(tf_grads, dense_grads):
            np.testing.assert_allclose(tf.convert_to_tensor(t), r, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_shards", [1, 2])
@pytest.mark.parametrize("num_true", [1, 2])
@pytest.mark.parametrize("kind", ["softmax", "nce", "negative_sampling"])
def test_per_example_losses(kind, num_true, num_shards):
    w, b, x, labels = _data(num_true, seed=2)
    sv = _example_sample(num_true)
    ws, bv = _shards(w, num_shards), tf.Variable(b)
    fn = {"softmax": tfs.losses.per_example_sampled_softmax_loss,
          "nce": tfs.losses.per_example_nce_loss,
          "negative_sampling": tfs.losses.per_example_negative_sampling_loss}[kind]
    subtract = kind != "negative_sampling"

    def ours_fn():
        return fn(ws[0] if num_shards == 1 else ws, bv, labels, x, S, num_true=num_true,
                  sampled_values=sv, remove_accidental_hits=True, subtract_log_q=subtract)

    def dense_fn():
        true, sampled = _dense_logits(_read(ws), tf.convert_to_tensor(bv), labels, x, sv,
                                      num_true, subtract, True)
        return _dense_loss("nce" if kind == "nce" else kind, true, sampled, num_true)

    np.testing.assert_allclose(ours_fn().numpy(), dense_fn().numpy(), rtol=1e-5)
    _assert_unique_and_equal(ours_fn, dense_fn, ws + [bv])


def _candidates(seed=3):
    rng = _rng(seed)
    lengths = rng.integers(2, 6, size=B)
    padded = np.full((B, 5), -1, np.int64)
    for i, n in enumerate(lengths):
        padded[i, :n] = rng.choice(8, size=n, replace=False)  # ids repeat across rows
    positive = rng.integers(0, lengths)
    return padded, padded >= 0, positive


def _dense_candidate_loss(w, b, x, padded, mask, positive):
    full = tf.matmul(x, w, transpose_b=True) + b
    logits = tf.gather(full, np.maximum(padded, 0), batch_dims=1)
    logits = tf.where(mask, logits, -np.inf)
    return tf.reduce_logsumexp(logits, 1) - tf.gather(logits, positive, batch_dims=1)


@pytest.mark.parametrize("num_shards", [1, 2])
@pytest.mark.parametrize("ragged", [True, False])
def test_candidate_softmax_loss(ragged, num_shards):
    w, b, x, _ = _data(seed=4)
    padded, mask, positive = _candidates()
    ws, bv = _shards(w, num_shards), tf.Variable(b)
    cands = tf.ragged.boolean_mask(padded, mask) if ragged else padded

    def ours_fn():
        return tfs.losses.candidate_softmax_loss(
            ws[0] if num_shards == 1 else ws, bv, x, cands, positive_index=positive,
            candidate_mask=None if ragged else mask)

    def dense_fn():
        return _dense_candidate_loss(_read(ws), tf.convert_to_tensor(bv), x, padded, mask,
                                     positive)

    np.testing.assert_allclose(ours_fn().numpy(), dense_fn().numpy(), rtol=1e-5)
    _assert_unique_and_equal(ours_fn, dense_fn, ws + [bv])


# ---------------------------------------------------------------------------- layers
_HEADS = [
    ("SampledSoftmax", "batch", 1, False),
    ("SampledSoftmax", "batch", 3, False),
    ("SampledSoftmax", "example", 2, False),
    ("SampledSoftmax", "batch", 1, True),   # tied to an Embedding
    ("NCE", "batch", 1, False),
    ("NCE", "example", 1, False),
    ("NegativeSampling", "batch", 2, False),
    ("NegativeSampling", "example", 1, False),
]


def _sampled_head(cls_name, samples_per, num_shards, tied, num_true=1, seed=0):
    kw = dict(num_true=num_true, sampler=_CycleSampler(V), unique=False,
              samples_per=samples_per, num_shards=num_shards,
              remove_accidental_hits=cls_name != "NCE",
              kernel_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed),
              bias_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed + 1))
    if tied:
        kw["tied_embedding"] = keras.layers.Embedding(V, D)
    head = getattr(tfs.layers, cls_name)(V, S, **kw)
    head.build((None, D))
    return head


def _head_reference(head, labels, x):
    """The head's training loss from the full logits, on the sample the head draws."""
    if head.samples_per == "batch":
        sv = head.sampler.sample(labels, S, unique=False)
    else:
        sv = tfs.losses.sample_per_example(head.sampler, labels, S, unique=False)
    b = None if head.bias is None else tf.convert_to_tensor(head.bias)
    true, sampled = _dense_logits(_read(head.kernel_shards), b, labels, x, sv, head.num_true,
                                  head.subtract_log_q, head.remove_accidental_hits)
    kind = {"SampledSoftmax": "softmax", "NCE": "nce",
            "NegativeSampling": "negative_sampling"}[type(head).__name__]
    return _dense_loss(kind, true, sampled, head.num_true)


@pytest.mark.parametrize("cls_name,samples_per,num_shards,tied", _HEADS)
def test_sampled_heads(cls_name, samples_per, num_shards, tied):
    num_true = 2 if cls_name == "NCE" else 1
    _, _, x, labels = _data(num_true, seed=5)
    head = _sampled_head(cls_name, samples_per, num_shards, tied, num_true)
    variables = head.trainable_variables
    assert len(variables) == (2 if tied else 2 * num_shards)
    np.testing.assert_allclose(head.sampled_loss(x, labels).numpy(),
                               _head_reference(head, labels, x).numpy(), rtol=1e-5)
    _assert_unique_and_equal(lambda: head([x, labels], training=True),
                             lambda: _head_reference(head, labels, x), variables)


def _hierarchical(seed=0):
    counts = _rng(seed).integers(1, 50, V)
    head = tfs.layers.HierarchicalSoftmax(
        V, tree=trees.huffman_tree(counts),
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed + 1))
    head.build((None, D))
    return head


def test_hierarchical_softmax():
    _, _, x, labels = _data(seed=6)
    y = labels[:, 0]
    head = _hierarchical()
    # The root is on every path: duplicates are certain.
    _assert_unique_and_equal(
        lambda: head([x, y], training=True),
        lambda: -tf.gather(head.log_prob(x), y, batch_dims=1),   # dense [V-1, D] matmul
        head.trainable_variables)
    # Exactly the nodes on the labels' paths get rows (path padding adds none).
    grads = _grads(lambda: head([x, y], training=True), head.trainable_variables)
    path_nodes = np.unique(np.concatenate([head.tree.path(c)[0] for c in y]))
    for g in grads:
        np.testing.assert_array_equal(np.sort(g.indices.numpy()), path_nodes)


def _candidate_head(seed=0, tied=False):
    kw = {"tied_embedding": keras.layers.Embedding(V, D)} if tied else {}
    head = tfs.layers.CandidateSoftmax(
        V, kernel_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=seed + 1), **kw)
    head.build((None, D))
    return head


@pytest.mark.parametrize("ragged", [True, False])
def test_candidate_softmax_layer(ragged):
    _, _, x, _ = _data(seed=7)
    padded, mask, positive = _candidates(seed=8)
    cands = tf.ragged.boolean_mask(padded, mask) if ragged else padded
    head = _candidate_head()
    _assert_unique_and_equal(
        lambda: head([x, cands, positive], training=True),
        lambda: _dense_candidate_loss(tf.convert_to_tensor(head.kernel),
                                      tf.convert_to_tensor(head.bias), x, padded, mask,
                                      positive),
        head.trainable_variables)


def test_adaptive_softmax_gradients_are_dense():
    # Its weights enter through matmuls, never gathers: no slices for an optimizer to
    # mis-apply.
    _, _, x, labels = _data(seed=9)
    head = tfs.layers.AdaptiveSoftmax(V, cutoffs=[8, 20], div_value=2.0)
    head.build((None, D))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(head([x, labels[:, 0]], training=True))
    grads = tape.gradient(loss, head.trainable_variables)
    assert all(isinstance(g, tf.Tensor) and not isinstance(g, tf.IndexedSlices)
               for g in grads), [type(g) for g in grads]


# ---------------------------------------------------------------------------- Adam, end to end
def _adam_steps(head, inputs, densify, steps=3):
    opt = keras.optimizers.Adam(0.05)
    variables = head.trainable_variables

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(head(inputs, training=True))
        grads = tape.gradient(loss, variables)
        if densify:
            grads = [tf.convert_to_tensor(g) for g in grads]
        opt.apply_gradients(zip(grads, variables))

    for _ in range(steps):
        step()
    return [v.numpy() for v in variables]


def _sampled_inputs(num_true=1):
    _, _, x, labels = _data(num_true, seed=10)
    return [x, labels]


def _candidate_inputs():
    _, _, x, _ = _data(seed=11)
    padded, mask, positive = _candidates(seed=12)
    return [x, tf.ragged.boolean_mask(padded, mask), positive]


_ADAM_CASES = {
    "sampled_softmax_3_shards": (lambda: _sampled_head("SampledSoftmax", "batch", 3, False),
                                 _sampled_inputs),
    "nce_per_example": (lambda: _sampled_head("NCE", "example", 1, False, num_true=2),
                        lambda: _sampled_inputs(2)),
    "negative_sampling": (lambda: _sampled_head("NegativeSampling", "batch", 1, False),
                          _sampled_inputs),
    "hierarchical_softmax": (_hierarchical,
                             lambda: [_data(seed=13)[2], _data(seed=13)[3][:, 0]]),
    "candidate_softmax": (_candidate_head, _candidate_inputs),
}


@pytest.mark.parametrize("case", sorted(_ADAM_CASES))
def test_adam_steps_equal_dense_gradient_steps(case):
    make, inputs = _ADAM_CASES[case]
    ours = _adam_steps(make(), inputs(), densify=False)
    dense = _adam_steps(make(), inputs(), densify=True)
    for a, r in zip(ours, dense):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-7)
    # The steps moved the weights: the comparison is not of untouched initial values.
    assert np.abs(ours[0] - make().trainable_variables[0].numpy()).max() > 1e-3


@pytest.mark.parametrize("samples_per", ["batch", "example"])
def test_jit_compiled_fit_equals_dense_gradient_steps(samples_per):
    # A jit-capable sampler makes the head jit-capable: the unique-row lookup must compile.
    def make():
        head = tfs.layers.SampledSoftmax(
            V, S, sampler=_XlaCycleSampler(V), unique=False, samples_per=samples_per,
            remove_accidental_hits=False,
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=0))
        head.build((None, D))
        return head

    head = make()
    assert head.supports_jit
    # With TF's accidental-hit removal (no XLA kernel) a shared-sample head is not.
    hits = tfs.layers.SampledSoftmax(V, S, sampler=_XlaCycleSampler(V), unique=False,
                                     samples_per=samples_per, remove_accidental_hits=True)
    assert hits.supports_jit == (samples_per == "example")
    h_in, y_in = keras.Input((D,)), keras.Input((1,), dtype="int64")
    model = keras.Model([h_in, y_in], head([h_in, y_in]))
    model.compile(optimizer=keras.optimizers.Adam(0.05), jit_compile=True)
    assert model.jit_compile
    x, labels = _sampled_inputs()
    model.fit([x, labels], epochs=3, batch_size=B, shuffle=False, verbose=0)
    dense = _adam_steps(make(), [x, labels], densify=True)
    for a, r in zip([v.numpy() for v in head.trainable_variables], dense):
        np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-6)

"""tfs.layers.Embedding: keras' Embedding with a sparse, deduplicated lookup through the
optimizer's row reader."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs

V, D = 50, 6


def _ids(rng, shape):
    # Zipf-like ids: repeats within the batch, and rows that go untouched for steps.
    return (rng.zipf(1.4, shape) % V).astype(np.int32)


def _pair(**kwargs):
    """(keras Embedding, tfs Embedding) with the same weights."""
    ours, theirs = tfs.layers.Embedding(V, D, **kwargs), keras.layers.Embedding(V, D, **kwargs)
    ours.build((None,))
    theirs.build((None,))
    theirs.set_weights(ours.get_weights())
    return theirs, ours


def test_lookup_and_mask_equal_keras():
    rng = np.random.default_rng(0)
    ids = _ids(rng, (4, 9))
    ids[0, -3:] = 0
    theirs, ours = _pair(mask_zero=True)
    np.testing.assert_array_equal(ours(ids).numpy(), theirs(ids).numpy())
    np.testing.assert_array_equal(ours.compute_mask(ids).numpy(),
                                  theirs.compute_mask(ids).numpy())
    # int64 and float ids are looked up like keras' (which casts non-integers to int32).
    np.testing.assert_array_equal(ours(ids.astype(np.int64)).numpy(), theirs(ids).numpy())
    np.testing.assert_array_equal(ours(ids.astype(np.float32)).numpy(), theirs(ids).numpy())


def test_gradient_has_one_summed_slice_per_distinct_row():
    rng = np.random.default_rng(1)
    ids = _ids(rng, (8, 5))
    upstream = rng.normal(size=(8, 5, D)).astype(np.float32)
    theirs, ours = _pair()
    grads = []
    for layer in (theirs, ours):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(ids) * upstream)
        grads.append(tape.gradient(loss, layer.trainable_variables[0]))
    assert isinstance(grads[1], tf.IndexedSlices)
    indices = grads[1].indices.numpy()
    np.testing.assert_array_equal(np.sort(indices), np.unique(ids))
    np.testing.assert_allclose(tf.convert_to_tensor(grads[1]).numpy(),
                               tf.convert_to_tensor(grads[0]).numpy(), rtol=1e-6, atol=1e-6)


def test_lookup_is_a_sparse_read_of_the_table():
    """No dense read of the table in the traced call: a dense read copies all of it once
    a sparse update has put the variable in copy-on-read mode."""
    layer = tfs.layers.Embedding(V, D)
    layer.build((None,))
    fn = tf.function(layer).get_concrete_function(tf.TensorSpec([None, None], tf.int32))
    ops = [op.type for op in fn.graph.get_operations()]
    assert "ResourceGather" in ops
    assert "ReadVariableOp" not in ops


def test_bad_ids_raise():
    layer = tfs.layers.Embedding(V, D)
    with pytest.raises(tf.errors.InvalidArgumentError):
        layer(np.array([[1, V]], np.int32))


@functools.lru_cache(maxsize=None)
def _adam_losses(layer_cls):
    return _losses(layer_cls, keras.optimizers.Adam(0.05))


def _losses(layer_cls, opt, steps=8):
    """Losses of `steps` train_on_batch calls of Embedding -> mean over time -> Dense
    -> softmax cross-entropy, from fixed weights and data."""
    rng = np.random.default_rng(2)
    keras.utils.set_random_seed(4)
    tokens = keras.Input((7,), dtype="int32")
    x = keras.layers.GlobalAveragePooling1D()(layer_cls(V, D)(tokens))
    model = keras.Model(tokens, keras.layers.Dense(5)(x))
    model.compile(optimizer=opt,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ids = _ids(rng, (steps, 16, 7))
    ys = rng.integers(0, 5, (steps, 16))
    return np.array([float(model.train_on_batch(ids[i], ys[i])) for i in range(steps)])


def test_trains_under_catch_up_as_under_keras_adam():
    """SparseAdam(catch_up=True) gives an untouched row its momentum steps when it is next
    touched; this layer reads rows with them already applied, so every batch's loss is
    keras Adam's on the same model (measured within 2.4e-7 over 12 batches of losses ~1.6;
    bound 1e-5).
    Keras' own Embedding reads the stored rows, which lag: its losses differ."""
    want = _adam_losses(tfs.layers.Embedding)
    got = _losses(tfs.layers.Embedding, tfs.optimizers.SparseAdam(0.05, catch_up=True))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    stale = _losses(keras.layers.Embedding, tfs.optimizers.SparseAdam(0.05, catch_up=True))
    assert np.abs(stale - want).max() > 1e-3


def test_keras_adam_squares_repeated_slices_apart():
    """Why keras Adam on Keras' Embedding is not Adam: its gradient has one slice per token,
    and keras Adam squares each slice before they are summed, so a row seen twice gets
    a^2 + b^2 in its second moment, not (a + b)^2. This layer's one slice per distinct row
    gives keras Adam the dense gradient's step."""
    g = tf.IndexedSlices(tf.ones([2, 2]), tf.constant([0, 0]), tf.constant([3, 2]))
    second = []
    for grad in (g, tf.convert_to_tensor(g)):
        var, opt = keras.Variable(np.zeros((3, 2), np.float32)), keras.optimizers.Adam(0.1)
        opt.apply([grad], [var])
        second.append(opt._velocities[0].numpy()[0, 0])
    np.testing.assert_allclose(second, [0.001 * 2, 0.001 * 4], rtol=1e-6)
    assert not np.allclose(_adam_losses(keras.layers.Embedding),
                           _adam_losses(tfs.layers.Embedding), rtol=0, atol=1e-3)


def test_config_and_keras_file_round_trip(tmp_path):
    tokens = keras.Input((3,), dtype="int32")
    layer = tfs.layers.Embedding(V, D, mask_zero=True, name="emb")
    model = keras.Model(tokens, layer(tokens))
    clone = tfs.layers.Embedding.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer("emb")) is tfs.layers.Embedding
    ids = np.array([[0, 3, 3]], np.int32)
    np.testing.assert_array_equal(loaded(ids).numpy(), model(ids).numpy())

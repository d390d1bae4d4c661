"""`HeadModel`: a Keras model of a features model and an output head that trains with
`model.fit(x, y)` and predicts with `model.predict(x)`.

An output head of this package needs the labels in its forward pass while training (it
scores the true and the sampled classes only), so a plain functional model takes the
labels as an input: `keras.Model([x, labels], head([hidden, labels]))`. `HeadModel` keeps
Keras' usual `fit(x, y)` / `evaluate(x, y)` / `predict(x)` instead: its `train_step` and
`test_step` hand `y` to the head as the labels of its call, then run Keras' own
`train_step` / `test_step` (loss scaling, distribution strategies, `steps_per_execution`
unchanged); `predict` and a plain call `model(x)` run the features model and the head
without labels (log-probabilities or top-k).

Why a wrapper and not a `compute_loss` override: Keras calls `model(x)` without `y` and
only then `compute_loss(x, y, y_pred)`. A head's training loss needs the hidden states
and the labels together in that forward pass, so `compute_loss` would have to receive
the hidden states as `y_pred` (and `predict` and the metrics would see hidden states),
or keep them on the model between the two calls (which breaks under `MirroredStrategy`,
whose replicas run in threads sharing the model).
"""

import keras

from tf_sampling.layers import base as _base

__all__ = ["HeadModel"]

# The keys under which `train_step`/`test_step` pass the features and the labels to `call`.
_FEATURES, _LABELS = "__tfs_features__", "__tfs_labels__"


def _is_labelled(inputs):
    return isinstance(inputs, dict) and set(inputs) == {_FEATURES, _LABELS}


@keras.saving.register_keras_serializable(package="tf_sampling")
class HeadModel(keras.Model):
    """A features model followed by an output head, trained with `fit(x, y)`.

    Args:
        features: a built `keras.Model` (or layer) from the model's inputs to the hidden
            states `[batch, ..., dim]` that the head reads.
        head: an output head of `tf_sampling.layers` (SampledSoftmax, NCE,
            NegativeSampling, FullSoftmax, HierarchicalSoftmax, AdaptiveSoftmax,
            CandidateSoftmax).

    - `model.fit(x, y)`: the head's training loss (sampled, tree or exact), as the
      labels-input pattern gives it. `y` is the labels tensor; for `CandidateSoftmax`,
      `y = (candidates, positives)`.
    - `model.evaluate(x, y)`: the head's exact loss (`val_loss` in `fit`), so
      `exp(loss)` is the perplexity.
    - `model.predict(x)` and `model(x)`: the head's inference output, log-probabilities
      `[batch, num_classes]` or `(values, indices)` of the best classes (the head's
      `top_k`); no labels input.
    - `model.compile(optimizer)` takes no `loss`: the head adds its own loss, and a
      `loss=` raises a `ValueError` saying so. Compiled `metrics` are refused too (the
      training output is a per-example loss); use `head.perplexity(...)` or the exact
      `evaluate` loss.
    - `model.save("m.keras")` / `keras.models.load_model` round-trip it, and
      `tfs.serving.export(path, model)` exports `features` and the head's own top-k.

    Example:
    >>> tokens = keras.Input((), dtype="int32")
    >>> hidden = keras.layers.Dense(64, activation="tanh")(
    ...     keras.layers.Embedding(V, 64)(tokens))
    >>> model = tfs.models.HeadModel(keras.Model(tokens, hidden),
    ...                              tfs.layers.SampledSoftmax(V, num_sampled=256))
    >>> model.compile(optimizer="adam")                # no loss: the head adds it
    >>> model.fit(x_train, y_train, validation_data=(x_val, y_val))  # val_loss is exact
    >>> top_values, top_ids = model.predict(x_test)    # the head's inference output
    """

    def __init__(self, features, head, **kwargs):
        super().__init__(**kwargs)
        if isinstance(features, dict):
            features = keras.saving.deserialize_keras_object(features)
        if isinstance(head, dict):
            head = keras.saving.deserialize_keras_object(head)
        if not isinstance(features, keras.layers.Layer):
            raise TypeError(f"`features` must be a Keras model or layer, got "
                            f"{type(features).__name__}.")
        if not isinstance(head, keras.layers.Layer) or not callable(
                getattr(head, "log_prob", None)):
            raise TypeError("`head` must be an output head of tf_sampling.layers (a layer "
                            f"with a `log_prob` method), got {type(head).__name__}.")
        if not features.built:
            raise ValueError("`features` must be built (a functional `keras.Model`, or a "
                             "layer called once) so that the head can be built.")
        self.features = features
        self.head = head
        if not head.built:
            head.build(tuple(features.output.shape))
        self.built = True

    def call(self, inputs, training=None):
        if _is_labelled(inputs):
            hidden = self.features(inputs[_FEATURES], training=training)
            labels = inputs[_LABELS]
            labels = list(labels) if isinstance(labels, (list, tuple)) else [labels]
            return self.head([hidden] + labels, training=training)
        if training:
            raise _base.missing_labels(self.head, call="model.fit(x, y)")
        return self.head(self.features(inputs, training=training), training=training)

    # ------------------------------------------------------------------ training
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None,
                weighted_metrics=None, **kwargs):
        if loss is not None or loss_weights is not None:
            raise ValueError(
                f"HeadModel.compile() takes no `loss`: the head "
                f"({type(self.head).__name__}) adds its own loss (its training loss in "
                "`fit`, the exact loss in `evaluate`). Call `model.compile(optimizer=...)` "
                f"without a loss; got loss={loss!r}.")
        if metrics or weighted_metrics:
            raise ValueError(
                "HeadModel.compile() takes no `metrics`: the model's training output is "
                "the head's per-example loss. The exact loss is `evaluate`'s loss "
                "(`val_loss`); for the perplexity use `head.perplexity(hidden, labels)`.")
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # Keras skips an overridden `compile` when loading; this one accepts its own
        # config (no loss, no metrics), so a loaded model is compiled as it was saved.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if getattr(self, "optimizer", None) is not None:
            self.optimizer.build(self.trainable_variables)

    def _with_labels(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if y is None:
            raise ValueError("HeadModel needs labels to train or evaluate: pass "
                             "`model.fit(x, y)` (or a dataset of `(x, y)` pairs).")
        if sample_weight is not None:
            raise ValueError("HeadModel does not support sample weights: the head adds the "
                             "mean loss of the batch.")
        return ({_FEATURES: x, _LABELS: y},)

    def train_step(self, data):
        return super().train_step(self._with_labels(data))

    def test_step(self, data):
        return super().test_step(self._with_labels(data))

    # ------------------------------------------------------------------ Keras plumbing
    def compute_output_spec(self, inputs, training=None):
        if _is_labelled(inputs):
            hidden = self.features.compute_output_spec(inputs[_FEATURES])
            labels = inputs[_LABELS]
            labels = list(labels) if isinstance(labels, (list, tuple)) else [labels]
            return self.head.compute_output_spec([hidden] + labels, training=training)
        hidden = self.features.compute_output_spec(inputs)
        return self.head.compute_output_spec(hidden, training=training)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "features": keras.saving.serialize_keras_object(self.features),
            "head": keras.saving.serialize_keras_object(self.head),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

"""The calling convention every output head of this package follows.

- `head([inputs, labels], training=True)` (as in `model.fit`): adds the mean training
  loss with `add_loss` and returns the per-example training loss.
- `head([inputs, labels])` with `training` False or None (`model.evaluate`, plain calls):
  adds the mean exact loss and returns the inference output; a head whose inference
  output is a top-k pair returns the per-example exact loss instead, so that a
  functional model has one output structure in `fit` and `evaluate`. AdaptiveSoftmax,
  whose training loss is exact, returns its per-example NLL in both; CandidateSoftmax
  returns the log-probabilities over each row's candidates.
- `head(inputs)` with `training` False or None: the inference output, all
  log-probabilities or `(values, indices)` of the best classes.
- `head(inputs, training=True)`: an error (`missing_labels`), since training needs labels.
"""


def missing_labels(head, call="head([inputs, labels], training=True)"):
    """The error of a training call without labels, saying how to pass them."""
    return ValueError(
        f"{type(head).__name__} was called with `training=True` but without labels: a "
        f"training call needs them, as `{call}`. In a functional model, add the labels as "
        "an input, `labels = keras.Input(shape=(), dtype='int32')`, build "
        "`keras.Model([x, labels], head([hidden, labels]))` and compile without a loss; or "
        "wrap a features model as `tfs.models.HeadModel(features, head)` to train with "
        "`model.fit(x, y)` and predict with `model.predict(x)`.")

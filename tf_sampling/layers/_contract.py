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

import keras
import numpy as np
import tensorflow as tf

from tf_sampling import _chunked
from tf_sampling.losses import _sampled_logits as _sl


def is_shape(x):
    """Whether `x` is one shape (a tuple/list of ints and Nones), not a list of shapes."""
    return isinstance(x, (tuple, list, tf.TensorShape)) and all(
        d is None or isinstance(d, (int, np.integer)) for d in x)


class FullSoftmaxPlumbing:
    """Input splitting, output shape and spec, and perplexity of a head whose inference
    output is a full softmax over `num_classes` (all log-probabilities, or the top k as
    its `top_k` says). Mixed into `SampledHead` and `FullSoftmax`, which provide
    `num_classes`, `top_k` and `full_softmax_loss`."""

    @staticmethod
    def _hidden_shape(input_shape):
        if is_shape(input_shape):
            return tuple(input_shape)
        if isinstance(input_shape, (list, tuple)) and len(input_shape) in (1, 2):
            return tuple(input_shape[0])
        raise ValueError(
            f"Expected `inputs` or `[inputs, labels]`, got shapes {input_shape}.")

    @staticmethod
    def _split(inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) == 2:
                return inputs[0], inputs[1]
            if len(inputs) == 1:
                return inputs[0], None
            raise ValueError(f"Expected `inputs` or `[inputs, labels]`, got {len(inputs)} "
                             "tensors.")
        return inputs, None

    def perplexity(self, inputs, labels, batch_size=1024):
        """exp(mean exact cross-entropy) over all examples, in batches of `batch_size`.

        `inputs`/`labels` are arrays or tensors (the hidden states fed to this head and
        the true ids). Returns a Python float.
        """
        batch_size = _sl.check_positive_int(batch_size, "batch_size")
        return _chunked.perplexity(self.full_softmax_loss, inputs, labels, batch_size)

    def compute_output_shape(self, input_shape):
        hidden = self._hidden_shape(input_shape)
        k = _chunked.output_top_k(self.top_k, self.num_classes)
        if k is not None and not is_shape(input_shape) and len(input_shape) == 2:
            return hidden[:-1]  # the per-example loss
        if k is not None:
            return hidden[:-1] + (k,), hidden[:-1] + (k,)
        return hidden[:-1] + (self.num_classes,)

    def compute_output_spec(self, inputs, training=None):
        hidden, labels = self._split(inputs)
        dtype = "float64" if hidden.dtype == "float64" else "float32"
        if labels is not None and training:
            return keras.KerasTensor(tuple(hidden.shape)[:-1], dtype=dtype)  # the loss
        if labels is not None:
            shape = self.compute_output_shape((tuple(hidden.shape), tuple(labels.shape)))
        else:
            shape = self.compute_output_shape(tuple(hidden.shape))
        if labels is None and _chunked.output_top_k(self.top_k, self.num_classes) is not None:
            return (keras.KerasTensor(shape[0], dtype=dtype),
                    keras.KerasTensor(shape[1], dtype="int32"))
        return keras.KerasTensor(shape, dtype=dtype)


def build_tied_embedding(tied_embedding, dim):
    """Builds a tied `keras.layers.Embedding` if needed and checks its width is `dim`."""
    if not tied_embedding.built:
        tied_embedding.build()
    if tied_embedding.output_dim != dim:
        raise ValueError(
            f"`tied_embedding` has output_dim={tied_embedding.output_dim}, but `inputs` have "
            f"dimension {dim}.")


def missing_labels(head, call="head([inputs, labels], training=True)"):
    """The error of a training call without labels, saying how to pass them."""
    return ValueError(
        f"{type(head).__name__} was called with `training=True` but without labels: a "
        f"training call needs them, as `{call}`. In a functional model, add the labels as "
        "an input, `labels = keras.Input(shape=(), dtype='int32')`, build "
        "`keras.Model([x, labels], head([hidden, labels]))` and compile without a loss; or "
        "wrap a features model as `tfs.models.HeadModel(features, head)` to train with "
        "`model.fit(x, y)` and predict with `model.predict(x)`.")

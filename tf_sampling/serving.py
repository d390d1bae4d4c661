"""Export the inference path of a model with a sampled or tree head for TensorFlow Serving.

A model trained with a head of this package takes the labels as an input and adds its
training loss; serving needs neither. `export` writes a SavedModel whose only function is
the inference path: the feature inputs (e.g. context word ids) go through the layers that
feed the head, then the head's own exact `top_k(x, k)` (`tfs.layers.OutputHead`: the tree search, the adaptive
softmax's pruned search, or the chunked full-softmax top-k of the other heads, which never
builds the `[batch, num_classes]` logits), and the top `k` classes come out:

    top_k_ids        int32   [batch, k]   class ids, best first
    top_k_log_probs  float32 [batch, k]   their log-probabilities
    log_probs        float32 [batch, num_classes]   only with `log_probs=True`

The SavedModel holds variables and standard TensorFlow ops only: no candidate sampler runs
at inference, so neither this package nor its custom-op library is needed to load or serve
it (`tf.saved_model.load`, TensorFlow Serving, `saved_model_cli`). The first endpoint is
also exported as "serving_default", as TensorFlow Serving requires.

Example:
>>> model = keras.Model({"context": ctx, "label": label}, head([hidden, label]))
>>> model.fit(...)
>>> tfs.serving.export("lm/1", model, top_k=10)          # finds the head and its inputs
>>> served = tf.saved_model.load("lm/1").signatures["serving_default"]
>>> served(context=tf.constant([[4, 8, 15, 16]]))["top_k_ids"]
"""

import keras
import tensorflow as tf

from tf_sampling import _chunked
from tf_sampling import models as _models
from tf_sampling.layers import base as layers_base

__all__ = ["export", "inference_parts", "serving_function"]


def _is_head(layer):
    return callable(getattr(layer, "log_prob", None))


def inference_parts(model, head=None):
    """Splits a training model `inputs + labels -> head([hidden, labels])` in two.

    Args:
        model: a functional Keras model whose output head (a layer with `log_prob`) was
            called once on `[hidden, labels]` (or on `hidden` alone), or a
            `tfs.models.HeadModel` (its `features` and `head`).
        head: the head layer or its name; by default the last layer with `log_prob`.

    Returns:
        `(features, head)`: `features` is a `keras.Model` from the model's inputs other
        than the labels to the hidden tensor that the head reads.
    """
    if isinstance(model, _models.HeadModel):
        if head is not None and head is not model.head and head != model.head.name:
            raise ValueError(f"`head` {head!r} is not the head of this HeadModel.")
        return model.features, model.head
    if head is None:
        heads = [layer for layer in model.layers if _is_head(layer)]
        if not heads:
            raise ValueError("`model` has no output head (a layer with a `log_prob` method); "
                             "pass `head=` or use `export(path, features=..., head=...)`.")
        head = heads[-1]
    elif isinstance(head, str):
        head = model.get_layer(head)
    if not _is_head(head):
        raise TypeError(f"`head` must be a layer with a `log_prob` method, got {head!r}.")
    try:
        head_inputs = head.input
    except (AttributeError, ValueError) as e:
        raise ValueError(f"Cannot find the inputs of head {head.name!r} in the model: it must "
                         f"have been called exactly once ({e}).") from None
    if isinstance(head_inputs, (list, tuple)):
        hidden = head_inputs[0]
        labels = head_inputs[1] if len(head_inputs) > 1 else None
    else:
        hidden, labels = head_inputs, None
    feature_inputs = [t for t in model.inputs if t is not labels]
    if not feature_inputs:
        raise ValueError("`model` has no inputs besides the labels.")
    inputs = feature_inputs[0] if len(feature_inputs) == 1 else feature_inputs
    return keras.Model(inputs, hidden, name=f"{model.name}_features"), head


def _input_specs(features):
    specs = []
    for t in features.inputs:
        name = t.name.split(":")[0]
        specs.append(tf.TensorSpec(shape=t.shape, dtype=t.dtype, name=name))
    return specs


def serving_function(features, head, top_k=10, log_probs=False):
    """The exported computation, as a plain Python function of the feature tensors.

    Returns a dict with "top_k_ids", "top_k_log_probs" and, if `log_probs`, "log_probs".
    Useful to check in-process what the SavedModel will return.
    """
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or top_k < 1):
        raise ValueError(f"`top_k` must be a positive integer or None, got {top_k!r}.")
    if top_k is None and not log_probs:
        raise ValueError("Nothing to export: set `top_k` and/or `log_probs=True`.")
    num_classes = getattr(head, "num_classes", None)
    if top_k is not None and num_classes is not None and top_k > num_classes:
        raise ValueError(f"`top_k`={top_k} is larger than the head's num_classes="
                         f"{num_classes}.")
    # A layer of one's own with only `log_prob` gets `tf.math.top_k` of it.
    fast_top_k = head.top_k if isinstance(head, layers_base.OutputHead) else None

    def fn(*inputs):
        # The SavedModel must run without the compiled library: no fused ops in it.
        with _chunked.no_fused_ops():
            return body(*inputs)

    def body(*inputs):
        x = inputs[0] if len(inputs) == 1 else list(inputs)
        hidden = features(x, training=False)
        out = {}
        full = None
        if log_probs or fast_top_k is None:
            full = tf.cast(head.log_prob(hidden), tf.float32)
        if top_k is not None:
            if fast_top_k is not None:
                values, ids = fast_top_k(hidden, top_k)
            else:
                values, ids = tf.math.top_k(full, k=top_k)
            out["top_k_ids"] = tf.cast(ids, tf.int32)
            out["top_k_log_probs"] = tf.cast(values, tf.float32)
        if log_probs:
            out["log_probs"] = full
        return out

    return fn


def export(path, model=None, *, features=None, head=None, top_k=10, log_probs=False,
           verbose=False):
    """Writes the inference path of a model as a SavedModel for TensorFlow Serving.

    Give either `model` (a training model `inputs + labels -> head([hidden, labels])`; the
    head and the feature sub-model are found with `inference_parts`) or `features` (a
    Keras model from the serving inputs to the head's input) and `head`.

    Args:
        path: output directory (TensorFlow Serving wants `<model_dir>/<version>`).
        model: the training model.
        features: the feature model, instead of `model`.
        head: the head layer (or its name, with `model`).
        top_k: number of best classes returned; None for none.
        log_probs: also return the full `[batch, num_classes]` log-probabilities.
        verbose: print the exported variables.

    Returns:
        The serving function (see `serving_function`), for in-process comparison.

    The signature's inputs are named after the feature model's `keras.Input` names and
    keep their shapes and dtypes.
    """
    if (model is None) == (features is None):
        raise ValueError("Pass exactly one of `model` or `features` (with `head`).")
    if model is not None:
        features, head = inference_parts(model, head)
    elif head is None or not _is_head(head):
        raise ValueError("With `features`, pass the `head` layer (a layer with `log_prob`).")
    fn = serving_function(features, head, top_k=top_k, log_probs=log_probs)
    specs = _input_specs(features)
    archive = keras.export.ExportArchive()
    archive.track(features)
    archive.track(head)
    archive.add_endpoint("serve", fn, input_signature=specs)
    archive.write_out(path, verbose=verbose)
    return fn

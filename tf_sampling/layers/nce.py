"""`NCE`: an output head trained with noise-contrastive estimation."""

import keras

from tf_sampling.layers._sampled_head import SampledHead


@keras.saving.register_keras_serializable(package="tf_sampling")
class NCE(SampledHead):
    """Output layer over `num_classes` classes, trained with NCE (as `tf.nn.nce_loss`).

    Training calls on `[inputs, labels]` compute binary logistic losses of the true classes
    (target 1/num_true, as TF) against `num_sampled` sampled classes (target 0), with the
    `-log Q` correction, add the mean with `add_loss` and return the per-example loss; the
    full `[batch, num_classes]` logits are never computed.

    The NCE loss is a training objective only, not the model's cross-entropy. At
    inference (`training=False` or no labels) the head returns the full-softmax
    log-probabilities (or `top_k` values and indices) and, given labels, adds the exact
    cross-entropy, so `val_loss` is exact and `exp(val_loss)` is the perplexity; also
    `head.full_softmax_loss(hidden, labels)` and `head.perplexity(hidden, labels)`.

    The arguments are those of `tf_sampling.layers.SampledSoftmax`, except that
    `remove_accidental_hits` defaults to False, as in `tf.nn.nce_loss`.

    Example:
    >>> head = tfs.layers.NCE(num_classes=100_000, num_sampled=512)
    >>> loss = head([hidden, labels], training=True)   # [batch], adds mean(loss)
    >>> log_probs = head(hidden)                       # [batch, 100_000]
    >>> ppl = head.perplexity(val_hidden, val_labels)  # exact, for evaluation
    """

    _loss_kind = "logistic"
    _true_target = staticmethod(lambda num_true: 1.0 / num_true)

    _default_remove_accidental_hits = False
    _default_subtract_log_q = True

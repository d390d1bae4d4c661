"""Adaptive softmax (Grave et al. 2017, "Efficient softmax approximation for GPUs").

The model is PyTorch's `torch.nn.AdaptiveLogSoftmaxWithLoss`, weight for weight:

- classes are split by `cutoffs = [c_1, ..., c_n]` into a shortlist `[0, c_1)` and `n`
  clusters `[c_i, c_{i+1})` (with `c_{n+1} = num_classes`);
- the head is `Linear(in_features, c_1 + n, bias=head_bias)`: one logit per shortlist class
  and one per cluster;
- tail `i` (0-based) is `Linear(in_features, h_i, bias=False)` then `Linear(h_i, size_i,
  bias=False)` with `h_i = int(in_features // div_value ** (i + 1))`;
- `log p(y) = head_log_softmax[y]` for shortlist classes and
  `head_log_softmax[c_1 + i] + log_softmax(tail_i(x))[y - c_i]` for a class in cluster `i`.

Keras kernels are stored `[in, out]`, the transpose of PyTorch's `Linear.weight`.
"""

import numbers

import keras
import tensorflow as tf

from tf_sampling.layers import base
from tf_sampling.losses import _sampled_logits as _sl


def _flatten(inputs, labels=None):
    """[..., d] -> [N, d] and the leading shape, so any number of leading axes works."""
    lead = tf.shape(inputs)[:-1]
    flat = tf.reshape(inputs, [-1, tf.shape(inputs)[-1]])
    if labels is None:
        return flat, lead
    return flat, lead, tf.reshape(labels, [-1])


@keras.saving.register_keras_serializable(package="tf_sampling")
class AdaptiveSoftmax(base.OutputHead):
    """Adaptive softmax output head: exact log-probabilities at a fraction of the cost.

    Frequent classes (the shortlist) are scored by a small head softmax; rare classes sit in
    clusters whose probability is `P(cluster) * P(class | cluster)`, each cluster scored
    through a low-rank projection of size `in_features // div_value**(i+1)`. Unlike sampled
    losses, the training loss is the exact negative log-likelihood of this model, so it can
    be reported as perplexity directly. Class ids must be sorted by decreasing frequency
    (id 0 the most frequent), as in PyTorch.

    The layer follows PyTorch's `AdaptiveLogSoftmaxWithLoss` exactly (same parameters, same
    log-probability composition); to load PyTorch weights, assign `head.weight.T` to
    `head_kernel`, `head.bias` to `head_bias_weight`, and `tail[i][0].weight.T` / `tail[i][1].weight.T`
    to `tail_projections[i]` / `tail_kernels[i]`.

    Calling convention (`tfs.layers.OutputHead`, as every head of this package):
    - `layer([inputs, labels], training=True)` (as in `model.fit`) and
      `layer([inputs, labels])` (`model.evaluate`): add the mean negative log-likelihood
      with `add_loss` and return the per-example NLL (shape of `labels`); this head's
      training loss is exact, so `model.evaluate` reports the exact loss (perplexity =
      exp(loss)). Only the tail clusters that some label falls into are evaluated, on the
      rows whose label is there.
    - `layer(inputs)` with `training` False or None (inference): full log-probabilities
      `[..., num_classes]`, or `(values, indices)` of the best classes as `top_k` says
      (computed by the pruned search of `top_k`).
    - `layer(inputs, training=True)` raises a `ValueError`: training needs labels.

    Args:
        num_classes: number of classes `V`.
        cutoffs: increasing sequence of unique integers in `[1, num_classes)`: the shortlist is
            `[0, cutoffs[0])` and cluster `i` is `[cutoffs[i], cutoffs[i+1])`.
        div_value: the tail projection sizes are `in_features // div_value**(i+1)`.
        use_bias: whether the head `Dense` has a bias (PyTorch's `head_bias`, the
            deprecated name of this argument here).
        top_k: inference output. An integer k: `(values, indices)` of the k best classes.
            None: all log-probabilities. "auto" (default): None up to 65536 classes, the
            top 10 above.
        kernel_initializer, bias_initializer: Keras initializers for all kernels / the head
            bias. (PyTorch's `Linear` default is
            `VarianceScaling(1/3, "fan_in", "uniform")` for kernels.)

    Inputs: `inputs` float `[..., in_features]`; `labels` integer with the shape of
    `inputs.shape[:-1]` (a trailing axis of 1 is also accepted).

    Example:
    >>> head = tfs.layers.AdaptiveSoftmax(num_classes=10000, cutoffs=[1000, 4000])
    >>> hidden = keras.Input((256,)); labels = keras.Input((), dtype="int64")
    >>> model = keras.Model([hidden, labels], head([hidden, labels]))
    >>> model.compile(optimizer="adam")          # no loss: the head adds it
    >>> log_probs = head.log_prob(h)             # [batch, 10000], exp sums to 1
    >>> values, ids = head.top_k(h, 5)           # exact, without evaluating every tail
    """

    _min_classes = 2

    def __init__(self, num_classes, cutoffs, div_value=4.0, use_bias=False, top_k="auto",
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        use_bias = base.deprecated_argument(kwargs, "head_bias", "use_bias", use_bias, False,
                                            "AdaptiveSoftmax")
        super().__init__(num_classes, top_k=top_k, **kwargs)
        self.cutoffs = self._check_cutoffs(cutoffs, self.num_classes)
        if (isinstance(div_value, bool) or not isinstance(div_value, numbers.Real)
                or not div_value > 0 or div_value == float("inf")):
            raise ValueError(f"`div_value` must be a positive finite number, got {div_value!r}.")
        self.div_value = float(div_value)
        if not isinstance(use_bias, bool):
            raise ValueError(f"`use_bias` must be a bool, got {use_bias!r}.")
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

        self.shortlist_size = self.cutoffs[0]
        self.num_clusters = len(self.cutoffs)
        self.head_size = self.shortlist_size + self.num_clusters
        # Cluster i covers [bounds[i], bounds[i+1]).
        self._bounds = self.cutoffs + [self.num_classes]
        # Routing rows to clusters needs dynamic shapes (tf.where), which XLA cannot compile.
        self.supports_jit = False

    @staticmethod
    def _check_cutoffs(cutoffs, num_classes):
        try:
            values = list(cutoffs)
        except TypeError:
            raise ValueError(f"`cutoffs` must be a sequence of integers, got {cutoffs!r}.")
        if not values:
            raise ValueError("`cutoffs` must contain at least one cutoff.")
        for c in values:
            if isinstance(c, bool) or not isinstance(c, numbers.Integral):
                raise ValueError(f"`cutoffs` must contain integers, got {c!r} in {cutoffs!r}.")
        values = [int(c) for c in values]
        if values != sorted(values) or len(set(values)) != len(values):
            raise ValueError(f"`cutoffs` must be unique and sorted increasingly, got {values}.")
        if values[0] <= 0 or values[-1] >= num_classes:
            raise ValueError(
                f"`cutoffs` must lie in [1, num_classes - 1] = [1, {num_classes - 1}], "
                f"got {values}.")
        return values

    # ------------------------------------------------------------------ weights
    def tail_hidden_size(self, i, in_features):
        return int(in_features // (self.div_value ** (i + 1)))

    def build(self, input_shape):
        input_shape = self.hidden_shape(input_shape)
        in_features = input_shape[-1] if input_shape else None
        if in_features is None:
            raise ValueError(
                f"The last axis of `inputs` must be known to build AdaptiveSoftmax, got shape "
                f"{input_shape}.")
        self.in_features = int(in_features)
        self.head_kernel = self.add_weight(
            name="head_kernel", shape=(self.in_features, self.head_size),
            initializer=self.kernel_initializer)
        self.head_bias_weight = None
        if self.use_bias:
            self.head_bias_weight = self.add_weight(
                name="head_bias", shape=(self.head_size,), initializer=self.bias_initializer)
        self.tail_projections = []
        self.tail_kernels = []
        for i in range(self.num_clusters):
            hidden = self.tail_hidden_size(i, self.in_features)
            if hidden <= 0:
                raise ValueError(
                    f"Cluster {i} would get a projection of size in_features // div_value**{i + 1}"
                    f" = {self.in_features} // {self.div_value ** (i + 1):g} = 0; use a smaller "
                    "`div_value`, fewer `cutoffs`, or a wider input.")
            size = self._bounds[i + 1] - self._bounds[i]
            self.tail_projections.append(self.add_weight(
                name=f"tail_{i}_projection", shape=(self.in_features, hidden),
                initializer=self.kernel_initializer))
            self.tail_kernels.append(self.add_weight(
                name=f"tail_{i}_kernel", shape=(hidden, size),
                initializer=self.kernel_initializer))

    # ------------------------------------------------------------------ pieces
    def _log_softmax(self, logits):
        # Half-precision log_softmax loses the small probabilities this layer exists for.
        if logits.dtype in (tf.float16, tf.bfloat16):
            logits = tf.cast(logits, tf.float32)
        return tf.nn.log_softmax(logits, axis=-1)

    def _head_log_prob(self, x):
        logits = tf.matmul(x, tf.cast(self.head_kernel, x.dtype))
        if self.head_bias_weight is not None:
            logits = logits + tf.cast(self.head_bias_weight, x.dtype)
        return self._log_softmax(logits)

    def _tail_log_prob(self, i, x):
        hidden = tf.matmul(x, tf.cast(self.tail_projections[i], x.dtype))
        return self._log_softmax(tf.matmul(hidden, tf.cast(self.tail_kernels[i], x.dtype)))

    def _check_inputs(self, inputs):
        inputs = _sl.check_inputs(inputs, min_rank=1)
        if not self.built:
            self.build(tuple(inputs.shape))
        inputs = _sl.check_inputs(inputs, self.in_features, min_rank=1)
        return tf.cast(inputs, self.compute_dtype)

    def _check_labels(self, labels, inputs):
        labels = tf.convert_to_tensor(labels)
        if not labels.dtype.is_integer:
            raise TypeError(f"`labels` must be an integer tensor, got dtype {labels.dtype.name}.")
        lead = inputs.shape[:-1]
        if labels.shape.rank is not None and lead.rank is not None:
            ok = labels.shape.rank == lead.rank or (
                labels.shape.rank == lead.rank + 1 and labels.shape[-1] in (1, None))
            if ok:
                ok = labels.shape[:lead.rank].is_compatible_with(lead)
            if not ok:
                raise ValueError(
                    f"`labels` must have shape {lead} (the shape of `inputs` without its last "
                    f"axis, optionally with a trailing 1), got {labels.shape}.")
        labels = tf.cast(labels, tf.int64)
        msg = f"`labels` has ids outside [0, num_classes={self.num_classes})"
        checks = [
            tf.debugging.assert_non_negative(labels, message=msg),
            tf.debugging.assert_less(labels, tf.constant(self.num_classes, tf.int64), message=msg),
            tf.debugging.assert_equal(
                tf.size(labels, out_type=tf.int64),
                tf.reduce_prod(tf.shape(inputs, out_type=tf.int64)[:-1]),
                message="`labels` must have one id per row of `inputs`"),
        ]
        with tf.control_dependencies(checks):
            return tf.identity(labels)

    # ------------------------------------------------------------------ public API
    def nll(self, inputs, labels):
        """Exact per-example negative log-likelihood, shape of `inputs.shape[:-1]`.

        Computes the head for every row, and tail `i` only for the rows whose label falls in
        cluster `i` (PyTorch's `forward`); empty clusters cost nothing.
        """
        inputs = self._check_inputs(inputs)
        labels = self._check_labels(labels, inputs)
        x, lead, y = _flatten(inputs, labels)
        head_lp = self._head_log_prob(x)
        # bucket 0 is the shortlist, bucket i + 1 is cluster i.
        bucket = tf.zeros_like(y, dtype=tf.int32)
        for c in self.cutoffs:
            bucket += tf.cast(y >= c, tf.int32)
        head_index = tf.where(bucket == 0, y,
                              tf.cast(self.shortlist_size - 1 + bucket, tf.int64))
        log_p = tf.gather(head_lp, head_index, batch_dims=1)
        for i in range(self.num_clusters):
            rows = tf.where(bucket == i + 1)[:, 0]
            tail_lp = self._tail_log_prob(i, tf.gather(x, rows))
            within = tf.gather(y, rows) - self._bounds[i]
            picked = tf.gather(tail_lp, within, batch_dims=1)
            log_p += tf.scatter_nd(rows[:, None], picked, tf.shape(log_p, out_type=tf.int64))
        return tf.reshape(-log_p, lead)

    def full_softmax_loss(self, inputs, labels):
        """Exact per-example NLL for evaluation; for this layer the training loss is exact."""
        return self.nll(inputs, labels)

    def log_prob(self, inputs):
        """Full log-probabilities `[..., num_classes]`; their exponentials sum to 1."""
        inputs = self._check_inputs(inputs)
        x, lead = _flatten(inputs)
        head_lp = self._head_log_prob(x)
        parts = [head_lp[:, :self.shortlist_size]]
        for i in range(self.num_clusters):
            cluster_lp = head_lp[:, self.shortlist_size + i:self.shortlist_size + i + 1]
            parts.append(self._tail_log_prob(i, x) + cluster_lp)
        out = tf.concat(parts, axis=-1)
        return tf.reshape(out, tf.concat([lead, [self.num_classes]], 0))

    def top_k(self, inputs, k=None):
        """Exact top-`k` classes `(values, indices)`, as `tf.math.top_k(log_prob(inputs), k)`.

        Vectorised pruning, in the spirit of PyTorch's `predict`: every word of cluster `i`
        has log-probability at most the cluster's head log-probability, so a row needs tail `i`
        only if that head value beats the row's current k-th best. Rows start from the top-k of
        the shortlist; clusters are visited in order, and each tail runs only on the rows that
        still need it (a `tf.where` + gather, then a scatter of the merged top-k back). Ties
        keep the lower class id first, as `tf.math.top_k` does. Indices are int32. `k`
        defaults to the head's `top_k` argument when it is an integer, else 1.
        """
        k = self._resolve_k(k)
        inputs = self._check_inputs(inputs)
        x, lead = _flatten(inputs)
        head_lp = self._head_log_prob(x)
        k_short = min(k, self.shortlist_size)
        values, indices = tf.math.top_k(head_lp[:, :self.shortlist_size], k_short)
        if k_short < k:
            # Padding at -inf is beaten by any real class, so it never survives (k <= V).
            pad = k - k_short
            n = tf.shape(x)[0]
            values = tf.concat([values, tf.fill([n, pad], tf.constant(-float("inf"),
                                                                      values.dtype))], 1)
            indices = tf.concat([indices, tf.fill([n, pad], -1)], 1)
        for i in range(self.num_clusters):
            cluster_lp = head_lp[:, self.shortlist_size + i]
            rows = tf.where(cluster_lp > values[:, k - 1])[:, 0]
            tail_lp = (self._tail_log_prob(i, tf.gather(x, rows))
                       + tf.gather(cluster_lp, rows)[:, None])
            m = min(k, self._bounds[i + 1] - self._bounds[i])
            c_values, c_indices = tf.math.top_k(tail_lp, m)
            merged_v = tf.concat([tf.gather(values, rows), c_values], 1)
            merged_i = tf.concat([tf.gather(indices, rows), c_indices + self._bounds[i]], 1)
            best_v, pos = tf.math.top_k(merged_v, k)
            best_i = tf.gather(merged_i, pos, batch_dims=1)
            values = tf.tensor_scatter_nd_update(values, rows[:, None], best_v)
            indices = tf.tensor_scatter_nd_update(indices, rows[:, None], best_i)
        shape = tf.concat([lead, [k]], 0)
        return tf.reshape(values, shape), tf.reshape(indices, shape)

    def predict(self, inputs):
        """Most probable class per row (int64, shape `inputs.shape[:-1]`), equal to
        `argmax(log_prob(inputs))`, computing only the tails that could hold it."""
        _, indices = self.top_k(inputs, 1)
        return tf.cast(indices[..., 0], tf.int64)

    # ------------------------------------------------------------------ Keras
    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "head_bias" in config:  # files saved before the argument became `use_bias`
            config["use_bias"] = config.pop("head_bias")
        return cls(**config)

    def get_config(self):
        config = super().get_config()
        config.update({
            "cutoffs": list(self.cutoffs),
            "div_value": self.div_value,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        })
        return config

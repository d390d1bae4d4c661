"""The logits of the true and the sampled classes, as TF's `_compute_sampled_logits`.

Shared by the functional losses and the Keras heads. Differences from TF that do not change
the result (checked against `tf.nn.*` in tests/test_losses.py):

* the rows of the distinct ids among the true and sampled classes are gathered once and
  then expanded (see `_unique_rows`), so the weight and bias gradients are IndexedSlices
  with unique row ids and summed rows, which every Keras optimizer applies as it would
  the dense gradient (TF gathers the concatenated ids and slices: duplicate slices, and
  zero-padded slice gradients);
* the true and sampled logits are returned separately, so the losses need not build TF's
  `[batch, num_true + num_sampled]` logit and label matrices;
* `log Q` of the sampled classes is folded into their biases (a `[num_sampled]` vector)
  instead of being subtracted from the `[batch, num_sampled]` logits;
* float16/bfloat16 inputs and weights are computed in float32, so large logits do not
  overflow; the loss comes out in float32.
"""

import numbers

import keras
import numpy as np
import tensorflow as tf

from tf_sampling import samplers as samplers_lib
from tf_sampling.losses import _unique_rows

# TF marks accidental hits with -FLT_MAX (float32), whatever the logits' dtype.
_ACCIDENTAL_HIT = float(-np.finfo(np.float32).max)


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def check_num_sampled(num_sampled, num_classes, unique):
    num_sampled = check_positive_int(num_sampled, "num_sampled")
    if unique and num_sampled > num_classes:
        raise ValueError(
            f"`num_sampled`={num_sampled} is larger than `num_classes`={num_classes}, "
            "which is impossible with `unique=True`.")
    return num_sampled


def compute_dtype(dtype):
    """Half-precision inputs are computed in float32; float32/float64 stay as they are."""
    dtype = tf.as_dtype(dtype)
    if not dtype.is_floating:
        raise TypeError(f"`inputs` must be a float tensor, got dtype {dtype.name}.")
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def _unwrap(tensor):
    # A Keras variable is read through its tf.Variable so that tf.gather becomes a sparse
    # ResourceGather, and so that no autocast copy of the whole matrix is made.
    return tensor.value if isinstance(tensor, keras.Variable) else tensor


def as_shards(params, name):
    """`params` as a list of row shards (one tensor is one shard)."""
    if params is None:
        return None
    if isinstance(params, (list, tuple)):
        if not params:
            raise ValueError(f"`{name}` is an empty list.")
        shards = [_unwrap(p) for p in params]
    else:
        shards = [_unwrap(params)]
    shards = [s if isinstance(s, tf.Variable) else tf.convert_to_tensor(s) for s in shards]
    return shards


def check_shards(shards, num_classes, name, rank):
    """Static checks: each shard has `rank`, and the shards' rows add up to num_classes."""
    rows = []
    for i, s in enumerate(shards):
        if s.shape.rank is not None and s.shape.rank != rank:
            what = "[num_classes, dim]" if rank == 2 else "[num_classes]"
            raise ValueError(
                f"`{name}` must be {what} (or a list of row shards of it); shard {i} has "
                f"shape {s.shape}.")
        rows.append(s.shape[0])
    if all(r is not None for r in rows) and sum(rows) != num_classes:
        raise ValueError(
            f"`{name}` has {sum(rows)} rows in all (shards: {rows}), but `num_classes` is "
            f"{num_classes}.")
    return rows


def gather_rows(shards, ids, rows):
    """Rows `ids` of the row-wise concatenation of `shards`.

    For shards sized as TF's "div" strategy lays them out (the first `num_classes % P`
    shards one row longer) this is `tf.nn.embedding_lookup(shards, ids)`; shards of any
    other sizes are read as their concatenation, which is what the `weights` argument of
    `tf.nn.sampled_softmax_loss` is documented to be. Each shard's gradient has one slice
    per id of that shard, so unique `ids` give every shard a gradient with unique rows.
    """
    if len(shards) == 1:
        return tf.gather(shards[0], ids)
    ids = tf.cast(ids, tf.int64)
    if all(r is not None for r in rows):
        starts = tf.constant(np.cumsum([0] + rows[:-1]), tf.int64)
    else:
        sizes = tf.stack([tf.shape(s, out_type=tf.int64)[0] for s in shards])
        starts = tf.cumsum(sizes, exclusive=True)
    shard_of = tf.cast(tf.searchsorted(starts, ids, side="right"), tf.int32) - 1
    local = ids - tf.gather(starts, shard_of)
    n = len(shards)
    parts = tf.dynamic_partition(local, shard_of, n)
    positions = tf.dynamic_partition(tf.range(tf.size(ids)), shard_of, n)
    return tf.dynamic_stitch(positions, [tf.gather(s, p) for s, p in zip(shards, parts)])


def check_labels(labels, num_true, num_classes, name="labels"):
    """`labels` as int64 `[batch, num_true]`; rank-1 labels are accepted when num_true == 1.

    Ids outside [0, num_classes) raise InvalidArgumentError; in a graph, everything that
    uses the returned tensor waits for that check.
    """
    labels = tf.convert_to_tensor(labels)
    if not labels.dtype.is_integer:
        raise TypeError(
            f"`{name}` must be an integer tensor (int32 or int64), got dtype "
            f"{labels.dtype.name}.")
    rank = labels.shape.rank
    if rank == 1 and num_true == 1:
        labels = tf.expand_dims(labels, 1)
    elif rank == 2:
        if labels.shape[1] is not None and labels.shape[1] != num_true:
            raise ValueError(
                f"`{name}` must have shape [batch, num_true={num_true}], got {labels.shape}.")
    else:
        expected = "[batch] or [batch, 1]" if num_true == 1 else f"[batch, {num_true}]"
        raise ValueError(f"`{name}` must have shape {expected}, got shape {labels.shape}.")
    if labels.dtype != tf.int64:
        labels = tf.cast(labels, tf.int64)
    ok = tf.reduce_all((labels >= 0) & (labels < num_classes))
    # Only string and int32 data: then tf.debugging.Assert is one op, not a tf.cond.
    check = tf.debugging.Assert(
        ok, [f"`{name}` has ids outside [0, num_classes={num_classes}); min and max:",
             tf.saturate_cast(tf.reduce_min(labels), tf.int32),
             tf.saturate_cast(tf.reduce_max(labels), tf.int32)], summarize=3)
    if tf.executing_eagerly():
        return labels
    with tf.control_dependencies([check]):
        return tf.identity(labels)


def check_batch(labels, inputs):
    n, m = labels.shape[0], inputs.shape[0]
    if n is not None and m is not None and n != m:
        raise ValueError(f"`labels` has {n} rows but `inputs` has {m}; they must match.")


_NAMED = {}


def resolve_sampler(sampler, num_classes):
    """A CandidateSampler for the functional losses; names get one cached instance each.

    Named samplers are cached (per name and num_classes) and created outside any
    tf.function, so that their seed-generator variable exists once and keeps advancing.
    """
    if sampler is None:
        sampler = "log_uniform"
    if isinstance(sampler, str):
        key = (sampler, num_classes)
        if key not in _NAMED:
            with tf.init_scope():
                instance = samplers_lib.get(sampler, num_classes)
            if instance.learns:
                raise ValueError(
                    f"sampler={sampler!r} learns from the labels, but the functional losses "
                    "never update a sampler: pass an instance and call its `update(labels)` "
                    "on training steps (the tf_sampling.layers heads do that for you).")
            _NAMED[key] = instance
        return _NAMED[key]
    if isinstance(sampler, samplers_lib.CandidateSampler):
        if sampler.num_classes != num_classes:
            raise ValueError(
                f"`sampler` has num_classes={sampler.num_classes}, but `num_classes` is "
                f"{num_classes}.")
        return sampler
    raise TypeError(f"`sampler` must be a CandidateSampler, a sampler name or None, got "
                    f"{sampler!r}.")


def check_sampled_values(sampled_values, num_sampled):
    if not isinstance(sampled_values, (tuple, list)) or len(sampled_values) != 3:
        raise ValueError(
            "`sampled_values` must be a (sampled_candidates, true_expected_count, "
            f"sampled_expected_count) triple, got {sampled_values!r}.")
    sampled, true_ec, sampled_ec = (tf.convert_to_tensor(v) for v in sampled_values)
    if sampled.shape.rank is not None and (
            sampled.shape.rank != 1 or sampled.shape[0] not in (None, num_sampled)):
        raise ValueError(
            f"`sampled_values[0]` (sampled_candidates) must have shape [num_sampled="
            f"{num_sampled}], got {sampled.shape}.")
    if not sampled.dtype.is_integer:
        raise TypeError("`sampled_values[0]` (sampled_candidates) must be integer, got "
                        f"{sampled.dtype.name}.")
    return sampled, true_ec, sampled_ec


def sampled_logits(weights, biases, labels, inputs, sampled_values, num_true,
                   subtract_log_q, remove_accidental_hits, weight_rows=None):
    """True and sampled logits, `[batch, num_true]` and `[batch, num_sampled]`.

    Args:
        weights: list of row shards (see `as_shards`), `[num_classes, dim]` in all.
        biases: list of row shards, or None for no bias.
        labels: checked int64 `[batch, num_true]`.
        inputs: float `[batch, dim]`.
        sampled_values: (sampled int `[S]`, true_ec `[batch, num_true]`, sampled_ec `[S]`).
        weight_rows: static row counts of the weight shards, if already known.

    Returns:
        `(true_logits, sampled_logits)` in `compute_dtype(inputs.dtype)`.
    """
    dtype = compute_dtype(inputs.dtype)
    sampled, true_ec, sampled_ec = (tf.stop_gradient(v) for v in sampled_values)
    if sampled.dtype != tf.int64:
        sampled = tf.cast(sampled, tf.int64)
    if inputs.dtype != dtype:
        inputs = tf.cast(inputs, dtype)
    labels_flat = tf.reshape(labels, [-1])
    if weight_rows is None:
        weight_rows = [s.shape[0] for s in weights]

    # One lookup of the distinct ids, expanded by two gathers (not TF's gather-then-slice,
    # whose slice gradients are zero-padded): a label that is also sampled, or repeated in
    # the batch, is one row of the weight gradient, in each shard.
    unique, (true_index, sampled_index) = _unique_rows.unique_index(labels_flat, sampled)

    def lookup(params, param_rows):
        out = gather_rows(params, unique, param_rows)
        if out.dtype != dtype:
            out = tf.cast(out, dtype)
        return tf.gather(out, true_index), tf.gather(out, sampled_index)

    true_w, sampled_w = lookup(weights, weight_rows)
    if num_true == 1:
        true_logits = tf.reduce_sum(inputs * true_w, 1, keepdims=True)
    else:
        true_logits = tf.reduce_sum(
            tf.expand_dims(inputs, 1) * tf.reshape(true_w, [-1, num_true, tf.shape(true_w)[1]]),
            2)
    logits = tf.matmul(inputs, sampled_w, transpose_b=True)

    sampled_shift = None
    if biases is not None:
        true_b, sampled_shift = lookup(biases, [s.shape[0] for s in biases])
        true_logits += tf.reshape(true_b, [-1, num_true])
    if subtract_log_q:
        true_logits -= tf.math.log(tf.cast(true_ec, dtype))
        log_q = tf.math.log(tf.cast(sampled_ec, dtype))
        sampled_shift = -log_q if sampled_shift is None else sampled_shift - log_q
    if sampled_shift is not None:
        logits += sampled_shift

    if remove_accidental_hits:
        hit_rows, cols, _ = tf.nn.compute_accidental_hits(labels, sampled, num_true=num_true)
        index = tf.stack([tf.cast(hit_rows, tf.int64), cols], 1)
        fill = tf.fill(tf.shape(cols), tf.constant(_ACCIDENTAL_HIT, dtype))
        # As TF: add a dense mask. (A tensor_scatter_nd_update was slower: it copies the
        # logits, and again in the gradient.) validate_indices=False keeps duplicate hits
        # (a class repeated among an example's labels) at one -FLT_MAX, not -inf.
        logits += tf.sparse.to_dense(
            tf.SparseTensor(index, fill, tf.shape(logits, out_type=tf.int64)),
            validate_indices=False)
    return true_logits, logits


def prepare(weights, biases, labels, inputs, num_sampled, num_classes, num_true, sampler,
            sampled_values, unique, seed):
    """Argument checks and sampling shared by the three functional losses."""
    num_classes = check_positive_int(num_classes, "num_classes")
    num_true = check_positive_int(num_true, "num_true")
    w = as_shards(weights, "weights")
    b = as_shards(biases, "biases")
    check_shards(w, num_classes, "weights", rank=2)
    if b is not None:
        check_shards(b, num_classes, "biases", rank=1)
    inputs = tf.convert_to_tensor(inputs)
    compute_dtype(inputs.dtype)
    if inputs.shape.rank is not None and inputs.shape.rank != 2:
        raise ValueError(f"`inputs` must have shape [batch, dim], got {inputs.shape}.")
    labels = check_labels(labels, num_true, num_classes)
    check_batch(labels, inputs)
    if sampled_values is None:
        num_sampled = check_num_sampled(num_sampled, num_classes, unique)
        sampled_values = resolve_sampler(sampler, num_classes).sample(
            labels, num_sampled, unique=unique, seed=seed)
    else:
        num_sampled = check_positive_int(num_sampled, "num_sampled")
        sampled_values = check_sampled_values(sampled_values, num_sampled)
    return w, b, labels, inputs, num_true, sampled_values


def softmax_loss(true_logits, logits, num_true):
    """Per-example cross-entropy with target 1/num_true on each true class (as TF).

    `logsumexp([true, sampled]) - mean(true)`, with its gradient `softmax - target`
    written out: this needs neither TF's `[batch, num_true + num_sampled]` concatenation
    nor its dense target matrix, and on CPU it is faster than the fused xent kernels.
    """

    @tf.custom_gradient
    def xent(true_logits, logits):
        # The max over both parts keeps exp() <= 1; accidental hits (-FLT_MAX) give 0.
        top = tf.stop_gradient(tf.maximum(tf.reduce_max(true_logits, 1, keepdims=True),
                                          tf.reduce_max(logits, 1, keepdims=True)))
        exp_true = tf.exp(true_logits - top)
        exp_sampled = tf.exp(logits - top)
        total = tf.reduce_sum(exp_true, 1, keepdims=True) + tf.reduce_sum(
            exp_sampled, 1, keepdims=True)
        loss = tf.squeeze(tf.math.log(total) + top, 1) - tf.reduce_mean(true_logits, 1)

        def grad(upstream):
            scale = tf.expand_dims(upstream, 1) / total
            return (exp_true * scale - tf.expand_dims(upstream, 1) / num_true,
                    exp_sampled * scale)

        return loss, grad

    return xent(true_logits, logits)


def logistic_loss(true_logits, logits, true_target):
    """Per-example binary logistic loss: target `true_target` for true, 0 for sampled.

    For target 0, sigmoid cross-entropy is exactly softplus(logit): one fused op.
    """
    true_part = tf.nn.sigmoid_cross_entropy_with_logits(
        labels=tf.fill(tf.shape(true_logits), tf.cast(true_target, true_logits.dtype)),
        logits=true_logits)
    return tf.reduce_sum(true_part, 1) + tf.reduce_sum(tf.nn.softplus(logits), 1)

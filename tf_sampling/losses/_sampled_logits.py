"""The logits of the true and the sampled classes, as TF's `_compute_sampled_logits`, and
the argument checks that every loss of this package shares.

One core serves both sampling schemes, told apart by the rank of the sampled ids: `[S]`, one
sample shared by the batch (TF's scheme), or `[batch, S]`, each example its own (word2vec's
scheme). Used by the functional losses and the Keras heads. Differences from TF that do not
change the result (checked against `tf.nn.*` in tests/test_losses.py):

* the rows of the distinct ids among the true and sampled classes are gathered once and
  then expanded (see `_unique_rows`), so the weight and bias gradients are IndexedSlices
  with unique row ids and summed rows, which every Keras optimizer applies as it would
  the dense gradient (TF gathers the concatenated ids and slices: duplicate slices, and
  zero-padded slice gradients);
* the true and sampled logits are returned separately, so the losses need not build TF's
  `[batch, num_true + num_sampled]` logit and label matrices;
* `log Q` of the sampled classes is folded into their biases (for a shared sample a
  `[num_sampled]` vector) instead of being subtracted from the `[batch, num_sampled]`
  logits;
* float16/bfloat16 inputs and weights are computed in float32, so large logits do not
  overflow; the loss comes out in float32.

Per example, the logits come from a batched gather of weight rows, `[batch, S, dim]`: the
same O(batch * S * dim) flops as the shared scheme's `[batch, dim] x [dim, S]` matmul, but
`batch` times more weight rows are read, and a batched dot product instead of one matmul.
"""

import numbers

import keras
import numpy as np
import tensorflow as tf

from tf_sampling import _variables
from tf_sampling import samplers as samplers_lib
from tf_sampling.losses import _unique_rows

# TF marks accidental hits with -FLT_MAX (float32), whatever the logits' dtype.
_ACCIDENTAL_HIT = float(-np.finfo(np.float32).max)


# ---------------------------------------------------------------------------- checks
def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


def check_num_sampled(num_sampled, num_classes, unique):
    num_sampled = check_positive_int(num_sampled, "num_sampled")
    if unique and isinstance(num_classes, int) and num_sampled > num_classes:
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


def check_inputs(inputs, dim=None, rank=None, min_rank=2, layer=True):
    """`inputs` as a float tensor of rank `rank` (or at least `min_rank`) whose last axis is
    `dim` (that of a built layer's weights, or with `layer=False` of the `weights`
    argument): a TypeError for another dtype, a ValueError for another shape."""
    inputs = tf.convert_to_tensor(inputs)
    if not inputs.dtype.is_floating:
        raise TypeError(f"`inputs` must be floating point, got dtype {inputs.dtype.name}.")
    r = inputs.shape.rank
    if rank is not None and r != rank:
        raise ValueError(f"`inputs` must have rank {rank}: `inputs` must have shape "
                         f"[batch, dim], got shape {inputs.shape}.")
    if r is not None and r < min_rank:
        raise ValueError(f"`inputs` must have rank >= {min_rank}, got shape {inputs.shape}.")
    width = inputs.shape[-1] if r else None
    if dim is not None and width is not None and int(width) != int(dim):
        if not layer:
            raise ValueError(f"`inputs` has dim {width} but `weights` has dim {dim}.")
        raise ValueError(f"`inputs` has last dimension {width}, but the layer was built for "
                         f"{dim}.")
    return inputs


def _unwrap(tensor):
    # A Keras variable is read through its tf.Variable so that tf.gather becomes a sparse
    # ResourceGather, and so that no autocast copy of the whole matrix is made.
    return tensor.value if isinstance(tensor, keras.Variable) else tensor


def as_shards(params, name, rank, num_classes=None):
    """`params` (a tensor or variable, or a list of row shards of one) as a checked list of
    shards, and the number of classes.

    Each shard must be floating point of rank `rank` (2: `[rows, dim]`, one dim for all;
    1: `[rows]`), and the rows must add up to `num_classes` where both are known. Without
    `num_classes` it is the rows in all: a Python int if static, else an int64 tensor.
    Variables stay variables, so that `tf.gather` on them reads only the rows it needs.
    """
    given = list(params) if isinstance(params, (list, tuple)) else [params]
    if given and all(isinstance(p, numbers.Number) for p in given):
        given = [params]  # a list of Python numbers is one vector, not scalar shards
    if not given:
        raise ValueError(f"`{name}` is an empty list.")
    shards = [_unwrap(p) for p in given]
    shards = [s if isinstance(s, tf.Variable) else tf.convert_to_tensor(s) for s in shards]
    what, unit = ("[num_classes, dim]", "rows") if rank == 2 else ("[num_classes]", "entries")
    for i, s in enumerate(shards):
        if s.shape.rank is not None and s.shape.rank != rank:
            raise ValueError(
                f"`{name}` must be a {what} tensor (or a list of row shards of it); shard "
                f"{i} has shape {s.shape}.")
        if not s.dtype.is_floating:
            raise TypeError(f"`{name}` must be floating point, got dtype {s.dtype.name}.")
    if rank == 2:
        dims = {s.shape[1] for s in shards} - {None}
        if len(dims) > 1:
            raise ValueError(f"`{name}` shards have different dims {sorted(dims)}.")
    rows = [s.shape[0] for s in shards]
    if any(r is None for r in rows):
        total = tf.add_n([tf.shape(s, out_type=tf.int64)[0] for s in shards])
        return shards, total if num_classes is None else num_classes
    if isinstance(num_classes, int) and sum(rows) != num_classes:
        in_all = f" in all (shards: {rows})" if len(rows) > 1 else ""
        raise ValueError(
            f"`num_classes`={num_classes} but `{name}` has {sum(rows)} {unit}{in_all}.")
    return shards, sum(rows) if num_classes is None else num_classes


def gather_rows(shards, ids, rows=None, current=True):
    """Rows `ids` (1-D) of the row-wise concatenation of `shards`.

    For shards sized as TF's "div" strategy lays them out (the first `num_classes % P`
    shards one row longer) this is `tf.nn.embedding_lookup(shards, ids)`; shards of any
    other sizes are read as their concatenation, which is what the `weights` argument of
    `tf.nn.sampled_softmax_loss` is documented to be. Each shard's gradient has one slice
    per id of that shard, so unique `ids` give every shard a gradient with unique rows.
    `rows`: the shards' row counts, if known better than their static shapes.
    `current`: read the rows as the optimizer has them now (`SparseAdam(catch_up=True)`
    moves a row by its pending momentum when it next updates it; this applies that move
    to the rows read, `_variables.gather`); False: the stored values, as a dense read of
    the same variables sees them.
    """
    read = _variables.gather if current else tf.gather
    if len(shards) == 1:
        return read(shards[0], ids)
    ids = tf.cast(ids, tf.int64)
    rows = [s.shape[0] for s in shards] if rows is None else rows
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
    return tf.dynamic_stitch(positions, [read(s, p) for s, p in zip(shards, parts)])


def range_check(ids, num_classes, name, noun="ids"):
    """An op that fails (InvalidArgumentError) unless all int64 `ids` are in
    [0, num_classes); `num_classes` may be a tensor."""
    bound = f"num_classes={num_classes}" if isinstance(num_classes, int) else "num_classes"
    ok = tf.reduce_all((ids >= 0) & (ids < tf.cast(num_classes, tf.int64)))
    # Only string and int32 data: then tf.debugging.Assert is one op, not a tf.cond.
    return tf.debugging.Assert(
        ok, [f"`{name}` has {noun} outside [0, {bound}); min and max:",
             tf.saturate_cast(tf.reduce_min(ids), tf.int32),
             tf.saturate_cast(tf.reduce_max(ids), tf.int32)], summarize=3)


def _after(checks, tensor):
    """`tensor`, which in a graph runs only after `checks` (eagerly they have run)."""
    if tf.executing_eagerly():
        return tensor
    with tf.control_dependencies(checks):
        return tf.identity(tensor)


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
                f"`{name}` has {labels.shape[1]} columns but `num_true`={num_true}: `{name}` "
                f"must have shape [batch, num_true={num_true}], got {labels.shape}.")
    else:
        expected = "[batch] or [batch, 1]" if num_true == 1 else f"[batch, {num_true}]"
        raise ValueError(f"`{name}` must have shape {expected}, got shape {labels.shape}.")
    if labels.dtype != tf.int64:
        labels = tf.cast(labels, tf.int64)
    return _after([range_check(labels, num_classes, name)], labels)


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
        if not isinstance(num_classes, int):
            raise ValueError(f"sampler={sampler!r} needs a static `num_classes`; pass it, or "
                             "pass a sampler instance.")
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
        if isinstance(num_classes, int) and sampler.num_classes != num_classes:
            raise ValueError(
                f"`sampler` has num_classes={sampler.num_classes}, but `num_classes` is "
                f"{num_classes}.")
        return sampler
    raise TypeError(f"`sampler` must be a CandidateSampler, a sampler name or None, got "
                    f"{sampler!r}.")


def check_sampled_values(sampled_values, num_sampled, num_true, per_example):
    """The `(sampled, true_ec, sampled_ec)` triple: shared `[num_sampled]` ids (TF's
    triple), or with `per_example` `[batch, num_sampled]` ids and per-row expected counts.
    `num_sampled` None (per example only): as many as the ids have columns."""
    if not isinstance(sampled_values, (tuple, list)) or len(sampled_values) != 3:
        raise ValueError(
            "`sampled_values` must be a (sampled_candidates, true_expected_count, "
            f"sampled_expected_count) triple, got {sampled_values!r}.")
    sampled, true_ec, sampled_ec = (tf.convert_to_tensor(v) for v in sampled_values)
    if not sampled.dtype.is_integer:
        raise TypeError("`sampled_values[0]` (sampled_candidates) must be integer, got "
                        f"{sampled.dtype.name}.")
    if not per_example:
        if sampled.shape.rank is not None and (
                sampled.shape.rank != 1 or sampled.shape[0] not in (None, num_sampled)):
            raise ValueError(
                f"`sampled_values[0]` (sampled_candidates) must have shape [num_sampled="
                f"{num_sampled}], got {sampled.shape}.")
        return sampled, true_ec, sampled_ec
    if sampled.shape.rank != 2:
        raise ValueError(
            "`sampled_values[0]` must have shape [batch, num_sampled] (per-example samples), "
            f"got {sampled.shape}; a shared [num_sampled] sample goes to the shared losses.")
    if num_sampled is not None and sampled.shape[1] not in (None, num_sampled):
        raise ValueError(
            f"`sampled_values[0]` has {sampled.shape[1]} columns but `num_sampled`="
            f"{num_sampled}.")
    for value, shape, name in ((true_ec, [None, num_true], "sampled_values[1]"),
                               (sampled_ec, [None, sampled.shape[1]], "sampled_values[2]")):
        if not value.dtype.is_floating:
            raise TypeError(f"`{name}` must be floating point, got dtype {value.dtype.name}.")
        if not value.shape.is_compatible_with(shape):
            raise ValueError(f"`{name}` must have shape {shape}, got {value.shape}.")
    return sampled, true_ec, sampled_ec


def _check_rows(inputs, labels, sampled_values, num_classes):
    """Per example: one row of labels and of each sampled value per row of `inputs`, and
    sampled ids in [0, num_classes), checked when the tensors are used."""
    batch = tf.shape(inputs, out_type=tf.int64)[0]
    sampled, true_ec, sampled_ec = sampled_values
    checks = [
        tf.debugging.assert_equal(tf.shape(labels, out_type=tf.int64)[0], batch,
                                  message="`labels` must have one row per row of `inputs`"),
        tf.debugging.assert_equal(
            tf.stack([tf.shape(v, out_type=tf.int64)[0] for v in sampled_values]), batch,
            message="`sampled_values` must have one row per row of `inputs`")]
    checks.append(range_check(tf.cast(sampled, tf.int64), num_classes, "sampled_values[0]"))
    return _after(checks, labels), (_after(checks, sampled), true_ec, sampled_ec)


# ---------------------------------------------------------------------------- logits
def mark_accidental_hits(logits, labels, sampled, num_true):
    """`logits` `[batch, S]` with TF's accidental-hit value (-FLT_MAX) wherever the sampled
    id equals one of that example's labels, so that it counts for nothing.

    `sampled`: int64 `[S]` (shared) or `[batch, S]` (per example). A shared sample follows
    `tf.nn.compute_accidental_hits`, which marks one position of an id drawn more than
    once; per example every position of a hit is marked.
    """
    if sampled.shape.rank == 2:
        hit = tf.reduce_any(tf.equal(sampled[:, :, None], labels[:, None, :]), axis=2)
        return tf.where(hit, tf.constant(_ACCIDENTAL_HIT, logits.dtype), logits)
    hit_rows, cols, _ = tf.nn.compute_accidental_hits(labels, sampled, num_true=num_true)
    index = tf.stack([tf.cast(hit_rows, tf.int64), cols], 1)
    fill = tf.fill(tf.shape(cols), tf.constant(_ACCIDENTAL_HIT, logits.dtype))
    # As TF: add a dense mask. (A tensor_scatter_nd_update was slower: it copies the
    # logits, and again in the gradient.) validate_indices=False keeps duplicate hits
    # (a class repeated among an example's labels) at one -FLT_MAX, not -inf.
    return logits + tf.sparse.to_dense(
        tf.SparseTensor(index, fill, tf.shape(logits, out_type=tf.int64)),
        validate_indices=False)


def sampled_logits(weights, biases, labels, inputs, sampled_values, num_true,
                   subtract_log_q, remove_accidental_hits):
    """True and sampled logits, `[batch, num_true]` and `[batch, num_sampled]`.

    Args:
        weights: list of row shards (see `as_shards`), `[num_classes, dim]` in all.
        biases: list of row shards, or None for no bias.
        labels: checked int64 `[batch, num_true]`.
        inputs: float `[batch, dim]`.
        sampled_values: (sampled int, true_ec `[batch, num_true]`, sampled_ec), the sampled
            ids and their expected counts `[S]` (one sample for the batch) or `[batch, S]`
            (each example its own).

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

    # One lookup of the distinct ids, expanded by two gathers (not TF's gather-then-slice,
    # whose slice gradients are zero-padded): a label that is also sampled, or repeated in
    # the batch, is one row of the weight gradient, in each shard.
    unique, (true_index, sampled_index) = _unique_rows.unique_index(labels_flat, sampled)

    def lookup(params):
        out = gather_rows(params, unique)
        if out.dtype != dtype:
            out = tf.cast(out, dtype)
        return tf.gather(out, true_index), tf.gather(out, sampled_index)

    true_w, sampled_w = lookup(weights)
    if num_true == 1:
        true_logits = tf.reduce_sum(inputs * true_w, 1, keepdims=True)
    else:
        true_logits = tf.reduce_sum(
            tf.expand_dims(inputs, 1) * tf.reshape(true_w, [-1, num_true, tf.shape(true_w)[1]]),
            2)
    if sampled.shape.rank == 2:
        logits = tf.einsum("bd,bsd->bs", inputs, sampled_w)
    else:
        logits = tf.matmul(inputs, sampled_w, transpose_b=True)

    sampled_shift = None
    if biases is not None:
        true_b, sampled_shift = lookup(biases)
        true_logits += tf.reshape(true_b, [-1, num_true])
    if subtract_log_q:
        true_logits -= tf.math.log(tf.cast(true_ec, dtype))
        log_q = tf.math.log(tf.cast(sampled_ec, dtype))
        sampled_shift = -log_q if sampled_shift is None else sampled_shift - log_q
    if sampled_shift is not None:
        logits += sampled_shift
    if remove_accidental_hits:
        logits = mark_accidental_hits(logits, labels, sampled, num_true)
    return true_logits, logits


def prepare(weights, biases, labels, inputs, num_sampled, num_classes, num_true, sampler,
            sampled_values, unique, seed, per_example=False):
    """Argument checks, and the draw unless `sampled_values` are given: what the functional
    losses do before `sampled_logits`.

    With `per_example` each example gets its own sample: `num_classes` may be None (the
    rows of `weights`), and so may `num_sampled` when `sampled_values` are given; a
    `sampler` (no default) or `sampled_values` is needed.
    """
    if num_classes is not None or not per_example:
        num_classes = check_positive_int(num_classes, "num_classes")
    num_true = check_positive_int(num_true, "num_true")
    w, num_classes = as_shards(weights, "weights", 2, num_classes)
    b = None if biases is None else as_shards(biases, "biases", 1, num_classes)[0]
    inputs = tf.convert_to_tensor(inputs)
    compute_dtype(inputs.dtype)
    if inputs.shape.rank is not None and inputs.shape.rank != 2:
        raise ValueError(f"`inputs` must have shape [batch, dim], got {inputs.shape}.")
    labels = check_labels(labels, num_true, num_classes)
    check_batch(labels, inputs)
    if sampled_values is None:
        if per_example and sampler is None:
            raise ValueError("Give a `sampler` (a tfs.samplers.CandidateSampler) or "
                             "`sampled_values`.")
        num_sampled = check_num_sampled(num_sampled, num_classes, unique)
        sampled_values = resolve_sampler(sampler, num_classes).sample(
            labels, num_sampled, unique=unique, seed=seed, per_example=per_example)
    else:
        if num_sampled is not None or not per_example:
            num_sampled = check_positive_int(num_sampled, "num_sampled")
        sampled_values = check_sampled_values(sampled_values, num_sampled, num_true,
                                              per_example)
        if per_example:
            labels, sampled_values = _check_rows(inputs, labels, sampled_values, num_classes)
    return w, b, labels, inputs, num_true, sampled_values


# ---------------------------------------------------------------------------- losses
def functional_loss(name, kind, weights, biases, labels, inputs, num_sampled, num_classes,
                    num_true, sampler, sampled_values, remove_accidental_hits,
                    subtract_log_q, unique, seed, per_example=False, true_target=None):
    """A functional loss end to end, in name scope `name`: `prepare`, `sampled_logits`,
    then `softmax_loss` (`kind="softmax"`) or `logistic_loss` with target `true_target`
    (default 1/num_true) for the true classes."""
    with tf.name_scope(name):
        w, b, labels, inputs, num_true, sampled_values = prepare(
            weights, biases, labels, inputs, num_sampled, num_classes, num_true, sampler,
            sampled_values, unique, seed, per_example)
        true_logits, logits = sampled_logits(w, b, labels, inputs, sampled_values, num_true,
                                             subtract_log_q, remove_accidental_hits)
        if kind == "softmax":
            return softmax_loss(true_logits, logits, num_true)
        return logistic_loss(true_logits, logits,
                             1.0 / num_true if true_target is None else true_target)


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

"""Exact full-softmax statistics over the classes, one chunk of classes at a time.

The output layer is a list of row shards: kernels `[rows_i, dim]` and optional biases
`[rows_i]`, whose row-wise concatenation is the `[num_classes, dim]` weight matrix. For a
batch `x [batch, dim]` this module computes, without ever holding the `[batch, num_classes]`
logits:

* the log-normaliser `logsumexp_j(x . w_j + b_j)` by the streaming ("online") softmax of
  Milakov & Gimelshein (2018): per chunk of classes, the running maximum `m` and the running
  sum `s` of `exp(logit - m)` are updated as `m' = max(m, max(chunk))`,
  `s' = s * exp(m - m') + sum(exp(chunk - m'))`;
* the top k classes, by a running merge: the chunk's own top k is concatenated after the
  running top k and the top k of that is kept (the running entries have the lower class
  ids, so `tf.math.top_k`'s lower-index-first rule keeps its tie order). A chunk's own top
  k is found by block maxima: the chunk is cut into blocks of `TOP_K_BLOCK` classes, and
  only the k blocks with the largest maxima can hold its top k (a block ranked below k
  others has k classes ranked above each of its own), so `tf.math.top_k` runs on the
  `[batch, chunk / TOP_K_BLOCK]` maxima and on the `[batch, k * TOP_K_BLOCK]` classes of
  the chosen blocks, never on the whole chunk (XLA's CPU top-k sorts its input);
* the exact cross-entropy `logsumexp - mean(true logits)`, the true logits being a sparse
  gather of the true rows, as in Cut Cross-Entropy (Wijmans et al., 2024, "Cut Your Losses
  in Large-Vocabulary Language Models");
* `full_softmax_nll`: the same loss with a `tf.custom_gradient` whose backward pass
  recomputes each chunk's logits from the saved log-normaliser (Cut Cross-Entropy's
  backward), so neither the logits nor their gradient exist at once.

Where the fused CPU op can run (`tf_sampling.ops.softmax.fast()`) and the caller passes
`fused=True` (heads that Keras never compiles with XLA), one op computes a shard's
log-normaliser and top k in cache-sized tiles instead of the chunk loop below
(custom_ops/cc/kernels/softmax_stats.h); its log-normaliser gets this module's chunked
backward pass as gradient.

Sharded weights follow Bengio et al. (2003, "A Neural Probabilistic Language Model",
section 3.1, output-parallel scheme): each shard's `(m, s, top k)` is computed under its
own device scope, and only these `[batch]` and `[batch, k]` partials are combined.

Cost: O(batch * num_classes * dim) multiply-adds, as the full softmax; extra memory
O(batch * chunk) (a few `[batch, chunk]` float tensors at a time), plus
`[num_classes, dim]` for the kernel gradient of `full_softmax_nll`.

Chunks have a static size, so the loops compile with XLA: the full chunks run in one
`tf.while_loop` (`parallel_iterations=1`, so one chunk is alive at a time) and the last,
shorter chunk once after it. Each chunk's rows are read with `tf.gather(kernel,
tf.range(lo, lo + chunk))`, which on a variable is a `ResourceGather` copying only the
chunk's rows.
"""

import contextlib
import math

import tensorflow as tf

from tf_sampling._variables import read_without_copy
from tf_sampling.ops import softmax as _fused_op

# The budget for one [batch, chunk] float32 tensor. The log-sum-exp and the gradient
# make several passes over each chunk's logits, so their chunks are cache-sized: 2 MiB,
# 512 classes at batch 1024 (measured on CPU, 1-2x faster than 64 MiB chunks, for the
# training step too). The top-k merge costs a top-k of [batch, 2k] per chunk, so fewer,
# larger chunks are faster there: 64 MiB, 16384 classes at batch 1024.
CHUNK_BUDGET_BYTES = 2 * 2 ** 20
TOP_K_CHUNK_BUDGET_BYTES = 64 * 2 ** 20
# Classes per block of the block-maxima top-k (`_chunk_top_k`).
TOP_K_BLOCK = 128
# Chunks are a multiple of 256 classes (whole cache lines and SIMD widths for any dtype).
CHUNK_MULTIPLE = 256
# Batch size assumed when the batch dimension is not known while tracing.
ASSUMED_BATCH = 2048
# Output of an inference call with `top_k="auto"`: the full `[batch, num_classes]`
# log-probabilities up to this many classes (256 MiB at batch 1024), the top
# AUTO_TOP_K classes above it.
AUTO_FULL_MAX_CLASSES = 2 ** 16
AUTO_TOP_K = 10
# Compile the chunk loops of shards with at least JIT_MIN_ROWS classes with XLA
# (tf.function(jit_compile=True)); below, the compile time (about a second per batch
# shape) outweighs the gain. Set JIT_COMPILE to False where XLA is not available; the
# results are the same.
JIT_COMPILE = True
JIT_MIN_ROWS = 2 ** 16


def _use_jit(rows):
    return JIT_COMPILE and rows >= JIT_MIN_ROWS


def check_chunk_size(chunk_size):
    """`chunk_size`: None (automatic) or a positive integer."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"`chunk_size` must be None or a positive integer, got "
                         f"{chunk_size!r}.")
    return int(chunk_size)


def check_top_k(top_k, num_classes):
    """`top_k`: "auto", None or an integer in [1, num_classes]."""
    if top_k is None or (isinstance(top_k, str) and top_k == "auto"):
        return top_k
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive integer, None or \"auto\", got "
                         f"{top_k!r}.")
    if top_k > num_classes:
        raise ValueError(f"`top_k`={top_k} is larger than `num_classes`={num_classes}.")
    return int(top_k)


def output_top_k(top_k, num_classes):
    """What an inference call returns: an int k (top k) or None (full log-probs)."""
    if isinstance(top_k, str):  # "auto"
        if num_classes <= AUTO_FULL_MAX_CLASSES:
            return None
        return min(AUTO_TOP_K, num_classes)
    return top_k


def chunk_size_for(batch, rows, chunk_size=None, top_k=False):
    """Static chunk size for a `[batch, dim]` input and a shard of `rows` classes."""
    if chunk_size is None:
        b = ASSUMED_BATCH if batch is None else max(int(batch), 1)
        budget = TOP_K_CHUNK_BUDGET_BYTES if top_k else CHUNK_BUDGET_BYTES
        chunk_size = budget // (4 * b) // CHUNK_MULTIPLE * CHUNK_MULTIPLE
        chunk_size = max(chunk_size, CHUNK_MULTIPLE)
    return max(1, min(int(chunk_size), int(rows)))


def _static_rows(kernel):
    rows = kernel.shape[0]
    if rows is None:
        raise ValueError("The kernel shards must have a static number of rows.")
    return int(rows)


def _chunk_logits(x, kernel, bias, lo, size):
    """Logits `[batch, size]` of classes `lo .. lo + size` of one shard, and their rows."""
    # lo + range(size), not range(lo, lo + size): a static length, so XLA compiles it.
    ids = lo + tf.range(size)
    w = tf.gather(kernel, ids)
    if w.dtype != x.dtype:
        w = tf.cast(w, x.dtype)
    logits = tf.matmul(x, w, transpose_b=True)
    if bias is not None:
        b = tf.gather(bias, ids)
        logits += b if b.dtype == x.dtype else tf.cast(b, x.dtype)
    return logits, w


def _for_chunks(rows, chunk, body, state):
    """Runs `state = body(lo, size, state)` over the chunks of `rows` classes."""
    n_full, tail = divmod(rows, chunk)
    if n_full == 1:
        state = body(tf.constant(0), chunk, state)
    elif n_full > 1:
        def loop_body(i, *st):
            return (i + 1,) + tuple(body(i * chunk, chunk, st))

        state = tf.while_loop(lambda i, *st: i < n_full, loop_body,
                              (tf.constant(0),) + tuple(state),
                              parallel_iterations=1)[1:]
    if tail:
        state = body(tf.constant(n_full * chunk), tail, state)
    return tuple(state)


def _chunk_top_k(logits, k):
    """`tf.math.top_k(logits, k)` of one `[batch, size]` chunk (static size), values and
    int32 positions, by way of the maxima of blocks of TOP_K_BLOCK classes.

    Exact, ties included: a class c of the top k lies in one of the k blocks ranked first
    by (maximum descending, block index ascending), since each block ranked above c's
    block holds a class ranked above c. The chosen blocks are read in block order, so the
    final `tf.math.top_k` keeps its lower-position-first rule for ties.
    """
    size = int(logits.shape[1])
    blocks, rem = divmod(size, TOP_K_BLOCK)
    if rem or blocks <= 2 * k:
        return tf.math.top_k(logits, min(k, size))
    n = tf.shape(logits)[0]
    grid = tf.reshape(logits, [n, blocks, TOP_K_BLOCK])
    _, best = tf.math.top_k(tf.reduce_max(grid, 2), k)
    best = tf.sort(best, axis=1)
    picked = tf.reshape(tf.gather(grid, best, batch_dims=1), [n, k * TOP_K_BLOCK])
    values, pos = tf.math.top_k(picked, k)
    block = tf.gather(best, pos // TOP_K_BLOCK, batch_dims=1)
    return values, block * TOP_K_BLOCK + pos % TOP_K_BLOCK


def _merge_top_k(values, ids, new_values, new_ids, k):
    """Top k of `[values, new_values]`; ties keep the earlier (lower-id) entries first."""
    cat_v = tf.concat([values, new_values], 1)
    cat_i = tf.concat([ids, new_ids], 1)
    values, pos = tf.math.top_k(cat_v, k)
    return values, tf.gather(cat_i, pos, batch_dims=1)


def _shard_stats_impl(x, kernel, bias, offset, k, chunk):
    """Running max, sum of exp and (if k) top-k logits and ids over one shard."""
    rows = _static_rows(kernel)
    n = tf.shape(x)[0]
    dtype = x.dtype

    def body(lo, size, state):
        logits, _ = _chunk_logits(x, kernel, bias, lo, size)
        m, s = state[0], state[1]
        m_new = tf.maximum(m, tf.reduce_max(logits, 1))
        s = s * tf.exp(m - m_new) + tf.reduce_sum(tf.exp(logits - m_new[:, None]), 1)
        if k is None:
            return m_new, s
        values, ids = _chunk_top_k(logits, k)
        values, ids = _merge_top_k(state[2], state[3], values, ids + (lo + offset), k)
        return m_new, s, values, ids

    # The running max starts at the lowest finite value, so exp(m - m') is 0, not NaN.
    state = (tf.fill([n], tf.constant(dtype.min, dtype)), tf.zeros([n], dtype))
    if k is not None:
        state += (tf.fill([n, k], tf.constant(-math.inf, dtype)),
                  tf.fill([n, k], tf.constant(-1, tf.int32)))
    return _for_chunks(rows, chunk, body, state)


# XLA fuses each chunk's bias add, max, exp and sums into a few passes over the
# [batch, chunk] logits (measured about 3x faster than the unfused ops on CPU).
# reduce_retracing: one trace for any batch size; XLA compiles once per batch shape.
_shard_stats_jit = tf.function(_shard_stats_impl, jit_compile=True, reduce_retracing=True)


def _fused_operands(x, kernel, bias):
    """`(kernel, bias)` read for the fused CPU op, or None where the op is not to run.

    A dense read of a variable that sparse updates wrote would copy all of it, so the
    reads leave copy-on-read mode first."""
    if not _fused_op.fast() or x.dtype != tf.float32:
        return None
    kernel = read_without_copy(kernel)
    bias = None if bias is None else read_without_copy(bias)
    if kernel.dtype != tf.float32 or (bias is not None and bias.dtype != tf.float32):
        return None
    return kernel, bias


def _fused_lse(x, kernel, bias, chunk):
    """One shard's log-normaliser `[batch]` by the fused CPU op, with this module's
    chunked backward pass as its gradient; `kernel`, `bias` from `_fused_operands`."""
    rows = _static_rows(kernel)
    use_bias = bias is not None

    @tf.custom_gradient
    def lse_fn(x, kernel, *maybe_bias):
        b = maybe_bias[0] if use_bias else None
        lse = _fused_op.log_normalizer(x, kernel, b)

        def grad(g):
            fn = _backward_jit if _use_jit(rows) else _backward_impl
            dx, dkernel, dbias = fn(x, kernel, b, g, lse, None, None, chunk)
            return [dx, dkernel] + ([dbias] if use_bias else [])

        return lse, grad

    return lse_fn(x, kernel, *([bias] if use_bias else []))


_fused_allowed = [True]

# The public functions are plain TF ops (static Python loops, explicit tf.while_loop): a
# tf.function that calls them need not convert them with autograph.
_no_autograph = tf.autograph.experimental.do_not_convert


@contextlib.contextmanager
def no_fused_ops():
    """Within it, `fused=True` is ignored: for functions exported to SavedModels, which
    must run without the compiled library (`tf_sampling.serving`)."""
    _fused_allowed.append(False)
    try:
        yield
    finally:
        _fused_allowed.pop()


def _shard_stats(x, kernel, bias, offset, k, chunk_size, fused=False):
    rows = _static_rows(kernel)
    chunk = chunk_size_for(x.shape[0], rows, chunk_size, top_k=k is not None)
    operands = _fused_operands(x, kernel, bias) if fused and _fused_allowed[-1] else None
    if operands is not None:
        if k is None:
            lse = _fused_lse(x, *operands, chunk)
            return lse, tf.ones_like(lse)  # (m, s) with s = 1: m is the log-normaliser
        # The op's top k has no gradient (none is registered for it).
        lse, values, ids = _fused_op.softmax_stats(x, *operands, k=k)
        return lse, tf.ones_like(lse), values, ids + offset
    fn = _shard_stats_jit if _use_jit(rows) else _shard_stats_impl
    return fn(x, kernel, bias, offset, k, chunk)


def _no_device(i):
    del i
    return contextlib.nullcontext()


@_no_autograph
def softmax_stats(x, kernels, biases=None, k=None, chunk_size=None, device=None,
                  fused=False):
    """Log-normaliser `[batch]` and, if `k`, the top-k `(logits, ids)` `[batch, k]`.

    Args:
        x: `[batch, dim]` float tensor (float32 or float64; the kernels are cast to it).
        kernels: list of `[rows_i, dim]` row shards (tensors or variables).
        biases: None or a list of `[rows_i]` shards.
        k: None or the number of best classes to return (at most num_classes).
        chunk_size: classes per chunk; None chooses it from the batch size.
        device: optional function `i -> context manager` placing shard i's work.
        fused: compute with the fused CPU op where it can run (`tf_sampling.ops.softmax`;
            not within `no_fused_ops()`). The op has no XLA kernel: only callers that are
            never compiled with XLA pass True. Its log-normaliser has this module's
            chunked backward pass as gradient; its top k has none.

    Returns:
        `lse` or `(lse, top_logits, top_ids)`; ids are int32 and index the concatenation.
    """
    device = device or _no_device
    biases = biases or [None] * len(kernels)
    parts, offset = [], 0
    for i, (w, b) in enumerate(zip(kernels, biases)):
        with device(i):
            parts.append(_shard_stats(x, w, b, offset, k, chunk_size, fused))
        offset += _static_rows(w)
    if len(parts) == 1:
        m, s = parts[0][0], parts[0][1]
    else:
        ms = tf.stack([p[0] for p in parts], 0)
        m = tf.reduce_max(ms, 0)
        s = tf.reduce_sum(tf.stack([p[1] for p in parts], 0) * tf.exp(ms - m), 0)
    lse = m + tf.math.log(s)
    if k is None:
        return lse
    values, ids = parts[0][2], parts[0][3]
    for p in parts[1:]:
        values, ids = _merge_top_k(values, ids, p[2], p[3], k)
    return lse, values, ids


def _gather_rows(shards, ids):
    """Rows `ids` (int64) of the row-wise concatenation of `shards`."""
    if len(shards) == 1:
        return tf.gather(shards[0], ids)
    # Deferred import: the losses package imports the layers' helpers, not this module.
    from tf_sampling.losses import _sampled_logits as _sl
    # The stored rows, as the dense reads of the log-normaliser see them.
    return _sl.gather_rows(shards, ids, [_static_rows(s) for s in shards], current=False)


def true_logits(x, labels, kernels, biases=None):
    """Logits `[batch, num_true]` of the classes `labels` (int `[batch, num_true]`)."""
    ids = tf.cast(labels, tf.int64)
    flat = tf.reshape(ids, [-1])
    w = _gather_rows(kernels, flat)
    w = tf.reshape(tf.cast(w, x.dtype), tf.concat([tf.shape(ids), [-1]], 0))
    out = tf.reduce_sum(w * x[:, None, :], -1)
    if biases is not None:
        out += tf.reshape(tf.cast(_gather_rows(biases, flat), x.dtype), tf.shape(ids))
    return out


@_no_autograph
def nll(x, labels, kernels, biases=None, chunk_size=None, device=None, fused=False):
    """Exact cross-entropy `[batch]` against the target 1/num_true on each true class.

    `labels` are int `[batch, num_true]`, already checked to lie in [0, num_classes).
    `fused`: as for `softmax_stats`.
    """
    true = tf.reduce_mean(true_logits(x, labels, kernels, biases), -1)
    # The true rows' gather (a sparse read) first: run while the fused path's dense read
    # of the same variable is held, it would copy the whole variable.
    with tf.control_dependencies([true] if fused else []):
        lse = softmax_stats(x, kernels, biases, chunk_size=chunk_size, device=device,
                            fused=fused)
    return lse - true


@_no_autograph
def top_k(x, kernels, biases=None, k=1, chunk_size=None, device=None, fused=False):
    """Exact `(log_probs, ids)` `[batch, k]` of the k most probable classes, best first.

    Equal to `tf.math.top_k(log_softmax(logits), k)`; ids are int32. `fused`: as for
    `softmax_stats` (the fused op's top k has no gradient).
    """
    lse, values, ids = softmax_stats(x, kernels, biases, k=k, chunk_size=chunk_size,
                                     device=device, fused=fused)
    return values - lse[:, None], ids


def _backward_impl(x, kernel, bias, g, lse, labels, w_true, chunk):
    """Gradients `(dx, dkernel, dbias)` of `g * (lse - true logit)`, chunk by chunk.

    Each chunk's `g * softmax` gives its part of `dx` and its rows of the kernel and bias
    gradients, which are written in place into one `[rows, dim]` (and `[rows]`) buffer
    carried through the loop; the `- g * onehot(label)` part is then subtracted from the
    label rows (`labels` None: the gradient of `g * lse` alone). The buffer is the only
    `[rows, dim]` tensor alive: no per-chunk pieces concatenated afterwards.
    """
    rows = _static_rows(kernel)
    n_full, tail = divmod(rows, chunk)

    def piece(lo, size, dx, dk, db):
        logits, w = _chunk_logits(x, kernel, bias, lo, size)
        dlogits = tf.exp(logits - lse[:, None]) * g[:, None]
        at = (lo + tf.range(size))[:, None]
        dk = tf.tensor_scatter_nd_update(dk, at, tf.matmul(dlogits, x, transpose_a=True))
        db = tf.tensor_scatter_nd_update(db, at, tf.reduce_sum(dlogits, 0))
        return dx + tf.matmul(dlogits, w), dk, db

    state = (tf.zeros_like(x), tf.zeros([rows, x.shape[1]], x.dtype),
             tf.zeros([rows], x.dtype))
    state = _for_chunks(rows, chunk, lambda lo, size, st: piece(lo, size, *st), state)
    dx, dk, db = state
    if labels is None:
        return dx, dk, db
    at = labels[:, None]
    dx -= g[:, None] * w_true
    dk = tf.tensor_scatter_nd_sub(dk, at, g[:, None] * x)
    db = tf.tensor_scatter_nd_sub(db, at, g)
    return dx, dk, db


_backward_jit = tf.function(_backward_impl, jit_compile=True, reduce_retracing=True)


@_no_autograph
def full_softmax_nll(x, labels, kernel, bias=None, chunk_size=None):
    """Exact per-example cross-entropy `[batch]` with a chunk-recomputing gradient.

    `x [batch, dim]` float, `labels [batch]` int in [0, num_classes), `kernel
    [num_classes, dim]`, `bias [num_classes]` or None: tensors (read variables first).
    The value and the gradients with respect to `x`, `kernel` and `bias` are those of
    `tf.nn.sparse_softmax_cross_entropy_with_logits(labels, x @ kernel^T + bias)`.

    Backward pass, per chunk: `p = exp(logits - lse)` from the saved `lse`, `dlogits =
    g * p`; `dx += dlogits @ w_chunk`, `dkernel[chunk] = dlogits^T @ x`, `dbias[chunk] =
    sum(dlogits)`. The `- g * onehot(label)` part is applied once, sparsely, to the
    label rows. The kernel gradient is dense `[num_classes, dim]`, as `Dense`'s.
    """
    labels = tf.cast(tf.reshape(labels, [-1]), tf.int64)
    use_bias = bias is not None
    rows = _static_rows(kernel)

    @tf.custom_gradient
    def loss_fn(x, kernel, *maybe_bias):
        b = maybe_bias[0] if use_bias else None
        lse = softmax_stats(x, [kernel], None if b is None else [b], chunk_size=chunk_size)
        w_true = tf.cast(tf.gather(kernel, labels), x.dtype)
        true = tf.reduce_sum(w_true * x, -1)
        if b is not None:
            true += tf.cast(tf.gather(b, labels), x.dtype)
        loss = lse - true

        def grad(upstream):
            g = tf.cast(upstream, x.dtype)
            chunk = chunk_size_for(x.shape[0], rows, chunk_size)
            fn = _backward_jit if _use_jit(rows) else _backward_impl
            dx, dkernel, dbias = fn(x, kernel, b, g, lse, labels, w_true, chunk)
            out = [dx, tf.cast(dkernel, kernel.dtype)]
            if use_bias:
                out.append(tf.cast(dbias, b.dtype))
            return out

        return loss, grad

    args = (x, kernel) + ((bias,) if use_bias else ())
    return loss_fn(*args)


def perplexity(loss_fn, inputs, labels, batch_size):
    """exp(mean of `loss_fn(inputs[i:j], labels[i:j])`) over batches; a Python float."""
    inputs = tf.convert_to_tensor(inputs)
    labels = tf.convert_to_tensor(labels)
    n = int(inputs.shape[0])
    if n == 0:
        raise ValueError("`inputs` is empty.")
    total, count = 0.0, 0
    for start in range(0, n, batch_size):
        per_example = loss_fn(inputs[start:start + batch_size],
                              labels[start:start + batch_size])
        total += float(tf.reduce_sum(tf.cast(per_example, tf.float64)))
        count += int(tf.size(per_example))
    return math.exp(total / count)

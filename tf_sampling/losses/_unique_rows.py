"""Row lookups whose weight gradient holds every row once.

Why: the gradient of `tf.gather(W, ids)` with respect to `W` is a `tf.IndexedSlices` with
one slice per entry of `ids`, so a repeated id (a label that is also sampled, the root node
of every tree path, a frequent word twice in a batch) appears as several slices. Keras 3's
optimizers apply their element-wise updates to the slices before any summing: Adam,
RMSprop, Adagrad, Nadam, Ftrl, Adafactor, Lamb ... then square each part instead of the
sum (`a^2 + b^2` in the second moment, not `(a + b)^2`), a silently wrong step. TF's legacy
optimizers removed duplicates first; Keras 3's do not.

So the heads gather each distinct row once, `rows_u = tf.gather(W, unique)`, and expand
that with `tf.gather(rows_u, index)`. The gradient of the expansion is summed into a dense
`[num_unique, dim]` tensor (TF's gather gradient does that segment sum), so the gradient
with respect to `W` is an IndexedSlices over `unique` with summed rows: exactly the
nonzero rows of the dense gradient, whatever optimizer applies it.

`tf.unique` has an XLA kernel (its output has a bounded dynamic size), so a head that
reports `supports_jit` still compiles with `jit_compile=True`: tests/test_sparse_gradients.py
runs a jit-compiled Keras training step with Adam (on CPU; not yet run on a GPU).

Cost: the expansion's gradient is a segment sum over all the looked-up rows, one more pass
over them than a plain gather (noticeable when `batch * num_sampled` rows are gathered per
step, as with `samples_per="example"`); the optimizer then updates fewer rows.
"""

import tensorflow as tf


def unique_index(*ids):
    """One `tf.unique` over all of `ids` (integer tensors of any shapes, one dtype).

    Returns `(unique, indices)`: `unique` is 1-D, and `indices[i]` has the shape of
    `ids[i]` with `tf.gather(unique, indices[i]) == ids[i]`. Ids shared between the
    tensors (a true class that is also sampled) get one entry of `unique`, so rows looked
    up through it are read, and get their gradient, once.
    """
    flat = [tf.reshape(t, [-1]) for t in ids]
    if len(flat) == 1:
        unique, index = tf.unique(flat[0])
        parts = [index]
    else:
        unique, index = tf.unique(tf.concat(flat, 0))
        sizes = tf.stack([tf.size(f) for f in flat])
        parts = tf.split(index, sizes, num=len(flat))
    return unique, [tf.reshape(p, tf.shape(t)) for p, t in zip(parts, ids)]


def gather_unique(params, ids, read=tf.gather):
    """`tf.gather(params, ids)` whose gradient with respect to `params` has unique rows;
    the distinct rows are read with `read(params, unique_ids)`."""
    unique, (index,) = unique_index(ids)
    return tf.gather(read(params, unique), index)

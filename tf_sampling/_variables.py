"""Reading a variable that scatter updates write, without copying it."""

import tensorflow as tf


def read_without_copy(variable):
    """The value of a `tf.Variable` (or Keras variable) that sparse updates also write,
    sharing its buffer; a tensor is returned as it is.

    A sparse update (a scatter, or a `ResourceGather`) puts a variable in copy-on-read
    mode, where every dense read copies all of it: the whole output layer, for a head
    trained by a sparse optimizer and then evaluated. Leaving that mode first makes the
    read share the buffer. The next sparse update copies the buffer only if the value
    read is still held then, so every read sees the same values as with a copy.
    """
    try:
        handle = variable.handle
    except (AttributeError, ValueError):  # a tensor, or a handle this context cannot read
        return tf.convert_to_tensor(variable)
    with tf.control_dependencies([tf.raw_ops.DisableCopyOnRead(resource=handle)]):
        return tf.convert_to_tensor(variable)


def share_dense_reads(variable, after=()):
    """Takes `variable` (a `tf.Variable` or Keras variable) out of copy-on-read mode once
    the updates `after` have run, so that the next dense reads by any layer (Keras'
    `Dense` reads its kernel whole) share its buffer instead of copying it.

    For an optimizer whose dense step writes a large variable with scatters: without this,
    each later forward pass would copy the whole variable. Safe for the same reason as
    `read_without_copy`: the next scatter copies the buffer if a read still holds it.
    """
    try:
        handle = variable.handle
    except (AttributeError, ValueError):
        return None
    with tf.control_dependencies(list(after)):
        return tf.raw_ops.DisableCopyOnRead(resource=handle)


# The attribute under which an optimizer leaves, on a variable, a function that reads rows
# of it as that optimizer would have them now (see `gather`).
_ROW_READER = "_tf_sampling_row_reader"


def set_row_reader(variable, reader):
    """Makes `gather(variable, ids)` return `reader(ids)` (None: plain rows again).

    Used by `SparseAdam(catch_up=True)`: a row's pending momentum steps are applied when a
    step next updates it, after that step's forward pass has read it; the reader applies
    them to the rows read, so the forward pass sees dense Adam's values.
    """
    try:
        setattr(variable, _ROW_READER, reader)
    except AttributeError:  # an object that takes no attributes: plain reads
        pass


def gather(variable, ids):
    """`tf.gather(variable, ids)` (rows along axis 0), through the row reader an optimizer
    has set on the variable, if any; its gradient is the gather's (`IndexedSlices`)."""
    reader = getattr(variable, _ROW_READER, None)
    if reader is not None:
        return reader(ids)
    return tf.gather(variable, ids)


# The attribute under which a head leaves, on an output variable, a function that gives
# the per-row step multipliers of `row_step_samples` (see `set_row_step_scale`).
_ROW_STEP_SCALE = "_tf_sampling_row_step_scale"


def set_row_step_scale(variable, scale):
    """Declares `scale(ids, row_step_samples)`: float32 `[n]` multipliers of the optimizer
    step of rows `ids` of `variable` (see `SparseAdam(row_step_samples=...)`).

    Set by the sampled heads on their kernel and bias: a row's step multiplier is
    `sqrt(E(row_step_samples) / E(num_sampled))`, E its inclusion probability.
    """
    try:
        setattr(variable, _ROW_STEP_SCALE, scale)
    except AttributeError:
        pass


def row_step_scale(variable):
    """The function declared by `set_row_step_scale` on `variable`, or None."""
    return getattr(variable, _ROW_STEP_SCALE, None)

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

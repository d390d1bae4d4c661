"""`Embedding`: Keras' `Embedding` with a lookup that costs the rows it reads.

`keras.layers.Embedding` looks rows up with `ops.take`, which on TensorFlow reads the table
densely: once any optimizer has scattered into the table (SGD included), TensorFlow keeps
the variable in copy-on-read mode and every forward pass copies the whole `[V, d]` table
(measured at V = 1e6, d = 64: 3 ms per forward pass before the first update, 497 ms
after). Its gradient also holds one slice per looked-up token, so a frequent token is a
repeated row in the `IndexedSlices`.

This layer differs in its lookup only:
- each distinct id's row is read once, with a `ResourceGather` on the variable (a sparse
  read, no table copy), and expanded to the ids' shape; the table's gradient is then an
  `IndexedSlices` over the distinct ids with summed rows (`losses/_unique_rows.py`);
- the rows are read through the row reader an optimizer may set on the table
  (`SparseAdam(catch_up=True)` moves a row by the momentum steps it is owed), so the
  forward pass sees the values dense Adam would have: the same contract as the heads.

Weights, arguments, masking, `get_config` and saved files are Keras' own: a model saved
with one loads with the other. LoRA and quantized modes use Keras' lookup.

Cost: one `tf.unique` over the batch's ids and a gather of the distinct rows, instead of a
gather of every token's row.
"""

import keras
import tensorflow as tf

from tf_sampling import _variables
from tf_sampling.losses import _unique_rows


@keras.saving.register_keras_serializable(package="tf_sampling")
class Embedding(keras.layers.Embedding):
    """`keras.layers.Embedding` for large tables: a sparse, deduplicated lookup.

    Same arguments, weights, masking and config as `keras.layers.Embedding`. The lookup
    reads only the distinct rows of the batch (no copy of the table after sparse updates),
    gives the optimizer one summed slice per distinct row, and reads rows as
    `tfs.optimizers.SparseAdam(catch_up=True)` has them (its pending momentum applied), so
    that training follows dense keras Adam. Ids outside `[0, input_dim)` raise
    `InvalidArgumentError` on CPU, as `tf.gather` does.

    Example:

    ```python
    tokens = keras.Input((None,), dtype="int32")
    x = tfs.layers.Embedding(1_000_000, 64)(tokens)          # [batch, time, 64]
    ...
    model.compile(optimizer=tfs.optimizers.SparseAdam(6e-3, catch_up=True))
    ```
    """

    def call(self, inputs):
        if getattr(self, "lora_enabled", False) or getattr(self, "quantization_mode", None):
            return super().call(inputs)
        if inputs.dtype not in (tf.int32, tf.int64):
            inputs = tf.cast(inputs, tf.int32)
        table = self._embeddings
        table = table.value if isinstance(table, keras.Variable) else table
        outputs = _unique_rows.gather_unique(table, inputs, read=_variables.gather)
        if outputs.dtype != self.compute_dtype:
            outputs = tf.cast(outputs, self.compute_dtype)
        return outputs

"""LossScaleOptimizer whose finiteness check reads only the slices of a sparse gradient.

Why: Keras' `LossScaleOptimizer.check_finite` calls `ops.isfinite` on every gradient, and
`keras.ops` turns a `tf.IndexedSlices` into a dense `[V, d]` tensor there: each step then
costs O(V*d) whatever the optimizer does (measured at V=1e6, d=64, 1024 rows: 236 ms a
step against 6 ms; README "Optimizers"). Its unscaling (`ops.divide`) keeps the slices.
Checking `gradient.values` decides the same thing: the rows not in the slices are zeros.
Everything else (dynamic scale, growth, distribution) is Keras' own.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="tf_sampling")
class LossScaleOptimizer(keras.mixed_precision.LossScaleOptimizer):
    """`keras.mixed_precision.LossScaleOptimizer` that keeps sparse gradients sparse.

    Same arguments and behaviour as Keras' class; wrap `SparseAdam` or `RowwiseAdagrad`
    in it for mixed-precision training of large tables.

    Example:

    ```python
    keras.mixed_precision.set_global_policy("mixed_float16")
    opt = tfs.optimizers.LossScaleOptimizer(tfs.optimizers.SparseAdam(1e-3))
    model.compile(optimizer=opt)
    ```
    """

    def check_finite(self, grads):
        return super().check_finite(
            [g.values if isinstance(g, tf.IndexedSlices) else g for g in grads])

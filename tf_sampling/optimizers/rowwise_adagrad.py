"""RowwiseAdagrad: Adagrad with one accumulator per row of a table.

Algorithm (the "row-wise Adagrad" of FBGEMM's `SplitTableBatchedEmbeddingBagsCodegen` and
TorchRec, Gupta et al. 2014 / Mudigere et al. 2021): for a variable of rank >= 2 and a
gradient with (deduplicated) rows `i` and values `g` of shape `[n, d...]`,

    acc[i] += mean(g^2 over each row)
    var[i] -= lr * g / sqrt(acc[i] + epsilon)

so the state is one float per row, O(V), not Adagrad's O(V*d): 4 bytes per row of a
float32 table. Variables of rank < 2 (biases, scalars) get keras.optimizers.Adagrad's
element-wise step, which a row-wise accumulator would reduce to anyway for rank 1.
Epsilon sits inside the square root, as in keras Adagrad (FBGEMM adds it outside); with the
default initial accumulator 0.1 the two differ by under 1e-6 relative.

A `tf.IndexedSlices` gradient updates the touched rows only: O(n*d) per step for n rows.
`row_step_samples` multiplies the steps of sampled heads' output rows as in `SparseAdam`
(a row sampled on a fraction E of the steps also moves about `sqrt(E)` times as far under
Adagrad).
"""

import keras
import tensorflow as tf
from keras import ops

from tf_sampling.optimizers import _sparse


@keras.saving.register_keras_serializable(package="tf_sampling")
class RowwiseAdagrad(_sparse.SparseUpdatesMixin, keras.optimizers.Optimizer):
    """Adagrad with one accumulator per row for tables, plain Adagrad elsewhere.

    For embedding and output tables of 10^5-10^7 rows: the optimizer state costs 4 bytes
    per row (float32) instead of Adagrad's 4*d, and a sampled or embedding-lookup gradient
    (`tf.IndexedSlices`, duplicate rows summed first) updates only its rows.

    Args:
        learning_rate: float >= 0, a `LearningRateSchedule`, or a callable.
        initial_accumulator_value: float >= 0, the accumulators' starting value.
        epsilon: float > 0 added to the accumulator under the square root.
        weight_decay: decoupled decay `var -= var * weight_decay * lr` before the step, on
            the touched rows only when the gradient is sparse.
        row_step_samples: None or a positive int: the sampled heads' output rows take the
            step they would take with that many samples (see `SparseAdam`).
        clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
        ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps, name: as
            for every Keras optimizer.

    Example:

    ```python
    model.compile(optimizer=tfs.optimizers.RowwiseAdagrad(learning_rate=0.05))
    ```
    """

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None,
                 loss_scale_factor=None, gradient_accumulation_steps=None, name=None,
                 row_step_samples=None, **kwargs):
        _sparse.check_hyperparameters(learning_rate, epsilon)
        row_step_samples = _sparse.check_row_step_samples(row_step_samples)
        if (not isinstance(initial_accumulator_value, (int, float))
                or initial_accumulator_value < 0):
            raise ValueError(
                "Argument `initial_accumulator_value` must be a float >= 0. Received: "
                f"initial_accumulator_value={initial_accumulator_value}")
        super().__init__(
            learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
            clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
            ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = epsilon
        self.row_step_samples = row_step_samples

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        init = keras.initializers.Constant(self.initial_accumulator_value)
        self._accumulators = []
        for variable in var_list:
            if self._overwrite_variable_with_gradient(variable):
                self._accumulators.append(None)
                continue
            shape = (variable.shape[0],) if len(variable.shape) >= 2 else variable.shape
            # Placed with its variable, as Keras places slots (parameter servers, shards).
            with tf.distribute.get_strategy().extended.colocate_vars_with(
                    _sparse.backing(variable)):
                self._accumulators.append(self.add_variable(
                    shape=shape, initializer=init, dtype=variable.dtype,
                    name=f"{_sparse.slot_prefix(variable)}_accumulator"))
        self._build_row_step_scales(var_list)

    def update_step(self, gradient, variable, learning_rate):
        _sparse.check_gradient(gradient, variable)
        lr = ops.cast(learning_rate, variable.dtype)
        acc = self._accumulators[self._get_variable_index(variable)]
        rowwise = len(variable.shape) >= 2
        row_axes = tuple(range(1, len(variable.shape)))
        trailing = (-1,) + (1,) * (len(variable.shape) - 1)

        blocks = self._dense_blocks(gradient, variable)
        if blocks is not None:
            _sparse.dense_step_in_blocks(
                lambda block: self._sparse_step(block, variable, lr), blocks, variable)
            return
        if not isinstance(gradient, tf.IndexedSlices):
            self._decay_dense(variable, lr)
            gradient = ops.cast(gradient, variable.dtype)
            square = ops.square(gradient)
            self.assign_add(acc, ops.mean(square, axis=row_axes) if rowwise else square)
            denom = ops.sqrt(ops.add(acc, self.epsilon))
            if rowwise:
                denom = ops.reshape(denom, trailing)
            self.assign_sub(variable, ops.divide(ops.multiply(lr, gradient), denom))
            return
        self._sparse_step(_sparse.dedupe(gradient), variable, lr)

    def _sparse_step(self, gradient, variable, lr):
        """The update of the rows of an `IndexedSlices` gradient with unique indices."""
        acc = self._accumulators[self._get_variable_index(variable)]
        rowwise = len(variable.shape) >= 2
        row_axes = tuple(range(1, len(variable.shape)))
        trailing = (-1,) + (1,) * (len(variable.shape) - 1)
        rows = gradient.indices
        g = ops.cast(gradient.values, variable.dtype)
        square = ops.square(g)
        acc_var = _sparse.backing(acc)
        acc_rows = tf.gather(acc_var, rows) + (
            ops.mean(square, axis=row_axes) if rowwise else square)
        updates = [acc_var.scatter_update(tf.IndexedSlices(acc_rows, rows))]
        denom = ops.sqrt(ops.add(acc_rows, self.epsilon))
        if rowwise:
            denom = ops.reshape(denom, trailing)
        step = ops.divide(ops.multiply(lr, g), denom)
        scale = self._row_scale(variable, rows)
        if scale is not None:
            step = step * scale
        var = _sparse.backing(variable)
        if self._uses_weight_decay(variable):
            var_rows = self._decay_rows(variable, tf.gather(var, rows), lr)
            updates.append(var.scatter_update(tf.IndexedSlices(var_rows - step, rows)))
        else:
            updates.append(var.scatter_sub(tf.IndexedSlices(step, rows)))
        return updates

    def get_config(self):
        config = super().get_config()
        config.update({"initial_accumulator_value": self.initial_accumulator_value,
                       "epsilon": self.epsilon,
                       "row_step_samples": self.row_step_samples})
        return config

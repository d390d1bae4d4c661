"""SparseAdam: lazy Adam, whose step over a row-sparse gradient touches only its rows.

Algorithm (Kingma & Ba 2015, "lazy" variant as in TF 1's `LazyAdamOptimizer` and PyTorch's
`SparseAdam`): for a `tf.IndexedSlices` gradient with (deduplicated) rows `i` and values `g`,

    m[i] += (g - m[i]) * (1 - beta_1)
    v[i] += (g^2 - v[i]) * (1 - beta_2)
    var[i] -= alpha * m[i] / (sqrt(v[i]) + epsilon),
    alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)

and every other row of `var`, `m` and `v` is left as it is (dense Adam would decay their
`m` and `v` and keep moving them by their momentum). `t` is the optimizer's global step
(`bias_correction="global"`, the default) or, with `bias_correction="per_row"`, the number
of steps that touched the row, kept in one int32 per row (4 bytes per row beyond Adam's
`m` and `v`). A dense gradient gets `keras.optimizers.Adam`'s step, computed by its own code.

Cost per step: O(n*d) for n touched rows of width d (gathers, element-wise math and three
scatters), against O(V*d) for keras Adam. State: `m` and `v`, 8 bytes per float32 weight.
"""

import keras
import tensorflow as tf
from keras import ops

from tf_sampling.optimizers import _sparse


@keras.saving.register_keras_serializable(package="tf_sampling")
class SparseAdam(_sparse.SparseUpdatesMixin, keras.optimizers.Adam):
    """Adam that applies a `tf.IndexedSlices` gradient to the touched rows only.

    A drop-in for `keras.optimizers.Adam` (same arguments, same slots, the same step for a
    dense gradient) for models with large embedding or output tables: the step of a
    sampled head over 10^6 classes costs what the sampled rows cost. Duplicate indices
    (Keras' `Embedding` repeats a row per repeated token) are summed before the update.

    Args:
        learning_rate: float >= 0, a `keras.optimizers.schedules.LearningRateSchedule`, or a
            callable, as for `keras.optimizers.Adam`.
        beta_1, beta_2: floats in [0, 1): decay rates of the first and second moments.
        epsilon: float > 0 added to `sqrt(v)`.
        amsgrad: keep the maximum of `v` (on the touched rows for a sparse gradient).
        bias_correction: `"global"` (the optimizer's step count, as TF's LazyAdam and
            PyTorch's SparseAdam) or `"per_row"` (each row's own count of updates, one int32
            per row). See the README's "Optimizers" section for the measurement.
        weight_decay: decoupled decay `var -= var * weight_decay * lr` applied before the
            step, as Keras does, but to the touched rows only when the gradient is sparse
            (rows not in the batch are neither decayed nor moved).
        clipnorm, clipvalue, global_clipnorm, use_ema, ema_momentum,
        ema_overwrite_frequency, loss_scale_factor, gradient_accumulation_steps, name: as
            for every Keras optimizer. `use_ema` and `gradient_accumulation_steps` keep
            dense `[V, d]` buffers that Keras updates in full each step.

    Example:

    ```python
    head = tfs.layers.SampledSoftmax(num_classes=1_000_000, num_sampled=1024)
    model.compile(optimizer=tfs.optimizers.SparseAdam(learning_rate=1e-3))
    ```
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, bias_correction="global", weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):
        _sparse.check_hyperparameters(learning_rate, epsilon, beta_1=beta_1, beta_2=beta_2)
        if bias_correction not in ("global", "per_row"):
            raise ValueError("Argument `bias_correction` must be 'global' or 'per_row'. "
                             f"Received: bias_correction={bias_correction!r}")
        super().__init__(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
            amsgrad=amsgrad, weight_decay=weight_decay, clipnorm=clipnorm,
            clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
            ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
        self.bias_correction = bias_correction

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._row_steps = []
        if self.bias_correction == "per_row":
            for variable in var_list:
                if len(variable.shape) == 0:
                    self._row_steps.append(None)
                    continue
                with tf.distribute.get_strategy().extended.colocate_vars_with(
                        _sparse.backing(variable)):
                    self._row_steps.append(self.add_variable(
                        shape=(variable.shape[0],), dtype="int32",
                        name=f"{_sparse.slot_prefix(variable)}_row_steps"))

    def _powers(self, variable, steps):
        b1 = ops.power(ops.cast(self.beta_1, variable.dtype), steps)
        b2 = ops.power(ops.cast(self.beta_2, variable.dtype), steps)
        return b1, b2

    def update_step(self, gradient, variable, learning_rate):
        _sparse.check_gradient(gradient, variable)
        lr = ops.cast(learning_rate, variable.dtype)
        row_steps = (self._row_steps[self._get_variable_index(variable)]
                     if self.bias_correction == "per_row" else None)
        if not isinstance(gradient, tf.IndexedSlices):
            self._decay_dense(variable, lr)
            if row_steps is None:
                return super().update_step(gradient, variable, learning_rate)
            return self._dense_per_row_step(gradient, variable, lr, row_steps)
        return self._sparse_step(_sparse.dedupe(gradient), variable, lr, row_steps)

    def _sparse_step(self, gradient, variable, lr, row_steps):
        index = self._get_variable_index(variable)
        var = _sparse.backing(variable)
        m = _sparse.backing(self._momentums[index])
        v = _sparse.backing(self._velocities[index])
        rows = gradient.indices
        g = ops.cast(gradient.values, variable.dtype)

        if row_steps is None:
            steps = ops.cast(self.iterations + 1, variable.dtype)
        else:
            counts = tf.gather(_sparse.backing(row_steps), rows) + 1
            _sparse.backing(row_steps).scatter_update(tf.IndexedSlices(counts, rows))
            steps = ops.cast(counts, variable.dtype)
            steps = ops.reshape(steps, (-1,) + (1,) * (len(variable.shape) - 1))
        beta_1_power, beta_2_power = self._powers(variable, steps)
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)

        # The same operations, in the same order, as keras.optimizers.Adam.update_step, so a
        # touched row gets bit for bit the value that dense Adam gives it.
        m_rows = tf.gather(m, rows)
        m_rows = m_rows + ops.multiply(ops.subtract(g, m_rows), 1 - self.beta_1)
        v_rows = tf.gather(v, rows)
        v_rows = v_rows + ops.multiply(ops.subtract(ops.square(g), v_rows), 1 - self.beta_2)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        if self.amsgrad:
            v_hat = _sparse.backing(self._velocity_hats[index])
            v_rows = ops.maximum(tf.gather(v_hat, rows), v_rows)
            v_hat.scatter_update(tf.IndexedSlices(v_rows, rows))
        step = ops.divide(ops.multiply(m_rows, alpha), ops.add(ops.sqrt(v_rows), self.epsilon))
        if self._uses_weight_decay(variable):
            var_rows = self._decay_rows(variable, tf.gather(var, rows), lr)
            var.scatter_update(tf.IndexedSlices(var_rows - step, rows))
        else:
            var.scatter_sub(tf.IndexedSlices(step, rows))

    def _dense_per_row_step(self, gradient, variable, lr, row_steps):
        # Every row is touched: each row's count grows by one, and the step is Adam's with
        # that count in place of the global step.
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        v = self._velocities[index]
        gradient = ops.cast(gradient, variable.dtype)
        row_steps.assign_add(ops.ones_like(row_steps))
        steps = ops.reshape(ops.cast(row_steps, variable.dtype),
                            (-1,) + (1,) * (len(variable.shape) - 1))
        beta_1_power, beta_2_power = self._powers(variable, steps)
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            self.assign(v_hat, ops.maximum(v_hat, v))
            v = v_hat
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha),
                                             ops.add(ops.sqrt(v), self.epsilon)))

    def get_config(self):
        config = super().get_config()
        config["bias_correction"] = self.bias_correction
        return config

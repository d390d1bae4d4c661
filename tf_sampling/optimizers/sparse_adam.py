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
`m` and `v`). A dense gradient gets `keras.optimizers.Adam`'s step, bit for bit; for a
variable over 8 MiB it is computed in row blocks, so that its temporaries take a few MiB,
not two or three copies of the variable.

With `catch_up=True` a row also gets, when it is next touched, the steps dense Adam would
have given it meanwhile (its `m` and `v` decay, and it keeps moving by its momentum): after
`s` steps without a gradient since its last update,

    var[i] -= alpha * m[i] / (sqrt(v[i]) + epsilon) * sum_{j=1..s} (beta_1 / sqrt(beta_2))^j
    m[i] *= beta_1^s,   v[i] *= beta_2^s

in closed form, before the row's own step, from one int64 per row holding the step of its
last update (8 bytes per row). This is dense Adam's trajectory for that row, up to two
approximations: the skipped steps use the current learning rate (and, beyond the 64 most
recent ones, where momentum has faded below 0.2%, the current bias correction), and epsilon
is scaled with `sqrt(v)` in the sum. `finalize_variable_values` (called by `fit` at its end)
catches every row up.

Between updates a row's stored value lags dense Adam's by its pending momentum steps. The
heads of this package read rows through `tf_sampling._variables.gather`, for which this
optimizer sets a row reader on each variable it builds for: the rows read get the same
closed-form move (a constant for the gradient), so a head's forward pass sees dense Adam's
values and a sampled head trains as under dense Adam (tested through `train_on_batch`).
Keras' own `Embedding` and other dense reads see the stored values.

With `row_step_samples=R`, the step of row j of a sampled head's kernel and bias (and its
catch-up move) is multiplied by `s_j = sqrt(E_j(R) / E_j(num_sampled))`, E_j the class's
probability of being in the head's sample (`tfs.samplers.inclusion_probability`). Adam
moves a row sampled on a fraction E of the steps about `sqrt(E) * lr` per step, so the
number of samples sets the output rows' step sizes as well as their gradients; `s_j` gives
each row the step it would have with R samples, with the gradients of `num_sampled`. This
is plain Adam on the reparameterised rows `s_j * w_j` (epsilon aside), applied in the
step: the model, its evaluation and its export are unchanged. Measured (README, "Row steps
in the library"): R = 4 x num_sampled gave 7-13% lower one-epoch perplexity on a WikiText-2
LSTM and 16% higher on an NPLM, so it is an option to validate, not a default.

Cost per step: O(n*d) for n touched rows of width d (gathers, element-wise math and three
scatters), against O(V*d) for keras Adam. State: `m` and `v`, 8 bytes per float32 weight.
"""

import functools
import weakref

import keras
import tensorflow as tf
from keras import ops

from tf_sampling._variables import read_without_copy, set_row_reader
from tf_sampling.optimizers import _sparse

# Skipped steps whose own bias correction the catch-up uses; beyond them momentum has
# faded to r^64 < 0.002 (r = beta_1 / sqrt(beta_2) = 0.9 / 0.9995 by default).
_EXACT_TERMS = 64
# Rows per block of `finalize_variable_values` (16 MiB of series at 64 terms).
_FINALIZE_ROWS = 2 ** 16


def _read_current_rows(optimizer_ref, variable, ids):
    optimizer = optimizer_ref()
    if optimizer is None:
        return tf.gather(_sparse.backing(variable), ids)
    return optimizer._current_rows(variable, ids)


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
        catch_up: give a row, when it is next touched, the momentum steps dense Adam would
            have given it since its last update (module docstring). Needs
            `bias_correction="global"` and `amsgrad=False`; one int64 per row.
        row_step_samples: None, or a positive int R: the output rows of the sampled heads
            (`SampledSoftmax`, `NCE`, `NegativeSampling`; untied, `samples_per="batch"`, a
            sampler that does not learn or `unique=False`) take the step they would take
            with R samples per step (module docstring). Other variables are unchanged.
            ValueError at the first step if no variable belongs to such a head.
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
                 gradient_accumulation_steps=None, name=None, catch_up=False,
                 row_step_samples=None, **kwargs):
        _sparse.check_hyperparameters(learning_rate, epsilon, beta_1=beta_1, beta_2=beta_2)
        row_step_samples = _sparse.check_row_step_samples(row_step_samples)
        if bias_correction not in ("global", "per_row"):
            raise ValueError("Argument `bias_correction` must be 'global' or 'per_row'. "
                             f"Received: bias_correction={bias_correction!r}")
        if not isinstance(catch_up, bool):
            raise ValueError(f"Argument `catch_up` must be a bool. Received: {catch_up!r}")
        if catch_up and (bias_correction != "global" or amsgrad):
            raise ValueError("`catch_up=True` needs bias_correction='global' and "
                             "amsgrad=False.")
        super().__init__(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
            amsgrad=amsgrad, weight_decay=weight_decay, clipnorm=clipnorm,
            clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
            ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
        self.bias_correction = bias_correction
        self.catch_up = catch_up
        self.row_step_samples = row_step_samples

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._row_steps = self._row_slots(var_list, self.bias_correction == "per_row",
                                          "int32", "row_steps")
        self._last_steps = self._row_slots(var_list, self.catch_up, "int64", "last_step")
        self._build_row_step_scales(var_list)
        if self.catch_up:
            # The heads read rows through `_variables.gather`: they then see each row with
            # its pending momentum steps applied, as dense Adam would have it.
            me = weakref.ref(self)
            for variable, last in zip(var_list, self._last_steps):
                if last is not None:
                    set_row_reader(_sparse.backing(variable),
                                   functools.partial(_read_current_rows, me, variable))

    def _row_slots(self, var_list, wanted, dtype, suffix):
        """One `[rows]` integer slot per variable of rank >= 1 (None for scalars), or []."""
        slots = []
        if not wanted:
            return slots
        for variable in var_list:
            if len(variable.shape) == 0:
                slots.append(None)
                continue
            with tf.distribute.get_strategy().extended.colocate_vars_with(
                    _sparse.backing(variable)):
                slots.append(self.add_variable(
                    shape=(variable.shape[0],), dtype=dtype,
                    name=f"{_sparse.slot_prefix(variable)}_{suffix}"))
        return slots

    def _catch_up_rows(self, m, v, last, t_end, scale=None):
        """Dense Adam's gradient-free steps `last + 1 .. t_end` of rows with moments `m`,
        `v` last updated at step `last` (int64 `[n]`): the move to subtract from the rows
        and their decayed moments.

        The move is `lr * m / (sqrt(v) + eps) * sum_j c_j r^j` over the skipped steps j,
        `r = beta_1 / sqrt(beta_2)` and `c_j` the bias correction of step `last + j`; the
        first _EXACT_TERMS terms use their own `c_j`, the rest (r^64 < 0.002 of the first)
        the last step's, in closed form. `scale`: the rows' step multipliers, or None.
        """
        dtype = m.dtype
        b1, b2 = ops.cast(self.beta_1, dtype), ops.cast(self.beta_2, dtype)
        r = b1 / ops.sqrt(b2)
        last_f = ops.cast(last, dtype)
        skipped = ops.cast(t_end, dtype) - last_f
        # One [n, _EXACT_TERMS] block: a few ops per step, not a few per term. The powers
        # beta^(last + j) are beta^last [n] times beta^j [_EXACT_TERMS]: products, not an
        # [n, _EXACT_TERMS] block of `pow` (which cost more than the rest of the step).
        j = ops.arange(1, _EXACT_TERMS + 1, dtype=dtype)
        b1_steps = ops.power(b1, last_f)[:, None] * ops.power(b1, j)
        b2_steps = ops.power(b2, last_f)[:, None] * ops.power(b2, j)
        c = ops.sqrt(1 - b2_steps) / (1 - b1_steps)
        series = ops.sum(ops.where(skipped[:, None] >= j, c * ops.power(r, j), 0.0), axis=1)
        rest = ops.maximum(skipped - _EXACT_TERMS, 0)
        # (At step 0 nothing was skipped; max(., 1) only avoids 0 / 0.)
        end = ops.maximum(ops.cast(t_end, dtype), 1)
        c_end = ops.sqrt(1 - ops.power(b2, end)) / (1 - ops.power(b1, end))
        # sum_{j=J+1..s} r^j = r^(J+1) (1 - r^(s-J)) / (1 - r); (s - J) terms where r = 1.
        one = ops.equal(r, 1.0)
        tail = ops.where(one, rest, r ** (_EXACT_TERMS + 1) * (1 - ops.power(r, rest))
                         / ops.where(one, ops.ones_like(r), 1 - r))
        series += c_end * tail
        shape = (-1,) + (1,) * (len(m.shape) - 1)
        lr = ops.cast(self.learning_rate, dtype)
        coef = ops.reshape(lr * series, shape)
        skipped = ops.reshape(skipped, shape)
        move = coef * m / (ops.sqrt(v) + self.epsilon)
        if scale is not None:
            move = move * scale
        return move, m * ops.power(b1, skipped), v * ops.power(b2, skipped)

    def _current_rows(self, variable, ids):
        """Rows `ids` of `variable` moved by the gradient-free steps dense Adam would have
        given them since their last update (to the end of the last step). The move is a
        constant for the gradient: the gradient is the plain gather's."""
        index = self._get_variable_index(variable)
        var = _sparse.backing(variable)
        m, v, last = (_sparse.backing(x) for x in (
            self._momentums[index], self._velocities[index], self._last_steps[index]))
        move, _, _ = self._catch_up_rows(tf.gather(m, ids), tf.gather(v, ids),
                                         tf.gather(last, ids),
                                         ops.cast(self.iterations, "int64"),
                                         self._row_scale(variable, ids))
        return tf.gather(var, ids) - tf.stop_gradient(tf.cast(move, var.dtype))

    def finalize_variable_values(self, var_list):
        """With `catch_up`, brings every row to dense Adam's trajectory at the current
        step (`fit` calls this when it ends); then Keras' own finalization."""
        if self.catch_up and self.built:
            for variable in var_list:
                self._catch_up_all(variable, ops.cast(self.iterations, "int64"))
        super().finalize_variable_values(var_list)

    def _catch_up_all(self, variable, t):
        """Every row of `variable` caught up to the end of step `t`.

        Only rows updated before (last step > 0) and not at `t` have steps to catch up: a
        row never updated has zero moments, so dense Adam never moves it. At 10^7 rows
        and a few hundred thousand touched, that is a scan of the last steps and the
        touched rows' work, not a pass over the whole table.
        """
        index = self._get_variable_index(variable)
        last = self._last_steps[index]
        if last is None:
            return
        m, v = self._momentums[index], self._velocities[index]
        var, m, v, last_var = (_sparse.backing(x) for x in (variable, m, v, last))
        t = tf.cast(t, tf.int64)
        steps = read_without_copy(last_var)
        behind = tf.reshape(tf.where((steps > 0) & (steps < t)), [-1])
        count = int(tf.size(behind)) if tf.executing_eagerly() else None
        # Blocks of rows: the series is [rows, _EXACT_TERMS] floats per block.
        block = _FINALIZE_ROWS
        n_blocks = (-(-count // block) if count is not None
                    else -(-int(variable.shape[0]) // block))
        for i in range(n_blocks):
            ids = behind[i * block:(i + 1) * block]
            move, m_new, v_new = self._catch_up_rows(
                tf.gather(m, ids), tf.gather(v, ids), tf.gather(steps, ids), t,
                self._row_scale(variable, ids))
            var.scatter_update(tf.IndexedSlices(tf.gather(var, ids) - move, ids))
            m.scatter_update(tf.IndexedSlices(m_new, ids))
            v.scatter_update(tf.IndexedSlices(v_new, ids))
        last_var.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(behind), t), behind))

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
            if self.catch_up:
                # Rows skipped by earlier sparse steps first; then every row is touched. After
                # the gradient: its scatters (even empty ones) would otherwise be free to run
                # while the forward pass's read of the variable is alive, and copy it whole.
                with tf.control_dependencies([gradient]):
                    t = ops.cast(self.iterations + 1, "int64")
                    self._catch_up_all(variable, t - 1)
                index = self._get_variable_index(variable)
                if self._last_steps[index] is not None:
                    self._last_steps[index].assign(ops.full_like(self._last_steps[index], t))
            blocks = self._dense_blocks(gradient, variable)
            if blocks is not None:
                # Each block's row step is Adam's dense step on those rows (per-row counts,
                # weight decay and step multipliers included), with block-sized temporaries.
                _sparse.dense_step_in_blocks(
                    lambda block: self._sparse_step(block, variable, lr, row_steps,
                                                    catch_up=False), blocks, variable)
                return
            self._decay_dense(variable, lr)
            if row_steps is None:
                return super().update_step(gradient, variable, learning_rate)
            return self._dense_per_row_step(gradient, variable, lr, row_steps)
        return self._sparse_step(_sparse.dedupe(gradient), variable, lr, row_steps)

    def _sparse_step(self, gradient, variable, lr, row_steps, catch_up=None):
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

        var_rows = None
        scale = self._row_scale(variable, rows)
        if self.catch_up if catch_up is None else catch_up:
            t = ops.cast(self.iterations + 1, "int64")
            last = _sparse.backing(self._last_steps[index])
            move, m_rows, v_rows = self._catch_up_rows(
                tf.gather(m, rows), tf.gather(v, rows), tf.gather(last, rows), t - 1, scale)
            var_rows = tf.gather(var, rows) - move
            last.scatter_update(tf.IndexedSlices(tf.fill(tf.shape(rows), t), rows))
        else:
            m_rows, v_rows = tf.gather(m, rows), tf.gather(v, rows)

        # The same operations, in the same order, as keras.optimizers.Adam.update_step, so a
        # touched row gets bit for bit the value that dense Adam gives it.
        m_rows = m_rows + ops.multiply(ops.subtract(g, m_rows), 1 - self.beta_1)
        v_rows = v_rows + ops.multiply(ops.subtract(ops.square(g), v_rows), 1 - self.beta_2)
        updates = [m.scatter_update(tf.IndexedSlices(m_rows, rows)),
                   v.scatter_update(tf.IndexedSlices(v_rows, rows))]
        if self.amsgrad:
            v_hat = _sparse.backing(self._velocity_hats[index])
            v_rows = ops.maximum(tf.gather(v_hat, rows), v_rows)
            updates.append(v_hat.scatter_update(tf.IndexedSlices(v_rows, rows)))
        step = ops.divide(ops.multiply(m_rows, alpha), ops.add(ops.sqrt(v_rows), self.epsilon))
        if scale is not None:
            step = step * scale
        if self._uses_weight_decay(variable):
            var_rows = tf.gather(var, rows) if var_rows is None else var_rows
            var_rows = self._decay_rows(variable, var_rows, lr)
            updates.append(var.scatter_update(tf.IndexedSlices(var_rows - step, rows)))
        elif var_rows is not None:
            updates.append(var.scatter_update(tf.IndexedSlices(var_rows - step, rows)))
        else:
            updates.append(var.scatter_sub(tf.IndexedSlices(step, rows)))
        return updates

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
        config["catch_up"] = self.catch_up
        config["row_step_samples"] = self.row_step_samples
        return config

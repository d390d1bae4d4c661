"""What SparseAdam and RowwiseAdagrad share: row-sparse gradients kept sparse end to end.

Why: Keras 3's optimizers on TensorFlow turn a `tf.IndexedSlices` gradient into a dense
`[V, d]` tensor as soon as an update formula mixes it with a slot (`ops.subtract(gradient,
m)`), so each step reads and writes every row of the variable and of its slots: O(V*d) per
step, whatever rows the loss touched. The optimizers here read and write only the rows of
the gradient: `tf.gather` the touched rows of the variable and its slots, compute the
update on those rows, and write them back with `tf.Variable.scatter_update`. Cost per step:
O(n*d) for n touched rows, plus one `tf.unique` over the n indices.

Duplicate indices (Keras' `Embedding` repeats a row once per repeated token; an all-reduce
across replicas concatenates the replicas' slices) are summed first with `tf.unique` and
`tf.math.unsorted_segment_sum`, so the step is a function of the dense gradient, as for a
dense gradient.

Keras' base `apply()` does four more things with gradients; each is handled here so that no
`IndexedSlices` is densified:
- `loss_scale_factor`: the base divides `g / scale`, which fails for an `IndexedSlices`;
  here its values are divided.
- clipping: `clipnorm` uses `tf.clip_by_norm` (sparse-aware) on the deduplicated slices, so
  the norm is the dense gradient's norm; `clipvalue` clips the summed values;
  `global_clipnorm` sums the squared values of the deduplicated slices.
- weight decay: the base decays every row of every variable each step (`var -= var * wd *
  lr`), O(V*d). Here a sparse gradient's variable is decayed on its touched rows only,
  inside the update (the same formula, before the optimizer's step, as Keras orders it);
  a dense gradient's variable is decayed whole, as Keras does.
- gradient accumulation and EMA are left to Keras: both keep dense `[V, d]` buffers and
  touch every row each step (documented cost).

A dense gradient of a large variable (an exact full-softmax kernel) is applied in row blocks
through the same row update: Keras' Adam keeps two or three `[V, d]` temporaries alive beside
the gradient (`gradient - m`, its product with `1 - beta_1`, `sqrt(v)`, ...), which at
V = 10^6 doubles the step's memory; blocks of at most 4 MiB bound them to a few MiB for one
gather and one scatter per block and slot. The update is element-wise, so the blocked step
equals the whole-tensor one bit for bit.
"""

import functools
import math

import keras
import tensorflow as tf
from keras import ops

from tf_sampling._variables import row_step_scale, share_dense_reads


def dedupe(gradient):
    """Sums the slices of an `IndexedSlices` that share an index; other values pass."""
    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    unique, position = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, position, tf.size(unique))
    return tf.IndexedSlices(values, unique, gradient.dense_shape)


# Variables above twice this size get their dense gradients in row blocks of about this size.
DENSE_BLOCK_BYTES = 4 * 2 ** 20
# At most this many blocks (ops in the step's graph), whatever the size.
MAX_DENSE_BLOCKS = 64


def dense_row_blocks(gradient, variable):
    """A dense `gradient` of a large `variable` as a list of `IndexedSlices`, one per
    block of consecutive rows; None when the gradient is sparse or the variable small."""
    shape = tuple(variable.shape)
    if (isinstance(gradient, tf.IndexedSlices) or len(shape) == 0
            or any(s is None for s in shape)):
        return None
    row_bytes = math.prod(shape[1:]) * tf.as_dtype(variable.dtype).size
    total = shape[0] * row_bytes
    if total <= 2 * DENSE_BLOCK_BYTES:
        return None
    blocks = min(MAX_DENSE_BLOCKS, -(-total // DENSE_BLOCK_BYTES))
    rows = -(-shape[0] // blocks)
    dense_shape = tf.constant(shape, tf.int64)
    return [tf.IndexedSlices(gradient[start:start + rows],
                             tf.range(start, min(start + rows, shape[0]), dtype=tf.int64),
                             dense_shape)
            for start in range(0, shape[0], rows)]


def in_sequence(step, blocks):
    """Runs `step(block)` (which returns its variable updates) for each block, each one
    after the previous one's updates: otherwise a graph may run the blocks' slot updates
    ahead of their variable updates and keep every block's temporaries alive at once."""
    updates = []
    for block in blocks:
        with tf.control_dependencies(updates):
            updates = step(block)
    return updates


def dense_step_in_blocks(step, blocks, variable):
    """`in_sequence(step, blocks)` for the blocks of a dense gradient of `variable`, which
    then leaves copy-on-read mode: the scatters put it there, and the model that reads it
    whole (a dense gradient's variable usually is read whole) would copy it at each read."""
    share_dense_reads(backing(variable), in_sequence(step, blocks))


def _map_values(gradient, fn):
    if isinstance(gradient, tf.IndexedSlices):
        return tf.IndexedSlices(fn(gradient.values), gradient.indices, gradient.dense_shape)
    return fn(gradient)


def check_hyperparameters(learning_rate, epsilon, **betas):
    """ValueErrors that name the argument, raised before Keras builds anything."""
    if isinstance(learning_rate, (int, float)) and not isinstance(learning_rate, bool):
        if learning_rate < 0:
            raise ValueError(
                f"Argument `learning_rate` must be >= 0. Received: learning_rate={learning_rate}")
    if not isinstance(epsilon, (int, float)) or not epsilon > 0:
        raise ValueError(f"Argument `epsilon` must be a float > 0. Received: epsilon={epsilon}")
    for name, beta in betas.items():
        if not isinstance(beta, (int, float)) or not 0.0 <= beta < 1.0:
            raise ValueError(
                f"Argument `{name}` must be a float in [0, 1). Received: {name}={beta}")


def check_gradient(gradient, variable):
    """A gradient must have its variable's shape (an `IndexedSlices`: its row shape)."""
    var_shape = tuple(variable.shape)
    path = getattr(variable, "path", None) or variable.name
    if isinstance(gradient, tf.IndexedSlices):
        row_shape = tuple(gradient.values.shape[1:])
        if (len(var_shape) < 1 or gradient.values.shape.rank != len(var_shape)
                or not tf.TensorShape(row_shape).is_compatible_with(var_shape[1:])):
            raise ValueError(
                f"The gradient of variable '{path}' (shape {var_shape}) is an IndexedSlices "
                f"with values of shape {tuple(gradient.values.shape)}; its values must have "
                f"shape (num_rows,) + {var_shape[1:]}.")
    elif not gradient.shape.is_compatible_with(var_shape):
        raise ValueError(
            f"The gradient of variable '{path}' has shape {tuple(gradient.shape)}; it must "
            f"have the variable's shape {var_shape}.")


def check_row_step_samples(value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("Argument `row_step_samples` must be None or a positive int. "
                         f"Received: row_step_samples={value!r}")
    return int(value)


def backing(variable):
    """The `tf.Variable` behind a `keras.Variable` (scatter ops live there)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


class SparseUpdatesMixin:
    """Overrides of Keras' gradient preprocessing that keep `IndexedSlices` sparse.

    Mixed into a `keras.optimizers.Optimizer` subclass whose `update_step` handles an
    `IndexedSlices` gradient itself and calls `self._decay_rows` / `self._decay_dense` for
    weight decay.
    """

    # Set by the optimizer's __init__ (see `SparseAdam`'s `row_step_samples`).
    row_step_samples = None

    def _build_row_step_scales(self, var_list):
        """One function of the row ids per variable (None: no multiplier), from the step
        multipliers a head declares on its variables (`_variables.set_row_step_scale`)."""
        self._row_step_scales = [None] * len(var_list)
        if self.row_step_samples is None:
            return
        for i, variable in enumerate(var_list):
            scale = row_step_scale(backing(variable))
            if scale is not None:
                scale = functools.partial(scale, row_step_samples=self.row_step_samples)
                # Solves the samplers' stream lengths now, eagerly, not while tracing.
                scale(tf.zeros([0], tf.int64))
                self._row_step_scales[i] = scale
        if all(s is None for s in self._row_step_scales):
            raise ValueError(
                f"`row_step_samples`={self.row_step_samples} scales the steps of the output "
                "rows of SampledSoftmax, NCE and NegativeSampling heads (untied, "
                "samples_per='batch', a sampler that does not learn or unique=False), but "
                "none of the variables this optimizer trains belongs to such a head.")

    def _row_scale_fn(self, variable):
        scales = getattr(self, "_row_step_scales", None)
        return scales[self._get_variable_index(variable)] if scales else None

    def _row_scale(self, variable, rows):
        """The step multipliers of rows `rows` of `variable`, shaped to broadcast against
        its rows, or None."""
        scale = self._row_scale_fn(variable)
        if scale is None:
            return None
        shape = (-1,) + (1,) * (len(variable.shape) - 1)
        return ops.reshape(ops.cast(scale(rows), variable.dtype), shape)

    def _dense_blocks(self, gradient, variable):
        """A dense gradient as blocks for the row update: row blocks of a large variable,
        or all rows as one block where the variable's rows have step multipliers; None
        for a sparse gradient or a small variable without them."""
        blocks = dense_row_blocks(gradient, variable)
        if (blocks is None and not isinstance(gradient, tf.IndexedSlices)
                and self._row_scale_fn(variable) is not None):
            shape = tf.shape(gradient, out_type=tf.int64)
            blocks = [tf.IndexedSlices(gradient, tf.range(shape[0]), shape)]
        return blocks

    def apply(self, grads, trainable_variables=None):
        scale = self.loss_scale_factor
        if scale is None or not any(isinstance(g, tf.IndexedSlices) for g in grads):
            return super().apply(grads, trainable_variables)
        grads = [g if g is None else _map_values(g, lambda x: x / scale) for g in grads]
        # The base class would divide again (and fail on the slices): the division is done.
        self.loss_scale_factor = None
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self.loss_scale_factor = scale

    def _clip_gradients(self, grads):
        clipping = ((self.clipnorm and self.clipnorm > 0)
                    or (self.global_clipnorm and self.global_clipnorm > 0)
                    or (self.clipvalue and self.clipvalue > 0))
        if not clipping or not any(isinstance(g, tf.IndexedSlices) for g in grads):
            return super()._clip_gradients(grads)
        grads = [None if g is None else dedupe(g) for g in grads]
        if self.clipnorm and self.clipnorm > 0:
            return [None if g is None else tf.clip_by_norm(g, self.clipnorm) for g in grads]
        if self.clipvalue and self.clipvalue > 0:
            v = self.clipvalue
            return [None if g is None else _map_values(g, lambda x: ops.clip(x, -v, v))
                    for g in grads]
        # Keras' clip_by_global_norm on the slices' values (their squares sum to the dense
        # gradient's, the duplicates being merged).
        values = [g.values if isinstance(g, tf.IndexedSlices) else g
                  for g in grads if g is not None]
        norm = ops.sqrt(ops.sum(ops.stack([ops.sum(ops.square(v)) for v in values])))
        clip = self.global_clipnorm
        scale = clip * ops.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)
        return [None if g is None else _map_values(g, lambda x: x * scale) for g in grads]

    def _apply_weight_decay(self, variables):
        # Applied inside `update_step`, on the touched rows of a sparse gradient.
        return

    def _decay_dense(self, variable, lr):
        if self.weight_decay is not None and self._use_weight_decay(variable):
            wd = ops.cast(self.weight_decay, variable.dtype)
            variable.assign_sub(variable * wd * lr)

    def _decay_rows(self, variable, rows, lr):
        if self.weight_decay is not None and self._use_weight_decay(variable):
            wd = ops.cast(self.weight_decay, variable.dtype)
            return rows - rows * wd * lr
        return rows

    def _uses_weight_decay(self, variable):
        return self.weight_decay is not None and self._use_weight_decay(variable)


def slot_prefix(variable):
    """The name prefix Keras gives a variable's slots (`add_variable_from_reference`)."""
    if hasattr(variable, "path"):
        return variable.path.replace("/", "_")
    return str(variable.name).replace("/", "_").replace(":", "_")

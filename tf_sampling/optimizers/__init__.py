"""Keras optimizers whose step over a row-sparse gradient costs the rows it touches."""

from tf_sampling.optimizers.loss_scale import LossScaleOptimizer  # noqa: F401
from tf_sampling.optimizers.rowwise_adagrad import RowwiseAdagrad  # noqa: F401
from tf_sampling.optimizers.sparse_adam import SparseAdam  # noqa: F401

"""tf-sampling: candidate sampling and tree softmax for Keras 3 (TensorFlow backend)."""

__version__ = "0.1.0"

from tf_sampling import samplers  # noqa: E402,F401
from tf_sampling import ops  # noqa: E402,F401
from tf_sampling import losses  # noqa: E402,F401
from tf_sampling import layers  # noqa: E402,F401
from tf_sampling import models  # noqa: E402,F401
from tf_sampling import serving  # noqa: E402,F401
from tf_sampling import trees  # noqa: E402,F401
from tf_sampling import callbacks  # noqa: E402,F401
from tf_sampling import optimizers  # noqa: E402,F401
from tf_sampling.frequency_estimator import FrequencyEstimator  # noqa: E402,F401
from tf_sampling.word2vec import Word2Vec  # noqa: E402,F401

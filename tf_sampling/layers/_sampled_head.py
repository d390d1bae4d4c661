"""Shared machinery of the sampled output heads (SampledSoftmax, NCE, NegativeSampling).

A head holds the output layer of a classifier over `num_classes` classes: `kernel`
`[num_classes, dim]` (or the `embeddings` of a tied `keras.layers.Embedding`) and `bias`
`[num_classes]`. While training it computes only the logits of the true and the sampled
classes; otherwise the full softmax, chunk by chunk (`tf_sampling._chunked`): the exact
loss and the top k never build the `[batch, num_classes]` logits, only `log_prob` does.
"""

import contextlib
import functools
import math

import keras
import tensorflow as tf

from tf_sampling import _chunked
from tf_sampling import _variables
from tf_sampling import samplers as samplers_lib
from tf_sampling.layers import base
from tf_sampling.losses import _sampled_logits as _sl

# "batch": one sample shared by the whole batch (TF's scheme); "example": each example
# gets its own `num_sampled` draws (word2vec's scheme).
_SAMPLES_PER = ("batch", "example")


def _check_sharding(num_shards, shard_devices, num_classes, tied):
    num_shards = _sl.check_positive_int(num_shards, "num_shards")
    if num_shards > num_classes:
        raise ValueError(f"`num_shards`={num_shards} is larger than `num_classes`="
                         f"{num_classes}: every shard needs at least one row.")
    if num_shards > 1 and tied:
        raise ValueError("`num_shards` > 1 cannot be combined with `tied_embedding`: the "
                         "tied embedding is one unsharded variable.")
    if shard_devices is not None:
        if isinstance(shard_devices, str) or not isinstance(shard_devices, (list, tuple)) \
                or not shard_devices or not all(isinstance(d, str) for d in shard_devices):
            raise ValueError("`shard_devices` must be None or a non-empty list of device "
                             f"names such as ['/gpu:0', '/gpu:1'], got {shard_devices!r}.")
        shard_devices = list(shard_devices)
    return num_shards, shard_devices


def _replicas_in_sync():
    """Replicas of the tf.distribute strategy in whose replica context this runs, else 1."""
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return 1
    return tf.distribute.get_replica_context().num_replicas_in_sync


def _run_in_backward(loss, fn):
    """`loss`, unchanged; `fn()` runs when the gradient of `loss` is computed.

    Why: a learning sampler's update sums the replicas' label counts, a cross-replica
    `merge_call`. MirroredStrategy runs its replicas in threads that take turns at each
    merge_call, and Keras 3 collects `add_loss` values in one list per layer, shared by
    the threads: a merge_call inside the forward pass lets one replica's loss land in the
    other's total (the reported loss grows by half with two replicas; the gradients stay
    right). In the backward pass each replica has already read its losses. The update
    still happens once per training step, before the next step samples.
    """

    @tf.custom_gradient
    def identity(x):
        def grad(upstream):
            op = fn()
            with tf.control_dependencies([] if op is None else [op]):
                return tf.identity(upstream)

        return tf.identity(x), grad

    return identity(loss)


def shard_rows(num_classes, num_shards):
    """Rows per shard in TF's "div" layout: the first `num_classes % num_shards` shards
    get one row more, so `tf.nn.embedding_lookup(shards, ids)` reads the same rows."""
    size, extra = divmod(num_classes, num_shards)
    return [size + 1 if i < extra else size for i in range(num_shards)]


class SampledHead(base.OutputWeights, base.OutputHead):
    """Base class; subclasses set `_loss_kind` ("softmax" or "logistic") and defaults.

    See `SampledSoftmax` for the arguments.
    """

    _loss_kind = None
    # What `remove_accidental_hits=None` and `subtract_log_q=None` mean in each head.
    _default_remove_accidental_hits = False
    _default_subtract_log_q = True
    # Target of a true class in the logistic losses, as a function of num_true.
    _true_target = staticmethod(lambda num_true: 1.0)

    def __init__(self, num_classes, num_sampled, num_true=1, sampler="log_uniform",
                 tied_embedding=None, use_bias=True, remove_accidental_hits=None,
                 subtract_log_q=None, unique=True, top_k="auto", seed=None, samples_per="batch",
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, num_shards=1, shard_devices=None, chunk_size=None,
                 **kwargs):
        # The weights are read at their own dtype (float32 under mixed precision): the
        # sampled rows are gathered without an autocast copy of the whole matrix, and the
        # loss and log-probs are computed in float32.
        kwargs.setdefault("autocast", False)
        super().__init__(num_classes, top_k=top_k, **kwargs)
        self.num_true = _sl.check_positive_int(num_true, "num_true")
        self.unique = bool(unique)
        self.num_sampled = _sl.check_num_sampled(num_sampled, self.num_classes, self.unique)
        if remove_accidental_hits is None:
            remove_accidental_hits = self._default_remove_accidental_hits
        if subtract_log_q is None:
            subtract_log_q = self._default_subtract_log_q
        self.remove_accidental_hits = bool(remove_accidental_hits)
        self.subtract_log_q = bool(subtract_log_q)
        self.chunk_size = _chunked.check_chunk_size(chunk_size)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"`seed` must be an integer or None, got {seed!r}.")
        self.seed = seed
        if samples_per not in _SAMPLES_PER:
            raise ValueError(
                f"`samples_per` must be one of {_SAMPLES_PER}, got {samples_per!r}.")
        self.samples_per = samples_per

        try:
            if isinstance(sampler, str):
                sampler = samplers_lib.get(sampler, self.num_classes, seed=seed)
            else:
                sampler = samplers_lib.get(sampler, self.num_classes)
        except (TypeError, ValueError) as e:
            raise type(e)(f"`sampler`: {e}") from None
        self.sampler = sampler
        # Keras' jit_compile="auto" compiles only models whose layers all support XLA.
        self.supports_jit = bool(getattr(sampler, "supports_xla", False))
        if self.samples_per == "example" and self.unique:
            # Distinct draws per row keep a data-dependent number of each row's stream.
            self.supports_jit = False
        if self.samples_per == "batch" and self.remove_accidental_hits:
            # tf.nn.compute_accidental_hits (TF's semantics for repeated draws) has no XLA
            # kernel. The unique-row lookups (tf.unique) do compile.
            self.supports_jit = False

        self._init_output_weights(use_bias, tied_embedding, kernel_initializer,
                                  bias_initializer, kernel_regularizer, bias_regularizer,
                                  kernel_constraint, bias_constraint)
        self.num_shards, self.shard_devices = _check_sharding(
            num_shards, shard_devices, self.num_classes, self.tied_embedding is not None)

    # ------------------------------------------------------------------ building
    def build(self, input_shape):
        dim = self._input_dim(input_shape)
        if self.tied_embedding is not None:
            base.build_tied_embedding(self.tied_embedding, dim)
            self._kernel_shards = None
        else:
            self._kernel_shards = self._add_sharded_weight(
                "kernel", (dim,), self.kernel_initializer, self.kernel_regularizer,
                self.kernel_constraint)
        self._bias_shards = None
        if self.use_bias:
            self._bias_shards = self._add_sharded_weight(
                "bias", (), self.bias_initializer, self.bias_regularizer,
                self.bias_constraint)
        self.dim = dim
        self._declare_row_step_scales()
        self.built = True

    def _declare_row_step_scales(self):
        """Declares on each kernel and bias shard the step multipliers that
        `tfs.optimizers.SparseAdam(row_step_samples=R)` (and `RowwiseAdagrad`) give its rows.

        Why: Adam moves a coordinate about `lr * mean(g) / sqrt(mean(g^2))` per step, and a
        row in a fraction E of the samples has a second moment about 1/E times its squared
        mean gradient, so it moves about `sqrt(E) * lr`: the number of samples sets the
        output rows' step sizes as well as their gradients. Multiplying row j's step by
        `sqrt(E_j(R) / E_j(num_sampled))` gives it the step it would have with R samples
        while its gradients stay those of `num_sampled` (the same update, epsilon aside, as
        training `s_j * w_j` under plain Adam). Declared only where E is fixed: an untied
        kernel, one sample per batch, and a sampler that does not learn (or `unique=False`).
        """
        if self.tied_embedding is not None or self.samples_per != "batch":
            return
        if self.unique and self.sampler.learns:
            return
        for shards in (self._kernel_shards, self._bias_shards or []):
            start = 0
            for shard in shards:
                _variables.set_row_step_scale(
                    shard.value, functools.partial(self._row_step_scale, start))
                start += int(shard.shape[0])

    def _row_step_scale(self, offset, ids, row_step_samples):
        """float32 `sqrt(E(row_step_samples) / E(num_sampled))` of rows `ids` of the shard
        that starts at class `offset`; 1 for classes the sampler never draws."""
        if not self.unique:
            return tf.fill(tf.shape(ids), math.sqrt(row_step_samples / self.num_sampled))
        # (The optimizer's row ids are valid: no range checks.)
        q = self.sampler._probability(tf.cast(ids, tf.int64) + offset)
        own, other = (samplers_lib.base.inclusion_from_probability(
            self.sampler, q, min(int(k), self.num_classes))
            for k in (self.num_sampled, row_step_samples))
        drawn = own > 0
        scale = tf.where(drawn, tf.sqrt(other / tf.where(drawn, own, 1.0)), 1.0)
        return tf.cast(scale, tf.float32)

    def _add_sharded_weight(self, name, inner_shape, initializer, regularizer, constraint):
        """One `[num_classes, *inner_shape]` weight, as `num_shards` row-shard variables."""
        if self.num_shards == 1:
            return [self.add_weight(name=name, shape=(self.num_classes,) + inner_shape,
                                    initializer=initializer, regularizer=regularizer,
                                    constraint=constraint)]
        # The full matrix is drawn once (on the host) and split, so a sharded head starts
        # from exactly the weights of the unsharded head with the same seed; drawing each
        # shard with its own shape would change initializers that depend on the fan-in.
        with tf.init_scope(), tf.device("/cpu:0"):
            full = initializer(shape=(self.num_classes,) + inner_shape,
                               dtype=self.variable_dtype)
        shards, start = [], 0
        for i, rows in enumerate(shard_rows(self.num_classes, self.num_shards)):
            piece = full[start:start + rows]
            start += rows
            with self._shard_device(i):
                shards.append(self.add_weight(
                    name=f"{name}_shard_{i}", shape=(rows,) + inner_shape,
                    initializer=lambda shape, dtype, piece=piece: tf.cast(piece, dtype),
                    regularizer=regularizer, constraint=constraint))
        return shards

    def _shard_device(self, i):
        # Under a tf.distribute strategy the strategy places variables (round-robin over
        # parameter servers, or a copy on every replica), so the device list is not used.
        if self.shard_devices is None or tf.distribute.has_strategy():
            return contextlib.nullcontext()
        return tf.device(self.shard_devices[i % len(self.shard_devices)])

    @property
    def kernel(self):
        """The `[num_classes, dim]` output weights (the tied embeddings, if tied).

        With `num_shards` > 1 this is a read-only tensor, the concatenation of
        `kernel_shards`; assign to the shards instead.
        """
        if self.tied_embedding is not None:
            return self.tied_embedding.embeddings
        if getattr(self, "_kernel_shards", None) is None:  # not built
            return None
        if len(self._kernel_shards) == 1:
            return self._kernel_shards[0]
        return tf.concat([tf.convert_to_tensor(s) for s in self._kernel_shards], 0)

    @property
    def bias(self):
        """The `[num_classes]` bias, or None (a read-only concatenation when sharded)."""
        shards = getattr(self, "_bias_shards", None)
        if shards is None:
            return None
        if len(shards) == 1:
            return shards[0]
        return tf.concat([tf.convert_to_tensor(s) for s in shards], 0)

    @property
    def kernel_shards(self):
        """The row shards of the kernel (a list of variables; one if unsharded or tied)."""
        if self.tied_embedding is not None:
            return [self.tied_embedding.embeddings]
        return list(getattr(self, "_kernel_shards", None) or [])

    @property
    def bias_shards(self):
        """The row shards of the bias (a list of variables), or None without a bias."""
        shards = getattr(self, "_bias_shards", None)
        return None if shards is None else list(shards)

    def _weights_tf(self):
        # The backing tf.Variables: tf.gather on them is a sparse read, and they are read
        # at float32 whatever the layer's dtype policy.
        bias = None if self._bias_shards is None else [b.value for b in self._bias_shards]
        return [k.value for k in self.kernel_shards], bias

    # ------------------------------------------------------------------ inputs
    def _flatten(self, hidden, labels):
        """hidden `[..., dim]` -> `[n, dim]`; labels `[...]`/`[..., num_true]` -> `[n, nt]`."""
        hidden = tf.convert_to_tensor(hidden)
        _sl.compute_dtype(hidden.dtype)
        rank = hidden.shape.rank
        if rank is None or rank < 2:
            raise ValueError(f"`inputs` must have shape [batch, ..., dim], got {hidden.shape}.")
        built_dim, dim = getattr(self, "dim", None), hidden.shape[-1]
        if built_dim is not None and dim is not None and dim != built_dim:
            raise ValueError(
                f"`inputs` has last dimension {dim}, but the layer was built for {built_dim}.")
        if labels is None:
            return hidden, None, None
        labels = tf.convert_to_tensor(labels)
        if not labels.dtype.is_integer:
            raise TypeError(f"`labels` must be an integer tensor (int32 or int64), got dtype "
                            f"{labels.dtype.name}.")
        lead = None
        if rank > 2:
            lead = tf.shape(hidden)[:-1]
            hidden = tf.reshape(hidden, [-1, hidden.shape[-1]])
            if labels.shape.rank == rank - 1 and self.num_true == 1:
                labels = tf.reshape(labels, [-1])
            elif labels.shape.rank == rank:
                labels = tf.reshape(labels, [-1, labels.shape[-1] or self.num_true])
            else:
                raise ValueError(
                    f"`labels` must have shape {hidden.shape[:-1]} or [..., num_true], got "
                    f"{labels.shape} for inputs of rank {rank}.")
        labels = _sl.check_labels(labels, self.num_true, self.num_classes)
        _sl.check_batch(labels, hidden)
        return hidden, labels, lead

    # ------------------------------------------------------------------ forward
    def _training_loss(self, inputs, labels):
        hidden, labels, lead = self._flatten(inputs, labels)
        loss = self._sampled_loss(hidden, labels)
        return base.restore_leading(lead, loss)

    def _sampled_loss(self, hidden, labels, update=True):
        weights, biases = self._weights_tf()
        sampled_values = self.sampler.sample(labels, self.num_sampled, unique=self.unique,
                                             per_example=(self.samples_per == "example"))
        deferred_update = None
        if update and self.sampler.learns:
            # After the draw, as TF's learned-unigram op: this step samples from the
            # counts of the steps before it.
            if _replicas_in_sync() > 1:
                deferred_update = lambda: self.sampler.update(labels)  # noqa: E731
            else:
                self.sampler.update(labels)
        true_logits, logits = _sl.sampled_logits(
            weights, biases, labels, hidden, sampled_values, self.num_true,
            self.subtract_log_q, self.remove_accidental_hits)
        if self._loss_kind == "softmax":
            loss = _sl.softmax_loss(true_logits, logits, self.num_true)
        else:
            loss = _sl.logistic_loss(true_logits, logits, self._true_target(self.num_true))
        return loss if deferred_update is None else _run_in_backward(loss, deferred_update)

    def sampled_loss(self, inputs, labels):
        """The per-example sampled training loss (what a training call returns), without
        `add_loss` and without updating the sampler. A noisy, biased training objective,
        not an evaluation metric."""
        hidden, labels, lead = self._flatten(inputs, labels)
        loss = self._sampled_loss(hidden, labels, update=False)
        return base.restore_leading(lead, loss)

    def logits(self, inputs):
        """Full `[..., num_classes]` logits `inputs @ kernel^T + bias` (float32 or float64)."""
        inputs, _, _ = self._flatten(inputs, None)
        dtype = _sl.compute_dtype(inputs.dtype)
        if not self.built:
            self.build(inputs.shape)
        weights, biases = self._weights_tf()
        inputs = tf.cast(inputs, dtype)
        parts = []
        for i, w in enumerate(weights):
            # Each shard's logits are computed where the shard lives: only the inputs and
            # the [..., rows] logits move between devices, never the weights.
            with self._shard_device(i):
                w = tf.cast(w, dtype) if w.dtype != dtype else w
                if inputs.shape.rank == 2:
                    out = tf.matmul(inputs, w, transpose_b=True)
                else:
                    out = tf.tensordot(inputs, w, [[inputs.shape.rank - 1], [1]])
                if biases is not None:
                    out += tf.cast(biases[i], dtype)
            parts.append(out)
        return parts[0] if len(parts) == 1 else tf.concat(parts, -1)

    def log_prob(self, inputs):
        """Full-softmax log-probabilities `[..., num_classes]` of every class."""
        return tf.nn.log_softmax(self.logits(inputs))

    def _chunked_weights(self, hidden):
        """The weight shards and the flattened, cast inputs for `_chunked`."""
        if not self.built:
            self.build(hidden.shape)
        weights, biases = self._weights_tf()
        return weights, biases, tf.cast(hidden, _sl.compute_dtype(hidden.dtype))

    def full_softmax_loss(self, inputs, labels):
        """Exact per-example cross-entropy under the full softmax (for evaluation).

        With num_true > 1 it is the cross-entropy against the target 1/num_true on each
        true class, the distribution the sampled softmax is trained towards. Computed
        over chunks of `chunk_size` classes (each shard where it lives), without the
        `[batch, num_classes]` logits. On a CPU-only machine with the compiled ops, a
        head that Keras never compiles with XLA (`supports_jit` False, the case for every
        built-in sampler) computes the log-normaliser with the fused op
        (`tf_sampling.ops.softmax`).
        """
        hidden, labels, lead = self._flatten(inputs, labels)
        weights, biases, hidden = self._chunked_weights(hidden)
        loss = _chunked.nll(hidden, labels, weights, biases, chunk_size=self.chunk_size,
                            device=self._shard_device, fused=not self.supports_jit)
        return base.restore_leading(lead, loss)

    def top_k(self, inputs, k=None):
        """Exact `(log_probs, indices)` `[..., k]` of the `k` most probable classes.

        Equal to `tf.math.top_k(self.log_prob(inputs), k)` (ties: lower id first;
        indices int32), computed over chunks of classes with a running top-k merge, in
        O(batch x chunk) extra memory; each shard's top k is computed where it lives.
        `k` defaults to the head's `top_k` argument when it is an integer, else 1.
        """
        k = self._resolve_k(k)
        hidden, _, _ = self._flatten(inputs, None)
        hidden, lead = base.flatten_leading(hidden)
        weights, biases, hidden = self._chunked_weights(hidden)
        values, indices = _chunked.top_k(hidden, weights, biases, k=k,
                                         chunk_size=self.chunk_size, device=self._shard_device,
                                         fused=not self.supports_jit)
        return base.restore_leading(lead, values, indices)

    # ------------------------------------------------------------------ Keras plumbing
    def get_config(self):
        config = super().get_config()
        config.update(self._output_weights_config())
        config.update({
            "num_sampled": self.num_sampled,
            "num_true": self.num_true,
            "sampler": keras.saving.serialize_keras_object(self.sampler),
            "remove_accidental_hits": self.remove_accidental_hits,
            "subtract_log_q": self.subtract_log_q,
            "unique": self.unique,
            "seed": self.seed,
            "samples_per": self.samples_per,
            "num_shards": self.num_shards,
            "shard_devices": self.shard_devices,
            "chunk_size": self.chunk_size,
        })
        return config

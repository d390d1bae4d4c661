"""`SampledSoftmax`: a softmax output head trained with the sampled softmax loss."""

import keras

from tf_sampling.layers._sampled_head import SampledHead


@keras.saving.register_keras_serializable(package="tf_sampling")
class SampledSoftmax(SampledHead):
    """Softmax output layer over `num_classes` classes, trained with sampled softmax.

    Called on `[inputs, labels]` with `training=True` (as in `model.fit`), it computes the
    logits of the true classes and of `num_sampled` classes drawn by `sampler` only (never
    the `[batch, num_classes]` logits), adds the mean of the per-example loss with
    `add_loss`, and returns the per-example loss `[batch]`. So `model.compile(optimizer=...)`
    needs no loss.

    The sampled loss is a training objective only: it is a noisy, biased estimate of the
    cross-entropy and its value is not a loss or perplexity you can report. Called with
    `training` False or None (evaluate, predict, plain calls), the layer computes the full
    softmax and returns log-probabilities `[batch, num_classes]`, or `(values, indices)`
    of the `top_k` best classes (see `top_k`); if labels are given it also adds the exact
    cross-entropy, so `model.evaluate()` and `val_loss` report the exact loss and
    `exp(val_loss)` is the perplexity. The loss and the top k are computed over chunks of
    classes with a streaming log-sum-exp, in O(batch x chunk) extra memory, so they run
    at 10^7 classes. Directly: `head.full_softmax_loss(hidden, labels)` (per example),
    `head.perplexity(hidden, labels)`, `head.log_prob(hidden)`. A call with
    `training=True` but without labels raises a `ValueError` (training needs labels).

    Args:
        num_classes: number of output classes.
        num_sampled: classes sampled per training step, shared by the batch (or drawn
            for each example with `samples_per="example"`).
        num_true: true classes per example; `labels` is `[batch]` or `[batch, num_true]`,
            int32 or int64. Each true class gets target 1/num_true.
        sampler: a `tf_sampling.samplers.CandidateSampler` instance, or a name
            ("log_uniform" (default, as TF), "uniform", "learned_unigram", ...). A
            learning sampler is updated with the labels on training calls only.
        tied_embedding: optional `keras.layers.Embedding(num_classes, dim)` whose
            `embeddings` are used as the output weights (weight tying); the layer then has
            no kernel of its own, only a bias. In `get_config` the embedding is serialized
            in full; `model.save()` / `keras.models.load_model()` restore one Embedding
            shared by the model and the head (Keras' object sharing), so tying survives a
            `.keras` round trip. A head deserialized on its own gets its own copy.
        use_bias: whether the head has a `[num_classes]` bias.
        remove_accidental_hits: drop sampled classes equal to an example's true class from
            its softmax (default True, as TF).
        subtract_log_q: subtract log expected counts from the logits (default True).
        unique: sample without replacement (default True; needs num_sampled <= num_classes).
        top_k: what inference (a call without labels, or with `training=False`)
            returns. An integer k: `(values, indices)` of the k largest log-probabilities,
            found chunk by chunk without the `[batch, num_classes]` logits. None: all
            `[batch, num_classes]` log-probabilities. "auto" (default): None up to
            `num_classes` = 65536 (`tf_sampling._chunked.AUTO_FULL_MAX_CLASSES`), the top
            10 above, so `model.predict` stays in bounded memory at any vocabulary size.
            `head.log_prob(x)` always gives every log-probability.
        chunk_size: classes per chunk of the exact evaluation, perplexity and top-k
            (peak extra memory a few batch x chunk floats). None (default): the largest
            multiple of 256 with batch x chunk float32 under 2 MiB (cache-sized) for the
            loss, under 64 MiB for the top k (`tf_sampling._chunked`).
        seed: seed of the sampler when `sampler` is given by name.
        samples_per: "batch" (default, as TF): one sample of `num_sampled` classes shared
            by the whole batch, scored with one `[batch, dim] x [dim, num_sampled]` matmul.
            "example": each example gets its own `num_sampled` draws from the sampler (as
            word2vec), with its own expected counts (`tfs.losses.sample_per_example`;
            with `unique=True` the draws are distinct within each example). The flops are
            the same, but `batch * num_sampled` weight rows are gathered (and get
            gradient rows) instead of `num_sampled`, so it costs more memory traffic.
            Accidental hits are those of each example's own draws.
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
        kernel_constraint, bias_constraint: as in `keras.layers.Dense`.
        num_shards: split the kernel and bias row-wise into this many variables
            (`kernel_shards`, `bias_shards`; TF's "div" layout: the first
            `num_classes % num_shards` shards get one row more). Training gathers only
            the true and sampled rows from each shard, as TF's partitioned
            `sampled_softmax_loss`; inference multiplies by each shard where it lives and
            concatenates the logits. Under `ParameterServerStrategy` each shard is a
            variable of its own, placed round-robin on the parameter servers. The
            initializer draws the full matrix once (on the host) and splits it, so a
            sharded head starts from the weights of the unsharded one with the same seed;
            regularizers and constraints apply to each shard. Not with `tied_embedding`.
        shard_devices: optional device names (e.g. `["/gpu:0", "/gpu:1"]`); shard `i` is
            created, and its logits computed, on `shard_devices[i % len]` (model
            parallelism on one machine). Ignored inside a `tf.distribute` strategy, which
            places variables itself.

    Under a `tf.distribute` strategy with more than one replica, a learning sampler is
    updated in the backward pass of the training step (once per step, with the labels of
    every replica), not in the forward pass: see `_run_in_backward` in
    `tf_sampling/layers/_sampled_head.py`. A training call whose loss is never
    differentiated then does not update it.

    The weights are float32 under mixed precision and the loss and log-probabilities are
    computed in float32. `supports_jit` is the sampler's `supports_xla`, so Keras'
    `jit_compile="auto"` does not try XLA on samplers that cannot be compiled.

    Example:
    >>> V, d = 50_000, 128
    >>> tokens = keras.Input((), dtype="int32")
    >>> labels = keras.Input((), dtype="int32")
    >>> hidden = keras.layers.Dense(d, activation="tanh")(
    ...     keras.layers.Embedding(V, d)(tokens))
    >>> head = tfs.layers.SampledSoftmax(V, num_sampled=1024, sampler="learned_unigram")
    >>> model = keras.Model([tokens, labels], head([hidden, labels]))
    >>> model.compile(optimizer="adam")            # no loss: the head adds it
    >>> model.fit(train_ds, validation_data=val_ds)  # val_loss is the exact loss
    >>> head.perplexity(hidden_states, next_tokens)  # exact full-softmax perplexity
    """

    _loss_kind = "softmax"

    _default_remove_accidental_hits = True
    _default_subtract_log_q = True

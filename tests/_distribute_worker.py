"""Training scenarios for tests/test_distribute.py, each run in a process of its own.

Devices and strategies must be set up before TensorFlow runs its first op, and only once
per process, so the scenarios cannot run inside the pytest process. Usage:

    python tests/_distribute_worker.py local OUT.npz    # 2 logical CPUs: single device,
                                                        # MirroredStrategy, shard placement,
                                                        # BackupAndRestore, replicated
                                                        # sampler/estimator state
    TF_CONFIG=... python tests/_distribute_worker.py mwms OUT.npz   # one worker of a
                                                        # MultiWorkerMirroredStrategy cluster
    python tests/_distribute_worker.py ps OUT.npz       # ParameterServerStrategy on an
                                                        # in-process loopback cluster

Results go to OUT.npz (arrays keyed by scenario); the test compares them. Nothing here
asserts, so that every mismatch is reported by pytest with its numbers.
"""

import os
import sys
import traceback

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

MODE, OUT = sys.argv[1], sys.argv[2]

import tensorflow as tf  # noqa: E402

if MODE == "local":
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        _cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
elif MODE == "mwms":
    # Reads TF_CONFIG; it has to exist before any op runs (it sets up the collectives).
    # The timeout ends a collective whose peer died, instead of waiting forever.
    MWMS = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=120))
elif MODE != "ps":
    raise SystemExit(f"unknown mode {MODE!r}")

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tf_sampling as tfs  # noqa: E402

V, D, S, NUM_CANDIDATES = 60, 8, 12, 5
N, BATCH, EPOCHS = 64, 16, 2

_rng = np.random.default_rng(0)
X = _rng.normal(size=(N, D)).astype(np.float32)
Y = ((_rng.zipf(1.3, N) - 1) % V).astype(np.int32)  # skewed, as real labels are
# Distinct ids within each row, as a candidate set (CandidateSoftmax rejects repeats).
CANDS = np.argsort(_rng.random((N, V)), axis=1)[:, :NUM_CANDIDATES].astype(np.int32)
POS = _rng.integers(0, NUM_CANDIDATES, N).astype(np.int32)
COUNTS = np.bincount(Y, minlength=V) + 1

from tf_sampling.samplers import DynamicAliasSampler


def _dataset():
    return tf.data.Dataset.from_tensor_slices(((X, Y, CANDS, POS),)).batch(BATCH)


def _retrieval_dataset():
    # Zero targets: the model's output is the per-example loss (see retrieval_model).
    return tf.data.Dataset.from_tensor_slices(((X, Y), np.zeros(N, np.float32))).batch(BATCH)


# (variable path, gradient type) of each variable SparseAdam updated, recorded at trace.
SPARSE_ADAM_GRADIENTS = []


class _RecordingSparseAdam(tfs.optimizers.SparseAdam):
    def update_step(self, gradient, variable, learning_rate):
        SPARSE_ADAM_GRADIENTS.append(
            (getattr(variable, "path", variable.name), type(gradient).__name__))
        return super().update_step(gradient, variable, learning_rate)


def _optimizer(name):
    if name == "sgd":
        return keras.optimizers.SGD(0.1, momentum=0.9)
    # A large epsilon keeps the update smooth in the gradient: the data-parallel gradient
    # differs from the single device's in the order of its float sums, and Adam divides by
    # sqrt(v) of near-zero entries.
    return _RecordingSparseAdam(0.05, epsilon=1e-3, catch_up=True, name="sparse_adam")


def all_layers_model(dynamic=False, optimizer="sgd"):
    """One model holding every output layer (one trace instead of one per layer).

    Each head gets its own sampler and seed; the total loss is the sum of the heads'.
    """
    keras.utils.set_random_seed(0)  # the same initial weights in every run
    x = keras.Input((D,))
    y = keras.Input((), dtype="int32")
    cands = keras.Input((NUM_CANDIDATES,), dtype="int32")
    pos = keras.Input((), dtype="int32")
    h = keras.layers.Dense(D, activation="tanh", name="trunk")(x)
    if dynamic:
        heads = [tfs.layers.SampledSoftmax(
            V, S, sampler=DynamicAliasSampler(V, seed=6), name="dynamic")]
    else:
        heads = [
            tfs.layers.SampledSoftmax(
                V, S, sampler=tfs.samplers.LearnedUnigramSampler(V, seed=1), name="learned"),
            tfs.layers.NCE(V, S, sampler=tfs.samplers.LogUniformSampler(V, seed=2), name="nce"),
            tfs.layers.NegativeSampling(
                V, S, sampler=tfs.samplers.FixedUnigramSampler(
                    V, counts=COUNTS, distortion=0.75, seed=3),
                unique=False, name="neg"),
            tfs.layers.SampledSoftmax(
                V, S, sampler=tfs.samplers.UniformSampler(V, seed=4), num_shards=3,
                name="sharded"),
            tfs.layers.HierarchicalSoftmax(V, counts=COUNTS, name="hier"),
            tfs.layers.AdaptiveSoftmax(V, cutoffs=[10, 30], div_value=2.0, name="adaptive"),
        ]
    outputs = [head([h, y]) for head in heads]
    if not dynamic:
        outputs.append(tfs.layers.CandidateSoftmax(V, name="cand")([h, cands, pos]))
    model = keras.Model([x, y, cands, pos], outputs)
    # SGD, not keras Adam: Keras 3's Adam squares a sparse gradient's slices before summing
    # slices of the same row, and the all-reduce concatenates the replicas' slices, so
    # Adam's second moments depend on how the batch was split. SGD is linear in the
    # gradient, so data-parallel training must match single-device training. SparseAdam
    # sums repeated rows first, so it must match too.
    model.compile(optimizer=_optimizer(optimizer))
    return model


class _InBatchLoss(keras.layers.Layer):
    """Per-example in-batch softmax loss with log Q correction, over `groups` equal parts
    of the batch.

    A replica's in-batch negatives are its own examples, so 2 replicas of 8 examples
    train like one device whose batch of 16 is split in 2 groups: with that, the losses
    and weights of the data-parallel runs must match the single-device run."""

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups

    def call(self, inputs):
        return tf.concat([tfs.losses.in_batch_softmax_loss(q, c, candidate_ids=ids,
                                                           candidate_log_q=tf.math.log(p))
                          for q, c, ids, p in zip(*(tf.split(t, self.groups) for t in inputs))],
                         0)

    def compute_output_shape(self, input_shapes):
        return tuple(input_shapes[0][:1])


def _output_is_the_loss(y_true, y_pred):
    return y_pred


def retrieval_model(groups):
    """Two towers, a FrequencyEstimator fed the item ids, and the in-batch loss.

    The loss is the model's output, reduced by a compiled loss, not `add_loss`: the
    estimator all-gathers ids in the forward pass, and under MirroredStrategy Keras 3
    would report the losses that layers add after it wrongly (see FrequencyEstimator)."""
    keras.utils.set_random_seed(0)
    x = keras.Input((D,))
    y = keras.Input((), dtype="int32")
    q = keras.layers.Dense(D, name="query_tower")(x)
    c = keras.layers.Embedding(V, D, name="item_tower")(y)
    # 32 buckets for 60 ids: collisions happen, and ids repeat within and across
    # replicas' halves of a batch (skewed labels).
    p = tfs.FrequencyEstimator(num_buckets=32, num_hash_arrays=2, alpha=0.25, seed=1,
                               name="estimator")(y)
    model = keras.Model([x, y], _InBatchLoss(groups)([q, c, y, p]))
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=_output_is_the_loss)
    return model


class _StepLosses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


def _fit_multi_worker(model, strategy, dataset):
    """model.fit's loop, for MultiWorkerMirroredStrategy.

    Keras 3 (up to 3.15 at least) cannot `fit` under MultiWorkerMirroredStrategy with
    more than one worker: it reduces the first batch with `strategy.reduce`, which
    rejects nested structures, and each step's scalar metrics with `axis=0`
    (keras-team/keras#20585). This runs Keras' own `train_step` with `strategy.run`
    instead and reduces the metrics across workers itself.
    """
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)  # not inside strategy.run
    # One iterator over all epochs: a distributed iterator per epoch costs seconds
    # (the workers set up and sync the dataset again), and the batches are the same.
    data = iter(strategy.experimental_distribute_dataset(dataset.repeat(EPOCHS)))

    @tf.function
    def step(batch):
        logs = strategy.run(model.train_step, args=(batch,))
        return strategy.reduce("MEAN", logs["loss"], axis=None)

    losses = []
    for _ in range(EPOCHS):
        model.reset_metrics()
        for _ in range(N // BATCH):
            losses.append(float(step(next(data))))
    model.optimizer.finalize_variable_values(model.trainable_weights)  # as fit ends
    return losses


def train(strategy, prefix, results, dynamic=False, retrieval=False, optimizer="sgd"):
    """Fits the all-layers model (or the retrieval model); stores per-step losses, weights
    and sampler or estimator state."""
    del SPARSE_ADAM_GRADIENTS[:]
    with strategy.scope():
        if retrieval:
            # The single device's batch in as many groups as the strategy has replicas.
            model = retrieval_model(groups=2 if strategy.num_replicas_in_sync == 1 else 1)
        else:
            model = all_layers_model(dynamic, optimizer)
    data = _retrieval_dataset() if retrieval else _dataset()
    if MODE == "mwms":
        results[f"{prefix}/losses"] = np.array(_fit_multi_worker(model, strategy, data))
    else:
        steps = _StepLosses()
        model.fit(data, epochs=EPOCHS, verbose=0, callbacks=[steps])
        results[f"{prefix}/losses"] = np.array(steps.losses)
    # Weights, sampler counts and tables, seed states; by position, since Keras numbers
    # the names of unnamed layers (and all seed generators share one path).
    results[f"{prefix}/names"] = np.array([v.path for v in model.variables])
    for i, v in enumerate(model.variables):
        results[f"{prefix}/var/{i}"] = v.numpy()
        if isinstance(v.value, tf.distribute.DistributedValues):
            # Every replica's copy must hold the same value.
            results[f"{prefix}/copies/{i}"] = np.stack(
                [c.numpy() for c in strategy.experimental_local_results(v.value)])
    if SPARSE_ADAM_GRADIENTS:
        results[f"{prefix}/gradient_types"] = np.array(sorted(set(SPARSE_ADAM_GRADIENTS)))
    return model


def try_train(strategy, prefix, results, dynamic=False, retrieval=False, optimizer="sgd"):
    try:
        train(strategy, prefix, results, dynamic, retrieval, optimizer)
    except Exception:  # reported by the test, with the traceback's end
        results[f"{prefix}/error"] = np.array(traceback.format_exc()[-2000:])


# ------------------------------------------------------------------------------ local
def replicated_state_outside_training(strategy, directory, results):
    """DynamicAliasSampler and FrequencyEstimator used outside a training step, under
    `strategy`: eager calls in cross-replica context, a replica-context `assign_weights`
    with different weights per replica, and a checkpoint round trip. Stores every copy of
    the state, and the state of the same calls on one device."""
    ids = [[3], [3], [17], [40]]
    weights = np.arange(V, dtype=np.float64)

    def sampler_calls(sampler):
        sampler.update(ids)
        sampler.add_weights([5, 6], [2.5, 0.25])
        sampler.rebuild()
        sampler.update(ids)  # pending after the rebuild

    def estimator_calls(estimator):
        estimator.update(Y[:BATCH])
        estimator.update(Y[BATCH:2 * BATCH])

    with strategy.scope():
        sampler = DynamicAliasSampler(V, seed=1, max_pending=16)
        estimator = tfs.FrequencyEstimator(num_buckets=32, seed=1)
        sampler_calls(sampler)
        estimator_calls(estimator)
    sampler_ref = DynamicAliasSampler(V, seed=1, max_pending=16)
    estimator_ref = tfs.FrequencyEstimator(num_buckets=32, seed=1)
    sampler_calls(sampler_ref)
    estimator_calls(estimator_ref)

    def store(prefix, layer, ref):
        for var, ref_var in zip(layer.weights, ref.weights):
            name = var.path.split("/")[-1]
            results[f"{prefix}/{name}/copies"] = np.stack(
                [c.numpy() for c in strategy.experimental_local_results(var.value)])
            results[f"{prefix}/{name}/ref"] = ref_var.numpy()

    store("outside/sampler", sampler, sampler_ref)
    store("outside/estimator", estimator, estimator_ref)

    # Each replica passes other weights: replica 0's end up on every copy.
    def assign():
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        sampler.assign_weights(tf.roll(weights, replica, 0))

    @tf.function
    def assign_in_replica_context():
        strategy.run(assign)

    assign_in_replica_context()
    results["outside/assigned/copies"] = np.stack(
        [c.numpy() for c in strategy.experimental_local_results(sampler.class_weights.value)])
    results["outside/assigned/ref"] = weights

    # A checkpoint saves one copy and a restore writes all of them.
    path = tf.train.Checkpoint(s=sampler, e=estimator).write(os.path.join(directory, "ckpt"))
    with strategy.scope():
        sampler2 = DynamicAliasSampler(V, seed=2, max_pending=16)
        estimator2 = tfs.FrequencyEstimator(num_buckets=32, seed=1)
    tf.train.Checkpoint(s=sampler2, e=estimator2).read(path).assert_consumed()
    store("restored/sampler", sampler2, sampler)
    store("restored/estimator", estimator2, estimator)


def sharded_placement(results):
    """A 2-shard head with one shard per logical device, against the unsharded head."""
    devices = ["/cpu:0", "/cpu:1"]
    head = tfs.layers.SampledSoftmax(
        V, S, sampler=tfs.samplers.UniformSampler(V, seed=7), num_shards=2,
        shard_devices=devices, bias_initializer="random_normal")
    head.build((None, D))
    results["shard/kernel_devices"] = np.array([s.value.device for s in head.kernel_shards])
    results["shard/bias_devices"] = np.array([s.value.device for s in head.bias_shards])
    results["shard/kernel_rows"] = np.array([s.shape[0] for s in head.kernel_shards])
    ref = tfs.layers.SampledSoftmax(V, S, sampler=tfs.samplers.UniformSampler(V, seed=7))
    ref.build((None, D))
    ref.kernel.assign(head.kernel)
    ref.bias.assign(head.bias)

    h = tf.constant(X[:BATCH])
    y = tf.constant(Y[:BATCH])
    for name, layer in (("sharded", head), ("ref", ref)):
        variables = layer.trainable_weights
        with tf.GradientTape() as tape:
            loss = layer.sampled_loss(h, y)
            total = tf.reduce_sum(loss)
        grads = tape.gradient(total, variables)
        kernel_grad = tf.concat([tf.convert_to_tensor(g) for g in grads[:len(
            layer.kernel_shards)]], 0)
        results[f"shard/{name}/sampled_loss"] = loss.numpy()
        results[f"shard/{name}/kernel_grad"] = kernel_grad.numpy()
        results[f"shard/{name}/log_prob"] = layer.log_prob(h).numpy()
        results[f"shard/{name}/full_loss"] = layer.full_softmax_loss(h, y).numpy()
    # The per-shard logits are computed on the shards' devices.
    graph = tf.function(head.log_prob).get_concrete_function(
        tf.TensorSpec([None, D])).graph
    results["shard/matmul_devices"] = np.array(sorted(
        op.device for op in graph.get_operations() if op.type == "MatMul"))


class _Interrupt(keras.callbacks.Callback):
    """Raises at the end of batch `batch` of epoch `epoch`, as a preemption would."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise RuntimeError("simulated preemption")


def fault_tolerance(strategy, backup_dir, results):
    """BackupAndRestore under `strategy`: fit for EPOCHS epochs, interrupted in the middle
    of the last one, then resumed in a new model (as after a restart). The uninterrupted
    run to compare with is `train(strategy, ...)`: the same labels, batches and epochs.
    A 2-shard kernel checks that sharded weights are backed up too."""

    def model():
        with strategy.scope():
            keras.utils.set_random_seed(0)
            x = keras.Input((D,))
            y = keras.Input((), dtype="int32")
            head = tfs.layers.SampledSoftmax(
                V, S, sampler=tfs.samplers.LearnedUnigramSampler(V, seed=1), num_shards=2)
            m = keras.Model([x, y], head([keras.layers.Dense(D)(x), y]))
            m.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
        return m, head

    data = tf.data.Dataset.from_tensor_slices(((X, Y),)).batch(BATCH)
    first, head = model()
    try:
        first.fit(data, epochs=EPOCHS, verbose=0, callbacks=[
            keras.callbacks.BackupAndRestore(backup_dir), _Interrupt(EPOCHS - 1, 2)])
        results["ft/error"] = np.array("the interruption did not happen")
    except RuntimeError:
        pass
    results["ft/at_interruption"] = head.sampler.counts.numpy()
    resumed, head = model()  # counts back at 1, weights at their initial values
    resumed.fit(data, epochs=EPOCHS, verbose=0,
                callbacks=[keras.callbacks.BackupAndRestore(backup_dir)])
    results["ft/resumed"] = head.sampler.counts.numpy()


# ------------------------------------------------------------------------------ ps
def parameter_servers(results):
    """A 2-shard head under ParameterServerStrategy (1 worker, 2 parameter servers, all
    servers in this process on loopback ports), against the unsharded head.

    Keras 3 has no `fit` for ParameterServerStrategy, so the step is a tf.function
    scheduled on the worker by a ClusterCoordinator: the sampled loss, its gradient, and
    plain SGD on each variable.
    """
    import socket

    socks = [socket.socket() for _ in range(3)]
    for sock in socks:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    cluster = tf.train.ClusterSpec({"worker": [f"localhost:{ports[0]}"],
                                    "ps": [f"localhost:{p}" for p in ports[1:]]})
    servers = [tf.distribute.Server(cluster, job_name="worker", task_index=0, start=True)]
    servers += [tf.distribute.Server(cluster, job_name="ps", task_index=i, start=True)
                for i in range(2)]
    strategy = tf.distribute.experimental.ParameterServerStrategy(
        tf.distribute.cluster_resolver.SimpleClusterResolver(cluster, rpc_layer="grpc"))
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)

    def head(num_shards):
        keras.utils.set_random_seed(0)
        layer = tfs.layers.SampledSoftmax(
            V, S, sampler=tfs.samplers.UniformSampler(V, seed=7), num_shards=num_shards,
            bias_initializer="random_normal")
        layer.build((None, D))
        return layer

    with strategy.scope():
        sharded = head(2)
    plain = head(1)
    results["ps/kernel_devices"] = np.array([v.value.device for v in sharded.kernel_shards])
    results["ps/bias_devices"] = np.array([v.value.device for v in sharded.bias_shards])
    h, y = tf.constant(X[:BATCH]), tf.constant(Y[:BATCH])

    def step_fn(layer):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = layer.sampled_loss(h, y)
                mean = tf.reduce_mean(loss)
            grads = tape.gradient(mean, layer.trainable_weights)
            for var, grad in zip(layer.trainable_weights, grads):
                var.value.assign_sub(0.5 * tf.convert_to_tensor(grad))
            return loss
        return step

    losses = [coordinator.schedule(step_fn(sharded)) for _ in range(2)]
    coordinator.join()
    results["ps/sharded/losses"] = np.stack([loss.fetch() for loss in losses])
    results["ps/sharded/kernel"] = sharded.kernel.numpy()
    results["ps/sharded/bias"] = sharded.bias.numpy()
    step = step_fn(plain)
    results["ps/ref/losses"] = np.stack([step().numpy() for _ in range(2)])
    results["ps/ref/kernel"] = plain.kernel.numpy()
    results["ps/ref/bias"] = plain.bias.numpy()

    # The same with SparseAdam(catch_up=True), a Keras optimizer: its slots are made under
    # the strategy's scope, and the step runs it in the worker's replica context.
    def adam_step_fn(layer, optimizer, run=lambda fn: fn()):
        def replica_step():
            with tf.GradientTape() as tape:
                loss = layer.sampled_loss(h, y)
                mean = tf.reduce_mean(loss)
            grads = tape.gradient(mean, layer.trainable_weights)
            SPARSE_ADAM_GRADIENTS.extend((v.path, type(g).__name__)
                                         for v, g in zip(layer.trainable_weights, grads))
            optimizer.apply_gradients(zip(grads, layer.trainable_weights))
            return loss
        return tf.function(lambda: run(replica_step))

    with strategy.scope():
        sharded = head(2)
        optimizer = tfs.optimizers.SparseAdam(0.05, epsilon=1e-3, catch_up=True)
        optimizer.build(sharded.trainable_weights)
    del SPARSE_ADAM_GRADIENTS[:]
    step = adam_step_fn(sharded, optimizer, strategy.run)
    losses = [coordinator.schedule(step) for _ in range(3)]
    coordinator.join()
    results["ps_adam/gradient_types"] = np.array(sorted(set(SPARSE_ADAM_GRADIENTS)))
    results["ps_adam/sharded/losses"] = np.stack([loss.fetch() for loss in losses])
    results["ps_adam/sharded/kernel"] = sharded.kernel.numpy()
    results["ps_adam/sharded/bias"] = sharded.bias.numpy()
    # Each slot lives where its variable lives (its scatters run there).
    results["ps_adam/placement"] = np.array(
        [(v.value.device, s.value.device) for v in sharded.trainable_weights
         for s in optimizer.variables
         if s.path.split("/", 1)[-1].startswith(v.path.replace("/", "_") + "_")])
    plain = head(1)
    optimizer = tfs.optimizers.SparseAdam(0.05, epsilon=1e-3, catch_up=True)
    step = adam_step_fn(plain, optimizer)
    results["ps_adam/ref/losses"] = np.stack([step().numpy() for _ in range(3)])
    results["ps_adam/ref/kernel"] = plain.kernel.numpy()
    results["ps_adam/ref/bias"] = plain.bias.numpy()
    del servers  # kept alive until here


def main():
    import time
    results = {}
    clock = [time.time()]

    def lap(name):  # phase times on stderr, shown by the test when a run fails
        now = time.time()
        print(f"{name}: {now - clock[0]:.1f}s", file=sys.stderr)
        clock[0] = now

    if MODE == "ps":
        parameter_servers(results)
        lap("parameter servers")
    elif MODE == "mwms":
        train(MWMS, "mwms", results)
        results["mwms/num_replicas"] = np.array(MWMS.num_replicas_in_sync)
        lap("mwms")
        try_train(MWMS, "mwms_dynamic", results, dynamic=True)
        lap("mwms dynamic")
        try_train(MWMS, "mwms_retrieval", results, retrieval=True)
        lap("mwms retrieval")
        try_train(MWMS, "mwms_sparse_adam", results, optimizer="sparse_adam")
        lap("mwms sparse adam")
    else:
        # ReductionToOneDevice: on CPUs MirroredStrategy picks CollectiveAllReduce, whose
        # all-reduce of the heads' sparse (IndexedSlices) gradients takes twice as long to
        # trace; the layers do not depend on the choice.
        mirrored = tf.distribute.MirroredStrategy(
            ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
        results["mirrored/num_replicas"] = np.array(mirrored.num_replicas_in_sync)
        train(tf.distribute.get_strategy(), "single", results)
        lap("single")
        train(mirrored, "mirrored", results)
        lap("mirrored")
        sharded_placement(results)
        lap("placement")
        fault_tolerance(mirrored, os.path.join(os.path.dirname(os.path.abspath(OUT)),
                                               "backup"), results)
        lap("fault tolerance")
        replicated_state_outside_training(
            mirrored, os.path.join(os.path.dirname(os.path.abspath(OUT)), "replicated"),
            results)
        lap("outside training")
        try_train(tf.distribute.get_strategy(), "single_dynamic", results, dynamic=True)
        try_train(mirrored, "mirrored_dynamic", results, dynamic=True)
        lap("dynamic")
        try_train(tf.distribute.get_strategy(), "single_retrieval", results, retrieval=True)
        try_train(mirrored, "mirrored_retrieval", results, retrieval=True)
        lap("retrieval")
        try_train(tf.distribute.get_strategy(), "single_sparse_adam", results,
                  optimizer="sparse_adam")
        lap("sparse adam")
    np.savez(OUT, **results)


if __name__ == "__main__":
    main()

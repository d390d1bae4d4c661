"""State that every replica of a `tf.distribute` strategy keeps in full, updated in place.

`DynamicAliasSampler` and `FrequencyEstimator` update their state with scatters, O(batch)
per step instead of O(state). Distributed variables do not allow that in replica context:
a `MirroredVariable` scatter or assign either refuses, or is a cross-replica `merge_call`
per update (which TF refuses inside `tf.cond`, where a rebuild happens), and a dense
summed delta (what `LearnedUnigramSampler` does) costs O(state) per step.

So every replica all-gathers the step's inputs instead (O(global batch) communicated),
in replica order, then applies the same update to its own copy of the state with plain
variable ops. All copies then go through the same deterministic ops on the same data:
they stay identical, and equal to one device's state after it was fed the concatenated
batch, without ever sending the state itself. Outside a replica context (eager calls
under `strategy.scope()`, or after training) updates run on every copy through
`strategy.run`, with the same inputs on each; reads use the first local copy.

The variables are created with `aggregation="only_first_replica"`: a checkpoint saves the
first copy and a restore writes every copy.
"""

import tensorflow as tf


def creation_strategy():
    """The strategy whose scope the state is being created in, or None."""
    return tf.distribute.get_strategy() if tf.distribute.has_strategy() else None


def in_replica_context():
    """True inside `strategy.run` (or a Keras train step) of a non-default strategy."""
    return tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context()


def local_copy(variable, strategy):
    """The `tf.Variable` that this replica reads and writes: the variable itself without a
    strategy; under one, the current replica's copy (the first local copy outside a replica
    context)."""
    value = variable.value  # the backing tf.Variable (distributed or not) of a Keras variable
    if strategy is None or not isinstance(value, tf.distribute.DistributedValues):
        return value
    copies = strategy.experimental_local_results(value)
    if len(copies) == 1 or not in_replica_context():
        return copies[0]
    replica = tf.get_static_value(tf.distribute.get_replica_context().replica_id_in_sync_group)
    if replica is None:
        raise NotImplementedError(
            f"{type(strategy).__name__} gives no static replica id; this state supports "
            "MirroredStrategy and MultiWorkerMirroredStrategy.")
    # Replica ids are global (worker * local devices + local index); copies are local.
    return copies[int(replica) % len(copies)]


def gather(*tensors):
    """In a replica context with several replicas: each tensor concatenated (axis 0) over
    all replicas, in replica order, the same on every replica. Otherwise unchanged."""
    if not in_replica_context():
        return tensors
    context = tf.distribute.get_replica_context()
    if context.num_replicas_in_sync == 1:
        return tensors
    return tuple(context.all_gather(list(tensors), axis=0))


def first_replicas(tensor):
    """In a replica context with several replicas: replica 0's `tensor`, on every replica."""
    gathered, = gather(tf.expand_dims(tensor, 0))
    return gathered[0]


def on_every_copy(strategy, fn, *args):
    """Runs `fn(*args)`, which updates the state through `local_copy`, on every copy.

    In a replica context every replica makes the call itself, for its own copy (the args
    must be the same on all of them: `gather` them first). Otherwise the call goes through
    `strategy.run`, with the same args on every replica; the first local result is
    returned.
    """
    if strategy is None or in_replica_context():
        return fn(*args)
    with strategy.scope():
        result = strategy.run(fn, args=args)
    if result is None:
        return None
    return tf.nest.map_structure(lambda r: strategy.experimental_local_results(r)[0], result)

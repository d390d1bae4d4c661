"""Two-tower retrieval losses and the streaming frequency estimator, with hand-derived values."""

import math

import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs
from tf_sampling.losses import in_batch_softmax_loss, mixed_negative_sampling_loss
from tf_sampling.samplers import SampledValues

E = math.e
LN2, LN4 = math.log(2.0), math.log(4.0)

# Three (query, item) pairs with dot products small enough to do by hand:
#   q0 = [1, 0], q1 = [0, 1], q2 = [1, 1];  c0 = [1, 0], c1 = [0, 2], c2 = [1, -1]
#   logits q_i . c_j:  row 0: [1, 0, 1]   row 1: [0, 2, -1]   row 2: [1, 2, 0]
# The positive of row i is column i.
Q = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
C = np.array([[1, 0], [0, 2], [1, -1]], np.float32)


def close(got, want, tol=1e-5):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want, np.float64), atol=tol, rtol=tol)


def test_in_batch_plain():
    # loss_i = log(sum_j exp(l_ij)) - l_ii
    want = [math.log(E + 1 + E) - 1,              # row 0: log(2e + 1) - 1
            math.log(1 + E ** 2 + E ** -1) - 2,   # row 1
            math.log(E + E ** 2 + 1) - 0]         # row 2
    close(in_batch_softmax_loss(Q, C), want)


def test_in_batch_temperature():
    # temperature 0.5 doubles every logit: rows [2, 0, 2], [0, 4, -2], [2, 4, 0].
    want = [math.log(2 * E ** 2 + 1) - 2,
            math.log(1 + E ** 4 + E ** -2) - 4,
            math.log(E ** 2 + E ** 4 + 1)]
    close(in_batch_softmax_loss(Q, C, temperature=0.5), want)


def test_in_batch_accidental_hits():
    # Items 0 and 2 are the same item (id 7). Row 0 (positive id 7) masks column 2, row 2
    # (positive id 7) masks column 0; row 1 (id 9) keeps everything.
    ids = [7, 9, 7]
    want = [math.log(E + 1) - 1,                  # row 0 over columns {0, 1}
            math.log(1 + E ** 2 + E ** -1) - 2,   # row 1 unchanged
            math.log(E ** 2 + 1)]                 # row 2 over columns {1, 2}
    close(in_batch_softmax_loss(Q, C, candidate_ids=ids), want)


def test_in_batch_log_q():
    # q = [1/2, 1/4, 1/4]: subtracting log q adds [ln 2, ln 4, ln 4] to the columns, i.e.
    # multiplies exp(logit) by [2, 4, 4].
    #   row 0: exp -> [2e, 4, 4e]       loss = log(6e + 4) - log(2e) = log(3 + 2/e)
    #   row 1: exp -> [2, 4e^2, 4/e]    loss = log(1 + 1/(2e^2) + 1/e^3)
    #   row 2: exp -> [2e, 4e^2, 4]     loss = log(1 + e/2 + e^2)
    want = [math.log(3 + 2 / E), math.log(1 + 1 / (2 * E ** 2) + E ** -3),
            math.log(1 + E / 2 + E ** 2)]
    close(in_batch_softmax_loss(Q, C, candidate_log_q=np.log([0.5, 0.25, 0.25])), want)


def test_in_batch_hard_negatives():
    # With log Q as above, corrected negatives per row:
    #   row 0: col1 = ln4 (1.39), col2 = 1 + ln4 (2.39)  -> keeps col2: log(2e + 4e) - log(2e)
    #   row 1: col0 = ln2 (0.69), col2 = -1 + ln4 (0.39) -> keeps col0: log(4e^2 + 2) - log(4e^2)
    #   row 2: col0 = 1 + ln2 (1.69), col1 = 2 + ln4 (3.39) -> keeps col1: log(4 + 4e^2) - log 4
    want = [math.log(3), math.log(1 + 1 / (2 * E ** 2)), math.log(1 + E ** 2)]
    got = in_batch_softmax_loss(Q, C, candidate_log_q=np.log([0.5, 0.25, 0.25]),
                                num_hard_negatives=1)
    close(got, want)
    # Masked accidental hits are never "hard": ids [7, 9, 7], no log Q, k = 1.
    #   row 0: col2 masked -> keeps col1 (0): log(e + 1) - 1
    #   row 1: negatives [0, -1] -> keeps col0: log(e^2 + 1) - 2
    #   row 2: col0 masked -> keeps col1 (2): log(e^2 + 1)
    want = [math.log(E + 1) - 1, math.log(E ** 2 + 1) - 2, math.log(E ** 2 + 1)]
    close(in_batch_softmax_loss(Q, C, candidate_ids=[7, 9, 7], num_hard_negatives=1), want)
    # k at least the number of negatives changes nothing.
    close(in_batch_softmax_loss(Q, C, num_hard_negatives=5), in_batch_softmax_loss(Q, C))


def test_in_batch_gradients_match_brute_force():
    rng = np.random.default_rng(0)
    q = tf.constant(rng.standard_normal((5, 3)), tf.float64)
    c = tf.constant(rng.standard_normal((5, 3)), tf.float64)
    ids = np.array([1, 2, 1, 3, 4])
    p = np.array([0.1, 0.2, 0.1, 0.3, 0.3])
    with tf.GradientTape() as tape:
        tape.watch([q, c])
        loss = tf.reduce_sum(in_batch_softmax_loss(q, c, candidate_ids=ids,
                                                   candidate_log_q=np.log(p),
                                                   temperature=0.7))
    gq, gc = tape.gradient(loss, [q, c])
    # Brute force: d loss_i / d logit_ij = softmax_ij - [i == j] over the unmasked columns,
    # logit_ij = q_i . c_j / T - log p_j.
    logits = q.numpy() @ c.numpy().T / 0.7 - np.log(p)[None, :]
    mask = (ids[:, None] == ids[None, :]) & ~np.eye(5, dtype=bool)
    logits[mask] = -np.inf
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    dlogits = (soft - np.eye(5)) / 0.7
    close(gq.numpy(), dlogits @ c.numpy(), 1e-10)
    close(gc.numpy(), dlogits.T @ q.numpy(), 1e-10)


# ------------------------------------------------------------------------ mixed negatives
# Two pairs: q0 = [1, 0], q1 = [0, 1]; in-batch items c0 = [1, 0] (id 3), c1 = [0, 1] (id 5).
# The candidate tower is a lookup in TABLE; sampled negatives are ids [5, 6] with
# table[5] = [0, 1] (the same item as c1) and table[6] = [2, 1].
#   row 0 logits: in-batch [1, 0], sampled [0, 2]
#   row 1 logits: in-batch [0, 1], sampled [1, 1]; sampled id 5 is row 1's positive: masked.
TABLE = np.zeros((8, 2), np.float32)
TABLE[5] = [0, 1]
TABLE[6] = [2, 1]
MQ = np.array([[1, 0], [0, 1]], np.float32)
MC = np.array([[1, 0], [0, 1]], np.float32)
MIDS = np.array([3, 5])


def tower(ids):
    return tf.gather(TABLE, ids)


def test_mixed_negative_sampling_hand_values():
    injected = SampledValues(tf.constant([5, 6], tf.int64), tf.ones([2, 1]),
                             tf.constant([0.5, 0.25]))
    # In-batch probabilities [1/4, 1/2] with B = 2 give expected counts [1/2, 1]; the sampled
    # expected counts are [1/2, 1/4]. Subtracting their logs adds [ln2, 0, ln2, ln4]:
    #   row 0: [1 + ln2, 0, ln2, 2 + ln4] -> exp [2e, 1, 2, 4e^2]; loss = log(2e+3+4e^2) - log(2e)
    #   row 1: [ln2, 1, masked, 1 + ln4]  -> exp [2, e, 0, 4e];   loss = log(2 + 5e) - 1
    want = [math.log(1 + 3 / (2 * E) + 2 * E), math.log(5 + 2 / E)]
    got = mixed_negative_sampling_loss(MQ, MC, MIDS, tower, sampled_values=injected,
                                       candidate_log_q=np.log([0.25, 0.5]))
    close(got, want)
    # Without log Q: row 0 over [1, 0, 0, 2], row 1 over [0, 1, 1] (sampled id 5 masked).
    want = [math.log(E + 2 + E ** 2) - 1, math.log(1 + 2 * E) - 1]
    close(mixed_negative_sampling_loss(MQ, MC, MIDS, tower, sampled_values=injected,
                                       subtract_log_q=False), want)
    # Hard negatives, k = 1, no log Q: row 0's negatives are [0, 0, 2]: keeps sampled id 6
    # (logit 2); row 1's are [0 (col 0), masked, 1 (col 3)]: keeps col 3 (logit 1).
    want = [math.log(E + E ** 2) - 1, math.log(E + E) - 1]
    close(mixed_negative_sampling_loss(MQ, MC, MIDS, tower, sampled_values=injected,
                                       subtract_log_q=False, num_hard_negatives=1), want)


def test_mixed_negative_sampling_with_a_sampler():
    sampler = tfs.samplers.UniformSampler(num_classes=8)
    drawn = sampler.sample(MIDS[:, None], 3, unique=False, seed=11)
    # Uniform over 8 ids, 3 non-unique draws: each expected count is 3/8.
    close(drawn.sampled_expected_count, [3 / 8] * 3)
    got = mixed_negative_sampling_loss(MQ, MC, MIDS, tower, sampler=sampler, num_sampled=3,
                                       unique=False, seed=11,
                                       candidate_log_q=np.log([0.25, 0.5]))
    want = mixed_negative_sampling_loss(MQ, MC, MIDS, tower, sampled_values=drawn,
                                        candidate_log_q=np.log([0.25, 0.5]))
    close(got, want, 1e-7)
    # Gradients reach the table through the candidate tower, only for rows that were drawn.
    table = tf.Variable(TABLE)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(mixed_negative_sampling_loss(
            MQ, MC, MIDS, lambda ids: tf.gather(table, ids), sampled_values=drawn,
            subtract_log_q=False))
    grad = tf.convert_to_tensor(tape.gradient(loss, table)).numpy()
    untouched = np.setdiff1d(np.arange(8), drawn.sampled_candidates.numpy())
    assert np.all(grad[untouched] == 0)


# ------------------------------------------------------------------------------ bad input
def test_bad_retrieval_inputs():
    with pytest.raises(ValueError, match="same dim"):
        in_batch_softmax_loss(Q, np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="batch size"):
        in_batch_softmax_loss(Q, np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="query_embeddings"):
        in_batch_softmax_loss(np.zeros((3, 2, 1), np.float32), C)
    with pytest.raises(TypeError, match="candidate_ids"):
        in_batch_softmax_loss(Q, C, candidate_ids=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="candidate_ids"):
        in_batch_softmax_loss(Q, C, candidate_ids=[1, 2])
    for bad in ([0.0, 0.1, -1.0], [-1.0, -float("inf"), -1.0], [-1.0, float("nan"), -1.0]):
        with pytest.raises(tf.errors.InvalidArgumentError, match="candidate_log_q"):
            in_batch_softmax_loss(Q, C, candidate_log_q=bad)
    with pytest.raises(ValueError, match="candidate_log_q"):
        in_batch_softmax_loss(Q, C, candidate_log_q=[-1.0, -1.0])
    with pytest.raises(ValueError, match="temperature"):
        in_batch_softmax_loss(Q, C, temperature=0.0)
    with pytest.raises(ValueError, match="num_hard_negatives"):
        in_batch_softmax_loss(Q, C, num_hard_negatives=0)
    with pytest.raises(ValueError, match="sampler"):
        mixed_negative_sampling_loss(MQ, MC, MIDS, tower)
    with pytest.raises(ValueError, match="num_sampled"):
        mixed_negative_sampling_loss(MQ, MC, MIDS, tower, sampler=tfs.samplers.UniformSampler(8))
    with pytest.raises(ValueError, match="candidate_log_q"):
        mixed_negative_sampling_loss(MQ, MC, MIDS, tower, num_sampled=2,
                                     sampler=tfs.samplers.UniformSampler(8))
    with pytest.raises(TypeError, match="candidate_tower"):
        mixed_negative_sampling_loss(MQ, MC, MIDS, None, sampler=tfs.samplers.UniformSampler(8),
                                     num_sampled=2)
    with pytest.raises(ValueError, match="candidate_tower"):
        mixed_negative_sampling_loss(MQ, MC, MIDS, lambda ids: tf.zeros([2, 5]),
                                     sampler=tfs.samplers.UniformSampler(8), num_sampled=2,
                                     subtract_log_q=False)
    # In-batch ids outside the sampler's range are caught by the sampler.
    with pytest.raises(tf.errors.InvalidArgumentError, match="true_classes"):
        mixed_negative_sampling_loss(MQ, MC, [3, 9], tower, num_sampled=2,
                                     sampler=tfs.samplers.UniformSampler(8),
                                     subtract_log_q=False)


def test_candidate_sampling_probability_is_the_deprecated_form_of_candidate_log_q():
    p = [0.5, 0.25, 0.25]
    with pytest.warns(DeprecationWarning, match="candidate_sampling_probability"):
        old = in_batch_softmax_loss(Q, C, candidate_sampling_probability=p)
    close(old, in_batch_softmax_loss(Q, C, candidate_log_q=np.log(p)))
    with pytest.warns(DeprecationWarning, match="candidate_sampling_probability"):
        old = mixed_negative_sampling_loss(MQ, MC, MIDS, tower, sampled_values=(
            tf.constant([6, 5], tf.int64), None, tf.constant([0.5, 0.25])),
            candidate_sampling_probability=[0.25, 0.5])
    close(old, mixed_negative_sampling_loss(MQ, MC, MIDS, tower, sampled_values=(
        tf.constant([6, 5], tf.int64), None, tf.constant([0.5, 0.25])),
        candidate_log_q=np.log([0.25, 0.5])))
    # The deprecated form keeps its own checks, naming it.
    for bad in ([0.5, 0.0, 0.5], [0.5, -0.1, 0.5], [0.5, float("nan"), 0.5], [0.5, 1.5, 0.5]):
        with pytest.warns(DeprecationWarning), \
                pytest.raises(tf.errors.InvalidArgumentError,
                              match="candidate_sampling_probability"):
            in_batch_softmax_loss(Q, C, candidate_sampling_probability=bad)
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="only"):
        in_batch_softmax_loss(Q, C, candidate_sampling_probability=p,
                              candidate_log_q=np.log(p))


def test_losses_run_in_tf_function_with_unknown_batch():
    @tf.function(input_signature=[tf.TensorSpec([None, 2]), tf.TensorSpec([None, 2]),
                                  tf.TensorSpec([None], tf.int64), tf.TensorSpec([None])])
    def f(q, c, ids, p):
        return in_batch_softmax_loss(q, c, candidate_ids=ids, candidate_log_q=tf.math.log(p),
                                     num_hard_negatives=1)

    close(f(Q, C, tf.constant([7, 9, 7], tf.int64), tf.constant([0.5, 0.25, 0.25])),
          in_batch_softmax_loss(Q, C, candidate_ids=[7, 9, 7],
                                candidate_log_q=np.log([0.5, 0.25, 0.25]),
                                num_hard_negatives=1))


# ----------------------------------------------------------------- frequency estimator
def test_estimator_hand_values():
    # One hash array with 2^20 buckets: ids 7, 9 and 5 do not collide (checked below).
    est = tfs.FrequencyEstimator(num_buckets=2 ** 20, num_hash_arrays=1, alpha=0.5, seed=3)
    keys = est._keys(tf.constant([7, 9, 5], tf.int64)).numpy()[0]
    assert len(set(keys.tolist())) == 3
    est.update([7, 5, 5, 5])  # t = 1: 7 first seen, B = t - A = 1 - 0 = 1.
    #                           5 seen 3 times: B = 1, then twice a gap of 0: 0.5 * 0.5 * 1.
    est.update([9])           # t = 2: 9 first seen, B = 2.
    est.update([7, 5])        # t = 3: 7: B = 0.5 * 1 + 0.5 * (3 - 1) = 1.5
    #                                  5: B = 0.5 * 0.25 + 0.5 * (3 - 1) = 1.125
    close(est.step_frequency([7, 9, 5, 1234]), [1 / 1.5, 1 / 2, 1 / 1.125, 1 / 3])
    # 7 ids over 3 steps: 7/3 ids per step; probability = step frequency / (7/3).
    close(est.probability([7, 9, 5, 1234]), np.array([1 / 1.5, 1 / 2, 1 / 1.125, 1 / 3]) * 3 / 7)
    assert int(est.step) == 3 and int(est.num_seen) == 7


def test_estimator_max_over_hash_arrays_undoes_a_collision():
    est = tfs.FrequencyEstimator(num_buckets=16, num_hash_arrays=2, alpha=0.1, seed=0)
    # Find a rare id b that shares array 0's bucket with the frequent id a = 0, not array 1's.
    keys = est._keys(tf.range(2000, dtype=tf.int64)).numpy()
    b = next(i for i in range(1, 2000) if keys[0, i] == keys[0, 0] and keys[1, i] != keys[1, 0])
    for t in range(1, 41):
        est.update([0, b] if t % 4 == 0 else [0])
    # id 0 every step: gap 1 in both arrays. id b every 4th step: in array 1 its first sighting
    # sets B = 4 and every later gap is 4, so B = 4; array 0 (shared with id 0) says 1. The
    # largest gap wins: 1/4 per step, while a single hash array would report 1.
    close(est.step_frequency([0, b]), [1.0, 0.25])


def test_estimator_call_checkpoint_and_config(tmp_path):
    est = tfs.FrequencyEstimator(num_buckets=1024, num_hash_arrays=3, alpha=0.2, seed=5)
    ids = tf.constant([[1, 2], [2, 3]], tf.int64)
    before = est(ids)  # inference: no update
    assert int(est.step) == 0
    close(before, np.full((2, 2), 1.0))  # nothing seen: 1 / max(num_seen, 1), clipped to 1
    p = tf.function(lambda x: est(x, training=True))(ids)
    assert p.shape == (2, 2) and int(est.step) == 1
    est.update([2, 2, 4])
    path = tf.train.Checkpoint(estimator=est).write(str(tmp_path / "ckpt"))
    clone = tfs.FrequencyEstimator.from_config(est.get_config())
    assert clone.get_config() == est.get_config()
    tf.train.Checkpoint(estimator=clone).read(path).assert_consumed()
    for a, b in zip(est.weights, clone.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    close(clone.probability([1, 2, 3, 4, 99]), est.probability([1, 2, 3, 4, 99]), 0)
    # A different seed hashes differently.
    other = tfs.FrequencyEstimator(num_buckets=1024, num_hash_arrays=3, seed=6)
    assert not np.array_equal(other._keys(ids[0]).numpy(), est._keys(ids[0]).numpy())


def test_bad_estimator_arguments():
    for kwargs, name in [(dict(num_buckets=0), "num_buckets"),
                         (dict(num_buckets=8, num_hash_arrays=0), "num_hash_arrays"),
                         (dict(num_buckets=8, alpha=0.0), "alpha"),
                         (dict(num_buckets=8, alpha=1.5), "alpha"),
                         (dict(num_buckets=8, seed=1.5), "seed")]:
        with pytest.raises(ValueError, match=name):
            tfs.FrequencyEstimator(**kwargs)
    with pytest.raises(TypeError, match="ids"):
        tfs.FrequencyEstimator(8).update(tf.constant([1.0]))


def test_estimator_tracks_a_drifting_stream():
    """Total variation between the estimate and the true item distribution on a drifting
    Zipf stream: 1000 items with random 62-bit ids, 128 ids per step, 3000 steps. Steps
    1-1000 draw from Zipf(1) over permutation A; steps 1000-2000 blend linearly into Zipf(1)
    over permutation B; steps 2000-3000 draw from B.

    References computed here on the same stream:
    - the same EMA-of-gaps algorithm per exact id (no hashing): the statistical error of the
      method itself (EMA noise ~ sqrt(alpha / 2) = 10% per item at alpha = 0.02, and the
      rarest items, ~2 sightings per 100 steps, still carry their first-sighting value);
    - a stale estimate that never adapts (the distribution of phase A).
    """
    n_items, batch, steps, alpha = 1000, 128, 3000, 0.02
    rng = np.random.default_rng(0)
    item_ids = rng.integers(0, 2 ** 62, n_items, dtype=np.int64)
    zipf = 1.0 / np.arange(1, n_items + 1)
    zipf /= zipf.sum()
    p_a, p_b = zipf[rng.permutation(n_items)], zipf[rng.permutation(n_items)]

    def p_true(t):
        w = min(max((t - 1000) / 1000, 0.0), 1.0)
        return (1 - w) * p_a + w * p_b

    draws = np.stack([rng.choice(n_items, batch, p=p_true(t)) for t in range(1, steps + 1)])
    checkpoints = [1000, 1500, 2000, 3000]

    def tv(estimate, t):
        return 0.5 * np.abs(estimate / estimate.sum() - p_true(t)).sum()

    # Exact (unhashed) EMA of gaps, same update rule.
    last, gap, exact_tv = np.zeros(n_items), np.zeros(n_items), {}
    for t in range(1, steps + 1):
        u, c = np.unique(draws[t - 1], return_counts=True)
        g = t - last[u]
        gap[u] = (1 - alpha) ** (c - 1.0) * np.where(gap[u] > 0,
                                                     (1 - alpha) * gap[u] + alpha * g, g)
        last[u] = t
        if t in checkpoints:
            exact_tv[t] = tv(np.where(gap > 0, 1 / np.where(gap > 0, gap, 1), 1 / t), t)

    # 4096 buckets x 2 hash arrays for 1000 live ids.
    est = tfs.FrequencyEstimator(num_buckets=4096, num_hash_arrays=2, alpha=alpha, seed=1)

    @tf.function
    def run(segment):
        for i in tf.range(tf.shape(segment)[0]):
            est.update(segment[i])

    hashed_tv, totals, start = {}, {}, 0
    for t in checkpoints:
        run(tf.constant(item_ids[draws[start:t]]))
        start = t
        p = est.probability(item_ids).numpy()
        hashed_tv[t], totals[t] = tv(p, t), float(p.sum())
    stale_tv = {t: 0.5 * np.abs(p_a - p_true(t)).sum() for t in checkpoints}
    print("\nTV(estimate, truth) by step:", {t: round(float(v), 4) for t, v in hashed_tv.items()})
    print("TV of exact-id EMA:          ", {t: round(float(v), 4) for t, v in exact_tv.items()})
    print("TV of a stale estimate:      ", {t: round(float(v), 4) for t, v in stale_tv.items()})
    print("sum of probability() over items:", {t: round(v, 3) for t, v in totals.items()})

    for t in checkpoints:
        # Collisions: an id's estimate is wrong only if it collides in both arrays, with
        # probability (1 - (1 - 1/4096)^999)^2 ~ 0.047, and then gains a colliding item's
        # frequency (1/1000 of the mass on average): a few 1e-2 of TV at most.
        assert hashed_tv[t] <= exact_tv[t] + 0.03, (t, hashed_tv[t], exact_tv[t])
    # Settled phases: the estimate is close (< 0.12, i.e. the exact method's ~0.08 plus the
    # collision allowance), and after the drift it has followed it: less than a fifth of the
    # error of not adapting (0.72).
    assert hashed_tv[1000] < 0.12 and hashed_tv[3000] < 0.12
    assert hashed_tv[3000] < 0.2 * stale_tv[3000]
    # Unnormalised probabilities stay near 1 in total: 1 / EMA(gap) is biased upwards
    # (Jensen) by about the EMA's relative variance, and rare items carry start-up error.
    for t in checkpoints:
        assert 0.9 < totals[t] < 1.2, totals


def test_estimator_under_a_one_replica_strategy_matches_no_strategy():
    """Distributed variables, read and written through the replica's copy (2 replicas and
    2 workers: tests/test_distribute.py), give the state and estimates of no strategy."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        est = tfs.FrequencyEstimator(num_buckets=64, num_hash_arrays=2, alpha=0.3, seed=2)
    ref = tfs.FrequencyEstimator(num_buckets=64, num_hash_arrays=2, alpha=0.3, seed=2)
    assert isinstance(est.gap.value, tf.distribute.DistributedValues)
    replicated = tf.function(lambda ids: strategy.run(lambda x: est(x, training=True),
                                                      args=(ids,)))
    plain = tf.function(lambda ids: ref(ids, training=True))
    batches = np.random.default_rng(0).zipf(1.5, (6, 16)) % 200
    for ids in batches:
        np.testing.assert_array_equal(replicated(tf.constant(ids)), plain(tf.constant(ids)))
    with strategy.scope():  # cross-replica context: through strategy.run
        est.update([5, 5, 9])
    ref.update([5, 5, 9])
    for a, b in zip(est.weights, ref.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert int(ref.step) == 7 and np.count_nonzero(ref.gap.numpy()) > 10

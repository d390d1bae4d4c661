"""Which shown item was clicked? Softmax over per-example candidate sets.

A synthetic recommendation log: each impression shows a user a different number of items
(heavy-tailed: most lists are short, a few are long), and the user clicks one of them,
chosen by a hidden scoring model plus Gumbel noise. A two-tower model (a Dense user tower,
an item table inside `tfs.layers.CandidateSoftmax`) learns to pick the clicked item among
the items shown, with the shown items as each example's own negatives.

The same model is trained twice from the same initial weights on the same batches:
- "ragged": candidates as a `tf.RaggedTensor`; the loss does O(sum n_i * dim) work;
- "dense": candidates padded with -1 to the longest list of each batch (or of the whole
  data set, `--dense-pad global`), as a dense-tensor API would need; the padded slots
  are masked out, so the loss is the same, but the work is O(batch * max n_i * dim).

It prints the top-1 accuracy of each on held-out impressions, next to the random-guess
rate (mean 1/n_i) and the accuracy of the hidden model's own noiseless argmax, and the
training time of each. The last line is `RESULT {json}`.

    python examples/ranking.py                  # ~20 s on 2 CPU cores
    python examples/ranking.py --train 400 --test 200 --epochs 1   # smoke run
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_sampling as tfs  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num-items", type=int, default=2000)
    p.add_argument("--features", type=int, default=16, help="user feature dimension")
    p.add_argument("--dim", type=int, default=32, help="model embedding dimension")
    p.add_argument("--train", type=int, default=8000, help="training impressions")
    p.add_argument("--test", type=int, default=2000, help="held-out impressions")
    p.add_argument("--median-shown", type=float, default=30.0,
                   help="median number of items shown per impression (log-normal)")
    p.add_argument("--max-shown", type=int, default=400)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--dense-pad", choices=["batch", "global"], default="batch",
                   help="pad each batch to its own longest list, or all to the longest")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- data
def make_data(args, n, rng, world):
    """`n` impressions: user features, ragged shown items, index of the clicked one."""
    item_vecs, item_bias, user_map, popularity = world
    feats = rng.normal(size=(n, args.features)).astype(np.float32)
    users = feats @ user_map
    shown_n = np.clip(np.round(np.exp(rng.normal(np.log(args.median_shown), 0.9, size=n))),
                      2, args.max_shown).astype(np.int64)
    # Popular items are shown more often, no item twice in a list: the n_i largest of
    # log(popularity) + Gumbel noise are a draw without replacement (Gumbel top-k).
    rows, clicked, best = [], [], []
    log_pop = np.log(popularity)
    for s in range(0, n, 1024):
        keys = log_pop + rng.gumbel(size=(min(1024, n - s), args.num_items))
        top = np.argsort(-keys, axis=1)[:, :args.max_shown]
        for j, i in enumerate(range(s, s + len(keys))):
            shown = top[j, :shown_n[i]]
            score = item_vecs[shown] @ users[i] + item_bias[shown]
            clicked.append(int(np.argmax(score + rng.gumbel(size=shown.size))))
            best.append(int(np.argmax(score)))
            rows.append(shown)
    shown = tf.RaggedTensor.from_row_lengths(np.concatenate(rows), shown_n)
    return feats, shown, np.array(clicked, np.int64), np.array(best, np.int64)


def make_world(args, rng):
    k = 16
    item_vecs = rng.normal(size=(args.num_items, k)) * 1.2
    item_bias = rng.normal(size=args.num_items) * 0.5
    user_map = rng.normal(size=(args.features, k)) / np.sqrt(args.features)
    popularity = 1.0 / np.arange(1, args.num_items + 1) ** 0.7
    popularity /= popularity.sum()
    return item_vecs, item_bias, user_map, popularity


def dataset(feats, shown, clicked, args, dense, global_max):
    ds = tf.data.Dataset.from_tensor_slices((feats, shown, clicked))
    # Same seed, same order for the ragged and the dense run.
    ds = ds.shuffle(len(feats), seed=args.seed, reshuffle_each_iteration=True)
    ds = ds.ragged_batch(args.batch)
    if dense:
        if args.dense_pad == "global":
            ds = ds.map(lambda f, c, p: (f, c.to_tensor(-1, shape=[None, global_max]), p))
        else:
            ds = ds.map(lambda f, c, p: (f, c.to_tensor(-1), p))
    return ds.map(lambda f, c, p: ((f, c, p),)).prefetch(2)


# ---------------------------------------------------------------------------- model
def build_model(args, ragged):
    feats = keras.Input((args.features,), name="features")
    shown = keras.Input((None,), ragged=ragged, dtype="int64", name="shown")
    clicked = keras.Input((), dtype="int64", name="clicked")
    h = keras.layers.Dense(args.dim, activation="relu", name="tower_hidden")(feats)
    h = keras.layers.Dense(args.dim, name="tower_out")(h)
    head = tfs.layers.CandidateSoftmax(
        args.num_items, positive="index", padding_id=-1, name="head",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.05))
    loss = head([h, shown, clicked])
    model = keras.Model([feats, shown, clicked], loss)
    # A few thousand items: keras Adam's dense step is cheap. For millions of items use
    # tfs.optimizers.SparseAdam(lr, catch_up=True), which steps only the rows a batch touches.
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    return model


def top1(model, feats, shown, clicked, dense, batch=512):
    """Fraction of impressions where the model's most likely shown item is the clicked one."""
    tower = keras.Model(model.inputs[0], model.get_layer("tower_out").output)
    head = model.get_layer("head")
    hits = 0
    for s in range(0, len(feats), batch):
        h = tower(feats[s:s + batch], training=False)
        c = shown[s:s + batch]
        if dense:
            logp = head.candidate_log_prob(h, c.to_tensor(-1))
        else:
            # Padding only to take a row-wise argmax for this report.
            logp = head.candidate_log_prob(h, c).to_tensor(-np.inf)
        pred = tf.argmax(logp, axis=1).numpy()
        hits += int(np.sum(pred == clicked[s:s + batch]))
    return hits / len(feats)


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._t)


def train(args, data, init_weights, dense, global_max):
    keras.utils.set_random_seed(args.seed)
    model = build_model(args, ragged=not dense)
    model.set_weights(init_weights)
    timer = EpochTimer()
    t0 = time.perf_counter()
    hist = model.fit(dataset(*data, args, dense, global_max), epochs=args.epochs, verbose=0,
                     shuffle=False, callbacks=[timer])
    return model, time.perf_counter() - t0, timer.times, hist.history["loss"]


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    world = make_world(args, rng)
    tr_f, tr_c, tr_y, _ = make_data(args, args.train, rng, world)
    te_f, te_c, te_y, te_best = make_data(args, args.test, rng, world)
    global_max = int(max(tr_c.row_lengths().numpy().max(), te_c.row_lengths().numpy().max()))

    keras.utils.set_random_seed(args.seed)
    init_weights = build_model(args, ragged=True).get_weights()
    results = {}
    models = {}
    for name, dense in (("ragged", False), ("dense", True)):
        model, fit_s, epoch_s, losses = train(args, (tr_f, tr_c, tr_y), init_weights, dense,
                                              global_max)
        acc = top1(model, te_f, te_c, te_y, dense)
        models[name] = model
        results[name] = {
            "top1": round(acc, 4),
            "fit_s": round(fit_s, 3),
            # The first epoch includes tracing; later ones are the steady state.
            "epoch_s_after_first": round(float(np.median(epoch_s[1:])), 3)
            if len(epoch_s) > 1 else None,
            "train_loss": [round(float(v), 4) for v in losses],
        }
        print(f"{name:>6}: top-1 {acc:.4f}   fit {fit_s:.2f} s   epochs "
              + " ".join(f"{t:.2f}" for t in epoch_s) + " s   loss "
              + " ".join(f"{v:.3f}" for v in losses), flush=True)

    lengths = tr_c.row_lengths().numpy()
    if args.dense_pad == "global":
        slots = global_max * len(lengths)
    else:
        # Slots of the padded batches of one epoch, in the order the dense run sees them.
        slots = 0
        for (_, c, _), in dataset(tr_f, tr_c, tr_y, args, False, global_max):
            slots += int(c.nrows()) * int(tf.reduce_max(c.row_lengths()))
    weight_diff = max(float(np.max(np.abs(a - b))) for a, b in zip(
        models["ragged"].get_weights(), models["dense"].get_weights()))
    results.update({
        "random_top1": round(float(np.mean(1.0 / te_c.row_lengths().numpy())), 4),
        "hidden_model_top1": round(float(np.mean(te_best == te_y)), 4),
        "mean_shown": round(float(lengths.mean()), 2),
        "max_shown": int(global_max),
        "dense_slots_per_real_candidate": round(slots / float(lengths.sum()), 2),
        "max_abs_weight_diff_ragged_vs_dense": weight_diff,
        "dense_over_ragged_fit_time": round(
            results["dense"]["fit_s"] / results["ragged"]["fit_s"], 2),
        "dense_over_ragged_epoch_time": round(
            results["dense"]["epoch_s_after_first"] / results["ragged"]["epoch_s_after_first"], 2)
        if args.epochs > 1 else None,
        "config": vars(args),
    })
    print(f"random guess {results['random_top1']:.4f}, hidden model's argmax "
          f"{results['hidden_model_top1']:.4f}; dense pads to "
          f"{results['dense_slots_per_real_candidate']}x the real candidates")
    print("RESULT " + json.dumps(results), flush=True)
    return results


if __name__ == "__main__":
    main()

"""Saves one functional model per head with the code of the checkout it runs in (labels-input
pattern), and the log-probabilities of its head on fixed inputs. The files here were made
at commit c94f5d8, before the heads shared one base class (issue #18):
`PYTHONPATH=<checkout> python tests/data/heads_before_contract/make.py <dir>`."""
import os, sys
import numpy as np
import keras
import tensorflow as tf
import tf_sampling as tfs

out = sys.argv[1]
V, D, B = 40, 8, 6
rng = np.random.default_rng(0)
x = rng.normal(size=(B, D)).astype(np.float32)
y = rng.integers(0, V, B).astype(np.int32)
cands = np.stack([rng.permutation(V)[:5] for _ in range(B)]).astype(np.int32)
pos = rng.integers(0, 5, B).astype(np.int32)
init = lambda s: keras.initializers.RandomNormal(stddev=1.0, seed=s)
heads = {
    "sampled_softmax": lambda: tfs.layers.SampledSoftmax(V, 8, seed=1, top_k=5, kernel_initializer=init(1)),
    "nce": lambda: tfs.layers.NCE(V, 8, seed=2, kernel_initializer=init(2)),
    "negative_sampling": lambda: tfs.layers.NegativeSampling(V, 8, seed=3, samples_per="example", kernel_initializer=init(3)),
    "full_softmax": lambda: tfs.layers.FullSoftmax(V, kernel_initializer=init(4)),
    "hierarchical_softmax": lambda: tfs.layers.HierarchicalSoftmax(V, tree="balanced", top_k=3, kernel_initializer=init(5), bias_initializer=init(6)),
    "adaptive_softmax": lambda: tfs.layers.AdaptiveSoftmax(V, [8, 20], div_value=2.0, head_bias=True, kernel_initializer=init(7), bias_initializer=init(8)),
    "candidate_softmax": lambda: tfs.layers.CandidateSoftmax(V, kernel_initializer=init(9), bias_initializer=init(10)),
}
ref = {"x": x, "y": y, "candidates": cands, "positives": pos}
for name, make in heads.items():
    head = make()
    x_in = keras.Input((D,), name="x")
    h = keras.layers.Dense(D, kernel_initializer=init(11), name="tower")(x_in)
    if name == "candidate_softmax":
        c_in = keras.Input((5,), dtype="int32", name="c"); p_in = keras.Input((), dtype="int32", name="p")
        model = keras.Model([x_in, c_in, p_in], head([h, c_in, p_in]))
        data = [x, cands, pos]
    else:
        y_in = keras.Input((), dtype="int32", name="y")
        model = keras.Model([x_in, y_in], head([h, y_in]))
        data = [x, y]
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    model.fit(data, epochs=1, batch_size=B, verbose=0)
    model.save(os.path.join(out, f"{name}.keras"))
    hidden = model.get_layer("tower")(x)
    ref[f"{name}/log_prob"] = np.asarray(head.log_prob(hidden))
    ref[f"{name}/exact_loss"] = np.asarray(head.full_softmax_loss(hidden, y))
np.savez(os.path.join(out, "heads_ref.npz"), **ref)
print("saved", sorted(heads))

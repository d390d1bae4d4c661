"""Export for serving: the SavedModel runs in plain TensorFlow, without this package.

A tiny NPLM-style model is trained with a sampled head (with the custom-op sampler where
it is available, so the training graph has custom ops) and with a hierarchical head, then
exported. A fresh Python process that cannot import `tf_sampling` loads each export and
must return the same top-k ids and log-probabilities as the in-process model, without the
package or its `.so` being loaded.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_sampling as tfs
from _helpers import run_clean, without_package
from tf_sampling import serving

V, CONTEXT, DIM = 60, 3, 16


def _training_sampler():
    """The custom-op sampler where the package has it, so training uses the `.so`."""
    try:
        return tfs.samplers.get("dynamic_alias", V, seed=3)
    except ValueError:
        return tfs.samplers.get("learned_unigram", V, seed=3)


def _make_head(kind):
    if kind == "sampled":
        return tfs.layers.SampledSoftmax(V, num_sampled=8, sampler=_training_sampler(),
                                         name="head")
    counts = np.arange(V, 0, -1) ** 2
    return tfs.layers.HierarchicalSoftmax(V, tree="huffman", counts=counts, name="head")


def _train_tiny_model(kind):
    """Trains `context [B, 3] -> tanh -> head` for a few steps on a fixed next-id rule."""
    keras.utils.set_random_seed(0)
    context = keras.Input((CONTEXT,), dtype="int32", name="context")
    label = keras.Input((), dtype="int32", name="label")
    x = keras.layers.Flatten()(keras.layers.Embedding(V, 8)(context))
    hidden = keras.layers.Dense(DIM, activation="tanh")(x)
    head = _make_head(kind)
    model = keras.Model({"context": context, "label": label}, head([hidden, label]))
    model.compile(optimizer=keras.optimizers.Adam(0.02))
    rng = np.random.default_rng(0)
    ctx = rng.integers(0, V, (2048, CONTEXT)).astype(np.int32)
    lab = ((ctx[:, -1] * 7 + 3) % V).astype(np.int32)
    model.fit({"context": ctx, "label": lab}, batch_size=64, epochs=3, verbose=0)
    return model, head


def _numpy_log_probs_sampled(model, head, ctx):
    """Reference: brute-force softmax in NumPy over the head's weights."""
    features, _ = serving.inference_parts(model)
    h = keras.ops.convert_to_numpy(features(ctx)).astype(np.float64)
    logits = h @ head.kernel.numpy().T.astype(np.float64)
    logits += head.bias.numpy()
    logits -= logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


_LOADER = without_package(r"""
    import json, sys
    import numpy as np
    import tensorflow as tf

    out = {}
    for name, path in json.loads(sys.argv[1]).items():
        data = np.load(path + ".npz")
        loaded = tf.saved_model.load(path)
        result = loaded.signatures["serving_default"](context=tf.constant(data["context"]))
        np.savez(path + ".served.npz", **{k: v.numpy() for k, v in result.items()})
        out[name] = sorted(result)
    with open("/proc/self/maps") as f:
        maps = f.read()
    out["package_imported"] = any(m.startswith("tf_sampling") for m in sys.modules)
    out["so_loaded"] = "_alias_ops" in maps or "tf_sampling" in maps
    print("LOADED " + json.dumps(out))
""")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Trains and exports both heads once; serves them in one fresh process."""
    root = tmp_path_factory.mktemp("serving")
    rng = np.random.default_rng(1)
    ctx = rng.integers(0, V, (20, CONTEXT)).astype(np.int32)
    made = {}
    for kind in ("sampled", "hierarchical"):
        model, head = _train_tiny_model(kind)
        path = str(root / kind / "1")
        fn = serving.export(path, model, top_k=5, log_probs=True)
        local = {k: v.numpy() for k, v in fn(tf.constant(ctx)).items()}
        np.savez(path + ".npz", context=ctx, **local)
        made[kind] = (path, model, head, local)
    proc = run_clean(_LOADER, [json.dumps({k: v[0] for k, v in made.items()})], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("LOADED ")][-1]
    return made, json.loads(line[len("LOADED "):]), ctx


def test_fresh_process_serves_without_the_package(exports):
    _, info, _ = exports
    if tfs.ops.custom_ops_available():
        # The training process did use the custom-op library; the serving one must not.
        with open("/proc/self/maps") as f:
            assert os.path.basename(tfs.ops._loader.LIBRARY.path) in f.read()
    assert info["package_imported"] is False
    assert info["so_loaded"] is False
    for kind in ("sampled", "hierarchical"):
        assert info[kind] == ["log_probs", "top_k_ids", "top_k_log_probs"]


@pytest.mark.parametrize("kind", ["sampled", "hierarchical"])
def test_served_outputs_match_in_process(exports, kind):
    made, _, _ = exports
    path, _, _, local = made[kind]
    served = np.load(path + ".served.npz")
    np.testing.assert_array_equal(served["top_k_ids"], local["top_k_ids"])
    np.testing.assert_allclose(served["top_k_log_probs"], local["top_k_log_probs"],
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(served["log_probs"], local["log_probs"], rtol=0, atol=1e-5)
    assert served["top_k_ids"].dtype == np.int32
    assert served["top_k_log_probs"].shape == (20, 5)


@pytest.mark.parametrize("kind", ["sampled", "hierarchical"])
def test_exported_values_are_the_exact_distribution(exports, kind):
    made, _, ctx = exports
    path, model, head, _ = made[kind]
    served = np.load(path + ".served.npz")
    # A normalized distribution, and top-k are its k largest entries, best first (the
    # tree's search sums log-sigmoids in another order: float32 rounding, ~1e-6).
    np.testing.assert_allclose(np.exp(served["log_probs"]).sum(axis=1), 1.0, atol=1e-5)
    expected_ids = np.argsort(-served["log_probs"], axis=1, kind="stable")[:, :5]
    np.testing.assert_allclose(
        np.take_along_axis(served["log_probs"], expected_ids, 1), served["top_k_log_probs"],
        atol=1e-5)
    np.testing.assert_allclose(
        np.take_along_axis(served["log_probs"], served["top_k_ids"], 1),
        served["top_k_log_probs"], atol=1e-5)
    if kind == "sampled":
        np.testing.assert_allclose(served["log_probs"],
                                   _numpy_log_probs_sampled(model, head, ctx), atol=1e-4)
    # The model learned the rule next = 7 * last + 3 (mod V), so top-1 follows it mostly.
    hits = (served["top_k_ids"][:, 0] == (ctx[:, -1] * 7 + 3) % V).mean()
    assert hits >= 0.5, hits


def test_saved_model_cli_lists_the_signature(exports):
    made, _, _ = exports
    path = made["sampled"][0]
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    cmd = [cli] if os.path.exists(cli) else [
        sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    proc = subprocess.run(cmd + ["show", "--all", "--dir", path], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "signature_def['serving_default']" in out
    for name in ("inputs['context']", "outputs['top_k_ids']", "outputs['top_k_log_probs']",
                 "outputs['log_probs']"):
        assert name in out, name
    assert "shape: (-1, 3)" in out and "DT_INT32" in out


def test_export_with_explicit_features_and_head(exports, tmp_path):
    _, model, head, _ = exports[0]["sampled"]
    features, found = serving.inference_parts(model)
    assert found is head
    assert [t.name for t in features.inputs] == ["context"]
    fn = serving.export(str(tmp_path / "m"), features=features, head=head, top_k=3)
    out = fn(tf.constant([[1, 2, 3]], tf.int32))
    assert sorted(out) == ["top_k_ids", "top_k_log_probs"]
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    served = loaded.signatures["serving_default"](context=tf.constant([[1, 2, 3]], tf.int32))
    np.testing.assert_array_equal(served["top_k_ids"], out["top_k_ids"])


def test_bad_arguments_name_the_problem(exports, tmp_path):
    _, model, _, _ = exports[0]["sampled"]
    with pytest.raises(ValueError, match="exactly one of `model` or `features`"):
        serving.export(str(tmp_path / "a"))
    with pytest.raises(ValueError, match="`top_k`=1000 is larger"):
        serving.export(str(tmp_path / "b"), model, top_k=1000)
    with pytest.raises(ValueError, match="Nothing to export"):
        serving.export(str(tmp_path / "c"), model, top_k=None)
    with pytest.raises(ValueError, match="`top_k` must be a positive integer"):
        serving.export(str(tmp_path / "d"), model, top_k=0)
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no output head"):
        serving.inference_parts(plain)
    features, _ = serving.inference_parts(model)
    with pytest.raises(ValueError, match="pass the `head` layer"):
        serving.export(str(tmp_path / "e"), features=features)


def test_the_clean_process_cannot_import_the_package():
    # What the checks above serve there is served by plain TensorFlow alone.
    proc = run_clean("import tf_sampling")
    assert proc.returncode == 1
    assert "tf_sampling must not be needed to serve" in proc.stderr
    proc = run_clean("import sys; print(sorted(m for m in sys.modules "
                     "if m.split('.')[0] == 'tf_sampling'))")
    assert proc.returncode == 0 and proc.stdout.strip() == "[]"

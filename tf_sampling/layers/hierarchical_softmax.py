"""Hierarchical softmax output head (Morin & Bengio 2005; Mikolov et al. 2013).

Each class is a leaf of a binary tree (`tf_sampling.trees`); every inner node `n` has a
vector `v_n` (and optionally a bias `b_n`). At node `n` the branch with code 0 is taken with
probability `sigmoid(x . v_n + b_n)` and code 1 with `sigmoid(-(x . v_n + b_n))`, so

    log P(c | x) = sum over (n, code) on the path of c of  log_sigmoid((1 - 2 code) s_n(x)).

This is an exact, normalized distribution over all classes, so the training loss is the exact
negative log-likelihood, and it costs O(depth x dim) per example.

Inference:
    - `log_prob(x)`: all `[batch, V]` log-probabilities, computed top-down one tree level at a
      time: one `[V-1, dim] x [dim, batch]` product for the node scores, then each node's
      log-probability is its parent's plus one log-sigmoid, so O(batch x V) beyond the product.
    - `top_k(x, k)`: exact top-k by best-first search (as fastText's `predict`, which runs a
      DFS bounded by a heap). Log-probabilities only decrease going down the tree, so a node's
      log-probability bounds every leaf below it; popping frontier nodes in order of that
      bound, the first k leaves popped are the exact top k. Here the search is batched in a
      `tf.while_loop` (it exports to a SavedModel that plain TensorFlow serves): each step
      pops the `width` best frontier entries of every row, records the leaves among them and
      expands the inner nodes. The frontier has a fixed capacity; the best score ever dropped
      for lack of room is kept, and a row's answer is certified exact only when its k-th value
      is >= the best remaining frontier score AND >= the best dropped score. Rows that are not
      certified after `max_steps` (very flat distributions) are recomputed exactly with
      `log_prob` + `tf.math.top_k`, so the result is always the exact top k.

Storage choice: the tree is saved as non-trainable int32 weights (`tree_children` [V-1, 2],
and the flattened signed paths used by training), not in the JSON config, so a 1M-class
tree costs no JSON. For small trees (`num_classes <= 4096`) `get_config()` also carries the
tree itself, so `from_config` alone rebuilds a working layer (e.g. for `clone_model`);
above that, `get_config()` holds only the shapes, and the layer works once its weights are
loaded (`.keras` files and `load_weights` do this).
"""

import numbers

import keras
import numpy as np
import tensorflow as tf

from tf_sampling import trees
from tf_sampling.layers import base
from tf_sampling.losses import _sampled_logits as _sl
from tf_sampling.losses import _unique_rows

# Above this many classes the tree lives only in the weights, not in get_config().
_CONFIG_TREE_MAX_CLASSES = 4096


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    return int(value)


@keras.saving.register_keras_serializable(package="tf_sampling")
class HierarchicalSoftmax(base.OutputHead):
    """Hierarchical softmax over a binary tree of classes.

    Args:
        num_classes: number of classes `V >= 2`.
        tree: `"huffman"` (needs `counts`; word2vec's tree), `"balanced"`, a
            `tf_sampling.trees.Tree` (e.g. from `trees.tree_from_paths` or
            `trees.two_level_tree`), or a dict from `Tree.to_config()`.
        counts: class counts `[V]` for `tree="huffman"` (non-negative; zeros allowed).
        use_bias: whether inner nodes have a bias.
        top_k: inference output. An integer k: `(values, indices)` of the k best classes
            (the tree search of `top_k`). None: all log-probabilities. "auto" (default):
            None up to 65536 classes, the top 10 above.
        kernel_initializer: for the `[V-1, dim]` node vectors. Default "zeros", as word2vec's
            `syn1`: every node then starts at 1/2 - 1/2, so the initial model is
            `P(c) = 2^-depth(c)`, which for a Huffman tree is about the class frequency.
        bias_initializer, kernel_regularizer, bias_regularizer: as in `keras.layers.Dense`.

    Call (`tfs.layers.OutputHead`):
        `layer([inputs, labels], training=True)` (as in `model.fit`) and
        `layer([inputs, labels])` (`model.evaluate`): add the mean exact NLL with
        `add_loss` and return the per-example NLL `[batch]` (the training loss is exact).
        `layer(inputs)`: `log_prob(inputs)` `[batch, V]`, or `top_k(inputs)` as `top_k`
        says. `layer(inputs, training=True)` raises a `ValueError`: training needs
        labels. `inputs` is float `[batch, dim]`, `labels` int `[batch]` or `[batch, 1]`
        in `[0, V)`.

    Example:
        >>> counts = np.random.default_rng(0).zipf(1.5, 1000)
        >>> x_in = keras.Input((64,)); y_in = keras.Input((), dtype="int32")
        >>> head = HierarchicalSoftmax(1000, tree="huffman", counts=counts)
        >>> model = keras.Model([x_in, y_in], head([x_in, y_in]))
        >>> model.compile(optimizer="adam")        # no loss: the head adds it
        >>> model.fit([x, y], epochs=1)
        >>> values, ids = head.top_k(x[:8], k=5)   # exact top 5, no full softmax
    """

    _min_classes = 2

    def __init__(self, num_classes, tree="huffman", counts=None, use_bias=True, top_k="auto",
                 kernel_initializer="zeros", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, **kwargs):
        super().__init__(num_classes, top_k=top_k, **kwargs)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self._tree = None
        self._tree_spec = None
        self._cache = _ConstantCache()
        self._set_tree(self._resolve_tree(tree, counts))
        self.supports_masking = False
        # The exact top-k falls back on a data-dependent subset of rows (dynamic shapes).
        self.supports_jit = False

    # ---------------------------------------------------------------- tree handling
    def _resolve_tree(self, tree, counts):
        v = self.num_classes
        if isinstance(tree, str):
            if tree == "huffman":
                if counts is None:
                    raise ValueError('`tree="huffman"` needs `counts` (one per class).')
                counts = np.asarray(counts)
                if counts.shape != (v,):
                    raise ValueError(
                        f"`counts` must have shape [num_classes]=[{v}], got {counts.shape}.")
                return trees.huffman_tree(counts)
            if tree == "balanced":
                if counts is not None:
                    raise ValueError('`counts` is only used with `tree="huffman"`.')
                return trees.balanced_tree(v)
            raise ValueError(
                f'`tree` must be "huffman", "balanced", a trees.Tree or a tree config; '
                f"got {tree!r}.")
        if counts is not None:
            raise ValueError('`counts` is only used with `tree="huffman"`.')
        if isinstance(tree, dict):
            if "children" in tree:
                tree = trees.Tree.from_config(tree)
            elif tree.get("stored_in_weights"):
                spec = {key: int(tree[key]) for key in
                        ("num_classes", "path_entries", "max_depth")}
                if spec["num_classes"] != v:
                    raise ValueError(
                        f"The tree spec is for {spec['num_classes']} classes, but "
                        f"`num_classes`={v}.")
                return spec
            else:
                raise ValueError(f"Unrecognized tree config: keys {sorted(tree)}.")
        if not isinstance(tree, trees.Tree):
            raise ValueError(
                f'`tree` must be "huffman", "balanced", a trees.Tree or a tree config; got '
                f"{type(tree).__name__}.")
        if tree.num_classes != v:
            raise ValueError(
                f"The tree covers {tree.num_classes} classes, but `num_classes`={v}.")
        return tree

    def _set_tree(self, tree):
        self._cache.level_constants = None
        if isinstance(tree, dict):  # shapes only; the tree arrives with the weights
            self._tree, self._tree_spec = None, tree
            return
        nodes, codes, splits = tree.flat_paths()
        if splits[-1] >= 2**31:
            raise ValueError(
                f"The tree's paths have {splits[-1]} entries in total; at most 2^31 - 1 are "
                f"supported.")
        self._tree = tree
        self._tree_spec = {"num_classes": tree.num_classes, "path_entries": int(splits[-1]),
                           "max_depth": tree.max_depth}

    @property
    def tree(self):
        """The `trees.Tree` in use (None until loaded, for a layer made from a shape spec)."""
        return self._tree

    def _require_tree(self):
        if self._tree is None:
            raise RuntimeError(
                "This HierarchicalSoftmax was created from a config without its tree (large "
                "trees are stored in the weights); load its weights first.")

    def _signed_paths(self, tree):
        # One int32 per path entry: (node + 1) * (1 - 2 code). The sign is the sign of the
        # logit in the log-sigmoid, and 0 never occurs, so it can serve as padding.
        nodes, codes, splits = tree.flat_paths()
        signed = (nodes.astype(np.int64) + 1) * (1 - 2 * codes.astype(np.int64))
        return signed.astype(np.int32), splits.astype(np.int32)

    # ---------------------------------------------------------------- Keras API
    def build(self, input_shape):
        x_shape = input_shape[0] if _is_pair_shape(input_shape) else input_shape
        x_shape = tuple(x_shape)
        if len(x_shape) != 2 or x_shape[-1] is None:
            raise ValueError(
                f"`inputs` must have shape [batch, dim] with a known dim, got {x_shape}.")
        dim = int(x_shape[-1])
        n_inner = self.num_classes - 1
        spec = self._tree_spec
        self.kernel = self.add_weight(
            name="kernel", shape=(n_inner, dim), initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer, trainable=True)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(n_inner,), initializer=self.bias_initializer,
                regularizer=self.bias_regularizer, trainable=True)
        self.tree_children = self.add_weight(
            name="tree_children", shape=(n_inner, 2), dtype="int32", initializer="zeros",
            trainable=False)
        self.tree_paths = self.add_weight(
            name="tree_paths", shape=(spec["path_entries"],), dtype="int32",
            initializer="zeros", trainable=False)
        self.tree_path_splits = self.add_weight(
            name="tree_path_splits", shape=(self.num_classes + 1,), dtype="int32",
            initializer="zeros", trainable=False)
        if self._tree is not None:
            self._assign_tree_weights(self._tree)

    def _assign_tree_weights(self, tree):
        signed, splits = self._signed_paths(tree)
        self.tree_children.assign(tree.children.astype(np.int32))
        self.tree_paths.assign(signed)
        self.tree_path_splits.assign(splits)

    def load_own_variables(self, store):
        super().load_own_variables(store)
        # The saved tree is authoritative: rebuild (and validate) the host-side copy.
        tree = trees.Tree(np.asarray(self.tree_children.numpy()),
                          num_classes=self.num_classes)
        signed, splits = self._signed_paths(tree)
        if (signed.shape != tuple(self.tree_paths.shape)
                or not np.array_equal(splits, self.tree_path_splits.numpy())
                or not np.array_equal(signed, self.tree_paths.numpy())):
            raise ValueError("The saved tree paths do not match the saved tree structure.")
        self._set_tree(tree)

    def get_config(self):
        config = super().get_config()
        if self._tree is not None and self.num_classes <= _CONFIG_TREE_MAX_CLASSES:
            tree_config = self._tree.to_config()
        else:
            tree_config = dict(self._tree_spec, stored_in_weights=True)
        config.update({
            "tree": tree_config,
            "counts": None,  # the tree built from them is saved instead
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
        })
        return config

    # ---------------------------------------------------------------- checks
    def _check_inputs(self, x):
        x = _sl.check_inputs(x, self.kernel.shape[-1], rank=2)
        return tf.cast(x, tf.float32)

    def _check_labels(self, labels, x):
        labels = tf.convert_to_tensor(labels)
        if not labels.dtype.is_integer:
            raise TypeError(f"`labels` must be integers, got dtype {labels.dtype.name}.")
        if labels.shape.rank == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.shape.rank != 1:
            raise ValueError(
                f"`labels` must have shape [batch] or [batch, 1], got {labels.shape}.")
        if (labels.shape[0] is not None and x.shape[0] is not None
                and labels.shape[0] != x.shape[0]):
            raise ValueError(
                f"`labels` has batch size {labels.shape[0]} but `inputs` has {x.shape[0]}.")
        # The range check runs on int64, before the narrowing to the int32 the path
        # lookups use: checked after it, 2**32 + 3 would pass as class 3.
        wide = tf.cast(labels, tf.int64)
        msg = f"`labels` must be in [0, num_classes={self.num_classes})"
        checks = [
            tf.debugging.assert_equal(
                tf.shape(labels)[0], tf.shape(x)[0],
                message="`labels` and `inputs` must have the same batch size"),
            tf.debugging.assert_non_negative(wide, message=msg),
            tf.debugging.assert_less(wide, tf.constant(self.num_classes, tf.int64),
                                     message=msg),
        ]
        with tf.control_dependencies(checks):
            return tf.cast(wide, tf.int32)

    def _ensure_built(self, x):
        if not self.built:
            self.build(tuple(x.shape))
        self._require_tree()

    # ---------------------------------------------------------------- training / NLL
    def _node_scores(self, x, nodes, unique_rows=False):
        """`x . v_n + b_n` for node ids `nodes` `[batch, m]` -> `[batch, m]`.

        With `unique_rows` each distinct node is read once and the reads are expanded, so
        the gradient has one row per node: the root is on every path, and Keras'
        optimizers mis-apply repeated rows (see `tf_sampling.losses._unique_rows`). The
        top-k search takes no gradient and skips it.
        """
        # Gather from the backing tf.Variable (`.value`): a sparse read. Gathering from a
        # dense read instead makes every sparse optimizer update copy the whole [V-1, dim]
        # matrix (the read still holds its buffer), an O(V) cost per step.
        if unique_rows:
            unique, (index,) = _unique_rows.unique_index(nodes)

            def lookup(params):
                return tf.gather(tf.cast(tf.gather(params, unique), tf.float32), index)
        else:
            def lookup(params):
                return tf.cast(tf.gather(params, nodes), tf.float32)
        w = lookup(self.kernel.value)
        # A batched matmul; tf.einsum picks a path that is ~10x slower on CPU here.
        s = tf.squeeze(tf.matmul(w, x[:, :, None]), -1)
        if self.use_bias:
            s = s + lookup(self.bias.value)
        return s

    def full_softmax_loss(self, inputs, labels):
        """Exact per-example `-log P(label | inputs)`, float32 `[batch]`.

        For a hierarchical softmax the exact NLL is the path loss itself, so this is what
        training minimizes, at O(depth x dim) per example. (Named like the other heads'
        exact evaluation method.)
        """
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x)
        x = self._check_inputs(x)
        labels = self._check_labels(labels, x)
        depth = self._tree_spec["max_depth"]
        starts = tf.gather(self.tree_path_splits, labels)
        lengths = tf.gather(self.tree_path_splits, labels + 1) - starts
        steps = tf.range(depth, dtype=tf.int32)
        mask = steps[None, :] < lengths[:, None]
        # Padding steps repeat the path's first node, already one of its rows: the padding
        # (masked out of the loss) adds no row to the weight gradient.
        idx = tf.where(mask, starts[:, None] + steps[None, :], starts[:, None])
        signed = tf.gather(self.tree_paths, idx)
        nodes = tf.abs(signed) - 1
        sign = tf.cast(tf.sign(signed), tf.float32)
        s = self._node_scores(x, nodes, unique_rows=True)
        log_p = tf.where(mask, tf.math.log_sigmoid(sign * s), 0.0)
        return -tf.reduce_sum(log_p, axis=1)

    # ---------------------------------------------------------------- log_prob
    def _level_constants(self):
        # Index arrays for the level-by-level pass, built once per tree (eagerly, so that
        # every traced function captures the same tensors).
        if self._cache.level_constants is None:
            tree = self._tree
            parent, code = tree.inner_parents()
            levels = tree.levels()
            pos = np.empty(tree.num_inner, np.int64)
            offset = np.zeros(len(levels) + 1, np.int64)
            for i, lev in enumerate(levels):
                pos[lev] = np.arange(lev.shape[0])
                offset[i + 1] = offset[i] + lev.shape[0]
            level_consts = []
            with tf.init_scope():
                for lev in levels[1:]:
                    par = parent[lev]
                    level_consts.append((
                        tf.constant(par.astype(np.int32)),
                        tf.constant(pos[par].astype(np.int32)),
                        tf.constant((1.0 - 2.0 * code[lev]).astype(np.float32)),
                    ))
                leaf_par, leaf_code = tree.leaf_parents()
                depth_of_par = tree.depths[leaf_par]
                leaf_consts = (
                    tf.constant(leaf_par.astype(np.int32)),
                    tf.constant((offset[depth_of_par] + pos[leaf_par]).astype(np.int32)),
                    tf.constant((1.0 - 2.0 * leaf_code).astype(np.float32)),
                )
            self._cache.level_constants = (level_consts, leaf_consts)
        return self._cache.level_constants

    def log_prob(self, inputs):
        """Log-probabilities of all classes, float32 `[batch, num_classes]`.

        Cost: a `[V-1, dim] x [dim, batch]` product plus O(batch x V) gathers, and memory of
        a few `[batch, V]` float32 arrays: use moderate batches for very large V.
        """
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x)
        x = self._check_inputs(x)
        level_consts, (leaf_par, leaf_par_pos, leaf_sign) = self._level_constants()
        # Node-major layout, so that each gather below moves contiguous rows of `batch`.
        s = tf.matmul(tf.cast(self.kernel, tf.float32), x, transpose_b=True)
        if self.use_bias:
            s = s + tf.cast(self.bias, tf.float32)[:, None]
        prev = tf.zeros([1, tf.shape(x)[0]], tf.float32)  # the root: log 1
        per_level = [prev]
        for par, par_pos, sign in level_consts:
            prev = tf.gather(prev, par_pos) + tf.math.log_sigmoid(
                sign[:, None] * tf.gather(s, par))
            per_level.append(prev)
        inner = tf.concat(per_level, axis=0)
        leaves = tf.gather(inner, leaf_par_pos) + tf.math.log_sigmoid(
            leaf_sign[:, None] * tf.gather(s, leaf_par))
        return tf.transpose(leaves)

    # ---------------------------------------------------------------- top-k search
    def top_k(self, inputs, k=None, width=None, capacity=None, max_steps=None):
        """Exact top-k classes by best-first search over the tree (see module docstring).

        Args:
            inputs: float `[batch, dim]`.
            k: number of classes (default: the layer's `top_k` if an integer, else 1).
            width: frontier entries popped per row and step (default `max(8, 2 * k)`).
            capacity: frontier slots per row (default `max(64, 8 * width)`; > 2 * width).
            max_steps: steps before uncertified rows fall back to `log_prob`
                (default `2 * max_depth + k`).

        Returns:
            `(values, indices)`: float32 log-probabilities and int32 class ids, `[batch, k]`,
            best first, equal to `tf.math.top_k(self.log_prob(inputs), k)`.
        """
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x)
        x = self._check_inputs(x)
        k, width, capacity, max_steps = self._search_params(k, width, capacity, max_steps)
        values, indices, exact = self._best_first(x, k, width, capacity, max_steps)

        def fallback():
            rows = tf.where(tf.logical_not(exact))
            exact_v, exact_i = tf.math.top_k(self.log_prob(tf.gather_nd(x, rows)), k)
            return (tf.tensor_scatter_nd_update(values, rows, exact_v),
                    tf.tensor_scatter_nd_update(indices, rows, exact_i))

        return tf.cond(tf.reduce_all(exact), lambda: (values, indices), fallback)

    def search_stats(self, inputs, k=None, width=None, capacity=None, max_steps=None):
        """Diagnostics of `top_k`'s search, before any fallback.

        Returns `(steps, certified)`: the number of search steps run, and the fraction of
        rows whose result was certified exact by the search itself (the others go to the
        exact `log_prob` fallback).
        """
        x = tf.convert_to_tensor(inputs)
        self._ensure_built(x)
        x = self._check_inputs(x)
        params = self._search_params(k, width, capacity, max_steps)
        _, _, exact, steps = self._best_first(x, *params, return_steps=True)
        return int(steps), float(tf.reduce_mean(tf.cast(exact, tf.float32)))

    def _search_params(self, k, width, capacity, max_steps):
        k = self._resolve_k(k)
        width = max(8, 2 * k) if width is None else _positive_int(width, "width")
        capacity = max(64, 8 * width) if capacity is None else _positive_int(
            capacity, "capacity")
        if capacity <= 2 * width:
            raise ValueError(
                f"`capacity`={capacity} must be larger than 2 * `width`={2 * width}.")
        if max_steps is None:
            max_steps = 2 * self._tree.max_depth + k
        return k, width, capacity, _positive_int(max_steps, "max_steps")

    def _best_first(self, x, k, width, capacity, max_steps, return_steps=False):
        # Frontier: `capacity` slots per row of (log-prob bound, node), unsorted; a node
        # value >= 0 is an inner node, < 0 the leaf of class ~value. Each step pops the
        # `width` best slots and writes the 2 * width children over the 2 * width lowest
        # slots (the popped ones among them); where a child is worse than the slot it
        # would replace, the slot is kept instead, and the loser's bound goes to `dropped`.
        batch = tf.shape(x)[0]
        neg_inf = tf.constant(-np.inf, tf.float32)
        children = self.tree_children
        rows = tf.range(batch)[:, None]

        def scatter(tensor, pos, updates):
            idx = tf.stack([tf.broadcast_to(rows, tf.shape(pos)), pos], axis=-1)
            return tf.tensor_scatter_nd_update(tensor, idx, updates)

        front_v = tf.concat([tf.zeros([batch, 1]), tf.fill([batch, capacity - 1], neg_inf)], 1)
        front_n = tf.fill([batch, capacity], tf.constant(self._tree.root, tf.int32))
        best_v = tf.fill([batch, k], neg_inf)
        best_i = tf.fill([batch, k], tf.constant(-1, tf.int32))
        dropped = tf.fill([batch], neg_inf)
        done = tf.zeros([batch], tf.bool)

        def cond(step, front_v, front_n, best_v, best_i, dropped, done):
            return tf.logical_and(step < max_steps, tf.logical_not(tf.reduce_all(done)))

        def body(step, front_v, front_n, best_v, best_i, dropped, done):
            pop_v, pop_pos = tf.math.top_k(front_v, width)
            pop_n = tf.gather(front_n, pop_pos, batch_dims=1)
            front_v = scatter(front_v, pop_pos, tf.fill(tf.shape(pop_v), neg_inf))
            live = pop_v > neg_inf
            is_leaf = pop_n < 0
            # Leaves popped in bound order: merge them into the best k.
            cand_v = tf.concat([best_v, tf.where(live & is_leaf, pop_v, neg_inf)], 1)
            cand_i = tf.concat([best_i, tf.where(is_leaf, -pop_n - 1, -1)], 1)
            best_v, pick = tf.math.top_k(cand_v, k)
            best_i = tf.gather(cand_i, pick, batch_dims=1)
            # Expand the inner nodes popped: child bounds = parent bound + log-sigmoid.
            inner = live & tf.logical_not(is_leaf)
            node = tf.where(inner, pop_n, 0)
            s = self._node_scores(x, node)
            kids = tf.gather(children, node)
            kid_v = tf.concat([tf.where(inner, pop_v + tf.math.log_sigmoid(s), neg_inf),
                               tf.where(inner, pop_v + tf.math.log_sigmoid(-s), neg_inf)], 1)
            kid_n = tf.concat([kids[..., 0], kids[..., 1]], 1)
            neg_low_v, low_pos = tf.math.top_k(-front_v, 2 * width)
            low_v = -neg_low_v
            low_n = tf.gather(front_n, low_pos, batch_dims=1)
            take = kid_v > low_v
            dropped = tf.maximum(dropped, tf.reduce_max(tf.where(take, low_v, kid_v), 1))
            front_v = scatter(front_v, low_pos, tf.where(take, kid_v, low_v))
            front_n = scatter(front_n, low_pos, tf.where(take, kid_n, low_n))
            # Once done a row stays done: later pops are <= its k-th value, so neither its
            # best k nor its certificate (k-th >= dropped) can change.
            kth = best_v[:, k - 1]
            done = done | ((kth > neg_inf) & (kth >= tf.reduce_max(front_v, 1)))
            return step + 1, front_v, front_n, best_v, best_i, dropped, done

        step, _, _, best_v, best_i, dropped, done = tf.while_loop(
            cond, body, (tf.constant(0), front_v, front_n, best_v, best_i, dropped, done))
        exact = done & (best_v[:, k - 1] >= dropped)
        if return_steps:
            return best_v, best_i, exact, step
        return best_v, best_i, exact


class _ConstantCache:
    """Holds derived tensors out of sight of Keras' attribute tracking."""

    level_constants = None


def _is_pair_shape(shape):
    return (isinstance(shape, (list, tuple)) and len(shape) == 2
            and isinstance(shape[0], (list, tuple)))

"""Binary trees over classes, for hierarchical softmax (NumPy only).

A tree over `V` classes is a full binary tree: `V` leaves (the classes) and `V - 1` inner
nodes, each with exactly two children. Hierarchical softmax gives every inner node `n` a
vector `v_n`; at `n` an example goes to branch 0 with probability `sigmoid(x . v_n)` and to
branch 1 with `sigmoid(-x . v_n)`, as in word2vec (whose `code` bit 1 means `sigmoid(-x.v)`).
`P(class)` is the product along the class's path, so the probabilities sum to 1 exactly.

A `Tree` stores one array, `children` `[V - 1, 2]`: entry `children[n, b]` is the child of
inner node `n` on branch `b`; a value `>= 0` is an inner node id, a value `< 0` is the leaf
of class `~value` (i.e. `-value - 1`). The per-class views that training needs -- `paths`
(inner-node ids from the root down), `codes` (the branch taken at each), padded with -1 to
`max_depth`, and `lengths` -- are computed from it on first use.

Builders:
    - `huffman_tree(counts)`: word2vec's / fastText's Huffman tree (frequent classes get
      short paths). O(V log V) (the sort) plus a linear bulk merge; about a second for 1e7.
    - `balanced_tree(num_classes)`: depth `ceil(log2 V)` for every class (heap layout).
    - `tree_from_paths(paths, codes)`: a tree you supply as per-class paths and codes.
    - `two_level_tree(cluster_ids, counts=None)` / `tree_from_groups(groups)`: class-based
      two-level trees (Goodman 2001; Mikolov et al. 2011): a tree over clusters, then a tree
      inside each cluster.

Example:
    >>> from tf_sampling import trees
    >>> t = trees.huffman_tree([5, 9, 12, 13, 16, 45])
    >>> t.lengths.tolist()
    [4, 4, 3, 3, 3, 1]
    >>> t2 = trees.tree_from_paths([[0, 1], [0, 1], [0]], [[0, 0], [0, 1], [1]])
    >>> t2.num_inner
    2
"""

import numbers

import numpy as np

__all__ = [
    "Tree",
    "huffman_tree",
    "balanced_tree",
    "tree_from_paths",
    "two_level_tree",
    "tree_from_groups",
]


def _fmt(values, limit=5):
    values = [int(v) for v in np.asarray(values).ravel()[:limit + 1]]
    text = ", ".join(str(v) for v in values[:limit])
    return text + (", ..." if len(values) > limit else "")


def _check_num_classes(num_classes, name="num_classes"):
    if (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
            or num_classes < 2):
        raise ValueError(f"`{name}` must be an integer >= 2, got {num_classes!r}.")
    return int(num_classes)


class Tree:
    """A full binary tree over `num_classes` leaves (see the module docstring).

    Args:
        children: int array `[num_classes - 1, 2]`; `children[n, b]` is the child of inner
            node `n` on branch `b`: an inner node id `>= 0`, or `~c` (`-c - 1`) for class `c`.
        num_classes: optional; defaults to `len(children) + 1`.
        validate: check that this is one tree in which every class is exactly one leaf.
            The builders of this module pass False for trees they construct themselves.

    Attributes: `num_classes`, `num_inner`, `root`, `children`, and lazily `paths`,
    `codes`, `lengths`, `max_depth`, `depths` (of inner nodes), `parents`.

    Example:
        >>> t = Tree([[1, ~2], [~0, ~1]])   # root 0; node 1 holds classes 0 and 1
        >>> t.paths.tolist(), t.codes.tolist()
        ([[0, 1], [0, 1], [0, -1]], [[0, 0], [0, 1], [1, -1]])
    """

    def __init__(self, children, num_classes=None, validate=True):
        children = np.asarray(children)
        if children.ndim != 2 or children.shape[1] != 2:
            raise ValueError(
                f"`children` must have shape [num_classes - 1, 2], got {children.shape}.")
        if children.size and not np.issubdtype(children.dtype, np.integer):
            raise ValueError(f"`children` must be integers, got dtype {children.dtype}.")
        if num_classes is None:
            num_classes = children.shape[0] + 1
        self.num_classes = _check_num_classes(num_classes)
        if children.shape[0] != self.num_classes - 1:
            raise ValueError(
                f"A binary tree over {self.num_classes} classes has {self.num_classes - 1} "
                f"inner nodes, but `children` has {children.shape[0]} rows.")
        self.num_inner = self.num_classes - 1
        itype = np.int32 if 2 * self.num_classes < 2**31 else np.int64
        self.children = children.astype(itype, copy=False)
        self._cache = {}
        self._derive_parents(validate)

    # ------------------------------------------------------------------ structure
    def _derive_parents(self, validate):
        ch = self.children
        n_in, n_cls = self.num_inner, self.num_classes
        itype = ch.dtype
        flat = ch.reshape(-1)
        if validate:
            is_leaf = flat < 0
            leaf_ids = ~flat[is_leaf]
            inner_ids = flat[~is_leaf]
            bad = leaf_ids[leaf_ids >= n_cls]
            if bad.size:
                raise ValueError(
                    f"`children` names classes outside [0, {n_cls}): {_fmt(bad)}.")
            bad = inner_ids[inner_ids >= n_in]
            if bad.size:
                raise ValueError(
                    f"`children` names inner nodes outside [0, {n_in}): {_fmt(bad)}.")
            leaf_hits = np.bincount(leaf_ids, minlength=n_cls)
            if np.any(leaf_hits > 1):
                raise ValueError(
                    f"The tree repeats classes (each must be exactly one leaf): "
                    f"{_fmt(np.flatnonzero(leaf_hits > 1))}.")
            if np.any(leaf_hits == 0):
                raise ValueError(
                    f"The tree misses classes (each must be exactly one leaf): "
                    f"{_fmt(np.flatnonzero(leaf_hits == 0))}.")
            inner_hits = np.bincount(inner_ids, minlength=n_in)
            if np.any(inner_hits > 1):
                raise ValueError(
                    f"Inner nodes with more than one parent: "
                    f"{_fmt(np.flatnonzero(inner_hits > 1))}.")
            roots = np.flatnonzero(inner_hits == 0)
            if roots.size != 1:
                raise ValueError(
                    f"The tree must have exactly one root (an inner node that is nobody's "
                    f"child); found {roots.size}: {_fmt(roots)}.")
            del is_leaf, leaf_ids, inner_ids
        # Parent pointers over all nodes: inner n is index n, class c is index n_in + c.
        # Entry e of the flattened children is branch e & 1 of node e >> 1. (int32 and one
        # scatter pass: at V = 1e7 this is memory-bound.)
        node_index = np.where(flat < 0, (n_in - 1) - flat, flat)  # n_in + ~c for leaf c
        entry = np.arange(2 * n_in, dtype=itype)
        parent = np.full(n_in + n_cls, -1, itype)
        parent[node_index] = entry >> 1
        code = np.zeros(n_in + n_cls, np.int8)
        code[node_index] = entry & 1
        del node_index, entry
        roots = np.flatnonzero(parent[:n_in] < 0)
        if roots.size != 1:  # only reachable with validate=False and a broken tree
            raise ValueError(f"The tree must have exactly one root; found {roots.size}.")
        self.root = int(roots[0])
        self._parent, self._code = parent, code
        self._depth, self._levels = self._breadth_first(ch)
        self._max_depth = int(self._depth[n_in:].max())

    def _breadth_first(self, ch):
        # Level by level from the root: O(V) work in max_depth vectorized steps. With one
        # parent per node and a parentless root, the walk ends; nodes it never reaches sit
        # on a cycle that is cut off from the root.
        n_in = self.num_inner
        depth = np.full(n_in + self.num_classes, -1, np.int32)
        levels = []
        level = np.array([self.root], ch.dtype)
        d = 0
        while level.size:
            levels.append(level)
            depth[level] = d
            nxt = ch[level].reshape(-1)
            leaf = nxt < 0
            depth[(n_in - 1) - nxt[leaf]] = d + 1
            level = nxt[~leaf]
            d += 1
        if np.any(depth < 0):
            bad = np.flatnonzero(depth[:n_in] < 0)
            raise ValueError(
                f"`children` contains a cycle not connected to the root (nodes {_fmt(bad)}).")
        return depth, levels

    @property
    def parents(self):
        """Parent inner node of each inner node then each class (`-1` for the root)."""
        return self._parent

    @property
    def depths(self):
        """Depth of each inner node (root 0)."""
        return self._depth[:self.num_inner]

    @property
    def lengths(self):
        """Path length (code length) of each class, int32 `[num_classes]`."""
        return self._depth[self.num_inner:].astype(np.int32)

    @property
    def max_depth(self):
        return self._max_depth

    def levels(self):
        """Inner-node ids grouped by depth: a list of int64 arrays, root level first."""
        return self._levels

    def _walk_up(self, write):
        # Classes sorted by path length, longest first: the ones still climbing at step j
        # are a prefix, so the total work is sum(lengths), not V * max_depth.
        lengths = self._depth[self.num_inner:]
        order = np.argsort(-lengths, kind="stable")
        srt_len = lengths[order]
        node = self.num_inner + order
        for j in range(self.max_depth):
            n_live = int(np.searchsorted(-srt_len, -(j + 1), side="right"))
            cls = order[:n_live]
            child = node[:n_live]
            write(cls, srt_len[:n_live] - 1 - j, self._parent[child], self._code[child])
            node[:n_live] = self._parent[child]

    def _paths_and_codes(self):
        if "paths" not in self._cache:
            paths = np.full((self.num_classes, self.max_depth), -1, np.int32)
            codes = np.full((self.num_classes, self.max_depth), -1, np.int8)

            def write(cls, level, nodes, cds):
                paths[cls, level] = nodes
                codes[cls, level] = cds

            self._walk_up(write)
            self._cache["paths"], self._cache["codes"] = paths, codes
        return self._cache["paths"], self._cache["codes"]

    def flat_paths(self):
        """Paths and codes of all classes concatenated (ragged, no padding).

        Returns `(nodes, codes, row_splits)`: class `c` owns entries
        `row_splits[c]:row_splits[c+1]`, root first. Memory is sum(lengths), against
        V * max_depth for `paths`, which matters for unbalanced (Huffman) trees.
        """
        if "flat" not in self._cache:
            lengths = self._depth[self.num_inner:]
            splits = np.zeros(self.num_classes + 1, np.int64)
            np.cumsum(lengths, out=splits[1:])
            nodes = np.empty(int(splits[-1]), np.int32)
            codes = np.empty(int(splits[-1]), np.int8)

            def write(cls, level, nd, cds):
                pos = splits[cls] + level
                nodes[pos] = nd
                codes[pos] = cds

            self._walk_up(write)
            self._cache["flat"] = (nodes, codes, splits)
        return self._cache["flat"]

    @property
    def paths(self):
        """Inner-node ids from the root to each class, int32 `[V, max_depth]`, -1 padded."""
        return self._paths_and_codes()[0]

    @property
    def codes(self):
        """Branch (0/1) taken at each node of `paths`, int8 `[V, max_depth]`, -1 padded."""
        return self._paths_and_codes()[1]

    def path(self, class_id):
        """`(nodes, codes)` of one class, as int arrays from the root down."""
        n = int(self.lengths[class_id])
        return self.paths[class_id, :n].copy(), self.codes[class_id, :n].copy()

    def leaf_parents(self):
        """`(parent, code)` of each class's leaf: int `[V]`, int8 `[V]`."""
        return self._parent[self.num_inner:], self._code[self.num_inner:]

    def inner_parents(self):
        """`(parent, code)` of each inner node (`-1`, 0 for the root)."""
        return self._parent[:self.num_inner], self._code[:self.num_inner]

    # ------------------------------------------------------------------ serialization
    def to_config(self):
        """A JSON-friendly dict; `Tree.from_config` inverts it."""
        return {"num_classes": self.num_classes, "children": self.children.tolist()}

    @classmethod
    def from_config(cls, config):
        return cls(np.asarray(config["children"], np.int64).reshape(-1, 2),
                   num_classes=config["num_classes"])

    def __eq__(self, other):
        return (isinstance(other, Tree) and other.num_classes == self.num_classes
                and np.array_equal(other.children, self.children))

    def __hash__(self):
        return hash((self.num_classes, self.children.tobytes()))

    def __repr__(self):
        return (f"Tree(num_classes={self.num_classes}, max_depth={self.max_depth}, "
                f"mean_depth={self.lengths.mean():.2f})")


# ---------------------------------------------------------------------- builders
def _check_counts(counts, name="counts"):
    try:
        counts = np.asarray(counts, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"`{name}` must be a 1-D array of numbers: {e}") from None
    if counts.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {counts.shape}.")
    if counts.shape[0] < 2:
        raise ValueError(f"`{name}` needs at least 2 classes, got {counts.shape[0]}.")
    bad = np.flatnonzero(~np.isfinite(counts))
    if bad.size:
        raise ValueError(f"`{name}` has NaN or infinite entries at indices {_fmt(bad)}.")
    bad = np.flatnonzero(counts < 0)
    if bad.size:
        raise ValueError(f"`{name}` has negative entries at indices {_fmt(bad)}.")
    return counts


def _stable_argsort(counts):
    n = counts.shape[0]
    idx_bits = max(1, int(n - 1).bit_length())
    top = counts.max()
    if top < 2.0 ** (62 - idx_bits) and np.all(counts == np.floor(counts)):
        # Integer counts (the usual case): sort keys `count << idx_bits | index`, which are
        # unique, so a plain sort is stable and several times faster than argsort.
        keys = counts.astype(np.int64)
        keys <<= idx_bits
        keys |= np.arange(n, dtype=np.int64)
        keys.sort()
        keys &= (1 << idx_bits) - 1
        return keys
    return np.argsort(counts, kind="stable")


def huffman_tree(counts):
    """The Huffman tree of `counts`, built as word2vec builds it.

    For positive counts the tree is exactly the one of word2vec's `CreateBinaryTree`: classes
    sorted by count (ties by class id), two queues (leaves ascending, merged nodes in creation
    order), each step merging the two smallest with ties going to the merged node; the smaller
    becomes branch 0, the larger branch 1; inner node `k` is the `k`-th merge, so the root is
    `V - 2`. Zero counts are allowed: they form a balanced subtree (any arrangement of zero
    weights is optimal; word2vec's tie rule would chain them into a path of depth #zeros).

    Cost: one O(V log V) sort, then O(log(sum / min positive count)) bulk phases of vectorized
    work that is O(V) in total. The sequential algorithm can be run in bulk because merged
    weights never fall below twice the current minimum `a`: every item lighter than `2a`
    (and every merged node of weight exactly `2a`) is paired in sorted order before any new
    node can be taken, and after each phase the minimum has at least doubled.

    Args:
        counts: 1-D array of `V >= 2` non-negative finite numbers.

    Returns:
        A `Tree`.

    Example:
        >>> huffman_tree([5, 9, 12, 13, 16, 45]).lengths.tolist()
        [4, 4, 3, 3, 3, 1]
    """
    counts = _check_counts(counts)
    n_cls = counts.shape[0]
    n_in = n_cls - 1
    order = _stable_argsort(counts)
    leaf_w = counts[order]
    itype = np.int32 if 2 * n_cls < 2**31 else np.int64
    leaf_id = ~order.astype(itype)  # leaves are encoded as ~class
    del order
    int_w = np.empty(n_in, np.float64)
    children = np.empty((n_in, 2), itype)
    lh = ih = made = 0  # heads of the leaf / merged queues, merged nodes made so far

    def take_pairs(w, ids):
        nonlocal made
        p = w.shape[0] // 2
        int_w[made:made + p] = w[0:2 * p:2] + w[1:2 * p:2]
        children[made:made + p, 0] = ids[0:2 * p:2]
        children[made:made + p, 1] = ids[1:2 * p:2]
        made += p
        return 2 * p

    while made < n_in:
        a_leaf = leaf_w[lh] if lh < n_cls else np.inf
        a_int = int_w[ih] if ih < made else np.inf
        a = min(a_leaf, a_int)
        if a == 0.0:
            # Zero weights: pair all current zero items in order -> balanced subtree.
            l_end = lh + int(np.searchsorted(leaf_w[lh:], 0.0, side="right"))
            i_end = ih + int(np.searchsorted(int_w[ih:made], 0.0, side="right"))
        else:
            # Items that precede every merged node this phase can make (weight >= 2a,
            # ties between a merged and a leaf going to the merged one, as word2vec).
            l_end = lh + int(np.searchsorted(leaf_w[lh:], 2 * a, side="left"))
            i_end = ih + int(np.searchsorted(int_w[ih:made], 2 * a, side="right"))
        n_l, n_i = l_end - lh, i_end - ih
        if n_l + n_i >= 2:
            if n_i == 0:
                used = take_pairs(leaf_w[lh:l_end], leaf_id[lh:l_end])
                lh += used
            elif n_l == 0:
                used = take_pairs(int_w[ih:i_end], np.arange(ih, i_end, dtype=itype))
                ih += used
            else:
                # Merge the two sorted runs; timsort merges two runs in linear time, and
                # stability puts merged nodes (first in the concatenation) first on ties.
                w = np.concatenate([int_w[ih:i_end], leaf_w[lh:l_end]])
                ids = np.concatenate([np.arange(ih, i_end, dtype=itype), leaf_id[lh:l_end]])
                perm = np.argsort(w, kind="stable")
                used = take_pairs(w[perm], ids[perm])
                n_int_used = int(np.count_nonzero(perm[:used] < n_i))
                ih += n_int_used
                lh += used - n_int_used
        else:
            # One sequential step (the minimum then at least doubles).
            picked_w, picked_id = [], []
            for _ in range(2):
                if ih < made and (lh >= n_cls or int_w[ih] <= leaf_w[lh]):
                    picked_w.append(int_w[ih])
                    picked_id.append(ih)
                    ih += 1
                else:
                    picked_w.append(leaf_w[lh])
                    picked_id.append(leaf_id[lh])
                    lh += 1
            take_pairs(np.array(picked_w), np.array(picked_id))
    return Tree(children, num_classes=n_cls, validate=False)


def balanced_tree(num_classes):
    """A balanced tree: every class at depth `floor(log2 V)` or `ceil(log2 V)`.

    Heap layout: inner node `i` has children at heap positions `2i+1` (branch 0) and `2i+2`
    (branch 1); positions `V-1 .. 2V-2` are the leaves of classes `0 .. V-1`; the root is 0.

    Example:
        >>> balanced_tree(8).lengths.tolist()
        [3, 3, 3, 3, 3, 3, 3, 3]
    """
    n_cls = _check_num_classes(num_classes)
    n_in = n_cls - 1
    pos = 2 * np.arange(n_in, dtype=np.int64)[:, None] + np.array([1, 2])
    children = np.where(pos < n_in, pos, ~(pos - n_in))
    return Tree(children, num_classes=n_cls, validate=False)


def _as_ragged(values, name):
    if isinstance(values, np.ndarray) and values.dtype != object:
        if values.ndim != 2:
            raise ValueError(f"`{name}` as an array must be 2-D, got shape {values.shape}.")
        return [row for row in values]
    return list(values)


def tree_from_paths(paths, codes, lengths=None, num_classes=None):
    """A tree given by each class's path (inner-node ids, root first) and codes (0/1).

    `paths[c][i]` is the `i`-th inner node on the way to class `c` and `codes[c][i]` the
    branch taken there, so every path starts at the same root. Inner node ids must be
    `0 .. V-2` (a full binary tree over `V` classes has `V - 1` inner nodes).

    Args:
        paths: a list of int sequences (one per class, class id = position), a dict
            `{class_id: sequence}`, or a 2-D int array padded on the right (give `lengths`).
        codes: same layout as `paths`, entries 0 or 1.
        lengths: with 2-D arrays, the path length of each class.
        num_classes: optional; with a dict, classes `0 .. num_classes-1` must all be keys.

    Raises ValueError, naming the classes or nodes at fault, for: a missing or repeated
    class; paths with different roots; a node reached by two branches or with two parents;
    a leaf that is also an inner node or the prefix of another path; an inner node with one
    child (its other branch would hold probability that no class gets).

    Example:
        >>> t = tree_from_paths({0: [0, 1], 1: [0, 1], 2: [0]}, {0: [0, 0], 1: [0, 1], 2: [1]})
        >>> t.children.tolist()
        [[1, -3], [-1, -2]]
    """
    if isinstance(paths, dict) or isinstance(codes, dict):
        if not (isinstance(paths, dict) and isinstance(codes, dict)):
            raise ValueError("`paths` and `codes` must both be dicts or both be sequences.")
        keys = sorted(int(k) for k in paths)
        if sorted(int(k) for k in codes) != keys:
            raise ValueError("`paths` and `codes` must have the same class ids as keys.")
        if num_classes is None:
            num_classes = (max(keys) + 1) if keys else 0
        n_cls = _check_num_classes(num_classes)
        bad = [k for k in keys if k < 0 or k >= n_cls]
        if bad:
            raise ValueError(f"`paths` has class ids outside [0, {n_cls}): {_fmt(bad)}.")
        missing = np.setdiff1d(np.arange(n_cls), keys)
        if missing.size:
            raise ValueError(f"The tree misses classes (no path given): {_fmt(missing)}.")
        paths = [paths[k] for k in range(n_cls)]
        codes = [codes[k] for k in range(n_cls)]
    paths = _as_ragged(paths, "paths")
    codes = _as_ragged(codes, "codes")
    if len(paths) != len(codes):
        raise ValueError(
            f"`paths` has {len(paths)} classes but `codes` has {len(codes)}.")
    if num_classes is None:
        num_classes = len(paths)
    n_cls = _check_num_classes(num_classes)
    if len(paths) != n_cls:
        raise ValueError(
            f"The tree misses classes: `paths` has {len(paths)} entries, num_classes="
            f"{n_cls}.")
    if lengths is None:
        lengths = np.array([len(p) for p in paths], np.int64)
        clens = np.array([len(c) for c in codes], np.int64)
        if not np.array_equal(lengths, clens):
            bad = np.flatnonzero(lengths != clens)
            raise ValueError(f"`paths` and `codes` differ in length for classes {_fmt(bad)}.")
        flat_nodes = (np.concatenate([np.asarray(p).reshape(-1) for p in paths])
                      if lengths.sum() else np.zeros(0))
        flat_codes = (np.concatenate([np.asarray(c).reshape(-1) for c in codes])
                      if lengths.sum() else np.zeros(0))
    else:
        lengths = np.asarray(lengths).astype(np.int64)
        p2, c2 = np.asarray(paths), np.asarray(codes)
        if lengths.shape != (n_cls,) or np.any(lengths < 0) or np.any(lengths > p2.shape[1]):
            raise ValueError("`lengths` must hold one length per class, within the row width.")
        mask = np.arange(p2.shape[1])[None, :] < lengths[:, None]
        flat_nodes, flat_codes = p2[mask], c2[mask]
    if np.any(lengths == 0):
        raise ValueError(
            f"Every class needs a non-empty path; empty for classes "
            f"{_fmt(np.flatnonzero(lengths == 0))}.")
    for arr, name in ((flat_nodes, "paths"), (flat_codes, "codes")):
        if arr.size and not (np.issubdtype(arr.dtype, np.integer)
                             or np.all(np.mod(arr, 1) == 0)):
            raise ValueError(f"`{name}` must hold integers.")
    flat_nodes = flat_nodes.astype(np.int64)
    flat_codes = flat_codes.astype(np.int64)
    if np.any((flat_codes != 0) & (flat_codes != 1)):
        raise ValueError("`codes` entries must be 0 or 1.")
    n_in = n_cls - 1
    if np.any(flat_nodes < 0):
        raise ValueError(f"`paths` holds negative node ids: {_fmt(flat_nodes[flat_nodes < 0])}.")
    cls_of = np.repeat(np.arange(n_cls, dtype=np.int64), lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    roots = flat_nodes[starts]
    if np.any(roots != roots[0]):
        other = int(np.flatnonzero(roots != roots[0])[0])
        raise ValueError(
            f"All paths must start at the same root: class 0 starts at node {roots[0]}, "
            f"class {other} at node {roots[other]}.")
    # A node twice on one path would be a cycle.
    srt = np.lexsort((flat_nodes, cls_of))
    twice = np.flatnonzero((cls_of[srt][1:] == cls_of[srt][:-1])
                           & (flat_nodes[srt][1:] == flat_nodes[srt][:-1]))
    if twice.size:
        i = srt[twice[0]]
        raise ValueError(f"The path of class {cls_of[i]} visits node {flat_nodes[i]} twice.")
    # Edges (parent, branch) -> child; a child is the next node or, at a path's end, ~class.
    is_last = np.zeros(flat_nodes.size, bool)
    is_last[np.cumsum(lengths) - 1] = True
    nxt = np.empty(flat_nodes.size, np.int64)
    nxt[:-1] = flat_nodes[1:]
    child = np.where(is_last, ~cls_of, nxt)
    edge = flat_nodes * 2 + flat_codes
    srt = np.lexsort((child, edge))
    e_s, c_s, cls_s = edge[srt], child[srt], cls_of[srt]
    same_edge = e_s[1:] == e_s[:-1]
    clash = np.flatnonzero(same_edge & (c_s[1:] != c_s[:-1]))
    if clash.size:
        i = int(clash[0])
        node, branch = int(e_s[i] // 2), int(e_s[i] % 2)
        a, b = int(c_s[i]), int(c_s[i + 1])
        ca, cb = int(cls_s[i]), int(cls_s[i + 1])
        if a < 0 and b < 0:
            lo, hi = sorted((~a, ~b))
            raise ValueError(
                f"The tree repeats a leaf: classes {lo} and {hi} have the same path and "
                f"codes (node {node}, branch {branch}).")
        if a < 0 or b < 0:
            leaf_cls, other_cls = (~a, cb) if a < 0 else (~b, ca)
            raise ValueError(
                f"Prefix conflict: the path of class {leaf_cls} ends at node {node} branch "
                f"{branch}, where the path of class {other_cls} continues; a leaf cannot "
                f"also be an inner node.")
        raise ValueError(
            f"Inconsistent paths: node {node} branch {branch} leads to node {a} in the path "
            f"of class {ca} but to node {b} in the path of class {cb} (a node can have only "
            f"two children).")
    keep = np.concatenate([[True], ~same_edge])
    e_u, c_u = e_s[keep], c_s[keep]
    node_u, branch_u = e_u // 2, e_u % 2
    ids, n_branches = np.unique(node_u, return_counts=True)
    one_child = ids[n_branches == 1]
    if one_child.size:
        n = int(one_child[0])
        raise ValueError(
            f"Inner node {n} has only one child (branch {int(branch_u[node_u == n][0])}); "
            f"every inner node needs two, or the probabilities would not sum to 1 (drop "
            f"such nodes from the paths). Nodes with one child: {_fmt(one_child)}.")
    bad = ids[ids >= n_in]
    if bad.size:
        raise ValueError(
            f"`paths` holds node ids outside [0, {n_in}) (a tree over {n_cls} classes has "
            f"{n_in} inner nodes, ids 0 .. {n_in - 1}): {_fmt(bad)}.")
    if ids.size != n_in:
        raise ValueError(
            f"Inner node ids must be 0 .. {n_in - 1}, all used; unused: "
            f"{_fmt(np.setdiff1d(np.arange(n_in), ids))}.")
    inner_child = c_u[c_u >= 0]
    hits = np.bincount(inner_child, minlength=n_in)
    if np.any(hits > 1):
        raise ValueError(
            f"Inconsistent paths: inner nodes reached from more than one parent: "
            f"{_fmt(np.flatnonzero(hits > 1))}.")
    if hits[roots[0]]:
        raise ValueError(f"The root {roots[0]} appears below another node (a cycle).")
    children = np.empty((n_in, 2), np.int64)
    children[node_u, branch_u] = c_u
    return Tree(children, num_classes=n_cls, validate=True)


def _subtree(n, counts):
    if n == 1:
        return None
    return huffman_tree(counts) if counts is not None else balanced_tree(n)


def two_level_tree(cluster_ids, counts=None):
    """Class-based two-level tree: a tree over clusters, and one inside each cluster.

    `P(c) = P(cluster(c)) * P(c | cluster(c))`, each factor itself a binary tree. With
    `counts`, both levels are Huffman trees (the cluster level on summed counts), else
    balanced. Members of a cluster are ordered by class id.

    Args:
        cluster_ids: int array `[V]`, the cluster of each class (any integer labels).
        counts: optional class counts `[V]` (non-negative).

    Example:
        >>> t = two_level_tree([0, 0, 1, 1, 1])
        >>> t.lengths.tolist()
        [2, 2, 2, 3, 3]
    """
    cluster_ids = np.asarray(cluster_ids)
    if cluster_ids.ndim != 1 or not np.issubdtype(cluster_ids.dtype, np.integer):
        raise ValueError(
            f"`cluster_ids` must be a 1-D integer array, got shape {cluster_ids.shape} and "
            f"dtype {cluster_ids.dtype}.")
    n_cls = _check_num_classes(cluster_ids.shape[0], "len(cluster_ids)")
    if counts is not None:
        counts = _check_counts(counts)
        if counts.shape[0] != n_cls:
            raise ValueError(
                f"`counts` has {counts.shape[0]} entries but `cluster_ids` has {n_cls}.")
    _, group = np.unique(cluster_ids, return_inverse=True)
    group = group.ravel()
    order = np.argsort(group, kind="stable")
    sizes = np.bincount(group)
    n_groups = sizes.shape[0]
    members = np.split(order, np.cumsum(sizes)[:-1])
    if n_groups == 1:
        sub = _subtree(n_cls, counts)
        return Tree(np.where(sub.children < 0, ~order[~sub.children], sub.children),
                    num_classes=n_cls, validate=False)
    group_counts = np.bincount(group, weights=counts) if counts is not None else None
    top = _subtree(n_groups, group_counts)
    children = np.empty((n_cls - 1, 2), np.int64)
    children[:n_groups - 1] = top.children
    next_id = n_groups - 1
    entry_of_group = np.empty(n_groups, np.int64)  # what replaces leaf ~g of the top tree
    for g, mem in enumerate(members):
        if mem.shape[0] == 1:
            entry_of_group[g] = ~mem[0]
            continue
        sub = _subtree(mem.shape[0], counts[mem] if counts is not None else None)
        k = mem.shape[0] - 1
        sc = sub.children.astype(np.int64)
        children[next_id:next_id + k] = np.where(sc < 0, ~mem[~sc], sc + next_id)
        entry_of_group[g] = sub.root + next_id
        next_id += k
    top_part = children[:n_groups - 1]
    children[:n_groups - 1] = np.where(top_part < 0, entry_of_group[~top_part], top_part)
    return Tree(children, num_classes=n_cls, validate=False)


def tree_from_groups(groups, num_classes=None, counts=None):
    """Two-level tree from a list of class groups, e.g. `[[0, 3], [1, 2, 4]]`.

    Every class `0 .. num_classes-1` must be in exactly one group; a missing or repeated
    class raises ValueError naming it. See `two_level_tree`.
    """
    groups = [np.asarray(g, dtype=np.int64).reshape(-1) for g in groups]
    if any(g.size == 0 for g in groups):
        raise ValueError("`groups` contains an empty group.")
    flat = np.concatenate(groups) if groups else np.zeros(0, np.int64)
    if num_classes is None:
        num_classes = int(flat.max()) + 1 if flat.size else 0
    n_cls = _check_num_classes(num_classes)
    bad = flat[(flat < 0) | (flat >= n_cls)]
    if bad.size:
        raise ValueError(f"`groups` has class ids outside [0, {n_cls}): {_fmt(bad)}.")
    hits = np.bincount(flat, minlength=n_cls)
    if np.any(hits > 1):
        raise ValueError(
            f"`groups` repeats classes: {_fmt(np.flatnonzero(hits > 1))}.")
    if np.any(hits == 0):
        raise ValueError(
            f"`groups` misses classes: {_fmt(np.flatnonzero(hits == 0))}.")
    cluster_ids = np.empty(n_cls, np.int64)
    cluster_ids[flat] = np.repeat(np.arange(len(groups)), [g.size for g in groups])
    return two_level_tree(cluster_ids, counts=counts)

"""Tests for tf_sampling.trees: Huffman, balanced, user-supplied and two-level trees."""

import heapq
import json

import numpy as np
import pytest

from tf_sampling import trees


def _word2vec_children(counts):
    """A line-by-line port of word2vec.c's CreateBinaryTree, as the reference.

    word2vec keeps the vocabulary sorted by count (descending) and walks it from the end;
    here the leaves are sorted ascending (ties by class id) and walked from the start,
    which is the same two-queue algorithm: at each step take the smaller head, a merged
    node on ties (`if (count[pos1] < count[pos2])` takes the leaf only when strictly less).
    """
    v = len(counts)
    order = np.argsort(counts, kind="stable")
    count = list(np.asarray(counts, float)[order]) + [1e300] * v
    pos1, pos2 = 0, v
    children = []
    for a in range(v - 1):
        picked, weight = [], 0.0
        for _ in range(2):
            if pos1 < v and count[pos1] < count[pos2]:
                picked.append(~int(order[pos1]))
                weight += count[pos1]
                pos1 += 1
            else:
                picked.append(pos2 - v)
                weight += count[pos2]
                pos2 += 1
        count[v + a] = weight
        children.append(picked)
    return np.array(children)


def _optimal_cost(counts):
    """Minimum expected code length * total, by the textbook heap Huffman."""
    heap = [float(c) for c in counts]
    heapq.heapify(heap)
    cost = 0.0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        cost += a + b
        heapq.heappush(heap, a + b)
    return cost


def _kraft(tree):
    return np.sum(2.0 ** -tree.lengths.astype(float))


def test_huffman_textbook_example():
    # CLRS 16.3: frequencies a..f; the optimal code lengths are 4,4,3,3,3,1 (cost 224).
    counts = [5, 9, 12, 13, 16, 45]
    t = trees.huffman_tree(counts)
    assert t.lengths.tolist() == [4, 4, 3, 3, 3, 1]
    assert np.dot(t.lengths, counts) == 224
    assert t.root == len(counts) - 2  # word2vec numbering: the last merge is the root
    assert t.num_inner == 5 and t.max_depth == 4


@pytest.mark.parametrize("seed", range(6))
def test_huffman_matches_word2vec_and_is_optimal(seed):
    rng = np.random.default_rng(seed)
    v = int(rng.integers(2, 400))
    kind = seed % 3
    if kind == 0:
        counts = rng.zipf(1.3, v).astype(float)          # heavy ties at small counts
    elif kind == 1:
        counts = rng.integers(1, 5, v).astype(float)     # almost all ties
    else:
        counts = rng.random(v) * 100                      # distinct real values
    t = trees.huffman_tree(counts)
    np.testing.assert_array_equal(t.children, _word2vec_children(counts))
    np.testing.assert_allclose(np.dot(t.lengths, counts), _optimal_cost(counts), rtol=1e-12)
    assert _kraft(t) == pytest.approx(1.0)


def test_huffman_depth_properties():
    rng = np.random.default_rng(1)
    counts = rng.zipf(1.2, 2000).astype(float)
    t = trees.huffman_tree(counts)
    # A strictly more frequent class never has a longer code: going down the distinct
    # counts, the longest code so far never exceeds the shortest of the next count.
    values = np.unique(counts)[::-1]
    longest = [t.lengths[counts == v].max() for v in values]
    shortest = [t.lengths[counts == v].min() for v in values]
    assert all(np.maximum.accumulate(longest)[:-1] <= shortest[1:])
    assert t.max_depth <= len(counts) - 1
    # Equal counts, V a power of two: the Huffman tree is perfectly balanced.
    assert set(trees.huffman_tree(np.ones(64)).lengths.tolist()) == {6}
    # Geometric counts give the deepest tree (a chain).
    chain = trees.huffman_tree(2.0 ** np.arange(10))
    assert chain.max_depth == 9


def test_huffman_zero_counts():
    counts = np.zeros(1000)
    t = trees.huffman_tree(counts)
    # Zero counts are allowed and form a balanced subtree (not word2vec's chain).
    assert t.max_depth == 10 and _kraft(t) == pytest.approx(1.0)
    counts = np.concatenate([np.zeros(300), np.arange(1, 101)])
    t = trees.huffman_tree(counts)
    np.testing.assert_allclose(np.dot(t.lengths, counts), _optimal_cost(counts))
    assert t.max_depth < 40


@pytest.mark.parametrize("bad, match", [
    ([1.0, -1.0, 3.0], "negative"),
    ([1.0, np.nan, 3.0], "NaN"),
    ([1.0, np.inf], "infinite"),
    ([[1.0, 2.0]], "1-D"),
    ([5.0], "at least 2"),
    (["a", "b"], "numbers"),
])
def test_huffman_bad_counts(bad, match):
    with pytest.raises(ValueError, match=match) as e:
        trees.huffman_tree(bad)
    assert "`counts`" in str(e.value)


@pytest.mark.parametrize("v", [2, 3, 5, 8, 100, 1023])
def test_balanced_tree(v):
    t = trees.balanced_tree(v)
    lo, hi = int(np.floor(np.log2(v))), int(np.ceil(np.log2(v)))
    assert set(t.lengths.tolist()) <= {lo, hi}
    assert _kraft(t) == pytest.approx(1.0)
    assert t.root == 0


def test_balanced_tree_bad_num_classes():
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="num_classes"):
            trees.balanced_tree(bad)


def test_paths_and_flat_paths_agree():
    t = trees.huffman_tree([5, 9, 12, 13, 16, 45])
    nodes, codes, splits = t.flat_paths()
    for c in range(6):
        p, q = t.path(c)
        np.testing.assert_array_equal(nodes[splits[c]:splits[c + 1]], p)
        np.testing.assert_array_equal(codes[splits[c]:splits[c + 1]], q)
        assert p[0] == t.root
        # Padding is -1 past each class's length.
        assert np.all(t.paths[c, len(p):] == -1)
    # Following the codes from the root down reaches the class.
    for c in range(6):
        node = t.root
        for n, code in zip(*t.path(c)):
            assert n == node
            node = t.children[n, code]
        assert node == ~c


@pytest.mark.parametrize("make", [
    lambda: trees.huffman_tree(np.random.default_rng(0).zipf(1.5, 300)),
    lambda: trees.balanced_tree(77),
    lambda: trees.two_level_tree(np.random.default_rng(0).integers(0, 9, 120)),
])
def test_tree_from_paths_round_trip(make):
    t = make()
    lists = [t.path(c) for c in range(t.num_classes)]
    t2 = trees.tree_from_paths([p for p, _ in lists], [q for _, q in lists])
    assert t2 == t
    # Padded-array form with lengths, and dict form.
    t3 = trees.tree_from_paths(t.paths, t.codes, lengths=t.lengths)
    assert t3 == t
    t4 = trees.tree_from_paths({c: lists[c][0] for c in range(t.num_classes)},
                               {c: lists[c][1] for c in range(t.num_classes)})
    assert t4 == t


def test_config_round_trip_is_json():
    t = trees.huffman_tree([3, 1, 4, 1, 5, 9, 2, 6])
    config = json.loads(json.dumps(t.to_config()))
    assert trees.Tree.from_config(config) == t


# A valid tree over 4 classes: root 0 -> (node 1, node 2); 1 -> (c0, c1); 2 -> (c2, c3).
GOOD_PATHS = [[0, 1], [0, 1], [0, 2], [0, 2]]
GOOD_CODES = [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_tree_from_paths_valid():
    t = trees.tree_from_paths(GOOD_PATHS, GOOD_CODES)
    assert t.children.tolist() == [[1, 2], [~0, ~1], [~2, ~3]]


@pytest.mark.parametrize("paths, codes, kwargs, match", [
    # missing a class: a dict without class 2
    ({0: [0, 1], 1: [0, 1], 3: [0, 2]}, {0: [0, 0], 1: [0, 1], 3: [1, 1]}, {},
     "misses classes.*2"),
    # fewer paths than num_classes
    (GOOD_PATHS[:3], GOOD_CODES[:3], {"num_classes": 4}, "misses classes"),
    # repeated leaf: classes 1 and 0 share path and codes
    ([[0, 1], [0, 1], [0, 2], [0, 2]], [[0, 0], [0, 0], [1, 0], [1, 1]], {},
     "repeats a leaf: classes 0 and 1"),
    # prefix conflict: class 2 ends at node 0 branch 1, where class 3 goes on
    ([[0, 1], [0, 1], [0], [0, 2]], [[0, 0], [0, 1], [1], [1, 1]], {}, "Prefix conflict"),
    # node 0 branch 1 leads to node 2 for class 2 and to node 1 for class 3
    ([[0, 1], [0, 1], [0, 2], [0, 1]], [[0, 0], [0, 1], [1, 0], [1, 1]], {},
     "Inconsistent paths: node 0 branch 1"),
    # different roots
    ([[0, 1], [0, 1], [2, 2], [0, 2]], [[0, 0], [0, 1], [1, 0], [1, 1]], {},
     "same root"),
    # class 3 ends where class 2 goes on
    ([[0, 1], [0, 1], [0, 2], [0]], [[0, 0], [0, 1], [1, 0], [1]], {}, "Prefix conflict"),
    # node id out of range
    ([[0, 1], [0, 1], [0, 5], [0, 5]], [[0, 0], [0, 1], [1, 0], [1, 1]], {}, "outside"),
    # a code that is not 0/1
    (GOOD_PATHS, [[0, 0], [0, 1], [1, 0], [1, 2]], {}, "0 or 1"),
    # lengths of paths and codes differ
    (GOOD_PATHS, [[0, 0], [0, 1], [1, 0], [1]], {}, "differ in length"),
    # empty path
    ([[0, 1], [0, 1], [], [0, 2]], [[0, 0], [0, 1], [], [1, 1]], {}, "non-empty"),
    # a node twice on one path
    ([[0, 1], [0, 1, 1], [0, 2], [0, 2]], [[0, 0], [0, 1, 0], [1, 0], [1, 1]], {}, "twice"),
])
def test_tree_from_paths_errors(paths, codes, kwargs, match):
    with pytest.raises(ValueError, match=match):
        trees.tree_from_paths(paths, codes, **kwargs)


def test_tree_from_paths_unary_node():
    # 3 classes; node 1 has the single child node 2, so probability would leak (and the
    # tree needs ids beyond V - 2: the one-child error is the one that explains it).
    paths = [[0, 1, 2], [0, 1, 2], [0]]
    codes = [[0, 0, 0], [0, 0, 1], [1]]
    with pytest.raises(ValueError, match="Inner node 1 has only one child"):
        trees.tree_from_paths(paths, codes)


@pytest.mark.parametrize("children, match", [
    ([[1, ~2], [~0, ~0]], "repeats classes.*0"),
    ([[1, ~2], [~0, ~3]], "outside"),
    ([[1, ~2], [~0, 1]], "misses classes.*1"),
    ([[~0, ~1], [~2, ~3], [~4, 0]], "classes outside"),
    ([[~0, ~1], [~2, ~3], [~1, 0]], "repeats classes"),
    ([[1, ~0], [2, ~1], [1, ~2]], "misses classes.*3"),
    ([[1, 2, ], [~2, ~0], [~3, 0]], "misses classes.*1|more than one parent"),
    ([[1.0, 2.0]], "integers"),
    ([[1, ~1, 3]], "shape"),
])
def test_tree_children_errors(children, match):
    with pytest.raises(ValueError, match=match):
        trees.Tree(children)


def test_tree_children_cycle():
    # Node 0 is the root of {c0, c1}; nodes 1 and 2 point at each other (a detached cycle).
    children = [[~0, ~1], [2, ~2], [1, ~3]]
    with pytest.raises(ValueError, match="cycle not connected to the root"):
        trees.Tree(children)


def test_two_level_tree():
    rng = np.random.default_rng(3)
    v = 200
    cluster = rng.integers(0, 13, v)
    counts = rng.zipf(1.5, v).astype(float)
    for c in (None, counts):
        t = trees.two_level_tree(cluster, counts=c)
        assert _kraft(t) == pytest.approx(1.0)
        # Classes of one cluster share their cluster-level prefix, others don't.
        prefix = {}
        for cls in range(v):
            nodes, codes = t.path(cls)
            top = tuple(zip(nodes, codes))
            prefix.setdefault(cluster[cls], set()).add(top[:1])
        # Members of a cluster sit in one subtree: their lowest common ancestor is
        # inside the cluster's subtree, i.e. the paths agree up to the cluster's root.
        for g in np.unique(cluster):
            members = np.flatnonzero(cluster == g)
            paths = [tuple(t.path(m)[0]) for m in members]
            common = min(len(p) for p in paths)
            lca = 0
            while lca < common and len({p[lca] for p in paths}) == 1:
                lca += 1
            others = np.flatnonzero(cluster != g)
            sub_root = paths[0][lca - 1] if len(members) > 1 else None
            if sub_root is not None:
                assert all(sub_root not in t.path(o)[0] for o in others)
    with_counts = trees.two_level_tree(cluster, counts=counts)
    balanced = trees.two_level_tree(cluster)
    assert np.dot(with_counts.lengths, counts) < np.dot(balanced.lengths, counts)


def test_tree_from_groups():
    t = trees.tree_from_groups([[0, 3], [1, 2, 4], [5]])
    assert t.num_classes == 6 and _kraft(t) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="repeats classes.*3"):
        trees.tree_from_groups([[0, 3], [1, 2, 3]], num_classes=4)
    with pytest.raises(ValueError, match="misses classes.*2"):
        trees.tree_from_groups([[0, 3], [1]], num_classes=4)
    with pytest.raises(ValueError, match="outside"):
        trees.tree_from_groups([[0, 7], [1]], num_classes=4)
    with pytest.raises(ValueError, match="cluster_ids"):
        trees.two_level_tree(np.array([0.5, 1.5]))

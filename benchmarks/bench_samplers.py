"""Candidate samplers: draw throughput and latency, alias-table build time, dynamic sampler.

One run prints one table, with four sections:

1. draws: ms per call and Msamples/s, for V in {1e5, 1e6, 1e7} and num_sampled in
   {8192, 1e6}, of `tfs.ops.alias_sample` (the compiled op), its pure-TF fallback,
   `tf.random.fixed_unigram_candidate_sampler`, `tf.random.learned_unigram_candidate_sampler`
   (all non-unique, in a `tf.function`) and NumPy's `Generator.choice(p=...)`; plus unique
   draws of 8192 (the usual training case) for the op and TF's two samplers. TF's
   samplers also return expected counts (computed in their kernel); the op rows are
   the ids alone (with `num_tries` when unique), so those rows slightly favour the op.
2. in-graph: the same 8192-draw calls (plain and unique) of the op and TF's two samplers,
   `--calls-in-graph` of them in a `tf.while_loop` inside one `tf.function`, as a sampler
   runs inside a training step: the per-call time is the sampler's own cost, without the
   Python dispatch of a standalone call (the floor below). "empty loop iteration" is the
   loop's own cost per iteration, included in every row of the section. Two more rows
   time a whole training-like step in such a loop (`--steps-in-graph` steps per call):
   `tfs.samplers.DynamicAliasSampler` counting `--step-labels` labels (`update`) then
   drawing 8192 unique candidates with expected counts, against
   `tf.random.learned_unigram_candidate_sampler` (which counts its `true_classes` and
   draws in one op) doing the same per step.
3. build: `tfs.ops.alias_build` (op and fallback) against V.
4. dynamic: one training-like step, update with 1024 labels then sample 8192 unique
   candidates (with expected counts), `tfs.samplers.DynamicAliasSampler` against
   `tf.random.learned_unigram_candidate_sampler` (which updates from `true_classes`).

The "vs op" column is the method's time over the op's time in the same run and row group
(> 1: the op is faster). Weights/labels are Zipfian (1/rank). Goals (issue 3), checked at
the end for V = 1e6: op >= 5x TF's fixed and learned samplers per call; >= 100 Msamples/s
on one thread at 1e6 draws per call; build <= 15 ms on one thread; and (issue 16) the
in-graph dynamic step >= 5x TF's learned sampler's step. Every per-call time
includes the cost of calling a `tf.function` (the "floor", timed at the end with an empty
one), which bounds a per-call ratio at (other's time) / floor however fast the op; the goal
lines print that bound and the ratio net of the floor next to the ratio itself.

Timing: median wall time of calls after 2 warm-up calls, repeated for at least
`--min-time` seconds (and 3 calls). `--threads 1` (default) pins TF to one intra-op and
one inter-op thread, so the figures are per core; `--threads 0` lets TF use all cores.

Memory: with TF's default CPU allocator a large output (8 MB for 1e6 int64 ids) lands in a
fresh glibc per-thread arena heap, which glibc unmaps when the output is freed, so every call
page-faults its output anew. The draws rows note the minor page faults per call
(`resource.getrusage`). Every method pays them for its own output. `--cpu-allocator bfc`
sets `TF_CPU_ALLOCATOR_USE_BFC=true`, TF's caching allocator (a TF setting any user can
make), so that the rows time the samplers themselves; `MALLOC_ARENA_MAX=1` in the
environment also avoids the faults.

Usage:
    python benchmarks/bench_samplers.py                          # full run
    python benchmarks/bench_samplers.py --vocab 1e5,1e6 --num-sampled 8192 --min-time 0.2
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    as_ints = lambda s: [int(float(x)) for x in s.split(",") if x]  # noqa: E731
    p.add_argument("--vocab", type=as_ints, default=[100_000, 1_000_000, 10_000_000])
    p.add_argument("--num-sampled", type=as_ints, default=[8192, 1_000_000])
    p.add_argument("--threads", type=int, default=1, help="TF intra/inter-op threads (0: all)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per row")
    p.add_argument("--labels", type=int, default=1024, help="labels per dynamic step")
    p.add_argument("--dynamic-sampled", type=int, default=8192)
    p.add_argument("--calls-in-graph", type=int, default=100,
                   help="calls per tf.function in the in-graph section (0: skip it)")
    p.add_argument("--steps-in-graph", type=int, default=20,
                   help="dynamic steps per tf.function in the in-graph section (0: skip them)")
    p.add_argument("--step-labels", type=int, default=512,
                   help="labels per dynamic step in the in-graph section")
    p.add_argument("--cpu-allocator", choices=("default", "bfc"), default="default",
                   help="bfc: TF_CPU_ALLOCATOR_USE_BFC=true (outputs reuse their memory)")
    p.add_argument("--skip", default="", help="comma-separated methods to skip, e.g. numpy")
    p.add_argument("--json-out", help="also write the rows as JSON here")
    p.add_argument("--plot", help="also plot Msamples/s against V (PNG; needs matplotlib, "
                   "the `bench` extra)")
    return p.parse_args()


ARGS = parse_args()
if ARGS.cpu_allocator == "bfc":  # read when TF creates its CPU device: before any op
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"
if ARGS.threads:
    tf.config.threading.set_intra_op_parallelism_threads(ARGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(ARGS.threads)

import tf_sampling as tfs  # noqa: E402

ROWS = []  # (section, V, num_sampled, method, ms, note)


def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed_with_faults(fn, min_time):
    """(median seconds per call of fn(), minor page faults per timed call). fn must finish
    its work before returning; the faults are the allocator's share of the call."""
    for _ in range(2):
        fn()
    times = []
    faults = minor_faults()
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), (minor_faults() - faults) / len(times)


def timed(fn, min_time):
    """Median seconds per call of fn()."""
    return timed_with_faults(fn, min_time)[0]


def add(section, v, n, method, seconds, note=""):
    ROWS.append((section, v, n, method, seconds * 1e3, note))
    print(f"  {section:8s} V={v:>9,d} n={n:>9,d} {method:34s} {seconds * 1e3:10.3f} ms",
          flush=True)


def zipf(v):
    return (1.0 / np.arange(1, v + 1)).astype(np.float64)


def skipped(name):
    return name in ARGS.skip.split(",")


def tf_samplers(v, n, unique, unigrams):
    """TF's fixed- and learned-unigram samplers drawing n ids over v classes, as
    {row name: function returning the ids} (the ones not `--skip`ped)."""
    true = tf.zeros([1, 1], tf.int64)
    suffix = ", unique" if unique else ""
    cases = {}
    if not skipped("fixed"):
        cases["tf fixed_unigram" + suffix] = lambda: tf.random.fixed_unigram_candidate_sampler(
            true, 1, n, unique=unique, range_max=v, unigrams=unigrams, seed=3)[0]
    if not skipped("learned"):
        cases["tf learned_unigram" + suffix] = \
            lambda: tf.random.learned_unigram_candidate_sampler(
                true, 1, n, unique=unique, range_max=v, seed=3)[0]
    return cases


def draws(v):
    """The draws and unique sections for v classes; returns the table and unigrams for
    the in-graph section."""
    w = zipf(v)
    table = tfs.ops.alias_build(w.astype(np.float32))
    unigrams = w.tolist()
    seed = tf.constant([1, 2], tf.int64)
    for n in ARGS.num_sampled:
        cases = {}
        if tfs.ops.custom_ops_available():
            cases["alias op"] = tf.function(
                lambda: tfs.ops.alias_sample(table, n, seed, use_custom_op=True))
        if not skipped("fallback"):
            cases["alias pure-TF fallback"] = tf.function(
                lambda: tfs.ops.alias_sample(table, n, seed, use_custom_op=False))
        cases.update({name: tf.function(fn)
                      for name, fn in tf_samplers(v, n, False, unigrams).items()})
        for name, fn in cases.items():
            seconds, faults = timed_with_faults(fn, ARGS.min_time)
            add("draws", v, n, name, seconds, f"{faults:,.0f} page faults / call")
        if not skipped("numpy"):
            rng = np.random.default_rng(0)
            p = w / w.sum()
            add("draws", v, n, "numpy Generator.choice(p=)",
                timed(lambda: rng.choice(v, size=n, p=p), ARGS.min_time))
    # Unique draws of 8192 (rejection of repeats), the usual training case.
    n = 8192
    cases = {}
    if tfs.ops.custom_ops_available():
        cases["alias op, unique"] = tf.function(
            lambda: tfs.ops.alias_sample(table, n, seed, unique=True, use_custom_op=True)[0])
    cases.update({name: tf.function(fn)
                  for name, fn in tf_samplers(v, n, True, unigrams).items()})
    for name, fn in cases.items():
        add("unique", v, n, name, timed(fn, ARGS.min_time))
    return table, unigrams


def in_graph(v, table, unigrams):
    """Per-call cost of 8192 draws as one op inside a bigger graph, as in a training step.

    One `tf.function` runs `--calls-in-graph` calls in a `tf.while_loop` (each with its own
    seed, each result feeding the loop's carry so none is pruned), so the Python dispatch
    of the call, the floor of the standalone rows, is paid once per K calls and the row is
    the sampler's own cost. The empty loop's cost per iteration is timed as its own row.
    """
    k, n = ARGS.calls_in_graph, 8192

    def loop(draw):
        def body(i, acc):
            return i + 1, acc + draw(i)[0]
        return tf.function(lambda: tf.while_loop(
            lambda i, acc: i < k, body, (tf.constant(0, tf.int64), tf.constant(0, tf.int64)))[1])

    seed = lambda i: tf.stack([tf.constant(1, tf.int64), i])  # noqa: E731
    cases = {"empty loop iteration": lambda i: tf.reshape(i, [1])}
    if tfs.ops.custom_ops_available():
        cases["alias op"] = lambda i: tfs.ops.alias_sample(table, n, seed(i), use_custom_op=True)
        cases["alias op, unique"] = lambda i: tfs.ops.alias_sample(
            table, n, seed(i), unique=True, use_custom_op=True)[0]
    for unique in (False, True):  # TF's samplers are stateful: no seed per call needed
        cases.update({name: lambda i, fn=fn: fn()
                      for name, fn in tf_samplers(v, n, unique, unigrams).items()})
    for name, draw in cases.items():
        add("in-graph", v, 0 if name.startswith("empty") else n, name,
            timed(loop(draw), ARGS.min_time) / k, note=f"{k} calls per tf.function")


def zipf_labels(v, count, batches=16, seed=0):
    """`batches` int64 `[count, 1]` label batches, Zipfian (exponent 1.2) over v classes."""
    rng = np.random.default_rng(seed)
    return [tf.constant((rng.zipf(1.2, (count, 1)) - 1) % v, tf.int64) for _ in range(batches)]


def in_graph_steps(v):
    """Per-step cost of a training-like sampler step inside a bigger graph.

    One `tf.function` runs `--steps-in-graph` steps in a `tf.while_loop`; step i takes
    label batch i % 16 (`--step-labels` Zipfian labels), counts it and draws 8192 unique
    candidates with their expected counts. All three outputs feed the loop's carry, so no
    part of the step is pruned. Both samplers start from all-ones counts (TF's learned
    sampler always does) and keep learning across calls.
    """
    k, n = ARGS.steps_in_graph, 8192
    batches = tf.stack(zipf_labels(v, ARGS.step_labels))
    num_batches = int(batches.shape[0])
    s = tfs.samplers.DynamicAliasSampler(v, seed=1)

    def ours(labels):
        s.update(labels)
        return s.sample(labels, n, unique=True)

    def tf_learned(labels):
        return tf.random.learned_unigram_candidate_sampler(labels, 1, n, unique=True,
                                                           range_max=v, seed=3)

    def loop(step):
        def body(i, acc):
            sampled, true_ec, sampled_ec = step(tf.gather(batches, i % num_batches))
            return i + 1, (acc + tf.cast(tf.reduce_sum(sampled), tf.float64)
                           + tf.cast(tf.reduce_sum(true_ec) + tf.reduce_sum(sampled_ec),
                                     tf.float64))
        start = (tf.constant(0, tf.int64), tf.constant(0.0, tf.float64))
        return tf.function(lambda: tf.while_loop(lambda i, acc: i < k, body, start)[1])

    cases = {"DynamicAliasSampler, step": ours}
    if not skipped("learned"):
        cases["tf learned_unigram, step"] = tf_learned
    what = (f"{k} steps per tf.function; a step: count {ARGS.step_labels} labels, "
            f"draw {n} unique")
    for name, step in cases.items():
        add("in-graph", v, n, name, timed(loop(step), ARGS.min_time) / k, note=what)


def build(v):
    w = tf.constant(zipf(v).astype(np.float32))
    if tfs.ops.custom_ops_available():
        f = tf.function(lambda: tfs.ops.alias_build(w, use_custom_op=True))
        add("build", v, 0, "alias op", timed(f, ARGS.min_time))
    if not skipped("fallback"):
        f = tf.function(lambda: tfs.ops.alias_build(w, use_custom_op=False))
        add("build", v, 0, "alias pure-TF fallback", timed(f, ARGS.min_time))


def dynamic(v):
    batches = zipf_labels(v, ARGS.labels)
    k = ARGS.dynamic_sampled
    s = tfs.samplers.DynamicAliasSampler(v, seed=1)

    @tf.function
    def ours(labels):
        s.update(labels)
        out = s.sample(labels, k)
        return out.sampled_candidates, out.true_expected_count

    @tf.function
    def tf_learned(labels):
        out = tf.random.learned_unigram_candidate_sampler(labels, 1, k, unique=True,
                                                          range_max=v, seed=3)
        return out[0], out[1]

    def step_time(fn):
        it = iter(range(10**9))
        return timed(lambda: fn(batches[next(it) % len(batches)]), ARGS.min_time)

    what = f"update {ARGS.labels} labels + sample {k} unique"
    calls_before = int(s.seed_generator.state.numpy()[1])
    seconds = step_time(ours)
    calls = int(s.seed_generator.state.numpy()[1]) - calls_before
    add("dynamic", v, k, "DynamicAliasSampler", seconds,
        note=f"{what}; {int(s.num_rebuilds.numpy())} table rebuilds in {calls} steps")
    if not skipped("learned"):
        add("dynamic", v, k, "tf learned_unigram", step_time(tf_learned), note=what)


def is_reference(method):
    """Whether a row is the one that the other rows of its group are compared with."""
    return method.startswith("alias op") or method.startswith("DynamicAliasSampler")


def row_kind(method):
    """Which rows of one section, V and num_sampled form a group: plain draws, unique
    draws, or whole steps."""
    return "step" if method.endswith(", step") else "unique" in method


def print_table():
    ref = {}  # the op's row that each other row of its group is compared with
    for section, v, n, method, ms, _ in ROWS:
        if is_reference(method):
            ref[(section, v, n, row_kind(method))] = ms
    print()
    print(f"## Samplers benchmark: TF {tf.__version__}, {platform.processor() or platform.machine()}"
          f", {os.cpu_count()} cores, TF threads: {ARGS.threads or 'all'}, CPU allocator: "
          f"{ARGS.cpu_allocator}; custom ops "
          f"{'loaded' if tfs.ops.custom_ops_available() else 'NOT loaded'}")
    print()
    print("| section | V | num_sampled | method | ms / call | Msamples/s | vs op | note |")
    print("|---|---|---|---|---|---|---|---|")
    for section, v, n, method, ms, note in ROWS:
        rate = f"{n / ms / 1e3:,.1f}" if n else ""
        base = ref.get((section, v, n, row_kind(method)))
        ratio = f"{ms / base:,.1f}x" if base and not is_reference(method) else ""
        print(f"| {section} | {v:,} | {n:,} | {method} | {ms:,.3f} | {rate} | {ratio} | {note} |")


def call_floor():
    """Wall time of calling an empty tf.function: the part of a per-call time that no
    sampler can remove."""
    x = tf.constant(0)
    return timed(tf.function(lambda: x + 1), ARGS.min_time)


def print_goals(floor_ms):
    v = 1_000_000
    by = {(s, vv, n, m): ms for s, vv, n, m, ms, _ in ROWS}
    print()
    print("Goals at V = 1e6 (issues 3 and 16):")

    def per_call(section, n, op_name, other):
        op, ms = by.get((section, v, n, op_name)), by.get((section, v, n, other))
        if not (op and ms):
            return
        r = ms / op
        where = (f"in a graph ({ARGS.calls_in_graph} calls per tf.function), "
                 if section == "in-graph" else "")
        line = (f"  {where}{op_name} vs {other}, {n:,} draws: {r:.1f}x faster per call "
                f"({'met' if r >= 5 else 'MISSED'}: goal >= 5x)")
        if section != "in-graph":
            # Both calls include the empty-call floor, which bounds the ratio: an op of
            # zero cost would be ms / floor faster. Net of the floor is the work's ratio.
            net = (ms - floor_ms) / (op - floor_ms) if op > floor_ms else float("inf")
            line += (f"; bound from the {floor_ms:.3f} ms floor: {ms / floor_ms:.1f}x; "
                     f"net of the floor: {net:.1f}x")
        print(line)

    for n in ARGS.num_sampled:
        for other in ("tf fixed_unigram", "tf learned_unigram"):
            per_call("draws", n, "alias op", other)
    for other in ("tf fixed_unigram, unique", "tf learned_unigram, unique"):
        per_call("unique", 8192, "alias op, unique", other)
    for suffix in ("", ", unique"):
        for other in ("tf fixed_unigram", "tf learned_unigram"):
            per_call("in-graph", 8192, "alias op" + suffix, other + suffix)
    ours = by.get(("in-graph", v, 8192, "DynamicAliasSampler, step"))
    theirs = by.get(("in-graph", v, 8192, "tf learned_unigram, step"))
    if ours and theirs:
        r = theirs / ours
        print(f"  in a graph ({ARGS.steps_in_graph} steps per tf.function), DynamicAliasSampler "
              f"step (count {ARGS.step_labels} labels, draw 8,192 unique) vs tf "
              f"learned_unigram: {r:.1f}x faster per step ({'met' if r >= 5 else 'MISSED'}: "
              "goal >= 5x, issue 16)")
    op = by.get(("draws", v, 1_000_000, "alias op"))
    if op:
        rate = 1e6 / op / 1e3
        note = f"; CPU allocator: {ARGS.cpu_allocator}"
        if ARGS.threads != 1:
            note += " (not single-threaded: run with --threads 1)"
        print(f"  op throughput at 1e6 draws per call: {rate:.0f} Msamples/s "
              f"({'met' if rate >= 100 else 'MISSED'}: goal >= 100 on one thread){note}")
    b = by.get(("build", v, 0, "alias op"))
    if b:
        print(f"  op build: {b:.1f} ms ({'met' if b <= 15 else 'MISSED'}: goal <= 15 ms "
              "on one thread)")


def write_json(path, floor_ms):
    import json

    keys = ("section", "vocab", "num_sampled", "method", "ms", "note")
    with open(path, "w") as f:
        json.dump({"tf": tf.__version__, "machine": platform.processor() or platform.machine(),
                   "threads": ARGS.threads, "cpu_allocator": ARGS.cpu_allocator,
                   "floor_ms": floor_ms,
                   "rows": [dict(zip(keys, r)) for r in ROWS]}, f, indent=1)


def plot(path):
    """Msamples/s against V, one line per method, for the largest num_sampled drawn."""
    import matplotlib  # lazily: an optional benchmark extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in ROWS if r[0] == "draws"]
    n = max(r[2] for r in rows)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method in dict.fromkeys(r[3] for r in rows if r[2] == n):
        pts = sorted((r[1], r[2] / r[4] / 1e3) for r in rows if r[2] == n and r[3] == method)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of classes V")
    ax.set_ylabel("Msamples/s")
    threads = "one thread" if ARGS.threads == 1 else f"{ARGS.threads or 'all'} threads"
    ax.set_title(f"Draws of {n:,} ids per tf.function call, {threads}, "
                 f"{ARGS.cpu_allocator} CPU allocator; TF {tf.__version__}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    print(f"custom ops available: {tfs.ops.custom_ops_available()}", flush=True)
    for v in ARGS.vocab:
        table, unigrams = draws(v)
        if ARGS.calls_in_graph:
            in_graph(v, table, unigrams)
        if ARGS.steps_in_graph:
            in_graph_steps(v)
    for v in ARGS.vocab:
        build(v)
    for v in ARGS.vocab:
        dynamic(v)
    floor = call_floor()
    print_table()
    print(f"\nPer-call floor: an empty tf.function call takes {floor * 1e3:.3f} ms here; at "
          "8,192 draws it is most of the op's time.")
    print_goals(floor * 1e3)
    if ARGS.json_out:
        write_json(ARGS.json_out, floor * 1e3)
    if ARGS.plot:
        plot(ARGS.plot)


if __name__ == "__main__":
    main()

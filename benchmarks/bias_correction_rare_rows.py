"""How far Adam variants move a rarely touched table row: the bias-correction question.

A lazy Adam must choose the step count `t` in its bias correction
`alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)`: the optimizer's global step (TF 1's
LazyAdam, PyTorch's SparseAdam, `SparseAdam(bias_correction="global")`) or the number of
updates the row has had (`bias_correction="per_row"`). This measures the consequence with
the optimizers themselves: a two-row table, row 0 touched every step, row 1 (the rare row)
first at step 1000 and then every `gap` steps, always with gradient +1. It prints how far
row 1 moves from one touch to the next, in units of the learning rate, under keras Adam
(dense: untouched rows keep moving on their decaying momentum), SparseAdam global and
SparseAdam per_row, and SparseAdam catch_up (read after `finalize_variable_values`, which
brings every row to where it is read from: the catch-up composes, so this changes nothing
that follows).

Reading: per_row moves a rare row exactly lr per touch, like a fresh Adam; global moves it
2.5-5x lr (v starts at zero but is divided by sqrt(1 - beta_2^t) ~ 1, so the first steps are
(1 - beta_1) / sqrt(1 - beta_2) = 3.16x larger than a bias-corrected Adam's); dense Adam
moves it 10-25x lr, because its momentum keeps moving the row for ~10 steps after each
touch while v, which decays 100x slower, stays small. Which of these trains a better model
is an empirical question: see README "Optimizers" for the WikiText-2 runs.

    python benchmarks/bias_correction_rare_rows.py        # a few seconds
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import tf_sampling as tfs  # noqa: E402

LR = 1e-3
FIRST = 1000
TOUCHES = 6


def movements(make, gap, dense, finalize=False):
    var = keras.Variable(np.zeros((2, 1), "float32"))
    opt = make()

    @tf.function
    def step(rare):
        values = tf.where(rare, tf.constant([[1.0], [1.0]]), tf.constant([[1.0], [0.0]]))
        if dense:
            opt.apply([values], [var])
        else:
            n = tf.where(rare, 2, 1)
            opt.apply([tf.IndexedSlices(values[:n], tf.constant([0, 1])[:n], [2, 1])], [var])

    touches = [FIRST + k * gap for k in range(TOUCHES)]
    ends = set(t - 1 for t in touches[1:]) | {touches[-1] + gap - 1}
    moves, last = [], 0.0
    for t in range(1, touches[-1] + gap):
        step(tf.constant(t in touches))
        if t in ends:
            if finalize:  # catch_up: bring the row to where it would be read from now on
                opt.finalize_variable_values([var])
            w = float(var.numpy()[1, 0])
            moves.append((last - w) / LR)
            last = w
    return moves


def main():
    optimizers = [
        ("keras Adam (dense)", lambda: keras.optimizers.Adam(LR), True, False),
        ("SparseAdam global", lambda: tfs.optimizers.SparseAdam(LR), False, False),
        ("SparseAdam per_row",
         lambda: tfs.optimizers.SparseAdam(LR, bias_correction="per_row"), False, False),
        ("SparseAdam catch_up", lambda: tfs.optimizers.SparseAdam(LR, catch_up=True), False,
         True),
    ]
    for gap in (100, 10):
        print(f"rare row: first touched at step {FIRST}, then every {gap} steps; movement "
              "from one touch to the next, / lr")
        print(f"| optimizer | " + " | ".join(f"touch {k + 1}" for k in range(TOUCHES)) + " |")
        print("|---|" + "---:|" * TOUCHES)
        for name, make, dense, finalize in optimizers:
            moves = movements(make, gap, dense, finalize)
            print(f"| {name} | " + " | ".join(f"{m:.2f}" for m in moves) + " |")
        print()


if __name__ == "__main__":
    main()

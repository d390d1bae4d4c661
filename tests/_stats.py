"""Per-cell checks for sampler tests, besides a global chi-square.

A chi-square over C cells has little power against a bias on one cell: its
noncentrality grows like the cell's squared z, against a critical value that grows like
C. So the sampler tests also bound every cell: z_c = (o_c - N p_c) / sqrt(N p_c (1 - p_c))
is about standard normal for a correct sampler once N p_c is large (>= 20 here, where
the binomial's normal approximation is good to well within the margins used), and with
a Bonferroni cut z* = Phi^-1(1 - alpha / (2 C)) all C cells stay within +-z* except with
probability <= alpha. A 20% bias on a cell of expected count e moves its z by about
0.2 sqrt(e); each test states the e that makes that shift exceed z* by a margin.
"""

import statistics

import numpy as np


def bonferroni_z(cells, alpha):
    """The two-sided normal cut that `cells` z-scores all stay within except with
    probability <= alpha."""
    return statistics.NormalDist().inv_cdf(1.0 - alpha / (2.0 * cells))


def max_abs_z(counts, p, min_expected=20.0):
    """(max |z| over the cells of expected count >= min_expected, their number, the
    worst cell). Cells of probability 0 must be empty (checked)."""
    counts = np.asarray(counts, np.float64)
    p = np.asarray(p, np.float64)
    assert counts[p == 0].sum() == 0, "a class of probability 0 was drawn"
    n = counts.sum()
    e = n * p
    big = e >= min_expected
    z = (counts[big] - e[big]) / np.sqrt(e[big] * (1.0 - p[big]))
    worst = int(np.argmax(np.abs(z)))
    return float(np.abs(z).max()), int(big.sum()), int(np.flatnonzero(big)[worst])


def assert_cells(counts, p, alpha=1e-6, min_expected=20.0):
    """Every cell within the Bonferroni cut for alpha (the default, 1e-6, matches the
    chi-square bounds of the op tests: a correct sampler fails with probability < 1e-6)."""
    z, cells, worst = max_abs_z(counts, p, min_expected)
    cut = bonferroni_z(cells, alpha)
    assert z < cut, f"class {worst} is {z:.1f} sigma off (cut {cut:.2f} over {cells} cells)"


def chi2_bound(df):
    """df + 6 sqrt(2 df): a chi-square statistic with df degrees of freedom exceeds it with
    probability below 1e-6 (normal approximation)."""
    return df + 6.0 * np.sqrt(2.0 * df)


def chi_square(counts, p):
    """Chi-square of counts against probabilities p (classes with p == 0 must be empty);
    cells with expected count < 20 are pooled so the approximation holds."""
    n = counts.sum()
    expected = p * n
    big = expected >= 20
    small = (~big) & (p > 0)
    stat = np.sum((counts[big] - expected[big]) ** 2 / expected[big])
    cells = big.sum()
    if small.any():
        e, o = expected[small].sum(), counts[small].sum()
        stat += (o - e) ** 2 / e
        cells += 1
    return stat, cells - 1

"""Level statistics of a spectrum: unfolding, spacings, number variance, the Hill estimator.

METHODS §8 (Thamm, Staats & Rosenow 2022). The levels of a weight matrix W are the
eigenvalues lambda_i = nu_i^2 of W^T W on the smaller side (squared singular values).
Universal random-matrix laws hold for the *unfolded* levels e_i = N_smooth(lambda_i), where
N_smooth is a smooth fit of the staircase N(lambda) = #{lambda_j <= lambda}; then the mean
level spacing is 1 everywhere and the local statistics can be compared with

- the GOE Wigner surmise  P(s) = (pi/2) s exp(-pi s^2 / 4)  and Poisson  P(s) = exp(-s)
  for the nearest-neighbour spacings s_i = e_{i+1} - e_i;
- the number variance Sigma^2(L) = <n_L^2> - <n_L>^2 of the count n_L of unfolded levels in
  an interval of length L: Poisson L, GOE (Mehta, Random Matrices, Eq. 16.1.3)
  Sigma^2(L) = (2/pi^2) [ln(2 pi L) + gamma + 1 + Si(pi L)^2 / 2 - (pi/2) Si(pi L)
                         - cos(2 pi L) - Ci(2 pi L) + pi^2 L (1 - (2/pi) Si(2 pi L))],
  which tends to (2/pi^2)(ln(2 pi L) + gamma + 1 - pi^2/8) for L >> 1.

The Hill estimator alpha_k = [(1/k) sum_{i<=k} ln(x_(i) / x_(k+1))]^(-1) of the k largest
values tells whether the top of a spectrum is a power law (a plateau in k) or not (a drift).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from . import marchenko_pastur as _mp
from .validation import as_array, as_matrix, as_numpy, as_vector, check_choice, check_float, check_int

MIN_LEVELS = 20   # a smooth staircase fit with trimmed edges needs at least this many levels
MIN_SPACINGS = 2  # a spacing distribution needs at least two spacings (three levels)
TIE_TOL = 1e-10   # neighbouring levels closer than this many mean spacings count as equal
METHODS = ("poly", "broaden")
VARIABLES = ("auto", "level", "sqrt")


# --------------------------------------------------------------------------- levels
def levels(W) -> np.ndarray:
    """Levels of a weight matrix: eigenvalues of W^T W on the smaller side, ascending (nu_i^2)."""
    from .spectra import singular_values

    A = as_matrix(W, "W", min_rows=1, min_cols=1)
    return np.sort(singular_values(A) ** 2)


def _levels(x, name: str = "levels", *, min_size: int = MIN_LEVELS,
            why: str = "a smooth staircase fit with trimmed edges") -> np.ndarray:
    """Sorted float64 levels; refuse too few, all equal, or many coinciding (zero) levels."""
    lv = np.sort(as_numpy(as_vector(x, name, min_size=min_size, why=why)))
    span = lv[-1] - lv[0]
    if span <= 0:
        raise ValueError(f"{name}: all {len(lv)} levels are equal ({lv[0]:.6g}); a degenerate "
                         "spectrum has no spacings to analyse")
    gaps = np.diff(lv)
    ties = int((gaps <= TIE_TOL * span / (len(lv) - 1)).sum())
    if ties:
        n_zero = int((np.abs(lv) <= TIE_TOL * np.abs(lv).max()).sum())
        hint = (f" ({n_zero} of them are zero: a rank-deficient matrix? drop the zero levels "
                "first, e.g. levels[levels > 0])" if n_zero > 1 else
                " (drop repeated values first, e.g. with np.unique)")
        raise ValueError(f"{name}: {ties} of {len(lv) - 1} neighbouring levels coincide: "
                         f"degenerate levels{hint}")
    return lv


# --------------------------------------------------------------------------- unfolding
def _trim_count(n: int, trim: float) -> int:
    return int(math.floor(trim * n))


def smooth_staircase(levels, method: str = "poly", *, degree: int = 12, variable: str = "auto",
                     window: int = 15, trim: float = 0.05):
    """A smooth fit N_smooth(lambda) of the staircase N(lambda) = #{lambda_j <= lambda} (METHODS §8).

    - "poly": least-squares polynomial of `degree` through (x_i, i + 1/2) for all levels but a
      fraction `trim / 2` at each end (so outliers do not bend the fit; the margin of another
      `trim / 2` keeps the polynomial's turning ends away from the kept levels), with
      x = lambda (`variable="level"`) or x = sqrt(lambda) (`"sqrt"`: the singular value, whose
      density has no 1/sqrt(lambda) divergence for square matrices; `"auto"` picks it when all
      levels are non-negative). The staircase counts every level, kept or not.
    - "broaden": M times the integral of the Gaussian-broadened density of all levels
      (Staats et al. Suppl. Eq. S3, `marchenko_pastur.broaden`, widths from the `window`-th
      neighbours), in closed form: sum_k Phi((lambda - lambda_k) / sigma_k) with Phi the
      normal cdf; it follows the density locally, over about `window` levels, at any scale.

    Returns a vectorised function of lambda.
    """
    method = check_choice(method, "method", METHODS)
    variable = check_choice(variable, "variable", VARIABLES)
    degree = check_int(degree, "degree", min=1, max=40)
    window = check_int(window, "window", min=1)
    trim = check_float(trim, "trim", min=0.0, max=0.25, why="the fraction of levels cut at each end")
    lv = _levels(levels)
    M = len(lv)
    k = _trim_count(M, trim)
    kept = M - 2 * k
    if method == "poly":
        if kept < max(MIN_LEVELS // 2, degree + 2):
            raise ValueError(f"after trimming {k} levels at each end only {kept} remain; a polynomial "
                             f"of degree {degree} needs at least {max(MIN_LEVELS // 2, degree + 2)} "
                             "(lower trim or degree)")
        if variable == "sqrt" and lv[0] < 0:
            raise ValueError("variable='sqrt' needs non-negative levels (squared singular values); "
                             "use variable='level' for levels of either sign")
        use_sqrt = variable == "sqrt" or (variable == "auto" and lv[0] >= 0)
        x = np.sqrt(lv) if use_sqrt else lv
        counts = np.arange(M) + 0.5
        j = k // 2  # fit over a margin beyond the kept levels: a polynomial bends at its ends
        poly = np.polynomial.Polynomial.fit(x[j:M - j], counts[j:M - j], degree)

        def staircase(lam):
            lam = np.asarray(lam, dtype=float)
            return poly(np.sqrt(np.clip(lam, 0, None)) if use_sqrt else lam)

        return staircase
    # Gaussian broadening in closed form: level k's Gaussian integrates to the normal cdf
    # Phi((lambda - lambda_k) / sigma_k), so N_smooth(lambda) = sum_k Phi((lambda - lambda_k) / sigma_k),
    # exact at every scale. (A grid over the whole span, as before, could not resolve a band
    # of levels much narrower than the span: its levels all fell between two grid points.)
    # Widths as broaden() computes them, from the levels shifted to start at 0.
    widths = _mp._widths(lv - lv[0], window)

    def staircase(lam):
        lam = np.asarray(lam, dtype=float)
        flat = lam.reshape(-1)
        out = np.empty(len(flat))
        for start in range(0, len(flat), 256):  # chunks keep memory at 256 x M
            z = (flat[start:start + 256, None] - lv[None, :]) / widths[None, :]
            out[start:start + 256] = special.ndtr(z).sum(axis=1)
        return out.reshape(lam.shape)

    return staircase


def unfold(levels, method: str = "poly", *, degree: int = 12, variable: str = "auto",
           window: int = 15, trim: float = 0.05) -> np.ndarray:
    """Unfolded levels e_i = N_smooth(lambda_i), ascending, with `trim` of them cut at each end.

    METHODS §8. The unfolded levels have mean spacing 1 *locally*, wherever they lie in the
    spectrum. Parameters as in `smooth_staircase`. Raises ValueError for fewer than
    `MIN_LEVELS` levels, degenerate levels, or a fit that is not increasing over the kept
    levels (lower `degree` or trim more).
    """
    fit = smooth_staircase(levels, method, degree=degree, variable=variable, window=window, trim=trim)
    lv = _levels(levels)
    k = _trim_count(len(lv), trim)
    e = fit(lv[k:len(lv) - k])
    if np.any(np.diff(e) <= 0):
        raise ValueError(f"the {method} staircase fit decreases somewhere inside the kept levels; "
                         "lower `degree`, raise `trim`, or use method='broaden'")
    return e


def spacings(unfolded) -> np.ndarray:
    """Nearest-neighbour spacings s_i = e_{i+1} - e_i of unfolded levels (sorted first)."""
    e = np.sort(as_numpy(as_vector(unfolded, "unfolded", min_size=MIN_SPACINGS + 1,
                                   why=f"{MIN_SPACINGS} spacings")))
    return np.diff(e)


# --------------------------------------------------------------------------- reference laws
def goe_pdf(s) -> np.ndarray:
    """GOE Wigner surmise P(s) = (pi/2) s exp(-pi s^2 / 4) (exact for 2x2 GOE matrices)."""
    s = np.asarray(s, dtype=float)
    return np.where(s >= 0, 0.5 * np.pi * s * np.exp(-0.25 * np.pi * s**2), 0.0)


def goe_cdf(s) -> np.ndarray:
    """Cumulative Wigner surmise 1 - exp(-pi s^2 / 4)."""
    s = np.clip(np.asarray(s, dtype=float), 0, None)
    return -np.expm1(-0.25 * np.pi * s**2)


def poisson_pdf(s) -> np.ndarray:
    """Poisson (uncorrelated levels) spacing density exp(-s)."""
    s = np.asarray(s, dtype=float)
    return np.where(s >= 0, np.exp(-np.clip(s, 0, None)), 0.0)


def poisson_cdf(s) -> np.ndarray:
    """Cumulative Poisson spacing distribution 1 - exp(-s)."""
    return -np.expm1(-np.clip(np.asarray(s, dtype=float), 0, None))


_CDFS = {"goe": goe_cdf, "poisson": poisson_cdf}


def ks_distance(spacings_, law: str = "goe") -> float:
    """Kolmogorov-Smirnov distance sup_s |F_n(s) - F(s)| of spacings to "goe" or "poisson".

    For n independent spacings the 1% critical value is about 1.63 / sqrt(n) (`ks_critical`);
    spacings of a rigid (GOE) spectrum are anti-correlated, which makes that bound conservative.
    """
    law = check_choice(law, "law", tuple(_CDFS))
    s = np.sort(as_numpy(as_vector(spacings_, "spacings", min_size=MIN_SPACINGS,
                                   why="a distribution of spacings")))
    n = len(s)
    F = _CDFS[law](s)
    return float(max((np.arange(1, n + 1) / n - F).max(), (F - np.arange(n) / n).max()))


def ks_critical(n: int, alpha: float = 0.01) -> float:
    """Asymptotic critical KS distance K_{1-alpha} / sqrt(n) for n independent samples."""
    n = check_int(n, "n", min=1)
    alpha = check_float(alpha, "alpha", min=0, max=1, min_open=True, max_open=True)
    return float(stats.kstwobign.isf(alpha) / math.sqrt(n))


# --------------------------------------------------------------------------- number variance
def _lengths(L) -> np.ndarray:
    t = as_array(L, "L", ndim=(0, 1))
    arr = np.atleast_1d(as_numpy(t))
    if np.any(arr <= 0):
        raise ValueError(f"L must be positive interval lengths (in mean spacings); got min {arr.min():.4g}")
    return arr


def number_variance(unfolded, L, *, step: float = 0.1) -> np.ndarray:
    """Sigma^2(L) = <n_L^2> - <n_L>^2 of unfolded levels (METHODS §8).

    n_L counts the levels in [x, x + L]; the average runs over start points x on a grid of
    `step` (in mean spacings) across the whole unfolded range. L may be a number or an array;
    each L must be at most half the range of the levels (two disjoint windows at least).
    Returns an array shaped like `np.atleast_1d(L)`.
    """
    e = np.sort(as_numpy(as_vector(unfolded, "unfolded", min_size=3, why="two spacings")))
    Ls = _lengths(L)
    step = check_float(step, "step", min=0, max=1, min_open=True)
    span = e[-1] - e[0]
    if Ls.max() > span / 2:
        raise ValueError(f"L = {Ls.max():.4g} is larger than half the unfolded spectrum "
                         f"({len(e)} levels spanning {span:.4g}); use L <= {span / 2:.4g}")
    out = np.empty_like(Ls)
    for j, length in enumerate(Ls):
        starts = np.arange(e[0], e[-1] - length, step)
        n = np.searchsorted(e, starts + length, side="right") - np.searchsorted(e, starts, side="left")
        out[j] = n.var()
    return out


def number_variance_poisson(L) -> np.ndarray:
    """Sigma^2(L) = L for uncorrelated (Poisson) levels."""
    return _lengths(L).copy()


def number_variance_goe(L) -> np.ndarray:
    """Exact GOE number variance (Mehta, Random Matrices, Eq. 16.1.3), any L > 0.

    (2/pi^2)[ln(2 pi L) + gamma + 1 + Si(pi L)^2/2 - (pi/2)Si(pi L) - cos(2 pi L) - Ci(2 pi L)
    + pi^2 L (1 - (2/pi) Si(2 pi L))]; equals L - O(L^2) for small L.
    """
    Ls = _lengths(L)
    si1, _ = special.sici(np.pi * Ls)
    si2, ci2 = special.sici(2 * np.pi * Ls)
    return (2 / np.pi**2) * (np.log(2 * np.pi * Ls) + np.euler_gamma + 1 + 0.5 * si1**2
                             - 0.5 * np.pi * si1 - np.cos(2 * np.pi * Ls) - ci2
                             + np.pi**2 * Ls * (1 - (2 / np.pi) * si2))


def number_variance_goe_asymptotic(L) -> np.ndarray:
    """Large-L GOE form (2/pi^2)(ln(2 pi L) + gamma + 1 - pi^2/8) (METHODS §8), L >> 1."""
    Ls = _lengths(L)
    return (2 / np.pi**2) * (np.log(2 * np.pi * Ls) + np.euler_gamma + 1 - np.pi**2 / 8)


# --------------------------------------------------------------------------- Hill estimator
@dataclass
class HillEstimate:
    """Hill tail-index estimates over k with an asymptotic confidence band."""

    k: np.ndarray
    alpha: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float


def hill(values, k=None, *, level: float = 0.95) -> HillEstimate:
    """Hill estimator of the tail index from the k largest values (METHODS §8).

    alpha_k = [(1/k) sum_{i<=k} ln(x_(i) / x_(k+1))]^(-1), x_(1) >= x_(2) >= ... For a power
    law P(x > t) ~ t^(-alpha), sqrt(k)(alpha_k / alpha - 1) -> N(0, 1), so the band is
    alpha_k (1 -+ z / sqrt(k)) with z the two-sided normal quantile of `level`. Plotted
    against k it settles on a plateau for a power law and drifts otherwise.

    `k`: an integer or an array of integers in [1, n - 1]; default all of 1..n-1.
    The k + 1 largest values must be positive.
    """
    x = as_numpy(as_vector(values, "values", min_size=2, why="one tail value and a threshold"))
    n = len(x)
    level = check_float(level, "level", min=0, max=1, min_open=True, max_open=True)
    if k is None:
        ks = np.arange(1, n)
    else:
        kt = as_array(k, "k", ndim=(0, 1))
        ks = np.atleast_1d(as_numpy(kt))
        if np.any(ks != np.round(ks)) or ks.min() < 1 or ks.max() > n - 1:
            raise ValueError(f"k must be integers in [1, {n - 1}] (n - 1 for {n} values); "
                             f"got {ks.min():.4g}..{ks.max():.4g}")
        ks = ks.astype(int)
    top = np.sort(x)[::-1][: ks.max() + 1]
    if top[-1] <= 0:
        raise ValueError(f"the {ks.max() + 1} largest values must be positive for the Hill "
                         f"estimator (x_(k+1) = {top[-1]:.4g}); use a smaller k")
    logs = np.log(top)
    mean_log = np.cumsum(logs)[ks - 1] / ks
    gap = mean_log - logs[ks]
    with np.errstate(divide="ignore"):
        alpha = np.where(gap > 0, 1.0 / np.where(gap > 0, gap, 1.0), np.inf)
    z = stats.norm.isf((1 - level) / 2)
    half = z / np.sqrt(ks)
    return HillEstimate(k=ks, alpha=alpha, lower=alpha * (1 - half), upper=alpha * (1 + half),
                        level=level)


# --------------------------------------------------------------------------- per-layer summary
def summary(W, *, method: str = "poly", trim: float = 0.05, L=(1.0, 5.0, 10.0), degree: int = 12,
            window: int = 15) -> dict:
    """Level statistics of one weight matrix, as a flat dict for `rmtlib.analyze` to join.

    Keys (prefix `ls_`): unfolding (the method used: "poly" falls back to "broaden" when the
    polynomial is not monotone over the levels), n_levels (kept after trimming), ks_goe and ks_poisson (KS distance of
    the spacings to the Wigner surmise and to Poisson), ks_crit (1% critical value for that many
    independent spacings), sigma2_L<L> and sigma2_goe_L<L> (measured and GOE number variance;
    NaN where L exceeds half the unfolded range), hill_alpha_small / hill_alpha_large (Hill index
    of the singular values at k = max(5, M/50) and k = max(2 k_small, M/5)) and their ratio
    hill_ratio (about 1 for a power-law tail, drifting away from 1 otherwise).
    Raises ValueError for layers with fewer than `MIN_LEVELS` singular values.
    """
    A = as_matrix(W, "W")
    if min(A.shape) < MIN_LEVELS:
        raise ValueError(f"W has shape {tuple(A.shape)}: {min(A.shape)} levels; level statistics "
                         f"need at least {MIN_LEVELS} (min(n, m) >= {MIN_LEVELS})")
    Ls = _lengths(L)
    method = check_choice(method, "method", METHODS)
    lv = levels(A)
    try:
        e = unfold(lv, method, degree=degree, window=window, trim=trim)
    except ValueError as err:
        if method != "poly" or "decreases" not in str(err):
            raise
        method = "broaden"  # a spectrum far from MP shape: the local fit still works
        e = unfold(lv, method, degree=degree, window=window, trim=trim)
    s = np.diff(e)
    out = dict(ls_unfolding=method, ls_n_levels=len(e), ls_ks_goe=ks_distance(s, "goe"),
               ls_ks_poisson=ks_distance(s, "poisson"), ls_ks_crit=ks_critical(len(s)))
    span = e[-1] - e[0]
    ok = Ls <= span / 2
    measured = np.full_like(Ls, np.nan)
    if ok.any():
        measured[ok] = number_variance(e, Ls[ok])
    goe = number_variance_goe(Ls)
    for length, m, g in zip(Ls, measured, goe):
        tag = f"{length:g}".replace(".", "p")
        out[f"ls_sigma2_L{tag}"] = float(m)
        out[f"ls_sigma2_goe_L{tag}"] = float(g)
    sv = np.sqrt(lv)
    M = len(sv)
    k_small = max(5, M // 50)
    k_large = min(M - 1, max(2 * k_small, M // 5))
    h = hill(sv, [k_small, k_large])
    out.update(ls_hill_alpha_small=float(h.alpha[0]), ls_hill_alpha_large=float(h.alpha[1]),
               ls_hill_ratio=float(h.alpha[0] / h.alpha[1]))
    return out

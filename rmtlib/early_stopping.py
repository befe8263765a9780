"""Spectral early stopping (Meng & Yao, JMLR 2023) and spectrum types LT / BT / HT / RC.

METHODS §6. For an n x n0 weight matrix (n <= n0) with eigenvalues X_1..X_n of W W^T:
a^ = X_(1), b^ = X_(n) give sigma^ and c^ through a = sigma^2 (1 - sqrt c)^2,
b = sigma^2 (1 + sqrt c)^2; a histogram with M = 2 floor(n^(1/3)) equal bins on [a^, b^]
is compared with the MP density, s_n = integral |p^_M - p_MP| dx; training stops at the
first epoch where s_n > s* = C sqrt(log n) / n^(1/3).

The integral is exact (closed-form MP distribution function, crossing points in closed
form). On pure noise the normalised statistic s_n n^(1/3) / sqrt(log n) is not flat in
c = n / n0: near c = 1 the lower-edge estimate a^ = X_(1) is poor and noise exceeds the
fixed threshold (C = 0.4) for c above about 0.8. `null_statistic` simulates the null for a
shape, `threshold(..., method="calibrated")` takes its quantile, and the default "auto"
uses the larger of the two thresholds (warning when the fixed one is not valid).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from . import marchenko_pastur as mp
from . import spectra
from ._io import cache_dir, load_values, save_values
from .progress import progress
from .validation import as_matrix, as_numpy, as_vector, check_choice, check_float, check_int

MIN_EIGENVALUES = 8  # a histogram statistic needs a few values (2 floor(8^(1/3)) = 4 bins)
METHODS = ("auto", "fixed", "calibrated")
LEVEL = 0.999        # calibrated threshold: this quantile of s_n on noise of the layer's shape
NULL_SAMPLES = 1000


class ThresholdWarning(UserWarning):
    """The fixed threshold s* = C sqrt(log n) / n^(1/3) is exceeded by pure noise of this shape."""


def icbrt(n: int) -> int:
    """floor(n^(1/3)) in integer arithmetic (floating point gives 7 for 512)."""
    n = check_int(n, "n", min=0)
    r = int(round(n ** (1 / 3)))
    while r**3 > n:
        r -= 1
    while (r + 1) ** 3 <= n:
        r += 1
    return r


def n_bins(n: int) -> int:
    """Number of histogram bins M = 2 floor(n^(1/3)) (METHODS §6): 512 -> 16, 1000 -> 20."""
    return 2 * icbrt(n)


def _eigenvalues(W) -> np.ndarray:
    W = as_matrix(W, "W", dtype=torch.float64)
    n = min(W.shape)
    if n < MIN_EIGENVALUES:
        raise ValueError(f"W has shape {tuple(W.shape)}: {n} eigenvalues are too few for the histogram "
                         f"statistic (need >= {MIN_EIGENVALUES} for 2 floor(n^(1/3)) >= 4 bins)")
    scale = float(W.abs().max())
    if scale == 0:
        raise ValueError("W is all zeros: rank collapse, no spectrum to compare with the MP law "
                         "(spectrum_type gives 'RC')")
    S = spectra.singular_values(W / scale)  # s_n does not depend on the scale; no overflow
    return np.sort(S**2)


def mp_parameters(a: float, b: float) -> tuple[float, float]:
    """(sigma^2, c) from the bulk edges a = sigma^2 (1 - sqrt c)^2, b = sigma^2 (1 + sqrt c)^2."""
    a = check_float(a, "a", min=0)
    b = check_float(b, "b", min=0)
    if not a < b:
        raise ValueError(f"need 0 <= a < b for the MP edges; got a={a}, b={b} (all eigenvalues equal?)")
    ra, rb = math.sqrt(a), math.sqrt(b)
    sigma = (ra + rb) / 2
    return sigma**2, ((rb - ra) / (rb + ra)) ** 2


def _exact_distance(hist, edges, a, b):
    """integral_a^b |h(x) - p(x)| dx for a histogram h and the MP density p with support [a, b].

    In a bin [l, r] of height h: integral |h - p| = h (r - l) - (F(r) - F(l))
    + 2 integral_{p > h} (p - h), and {p > h} is an interval (x-, x+) because p is
    unimodal: p(x) = h <=> (1 + k^2) x^2 - (a + b) x + ab = 0, k = 2 pi c sigma^2 h. F is the
    closed-form MP distribution function (`marchenko_pastur.eigen_cdf`).
    """
    sigma2, c = mp_parameters(a, b)
    c = min(c, 1.0)
    F = lambda x: mp._eigen_cdf_unit(x / sigma2, c)  # noqa: E731  (mp.eigen_cdf without checks)
    l, r = edges[:-1], edges[1:]
    total = hist * (r - l) - (F(r) - F(l))
    k2 = (2 * math.pi * c * sigma2 * hist) ** 2
    A = 1 + k2
    disc = (a + b) ** 2 - 4 * A * a * b
    root = np.sqrt(np.clip(disc, 0, None))
    x_lo, x_hi = ((a + b) - root) / (2 * A), ((a + b) + root) / (2 * A)
    lo, hi = np.maximum(l, x_lo), np.minimum(r, x_hi)
    has = (disc > 0) & (hi > lo)
    lo, hi = np.where(has, lo, l), np.where(has, hi, l)
    extra = F(hi) - F(lo) - hist * (hi - lo)
    return float(np.sum(total + 2 * np.where(has, np.clip(extra, 0, None), 0.0)))


def statistic(eigenvalues, *, method: str = "exact", points_per_bin: int = 64) -> float:
    """s_n of Meng & Yao (METHODS §6) from the eigenvalues of W W^T (the smaller side).

    s_n = integral_{a^}^{b^} |p^_M(x) - p_MP(x; c^, sigma^2)| dx with a^, b^ the smallest and
    largest eigenvalue and M = 2 floor(n^(1/3)) bins. method="exact" integrates the MP
    density in closed form (`_exact_distance`); method="midpoint" uses `points_per_bin`
    midpoints per bin, which misses the inverse-square-root singularity at the lower edge
    when c -> 1 (kept to show that error).
    """
    method = check_choice(method, "method", ("exact", "midpoint"))
    points_per_bin = check_int(points_per_bin, "points_per_bin", min=1)
    X = as_numpy(as_vector(eigenvalues, "eigenvalues", dtype=torch.float64, min_size=MIN_EIGENVALUES,
                           why="2 floor(n^(1/3)) >= 4 histogram bins"))
    return _statistic(np.sort(X), method, points_per_bin)


def _statistic(X, method="exact", points_per_bin=64):
    """`statistic` on sorted float64 eigenvalues, without input checks (the null's inner loop)."""
    if X[0] < 0:
        if X[0] < -1e-12 * max(abs(X[-1]), 1e-300):
            raise ValueError(f"eigenvalues of W W^T are non-negative; got {int(np.sum(X < 0))} negative "
                             "values: pass squared singular values")
        X = np.clip(X, 0, None)
    n = len(X)
    scale = X[-1]
    if not scale > 0:
        raise ValueError("all eigenvalues are zero: rank collapse, no spectrum to compare")
    X = X / scale  # scale-free statistic; avoids overflow of the MP constants
    a, b = float(X[0]), float(X[-1])
    if not b > a:
        raise ValueError("all eigenvalues are equal: no spectrum to compare with the MP law")
    hist, edges = np.histogram(X, bins=n_bins(n), range=(a, b), density=True)
    if method == "exact":
        return max(_exact_distance(hist, edges, a, b), 0.0)
    sigma2, c = mp_parameters(a, b)
    width = edges[1] - edges[0]
    sub = (np.arange(points_per_bin) + 0.5) / points_per_bin
    x = edges[:-1, None] + sub[None, :] * width
    p = mp.eigen_density(x, sigma2, min(c, 1.0))
    return float(np.sum(np.abs(hist[:, None] - p)) * width / points_per_bin)


def spectral_distance(W, *, method: str = "exact", points_per_bin: int = 64) -> float:
    """The statistic s_n of Meng & Yao (METHODS §6) for a weight matrix (see `statistic`)."""
    return statistic(_eigenvalues(W), method=method, points_per_bin=points_per_bin)


def _fixed(n, C):
    return C * math.sqrt(math.log(n)) / n ** (1 / 3)


def _null_path(n, m, samples, seed):
    return cache_dir("sn_null") / f"n{n}_m{m}_K{samples}_seed{seed}.json"


_NULL_MEMO: dict = {}


def null_statistic(n: int, m: int, *, samples: int = NULL_SAMPLES, seed: int = 0,
                   cache: bool = True) -> np.ndarray:
    """s_n of `samples` pure-noise n x m matrices (n <= m; sorted, read-only).

    The eigenvalues of W W^T for Gaussian W are drawn through the bidiagonal model of
    Dumitriu & Edelman (`marchenko_pastur.sample_spectrum`, exact in distribution, O(n^2)),
    seeded by (seed, n, m), and cached as JSON under the rmtlib cache; a damaged file is rebuilt.
    """
    # both sides: the statistic has min(n, m) eigenvalues, whichever side is given first
    n = check_int(n, "n", min=MIN_EIGENVALUES, why="the histogram statistic needs >= 8 eigenvalues")
    m = check_int(m, "m", min=MIN_EIGENVALUES, why="the histogram statistic needs >= 8 eigenvalues")
    n, m = min(n, m), max(n, m)
    samples = check_int(samples, "samples", min=10, why="a null needs draws")
    seed = check_int(seed, "seed", min=0)
    key = (n, m, samples, seed)
    if key in _NULL_MEMO:
        return _NULL_MEMO[key]
    path = _null_path(*key)
    values = load_values(path, key, "s_n", samples) if cache else None
    if values is None:
        rng = np.random.default_rng([seed, n, m])
        values = np.array([_statistic(mp.sample_spectrum((m, n), rng) ** 2)
                           for _ in progress(range(samples), desc=f"s_n null {n}x{m}", leave=False)])
        values.sort()
        if cache:
            save_values(path, key, "s_n", values)
    values = np.sort(values)
    values.setflags(write=False)
    _NULL_MEMO[key] = values
    return values


def calibrated_threshold(n: int, m: int, *, level: float = LEVEL, samples: int = NULL_SAMPLES,
                         seed: int = 0) -> float:
    """The `level` quantile of s_n on pure noise of shape n x m (`null_statistic`).

    Needs at least 1 / (1 - level) draws (1,000 for the 99.9% quantile): with fewer, the
    quantile is the largest of a few draws, biased low for this right-skewed null (50 draws
    at 128 x 128 let 13% of noise matrices fire instead of 0.1%).
    """
    level = check_float(level, "level", min=0.5, max=1.0, max_open=True)
    _check_calibration_samples(samples, level)
    return float(np.quantile(null_statistic(n, m, samples=samples, seed=seed), level, method="higher"))


def _check_calibration_samples(samples, level) -> int:
    need = math.ceil(round(1.0 / (1.0 - level), 6))
    return check_int(samples, "samples", min=need,
                     why=f"the {level:.1%} quantile of the noise null needs at least {need} draws; "
                         "pass more samples or a lower level")


def threshold(n: int, C: float = 0.4, *, m: int | None = None, method: str = "auto",
              level: float = LEVEL, samples: int = NULL_SAMPLES, seed: int = 0) -> float:
    """Stopping threshold for a layer with n = min(shape) eigenvalues (METHODS §6).

    method="fixed": Meng & Yao's s* = C sqrt(log n) / n^(1/3) (C between 0.4 and 0.6).
    method="calibrated": the `level` quantile of s_n on pure noise of shape n x m, by
    Monte Carlo (`null_statistic`, seeded, cached); needs the other dimension `m`.
    method="auto" (default): the larger of the two when `m` is given, so that pure noise
    exceeds it in at most 1 - level of draws at any shape; the fixed s* when `m` is None.
    """
    n = check_int(n, "n", min=2, why="log n must be positive")
    C = check_float(C, "C", min=0, min_open=True, why="C must be positive (Meng & Yao use 0.4 to 0.6)")
    method = check_choice(method, "method", METHODS)
    if m is not None:  # n becomes min(n, m): m needs the same bound
        m = check_int(m, "m", min=2, why="log min(n, m) must be positive")
        n, m = min(n, m), max(n, m)
    fixed = _fixed(n, C)
    if method == "fixed" or (method == "auto" and m is None):
        return fixed
    if m is None:
        raise ValueError("method='calibrated' needs the layer's other dimension m (threshold(n, m=n0)); "
                         "the null of s_n depends on the aspect ratio c = n / m")
    cal = calibrated_threshold(n, m, level=level, samples=samples, seed=seed)
    return cal if method == "calibrated" else max(fixed, cal)


def null_table(ns=(64, 128, 256, 512, 1024, 2048), cs=(0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0), *,
               C: float = 0.4, samples: int = 200, seed: int = 0):
    """The null of the normalised statistic T = s_n n^(1/3) / sqrt(log n) over (n, c) (METHODS §6).

    Under Meng & Yao's rule the criterion fires when T > C. For each n and c = n / m
    (m = round(n / c)) the table gives the median and the 99% quantile of T on `samples`
    noise matrices, the fraction of draws with T > C (false alarms of the fixed threshold)
    and the calibrated threshold at level `LEVEL` in units of T (cached per cell).
    """
    import pandas as pd

    C = check_float(C, "C", min=0, min_open=True)
    rows = []
    for n in ns:
        for c in cs:
            c = check_float(c, "c", min=0, max=1, min_open=True)
            m = max(int(round(n / c)), int(n))
            s = null_statistic(n, m, samples=samples, seed=seed)
            norm = n ** (1 / 3) / math.sqrt(math.log(n))
            T = s * norm
            rows.append(dict(n=int(n), m=m, c=n / m, T_median=float(np.median(T)),
                             T_q99=float(np.quantile(T, 0.99)), T_max=float(T.max()),
                             false_alarm_fixed=float(np.mean(T > C)),
                             calibrated_T=float(np.quantile(T, LEVEL, method="higher"))))
    return pd.DataFrame(rows)


TYPES = ("LT", "BT", "HT", "RC")


def spectrum_type(W, *, rank_tol: float = 1e-3, collapse_fraction: float = 0.25,
                  max_spikes: int | None = None, heavy_fraction: float = 0.2) -> str:
    """Classify a spectrum as LT, BT, HT or RC (METHODS §6). Operational definition:

    - RC (rank collapse): more than `collapse_fraction` of the singular values are below
      `rank_tol` times the (spikes + 1)-th largest one (so that a few huge spikes on a noise
      bulk do not read as a collapse), or at the numerical-rank tolerance.
    - Otherwise the two-stage MP fit (METHODS §3, with its Tracy-Widom margin and
      goodness of fit) and its outliers:
    - HT (heavy tail): the bulk fails the MP goodness of fit, or there are more outliers
      than `max_spikes` or than `heavy_fraction` of the values, or no bulk can be fitted.
    - LT (light tail, the MP law): no outlier beyond the Tracy-Widom margin of the edge.
    - BT (bulk transition): an MP bulk with 1 to `max_spikes` outliers (default
      max(10, 2% of the values): a K-class problem grows K - 1 spikes, 9 for K = 10).
    """
    W = as_matrix(W, "W", dtype=torch.float64)
    rank_tol = check_float(rank_tol, "rank_tol", min=0, max=1)
    collapse_fraction = check_float(collapse_fraction, "collapse_fraction", min=0, max=1)
    heavy_fraction = check_float(heavy_fraction, "heavy_fraction", min=0, max=1)
    M = min(W.shape)
    if M < mp.MIN_VALUES:
        raise ValueError(f"W has shape {tuple(W.shape)}: {M} singular values are too few to type "
                         f"(need >= {mp.MIN_VALUES} for an MP fit)")
    spikes = max(10, int(0.02 * M)) if max_spikes is None else check_int(max_spikes, "max_spikes", min=0)
    scale = float(W.abs().max())
    if scale == 0:
        return "RC"
    S = spectra.singular_values(W / scale)  # descending, scale-free
    ref = S[min(spikes, M - 1)]
    tol = max(rank_tol * ref, S[0] * max(W.shape) * np.finfo(np.float64).eps)
    if np.mean(S <= tol) > collapse_fraction:
        return "RC"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mp.MPFitWarning)
            fit = mp.fit(S, tuple(W.shape))
    except ValueError as err:
        return "RC" if "rank collapse" in str(err) else "HT"
    k = fit.n_outliers
    if fit.bulk_ok is False or k > spikes or k > heavy_fraction * M:
        return "HT"
    return "LT" if k == 0 else "BT"


class SpectralEarlyStopping:
    """Training callback: records s_n and the spectrum type of monitored layers every epoch.

    Stops training (with `stop=True`) at the first epoch where s_n of any monitored layer
    exceeds its threshold (`threshold(n, C, m=m, method=method)`; the default "auto" is the
    larger of Meng & Yao's s* and the `level` quantile of s_n on noise of the layer's shape,
    so a layer of pure noise does not fire). A `ThresholdWarning` says when the fixed s* is
    not valid for a monitored layer's shape. `records` (a list of dicts, also `to_frame()`)
    holds epoch, layer, n, m, s_n, threshold, fixed_threshold, type, fired; `fired_epoch`
    the first epoch where the criterion fired (None if never).
    """

    def __init__(self, layers, C: float = 0.4, stop: bool = True, types: bool = True, *,
                 method: str = "auto", level: float = LEVEL, samples: int = NULL_SAMPLES, seed: int = 0):
        if isinstance(layers, str):
            layers = [layers]
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("give at least one layer name to monitor")
        for name in self.layers:
            if not isinstance(name, str):
                raise TypeError(f"layer names must be strings (see rmtlib.spectra.layers(model)); got {name!r}")
        self.C = check_float(C, "C", min=0, min_open=True, why="Meng & Yao use 0.4 to 0.6")
        self.method = check_choice(method, "method", METHODS)
        self.level = check_float(level, "level", min=0.5, max=1.0, max_open=True)
        self.samples = check_int(samples, "samples", min=10)
        if self.method != "fixed":
            _check_calibration_samples(self.samples, self.level)
        self.seed = check_int(seed, "seed", min=0)
        self.stop, self.types = bool(stop), bool(types)
        self.records: list[dict] = []
        self.fired_epoch: int | None = None
        self.thresholds: dict[str, float] = {}

    def _threshold(self, name, W):
        if name not in self.thresholds:
            n, m = min(W.shape), max(W.shape)
            fixed = _fixed(n, self.C)
            null = null_statistic(n, m, samples=self.samples, seed=self.seed)
            # with method="fixed" the quantile only goes into the warning's text, so fewer
            # draws than a calibration needs are allowed there
            cal = (float(np.quantile(null, self.level, method="higher")) if self.method == "fixed" else
                   calibrated_threshold(n, m, level=self.level, samples=self.samples, seed=self.seed))
            frac = float(np.mean(null > fixed))
            if frac > 1 - self.level and self.method != "calibrated":
                action = ("using the calibrated threshold instead" if self.method == "auto" else
                          "the criterion will fire on noise: use method='auto' or 'calibrated'")
                warnings.warn(f"layer {name} ({W.shape[0]}x{W.shape[1]}, c = {n / m:.2f}): the fixed "
                              f"threshold s* = {fixed:.4f} (C = {self.C}) is exceeded by pure noise in "
                              f"{frac:.1%} of draws; the {self.level:.1%} quantile of the noise is "
                              f"{cal:.4f}: {action}", ThresholdWarning, stacklevel=3)
            self.thresholds[name] = {"fixed": fixed, "calibrated": cal, "auto": max(fixed, cal)}[self.method]
        return self.thresholds[name]

    def _measure(self, epoch, model):
        fired = False
        for name in self.layers:
            W = spectra.weight_matrix(spectra.get_layer(model, name))
            n = min(W.shape)
            s = spectral_distance(W)
            t = self._threshold(name, W)
            row = dict(epoch=epoch, layer=name, n=n, m=max(W.shape), s_n=s, threshold=t,
                       fixed_threshold=_fixed(n, self.C), fired=s > t)
            if self.types:
                row["type"] = spectrum_type(W)
            self.records.append(row)
            fired |= s > t
        return fired

    def on_train_begin(self, model, history):
        for name in self.layers:  # unknown names fail before training
            spectra.get_layer(model, name)
        self._measure(0, model)

    def on_epoch_end(self, epoch, model, history):
        fired = self._measure(epoch, model)
        if fired and self.fired_epoch is None:
            self.fired_epoch = epoch
            history.record("spectral_early_stopping", epoch, True)
            return self.stop
        return False

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.records)

"""The Marchenko-Pastur law and the two-stage fit of a singular-value spectrum.

METHODS §3. For an N x M matrix (q = M / N <= 1) with i.i.d. entries of standard
deviation s, the singular values fill a bulk between nu_min = sigma (1 - sqrt q) and
nu_max = sigma (1 + sqrt q), sigma = s sqrt(N), with density

    P(nu) = (1/q) / (pi sigma^2 nu) * sqrt((nu_max^2 - nu^2)(nu^2 - nu_min^2)).

A trained layer is a bulk plus outliers; the two-stage fit of Staats et al. (Suppl. C)
finds the bulk without being pulled by the outliers.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

MIN_VALUES = 20  # a fit needs at least this many singular values


def _check_sigma_q(sigma, q):
    if not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number; got {sigma!r}")
    if not (np.isfinite(q) and 0 < q <= 1):
        raise ValueError(f"q = M/N must be in (0, 1]; got {q!r} (use the aspect ratio min/max)")


def edges(sigma: float, q: float) -> tuple[float, float]:
    """Bulk edges (nu_min, nu_max) = sigma (1 -+ sqrt q) of the singular-value MP law."""
    _check_sigma_q(sigma, q)
    return sigma * (1 - math.sqrt(q)), sigma * (1 + math.sqrt(q))


def density(nu, sigma: float, q: float) -> np.ndarray:
    """MP density of singular values (METHODS §3, Staats et al. Suppl. Eq. S2); integrates to 1."""
    lo, hi = edges(sigma, q)
    nu = np.asarray(nu, dtype=float)
    out = np.zeros_like(nu)
    inside = (nu > lo) & (nu < hi) & (nu > 0)
    x = nu[inside]
    out[inside] = np.sqrt((hi**2 - x**2) * (x**2 - lo**2)) / (q * math.pi * sigma**2 * x)
    return out


def eigen_density(x, sigma2: float, c: float) -> np.ndarray:
    """MP density of the eigenvalues of W W^T / N (Meng & Yao; Martin & Mahoney), c <= 1.

    p(x) = sqrt((b - x)(x - a)) / (2 pi c sigma^2 x), a, b = sigma^2 (1 -+ sqrt c)^2.
    """
    _check_sigma_q(math.sqrt(sigma2) if sigma2 > 0 else sigma2, c)
    a, b = sigma2 * (1 - math.sqrt(c)) ** 2, sigma2 * (1 + math.sqrt(c)) ** 2
    x = np.asarray(x, dtype=float)
    out = np.zeros_like(x)
    inside = (x > a) & (x < b) & (x > 0)
    y = x[inside]
    out[inside] = np.sqrt((b - y) * (y - a)) / (2 * math.pi * c * sigma2 * y)
    return out


def sigma_from_entry_std(std: float, shape) -> float:
    """Bulk scale sigma = s sqrt(N) of a matrix with i.i.d. entries of standard deviation s."""
    return float(std) * math.sqrt(max(shape))


def glorot_sigma(shape) -> float:
    """MP scale of a Glorot-uniform matrix: entries U(-a, a), a^2 = 6/(fan_in + fan_out), var a^2/3.

    For a conv kernel reshaped by METHODS §1, fan_in and fan_out include the kernel size;
    pass `(fan_out, fan_in)` in that case.
    """
    n, m = shape
    return sigma_from_entry_std(math.sqrt(2.0 / (n + m)), shape)


def _as_values(singular_values) -> np.ndarray:
    sv = np.asarray(singular_values.cpu() if hasattr(singular_values, "cpu") else singular_values, dtype=float)
    if sv.ndim != 1:
        raise ValueError(f"singular_values must be 1-D; got shape {sv.shape}")
    if not np.all(np.isfinite(sv)) or np.any(sv < 0):
        raise ValueError("singular values must be finite and non-negative")
    return np.sort(sv)


def broaden(singular_values, window: int = 15, grid=None, points: int = 600):
    """Gaussian broadening of a spectrum (Staats et al. Suppl. Eq. S3).

    P(nu) = (1/M) sum_k N(nu; nu_k, sigma_k^2), sigma_k = (nu_{k+a} - nu_{k-a}) / 2 with
    a = `window`, indices clamped at the ends (the edge values are replicated).
    Returns (grid, density).
    """
    sv = _as_values(singular_values)
    M = len(sv)
    if int(window) != window or window < 1:
        raise ValueError(f"window must be a positive integer; got {window!r}")
    if M < 2:
        raise ValueError("broadening needs at least two singular values")
    k = np.arange(M)
    widths = (sv[np.minimum(k + window, M - 1)] - sv[np.maximum(k - window, 0)]) / 2
    floor = max(1e-12, 1e-6 * (sv[-1] - sv[0]))
    widths = np.maximum(widths, floor)
    if grid is None:
        lo = max(0.0, sv[0] - 3 * widths[0])
        grid = np.linspace(lo, sv[-1] + 3 * widths[-1], points)
    grid = np.asarray(grid, dtype=float)
    out = np.zeros_like(grid)
    for start in range(0, M, 512):  # chunks keep memory at grid x 512
        c, w = sv[start : start + 512, None], widths[start : start + 512, None]
        out += (np.exp(-0.5 * ((grid[None, :] - c) / w) ** 2) / (w * math.sqrt(2 * math.pi))).sum(0)
    return grid, out / M


@dataclass
class MPFit:
    """Result of the two-stage MP fit (METHODS §3)."""

    sigma: float
    q: float
    nu_min: float
    nu_max: float
    n_outliers: int
    fraction_outliers: float
    N: int
    M: int
    stage1_nu_min: float
    stage1_nu_max: float
    stage1_height: float
    method: str = "two-stage"

    def density(self, nu) -> np.ndarray:
        return density(nu, self.sigma, self.q)

    def entry_std(self) -> float:
        """Standard deviation of the entries implied by sigma: s = sigma / sqrt(N)."""
        return self.sigma / math.sqrt(self.N)

    def as_dict(self) -> dict:
        return asdict(self)


def _shape_q(shape, count):
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be the matrix shape (n, m); got {shape!r}")
    N, M = max(shape), min(shape)
    if count != M:
        raise ValueError(f"got {count} singular values for a {shape[0]}x{shape[1]} matrix; "
                         f"expected min(n, m) = {M}")
    if M < MIN_VALUES:
        raise ValueError(f"a {shape[0]}x{shape[1]} matrix has only {M} singular values; "
                         f"an MP fit needs at least {MIN_VALUES}")
    return N, M, M / N


def _mp_shape(nu, a, nu_max, nu_min):
    arg = (nu_max**2 - nu**2) * (nu**2 - nu_min**2)
    return a / nu * np.sqrt(np.clip(arg, 0, None))


def _fit_sigma_to_histogram(values, q, lo, hi, sigma0):
    """Least-squares fit of the normalized MP density (sigma free) to a histogram on [lo, hi]."""
    bins = int(np.clip(np.sqrt(len(values)) * 1.5, 10, 80))
    hist, bin_edges = np.histogram(values, bins=bins, range=(lo, hi), density=True)
    # Compare with the density *averaged over each bin* (32 points a bin), not its value at
    # the bin centre: the square-root edges of the MP law otherwise bias sigma by ~0.5%.
    sub = (np.arange(32) + 0.5) / 32
    fine = bin_edges[:-1, None] + sub[None, :] * np.diff(bin_edges)[:, None]

    def model(_, s):
        return density(fine, abs(s), q).mean(axis=1)

    (sigma,), _ = curve_fit(model, np.arange(bins), hist, p0=[sigma0], maxfev=2000)
    return abs(float(sigma))


def fit(singular_values, shape, *, window: int = 15) -> MPFit:
    """Two-stage fit of the MP law to the singular values of an n x m matrix (METHODS §3).

    Stage (i): broaden the spectrum (window 15) and fit the MP-shaped curve
    y = (a / nu) sqrt((nu_max^2 - nu^2)(nu^2 - nu_min^2)), with nu_min pinned to the
    smallest singular value and a, nu_max free, on the points left of the density's peak
    or above 0.7 of it, so that outliers in the tail do not pull the edge.
    Stage (ii): fit the normalized MP density, sigma free, to a normalized histogram of
    the singular values inside [nu_min, nu_max] of stage (i).
    The bulk edges follow from sigma; values above the upper edge are outliers.
    """
    sv = _as_values(singular_values)
    N, M, q = _shape_q(tuple(shape), len(sv))
    nu_min = float(sv[0])
    grid, y = broaden(sv, window=window)
    peak = int(np.argmax(y))
    use = ((np.arange(len(grid)) <= peak) | (y >= 0.7 * y[peak])) & (grid > max(nu_min, 0.0))
    right = grid[use].max()
    lower, upper = grid[peak] * (1 + 1e-6) + 1e-300, 2 * sv[-1] + 1e-300
    nu_max0 = float(np.clip(right + max(right - grid[peak], 1e-12), lower * (1 + 1e-6), upper * (1 - 1e-6)))
    unit = _mp_shape(grid[use], 1.0, nu_max0, nu_min)
    a0 = y[peak] / max(unit.max(), 1e-300)
    try:
        with warnings.catch_warnings():  # the covariance is not used
            warnings.simplefilter("ignore", OptimizeWarning)
            (a, nu_max1), _ = curve_fit(
                lambda x, a, b: _mp_shape(x, a, b, nu_min), grid[use], y[use], p0=[a0, nu_max0],
                bounds=([0, lower], [np.inf, upper]), maxfev=5000,
            )
    except (RuntimeError, ValueError) as err:
        raise RuntimeError(f"stage (i) of the MP fit did not converge ({err}); is this a spectrum "
                           "with a bulk? Plot it with rmtlib.marchenko_pastur.broaden") from err
    # Stage (ii). Refinement: when the fitted bulk edge lies beyond the stage (i) edge, the
    # histogram range is widened to it and the fit repeated, so that bulk values cut off by
    # an edge estimated too low do not bias sigma (converges in one or two rounds).
    hi_range = float(nu_max1)
    sigma = hi_range / (1 + math.sqrt(q))
    for _ in range(5):
        inside = sv[(sv >= nu_min) & (sv <= hi_range)]
        sigma = _fit_sigma_to_histogram(inside, q, nu_min, hi_range, sigma0=sigma)
        new_hi = max(float(nu_max1), edges(sigma, q)[1])
        if np.sum(sv <= new_hi) == len(inside):
            break
        hi_range = new_hi
    lo, hi = edges(sigma, q)
    n_out = int(np.sum(sv > hi))
    return MPFit(sigma, q, lo, hi, n_out, n_out / M, N, M, nu_min, float(nu_max1), float(a))


def fit_naive(singular_values, shape) -> MPFit:
    """The naive estimate, for comparison: sigma from the variance of *all* entries.

    Treating the whole matrix as noise, s^2 = ||W||_F^2 / (N M) and sigma = s sqrt(N), i.e.
    sigma^2 = mean(nu^2) (exact for the MP law). Every outlier adds its nu^2 to the mean,
    so a layer with strong outliers gets a bulk that is too wide.
    """
    sv = _as_values(singular_values)
    N, M, q = _shape_q(tuple(shape), len(sv))
    sigma = float(np.sqrt(np.mean(sv**2)))
    lo, hi = edges(sigma, q)
    n_out = int(np.sum(sv > hi))
    return MPFit(sigma, q, lo, hi, n_out, n_out / M, N, M, float(sv[0]), float(sv[-1]), float("nan"),
                 method="naive")


# --- USVT bulk estimate trusting neither end (METHODS §10) ---------------------------------
# Self-contained on purpose (its own result class and Tracy-Widom margins), so that it does
# not depend on the details of the two-stage fit above.

_USVT_TW1 = {0.9: 0.4501, 0.95: 0.9793, 0.99: 2.0234}  # quantiles of the Tracy-Widom (beta=1) law


@dataclass
class USVTFit:
    """Result of `fit_usvt`: the MP bulk and the deviations counted at both ends."""

    sigma: float
    q: float
    nu_min: float
    nu_max: float
    low_cut: float          # values below it deviate at the low end (0 for a hard edge)
    high_cut: float         # values above it deviate at the high end
    n_low: int
    n_high: int
    N: int
    M: int
    iterations: int
    hard_edge: bool         # lower edge too close to 0 for a low-end count (q near 1)
    method: str = "usvt"

    @property
    def n_outliers(self) -> int:
        """Deviations at the high end (the name the two-stage fit uses)."""
        return self.n_high

    @property
    def fraction_outliers(self) -> float:
        return (self.n_high + self.n_low) / self.M

    def density(self, nu) -> np.ndarray:
        return density(nu, self.sigma, self.q)

    def entry_std(self) -> float:
        return self.sigma / math.sqrt(self.N)

    def low_mask(self, singular_values) -> np.ndarray:
        """True where a value deviates at the low end (below low_cut)."""
        return np.asarray(singular_values, dtype=float) < self.low_cut

    def high_mask(self, singular_values) -> np.ndarray:
        """True where a value deviates at the high end (above high_cut)."""
        return np.asarray(singular_values, dtype=float) > self.high_cut

    def as_dict(self) -> dict:
        return asdict(self)


def edge_scales(sigma: float, q: float, N: int) -> tuple[float, float]:
    """Tracy-Widom fluctuation scales of the smallest and largest singular value of noise.

    For eigenvalues of W^T W the soft edges fluctuate on the scale
    sigma^2 (1 -+ sqrt q)^(4/3) q^(-1/6) N^(-2/3) (Johnstone 2001 at the top; Feldheim &
    Sodin 2010 at the bottom, q < 1); with d nu = d lambda / (2 nu) the singular values
    fluctuate on (sigma / 2)(1 -+ sqrt q)^(1/3) q^(-1/6) N^(-2/3). Returns (bottom, top).
    """
    _check_sigma_q(sigma, q)
    base = 0.5 * sigma * q ** (-1 / 6) * N ** (-2 / 3)
    return base * (1 - math.sqrt(q)) ** (1 / 3), base * (1 + math.sqrt(q)) ** (1 / 3)


def fit_usvt(singular_values, shape, *, level: float = 0.99, max_iter: int = 50) -> USVTFit:
    """MP bulk scale from a USVT-style adaptive noise-variance estimate (METHODS §10).

    What is implemented. Chatterjee's universal singular value thresholding (USVT) keeps
    the singular values of Y = signal + noise above a threshold proportional to the noise
    scale; Azadkia (arXiv:1801.10015) makes it adaptive by estimating the noise variance
    from the part of the spectrum below the threshold and iterating. Written from that
    description (the paper's text was not available here), for an N x M matrix:

    1. start from the naive scale sigma_0^2 = mean(nu^2) (the whole matrix taken as noise);
    2. threshold at the MP upper edge plus a Tracy-Widom margin,
       t_hi = sigma_t (1 + sqrt q) + z_level * top_scale (`edge_scales`); the k_hi values above
       it are signal;
    3. below the lower edge minus its margin, t_lo = sigma_t (1 - sqrt q) - z_level *
       bottom_scale, the k_lo values are signal too (when t_lo <= 0 the lower edge is hard,
       as for square matrices, and k_lo = 0);
    4. re-estimate the noise variance from the residual energy,
       s^2 = sum_{bulk} nu^2 / ((N - k_hi)(M - k_hi - k_lo)),  sigma_{t+1} = s sqrt(N)
       (a rank-k_hi spike removes a row and a column of noise, a direction scaled down on
       one side removes one column);
    5. repeat 2-4 until (k_lo, k_hi) stop changing.

    Why it trusts neither end: values above the bulk are excluded from the energy once the
    threshold has found them, and values below the bulk carry almost no energy (nu^2 is
    small), so a depleted low end biases sigma only by O(k_lo / M). `level` is the TW1
    quantile of the margins (0.9, 0.95 or 0.99): on pure noise the largest value crosses
    the upper cut with probability about 1 - level.
    """
    sv = _as_values(singular_values)
    N, M, q = _shape_q(tuple(shape), len(sv))
    if level not in _USVT_TW1:
        raise ValueError(f"level must be one of {sorted(_USVT_TW1)}; got {level!r}")
    if int(max_iter) != max_iter or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer; got {max_iter!r}")
    z = _USVT_TW1[level]
    if sv[-1] <= 0:
        raise ValueError("all singular values are zero: a zero matrix has no bulk to fit")
    sigma = float(np.sqrt(np.mean(sv**2)))
    seen, k_lo, k_hi = set(), 0, 0
    it = 0
    for it in range(1, int(max_iter) + 1):
        lo, hi = edges(sigma, q)
        s_lo, s_hi = edge_scales(sigma, q, N)
        t_lo, t_hi = lo - z * s_lo, hi + z * s_hi
        k_hi = int(np.sum(sv > t_hi))
        k_lo = int(np.sum(sv < t_lo)) if t_lo > 0 else 0
        if k_hi + k_lo >= M - 1:
            raise RuntimeError(f"USVT found {k_hi + k_lo} of {M} values outside the bulk; "
                               "this spectrum has no MP bulk to estimate")
        bulk = sv[k_lo : M - k_hi]
        new = math.sqrt(float(np.sum(bulk**2)) / ((N - k_hi) * (M - k_hi - k_lo)) * N)
        key = (k_lo, k_hi)
        if key in seen and abs(new - sigma) <= 1e-12 * sigma:
            break
        if key in seen and it > 3 and abs(new - sigma) <= 1e-9 * sigma:
            break
        seen.add(key)
        sigma = new
    lo, hi = edges(sigma, q)
    s_lo, s_hi = edge_scales(sigma, q, N)
    t_lo, t_hi = lo - z * s_lo, hi + z * s_hi
    hard = t_lo <= 0
    low_cut = 0.0 if hard else t_lo
    n_low = int(np.sum(sv < low_cut))
    n_high = int(np.sum(sv > t_hi))
    return USVTFit(sigma, q, lo, hi, low_cut, t_hi, n_low, n_high, N, M, it, bool(hard))

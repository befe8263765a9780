"""The Marchenko-Pastur law and the two-stage fit of a singular-value spectrum.

METHODS §3. For an N x M matrix (q = M / N <= 1) with i.i.d. entries of standard
deviation s, the singular values fill a bulk between nu_min = sigma (1 - sqrt q) and
nu_max = sigma (1 + sqrt q), sigma = s sqrt(N), with density

    P(nu) = (1/q) / (pi sigma^2 nu) * sqrt((nu_max^2 - nu^2)(nu^2 - nu_min^2)).

A trained layer is a bulk plus outliers; the two-stage fit of Staats et al. (Suppl. C)
finds the bulk without being pulled by the outliers.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import OptimizeWarning, brentq, curve_fit
from scipy.special import airy, ndtri

from ._io import cache_dir, load_values, save_values
from .validation import as_array, as_numpy, as_vector, check_float, check_int

MIN_VALUES = 20  # a fit needs at least this many singular values


class MPFitError(ValueError, RuntimeError):
    """The two-stage fit found no MP bulk (a ValueError; also a RuntimeError for old callers)."""


class MPFitWarning(UserWarning):
    """The fitted bulk does not follow the MP law (goodness of fit failed)."""


def _points(x, name):
    """Evaluation points through the input door, keeping the caller's shape (0-d stays 0-d);
    NaN/Inf allowed (a density is 0 there)."""
    shape = np.shape(x)
    return as_numpy(as_array(x, name, finite=False)).reshape(shape)


def _check_sigma_q(sigma, q):
    sigma = check_float(sigma, "sigma", min=0, min_open=True, why="the MP bulk scale is positive")
    q = check_float(q, "q", min=0, max=1, min_open=True,
                    why="q = M/N is the aspect ratio min/max of the matrix")
    if not math.isfinite(sigma * (1 + math.sqrt(q))):
        raise ValueError(f"sigma = {sigma!r} is too large: the bulk's upper edge sigma (1 + sqrt q) "
                         f"overflows float64; divide the matrix (and sigma) by a constant first")
    return sigma, q


def edges(sigma: float, q: float) -> tuple[float, float]:
    """Bulk edges (nu_min, nu_max) = sigma (1 -+ sqrt q) of the singular-value MP law."""
    sigma, q = _check_sigma_q(sigma, q)
    return sigma * (1 - math.sqrt(q)), sigma * (1 + math.sqrt(q))


def density(nu, sigma: float, q: float) -> np.ndarray:
    """MP density of singular values (METHODS §3, Staats et al. Suppl. Eq. S2); integrates to 1."""
    lo, hi = edges(sigma, q)
    nu = _points(nu, "nu")
    out = np.zeros_like(nu)
    inside = (nu > lo) & (nu < hi) & (nu > 0)
    x = nu[inside] / sigma  # in units of sigma: no overflow for huge or tiny scales
    l, h = lo / sigma, hi / sigma
    out[inside] = np.sqrt((h**2 - x**2) * (x**2 - l**2)) / (q * math.pi * x) / sigma
    return out


def eigen_density(x, sigma2: float, c: float) -> np.ndarray:
    """MP density of the eigenvalues of W W^T / N (Meng & Yao; Martin & Mahoney), c <= 1.

    p(x) = sqrt((b - x)(x - a)) / (2 pi c sigma^2 x), a, b = sigma^2 (1 -+ sqrt c)^2.
    """
    sigma2 = check_float(sigma2, "sigma2", min=0, min_open=True, why="the MP variance is positive")
    _check_sigma_q(1.0, c)
    a, b = (1 - math.sqrt(c)) ** 2, (1 + math.sqrt(c)) ** 2  # the edges in units of sigma^2
    x = _points(x, "x")
    out = np.zeros_like(x)
    y = x / sigma2  # in units of sigma^2: the edges cannot overflow for huge sigma2
    inside = (y > a) & (y < b) & (x > 0)
    y = y[inside]
    out[inside] = np.sqrt((b - y) * (y - a)) / (2 * math.pi * c * y) / sigma2
    return out


def _mp_primitive(x, a, b):
    """G(x) with G' = sqrt((b - x)(x - a)) / x on [a, b] (the MP distribution function's core).

    G(x) = R + (a + b)/2 * asin((2x - a - b)/(b - a)) - sqrt(ab) * asin(((a + b)x - 2ab)/(x(b - a))),
    R = sqrt((b - x)(x - a)); the arcsines are written as atan2 of their numerator and
    sqrt(1 - arg^2) (both known in closed form), which keeps full precision at the edges.
    """
    R = np.sqrt(np.clip((b - x) * (x - a), 0, None))
    out = R + (a + b) / 2 * np.arctan2(2 * x - a - b, 2 * R)
    if a > 0:
        out = out - math.sqrt(a * b) * np.arctan2((a + b) * x - 2 * a * b, 2 * math.sqrt(a * b) * R)
    return out


def eigen_cdf(x, sigma2: float, c: float) -> np.ndarray:
    """Distribution function of the eigenvalue MP law, F(x) = integral_a^x p(t) dt, in closed form.

    F(x) = (G(x) - G(a)) / (2 pi c sigma^2) with G the primitive of sqrt((b - t)(t - a)) / t
    (see `_mp_primitive`); exact also for c = 1, where p has an inverse-square-root
    singularity at a = 0. 0 below a, 1 above b.
    """
    sigma2 = check_float(sigma2, "sigma2", min=0, min_open=True, why="the MP variance is positive")
    _check_sigma_q(1.0, c)
    x = _points(x, "x")
    return _eigen_cdf_unit(np.nan_to_num(x / sigma2, nan=0.0, posinf=np.inf, neginf=0.0), float(c))


def _eigen_cdf_unit(y, c):
    """`eigen_cdf` for sigma^2 = 1 on a numpy array, without input checks (inner loops)."""
    a, b = (1 - math.sqrt(c)) ** 2, (1 + math.sqrt(c)) ** 2
    y = np.clip(y, a, b)
    g_a = -(a + b) * math.pi / 4 + (math.sqrt(a * b) * math.pi / 2 if a > 0 else 0.0)
    return np.clip((_mp_primitive(y, a, b) - g_a) / (2 * math.pi * c), 0.0, 1.0)


def cdf(nu, sigma: float, q: float) -> np.ndarray:
    """Distribution function of the singular-value MP law: P(nu' <= nu) = eigen_cdf(nu^2, sigma^2, q).

    Singular values are non-negative: the distribution function is 0 for nu < 0.
    """
    sigma, q = _check_sigma_q(sigma, q)
    nu = _points(nu, "nu")
    return np.where(nu < 0, 0.0, eigen_cdf(np.abs(nu / sigma) ** 2, 1.0, q))[()]  # 0-d in, scalar out


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


# --------------------------------------------------------------------------- Tracy-Widom
@functools.lru_cache(maxsize=64)
def tw1_cdf(s: float, nodes: int = 60) -> float:
    """Distribution function of the Tracy-Widom law TW1 (GOE, beta = 1).

    F1(s) = det(I - K1) on L^2(s, inf) with K1(x, y) = Ai((x + y)/2) / 2 (Ferrari & Spohn;
    Sasamoto), evaluated by Bornemann's Nystrom method: Gauss-Legendre nodes on
    [s, s + 16] (the Airy kernel is below 1e-20 beyond). Accurate to about 1e-8; it
    reproduces the tabulated percentiles of Tracy & Widom (Johnstone 2001, Table 1:
    0.90 -> 0.45, 0.95 -> 0.98, 0.99 -> 2.02) and the mean -1.2065.
    """
    s = check_float(s, "s")
    if s >= 15:  # 1 - F1(s) ~ exp(-(2/3) s^(3/2)) < 1e-16
        return 1.0
    if s <= -20:  # F1(s) ~ exp(-|s|^3 / 24) < 1e-140
        return 0.0
    x, w = np.polynomial.legendre.leggauss(nodes)
    x = s + (x + 1) * 8.0
    w = w * 8.0
    K = 0.5 * airy((x[:, None] + x[None, :]) / 2)[0]
    sw = np.sqrt(w)
    return float(np.clip(np.linalg.det(np.eye(nodes) - sw[:, None] * K * sw[None, :]), 0.0, 1.0))


@functools.lru_cache(maxsize=32)
def tw1_quantile(p: float) -> float:
    """The p-quantile of TW1 (e.g. 0.99 -> 2.0234), by root finding on `tw1_cdf`."""
    p = check_float(p, "p", min=1e-6, max=1 - 1e-9, why="a probability strictly inside (0, 1)")
    return float(brentq(lambda s: tw1_cdf(s) - p, -10.0, 12.0, xtol=1e-10))


def tw_scale(sigma: float, shape) -> float:
    """Tracy-Widom scale of the largest singular value of an N x M noise matrix (METHODS §3).

    s_TW = (sigma / 2) (1 + sqrt q)^(1/3) q^(-1/6) N^(-2/3): Johnstone's centring and scaling
    of the largest eigenvalue of W^T W, mu = (sqrt N + sqrt M)^2,
    s = (sqrt N + sqrt M)(1/sqrt N + 1/sqrt M)^(1/3), carried to nu = sqrt(lambda) by
    d nu = d lambda / (2 sqrt mu), in units where sigma = s_entry sqrt N.
    """
    sigma, _ = _check_sigma_q(sigma, 0.5)
    N, M = _check_shape(shape)
    q = M / N
    return sigma / 2 * (1 + math.sqrt(q)) ** (1 / 3) * q ** (-1 / 6) * N ** (-2 / 3)


# --------------------------------------------------------------------------- simulated spectra
def sample_spectrum(shape, rng) -> np.ndarray:
    """Singular values (ascending) of an N x M matrix of i.i.d. N(0, 1/N) entries (sigma = 1).

    Drawn through the bidiagonal model of Dumitriu & Edelman (2002): W W^T (M x N, M <= N)
    has the eigenvalues of B B^T, B lower bidiagonal with B_ii ~ chi_(N - i + 1) and
    B_(i+1,i) ~ chi_(M - i), i = 1..M; an exact equality in distribution that costs O(M^2)
    instead of an SVD. `rng` is a numpy Generator (or a seed).
    """
    from scipy.linalg import eigvalsh_tridiagonal

    N, M = _check_shape(shape)
    rng = np.random.default_rng(rng)
    d = np.sqrt(rng.chisquare(np.arange(N, N - M, -1, dtype=float)))
    s = np.sqrt(rng.chisquare(np.arange(M - 1, 0, -1, dtype=float))) if M > 1 else np.zeros(0)
    diag = d**2
    diag[1:] += s**2
    lam = eigvalsh_tridiagonal(diag, s * d[:-1]) if M > 1 else diag
    return np.sqrt(np.clip(np.sort(lam), 0, None) / N)


# --------------------------------------------------------------------------- broadening
def _as_values(singular_values, name: str = "singular_values") -> np.ndarray:
    sv = as_numpy(as_vector(singular_values, name))
    if np.any(sv < 0):
        raise ValueError(f"{name} must be non-negative (singular values); got {int(np.sum(sv < 0))} "
                         "negative entries: pass the singular values, not eigenvalues of a "
                         "non-symmetric matrix or a signed vector")
    return np.sort(sv)


def _widths(sv, window):
    M = len(sv)
    k = np.arange(M)
    widths = (sv[np.minimum(k + window, M - 1)] - sv[np.maximum(k - window, 0)]) / 2
    floor = max(1e-300, 1e-6 * (sv[-1] - sv[0]), 1e-12 * sv[-1])
    return np.maximum(widths, floor)


def broaden(singular_values, window: int = 15, grid=None, points: int = 600):
    """Gaussian broadening of a spectrum (Staats et al. Suppl. Eq. S3).

    P(nu) = (1/M) sum_k N(nu; nu_k, sigma_k^2), sigma_k = (nu_{k+a} - nu_{k-a}) / 2 with
    a = `window`, indices clamped at the ends (the edge values are replicated).
    Returns (grid, density); the default grid spans the whole spectrum.
    """
    sv = _as_values(singular_values)
    window = check_int(window, "window", min=1)
    points = check_int(points, "points", min=2)
    M = len(sv)
    if M < 2:
        raise ValueError("broadening needs at least two singular values")
    widths = _widths(sv, window)
    if grid is None:
        lo = max(0.0, sv[0] - 3 * widths[0])
        grid = np.linspace(lo, sv[-1] + 3 * widths[-1], points)
    grid = as_numpy(as_vector(grid, "grid"))
    return grid, _broadened(sv, widths, grid)


def _broadened(sv, widths, grid):
    """(1/M) sum_k N(grid; nu_k, sigma_k^2), each Gaussian cut at 8 sigma_k.

    The cut changes the sum by less than exp(-32) ~ 1e-14 of a peak; on an ascending grid
    each chunk of neighbouring values touches only the grid points within reach, which
    saves most of the exponentials (the MP fit spends its time here).
    """
    out = np.zeros_like(grid)
    M = len(sv)
    ascending = bool(np.all(np.diff(grid) >= 0))
    step = 64 if ascending else 512  # chunks keep memory at grid x chunk
    for start in range(0, M, step):
        c, w = sv[start : start + step, None], widths[start : start + step, None]
        lo, hi = 0, len(grid)
        if ascending:
            lo = int(np.searchsorted(grid, float((c - 8 * w).min()), side="left"))
            hi = int(np.searchsorted(grid, float((c + 8 * w).max()), side="right"))
            if hi <= lo:
                continue
        g = grid[None, lo:hi]
        out[lo:hi] += (np.exp(-0.5 * ((g - c) / w) ** 2) / w).sum(0)
    return out / (M * math.sqrt(2 * math.pi))


def _bulk_grid(sv, widths, points):
    """Grid for stage (i): the bulk, not the whole spectrum.

    A grid over [0, nu_1] gives an outlier at 10^3 sigma all the points and the bulk none.
    The bulk of an MP law reaches at most ~1.4 times as far above its median as the median
    lies above the lowest values (q = 1: edge 2 sigma, median 0.85 sigma), so the grid ends
    at median + 6 (median - 5%-quantile), unaffected by spikes up to half of the values.
    """
    med = float(np.median(sv))
    low = float(np.quantile(sv, 0.05))
    lo = max(0.0, sv[0] - 3 * widths[0])
    hi = sv[-1] + 3 * widths[-1]
    robust = med + 6 * max(med - low, 1e-3 * med)
    return np.linspace(lo, min(hi, robust), points)

@dataclass
class MPFit:
    """Result of the two-stage MP fit (METHODS §3).

    sigma = s sqrt(N) for the whole N x M matrix (s the noise entries' std), q = M / N.
    With k outliers the bulk is the MP law of an (N - k) x (M - k) matrix (`n_bulk_shape`,
    `bulk_sigma`, `bulk_q`); nu_min, nu_max are its edges and `density` is that law. Outliers are the values above
    `outlier_threshold` = nu_max + tw_margin (a Tracy-Widom fluctuation of the largest bulk
    value, `tw_level` quantile of TW1 times `tw_scale`). Goodness of fit of the bulk:
    `gof_distance` (KS distance between the values at or below the outlier threshold and the
    nearest MP law of the bulk's aspect ratio), judged against simulated noise matrices of the same shape fitted the
    same way: `gof_threshold` (the null's `GOF_LEVEL` quantile, log-normal fit to the null),
    `gof_pvalue` (empirical), `bulk_ok` (distance <= threshold; None when not judged).
    """

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
    tw_margin: float = 0.0
    tw_level: float = float("nan")
    gof_distance: float = float("nan")
    gof_threshold: float = float("nan")
    gof_pvalue: float = float("nan")
    bulk_ok: bool | None = None
    n_bulk_shape: tuple = ()

    @property
    def bulk_sigma(self) -> float:
        """Scale of the bulk law: the MP law of the (N - k) x (M - k) matrix left by k outliers."""
        Nb = self.n_bulk_shape[0] if self.n_bulk_shape else self.N
        return self.sigma * math.sqrt(Nb / self.N)

    @property
    def bulk_q(self) -> float:
        Nb, Mb = self.n_bulk_shape if self.n_bulk_shape else (self.N, self.M)
        return Mb / Nb

    @property
    def outlier_threshold(self) -> float:
        return self.nu_max + self.tw_margin

    def density(self, nu) -> np.ndarray:
        """The fitted bulk law (normalized), between nu_min and nu_max."""
        return density(nu, self.bulk_sigma, self.bulk_q)

    def entry_std(self) -> float:
        """Standard deviation of the entries implied by sigma: s = sigma / sqrt(N)."""
        return self.sigma / math.sqrt(self.N)

    def as_dict(self) -> dict:
        return asdict(self)


def _check_shape(shape):
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be the matrix shape (n, m); got {shape!r}") from None
    if len(dims) != 2:
        raise ValueError(f"shape must be the matrix shape (n, m); got {shape!r}")
    n = check_int(dims[0], "shape[0]", min=1)
    m = check_int(dims[1], "shape[1]", min=1)
    return max(n, m), min(n, m)


def _shape_q(shape, count):
    N, M = _check_shape(shape)
    if count != M:
        raise ValueError(f"got {count} singular values for a {shape[0]}x{shape[1]} matrix; "
                         f"expected min(n, m) = {M}")
    if M < MIN_VALUES:
        raise ValueError(f"a {shape[0]}x{shape[1]} matrix has only {M} singular values; "
                         f"an MP fit needs at least {MIN_VALUES}")
    return N, M, M / N


def _check_rank(sv):
    """Refuse a collapsed spectrum: zero matrix, constant or low-rank matrix (sv ascending)."""
    # zero: below 1e-6 of the median (a square noise matrix has its smallest value near
    # sigma / N, and two such values below 1e-6 sigma are practically impossible), or below
    # the float64 numerical-rank level 1e-10 of the largest value
    med = float(np.median(sv))
    tiny = int(np.sum((sv <= 1e-6 * med) | (sv <= 1e-10 * sv[-1])))  # a median of 0: its zeros
    if tiny >= 2:
        raise ValueError(f"rank collapse: {tiny} of {len(sv)} singular values are zero (below 1e-6 of "
                         "the median or 1e-10 of the largest); an MP bulk needs a full-rank noise matrix. A zero, constant "
                         "or low-rank matrix has no bulk to fit (rmtlib.early_stopping.spectrum_type "
                         "calls this type 'RC')")


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
    lo_q, hi_q = 1 - math.sqrt(q), 1 + math.sqrt(q)

    def model(_, s):
        s = abs(s) + 1e-300
        x = fine / s
        inside = (x > lo_q) & (x < hi_q)
        y = np.where(inside, np.sqrt(np.clip((hi_q**2 - x**2) * (x**2 - lo_q**2), 0, None))
                     / (q * math.pi * np.where(inside, x, 1.0)) / s, 0.0)
        return y.mean(axis=1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        (sigma,), _ = curve_fit(model, np.arange(bins), hist, p0=[sigma0], maxfev=2000)
    return abs(float(sigma))


TW_LEVEL = 0.99  # outliers lie beyond the edge + the 99% quantile of TW1 fluctuations
GOF_LEVEL = 0.9999  # a bulk fails the goodness of fit beyond this quantile of its null
GOF_SAMPLES = 50
GOF_VERSION = 2  # bump when the fit or the distance changes: cached nulls of older versions are not used


def _two_stage(sv, N, M, q, window, tw_level):
    """The fit on ascending singular values of scale ~1; returns MPFit without the GoF."""
    nu_min = float(sv[0])
    widths = _widths(sv, window)
    grid = _bulk_grid(sv, widths, 600)
    y = _broadened(sv, widths, grid)
    peak = int(np.argmax(y))
    use = ((np.arange(len(grid)) <= peak) | (y >= 0.7 * y[peak])) & (grid > max(nu_min, 0.0))
    if np.sum(use) < 3:
        raise MPFitError("stage (i) of the MP fit found no bulk to fit (fewer than 3 grid points left "
                         "of the density's peak); is this a spectrum with a bulk? Plot it with "
                         "rmtlib.marchenko_pastur.broaden")
    right = grid[use].max()
    lower = grid[peak] * (1 + 1e-6) + 1e-300
    upper = max(2 * sv[-1], lower * 4)
    nu_max0 = float(np.clip(right + max(right - grid[peak], 1e-12), lower * (1 + 1e-6), upper * (1 - 1e-6)))
    unit = _mp_shape(grid[use], 1.0, nu_max0, nu_min)
    a0 = y[peak] / max(unit.max(), 1e-300)
    try:
        with warnings.catch_warnings():  # the covariance is not used
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            (a, nu_max1), _ = curve_fit(
                lambda x, a, b: _mp_shape(x, a, b, nu_min), grid[use], y[use], p0=[a0, nu_max0],
                bounds=([0, lower], [np.inf, upper]), maxfev=5000,
            )
    except (RuntimeError, ValueError, np.linalg.LinAlgError) as err:
        raise MPFitError(f"stage (i) of the MP fit did not converge ({err}); is this a spectrum "
                         "with a bulk? Plot it with rmtlib.marchenko_pastur.broaden") from err
    # Stage (ii), then the outliers. With k outliers the bulk is the MP law of an
    # (N - k) x (M - k) matrix (METHODS §3): its edge lies lower by the factor
    # (sqrt(N-k) + sqrt(M-k)) / (sqrt N + sqrt M). Once k is counted the bulk law of that
    # shape is refitted to the other values, and sigma reported for the whole matrix,
    # sigma = sigma_bulk sqrt(N / (N - k)) = s sqrt(N) (entry std s); repeated until k is stable.
    sigma_b = _stage2(sv, q, nu_min, float(nu_max1), float(nu_max1) / (1 + math.sqrt(q)))
    t_p = tw1_quantile(tw_level)
    k = 0
    for _ in range(4):
        qk = (M - k) / (N - k)
        hi = sigma_b * (1 + math.sqrt(qk))
        margin = t_p * tw_scale(sigma_b, (N - k, M - k))
        n_out = int(np.sum(sv > hi + margin))
        if n_out == k or n_out > M // 2:  # stable, or no bulk to speak of (HT): keep it
            break
        shift = 1 - (math.sqrt(N - n_out) + math.sqrt(M - n_out)) / (math.sqrt(N - k) + math.sqrt(M - k))
        k = n_out
        if abs(shift) > 2e-3:  # refit only when the bulk's edge moves by more than 0.2%
            sigma_b = _stage2(sv[: M - k], (M - k) / (N - k), nu_min, hi, sigma_b)
    qk = (M - k) / (N - k)
    lo, hi = sigma_b * (1 - math.sqrt(qk)), sigma_b * (1 + math.sqrt(qk))
    margin = t_p * tw_scale(sigma_b, (N - k, M - k))
    n_out = int(np.sum(sv > hi + margin))
    sigma = sigma_b * math.sqrt(N / (N - k))
    return MPFit(sigma, q, lo, hi, n_out, n_out / M, N, M, nu_min, float(nu_max1), float(a),
                 tw_margin=margin, tw_level=tw_level, n_bulk_shape=(N - k, M - k))


def _stage2(sv, q, nu_min, hi_range, sigma):
    """Stage (ii): sigma of the normalized MP density (aspect ratio q) fitted to a histogram of
    the values in [nu_min, hi_range]. When the fitted edge lies beyond hi_range, the range is
    widened to it and the fit repeated, so that bulk values cut off by an edge estimated too
    low do not bias sigma (converges in one or two rounds)."""
    for _ in range(5):
        inside = sv[(sv >= nu_min) & (sv <= hi_range)]
        if len(inside) < 3 or not hi_range > nu_min:
            raise MPFitError(f"stage (i) left {len(inside)} values inside the bulk; no MP bulk to fit")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                sigma = _fit_sigma_to_histogram(inside, q, nu_min, hi_range, sigma0=sigma)
        except (RuntimeError, ValueError, np.linalg.LinAlgError) as err:
            raise MPFitError(f"stage (ii) of the MP fit did not converge ({err})") from err
        if not (math.isfinite(sigma) and sigma > 0):
            raise MPFitError(f"stage (ii) of the MP fit gave sigma = {sigma}; no MP bulk to fit")
        new_hi = max(hi_range, sigma * (1 + math.sqrt(q)))
        if np.sum(sv <= new_hi) == len(inside):
            break
        hi_range = new_hi
    return sigma


def ks_to_mp(values, sigma: float, q: float) -> float:
    """KS distance between sample values and the singular-value MP law (sigma, q).

    D = max_i max(i/n - F(x_(i)), F(x_(i)) - (i-1)/n), F = `cdf`.
    """
    sigma, q = _check_sigma_q(sigma, q)
    x = np.sort(as_numpy(as_vector(values, "values")))
    return _ks_unit(x / sigma, q)


def _ks_unit(x, q):
    """KS distance of sorted values x (in units of sigma) to the MP law (1, q); no checks."""
    n = len(x)
    F = _eigen_cdf_unit(x**2, q)
    i = np.arange(1, n + 1)
    return float(np.max(np.maximum(i / n - F, F - (i - 1) / n)))


def _bulk_distance(sv, fit):
    """KS distance of the bulk (values up to the outlier threshold) to the nearest MP law of the
    bulk's aspect ratio: min over s in [0.95, 1.05] of D(bulk, MP(s bulk_sigma, bulk_q)).

    Minimising over the scale removes the error of the fitted sigma, which otherwise dominates
    the distance on pure noise (its null is then about 1.5 times tighter); what remains
    measures the shape of the bulk, which heavy-tailed entries change.
    """
    from scipy.optimize import minimize_scalar

    bulk = sv[sv <= fit.outlier_threshold]
    if len(bulk) < 2:
        return 1.0
    x, q = bulk / fit.bulk_sigma, fit.bulk_q
    res = minimize_scalar(lambda s: _ks_unit(x / s, q), bounds=(0.95, 1.05), method="bounded",
                          options=dict(xatol=2e-4))  # D moves by < 2e-4 x density
    return float(min(res.fun, _ks_unit(x, q)))


def _gof_path(N, M, samples, seed, window, tw_level):
    return cache_dir("mp_gof_null") / f"v{GOF_VERSION}_N{N}_M{M}_K{samples}_seed{seed}_w{window}_tw{tw_level:g}.json"


_GOF_MEMO: dict = {}


def gof_null(shape, *, samples: int = GOF_SAMPLES, seed: int = 0, window: int = 15,
             tw_level: float = TW_LEVEL, cache: bool = True) -> np.ndarray:
    """Null distribution of the bulk's KS distance for a noise matrix of this shape (METHODS §3).

    `samples` spectra of N x M Gaussian matrices (`sample_spectrum`, seeded by (seed, N, M))
    are fitted by the same two-stage fit and their bulk KS distances returned, sorted and
    read-only. Cached as JSON under the rmtlib cache (`RMTLIB_CACHE`); a damaged file is rebuilt.
    """
    N, M = _check_shape(shape)
    if M < MIN_VALUES:
        raise ValueError(f"a {N}x{M} matrix has only {M} singular values; an MP fit needs at least {MIN_VALUES}")
    samples = check_int(samples, "samples", min=5, why="a null needs a few draws")
    seed = check_int(seed, "seed", min=0)
    window = check_int(window, "window", min=1)
    tw_level = check_float(tw_level, "tw_level", min=0.5, max=0.9999)
    key = (GOF_VERSION, N, M, samples, seed, window, tw_level)
    if key in _GOF_MEMO:
        return _GOF_MEMO[key]
    path = _gof_path(*key[1:])
    values = load_values(path, key, "distances", samples) if cache else None
    if values is None:
        rng = np.random.default_rng([seed, N, M])
        out = []
        for _ in range(samples):
            sv = sample_spectrum((N, M), rng)
            try:
                f = _two_stage(sv, N, M, M / N, window, tw_level)
                out.append(_bulk_distance(sv, f))
            except MPFitError:
                out.append(1.0)
        values = np.sort(np.asarray(out))
        if cache:
            save_values(path, key, "distances", values)
    values = np.sort(values)
    values.setflags(write=False)
    _GOF_MEMO[key] = values
    return values


def _judge(distance, null, level=GOF_LEVEL):
    """Threshold: the `level` quantile of a log-normal fitted to the null distances (their
    tail is too thin in a few dozen draws to read a 0.1% quantile directly); empirical p."""
    logs = np.log(np.maximum(null, 1e-300))
    thr = float(np.exp(logs.mean() + ndtri(level) * logs.std(ddof=1)))
    p = float((1 + np.sum(null >= distance)) / (1 + len(null)))
    return thr, p


def fit(singular_values, shape, *, window: int = 15, tw_level: float = TW_LEVEL, gof: bool = True,
        gof_samples: int = GOF_SAMPLES, seed: int = 0, warn: bool = True) -> MPFit:
    """Two-stage fit of the MP law to the singular values of an n x m matrix (METHODS §3).

    Stage (i): broaden the spectrum (window 15) and fit the MP-shaped curve
    y = (a / nu) sqrt((nu_max^2 - nu^2)(nu^2 - nu_min^2)), with nu_min pinned to the
    smallest singular value and a, nu_max free, on the points left of the density's peak
    or above 0.7 of it, so that outliers in the tail do not pull the edge. The grid of
    the broadened density covers the bulk (median + 6 x (median - 5% quantile)), not the
    outliers, so that one value at 10^4 sigma does not starve the bulk of grid points.
    Stage (ii): fit the normalized MP density, sigma free, to a normalized histogram of
    the singular values inside [nu_min, nu_max] of stage (i).
    Outliers: values above nu_max + t_p s_TW, t_p the `tw_level` quantile of TW1
    (`tw1_quantile`, 2.02 for 0.99) and s_TW = `tw_scale` (a pure-noise spectrum has an
    outlier in about 1 - tw_level of draws, plus what the error of the fitted edge adds).
    Goodness of fit (`gof=True`): the KS distance of the bulk to the fitted law, judged
    against `gof_samples` simulated noise spectra of the same shape (`gof_null`, cached): the distance to the nearest MP law of the bulk's shape
    (scale refitted), so it measures the shape, not the fitted scale;
    a failing bulk (heavy-tailed entries, for example) gives `bulk_ok=False` and, with
    `warn=True`, an `MPFitWarning`. A zero or low-rank matrix raises a "rank collapse" ValueError.
    """
    sv = _as_values(singular_values)
    N, M, q = _shape_q(shape, len(sv))
    window = check_int(window, "window", min=1)
    tw_level = check_float(tw_level, "tw_level", min=0.5, max=0.9999)
    _check_rank(sv)
    scale = float(sv[-1])  # the fit runs in units of the largest value: no overflow or underflow
    res = _two_stage(sv / scale, N, M, q, window, tw_level)
    for name in ("sigma", "nu_min", "nu_max", "stage1_nu_min", "stage1_nu_max", "tw_margin"):
        setattr(res, name, getattr(res, name) * scale)
    if not (math.isfinite(res.sigma) and res.sigma > 0):
        raise MPFitError(f"the MP fit gave sigma = {res.sigma} (values at scale {scale:g}); no MP bulk to fit")
    res.stage1_height = res.stage1_height / scale / scale  # a density (y ~ a nu); scale**2 may underflow
    res.gof_distance = _bulk_distance(sv / scale, _rescaled(res, 1 / scale))
    if gof:
        null = gof_null((N, M), samples=gof_samples, seed=seed, window=window, tw_level=tw_level)
        res.gof_threshold, res.gof_pvalue = _judge(res.gof_distance, null)
        res.bulk_ok = bool(res.gof_distance <= res.gof_threshold)
        if warn and not res.bulk_ok:
            warnings.warn(f"the bulk of this {N}x{M} spectrum does not follow the MP law (KS distance "
                          f"{res.gof_distance:.3g}, noise gives at most {res.gof_threshold:.3g}); "
                          "heavy-tailed entries or structure: sigma and the outlier count describe "
                          "no MP bulk", MPFitWarning, stacklevel=2)
    return res


def _rescaled(res, factor):
    out = MPFit(**asdict(res))
    for name in ("sigma", "nu_min", "nu_max", "stage1_nu_min", "stage1_nu_max", "tw_margin"):
        setattr(out, name, getattr(out, name) * factor)
    return out


def fit_naive(singular_values, shape) -> MPFit:
    """The naive estimate, for comparison: sigma from the variance of *all* entries.

    Treating the whole matrix as noise, s^2 = ||W||_F^2 / (N M) and sigma = s sqrt(N), i.e.
    sigma^2 = mean(nu^2) (exact for the MP law). Every outlier adds its nu^2 to the mean,
    so a layer with strong outliers gets a bulk that is too wide.
    """
    sv = _as_values(singular_values)
    N, M, q = _shape_q(shape, len(sv))
    _check_rank(sv)
    scale = float(sv[-1])
    sigma = scale * float(np.sqrt(np.mean((sv / scale) ** 2)))
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

"""Porter-Thomas statistics of singular vectors and a KS test built for normalized vectors.

METHODS §2. Under RMT the L entries of a unit singular vector are close to N(0, 1/L):
C_PT(x) = 1/2 + erf(sqrt(L/2) x) / 2. The KS distance of a vector to C_PT is compared
with a Monte-Carlo null of *normalized* Gaussian vectors (the classical KS law ignores
the constraint sum x_i^2 = 1 that couples the entries). Under the null the p-values are
i.i.d. uniform, so a window mean of w of them follows the Irwin-Hall law scaled by 1/w
(mean 1/2, std sqrt(1/(12 w))): the band "consistent with randomness" and the false-positive
rate of the information boundary come from that exact law, not from one control matrix.
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from . import spectra
from ._io import cache_dir, load_checked, save_checked
from .validation import as_array, as_vector, check_float, check_int, check_unit_rows

MIN_LENGTH = 10  # below this a KS test on one vector says little
FPR = 0.05  # default false-positive rate of the boundary rule on a pure-noise matrix
SIDES = spectra.SIDES
_NULLS: dict = {}  # in-memory cache: (length, samples, seed) -> sorted distances


def _rows(vectors, name="vectors", *, unit: bool = True) -> torch.Tensor:
    v = as_array(vectors, name, ndim=(1, 2))
    if v.ndim == 1:
        v = v[None, :]
    if v.shape[1] < MIN_LENGTH:
        raise ValueError(f"{name}: vectors of length {v.shape[1]} are too short for a meaningful "
                         f"KS test (need at least {MIN_LENGTH} entries)")
    if unit:
        check_unit_rows(v, name)
    return v


def pt_cdf(x, length: int):
    """Porter-Thomas CDF of one entry of a unit vector of `length` entries: N(0, 1/L).

    C_PT(x) = 1/2 + erf(sqrt(L/2) x) / 2 (METHODS §2). Returns a float tensor shaped like x.
    """
    length = check_int(length, "length", min=1)
    x = as_array(x, "x")
    return 0.5 + 0.5 * torch.erf(math.sqrt(length / 2.0) * x)


def ks_distance(vectors) -> np.ndarray:
    """KS distance of each row to the Porter-Thomas CDF (METHODS §2), all rows at once.

    D = max_i max(i/L - C_PT(x_(i)), C_PT(x_(i)) - (i-1)/L) over the sorted entries.
    Rows must be unit vectors (singular vectors); others are refused with a ValueError.
    """
    return _ks_distance(_rows(vectors)).cpu().numpy()


def _sort_rows(v: torch.Tensor) -> torch.Tensor:
    # numpy's SIMD sort is about 3x faster than torch.sort on CPU rows
    if v.device.type == "cpu":
        return torch.from_numpy(np.sort(v.numpy(), axis=1))
    return torch.sort(v, dim=1).values


def _ks_distance(v: torch.Tensor, presorted: bool = False) -> torch.Tensor:
    L = v.shape[1]
    c = 0.5 + 0.5 * torch.erf(math.sqrt(L / 2.0) * (v if presorted else _sort_rows(v)))
    i = torch.arange(1, L + 1, dtype=c.dtype, device=c.device)
    upper = (i / L - c).amax(dim=1)
    lower = (c - (i - 1) / L).amax(dim=1)
    return torch.maximum(upper, lower)


def _null_path(length, samples, seed):
    return cache_dir("ks_null") / f"ks_null_L{int(length)}_K{int(samples)}_s{int(seed)}.safetensors"


def _check_null(null: np.ndarray, samples: int) -> np.ndarray:
    """Refuse a null table that cannot be one: wrong shape or dtype, NaN, outside [0, 1], unsorted."""
    if null.dtype != np.float64 or null.shape != (samples,):
        raise ValueError(f"expected {samples} float64 distances, got {null.shape} {null.dtype}")
    if not np.all(np.isfinite(null)):
        raise ValueError("contains NaN or Inf")
    if null[0] < 0.0 or null[-1] > 1.0:  # a KS distance lies in [0, 1]
        raise ValueError("contains distances outside [0, 1]")
    if not np.all(np.diff(null) >= 0):
        raise ValueError("is not sorted")
    return null


def _frozen(null: np.ndarray) -> np.ndarray:
    null.flags.writeable = False  # shared by every caller: nobody may change it in place
    return null


def ks_null(length: int, samples: int = 50_000, seed: int = 0, *, cache: bool = True,
            chunk: int = 4096) -> np.ndarray:
    """Sorted KS distances of `samples` normalized Gaussian vectors of `length` entries.

    The null of METHODS §2: it depends on the length only, so it is built once per
    (length, samples, seed), kept in memory and on disk (a safetensors file written
    atomically with a checksum; a damaged or implausible file is rebuilt). Every
    argument is checked before any work. With `cache=True` the array returned is the
    shared cached one and is read-only (`flags.writeable` is False): copy it to change it.
    """
    length = check_int(length, "length", min=MIN_LENGTH, why="a KS test on fewer entries says little")
    samples = check_int(samples, "samples", min=100, why="the null's resolution is 1/samples")
    seed = check_int(seed, "seed", min=0)
    chunk = check_int(chunk, "chunk", min=1, why="vectors drawn per batch")
    if not isinstance(cache, bool):
        raise TypeError(f"cache must be True or False; got {cache!r}")
    key = (length, samples, seed)
    if cache and key in _NULLS:
        return _NULLS[key]
    path = _null_path(*key)
    if cache and path.exists():
        try:
            tensors, meta = load_checked(path)
            if meta.get("kind") != "ks_null" or tuple(meta.get("key", ())) != key:
                raise ValueError("contents do not match")
            null = _check_null(tensors["null"].numpy(), samples)
            _NULLS[key] = _frozen(null)
            return null
        except Exception as err:
            warnings.warn(f"KS null cache {path.name} unusable ({err}); rebuilding", stacklevel=2)
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(samples, dtype=torch.float64)
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        # float32 is exact enough here (D resolves to ~1e-7, its spread is ~1e-2) and
        # halves the time; normalizing after sorting keeps the order.
        g = torch.randn(n, length, generator=gen, dtype=torch.float32)
        norms = torch.linalg.vector_norm(g, dim=1, keepdim=True)
        g = _sort_rows(g).div_(norms)
        out[start : start + n] = _ks_distance(g, presorted=True).double()
    null = _check_null(torch.sort(out).values.numpy(), samples)  # never keep a broken table
    if cache:
        try:
            save_checked(path, {"null": torch.from_numpy(null)},
                         {"kind": "ks_null", "key": list(key), "format_version": 1})
        except OSError as err:
            warnings.warn(f"KS null could not be cached ({type(err).__name__}: {err}); it is kept "
                          "in memory for this process only", stacklevel=2)
        _NULLS[key] = _frozen(null)
    return null


def classical_ks_cdf(d, length: int) -> np.ndarray:
    """CDF of the one-sample KS statistic for i.i.d. entries (the classical law, scipy)."""
    from scipy.stats import kstwo

    length = check_int(length, "length", min=1)
    d = as_array(d, "d").cpu().numpy().astype(float)
    return kstwo.cdf(d, length)


def pvalues_from_null(distances, null) -> np.ndarray:
    """p = 1 - C_KS(D): the fraction of null distances larger than D (values in [0, 1])."""
    null = as_vector(null, "null").cpu().numpy().astype(float)
    if np.any(np.diff(null) < 0):
        raise ValueError("null must be sorted in increasing order (as ks_null returns it)")
    d = as_array(distances, "distances").cpu().numpy().astype(float)
    return 1.0 - np.searchsorted(null, d, side="right") / len(null)


def ks_pvalues(vectors, *, samples: int = 50_000, seed: int = 0) -> np.ndarray:
    """p-values of the PT hypothesis for each row (unit vectors), with the cached null for their length."""
    samples = check_int(samples, "samples", min=100)
    seed = check_int(seed, "seed")
    v = _rows(vectors)
    null = ks_null(v.shape[1], samples=samples, seed=seed)
    return pvalues_from_null(_ks_distance(v).cpu().numpy(), null)


def _clipped_mean(x: np.ndarray, window: int):
    """Centred window means cut to the values that exist, and the number of values in each."""
    h = window // 2
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(len(x))
    lo, hi = np.maximum(idx - h, 0), np.minimum(idx + h + 1, len(x))
    return (c[hi] - c[lo]) / (hi - lo), hi - lo


def window_average(values, window: int = 15) -> np.ndarray:
    """Centred moving average over `window` consecutive values (odd), same length.

    At the ends the window is cut to the values that exist (the average is over
    fewer values there).
    """
    x = as_vector(values, "values").cpu().numpy().astype(float)
    window = check_int(window, "window", min=1, odd=True)
    if window > len(x):
        raise ValueError(f"window={window} is larger than the number of values ({len(x)}); "
                         "use a smaller window")
    return _clipped_mean(x, window)[0]


@functools.lru_cache(maxsize=4096)
def _band(size: int, alpha: float) -> tuple[float, float]:
    from scipy.stats import irwinhall

    law = irwinhall(int(size))
    return float(law.ppf(alpha / 2) / size), float(law.ppf(1 - alpha / 2) / size)


def window_band(sizes, alpha: float):
    """Central (1 - alpha) interval of the mean of `size` i.i.d. U(0, 1) p-values.

    The sum of n uniforms follows the Irwin-Hall law (mean n/2, variance n/12); the band
    is its alpha/2 and 1 - alpha/2 quantiles divided by n. For n = 15 and alpha = 0.0455
    (the paper's "mean +- 2 std") it is close to 0.5 +- 2 sqrt(1/180) = [0.351, 0.649].
    Returns (lower, upper) arrays shaped like `sizes`.
    """
    alpha = check_float(alpha, "alpha", min=0, max=1, min_open=True, max_open=True)
    s = as_array(sizes, "sizes").cpu().numpy()
    if np.any(s != np.round(s)) or np.any(s < 1):
        raise ValueError(f"sizes must be positive integers (numbers of p-values averaged); got {s}")
    s = s.astype(int)
    pairs = np.array([_band(int(n), alpha) for n in s.ravel()]).reshape(*s.shape, 2)
    return pairs[..., 0], pairs[..., 1]


@dataclass
class Boundary:
    """The information boundary of p-values ordered by singular value (see `information_boundary`)."""

    n_above: int
    n_raw: int
    curve: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    alpha: float
    fpr: float


def information_boundary(pvalues, window: int = 15, *, fpr: float = FPR,
                         confirm: int = 3) -> Boundary:
    """Number of informative vectors at the top of a spectrum (METHODS §2), with a stated false-positive rate.

    `pvalues` are the PT p-values ordered by singular value, largest first. Each of the
    tests below runs at level alpha = fpr / (1 + confirm):

    1. Single vectors at the top: the leading run of vectors whose own p-value is below
       alpha is informative (n_raw of them). A centred window cannot resolve 1-7 vectors
       at the top; each vector's p-value is its own test (under the null p ~ U(0, 1), so
       P(p < alpha) = alpha).
    2. Averaged p-values below them: on the remaining p-values, centred windows of
       `window` values, cut at the ends to the values that exist. Each window mean is
       compared with the band of its own size n: the central (1 - alpha) interval of the
       mean of n uniform p-values (Irwin-Hall / n, `window_band`). Scanning down, the
       boundary is the first position whose window and the next `confirm - 1` ones lie
       inside their bands; leaving the band in either direction counts (raised p-values are
       a sign of information too: METHODS §2 (c), (d)).

    n_above = n_raw + that position. On a pure-noise matrix information is reported only
    if the top p-value or one of the first `confirm` windows fails, so by the union bound
    P(n_above > 0) <= (1 + confirm) alpha = fpr (about half of it in practice, because
    the first windows overlap). Returns a `Boundary` with n_above, n_raw, the tested
    curve (raw p-values for the first n_raw positions, window means below), its per-position
    band (lower, upper), alpha and fpr.
    """
    p = as_vector(pvalues, "pvalues").cpu().numpy().astype(float)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("pvalues must lie in [0, 1]")
    window = check_int(window, "window", min=1, odd=True)
    fpr = check_float(fpr, "fpr", min=0, max=1, min_open=True, max_open=True)
    confirm = check_int(confirm, "confirm", min=1)
    alpha = fpr / (1 + confirm)
    M = len(p)
    small = p < alpha
    n_raw = M if small.all() else int(np.argmin(small))
    curve = p.copy()
    lower = np.full(M, alpha)
    upper = np.ones(M)
    rest = p[n_raw:]
    b = 0
    if len(rest):
        means, sizes = _clipped_mean(rest, window)
        lo, hi = window_band(sizes, alpha)
        curve[n_raw:], lower[n_raw:], upper[n_raw:] = means, lo, hi
        inside = (means >= lo) & (means <= hi)
        # first position j with inside[j : j + confirm] all True (fewer at the very end)
        run = np.convolve(inside.astype(int), np.ones(confirm, dtype=int))[confirm - 1:]
        need = np.minimum(confirm, len(rest) - np.arange(len(rest)))
        ok = np.flatnonzero(run == need)
        b = int(ok[0]) if len(ok) else len(rest)
    return Boundary(n_raw + b, n_raw, curve, lower, upper, alpha, fpr)


def two_sigma_boundary(pvalues, window: int = 15, *, sigma: float | None = None,
                       k: float = 2.0) -> int:
    """The boundary rule of Staats et al. (2022, Fig. 1): leading window means below 1/2 - k sigma.

    A fidelity check against the paper, not the book's rule (`information_boundary`).
    `pvalues` are ordered by singular value, largest first; they are averaged over centred
    windows of `window` values, cut at the ends (`window_average`). The count is the number
    of leading positions whose window mean lies below 1/2 - k sigma (strictly), i.e. the
    number of singular values above the point where the averaged p-values first come back
    within k standard deviations of the random control. `sigma` is that standard deviation:
    None takes the exact value for a full window of uniform p-values, sqrt(1 / (12 window))
    (0.0745 for 15); the paper quotes 0.05 for its control. No false-positive rate is
    controlled: on pure noise the first mean averages only window // 2 + 1 values, and
    P(count > 0) is the Irwin-Hall probability of that mean lying below 1/2 - k sigma
    (about 16% for window 15 and sigma = 0.05, 7% with the exact sigma).
    """
    p = as_vector(pvalues, "pvalues").cpu().numpy().astype(float)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("pvalues must lie in [0, 1]")
    window = check_int(window, "window", min=1, odd=True)
    if sigma is None:
        sigma = math.sqrt(1.0 / (12.0 * window))
    sigma = check_float(sigma, "sigma", min=0, min_open=True, max=0.5,
                        why="the standard deviation of a window mean of p-values, e.g. 0.05")
    k = check_float(k, "k", min=0, min_open=True, why="how many standard deviations, e.g. 2")
    means = _clipped_mean(p, window)[0]  # windows cut to the values that exist
    below = means < 0.5 - k * sigma
    return len(p) if below.all() else int(np.argmin(below))


def gaussian_control(shape, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """A Gaussian random matrix of the given shape (the random control of METHODS §2)."""
    if not isinstance(shape, (tuple, list)) or len(shape) != 2:
        raise TypeError(f"shape must be a pair (rows, columns); got {shape!r}")
    rows = check_int(shape[0], "shape[0]", min=1)
    cols = check_int(shape[1], "shape[1]", min=1)
    gen = torch.Generator().manual_seed(check_int(seed, "seed"))
    return torch.randn(rows, cols, generator=gen, dtype=dtype) / math.sqrt(max(rows, cols))


@dataclass
class PTResult:
    """Porter-Thomas analysis of one matrix (see `analyze`).

    `smoothed` is the curve the boundary rule tests (raw p-values of the n_raw leading
    vectors, window means below), `lower`/`upper` its band per position, `band` the band
    of a complete window, `fpr` the rule's false-positive rate on pure noise (at most).
    """

    singular_values: np.ndarray
    pvalues: np.ndarray
    smoothed: np.ndarray
    control_singular_values: np.ndarray
    control_smoothed: np.ndarray
    band: tuple
    boundary: float
    n_above: int
    fraction_above: float
    side: str
    length: int
    window: int
    lower: np.ndarray = None
    upper: np.ndarray = None
    n_raw: int = 0
    fpr: float = FPR
    alpha: float = FPR / 4
    control_n_above: int | None = None
    extra: dict = field(default_factory=dict)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({
            "rank": np.arange(len(self.singular_values)),
            "singular_value": self.singular_values,
            "pvalue": self.pvalues,
            "smoothed": self.smoothed,
            "lower": self.lower,
            "upper": self.upper,
            "outside_band": (self.smoothed < self.lower) | (self.smoothed > self.upper),
        })


def _input_eps(W) -> float:
    """Machine epsilon of the precision W was given in (its zero singular values sit there)."""
    dtype = getattr(W, "dtype", None)
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        return float(torch.finfo(dtype).eps)
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return float(np.finfo(dtype).eps)
    return float(np.finfo(np.float64).eps)


def _numerical_rank(S: np.ndarray, shape, eps: float) -> int:
    if S[0] <= 0:
        return 0
    return int(np.sum(S > S[0] * max(shape) * eps))


def analyze(W, *, side: str = "left", seed: int = 0, window: int = 15,
            samples: int = 50_000, fpr: float = FPR, confirm: int = 3,
            control: bool = True) -> PTResult:
    """Porter-Thomas analysis of a weight matrix (METHODS §1, §2).

    `side` picks the family of singular vectors: "left" (alias "output", the default)
    are the vectors of length n = out of a PyTorch (out, in) weight, the layer's own units:
    the family Staats et al. test (their Keras in x out matrix W = U diag(nu) V, vectors V).
    "right" (alias "input") are the vectors of length m = in.

    The p-values of that family, ordered by singular value (descending), go through the
    boundary rule of `information_boundary`: single top vectors against their own null,
    then window means against the exact band of a mean of uniform p-values. On a
    pure-noise matrix the rule reports information with probability at most `fpr`
    (default 0.05; measured about 0.03 over sizes M = 20..200, Gaussian and uniform
    entries, both sides). With `control=True` a Gaussian matrix of the same shape (seeded)
    goes through the same steps (`control_smoothed`, `control_n_above`) as a check.

    Raises ValueError for an all-zero or constant matrix (its singular vectors are
    arbitrary); for a rank-deficient matrix only the vectors of the non-zero singular
    values are tested (with a warning). Warns when there are fewer singular vectors than
    `window`: then only strongly non-random single vectors can be detected.
    """
    side = spectra.check_side(side)
    seed = check_int(seed, "seed")
    window = check_int(window, "window", min=1, odd=True)
    samples = check_int(samples, "samples", min=100)
    fpr = check_float(fpr, "fpr", min=0, max=1, min_open=True, max_open=True)
    confirm = check_int(confirm, "confirm", min=1)
    if not isinstance(control, bool):
        raise TypeError(f"control must be True or False; got {control!r}")
    eps = _input_eps(W)
    W = spectra.as_tensor(W, dtype=torch.float64)
    length = W.shape[1] if side == "right" else W.shape[0]
    if length < MIN_LENGTH:
        raise ValueError(f"the {side} singular vectors of a {tuple(W.shape)} matrix have {length} "
                         f"entries; a KS test needs at least {MIN_LENGTH} (try the other side)")
    if bool((W == W.flatten()[0]).all()):
        what = "all zero" if float(W.flatten()[0]) == 0 else "constant"
        raise ValueError(f"W is {what}: its singular vectors are arbitrary, there is nothing "
                         "to test; pass a weight matrix with varying entries")

    def run(matrix, warn, eps):
        dec = spectra.svd(matrix, method="gram")  # falls back to LAPACK if ill-conditioned
        S = dec.S.cpu().numpy()
        r = _numerical_rank(S, matrix.shape, eps)
        if r < 2:
            raise ValueError(f"W has numerical rank {r} (of {len(S)}): its singular vectors "
                             "are not determined by it, there is nothing to test")
        if warn and r < len(S):
            warnings.warn(f"W has numerical rank {r} < {len(S)}: the singular vectors of the "
                          f"{len(S) - r} zero singular values are arbitrary and are left out",
                          stacklevel=3)
        S, vec = S[:r], dec.vectors(side)[:r]
        p = ks_pvalues(vec / torch.linalg.vector_norm(vec, dim=1, keepdim=True),
                       samples=samples, seed=seed)
        return S, p, information_boundary(p, window, fpr=fpr, confirm=confirm)

    sv, p, bd = run(W, True, eps)
    if len(sv) < window:
        warnings.warn(f"only {len(sv)} singular vectors, fewer than one window of {window}: "
                      "only strongly non-random single vectors can be detected here",
                      stacklevel=2)
    if control:
        csv, _, cbd = run(gaussian_control(tuple(W.shape), seed=seed + 1), False,
                          float(np.finfo(np.float64).eps))
        csm, c_n = cbd.curve, cbd.n_above
    else:
        csv, csm, c_n = np.array([]), np.array([]), None
    band = tuple(float(b[0]) for b in window_band([min(window, len(sv))], bd.alpha))
    n = bd.n_above
    boundary = float(sv[n]) if n < len(sv) else float(sv[-1])
    if n == 0:
        boundary = float(sv[0])
    return PTResult(sv, p, bd.curve, csv, csm, band, boundary, n, n / len(sv), side, length,
                    window, lower=bd.lower, upper=bd.upper, n_raw=bd.n_raw, fpr=fpr,
                    alpha=bd.alpha, control_n_above=c_n)

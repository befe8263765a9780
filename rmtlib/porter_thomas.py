"""Porter-Thomas statistics of singular vectors and a KS test built for normalized vectors.

METHODS §2. Under RMT the L entries of a unit singular vector are close to N(0, 1/L):
C_PT(x) = 1/2 + erf(sqrt(L/2) x) / 2. The KS distance of a vector to C_PT is compared
with a Monte-Carlo null of *normalized* Gaussian vectors (the classical KS law ignores
the constraint sum x_i^2 = 1 that couples the entries).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from . import spectra
from ._io import cache_dir, load_checked, save_checked
from .validation import check_int

MIN_LENGTH = 10  # below this a KS test on one vector says little
_NULLS: dict = {}  # in-memory cache: (length, samples, seed) -> sorted distances


def _rows(vectors, name="vectors") -> torch.Tensor:
    v = vectors if isinstance(vectors, torch.Tensor) else torch.as_tensor(np.asarray(vectors))
    v = v.detach()
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2:
        raise ValueError(f"{name} must be 2-D (one vector per row); got shape {tuple(v.shape)}")
    if v.shape[1] < MIN_LENGTH:
        raise ValueError(f"vectors of length {v.shape[1]} are too short for a meaningful KS test "
                         f"(need at least {MIN_LENGTH} entries)")
    if not v.is_floating_point():
        v = v.double()
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} contain NaN or Inf entries")
    return v


def pt_cdf(x, length: int):
    """Porter-Thomas CDF of one entry of a unit vector of `length` entries: N(0, 1/L)."""
    x = torch.as_tensor(x)
    return 0.5 + 0.5 * torch.erf(math.sqrt(length / 2.0) * x)


def ks_distance(vectors) -> np.ndarray:
    """KS distance of each row to the Porter-Thomas CDF (METHODS §2), all rows at once.

    D = max_i max(i/L - C_PT(x_(i)), C_PT(x_(i)) - (i-1)/L) over the sorted entries.
    """
    return _ks_distance(_rows(vectors)).cpu().numpy()


def _sort_rows(v: torch.Tensor) -> torch.Tensor:
    # numpy's SIMD sort is about 3x faster than torch.sort on CPU rows
    if v.device.type == "cpu":
        return torch.from_numpy(np.sort(v.numpy(), axis=1))
    return torch.sort(v, dim=1).values


def _ks_distance(v: torch.Tensor, presorted: bool = False) -> torch.Tensor:
    L = v.shape[1]
    c = pt_cdf(v if presorted else _sort_rows(v), L)
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

    return kstwo.cdf(np.asarray(d), int(length))


def pvalues_from_null(distances, null) -> np.ndarray:
    """p = 1 - C_KS(D): the fraction of null distances larger than D."""
    null = np.asarray(null)
    return 1.0 - np.searchsorted(null, np.asarray(distances), side="right") / len(null)


def ks_pvalues(vectors, *, samples: int = 50_000, seed: int = 0) -> np.ndarray:
    """p-values of the PT hypothesis for each row, with the cached null for their length."""
    v = _rows(vectors)
    null = ks_null(v.shape[1], samples=samples, seed=seed)
    return pvalues_from_null(_ks_distance(v).cpu().numpy(), null)


def window_average(values, window: int = 15) -> np.ndarray:
    """Centred moving average over `window` consecutive values (odd), same length.

    At the ends the window is cut to the values that exist (the average is over
    fewer values there).
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"values must be 1-D; got shape {x.shape}")
    if int(window) != window or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer (centred); got {window!r}")
    if window > len(x):
        raise ValueError(f"window={window} is larger than the number of values ({len(x)}); "
                         "use a smaller window")
    if not np.all(np.isfinite(x)):
        raise ValueError("values contain NaN or Inf")
    h = window // 2
    c = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(len(x))
    lo, hi = np.maximum(idx - h, 0), np.minimum(idx + h + 1, len(x))
    return (c[hi] - c[lo]) / (hi - lo)


def gaussian_control(shape, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """A Gaussian random matrix of the given shape (the random control of METHODS §2)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(*shape, generator=gen, dtype=dtype) / math.sqrt(max(shape))


@dataclass
class PTResult:
    """Porter-Thomas analysis of one matrix (see `analyze`)."""

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
    extra: dict = field(default_factory=dict)

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({
            "rank": np.arange(len(self.singular_values)),
            "singular_value": self.singular_values,
            "pvalue": self.pvalues,
            "smoothed": self.smoothed,
            "outside_band": (self.smoothed < self.band[0]) | (self.smoothed > self.band[1]),
        })


def information_boundary(singular_values, smoothed, band, window: int = 15, confirm: int = 3):
    """Where the averaged p-values, scanned from the top, enter the control band (METHODS §2).

    Only positions whose averaging window is complete are used (at the very ends the
    window is cut and its average fluctuates more). Scanning from the largest singular
    value down, the boundary is the first such position b whose averaged p-value and the
    next `confirm - 1` ones lie inside the band. If the first complete window is already
    inside, the matrix is consistent with randomness from the top: (largest value, 0).
    Returns (boundary singular value nu_b, number of singular values above it = b).
    """
    sv, p = np.asarray(singular_values), np.asarray(smoothed)
    h = window // 2
    inside = (p >= band[0]) & (p <= band[1])
    last = len(p) - h  # positions h .. last-1 have complete windows
    for b in range(h, max(last - confirm + 1, h + 1)):
        if inside[b : b + confirm].all():
            return (float(sv[0]), 0) if b == h else (float(sv[b]), b)
    return float(sv[-1]), len(sv)


def analyze(W, *, side: str = "right", seed: int = 0, window: int = 15,
            samples: int = 50_000) -> PTResult:
    """Porter-Thomas analysis of a weight matrix (METHODS §2).

    p-values of the singular vectors on `side` ("right": length m, "left": length n)
    ordered by singular value (descending), their centred window average, the same for
    a Gaussian control matrix of the same shape (seeded), the control's mean +- 2 std
    band of the averaged p-values, and the information boundary.
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left'; got {side!r}")
    W = spectra.as_tensor(W, dtype=torch.float64)
    M = min(W.shape)
    if window > M:
        raise ValueError(f"window={window} is larger than the number of singular vectors ({M})")
    length = W.shape[1] if side == "right" else W.shape[0]
    if length < MIN_LENGTH:
        raise ValueError(f"{side} singular vectors have {length} entries: too short for a KS test")

    def run(matrix):
        dec = spectra.svd(matrix, method="gram")  # falls back to LAPACK if ill-conditioned
        vec = dec.vectors(side)
        p = ks_pvalues(vec, samples=samples, seed=seed)
        return dec.S.cpu().numpy(), p, window_average(p, window)

    sv, p, sm = run(W)
    csv, _, csm = run(gaussian_control(tuple(W.shape), seed=seed + 1))
    band = (float(csm.mean() - 2 * csm.std()), float(csm.mean() + 2 * csm.std()))
    boundary, n_above = information_boundary(sv, sm, band, window=window)
    return PTResult(sv, p, sm, csv, csm, band, boundary, n_above, n_above / len(sv), side, length, window)

"""One input door for every public function (scikit-learn's `check_array` habit).

Arrays: numpy arrays, torch tensors (any float dtype including float16 and bfloat16, with
`requires_grad`, on any device) and nested lists all go through `as_array` (or its
shorthands `as_matrix`, `as_vector`), which returns a detached real float tensor and
raises ValueError/TypeError naming the argument, what was wrong and what to do.
Parameters go through `check_int`, `check_float` and `check_choice`.
Nothing else in rmtlib converts inputs by hand.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def as_array(x, name: str = "x", *, ndim: int | tuple[int, ...] | None = None,
             dtype: torch.dtype | None = None, min_size: int = 1, finite: bool = True,
             why: str = "") -> torch.Tensor:
    """A detached real floating tensor from a numpy array, tensor, scalar or nested list.

    - `ndim`: required number of dimensions (an int or a tuple of allowed ones);
    - `dtype`: cast to it; by default float16/bfloat16 and integer/bool inputs become
      float64, float32/float64 tensors keep their dtype (and device);
    - `min_size`: minimum number of entries (`why` says what the minimum is for);
    - `finite`: refuse NaN and Inf, saying how many there are.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray) or isinstance(x, (list, tuple, numbers.Number, np.generic)):
        if isinstance(x, (str, bytes)):
            raise TypeError(f"{name} must be an array of numbers; got a string")
        try:
            arr = np.asarray(x)
        except ValueError as err:  # ragged nested lists
            raise ValueError(f"{name} must be a rectangular array of numbers; "
                             f"nested lists of unequal lengths cannot be ({err})") from None
        if arr.dtype == object:
            raise TypeError(f"{name} must be an array of numbers; got entries of type object "
                            "(ragged lists or mixed types?)")
        if arr.dtype.kind in "USV":
            raise TypeError(f"{name} must be an array of numbers; got {arr.dtype} entries")
        if arr.dtype.kind == "c":
            raise TypeError(f"{name} is complex; rmtlib analyses real weight matrices: "
                            "pass x.real if the imaginary part is zero")
        if arr.dtype == np.float16:  # as for a torch float16 tensor below: computed in float64
            arr = arr.astype(np.float64)
        # (np.ascontiguousarray would turn a 0-d array into shape (1,)); a read-only array
        # (a cached null loaded from disk, a broadcast view) is copied: torch would warn
        ok = arr.flags.c_contiguous and arr.flags.writeable
        t = torch.from_numpy(arr if ok else arr.copy(order="C"))
    elif isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be an array of numbers; got a string")
    else:
        raise TypeError(f"{name} must be a numpy array, a torch tensor or a nested list of "
                        f"numbers; got {type(x).__name__}")
    if t.is_complex():
        raise TypeError(f"{name} is complex; rmtlib analyses real weight matrices: "
                        "pass x.real if the imaginary part is zero")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if t.ndim not in allowed:
            what = {1: "a 1-D array", 2: "a 2-D matrix"}
            want = " or ".join(what.get(d, f"{d}-D") for d in allowed)
            hint = (" (use rmtlib.spectra.weight_matrix(layer) for a layer's weight)"
                    if 2 in allowed and t.ndim > 2 else "")
            raise ValueError(f"{name} must be {want}; got shape {tuple(t.shape)}{hint}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); pass at least "
                         f"{max(min_size, 1)} entries")
    if t.numel() < min_size:
        raise ValueError(f"{name} has {t.numel()} entries; at least {min_size} are needed"
                         + (f" ({why})" if why else ""))
    if dtype is not None:
        t = t.to(dtype)
    elif not t.is_floating_point() or t.dtype in _LOW_PRECISION:
        t = t.to(torch.float64)
    if finite:
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int(bad.sum()) - n_nan
            raise ValueError(f"{name} contains NaN or Inf entries ({n_nan} NaN and {n_inf} Inf "
                             f"out of {t.numel()}); check the computation that produced it")
    return t


def as_matrix(W, name: str = "W", *, dtype: torch.dtype | None = None, min_rows: int = 1,
              min_cols: int = 1, why: str = "") -> torch.Tensor:
    """A 2-D real float tensor (see `as_array`) with at least `min_rows` x `min_cols`."""
    t = as_array(W, name, ndim=2, dtype=dtype)
    if t.shape[0] < min_rows or t.shape[1] < min_cols:
        raise ValueError(f"{name} has shape {tuple(t.shape)}; at least {min_rows} x {min_cols} "
                         "is needed" + (f" ({why})" if why else ""))
    return t


def as_vector(x, name: str = "x", *, dtype: torch.dtype | None = None, min_size: int = 1,
              why: str = "") -> torch.Tensor:
    """A 1-D real float tensor (see `as_array`) with at least `min_size` entries."""
    return as_array(x, name, ndim=1, dtype=dtype, min_size=min_size, why=why)


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """A float64 numpy copy of a validated tensor (on the CPU)."""
    return t.detach().to("cpu", torch.float64).numpy()


def check_unit_rows(v: torch.Tensor, name: str = "vectors", *, rtol: float = 1e-3) -> torch.Tensor:
    """Refuse rows that are not unit vectors (singular vectors have norm 1)."""
    norms = torch.linalg.vector_norm(v.to(torch.float64), dim=-1)
    bad = (norms - 1).abs() > rtol
    if bool(bad.any()):
        worst = float(norms[bad][0])
        raise ValueError(f"{name}: {int(bad.sum())} of {len(norms)} rows are not unit vectors "
                         f"(for example norm {worst:.4g}); pass singular vectors, or normalise "
                         "each row by its Euclidean norm first")
    return v


def _is_int(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (numbers.Integral, np.integer)):
        return True
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point() \
            and value.dtype != torch.bool and not value.is_complex():
        return True
    return False


def check_int(value, name: str, *, min: int | None = None, max: int | None = None,
              odd: bool = False, why: str = "") -> int:
    """An integer parameter in [min, max] (numpy and 0-d torch integers accepted)."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__})")
    v = int(value)
    if (min is not None and v < min) or (max is not None and v > max):
        rng = f"{'(-inf' if min is None else f'[{min}'}, {'inf)' if max is None else f'{max}]'}"
        raise ValueError(f"{name} must lie in {rng}; got {v}" + (f" ({why})" if why else ""))
    if odd and v % 2 == 0:
        raise ValueError(f"{name} must be odd (a centred window); got {v}")
    return v


def check_float(value, name: str, *, min: float | None = None, max: float | None = None,
                min_open: bool = False, max_open: bool = False, why: str = "") -> float:
    """A finite real parameter in [min, max] (open ends with `min_open`/`max_open`)."""
    if isinstance(value, bool) or not (
            isinstance(value, (numbers.Real, np.floating, np.integer))
            or (isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_complex())):
        raise TypeError(f"{name} must be a real number; got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite; got {v}")
    low_bad = min is not None and (v <= min if min_open else v < min)
    high_bad = max is not None and (v >= max if max_open else v > max)
    if low_bad or high_bad:
        # an unbounded end is open: "[0, inf)", "(-inf, 1.0]"
        lo = "(-inf" if min is None else f"{'(' if min_open else '['}{min}"
        hi = "inf)" if max is None else f"{max}{')' if max_open else ']'}"
        rng = f"{lo}, {hi}"
        raise ValueError(f"{name} must lie in {rng}; got {v}" + (f" ({why})" if why else ""))
    return v


def check_choice(value, name: str, choices) -> str:
    """One of a fixed set of names; the error lists the valid ones."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}; got {value!r}")
    return value

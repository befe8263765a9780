"""Property-based tests (Hypothesis) for the public math of porter_thomas, spectra,
filtering and validation.

Every call with generated input (shapes, dtypes float16/bfloat16/float32/float64/int/list,
values with NaN, Inf, zeros, constants, rank one, tiny and huge scales, wrong parameter
types) must either return a sane result or raise ValueError/TypeError: never another
exception, never a silent NaN.
"""
import warnings

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rmtlib import filtering, spectra, validation  # noqa: E402
from rmtlib import porter_thomas as pt  # noqa: E402

REFUSED = (ValueError, TypeError)
FEW = settings(max_examples=25)
SOME = settings(max_examples=60)

KINDS = ["gauss", "gauss", "zeros", "const", "rank1", "nan", "inf", "sparse", "huge", "tiny"]
CONTAINERS = ["numpy", "float16", "bfloat16", "float32", "float64", "int", "list", "grad"]


def _values(kind, shape, rng):
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "const":
        return np.full(shape, 0.37)
    if kind == "rank1" and len(shape) == 2:
        return np.outer(rng.standard_normal(shape[0]), rng.standard_normal(shape[1]))
    x = rng.standard_normal(shape)
    if kind == "sparse":
        x = x * (rng.random(shape) < 0.1)
    elif kind == "nan" and x.size:
        x.flat[rng.integers(x.size)] = np.nan
    elif kind == "inf" and x.size:
        x.flat[rng.integers(x.size)] = -np.inf
    elif kind == "huge":
        x = x * 1e150
    elif kind == "tiny":
        x = x * 1e-150
    return x


def _contain(x, container):
    if container == "numpy":
        return x
    if container == "list":
        return x.tolist()
    if container == "int":
        with np.errstate(invalid="ignore", over="ignore"):
            return np.nan_to_num(np.round(x * 3), posinf=7, neginf=-7).clip(-1e6, 1e6).astype(np.int64)
    if container == "grad":
        return torch.tensor(x, dtype=torch.float32, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.tensor(x, dtype=getattr(torch, container))


def mostly(good, bad, share=0.8):
    """`good` in about `share` of the examples, `bad` in the rest (one_of would split 50/50)."""
    return st.integers(0, 99).flatmap(lambda i: good if i < 100 * share else bad)


@st.composite
def arrays(draw, ndims=(2,), max_side=40, min_side=1):
    ndim = draw(st.sampled_from(ndims))
    empty = draw(st.integers(0, 19)) == 0
    shape = tuple(0 if empty and i == 0 else draw(st.integers(min_side, max_side)) for i in range(ndim))
    kind = draw(st.sampled_from(KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return _contain(_values(kind, shape, rng), draw(st.sampled_from(CONTAINERS)))


def matrices(max_side=40, min_side=1):
    # mostly 2-D, sometimes the wrong rank
    return arrays(ndims=(2, 2, 2, 2, 1, 3), max_side=max_side, min_side=min_side)


BAD = st.sampled_from(["7", None, True, 2.5, float("nan"), [3], torch.tensor(1.5)])
ints = mostly(st.one_of(st.integers(-2, 40), st.just(np.int64(5)), st.just(torch.tensor(3))), BAD)
reals = mostly(st.one_of(st.floats(-1, 2), st.floats(1e-300, 1e300), st.just(np.float32(0.5)),
                         st.floats(allow_nan=True, allow_infinity=True)), BAD)
sides = mostly(st.sampled_from(["left", "right", "output", "input"]), st.sampled_from(["up", "", 0, None]))


def call(fn, *args, **kwargs):
    """fn(*args) or None when it refused the input with ValueError/TypeError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = fn(*args, **kwargs)
        except REFUSED as err:
            hypothesis.event(f"{fn.__name__}: refused ({type(err).__name__})")
            return None
    hypothesis.event(f"{fn.__name__}: returned")
    return out


def finite(x):
    a = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)
    assert np.all(np.isfinite(a)), "silent NaN/Inf in the result"
    return a


def unit_rows_from(W):
    """Unit rows built from a generated matrix (or the matrix itself when that fails)."""
    try:
        t = validation.as_matrix(W).double()
    except REFUSED:
        return W
    norms = t.norm(dim=1, keepdim=True)
    return t / norms if bool((norms > 0).all()) and bool(torch.isfinite(norms).all()) else W


# --------------------------------------------------------------------------- validation
@SOME
@given(arrays(ndims=(0, 1, 2, 3), max_side=6), st.sampled_from([None, 1, 2, (1, 2)]))
def test_as_array_returns_a_finite_float_tensor_or_refuses(x, ndim):
    t = call(validation.as_array, x, "x", ndim=ndim)
    if t is not None:
        assert isinstance(t, torch.Tensor) and t.is_floating_point() and not t.requires_grad
        assert t.dtype not in (torch.float16, torch.bfloat16)
        assert ndim is None or t.ndim in ((ndim,) if isinstance(ndim, int) else ndim)
        finite(t)


@SOME
@given(matrices(max_side=8), st.integers(0, 5), st.integers(0, 5))
def test_as_matrix_and_as_vector(x, r, c):
    t = call(validation.as_matrix, x, "W", min_rows=r, min_cols=c)
    if t is not None:
        assert t.ndim == 2 and t.shape[0] >= r and t.shape[1] >= c
        finite(t)
    v = call(validation.as_vector, x, "v", min_size=r)
    if v is not None:
        assert v.ndim == 1 and v.numel() >= max(r, 1)


@SOME
@given(ints, reals, st.one_of(st.text(max_size=4), st.integers(), st.none()))
def test_parameter_checks(i, f, choice):
    v = call(validation.check_int, i, "k", min=0, max=50)
    assert v is None or (isinstance(v, int) and 0 <= v <= 50)
    w = call(validation.check_int, i, "window", min=1, odd=True)
    assert w is None or (w >= 1 and w % 2 == 1)
    x = call(validation.check_float, f, "sigma", min=0, min_open=True)
    assert x is None or (np.isfinite(x) and x > 0)
    c = call(validation.check_choice, choice, "side", ["left", "right"])
    assert c is None or c in ("left", "right")


@FEW
@given(matrices(max_side=12), st.booleans())
def test_check_unit_rows(x, x_unit):
    try:
        t = validation.as_matrix(unit_rows_from(x) if x_unit else x)
    except REFUSED:
        return
    out = call(validation.check_unit_rows, t, "vectors")
    if out is not None:
        assert np.allclose(finite(out.double().norm(dim=1)), 1, atol=1e-3)


# --------------------------------------------------------------------------- spectra
@SOME
@given(matrices(), mostly(st.sampled_from(["lapack", "gram"]), st.sampled_from(["qr", 3])),
       mostly(st.booleans(), st.sampled_from([1, None])))
def test_svd_is_sane_or_refused(W, method, compute_uv):
    out = call(spectra.svd, W, method=method, compute_uv=compute_uv)
    if out is None:
        return
    M = min(validation.as_matrix(W).shape)
    S = finite(out if not compute_uv else out.S)
    assert S.shape == (M,) and np.all(S >= 0) and np.all(np.diff(S) <= 1e-9 * max(S[0], 1e-300))
    if compute_uv:
        finite(out.U), finite(out.Vh)
        assert out.U.shape[1] == M and out.Vh.shape[0] == M
        for side in ("left", "right", "output", "input"):
            assert out.vectors(side).shape[0] == M


@FEW
@given(matrices())
def test_singular_values_and_shape_info(W):
    s = call(spectra.singular_values, W)
    info = call(spectra.shape_info, W)
    if s is not None:
        finite(s)
        assert info is not None and len(s) == info["M"] and 0 < info["q"] <= 1


# --------------------------------------------------------------------------- porter_thomas
@SOME
@given(matrices(max_side=30, min_side=5))
def test_ks_distance_and_pvalues(W):
    v = unit_rows_from(W)
    d = call(pt.ks_distance, v)
    if d is not None:
        a = finite(d)
        assert np.all((a >= 0) & (a <= 1))
    p = call(pt.ks_pvalues, v, samples=200)
    if p is not None:
        a = finite(p)
        assert np.all((a >= 0) & (a <= 1))
        assert d is not None and p.shape == d.shape


@FEW
@given(arrays(ndims=(0, 1, 2), max_side=10), ints)
def test_pt_cdf_and_classical_cdf(x, length):
    c = call(pt.pt_cdf, x, length)
    if c is not None:
        a = finite(c)
        assert np.all((a >= 0) & (a <= 1))
    k = call(pt.classical_ks_cdf, x, length)
    if k is not None:
        a = finite(k)
        assert np.all((a >= 0) & (a <= 1))


@SOME
@given(arrays(ndims=(1, 1, 1, 2), max_side=60), mostly(st.sampled_from([1, 3, 5, 15]), ints))
def test_window_average(values, window):
    out = call(pt.window_average, values, window)
    if out is not None:
        x = validation.as_vector(values).double().numpy()
        assert out.shape == x.shape
        finite(out)
        assert np.all(out >= x.min() - 1e-9 * abs(x).max()) and np.all(out <= x.max() + 1e-9 * abs(x).max())


@SOME
@given(mostly(st.lists(st.floats(0, 1), min_size=0, max_size=80), arrays(ndims=(1,), max_side=40)),
       mostly(st.sampled_from([1, 3, 5, 15]), ints), mostly(st.floats(0.001, 0.5), reals),
       mostly(st.integers(1, 5), ints))
def test_information_boundary(p, window, fpr, confirm):
    b = call(pt.information_boundary, p, window, fpr=fpr, confirm=confirm)
    if b is not None:
        M = len(p)
        assert 0 <= b.n_raw <= b.n_above <= M
        assert len(b.curve) == len(b.lower) == len(b.upper) == M
        finite(b.curve), finite(b.lower), finite(b.upper)
        assert np.all(b.lower <= b.upper) and 0 < b.alpha < b.fpr < 1


@FEW
@given(st.lists(mostly(st.integers(1, 40), ints), min_size=0, max_size=5), mostly(st.floats(1e-6, 0.999), reals))
def test_window_band(sizes, alpha):
    out = call(pt.window_band, sizes, alpha)
    if out is not None:
        lo, hi = out
        assert np.all((0 <= finite(lo)) & (lo <= 0.5) & (0.5 <= finite(hi)) & (hi <= 1))


@FEW
@given(mostly(st.lists(st.floats(0, 1), min_size=1, max_size=30).map(sorted), arrays(ndims=(1,), max_side=20)),
       arrays(ndims=(0, 1), max_side=20))
def test_pvalues_from_null(null, d):
    p = call(pt.pvalues_from_null, d, null)
    if p is not None:
        a = finite(p)
        assert np.all((a >= 0) & (a <= 1))


@FEW
@given(mostly(st.tuples(st.integers(1, 30), st.integers(1, 30)),
              st.one_of(st.tuples(ints, ints), st.sampled_from([(3,), "30x20", [20, 30]]))), ints)
def test_gaussian_control(shape, seed):
    W = call(pt.gaussian_control, shape, seed=seed)
    if W is not None:
        assert tuple(W.shape) == tuple(int(s) for s in shape)
        finite(W)


@settings(max_examples=40)
@given(matrices(max_side=36, min_side=6), sides, mostly(st.sampled_from([15, 5, 1, 3]), st.sampled_from([4, "15", 0])))
def test_analyze_is_sane_or_refused(W, side, window):
    res = call(pt.analyze, W, side=side, window=window, samples=200, control=False)
    if res is None:
        return
    M = len(res.singular_values)
    assert 0 <= res.n_above <= M and 0 <= res.fraction_above <= 1
    a = finite(res.pvalues)
    assert np.all((a >= 0) & (a <= 1))
    finite(res.smoothed), finite(res.singular_values), finite(res.lower), finite(res.upper)
    assert np.isfinite(res.boundary) and 0 < res.fpr < 1


# --------------------------------------------------------------------------- filtering
@SOME
@given(matrices(max_side=20), mostly(st.integers(0, 8), ints))
def test_remove_smallest(W, k):
    out = call(filtering.remove_smallest, W, k)
    if out is not None:
        Wt = validation.as_matrix(W)
        assert out.shape == Wt.shape
        finite(out)


@FEW
@given(matrices(max_side=24, min_side=3), mostly(st.integers(0, 3), ints),
       mostly(st.booleans(), st.sampled_from(["no", 1, None])))
def test_filter_matrix(W, k, shift):
    out = call(filtering.filter_matrix, W, k, shift=shift)
    if out is not None:
        assert out.shape == validation.as_matrix(W).shape
        finite(out)


@SOME
@given(mostly(st.lists(st.floats(0, 1e6), min_size=1, max_size=20), arrays(ndims=(0, 1), max_side=20)),
       mostly(st.floats(1e-3, 10), reals), mostly(st.floats(0.01, 1), reals))
def test_shift(nu, sigma, q):
    out = call(filtering.shift, nu, sigma, q)
    if out is not None:
        x = validation.as_array(nu).double().numpy()
        assert out.shape == x.shape
        finite(out)
        assert np.all(out <= x * (1 + 1e-12))  # shifting only moves values down


@SOME
@given(mostly(st.lists(st.floats(0, 1e300), min_size=1, max_size=20), arrays(ndims=(0, 1), max_side=20)),
       mostly(st.floats(0.01, 1), reals))
def test_spike_position(theta, q):
    out = call(filtering.spike_position, theta, q)
    if out is not None:
        finite(out)
        assert np.all(out >= 1 + np.sqrt(float(q)) - 1e-12)  # never inside the bulk

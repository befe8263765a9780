"""Property-based tests (Hypothesis) of every public function of marchenko_pastur and
early_stopping: any input gives a sane result or a ValueError/TypeError, never another
exception and never a silent NaN. Shapes are small so the file runs in seconds."""
import math
import os
import warnings

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from rmtlib import early_stopping as es, marchenko_pastur as mp  # noqa: E402

SETTINGS = dict(deadline=None, derandomize=bool(os.environ.get("CI")),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
OK = (ValueError, TypeError)

scales = st.sampled_from([1e-300, 1e-30, 1e-3, 1.0, 1e3, 1e30, 1e300])
kinds = st.sampled_from(["gauss", "uniform", "zeros", "constant", "rank1", "nan", "inf", "t1.5", "spike"])
containers = st.sampled_from(["numpy", "float32", "float16", "bfloat16", "grad", "list"])


def make_matrix(kind, n, m, scale, seed):
    rng = np.random.default_rng(seed)
    if kind == "gauss":
        W = rng.standard_normal((n, m))
    elif kind == "uniform":
        W = rng.uniform(-1, 1, (n, m))
    elif kind == "zeros":
        W = np.zeros((n, m))
    elif kind == "constant":
        W = np.full((n, m), 0.7)
    elif kind == "rank1":
        W = np.outer(rng.standard_normal(n), rng.standard_normal(m))
    elif kind == "t1.5":
        W = rng.standard_t(1.5, (n, m))
    elif kind == "spike":
        W = rng.standard_normal((n, m)) / math.sqrt(max(n, m))
        W += 1e4 * np.outer(rng.standard_normal(n), rng.standard_normal(m)) / math.sqrt(n * m)
    else:
        W = rng.standard_normal((n, m))
        W[rng.integers(n), rng.integers(m)] = np.nan if kind == "nan" else np.inf
    with np.errstate(over="ignore", invalid="ignore"):
        return W * scale


def wrap(W, container):
    if container == "numpy":
        return W
    if container == "list":
        return W.tolist()
    with np.errstate(over="ignore"):
        dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "grad": torch.float64}[container]
        t = torch.tensor(W, dtype=dtype)
    if container == "grad":
        t.requires_grad_(True)
    return t


matrices = st.builds(lambda k, n, m, s, seed, c: wrap(make_matrix(k, n, m, s, seed), c),
                     kinds, st.integers(1, 40), st.integers(1, 60), scales, st.integers(0, 2**16), containers)


def _quiet(f, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return f(*args, **kwargs)
        except OK:
            return None


def _finite(x):
    return np.all(np.isfinite(np.asarray(x, dtype=float)))


@settings(max_examples=40, **SETTINGS)
@given(matrices)
def test_spectral_distance_is_sane_or_refused(W):
    s = _quiet(es.spectral_distance, W)
    if s is not None:
        assert math.isfinite(s) and 0 <= s <= 2 + 1e-9  # L1 distance of two densities


@settings(max_examples=15, **SETTINGS)
@given(matrices)
def test_spectrum_type_is_one_of_the_four_or_refused(W):
    t = _quiet(es.spectrum_type, W)
    assert t is None or t in es.TYPES


@settings(max_examples=30, **SETTINGS)
@given(matrices, st.booleans())
def test_fit_is_sane_or_refused(W, gof):
    try:
        sv = np.linalg.svd(np.asarray(W.detach().float() if isinstance(W, torch.Tensor) else W, dtype=float),
                           compute_uv=False)
    except (np.linalg.LinAlgError, ValueError, TypeError):
        return
    shape = np.shape(np.asarray(W.detach().float() if isinstance(W, torch.Tensor) else W, dtype=float))
    for f in (lambda: mp.fit(sv, shape, gof=gof, gof_samples=5), lambda: mp.fit_naive(sv, shape)):
        res = _quiet(f)
        if res is None:
            continue
        assert res.sigma > 0 and math.isfinite(res.sigma)
        assert 0 <= res.nu_min <= res.nu_max and math.isfinite(res.nu_max)
        assert 0 <= res.n_outliers <= res.M and 0 <= res.fraction_outliers <= 1
        assert res.tw_margin >= 0 and math.isfinite(res.tw_margin)
        if res.method == "two-stage":
            assert 0 <= res.gof_distance <= 1
            if gof:
                assert res.bulk_ok in (True, False) and 0 < res.gof_pvalue <= 1


values = st.one_of(
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=0, max_size=50),
    st.lists(st.floats(min_value=0, max_value=1e300), min_size=0, max_size=50),
)


@settings(max_examples=40, **SETTINGS)
@given(values, st.tuples(st.integers(-2, 60), st.integers(-2, 60)))
def test_fit_of_arbitrary_values_is_sane_or_refused(sv, shape):
    res = _quiet(mp.fit, sv, shape, gof=False)
    if res is not None:
        assert res.sigma > 0 and res.nu_min <= res.nu_max and 0 <= res.n_outliers <= len(sv)


@settings(max_examples=40, **SETTINGS)
@given(values)
def test_statistic_and_broaden_are_sane_or_refused(x):
    s = _quiet(es.statistic, x)
    if s is not None:
        assert math.isfinite(s) and s >= 0
    out = _quiet(mp.broaden, x)
    if out is not None:
        assert _finite(out[0]) and _finite(out[1]) and np.all(out[1] >= 0)


params = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5), st.none(),
                   st.text(max_size=2), st.just(True))


@settings(max_examples=60, **SETTINGS)
@given(params, params, st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6))
def test_densities_and_distribution_functions(sigma, q, x):
    for f in (mp.density, mp.eigen_density, mp.eigen_cdf, mp.cdf):
        y = _quiet(f, x, sigma, q)
        if y is not None:
            assert _finite(y) and np.all(y >= 0)
            if f in (mp.eigen_cdf, mp.cdf):
                assert np.all(y <= 1)
    e = _quiet(mp.edges, sigma, q)
    if e is not None:
        assert 0 <= e[0] <= e[1] and _finite(e)
    k = _quiet(mp.ks_to_mp, x, sigma, q)
    if k is not None:
        assert 0 <= k <= 1


@settings(max_examples=40, **SETTINGS)
@given(params, params, params)
def test_scalar_functions(a, b, C):
    r = _quiet(es.mp_parameters, a, b)
    if r is not None:
        assert r[0] > 0 and 0 < r[1] <= 1
    t = _quiet(es.threshold, a, C)
    if t is not None:
        assert math.isfinite(t) and t > 0
    t = _quiet(es.threshold, a, C, m=b, method="calibrated", samples=1000)  # small n only: cheap
    if t is not None:
        assert math.isfinite(t) and t >= 0
    for f in (es.icbrt, es.n_bins):
        v = _quiet(f, a)
        if v is not None:
            assert v >= 0 and isinstance(v, int)
    p = _quiet(mp.tw1_quantile, a)
    if p is not None:
        assert math.isfinite(p)
    c = _quiet(mp.tw1_cdf, a)
    if c is not None:
        assert 0 <= c <= 1
    s = _quiet(mp.tw_scale, a, (b, C))
    if s is not None:
        assert s > 0 and math.isfinite(s)


@settings(max_examples=15, **SETTINGS)
@given(st.integers(-3, 40), st.integers(-3, 60), st.integers(-1, 3))
def test_simulated_spectra_and_nulls(n, m, seed):
    sv = _quiet(mp.sample_spectrum, (n, m), seed if seed >= 0 else 0)
    if sv is not None:
        assert _finite(sv) and np.all(sv >= 0) and len(sv) == min(n, m)
    null = _quiet(es.null_statistic, n, m, samples=10, seed=seed)
    if null is not None:
        assert _finite(null) and np.all(null >= 0) and not null.flags.writeable
    g = _quiet(mp.gof_null, (n, m), samples=5, seed=seed)
    if g is not None:
        assert _finite(g) and np.all((g >= 0) & (g <= 1))


@settings(max_examples=10, **SETTINGS)
@given(st.lists(st.sampled_from(["fc1", "fc2", 3, None]), max_size=3), params, st.text(max_size=6))
def test_callback_arguments(layers, C, method):
    try:
        es.SpectralEarlyStopping(layers, C=C, method=method)
    except OK:
        pass

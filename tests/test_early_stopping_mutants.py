"""Tests written against the mutants of `rmtlib.early_stopping` that survived the suite (issue 17).

Each compares with an independent expectation: the input door's promised messages (the
argument named, its bounds, what to do), the operational definitions of the spectrum types
on matrices built with a known number of spikes (BBP: a spike theta > q^(1/4) leaves the
bulk) or a known rank, the callback's records against hand-computed shapes and thresholds,
and what a progress bar writes to stderr.
"""
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from rmtlib import early_stopping as es


# --------------------------------------------------------------------------- the input door
def test_statistic_names_its_arguments_and_says_what_to_do():
    with pytest.raises(ValueError, match=r"^method must be one of \['exact', 'midpoint'\]; got 'simpson'"):
        es.statistic(np.arange(1.0, 20.0), method="simpson")
    with pytest.raises(ValueError, match=r"^eigenvalues has 3 entries; at least 8 are needed"):
        es.statistic([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"got 1 negative values: pass squared singular values$"):
        es.statistic([-1.0, *np.arange(1.0, 12.0)])
    with pytest.raises(ValueError, match=r"^W is all zeros: rank collapse, no spectrum to compare with the MP law"):
        es.spectral_distance(torch.zeros(10, 12))


def test_null_and_calibration_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match=r"^n must lie in \[8, inf\); got 4"):
        es.null_statistic(4, 10, samples=10, cache=False)
    # the level is a quantile strictly below 1 (open bound): 1.0 and above are refused by name
    for level in (1.0, 1.5):
        with pytest.raises(ValueError, match=r"^level must lie in \[0.5, 1.0\); got"):
            es.calibrated_threshold(8, 10, level=level, samples=10)


def test_null_statistic_progress_bar_names_the_shape(monkeypatch, capsys):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setenv("RMTLIB_PROGRESS", "1")
    es.null_statistic(9, 11, samples=10, seed=987, cache=False)  # a key no other test memoizes
    assert "s_n null 9x11" in capsys.readouterr().err


# --------------------------------------------------------------------------- spectrum types
def _spiked(seed=1, M=40, N=160, thetas=(3.0, 4.0, 5.0, 6.0, 7.0)):
    """N(0, 1/N) noise (sigma = 1, q = 1/4, edge 1.5) plus len(thetas) spikes far above
    the BBP threshold q^(1/4) = 0.71: exactly len(thetas) values outside the bulk
    (seed 1: no noise value beyond the Tracy-Widom margin)."""
    g = np.random.default_rng(seed)
    X = g.standard_normal((M, N)) / math.sqrt(N)
    U = np.linalg.qr(g.standard_normal((M, len(thetas))))[0]
    V = np.linalg.qr(g.standard_normal((N, len(thetas))))[0]
    return X + U @ np.diag(thetas) @ V.T


def test_spectrum_type_bounds_of_its_definition():
    W = _spiked()  # 5 outliers among M = 40 values
    # "more outliers than heavy_fraction of the values" is HT: 5 is not more than 5 / 40 of 40
    assert es.spectrum_type(W, heavy_fraction=5 / 40) == "BT"
    assert es.spectrum_type(W, heavy_fraction=4.5 / 40) == "HT"
    # more outliers than max_spikes is HT; max_spikes as large as M (the reference value
    # for the collapse test is then the smallest singular value) keeps BT
    assert es.spectrum_type(W, max_spikes=4) == "HT"
    assert es.spectrum_type(W, max_spikes=5) == "BT"
    assert es.spectrum_type(W, max_spikes=40) == "BT"
    assert es.spectrum_type(W, max_spikes=100) == "BT"


def test_a_rank_collapsed_matrix_is_rc_even_when_the_quick_test_is_off():
    # rank 5 of 40: 35 zero singular values. collapse_fraction=1 switches the quick count
    # off; the MP fit then refuses the spectrum as a rank collapse, which is RC, not HT
    g = np.random.default_rng(0)
    W = g.standard_normal((40, 5)) @ g.standard_normal((5, 60))
    assert es.spectrum_type(W) == "RC"
    assert es.spectrum_type(W, collapse_fraction=1.0) == "RC"


# --------------------------------------------------------------------------- the callback
class _History:
    def __init__(self):
        self.rows = []

    def record(self, *row):
        self.rows.append(row)


def test_callback_records_the_layer_shape_and_thresholds():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 3))  # layer "0": W is 12 x 24
    cb = es.SpectralEarlyStopping(["0"], C=0.5, types=False, method="fixed", samples=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", es.ThresholdWarning)
        cb.on_train_begin(net, _History())
    [row] = cb.records
    assert (row["epoch"], row["layer"], row["n"], row["m"]) == (0, "0", 12, 24)
    s_star = 0.5 * math.sqrt(math.log(12)) / 12 ** (1 / 3)  # Meng & Yao's s*, n = 12
    assert row["fixed_threshold"] == pytest.approx(s_star, rel=1e-12)
    assert row["threshold"] == pytest.approx(s_star, rel=1e-12)  # method="fixed"
    assert list(cb.to_frame().n) == [12]


def test_threshold_warning_only_where_the_fixed_threshold_is_used():
    # 12 x 24 noise exceeds s* (C = 0.4) in about 60% of draws: "auto" and "fixed" warn,
    # "calibrated" does not use s* and must not warn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(24, 12))
    kw = dict(types=False, level=0.9, samples=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error", es.ThresholdWarning)
        es.SpectralEarlyStopping(["0"], method="calibrated", **kw).on_train_begin(net, _History())
    for method in ("auto", "fixed"):
        with pytest.warns(es.ThresholdWarning, match="exceeded by pure noise"):
            es.SpectralEarlyStopping(["0"], method=method, **kw).on_train_begin(net, _History())


# =========================================================================== whole module (issue 17)
# Tests against the survivors of the whole-module mutation run (1,208 mutants). Each error
# message is matched WHOLE (the argument named, its bounds, why, what to do); the values are
# compared with hand-worked numbers, with the formulas of METHODS §6 written out here in numpy,
# or with scipy quadrature.
import bisect
import json

from rmtlib import marchenko_pastur as mp

_BAD_ARGUMENTS = [
    # icbrt: n >= 0
    (lambda: es.icbrt(-1), "n must lie in [0, inf); got -1"),
    # mp_parameters: 0 <= a < b
    (lambda: es.mp_parameters(-1, 1), "a must lie in [0, inf); got -1.0"),
    (lambda: es.mp_parameters(0, -1), "b must lie in [0, inf); got -1.0"),
    (lambda: es.mp_parameters(1, 1), "need 0 <= a < b for the MP edges; got a=1.0, b=1.0 (all eigenvalues equal?)"),
    # statistic and spectral_distance
    (lambda: es.statistic(np.arange(1.0, 20.0), points_per_bin=0), "points_per_bin must lie in [1, inf); got 0"),
    (lambda: es.statistic([1.0, 2.0, 3.0]),
     "eigenvalues has 3 entries; at least 8 are needed (2 floor(n^(1/3)) >= 4 histogram bins)"),
    (lambda: es.statistic(np.zeros(10)), "all eigenvalues are zero: rank collapse, no spectrum to compare"),
    (lambda: es.statistic(np.ones(10)), "all eigenvalues are equal: no spectrum to compare with the MP law"),
    (lambda: es.spectral_distance(torch.zeros(10, 12)),
     "W is all zeros: rank collapse, no spectrum to compare with the MP law (spectrum_type gives 'RC')"),
    (lambda: es.spectral_distance(np.ones(20)), "W must be a 2-D matrix; got shape (20,)"),
    # null_statistic
    (lambda: es.null_statistic(4, 10, samples=10, cache=False),
     "n must lie in [8, inf); got 4 (the histogram statistic needs >= 8 eigenvalues)"),
    (lambda: es.null_statistic(8, 0, samples=10, cache=False),
     "m must lie in [8, inf); got 0 (the histogram statistic needs >= 8 eigenvalues)"),
    # min(n, m) is the number of eigenvalues: a small m is refused like a small n (it was
    # swapped into n after n's check: 5 eigenvalues, 2 bins, computed without a word)
    (lambda: es.null_statistic(100, 5, samples=10, cache=False),
     "m must lie in [8, inf); got 5 (the histogram statistic needs >= 8 eigenvalues)"),
    (lambda: es.null_statistic(8, 10, samples=9, cache=False), "samples must lie in [10, inf); got 9 (a null needs draws)"),
    (lambda: es.null_statistic(8, 10, samples=10, seed=-1, cache=False), "seed must lie in [0, inf); got -1"),
    # the calibration's number of draws: ceil(1 / (1 - level)); 1 / (1 - 0.6) = 2.5 needs 3
    (lambda: es.calibrated_threshold(8, 10, level=0.6, samples=2),
     "samples must lie in [3, inf); got 2 (the 60.0% quantile of the noise null needs at least 3 draws; "
     "pass more samples or a lower level)"),
    (lambda: es.SpectralEarlyStopping(["0"], level=0.999, samples=999),
     "samples must lie in [1000, inf); got 999 (the 99.9% quantile of the noise null needs at least 1000 "
     "draws; pass more samples or a lower level)"),
    # threshold
    (lambda: es.threshold(1), "n must lie in [2, inf); got 1 (log n must be positive)"),
    (lambda: es.threshold(100, C=0), "C must lie in (0, inf); got 0.0 (C must be positive (Meng & Yao use 0.4 to 0.6))"),
    (lambda: es.threshold(100, m=0), "m must lie in [2, inf); got 0 (log min(n, m) must be positive)"),
    # n = min(n, m): m = 1 gave n = 1 and s* = 0 with method="fixed" (every s_n fired)
    (lambda: es.threshold(100, m=1, method="fixed"), "m must lie in [2, inf); got 1 (log min(n, m) must be positive)"),
    (lambda: es.threshold(100, method="calibrated"),
     "method='calibrated' needs the layer's other dimension m (threshold(n, m=n0)); "
     "the null of s_n depends on the aspect ratio c = n / m"),
    # null_table (refused before any null is drawn)
    (lambda: es.null_table(ns=(8,), cs=(0.5,), C=0), "C must lie in (0, inf); got 0.0"),
    (lambda: es.null_table(ns=(8,), cs=(0.0,)), "c must lie in (0, 1]; got 0.0"),
    (lambda: es.null_table(ns=(8,), cs=(1.5,)), "c must lie in (0, 1]; got 1.5"),
    # spectrum_type
    (lambda: es.spectrum_type(np.ones(30)), "W must be a 2-D matrix; got shape (30,)"),
    (lambda: es.spectrum_type(np.ones((30, 30)), rank_tol=-0.5), "rank_tol must lie in [0, 1]; got -0.5"),
    (lambda: es.spectrum_type(np.ones((30, 30)), rank_tol=1.5), "rank_tol must lie in [0, 1]; got 1.5"),
    (lambda: es.spectrum_type(np.ones((30, 30)), rank_tol=2), "rank_tol must lie in [0, 1]; got 2.0"),
    (lambda: es.spectrum_type(np.ones((30, 30)), collapse_fraction=-0.5), "collapse_fraction must lie in [0, 1]; got -0.5"),
    (lambda: es.spectrum_type(np.ones((30, 30)), collapse_fraction=1.5), "collapse_fraction must lie in [0, 1]; got 1.5"),
    (lambda: es.spectrum_type(np.ones((30, 30)), collapse_fraction=2), "collapse_fraction must lie in [0, 1]; got 2.0"),
    (lambda: es.spectrum_type(np.ones((30, 30)), heavy_fraction=-0.5), "heavy_fraction must lie in [0, 1]; got -0.5"),
    (lambda: es.spectrum_type(np.ones((30, 30)), heavy_fraction=1.5), "heavy_fraction must lie in [0, 1]; got 1.5"),
    (lambda: es.spectrum_type(np.ones((30, 30)), heavy_fraction=2), "heavy_fraction must lie in [0, 1]; got 2.0"),
    (lambda: es.spectrum_type(np.ones((30, 30)), max_spikes=-1), "max_spikes must lie in [0, inf); got -1"),
    (lambda: es.spectrum_type(np.ones((19, 30))),
     "W has shape (19, 30): 19 singular values are too few to type (need >= 20 for an MP fit)"),
    # the callback's constructor
    (lambda: es.SpectralEarlyStopping([]), "give at least one layer name to monitor"),
    (lambda: es.SpectralEarlyStopping(["0"], C=0), "C must lie in (0, inf); got 0.0 (Meng & Yao use 0.4 to 0.6)"),
    (lambda: es.SpectralEarlyStopping(["0"], C=-1), "C must lie in (0, inf); got -1.0 (Meng & Yao use 0.4 to 0.6)"),
    (lambda: es.SpectralEarlyStopping(["0"], method="x"), "method must be one of ['auto', 'fixed', 'calibrated']; got 'x'"),
    (lambda: es.SpectralEarlyStopping(["0"], level=0.4), "level must lie in [0.5, 1.0); got 0.4"),
    (lambda: es.SpectralEarlyStopping(["0"], level=1.0), "level must lie in [0.5, 1.0); got 1.0"),
    (lambda: es.SpectralEarlyStopping(["0"], level=1.5), "level must lie in [0.5, 1.0); got 1.5"),
    (lambda: es.SpectralEarlyStopping(["0"], method="fixed", samples=9), "samples must lie in [10, inf); got 9"),
    (lambda: es.SpectralEarlyStopping(["0"], seed=-1), "seed must lie in [0, inf); got -1"),
]


@pytest.mark.parametrize("call, message", _BAD_ARGUMENTS, ids=[m[:40] for _, m in _BAD_ARGUMENTS])
def test_every_refusal_names_the_argument_its_bounds_and_why(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert str(err.value) == message


def test_the_bounds_themselves_are_accepted():
    # the closed ends of the documented ranges are valid input
    assert es.icbrt(0) == 0
    assert es.mp_parameters(0, 0.25) == (0.0625, 1.0)  # sigma = (0 + sqrt .25) / 2, c = 1 at a = 0
    assert es.mp_parameters(1, 9) == (4.0, 0.25)  # sqrt: 1, 3; sigma = 2, sqrt c = 2 / 4
    assert es.threshold(2) == pytest.approx(0.4 * math.sqrt(math.log(2)) / 2 ** (1 / 3), rel=1e-14)
    cb = es.SpectralEarlyStopping("fc1", method="fixed", samples=10)  # one name as a string
    assert cb.layers == ["fc1"] and cb.stop is True and cb.types is True and cb.seed == 0
    # 1 / (1 - level) = 1000.0000004: rounded to 6 decimals that is 1000 draws, not 1001
    es.SpectralEarlyStopping(["0"], level=1 - 1 / 1000.0000004, samples=1000)


# --------------------------------------------------------------------------- icbrt
class _Deadline:
    """Raise TimeoutError in the test after `seconds` of wall time (SIGALRM, main thread)."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        import signal

        def _raise(signum, frame):
            raise TimeoutError(f"not done in {self.seconds} s")

        self._old = signal.signal(signal.SIGALRM, _raise)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *exc):
        import signal

        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._old)


def test_icbrt_is_the_integer_cube_root_also_where_floating_point_is_far_off():
    # reference: bisection in a table of exact integer cubes. The whole test takes
    # milliseconds: the correction loops start from the floating-point root and take a few
    # steps (a deadline of 5 s, so that a loop that walks from far away fails, not hangs)
    cubes = [k**3 for k in range(200)]
    with _Deadline(5.0):
        for n in range(0, 200**3, 997):
            assert es.icbrt(n) == bisect.bisect_right(cubes, n) - 1, n
        # near 10^48, n ** (1/3) in floating point is about 20 below the true root (1/3 is
        # not exact and the error scales with log n): the second loop walks the whole way
        for k in (10**16, 10**16 + 7, 3**33):
            for n, want in ((k**3 - 1, k - 1), (k**3, k), (k**3 + 1, k), ((k + 1) ** 3 - 1, k)):
                assert es.icbrt(n) == want, (k, n - k**3)


# --------------------------------------------------------------------------- the statistic
def _mp_density(x, sigma2, c):
    """MP density of the eigenvalues of W W^T (METHODS §6), written out here."""
    a, b = sigma2 * (1 - math.sqrt(c)) ** 2, sigma2 * (1 + math.sqrt(c)) ** 2
    inside = (x > a) & (x < b)
    xs = np.where(inside, x, (a + b) / 2)
    return np.where(inside, np.sqrt((b - xs) * (xs - a)) / (2 * math.pi * c * sigma2 * xs), 0.0)


def _reference_bins(X):
    """The histogram of X / max X in 2 floor(cbrt n) bins, and the MP sigma^2, c fixed by its
    smallest and largest value (METHODS §6), written out for the references below."""
    X = np.sort(np.asarray(X, dtype=np.float64))
    X = X / X[-1]
    n, a, b = len(X), X[0], X[-1]
    k = 0
    while (k + 1) ** 3 <= n:
        k += 1
    hist, edges = np.histogram(X, bins=2 * k, range=(a, b), density=True)
    sigma2 = ((math.sqrt(a) + math.sqrt(b)) / 2) ** 2
    c = ((math.sqrt(b) - math.sqrt(a)) / (math.sqrt(b) + math.sqrt(a))) ** 2
    return hist, edges, a, b, k, sigma2, c


def _midpoint_reference(X, points):
    """s_n with `points` midpoints per bin, from its definition (METHODS §6)."""
    hist, edges, a, b, k, sigma2, c = _reference_bins(X)
    width = (b - a) / (2 * k)
    x = edges[:-1, None] + (np.arange(points)[None, :] + 0.5) / points * width
    return float(np.sum(np.abs(hist[:, None] - _mp_density(x, sigma2, c))) * width / points)


def _gauss_eigenvalues(n=30, m=60, seed=3):
    g = np.random.default_rng(seed)
    return np.linalg.svd(g.standard_normal((n, m)), compute_uv=False) ** 2


def test_midpoint_route_is_its_definition_with_the_stated_points():
    g = np.random.default_rng(3)
    W = g.standard_normal((30, 60))
    X = np.linalg.svd(W, compute_uv=False) ** 2  # a = X_(1) > 0: the bins do not start at 0
    for points in (1, 3, 64):
        want = _midpoint_reference(X, points)
        assert es.statistic(X, method="midpoint", points_per_bin=points) == pytest.approx(want, rel=1e-10)
        assert es.spectral_distance(W, method="midpoint", points_per_bin=points) == pytest.approx(want, rel=1e-9)
    want = _midpoint_reference(X, 64)  # the default is 64 points per bin
    assert es.statistic(X, method="midpoint") == pytest.approx(want, rel=1e-10)
    assert es.spectral_distance(W, method="midpoint") == pytest.approx(want, rel=1e-9)
    # and the exact route is not the midpoint one (the singularity is missed by midpoints)
    assert abs(es.spectral_distance(W) - want) > 1e-4


def test_exact_statistic_of_a_degenerate_spectrum_against_quadrature():
    # nine zero eigenvalues and one: a = 0, b = 1, so sigma^2 = 1/4, c = 1 and
    # p(x) = (2 / pi) sqrt((1 - x) / x); n = 10 gives 2 floor(10^(1/3)) = 4 bins of width 1/4
    # holding 9 and 1 values: heights 3.6, 0, 0, 0.4
    from scipy import integrate

    X = np.array([0.0] * 9 + [1.0])
    h = lambda x: 3.6 if x < 0.25 else (0.4 if x >= 0.75 else 0.0)  # noqa: E731
    p = lambda x: 2 / math.pi * math.sqrt((1 - x) / x)  # noqa: E731
    want = sum(integrate.quad(lambda x: abs(h(x) - p(x)), lo, lo + 0.25, limit=200, epsabs=1e-12)[0]
               for lo in (0.0, 0.25, 0.5, 0.75))
    assert es.statistic(X) == pytest.approx(want, abs=1e-8)
    assert es.statistic(X * 1e-5) == pytest.approx(want, abs=1e-8)  # the scale cancels


def test_the_statistic_is_scale_free_to_the_ends_of_the_float_range_and_warns_of_nothing():
    g = np.random.default_rng(4)
    W = g.standard_normal((30, 60))
    X = np.linalg.svd(W, compute_uv=False) ** 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning (sqrt of a negative discriminant, overflow)
        s = es.statistic(X)
        for scale in (2.0**-900, 2.0**-3, 2.0**600):  # powers of two: X * scale is exact
            assert es.statistic(X * scale) == pytest.approx(s, rel=1e-12)
        for scale in (2.0**-300, 2.0**300):  # W's entries scaled: eigenvalues by scale^2
            assert es.spectral_distance(W * scale) == pytest.approx(es.spectral_distance(W), rel=1e-12)
    # float32 input is analysed in float64, as promised: the same as its float64 values
    X32, W32 = X.astype(np.float32), W.astype(np.float32)
    assert es.statistic(X32) == es.statistic(X32.astype(np.float64))
    assert es.spectral_distance(W32) == es.spectral_distance(W32.astype(np.float64))


def test_rounding_negatives_are_read_as_zero_and_real_negatives_refused():
    X = np.sort(_gauss_eigenvalues())
    X = X / X[-1]  # max exactly 1
    X[0] = 0.0
    s0 = es.statistic(X)
    # down to -1e-12 of the largest value (the boundary included) a negative is rounding
    for neg in (-1e-15, -1e-12):
        Y = X.copy()
        Y[0] = neg
        assert es.statistic(Y) == s0
    # relative to the LARGEST value: the same -1e-9 is rounding when the largest is 2^20
    Y = X * 2.0**20
    Y[0] = -1e-9
    assert es.statistic(Y) == pytest.approx(s0, rel=1e-12)
    # ... and with one large value over small ones (the second largest 1e-4, the second
    # smallest below 1e-6), -1e-14 is still rounding
    Y = np.concatenate([[-1e-14], X[1:-1] * 1e-4, [1.0]])
    Z = Y.copy()
    Z[0] = 0.0
    assert es.statistic(Y) == es.statistic(Z)
    # beyond -1e-12 of the largest value: refused, counting the negative values only
    Y = X.copy()
    Y[0], Y[1] = -1.0000001e-12, 0.0
    with pytest.raises(ValueError) as err:
        es.statistic(Y)
    assert str(err.value) == ("eigenvalues of W W^T are non-negative; got 1 negative values: "
                              "pass squared singular values")
    # a small spectrum (largest 2^-20): -1e-13 is 1e-7 of its largest value, refused
    Y = X * 2.0**-20
    Y[0] = -1e-13
    with pytest.raises(ValueError, match="got 1 negative values"):
        es.statistic(Y)


# --------------------------------------------------------------------------- the null and the thresholds
def _null_draws(n, m, samples, seed):
    """s_n of the documented draws: the bidiagonal model seeded by (seed, n, m), sorted."""
    rng = np.random.default_rng([seed, n, m])
    return np.sort([es.statistic(mp.sample_spectrum((m, n), rng) ** 2) for _ in range(samples)])


@pytest.fixture
def fresh_null(monkeypatch):
    monkeypatch.setattr(es, "_NULL_MEMO", {})  # no null memoized by an earlier test


def test_null_statistic_is_the_exact_statistic_of_its_seeded_draws(fresh_null):
    want = _null_draws(9, 12, 10, 0)
    np.testing.assert_array_equal(es.null_statistic(9, 12, samples=10, cache=False), want)  # seed 0
    np.testing.assert_array_equal(es.null_statistic(12, 9, samples=10, seed=3, cache=False), _null_draws(9, 12, 10, 3))


def test_null_statistic_cache_file_format_and_switch(fresh_null, tmp_path, monkeypatch):
    monkeypatch.setenv("RMTLIB_CACHE", str(tmp_path))
    path = es._null_path(9, 12, 10, 0)
    assert path == tmp_path / "sn_null" / "n9_m12_K10_seed0.json"
    # a file written by hand in the documented format is read back (sorted, read-only)
    path.parent.mkdir(parents=True)
    planted = [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0]
    path.write_text(json.dumps({"key": [9, 12, 10, 0], "s_n": planted}))
    got = es.null_statistic(9, 12, samples=10)
    np.testing.assert_array_equal(got, np.sort(planted))
    assert not got.flags.writeable
    # cache=False ignores the file and computes
    monkeypatch.setattr(es, "_NULL_MEMO", {})
    np.testing.assert_array_equal(es.null_statistic(9, 12, samples=10, cache=False), _null_draws(9, 12, 10, 0))
    # a new null is written in that format
    monkeypatch.setattr(es, "_NULL_MEMO", {})
    values = es.null_statistic(9, 12, samples=10, seed=5)
    stored = json.loads(es._null_path(9, 12, 10, 5).read_text())
    assert stored["key"] == [9, 12, 10, 5]
    np.testing.assert_array_equal(stored["s_n"], values)


def test_null_progress_bar_is_cleared_when_done(monkeypatch, capsys, fresh_null):
    # leave=False: tqdm erases the finished bar; with leave=True its last line stays
    # (ending "10/10 ... \n")
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setenv("RMTLIB_PROGRESS", "1")
    es.null_statistic(9, 13, samples=10, seed=988, cache=False)
    err = capsys.readouterr().err
    assert "s_n null 9x13" in err and not err.endswith("\n")


def test_calibrated_threshold_is_the_higher_quantile_of_the_seeded_null(fresh_null):
    # level 0.75 of 20 draws: position 0.75 * 19 = 14.25, "higher" takes the draw of rank 15
    # (0-based); a linear interpolation would not be a draw at all
    d0, d3 = _null_draws(9, 12, 20, 0), _null_draws(9, 12, 20, 3)
    assert d0[15] > d0[14] and d3[15] > d3[14]
    assert es.calibrated_threshold(9, 12, level=0.75, samples=20) == d0[15]
    assert es.calibrated_threshold(9, 12, level=0.75, samples=20, seed=3) == d3[15]
    for method in ("calibrated", "auto"):
        assert es.threshold(9, C=1e-3, m=12, method=method, level=0.75, samples=20) == d0[15]
        assert es.threshold(9, C=1e-3, m=12, method=method, level=0.75, samples=20, seed=3) == d3[15]
    # where the fixed s* is the larger (C = 5): "calibrated" still gives the quantile, "auto" s*
    fixed = 5 * math.sqrt(math.log(9)) / 9 ** (1 / 3)
    assert fixed > d0[15]
    assert es.threshold(9, C=5, m=12, method="calibrated", level=0.75, samples=20) == d0[15]
    assert es.threshold(9, C=5, m=12, level=0.75, samples=20) == pytest.approx(fixed, rel=1e-14)
    # the default C is 0.4 (Meng & Yao), also where m is given and method="fixed"
    assert es.threshold(1000) == pytest.approx(0.4 * math.sqrt(math.log(1000)) / 10, rel=1e-14)
    assert es.threshold(1000, m=10, method="fixed") == pytest.approx(0.4 * math.sqrt(math.log(10)) / 10 ** (1 / 3),
                                                                      rel=1e-14)


def test_null_table_against_the_seeded_draws(fresh_null):
    # c = 0.5 at n = 9: m = round(9 / 0.5) = 18; T = s_n n^(1/3) / sqrt(log n)
    s = _null_draws(9, 18, 20, 3)
    T = s * (9 ** (1 / 3) / math.sqrt(math.log(9)))
    C = float(T[12])  # a draw exactly at C is not a false alarm (T > C): 7 of 20 are
    table = es.null_table(ns=(9,), cs=(0.5,), C=C, samples=20, seed=3)
    assert list(table.columns) == ["n", "m", "c", "T_median", "T_q99", "T_max", "false_alarm_fixed", "calibrated_T"]
    [row] = table.to_dict("records")
    assert (row["n"], row["m"], row["c"]) == (9, 18, 0.5)
    assert row["T_median"] == pytest.approx((T[9] + T[10]) / 2, rel=1e-13)
    assert row["T_q99"] == pytest.approx(T[18] + 0.81 * (T[19] - T[18]), rel=1e-13)  # 0.99 * 19 = 18.81
    assert row["T_max"] == pytest.approx(T[19], rel=1e-13)
    assert row["false_alarm_fixed"] == 7 / 20
    assert row["calibrated_T"] == pytest.approx(T[19], rel=1e-13)  # 0.999 * 19 = 18.98: "higher" is T[19]


def test_null_table_defaults_are_200_draws_of_seed_0(fresh_null):
    s = _null_draws(8, 16, 200, 0)
    [row] = es.null_table(ns=(8,), cs=(0.5,)).to_dict("records")
    T = s * (8 ** (1 / 3) / math.sqrt(math.log(8)))
    assert row["T_max"] == pytest.approx(T[-1], rel=1e-13)
    assert row["false_alarm_fixed"] == np.mean(T > 0.4)


# --------------------------------------------------------------------------- spectrum types: the decision rule
def _noise(M, N, seed=0):
    return np.random.default_rng(seed).standard_normal((M, N)) / math.sqrt(N)


def _stub_fit(monkeypatch, n_outliers=0, bulk_ok=True, error=None, warn=()):
    """Replace the MP fit by one that returns `n_outliers` (or raises `error`), so the rule
    that turns a fit into a type is tested on its own."""
    calls = []

    def fit(S, shape):
        calls.append(shape)
        for w in warn:
            warnings.warn(*w)
        if error is not None:
            raise error
        return type("Fit", (), dict(n_outliers=n_outliers, bulk_ok=bulk_ok))()

    monkeypatch.setattr(es.mp, "fit", fit)
    return calls


@pytest.mark.parametrize("M, k, want", [
    (100, 0, "LT"), (100, 1, "BT"), (100, 10, "BT"), (100, 11, "HT"),  # default max_spikes: max(10, 2 M / 100) = 10
    (600, 12, "BT"), (600, 13, "HT"),                                 # 2% of 600 = 12
    (20, 0, "LT"),                                                    # M = 20, the smallest typed
])
def test_default_number_of_spikes(monkeypatch, M, k, want):
    calls = _stub_fit(monkeypatch, n_outliers=k)
    assert es.spectrum_type(_noise(M, M + 10)) == want
    assert calls == [(M, M + 10)]


def test_type_rule_of_a_fit(monkeypatch):
    W = _noise(40, 60)
    _stub_fit(monkeypatch, n_outliers=0, bulk_ok=False)
    assert es.spectrum_type(W) == "HT"  # the bulk fails its goodness of fit
    _stub_fit(monkeypatch, n_outliers=0, bulk_ok=None)
    assert es.spectrum_type(W) == "LT"  # goodness of fit not judged: not a failure
    _stub_fit(monkeypatch, n_outliers=1)
    assert es.spectrum_type(W, max_spikes=0) == "HT"  # max_spikes=0: any outlier is too many
    _stub_fit(monkeypatch, n_outliers=0)
    assert es.spectrum_type(W, max_spikes=0) == "LT"
    # no bulk can be fitted: HT; a fit refusing a rank collapse: RC
    _stub_fit(monkeypatch, error=ValueError("no MP bulk between the edges"))
    assert es.spectrum_type(W) == "HT"
    _stub_fit(monkeypatch, error=ValueError("rank collapse: 30 of 40 singular values are zero"))
    assert es.spectrum_type(W) == "RC"


def test_only_the_fits_own_warning_is_silenced(monkeypatch):
    _stub_fit(monkeypatch, warn=[("bulk off", mp.MPFitWarning), ("overflow", RuntimeWarning)])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert es.spectrum_type(_noise(40, 60)) == "LT"
    assert [w.category for w in seen] == [RuntimeWarning]


# --------------------------------------------------------------------------- spectrum types: rank collapse
def test_collapse_count_on_its_boundaries():
    # rank_tol=1 and max_spikes >= M - 1: the reference value is the smallest singular value,
    # so exactly one value (that one) lies at or below the tolerance: a fraction 1/40
    W = _spiked()
    kw = dict(rank_tol=1.0, max_spikes=40)
    assert es.spectrum_type(W, collapse_fraction=0.5 / 40, **kw) == "RC"  # 1/40 > 0.5/40
    assert es.spectrum_type(W, collapse_fraction=1 / 40, **kw) == "BT"    # 1/40 is not more than 1/40
    assert es.spectrum_type(W, collapse_fraction=1.5 / 40, **kw) == "BT"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_value_at_the_numerical_rank_tolerance_counts(dtype):
    # a huge spike (1e6) and a repeated row: numerical rank M - 1 by numpy's definition
    # (tolerance S_max max(shape) eps), in float64 also for float32 input (exact rows there).
    # With rank_tol=0 and collapse_fraction=0 that one zero value makes the matrix RC
    W = _spiked(thetas=(1e6, 4.0, 5.0)).astype(dtype)
    W[-1] = W[0]
    assert np.linalg.matrix_rank(W.astype(np.float64)) == 39
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning (a deprecated numpy call included)
        assert es.spectrum_type(W, rank_tol=0.0, collapse_fraction=0.0) == "RC"
        assert es.spectrum_type(W) == "BT"  # by default one zero value is no collapse


def test_spectrum_type_is_scale_free_to_the_ends_of_the_float_range():
    W = _spiked()
    for scale in (2.0**-600, 1.0, 2.0**600):
        assert es.spectrum_type(W * scale) == "BT"


# --------------------------------------------------------------------------- the callback
def _net(*weights):
    """A Sequential of Linear layers ("0", "1", ...) holding the given weight matrices."""
    layers = []
    for W in weights:
        lin = nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(W))
        layers.append(lin)
    return nn.Sequential(*layers)


def _s_star(n, C):
    return C * math.sqrt(math.log(n)) / n ** (1 / 3)


def _C_with_s_star_equal_to(x, n):
    """A C whose s* is exactly x in floating point (searched among the neighbours of x / k)."""
    C0 = x / (math.sqrt(math.log(n)) / n ** (1 / 3))
    for direction in (math.inf, -math.inf):
        C = C0
        for _ in range(50):
            if _s_star(n, C) == x:
                return C
            C = math.nextafter(C, direction)
    raise AssertionError("no C found")


def test_callback_stops_records_and_reports_the_epoch():
    W = _noise(12, 24, seed=1).astype(np.float32).astype(np.float64)  # as nn.Linear holds it
    X = np.linalg.svd(W, compute_uv=False) ** 2
    s = es.statistic(X)
    hist = _History()
    # s* far below s_n: fires at the first epoch; stop=True is the default
    cb = es.SpectralEarlyStopping(["0"], C=1e-3 * s / _s_star(12, 1.0), types=False, method="fixed", samples=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", es.ThresholdWarning)
        assert cb.on_epoch_end(3, _net(W), hist) is True
    assert cb.fired_epoch == 3 and hist.rows == [("spectral_early_stopping", 3, True)]
    [row] = cb.records
    assert row["s_n"] == pytest.approx(s, rel=1e-10) and row["fired"] is True
    # s* far above s_n: no stop, nothing recorded in the history
    cb = es.SpectralEarlyStopping(["0"], C=1e3 * s / _s_star(12, 1.0), types=False, method="fixed", samples=10)
    assert cb.on_epoch_end(1, _net(W), hist) is False
    assert cb.fired_epoch is None and len(hist.rows) == 1 and cb.records[0]["fired"] is False


def test_callback_fires_when_any_layer_fires_and_not_at_equality():
    # layer "0": rank one plus small noise (far from MP); layer "1": Gaussian noise
    g = np.random.default_rng(2)
    W0 = np.outer(g.standard_normal(12), g.standard_normal(24)) + 0.01 * _noise(12, 24, seed=3)
    W1 = _noise(10, 12, seed=4)
    s0 = es.statistic(np.linalg.svd(W0, compute_uv=False) ** 2)
    s1 = es.statistic(np.linalg.svd(W1, compute_uv=False) ** 2)
    T0, T1 = s0 / _s_star(12, 1.0), s1 / _s_star(10, 1.0)
    assert T0 > 1.5 * T1
    C = (T0 + T1) / 2  # fires for "0" only; the layer that does not fire comes last
    cb = es.SpectralEarlyStopping(["0", "1"], C=C, types=False, method="fixed", samples=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", es.ThresholdWarning)
        assert cb.on_epoch_end(1, _net(W0, W1.T), _History()) is True
    assert [r["fired"] for r in cb.records] == [True, False]
    # s_n exactly at the threshold is not above it: no firing. (Not every s_n is some C's
    # s* in floating point: take the first of a few noise layers whose s_n is.)
    for seed in range(30):
        net = _net(_noise(12, 24, seed=seed))
        try:
            C = _C_with_s_star_equal_to(es.spectral_distance(net[0].weight), 12)
            break
        except AssertionError:
            continue
    cb = es.SpectralEarlyStopping(["0"], C=C, types=False, method="fixed", samples=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", es.ThresholdWarning)
        assert cb.on_epoch_end(1, net, _History()) is False
    [row] = cb.records
    assert row["s_n"] == row["threshold"] and row["fired"] is False


def _warning_text(cb, net):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cb.on_train_begin(net, _History())
    return [str(w.message) for w in seen if w.category is es.ThresholdWarning]


def test_threshold_warning_text_and_values_against_the_seeded_null(fresh_null):
    # layer "0" is 12 x 24 (n = 12, m = 24, c = 0.5); the null of 20 draws of seed 3
    net = _net(_noise(12, 24, seed=5))
    null = _null_draws(12, 24, 20, 3)
    # level 0.5: "higher" takes the draw of rank 10 (0.5 * 19 = 9.5); far from the mean of
    # ranks 9 and 10 at 4 decimals
    assert null[10] - null[9] > 2e-4
    kw = dict(C=0.1, types=False, level=0.5, samples=20, seed=3)
    fixed = _s_star(12, 0.1)
    frac = np.mean(null > fixed)
    assert frac > 0.5
    head = (f"layer 0 (12x24, c = 0.50): the fixed threshold s* = {fixed:.4f} (C = 0.1) is exceeded by pure "
            f"noise in {frac:.1%} of draws; the 50.0% quantile of the noise is {null[10]:.4f}: ")
    cb = es.SpectralEarlyStopping(["0"], method="fixed", **kw)
    assert _warning_text(cb, net) == [head + "the criterion will fire on noise: use method='auto' or 'calibrated'"]
    assert cb.records[0]["threshold"] == pytest.approx(fixed, rel=1e-14)
    cb = es.SpectralEarlyStopping(["0"], method="auto", **kw)
    assert _warning_text(cb, net) == [head + "using the calibrated threshold instead"]
    assert cb.records[0]["threshold"] == max(fixed, null[10])
    cb = es.SpectralEarlyStopping(["0"], method="calibrated", **kw)
    assert _warning_text(cb, net) == []
    assert cb.records[0]["threshold"] == null[10]


def test_callback_null_defaults_to_seed_0(fresh_null):
    net = _net(_noise(12, 24, seed=5))
    null = _null_draws(12, 24, 20, 0)
    cb = es.SpectralEarlyStopping(["0"], C=1e-3, types=False, method="calibrated", level=0.75, samples=20)
    cb.on_train_begin(net, _History())
    assert cb.records[0]["threshold"] == null[15]  # 0.75 * 19 = 14.25: "higher" is rank 15


def test_no_warning_when_exactly_the_allowed_fraction_of_noise_exceeds_s_star(fresh_null):
    # level 0.75: a warning when MORE than 25% of the noise draws exceed s*. With s* equal to
    # the draw of rank 14 of 20, exactly 5 draws (25%) lie above it and the draw at s* is not above
    net = _net(_noise(12, 24, seed=5))
    null = _null_draws(12, 24, 20, 0)
    C = _C_with_s_star_equal_to(float(null[14]), 12)
    cb = es.SpectralEarlyStopping(["0"], C=C, types=False, method="fixed", level=0.75, samples=20)
    assert _warning_text(cb, net) == []


def test_exact_statistic_with_a_bin_taller_than_the_mp_peak_against_quadrature():
    # X = 1/4, eight times 1/2, 1: a = 1/4, b = 1, so sqrt a = 1/2, sqrt b = 1, sigma^2 = 9/16,
    # c = 1/9; 2 floor(10^(1/3)) = 4 bins of width 3/16 holding 1, 8, 0, 1 values. The second
    # bin (height 8 / (10 * 3/16) = 4.27) is above the MP peak (about 1.9): there p = h has no
    # root (negative discriminant), which must cost no warning and no error
    from scipy import integrate

    X = np.array([0.25] + [0.5] * 8 + [1.0])
    edges = 0.25 + 0.1875 * np.arange(5)
    heights = np.array([1, 8, 0, 1]) / (10 * 0.1875)
    sigma2, c = 9 / 16, 1 / 9
    p = lambda x: math.sqrt(max((1 - x) * (x - 0.25), 0.0)) / (2 * math.pi * c * sigma2 * x)  # noqa: E731
    assert heights[1] > 2 * max(p(x) for x in np.linspace(0.26, 0.99, 200))
    want = sum(integrate.quad(lambda x, h=h: abs(h - p(x)), lo, hi, limit=200, epsabs=1e-12)[0]
               for h, lo, hi in zip(heights, edges[:-1], edges[1:]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert es.statistic(X) == pytest.approx(want, abs=1e-8)


def test_eight_eigenvalues_are_enough():
    # MIN_EIGENVALUES = 8 (2 floor(8^(1/3)) = 4 bins): an 8 x 10 matrix is accepted
    W = _noise(8, 10, seed=6)
    X = np.linalg.svd(W, compute_uv=False) ** 2
    assert es.spectral_distance(W) == pytest.approx(es.statistic(X), rel=1e-10)
    assert es.statistic(X) == pytest.approx(_exact_reference(X), abs=1e-8)


def _exact_reference(X):
    """s_n by adaptive quadrature of |histogram - MP density| bin by bin (METHODS §6)."""
    from scipy import integrate

    hist, edges, a, b, k, sigma2, c = _reference_bins(X)
    p = lambda x: float(_mp_density(np.array([x]), sigma2, c)[0])  # noqa: E731
    return sum(integrate.quad(lambda x, h=h: abs(h - p(x)), lo, hi, limit=200, epsabs=1e-12)[0]
               for h, lo, hi in zip(hist, edges[:-1], edges[1:]))

"""Tests written against the `fit_usvt` mutants that survived the suite (issue 17, TESTING.md).

- `x_fit_usvt__mutmut_69` never counts low-end deviations inside the iteration (k_lo = 0 in
  step 4 of the docstring), so directions scaled down stay in the noise energy and pull
  sigma down by sqrt((M - k) / M). The final `n_low` is recounted after the loop and stays
  right, which is why counting alone (tests/test_usvt.py) did not catch it, and with k/M = 1%
  there the bias (0.5%) hid inside the 1% tolerance.
- `x_fit_usvt__mutmut_101` turns the stopping rule `key in seen and new == sigma` into
  `key in seen or new == sigma` (to 1e-12).

Expectations are independent of the code under test: Frobenius norms of the blocks the
matrix was built from, the true entry scale, and steps 4-5 of the docstring worked out by
hand for the cases below.

Mutant 101 has two halves. (a) "Stop at a new state whose scale equals the current one":
observable whenever the first counts are (0, 0), as on pure noise, where step 4 gives back
the naive scale; the mutant then stops one iteration early with the same sigma up to
rounding, so only `iterations` tells (1 instead of 2), and the test below pins it.
(b) "Stop at any revisited state": equivalent, because no revisit with a different scale
can happen. Step 4 depends on the counts only, so such a revisit would make the scales
periodic with period >= 2. Write g(sigma) for steps 2-4; the cuts are t_lo = a sigma,
t_hi = b sigma with a < 1 - sqrt q and b > 1 + sqrt q. Lemma: u < y and g(y) <= u imply
g(u) < y. The bulk at u is the bulk at y minus values above b u plus values in
[a u, a y). Taking out a value v from a bulk of n values (k_hi high) lowers the scale when
v^2 >= sigma^2 (N - k_hi + n - 1) / N, and (N + M) / N = 1 + q < b^2 with v > b u >=
b g(y) >= b sigma: the scale stays <= g(y) <= u. Every bulk value at y is >= a y and
g(y)^2 >= their mean square, so adding values below a y leaves
sigma^2 <= max(g(y)^2, N / (N - k_hi) a^2 y^2) < y^2, as a^2 < (1 - sqrt q)^2 <= 1 - q
< 1 - k_hi / N. In a cycle take its minimum x and its predecessor y > x: every cycle
element in [x, y) maps below y, so the elements below y never lead back to y. (A search
of 80,000 random spectra, log-normal, power-law and MP with both ends planted, M 20-120,
q 0.01-1, the three levels, found no cycle either.)
"""
import math

import numpy as np

from rmtlib import marchenko_pastur as mp

N, M, K, S, C = 600, 300, 24, 0.05, 0.01


def _blocks(seed=11):
    """Gaussian noise (entry sd S) split into the first M - K columns and the last K."""
    G = np.random.default_rng(seed).normal(0.0, S, (N, M))
    return G[:, : M - K], G[:, M - K :]


def _sv(W):
    return np.linalg.svd(W, compute_uv=False)


def test_usvt_takes_directions_scaled_down_out_of_the_noise_energy():
    # W = [G1, C G2]: K columns scaled down by C = 0.01 (the docstring's "direction scaled
    # down on one side"; a column basis is as good as a rotated one for the spectrum).
    # The K smallest singular values come from C G2 projected off range(G1), an
    # (N - M + K) x K Gaussian block: C S (sqrt(324) -+ sqrt(24)) <= 0.0115, 30x
    # below the fitted lower edge S (sqrt N - sqrt M) = 0.359. The other M - K are the MP
    # bulk of the N x (M - K) block G1, lowest near S (sqrt N - sqrt(M - K)) = 0.394, i.e.
    # 5 bottom TW scales (0.0064) above that edge; highest near S (sqrt N + sqrt(M - K)) =
    # 2.055, below the upper edge 2.091 (top TW scale 0.0116). So exactly K values deviate
    # at the low end and none at the high end.
    G1, G2 = _blocks()
    W = np.hstack([G1, C * G2])
    f = mp.fit_usvt(_sv(W), (N, M))
    assert (f.n_low, f.n_high) == (K, 0)
    assert not f.hard_edge and f.low_cut > 0
    # Step 4 with k_lo = K, k_hi = 0: sigma^2 = N sum_bulk nu^2 / (N (M - K)). The bulk
    # energy is ||W||_F^2 minus the K smallest nu^2, and those lie between 0 and
    # ||C G2||_F^2 (the K smallest squared singular values are the minimum of ||W V||_F^2
    # over K-dimensional V; V = the last K columns gives ||C G2||_F^2). So, from the blocks
    # alone and without any SVD:
    #   ||G1||_F^2 / (M - K) <= sigma^2 <= (||G1||_F^2 + ||C G2||_F^2) / (M - K)
    # (a relative width of C^2 K / (M - K) ~ 1e-5). A fit that keeps the K small values in
    # the bulk (mutant 69) divides by M instead: sigma 4.1% low, sqrt(276 / 300) = 0.959.
    e1, e2 = float(np.sum(G1**2)), float(np.sum((C * G2) ** 2))
    assert e1 / (M - K) * (1 - 1e-12) <= f.sigma**2 <= (e1 + e2) / (M - K) * (1 + 1e-12)
    # and against the truth S sqrt(N): sigma^2 is a mean of N (M - K) chi^2_1 / N terms,
    # relative sd sqrt(2 / (N (M - K))) = 0.35%, so 0.17% on sigma; 1% is ~6 sd and the
    # mutant's 4.1% is ~24 sd away
    assert abs(f.sigma / (S * math.sqrt(N)) - 1) < 0.01


def test_usvt_on_pure_noise_of_the_same_shape_flags_nothing_and_stops_after_the_counts_repeat():
    # The same noise without scaled columns (no false positive on pure noise: at level 0.99
    # each end fires with probability ~1%, and this seed does not).
    G1, G2 = _blocks()
    G = np.hstack([G1, G2])
    sv = _sv(G)
    f = mp.fit_usvt(sv, (N, M))
    assert (f.n_low, f.n_high) == (0, 0)
    # step 4 with (k_lo, k_hi) = (0, 0): sigma^2 = N ||G||_F^2 / (N M), from the matrix
    assert math.isclose(f.sigma**2, float(np.sum(G**2)) / M, rel_tol=1e-12)
    assert abs(f.sigma / (S * math.sqrt(N)) - 1) < 0.01  # sd 0.16% (N M terms), as above
    # Steps 1-5 by hand: iteration 1 thresholds at the naive scale sigma_0^2 = mean(nu^2)
    # and counts (0, 0); step 4 on (0, 0) gives sigma_0 back (same energy, same divisor).
    # The counts have "stopped changing" (step 5) only when iteration 2 counts (0, 0) again,
    # so the loop runs exactly 2 iterations. Mutant 101 (`key in seen or new == sigma`)
    # stops inside iteration 1, because the new scale equals the current one although no
    # count has been repeated yet, and reports 1 iteration.
    assert f.iterations == 2


def test_usvt_result_is_a_fixed_point_of_steps_2_to_4_with_spikes_and_low_directions():
    # Both ends planted, the naive scale inflated by the spikes (their theta^2 = 9..100
    # sigma^2 on top of sum nu^2 ~ sigma^2 M): the counts change along the way, and the
    # result must be a fixed point: the counts at the returned sigma (n_low, n_high,
    # recounted after the loop) reproduce that sigma through step 4. Every stop is at a
    # repeated state (the loop cannot cycle between different states, see above), so
    # the mutants stop at the same point here; this pins the contract both must keep.
    rng = np.random.default_rng(5)
    G1, G2 = _blocks(seed=5)
    W = np.hstack([G1, C * G2])
    sigma_true = S * math.sqrt(N)
    U, _ = np.linalg.qr(rng.normal(size=(N, 4)))
    V, _ = np.linalg.qr(rng.normal(size=(M, 4)))
    thetas = np.array([3.0, 5.0, 7.0, 10.0]) * sigma_true  # above BBP, sigma q^(1/4)
    W = W + (U * thetas) @ V.T
    sv = np.sort(_sv(W))
    f = mp.fit_usvt(sv, (N, M))
    assert (f.n_low, f.n_high) == (K, 4)
    assert f.iterations >= 2
    lo, hi = f.n_low, f.n_high
    bulk = sv[lo : M - hi]
    assert math.isclose(f.sigma**2, N * float(np.sum(bulk**2)) / ((N - hi) * (M - hi - lo)), rel_tol=1e-12)
    # the spikes removed a row and a column each and the K directions a column: the bulk
    # is noise of an (N - 4) x (M - 4 - K) block up to O(1/M) corrections; 1.5% is generous
    assert abs(f.sigma / sigma_true - 1) < 0.015


# =========================================================================================
# Whole-module survivors, partial run (issue 17, MARCHENKO_PASTUR_PARTIAL.md). Expectations:
# whole error messages naming the argument, limits refused just outside and accepted on
# them, values worked out by hand (exact binary fractions where equality matters), and
# references computed another way (numpy's SVD of the bidiagonal model, the MP formula).
# =========================================================================================
import re  # noqa: E402
import statistics  # noqa: E402

import pytest  # noqa: E402


def _raises(exc, message, call, *args, **kwargs):
    with pytest.raises(exc, match="^" + re.escape(message) + "$"):
        call(*args, **kwargs)


def test_eigen_laws_and_points_name_their_arguments_and_refuse_a_variance_not_positive():
    for f in (mp.eigen_density, mp.eigen_cdf):
        for bad in (0.0, -1.0):  # min 0, open: 0 refused as well as a negative variance
            _raises(ValueError, f"sigma2 must lie in (0, inf); got {bad} (the MP variance is positive)",
                    f, 1.0, bad, 0.5)
        _raises(TypeError, "x must be an array of numbers; got a string", f, "a", 1.0, 0.5)
        assert f(np.array(1.0), 1e-300, 1.0).shape == ()  # a tiny positive variance is accepted
    _raises(TypeError, "nu must be an array of numbers; got a string", mp.cdf, "a", 1.0, 0.5)
    _raises(TypeError, "nu must be an array of numbers; got a string", mp.density, "a", 1.0, 0.5)
    _raises(ValueError, "values must be a 1-D array; got shape (1, 2)", mp.ks_to_mp, [[1.0, 2.0]], 1.0, 0.5)
    # NaN and Inf are allowed points (finite=False), shapes kept: 0-d stays 0-d, 2-D stays 2-D
    assert mp.density(1.0, 1.0, 0.25).shape == ()
    y = mp.density([[np.nan, np.inf], [1.0, -np.inf]], 1.0, 0.25)
    assert y.shape == (2, 2) and y[0, 0] == 0 and y[0, 1] == 0 and y[1, 1] == 0 and y[1, 0] > 0


def test_eigen_cdf_limits_at_nan_and_infinities():
    # F(-inf) = 0 and F(+inf) = 1 for a distribution function; a NaN point is given 0 (as
    # the density is 0 there). c = 0.25: a = 0.25, b = 2.25, so F(1) is strictly inside (0, 1).
    got = mp.eigen_cdf([-np.inf, np.nan, np.inf, 1.0], 1.0, 0.25)
    assert got[0] == 0.0 and got[1] == 0.0 and got[2] == 1.0 and 0.0 < got[3] < 1.0


@pytest.mark.parametrize("N, M, seed", [(3, 1, 0), (5, 2, 1), (9, 6, 2)])
def test_sample_spectrum_is_the_svd_of_the_bidiagonal_model(N, M, seed):
    # Dumitriu & Edelman: B lower bidiagonal, B_ii ~ chi_(N-i+1), B_(i+1,i) ~ chi_(M-i); the
    # same draws in the same order, singular values of B / sqrt(N) by numpy's SVD.
    rng = np.random.default_rng(seed)
    d = np.sqrt(rng.chisquare(np.arange(N, N - M, -1)))
    s = np.sqrt(rng.chisquare(np.arange(M - 1, 0, -1))) if M > 1 else np.zeros(0)
    B = np.diag(d) + np.diag(s, -1)
    want = np.sort(np.linalg.svd(B / math.sqrt(N), compute_uv=False))
    got = mp.sample_spectrum((N, M), seed)
    assert got.shape == (M,) and np.allclose(got, want, rtol=1e-12, atol=1e-14)


def test_broaden_defaults_limits_and_messages():
    sv = np.sort(np.random.default_rng(4).gamma(3.0, 1.0, 80))
    # defaults: window 15, 600 points from max(0, nu_1 - 3 w_1) to nu_M + 3 w_M
    M = len(sv)
    w = np.array([(sv[min(k + 15, M - 1)] - sv[max(k - 15, 0)]) / 2 for k in range(M)])
    grid, y = mp.broaden(sv)
    assert len(grid) == 600
    assert grid[0] == pytest.approx(max(0.0, sv[0] - 3 * w[0])) and grid[-1] == pytest.approx(sv[-1] + 3 * w[-1])
    idx = [0, 100, 299, 450, 599]
    want = [np.mean(np.exp(-0.5 * ((grid[i] - sv) / w) ** 2) / (w * math.sqrt(2 * math.pi))) for i in idx]
    assert np.allclose(y[idx], want, rtol=1e-10, atol=1e-300)
    _raises(ValueError, "window must lie in [1, inf); got 0", mp.broaden, sv, window=0)
    _raises(ValueError, "points must lie in [2, inf); got 1", mp.broaden, sv, points=1)
    assert len(mp.broaden(sv, window=1, points=2)[0]) == 2  # both limits accepted
    _raises(ValueError, "broadening needs at least two singular values", mp.broaden, [1.0])
    g2, y2 = mp.broaden([1.0, 2.0], window=1, grid=[1.5])  # two values are enough
    # widths both (2 - 1) / 2 = 0.5; at 1.5 each Gaussian is 1 sd away
    assert y2[0] == pytest.approx(math.exp(-0.5) / (0.5 * math.sqrt(2 * math.pi)), rel=1e-12)
    _raises(ValueError, "grid must be a 1-D array; got shape (1, 2)", mp.broaden, sv, grid=[[1.0, 2.0]])


def _mp_formula(nu, sigma, q):
    lo, hi = sigma * (1 - math.sqrt(q)), sigma * (1 + math.sqrt(q))
    nu = np.asarray(nu, dtype=float)
    inside = (nu > lo) & (nu < hi)
    out = np.zeros_like(nu)
    v = nu[inside]
    out[inside] = np.sqrt((hi**2 - v**2) * (v**2 - lo**2)) / (q * math.pi * sigma**2 * v)
    return out


def test_result_classes_by_hand():
    f = mp.MPFit(sigma=2.0, q=0.25, nu_min=1.0, nu_max=3.0, n_outliers=10, fraction_outliers=0.1,
                 N=400, M=100, stage1_nu_min=1.0, stage1_nu_max=3.0, stage1_height=1.0,
                 n_bulk_shape=(390, 90))
    nu = np.linspace(0.0, 4.0, 41)
    assert np.allclose(f.density(nu), _mp_formula(nu, 2.0 * math.sqrt(390 / 400), 90 / 390), rtol=1e-12, atol=1e-15)
    d = f.as_dict()
    assert d["sigma"] == 2.0 and d["n_bulk_shape"] == (390, 90) and d["method"] == "two-stage"
    u = mp.USVTFit(sigma=3.0, q=0.25, nu_min=1.5, nu_max=4.5, low_cut=1.0001, high_cut=5.0,
                   n_low=0, n_high=0, N=400, M=100, iterations=2, hard_edge=False)
    assert u.entry_std() == pytest.approx(3.0 / 20.0, rel=1e-15)
    # float16 input is compared in float64: float16(1.0) < 1.0001, while in float16 the cut
    # 1.0001 rounds to 1.0 (float16 values 1.0 and 1.0001 are both 1.0)
    vals = np.array([1.0, 1.0001, 2.0, 5.0, 5.001], dtype=np.float16)
    assert list(u.low_mask(vals)) == [True, True, False, False, False]
    assert list(u.low_mask([1.0001, 0.5])) == [False, True]  # on the cut: not below it
    assert list(u.high_mask([5.0, 5.01, 4.0])) == [False, True, False]  # on the cut: not above it
    u2 = mp.USVTFit(sigma=3.0, q=0.25, nu_min=1.5, nu_max=4.5, low_cut=1.0, high_cut=5.0001,
                    n_low=0, n_high=0, N=400, M=100, iterations=2, hard_edge=False)
    assert list(u2.high_mask(np.array([5.0], dtype=np.float16))) == [False]
    u3 = mp.USVTFit(sigma=3.0, q=0.25, nu_min=1.5, nu_max=4.5, low_cut=1.0, high_cut=4.999,
                    n_low=0, n_high=0, N=400, M=100, iterations=2, hard_edge=False)
    # in float16 the cut 4.999 is 5.0 (spacing 2^-8 there), and 5.0 > 5.0 is false
    assert list(u3.high_mask(np.array([5.0], dtype=np.float16))) == [True]
    assert u.as_dict()["high_cut"] == 5.0 and u.as_dict()["method"] == "usvt"


def test_check_rank_limits_and_message():
    N_, M_ = 80, 20
    noise = np.linspace(1.0, 2.0, M_)  # median 1.5
    # exactly two values at 1e-6 of the median: refused (<=); the message whole
    med = float(np.median(noise[2:].tolist() + [0, 0]))
    sv = np.sort(np.r_[noise[2:], [1e-6 * med, 1e-6 * med]])
    assert float(np.median(sv)) == med
    msg = ("rank collapse: 2 of 20 singular values are zero (below 1e-6 of the median or 1e-10 of the "
           "largest); an MP bulk needs a full-rank noise matrix. A zero, constant or low-rank matrix has "
           "no bulk to fit (rmtlib.early_stopping.spectrum_type calls this type 'RC')")
    _raises(ValueError, msg, mp.fit_naive, sv, (N_, M_))
    # exactly two values at 1e-10 of the largest (1.0), the median far smaller than 1e-4
    sv = np.r_[[1e-10, 1e-10], np.full(17, 1e-5), [1.0]]
    _raises(ValueError, msg, mp.fit_naive, sv, (N_, M_))
    # one zero is accepted (a square matrix can have one tiny value), two are refused
    mp.fit_naive(np.r_[[0.0], noise[1:]], (N_, M_))
    _raises(ValueError, msg, mp.fit_naive, np.r_[[0.0, 0.0], noise[2:]], (N_, M_))


def test_fit_naive_fields_and_an_outlier_exactly_on_the_edge():
    # 20 values whose squares are exact: sum 80, so sigma^2 = 4, sigma = 2; q = 0.25, the
    # upper edge 2 (1 + 0.5) = 3 exactly. The value 3 lies ON the edge, not beyond it.
    sv = np.array([0.5] * 7 + [1.0, 1.5, 1.5, 2.0] + [2.5] * 7 + [3.0, 4.0])
    assert sv.size == 20 and float(np.sum(sv**2)) == 80.0
    f = mp.fit_naive(sv[::-1], (80, 20))
    assert f.sigma == 2.0 and f.q == 0.25 and f.nu_min == 1.0 and f.nu_max == 3.0
    assert f.n_outliers == 1 and f.fraction_outliers == 0.05 and f.N == 80 and f.M == 20
    assert f.stage1_nu_min == 0.5 and f.stage1_nu_max == 4.0 and math.isnan(f.stage1_height)
    assert f.method == "naive"
    g = mp.fit_naive(np.linspace(1.0, 2.0, 20), (80, 20))  # distinct smallest and largest values
    assert g.stage1_nu_min == 1.0 and g.stage1_nu_max == 2.0


def test_edge_scales_by_hand():
    # (sigma / 2)(1 -+ sqrt q)^(1/3) q^(-1/6) N^(-2/3); sigma 2, q 1/4, N 1000:
    # base = 1 * 4^(1/6) / 100
    base = 4 ** (1 / 6) / 100
    lo, hi = mp.edge_scales(2.0, 0.25, 1000)
    assert lo == pytest.approx(base * 0.5 ** (1 / 3), rel=1e-13)
    assert hi == pytest.approx(base * 1.5 ** (1 / 3), rel=1e-13)


def test_judge_by_hand():
    null = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    logs = [math.log(v) for v in null]
    thr_want = math.exp(statistics.mean(logs) + 3.719016485455709 * statistics.stdev(logs))  # ndtri(0.9999)
    thr, p = mp._judge(0.3, null)
    assert thr == pytest.approx(thr_want, rel=1e-12)
    assert p == pytest.approx(4 / 6, rel=1e-15)  # (1 + #{null >= 0.3}) / (1 + 5)
    assert mp._judge(0.6, null)[1] == pytest.approx(1 / 6, rel=1e-15)


def test_gof_path_is_under_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RMTLIB_CACHE", str(tmp_path))
    assert mp._gof_path(100, 50, 5, 0, 15, 0.99) == tmp_path / "mp_gof_null" / "v2_N100_M50_K5_seed0_w15_tw0.99.json"


def test_fit_arguments_limits_and_default_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("RMTLIB_CACHE", str(tmp_path))
    monkeypatch.setattr(mp, "_GOF_MEMO", {})
    sv = mp.sample_spectrum((60, 20), 1)
    _raises(ValueError, "window must lie in [1, inf); got 0", mp.fit, sv, (60, 20), window=0, gof=False)
    _raises(ValueError, "tw_level must lie in [0.5, 0.9999]; got 0.4", mp.fit, sv, (60, 20), tw_level=0.4, gof=False)
    _raises(ValueError, "tw_level must lie in [0.5, 0.9999]; got 0.99995", mp.fit, sv, (60, 20), tw_level=0.99995,
            gof=False)
    assert mp.fit(sv, (60, 20), window=1, tw_level=0.5, gof=False).sigma > 0  # the limits themselves accepted
    assert mp.fit(sv, (60, 20), tw_level=0.9999, gof=False).sigma > 0
    mp.fit(sv, (60, 20), gof_samples=5)  # default seed 0: the null is cached under seed 0
    names = [p.name for p in (tmp_path / "mp_gof_null").iterdir()]
    assert names == ["v2_N60_M20_K5_seed0_w15_tw0.99.json"]


def test_usvt_arguments_and_refusals():
    sv = mp.sample_spectrum((200, 100), 5) * 0.5  # largest value below 1
    assert sv[-1] < 1
    _raises(ValueError, "max_iter must be a positive integer; got 0", mp.fit_usvt, sv, (200, 100), max_iter=0)
    _raises(ValueError, "max_iter must be a positive integer; got 1.5", mp.fit_usvt, sv, (200, 100), max_iter=1.5)
    assert mp.fit_usvt(sv, (200, 100), max_iter=1).iterations == 1  # one iteration, not zero or two
    assert mp.fit_usvt(sv, (200, 100)).iterations == 2  # pure noise: (0, 0) twice
    _raises(ValueError, "all singular values are zero: a zero matrix has no bulk to fit",
            mp.fit_usvt, np.zeros(20), (80, 20))
    # 19 zeros and one value: q = 1/4, sigma_0 = sqrt(1/20); all 20 outside -> no bulk
    _raises(RuntimeError, "USVT found 20 of 20 values outside the bulk; this spectrum has no MP bulk to estimate",
            mp.fit_usvt, np.r_[np.zeros(19), [1.0]], (80, 20))
    # 18 zeros, 1 and 3: sigma_0 = sqrt(10/20) = 0.707, cuts near 0.32 and 1.12: 18 low + 1 high = 19 = M - 1
    _raises(RuntimeError, "USVT found 19 of 20 values outside the bulk; this spectrum has no MP bulk to estimate",
            mp.fit_usvt, np.r_[np.zeros(18), [1.0, 3.0]], (80, 20))
    # 17 zeros, 1, 1 and 3: 18 = M - 2 outside is still a bulk of two values: sigma from them,
    # s^2 = 2 / ((80 - 1)(20 - 1 - 17)), sigma = s sqrt(80)
    f = mp.fit_usvt(np.r_[np.zeros(17), [1.0, 1.0, 3.0]], (80, 20))
    assert (f.n_low, f.n_high) == (17, 1)
    assert f.sigma == pytest.approx(math.sqrt(2 / (79 * 2) * 80), rel=1e-12)


def test_usvt_hard_edge_fields_by_hand():
    # A square noise matrix with its smallest value set to 0: the lower edge is hard, nothing
    # is counted at the low end (a zero is not below a cut at 0), no outliers at the top,
    # so sigma^2 = sum nu^2 / (N M) * N, the naive scale.
    N_ = 300
    sv = mp.sample_spectrum((N_, N_), 7)
    sv[0] = 0.0
    f = mp.fit_usvt(sv, (N_, N_))
    assert f.hard_edge and f.low_cut == 0.0 and f.n_low == 0 and f.n_high == 0
    assert f.sigma == pytest.approx(math.sqrt(float(np.sum(sv**2)) / N_), rel=1e-12)
    assert f.nu_min == 0.0 and f.nu_max == pytest.approx(2 * f.sigma, rel=1e-15)
    top = 0.5 * f.sigma * N_ ** (-2 / 3) * 2 ** (1 / 3)
    assert f.high_cut == pytest.approx(2 * f.sigma + 2.0234 * top, rel=1e-13)
    assert (f.N, f.M, f.q) == (N_, N_, 1.0)
    # q = 49/50 < 1 but N small: (1 - sqrt q) sigma = 0.0101 sigma lies within 2.02 bottom TW
    # scales (0.5 q^(-1/6) 50^(-2/3) 0.0101^(1/3) sigma = 0.0080 sigma) of 0: a hard edge, cut at 0
    f = mp.fit_usvt(mp.sample_spectrum((50, 49), 9), (50, 49))
    assert f.hard_edge and f.low_cut == 0.0 and f.nu_min > 0
    # not square: the soft lower edge and its cut, by hand from the fitted sigma
    sv = mp.sample_spectrum((200, 50), 8) * 3.0
    f = mp.fit_usvt(sv, (50, 200), level=0.9)
    q = 0.25
    base = 0.5 * f.sigma * q ** (-1 / 6) * 200 ** (-2 / 3)
    assert not f.hard_edge and (f.N, f.M) == (200, 50)
    assert f.nu_min == pytest.approx(0.5 * f.sigma, rel=1e-14) and f.nu_max == pytest.approx(1.5 * f.sigma, rel=1e-14)
    assert f.low_cut == pytest.approx(0.5 * f.sigma - 0.4501 * base * 0.5 ** (1 / 3), rel=1e-13)
    assert f.high_cut == pytest.approx(1.5 * f.sigma + 0.4501 * base * 1.5 ** (1 / 3), rel=1e-13)
    assert f.n_low == int(np.sum(sv < f.low_cut)) and f.n_high == int(np.sum(sv > f.high_cut))


def test_check_rank_counts_the_zeros_when_the_median_is_zero():
    # 11 zeros among 20 values: the median is 0, and the message must count the 11 zeros, not
    # all 20 values (it said "20 of 20" before: the count was skipped when the median was 0)
    sv = np.r_[np.zeros(11), np.linspace(1.0, 2.0, 9)]
    assert float(np.median(sv)) == 0.0
    with pytest.raises(ValueError, match=r"^rank collapse: 11 of 20 singular values are zero \(below"):
        mp.fit_naive(sv, (80, 20))
    # two zeros and a tiny median: only the two zeros are counted (1e-7 is above 1e-10 * 2)
    sv = np.r_[[0.0, 0.0], np.full(10, 1e-7), np.linspace(1.0, 2.0, 8)]
    with pytest.raises(ValueError, match=r"^rank collapse: 2 of 20 singular values are zero"):
        mp.fit_naive(sv, (80, 20))

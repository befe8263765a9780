"""Level statistics against matrices with known answers (METHODS §8).

Tolerances (derived once here, used below):
- KS: for n independent spacings the 0.1% critical value is K_{0.999} / sqrt(n) = 1.95 / sqrt(n).
  Spacings of a rigid (GOE) spectrum are anti-correlated, so their empirical cdf fluctuates
  less than for independent draws and this bound is conservative. The Wigner surmise is exact
  for 2x2 GOE matrices and differs from the large-N GOE law by less than 0.01 in the cdf (a
  simulation with 16,000 exactly unfolded GOE spacings gives a KS distance of 0.009, within its
  own sampling error), so GOE-type spectra are allowed `SURMISE = 0.01` on top. The GOE-Poisson
  cdf distance is 0.215, far above both.
- Sigma^2(L) from K = span / L disjoint windows of Gaussian counts has standard deviation
  Sigma^2 sqrt(2 / (K - 1)); overlapping windows only lower it. For Poisson counts the variance
  of the sample variance is (L + 2 L^2) / K. Tests allow 4 standard deviations.
- The mean of m consecutive unfolded GOE spacings is (e_{i+m} - e_i) / m, with standard
  deviation sqrt(Sigma^2_GOE(m)) / m (spectral rigidity); tests allow 4 of them.
- Hill on an exact Pareto(alpha) sample: ln(x_(i) / x_(k+1)), i <= k, are i.i.d. exponential
  with mean 1/alpha, so alpha_k = alpha k / G with G ~ Gamma(k, 1) exactly.
"""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from rmtlib import level_statistics as ls

SURMISE = 0.01


def crit(n, alpha=0.001):
    return stats.kstwobign.isf(alpha) / math.sqrt(n)


def goe_levels(n, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, n))
    return np.linalg.eigvalsh((A + A.T) / math.sqrt(2 * n))


def wishart_levels(N, M, seed):
    rng = np.random.default_rng(seed)
    return np.linalg.svd(rng.standard_normal((N, M)) / math.sqrt(N), compute_uv=False) ** 2


def sigma2_sd_goe(L, span):
    K = math.floor(span / L)
    return ls.number_variance_goe(L)[0] * math.sqrt(2 / (K - 1))


def sigma2_sd_poisson(L, span):
    K = math.floor(span / L)
    return math.sqrt((L + 2 * L**2) / K)


# --------------------------------------------------------------------------- reference laws
def test_reference_laws_are_normalised_with_mean_spacing_one():
    s = np.linspace(0, 40, 400_001)
    for pdf, cdf in ((ls.goe_pdf, ls.goe_cdf), (ls.poisson_pdf, ls.poisson_cdf)):
        p = pdf(s)
        assert np.trapezoid(p, s) == pytest.approx(1, abs=1e-6)
        assert np.trapezoid(s * p, s) == pytest.approx(1, abs=1e-6)
        mid = np.cumsum((p[1:] + p[:-1]) / 2 * np.diff(s))
        np.testing.assert_allclose(cdf(s[1:]), mid, atol=1e-6)


def test_wigner_surmise_is_exact_for_2x2_goe():
    # H = [[a, b], [b, c]], a, c ~ N(0, 1), b ~ N(0, 1/2): the spacing sqrt((a-c)^2 + 4 b^2) is
    # sqrt(2) times a chi with 2 degrees of freedom, of mean sqrt(pi): divide by it exactly.
    rng = np.random.default_rng(0)
    n = 20_000
    a, c = rng.standard_normal(n), rng.standard_normal(n)
    b = rng.standard_normal(n) * math.sqrt(0.5)
    s = np.sqrt((a - c) ** 2 + 4 * b**2) / math.sqrt(math.pi)
    assert ls.ks_distance(s, "goe") < crit(n)
    assert ls.ks_distance(s, "poisson") > 10 * crit(n)


def test_number_variance_laws_small_and_large_L():
    small = np.array([1e-3, 1e-2])
    np.testing.assert_allclose(ls.number_variance_goe(small), small, rtol=0.02)  # Sigma^2 ~ L
    large = np.array([50.0, 200.0])  # corrections to the asymptotic form fall like 1/L
    np.testing.assert_allclose(ls.number_variance_goe(large), ls.number_variance_goe_asymptotic(large),
                               atol=0.005)
    assert ls.number_variance_goe(1.0)[0] == pytest.approx(0.4463, abs=5e-4)  # Mehta Table A.15 region
    np.testing.assert_array_equal(ls.number_variance_poisson([1, 2.5]), [1, 2.5])


# --------------------------------------------------------------------------- GOE and Wishart
def test_goe_spectrum_with_exact_unfolding_matches_sigma2():
    # The semicircle staircase N(x) = n [1/2 + (x sqrt(1 - x^2) + arcsin x) / pi], x = lambda / 2,
    # unfolds exactly: this checks number_variance and the GOE formula without any fit.
    n = 1500
    x = np.clip(goe_levels(n, seed=3) / 2, -1, 1)
    e = n * (0.5 + (x * np.sqrt(1 - x**2) + np.arcsin(x)) / np.pi)
    e = e[150:-150]
    span = e[-1] - e[0]
    for L in (0.5, 1, 2, 5, 10):
        got = ls.number_variance(e, L)[0]
        assert abs(got - ls.number_variance_goe(L)[0]) < 4 * sigma2_sd_goe(L, span), L
        assert abs(got - L) > 4 * sigma2_sd_poisson(L, span) or L < 1, L  # not Poisson


@pytest.mark.parametrize("method", ["poly", "broaden"])
def test_goe_spectrum_gives_goe_spacings_and_sigma2(method):
    e = ls.unfold(goe_levels(1000, seed=1), method)
    s = ls.spacings(e)
    assert ls.ks_distance(s, "goe") < crit(len(s)) + SURMISE
    assert ls.ks_distance(s, "poisson") > crit(len(s))  # GOE levels are rejected as Poisson
    span = e[-1] - e[0]
    for L in (1, 2, 5):
        assert abs(ls.number_variance(e, L)[0] - ls.number_variance_goe(L)[0]) < 4 * sigma2_sd_goe(L, span)


@pytest.mark.parametrize("method", ["poly", "broaden"])
@pytest.mark.parametrize("shape", [(1024, 512), (512, 512)])
def test_wishart_spectrum_gives_goe_spacings_and_sigma2(method, shape):
    e = ls.unfold(wishart_levels(*shape, seed=2), method)
    s = ls.spacings(e)
    assert ls.ks_distance(s, "goe") < crit(len(s)) + SURMISE
    assert ls.ks_distance(s, "poisson") > crit(len(s))
    span = e[-1] - e[0]
    for L in (1, 2, 5):
        got = ls.number_variance(e, L)[0]
        assert abs(got - ls.number_variance_goe(L)[0]) < 4 * sigma2_sd_goe(L, span), L
    assert abs(ls.number_variance(e, 5)[0] - 5) > 4 * sigma2_sd_poisson(5, span)


@pytest.mark.parametrize("method", ["poly", "broaden"])
def test_unfolding_leaves_mean_spacing_one_everywhere(method):
    lv = wishart_levels(1024, 512, seed=4)
    e = ls.unfold(lv, method)
    blocks = np.array_split(np.diff(e), 8)
    for b in blocks:
        m = len(b)
        tol = 4 * math.sqrt(ls.number_variance_goe(m)[0]) / m
        assert abs(b.mean() - 1) < tol
    # the test can fail: raw levels rescaled to mean spacing 1 overall are not unfolded
    k = len(lv) // 20
    raw = np.sort(lv)[k:-k]
    raw = (raw - raw[0]) / np.diff(raw).mean()
    bad = [abs(b.mean() - 1) > 4 * math.sqrt(ls.number_variance_goe(len(b))[0]) / len(b)
           for b in np.array_split(np.diff(raw), 8)]
    assert sum(bad) >= 4


# --------------------------------------------------------------------------- Poisson
@pytest.mark.parametrize("method", ["poly", "broaden"])
def test_iid_levels_give_poisson(method):
    lv = np.random.default_rng(5).standard_normal(1000)  # i.i.d. levels, a non-uniform density
    e = ls.unfold(lv, method)
    s = ls.spacings(e)
    assert ls.ks_distance(s, "poisson") < crit(len(s))
    assert ls.ks_distance(s, "goe") > crit(len(s)) + SURMISE  # rejected as GOE


def test_iid_uniform_levels_give_poisson_number_variance():
    # n uniform levels on [0, n]: counts in a window are Binomial(n, L/n), variance L (1 - L/n);
    # a straight-line staircase (degree 1) is the exact unfolding up to the sample's own scale.
    n = 3000
    e = ls.unfold(np.random.default_rng(6).uniform(0, n, n), degree=1, variable="level", trim=0.0)
    span = e[-1] - e[0]
    for L in (1, 2, 5, 10):
        got = ls.number_variance(e, L)[0]
        assert abs(got - L * (1 - L / n)) < 4 * sigma2_sd_poisson(L, span), L
        assert abs(got - ls.number_variance_goe(L)[0]) > 4 * sigma2_sd_goe(L, span), L


# --------------------------------------------------------------------------- Hill
def test_hill_recovers_pareto_tail_index():
    alpha, n, k = 2.0, 20_000, 1000
    x = np.random.default_rng(7).uniform(size=n) ** (-1 / alpha)
    est = ls.hill(x, k)
    lo, hi = alpha * k / stats.gamma.isf(0.0005, k), alpha * k / stats.gamma.ppf(0.0005, k)
    assert lo < est.alpha[0] < hi
    assert est.lower[0] < alpha < est.upper[0]


def test_hill_band_has_its_stated_coverage():
    # alpha in [a_k (1 - h), a_k (1 + h)] <=> G in [k (1 - h), k (1 + h)], G ~ Gamma(k, 1)
    alpha, n, k, reps = 1.5, 600, 100, 400
    rng = np.random.default_rng(8)
    h = stats.norm.isf(0.025) / math.sqrt(k)
    p = stats.gamma.cdf(k * (1 + h), k) - stats.gamma.cdf(k * (1 - h), k)
    covered = 0
    for _ in range(reps):
        est = ls.hill(rng.uniform(size=n) ** (-1 / alpha), k)
        covered += est.lower[0] <= alpha <= est.upper[0]
    lo, hi = stats.binom.ppf(0.0005, reps, p), stats.binom.isf(0.0005, reps, p)
    assert lo <= covered <= hi


def test_hill_drifts_for_tails_that_are_not_power_laws():
    rng = np.random.default_rng(9)
    # exponential tail: alpha_k ~ ln(n / k) keeps growing as k shrinks: the bands separate
    est = ls.hill(rng.exponential(size=20_000), [20, 2000])
    assert est.lower[0] > est.upper[1]
    # the largest singular values of a Gaussian matrix (bounded MP bulk): no plateau either
    sv = np.sqrt(wishart_levels(1024, 512, seed=10))
    est = ls.hill(sv, [10, 100])
    assert est.lower[0] > est.upper[1]
    # a genuine power law does settle: bands at the same k overlap
    est = ls.hill(rng.uniform(size=20_000) ** (-1 / 2.0), [20, 2000])
    assert est.lower[0] < est.upper[1] and est.lower[1] < est.upper[0]


# --------------------------------------------------------------------------- summary
def test_summary_of_a_noise_layer_is_goe_and_not_poisson():
    # a Glorot-uniform 1024 x 512 layer (uniform entries): a pure-noise matrix must not be flagged
    a = math.sqrt(6 / (1024 + 512))
    W = torch.empty(1024, 512).uniform_(-a, a, generator=torch.Generator().manual_seed(11))
    out = ls.summary(W)
    assert out["ls_n_levels"] == 512 - 2 * 25
    assert out["ls_ks_goe"] < out["ls_ks_crit"]
    assert out["ls_ks_poisson"] > out["ls_ks_crit"]
    span = out["ls_n_levels"] - 1
    assert abs(out["ls_sigma2_L5"] - out["ls_sigma2_goe_L5"]) < 4 * sigma2_sd_goe(5, span)
    assert out["ls_hill_ratio"] > 1.5  # MP tail: the Hill index drifts


def test_summary_falls_back_to_broadening_when_the_polynomial_fails():
    # levels with a gap no degree-12 polynomial follows monotonically: half the values are 100x larger
    rng = np.random.default_rng(14)
    W = rng.standard_normal((400, 200)) / 20
    W[:, :100] *= 100
    with pytest.raises(ValueError, match="decreases"):
        ls.unfold(ls.levels(W))
    out = ls.summary(W)
    assert out["ls_unfolding"] == "broaden"
    assert ls.summary(rng.standard_normal((400, 200)))["ls_unfolding"] == "poly"


def test_summary_accepts_any_float_dtype_and_gradients():
    base = torch.randn(200, 100, generator=torch.Generator().manual_seed(12))
    for W in (base.to(torch.float16), base.to(torch.bfloat16), base.clone().requires_grad_(True),
              base.double().numpy(), base.tolist()):
        out = ls.summary(W)
        assert out["ls_ks_goe"] < out["ls_ks_crit"] + SURMISE


def test_summary_sigma2_beyond_the_spectrum_is_nan_not_an_error():
    out = ls.summary(torch.randn(60, 30, generator=torch.Generator().manual_seed(13)), L=(1, 20))
    assert np.isfinite(out["ls_sigma2_L1"]) and np.isnan(out["ls_sigma2_L20"])


# --------------------------------------------------------------------------- bad input
def test_too_short_spectra_say_the_minimum():
    with pytest.raises(ValueError, match="at least 20"):
        ls.unfold(np.arange(19.0))
    with pytest.raises(ValueError, match="at least 20"):
        ls.summary(np.random.default_rng(0).standard_normal((512, 10)))
    with pytest.raises(ValueError, match="at least 3"):
        ls.spacings([0.0, 1.0])
    with pytest.raises(ValueError, match="at least 2"):
        ls.hill([3.0], 1)


def test_degenerate_levels_are_refused():
    with pytest.raises(ValueError, match="all 50 levels are equal"):
        ls.unfold(np.ones(50))
    W = np.random.default_rng(1).standard_normal((100, 60))
    W[:, :10] = 0  # rank 50: ten zero levels
    with pytest.raises(ValueError, match="rank-deficient"):
        ls.unfold(ls.levels(W))
    with pytest.raises(ValueError, match="coincide"):
        ls.unfold(np.repeat(np.arange(30.0), 2))


def test_L_larger_than_the_spectrum_is_refused():
    e = np.arange(100.0)
    with pytest.raises(ValueError, match="larger than half"):
        ls.number_variance(e, 60)
    with pytest.raises(ValueError, match="positive"):
        ls.number_variance(e, [1, 0])


def test_bad_parameters_are_refused():
    lv = wishart_levels(200, 100, seed=0)
    with pytest.raises(ValueError, match="method"):
        ls.unfold(lv, "spline")
    with pytest.raises(ValueError, match="trim"):
        ls.unfold(lv, trim=0.4)
    with pytest.raises(TypeError, match="degree"):
        ls.unfold(lv, degree=2.5)
    with pytest.raises(ValueError, match="sqrt"):
        ls.unfold(goe_levels(100, 0), variable="sqrt")
    with pytest.raises(ValueError, match="NaN"):
        ls.unfold(np.r_[lv, np.nan])
    with pytest.raises(ValueError, match=r"k must be integers in \[1, 9\]"):
        ls.hill(np.arange(1.0, 11.0), 10)
    with pytest.raises(ValueError, match="positive"):
        ls.hill(np.r_[np.arange(1.0, 11.0), 0.0], 10)
    with pytest.raises(ValueError, match="law"):
        ls.ks_distance([1.0, 2.0], "gue")

"""The MP law and fit against theory and hand-computed values (issue 17: tests that catch bugs).

"Exact MP samples" below are the quantiles F^-1((i - 1/2)/n) of the law, found by
inverting the CDF written out here (numerical integration of the density formula, not
rmtlib's closed form): a sample with no sampling noise, so a fit must return its sigma up
to the histogram's binning error (about 0.1%).
"""
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from rmtlib import marchenko_pastur as mp


def _mp_pdf(nu, sigma, q):
    """Singular-value MP density written from the formula: sqrt((h^2-x^2)(x^2-l^2)) / (pi q x) / sigma."""
    x = np.asarray(nu, float) / sigma
    lo, hi = 1 - math.sqrt(q), 1 + math.sqrt(q)
    arg = (hi**2 - x**2) * (x**2 - lo**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where((arg > 0) & (x > 0), np.sqrt(np.clip(arg, 0, None)) / (math.pi * q * x) / sigma, 0.0)
    return out


def _exact_sample(sigma, q, n):
    lo, hi = sigma * (1 - math.sqrt(q)), sigma * (1 + math.sqrt(q))
    grid = np.linspace(lo, hi, 200_001)
    F = integrate.cumulative_trapezoid(_mp_pdf(grid, sigma, q), grid, initial=0)
    return np.interp((np.arange(n) + 0.5) / n, F / F[-1], grid)


def test_edges_and_density_by_hand():
    assert mp.edges(2.0, 0.25) == pytest.approx((1.0, 3.0), rel=1e-15)
    # nu = 2, sigma = 2, q = 1/4: x = 1, sqrt((2.25 - 1)(1 - 0.25)) / (pi / 4) / 2
    assert mp.density(2.0, 2.0, 0.25) == pytest.approx(math.sqrt(1.25 * 0.75) / (math.pi / 4) / 2, rel=1e-13)
    nu = np.array([0.0, 0.5, 0.999, 1.0, 1.5, 2.9, 3.0, 3.1])
    assert np.allclose(mp.density(nu, 2.0, 0.25), _mp_pdf(nu, 2.0, 0.25), rtol=1e-12, atol=0)
    # q = 1: the lower edge is 0 and the density is finite there: 2/pi * sqrt(4 - x^2) / 2 at x -> 0
    assert mp.density(1e-9, 1.0, 1.0) == pytest.approx(2 / math.pi, rel=1e-6)


def test_eigen_density_is_the_singular_density_carried_to_lambda():
    # lambda = nu^2 (sigma2 = sigma^2): p_lambda(lambda) = p_nu(sqrt lambda) / (2 sqrt lambda)
    sigma, q = 1.7, 0.3
    lam = np.linspace(0.01, (sigma * (1 + math.sqrt(q))) ** 2 * 1.05, 57)
    want = _mp_pdf(np.sqrt(lam), sigma, q) / (2 * np.sqrt(lam))
    assert np.allclose(mp.eigen_density(lam, sigma**2, q), want, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("q", [0.05, 0.3, 1.0])
def test_cdf_is_the_integral_of_the_density(q):
    sigma = 0.7
    lo, hi = sigma * (1 - math.sqrt(q)), sigma * (1 + math.sqrt(q))
    pts = np.array([max(lo - 0.1, 0.0), lo + 0.01 * (hi - lo), (lo + hi) / 2, hi - 0.01 * (hi - lo), hi + 0.5])
    for x in pts:
        a, b = max(lo, 0.0), min(max(x, lo), hi)
        want = integrate.quad(_mp_pdf, a, b, args=(sigma, q), limit=400, points=[a])[0] if b > a else 0.0
        assert mp.cdf(x, sigma, q) == pytest.approx(want, abs=1e-7)
        assert mp.eigen_cdf(x**2 / 2.0, sigma**2 / 2.0, q) == pytest.approx(want, abs=1e-7)
    assert mp.cdf(-1.0, sigma, q) == 0.0 and mp.cdf(-0.01, sigma, q) == 0.0  # singular values are >= 0
    assert mp.cdf(np.inf, sigma, q) == pytest.approx(1.0, abs=1e-12)


def test_scales_by_hand():
    assert mp.sigma_from_entry_std(0.5, (10, 40)) == pytest.approx(0.5 * math.sqrt(40), rel=1e-15)
    assert mp.sigma_from_entry_std(0.5, (40, 10)) == pytest.approx(0.5 * math.sqrt(40), rel=1e-15)
    # Glorot uniform: U(-a, a), a^2 = 6 / (n + m), variance a^2 / 3 = 2 / (n + m)
    assert mp.glorot_sigma((300, 100)) == pytest.approx(math.sqrt(2 / 400) * math.sqrt(300), rel=1e-15)
    w = torch.empty(3000, 1000, dtype=torch.float64)
    torch.nn.init.xavier_uniform_(w, generator=torch.Generator().manual_seed(0))
    # 3e6 entries: the sample std is within 0.1% of the true one
    assert float(w.std()) * math.sqrt(3000) == pytest.approx(mp.glorot_sigma((3000, 1000)), rel=2e-3)


def test_tracy_widom_against_tables():
    # Tracy & Widom (1996) / Johnstone (2001) Table 1 for beta = 1: 0.90 -> 0.4501,
    # 0.95 -> 0.9793, 0.99 -> 2.0234; mean -1.2065, std 1.2680
    for p, s in ((0.90, 0.4501), (0.95, 0.9793), (0.99, 2.0234)):
        assert mp.tw1_quantile(p) == pytest.approx(s, abs=2e-4)
        assert mp.tw1_cdf(s) == pytest.approx(p, abs=1e-4)
    grid = np.linspace(-8, 8, 321)  # step 0.05: the trapezoid error of the mean is ~1e-4
    F = np.array([mp.tw1_cdf(float(s)) for s in grid])
    mean = grid[0] + integrate.trapezoid(1 - F, grid)
    assert mean == pytest.approx(-1.2065, abs=2e-3)
    assert mp.tw1_cdf(20.0) == 1.0 and mp.tw1_cdf(-25.0) == 0.0
    assert 0 < mp.tw1_cdf(-5.0) < 1e-3 and 0.999 < mp.tw1_cdf(5.0) < 1


def test_tw_scale_is_johnstones_scale_carried_to_singular_values():
    # entries of std s: lambda_max of W^T W ~ s^2 (mu + s_J TW1), mu = (sqrt N + sqrt M)^2,
    # s_J = (sqrt N + sqrt M)(1/sqrt N + 1/sqrt M)^(1/3); nu = sqrt(lambda) moves by
    # s^2 s_J / (2 s sqrt mu) = s (1/sqrt N + 1/sqrt M)^(1/3) / 2, and s = sigma / sqrt N
    for N, M, sigma in ((1000, 250, 3.0), (500, 500, 0.2), (4096, 64, 1.0)):
        s = sigma / math.sqrt(N)
        want = s * (1 / math.sqrt(N) + 1 / math.sqrt(M)) ** (1 / 3) / 2
        assert mp.tw_scale(sigma, (N, M)) == pytest.approx(want, rel=1e-12)
        assert mp.tw_scale(sigma, (M, N)) == pytest.approx(want, rel=1e-12)


def test_sample_spectrum_has_the_law_of_a_gaussian_matrix():
    # E sum nu^2 = E ||W||_F^2 = N M / N = M exactly; Var = 2 M / N per draw
    N, M, draws = 60, 20, 400
    rng = np.random.default_rng(1)
    sums = [np.sum(mp.sample_spectrum((N, M), rng) ** 2) for _ in range(draws)]
    assert abs(np.mean(sums) - M) < 5 * math.sqrt(2 * M / N / draws)
    assert np.var(sums) == pytest.approx(2 * M / N, rel=0.25)  # 400 draws: the variance to ~7%
    # the pooled values against SVDs of real Gaussian matrices (two-sample KS; 4000 values each)
    g = torch.Generator().manual_seed(2)
    ref = np.concatenate([torch.linalg.svdvals(torch.randn(N, M, generator=g, dtype=torch.float64)
                                               / math.sqrt(N)).numpy() for _ in range(200)])
    sim = np.concatenate([mp.sample_spectrum((N, M), rng) for _ in range(200)])
    assert stats.ks_2samp(ref, sim).pvalue > 1e-3
    one = mp.sample_spectrum((N, M), 5)
    assert one.shape == (M,) and np.all(np.diff(one) >= 0) and np.array_equal(one, mp.sample_spectrum((M, N), 5))


@pytest.mark.parametrize("q", [0.25, 0.5, 1.0])
@pytest.mark.parametrize("frac", [1.0, 0.8, 0.7])
def test_stage2_widens_a_range_cut_below_the_edge(q, frac):
    # Stage (ii) given a range that ends at frac x the true edge must widen it to the fitted
    # edge and refit: with the range left as given, sigma comes out 8-18% low here.
    sv = _exact_sample(1.0, q, 400)
    edge = 1 + math.sqrt(q)
    assert mp._stage2(sv, q, float(sv[0]), frac * edge, 0.8) == pytest.approx(1.0, rel=5e-3)


@pytest.mark.parametrize("shape", [(800, 200), (500, 500), (300, 60)])
def test_fit_of_an_exact_mp_sample(shape):
    N, M = shape
    q, sigma = M / N, 2.5
    sv = _exact_sample(sigma, q, M)
    res = mp.fit(sv, shape, gof=False)
    # the histogram of stage (ii) has ~1.5 sqrt(M) bins: the binning error is ~0.1% for
    # M >= 200 and below 1% for M = 60
    tol = 5e-3 if M >= 200 else 1e-2
    assert res.sigma == pytest.approx(sigma, rel=tol)
    assert res.q == q and res.n_outliers == 0 and res.fraction_outliers == 0
    assert (res.nu_min, res.nu_max) == pytest.approx((sigma * (1 - math.sqrt(q)), sigma * (1 + math.sqrt(q))),
                                                     rel=tol, abs=tol * sigma)
    assert res.stage1_nu_min == sv.min()
    # the outlier threshold: edge + t_0.99 s_TW, with s_TW of the fitted sigma
    tw = mp.tw1_quantile(0.99) * res.sigma / math.sqrt(N) * (1 / math.sqrt(N) + 1 / math.sqrt(M)) ** (1 / 3) / 2
    assert res.tw_margin == pytest.approx(tw, rel=1e-9)
    assert res.outlier_threshold == pytest.approx(res.nu_max + tw, rel=1e-12)
    assert res.entry_std() == pytest.approx(res.sigma / math.sqrt(N), rel=1e-12)
    # and the same spectrum scaled by 1e6 gives sigma scaled by 1e6
    big = mp.fit(sv * 1e6, shape, gof=False)
    assert big.sigma == pytest.approx(res.sigma * 1e6, rel=1e-9)
    # stage (i)'s amplitude a of y = (a / nu) sqrt(...) carries units 1/nu^2 (y is a density)
    assert big.stage1_height == pytest.approx(res.stage1_height / 1e12, rel=1e-9)


@pytest.mark.parametrize("k", [1, 4])
def test_fit_counts_spikes_far_above_an_exact_bulk(k):
    N, M, sigma = 1000, 250, 1.0
    bulk = _exact_sample(sigma, (M - k) / (N - k), M - k) * math.sqrt((N - k) / N)
    sv = np.concatenate([bulk, sigma * np.array([5.0, 7.0, 9.0, 11.0][:k])])
    res = mp.fit(sv, (N, M), gof=False)
    assert res.n_outliers == k and res.fraction_outliers == pytest.approx(k / M)
    assert res.sigma == pytest.approx(sigma, rel=1e-2)


def test_fit_naive_is_the_root_mean_square():
    sv = np.array([0.5, 1.0, 1.2, 2.0] * 10 + [20.0])
    res = mp.fit_naive(sv, (100, 41))
    want = math.sqrt(np.mean(sv**2))
    assert res.sigma == pytest.approx(want, rel=1e-14)
    q = 41 / 100
    assert (res.nu_min, res.nu_max) == pytest.approx((want * (1 - math.sqrt(q)), want * (1 + math.sqrt(q))))
    assert res.n_outliers == int(np.sum(sv > want * (1 + math.sqrt(q)))) == 1
    assert res.method == "naive"


def test_ks_to_mp_by_hand():
    # three values at the 1/6, 1/2, 5/6 quantiles: D = 1/6 exactly; shifted to 0.25, 0.5, 0.75: D = 0.25
    sigma, q = 1.3, 0.4
    x = _exact_sample(sigma, q, 3)
    assert mp.ks_to_mp(x, sigma, q) == pytest.approx(1 / 6, abs=1e-5)
    grid = np.linspace(sigma * (1 - math.sqrt(q)), sigma * (1 + math.sqrt(q)), 200_001)
    F = integrate.cumulative_trapezoid(_mp_pdf(grid, sigma, q), grid, initial=0)
    y = np.interp([0.25, 0.5, 0.75], F / F[-1], grid)
    assert mp.ks_to_mp(y[::-1], sigma, q) == pytest.approx(0.25, abs=1e-5)
    rng = np.random.default_rng(0)
    z = rng.uniform(0.5, 2.0, 50)
    assert mp.ks_to_mp(z, sigma, q) == pytest.approx(stats.kstest(z, lambda t: mp.cdf(t, sigma, q)).statistic,
                                                     abs=1e-12)


def test_broaden_is_a_sum_of_gaussians_with_the_stated_widths():
    # P(nu) = (1/M) sum_k N(nu; nu_k, sigma_k^2), sigma_k = (nu_{k+a} - nu_{k-a}) / 2, clamped
    rng = np.random.default_rng(3)
    sv = np.sort(rng.gamma(3.0, 1.0, 120))
    for a in (1, 5, 15):
        M = len(sv)
        w = np.array([(sv[min(k + a, M - 1)] - sv[max(k - a, 0)]) / 2 for k in range(M)])
        pts = np.array([sv[0] - 0.3, sv[0], np.median(sv), sv[60] + 0.01, sv[-1], sv[-1] + 1.0])
        want = np.array([np.mean(stats.norm.pdf(p, loc=sv, scale=w)) for p in pts])
        _, got = mp.broaden(sv[::-1], window=a, grid=pts)  # any order in, sorted inside
        assert np.allclose(got, want, rtol=1e-10, atol=1e-300)
        grid, y = mp.broaden(sv, window=a, points=37)
        assert len(grid) == 37 and grid[0] == pytest.approx(max(0.0, sv[0] - 3 * w[0]))
        assert grid[-1] == pytest.approx(sv[-1] + 3 * w[-1])


def test_mp_shape_is_zero_outside_the_edges():
    # y = (a / nu) sqrt((nu_max^2 - nu^2)(nu^2 - nu_min^2)) inside [nu_min, nu_max], 0 outside
    nu = np.array([0.5, 1.0, 2.0, 3.0, 3.5])
    want = [0.0, 0.0, 2.0 / 2.0 * math.sqrt((9 - 4) * (4 - 1)), 0.0, 0.0]
    assert np.allclose(mp._mp_shape(nu, 2.0, 3.0, 1.0), want, atol=1e-15)


def test_usvt_density_and_gof_null_arguments():
    fit = mp.fit_usvt(_exact_sample(1.5, 0.25, 200), (800, 200))
    nu = np.linspace(0, 3, 31)
    assert np.allclose(fit.density(nu), _mp_pdf(nu, fit.sigma, fit.q), rtol=1e-12, atol=1e-15)
    assert fit.sigma == pytest.approx(1.5, rel=1e-2)
    with pytest.raises(ValueError, match="window"):
        mp.gof_null((100, 50), samples=5, window=0)


def test_gof_null_is_read_back_from_its_disk_cache():
    first = mp.gof_null((60, 30), samples=5, seed=2)
    mp._GOF_MEMO.clear()
    again = mp.gof_null((60, 30), samples=5, seed=2)  # from the JSON file written above
    assert np.array_equal(first, again) and not again.flags.writeable
    assert np.all(np.diff(first) >= 0) and np.all((first > 0) & (first < 1))


def test_huge_scales_give_finite_densities_or_a_clear_refusal():
    # Found by the Hypothesis property test (test_properties_mp.py) replaying an example that a
    # mutant had made fail: with sigma2 = 4.49e307 and c = 1 the eigenvalue density computed its
    # upper edge b = 4 sigma2 = inf and returned inf at x = 1.
    big = 4.49423283715579e307  # float64's largest value / 4: 4 * big overflows
    # c = 1: p(x) = sqrt((4 sigma2 - x) x) / (2 pi sigma2 x); at x = 1 this is
    # sqrt(4 sigma2 - 1) / (2 pi sigma2) = 1 / (pi sqrt(sigma2)) to a relative 1 / (8 sigma2)
    assert mp.eigen_density([1.0], big, 1.0)[0] == pytest.approx(1 / (math.pi * math.sqrt(big)), rel=1e-12)
    # the density scales: p(s x; s sigma2) = p(x; sigma2) / s, also where s sigma2 * 4 overflows
    x = np.array([0.05, 0.3, 1.0, 2.5, 3.9])
    assert np.allclose(mp.eigen_density(x * big, big, 0.49) * big, mp.eigen_density(x, 1.0, 0.49), rtol=1e-12)
    # the singular-value edges: 2 sigma is representable for sigma = max / 2 ...
    half = 8.98846567431158e307
    assert mp.edges(half / 2, 1.0) == (0.0, half)
    # ... and beyond it no edge is: refused, naming sigma and saying what to do
    with pytest.raises(ValueError, match=r"sigma = 8\.98846567431158e\+307 is too large: the bulk's upper "
                                         r"edge sigma \(1 \+ sqrt q\) overflows float64; divide the matrix"):
        mp.edges(half, 1.0)
    assert mp.edges(half, 0.25) == (half / 2, half * 1.5)  # q = 1/4: the edge 1.5 sigma still fits

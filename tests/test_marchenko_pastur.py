import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from rmtlib import marchenko_pastur as mp, spectra


def _gauss(shape, std, seed):
    return std * torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("q", [0.1, 0.25, 0.5, 1.0])
def test_singular_value_density_integrates_to_one(q):
    lo, hi = mp.edges(1.7, q)
    val, _ = integrate.quad(mp.density, lo, hi, args=(1.7, q), limit=400)
    assert val == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("c", [0.1, 0.5, 1.0])
def test_eigen_density_integrates_to_one(c):
    a, b = 0.8 * (1 - math.sqrt(c)) ** 2, 0.8 * (1 + math.sqrt(c)) ** 2
    val, _ = integrate.quad(mp.eigen_density, a, b, args=(0.8, c), limit=400)
    assert val == pytest.approx(1.0, abs=1e-6)


def _cdf(pdf, lo, hi):
    grid = np.linspace(lo, hi, 20001)
    cdf = integrate.cumulative_trapezoid(pdf(grid), grid, initial=0)
    return lambda x: np.interp(x, grid, cdf / cdf[-1])


@pytest.mark.parametrize("shape", [(2000, 500), (1000, 1000)])
def test_densities_match_a_large_gaussian_sample(shape):
    # A KS test of the pooled singular values of 3 matrices against the MP CDF. Finite-size
    # corrections at this size are O(1/M); the KS distance must be below 0.02.
    std = 0.3
    sv = np.concatenate([spectra.singular_values(_gauss(shape, std, s)) for s in range(3)])
    q = min(shape) / max(shape)
    sigma = mp.sigma_from_entry_std(std, shape)
    lo, hi = mp.edges(sigma, q)
    assert stats.kstest(sv, _cdf(lambda x: mp.density(x, sigma, q), lo, hi)).statistic < 0.02
    eig = sv**2 / max(shape)
    a, b = std**2 * (1 - math.sqrt(q)) ** 2, std**2 * (1 + math.sqrt(q)) ** 2
    assert stats.kstest(eig, _cdf(lambda x: mp.eigen_density(x, std**2, q), a, b)).statistic < 0.02


def test_broadening_is_a_normalized_density_with_replicated_edges():
    sv = spectra.singular_values(_gauss((800, 400), 1.0, 1))
    grid, y = mp.broaden(sv, window=15)
    assert integrate.trapezoid(y, grid) == pytest.approx(1.0, abs=2e-3)
    # at a grid point: (1/M) sum_k N(nu; nu_k, sigma_k^2) with sigma_k = (s[k+15] - s[k-15]) / 2,
    # indices clamped at the ends (s[0]'s width is (s[15] - s[0]) / 2), summed here by hand
    s = np.sort(sv)
    M = len(s)
    widths = np.array([(s[min(k + 15, M - 1)] - s[max(k - 15, 0)]) / 2 for k in range(M)])
    assert widths[0] == (s[15] - s[0]) / 2 and widths[-1] == (s[-1] - s[-16]) / 2
    g, y1 = mp.broaden(s, window=15, grid=np.array([s[0], s[M // 2]]))
    want = [np.mean(stats.norm.pdf(x, loc=s, scale=widths)) for x in g]
    assert y1 == pytest.approx(want, rel=1e-10)


SHAPES = [(2500, 250), (2000, 500), (1200, 600), (1024, 1024), (500, 1000), (3072, 1024)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_fit_recovers_sigma_of_gaussian_matrices(shape, seed):
    std = 0.02
    sv = spectra.singular_values(_gauss(shape, std, seed))
    res = mp.fit(sv, shape)
    true = mp.sigma_from_entry_std(std, shape)
    assert res.sigma == pytest.approx(true, rel=0.01)
    assert res.q == pytest.approx(min(shape) / max(shape))
    assert res.n_outliers <= 2  # the largest value fluctuates around the edge (Tracy-Widom)
    # without outliers the naive estimate sigma^2 = mean(nu^2) is right too
    assert mp.fit_naive(sv, shape).sigma == pytest.approx(true, rel=0.01)


@pytest.mark.parametrize("shape", SHAPES)
def test_fit_with_planted_spikes_recovers_sigma_and_counts_them(shape):
    std, seed = 0.02, 3
    gen = torch.Generator().manual_seed(seed)
    true = mp.sigma_from_entry_std(std, shape)
    thetas = torch.tensor([2.5, 3.0, 4.0, 5.0, 8.0], dtype=torch.float64)  # all above q^(1/4)
    U = torch.linalg.qr(torch.randn(shape[0], 5, generator=gen, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(shape[1], 5, generator=gen, dtype=torch.float64))[0]
    W = _gauss(shape, std, seed) + U @ torch.diag(thetas * true) @ V.T
    res = mp.fit(spectra.singular_values(W), shape)
    assert res.sigma == pytest.approx(true, rel=0.01)
    assert 5 <= res.n_outliers <= 6


def test_fit_is_not_pulled_by_many_outliers_while_the_naive_fit_is():
    shape, std = (1000, 500), 0.02
    gen = torch.Generator().manual_seed(8)
    true = mp.sigma_from_entry_std(std, shape)
    k = 15
    thetas = torch.linspace(3, 30, k, dtype=torch.float64)
    U = torch.linalg.qr(torch.randn(shape[0], k, generator=gen, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(shape[1], k, generator=gen, dtype=torch.float64))[0]
    sv = spectra.singular_values(_gauss(shape, std, 8) + U @ torch.diag(thetas * true) @ V.T)
    good, naive = mp.fit(sv, shape), mp.fit_naive(sv, shape)
    # k spikes also shrink the bulk slightly (it lives in N-k x M-k dimensions): ~0.8% here
    assert good.sigma == pytest.approx(true, rel=0.015)
    assert abs(good.n_outliers - k) <= 1
    assert naive.sigma > 1.5 * true and naive.n_outliers < k  # too wide a bulk swallows outliers


def test_glorot_uniform_initialisation_follows_its_analytic_law():
    from rmtlib import models

    torch.manual_seed(0)
    net = models.mlp1024(784, 10)
    W = spectra.weight_matrix(net.fc1)
    res = mp.fit(spectra.singular_values(W), tuple(W.shape))
    assert res.sigma == pytest.approx(mp.glorot_sigma(tuple(W.shape)), rel=0.01)


def test_square_and_small_matrices():
    sv = spectra.singular_values(_gauss((300, 300), 1.0, 2))
    res = mp.fit(sv, (300, 300))
    assert res.q == 1.0 and res.nu_min == 0.0
    with pytest.raises(ValueError, match="at least 20"):
        mp.fit(spectra.singular_values(_gauss((50, 10), 1.0, 0)), (50, 10))
    with pytest.raises(ValueError, match="expected min"):
        mp.fit(sv[:100], (300, 300))
    with pytest.raises(ValueError, match="q = M/N"):
        mp.density([1.0], 1.0, 1.5)
    with pytest.raises(ValueError, match="sigma"):
        mp.density([1.0], -1.0, 0.5)
    with pytest.raises(ValueError, match="NaN or Inf"):
        mp.fit(np.full(300, np.nan), (300, 300))


def test_analyze_gives_a_row_per_layer():
    import rmtlib
    from rmtlib import early_stopping as es, models

    torch.manual_seed(0)
    net = models.build("mini_alexnet", (3, 32, 32), 10, channels=(32, 24), dense=(64, 32))
    table = rmtlib.analyze(net, samples=2000, threshold_samples=1000)
    assert list(table.layer) == ["conv1", "conv2", "fc1", "fc2", "out"]
    for col in ("s_n", "threshold", "fires", "type", "mp_gof", "mp_gof_threshold", "mp_bulk_ok", "tw_margin",
                "module", "pt_boundary"):
        assert col in table.columns
    conv2 = table.set_index("layer").loc["conv2"]
    assert conv2["shape"] == (24, 32 * 25) and conv2.q == pytest.approx(24 / 800)
    fc1 = table.set_index("layer").loc["fc1"]
    # Glorot init: the fit finds the analytic scale, the bulk passes its goodness of fit,
    # the layer is light-tailed noise and does not fire the early-stopping criterion
    assert fc1.sigma == pytest.approx(mp.glorot_sigma((64, 24 * 8 * 8)), rel=0.02)
    assert fc1.mp_bulk_ok and fc1.type == "LT" and not fc1.fires and fc1.module == "Linear"
    assert fc1.s_n < fc1.threshold
    out = table.set_index("layer").loc["out"]  # 10 singular values: too few for a fit
    assert np.isnan(out.sigma) and "at least 20" in out.note
    with pytest.raises(ValueError, match="valid layer names"):
        rmtlib.analyze(net, layers=["fc9"])
    with pytest.raises(ValueError, match="side"):
        rmtlib.analyze(net, side="up")


def test_analyze_reads_embeddings_and_flags_a_heavy_tailed_layer():
    import rmtlib
    from torch import nn

    torch.manual_seed(1)
    net = nn.Sequential(nn.Embedding(300, 64), nn.Linear(64, 200))
    with torch.no_grad():  # Student-t entries with 1.5 degrees of freedom: no MP bulk
        t = torch.distributions.StudentT(torch.tensor(1.5)).sample((200, 64))
        net[1].weight.copy_(t)
    table = rmtlib.analyze(net, porter_thomas=False, threshold_samples=1000).set_index("layer")
    emb, lin = table.loc["0"], table.loc["1"]
    assert emb.module == "Embedding" and emb["shape"] == (300, 64)
    # nn.Embedding initialises N(0, 1): sigma = sqrt(300)
    assert emb.sigma == pytest.approx(math.sqrt(300), rel=0.03) and emb.mp_bulk_ok and emb.type == "LT"
    assert not lin.mp_bulk_ok and lin.type == "HT" and lin.fires


# ----------------------------------------------------------------- outliers, Tracy-Widom, goodness of fit
def _planted(shape, thetas, seed, std=0.02):
    gen = torch.Generator().manual_seed(seed)
    k = len(thetas)
    U = torch.linalg.qr(torch.randn(shape[0], k, generator=gen, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(shape[1], k, generator=gen, dtype=torch.float64))[0]
    true = mp.sigma_from_entry_std(std, shape)
    W = _gauss(shape, std, seed + 100) + U @ torch.diag(torch.tensor(thetas, dtype=torch.float64) * true) @ V.T
    return spectra.singular_values(W), true


@pytest.mark.parametrize("theta", [2.0, 10.0, 150.0, 300.0, 1e3, 1e4])
def test_one_spike_at_any_scale_leaves_sigma_and_counts_one(theta):
    # theta in units of sigma; theta = 2 > q^(1/4) is detectable: nu = sqrt((1+t^2)(q+t^2))/t
    shape = (1200, 600)
    sv, true = _planted(shape, [theta], seed=4)
    res = mp.fit(sv, shape)
    assert res.sigma == pytest.approx(true, rel=0.01)
    assert res.n_outliers == 1 and res.bulk_ok


@pytest.mark.parametrize("shape", [(1000, 500), (800, 800)])
def test_thirty_spikes_at_thirty_times_the_edge(shape):
    q = min(shape) / max(shape)
    sv, true = _planted(shape, [30 * (1 + math.sqrt(q))] * 30, seed=5)
    res = mp.fit(sv, shape)
    # the bulk is the MP law of (N-30) x (M-30); the fit corrects sigma for it (METHODS §3)
    assert res.sigma == pytest.approx(true, rel=0.01)
    assert res.n_outliers == 30 and res.n_bulk_shape == (max(shape) - 30, min(shape) - 30)


def test_tracy_widom_quantiles_match_the_tables():
    # Tracy & Widom's TW1 percentiles as tabulated by Johnstone (2001), Table 1, and the mean
    for p, t in [(0.90, 0.4501), (0.95, 0.9793), (0.99, 2.0234)]:
        assert mp.tw1_quantile(p) == pytest.approx(t, abs=2e-4)
    s = np.linspace(-9, 6, 301)
    F = np.array([mp.tw1_cdf(x) for x in s])
    assert F[0] < 1e-6 and F[-1] > 1 - 1e-5 and np.all(np.diff(F) >= -1e-7)  # det accurate to ~1e-8
    mean = s[-1] - integrate.trapezoid(F, s)  # E X = b - integral_a^b F when F(a) = 0, F(b) = 1
    assert mean == pytest.approx(-1.2065, abs=2e-3)


def test_tracy_widom_scale_matches_the_largest_singular_value_of_noise():
    # METHODS §3: at N = 1000, q = 0.5 the largest value has std ~1.3 scales, mean ~1.4 below the edge
    rng = np.random.default_rng(0)
    top = np.array([mp.sample_spectrum((1000, 500), rng)[-1] for _ in range(300)])
    s = mp.tw_scale(1.0, (1000, 500))
    z = (top - (1 + math.sqrt(0.5))) / s
    assert 1.0 < z.std() < 1.6 and -1.8 < z.mean() < -1.0


@pytest.mark.parametrize("shape", [(200, 100), (500, 500), (3000, 300)])
def test_pure_noise_has_no_outliers_in_all_but_a_few_percent_of_draws(shape):
    # with the 99% TW1 quantile the rate is ~1% plus the error of the fitted edge; allow 5%
    rng = np.random.default_rng(12)
    counts = [mp.fit(3.0 * mp.sample_spectrum(shape, rng), shape, gof=False).n_outliers for _ in range(80)]
    assert np.mean(np.array(counts) > 0) <= 0.05
    res = mp.fit(3.0 * mp.sample_spectrum(shape, rng), shape)
    assert res.tw_margin == pytest.approx(mp.tw1_quantile(0.99) * mp.tw_scale(res.sigma, shape), rel=1e-9)


def test_goodness_of_fit_passes_noise_and_flags_heavy_tails():
    shape = (800, 400)
    g = torch.Generator().manual_seed(9)
    unif = spectra.singular_values(torch.rand(*shape, generator=g, dtype=torch.float64) - 0.5)
    assert mp.fit(unif, shape).bulk_ok
    rng = np.random.default_rng(1)
    assert all(mp.fit(mp.sample_spectrum(shape, rng), shape).bulk_ok for _ in range(10))
    torch.manual_seed(2)
    heavy = {
        "t2": torch.distributions.StudentT(torch.tensor(2.0, dtype=torch.float64)).sample(shape),
        "t1.5": torch.distributions.StudentT(torch.tensor(1.5, dtype=torch.float64)).sample(shape),
        "pareto1.5": torch.distributions.Pareto(torch.tensor(1.0, dtype=torch.float64),
                                                torch.tensor(1.5, dtype=torch.float64)).sample(shape)
                     * torch.sign(torch.randn(*shape, dtype=torch.float64)),
    }
    for name, W in heavy.items():
        with pytest.warns(mp.MPFitWarning, match="does not follow the MP law"):
            res = mp.fit(spectra.singular_values(W), shape)
        assert res.bulk_ok is False and res.gof_distance > res.gof_threshold, name
    null = mp.gof_null(shape)
    assert not null.flags.writeable and len(null) == mp.GOF_SAMPLES


def test_rank_collapse_and_extreme_scales():
    with pytest.raises(ValueError, match="rank collapse"):
        mp.fit(np.zeros(100), (100, 200))
    low = spectra.singular_values(_gauss((200, 5), 1.0, 0) @ _gauss((5, 100), 1.0, 1))
    with pytest.raises(ValueError, match="rank collapse"):
        mp.fit(low, (200, 100))
    sv = spectra.singular_values(_gauss((400, 200), 1.0, 3))
    base = mp.fit(sv, (400, 200))
    for scale in (1e-150, 1e150):
        res = mp.fit(sv * scale, (400, 200))
        assert res.sigma == pytest.approx(base.sigma * scale, rel=1e-6)
        assert res.n_outliers == base.n_outliers

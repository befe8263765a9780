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
    # a single broadened value: N(nu_k, sigma_k^2) with sigma_k from clamped indices
    s = np.sort(sv)
    w0 = (s[15] - s[0]) / 2
    g, y1 = mp.broaden(s, window=15, grid=np.array([s[0]]))
    assert y1[0] > 0 and w0 > 0


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
    from rmtlib import models

    torch.manual_seed(0)
    net = models.build("mini_alexnet", (3, 32, 32), 10, channels=(32, 24), dense=(64, 32))
    table = rmtlib.analyze(net, samples=2000)
    assert list(table.layer) == ["conv1", "conv2", "fc1", "fc2", "out"]
    conv2 = table.set_index("layer").loc["conv2"]
    assert conv2["shape"] == (24, 32 * 25) and conv2.q == pytest.approx(24 / 800)
    fc1 = table.set_index("layer").loc["fc1"]
    # Glorot init: the fit finds the analytic scale
    assert fc1.sigma == pytest.approx(mp.glorot_sigma((64, 24 * 8 * 8)), rel=0.02)
    out = table.set_index("layer").loc["out"]  # 10 singular values: too few for a fit
    assert np.isnan(out.sigma) and "at least 20" in out.note
    with pytest.raises(ValueError, match="valid layer names"):
        rmtlib.analyze(net, layers=["fc9"])

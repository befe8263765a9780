import math

import numpy as np
import pytest
import torch

from rmtlib import data, early_stopping as es, models, train


def _gauss(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(100, 1024), (192, 384), (512, 1024)])
def test_no_false_alarm_of_the_fixed_threshold_where_it_is_valid(shape):
    # c <= 0.5: the null of s_n lies below Meng & Yao's s* (see test_null_grows_with_c)
    for seed in range(3):
        assert es.spectral_distance(_gauss(shape, seed)) < es.threshold(min(shape), C=0.4, method="fixed")


def test_heavy_tailed_matrix_fires():
    g = torch.Generator().manual_seed(0)
    W = torch.distributions.StudentT(torch.tensor(1.5, dtype=torch.float64)).sample((512, 1024))
    assert es.spectral_distance(W) > es.threshold(512)
    assert es.spectrum_type(W) == "HT"


def test_threshold_formula_and_bad_input():
    assert es.threshold(1000, 0.4) == pytest.approx(0.4 * math.sqrt(math.log(1000)) / 10)
    with pytest.raises(ValueError, match="C must"):
        es.threshold(100, C=0)
    with pytest.raises(ValueError, match="needs the layer's other dimension"):
        es.threshold(100, method="calibrated")
    with pytest.raises(ValueError, match="method must be one of"):
        es.threshold(100, m=200, method="exact")
    with pytest.raises(ValueError, match="too few"):
        es.spectral_distance(_gauss((4, 30), 0))


def test_callback_stops_training_at_the_epoch_it_reports():
    ds = data.load("anova-d2", t=3.0, dim=40, classes=4, n_per_class=300, n_test_per_class=100, n_val=100)
    torch.manual_seed(0)
    net = models.mlp([40, 256, 128, 4], init="default")
    # C tiny: the criterion fires as soon as training has moved the weights at all
    # (method="fixed": the calibrated default would never fire this early, by design)
    cb = es.SpectralEarlyStopping(["fc2"], C=1e-6, stop=True, method="fixed", samples=200)
    with pytest.warns(es.ThresholdWarning, match="exceeded by pure noise"):
        hist = train.train(net, ds, schedule="plain", epochs=10, callbacks=[cb], progress=False)
    assert cb.fired_epoch is not None and hist.stopped_epoch == cb.fired_epoch == hist.epoch[-1]
    frame = cb.to_frame()
    assert list(frame.epoch) == list(range(0, cb.fired_epoch + 1))
    assert frame.fired.iloc[-1] and set(frame.type) <= set(es.TYPES)
    # stop=False only records
    torch.manual_seed(0)
    net = models.mlp([40, 256, 128, 4], init="default")
    cb = es.SpectralEarlyStopping(["fc2"], C=1e-6, stop=False, method="fixed", samples=200)
    with pytest.warns(es.ThresholdWarning):
        hist = train.train(net, ds, schedule="plain", epochs=3, callbacks=[cb], progress=False)
    assert hist.stopped_epoch is None and len(hist) == 4 and cb.fired_epoch == 1


def test_callback_rejects_unknown_layers_before_training():
    ds = data.load("anova-d2", dim=40, classes=4, n_per_class=50, n_test_per_class=50, n_val=50)
    net = models.mlp([40, 64, 4])
    with pytest.raises(ValueError, match="valid layer names"):
        train.train(net, ds, epochs=1, callbacks=[es.SpectralEarlyStopping(["fc9"])], progress=False)


# ----------------------------------------------------------------- the histogram and exact s_n
from scipy import integrate, optimize  # noqa: E402

from rmtlib import marchenko_pastur as mp  # noqa: E402


@pytest.mark.parametrize("n", [63, 64, 124, 125, 216, 343, 511, 512, 999, 1000, 1001])
def test_bin_count_uses_the_integer_cube_root(n):
    k = max(j for j in range(20) if j**3 <= n)  # integer definition, no floating point
    assert es.n_bins(n) == 2 * k
    assert es.n_bins(512) == 16 and es.n_bins(1000) == 20


def _mp_pdf(a, b):
    s2, c = es.mp_parameters(a, b)
    return lambda x: math.sqrt(max((b - x) * (x - a), 0.0)) / (2 * math.pi * c * s2 * x), s2, c


def _quadrature_distance(X):
    """s_n by adaptive quadrature: crossings of p = h found by a sign scan + brentq, pieces
    integrated by QUADPACK; an exact zero lower edge (c = 1) integrated with weight='alg'
    (x^(-1/2) singularity). Independent of the closed-form distribution function."""
    X = np.sort(X)
    a, b = X[0], X[-1]
    p, s2, c = _mp_pdf(a, b)
    k = max(j for j in range(20) if j**3 <= len(X))
    hist, edges = np.histogram(X, bins=2 * k, range=(a, b), density=True)
    total = 0.0
    for h, lo, hi in zip(hist, edges[:-1], edges[1:]):
        scan = np.linspace(lo, hi, 4001)[1:-1]
        f = np.array([p(x) - h for x in scan])
        roots = [optimize.brentq(lambda x: p(x) - h, scan[i], scan[i + 1], xtol=1e-15)
                 for i in np.nonzero(np.sign(f[:-1]) != np.sign(f[1:]))[0]]
        if a == 0 and lo == 0:
            x1 = roots[0] if roots else hi  # p > h on (0, x1): integral of p by the alg weight
            g = lambda x: math.sqrt(b - x) / (2 * math.pi * c * s2)  # noqa: E731  p = g(x) x^(-1/2)
            total += integrate.quad(g, 0, x1, weight="alg", wvar=(-0.5, 0), epsabs=1e-14, epsrel=1e-12)[0] - h * x1
            if x1 < hi:
                total += integrate.quad(lambda x: abs(h - p(x)), x1, hi, limit=500, epsabs=1e-14, epsrel=1e-12)[0]
        else:
            total += integrate.quad(lambda x: abs(h - p(x)), lo, hi, points=roots or None, limit=500,
                                    epsabs=1e-14, epsrel=1e-12)[0]
    return total


@pytest.mark.parametrize("shape,zero_edge", [((200, 500), False), ((256, 256), False), ((300, 320), False),
                                             ((128, 128), True)])
def test_exact_statistic_matches_adaptive_quadrature(shape, zero_edge):
    X = np.sort(spectra_sq(shape, seed=3))
    if zero_edge:  # a = 0 exactly: c^ = 1 and the MP density has an x^(-1/2) singularity
        X[0] = 0.0
    exact = es.statistic(X)
    assert exact == pytest.approx(_quadrature_distance(X), rel=1e-6)


def spectra_sq(shape, seed):
    from rmtlib import spectra

    return spectra.singular_values(_gauss(shape, seed)) ** 2


def test_midpoint_quadrature_misses_the_singularity_at_c_one():
    # a = 0: the first bin holds integral_0^w p ~ sqrt(w) mass that midpoints under-count
    X = np.sort(spectra_sq((256, 256), seed=4))
    X[0] = 0.0
    exact, mid = es.statistic(X), es.statistic(X, method="midpoint", points_per_bin=8)
    assert abs(mid - exact) > 0.02 * exact
    assert es.statistic(X, method="midpoint", points_per_bin=4096) == pytest.approx(exact, rel=2e-2)


def test_eigen_cdf_is_the_integral_of_the_density():
    for c in (0.1, 0.5, 0.97, 1.0):
        a, b = 0.7 * (1 - math.sqrt(c)) ** 2, 0.7 * (1 + math.sqrt(c)) ** 2
        for x in np.linspace(a, b, 7)[1:]:
            ref = integrate.quad(mp.eigen_density, a, x, args=(0.7, c), limit=400, epsabs=1e-13)[0]
            assert mp.eigen_cdf(x, 0.7, c) == pytest.approx(ref, abs=1e-8)
        assert mp.eigen_cdf(b * 2, 0.7, c) == 1.0 and mp.eigen_cdf(a / 2, 0.7, c) == 0.0


# ----------------------------------------------------------------- the null and the thresholds
def test_bidiagonal_sampler_matches_the_svd_of_gaussian_matrices():
    # same law (Dumitriu & Edelman): means of s_n and of the smallest eigenvalue agree within
    # 4 standard errors of the difference (a false failure has probability ~1e-4)
    shape, K_direct = (48, 64), 120
    direct = [np.sort(spectra_sq(shape, seed=1000 + i)) / 64 for i in range(K_direct)]
    rng = np.random.default_rng(5)
    tri = [mp.sample_spectrum((64, 48), rng) ** 2 for _ in range(600)]
    for f in (es.statistic, lambda X: X.min()):
        u, v = np.array([f(X) for X in direct]), np.array([f(X) for X in tri])
        se = math.sqrt(u.var(ddof=1) / len(u) + v.var(ddof=1) / len(v))
        assert abs(u.mean() - v.mean()) < 4 * se


def test_null_grows_with_c_and_the_fixed_threshold_fails_near_square():
    table = es.null_table(ns=(64,), cs=(0.25, 1.0), samples=200).set_index("c")
    assert table.loc[1.0, "T_median"] > table.loc[0.25, "T_median"] + 0.2
    assert table.loc[1.0, "false_alarm_fixed"] > 0.5        # square noise exceeds C = 0.4
    assert table.loc[0.25, "false_alarm_fixed"] < 0.05
    assert table.loc[1.0, "calibrated_T"] > 0.4


def test_null_is_cached_read_only_and_rebuilt_when_damaged(tmp_path, monkeypatch):
    monkeypatch.setenv("RMTLIB_CACHE", str(tmp_path))
    es._NULL_MEMO.clear()
    a = es.null_statistic(40, 50, samples=30, seed=2)
    assert not a.flags.writeable and np.all(np.diff(a) >= 0)
    path = es._null_path(40, 50, 30, 2)
    assert path.is_file() and path.suffix == ".json"
    path.write_text("{broken")
    es._NULL_MEMO.clear()
    b = es.null_statistic(40, 50, samples=30, seed=2)
    np.testing.assert_array_equal(a, b)
    assert es.null_statistic(50, 40, samples=30, seed=2) is b  # orientation does not matter


def _noise(shape, seed, kind):
    g = torch.Generator().manual_seed(seed)
    if kind == "uniform":  # PyTorch's default Linear init is uniform
        return torch.rand(*shape, generator=g, dtype=torch.float64) - 0.5
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _assert_noise_does_not_fire(shape, seeds):
    thr = es.threshold(min(shape), m=max(shape))  # the default: method="auto"
    for seed in seeds:
        for kind in ("gauss", "uniform"):
            assert es.spectral_distance(_noise(shape, seed, kind)) < thr, (shape, seed, kind)


@pytest.mark.parametrize("shape", [(64, 64), (64, 128), (100, 100), (128, 96), (200, 256)])
def test_pure_noise_never_fires_at_the_default_threshold(shape):
    _assert_noise_does_not_fire(shape, seeds=range(20, 23))


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(256, 256), (512, 512), (784, 1024), (1024, 1024), (2048, 2048), (2048, 4096)])
def test_pure_noise_never_fires_at_the_default_threshold_large(shape):
    _assert_noise_does_not_fire(shape, seeds=range(30, 32))


def test_callback_warns_and_does_not_fire_on_a_square_noise_layer():
    from torch import nn

    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(96, 96), nn.ReLU(), nn.Linear(96, 400))
    cb = es.SpectralEarlyStopping(["0", "2"], samples=1000)
    with pytest.warns(es.ThresholdWarning, match="layer 0 .*exceeded by pure noise"):
        cb.on_train_begin(net, history=None)
    frame = cb.to_frame()
    assert not frame.fired.any()
    row0 = frame.set_index("layer").loc["0"]
    assert row0.threshold > row0.fixed_threshold  # calibrated: the fixed one is not valid at c = 1
    with pytest.raises(TypeError, match="strings"):
        es.SpectralEarlyStopping([3])
    with pytest.raises(ValueError, match="method"):
        es.SpectralEarlyStopping(["0"], method="best")


# ----------------------------------------------------------------- spectrum types
def _spiked(shape, thetas, seed):
    g = torch.Generator().manual_seed(seed)
    k = len(thetas)
    W = torch.randn(*shape, generator=g, dtype=torch.float64) / math.sqrt(max(shape))  # sigma = 1
    if k:
        U = torch.linalg.qr(torch.randn(shape[0], k, generator=g, dtype=torch.float64))[0]
        V = torch.linalg.qr(torch.randn(shape[1], k, generator=g, dtype=torch.float64))[0]
        W = W + U @ torch.diag(torch.tensor(thetas, dtype=torch.float64)) @ V.T
    return W


@pytest.mark.parametrize("shape", [(60, 120), (120, 60), (100, 300), (300, 600)])
def test_spectrum_types_on_synthetic_cases(shape):
    seed = 7
    assert es.spectrum_type(_spiked(shape, [], seed)) == "LT"
    # K - 1 = 9 spikes (a 10-class problem), theta 3..8 sigma: all above the BBP threshold q^(1/4)
    assert es.spectrum_type(_spiked(shape, list(np.linspace(3, 8, 9)), seed)) == "BT"
    # one huge spike must not make the noise bulk look collapsed
    assert es.spectrum_type(_spiked(shape, [1e4], seed)) == "BT"
    g = torch.Generator().manual_seed(seed)
    t = torch.distributions.StudentT(torch.tensor(1.5, dtype=torch.float64))
    assert es.spectrum_type(t.sample(shape)) == "HT"
    low = torch.randn(shape[0], 5, generator=g, dtype=torch.float64) @ torch.randn(5, shape[1], generator=g,
                                                                                dtype=torch.float64)
    assert es.spectrum_type(low) == "RC"
    assert es.spectrum_type(torch.zeros(shape)) == "RC"
    with pytest.raises(ValueError, match="too few"):
        es.spectrum_type(_gauss((10, 50), 0))


@pytest.mark.slow
def test_spectrum_type_of_a_student_t_matrix_and_large_low_rank():
    t2 = torch.distributions.StudentT(torch.tensor(2.0, dtype=torch.float64))
    torch.manual_seed(0)
    assert es.spectrum_type(t2.sample((500, 1000))) == "HT"
    low_rank = _gauss((512, 60), 2) @ _gauss((60, 1024), 3)
    assert es.spectrum_type(low_rank) == "RC"


def test_calibration_refuses_too_few_draws_for_its_quantile():
    # The 99.9% quantile of 50 draws is their maximum, biased low for this right-skewed null:
    # at 128 x 128 it let 13% of pure-noise matrices fire. 1 / (1 - level) draws are required.
    with pytest.raises(ValueError, match="at least 1000 draws"):
        es.threshold(128, 0.4, m=128, method="calibrated", samples=50)
    with pytest.raises(ValueError, match="at least 1000 draws"):
        es.SpectralEarlyStopping(["fc1"], samples=50)
    es.SpectralEarlyStopping(["fc1"], samples=50, method="fixed")  # no calibration: allowed
    assert es.threshold(128, 0.4, m=128, method="calibrated", samples=100, level=0.99) > 0

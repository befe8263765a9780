import math

import numpy as np
import pytest
import torch

from rmtlib import data, early_stopping as es, models, train


def _gauss(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", [(100, 1024), (192, 384), (384, 512), (512, 1024), (1024, 784)])
def test_no_false_alarm_on_gaussian_matrices(shape):
    for seed in range(3):
        assert es.spectral_distance(_gauss(shape, seed)) < es.threshold(min(shape), C=0.4)


def test_heavy_tailed_matrix_fires():
    g = torch.Generator().manual_seed(0)
    W = torch.distributions.StudentT(torch.tensor(1.5, dtype=torch.float64)).sample((512, 1024))
    assert es.spectral_distance(W) > es.threshold(512)
    assert es.spectrum_type(W) == "HT"


def test_statistic_matches_a_direct_quadrature():
    W = _gauss((200, 500), 1)
    X = np.sort(np.linalg.svd(W.numpy(), compute_uv=False) ** 2)
    a, b = X[0], X[-1]
    s2, c = es.mp_parameters(a, b)
    assert s2 * (1 - math.sqrt(c)) ** 2 == pytest.approx(a) and s2 * (1 + math.sqrt(c)) ** 2 == pytest.approx(b)
    bins = 2 * int(200 ** (1 / 3))
    hist, edges = np.histogram(X, bins=bins, range=(a, b), density=True)
    from scipy import integrate
    from rmtlib import marchenko_pastur as mp
    total = sum(integrate.quad(lambda x: abs(h - mp.eigen_density(x, s2, c)), lo, hi, limit=200)[0]
                for h, lo, hi in zip(hist, edges[:-1], edges[1:]))
    assert es.spectral_distance(W) == pytest.approx(total, abs=2e-3)


def test_spectrum_types():
    assert es.spectrum_type(_gauss((512, 1024), 0) / 32) == "LT"
    g = torch.Generator().manual_seed(1)
    U = torch.linalg.qr(torch.randn(512, 4, generator=g, dtype=torch.float64))[0]
    V = torch.linalg.qr(torch.randn(1024, 4, generator=g, dtype=torch.float64))[0]
    spikes = U @ torch.diag(torch.tensor([4.0, 5.0, 6.0, 8.0], dtype=torch.float64) * math.sqrt(2)) @ V.T
    assert es.spectrum_type(_gauss((512, 1024), 0) / 32 + spikes) == "BT"
    low_rank = _gauss((512, 60), 2) @ _gauss((60, 1024), 3)
    assert es.spectrum_type(low_rank) == "RC"
    with pytest.raises(ValueError, match="too small"):
        es.spectrum_type(_gauss((10, 50), 0))


def test_threshold_formula_and_bad_input():
    assert es.threshold(1000, 0.4) == pytest.approx(0.4 * math.sqrt(math.log(1000)) / 10)
    with pytest.raises(ValueError, match="C must be positive"):
        es.threshold(100, C=0)
    with pytest.raises(ValueError, match="too small"):
        es.spectral_distance(_gauss((4, 30), 0))


def test_callback_stops_training_at_the_epoch_it_reports():
    ds = data.load("anova-d2", t=3.0, dim=40, classes=4, n_per_class=300, n_test_per_class=100, n_val=100)
    torch.manual_seed(0)
    net = models.mlp([40, 256, 128, 4], init="default")
    # C tiny: the criterion fires as soon as training has moved the weights at all
    cb = es.SpectralEarlyStopping(["fc2"], C=1e-6, stop=True)
    hist = train.train(net, ds, schedule="plain", epochs=10, callbacks=[cb], progress=False)
    assert cb.fired_epoch is not None and hist.stopped_epoch == cb.fired_epoch == hist.epoch[-1]
    frame = cb.to_frame()
    assert list(frame.epoch) == list(range(0, cb.fired_epoch + 1))
    assert frame.fired.iloc[-1] and set(frame.type) <= set(es.TYPES)
    # stop=False only records
    torch.manual_seed(0)
    net = models.mlp([40, 256, 128, 4], init="default")
    cb = es.SpectralEarlyStopping(["fc2"], C=1e-6, stop=False)
    hist = train.train(net, ds, schedule="plain", epochs=3, callbacks=[cb], progress=False)
    assert hist.stopped_epoch is None and len(hist) == 4 and cb.fired_epoch == 1


def test_callback_rejects_unknown_layers_before_training():
    ds = data.load("anova-d2", dim=40, classes=4, n_per_class=50, n_test_per_class=50, n_val=50)
    net = models.mlp([40, 64, 4])
    with pytest.raises(ValueError, match="valid layer names"):
        train.train(net, ds, epochs=1, callbacks=[es.SpectralEarlyStopping(["fc9"])], progress=False)

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
    with pytest.raises(ValueError, match=r"^n must lie in \[8, inf\]; got 4"):
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

"""Spectral early stopping (Meng & Yao, JMLR 2023) and spectrum types LT / BT / HT / RC.

METHODS §6. For an n x n0 weight matrix (n <= n0) with eigenvalues X_1..X_n of W W^T:
a^ = X_(1), b^ = X_(n) give sigma^ and c^ through a = sigma^2 (1 - sqrt c)^2,
b = sigma^2 (1 + sqrt c)^2; a histogram with M = 2 floor(n^(1/3)) equal bins on [a^, b^]
is compared with the MP density, s_n = integral |p^_M - p_MP| dx; training stops at the
first epoch where s_n > s* = C sqrt(log n) / n^(1/3).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from . import marchenko_pastur as mp
from . import spectra


def _eigenvalues(W) -> np.ndarray:
    W = spectra.as_tensor(W, dtype=torch.float64)
    X = spectra.singular_values(W) ** 2  # eigenvalues of W W^T for the smaller side
    return np.sort(X)


def mp_parameters(a: float, b: float) -> tuple[float, float]:
    """(sigma^2, c) from the bulk edges a = sigma^2 (1 - sqrt c)^2, b = sigma^2 (1 + sqrt c)^2."""
    if not (0 <= a < b):
        raise ValueError(f"need 0 <= a < b for the MP edges; got a={a}, b={b}")
    ra, rb = math.sqrt(a), math.sqrt(b)
    sigma = (ra + rb) / 2
    return sigma**2, ((rb - ra) / (rb + ra)) ** 2


def spectral_distance(W, *, points_per_bin: int = 64) -> float:
    """The statistic s_n of Meng & Yao (METHODS §6) for a weight matrix.

    The MP density is integrated inside each bin with `points_per_bin` midpoints, so the
    square-root edges are resolved.
    """
    X = _eigenvalues(W)
    n = len(X)
    if n < 8:
        raise ValueError(f"a matrix with {n} eigenvalues is too small for the histogram statistic (need >= 8)")
    a, b = float(X[0]), float(X[-1])
    if b <= a:
        raise ValueError("all eigenvalues are equal: no spectrum to compare")
    sigma2, c = mp_parameters(a, b)
    bins = 2 * int(math.floor(n ** (1 / 3)))
    hist, edges = np.histogram(X, bins=bins, range=(a, b), density=True)
    width = edges[1] - edges[0]
    sub = (np.arange(points_per_bin) + 0.5) / points_per_bin
    x = edges[:-1, None] + sub[None, :] * width
    p = mp.eigen_density(x, sigma2, min(c, 1.0))
    return float(np.sum(np.abs(hist[:, None] - p)) * width / points_per_bin)


def threshold(n: int, C: float = 0.4) -> float:
    """s* = C sqrt(log n) / n^(1/3) (METHODS §6; C between 0.4 and 0.6)."""
    if n < 2:
        raise ValueError(f"n must be at least 2; got {n}")
    if not C > 0:
        raise ValueError(f"C must be positive; got {C}")
    return C * math.sqrt(math.log(n)) / n ** (1 / 3)


TYPES = ("LT", "BT", "HT", "RC")


def spectrum_type(W, *, rank_tol: float = 1e-3, collapse_fraction: float = 0.25,
                  max_spikes: int | None = None, heavy_fraction: float = 0.05) -> str:
    """Classify a spectrum as LT, BT, HT or RC (METHODS §6). Operational definition:

    - RC (rank collapse): more than `collapse_fraction` of the singular values are below
      `rank_tol` times the largest.
    - Otherwise fit the MP bulk (two-stage fit of METHODS §3) and count outliers above it.
    - LT (light tail, the MP law): no outlier beyond a Tracy-Widom fluctuation of the edge
      (at most one value above it, and within 5% of the edge).
    - BT (bulk transition): an MP bulk with a few separated spikes: 1 to `max_spikes`
      outliers (default max(10, 1% of the values)), the bulk fraction above the edge
      under `heavy_fraction`.
    - HT (heavy tail): more outliers than that, or no MP bulk that can be fitted.
    """
    W = spectra.as_tensor(W, dtype=torch.float64)
    S = spectra.singular_values(W)
    M = len(S)
    if M < mp.MIN_VALUES:
        raise ValueError(f"a matrix with {M} singular values is too small to type (need >= {mp.MIN_VALUES})")
    if np.mean(S < rank_tol * S[0]) > collapse_fraction:
        return "RC"
    try:
        fit = mp.fit(S, tuple(W.shape))
    except (ValueError, RuntimeError):
        return "HT"
    spikes = max(10, int(0.01 * M)) if max_spikes is None else max_spikes
    above = S[S > fit.nu_max]
    if len(above) == 0 or (len(above) == 1 and above[0] < 1.05 * fit.nu_max):
        return "LT"
    if len(above) <= spikes and len(above) / M < heavy_fraction:
        return "BT"
    return "HT"


class SpectralEarlyStopping:
    """Training callback: records s_n and the spectrum type of monitored layers every epoch.

    Stops training (with `stop=True`) at the first epoch where s_n of any monitored layer
    exceeds its threshold s* = C sqrt(log n) / n^(1/3). `records` (a list of dicts, also
    `to_frame()`) holds epoch, layer, n, s_n, threshold, type, fired; `fired_epoch` the first
    epoch where the criterion fired (None if never).
    """

    def __init__(self, layers, C: float = 0.4, stop: bool = True, types: bool = True):
        if isinstance(layers, str):
            layers = [layers]
        self.layers = list(layers)
        if not self.layers:
            raise ValueError("give at least one layer name to monitor")
        threshold(2, C)  # validates C
        self.C, self.stop, self.types = C, stop, types
        self.records: list[dict] = []
        self.fired_epoch: int | None = None

    def _measure(self, epoch, model):
        fired = False
        for name in self.layers:
            W = spectra.weight_matrix(spectra.get_layer(model, name))
            n = min(W.shape)
            s = spectral_distance(W)
            t = threshold(n, self.C)
            row = dict(epoch=epoch, layer=name, n=n, s_n=s, threshold=t, fired=s > t)
            if self.types:
                row["type"] = spectrum_type(W)
            self.records.append(row)
            fired |= s > t
        return fired

    def on_train_begin(self, model, history):
        spectra.get_layer(model, self.layers[0])  # unknown names fail before training
        for name in self.layers:
            spectra.get_layer(model, name)
        self._measure(0, model)

    def on_epoch_end(self, epoch, model, history):
        fired = self._measure(epoch, model)
        if fired and self.fired_epoch is None:
            self.fired_epoch = epoch
            history.record("spectral_early_stopping", epoch, True)
            return self.stop
        return False

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame(self.records)

"""One call per model: a table with a row per layer (WeightWatcher's habit, better statistics)."""
from __future__ import annotations

import warnings

import pandas as pd
from torch import nn

from . import early_stopping as es
from . import level_statistics as ls
from . import marchenko_pastur as mp
from . import porter_thomas as pt
from . import spectra
from .progress import progress
from .validation import check_choice, check_float, check_int


def analyze(model: nn.Module, *, layers=None, porter_thomas: bool = True, side: str = "left",
            seed: int = 0, samples: int = 50_000, C: float = 0.4, threshold_method: str = "auto",
            threshold_samples: int = es.NULL_SAMPLES, level_statistics: bool = False) -> pd.DataFrame:
    """Spectral summary of every analysable layer of `model` (METHODS §1-§3, §6).

    Linear, Conv (reshaped by METHODS §1) and Embedding (vocabulary x dimension) weights.
    Columns: layer, module (its class), shape (of the 2-D matrix), N, M, q; the two-stage
    MP fit (sigma, nu_min, nu_max, tw_margin, n_outliers, fraction_outliers) with its
    goodness of fit (mp_gof: KS distance of the bulk to the nearest MP law, mp_gof_threshold
    from simulated noise of the same shape, mp_gof_pvalue, mp_bulk_ok: False flags a bulk
    that is not MP, e.g. heavy-tailed entries); spectral early stopping (s_n, its
    `threshold` by `threshold_method` (default "auto": valid for the layer's shape),
    fires = s_n > threshold) and the spectrum type (LT/BT/HT/RC); with
    `porter_thomas=True` the PT information boundary (pt_boundary, pt_n_above,
    pt_fraction_above) of the `side` singular vectors. The default side is "left": the
    paper tests the output-side vectors (length = the layer's outputs), which are the left
    singular vectors of PyTorch's (out, in) weight (METHODS §1). With
    `level_statistics=True` the level-statistics summary of METHODS §8 joins the row
    (`rmtlib.level_statistics.summary`: the `ls_*` columns, e.g. KS distance of the
    unfolded spacings to GOE and to Poisson, Sigma^2(L) against GOE, the Hill drift).
    Layers too small for a statistic get NaN there and the reason in `note`.
    """
    if not isinstance(level_statistics, bool):
        raise TypeError(f"level_statistics must be True or False; got {level_statistics!r}")
    side = check_choice(side, "side", ("left", "right"))
    seed = check_int(seed, "seed", min=0)
    C = check_float(C, "C", min=0, min_open=True)
    threshold_method = check_choice(threshold_method, "threshold_method", es.METHODS)
    threshold_samples = check_int(threshold_samples, "threshold_samples", min=10)
    if threshold_method != "fixed":  # a calibrated threshold needs 1 / (1 - level) draws
        es._check_calibration_samples(threshold_samples, es.LEVEL)
    available = spectra.layers(model)
    if layers is not None:
        if isinstance(layers, str):
            layers = [layers]
        names = [n for n, _ in available]
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise ValueError(f"unknown layers {unknown}; valid layer names: {names}")
        available = [(n, m) for n, m in available if n in layers]
    rows = []
    for name, module in progress(available, desc="layers", leave=False):
        W = spectra.weight_matrix(module)
        info = spectra.shape_info(W)
        row = dict(layer=name, module=type(module).__name__, shape=(info["n"], info["m"]),
                   N=info["N"], M=info["M"], q=info["q"], note="")

        def note(err):
            row["note"] = (row["note"] + "; " if row["note"] else "") + str(err)

        try:
            dec = spectra.svd(W, method="gram")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", mp.MPFitWarning)  # reported in mp_bulk_ok
                fit = mp.fit(dec.S.cpu().numpy(), tuple(W.shape), seed=seed)
            row.update(sigma=fit.sigma, nu_min=fit.nu_min, nu_max=fit.nu_max, tw_margin=fit.tw_margin,
                       n_outliers=fit.n_outliers, fraction_outliers=fit.fraction_outliers,
                       mp_gof=fit.gof_distance, mp_gof_threshold=fit.gof_threshold,
                       mp_gof_pvalue=fit.gof_pvalue, mp_bulk_ok=fit.bulk_ok)
        except ValueError as err:
            note(err)
        try:
            s = es.spectral_distance(W)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", es.ThresholdWarning)
                t = es.threshold(info["M"], C, m=info["N"], method=threshold_method,
                                 samples=threshold_samples, seed=seed)
            row.update(s_n=s, threshold=t, fires=bool(s > t))
        except ValueError as err:
            note(err)
        try:
            row["type"] = es.spectrum_type(W)
        except ValueError as err:
            row["type"] = None
            note(err)
        if porter_thomas:
            try:
                res = pt.analyze(W, side=side, seed=seed, samples=samples)
                row.update(pt_boundary=res.boundary, pt_n_above=res.n_above,
                           pt_fraction_above=res.fraction_above)
            except ValueError as err:
                note(err)
        if level_statistics:
            try:
                row.update(ls.summary(W))
            except ValueError as err:
                note(err)
        rows.append(row)
    return pd.DataFrame(rows)

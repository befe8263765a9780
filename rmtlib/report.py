"""One call per model: a table with a row per layer (WeightWatcher's habit, better statistics)."""
from __future__ import annotations

import pandas as pd
from torch import nn

from . import marchenko_pastur as mp
from . import porter_thomas as pt
from . import spectra
from .progress import progress


def analyze(model: nn.Module, *, layers=None, porter_thomas: bool = True, side: str = "right",
            seed: int = 0, samples: int = 50_000) -> pd.DataFrame:
    """Spectral summary of every analysable layer of `model` (METHODS §1-§3).

    Columns: layer, type, shape (of the 2-D matrix, METHODS §1), N, M, q, the two-stage MP
    fit (sigma, nu_min, nu_max, n_outliers, fraction_outliers), and with
    `porter_thomas=True` the PT information boundary (pt_boundary, pt_n_above,
    pt_fraction_above) of the `side` singular vectors. Layers too small for a fit get NaN
    there and the reason in `note`.
    """
    available = spectra.layers(model)
    if layers is not None:
        names = [n for n, _ in available]
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise ValueError(f"unknown layers {unknown}; valid layer names: {names}")
        available = [(n, m) for n, m in available if n in layers]
    rows = []
    for name, module in progress(available, desc="layers", leave=False):
        W = spectra.weight_matrix(module)
        info = spectra.shape_info(W)
        row = dict(layer=name, type=type(module).__name__, shape=(info["n"], info["m"]),
                   N=info["N"], M=info["M"], q=info["q"], note="")
        try:
            dec = spectra.svd(W, method="gram")
            fit = mp.fit(dec.S.cpu().numpy(), tuple(W.shape))
            row.update(sigma=fit.sigma, nu_min=fit.nu_min, nu_max=fit.nu_max,
                       n_outliers=fit.n_outliers, fraction_outliers=fit.fraction_outliers)
        except (ValueError, RuntimeError) as err:
            row["note"] = str(err)
        if porter_thomas:
            try:
                res = pt.analyze(W, side=side, seed=seed, samples=samples)
                row.update(pt_boundary=res.boundary, pt_n_above=res.n_above,
                           pt_fraction_above=res.fraction_above)
            except ValueError as err:
                row["note"] = (row["note"] + "; " if row["note"] else "") + str(err)
        rows.append(row)
    return pd.DataFrame(rows)

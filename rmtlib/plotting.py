"""One figure style for the whole book; the same colour always means the same thing.

Colours follow Staats et al.: label noise 0% blue, 40% green, 100% brown, random
initialisation red. Other noise levels get fixed colours of their own.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

RANDOM_INIT = "#d62728"  # red
CONTROL = "0.55"         # grey: random-matrix control bands
NOISE_COLORS = {
    0.0: "#1f77b4",   # blue
    0.1: "#17becf",
    0.2: "#ff7f0e",   # orange
    0.3: "#bcbd22",
    0.4: "#2ca02c",   # green
    0.5: "#9467bd",
    0.6: "#e377c2",
    0.7: "#7f7f7f",
    0.8: "#393b79",
    1.0: "#8c564b",   # brown
}


def noise_color(noise: float) -> str:
    """Colour of a label-noise level (0..1); nearest listed level for other values."""
    key = min(NOISE_COLORS, key=lambda k: abs(k - float(noise)))
    return NOISE_COLORS[key]


def noise_label(noise: float, schedule: str = "regular") -> str:
    text = f"{round(100 * float(noise))}% noise"
    return text if schedule == "regular" else f"{text} ({schedule})"


def setup() -> None:
    """Apply the book's style (call once at the top of a chapter)."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95)
    plt.rcParams.update({
        "figure.figsize": (6.4, 4.0),
        "figure.dpi": 110,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "legend.frameon": False,
    })


def glue(name: str, value, display: bool = False):
    """`myst_nb.glue` when the book builds; a no-op elsewhere (Colab, plain Jupyter)."""
    import numpy as np

    if isinstance(value, np.generic):  # myst-nb formats plain Python numbers only
        value = value.item()
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return value
    _glue(name, value, display=display)
    return value


def plot_pvalues(ax, result, *, color, label, show_band: bool = True, show_boundary: bool = True):
    """Window-averaged PT p-values against singular value, with the band of randomness (METHODS §2).

    The band is the exact band of a window mean of uniform p-values for each position
    (narrower where the window is complete, wider at the ends where it is cut).
    """
    ax.plot(result.singular_values, result.smoothed, color=color, lw=1.2, label=label)
    if show_band:
        lower, upper = getattr(result, "lower", None), getattr(result, "upper", None)
        if lower is None or upper is None:
            ax.axhspan(*result.band, color=CONTROL, alpha=0.25, lw=0)
        else:
            ax.fill_between(result.singular_values, lower, upper, color=CONTROL, alpha=0.25, lw=0)
    if show_boundary and result.n_above > 0:
        ax.axvline(result.boundary, color=color, ls="--", lw=0.9)
    ax.set(xlabel="singular value $\\nu$", ylabel="averaged p-value", ylim=(-0.02, 1.0))
    return ax


def plot_mp_fit(ax, singular_values, fit, *, color="#1f77b4", label=None, bins: int = 80,
                show_edges: bool = True):
    """Histogram of a spectrum with its fitted MP bulk (scaled to the bulk's share) and edges."""
    import numpy as np

    sv = np.asarray(singular_values, dtype=float)
    ax.hist(sv, bins=bins, density=True, color=color, alpha=0.35, label=label)
    grid = np.linspace(0, sv.max() * 1.02, 800)
    bulk_share = 1 - fit.fraction_outliers
    ax.plot(grid, bulk_share * fit.density(grid), color="k", lw=1.3,
            label=f"MP fit ({fit.method}), $\\sigma$={fit.sigma:.3g}")
    if show_edges:
        for edge in (fit.nu_min, fit.nu_max):
            ax.axvline(edge, color="k", ls=":", lw=0.9)
    ax.set(xlabel="singular value $\\nu$", ylabel="density")
    return ax

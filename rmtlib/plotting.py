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


def glue(name: str, value, display: bool = False) -> None:
    """`myst_nb.glue` when the book builds; a no-op elsewhere (Colab, plain Jupyter).

    Returns None, so a `glue(...)` that ends a cell never echoes its value into the page.
    """
    import numpy as np

    if isinstance(value, np.generic):  # myst-nb formats plain Python numbers only
        value = value.item()
    try:
        from myst_nb import glue as _glue
    except ImportError:
        return None
    _glue(name, value, display=display)
    return None


def plot_pvalues(ax, result, *, color, label, show_band: bool = True, show_boundary: bool = True):
    """Window-averaged PT p-values against singular value, with the band of randomness.

    The band is the exact band of a window mean of uniform p-values for each position
    (narrower where the window is complete, wider at the ends where it is cut); see the
    Methods appendix.
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


# ---- presentation helpers for the book's pages -------------------------------------------

# Series that are not noise levels (the x axis already is one): the training schedule is
# told by the line (solid regular, dashed overfitting) and the colour shade, the filter
# variant by the marker fill (filled: shift + remove, open: remove only). Grey tones keep
# the noise colours free for noise.
SCHEDULE_SHADES = {"regular": "0.1", "overfitting": "0.5"}
SCHEDULE_LINES = {"regular": "-", "overfitting": "--"}
SCHEDULE_MARKERS = {"regular": "o", "overfitting": "^"}


def variant_style(schedule: str, shifted: bool) -> dict:
    """Line style of one (schedule, filter variant) series, distinct in shade, line and marker."""
    color = SCHEDULE_SHADES.get(schedule, "0.3")
    return dict(color=color, ls=SCHEDULE_LINES.get(schedule, "-."),
                marker=SCHEDULE_MARKERS.get(schedule, "s"), ms=6, mec=color,
                mfc=color if shifted else "white", mew=1.4)


def legend_right(ax, **kwargs):
    """Legend outside the axes, on the right: it never covers the data."""
    kwargs.setdefault("fontsize", 8)
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, **kwargs)


def legend_below(fig, axes=None, ncol=None, **kwargs):
    """One legend for a whole figure, centred below its panels (handles of all axes, no duplicates)."""
    axes = fig.axes if axes is None else list(getattr(axes, "flat", axes))
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels and not lab.startswith("_"):
                handles.append(h)
                labels.append(lab)
    kwargs.setdefault("fontsize", 8)
    return fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
                      ncol=ncol or min(len(labels), 4), **kwargs)


def table(df, *, percent=(), signed_percent=(), digits: int = 3, index: bool = True):
    """A DataFrame styled for a page: integer-valued columns as integers, NaN as a dash.

    `percent` columns (fractions) are shown as percentages, `signed_percent` with a sign;
    other float columns with `digits` decimals. Missing values never print as `nan` or
    `nan%`. Returns a pandas Styler (show it with `display(...)`).
    """
    import numpy as np
    import pandas as pd

    def is_int_col(col):
        s = df[col]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            return False
        values = s.dropna().to_numpy(dtype=float)
        return pd.api.types.is_integer_dtype(s) or (len(values) > 0 and np.all(values == np.round(values)))

    formats = {}
    for col in df.columns:
        if col in percent:
            formats[col] = "{:.1%}"
        elif col in signed_percent:
            formats[col] = "{:+.2%}"
        elif is_int_col(col):
            formats[col] = "{:.0f}"
        elif pd.api.types.is_float_dtype(df[col]):
            formats[col] = f"{{:.{digits}f}}"
    styler = df.style.format(formats, na_rep="\u2013")
    # index levels too: a float level such as the noise prints as 0.4, not 0.400000
    styler = styler.format_index(lambda v: f"{v:g}" if isinstance(v, (float, np.floating)) else v,
                                 axis="index")
    if not index:
        styler = styler.hide(axis="index")
    return styler


def layer_colors(n: int) -> list:
    """`n` grey-to-black shades for series that are layers (first layer lightest).

    Layers are not noise levels, so they do not borrow the noise colours.
    """
    import numpy as np

    return [plt.cm.Greys(x) for x in np.linspace(0.4, 0.95, max(int(n), 1))]

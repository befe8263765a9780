"""Progress bars: tqdm (widgets in Jupyter), switched off by RMTLIB_PROGRESS=0 or TQDM_DISABLE=1.

The book build and the test suite switch them off: a static page cannot show a live bar.
"""
from __future__ import annotations

import os


def enabled() -> bool:
    off = os.environ.get("RMTLIB_PROGRESS", "1") in ("0", "false", "no") or \
        os.environ.get("TQDM_DISABLE", "0") not in ("", "0", "false", "no")
    return not off


def progress(iterable=None, **kwargs):
    """`tqdm.auto.tqdm(iterable, **kwargs)`, disabled when progress bars are switched off."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not enabled())
    return tqdm(iterable, **kwargs)

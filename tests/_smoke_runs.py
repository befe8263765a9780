"""Chapters executed on the smoke profile once per test session.

Shared by tests/test_notebooks.py (each chapter runs without error) and
tests/test_book_browser.py (the executed chapters become the smoke book), so `make test`
executes every chapter once, not twice.
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ROOT / "_build" / "smoke" / "executed"
_done: dict[str, Path] = {}


def executed(stem: str) -> Path:
    """The executed copy of chapter `stem` (run now unless this session already ran it).

    MPLBACKEND is removed from the kernel's environment: with `MPLBACKEND=Agg` (set by the
    Makefile and the tests) `plt.show()` in a kernel draws nothing; without it the kernel
    uses its inline backend, as a reader's does, and the smoke book gets its figures.
    """
    if stem not in _done:
        from rmtlib import rerun

        saved = os.environ.pop("MPLBACKEND", None)
        try:
            [out] = rerun.run("smoke", [stem], out=EXECUTED, progress=False)
        finally:
            if saved is not None:
                os.environ["MPLBACKEND"] = saved
        _done[stem] = Path(out)
    return _done[stem]

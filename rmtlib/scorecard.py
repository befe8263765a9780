"""The reproduction scorecard: one claim of a paper, this run's value and a verdict.

Each chapter calls `claim` once per claim it checks. The call glues three strings
(`sc_<key>_paper`, `sc_<key>_value`, `sc_<key>_verdict`) that the chapter's own prose and
the book's scorecard page (`book/scorecard.md`) paste, so every number on the scorecard
comes from the chapter's computation. Outside a book build (Colab, plain Jupyter) the call
only returns the row.
"""
from __future__ import annotations

import re

from .plotting import glue

#: The four verdicts of the book. "not reproduced at this scale" and "contradicted" need a
#: reason (`why`): a result that disagrees with the paper is a finding to explain.
VERDICTS = ("reproduced", "partly reproduced", "not reproduced at this scale", "contradicted")
_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


def claim(key: str, *, paper: str, value: str, verdict: str, why: str = "") -> dict:
    """Record one claim: glue the paper's number, this run's number and the verdict.

    `paper` and `value` are display strings (format numbers in the notebook, e.g.
    ``f"{acc:.1%}"``); `verdict` is one of `VERDICTS`; `why` is required for every verdict
    but "reproduced" and is appended to the glued verdict after a colon.
    """
    if not isinstance(key, str):
        raise TypeError(f"claim key must be a string such as 'ls_universal'; got {type(key).__name__}")
    if not _KEY.match(key):
        raise ValueError(f"claim key must be lower-case letters, digits and '_' starting with a "
                         f"letter (it becomes the glue name sc_<key>_*); got {key!r}")
    for name, text in (("paper", paper), ("value", value), ("why", why)):
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a display string (format the number first, e.g. "
                            f"f'{{x:.1%}}'); got {type(text).__name__}")
    if not paper.strip() or not value.strip():
        raise ValueError(f"claim {key!r}: paper and value must not be empty")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}; got {verdict!r}")
    if verdict != "reproduced" and not why.strip():
        raise ValueError(f"claim {key!r}: a verdict of {verdict!r} needs its reason in `why`")
    shown = verdict if not why.strip() else f"{verdict}: {why.strip()}"
    row = {"key": key, "paper": paper, "value": value, "verdict": verdict, "why": why.strip()}
    glue(f"sc_{key}_paper", paper)
    glue(f"sc_{key}_value", value)
    glue(f"sc_{key}_verdict", shown)
    return row

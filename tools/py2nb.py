"""Turn a percent-format script (`# %%`, `# %% [markdown]`) into an output-free notebook.

Chapters are edited as .ipynb; this helper exists so that authors who prefer a plain
text editor can write a chapter as a script first:
    python tools/py2nb.py chapter.py notebooks/NN_name.ipynb
A cell header may carry tags: `# %% tags=["parameters"]`.
"""
import json
import re
import sys


def convert(text: str) -> dict:
    cells, kind, tags, lines = [], None, [], []

    def flush():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(l[2:] if l.startswith("# ") else l[1:] if l.startswith("#") else l
                             for l in body.split("\n"))
        src = [l + "\n" for l in body.split("\n")]
        if src:
            src[-1] = src[-1].rstrip("\n")
        cell = {"cell_type": kind, "metadata": {"tags": tags} if tags else {}, "source": src}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)

    for line in text.split("\n"):
        m = re.match(r"^# %%( \[markdown\])?(?: tags=(\[.*\]))?\s*$", line)
        if m:
            flush()
            kind = "markdown" if m.group(1) else "code"
            tags = json.loads(m.group(2)) if m.group(2) else []
            lines = []
        elif kind is not None:
            lines.append(line)
    flush()
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    nb = convert(open(src).read())
    for i, c in enumerate(nb["cells"]):
        c["id"] = f"c{i:03d}"
    with open(dst, "w") as fh:
        json.dump(nb, fh, indent=1)
        fh.write("\n")

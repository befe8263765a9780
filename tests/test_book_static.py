"""The book's sources follow its presentation rules (checked without building anything).

- No cell ends in a bare expression that Jupyter would echo into the page (a final
  `df` or a value prints `0.5651846082098277` under a
  figure). Allowed last lines: `display(...)`, `print(...)`, `plt.show()`, or any
  expression ending in `;`.
- `myst_nb.glue` is never called with `display=True`.
- Plotting cells are folded: a code cell that draws (`plt.subplots`, `ax.plot`, ...) and is
  not the parameters cell carries `hide-input` (or `hide-cell`).
- Readers have no METHODS.md: no page says "METHODS §"; the Methods appendix is linked instead.
- Every exercise has a solution, and the solutions come in the exercises' order.
- The repository URL is written in one place (_config.yml); the Colab install cells
  and the README use the same one.
- The static MathJax is configured (served from the build, no CDN needed).
"""
import ast
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
sys.path.insert(0, str(ROOT / "tools"))
from smoke_book import toc_files  # noqa: E402  (every page of _toc.yml, in order)


def source_path(stem):
    for ext in (".ipynb", ".md"):
        if (ROOT / (stem + ext)).exists():
            return ROOT / (stem + ext)
    raise FileNotFoundError(stem)


PAGES = [source_path(f) for f in toc_files()]
NOTEBOOKS = [p for p in PAGES if p.suffix == ".ipynb"]
# Chapters rewritten in parallel on other branches; the presentation rules are applied to
# them when they are merged. Remove a name from here once its chapter is fixed.
PENDING: set = set()


def pending(path):
    return pytest.param(path, id=path.stem, marks=pytest.mark.xfail(
        reason=f"{path.stem} is being rewritten on another branch; presentation rules not applied yet",
        strict=False)) if path.stem in PENDING else pytest.param(path, id=path.stem)


def cells(path):
    return json.loads(path.read_text())["cells"]


def source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def python_of(src):
    """Cell source with IPython magics and shell lines turned into `pass`."""
    return "\n".join(l[: len(l) - len(l.lstrip())] + "pass" if l.lstrip().startswith(("%", "!")) else l
                     for l in src.split("\n"))


ALLOWED_LAST = {"display", "print", "show", "glue"}  # rmtlib.plotting.glue returns None


def echoes(src):
    """The text of the final expression Jupyter would echo, or None."""
    tree = ast.parse(python_of(src))
    if not tree.body or not isinstance(tree.body[-1], ast.Expr):
        return None
    node = tree.body[-1]
    text = ast.get_source_segment(python_of(src), node)
    lines = python_of(src).split("\n")
    if lines[node.end_lineno - 1].rstrip().endswith(";"):
        return None
    if isinstance(node.value, ast.Call):
        f = node.value.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
        if name in ALLOWED_LAST:
            return None
    return text


def test_echo_detector_catches_and_allows():
    assert echoes("x = 1\nf('a', x)") == "f('a', x)"
    assert echoes("x = 1\nglue('a', x)") is None  # rmtlib.plotting.glue returns None
    assert echoes("x = 1\nx") == "x"
    assert echoes("glue('a', 1);") is None
    assert echoes("display(df)") is None
    assert echoes("fig, ax = plt.subplots()\nplt.show()") is None
    assert echoes("for i in range(3):\n    glue('a', i)") is None
    assert echoes("%pip install x\nimport sys") is None


@pytest.mark.parametrize("path", [pending(p) for p in NOTEBOOKS])
def test_no_cell_echoes_a_value(path):
    bad = [f"cell {i}: {e!r}" for i, c in enumerate(cells(path)) if c["cell_type"] == "code"
           for e in [echoes(source(c))] if e]
    assert not bad, f"{path.name}: cells end in a bare expression Jupyter would echo: {bad}"


@pytest.mark.parametrize("path", [pending(p) for p in NOTEBOOKS])
def test_glue_is_silent(path):
    bad = [i for i, c in enumerate(cells(path)) if c["cell_type"] == "code"
           and re.search(r"glue\([^)]*display\s*=\s*True", source(c))]
    assert not bad, f"{path.name}: glue(..., display=True) in cells {bad}"


DRAWS = re.compile(r"plt\.subplots|plt\.figure|\bax\.(plot|hist|bar|scatter|errorbar|imshow)|axes\[")


@pytest.mark.parametrize("path", [pending(p) for p in NOTEBOOKS])
def test_plotting_cells_are_folded(path):
    bad = []
    for i, c in enumerate(cells(path)):
        tags = set(c.get("metadata", {}).get("tags", []))
        if c["cell_type"] == "code" and DRAWS.search(source(c)) and not tags & {"hide-input", "hide-cell", "remove-input"}:
            bad.append(i)
    assert not bad, f"{path.name}: plotting cells {bad} are not tagged hide-input"


@pytest.mark.parametrize("path", [pending(p) for p in PAGES])
def test_no_reference_to_a_document_readers_do_not_have(path):
    text = path.read_text()
    assert not re.search(r"METHODS\s*(§|\.md)", text), (
        f"{path.name} refers to METHODS; link the Methods appendix instead, e.g. {{ref}}`methods-removal`")


def exercises_and_solutions(path):
    """(numbers of the exercises, numbers of the solutions in page order) of a page."""
    md = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "markdown") \
        if path.suffix == ".ipynb" else path.read_text()
    if "## Exercises" not in md:
        return [], []
    part = md.split("## Exercises", 1)[1]
    part = re.split(r"\n## ", part, maxsplit=1)[0]
    exercises = [int(n) for n in re.findall(r"^(\d+)\.\s", part, flags=re.M)]
    solutions = [int(n) for n in re.findall(r"Solution to (\d+)", part)]
    return exercises, solutions


@pytest.mark.parametrize("path", [pending(p) for p in NOTEBOOKS])
def test_every_exercise_has_a_solution_in_order(path):
    exercises, solutions = exercises_and_solutions(path)
    assert exercises, f"{path.name} has no exercises"
    assert solutions == exercises, f"{path.name}: exercises {exercises}, solutions in order {solutions}"


@pytest.mark.parametrize("path", [pending(p) for p in NOTEBOOKS])
def test_solutions_are_folded(path):
    md = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "markdown")
    for block in re.findall(r"```\{admonition\} Solution[^\n]*\n(.*?)```", md, flags=re.S):
        assert ":class: dropdown" in block, f"{path.name}: a solution is not folded (:class: dropdown)"


def test_repository_url_is_set_once_and_used_everywhere():
    url = CONFIG["repository"]["url"].rstrip("/")
    assert url.startswith("https://github.com/")
    for path in NOTEBOOKS:
        for c in cells(path):
            for found in re.findall(r"git\+(https://[^\s\"']+?)(?:\.git)?[\"'@\s]", source(c)):
                assert found == url, f"{path.name} installs from {found}, _config.yml says {url}"
    readme = (ROOT / "README.md").read_text()
    for found in re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", readme):
        assert found.removesuffix(".git") == url, f"README.md names {found}, _config.yml says {url}"


def test_mathjax_is_served_from_the_build():
    sphinx = CONFIG["sphinx"]["config"]
    path = sphinx.get("mathjax_path", "")
    assert path and not path.startswith(("http:", "https:", "//")), "mathjax_path must be relative (_static)"
    assert "_vendor" in sphinx.get("html_static_path", []), "_vendor (holding mathjax/) must be a static path"
    assert not (ROOT / "_static").exists(), "a root _static/ makes Jupyter Book load every .js in it"
    makefile = (ROOT / "Makefile").read_text()
    assert f"_vendor/{path}" in makefile, f"the Makefile must provide _vendor/{path}"


def test_build_is_strict():
    makefile = (ROOT / "Makefile").read_text()
    build_lines = [l for l in makefile.splitlines() if "jupyter-book build" in l or "book_build" in l]
    assert build_lines and all("-W" in l and "--keep-going" in l for l in build_lines
                               if "jupyter-book build" in l), build_lines


def test_environment_has_cpu_torch_and_jupyterlab():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(d.startswith("pytorch") for d in deps), "conda-forge pytorch (CPU build) expected"
    assert any("cpu" in d for d in deps if d.startswith("pytorch")), "pin the CPU build of pytorch"
    assert any(d.startswith("jupyterlab") for d in deps)
    assert not any("cuda" in d.lower() for d in deps), "no CUDA packages on Binder"


def test_methods_appendix_is_in_the_toc_and_labelled():
    assert "book/methods" in toc_files()
    text = (ROOT / "book" / "methods.md").read_text()
    labels = re.findall(r"^\(([\w-]+)\)=\s*$", text, flags=re.M)
    for needed in ("methods-pt-ks", "methods-pt-boundary", "methods-mp-fit", "methods-removal",
                   "methods-shift", "methods-filter", "methods-early-stopping"):
        assert needed in labels, f"book/methods.md lacks the label ({needed})="
    # every {ref} to a methods label on any page resolves to a label that exists
    for path in PAGES:
        for ref in re.findall(r"\{ref\}`(?:[^`<]*<)?(methods-[\w-]+)>?`", path.read_text()):
            assert ref in labels, f"{path.name} links ({ref}) which book/methods.md does not define"


def test_bibliography_parses():
    """A broken references.bib stops the whole build at its first step; say so directly."""
    pybtex = pytest.importorskip("pybtex.database")
    bib = pybtex.parse_file(str(ROOT / "book" / "references.bib"))
    assert len(bib.entries) >= 10


def display_math_glued_to_text(md: str) -> list[int]:
    """Lines where a $$ display block touches a line of text (MyST then pairs the dollars
    of the whole paragraph wrongly and MathJax shows raw LaTeX)."""
    lines, bad, inside = md.split("\n"), [], False
    for i, line in enumerate(lines):
        st = line.strip()
        if not inside and st.startswith("$$"):
            if i > 0 and lines[i - 1].strip():
                bad.append(i + 1)
            inside = not (st.endswith("$$") and len(st) > 4)
            if not inside and i + 1 < len(lines) and lines[i + 1].strip():
                bad.append(i + 1)
        elif inside and st.endswith("$$"):
            inside = False
            if i + 1 < len(lines) and lines[i + 1].strip():
                bad.append(i + 1)
    return bad


def test_display_math_detector():
    assert display_math_glued_to_text("text\n$$x$$\n\nmore") == [2]
    assert display_math_glued_to_text("text\n\n$$a\n+ b$$\nmore") == [4]
    assert display_math_glued_to_text("text\n\n$$x$$\n\nmore $y$") == []


@pytest.mark.parametrize("path", NOTEBOOKS + sorted((ROOT / "book").glob("*.md")), ids=lambda p: p.stem)
def test_display_math_stands_apart(path):
    md = [source(c) for c in cells(path) if c["cell_type"] == "markdown"] if path.suffix == ".ipynb" \
        else [path.read_text()]
    bad = [(k, lines) for k, text in enumerate(md) for lines in [display_math_glued_to_text(text)] if lines]
    assert not bad, f"{path.name}: $$ blocks need a blank line before and after (cell, lines): {bad}"

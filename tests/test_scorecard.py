"""The reproduction scorecard: `rmtlib.scorecard.claim` and the page `book/scorecard.md`.

- `claim` refuses what would make a bad row (a key that is not a glue name, numbers that
  were not formatted, an unknown verdict, a disagreement without its reason) before it
  glues anything, and glues the three display strings the page pastes.
- The page (static): every table row sits in a chapter section and has four cells; the
  paper, value and verdict cells are each exactly one cross-document glue reference
  (`{glue:text}`../notebooks/NN_name.ipynb::sc_<key>_<part>:s``) to a notebook of that
  chapter whose source calls `claim("<key>"`, so no number on the page is typed by hand;
  every claim a chapter makes has its row; every chapter section has at least one row.
- The page (executed, marker `notebooks`): in the smoke run of each chapter that the page
  references (tests/_smoke_runs.py, shared with the other notebook tests) every referenced
  glue name is present and every glued verdict starts with one of `scorecard.VERDICTS`.
"""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from rmtlib import scorecard

import _smoke_runs

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "book" / "scorecard.md"
HEADER = ["claim", "paper", "this build", "verdict"]
PARTS = ("paper", "value", "verdict")
# One cross-document glue reference. The trailing ":s" is required: without a format spec
# myst-nb's role reads everything after the first "::" as the key and finds nothing.
GLUE = re.compile(r"\{glue:text\}`\.\./notebooks/(?P<nb>\d\d_[A-Za-z0-9_]+)\.ipynb"
                  r"::sc_(?P<key>[a-z][a-z0-9_]*)_(?P<part>paper|value|verdict):s`")
SECTION = re.compile(r"^## Chapter (\d+)\b")
# Chapters whose section may still be empty (a chapter whose claims are not written yet);
# an empty section of a chapter listed here is an expected failure. None today.
PENDING_SECTIONS: set[int] = set()


# ---------------------------------------------------------------------------------------
# scorecard.claim

@pytest.fixture
def glued(monkeypatch):
    """What `claim` glues, recorded instead of sent to myst-nb."""
    calls = {}
    monkeypatch.setattr(scorecard, "glue", lambda name, value, display=False: calls.__setitem__(name, value))
    return calls


def test_claim_glues_the_three_display_strings(glued):
    row = scorecard.claim("ls_test", paper="0.74", value="0.71 ± 0.02", verdict="reproduced")
    assert glued == {"sc_ls_test_paper": "0.74", "sc_ls_test_value": "0.71 ± 0.02",
                     "sc_ls_test_verdict": "reproduced"}
    assert row == dict(key="ls_test", paper="0.74", value="0.71 ± 0.02", verdict="reproduced", why="")


def test_claim_appends_the_reason_to_the_verdict(glued):
    scorecard.claim("red_x", paper="71.61%", value="62.6%", verdict="not reproduced at this scale",
                    why="  a narrow network trained for one epoch \n")
    assert glued["sc_red_x_verdict"] == "not reproduced at this scale: a narrow network trained for one epoch"
    scorecard.claim("red_y", paper="a", value="b", verdict="reproduced", why="with the initialisation scale")
    assert glued["sc_red_y_verdict"] == "reproduced: with the initialisation scale"


@pytest.mark.parametrize("key", ["Ls_x", "1abc", "ls-x", "ls x", "", "_ls", "sc_ls_x_value:s"])
def test_claim_refuses_a_key_that_is_not_a_glue_name(key, glued):
    with pytest.raises(ValueError, match="key"):
        scorecard.claim(key, paper="a", value="b", verdict="reproduced")
    assert not glued


def test_claim_refuses_a_key_that_is_not_a_string(glued):
    with pytest.raises(TypeError, match="key"):
        scorecard.claim(3, paper="a", value="b", verdict="reproduced")
    assert not glued


@pytest.mark.parametrize("field", ["paper", "value", "why"])
@pytest.mark.parametrize("bad", [0.74, 3, None, ["0.74"]])
def test_claim_refuses_values_that_are_not_display_strings(field, bad, glued):
    kwargs = dict(paper="0.74", value="0.71", verdict="contradicted", why="because")
    kwargs[field] = bad
    with pytest.raises(TypeError, match=field):
        scorecard.claim("ls_x", **kwargs)
    assert not glued


def test_claim_refuses_an_empty_paper_or_value(glued):
    with pytest.raises(ValueError, match="empty"):
        scorecard.claim("ls_x", paper="  ", value="0.71", verdict="reproduced")
    with pytest.raises(ValueError, match="empty"):
        scorecard.claim("ls_x", paper="0.74", value="", verdict="reproduced")
    assert not glued


@pytest.mark.parametrize("verdict", ["partly", "Reproduced", "reproduced: yes", "not at this scale", "", None])
def test_claim_refuses_an_unknown_verdict(verdict, glued):
    with pytest.raises(ValueError, match="verdict must be one of"):
        scorecard.claim("ls_x", paper="a", value="b", verdict=verdict, why="a reason")
    assert not glued


@pytest.mark.parametrize("verdict", [v for v in scorecard.VERDICTS if v != "reproduced"])
@pytest.mark.parametrize("why", ["", "   \n"])
def test_claim_needs_a_reason_unless_reproduced(verdict, why, glued):
    with pytest.raises(ValueError, match="why"):
        scorecard.claim("ls_x", paper="a", value="b", verdict=verdict, why=why)
    assert not glued


def test_the_verdicts_are_the_books_four():
    assert scorecard.VERDICTS == ("reproduced", "partly reproduced", "not reproduced at this scale", "contradicted")


# ---------------------------------------------------------------------------------------
# the page, read without running anything

def parse_page(text: str) -> tuple[list[dict], list[str]]:
    """Chapter sections of the page with their table rows, and problems of layout.

    Each section: {"chapter": int, "title": str, "rows": [(line number, [cells])]}.
    A table is a run of lines starting with "|": a header row (HEADER), a separator, rows.
    """
    sections, problems = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := SECTION.match(line):
            sections.append(dict(chapter=int(m.group(1)), title=line[3:], rows=[]))
        if line.lstrip().startswith("|"):
            start = i
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append((i + 1, lines[i]))
                i += 1
            if not sections:
                problems.append(f"line {start + 1}: a table outside the chapter sections")
                continue
            head = _cells(block[0][1])
            if head != HEADER:
                problems.append(f"line {start + 1}: header {head}, expected {HEADER}")
            if len(block) < 2 or not re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|){4}", block[1][1].strip()):
                problems.append(f"line {start + 2}: no separator row |---|---|---|---| under the header")
            sections[-1]["rows"].extend((n, _cells(l)) for n, l in block[2:])
            continue
        i += 1
    return sections, problems


def _cells(line: str) -> list[str]:
    parts = line.strip().split("|")
    if len(parts) < 2 or parts[0].strip() or parts[-1].strip():
        return [line.strip()]  # not a well-formed row: reported as one cell
    return [c.strip() for c in parts[1:-1]]


def claimed_keys(notebook: Path) -> set[str]:
    """Keys of the `claim("<key>", ...)` calls in a notebook's code cells."""
    nb = json.loads(notebook.read_text())
    src = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    return set(re.findall(r"\bclaim\(\s*[\"']([a-z][a-z0-9_]*)[\"']", src))


def row_problems(number: int, chapter: int, cells: list[str], root: Path) -> tuple[list[str], tuple | None]:
    """What is wrong with one table row; and its (notebook stem, key) when it is right."""
    where = f"line {number}"
    if len(cells) != 4:
        return [f"{where}: {len(cells)} cells, a row has 4 (claim | paper | this build | verdict)"], None
    problems = []
    if not cells[0] or GLUE.search(cells[0]):
        problems.append(f"{where}: the first cell states the claim in words")
    refs = []
    for part, cell in zip(PARTS, cells[1:]):
        m = GLUE.fullmatch(cell)
        if re.search(r"\d", GLUE.sub("", cell)):
            problems.append(f"{where}: a number typed in the {part} cell ({cell!r}); paste the chapter's glue")
        if not m:
            problems.append(f"{where}: the {part} cell is not exactly one reference "
                            f"{{glue:text}}`../notebooks/NN_name.ipynb::sc_<key>_{part}:s` ({cell!r})")
            continue
        if m["part"] != part:
            problems.append(f"{where}: the {part} cell pastes sc_{m['key']}_{m['part']}")
        refs.append((m["nb"], m["key"]))
    if problems:
        return problems, None
    if len(set(refs)) != 1:
        return [f"{where}: the three cells paste different notebooks or keys: {sorted(set(refs))}"], None
    stem, key = refs[0]
    if int(stem[:2]) != chapter:
        problems.append(f"{where}: notebook {stem} in the section of chapter {chapter}")
    path = root / "notebooks" / f"{stem}.ipynb"
    if not path.is_file():
        problems.append(f"{where}: no notebook notebooks/{stem}.ipynb")
    elif key not in claimed_keys(path):
        problems.append(f"{where}: notebooks/{stem}.ipynb never calls claim(\"{key}\", ...)")
    return problems, (None if problems else (stem, key))


def page_problems(text: str, root: Path = ROOT) -> tuple[list[str], list[dict], list[tuple]]:
    """(problems, sections, references) of a scorecard page: every rule but 'a row per section'."""
    sections, problems = parse_page(text)
    refs = []
    for sec in sections:
        for number, cells in sec["rows"]:
            bad, ref = row_problems(number, sec["chapter"], cells, root)
            problems += bad
            if ref:
                refs.append(ref)
    dup = sorted({r for r in refs if refs.count(r) > 1})
    if dup:
        problems.append(f"claims with more than one row: {dup}")
    referenced = set(refs)
    for path in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for key in sorted(claimed_keys(path) - {k for s, k in referenced if s == path.stem}):
            problems.append(f"notebooks/{path.name} claims {key!r} but the page has no row for it")
    return problems, sections, refs


PAGE_TEXT = PAGE.read_text()
_, SECTIONS, REFS = page_problems(PAGE_TEXT)


def test_page_rows_are_pasted_from_the_chapters_claims():
    problems, _, _ = page_problems(PAGE_TEXT)
    assert not problems, "book/scorecard.md:\n  " + "\n  ".join(problems)


def test_page_has_a_section_for_every_chapter():
    chapters = sorted(int(p.name[:2]) for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert [s["chapter"] for s in SECTIONS] == chapters


@pytest.mark.parametrize("section", [
    pytest.param(s, id=f"chapter{s['chapter']}", marks=[pytest.mark.xfail(
        reason=f"chapter {s['chapter']}'s rows are added on another branch", strict=False)]
        if s["chapter"] in PENDING_SECTIONS else [])
    for s in SECTIONS])
def test_every_chapter_section_has_a_row(section):
    assert section["rows"], f"section {section['title']!r} of book/scorecard.md has no row"


def test_page_is_in_the_table_of_contents():
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    from smoke_book import toc_files

    assert "book/scorecard" in toc_files()


# the checker itself, on pages with known faults (it must be able to fail)

def _row(stem, key, parts=PARTS, claim="a claim (Fig. 1)"):
    return "| " + claim + " | " + " | ".join(
        f"{{glue:text}}`../notebooks/{stem}.ipynb::sc_{key}_{p}:s`" for p in parts) + " |"


def _page(*rows, chapter=6):
    return (f"# Scorecard\n\n## Chapter {chapter}: test\n\n| claim | paper | this build | verdict |\n"
            "|---|---|---|---|\n" + "\n".join(rows) + "\n")


@pytest.fixture
def fake_root(tmp_path):
    """A notebooks/ folder with one chapter that claims 'ls_fake' (and one other key)."""
    (tmp_path / "notebooks").mkdir()
    src = ['from rmtlib import scorecard\n', 'scorecard.claim("ls_fake", paper="a", value="b", verdict="reproduced")\n',
           'scorecard.claim(\n', '    "ls_other",\n', '    paper="a", value="b", verdict="reproduced")']
    nb = {"cells": [{"cell_type": "code", "source": src, "metadata": {}, "outputs": [], "execution_count": None},
                    {"cell_type": "markdown", "source": ['claim("ls_in_prose"', ')'], "metadata": {}}]}
    (tmp_path / "notebooks" / "06_fake.ipynb").write_text(json.dumps(nb))
    return tmp_path


def test_checker_accepts_good_rows(fake_root):
    problems, sections, refs = page_problems(_page(_row("06_fake", "ls_fake"), _row("06_fake", "ls_other")), fake_root)
    assert not problems
    assert refs == [("06_fake", "ls_fake"), ("06_fake", "ls_other")] and len(sections[0]["rows"]) == 2


@pytest.mark.parametrize("row, expected", [
    (_row("06_fake", "ls_fake").replace("| a claim (Fig. 1) ", ""), "3 cells"),
    (_row("06_fake", "ls_fake") + " extra |", "5 cells"),
    (_row("06_fake", "ls_fake").replace("::sc_ls_fake_value:s`", "::sc_ls_fake_value:s` (0.71)"), "number typed"),
    ("| a claim | 0.74 | {glue:text}`../notebooks/06_fake.ipynb::sc_ls_fake_value:s` | "
     "{glue:text}`../notebooks/06_fake.ipynb::sc_ls_fake_verdict:s` |", "number typed"),
    (_row("06_fake", "ls_fake").replace("_verdict:s`", "_verdict`"), "not exactly one reference"),
    (_row("06_fake", "ls_fake").replace("{glue:text}`../notebooks/06_fake.ipynb::sc_ls_fake_verdict:s`",
                                        "reproduced"), "not exactly one reference"),
    (_row("06_fake", "ls_fake", parts=("paper", "verdict", "value")), "pastes sc_ls_fake_verdict"),
    (_row("06_fake", "ls_fake").replace("sc_ls_fake_verdict", "sc_ls_other_verdict"), "different notebooks or keys"),
    (_row("06_fake", "ls_missing"), 'never calls claim("ls_missing"'),
    (_row("06_fake", "ls_in_prose"), 'never calls claim("ls_in_prose"'),  # markdown is not a call
    (_row("06_nothere", "ls_fake"), "no notebook notebooks/06_nothere.ipynb"),
    (_row("06_fake", "ls_fake", claim=""), "states the claim in words"),
])
def test_checker_finds_a_bad_row(row, expected, fake_root):
    problems, _, _ = page_problems(_page(row, _row("06_fake", "ls_other")), fake_root)
    assert any(expected in p for p in problems), problems


def test_checker_finds_misplaced_duplicated_and_missing_rows(fake_root):
    problems, _, _ = page_problems(_page(_row("06_fake", "ls_fake"), _row("06_fake", "ls_other"), chapter=7),
                                   fake_root)
    assert any("notebook 06_fake in the section of chapter 7" in p for p in problems)
    problems, _, _ = page_problems(_page(_row("06_fake", "ls_fake"), _row("06_fake", "ls_fake")), fake_root)
    assert any("more than one row" in p for p in problems)
    assert any("claims 'ls_other' but the page has no row" in p for p in problems)
    problems, _, _ = page_problems("| claim | paper | this build | verdict |\n|---|---|---|---|\n"
                                   + _page(_row("06_fake", "ls_fake"), _row("06_fake", "ls_other")), fake_root)
    assert any("outside the chapter sections" in p for p in problems)
    problems, _, _ = page_problems(_page(_row("06_fake", "ls_fake"), _row("06_fake", "ls_other"))
                                   .replace("|---|---|---|---|", "|---|---|"), fake_root)
    assert any("separator" in p for p in problems)


def test_checker_sees_an_empty_section(fake_root):
    _, sections, _ = page_problems(_page(), fake_root)
    assert sections == [dict(chapter=6, title="Chapter 6: test", rows=[])]


# ---------------------------------------------------------------------------------------
# the page against the executed chapters

def glue_values(executed: Path) -> dict[str, str]:
    """Glue name -> the value a page pastes (text/plain read as myst-nb reads it)."""
    nb = json.loads(executed.read_text())
    out = {}
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            meta = o.get("metadata", {}).get("scrapbook")
            if not meta:
                continue
            text = o.get("data", {}).get(meta.get("mime_prefix", "") + "text/plain")
            if text is None:
                continue
            text = "".join(text) if isinstance(text, list) else text
            try:  # myst-nb's format_plain_text: literal_eval removes the quotes of a str
                value = ast.literal_eval(text)
            except (SyntaxError, ValueError):
                value = text
            out[meta["name"]] = str(value)
    return out


def verdict_problems(values: dict[str, str], keys) -> list[str]:
    problems = []
    for key in sorted(keys):
        missing = [p for p in PARTS if f"sc_{key}_{p}" not in values]
        if missing:
            problems.append(f"{key}: no glue sc_{key}_{'/'.join(missing)} in the executed chapter")
            continue
        for p in ("paper", "value"):
            if not values[f"sc_{key}_{p}"].strip():
                problems.append(f"{key}: empty {p}")
        shown = values[f"sc_{key}_verdict"]
        if not any(shown == v or shown.startswith(v + ": ") for v in scorecard.VERDICTS):
            problems.append(f"{key}: verdict {shown!r} does not start with one of {scorecard.VERDICTS}")
    return problems


def test_verdict_checker_can_fail():
    good = {"sc_a_paper": "x", "sc_a_value": "y", "sc_a_verdict": "partly reproduced: one of two"}
    assert verdict_problems(good, ["a"]) == []
    assert verdict_problems({**good, "sc_a_verdict": "partly: one of two"}, ["a"])
    assert verdict_problems({**good, "sc_a_verdict": "reproducedish"}, ["a"])
    assert verdict_problems({**good, "sc_a_value": " "}, ["a"])
    assert "no glue sc_b_paper/value/verdict" in verdict_problems(good, ["a", "b"])[0]


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted({s for s, _ in REFS}))
def test_every_row_is_filled_by_the_executed_chapter(stem):
    values = glue_values(_smoke_runs.executed(stem))  # shared with the other notebook tests
    problems = verdict_problems(values, {k for s, k in REFS if s == stem})
    assert not problems, f"{stem} on the smoke profile:\n  " + "\n  ".join(problems)

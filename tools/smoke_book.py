"""Build the whole book on the smoke profile into its own folder (for `make test`).

    python tools/smoke_book.py [--out _build/smoke] [--executed runs/smoke] [--no-run]

1. Every notebook that _toc.yml lists is executed with the smoke profile
   (`rmtlib.rerun`, seconds per chapter) into `--executed`.
2. A copy of the book's sources is staged in `<out>/src`: _config.yml with execution
   switched off, _toc.yml, book/, _vendor/ (MathJax), and the executed notebooks in
   place of the committed (output-free) ones.
3. `jupyter-book build` runs on the copy, strictly (-W --keep-going: every Sphinx
   warning is reported and fails the build), into `<out>/_build/html`.

The committed notebooks and the real book's cache are never touched. Exit status: that
of the build (0 when it had no warning); the warnings are also written to
`<out>/warnings.txt`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def toc_files(root: Path = ROOT) -> list[str]:
    """Every page of _toc.yml in order (root first), as paths without suffix."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))
            walk(entry.get("chapters"))

    for part in toc.get("parts", []) or []:
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def toc_notebooks(root: Path = ROOT) -> list[str]:
    """Stems of the notebooks that _toc.yml lists (e.g. '00_model_zoo')."""
    return [Path(f).name for f in toc_files(root) if (root / f"{f}.ipynb").is_file()]


def execute(stems, executed: Path) -> float:
    """Run the listed chapters on the smoke profile; returns the seconds it took.

    MPLBACKEND is removed from the kernel's environment: with `MPLBACKEND=Agg` (set by the
    Makefile and the tests) `plt.show()` in a kernel draws nothing and the pages would
    have no figures; without it the kernel uses its inline backend, as a reader's does.
    """
    from rmtlib import rerun

    saved = os.environ.pop("MPLBACKEND", None)
    start = time.perf_counter()
    try:
        rerun.run("smoke", stems, out=executed, progress=False)
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved
    return time.perf_counter() - start


def _fold_injected_parameters(path: Path) -> None:
    """Fold the cell papermill injects (the smoke profile's values) like the parameters cell."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            cell["metadata"]["tags"] = tags + ["hide-cell"]
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False))


def missing_figures(path: Path) -> list[int]:
    """Code cells of an executed notebook that call plt.show() at top level but hold no image."""
    nb = json.loads(Path(path).read_text())
    bad = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        if re.search(r"^plt\.show\(\)", src, flags=re.M):
            if not any("image/png" in o.get("data", {}) or "image/svg+xml" in o.get("data", {})
                       for o in cell.get("outputs", [])):
                bad.append(i)
    return bad


def stage(out: Path, executed: Path, root: Path = ROOT) -> Path:
    """Copy the sources into out/src with the executed notebooks and execution off."""
    src = out / "src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    config = yaml.safe_load((root / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (src / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy2(root / "_toc.yml", src / "_toc.yml")
    shutil.copytree(root / "book", src / "book")
    if (root / "_vendor").is_dir():
        shutil.copytree(root / "_vendor", src / "_vendor")
    for f in toc_files(root):
        path = root / f
        if path.with_suffix(".ipynb").is_file():
            done = executed / f"{path.name}.ipynb"
            if not done.is_file():
                raise FileNotFoundError(f"{done} was not executed; run without --no-run")
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(done, src / f"{f}.ipynb")
            _fold_injected_parameters(src / f"{f}.ipynb")
        elif path.with_suffix(".md").is_file() and not (src / f"{f}.md").exists():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path.with_suffix(".md"), src / f"{f}.md")
    return src


def build(src: Path, out: Path) -> tuple[int, list[str], float]:
    """Strict jupyter-book build of the staged copy; (exit status, warnings, seconds)."""
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(src), "--path-output", str(out),
           "--builder", "html", "-W", "--keep-going", "--all"]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    (out / "build.log").write_text(log)
    warnings = [l for l in log.splitlines() if re.search(r"(WARNING|ERROR|CRITICAL):", l)]
    (out / "warnings.txt").write_text("\n".join(warnings) + ("\n" if warnings else ""))
    return proc.returncode, warnings, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "_build" / "smoke"))
    parser.add_argument("--executed", default=str(ROOT / "runs" / "smoke"))
    parser.add_argument("--no-run", action="store_true", help="reuse the executed notebooks")
    args = parser.parse_args(argv)
    out, executed = Path(args.out).resolve(), Path(args.executed).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stems = toc_notebooks()
    t_run = 0.0 if args.no_run else execute(stems, executed)
    src = stage(out, executed)
    rc, warnings, t_build = build(src, out)
    print(f"smoke book: {len(stems)} notebooks executed in {t_run:.0f} s, built in {t_build:.0f} s "
          f"-> {out / '_build' / 'html'}")
    for w in warnings:
        print(w)
    if rc:
        print(f"the strict build failed (exit status {rc}, {len(warnings)} warnings); see {out / 'build.log'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())

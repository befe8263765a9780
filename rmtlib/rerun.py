"""Run the chapters with papermill under a parameter profile (smoke, cpu, paper).

`python -m rmtlib.rerun --profile paper` executes every notebook with the profile's
parameters into a git-ignored folder `runs/<profile>/` and prints where they are.
A profile is a YAML file `params/<profile>.yaml`: a mapping from a notebook's stem
(e.g. `00_model_zoo`) to the parameters it overrides; the key `all` applies to every
notebook that declares the parameter.

Exit codes of the command line: 0 done, 2 a usage error (bad profile, notebook,
--set value), 3 a chapter failed (the message names the chapter, the cell and the
exception; the executed notebook or log beside it has the traceback).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

from ._io import project_root

EXIT_USAGE = 2
EXIT_NOTEBOOK_FAILED = 3


class NotebookError(RuntimeError):
    """A chapter raised an exception: which chapter, which cell, which exception."""

    def __init__(self, chapter: str, cell: int, first_line: str, error: str, output: Path | None = None):
        self.chapter, self.cell, self.first_line, self.error, self.output = chapter, cell, first_line, error, output
        where = f"; the traceback is in {output}" if output is not None else ""
        super().__init__(f"chapter {chapter} failed in cell {cell} (`{first_line}`): {error}{where}")


def _first_line(source: str) -> str:
    lines = [l.strip() for l in source.splitlines() if l.strip() and not l.strip().startswith("#")]
    line = lines[0] if lines else source.strip()
    return line if len(line) <= 80 else line[:77] + "..."


def _cell_index(notebook: Path, source: str, fallback: int) -> int:
    """Index of the cell with this source in the committed notebook (papermill adds one)."""
    nb = json.loads(Path(notebook).read_text())
    for i, cell in enumerate(nb["cells"]):
        if "".join(cell.get("source", [])).strip() == (source or "").strip():
            return i
    return fallback


def _root(root=None) -> Path:
    r = Path(root) if root is not None else project_root()
    if r is None or not (r / "notebooks").is_dir():
        raise FileNotFoundError(
            "the notebooks and params/ folders were not found; run from a clone of the "
            "book's repository (or pass root=)"
        )
    return r


def profiles(root=None) -> list[str]:
    """Names of the available profiles (files params/*.yaml)."""
    return sorted(p.stem for p in (_root(root) / "params").glob("*.yaml"))


def notebooks(root=None) -> list[Path]:
    """The chapter notebooks, in order."""
    return sorted((_root(root) / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def notebook_parameters(path: Path) -> dict:
    """Names and default values of the `parameters` cell of a notebook (plain literals)."""
    import ast

    nb = json.loads(Path(path).read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            tree = ast.parse("".join(cell["source"]))
            out = {}
            for node in tree.body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    out[node.targets[0].id] = ast.literal_eval(node.value)
            return out
    raise ValueError(f"{path} has no cell tagged 'parameters'")


def profile_parameters(profile: str, notebook: Path, root=None) -> dict:
    """Parameters the profile sets for one notebook (only names the notebook declares)."""
    names = profiles(root)
    if profile not in names:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(names)}")
    spec = yaml.safe_load((_root(root) / "params" / f"{profile}.yaml").read_text()) or {}
    declared = notebook_parameters(notebook)
    merged = {**(spec.get("all") or {}), **(spec.get(Path(notebook).stem) or {})}
    unknown = set(spec.get(Path(notebook).stem) or {}) - set(declared)
    if unknown:
        raise ValueError(f"profile {profile!r} sets {sorted(unknown)} which {Path(notebook).name} does not declare")
    return {k: v for k, v in merged.items() if k in declared}


def execute_plain(notebook: Path, parameters: dict, dest: Path) -> None:
    """Run a notebook's code cells in this Python process, without Jupyter (papermill-free).

    For machines that have PyTorch but no Jupyter stack (a bare GPU box): the parameters
    cell runs first, then the given parameters, then the other cells in order. IPython
    magics (`%pip ...`) are skipped; figures go to files next to `dest`. Writes the cells
    and their printed output to `dest` as plain text.
    """
    import contextlib
    import io
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nb = json.loads(Path(notebook).read_text())
    ns = {"__name__": "__main__", "display": print}
    log = io.StringIO()
    cwd = os.getcwd()
    os.chdir(Path(notebook).parent)
    figures = 0
    try:
        for index, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            original = "".join(cell["source"])
            src = "\n".join(l[: len(l) - len(l.lstrip())] + "pass" if l.lstrip().startswith(("%", "!")) else l
                            for l in original.split("\n"))
            buf = io.StringIO()
            try:
                with contextlib.redirect_stdout(buf):
                    exec(compile(src, f"<{Path(notebook).name} cell {index}>", "exec"), ns)
            except Exception as err:
                import traceback

                log.write(f"# ---- cell {index}\n{src}\n# ---- output\n{buf.getvalue()}\n"
                          f"# ---- error\n{traceback.format_exc()}\n")
                raise NotebookError(Path(notebook).stem, index, _first_line(original),
                                    f"{type(err).__name__}: {err}", dest) from err
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                ns.update(parameters)
            for num in plt.get_fignums():
                figures += 1
                plt.figure(num).savefig(dest.with_name(f"{dest.stem}_fig{figures}.png"), dpi=80)
            plt.close("all")
            log.write(f"# ---- cell\n{src}\n# ---- output\n{buf.getvalue()}\n")
            dest.write_text(log.getvalue())  # as it goes: a long run shows its progress
    finally:
        os.chdir(cwd)
        dest.write_text(log.getvalue())


def run(profile: str, selection=None, out=None, root=None, kernel: str = "python3",
        progress: bool = True, engine: str = "papermill", overrides: dict | None = None) -> list[Path]:
    """Execute the selected notebooks (stems or number prefixes; default all) under `profile`.

    engine="papermill" writes executed notebooks; engine="plain" runs the code without
    Jupyter (see `execute_plain`). `overrides` set parameters on top of the profile.
    """
    if engine not in ("papermill", "plain"):
        raise ValueError(f"engine must be 'papermill' or 'plain'; got {engine!r}")
    r = _root(root)
    books = notebooks(r)
    if selection:
        chosen = [nb for nb in books if any(nb.stem == s or nb.stem.startswith(f"{s}_") for s in selection)]
        missing = [s for s in selection if not any(nb.stem == s or nb.stem.startswith(f"{s}_") for nb in books)]
        if missing:
            raise ValueError(f"no notebook matches {missing}; available: {[nb.stem for nb in books]}")
        books = chosen
    overrides = dict(overrides or {})
    declared = {nb: notebook_parameters(nb) for nb in books}
    unused = [k for k in overrides if not any(k in d for d in declared.values())]
    if unused:
        raise ValueError(f"no selected notebook declares {unused}; see their parameters cells")
    params = {nb: {**profile_parameters(profile, nb, r), **{k: v for k, v in overrides.items() if k in declared[nb]}}
              for nb in books}  # everything is validated before the first notebook runs
    target = Path(out) if out is not None else r / "runs" / profile
    target.mkdir(parents=True, exist_ok=True)
    written = []
    # the chapters can name the profile they ran under (rmtlib.records writes it into a record)
    saved_profile = os.environ.get("RMTLIB_PROFILE")
    os.environ["RMTLIB_PROFILE"] = profile
    # The caller's MPLBACKEND must not reach the kernels: with MPLBACKEND=Agg (set by the
    # Makefile, the tests, many CI and headless shells) `plt.show()` in a kernel draws
    # nothing and the executed chapters have no figures. Without it ipykernel picks its
    # inline backend, as a reader's kernel does. (The plain engine sets Agg itself and
    # saves every open figure to a file after each cell.)
    saved_backend = os.environ.pop("MPLBACKEND", None)
    try:
        for nb, p in params.items():
            written.append(_run_one(nb, p, profile, target, engine, kernel, progress))
    finally:
        if saved_profile is None:
            os.environ.pop("RMTLIB_PROFILE", None)
        else:
            os.environ["RMTLIB_PROFILE"] = saved_profile
        if saved_backend is not None:
            os.environ["MPLBACKEND"] = saved_backend
    return written


def _run_one(nb: Path, p: dict, profile: str, target: Path, engine: str, kernel: str, progress: bool) -> Path:
    """Execute one notebook `nb` with parameters `p` into `target`; the output's path."""
    dest = target / (nb.name if engine == "papermill" else f"{nb.stem}.txt")
    print(f"[{profile}] {nb.name} -> {dest}", flush=True)
    if engine == "papermill":
        import papermill as pm

        try:
            pm.execute_notebook(str(nb), str(dest), parameters=p, kernel_name=kernel,
                                cwd=str(nb.parent), progress_bar=progress, log_output=False)
        except pm.PapermillExecutionError as err:
            raise NotebookError(nb.stem, _cell_index(nb, err.source, err.cell_index),
                                _first_line(err.source or ""), f"{err.ename}: {err.evalue}", dest) from err
    else:
        execute_plain(nb, p, dest)
    return dest


def _parse_set(items) -> dict:
    """{name: value} from `--set NAME=YAML` items; ValueError with a one-line reason."""
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"--set needs NAME=VALUE with NAME a parameter name; got {item!r}")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            reason = " ".join(str(getattr(err, "problem", None) or err).split())
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({reason}); quote it "
                             "and close brackets, e.g. --set 'seeds=[0, 1]' or --set name=text") from None
    return overrides


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rmtlib.rerun", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="smoke | cpu | paper (files in params/)")
    parser.add_argument("--notebooks", nargs="*", help="stems or number prefixes, e.g. 00 03")
    parser.add_argument("--out", default=None, help="output folder (default runs/<profile>)")
    parser.add_argument("--engine", default="papermill", choices=("papermill", "plain"),
                        help="plain: run the code without Jupyter (a bare GPU machine)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=YAML",
                        help="override a parameter, e.g. --set dataset=fashion-mnist --set 'seeds=[0, 1]'")
    args = parser.parse_args(argv)
    try:
        overrides = _parse_set(args.set)
        written = run(args.profile, args.notebooks, args.out, engine=args.engine, overrides=overrides)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except NotebookError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_NOTEBOOK_FAILED
    print("\nExecuted notebooks:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

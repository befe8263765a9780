"""Run the chapters with papermill under a parameter profile (smoke, cpu, paper).

`python -m rmtlib.rerun --profile paper` executes every notebook with the profile's
parameters into a git-ignored folder `runs/<profile>/` and prints where they are.
A profile is a YAML file `params/<profile>.yaml`: a mapping from a notebook's stem
(e.g. `00_model_zoo`) to the parameters it overrides; the key `all` applies to every
notebook that declares the parameter.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from ._io import project_root


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


def run(profile: str, selection=None, out=None, root=None, kernel: str = "python3",
        progress: bool = True) -> list[Path]:
    """Execute the selected notebooks (stems or number prefixes; default all) under `profile`."""
    import papermill as pm

    r = _root(root)
    books = notebooks(r)
    if selection:
        chosen = [nb for nb in books if any(nb.stem == s or nb.stem.startswith(f"{s}_") for s in selection)]
        missing = [s for s in selection if not any(nb.stem == s or nb.stem.startswith(f"{s}_") for nb in books)]
        if missing:
            raise ValueError(f"no notebook matches {missing}; available: {[nb.stem for nb in books]}")
        books = chosen
    params = {nb: profile_parameters(profile, nb, r) for nb in books}  # validate all first
    target = Path(out) if out is not None else r / "runs" / profile
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for nb, p in params.items():
        dest = target / nb.name
        print(f"[{profile}] {nb.name} -> {dest}", flush=True)
        pm.execute_notebook(str(nb), str(dest), parameters=p, kernel_name=kernel,
                            cwd=str(nb.parent), progress_bar=progress, log_output=False)
        written.append(dest)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rmtlib.rerun", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", help="smoke | cpu | paper (files in params/)")
    parser.add_argument("--notebooks", nargs="*", help="stems or number prefixes, e.g. 00 03")
    parser.add_argument("--out", default=None, help="output folder (default runs/<profile>)")
    args = parser.parse_args(argv)
    try:
        written = run(args.profile, args.notebooks, args.out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\nExecuted notebooks:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Mutation testing of rmtlib, module by module (issue 17; `make mutation`, TESTING.md).

mutmut 3 reads one configuration (pyproject.toml [tool.mutmut]) for the whole tree. To run
each core module against ITS fast tests only (the whole fast suite per mutant would take
hours on a 2-core machine), every module gets its own scratch copy of the tree under
.cache/mutation/<module>/ with a [tool.mutmut] section narrowed to that module and its test
files. Every run starts from fresh mutants: mutmut 3 keeps a mutant's old result when only
the tests changed, so a kept folder would report killed mutants as survivors.

    python tools/mutation.py [MODULE ...] [--max-children 2]
    python tools/mutation.py MODULE --survivors   # rerun only the last whole run's survivors
    python tools/mutation.py MODULE --survivors --only 'rmtlib.MODULE.x__main*'   # some of them
    python tools/mutation.py MODULE --resume      # finish a whole run that was stopped

`--resume` continues a whole run that was interrupted (a session's end, a reboot): mutmut keeps
every verdict it reached in the scratch folder, and the scratch copy of the module and its tests
is left exactly as the run started with, so the finished run is the run that was started. Its
wall time is the sum of the parts.

`--survivors` is the cheap way to score new tests: it reruns only the mutants that survived
the module's last whole-module run or had no test (read from summary.json) and adds the newly killed ones to
that run's killed count. That is sound only while the module's source is the one the whole run
mutated (mutant names are numbered from the source; the run's sha256 is checked) and tests were
only added, never weakened; after any change to the module, run it whole again.

Prints, per module, killed / survived / other mutants and the wall time, and writes them to
.cache/mutation/summary.json. `mutmut results` / `mutmut show NAME` inside a module's scratch
folder list and show the survivors.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".cache" / "mutation"
MARKERS = "not notebooks and not slow and not browser"

# The core modules of issue 17, in order of priority, and the test files that exercise
# each one (its own test_<module>*.py files are always included).
MODULES = {
    "porter_thomas": ["test_properties_pt.py", "test_pt_paper_rule.py", "test_input_door_pt.py",
                      "test_trust.py"],
    "marchenko_pastur": ["test_properties_mp.py", "test_usvt.py", "test_early_stopping.py"],
    "filtering": ["test_input_door_pt.py", "test_properties_pt.py", "test_ensemble.py"],
    "early_stopping": ["test_properties_mp.py"],
    "spectra": [],
    "data": ["test_trust.py", "test_train_mutants.py"],
    "train": [],
    "ensemble": [],
    "level_statistics": [],
    "redundancy": [],
    "validation": ["test_input_door_pt.py"],
    "transformers": [],
}


def test_files(module: str) -> list[str]:
    own = sorted(p.name for p in (ROOT / "tests").glob(f"test_{module}*.py"))
    return sorted(set(own) | set(MODULES[module]))


def _toml_list(items) -> str:
    return "[" + ", ".join(json.dumps(str(i)) for i in items) + "]"


def prepare(module: str) -> Path:
    """Scratch tree for one module: rmtlib/, tests/ and a pyproject.toml narrowed to it."""
    work = WORK / module
    work.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "mutants", ignore_errors=True)  # stale results survive test-only changes
    (work / "walls.txt").unlink(missing_ok=True)  # the wall time of each part of one run
    (work / "part_started.txt").unlink(missing_ok=True)
    for sub in ("rmtlib", "tests"):
        if (work / sub).exists():
            shutil.rmtree(work / sub)
        shutil.copytree(ROOT / sub, work / sub, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    text = (ROOT / "pyproject.toml").read_text()
    head, _, _ = text.partition("[tool.mutmut]")
    files = [f"tests/{f}" for f in test_files(module)]
    text = head + "[tool.mutmut]\n" + "\n".join([
        'source_paths = ["rmtlib/"]',
        f'only_mutate = ["rmtlib/{module}.py"]',
        f"pytest_add_cli_args_test_selection = {_toml_list(files + ['-m', MARKERS])}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
        'process_isolation = "forkserver"',  # torch's threads deadlock workers forked from the main process
        "",
    ])
    (work / "pyproject.toml").write_text(text)
    return work


def mutmut(work: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("mutmut")
    # one thread per worker: two workers share two cores, and no thread pool outlives a fork
    env = dict(os.environ, TQDM_DISABLE="1", MPLBACKEND="Agg", PYTHONHASHSEED="0", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)  # the mutated copy must be the rmtlib that tests import
    return subprocess.run([str(exe), *args], cwd=work, env=env, text=True, capture_output=True,
                          check=check)


def _exit_codes(work: Path, module: str) -> dict:
    meta = work / "mutants" / "rmtlib" / f"{module}.py.meta"
    return json.loads(meta.read_text())["exit_code_by_key"] if meta.exists() else {}


def sample(work: Path, module: str, n: int, seed: int) -> list[str]:
    """A seeded random sample of n of the module's mutants (generated first if need be)."""
    import random

    if not _exit_codes(work, module):
        mutmut(work, "run", f"rmtlib.{module}.no_such_mutant*", check=False)  # generates, runs none
    names = sorted(_exit_codes(work, module))
    return sorted(random.Random(seed).sample(names, min(n, len(names))))


def score(work: Path, names=()) -> dict:
    module = next((work / "mutants" / "rmtlib").glob("*.meta")).name.split(".")[0] if not names else \
        names[0].split(".")[1]
    codes = _exit_codes(work, module)
    if names:
        codes = {k: codes[k] for k in names}
    from mutmut.stats import status_by_exit_code  # mutmut's own reading of its exit codes

    kinds = {"killed": 0, "survived": 0, "timeout": 0, "no_tests": 0, "not_run": 0, "other": 0}
    for code in codes.values():
        status = status_by_exit_code[code]
        kind = {"killed": "killed", "survived": "survived", "timeout": "timeout", "no tests": "no_tests",
                "not checked": "not_run", "check was interrupted by user": "not_run"}.get(status, "other")
        kinds[kind] += 1
    survivors = sorted(k for k, c in codes.items() if c == 0)
    untested = sorted(k for k, c in codes.items() if status_by_exit_code[c] == "no tests")
    return {"total": len(codes), **kinds, "survivor_names": survivors, "no_tests_names": untested,
            "sampled": bool(names)}


def source_sha256(module: str, root: Path = ROOT) -> str:
    return hashlib.sha256((root / "rmtlib" / f"{module}.py").read_bytes()).hexdigest()


def previous_survivors(summary: dict, module: str) -> tuple[dict, list[str]]:
    """The last whole-module run of `module` and its survivors, if --survivors may reuse it."""
    prev = summary.get(module)
    if not prev or prev.get("sampled"):
        raise SystemExit(f"--survivors: no whole-module run of {module} in {WORK / 'summary.json'}; "
                         f"run `python tools/mutation.py {module}` first")
    if prev.get("source_sha256") != source_sha256(module):
        raise SystemExit(f"--survivors: rmtlib/{module}.py is not the source of its last whole run "
                         f"(sha256 differs or was not recorded); run the module whole again")
    return prev, list(prev["survivor_names"]) + list(prev.get("no_tests_names", []))


def merge_rerun(prev: dict, rerun: dict, names: list[str]) -> dict:
    """The whole run `prev` with the fates of the rerun mutants `names` from `rerun`.

    `names` are survivors or untested mutants of `prev` (all of them, or those --only picked).
    Every other mutant keeps its earlier status (killed, timeout, other, survived, untested);
    the rerun ones are counted as the rerun found them."""
    alive = set(prev["survivor_names"]) | set(prev.get("no_tests_names", []))
    if rerun["total"] != len(names) or not set(names) <= alive:
        raise ValueError(f"a rerun of {rerun['total']} mutants cannot update a run with "
                         f"{prev['survived']} survivors and {prev['no_tests']} untested: only those "
                         f"may be rerun")
    rerun_set = set(names)
    survivors = sorted([n for n in prev["survivor_names"] if n not in rerun_set] + rerun["survivor_names"])
    untested = sorted([n for n in prev.get("no_tests_names", []) if n not in rerun_set] + rerun["no_tests_names"])
    return dict(prev, killed=prev["killed"] + rerun["killed"], survived=len(survivors),
                timeout=prev["timeout"] + rerun["timeout"], other=prev["other"] + rerun["other"],
                no_tests=len(untested), not_run=prev["not_run"] + rerun["not_run"],
                survivor_names=survivors, no_tests_names=untested,
                tests=rerun["tests"], date=rerun["date"],
                rerun_of_survivors={"rerun": len(names), "wall_s": rerun["wall_s"],
                                    "whole_run_wall_s": prev["wall_s"]},
                reruns=prev.get("reruns", []) + [{"rerun": len(names), "wall_s": rerun["wall_s"],
                                                  "date": rerun["date"]}])


def record(summary_path: Path, module: str, entry: dict) -> dict:
    """Write `entry` as `module`'s line of the summary and return the whole summary.

    The file is read again under a lock and only this module's entry replaced, so runs of
    different modules in parallel (each one takes an hour) keep each other's results; it is
    replaced atomically, so it is never half-written."""
    from filelock import FileLock
    with FileLock(str(summary_path) + ".lock"):
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        summary[module] = entry
        tmp = summary_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(summary, indent=1))
        tmp.replace(summary_path)
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", default=list(MODULES), help="modules to test (default: all)")
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--sample", type=int, default=0,
                    help="test only a seeded random sample of this many mutants per module (0: all); "
                         "the score is then the sample's, reported as such")
    ap.add_argument("--seed", type=int, default=0, help="seed of --sample")
    ap.add_argument("--survivors", action="store_true",
                    help="rerun only the survivors of the module's last whole run and add the newly "
                         "killed to its score (tests added since; module source unchanged)")
    ap.add_argument("--only", metavar="GLOB",
                    help="with --survivors: rerun only the survivors whose names match GLOB (e.g. "
                         "'rmtlib.data.x__main*'; several, comma-separated); their fates update the "
                         "whole run's record like a full survivors rerun")
    ap.add_argument("--resume", action="store_true",
                    help="finish the module's interrupted whole run in its scratch folder (same mutants, "
                         "same tests as when it started) and record it")
    args = ap.parse_args(argv)
    if args.survivors and args.sample:
        ap.error("--survivors and --sample exclude each other")
    if args.resume and (args.survivors or args.sample):
        ap.error("--resume finishes a whole run; it excludes --survivors and --sample")
    if args.only and not args.survivors:
        ap.error("--only needs --survivors (it picks among the last whole run's survivors)")
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        ap.error(f"unknown modules {unknown}; choose from {list(MODULES)}")
    summary_path = WORK / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for module in args.modules:
        files = test_files(module)  # what prepare() copies now
        prev = None
        if args.survivors:
            prev, names = previous_survivors(summary, module)
            if args.only:
                import fnmatch

                globs = args.only.split(",")
                names = [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in globs)]
            if not names:
                print(f"{module}: no survivors{' match ' + repr(args.only) if args.only else ''} in its last whole run; nothing to rerun")
                continue
        if args.resume:
            work = WORK / module
            if not (work / "mutants" / "rmtlib" / f"{module}.py.meta").exists():
                raise SystemExit(f"--resume: no started run of {module} in {work}; "
                                 f"run `python tools/mutation.py {module}` first")
            import tomllib  # the test files the run started with, from its narrowed configuration

            selection = tomllib.loads((work / "pyproject.toml").read_text())["tool"]["mutmut"]
            files = sorted(Path(a).name for a in selection["pytest_add_cli_args_test_selection"]
                           if a.startswith("tests/"))
            started = work / "part_started.txt"
            if started.exists():  # the stopped part: from its start to mutmut's last verdict
                meta = work / "mutants" / "rmtlib" / f"{module}.py.meta"
                with open(work / "walls.txt", "a") as fh:
                    fh.write(f"{max(0.0, meta.stat().st_mtime - float(started.read_text())):.1f}\n")
        else:
            work = prepare(module)
        (work / "part_started.txt").write_text(f"{time.time():.1f}")
        t0 = time.monotonic()
        if not args.survivors:
            names = []
        if args.sample:
            names = sample(work, module, args.sample, args.seed)
        run = mutmut(work, "run", "--max-children", str(args.max_children), *names, check=False)
        wall = time.monotonic() - t0
        with open(work / "walls.txt", "a") as fh:
            fh.write(f"{wall:.1f}\n")
        (work / "part_started.txt").unlink()
        parts = [float(x) for x in (work / "walls.txt").read_text().split()]
        (work / "run.log").write_text(run.stdout + run.stderr)
        if run.returncode != 0:
            print(f"{module}: mutmut failed (exit {run.returncode}); see {work / 'run.log'}")
            print(run.stdout[-3000:], run.stderr[-3000:])
            return run.returncode
        s = score(work, names)
        s.update(wall_s=round(sum(parts) if not names else wall, 1), tests=files, date=time.strftime("%Y-%m-%d"),
                 sample_seed=args.seed if args.sample else None, max_children=args.max_children,
                 source_sha256=source_sha256(module, work))  # the source the mutants came from
        if args.resume:
            s["parts"] = len(parts)
        if args.only:
            print(f"{module}: {len(names)} survivors matching {args.only!r} rerun: killed {s['killed']}, "
                  f"survived {s['survived']}, timeout {s['timeout']}, no tests {s['no_tests']}, "
                  f"other {s['other']}; wall {wall:.0f} s", flush=True)
            for name in s["survivor_names"] + s["no_tests_names"]:
                print("   still alive:", name)
        if prev is not None:  # the whole run's score, with the survivors' new fates
            rerun, s = s, merge_rerun(prev, s, names)
            print(f"{module}: reran the {len(names)} survivors of the whole run: "
                  f"{rerun['killed']} now killed", flush=True)
        else:
            s["sampled"] = bool(args.sample)
        summary = record(summary_path, module, s)
        print(f"{module}: {'sample of ' if args.sample else ''}{s['total']} mutants: killed {s['killed']}, "
              f"survived {s['survived']}, timeout {s['timeout']}, no tests {s['no_tests']}, "
              f"not run {s['not_run']}, other {s['other']}; wall {wall:.0f} s"
              f"{' (the rerun)' if prev is not None else ''}", flush=True)
        for name in s["survivor_names"]:
            print("   survived:", name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

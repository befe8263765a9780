"""Recorded runs of Fig. 5 (the layer-wise noise filter): one small CSV with its provenance.

Chapter 4 filters a grid of networks (label noise x schedule x seed) with
`filtering.denoise`, with and without shifting (Staats et al., Fig. 5; METHODS §5). A run at
the paper's scale needs a GPU; its summary is small (one row per network and filter) and is
committed under `results/` so that every later build of the book can show it beside its own
run. This module writes, reads, checks and summarises such a record.

The file is plain text, readable with any CSV tool after its two comment lines::

    # rmtlib-fig5-record 1
    # {"commit": "...", "device": "cuda:0", "device_name": "NVIDIA H100 ...", ...}
    noise,schedule,seed,shift,test_before,test_after,val_before,val_after,...
    0.2,regular,0,True,0.8123,0.8201,...

The second line is the provenance, one line of JSON (device, torch version, commit, UTC
date, profile and parameters, the measured wall time and what it covers, and a SHA-256 of
the data rows). Reading parses JSON and CSV only: nothing in a record can run code. Writing
goes to a temporary file that is renamed into place, so no reader ever sees half a file.
A record that fails any check is refused with a ValueError naming the file and the problem;
it is never silently skipped.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ._io import atomic_write_bytes, project_root

FORMAT = "# rmtlib-fig5-record 1"
SCHEDULES = ("regular", "overfitting")
KEY_COLUMNS = ("noise", "schedule", "seed", "shift")
REQUIRED_COLUMNS = KEY_COLUMNS + ("test_before", "test_after")
#: the layers' choices and validation accuracies: written when the results have them
OPTIONAL_COLUMNS = ("val_before", "val_after", "n_shift_chosen", "n_shift_tried", "variants")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
ACCURACY_COLUMNS = ("test_before", "test_after", "val_before", "val_after")
COUNT_COLUMNS = ("n_shift_chosen", "n_shift_tried")
#: provenance fields the caller provides (`provenance` fills them); `rows` and `sha256` are
#: added by `write_fig5`
PROVENANCE_KEYS = ("stand_in", "device", "device_name", "torch", "rmtlib", "commit", "created",
                   "profile", "parameters", "wall_s", "wall_what")
HEADER_LINES = 2  # the format line and the provenance line
#: where the gpu-quick profile writes its record (params/gpu-quick.yaml), and the command
GPU_QUICK_RECORD = "results/fig5_gpu-quick.csv"
GPU_QUICK_COMMAND = "make rerun PROFILE=gpu-quick NOTEBOOKS='00 04'"


# --------------------------------------------------------------------------- paths, clock
def resolve(path) -> Path:
    """`path` as a file name: a relative path is taken from the repository root.

    Chapters run with the notebooks folder as their working directory, profiles name files
    from the repository root (`results/fig5_gpu-quick.csv`). Outside a checkout (rmtlib
    installed from a wheel, e.g. on Colab) a relative path is taken from the working directory.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise TypeError(f"a record path must be a non-empty string or Path; got {path!r}")
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    root = project_root()
    return (root / p) if root is not None else p.resolve()


class Stopwatch:
    """Wall-clock laps of a notebook cell: `lap(name)` stores the seconds since the last lap.

    >>> watch = Stopwatch(); ...; watch.lap("networks"); ...; watch.lap("filtering")
    >>> watch.laps  # {"networks": 12.3, "filtering": 301.9}
    """

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        self.laps[str(name)] = now - self._last
        self._last = now
        return self.laps[str(name)]


def git_commit(root=None) -> tuple[str | None, bool | None]:
    """(commit hash, whether the work tree had uncommitted changes) of the repository.

    `git rev-parse HEAD` in the repository root; where there is no git checkout (a copy of
    the files on a GPU machine) the environment variable RMTLIB_COMMIT, if set, gives the
    commit (then "dirty" is unknown: None). (None, None) when neither is available.
    """
    root = Path(root) if root is not None else project_root()
    if root is not None:
        try:
            head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                  timeout=20)
            if head.returncode == 0 and head.stdout.strip():
                status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                        capture_output=True, text=True, timeout=20)
                dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
                return head.stdout.strip(), dirty
        except (OSError, subprocess.SubprocessError):
            pass
    env = os.environ.get("RMTLIB_COMMIT", "").strip()
    return (env or None), None


def provenance(*, device, parameters: dict, wall_s: dict, wall_what: str, stand_in: bool = False,
               profile: str | None = None) -> dict:
    """The provenance of a record: what it was computed on, from what, and how long it took.

    `device` is the device the chapter ran on ("cuda", "cpu", "auto", a torch.device);
    `parameters` the chapter's parameters that define the grid; `wall_s` measured wall
    times in seconds by part (e.g. {"networks": ..., "filtering": ...}) and `wall_what` a
    sentence saying what they cover. `stand_in=True` marks a record that is not a real run
    (tests, examples): the book never shows it as a GPU run. `profile` defaults to the
    environment variable RMTLIB_PROFILE that `rmtlib.rerun` sets while it runs a chapter.
    """
    from .train import provenance as run_provenance

    base = run_provenance(device)
    commit, dirty = git_commit()
    return dict(
        stand_in=bool(stand_in), device=base["device"], device_name=base["device_name"],
        torch=base["torch"], cuda=base["cuda"], rmtlib=base["rmtlib"], python=base["python"],
        threads=base["threads"], commit=commit, dirty=dirty,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        profile=profile if profile is not None else (os.environ.get("RMTLIB_PROFILE") or None),
        parameters=dict(parameters), wall_s={str(k): float(v) for k, v in dict(wall_s).items()},
        wall_what=str(wall_what),
    )


# --------------------------------------------------------------------------- checks
def _problem(where: str, text: str) -> ValueError:
    return ValueError(f"{where}: {text}")


def _lines(bad, line0) -> str:
    """Where the bad rows are: file line numbers (reading) or row positions (writing)."""
    pos = [int(i) for i in np.flatnonzero(np.asarray(bad))]
    shown = ", ".join(str(p + line0) for p in pos[:5]) + (", ..." if len(pos) > 5 else "")
    return f"{'line' if line0 > 0 else 'row'}{'s' if len(pos) > 1 else ''} {shown}"


def check_fig5(frame, where: str = "Fig. 5 results", *, line0: int = 0) -> pd.DataFrame:
    """A Fig. 5 results frame checked and put in the record's column order and types.

    Columns: `REQUIRED_COLUMNS` (noise in [0, 1], schedule in `SCHEDULES`, seed a
    non-negative integer, shift True/False, test accuracies before and after filtering in
    [0, 1]) and any of `OPTIONAL_COLUMNS`; other columns are refused (a derived column such
    as `change` is recomputed by `summarise`). Every (noise, schedule, seed) appears once
    with shift and once without. ValueError naming `where`, the column and the rows.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{where}: expected a pandas DataFrame with columns {list(REQUIRED_COLUMNS)}; "
                        f"got {type(frame).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise _problem(where, f"missing column(s) {missing}; a Fig. 5 record has {list(REQUIRED_COLUMNS)} "
                              f"and optionally {list(OPTIONAL_COLUMNS)}")
    unknown = [c for c in frame.columns if c not in COLUMNS]
    if unknown:
        raise _problem(where, f"unknown column(s) {unknown}; a Fig. 5 record has {list(REQUIRED_COLUMNS)} "
                              f"and optionally {list(OPTIONAL_COLUMNS)} (drop derived columns such as "
                              "'change' before writing)")
    if frame.columns.duplicated().any():
        raise _problem(where, f"duplicated column(s) {sorted(set(frame.columns[frame.columns.duplicated()]))}")
    if len(frame) == 0:
        raise _problem(where, "no rows: a record holds at least one network")
    out = pd.DataFrame(index=range(len(frame)))
    f = frame.reset_index(drop=True)

    def numeric(col):
        values = pd.to_numeric(f[col], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            shown = sorted({str(v) for v in f[col][bad]})[:3]
            raise _problem(where, f"column {col!r} has missing, non-numeric or infinite values "
                                  f"({', '.join(shown)}) at {_lines(bad, line0)}")
        return values.astype(float)

    noise = numeric("noise")
    bad = (noise < 0) | (noise > 1)
    if bad.any():
        raise _problem(where, f"label noise outside [0, 1] ({noise[bad].iloc[0]}) at {_lines(bad, line0)}")
    out["noise"] = noise
    sched = f["schedule"].astype(object)
    bad = ~sched.isin(SCHEDULES)
    if bad.any():
        raise _problem(where, f"unknown schedule {sched[bad].iloc[0]!r} at {_lines(bad, line0)}; "
                              f"expected one of {list(SCHEDULES)}")
    out["schedule"] = sched.astype(str)
    seed = numeric("seed")
    bad = (seed < 0) | (seed != np.round(seed))
    if bad.any():
        raise _problem(where, f"seed {seed[bad].iloc[0]} is not a non-negative integer at {_lines(bad, line0)}")
    out["seed"] = seed.astype(np.int64)
    shift = f["shift"]
    if not pd.api.types.is_bool_dtype(shift):
        as_text = shift.astype(str)
        bad = ~as_text.isin(("True", "False"))
        if bad.any():
            raise _problem(where, f"column 'shift' must be True or False; got {as_text[bad].iloc[0]!r} at "
                                  f"{_lines(bad, line0)}")
        shift = as_text == "True"
    out["shift"] = shift.astype(bool)
    for col in [c for c in ACCURACY_COLUMNS if c in f.columns]:
        acc = numeric(col)
        bad = (acc < 0) | (acc > 1)
        if bad.any():
            raise _problem(where, f"accuracy {col!r} outside [0, 1] ({acc[bad].iloc[0]}) at "
                                  f"{_lines(bad, line0)}; accuracies are fractions, not percentages")
        out[col] = acc
    for col in [c for c in COUNT_COLUMNS if c in f.columns]:
        n = numeric(col)
        bad = (n < 0) | (n != np.round(n))
        if bad.any():
            raise _problem(where, f"{col!r} must be a non-negative integer; got {n[bad].iloc[0]} at "
                                  f"{_lines(bad, line0)}")
        out[col] = n.astype(np.int64)
    if "variants" in f.columns:
        out["variants"] = f["variants"].fillna("").astype(str)
    out = out[[c for c in COLUMNS if c in out.columns]]
    dup = out.duplicated(list(KEY_COLUMNS), keep=False)
    if dup.any():
        r = out[dup].iloc[0]
        raise _problem(where, f"network noise={r.noise:g}, {r.schedule}, seed {r.seed}, shift={r['shift']} "
                              f"appears more than once ({_lines(dup, line0)})")
    pairs = out.groupby(["noise", "schedule", "seed"])["shift"].nunique()
    if (pairs < 2).any():
        (p, s, seed_), = pairs[pairs < 2].index[:1]
        raise _problem(where, f"network noise={p:g}, {s}, seed {seed_} has only one of the two filters "
                              "(shift + remove, remove only); a Fig. 5 record has both for every network")
    return out


def _check_provenance(prov, where: str) -> dict:
    if not isinstance(prov, dict):
        raise _problem(where, f"the provenance must be a JSON object; got {type(prov).__name__}")
    missing = [k for k in PROVENANCE_KEYS if k not in prov]
    if missing:
        raise _problem(where, f"the provenance lacks {missing} (build it with rmtlib.records.provenance)")
    if not isinstance(prov["stand_in"], bool):
        raise _problem(where, f"provenance 'stand_in' must be true or false; got {prov['stand_in']!r}")
    for key in ("device", "device_name", "torch", "rmtlib", "created", "wall_what"):
        if not isinstance(prov[key], str) or not prov[key].strip():
            raise _problem(where, f"provenance {key!r} must be a non-empty string; got {prov[key]!r}")
    for key in ("commit", "profile"):
        if prov[key] is not None and not isinstance(prov[key], str):
            raise _problem(where, f"provenance {key!r} must be a string or null; got {prov[key]!r}")
    try:
        created = datetime.fromisoformat(prov["created"])
    except ValueError:
        raise _problem(where, f"provenance 'created' is not an ISO date and time: {prov['created']!r}") from None
    if created.utcoffset() is None or created.utcoffset().total_seconds() != 0:
        raise _problem(where, f"provenance 'created' must be in UTC (+00:00); got {prov['created']!r}")
    if not isinstance(prov["parameters"], dict):
        raise _problem(where, "provenance 'parameters' must be a JSON object of the chapter's parameters")
    wall = prov["wall_s"]
    if not isinstance(wall, dict) or not wall or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
            for v in wall.values()):
        raise _problem(where, f"provenance 'wall_s' must map parts to measured seconds (finite, >= 0); got {wall!r}")
    return prov


# --------------------------------------------------------------------------- the file
@dataclass(frozen=True, eq=False)
class Record:
    """A Fig. 5 record as read from its file: the rows, the provenance and where it came from."""

    path: Path
    frame: pd.DataFrame
    provenance: dict = field(default_factory=dict)

    @property
    def is_gpu_run(self) -> bool:
        """True for a real run on a CUDA device (not a stand-in)."""
        return not self.provenance["stand_in"] and str(self.provenance["device"]).startswith("cuda")

    @property
    def label(self) -> str:
        """How the book names this record: only a real CUDA run is a "recorded GPU run"."""
        return label(self.provenance)

    @property
    def short_label(self) -> str:
        """The label of a table column or a figure panel: "recorded GPU run", "stand-in", ..."""
        if self.provenance["stand_in"]:
            return "stand-in (not a GPU run)"
        return "recorded GPU run" if self.is_gpu_run else "recorded run (not a GPU run)"

    def describe(self) -> str:
        """One sentence of provenance for the page: device, torch, commit, date, profile, wall time."""
        return describe(self.provenance)


def label(prov: dict) -> str:
    """"recorded GPU run", or what the record is instead (a stand-in, a run on a CPU)."""
    if prov.get("stand_in"):
        return "stand-in for a recorded GPU run (written by a test or an example, not a GPU run)"
    if str(prov.get("device", "")).startswith("cuda"):
        return "recorded GPU run"
    return f"recorded run on {prov.get('device_name') or prov.get('device')} (not a GPU run)"


def describe(prov: dict) -> str:
    """The provenance in words: device, torch, commit, date (UTC), profile, measured wall time."""
    commit = prov.get("commit")
    commit = ("not recorded" if not commit else commit[:12]
              + (" with uncommitted changes" if prov.get("dirty") else ""))
    wall = ", ".join(f"{k} {_seconds(v)}" for k, v in prov["wall_s"].items())
    total = _seconds(sum(prov["wall_s"].values()))
    params = ", ".join(f"{k} {'all' if v is None else v}" for k, v in prov["parameters"].items())
    return (f"device {prov['device_name']} ({prov['device']}), torch {prov['torch']}, rmtlib {prov['rmtlib']}, "
            f"commit {commit}, recorded {prov['created'].replace('T', ' ').replace('+00:00', ' UTC')}; "
            f"profile {prov.get('profile') or 'not recorded'} ({params or 'no parameters recorded'}); "
            f"wall time {total} ({wall}): {prov['wall_what']}"
            + (f"; networks trained on {', '.join(map(str, prov['networks_trained_on']))}"
               if prov.get("networks_trained_on") else "")
            + _describe_training(prov.get("networks_training")))


def training_time(histories) -> dict:
    """How long the networks behind a record took to train, from their cached provenance.

    Networks trained together (one ensemble) share one `training_run` and its wall time,
    so the total is the sum over distinct runs. Returns {"wall_s": total over the runs
    that recorded it, "runs": their number, "not_recorded": networks without a record}
    (networks cached before the wall time was recorded have none).
    """
    runs, missing = {}, 0
    for h in histories:
        prov = getattr(h, "provenance", None) or {}
        wall, run = prov.get("train_wall_s"), prov.get("training_run")
        if isinstance(wall, (int, float)) and not isinstance(wall, bool) and math.isfinite(wall) and run:
            runs[run] = float(wall)
        else:
            missing += 1
    return {"wall_s": round(sum(runs.values()), 3), "runs": len(runs), "not_recorded": missing}


def _describe_training(tr) -> str:
    if not isinstance(tr, dict) or not tr.get("runs") and not tr.get("not_recorded"):
        return ""
    runs = int(tr.get("runs", 0))
    text = (f"; training the networks took {_seconds(tr['wall_s'])} in {runs} run{'s' if runs != 1 else ''} "
            "(ensembles count once)") if runs else "; the networks' training time was not recorded"
    if runs and tr.get("not_recorded"):
        n = int(tr["not_recorded"])
        text += f", not counting {n} network{'s' if n != 1 else ''} cached without a training time"
    return text


def _seconds(s: float) -> str:
    s = float(s)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _body(frame: pd.DataFrame) -> str:
    # pandas writes floats in their shortest round-trip form: reading gives the same numbers
    return frame.to_csv(index=False, lineterminator="\n")


def _digest(body: str) -> str:
    return hashlib.sha256(body.replace("\r\n", "\n").encode()).hexdigest()


def write_fig5(path, results: pd.DataFrame, provenance: dict) -> Path:
    """Write the Fig. 5 summary `results` and its `provenance` as a record; returns the path.

    `results`: one row per (noise, schedule, seed, shift) as chapter 4 builds it, with the
    columns of `check_fig5`; a derived column `change` is dropped after checking that it
    equals test_after - test_before (`summarise` recomputes it), any other column is refused. Everything is checked before the file is touched; the file is
    written to a temporary name and renamed (an existing record is replaced whole or not at
    all). A relative `path` is taken from the repository root (`resolve`).
    """
    dest = resolve(path)
    where = f"record {dest}"
    if isinstance(results, pd.DataFrame) and "change" in results.columns:
        change = results["test_after"] - results["test_before"] if "test_after" in results else None
        if change is not None and not np.allclose(change, results["change"], rtol=0, atol=1e-12, equal_nan=True):
            raise _problem(where, "column 'change' is not test_after - test_before")
        results = results.drop(columns="change")
    frame = check_fig5(results, where)
    prov = _check_provenance(dict(provenance), where)
    body = _body(frame)
    prov = {**prov, "rows": len(frame), "sha256": _digest(body)}
    try:
        line = json.dumps(prov, allow_nan=False)  # in the order of PROVENANCE_KEYS
    except (TypeError, ValueError) as err:
        raise _problem(where, f"the provenance is not plain JSON ({err})") from None
    atomic_write_bytes(dest, f"{FORMAT}\n# {line}\n{body}".encode())
    return dest


def read_fig5(path) -> Record:
    """A record written by `write_fig5`, checked; ValueError naming the file and what is wrong.

    Refused: another format line, a provenance line that is not a JSON object with the
    fields of `PROVENANCE_KEYS`, missing or unknown columns, missing or non-numeric values,
    accuracies or noise outside [0, 1], an unknown schedule, repeated networks, a network
    with only one of the two filters, and data rows that do not match the checksum in the
    header (edited or damaged after writing). FileNotFoundError when there is no file.
    """
    src = resolve(path)
    where = f"record {src}"
    if not src.is_file():
        raise FileNotFoundError(f"{where} does not exist")
    try:
        text = src.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _problem(where, "not a text file (not UTF-8)") from None
    lines = text.split("\n", HEADER_LINES)
    if len(lines) <= HEADER_LINES or lines[0].rstrip("\r") != FORMAT:
        raise _problem(where, f"not a Fig. 5 record: its first line is {lines[0][:60]!r}, expected {FORMAT!r}")
    head = lines[1].rstrip("\r")
    if not head.startswith("# "):
        raise _problem(where, "line 2 must be '# ' followed by the provenance as JSON")
    try:
        prov = json.loads(head[2:])
    except json.JSONDecodeError as err:
        raise _problem(where, f"the provenance on line 2 is not valid JSON ({err.msg})") from None
    prov = _check_provenance(prov, where)
    body = lines[2]
    if not body.strip():
        raise _problem(where, "no data rows after the provenance")
    try:  # every field as text: numbers are parsed by Python's float, which reads back any written float exactly
        raw = pd.read_csv(io.StringIO(body), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as err:
        raise _problem(where, f"the data rows are not valid CSV ({' '.join(str(err).split())})") from None
    for col in [c for c in raw.columns if c not in ("schedule", "shift", "variants")]:
        raw[col] = raw[col].map(_number).astype(object)
    frame = check_fig5(raw, where, line0=HEADER_LINES + 2)
    if prov.get("rows") != len(frame):
        raise _problem(where, f"{len(frame)} data rows, but the header says {prov.get('rows')}: the file was "
                              "cut or edited after it was written; write it again or restore it from git")
    if prov.get("sha256") != _digest(body):
        raise _problem(where, "the data rows do not match the checksum in the header (edited or damaged after "
                              "it was written); write it again or restore it from git")
    return Record(src, frame, prov)


def _number(text: str):
    """A field as a float when it is one (the text itself otherwise, for the error message)."""
    try:
        return float(text)
    except ValueError:
        return text if text.strip() else "(empty)"


def find_fig5(path) -> Record | None:
    """The record at `path`, or None when there is no file there (a broken file raises)."""
    src = resolve(path)
    return read_fig5(src) if src.exists() else None


# --------------------------------------------------------------------------- summary
def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean change of test accuracy over seeds per schedule, filter and noise, with its s.e.

    change = test_after - test_before for each network; columns: schedule, shift, noise,
    seeds (n), before and after (means), change (mean) and se = s / sqrt(n) with s the
    sample standard deviation over seeds (NaN for a single seed).
    """
    f = check_fig5(frame.drop(columns=[c for c in ("change",) if c in frame.columns]), "summarise")
    f = f.assign(change=f.test_after - f.test_before)
    g = f.groupby(["schedule", "shift", "noise"])
    out = g.agg(seeds=("seed", "nunique"), before=("test_before", "mean"), after=("test_after", "mean"),
                change=("change", "mean"), sd=("change", "std")).reset_index()
    out["se"] = out["sd"] / np.sqrt(out["seeds"])
    order = {s: i for i, s in enumerate(SCHEDULES)}
    out = out.sort_values(["schedule", "shift", "noise"], key=lambda c: c.map(order) if c.name == "schedule"
                          else (~c if c.name == "shift" else c))
    return out.drop(columns="sd").reset_index(drop=True)

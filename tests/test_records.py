"""Recorded Fig. 5 runs (`rmtlib.records`) and chapter 4's use of them.

- A record written by `write_fig5` reads back exactly (every float, type and the provenance)
  and is a plain CSV after two comment lines.
- Writing is atomic and checks everything first: a refused frame or a crash at the rename
  leaves the old file as it was and no temporary file behind.
- Every damaged or mismatched file is refused with a ValueError naming the file and the
  problem (wrong columns, NaN, accuracies or noise out of [0, 1], unknown schedule, ...).
- `summarise` gives the mean change over seeds and its standard error, checked by hand.
- Only a real CUDA run is called a "recorded GPU run"; a stand-in says that it is one, and
  no stand-in is ever committed under results/.
- Chapter 4 on the smoke profile writes a record when asked and shows a stand-in record
  with its provenance (one extra smoke run, marked `notebooks`/`slow`); without a record
  it says that none exists and gives the command that makes one.
"""
from __future__ import annotations

import ast
import io
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rmtlib import records, rerun

import _smoke_runs

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "notebooks" / "04_level_repulsion.ipynb"
FIG5_KEYS = ("dn_fig5_20", "dn_fig5_high", "dn_fig5_overfit", "dn_clean")
STAND_IN_DEVICE = "Stand-in Device 7 (tests/test_records.py)"


def fake_results(seeds=(0, 1, 2), noise=(0.0, 0.1 + 0.2, 0.8), seed=5) -> pd.DataFrame:
    """A results frame as chapter 4 builds it, with floats that need all 17 digits."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in noise:
        for schedule in records.SCHEDULES:
            for s in seeds:
                before = float(rng.uniform(0.2, 0.9))
                for shift in (True, False):
                    after = float(np.clip(before + rng.normal(0, 0.02), 0, 1))
                    rows.append(dict(noise=p, schedule=schedule, seed=s, shift=shift, test_before=before,
                                     test_after=after, val_before=float(rng.uniform(0.2, 0.9)), val_after=1 / 3,
                                     n_shift_chosen=int(rng.integers(0, 3)) if shift else 0,
                                     n_shift_tried=2 if shift else 0,
                                     variants="fc3:remove/120, fc2:shift+remove/7, fc1:remove/0"))
    frame = pd.DataFrame(rows)
    frame["change"] = frame.test_after - frame.test_before  # as the chapter has it
    return frame


def stand_in_provenance(**changes) -> dict:
    prov = records.provenance(device="cpu", parameters=dict(dataset="fashion-mnist", n_train=None, seeds=[0, 1, 2]),
                              wall_s={"networks": 1.5, "filtering": 12.25}, wall_what="made up by the tests",
                              stand_in=True, profile="test")
    prov["device_name"] = STAND_IN_DEVICE
    prov.update(changes)
    return prov


@pytest.fixture
def written(tmp_path):
    frame = fake_results()
    prov = stand_in_provenance()
    path = records.write_fig5(tmp_path / "fig5.csv", frame, prov)
    return path, frame, prov


# --------------------------------------------------------------------------- round trip
def test_a_written_record_reads_back_exactly(written):
    path, frame, prov = written
    rec = records.read_fig5(path)
    expected = frame.drop(columns="change")[list(records.COLUMNS)]
    pd.testing.assert_frame_equal(rec.frame, expected, check_exact=True)
    assert rec.frame.noise.iloc[len(rec.frame) // 2] == 0.1 + 0.2  # 0.30000000000000004, not 0.3
    assert rec.frame.dtypes["seed"] == np.int64 and rec.frame.dtypes["shift"] == bool
    assert {k: v for k, v in rec.provenance.items() if k not in ("rows", "sha256")} == prov
    assert rec.provenance["rows"] == len(frame) and rec.path == path


def test_a_record_is_a_plain_csv_after_two_comment_lines(written):
    path, frame, prov = written
    lines = path.read_text().splitlines()
    assert lines[0] == "# rmtlib-fig5-record 1"
    assert json.loads(lines[1][2:])["device_name"] == STAND_IN_DEVICE
    plain = pd.read_csv(path, skiprows=2)  # any CSV reader, no rmtlib needed
    assert list(plain.columns) == list(records.COLUMNS) and len(plain) == len(frame)
    assert np.allclose(plain.test_after, frame.test_after, rtol=0, atol=0)


def test_a_frame_with_only_the_required_columns_is_a_record(tmp_path):
    frame = fake_results()[list(records.REQUIRED_COLUMNS)]
    rec = records.read_fig5(records.write_fig5(tmp_path / "r.csv", frame, stand_in_provenance()))
    assert list(rec.frame.columns) == list(records.REQUIRED_COLUMNS)


def test_a_relative_path_is_taken_from_the_repository_root():
    assert records.resolve("results/x.csv") == ROOT / "results" / "x.csv"
    assert records.resolve(ROOT / "y.csv") == ROOT / "y.csv"
    with pytest.raises(TypeError, match="record path"):
        records.resolve("")


def test_find_gives_none_without_a_file_and_read_says_so(tmp_path):
    assert records.find_fig5(tmp_path / "none.csv") is None
    with pytest.raises(FileNotFoundError, match="none.csv does not exist"):
        records.read_fig5(tmp_path / "none.csv")


# --------------------------------------------------------------------------- atomic, checked writes
def _leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_refused_frame_leaves_the_old_record_untouched(written):
    path, frame, prov = written
    before = path.read_bytes()
    bad = frame.copy()
    bad.loc[3, "test_after"] = np.nan
    with pytest.raises(ValueError, match="test_after"):
        records.write_fig5(path, bad, prov)
    assert path.read_bytes() == before and not _leftovers(path.parent)


def test_a_crash_at_the_rename_leaves_the_old_record_and_no_temporary_file(written, monkeypatch):
    path, frame, prov = written
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        records.write_fig5(path, fake_results(seed=6), prov)
    assert path.read_bytes() == before and not _leftovers(path.parent)


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="test_after"), r"missing column\(s\) \['test_after'\]"),
    (lambda f: f.assign(extra=1.0), r"unknown column\(s\) \['extra'\]"),
    (lambda f: f.assign(test_before=f.test_before * 100, change=f.test_after - f.test_before * 100), "outside \\[0, 1\\]"),
    (lambda f: f.assign(change=f.change + 0.01), "'change' is not test_after - test_before"),
    (lambda f: f.assign(schedule="overfit"), "unknown schedule 'overfit'"),
    (lambda f: f.iloc[:0], "no rows"),
    (lambda f: f[f["shift"]], "only one of the two filters"),
])
def test_the_writer_refuses_a_bad_frame_before_writing(tmp_path, change, message):
    path = tmp_path / "r.csv"
    with pytest.raises(ValueError, match=message) as err:
        records.write_fig5(path, change(fake_results()), stand_in_provenance())
    assert str(path) in str(err.value)
    assert not path.exists() and not _leftovers(tmp_path)


@pytest.mark.parametrize("changes, message", [
    (dict(device=None), "'device' must be a non-empty string"),
    (dict(stand_in="no"), "stand_in"),
    (dict(wall_s={"networks": float("nan")}), "wall_s"),
    (dict(wall_s={}), "wall_s"),
    (dict(created="2026-11-24T10:00:00+01:00"), "UTC"),
    (dict(created="yesterday"), "ISO"),
    (dict(parameters=[1, 2]), "parameters"),
    (dict(parameters={"seeds": {1, 2}}), "plain JSON"),
])
def test_the_writer_refuses_a_bad_provenance(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        records.write_fig5(tmp_path / "r.csv", fake_results(), stand_in_provenance(**changes))
    assert not (tmp_path / "r.csv").exists()


def test_the_writer_refuses_a_provenance_without_its_fields(tmp_path):
    prov = stand_in_provenance()
    del prov["commit"], prov["torch"]
    with pytest.raises(ValueError, match=r"lacks \['torch', 'commit'\]"):
        records.write_fig5(tmp_path / "r.csv", fake_results(), prov)


def test_the_writer_refuses_what_is_not_a_frame(tmp_path):
    with pytest.raises(TypeError, match="DataFrame"):
        records.write_fig5(tmp_path / "r.csv", fake_results().to_dict("records"), stand_in_provenance())


# --------------------------------------------------------------------------- damaged files
def _edit_rows(edit):
    """A text edit that changes the data rows (as a frame) and keeps the header lines."""
    def apply(text):
        first, second, body = text.split("\n", 2)
        frame = edit(pd.read_csv(io.StringIO(body), dtype=str, keep_default_na=False))
        return f"{first}\n{second}\n" + frame.to_csv(index=False, lineterminator="\n")
    return apply


def _set(row, col, value):
    def edit(f):
        f = f.copy()
        f.loc[row, col] = value
        return f
    return _edit_rows(edit)


def _provenance(change):
    def apply(text):
        lines = text.split("\n", 2)
        prov = json.loads(lines[1][2:])
        change(prov)
        return f"{lines[0]}\n# {json.dumps(prov)}\n{lines[2]}"
    return apply


BAD_FILES = {
    "another first line": (lambda t: "# some other file\n" + t.split("\n", 1)[1], "not a Fig. 5 record"),
    "no header at all": (lambda t: t.split("\n", 2)[2], "not a Fig. 5 record"),
    "provenance not JSON": (lambda t: t.replace('"stand_in": true', '"stand_in": tru', 1), "not valid JSON"),
    "provenance without #": (lambda t: t.replace("\n# {", "\n{", 1), "line 2"),
    "provenance lacks the device": (_provenance(lambda p: p.pop("device")), r"lacks \['device'\]"),
    "stand_in not a bool": (_provenance(lambda p: p.update(stand_in="false")), "stand_in"),
    "negative wall time": (_provenance(lambda p: p.update(wall_s={"networks": -1})), "wall_s"),
    "missing column": (_edit_rows(lambda f: f.drop(columns="test_after")), r"missing column\(s\) \['test_after'\]"),
    "unknown column": (_edit_rows(lambda f: f.assign(gpu_seconds="1")), r"unknown column\(s\) \['gpu_seconds'\]"),
    "NaN accuracy": (_set(3, "test_after", "nan"), r"'test_after' has missing.*line 7"),
    "empty accuracy": (_set(0, "test_before", ""), r"'test_before' has missing.*line 4"),
    "text accuracy": (_set(5, "val_after", "high"), r"'val_after' has missing, non-numeric.*high"),
    "accuracy above 1": (_set(2, "test_after", "1.2"), r"'test_after' outside \[0, 1\] \(1.2\) at line 6"),
    "accuracy in percent": (_set(1, "val_before", "81.5"), r"'val_before' outside \[0, 1\].*not percentages"),
    "negative accuracy": (_set(1, "test_before", "-0.1"), r"outside \[0, 1\]"),
    "unknown schedule": (_set(4, "schedule", "overfit"), r"unknown schedule 'overfit' at line 8"),
    "noise above 1": (_set(0, "noise", "1.5"), "label noise outside"),
    "seed not an integer": (_set(0, "seed", "1.5"), "seed 1.5 is not a non-negative integer"),
    "shift not a bool": (_set(0, "shift", "yes"), "'shift' must be True or False; got 'yes'"),
    "negative count": (_set(0, "n_shift_chosen", "-1"), "'n_shift_chosen' must be a non-negative integer"),
    "repeated network": (_edit_rows(lambda f: pd.concat([f, f.iloc[[0]]], ignore_index=True)), "more than once"),
    "one filter missing": (_edit_rows(lambda f: f.drop(index=0)), "only one of the two filters"),
    "two rows removed": (_edit_rows(lambda f: f.drop(index=[0, 1])), "header says"),
    "a value edited": (_set(0, "test_after", "0.5"), "checksum"),
    "no data rows": (lambda t: "\n".join(t.split("\n", 2)[:2]) + "\n", "no data rows"),
    "cut in the middle": (lambda t: t[: len(t) // 2], ""),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_damaged_record_is_refused_with_the_file_and_the_problem(written, name):
    path, _, _ = written
    damage, message = BAD_FILES[name]
    path.write_text(damage(path.read_text()))
    with pytest.raises(ValueError) as err:
        records.read_fig5(path)
    assert str(path) in str(err.value), err.value
    assert re.search(message, str(err.value)), err.value
    with pytest.raises(ValueError):  # find does not hide a broken file either
        records.find_fig5(path)


def test_a_binary_file_is_refused(tmp_path):
    path = tmp_path / "r.csv"
    path.write_bytes(b"\x80\x81\x00PK\x03\x04")
    with pytest.raises(ValueError, match="not a text file"):
        records.read_fig5(path)


def test_windows_line_ends_are_accepted(written):
    path, frame, _ = written
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert len(records.read_fig5(path).frame) == len(frame)


# --------------------------------------------------------------------------- summary, labels
def test_summarise_gives_the_mean_change_and_its_standard_error():
    rows = []
    # regular, shift: changes 0.01 and 0.03 over two seeds: mean 0.02, sample sd = sqrt(2 * 0.01^2 / 1)
    # = 0.0141421, s.e. = sd / sqrt(2) = 0.01; remove only: one change each of 0.00 and -0.02:
    # mean -0.01, sd 0.0141421, s.e. 0.01. The overfitting schedule has one seed: no s.e.
    for s, (a, b) in enumerate(((0.01, 0.0), (0.03, -0.02))):
        rows += [dict(noise=0.4, schedule="regular", seed=s, shift=True, test_before=0.7, test_after=0.7 + a),
                 dict(noise=0.4, schedule="regular", seed=s, shift=False, test_before=0.7, test_after=0.7 + b)]
    rows += [dict(noise=0.2, schedule="overfitting", seed=0, shift=sh, test_before=0.5, test_after=0.45)
             for sh in (False, True)]
    out = records.summarise(pd.DataFrame(rows))
    assert list(zip(out.schedule, out["shift"])) == [("regular", True), ("regular", False),
                                                     ("overfitting", True), ("overfitting", False)]
    # tolerance: 0.7 + 0.01 - 0.7 differs from 0.01 by a few ulps of 0.7 (about 1e-16)
    np.testing.assert_allclose(out.change[:2], [0.02, -0.01], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.se[:2], [0.01, 0.01], rtol=0, atol=1e-12)
    assert out.seeds.tolist() == [2, 2, 1, 1] and out.se[2:].isna().all()
    np.testing.assert_allclose(out.change[2:], [-0.05, -0.05], rtol=0, atol=1e-12)
    assert out.before.tolist() == [0.7, 0.7, 0.5, 0.5]


def test_only_a_real_cuda_run_is_called_a_recorded_gpu_run(written):
    path, _, prov = written
    rec = records.read_fig5(path)
    assert not rec.is_gpu_run and rec.label.startswith("stand-in") and "not a GPU run" in rec.label
    assert rec.short_label == "stand-in (not a GPU run)"
    gpu = {**prov, "stand_in": False, "device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3"}
    assert records.label(gpu) == "recorded GPU run"
    assert records.label({**gpu, "stand_in": True}).startswith("stand-in")
    cpu = {**gpu, "device": "cpu", "device_name": "x86_64"}
    assert records.label(cpu) == "recorded run on x86_64 (not a GPU run)"
    short = {name: records.Record(path, rec.frame, p).short_label for name, p in (("gpu", gpu), ("cpu", cpu))}
    assert short == {"gpu": "recorded GPU run", "cpu": "recorded run (not a GPU run)"}


def test_describe_names_device_torch_commit_date_profile_and_wall_time(written):
    path, _, prov = written
    text = records.read_fig5(path).describe()
    for part in (STAND_IN_DEVICE, f"torch {prov['torch']}", prov["created"][:10], "profile test",
                 "wall time 13.8 s (networks 1.5 s, filtering 12.2 s)", "made up by the tests", "n_train all"):
        assert part in text, (part, text)
    if prov["commit"]:
        assert prov["commit"][:12] in text
    assert "commit not recorded" in records.describe({**prov, "commit": None})


def test_training_time_counts_each_run_once_and_says_what_is_missing():
    from types import SimpleNamespace as NS

    run = lambda rid, wall, k: {"training_run": rid, "train_wall_s": wall, "trained_together": k}
    hists = [NS(provenance=run("a", 10.0, 2)), NS(provenance=run("a", 10.0, 2)),  # one ensemble
             NS(provenance=run("b", 5.25, 1)), NS(provenance={"torch": "x"}), NS(provenance={})]
    tr = records.training_time(hists)
    assert tr == {"wall_s": 15.25, "runs": 2, "not_recorded": 2}
    assert records._describe_training(tr) == (
        "; training the networks took 15.2 s in 2 runs (ensembles count once), "
        "not counting 2 networks cached without a training time")
    assert records._describe_training(records.training_time(hists[:1])) == (
        "; training the networks took 10.0 s in 1 run (ensembles count once)")
    assert records._describe_training(records.training_time(hists[3:4])) == (
        "; the networks' training time was not recorded")
    assert records._describe_training(None) == ""


# --------------------------------------------------------------------------- provenance
def test_provenance_records_device_versions_commit_profile_and_date(monkeypatch):
    monkeypatch.setenv("RMTLIB_PROFILE", "gpu-quick")
    prov = records.provenance(device="cpu", parameters={"seeds": [0]}, wall_s={"filtering": 2}, wall_what="x")
    assert set(records.PROVENANCE_KEYS) <= set(prov)
    assert prov["profile"] == "gpu-quick" and prov["device"] == "cpu" and prov["stand_in"] is False
    assert prov["created"].endswith("+00:00")
    import torch

    assert prov["torch"] == torch.__version__
    if (ROOT / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        assert prov["commit"] == head and isinstance(prov["dirty"], bool)


def test_commit_falls_back_to_the_environment_without_git(tmp_path, monkeypatch):
    monkeypatch.delenv("RMTLIB_COMMIT", raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # no repository above tmp_path
    assert records.git_commit(tmp_path) == (None, None)
    monkeypatch.setenv("RMTLIB_COMMIT", "0123abcd")
    assert records.git_commit(tmp_path) == ("0123abcd", None)


def test_rerun_tells_the_chapters_their_profile(tmp_path, monkeypatch):
    monkeypatch.delenv("RMTLIB_PROFILE", raising=False)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "quick.yaml").write_text("all: {}\n")
    seen = tmp_path / "seen.txt"
    cells = [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": ["out = ''"],
              "outputs": [], "execution_count": None},
             {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
              "source": ["import os, pathlib\n", "pathlib.Path(out).write_text(os.environ['RMTLIB_PROFILE'])"]}]
    (tmp_path / "notebooks" / "01_x.ipynb").write_text(json.dumps({"cells": cells, "metadata": {}}))
    rerun.run("quick", out=tmp_path / "runs", root=tmp_path, engine="plain", overrides={"out": str(seen)})
    assert seen.read_text() == "quick"
    assert "RMTLIB_PROFILE" not in os.environ


# --------------------------------------------------------------------------- profiles, committed files
def test_the_profiles_write_and_read_the_records_the_chapter_names():
    defaults = rerun.notebook_parameters(CHAPTER)
    assert defaults["record_fig5"] is None  # the book's own build writes nothing
    assert defaults["recorded_fig5"] == records.GPU_QUICK_RECORD
    quick = rerun.profile_parameters("gpu-quick", CHAPTER)
    assert quick["record_fig5"] == records.GPU_QUICK_RECORD
    paper = rerun.profile_parameters("paper", CHAPTER)
    assert paper["record_fig5"] not in (None, records.GPU_QUICK_RECORD)
    assert rerun.profile_parameters("smoke", CHAPTER).get("record_fig5") is None
    assert "gpu-quick" in records.GPU_QUICK_COMMAND and "'00 04'" in records.GPU_QUICK_COMMAND


COMMITTED = sorted((ROOT / "results").glob("fig5_*.csv")) if (ROOT / "results").is_dir() else []


@pytest.mark.parametrize("path", COMMITTED or [pytest.param(None, marks=pytest.mark.skip(
    reason="no Fig. 5 record is committed under results/ yet"))], ids=lambda p: getattr(p, "name", "none"))
def test_a_committed_record_is_valid_and_a_real_gpu_run(path):
    rec = records.read_fig5(path)  # a broken committed record fails here, loudly
    assert rec.is_gpu_run, f"{path} is not a GPU run ({rec.label}); stand-ins must never be committed"
    assert rec.provenance["commit"], f"{path} does not record the commit it was run at"


# --------------------------------------------------------------------------- chapter 4
def _outputs(executed: Path) -> tuple[str, dict]:
    """All text and markdown outputs of an executed notebook, and its glue (name -> text)."""
    nb = json.loads(executed.read_text())
    texts, glue = [], {}
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            meta = o.get("metadata", {}).get("scrapbook")
            if meta:
                value = "".join(data.get(meta.get("mime_prefix", "") + "text/plain", ""))
                try:  # as myst-nb reads it: the repr of a string loses its quotes
                    glue[meta["name"]] = str(ast.literal_eval(value))
                except (SyntaxError, ValueError):
                    glue[meta["name"]] = value
                continue
            for mime in ("text/markdown", "text/plain", "text/html"):
                if mime in data:
                    texts.append("".join(data[mime]))
            if "text" in o:
                texts.append("".join(o["text"]))
    return "\n".join(texts), glue


@pytest.mark.notebooks
@pytest.mark.slow
def test_chapter4_without_a_record_says_so_and_how_to_make_one():
    default = records.resolve(records.GPU_QUICK_RECORD)
    text, glue = _outputs(_smoke_runs.executed("04_level_repulsion"))  # the shared smoke run
    for key in FIG5_KEYS:
        assert f"sc_{key}_gpu" in glue
    if default.exists():  # a committed record: the chapter shows it (its validity is tested above)
        rec = records.read_fig5(default)
        assert "Recorded GPU run" in text and rec.provenance["device_name"] in text
    else:
        assert "No recorded GPU run exists yet" in text and records.GPU_QUICK_COMMAND in text
        assert all(glue[f"sc_{k}_gpu"] == "no recorded GPU run" for k in FIG5_KEYS)
        assert glue["dn_gpu_status"].startswith("None has been committed yet")


@pytest.mark.notebooks
@pytest.mark.slow
def test_chapter4_writes_its_record_and_shows_a_stand_in_as_a_stand_in(tmp_path):
    stand_in = records.write_fig5(tmp_path / "stand_in.csv", fake_results(), stand_in_provenance())
    mine = tmp_path / "written.csv"
    saved = os.environ.pop("MPLBACKEND", None)
    try:
        [executed] = rerun.run("smoke", ["04"], out=tmp_path / "run", progress=False,
                               overrides={"record_fig5": str(mine), "recorded_fig5": str(stand_in)})
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved
    # the record this run wrote: the smoke grid (40% noise, regular, seed 0) with both filters
    rec = records.read_fig5(mine)
    assert len(rec.frame) == 2 and set(rec.frame["shift"]) == {True, False}
    assert rec.frame.test_before.nunique() == 1  # both filters start from the same network
    prov = rec.provenance
    assert prov["profile"] == "smoke" and prov["device"] == "cpu" and not prov["stand_in"] and not rec.is_gpu_run
    assert set(prov["wall_s"]) == {"networks", "filtering"} and all(v > 0 for v in prov["wall_s"].values())
    assert prov["parameters"]["denoise_noise"] == [0.4] and prov["parameters"]["seeds"] == [0]
    assert "chapter 4's Fig. 5 cell" in prov["wall_what"]
    # the network's training time, read from its provenance (trained in this run's fresh cache,
    # earlier in the chapter: the Fig. 5 cell loads it, so its own "networks" time is small)
    tr = prov["networks_training"]
    assert tr["runs"] == 1 and tr["not_recorded"] == 0 and tr["wall_s"] > prov["wall_s"]["networks"]
    assert "training the networks took" in rec.describe()
    # the page: the stand-in, labelled as one, with its provenance, beside this run
    text, glue = _outputs(executed)
    assert "Stand-in for a recorded GPU run" in text and STAND_IN_DEVICE in text
    assert "No recorded GPU run exists yet" not in text
    assert "made up by the tests" in text and "profile test" in text
    for key in FIG5_KEYS:
        assert glue[f"sc_{key}_gpu"].startswith("stand-in for a recorded GPU run"), glue[f"sc_{key}_gpu"]
    # the stand-in's 80% regular, shifted networks, summarised as the page shows them
    s = records.summarise(fake_results())
    row = s[(s.schedule == "regular") & s["shift"] & (s.noise == 0.8)].iloc[0]
    assert f"{row.change:+.2%} ± {row.se:.2%} (mean ± s.e., 3 seeds) at 80%" in glue["sc_dn_fig5_high_gpu"]
    assert glue["dn_gpu_status"].startswith("Stand-in for a recorded GPU run")


def test_the_scorecard_page_lists_the_gpu_values_of_the_fig5_claims():
    page = (ROOT / "book" / "scorecard.md").read_text()
    section = page[page.index("## Chapter 4"):page.index("## Chapter 5")]
    for key in FIG5_KEYS:
        assert f"{{glue:text}}`../notebooks/04_level_repulsion.ipynb::sc_{key}_gpu:s`" in section
        assert f'claim("{key}"' in CHAPTER.read_text().replace('\\"', '"')
    assert "{glue:text}`../notebooks/04_level_repulsion.ipynb::dn_gpu_status:s`" in section

"""tools/mutation.py's survivors-only rerun (issue 17): when it may reuse a whole run, and how
it adds the rerun to that run's score. Hand-made summaries; mutmut is not run."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("mutation_tool", ROOT / "tools" / "mutation.py")
M = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(M)


def whole_run(**kw):
    run = dict(total=10, killed=6, survived=2, timeout=1, no_tests=1, not_run=0, other=0,
               survivor_names=["m.x_f__mutmut_1", "m.x_f__mutmut_2"], no_tests_names=["m.x_g__mutmut_1"],
               sampled=False, wall_s=100.0, source_sha256=M.source_sha256("spectra"), tests=["a.py"],
               date="2026-11-24")
    run.update(kw)
    return run


def test_survivors_and_untested_are_rerun_when_the_source_is_the_whole_runs():
    prev, names = M.previous_survivors({"spectra": whole_run()}, "spectra")
    assert names == ["m.x_f__mutmut_1", "m.x_f__mutmut_2", "m.x_g__mutmut_1"]
    assert prev["killed"] == 6


@pytest.mark.parametrize("summary, why", [
    ({}, "no whole-module run of spectra"),
    ({"spectra": whole_run(sampled=True)}, "no whole-module run of spectra"),
    ({"spectra": whole_run(source_sha256="0" * 64)}, "is not the source of its last whole run"),
    ({"spectra": {k: v for k, v in whole_run().items() if k != "source_sha256"}},
     "is not the source of its last whole run"),
])
def test_a_rerun_is_refused_without_a_matching_whole_run(summary, why):
    with pytest.raises(SystemExit, match=why):
        M.previous_survivors(summary, "spectra")


def test_the_rerun_updates_only_the_rerun_mutants():
    # of the 3 rerun mutants, 2 are now killed and 1 survives: 6 + 2 killed, the timeout kept
    rerun = dict(total=3, killed=2, survived=1, timeout=0, no_tests=0, not_run=0, other=0,
                 survivor_names=["m.x_f__mutmut_2"], no_tests_names=[], wall_s=7.0,
                 tests=["a.py", "b.py"], date="2026-11-25")
    s = M.merge_rerun(whole_run(), rerun, ["m.x_f__mutmut_1", "m.x_f__mutmut_2", "m.x_g__mutmut_1"])
    assert (s["total"], s["killed"], s["survived"], s["timeout"], s["no_tests"]) == (10, 8, 1, 1, 0)
    assert s["killed"] + s["survived"] + s["timeout"] + s["no_tests"] + s["not_run"] + s["other"] == 10
    assert s["survivor_names"] == ["m.x_f__mutmut_2"] and s["no_tests_names"] == []
    assert s["tests"] == ["a.py", "b.py"] and s["date"] == "2026-11-25"
    assert s["rerun_of_survivors"] == {"rerun": 3, "wall_s": 7.0, "whole_run_wall_s": 100.0}


def test_a_rerun_of_some_survivors_updates_those_and_keeps_the_others():
    # --only picked survivor 1 and the untested mutant: both killed now; survivor 2 not rerun
    rerun = dict(total=2, killed=2, survived=0, timeout=0, no_tests=0, not_run=0, other=0,
                 survivor_names=[], no_tests_names=[], wall_s=5.0, tests=["a.py", "c.py"], date="2026-11-25")
    s = M.merge_rerun(whole_run(), rerun, ["m.x_f__mutmut_1", "m.x_g__mutmut_1"])
    assert (s["total"], s["killed"], s["survived"], s["timeout"], s["no_tests"]) == (10, 8, 1, 1, 0)
    assert s["survivor_names"] == ["m.x_f__mutmut_2"] and s["no_tests_names"] == []
    # a second partial rerun of what is left: it still survives
    rerun2 = dict(rerun, total=1, killed=0, survived=1, survivor_names=["m.x_f__mutmut_2"], wall_s=2.0)
    s2 = M.merge_rerun(s, rerun2, ["m.x_f__mutmut_2"])
    assert (s2["killed"], s2["survived"], s2["no_tests"]) == (8, 1, 0)
    assert [r["rerun"] for r in s2["reruns"]] == [2, 1]


@pytest.mark.parametrize("names, total", [
    (["m.x_f__mutmut_1", "m.x_h__mutmut_9"], 2),  # a mutant the whole run killed, or never made
    (["m.x_f__mutmut_1"], 2),                     # the rerun counted other mutants than it names
])
def test_a_rerun_of_other_mutants_is_refused(names, total):
    rerun = dict(total=total, killed=total, survived=0, timeout=0, no_tests=0, not_run=0, other=0,
                 survivor_names=[], no_tests_names=[], wall_s=1.0, tests=[], date="")
    with pytest.raises(ValueError, match="cannot update a run with 2 survivors and 1 untested"):
        M.merge_rerun(whole_run(), rerun, names)


def test_recording_one_module_keeps_the_entries_other_runs_wrote_meanwhile(tmp_path):
    path = tmp_path / "summary.json"
    M.record(path, "spectra", {"killed": 1})
    # another run (started earlier, so its in-memory summary lacks spectra) records its module
    M.record(path, "data", {"killed": 2})
    assert json.loads(path.read_text()) == {"spectra": {"killed": 1}, "data": {"killed": 2}}
    M.record(path, "spectra", {"killed": 3})
    assert json.loads(path.read_text()) == {"spectra": {"killed": 3}, "data": {"killed": 2}}
    assert not list(tmp_path.glob("*.tmp"))

"""Committed notebooks are clean, parametrised, and each runs on the smoke profile."""
import json
from pathlib import Path

import pytest
import yaml

from rmtlib import rerun

import _smoke_runs

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_chapters():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_and_with_parameters_first(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "strip outputs"
    assert "parameters" in code[0].get("metadata", {}).get("tags", []), "first code cell must be tagged parameters"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    params = rerun.notebook_parameters(path)
    assert params, "the parameters cell holds plain values"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_cpu_profile_equals_the_notebook_defaults(path):
    cpu = yaml.safe_load((ROOT / "params" / "cpu.yaml").read_text()) or {}
    defaults = rerun.notebook_parameters(path)
    for key, value in (cpu.get(path.stem) or {}).items():
        assert defaults[key] == value, f"params/cpu.yaml {path.stem}.{key} differs from the notebook"
    for key, value in (cpu.get("all") or {}).items():
        if key in defaults:
            assert defaults[key] == value, f"params/cpu.yaml all.{key} differs from {path.stem}"


PROFILES = sorted(p.stem for p in (ROOT / "params").glob("*.yaml"))


def test_the_gpu_quick_profile_is_fig5_at_paper_scale_on_fashion_mnist():
    spec = yaml.safe_load((ROOT / "params" / "gpu-quick.yaml").read_text())
    assert spec["all"]["dataset"] == "fashion-mnist" and spec["all"]["n_train"] is None
    assert (spec["all"]["epochs_regular"], spec["all"]["epochs_overfitting"]) == (100, 500)
    grid = spec["04_level_repulsion"]
    noise = [round(0.1 * i, 1) for i in range(9)]
    assert grid["denoise_noise"] == grid["denoise_overfitting_noise"] == noise
    assert grid["seeds"] == list(range(10))


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_only_set_declared_parameters(profile):
    for path in NOTEBOOKS:
        rerun.profile_parameters(profile, path)  # raises on an undeclared name


def test_unknown_profile_and_notebook_are_refused(tmp_path):
    with pytest.raises(ValueError, match="smoke"):
        rerun.run("gpu", out=tmp_path)
    with pytest.raises(ValueError, match="no notebook matches"):
        rerun.run("smoke", ["99"], out=tmp_path)


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_the_smoke_profile(path):
    out = _smoke_runs.executed(path.stem)  # shared with the browser test: run once per session
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def test_plain_engine_runs_a_chapter_without_jupyter(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    [out] = rerun.run("smoke", ["00"], out=tmp_path, engine="plain",
                      overrides={"noise_levels": [0.0], "overfitting_noise": []})
    text = out.read_text()
    assert "noise_levels = [0.0, 0.2, 0.4, 1.0]" in text  # the parameters cell ran, then the override
    assert list(tmp_path.glob("00_model_zoo_fig*.png"))

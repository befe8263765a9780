import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test writes its caches (models, KS nulls) to a fresh folder."""
    monkeypatch.setenv("RMTLIB_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def fashion_small():
    from rmtlib import data

    return data.load("fashion-mnist", n_train=512, n_test=500, seed=0)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


try:  # Hypothesis profiles: derandomized in CI (the `CI` variable set), no example database there
    from hypothesis import HealthCheck, settings

    _common = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                          HealthCheck.too_slow])
    settings.register_profile("ci", derandomize=True, database=None, print_blob=True, **_common)
    settings.register_profile("dev", **_common)
    settings.load_profile("ci" if os.environ.get("CI") else "dev")
except ImportError:  # the property tests skip themselves without hypothesis
    pass

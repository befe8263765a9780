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

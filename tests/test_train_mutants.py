"""rmtlib.train: the Config door, the model cache's data check, progress and provenance (issue 17).

Written against the survivors of the mutation sample of rmtlib.train (TESTING.md). The
expectations are the documented bounds of every Config field (each boundary value accepted,
the next one refused, the error naming the field and what to pass), SGD written out by hand
(tests/test_train_exact.py) for the path without the fused kernel, and the documented
contract of `trained`: a cached model is returned only for the data it was trained on.
"""
import math

import pytest
import torch

import rmtlib.progress
from rmtlib import data, train
from rmtlib.train import Config, Schedule, trained
from test_train_exact import N, _by_hand, _dataset, _net

# a small network (one hidden layer of 16) keeps the cache tests fast
TINY = dict(model="lenet_300_100", model_options={"hidden": [16]}, n_train=256, epochs=1, seed=3, schedule="plain")


# --------------------------------------------------------------------------- the Config door
@pytest.mark.parametrize("field, ok, bad, message", [
    ("noise", 1.0, 1.0000001, r"noise must lie in \[0, 1\]; got 1\.0000001 \(the fraction of shuffled training "
                              r"labels, e\.g\. noise=0\.4\)"),
    ("noise", 0.0, -1e-9, r"noise must lie in \[0, 1\]; got -1e-09 \(the fraction of shuffled"),
    ("seed", 0, -1, r"seed must lie in \[0, inf\); got -1 \(e\.g\. seed=0\)"),
    ("n_train", 1, 0, r"n_train must lie in \[1, inf\); got 0 \(pass e\.g\. n_train=5000, or None for all\)"),
    ("epochs", 0, -1, r"epochs must lie in \[0, inf\); got -1 \(pass e\.g\. epochs=40, 0 for the initial "
                      r"weights, None for the schedule's\)"),
    ("batch_size", 1, 0, r"batch_size must lie in \[1, inf\); got 0 \(None for the schedule's\)"),
])
def test_config_fields_at_their_bounds(field, ok, bad, message):
    assert getattr(Config(**{field: ok}), field) == ok
    with pytest.raises(ValueError, match=message):
        Config(**{field: bad})


def test_config_names_the_valid_schedules_and_refuses_non_configs():
    with pytest.raises(ValueError, match=r"unknown schedule 'adam'; choose one of regular, overfitting, plain"):
        Config(schedule="adam")
    with pytest.raises(TypeError, match="config must be a dict or rmtlib.train.Config; got int"):
        Config.of(42)


def test_model_options_must_be_finite_numbers():
    cfg = Config(model="mini_alexnet", model_options={"l2": 1e-4, "channels": [4, 6]})
    assert cfg.model_options == (("channels", (4, 6)), ("l2", 1e-4))
    with pytest.raises(ValueError, match=r"model_options\['l2'\] must be finite; got nan"):
        Config(model="mini_alexnet", model_options={"l2": float("nan")})


# --------------------------------------------------------------------------- the training loop
def test_training_without_the_fused_sgd_kernel_is_the_same_sgd(monkeypatch):
    # torch < 2.4 has no fused SGD on the CPU (SGD(fused=True) raises): train() falls back to the
    # plain optimizer, which must make the same updates as SGD written out by hand
    real = torch.optim.SGD

    def old_torch_sgd(params, **kw):
        if kw.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of "
                               "supported devices")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "SGD", old_torch_sgd)
    sched = Schedule("t", lr=0.3, momentum=0.9, batch_size=5, epochs=2, gamma=0.8)
    d, net = _dataset(), _net(0.03)
    want, _ = _by_hand(net, d, sched, 2, 5, seed=4, l2=0.03)
    train.train(net, d, schedule=sched, seed=4, progress=False, device="cpu")
    for p, w in zip(net.parameters(), want):
        assert torch.allclose(p.detach(), w, rtol=0, atol=1e-12)


def test_progress_bar_shows_both_accuracies_and_vanishes(monkeypatch):
    bars = []

    class Bar:
        def __init__(self, **kw):
            self.kw, self.updates, self.postfix, self.closed = kw, 0, [], False
            bars.append(self)

        def update(self, n):
            self.updates += n

        def set_postfix(self, **kw):
            self.postfix.append(kw)

        def close(self):
            self.closed = True

    monkeypatch.setattr(rmtlib.progress, "progress", lambda iterable=None, **kw: Bar(**kw))
    d = _dataset()
    hist = train.train(_net(), d, schedule=Schedule("t", lr=0.3, momentum=0.0, batch_size=N, epochs=2),
                       progress=True, device="cpu")
    [bar] = bars
    # a finished bar is removed (leave=False): the book's pages show no stale bars
    assert bar.kw == dict(total=2, desc="train t", leave=False) and bar.updates == 2 and bar.closed
    assert bar.postfix == [dict(train=f"{hist.train_acc[e]:.3f}", test=f"{hist.test_acc[e]:.3f}") for e in (1, 2)]


# --------------------------------------------------------------------------- the model cache
def test_trained_uses_the_seed_and_never_returns_a_model_of_other_data(monkeypatch):
    cfg = Config(**TINY)
    ds_a = cfg.load_data()
    net, hist = trained(cfg, data=ds_a, progress=False, device="cpu")
    # trained(cfg) is cfg's network trained by train() with cfg's seed (train() itself is
    # checked against SGD written out by hand in test_train_exact.py)
    ref = cfg.build_model(ds_a.input_shape, ds_a.num_classes)
    train.train(ref, ds_a, schedule=cfg.schedule, epochs=cfg.epochs, seed=3, progress=False, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values()))
    # what it depended on is recorded, and comes back with a cache hit
    prov = hist.provenance
    assert prov["torch"] == torch.__version__ and prov["threads"] == torch.get_num_threads()
    assert prov["device"] == "cpu"
    _, hit = train.load_cached(cfg)
    assert hit.provenance == prov
    # the same config on other data (here another validation/test split: everything the config
    # fixes is equal, the split indices are not) must be retrained, not served from the cache
    monkeypatch.setattr(data, "_SPLIT_SEED", data._SPLIT_SEED + 1)
    ds_b = cfg.load_data()
    assert ds_b.fingerprint()["indices_sha256"] != ds_a.fingerprint()["indices_sha256"]
    calls = []
    real_train = train.train
    monkeypatch.setattr(train, "train", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    with pytest.warns(UserWarning, match=r"trained on other data \(indices_sha256, labels_sha256 differ\)"):
        _, hist_b = trained(cfg, data=ds_b, progress=False, device="cpu")
    assert calls == [1]
    assert train.load_cached(cfg, data=ds_b) is not None  # the file now holds the model of ds_b
    assert math.isfinite(hist_b.test_acc[-1])

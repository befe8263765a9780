"""rmtlib.ensemble against SGD written out by hand, on every update path (issue 17, mutation testing).

Written against the survivors of the mutation sample of rmtlib.ensemble (TESTING.md). Each
member of an ensemble must follow SGD with momentum and per-layer weight decay written out in
plain torch (`_by_hand` of tests/test_train_exact.py: its own seeded batch order, float64, so
only rounding differs, ~1e-16 per operation; 1e-12 leaves four decades of room while a wrong
decay, momentum or batch order moves the weights by more than 1e-3). The paths: batched
products with the fused SGD kernel (the CPU default), the same without the kernel (the update
written in torch ops, which CUDA runs), torch.func.vmap, and members trained in chunks.
"""
import math
from dataclasses import replace

import pytest
import torch

from rmtlib import ensemble, train
from rmtlib.data import Split
from rmtlib.train import Config, Schedule
from test_train_exact import _by_hand, _dataset, _net

SCHED = Schedule("t", lr=0.3, momentum=0.9, batch_size=5, epochs=2, gamma=0.8)
SEEDS = [11, 12, 13]
L2 = 0.03


def _members(k):
    return [_net(L2) for _ in range(k)]  # same initial weights, other batch orders


def _check_against_sgd_by_hand(nets, d, seeds):
    for net, seed in zip(nets, seeds):
        want, _ = _by_hand(_net(L2), d, SCHED, SCHED.epochs, SCHED.batch_size, seed=seed, l2=L2)
        for p, w in zip(net.parameters(), want):
            assert torch.allclose(p.detach(), w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method, fused", [("bmm", True), ("bmm", False), ("vmap", True)])
def test_every_member_follows_sgd_written_out_by_hand(method, fused, monkeypatch):
    if not fused:  # the update without torch._fused_sgd_ (CUDA's path, and older torch)
        monkeypatch.delattr(torch, "_fused_sgd_", raising=False)
    d = _dataset()
    nets = _members(2)
    hists = ensemble.train_ensemble(nets, d, seeds=SEEDS[:2], schedule=SCHED, device="cpu", progress=False,
                                    method=method)
    _check_against_sgd_by_hand(nets, d, SEEDS[:2])
    assert all(h.epoch == [0, 1, 2] for h in hists)
    # the two members differ (other batch orders): not one network twice
    assert (nets[0][0].weight - nets[1][0].weight).abs().max() > 1e-3


def test_max_members_trains_in_chunks_of_that_size(monkeypatch):
    sizes = []
    real = ensemble._train_group

    def spy(models, *args, **kw):
        sizes.append(len(models))
        return real(models, *args, **kw)

    monkeypatch.setattr(ensemble, "_train_group", spy)
    d = _dataset()
    nets = _members(3)
    ensemble.train_ensemble(nets, d, seeds=SEEDS, schedule=SCHED, device="cpu", progress=False, max_members=2)
    assert sizes == [2, 1]
    _check_against_sgd_by_hand(nets, d, SEEDS)


def test_untracked_training_metrics_are_nan_and_test_metrics_are_exact():
    d = _dataset(3)
    nets = _members(2)
    hists = ensemble.train_ensemble(nets, d, seeds=SEEDS[:2], schedule=SCHED, device="cpu", progress=False,
                                    track_train=False)
    for net, h in zip(nets, hists):
        assert all(math.isnan(v) for v in h.train_acc + h.train_loss) and len(h.train_loss) == 3
        # the last test metrics: the final weights evaluated by hand
        with torch.no_grad():
            out = net(d.test.x)
        acc = float((out.argmax(1) == d.test.y).double().mean())
        loss = float(-torch.log_softmax(out, 1)[torch.arange(len(d.test.y)), d.test.y].mean())
        assert h.test_acc[-1] == pytest.approx(acc, abs=1e-12) and h.test_loss[-1] == pytest.approx(loss, rel=1e-12)


def test_inputs_are_cast_to_the_members_dtype():
    # float32 inputs, float64 members: the ensemble computes in the members' dtype, so each member
    # follows SGD by hand in float64 on the same (float32-representable) inputs
    d64 = _dataset()
    d32 = replace(d64, train=Split(d64.train.x.float(), d64.train.y), test=Split(d64.test.x.float(), d64.test.y))
    d64 = replace(d64, train=Split(d32.train.x.double(), d64.train.y), test=Split(d32.test.x.double(), d64.test.y))
    nets = _members(2)
    ensemble.train_ensemble(nets, d32, seeds=SEEDS[:2], schedule=SCHED, device="cpu", progress=False)
    _check_against_sgd_by_hand(nets, d64, SEEDS[:2])


def test_train_configs_trains_each_config_for_its_epochs():
    # two configs that differ in seed and noise, one epoch of one batch each: every member is its
    # config trained alone (float32: the batched products round differently, < 1e-5 relative as in
    # test_ensemble.py; another epoch count or seed changes the weights by far more)
    opts = dict(model="lenet_300_100", model_options={"hidden": [8]}, n_train=64, epochs=1, schedule="plain")
    cfgs = [Config(**opts, seed=0, noise=0.0), Config(**opts, seed=1, noise=0.5)]
    out, dss = ensemble.train_configs(cfgs, device="cpu", progress=False)
    for cfg, ds, (net, hist) in zip(cfgs, dss, out):
        assert hist.epoch == [0, 1] and not net.training
        ref = cfg.build_model(ds.input_shape, ds.num_classes)
        train.train(ref, ds, schedule="plain", epochs=1, seed=cfg.seed, progress=False, device="cpu")
        for a, b in zip(net.state_dict().values(), ref.state_dict().values()):
            assert ((a - b).norm() / b.norm()).item() < 1e-5

"""Ensembles (rmtlib.ensemble): K members trained as one batched model equal K separate runs."""
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from rmtlib import data, ensemble, filtering, models, train
from rmtlib.data import Split
from rmtlib.train import Config

GRID = [(0.0, 0), (0.4, 1), (1.0, 2)]  # (noise, seed) of three members


def _double(ds):
    return replace(ds, train=Split(ds.train.x.double(), ds.train.y), val=Split(ds.val.x.double(), ds.val.y),
                   test=Split(ds.test.x.double(), ds.test.y))


def _member_data(dtype=torch.float64, n_train=256, n_test=200):
    dss = [data.load("fashion-mnist", noise=p, seed=s, n_train=n_train, n_test=n_test) for p, s in GRID]
    return [_double(d) for d in dss] if dtype == torch.float64 else dss


def _rel_err(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(((x - y).norm() / y.norm()).item() for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def _alone(cfg, ds, dtype, epochs=2, **kw):
    net = cfg.build_model(ds.input_shape, ds.num_classes).to(dtype)
    hist = train.train(net, ds, epochs=epochs, seed=cfg.seed, progress=False, device="cpu", **kw)
    return net, hist


# Tolerance: in float64 every operation rounds at 1.1e-16 relative; the batched products sum
# in another order than the single ones, so each step differs at ~1e-16 and 16 SGD steps
# (2 epochs of 8 batches) amplify that by a modest factor (measured: < 1e-15). Any semantic
# difference (another batch order, label, learning rate, momentum, decay or init) changes
# the weights by 1e-3 or more relative, so 1e-10 separates the two cases by 7 decades.
@pytest.mark.parametrize("method", ["bmm", pytest.param("vmap", marks=pytest.mark.slow)])
def test_member_equals_its_config_trained_alone_float64(method):
    dss = _member_data()
    cfgs = [Config(noise=p, seed=s, n_train=256, epochs=2) for p, s in GRID]
    nets = [c.build_model(d.input_shape, d.num_classes).double() for c, d in zip(cfgs, dss)]
    hists = ensemble.train_ensemble(nets, dss, seeds=[c.seed for c in cfgs], epochs=2, device="cpu",
                                    progress=False, method=method)
    for cfg, ds, net, hist in zip(cfgs, dss, nets, hists):
        ref, ref_hist = _alone(cfg, ds, torch.float64)
        assert _rel_err(net, ref) < 1e-10
        assert hist.test_acc == ref_hist.test_acc and hist.epoch == ref_hist.epoch == [0, 1, 2]
        assert np.allclose(hist.train_loss, ref_hist.train_loss, rtol=1e-10)
    # the members really differ (own labels, own batch order): not one network three times
    assert _rel_err(nets[0], nets[1]) > 1e-2


def test_member_equals_alone_float32_at_rounding_level():
    # float32 rounds at 6e-8; 16 steps of rounding differences amplified as in float64
    # stay below about 1e-5 relative (measured: 2e-7 to 4e-7), while a semantic error is far
    # larger (another batch order: 0.3 relative).
    dss = _member_data(torch.float32)
    cfgs = [Config(noise=p, seed=s, n_train=256, epochs=2) for p, s in GRID]
    nets = [c.build_model(d.input_shape, d.num_classes) for c, d in zip(cfgs, dss)]
    ensemble.train_ensemble(nets, dss, seeds=[c.seed for c in cfgs], epochs=2, device="cpu", progress=False)
    for cfg, ds, net in zip(cfgs, dss, nets):
        ref, _ = _alone(cfg, ds, torch.float32)
        assert _rel_err(net, ref) < 1e-5


def test_convolutions_and_per_layer_l2_match_alone_float64():
    # miniAlexNet (grouped convolutions, max pooling, response norm, L2 on fc1/fc2 as weight
    # decay) at a small width; same tolerance argument as above.
    opts = {"channels": [4, 6], "dense": [16, 8], "l2": 0.05}
    dss = [_double(data.load("fashion-mnist", noise=p, seed=s, n_train=64, n_test=50)) for p, s in GRID[:2]]
    cfgs = [Config(model="mini_alexnet", noise=p, seed=s, n_train=64, epochs=2, model_options=opts)
            for p, s in GRID[:2]]
    nets = [c.build_model(d.input_shape, d.num_classes).double() for c, d in zip(cfgs, dss)]
    ensemble.train_ensemble(nets, dss, seeds=[c.seed for c in cfgs], epochs=2, device="cpu", progress=False)
    for cfg, ds, net in zip(cfgs, dss, nets):
        ref, _ = _alone(cfg, ds, torch.float64)
        assert _rel_err(net, ref) < 1e-10
        no_decay = cfg.build_model(ds.input_shape, ds.num_classes).double()
        no_decay.fc1.l2 = no_decay.fc2.l2 = 0.0
        train.train(no_decay, ds, epochs=2, seed=cfg.seed, progress=False, device="cpu")
        assert (net.fc1.weight - no_decay.fc1.weight).norm() / no_decay.fc1.weight.norm() > 1e-6  # decay acted


def test_a_member_that_stops_early_stops_alone():
    dss = _member_data(n_train=128)[:2]
    cfgs = [Config(noise=p, seed=s, n_train=128) for p, s in GRID[:2]]
    nets = [c.build_model(d.input_shape, d.num_classes).double() for c, d in zip(cfgs, dss)]
    seen = []

    def stop_at_one(epoch, model, history):
        seen.append((epoch, len(history)))
        return epoch == 1

    class Begin:
        def on_train_begin(self, model, history):
            seen.append(("begin", len(history)))

        def on_epoch_end(self, epoch, model, history):
            return False

    hists = ensemble.train_ensemble(nets, dss, seeds=[c.seed for c in cfgs], epochs=3, device="cpu",
                                    progress=False, callbacks=[[stop_at_one], [Begin()]])
    assert hists[0].stopped_epoch == 1 and hists[0].stopped_by == "function" and len(hists[0]) == 2
    assert hists[1].stopped_epoch is None and len(hists[1]) == 4
    assert seen == [("begin", 1), (1, 2)]
    ref0, _ = _alone(cfgs[0], dss[0], torch.float64, epochs=1)
    ref1, _ = _alone(cfgs[1], dss[1], torch.float64, epochs=3)
    assert _rel_err(nets[0], ref0) < 1e-10 and _rel_err(nets[1], ref1) < 1e-10


def test_configs_differing_in_model_data_or_schedule_are_refused():
    base = dict(n_train=256, epochs=1)
    for field, other in (("model", "lenet"), ("data", "cifar10"), ("schedule", "overfitting"), ("n_train", 128)):
        cfgs = [Config(**base, seed=0), Config(**{**base, field: other}, seed=1)]
        with pytest.raises(ValueError, match=field):
            ensemble.check_configs(cfgs)
    ensemble.check_configs([Config(**base, seed=0, noise=0.0), Config(**base, seed=1, noise=0.4)])  # fine


def test_bad_ensemble_input_fails_before_training(fashion_small):
    torch.manual_seed(0)
    a, b = models.mlp([784, 32, 10]), models.mlp([784, 16, 10])
    with pytest.raises(ValueError, match="model"):
        ensemble.train_ensemble([a, b], fashion_small, seeds=[0, 1], epochs=1, progress=False)
    other = data.load("fashion-mnist", n_train=100, n_test=50)
    with pytest.raises(ValueError, match="n_train"):
        ensemble.train_ensemble([a, models.mlp([784, 32, 10])], [fashion_small, other], seeds=[0, 1],
                                epochs=1, progress=False)
    with pytest.raises(ValueError, match="one dataset, seed"):
        ensemble.train_ensemble([a], fashion_small, seeds=[0, 1], epochs=1, progress=False)
    with pytest.raises(ValueError, match="precision"):
        ensemble.train_ensemble([a], fashion_small, seeds=[0], epochs=1, progress=False, precision="fp8")


def test_out_of_memory_splits_into_chunks_and_warns_once(monkeypatch):
    dss = _member_data(torch.float32, n_train=64, n_test=50)
    dss = dss + dss[:2]  # five members
    seeds = [0, 1, 2, 3, 4]
    real = ensemble._train_group
    sizes = []

    def small_gpu(models, *args, **kw):  # pretends that more than two members do not fit
        sizes.append(len(models))
        if len(models) > 2:
            for m in models:  # half-trained state, as a real failure leaves it
                with torch.no_grad():
                    next(m.parameters()).add_(1.0)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(models, *args, **kw)

    monkeypatch.setattr(ensemble, "_train_group", small_gpu)
    nets = []
    for s in seeds:
        torch.manual_seed(s)
        nets.append(models.mlp([784, 32, 10]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hists = ensemble.train_ensemble(nets, dss, seeds=seeds, epochs=1, device="cpu", progress=False)
    oom = [w for w in caught if "out of GPU memory" in str(w.message)]
    assert len(oom) == 1 and sizes == [5, 3, 2, 1, 2]
    assert all(len(h) == 2 for h in hists)
    for s, ds, net in zip(seeds, dss, nets):  # the failed attempt left no trace
        torch.manual_seed(s)
        ref = models.mlp([784, 32, 10])
        train.train(ref, ds, epochs=1, seed=s, progress=False, device="cpu")
        assert _rel_err(net, ref) < 1e-5


def test_trained_many_trains_only_the_missing_members(monkeypatch):
    grid = [Config(model="lenet", noise=p, seed=s, n_train=128, epochs=1) for p, s in GRID]
    grid.append(Config(model="lenet", noise=0.4, seed=1, n_train=128, epochs=1, schedule="overfitting"))
    net1, hist1 = train.trained(grid[1], progress=False, device="cpu")
    calls = []
    real = ensemble.train_ensemble

    def spy(models, datasets, **kw):
        calls.append((len(models), sorted(kw["seeds"])))
        return real(models, datasets, **kw)

    monkeypatch.setattr(ensemble, "train_ensemble", spy)
    out = train.trained_many(grid, progress=False, device="cpu")
    # one ensemble for the two regular misses, one for the overfitting config; grid[1] loaded
    assert sorted(calls) == [(1, [1]), (2, [0, 2])]
    assert all(torch.equal(a, b) for a, b in zip(out[1][0].state_dict().values(), net1.state_dict().values()))
    assert out[1][1].test_acc == hist1.test_acc
    for cfg, (net, hist) in zip(grid, out):
        hit = train.load_cached(cfg)
        assert hit is not None and len(hist) == 2
        assert all(torch.equal(a, b) for a, b in zip(hit[0].state_dict().values(), net.state_dict().values()))
    calls.clear()
    again = train.trained_many(grid, progress=False, device="cpu")
    assert calls == [] and len(again) == len(grid)


def test_running_epoch_train_accuracy_equals_the_full_evaluation_when_weights_stand_still(fashion_small):
    # with lr = 0 the weights do not move inside an epoch, so the running mean over the
    # mini-batches must equal the end-of-epoch evaluation (up to float32 summation order)
    torch.manual_seed(0)
    net = models.mlp([784, 32, 10])
    run = train.train(net, fashion_small, epochs=2, lr=0.0, progress=False, device="cpu", track_train="epoch")
    full = train.train(net, fashion_small, epochs=1, lr=0.0, progress=False, device="cpu", track_train="full")
    assert run.train_acc[1] == run.train_acc[2] == full.train_acc[1]
    assert run.train_loss[2] == pytest.approx(full.train_loss[1], rel=1e-5)
    [ens] = ensemble.train_ensemble([net], fashion_small, seeds=[0], epochs=1, lr=0.0, progress=False,
                                    device="cpu", track_train="epoch")
    assert ens.train_acc[1] == full.train_acc[1]
    torch.manual_seed(0)
    moving = train.train(models.mlp([784, 32, 10]), fashion_small, epochs=1, progress=False, track_train="epoch")
    assert 0.1 < moving.train_acc[1] < 1.0


def test_filtering_accepts_an_ensemble(fashion_small):
    nets = []
    for s in (0, 1):
        torch.manual_seed(s)
        net = models.mlp([784, 48, 32, 10])
        train.train(net, fashion_small, epochs=1, seed=s, progress=False, device="cpu")
        nets.append(net)
    fr = [0.0, 0.5, 0.9]
    many = filtering.removal_sweep(nets, ["fc1"], fr, fashion_small, splits=("test",))
    for net, df in zip(nets, many):
        assert df.equals(filtering.removal_sweep(net, ["fc1"], fr, fashion_small, splits=("test",)))
    assert not many[0].test_acc.equals(many[1].test_acc)
    reports = filtering.denoise(nets, [fashion_small.val] * 2, test=fashion_small.test, fractions=fr,
                                progress_bar=False)
    for net, (filtered, rep) in zip(nets, reports):
        _, alone = filtering.denoise(net, fashion_small.val, test=fashion_small.test, fractions=fr,
                                     progress_bar=False)
        assert rep.equals(alone) and isinstance(filtered, torch.nn.Module)
    with pytest.raises(ValueError, match="entries for 2 models"):
        filtering.denoise(nets, [fashion_small.val] * 3)


# --------------------------------------------------------------------------- CUDA (skipped without a GPU)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_cuda_graph_ensemble_equals_the_cpu_ensemble_in_strict_float32():
    # strict float32 on both devices: the products sum in other orders (cuBLAS vs MKL), so
    # weights agree at float32 rounding amplified by 16 steps (< 1e-4 relative), while any
    # error in the captured step (stale indices, a missed update, a doubled gradient) is >= 1e-3.
    dss = _member_data(torch.float32)
    cfgs = [Config(noise=p, seed=s, n_train=256, epochs=2) for p, s in GRID]
    cpu = [c.build_model(d.input_shape, d.num_classes) for c, d in zip(cfgs, dss)]
    gpu = [c.build_model(d.input_shape, d.num_classes) for c, d in zip(cfgs, dss)]
    seeds = [c.seed for c in cfgs]
    hc = ensemble.train_ensemble(cpu, dss, seeds=seeds, epochs=2, device="cpu", progress=False)
    hg = ensemble.train_ensemble(gpu, dss, seeds=seeds, epochs=2, device="cuda", progress=False,
                                 precision="float32", cuda_graph=True)
    for a, b, x, y in zip(cpu, gpu, hc, hg):
        assert next(b.parameters()).is_cuda
        assert _rel_err(b.cpu(), a) < 1e-4
        assert np.allclose(x.test_acc, y.test_acc, atol=2 / 200)


@cuda
def test_cuda_tf32_and_bfloat16_train_and_restore_the_global_flags():
    dss = _member_data(torch.float32)[:2]
    before = torch.backends.cuda.matmul.allow_tf32
    for precision in ("tf32", "bfloat16"):
        nets = []
        for s in (0, 1):
            torch.manual_seed(s)
            nets.append(models.mlp1024())
        hs = ensemble.train_ensemble(nets, dss, seeds=[0, 1], epochs=2, device="cuda", progress=False,
                                     precision=precision)
        assert all(h.train_loss[-1] < h.train_loss[0] for h in hs)
    assert torch.backends.cuda.matmul.allow_tf32 == before

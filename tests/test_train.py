import pytest
import torch
from torch import nn

from rmtlib import models, train
from rmtlib._io import load_checked
from rmtlib.train import Config, History, trained

SMALL = dict(data="fashion-mnist", n_train=256, epochs=2, seed=3)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return models.mlp([784, 64, 10])


def test_loss_falls(fashion_small):
    net = _mlp()
    hist = train.train(net, fashion_small, epochs=3, progress=False, device="cpu")
    assert len(hist) == 4 and hist.epoch == [0, 1, 2, 3]
    assert hist.train_loss[-1] < 0.8 * hist.train_loss[0]
    assert hist.train_acc[-1] > 0.5  # chance is 0.1


def test_same_seed_same_weights(fashion_small):
    nets = [_mlp(), _mlp(), _mlp()]
    for net, seed in zip(nets, (7, 7, 8)):
        train.train(net, fashion_small, epochs=2, seed=seed, progress=False, device="cpu")
    a, b, c = (dict(n.state_dict()) for n in nets)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_callback_stops_at_the_epoch_it_reports(fashion_small):
    seen = []

    def stop_at_two(epoch, model, history):
        seen.append(epoch)
        return epoch == 2

    class Stopper:
        def on_epoch_end(self, epoch, model, history):
            if epoch == 4:
                raise train.StopTraining

    hist = train.train(_mlp(), fashion_small, epochs=10, callbacks=[stop_at_two], progress=False)
    assert seen == [1, 2] and hist.stopped_epoch == 2 and hist.epoch[-1] == 2
    hist = train.train(_mlp(), fashion_small, epochs=10, callbacks=[Stopper()], progress=False)
    assert hist.stopped_epoch == 4 and hist.stopped_by == "Stopper" and len(hist) == 5


def test_schedules():
    reg, over = train.SCHEDULES["regular"], train.SCHEDULES["overfitting"]
    assert (reg.momentum, reg.batch_size, reg.epochs) == (0.95, 32, 100)
    assert reg.lr_at(0) == 0.005 and reg.lr_at(10) == pytest.approx(0.005 * 0.95**10)
    assert over.lr_at(49) == pytest.approx(0.001) and over.lr_at(50) == pytest.approx(0.0007)
    assert over.lr_at(499) == pytest.approx(0.001 * 0.7**9) and over.epochs == 500
    assert train.SCHEDULES["plain"].batch_size == 64


def test_history_records_the_learning_rate(fashion_small):
    hist = train.train(_mlp(), fashion_small, epochs=2, progress=False, schedule="regular")
    assert hist.lr[1:] == pytest.approx([0.005, 0.005 * 0.95])


def test_l2_becomes_per_layer_weight_decay():
    net = models.build("mini_alexnet", (3, 32, 32), 10, channels=(4, 4), dense=(8, 6))
    groups = train._param_groups(net)
    decays = {g["weight_decay"]: sum(p.numel() for p in g["params"]) for g in groups}
    linears = [m for m in net if isinstance(m, nn.Linear)]
    assert decays[2e-4] == linears[0].weight.numel() + linears[1].weight.numel()
    assert sum(decays.values()) == models.count_parameters(net)


def test_bad_training_input_fails_before_training(fashion_small):
    with pytest.raises(ValueError, match="regular, overfitting, plain"):
        train.train(_mlp(), fashion_small, schedule="adam")
    with pytest.raises(ValueError, match="epochs"):
        train.train(_mlp(), fashion_small, epochs=-1)
    with pytest.raises(TypeError, match="Dataset"):
        train.train(_mlp(), (torch.zeros(3), torch.zeros(3)))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            train.train(_mlp(), fashion_small, device="cuda")
    with pytest.raises(ValueError, match="unknown device"):
        train.train(_mlp(), fashion_small, device="tpu")
    with pytest.raises(ValueError, match="unknown model"):
        trained(dict(SMALL, model="resnet"))
    with pytest.raises(ValueError, match="unknown config keys"):
        trained(dict(SMALL, lr=0.1))


def test_config_key_covers_every_field():
    base = Config(**SMALL)
    variants = [Config(**dict(SMALL, **{k: v})) for k, v in
                dict(noise=0.2, seed=4, n_train=512, model="lenet", schedule="overfitting",
                     epochs=3, data="cifar10", n_val=100, batch_size=8,
                     model_options={"init": "default"}).items()]
    keys = {base.key()} | {v.key() for v in variants}
    assert len(keys) == len(variants) + 1


def test_cache_hit_returns_identical_weights_without_training(monkeypatch):
    model, hist = trained(SMALL, progress=False)
    assert Config(**SMALL).path().is_file()

    def boom(*args, **kwargs):
        raise AssertionError("trained() retrained on a cache hit")

    monkeypatch.setattr(train, "train", boom)
    again, hist2 = trained(SMALL, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert hist2.test_acc == hist.test_acc


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_cache_file_is_retrained(damage):
    model, _ = trained(SMALL, progress=False)
    path = Config(**SMALL).path()
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        raw[-100] ^= 0xFF
    else:
        raw = bytearray(b"not a model")
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="retraining"):
        again, _ = trained(SMALL, progress=False)
    # same config, same seed: retraining reproduces the same weights, and the file is whole again
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert load_checked(path)[1]["config"]["seed"] == 3


def test_random_initialisation_is_epoch_zero():
    model, hist = trained(dict(SMALL, epochs=0), progress=False)
    assert len(hist) == 1 and hist.epoch == [0]
    torch.manual_seed(3)
    fresh = models.build("mlp1024", (1, 28, 28), 10)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))


def test_history_round_trip():
    h = History()
    h.append(epoch=0, lr=0.1, train_loss=1.0, train_acc=0.5, test_loss=1.1, test_acc=0.4)
    h.record("s_n", 0, 0.25)
    assert History.from_dict(h.to_dict()) == h
    assert list(h.to_frame().columns) == ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc"]


def test_first_full_epoch_is_the_first_that_prints_as_100_percent():
    # Table S1 prints training accuracy to one decimal: 99.95% prints as 100.0%, 99.94% as
    # 99.9%. So 0.9994 is not full, 0.9995 is, and 1.0 need not be reached.
    h = History()
    for e, acc in enumerate([0.1, 0.9994, 0.9995, 0.9990, 1.0]):
        h.append(epoch=e, lr=0.1, train_loss=1.0, train_acc=acc, test_loss=1.0, test_acc=0.5)
    assert train.FULL_TRAIN_ACC == 0.9995
    assert train.first_full_epoch(h) == 2
    assert train.first_full_epoch(h, full=1.0) == 4
    never = History()
    never.append(epoch=0, lr=0.1, train_loss=1.0, train_acc=0.9994, test_loss=1.0, test_acc=0.5)
    assert train.first_full_epoch(never) is None


def test_first_full_epoch_rejects_bad_input():
    with pytest.raises(TypeError, match="history"):
        train.first_full_epoch({"epoch": [0], "train_acc": [1.0]})
    with pytest.raises(ValueError, match="full"):
        train.first_full_epoch(History(), full=99.95)

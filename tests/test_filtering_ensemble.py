"""Batched filtering of ensembles (issue 11, Deliver 4): `removal_sweep` and `denoise` given a
list of K models run the members in one batch. Each member's result must equal (i) the
single-model route and (ii) an independent expectation computed here by hand (SVD with
torch.linalg, smallest values zeroed, a plain forward pass of a pruned copy).

Tolerances: the tests run in float64. The batched route sums the same products in another
order (bmm against mm), so logits agree to ~1e-15 relative; a prediction can only flip when
the two largest logits of an image lie within ~1e-13 of each other, which for a few hundred
images of continuous random data has probability ~1e-10. Accuracies are therefore compared
exactly (a flip would be a real bug, e.g. a member evaluated with another member's weights,
which changes a sizeable fraction of predictions).
"""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from rmtlib import filtering, models
from rmtlib.data import Split

FRACTIONS = np.linspace(0, 1, 9)


def _split(n, shape, gen, classes):
    x = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    # a learnable rule (so that filtering changes predictions in a structured way) plus label noise
    y = (x.flatten(1)[:, :classes] + 0.7 * torch.randn(n, classes, generator=gen, dtype=torch.float64)).argmax(1)
    return Split(x, y)


def _data(shape, seed=0, n=240, classes=4):
    g = torch.Generator().manual_seed(seed)
    return {"train": _split(n, shape, g, classes), "val": _split(n, shape, g, classes),
            "test": _split(n, shape, g, classes)}


def _train(net, data, steps=80, lr=0.05):
    net = net.double()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(data["train"].x), data["train"].y)
        opt.zero_grad(); loss.backward(); opt.step()
    return net.eval()


def _mlps(K=3, widths=(20, 40, 30, 24, 4), data=None):
    nets = []
    for s in range(K):
        torch.manual_seed(s)
        nets.append(_train(models.mlp(list(widths)), data or _data((widths[0],))))
    return nets


def _hand_pruned_accuracy(net, layers, fraction, split):
    """Accuracy of a copy of `net` whose `layers` lose their round(f M) smallest singular values."""
    out = copy.deepcopy(net)
    mods = dict(out.named_modules())
    for name in layers:
        W = mods[name].weight.detach()
        W2 = W.reshape(W.shape[0], -1)
        U, S, Vh = torch.linalg.svd(W2, full_matrices=False)
        k = int(round(fraction * len(S)))
        S = S.clone()
        if k:
            S[len(S) - k:] = 0
        with torch.no_grad():
            mods[name].weight.copy_(((U * S) @ Vh).reshape(W.shape))
    with torch.no_grad():
        return float((out(split.x).argmax(1) == split.y).double().mean())


@pytest.mark.parametrize("layers", [["fc1"], ["fc2", "fc3"]])
def test_batched_sweep_equals_single_models_and_hand_pruned_copies(layers):
    data = _data((20,))
    nets = _mlps(data=data)
    many = filtering.removal_sweep(nets, layers, FRACTIONS, data, splits=("train", "test"))
    assert isinstance(many, list) and len(many) == 3
    for net, df in zip(nets, many):
        alone = filtering.removal_sweep(net, layers, FRACTIONS, data, splits=("train", "test"))
        assert df.equals(alone)
        for f, acc in zip(FRACTIONS[::4], df.test_acc.values[::4]):
            assert acc == _hand_pruned_accuracy(net, layers, f, data["test"])
    # the members are different networks: their curves differ
    assert not np.array_equal(many[0].train_acc.values, many[1].train_acc.values)
    assert many[0].train_acc.iloc[0] > many[0].train_acc.iloc[-1]  # removing everything hurts


def test_batched_sweep_with_one_split_per_member():
    datas = [_data((20,), seed=s) for s in range(3)]
    nets = _mlps(data=datas[0])
    many = filtering.removal_sweep(nets, ["fc1"], FRACTIONS, datas, splits=("test",))
    for net, d, df in zip(nets, datas, many):
        assert df.test_acc.iloc[0] == _hand_pruned_accuracy(net, [], 0, d["test"])
        assert df.test_acc.iloc[3] == _hand_pruned_accuracy(net, ["fc1"], FRACTIONS[3], d["test"])
    # member 0 on member 1's data gives another curve: the data really is per member
    other = filtering.removal_sweep(nets[0], ["fc1"], FRACTIONS, datas[1], splits=("test",))
    assert not other.test_acc.equals(many[0].test_acc)


def test_batched_sweep_with_shift_equals_single_models():
    data = _data((20,))
    nets = _mlps(widths=(20, 60, 50, 4), data=data)
    many = filtering.removal_sweep(nets, ["fc1"], FRACTIONS, data, splits=("test",), shift=True)
    for net, df in zip(nets, many):
        assert df.equals(filtering.removal_sweep(net, ["fc1"], FRACTIONS, data, splits=("test",), shift=True))


def test_batched_sweep_of_a_conv_net():
    data = _data((3, 12, 12), n=120)
    nets = []
    for s in range(2):
        torch.manual_seed(s)
        nets.append(_train(models.mini_alexnet(3, 4, image_size=12, channels=(8, 6), dense=(16, 12)), data, 30))
    for layers in (["conv2"], ["conv1", "fc1"]):
        many = filtering.removal_sweep(nets, layers, FRACTIONS, data, splits=("test",), batch_size=50)
        for net, df in zip(nets, many):
            assert df.equals(filtering.removal_sweep(net, layers, FRACTIONS, data, splits=("test",), batch_size=50))
            assert df.test_acc.iloc[4] == _hand_pruned_accuracy(net, layers, FRACTIONS[4], data["test"])


@pytest.mark.parametrize("shift", [False, True])
def test_batched_denoise_equals_single_models(shift):
    data = _data((20,))
    nets = _mlps(data=data)
    before = [{k: v.clone() for k, v in n.state_dict().items()} for n in nets]
    many = filtering.denoise(nets, data["val"], test=data["test"], shift=shift, fractions=FRACTIONS,
                             progress_bar=False)
    for net, old, (filtered, rep) in zip(nets, before, many):
        assert all(torch.equal(old[k], v) for k, v in net.state_dict().items())  # inputs untouched
        _, alone = filtering.denoise(net, data["val"], test=data["test"], shift=shift, fractions=FRACTIONS,
                                     progress_bar=False)
        assert rep.equals(alone) and rep.attrs == alone.attrs
        # independent: the returned copy does what the report says
        with torch.no_grad():
            acc = float((filtered(data["test"].x).argmax(1) == data["test"].y).double().mean())
        assert acc == rep.attrs["test_after"]
    assert any(r.removed.sum() > 0 for _, r in many)  # the filter did something


def test_denoise_shifts_only_the_first_two_layers_by_default(monkeypatch):
    data = _data((20,))
    [net] = _mlps(K=1, data=data)
    fitted = []
    real = filtering._safe_fit

    def spy(S, shape):
        fitted.append(tuple(shape))
        return real(S, shape)

    monkeypatch.setattr(filtering, "_safe_fit", spy)
    shapes = {n: tuple(m.weight.shape) for n, m in net.named_children() if isinstance(m, nn.Linear)}
    for route in ([net], net):  # the batched route and the single route
        fitted.clear()
        filtering.denoise(route, data["val"], fractions=FRACTIONS, progress_bar=False)
        assert sorted(fitted) == sorted([shapes["fc1"], shapes["fc2"]])  # Staats et al.: first two layers
        fitted.clear()
        filtering.denoise(route, data["val"], fractions=FRACTIONS, shift_layers=["fc3"], progress_bar=False)
        assert fitted == [shapes["fc3"]]
        fitted.clear()
        filtering.denoise(route, data["val"], fractions=FRACTIONS, shift=False, progress_bar=False)
        assert fitted == []


def test_mixed_architectures_fall_back_to_one_model_at_a_time():
    data = _data((20,))
    a = _mlps(K=1, data=data)[0]
    torch.manual_seed(5)
    b = _train(models.mlp([20, 40, 30, 16, 4]), data)  # another width of fc3
    many = filtering.removal_sweep([a, b], ["fc1"], FRACTIONS, data, splits=("test",))
    assert many[1].equals(filtering.removal_sweep(b, ["fc1"], FRACTIONS, data, splits=("test",)))


def test_bad_ensemble_input():
    data = _data((20,))
    nets = _mlps(K=2, data=data)
    with pytest.raises(ValueError, match="empty"):
        filtering.removal_sweep([], ["fc1"], FRACTIONS, data)
    with pytest.raises(TypeError, match="member 1"):
        filtering.removal_sweep([nets[0], "net"], ["fc1"], FRACTIONS, data)
    with pytest.raises(ValueError, match="3 entries for 2 models"):
        filtering.removal_sweep(nets, ["fc1"], FRACTIONS, [data] * 3)
    with pytest.raises(ValueError, match="3 entries for 2 models"):
        filtering.denoise(nets, [data["val"]] * 3)
    with pytest.raises(TypeError, match="val must be"):
        filtering.denoise(nets, [data["val"], (data["val"].x, data["val"].y)])
    with pytest.raises(ValueError, match="fc9"):
        filtering.denoise(nets, data["val"], shift_layers=["fc9"])

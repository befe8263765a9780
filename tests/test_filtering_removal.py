import numpy as np
import pytest
import torch
from torch import nn

from rmtlib import filtering, models, spectra
from rmtlib.data import Split


def test_remove_smallest_zeroes_exactly_the_k_smallest():
    W = torch.randn(30, 20, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    S = torch.linalg.svdvals(W)
    for k in (0, 1, 7, 20):
        Sk = torch.linalg.svdvals(filtering.remove_smallest(W, k))
        assert torch.allclose(Sk[: 20 - k], S[: 20 - k], atol=1e-10)
        assert torch.all(Sk[20 - k :] < 1e-10)
    assert torch.allclose(filtering.remove_smallest(W, 0), W, atol=1e-12)
    with pytest.raises(ValueError, match=r"\[0, 20\]"):
        filtering.remove_smallest(W, 21)


def _data(shape, n=300, seed=0, classes=5):
    g = torch.Generator().manual_seed(seed)
    return {"train": Split(torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g)),
            "test": Split(torch.randn(n, *shape, generator=g), torch.randint(0, classes, (n,), generator=g))}


def _trained_like(model, data, steps=60):
    # a few steps of training so that predictions depend on the weights in a non-trivial way
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(data["train"].x), data["train"].y)
        opt.zero_grad(); loss.backward(); opt.step()
    return model.eval()


FRACTIONS = np.linspace(0, 1, 11)


def _check_against_reference(net, layers, data, sweeps):
    # Each route against the independent reference (numpy SVD, plain float64 forward):
    # identical up to samples whose two largest logits are within float32 error (near-ties)
    from _filter_reference import accuracy, filtered_net, k_of

    sizes = {n: min(dict(net.named_modules())[n].weight.reshape(
        dict(net.named_modules())[n].weight.shape[0], -1).shape) for n in layers}
    for j, f in enumerate(FRACTIONS):
        removed = {n: k_of(f, sizes[n]) for n in layers}
        for split in ("train", "test"):
            want, ties = accuracy(filtered_net(net, removed), data[split])
            for sweep in sweeps:
                assert [sweep[f"k_{n}"].iloc[j] for n in layers] == [removed[n] for n in layers]
                assert abs(sweep[f"{split}_acc"].iloc[j] - want) <= ties / len(data[split]) + 1e-12


@pytest.mark.parametrize("layers", [["fc1"], ["fc2"], ["fc1", "fc2", "fc3"], ["fc3", "fc1"]])
def test_fast_and_naive_sweeps_match_an_independent_reference_for_an_mlp(layers):
    torch.manual_seed(0)
    data = _data((1, 6, 6))
    net = _trained_like(models.mlp([36, 40, 30, 20, 5]), data)
    fast = filtering.removal_sweep(net, layers, FRACTIONS, data, method="fast", batch_size=128)
    naive = filtering.removal_sweep(net, layers, FRACTIONS, data, method="naive", progress_bar=False)
    _check_against_reference(net, layers, data, [fast, naive])
    assert fast.train_acc.iloc[0] > fast.train_acc.iloc[-1]  # removing everything hurts


@pytest.mark.parametrize("layers", [["conv2"], ["conv1", "fc1"], ["fc1", "conv1"]])
def test_fast_and_naive_sweeps_match_an_independent_reference_for_a_conv_net(layers):
    torch.manual_seed(1)
    data = _data((3, 12, 12), n=200)
    net = _trained_like(models.mini_alexnet(3, 5, image_size=12, channels=(8, 6), dense=(16, 12)), data, 30)
    fast = filtering.removal_sweep(net, layers, FRACTIONS, data, method="fast", batch_size=64)
    naive = filtering.removal_sweep(net, layers, FRACTIONS, data, method="naive", progress_bar=False)
    _check_against_reference(net, layers, data, [fast, naive])


def test_factored_layer_reproduces_the_full_forward_exactly():
    torch.manual_seed(2)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    dec = spectra.svd(spectra.weight_matrix(conv))
    f = filtering._Factored(conv, dec, torch.float64, torch.device("cpu"))
    x = torch.randn(5, 4, 7, 7, dtype=torch.float64)
    out = f.expand(f.project(x)[None], dec.S[None].double())[0]
    ref = nn.functional.conv2d(x, conv.weight.double(), conv.bias.double(), padding=1)
    assert torch.allclose(out, ref, atol=1e-10)


def test_bad_sweep_input():
    torch.manual_seed(0)
    data = _data((1, 6, 6))
    net = models.mlp([36, 10, 5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        filtering.removal_sweep(net, ["fc1"], [0.1, 1.2], data)
    with pytest.raises(ValueError, match=r"valid layer names: \['fc1', 'out'\]"):
        filtering.removal_sweep(net, ["fc7"], [0.1], data)
    with pytest.raises(ValueError, match="is not a Linear or Conv layer"):
        filtering.removal_sweep(net, ["relu1"], [0.1], data)


def test_image_folder_and_pretrained_loading_on_standins(tmp_path):
    from PIL import Image
    from rmtlib import data

    rng = np.random.default_rng(0)
    for cls in ("n001", "n002"):
        (tmp_path / "val" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "val" / cls / f"{i}.png")
    split = data.image_folder(tmp_path / "val", n=4, size=64)
    assert split.x.shape == (4, 3, 64, 64) and set(split.y.tolist()) <= {0, 1}
    with pytest.raises(data.DataNotFoundError, match="subfolder per class"):
        data.image_folder(tmp_path / "missing")
    # pretrained loading from a state_dict file (real weights need a download)
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.alexnet(weights=None)
    torch.save(ref.state_dict(), tmp_path / "alexnet.pt")
    net = models.pretrained("alexnet", tmp_path / "alexnet.pt")
    assert torch.equal(net.classifier[1].weight, ref.classifier[1].weight)
    assert net(split.x).shape == (4, 1000)
    with pytest.raises(ValueError, match="alexnet"):
        models.pretrained("resnet50")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.pretrained("alexnet", tmp_path / "nope.pt")

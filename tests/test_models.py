import math

import pytest
import torch
from torch import nn

from rmtlib import models


def _dense_params(widths):
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def test_mlp1024_shapes_and_parameters():
    net = models.mlp1024(784, 10)
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert models.count_parameters(net) == _dense_params([784, 1024, 512, 512, 10])
    shapes = [tuple(m.weight.shape) for m in net if isinstance(m, nn.Linear)]
    assert shapes == [(1024, 784), (512, 1024), (512, 512), (10, 512)]
    assert [n for n, m in net.named_children() if isinstance(m, nn.Linear)] == ["fc1", "fc2", "fc3", "out"]


@pytest.mark.parametrize("shape,flat", [((3, 32, 32), 150 * 8 * 8), ((1, 28, 28), 150 * 7 * 7)])
def test_mini_alexnet_shapes_and_parameters(shape, flat):
    net = models.build("mini_alexnet", shape, 10)
    assert net(torch.zeros(2, *shape)).shape == (2, 10)
    c = shape[0]
    convs = (300 * c * 25 + 300) + (150 * 300 * 25 + 150)
    assert models.count_parameters(net) == convs + _dense_params([flat, 384, 192, 10])
    l2 = [getattr(m, "l2", 0.0) for m in net if isinstance(m, nn.Linear)]
    assert l2 == [1e-4, 1e-4, 0.0]


def test_local_response_norm_matches_tensorflow_formula():
    torch.manual_seed(0)
    x = torch.randn(2, 17, 4, 4)
    r, bias, alpha, beta = 5, 1.0, 1.0, 0.5
    sq = x**2
    expected = torch.empty_like(x)
    for d in range(17):
        lo, hi = max(0, d - r), min(17, d + r + 1)
        expected[:, d] = x[:, d] / (bias + alpha * sq[:, lo:hi].sum(1)) ** beta
    got = models.tf_local_response_norm(r, bias, alpha, beta)(x)
    assert torch.allclose(got, expected, atol=1e-5)
    # and PyTorch's own layer with size = 2r+1, alpha' = alpha * size agrees
    torch_lrn = torch.nn.LocalResponseNorm(2 * r + 1, alpha=alpha * (2 * r + 1), beta=beta, k=bias)
    assert torch.allclose(torch_lrn(x), expected, atol=1e-5)


def test_glorot_uniform_statistics():
    torch.manual_seed(0)
    net = models.mlp1024(784, 10)
    first = net.fc1
    bound = math.sqrt(6 / (784 + 1024))
    w = first.weight.detach().double()
    assert w.abs().max() <= bound
    # Var of U(-a, a) is a^2/3; with 802,816 entries the relative standard error of the
    # sample variance is 3 * sqrt(4/45 / n) = 0.1%, so 1% is 10 standard errors.
    assert w.var().item() == pytest.approx(bound**2 / 3, rel=0.01)
    assert abs(w.mean().item()) < 5 * bound / math.sqrt(3 * w.numel())
    assert all(torch.all(m.bias == 0) for m in net if isinstance(m, nn.Linear))


def test_default_init_differs_from_glorot():
    torch.manual_seed(0)
    net = models.mlp([100, 50, 10], init="default")
    assert not torch.all(net.fc1.bias == 0)  # PyTorch's default init draws biases


@pytest.mark.parametrize("name,shape,n_out", [("lenet", (1, 28, 28), 10), ("nn1", (100,), 4),
                                               ("nn2", (2048,), 10), ("lenet", (3, 32, 32), 10)])
def test_other_models_shapes(name, shape, n_out):
    net = models.build(name, shape, n_out)
    assert net(torch.zeros(2, *shape)).shape == (2, n_out)


def test_nn1_widths():
    net = models.nn1(100, 10)
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [1024, 512, 384, 192, 10]


def test_bad_model_input():
    with pytest.raises(ValueError, match="mlp1024, mini_alexnet"):
        models.build("resnet", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="init"):
        models.mlp([4, 2], init="he")
    with pytest.raises(ValueError, match="positive integers"):
        models.mlp([4, 0, 2])
    with pytest.raises(ValueError, match="square images"):
        models.build("mini_alexnet", (784,), 10)

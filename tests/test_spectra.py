import numpy as np
import pytest
import torch
from torch import nn

from rmtlib import spectra


def test_conv_reshape_follows_methods_index_by_index():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 3, kernel_size=(2, 5))  # weight (K, L, M, N) = (3, 4, 2, 5)
    W = conv.weight.detach()
    K, L, M, N = W.shape
    Wt = spectra.weight_matrix(conv)
    assert Wt.shape == (K, L * M * N)
    for k in range(K):
        for l in range(L):
            for m in range(M):
                for n in range(N):
                    assert Wt[k, l * M * N + m * N + n] == W[k, l, m, n]


def test_weight_matrix_round_trip_is_exact():
    torch.manual_seed(1)
    for layer in (nn.Conv2d(3, 6, 3), nn.Linear(7, 5), nn.Conv1d(2, 4, 3)):
        before = layer.weight.detach().clone()
        W = spectra.weight_matrix(layer)
        W[0, 1] = 42.0  # a copy: the layer is untouched until written back
        assert torch.equal(layer.weight, before)
        spectra.set_weight_matrix(layer, W)
        expected = before.clone()
        expected.reshape(before.shape[0], -1)[0, 1] = 42.0
        assert torch.equal(layer.weight.detach(), expected)
    with pytest.raises(ValueError, match="does not fit"):
        spectra.set_weight_matrix(nn.Linear(3, 2), torch.zeros(3, 2))


def test_layers_lists_linear_and_conv_in_order():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 4), nn.Linear(4, 2))
    assert [n for n, _ in spectra.layers(net)] == ["0", "3", "4"]
    with pytest.raises(ValueError, match=r"valid layer names: \['0', '3', '4'\]"):
        spectra.get_layer(net, "1")
    with pytest.raises(TypeError, match="not a Linear, Conv or Embedding"):
        spectra.weight_matrix(nn.ReLU())


def test_embeddings_are_analysable():
    net = nn.Sequential(nn.Embedding(50, 8), nn.Flatten(), nn.Linear(8, 2))
    assert [n for n, _ in spectra.layers(net)] == ["0", "2"]
    assert spectra.weight_matrix(net[0]).shape == (50, 8)


@pytest.mark.parametrize("shape", [(40, 25), (25, 40), (30, 30)])
def test_svd_reconstructs_in_both_orientations(shape):
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    d = spectra.svd(W)
    assert d.U.shape == (shape[0], min(shape)) and d.Vh.shape == (min(shape), shape[1])
    assert torch.allclose(d.U @ torch.diag(d.S) @ d.Vh, W, atol=1e-10)
    assert torch.all(d.S[:-1] >= d.S[1:])
    assert np.allclose(spectra.singular_values(W), d.S.numpy())
    assert d.vectors("left").shape == (min(shape), shape[0])


def test_svd_falls_back_to_gesvd(monkeypatch):
    W = torch.randn(20, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def fail(*args, **kwargs):
        raise torch.linalg.LinAlgError("gesdd did not converge")

    monkeypatch.setattr(torch.linalg, "svd", fail)
    monkeypatch.setattr(torch.linalg, "svdvals", fail)
    d = spectra.svd(W)
    assert torch.allclose(d.U @ torch.diag(d.S) @ d.Vh, W, atol=1e-10)
    assert spectra.singular_values(W).shape == (12,)


def test_bad_matrices_are_refused():
    with pytest.raises(ValueError, match="2-D"):
        spectra.svd(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        spectra.svd(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(TypeError, match="numpy array, a torch tensor or a nested list"):
        spectra.svd({"a": 1})
    with pytest.raises(TypeError, match="complex"):
        spectra.svd(torch.ones(2, 2, dtype=torch.complex64))
    # nested lists are an accepted input (the one input door)
    assert spectra.singular_values([[3.0, 0.0], [0.0, 4.0]]).tolist() == [4.0, 3.0]


@pytest.mark.parametrize("shape", [(60, 25), (25, 60)])
def test_gram_route_matches_lapack(shape):
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    a, b = spectra.svd(W), spectra.svd(W, method="gram")
    assert torch.allclose(a.S, b.S, rtol=1e-10)
    assert torch.allclose(b.U @ torch.diag(b.S) @ b.Vh, W, atol=1e-10)
    # vectors agree up to sign
    assert torch.allclose((a.Vh * b.Vh).sum(1).abs(), torch.ones(25, dtype=torch.float64), atol=1e-8)


def test_gram_route_falls_back_on_ill_conditioned_matrices():
    W = torch.randn(40, 20, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    W[:, -1] = W[:, 0]  # rank deficient: the Gram route would divide by ~0
    d = spectra.svd(W, method="gram")
    assert torch.allclose(d.U @ torch.diag(d.S) @ d.Vh, W, atol=1e-10)
    assert d.S[-1] < 1e-10

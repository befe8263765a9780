"""Tests written against the mutants of `rmtlib.spectra` that survived the suite (issue 17).

Expectations: the input door's promised messages (the argument named, the valid choices
listed), `shape_info` by hand, and the Gram route of `svd(method="gram")` actually taken for
a well-conditioned matrix in both orientations (the docstring's promise: an N(0, 1) matrix
of aspect ratio q has condition number about (1 + sqrt q) / (1 - sqrt q), 4.4 for 25 x 60,
far below GRAM_MAX_CONDITION = 1e5).
"""
import pytest
import torch
from torch import nn

from rmtlib import spectra


def test_shape_info_by_hand():
    assert spectra.shape_info(torch.zeros(3, 5)) == dict(n=3, m=5, N=5, M=3, q=0.6)
    assert spectra.shape_info([[1.0], [2.0], [3.0], [4.0]]) == dict(n=4, m=1, N=4, M=1, q=0.25)


def test_arguments_are_refused_by_name():
    with pytest.raises(ValueError, match=r"^weights must be a 2-D matrix; got shape \(3,\)"):
        spectra.as_tensor(torch.zeros(3), name="weights")
    with pytest.raises(ValueError, match=r"^method must be one of \['lapack', 'gram'\]; got 'qr'"):
        spectra.svd(torch.eye(3), method="qr")
    with pytest.raises(TypeError, match=r"^float64 must be True or False; got 1"):
        spectra.svd(torch.eye(3), float64=1)
    with pytest.raises(TypeError, match=r"^compute_uv must be True or False; got 0"):
        spectra.svd(torch.eye(3), compute_uv=0)
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(TypeError,
                       match=r"^layer name must be a string; got 2 \(int\); valid layer names: \['0', '2'\]"):
        spectra.get_layer(net, 2)


@pytest.mark.parametrize("shape", [(60, 25), (25, 60)])
def test_gram_route_is_taken_for_well_conditioned_matrices(shape, monkeypatch):
    W = torch.randn(*shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    used = []
    real = spectra._gram_svd

    def spy(A):
        out = real(A)
        used.append(out is not None)
        return out

    monkeypatch.setattr(spectra, "_gram_svd", spy)
    d = spectra.svd(W, method="gram")
    assert used == [True]  # asked for, well conditioned: the Gram route gave the result
    assert torch.allclose(d.U @ torch.diag(d.S) @ d.Vh, W, atol=1e-10)
    used.clear()
    spectra.svd(W)  # LAPACK by default: the Gram route is not tried
    assert used == []

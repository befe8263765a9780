"""Tests written against the mutants of `rmtlib.spectra` that survived the suite (issue 17).

Expectations: the input door's promised messages (the argument named, the valid choices
listed), `shape_info` by hand, and the Gram route of `svd(method="gram")` actually taken for
a well-conditioned matrix in both orientations (the docstring's promise: an N(0, 1) matrix
of aspect ratio q has condition number about (1 + sqrt q) / (1 - sqrt q), 4.4 for 25 x 60,
far below GRAM_MAX_CONDITION = 1e5).
"""
import re

import numpy as np
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


# ------------------------------------------------------------------ whole-module survivors
# (issue 17, whole-module run: the survivors of `mutmut run` on all of rmtlib.spectra)
SIDE_LIST = "['left', 'right', 'output', 'input']"


def test_side_and_model_and_layer_messages_in_full():
    with pytest.raises(TypeError, match=re.escape(f"side must be a string, one of {SIDE_LIST}; got 3 (int)")):
        spectra.check_side(3)
    with pytest.raises(ValueError, match="^" + re.escape(f"side must be one of {SIDE_LIST}; got 'up'") + "$"):
        spectra.check_side("up")
    with pytest.raises(TypeError, match="^model must be a torch.nn.Module; got int$"):
        spectra.layers(3)
    with pytest.raises(TypeError, match="^ReLU is not a Linear, Conv or Embedding layer; "
                       + re.escape("use rmtlib.spectra.layers(model) to list the analysable ones") + "$"):
        spectra.weight_matrix(nn.ReLU())
    with pytest.raises(TypeError, match="^ReLU is not a Linear, Conv or Embedding layer$"):
        spectra.set_weight_matrix(nn.ReLU(), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"^W must be a 2-D matrix"):  # the default name
        spectra.as_tensor(torch.zeros(3))


def test_dtypes_promised_by_float64_and_as_tensor():
    W32 = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float32)
    assert spectra.as_tensor(W32, dtype=torch.float64).dtype == torch.float64
    assert spectra.as_tensor(W32).dtype == torch.float32
    assert spectra.svd(W32).S.dtype == torch.float64  # float64=True by default
    assert spectra.svd(W32, float64=True).S.dtype == torch.float64
    assert spectra.svd(W32, float64=False).S.dtype == torch.float32
    assert spectra.singular_values(W32).dtype == np.float64
    assert spectra.singular_values(W32, float64=False).dtype == np.float32


@pytest.mark.parametrize("compute_uv", [True, False])
@pytest.mark.parametrize("vals", [[2.0, 1.0], [5.0, 3.0, 1.0, 0.75], [1.5, 0.5], [0.25, 0.125]])
def test_singular_values_of_a_diagonal_matrix_are_exact(vals, compute_uv):
    # the power-of-two scaling is exact, so LAPACK on a diagonal matrix returns |d_i| exactly
    # (the values are dyadic); scale 2.0 (top in [sqrt 2, 2 sqrt 2)) included
    W = torch.zeros(len(vals) + 1, len(vals), dtype=torch.float64)
    W[range(len(vals)), range(len(vals))] = torch.tensor(vals, dtype=torch.float64)
    out = spectra.svd(W, compute_uv=compute_uv)
    S = out.S if compute_uv else out
    assert S.tolist() == vals


def test_zero_matrix_has_zero_singular_values_on_every_route():
    for method in ("lapack", "gram"):
        d = spectra.svd(torch.zeros(4, 3), method=method)
        assert d.S.tolist() == [0.0, 0.0, 0.0]
        assert bool(torch.isfinite(d.U).all()) and bool(torch.isfinite(d.Vh).all())
    assert spectra.singular_values(torch.zeros(2, 5)).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("power", [600, -600, 1000, -1000])
def test_gram_route_survives_extreme_magnitudes(power, monkeypatch):
    # entries of size 2**600 (2**-600) overflow (underflow) A^T A unless scaled first;
    # scaled, the Gram route is taken and the values are exactly 2**power times those of W.
    # 2**+-1000 lie near the ends of the float64 range (2**1024, normal 2**-1022): the scale
    # itself must be a power of two to stay representable there (3**1000 overflows)
    W = torch.randn(30, 12, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    used = []
    real = spectra._gram_svd
    monkeypatch.setattr(spectra, "_gram_svd", lambda A: used.append(real(A) is not None) or real(A))
    big = W * 2.0 ** power
    d = spectra.svd(big, method="gram")
    assert used == [True]
    ref = torch.linalg.svdvals(W)
    # Gram route: relative error about eps * cond^2 (cond < 10 here): 1e-12 is ample
    assert torch.allclose(d.S / 2.0 ** power, ref, rtol=1e-12, atol=0)


def test_gram_helper_refuses_ill_conditioned_and_rank_deficient_input():
    diag = lambda *v: torch.diag(torch.tensor(v, dtype=torch.float64))
    # condition number exactly GRAM_MAX_CONDITION (lam ratio 1e10 exactly) is still accepted
    out = spectra._gram_svd(diag(1e5, 1.0))
    assert out is not None and out[1].tolist() == [1e5, 1.0]
    assert spectra._gram_svd(diag(1e3, 1.0)) is not None
    assert spectra._gram_svd(diag(1e6, 1.0)) is None
    assert spectra._gram_svd(diag(1e6, 1.0, 1.0)) is None
    assert spectra._gram_svd(diag(1e200, 1e200)) is None  # A^T A overflows
    # rank 2 out of 3 columns: eigh gives lam_min = -4.8e-16 for this seed (negative, so the
    # condition ratio is negative and only the lam_min <= 0 test refuses it)
    A = torch.randn(10, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    A = torch.cat([A, A.sum(1, keepdim=True)], 1)
    assert float(torch.linalg.eigvalsh(A.T @ A)[0]) < 0
    assert spectra._gram_svd(A) is None


def test_vectors_default_and_aliases():
    W = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d = spectra.svd(W)
    assert d.vectors().shape == (3, 5) and torch.equal(d.vectors(), d.Vh)
    assert torch.equal(d.vectors("right"), d.Vh) and torch.equal(d.vectors("input"), d.Vh)
    assert torch.equal(d.vectors("left"), d.U.T) and torch.equal(d.vectors("output"), d.U.T)


@pytest.mark.parametrize("compute_uv", [True, False])
def test_fallback_to_gesvd_when_gesdd_fails(compute_uv, monkeypatch):
    import scipy.linalg

    def fail(*a, **k):
        raise RuntimeError("gesdd did not converge")

    drivers = []
    real = scipy.linalg.svd

    def spy(*a, **k):
        drivers.append(k.get("lapack_driver"))
        return real(*a, **k)

    monkeypatch.setattr(torch.linalg, "svd", fail)
    monkeypatch.setattr(torch.linalg, "svdvals", fail)
    monkeypatch.setattr(scipy.linalg, "svd", spy)
    W = torch.randn(4, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 8.0
    out = spectra.svd(W, compute_uv=compute_uv)
    assert drivers == ["gesvd"]
    S = out.S if compute_uv else out
    ref = np.linalg.svd(W.numpy(), compute_uv=False)
    assert np.allclose(S.numpy(), ref, rtol=1e-12, atol=0)
    if compute_uv:
        assert torch.allclose(out.U @ torch.diag(out.S) @ out.Vh, W, atol=1e-12)

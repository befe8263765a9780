"""rmtlib.transformers, the analysis side (issue 17, group B): tests written to kill mutants.

InputCovariance.eigh, overlaps, energy, zero_singular_values, ablate, similarity_agreement,
retrieval_accuracy, linear_model and output_damage, against values worked out by hand
(dyadic entries, exact in float32 and float64), numpy/scipy references computed another way,
and whole error messages that name the argument, each limit checked on its boundary.

Several functions promise float64 work (`dtype=torch.float64` at the input door). Where a
float32 input would only round differently, the tests use the fact that torch's matrix
product refuses mixed float32/float64 operands: an input left in float32 next to a float64
one raises, so a float32 argument on its own must still give the exact float64 answer.

Nothing here needs `transformers` (the library is imported lazily by the loaders only).
"""
import re

import numpy as np
import pytest
import torch

from rmtlib import spectra
from rmtlib import transformers as tr

F64 = torch.float64


def _full(msg):
    """A regex matching exactly `msg` (whole error messages)."""
    return "^" + re.escape(msg) + "$"


# --- InputCovariance.eigh ---------------------------------------------------------------

def test_input_covariance_eigh_is_descending_with_matching_columns():
    # C = [[2,1,0],[1,2,0],[0,0,5]]: eigenvalues 5 (e3), 3 ((1,1,0)/sqrt 2), 1 ((1,-1,0)/sqrt 2)
    C = torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 5.0]], dtype=F64)
    cov = tr.InputCovariance("fc", C, torch.zeros(3, dtype=F64), 10)
    lam, E = cov.eigh()
    assert lam.shape == (3,) and E.shape == (3, 3)
    assert torch.allclose(lam, torch.tensor([5.0, 3.0, 1.0], dtype=F64), atol=1e-12)
    r = 2 ** -0.5
    want = torch.tensor([[0.0, r, r], [0.0, r, -r], [1.0, 0.0, 0.0]], dtype=F64)
    # columns up to sign
    signs = torch.sign((E * want).sum(0))
    assert torch.allclose(E * signs, want, atol=1e-12)


# --- overlaps ----------------------------------------------------------------------------

def test_overlaps_by_hand_and_in_float64():
    # e1 = (0.6, 0.8), e2 = (-0.8, 0.6); v1 = x, v2 = y: O(k=1) = (0.36, 0.64), O(k=2) = (1, 1)
    E = np.array([[0.6, -0.8], [0.8, 0.6]])
    V = np.eye(2)
    o1 = tr.overlaps(V, E, 1)
    assert o1.dtype == np.float64
    assert np.allclose(o1, [0.36, 0.64], atol=1e-15, rtol=0)
    assert np.allclose(tr.overlaps(V, E, 2), [1.0, 1.0], atol=1e-15, rtol=0)  # k = d allowed
    # rows are the vectors, columns of E the eigenvectors: a non-orthogonal V tells them apart
    V2 = np.array([[1.0, 0.0], [0.5, 0.25]])
    assert np.allclose(tr.overlaps(V2, E, 1), [0.36, (0.3 + 0.2) ** 2], atol=1e-15, rtol=0)
    # a float32 argument next to a float64 one: both are taken to float64
    assert np.allclose(tr.overlaps(torch.eye(2, dtype=torch.float32), E, 1), [0.36, 0.64],
                       atol=1e-15, rtol=0)
    E32 = torch.tensor(E, dtype=torch.float32)
    a, b = float(E32[0, 0]), float(E32[1, 0])  # the float32-rounded 0.6 and 0.8
    got = tr.overlaps(V, E32, 1)
    assert got.dtype == np.float64
    assert np.allclose(got, [a * a, b * b], atol=1e-15, rtol=0)


def test_overlaps_refusals_name_the_argument():
    E = np.array([[1.0], [0.0]])  # d = 2, one eigenvector
    with pytest.raises(ValueError, match=_full(
            "right_vectors have length 3 but eigenvectors have length 2; both must live in the "
            "layer's input space")):
        tr.overlaps(np.ones((1, 3)), E, 1)
    with pytest.raises(ValueError, match=_full("right_vectors must be a 2-D matrix; got shape (2,)")):
        tr.overlaps(np.ones(2), E, 1)
    with pytest.raises(ValueError, match=_full("eigenvectors must be a 2-D matrix; got shape (2,)")):
        tr.overlaps(np.ones((1, 2)), np.ones(2), 1)
    # k in [1, number of eigenvectors]
    E2 = np.eye(3)[:, :2]
    with pytest.raises(ValueError, match=_full("k must lie in [1, 2]; got 0")):
        tr.overlaps(np.ones((1, 3)), E2, 0)
    with pytest.raises(ValueError, match=_full("k must lie in [1, 2]; got 3")):
        tr.overlaps(np.ones((1, 3)), E2, 3)
    assert np.allclose(tr.overlaps(np.eye(3), E2, 1), [1.0, 0.0, 0.0])  # k = 1 allowed


# --- energy ------------------------------------------------------------------------------

def test_energy_by_hand_and_in_float64():
    # C = [[2,1],[1,2]], tr C / d = 2. v = (1, 0): 2 / 2 = 1. v = (0.75, 0.5):
    # 0.5625*2 + 2*0.375*1 + 0.25*2 = 2.375, / 2 = 1.1875 (dyadic: exact in float32 too)
    C = np.array([[2.0, 1.0], [1.0, 2.0]])
    V = np.array([[1.0, 0.0], [0.75, 0.5]])
    want = [1.0, 1.1875]
    e = tr.energy(V, C)
    assert e.dtype == np.float64 and np.array_equal(e, want)
    assert np.array_equal(tr.energy(torch.tensor(V, dtype=torch.float32), C), want)
    assert np.array_equal(tr.energy(V, torch.tensor(C, dtype=torch.float32)), want)
    # the average variance is tr C / d, with d the covariance's size: diag(1, 3, 8), mean 4
    C3 = np.diag([1.0, 3.0, 8.0])
    assert np.array_equal(tr.energy(np.eye(3), C3), [0.25, 0.75, 2.0])


def test_energy_refusals_name_the_argument():
    with pytest.raises(ValueError, match=_full("right_vectors have length 2, covariance is (3, 3)")):
        tr.energy(np.ones((1, 2)), np.eye(3))
    # a covariance that is not square is refused by name (a 1 x k one would broadcast)
    with pytest.raises(ValueError, match=_full("covariance must be square (d x d, the inputs' covariance); got (3, 4)")):
        tr.energy(np.ones((1, 4)), np.ones((3, 4)))
    with pytest.raises(ValueError, match=_full("covariance must be square (d x d, the inputs' covariance); got (1, 3)")):
        tr.energy(np.ones((1, 1)), np.ones((1, 3)))
    with pytest.raises(ValueError, match=_full("right_vectors must be a 2-D matrix; got shape (2,)")):
        tr.energy(np.ones(2), np.eye(2))
    with pytest.raises(ValueError, match=_full("covariance must be a 2-D matrix; got shape (2,)")):
        tr.energy(np.ones((1, 2)), np.ones(2))


# --- zero_singular_values ----------------------------------------------------------------

# W = U diag(4, 2, 1) with U a 3-4-5 rotation in the first two coordinates, V = I: the
# SVD is known exactly, so W with singular value 1 (the 2) removed is W - 2 u_1 e_1^T
# (e_1 = (0, 1, 0): the second column of W becomes zero).
_U = np.array([[0.6, -0.8, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])
_W = _U @ np.diag([4.0, 2.0, 1.0])


def test_zero_singular_values_by_hand():
    got = tr.zero_singular_values(_W, [1])
    want = _W - 2.0 * np.outer(_U[:, 1], [0.0, 1.0, 0.0])
    assert got.dtype == F64 and np.allclose(got.numpy(), want, atol=1e-12, rtol=0)
    # index 2 (the last one) allowed; repeated indices count once; a scalar index
    want2 = _W - 1.0 * np.outer(_U[:, 2], [0.0, 0.0, 1.0])
    assert np.allclose(tr.zero_singular_values(_W, [2, 2]).numpy(), want2, atol=1e-12, rtol=0)
    assert np.allclose(tr.zero_singular_values(_W, 2).numpy(), want2, atol=1e-12, rtol=0)
    # no index: W itself, as a float64 copy (also for float32 input)
    W32 = torch.tensor(_W, dtype=torch.float32)
    same = tr.zero_singular_values(W32, [])
    assert same.dtype == F64 and torch.equal(same, W32.double())
    assert same.data_ptr() != W32.data_ptr()


def test_zero_singular_values_index_range_is_checked_on_both_ends():
    with pytest.raises(ValueError, match=_full("indices must lie in 0..2; got 3..3")):
        tr.zero_singular_values(_W, [3])
    with pytest.raises(ValueError, match=_full("indices must lie in 0..2; got -1..1")):
        tr.zero_singular_values(_W, [1, -1])
    with pytest.raises(ValueError, match=_full("indices must lie in 0..2; got 0..5")):
        tr.zero_singular_values(_W, [5, 0])


def test_zero_singular_values_reuses_the_given_svd(monkeypatch):
    dec = spectra.svd(_W)

    def no_svd(*a, **k):
        raise AssertionError("an SVD was computed although dec was given")

    monkeypatch.setattr(spectra, "svd", no_svd)
    got = tr.zero_singular_values(_W, [1], dec=dec)
    want = _W - 2.0 * np.outer(_U[:, 1], [0.0, 1.0, 0.0])
    assert np.allclose(got.numpy(), want, atol=1e-12, rtol=0)
    # W is still checked (and named) when the SVD is given
    for idx in ([], [0]):
        with pytest.raises(ValueError, match=_full("W must be a 2-D matrix; got shape (3,)")):
            tr.zero_singular_values([1.0, 2.0, 3.0], idx, dec=dec)


def test_zero_singular_values_works_in_float64_with_a_float32_svd():
    # a float32 SVD given with a float32 W: the result is still float64 (W taken to float64)
    W32 = torch.tensor(_W, dtype=torch.float32)
    dec32 = spectra.svd(W32, float64=False)
    assert dec32.S.dtype == torch.float32
    got = tr.zero_singular_values(W32, [1], dec=dec32)
    assert got.dtype == F64
    want = _W - 2.0 * np.outer(_U[:, 1], [0.0, 1.0, 0.0])
    assert np.allclose(got.numpy(), want, atol=1e-5, rtol=0)  # float32 SVD: ~1e-7 relative


# --- ablate ------------------------------------------------------------------------------

def _net():
    net = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.ReLU(),
                              torch.nn.Linear(3, 3, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor(_W))
        net[2].weight.copy_(torch.diag(torch.tensor([3.0, 5.0, 1.0])))
    return net


def test_ablate_uses_the_given_svds_and_names_unknown_layers(monkeypatch):
    net = _net()
    svds = {"0": spectra.svd(_W), "2": spectra.svd(torch.diag(torch.tensor([3.0, 5.0, 1.0])))}
    calls = []
    real = spectra.svd
    monkeypatch.setattr(spectra, "svd", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = tr.ablate(net, {"0": [1], "2": [0]}, svds=svds)
    assert calls == []  # no new SVD: both were given
    want0 = _W - 2.0 * np.outer(_U[:, 1], [0.0, 1.0, 0.0])
    assert np.allclose(out[0].weight.detach().double().numpy(), want0, atol=1e-6, rtol=0)
    # diag(3, 5, 1): the largest (5, rank 0) removed
    assert np.allclose(out[2].weight.detach().numpy(), np.diag([3.0, 0.0, 1.0]), atol=1e-6, rtol=0)
    assert torch.equal(net[2].weight, torch.diag(torch.tensor([3.0, 5.0, 1.0])))  # untouched
    # without svds: one SVD per layer in the plan
    tr.ablate(net, {"2": [0]})
    assert calls == [1]
    with pytest.raises(ValueError, match=_full("no analysable layer ['1', 'x']; valid names: ['0', '2']")):
        tr.ablate(net, {"0": [0], "1": [0], "x": [0]})


# --- similarity_agreement ----------------------------------------------------------------

def _spearman_by_hand(a, b):
    """Spearman's rho of two tie-free samples: Pearson's r of their ranks."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_similarity_agreement_by_hand_with_three_sentences():
    # Y: rows (1,0), (0,1), (2,1): cosines s01 = 0, s02 = 2/sqrt5, s12 = 1/sqrt5: ranks (1, 3, 2).
    # X: three nearly parallel rows, cosines 1 - 1.9e-9, 1 - 7.5e-9, 1 - 1.7e-8: ranks (3, 2, 1).
    # rho = 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 (4 + 1 + 1) / 24 = -0.5.
    # X is exact in float32, but its cosines all round to 1 there: only float64 work ranks them.
    Y = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    X = torch.tensor([[1.0, 0.0], [1.0, 2.0 ** -14], [1.0, -(2.0 ** -13)]], dtype=torch.float32)
    assert tr.similarity_agreement(Y, X) == pytest.approx(-0.5, abs=1e-12)
    assert tr.similarity_agreement(X, Y) == pytest.approx(-0.5, abs=1e-12)
    # rows are scaled to unit length one by one: a row scaled by 10 changes nothing
    Y10 = Y * np.array([[10.0], [1.0], [1.0]])
    assert tr.similarity_agreement(Y10, X.double()) == pytest.approx(-0.5, abs=1e-12)
    assert tr.similarity_agreement(X.double(), Y10) == pytest.approx(-0.5, abs=1e-12)


def test_similarity_agreement_uses_every_pair_once():
    rng = np.random.default_rng(3)
    A, B = rng.normal(size=(7, 2)), rng.normal(size=(7, 2))  # more sentences than dimensions

    def cos_pairs(X):
        Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
        G = Xn @ Xn.T
        return np.array([G[i, j] for i in range(7) for j in range(i + 1, 7)])  # 21 pairs

    want = _spearman_by_hand(cos_pairs(A), cos_pairs(B))
    assert tr.similarity_agreement(A, B) == pytest.approx(want, abs=1e-12)


def test_similarity_agreement_refusals():
    with pytest.raises(ValueError, match=_full("reference (3, 2) and embeddings (4, 2) differ in shape")):
        tr.similarity_agreement(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match=_full(
            "need at least 3 sentences for a correlation of pairwise similarities")):
        tr.similarity_agreement(np.eye(2), np.eye(2))
    with pytest.raises(ValueError, match=_full("reference must be a 2-D matrix; got shape (3,)")):
        tr.similarity_agreement(np.ones(3), np.eye(3))
    with pytest.raises(ValueError, match=_full("embeddings must be a 2-D matrix; got shape (3,)")):
        tr.similarity_agreement(np.eye(3), np.ones(3))


# --- retrieval_accuracy ------------------------------------------------------------------

def test_retrieval_accuracy_by_hand():
    # cosines, documents scaled to unit length one by one:
    # q0 = x: d0 = x (1) beats d1 = (10, 10, 0) (0.71): hit
    # q1 = (1, 1, 0): d1 (1) beats d0 (0.71): hit
    # q2 = z: d2 = z (1) beats d3 = (0, 0.25, 1) (0.97): hit
    # q3 = z: the same, d2 wins again: miss. Accuracy 3/4.
    # (Raw dot products would send q0 to the long d1.)
    Q = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    D = np.array([[1.0, 0.0, 0.0], [10.0, 10.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.25, 1.0]])
    assert tr.retrieval_accuracy(Q, D) == 0.75
    # float32 on either side is taken to float64 (the values here are exact in float32)
    assert tr.retrieval_accuracy(torch.tensor(Q, dtype=torch.float32), D) == 0.75
    assert tr.retrieval_accuracy(Q, torch.tensor(D, dtype=torch.float32)) == 0.75


def test_retrieval_accuracy_refusals():
    with pytest.raises(ValueError, match=_full("queries (2, 3) and documents (3, 3) must pair up")):
        tr.retrieval_accuracy(np.ones((2, 3)), np.eye(3))
    with pytest.raises(ValueError, match=_full("queries must be a 2-D matrix; got shape (3,)")):
        tr.retrieval_accuracy(np.ones(3), np.eye(3))
    with pytest.raises(ValueError, match=_full("documents must be a 2-D matrix; got shape (3,)")):
        tr.retrieval_accuracy(np.eye(3), np.ones(3))


# --- linear_model ------------------------------------------------------------------------

def _linear_model_reference(N, M, k_small, k_large, variance, gain, seed):
    """The model as its docstring states it: R with entries N(0, sigma^2 / max(N, M)) drawn
    first from a generator seeded with `seed`, then a random orthonormal basis of R^M (QR of a
    Gaussian M x M matrix: E its first k_small columns, F the next k_large), then orthonormal
    output directions (QR of a Gaussian N x k matrix). C = I + (variance - 1) P_E, and
    W = (R + S) C^(-1/2), with C^(-1/2) taken from numpy's eigendecomposition of C."""
    g = torch.Generator().manual_seed(seed)
    sigma = 1.0
    R = torch.randn(N, M, generator=g, dtype=F64).numpy() * sigma / np.sqrt(max(N, M))
    basis = torch.linalg.qr(torch.randn(M, M, generator=g, dtype=F64))[0].numpy()
    E, F = basis[:, :k_small], basis[:, k_small:k_small + k_large]
    Uo = torch.linalg.qr(torch.randn(N, k_small + k_large, generator=g, dtype=F64))[0].numpy()
    S = gain * sigma * (Uo[:, :k_small] @ E.T + Uo[:, k_small:] @ F.T)
    C = np.eye(M) + (variance - 1.0) * E @ E.T
    lam, Q = np.linalg.eigh(C)
    C_inv_half = (Q / np.sqrt(lam)) @ Q.T
    return (R + S) @ C_inv_half, C, E, F, sigma


@pytest.mark.parametrize("args", [(40, 12, 2, 3, 25.0, 2.0, 5), (7, 9, 1, 3, 9.0, 0.5, 1)])
def test_linear_model_against_its_specification(args):
    N, M, ks, kl, var, gain, seed = args
    torch.manual_seed(123)  # the global generator must not matter
    m = tr.linear_model(N, M, k_small=ks, k_large=kl, variance=var, gain=gain, seed=seed)
    W, C, E, F, sigma = _linear_model_reference(*args)
    assert sigma == 1.0 and m.sigma == 1.0
    assert m.W.dtype == F64 and m.C.dtype == F64
    assert m.small.shape == (M, ks) and m.large.shape == (M, kl)
    assert np.allclose(m.small.numpy(), E, atol=1e-13, rtol=0)
    assert np.allclose(m.large.numpy(), F, atol=1e-13, rtol=0)
    assert np.allclose(m.C.numpy(), C, atol=1e-12, rtol=0)
    assert np.allclose(m.W.numpy(), W, atol=1e-12, rtol=0)
    # the planted structure: C has eigenvalue `variance` on E and 1 on F
    assert np.allclose(m.C.numpy() @ E, var * E, atol=1e-12, rtol=0)
    assert np.allclose(m.C.numpy() @ F, F, atol=1e-12, rtol=0)
    # the same seed gives the same model whatever the global generator did in between
    torch.manual_seed(7)
    torch.randn(5)
    again = tr.linear_model(N, M, k_small=ks, k_large=kl, variance=var, gain=gain, seed=seed)
    assert torch.equal(again.W, m.W)


def test_linear_model_defaults_are_the_documented_ones():
    # the docstring's model: N = 1536, M = 384 (MiniLM's FFN), 8 + 8 planted directions,
    # variance 400, gain 3, seed 0
    m = tr.linear_model()
    W, C, E, F, _ = _linear_model_reference(1536, 384, 8, 8, 400.0, 3.0, 0)
    assert m.W.shape == (1536, 384)
    assert np.allclose(m.small.numpy(), E, atol=1e-13, rtol=0)
    assert np.allclose(m.large.numpy(), F, atol=1e-13, rtol=0)
    assert np.allclose(m.C.numpy(), C, atol=1e-11, rtol=0)
    assert np.allclose(m.W.numpy(), W, atol=1e-11, rtol=0)


def test_linear_model_refusals_on_their_boundaries():
    # smallest accepted sizes: N = M = 2 with one planted direction (M // 2 = 1)
    tr.linear_model(2, 2, k_small=1, k_large=0)
    tr.linear_model(2, 2, k_small=0, k_large=1)
    # k_small + k_large = M // 2 accepted
    m = tr.linear_model(10, 9, k_small=2, k_large=2)
    assert m.small.shape == (9, 2) and m.large.shape == (9, 2)
    for kw, msg in [
        (dict(N=1), "N must lie in [2, inf); got 1"),
        (dict(M=1), "M must lie in [2, inf); got 1"),
        (dict(k_small=-1), "k_small must lie in [0, inf); got -1"),
        (dict(k_large=-1), "k_large must lie in [0, inf); got -1"),
    ]:
        args = dict(N=10, M=9, k_small=1, k_large=1) | kw
        with pytest.raises(ValueError, match=_full(msg)):
            tr.linear_model(args.pop("N"), args.pop("M"), **args)
    with pytest.raises(ValueError, match=_full(
            "k_small + k_large = 5 is too many planted directions for M = 9; keep it at most M/2")):
        tr.linear_model(10, 9, k_small=3, k_large=2)


# --- output_damage -----------------------------------------------------------------------

def test_output_damage_by_hand():
    # W = [[1, 2], [0, 1]] (not symmetric), W_new = [[1, 0], [0, 1]], C = diag(1, 4):
    # D = [[0, 2], [0, 0]]: tr(D C D^T) = 4 * 4 = 16; tr(W C W^T) = (1 + 16) + 4 = 21
    W = np.array([[1.0, 2.0], [0.0, 1.0]])
    Wn = np.eye(2)
    C = np.diag([1.0, 4.0])
    assert tr.output_damage(W, Wn, C) == 16.0 / 21.0
    # float32 arguments are taken to float64 (exact values here)
    f32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    assert tr.output_damage(f32(W), Wn, C) == 16.0 / 21.0
    assert tr.output_damage(W, Wn, f32(C)) == 16.0 / 21.0
    # a wide layer (N = 1, M = 3) with a full C: D = (1, 0, 1), C = [[2,1,0],[1,2,0],[0,0,1]]
    # D C D^T = 2 + 1 = 3; W = (1, 1, 1): W C W^T = 2+1+1+2+1 = 7
    Cf = np.array([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    assert tr.output_damage([[1.0, 1.0, 1.0]], [[0.0, 1.0, 0.0]], Cf) == 3.0 / 7.0


def test_output_damage_names_its_arguments():
    for args, name in [((np.ones(2), np.eye(2), np.eye(2)), "W"),
                       ((np.eye(2), np.ones(2), np.eye(2)), "W_new"),
                       ((np.eye(2), np.eye(2), np.ones(2)), "C")]:
        with pytest.raises(ValueError, match=_full(f"{name} must be a 2-D matrix; got shape (2,)")):
            tr.output_damage(*args)

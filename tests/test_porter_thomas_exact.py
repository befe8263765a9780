"""Porter-Thomas statistics against theory and hand-computed values (issue 17: tests that catch bugs)."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from rmtlib import porter_thomas as pt


def test_pt_cdf_is_the_normal_cdf_of_variance_one_over_length():
    x = np.array([-0.5, -0.1, 0.0, 0.03, 0.2, 1.0])
    for L in (1, 10, 300):
        assert np.allclose(pt.pt_cdf(x, L).numpy(), stats.norm.cdf(x * math.sqrt(L)), rtol=1e-12, atol=1e-15)


def test_ks_distance_by_hand():
    # L = 10 entries all equal to 1/sqrt(10): C = Phi(1) for each, so
    # D = max(i/10 - Phi(1), Phi(1) - (i - 1)/10) = Phi(1) - 0 = 0.8413 at i = 1
    v = np.full((1, 10), 1 / math.sqrt(10))
    assert pt.ks_distance(v)[0] == pytest.approx(stats.norm.cdf(1.0), rel=1e-12)
    # half +-: C = Phi(-1) for five entries, Phi(1) for five: D = max(0.5 - Phi(-1), Phi(1) - 0.5)
    w = np.array([[1.0] * 5 + [-1.0] * 5]) / math.sqrt(10)
    assert pt.ks_distance(w)[0] == pytest.approx(max(0.5 - stats.norm.cdf(-1), stats.norm.cdf(1) - 0.5), rel=1e-12)
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((4, 50))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    want = [stats.kstest(r, stats.norm(scale=1 / math.sqrt(50)).cdf).statistic for r in rows]
    assert np.allclose(pt.ks_distance(torch.tensor(rows)), want, rtol=1e-10)


def test_ks_null_has_the_law_of_normalized_gaussian_vectors():
    # an independent simulation (numpy's generator, scipy's kstest) against the cached null
    L, K = 20, 4000
    null = pt.ks_null(L, samples=K, seed=3, cache=False)
    assert null.shape == (K,) and np.all(np.diff(null) >= 0)
    rng = np.random.default_rng(5)
    g = rng.standard_normal((1500, L))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    ref = [stats.kstest(r, stats.norm(scale=1 / math.sqrt(L)).cdf).statistic for r in g]
    assert stats.ks_2samp(null, ref).pvalue > 1e-3
    # and it differs from the classical KS law of L i.i.d. entries (the constraint matters):
    # normalized vectors fit their CDF better, so their distances are stochastically smaller
    assert np.median(null) < stats.kstwo.ppf(0.5, L)
    assert pt.classical_ks_cdf([np.median(null)], L)[0] == pytest.approx(stats.kstwo.cdf(np.median(null), L))


def test_pvalues_from_null_by_hand():
    null = np.array([0.1, 0.2, 0.3, 0.4])
    # p = fraction of null distances strictly larger than D
    got = pt.pvalues_from_null([0.05, 0.1, 0.2, 0.25, 0.4, 0.5], null)
    assert np.allclose(got, [1.0, 0.75, 0.5, 0.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="sorted"):
        pt.pvalues_from_null([0.1], null[::-1].copy())


def test_window_average_by_hand():
    # centred windows of 3, cut at the ends: [(1+2)/2, (1+2+3)/3, ..., (4+5)/2]
    assert np.allclose(pt.window_average([1, 2, 3, 4, 5], 3), [1.5, 2, 3, 4, 4.5])
    assert np.allclose(pt.window_average([1, 2, 3, 4, 5], 5), [2, 2.5, 3, 3.5, 4])
    assert np.allclose(pt.window_average([4.0, 1.0], 1), [4.0, 1.0])
    with pytest.raises(ValueError, match="larger than the number"):
        pt.window_average([1, 2, 3], 5)


def test_window_band_by_hand():
    # one uniform: [alpha/2, 1 - alpha/2]; the mean of two uniforms has P(mean <= m) = 2 m^2
    # for m <= 1/2, so its alpha/2 quantile is sqrt(alpha/4)
    lo, hi = pt.window_band([1, 2], 0.1)
    assert lo == pytest.approx([0.05, math.sqrt(0.1 / 4)], rel=1e-9)
    assert hi == pytest.approx([0.95, 1 - math.sqrt(0.1 / 4)], rel=1e-9)
    # large n: normal approximation 0.5 +- z sqrt(1/(12 n)) to within 1e-3
    lo, hi = pt.window_band([400], 0.0455)
    z = stats.norm.ppf(1 - 0.0455 / 2)
    assert (lo[0], hi[0]) == pytest.approx((0.5 - z / math.sqrt(4800), 0.5 + z / math.sqrt(4800)), abs=1e-3)
    with pytest.raises(ValueError, match="positive integers"):
        pt.window_band([2.5], 0.1)


def test_information_boundary_by_hand():
    # fpr 0.05, confirm 3: alpha = 0.0125. Two leading p-values below alpha are informative;
    # then 30 p-values of exactly 0.5 lie inside every band: n_above = 2
    p = np.array([0.001, 0.01] + [0.5] * 30)
    b = pt.information_boundary(p, window=5, fpr=0.05, confirm=3)
    assert (b.n_raw, b.n_above, b.alpha) == (2, 2, pytest.approx(0.0125))
    assert np.allclose(b.curve[:2], [0.001, 0.01]) and np.allclose(b.curve[2:], 0.5)
    assert np.allclose(b.lower[:2], 0.0125) and np.allclose(b.upper[:2], 1.0)
    lo, hi = pt.window_band([3, 4, 5, 5], 0.0125)  # sizes of the first windows: 3, 4, 5, 5
    assert np.allclose(b.lower[2:6], lo) and np.allclose(b.upper[2:6], hi)
    # six p-values of 0.999 after the leading one push windows above their band. The band of
    # a mean of 3 uniforms at alpha = 0.0125 ends where P(S > 3 - t) = t^3/6 = alpha/2, t = 0.3347,
    # i.e. at mean 0.8884: windows 0..4 of the rest (means 0.999) lie above it, window 5
    # (0.999, 0.999, 0.5: mean 0.8327) and all later ones inside: boundary at 1 + 5
    q = np.array([0.001] + [0.999] * 6 + [0.5] * 30)
    b = pt.information_boundary(q, window=3, fpr=0.05, confirm=3)
    assert b.upper[5] == pytest.approx(1 - (6 * 0.0125 / 2) ** (1 / 3) / 3, rel=1e-6)
    assert b.n_raw == 1 and b.n_above == 1 + 5
    # confirm = 1: the first window inside the band ends the information at once
    r = np.array([0.5] * 10)
    assert pt.information_boundary(r, window=3, confirm=1).n_above == 0
    # all p-values below alpha: everything is informative
    assert pt.information_boundary(np.full(8, 1e-4), window=3).n_above == 8


def test_gaussian_control_scale():
    c = pt.gaussian_control((400, 100), seed=2)
    # entries N(0, 1/max(rows, cols)): 40,000 entries give the variance to 1.5% (5 std)
    assert c.shape == (400, 100) and c.dtype == torch.float64
    assert float(c.var()) * 400 == pytest.approx(1.0, rel=0.035)
    assert torch.equal(c, pt.gaussian_control((400, 100), seed=2))
    assert not torch.equal(c, pt.gaussian_control((400, 100), seed=3))
    with pytest.raises(TypeError, match="pair"):
        pt.gaussian_control(400)


def test_analyze_counts_planted_vectors_and_reports_the_boundary_value():
    # 3 planted singular vectors supported on 5 entries each (far from Porter-Thomas) at
    # singular values 50, 40, 30 on top of a noise matrix whose bulk ends near 2
    g = torch.Generator().manual_seed(0)
    N, M = 120, 60
    W = torch.randn(N, M, generator=g, dtype=torch.float64) / math.sqrt(N)
    U = torch.zeros(N, 3, dtype=torch.float64)
    for j in range(3):
        U[5 * j : 5 * j + 5, j] = 1 / math.sqrt(5)
    V = torch.linalg.qr(torch.randn(M, 3, generator=g, dtype=torch.float64))[0]
    W = W + U @ torch.diag(torch.tensor([50.0, 40.0, 30.0], dtype=torch.float64)) @ V.T
    res = pt.analyze(W, side="left", samples=2000, control=False)
    assert res.n_raw == 3 and res.n_above >= 3 and res.length == N
    sv = np.linalg.svd(W.numpy(), compute_uv=False)
    assert np.allclose(res.singular_values, sv[: len(res.singular_values)], rtol=1e-10)
    assert res.boundary == pytest.approx(sv[res.n_above], rel=1e-10)
    assert res.fraction_above == pytest.approx(res.n_above / M)
    assert res.pvalues[:3].max() < res.alpha
    frame = res.to_frame()
    assert list(frame["rank"]) == list(range(M)) and frame["outside_band"].iloc[:3].all()


def test_null_tables_that_cannot_be_nulls_are_refused():
    good = np.array([0.1, 0.2, 0.3])
    assert pt._check_null(good, 3) is good
    for bad, why in ((np.array([0.1, 0.2, 1.5]), "outside"), (np.array([-0.1, 0.2, 0.3]), "outside"),
                     (np.array([0.3, 0.2, 0.1]), "sorted"), (np.array([0.1, np.nan, 0.3]), "NaN"),
                     (good.astype(np.float32), "float64"), (good[:2], "float64")):
        with pytest.raises(ValueError, match=why):
            pt._check_null(bad, 3)


def test_a_null_read_from_disk_stays_in_memory():
    pt._NULLS.clear()
    first = pt.ks_null(24, samples=500, seed=6)
    pt._NULLS.clear()
    from_disk = pt.ks_null(24, samples=500, seed=6)
    assert np.array_equal(from_disk, first) and not from_disk.flags.writeable
    assert pt.ks_null(24, samples=500, seed=6) is from_disk  # kept in memory, read-only
    pt._NULLS.clear()


def test_analyze_uses_the_null_of_its_seed_and_names_what_is_wrong():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(60, 40, generator=g, dtype=torch.float64)
    res = pt.analyze(W, seed=5, samples=300, control=False)
    U = np.linalg.svd(W.numpy(), full_matrices=False)[0].T  # left vectors (length 60) as rows
    d = [stats.kstest(u, stats.norm(scale=1 / math.sqrt(60)).cdf).statistic for u in U]
    want = pt.pvalues_from_null(d, pt.ks_null(60, samples=300, seed=5))
    assert np.allclose(res.pvalues, want, atol=1e-12)
    assert not np.allclose(res.pvalues, pt.pvalues_from_null(d, pt.ks_null(60, samples=300, seed=0)))
    with pytest.raises(ValueError, match="constant"):
        pt.analyze(torch.full((40, 30), 0.3), samples=300)
    with pytest.raises(ValueError, match="all zero"):
        pt.analyze(torch.zeros(40, 30), samples=300)
    with pytest.raises(ValueError, match="fpr"):
        pt.information_boundary([0.5] * 20, fpr=1.5)
    for w in (0, -1):  # -1 is odd: refused for being below 1
        with pytest.raises(ValueError, match="window"):
            pt.information_boundary([0.5] * 20, window=w)
    # window 1 is allowed: each p-value is its own window
    assert pt.analyze(W, window=1, samples=300, control=False).window == 1
    with pytest.raises(ValueError, match="pvalues"):
        pt.information_boundary([[0.5, 0.5]])
    with pytest.raises(ValueError, match="sizes"):
        pt.window_band([np.nan], 0.1)
    with pytest.raises(ValueError, match="seed"):
        pt.ks_null(20, samples=200, seed=-1)

import numpy as np
import pytest
import torch
from scipy import stats

from rmtlib import porter_thomas as pt


def _unit_rows(n, length, seed):
    g = torch.randn(n, length, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return g / g.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("length", [10, 57, 300])
def test_ks_distance_equals_scipy_kstest(length):
    vecs = _unit_rows(5, length, seed=length).numpy()
    ours = pt.ks_distance(vecs)
    cdf = lambda x: pt.pt_cdf(torch.as_tensor(x), length).numpy()
    ref = [stats.kstest(v, cdf).statistic for v in vecs]
    assert np.allclose(ours, ref, atol=1e-12)


def test_pvalues_of_random_unit_vectors_are_uniform():
    # 2,000 unit vectors drawn with another seed than the null: their p-values must be
    # U(0, 1). The KS test against the uniform law at level 1% must not reject.
    vecs = _unit_rows(2000, 200, seed=99)
    p = pt.ks_pvalues(vecs, samples=20_000, seed=0)
    assert stats.kstest(p, "uniform").pvalue > 0.01
    # The classical KS law (i.i.d. entries) is the wrong null: its p-values are far
    # from uniform for the same vectors, which is what makes this test able to fail.
    classical = 1 - pt.classical_ks_cdf(pt.ks_distance(vecs), 200)
    assert stats.kstest(classical, "uniform").pvalue < 1e-6
    assert classical.mean() > 0.52  # normalization shrinks D: p too large (std of mean 0.0065)


def test_window_average_of_uniform_pvalues_stays_near_one_half():
    p = pt.ks_pvalues(_unit_rows(1500, 100, seed=5), samples=20_000)
    sm = pt.window_average(p, 15)
    # the mean of 1,500 U(0,1) values has std 0.0075; 0.03 is 4 std
    assert abs(sm.mean() - 0.5) < 0.03
    # a 15-window mean of U(0,1) has std 0.289/sqrt(15) = 0.075
    assert 0.04 < sm.std() < 0.11


def test_window_average_is_a_centred_mean():
    x = np.arange(10.0)
    out = pt.window_average(x, 3)
    assert np.allclose(out[1:-1], x[1:-1])
    assert out[0] == pytest.approx(0.5) and out[-1] == pytest.approx(8.5)
    assert np.allclose(pt.window_average(np.ones(7), 7), 1.0)


def test_null_is_cached_in_memory_and_on_disk(monkeypatch):
    pt._NULLS.clear()
    first = pt.ks_null(64, samples=2000, seed=1)
    assert pt._null_path(64, 2000, 1).is_file()

    def boom(v):
        raise AssertionError("the null was recomputed")

    monkeypatch.setattr(pt, "_ks_distance", boom)
    assert pt.ks_null(64, samples=2000, seed=1) is first  # memory
    pt._NULLS.clear()
    assert np.array_equal(pt.ks_null(64, samples=2000, seed=1), first)  # disk


def test_damaged_null_file_is_rebuilt():
    pt._NULLS.clear()
    first = pt.ks_null(32, samples=1000, seed=2)
    path = pt._null_path(32, 1000, 2)
    path.write_bytes(path.read_bytes()[:-50])
    pt._NULLS.clear()
    with pytest.warns(UserWarning, match="rebuilding"):
        again = pt.ks_null(32, samples=1000, seed=2)
    assert np.array_equal(first, again)
    pt._NULLS.clear()
    assert np.array_equal(pt.ks_null(32, samples=1000, seed=2), first)  # healthy again


def test_null_is_seeded_and_sorted():
    a = pt.ks_null(50, samples=500, seed=3, cache=False)
    b = pt.ks_null(50, samples=500, seed=3, cache=False)
    c = pt.ks_null(50, samples=500, seed=4, cache=False)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.all(np.diff(a) >= 0)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="too short"):
        pt.ks_distance(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="2-D"):
        pt.ks_distance(np.zeros((2, 3, 20)))
    with pytest.raises(ValueError, match="NaN"):
        pt.ks_distance(np.full((2, 20), np.nan))
    with pytest.raises(ValueError, match="odd"):
        pt.window_average(np.ones(20), 4)
    with pytest.raises(ValueError, match="larger than the number"):
        pt.window_average(np.ones(10), 15)
    with pytest.raises(ValueError, match="larger than the number of singular vectors"):
        pt.analyze(torch.randn(30, 12), window=15)
    with pytest.raises(ValueError, match="side"):
        pt.analyze(torch.randn(30, 30), side="up")


def test_analyze_random_matrix_has_no_boundary_and_planted_vectors_are_found():
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn(300, 200, generator=gen, dtype=torch.float64) / np.sqrt(300)
    res = pt.analyze(noise, samples=5000)
    lo, hi = res.band
    assert lo < 0.5 < hi
    assert res.n_above == 0 and res.boundary == res.singular_values[0]
    # plant 8 strong rank-one terms whose vectors are localized (far from Porter-Thomas)
    planted = noise.clone()
    for k in range(8):
        u = torch.zeros(300, dtype=torch.float64); u[10 * k : 10 * k + 3] = 1 / np.sqrt(3)
        v = torch.zeros(200, dtype=torch.float64); v[5 * k : 5 * k + 4] = 0.5
        planted += (4 + k) * torch.outer(u, v)
    res = pt.analyze(planted, samples=5000)
    assert res.pvalues[:8].max() < 1e-3
    assert 8 <= res.n_above <= 8 + 15
    assert res.boundary == pytest.approx(res.singular_values[res.n_above])
    assert ((res.smoothed[7:res.n_above] < lo) | (res.smoothed[7:res.n_above] > hi)).any()
    assert res.fraction_above == pytest.approx(res.n_above / 200)
    left = pt.analyze(planted, side="left", samples=5000)
    assert left.length == 300 and left.pvalues[:8].max() < 1e-3


def test_information_boundary_definition():
    sv = np.linspace(10, 1, 40)
    band = (0.3, 0.7)
    p = np.full(40, 0.5)
    assert pt.information_boundary(sv, p, band, window=5) == (10.0, 0)
    p[:12] = 0.05  # a run of deviating vectors at the top
    assert pt.information_boundary(sv, p, band, window=5) == (sv[12], 12)
    p[12] = 0.5; p[13] = 0.05  # a single touch of the band is not yet the boundary
    assert pt.information_boundary(sv, p, band, window=5) == (sv[14], 14)

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from rmtlib import porter_thomas as pt


@pytest.fixture
def one_thread():
    """Many small SVDs: one thread avoids oversubscription on a shared machine (30x here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    with pytest.raises(TypeError, match="window"):
        pt.window_average(np.ones(20), 5.0)
    with pytest.raises(ValueError, match="side"):
        pt.analyze(torch.randn(30, 30), side="up")
    with pytest.raises(TypeError, match="side"):
        pt.analyze(torch.randn(30, 30), side=1)
    with pytest.raises(TypeError, match="samples"):
        pt.ks_pvalues(_unit_rows(2, 20, 0), samples="many")
    with pytest.raises(ValueError, match="at least 10"):
        pt.analyze(torch.randn(5, 40))  # the left vectors (the default) have 5 entries


def test_vectors_that_are_not_unit_length_are_refused():
    v = _unit_rows(4, 50, seed=3)
    for bad in (2 * v, torch.zeros(4, 50), torch.ones(4, 50)):
        with pytest.raises(ValueError, match="not unit vectors"):
            pt.ks_distance(bad)
        with pytest.raises(ValueError, match="not unit vectors"):
            pt.ks_pvalues(bad, samples=1000)
    # float32 and float16 singular vectors are unit vectors to their precision: accepted
    assert pt.ks_pvalues(v.float(), samples=1000).shape == (4,)
    assert pt.ks_pvalues(v.half(), samples=1000).shape == (4,)


@pytest.mark.parametrize("W", [torch.zeros(40, 30), torch.full((40, 30), 0.3), np.ones((30, 60))],
                         ids=["zero", "constant", "ones"])
def test_zero_and_constant_matrices_get_a_clear_error(W):
    with pytest.raises(ValueError, match="zero|constant"):
        pt.analyze(W, samples=1000)


def test_rank_one_and_rank_deficient_matrices():
    gen = torch.Generator().manual_seed(4)
    u, v = torch.randn(40, 1, generator=gen), torch.randn(1, 30, generator=gen)
    with pytest.raises(ValueError, match="rank 1"):
        pt.analyze(u @ v, samples=1000)
    # rank 20 of 30: the 10 null-space vectors are an arbitrary basis; they are left out
    A = torch.randn(40, 20, generator=gen, dtype=torch.float64) @ torch.randn(20, 30, generator=gen, dtype=torch.float64)
    with pytest.warns(UserWarning, match="rank 20"):
        res = pt.analyze(A, samples=1000, control=False)
    assert len(res.pvalues) == 20


def test_default_family_is_the_output_side():
    # METHODS §1: the paper tests the vectors of length n_l (the layer's units) = the left
    # singular vectors of PyTorch's (out, in) weight
    W = torch.randn(60, 25, generator=torch.Generator().manual_seed(0))
    res = pt.analyze(W, samples=1000, control=False)
    assert res.side == "left" and res.length == 60
    assert pt.analyze(W, side="output", samples=1000, control=False).length == 60
    right = pt.analyze(W, side="input", samples=1000, control=False)
    assert right.side == "right" and right.length == 25


# --------------------------------------------------------------------------- the band
def test_window_band_is_the_exact_law_of_a_mean_of_uniforms():
    alpha = 0.0125
    lo1, hi1 = pt.window_band([1], alpha)
    assert lo1[0] == pytest.approx(alpha / 2) and hi1[0] == pytest.approx(1 - alpha / 2)
    # Monte Carlo route (independent of the quantile function): 200,000 means of 15
    # uniforms fall outside the band with probability alpha; the count is binomial with
    # std sqrt(n alpha (1 - alpha)) = 50, 4 std = 200.
    lo, hi = pt.window_band([15], alpha)
    means = np.random.default_rng(0).random((200_000, 15)).mean(1)
    out = np.sum((means < lo[0]) | (means > hi[0]))
    assert abs(out - 200_000 * alpha) < 200
    # it is close to the normal approximation 0.5 +- z sqrt(1/(12 w)) (Irwin-Hall has a
    # lighter tail than the normal, so the exact band is slightly narrower)
    z = stats.norm.ppf(1 - alpha / 2)
    assert 0.5 - z * np.sqrt(1 / 180) < lo[0] < 0.5 - 0.95 * z * np.sqrt(1 / 180)


def test_control_matrix_agrees_with_the_exact_band(one_thread):
    # the window means of a Gaussian control fall outside the exact band at the rate alpha;
    # windows overlap, so count only every 15th one (independent): 1,000 windows from
    # 1000 x 1000 is too slow, so use 20 controls of 150 x 300 (10 windows each, 200 in all);
    # at alpha = 0.05 the count is Binomial(200, 0.05): mean 10, P(X > 22) < 1e-3.
    outside = 0
    for seed in range(20):
        res = pt.analyze(pt.gaussian_control((150, 300), seed=100 + seed), side="left",
                         samples=5000, fpr=0.2, control=False)  # alpha = 0.05 per test
        idx = np.arange(7 + res.n_raw, 150 - 7, 15)
        outside += np.sum((res.smoothed[idx] < res.lower[idx]) | (res.smoothed[idx] > res.upper[idx]))
    assert outside <= 22


# --------------------------------------------------------------------------- the boundary rule
def test_information_boundary_sees_one_to_seven_vectors_at_the_top():
    rng = np.random.default_rng(1)
    for k in range(0, 8):
        p = rng.random(200)
        p[:k] = 0.0
        p[k:k + 3] = [0.3, 0.6, 0.5]  # not below alpha: the raw run ends at k
        b = pt.information_boundary(p, 15)
        assert b.n_raw == k and b.n_above == k, (k, b.n_above)


def test_information_boundary_of_a_diffuse_block():
    # 40 moderately low p-values (0.1, above alpha: no raw run) then 0.5. A complete window
    # at position j holds 47 - j of the 0.1s; its mean 0.5 - 0.4 f (f = that count / 15)
    # enters the band (lower edge ~ 0.314 at alpha = 0.0125) once the count is <= 6, i.e.
    # from j = 41 on: the boundary overshoots by one position (the window's half-width
    # smears it; it cannot be placed more sharply from averages).
    p = np.full(300, 0.5)
    p[:40] = 0.1
    b = pt.information_boundary(p, 15)
    assert b.n_raw == 0 and 40 <= b.n_above <= 42
    # raised p-values (METHODS §2 (d)) leave the band upwards and count too
    p = np.full(300, 0.5)
    p[:40] = 0.9
    assert 40 <= pt.information_boundary(p, 15).n_above <= 42
    # a single excursion below is confirmed only with `confirm` positions inside
    p = np.full(300, 0.5)
    assert pt.information_boundary(p, 15).n_above == 0


def test_information_boundary_states_its_false_positive_rate():
    b = pt.information_boundary(np.full(50, 0.5), 15, fpr=0.04, confirm=3)
    assert b.fpr == 0.04 and b.alpha == pytest.approx(0.01)
    # i.i.d. uniform p-values (the exact null): P(n_above > 0) <= fpr by the union bound.
    # 4,000 sequences: at the bound the count is Binomial(4000, 0.04) (mean 160, std 12.4);
    # 200 is 3.2 std above it.
    rng = np.random.default_rng(2)
    hits = sum(pt.information_boundary(rng.random(M), 15, fpr=0.04).n_above > 0
               for M in np.tile([20, 50, 200, 1000], 1000))
    assert hits <= 200
    # and the bound is not vacuous: the first test alone fires at rate alpha = 0.01
    assert hits >= 40


def _noise(shape, dist, seed):
    g = torch.Generator().manual_seed(seed)
    if dist == "gauss":
        return torch.randn(*shape, generator=g, dtype=torch.float64)
    return torch.rand(*shape, generator=g, dtype=torch.float64) - 0.5


def _false_positives(shapes, seeds):
    hits = n = 0
    for shape in shapes:
        for dist in ("gauss", "uniform"):
            for side in ("left", "right"):
                for seed in seeds:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # small layers warn; that is tested elsewhere
                        res = pt.analyze(_noise(shape, dist, 1000 + seed), side=side,
                                         samples=10_000, control=False)
                    hits += res.n_above > 0
                    n += 1
    return hits, n


def test_pure_noise_small_layers_report_no_information(one_thread):
    # M from 20 to 64, square and rectangular, Gaussian and uniform entries, both sides:
    # the rule's false-positive rate is at most fpr = 0.05 (union bound; measured ~0.03).
    # 640 matrices: at rate 0.05 the count has mean 32 (std 5.5), the bound is its 0.998
    # quantile (about 48); the old rule
    # (one control matrix) gave 20-45% here.
    hits, n = _false_positives([(20, 20), (20, 50), (64, 30), (64, 64)], range(40))
    assert n == 640 and hits <= stats.binom.ppf(0.998, n, 0.05)


@pytest.mark.slow
def test_pure_noise_large_layers_report_no_information(one_thread):
    hits, n = _false_positives([(200, 300), (500, 500), (1000, 400), (1000, 1000)], range(8))
    assert n == 128 and hits <= stats.binom.ppf(0.998, n, 0.05)


def _planted(shape, k, seed, *, support=3, strengths=(4.0, 8.0)):
    """Gaussian noise (bulk edge 1 + sqrt q) plus k terms s u v^T with sparse, disjoint u, v.

    A sparse unit vector (3 entries of 1/sqrt 3) is as far from Porter-Thomas as a vector
    gets; s from 4 to 8 times the bulk edge puts each well above the detection threshold
    q^(1/4) (METHODS §5), so the singular vector of the sum is mostly the planted one.
    """
    g = torch.Generator().manual_seed(seed)
    n, m = shape
    W = torch.randn(n, m, generator=g, dtype=torch.float64) / np.sqrt(max(n, m))
    edge = 1 + np.sqrt(min(n, m) / max(n, m))
    pu, pv = torch.randperm(n, generator=g), torch.randperm(m, generator=g)
    for j in range(k):
        u = torch.zeros(n, dtype=torch.float64)
        v = torch.zeros(m, dtype=torch.float64)
        u[pu[support * j:support * (j + 1)]] = v[pv[support * j:support * (j + 1)]] = support ** -0.5
        s = edge * (strengths[0] + (strengths[1] - strengths[0]) * j / max(k - 1, 1))
        W += s * torch.outer(u, v)
    return W


def _planted_hits(shapes, ks, seeds, side):
    good = n = 0
    for shape in shapes:
        for k in ks:
            for seed in seeds:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = pt.analyze(_planted(shape, k, seed), side=side, samples=10_000, control=False)
                good += abs(res.n_above - k) <= 1
                n += 1
    return good, n


@pytest.mark.parametrize("side", ["left", "right"])
def test_planted_vectors_are_counted(side, one_thread):
    # 1, 3, 5 planted non-PT vectors: n_above = k +- 1 in at least 90% of seeds. Misses
    # come from the rule's false positives just below the planted ones (rate <= 0.05), so
    # over 90 cases at a true miss rate 0.05 P(good < 81) ~ 0.03.
    good, n = _planted_hits([(40, 30), (100, 60), (128, 128)], (1, 3, 5), range(10), side)
    assert good >= 0.9 * n


@pytest.mark.slow
def test_planted_vectors_are_counted_in_large_layers(one_thread):
    good, n = _planted_hits([(300, 500), (1000, 400)], (1, 3, 5), range(10), "left")
    assert good >= 0.9 * n


def test_analyze_random_matrix_has_no_boundary_and_planted_vectors_are_found():
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn(300, 200, generator=gen, dtype=torch.float64) / np.sqrt(300)
    res = pt.analyze(noise, samples=5000, side="right")
    lo, hi = res.band
    assert lo < 0.5 < hi and res.fpr == pt.FPR
    assert res.n_above == 0 and res.boundary == res.singular_values[0]
    assert res.control_n_above == 0
    # plant 8 strong rank-one terms whose vectors are localized (far from Porter-Thomas)
    planted = noise.clone()
    for k in range(8):
        u = torch.zeros(300, dtype=torch.float64); u[10 * k : 10 * k + 3] = 1 / np.sqrt(3)
        v = torch.zeros(200, dtype=torch.float64); v[5 * k : 5 * k + 4] = 0.5
        planted += (4 + k) * torch.outer(u, v)
    res = pt.analyze(planted, samples=5000, side="right")
    assert res.pvalues[:8].max() < 1e-3
    assert 8 <= res.n_above <= 9 and res.n_raw >= 8
    assert res.boundary == pytest.approx(res.singular_values[res.n_above])
    assert res.fraction_above == pytest.approx(res.n_above / 200)
    frame = res.to_frame()
    assert frame.outside_band[:8].all()
    left = pt.analyze(planted, side="left", samples=5000)
    assert left.length == 300 and left.pvalues[:8].max() < 1e-3 and 8 <= left.n_above <= 9


def test_small_layer_warns():
    W = torch.randn(40, 12, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="fewer than one window"):
        res = pt.analyze(W, side="left", samples=1000)
    assert res.n_above == 0

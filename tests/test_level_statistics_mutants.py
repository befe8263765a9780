"""rmtlib.level_statistics against hand-computed values and exact cases (issue 17, mutation testing).

Every expectation here is computed without the module: a picket fence whose number variance
is counted by hand, a staircase that is exactly linear in the right variable, the Gaussian
broadening written out as a sum of normal CDFs, the Hill estimator and the KS distance of
two spacings written out with numpy, and the input door's messages written out in full.
"""
import math
import re

import numpy as np
import pytest
from scipy import stats

from rmtlib import level_statistics as ls


def whole(text):
    return "^" + re.escape(text) + "$"


# --------------------------------------------------------------------------- degenerate levels
def test_a_repeated_nonzero_level_gets_the_unique_hint():
    # 30 levels 1..29 and a second 5: one coinciding pair, no zero level
    with pytest.raises(ValueError, match=whole(
            "levels: 1 of 29 neighbouring levels coincide: degenerate levels "
            "(drop repeated values first, e.g. with np.unique)")):
        ls.unfold(np.r_[np.arange(1.0, 30.0), 5.0])
    # the repeated pair at the bottom: still one coinciding pair, not "all levels equal"
    with pytest.raises(ValueError, match=r"^levels: 1 of 29 neighbouring levels coincide"):
        ls.unfold(np.r_[1.0, np.arange(1.0, 30.0)])


# --------------------------------------------------------------------------- reference laws
def test_spacing_densities_and_cdfs_vanish_below_zero():
    s = np.array([-2.0, -0.5])
    for f in (ls.goe_pdf, ls.goe_cdf, ls.poisson_pdf, ls.poisson_cdf):
        np.testing.assert_array_equal(f(s), [0.0, 0.0])
    assert ls.poisson_pdf(0.0) == 1.0 and ls.goe_pdf(0.0) == 0.0


def test_ks_distance_of_two_spacings_by_hand():
    # spacings 1 and 2: D = max_i max(i/n - F(s_i), F(s_i) - (i-1)/n), n = 2. For both laws
    # the largest term is F(1) - 0: GOE 1 - exp(-pi/4), Poisson 1 - exp(-1).
    s = [2.0, 1.0]
    goe = 1 - math.exp(-math.pi / 4)
    assert ls.ks_distance(s) == pytest.approx(goe, rel=1e-12)  # the default law is GOE
    assert ls.ks_distance(s, "goe") == pytest.approx(goe, rel=1e-12)
    assert ls.ks_distance(s, "poisson") == pytest.approx(1 - math.exp(-1), rel=1e-12)
    # a single spacing is not a distribution
    with pytest.raises(ValueError, match=whole(
            "spacings has 1 entries; at least 2 are needed (a distribution of spacings)")):
        ls.ks_distance([1.0])


def test_ks_critical_is_kolmogorovs_quantile_over_root_n():
    # K_{0.99} = 1.6276 (Kolmogorov distribution), over sqrt(100)
    assert ls.ks_critical(100) == pytest.approx(0.16276, abs=1e-4)
    with pytest.raises(ValueError, match=whole("n must lie in [1, inf]; got 0")):
        ls.ks_critical(0)


def test_hill_level_must_lie_strictly_between_0_and_1():
    x = np.arange(1.0, 11.0)
    for level in (0.0, 1.0):
        with pytest.raises(ValueError, match=re.escape(f"level must lie in (0, 1); got {level}")):
            ls.hill(x, 3, level=level)


# --------------------------------------------------------------------------- spacings, number variance
def test_spacings_of_three_levels():
    np.testing.assert_array_equal(ls.spacings([3.0, 0.0, 1.0]), [1.0, 2.0])
    with pytest.raises(ValueError, match=r"^unfolded has 2 entries; at least 3 are needed"):
        ls.spacings([0.0, 1.0])


def test_number_variance_of_a_picket_fence_by_hand():
    # Levels 0, 1, ..., 20 and L = 1: the closed window [x, x + 1] holds 2 levels when x is an
    # integer and 1 otherwise. Start points x = 0, 0.25, ..., 18.75 (76 of them, steps exact in
    # binary): 19 integers, 57 not, so <n> = 95/76 = 1.25, <n^2> = 133/76 = 1.75, Sigma^2 = 3/16.
    e = np.arange(21.0)
    assert ls.number_variance(e, 1.0, step=0.25)[0] == pytest.approx(3 / 16, abs=1e-12)
    # L = 0.5 from the default grid of 0.1 (x = 0, 0.1, ..., 19.4): [x, x + 0.5] holds a level
    # when x is within 1e-9 of an integer or x mod 1 >= 0.5, i.e. for tenths 0, 5, 6, 7, 8, 9
    # (x + 0.5 hits k + 1 exactly at tenth 5; closed window). 195 starts, 6/10 of them hold one.
    x = np.arange(195) / 10
    frac = np.round((x % 1) * 10) % 10
    n = np.isin(frac, [0, 5, 6, 7, 8, 9]).astype(float)
    got = ls.number_variance(e, 0.5)[0]
    # one start point on either side of an exact boundary may fall either way in floating point
    assert abs(got - n.var()) < 2 * 2 / 195


def test_number_variance_step_is_named_when_refused():
    with pytest.raises(ValueError, match=whole("step must lie in (0, 1]; got 0.0")):
        ls.number_variance(np.arange(100.0), 1.0, step=0.0)


# --------------------------------------------------------------------------- unfolding
def test_poly_unfolding_is_exact_when_the_staircase_is_linear_in_its_variable():
    # Levels i^2, i = 1..30: in the variable sqrt(lambda) = i the staircase (i - 1) + 1/2 is a
    # straight line, so a degree-1 fit unfolds exactly to 0.5, 1.5, ...; "auto" picks sqrt for
    # non-negative levels. Levels i (evenly spaced) are exact in the variable lambda itself.
    want = np.arange(30) + 0.5
    sq = np.arange(1.0, 31.0) ** 2
    np.testing.assert_allclose(ls.unfold(sq, degree=1, trim=0.0), want, atol=1e-9)
    np.testing.assert_allclose(ls.unfold(sq, degree=1, variable="sqrt", trim=0.0), want, atol=1e-9)
    lin = np.arange(1.0, 31.0)
    np.testing.assert_allclose(ls.unfold(lin, degree=1, variable="level", trim=0.0), want, atol=1e-9)
    # and the wrong variable is not exact (the test can fail)
    assert np.abs(ls.unfold(sq, degree=1, variable="level", trim=0.0) - want).max() > 0.5


def _broadened_staircase(lv, window):
    """Sum of normal CDFs Phi((lambda - lambda_k) / sigma_k), sigma_k = (lambda_{k+a} - lambda_{k-a}) / 2,
    indices clamped at the ends (Staats et al. Suppl. Eq. S3 integrated)."""
    M = len(lv)
    k = np.arange(M)
    sig = (lv[np.minimum(k + window, M - 1)] - lv[np.maximum(k - window, 0)]) / 2
    return lambda lam: stats.norm.cdf((np.asarray(lam)[:, None] - lv[None, :]) / sig[None, :]).sum(1)


@pytest.mark.parametrize("levels, window", [
    (np.sort(np.random.default_rng(0).uniform(0, 60, 60)), 3),
    (np.arange(40.0), 1),  # window 1 (the nearest neighbours) is allowed
])
def test_broadened_staircase_is_the_sum_of_normal_cdfs(levels, window):
    # The fit integrates from a point below the spectrum, so it differs from the sum of CDFs by a
    # constant (the mass below that point): compare differences from the first level. Grid
    # error: the integral on a grid of h <= (span + 8 widths) / 4000 <= 0.018 and the linear
    # interpolation between its points are off by at most h^2 / 8 * sum_k max|N_k'|
    # = h^2 / 8 * M * 0.242 / sigma_min^2 <= 7e-4 here (sigma_min >= 0.5 spacings; M <= 60).
    fit = ls.smooth_staircase(levels, "broaden", window=window)
    ref = _broadened_staircase(levels, window)
    x = np.linspace(levels[0], levels[-1], 301)
    got = fit(x) - fit(levels[:1])
    want = ref(x) - ref(levels[:1])
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_unfolding_parameters_are_checked_with_their_ranges():
    lv = np.arange(1.0, 61.0)
    with pytest.raises(ValueError, match=whole("degree must lie in [1, 40]; got 0")):
        ls.unfold(lv, degree=0)
    with pytest.raises(ValueError, match=whole("window must lie in [1, inf]; got 0")):
        ls.unfold(lv, "broaden", window=0)
    with pytest.raises(ValueError, match=whole(
            "variable='sqrt' needs non-negative levels (squared singular values); "
            "use variable='level' for levels of either sign")):
        ls.unfold(np.arange(-30.0, 30.0), variable="sqrt")


# --------------------------------------------------------------------------- summary
def test_summary_keys_and_values_by_hand():
    rng = np.random.default_rng(21)
    W = rng.standard_normal((200, 100))
    out = ls.summary(W, L=(2.5, 5.0))
    # 100 levels, 5 trimmed at each end: 90 kept, 89 spacings, K_{0.99} / sqrt(89)
    assert out["ls_n_levels"] == 90
    assert out["ls_ks_crit"] == pytest.approx(stats.kstwobign.isf(0.01) / math.sqrt(89), rel=1e-12)
    # L = 2.5 is written 2p5 in the keys; the GOE value is Mehta's Sigma^2(2.5) (asymptotic form
    # (2/pi^2)(ln(2 pi L) + gamma + 1 - pi^2/8) = 0.588, within 0.01 of the exact value at L = 2.5)
    assert set(out) >= {"ls_sigma2_L2p5", "ls_sigma2_goe_L2p5", "ls_sigma2_L5", "ls_sigma2_goe_L5"}
    asym = 2 / math.pi**2 * (math.log(2 * math.pi * 2.5) + np.euler_gamma + 1 - math.pi**2 / 8)
    assert out["ls_sigma2_goe_L2p5"] == pytest.approx(asym, abs=0.01)
    # Hill indices of the singular values at k = max(5, M/50) = 5 and k = max(2 k_small, M/5) = 20,
    # written out: alpha_k = 1 / mean_{i<=k} ln(nu_(i) / nu_(k+1))
    sv = np.linalg.svd(W, compute_uv=False)  # descending
    a5 = 1 / np.mean(np.log(sv[:5] / sv[5]))
    a20 = 1 / np.mean(np.log(sv[:20] / sv[20]))
    assert out["ls_hill_alpha_small"] == pytest.approx(a5, rel=1e-9)
    assert out["ls_hill_alpha_large"] == pytest.approx(a20, rel=1e-9)
    assert out["ls_hill_ratio"] == pytest.approx(a5 / a20, rel=1e-9)

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
    with pytest.raises(ValueError, match=whole("n must lie in [1, inf); got 0")):
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
    with pytest.raises(ValueError, match=whole("window must lie in [1, inf); got 0")):
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


# =========================================================================== session 4: the whole module
# Tests for the survivors of the whole-module run (1,009 mutants, 222 survived on session 3's
# tests). Same rules: every expectation worked out by hand or computed another way; every
# message matched whole; boundaries checked on the exact boundary.

# --------------------------------------------------------------------------- levels, _levels
def test_levels_of_one_row_and_one_column_and_the_message_for_a_vector():
    # a 1 x 2 and a 2 x 1 matrix (3, 4) have the single level 3^2 + 4^2 = 25
    np.testing.assert_allclose(ls.levels(np.array([[3.0, 4.0]])), [25.0], rtol=1e-12)
    np.testing.assert_allclose(ls.levels(np.array([[3.0], [4.0]])), [25.0], rtol=1e-12)
    with pytest.raises(ValueError, match=whole("W must be a 2-D matrix; got shape (3,)")):
        ls.levels(np.ones(3))


def test_too_few_levels_message_names_the_levels_and_the_reason():
    with pytest.raises(ValueError, match=whole(
            "levels has 19 entries; at least 20 are needed (a smooth staircase fit with trimmed edges)")):
        ls.unfold(np.arange(19.0))


def test_degenerate_level_messages_whole():
    with pytest.raises(ValueError, match=whole(
            "levels: all 20 levels are equal (1); a degenerate spectrum has no spacings to analyse")):
        ls.unfold(np.ones(20))
    # nineteen zeros and a 1: not all equal (the span is 1), 18 of 19 gaps are ties, 19 zeros
    with pytest.raises(ValueError, match=whole(
            "levels: 18 of 19 neighbouring levels coincide: degenerate levels (19 of them are zero: "
            "a rank-deficient matrix? drop the zero levels first, e.g. levels[levels > 0])")):
        ls.unfold(np.r_[np.zeros(19), 1.0])
    # a 0 and nineteen 1s: not all equal either; one zero level only, so the np.unique hint
    with pytest.raises(ValueError, match=whole(
            "levels: 18 of 19 neighbouring levels coincide: degenerate levels "
            "(drop repeated values first, e.g. with np.unique)")):
        ls.unfold(np.r_[0.0, np.ones(19)])


def test_zero_hint_needs_two_zero_levels():
    # exactly two zeros (and no other tie): the rank-deficiency hint
    with pytest.raises(ValueError, match=whole(
            "levels: 1 of 29 neighbouring levels coincide: degenerate levels (2 of them are zero: "
            "a rank-deficient matrix? drop the zero levels first, e.g. levels[levels > 0])")):
        ls.unfold(np.r_[0.0, 0.0, np.arange(1.0, 29.0)])
    # one zero and a repeated 5: the np.unique hint, one zero is no rank deficiency
    with pytest.raises(ValueError, match=whole(
            "levels: 1 of 29 neighbouring levels coincide: degenerate levels "
            "(drop repeated values first, e.g. with np.unique)")):
        ls.unfold(np.r_[0.0, np.arange(1.0, 29.0), 5.0])


def test_tie_tolerance_on_its_exact_boundary():
    # 21 levels spanning 20: the tie threshold is TIE_TOL * 20 / 20 = 1e-10 exactly (checked in
    # binary: 1e-10 * 20 / 20 == 1e-10). A gap of exactly 1e-10 (levels 0 and 1e-10) is a tie
    # (gap <= threshold); 1.03e-10 is not. The "zero" test is |level| <= TIE_TOL * max = 2e-9:
    # both 0 and 1e-10 count as zero.
    assert 1e-10 * 20 / 20 == 1e-10
    rest = np.arange(2.0, 21.0)
    with pytest.raises(ValueError, match=whole(
            "levels: 1 of 20 neighbouring levels coincide: degenerate levels (2 of them are zero: "
            "a rank-deficient matrix? drop the zero levels first, e.g. levels[levels > 0])")):
        ls._levels(np.r_[0.0, 1e-10, rest])
    # just above the threshold (and below the threshold with n - 2: 1.05e-10) the levels pass
    np.testing.assert_array_equal(ls._levels(np.r_[1.03e-10, 0.0, rest]), np.r_[0.0, 1.03e-10, rest])


def test_zero_level_tolerance_on_its_exact_boundary():
    # largest level 1: a level counts as zero when |level| <= TIE_TOL * 1 = 1e-10, boundary
    # included. Two levels of exactly 1e-10 (a tie) are two "zeros".
    with pytest.raises(ValueError, match=whole(
            "levels: 1 of 29 neighbouring levels coincide: degenerate levels (2 of them are zero: "
            "a rank-deficient matrix? drop the zero levels first, e.g. levels[levels > 0])")):
        ls._levels(np.r_[1e-10, 1e-10, np.arange(1.0, 29.0) / 28])
    # largest level 1e12: the zero test is |level| <= 100, so two tied levels of 1 are zeros too
    # (the tolerance scales with the largest level, it is not an absolute 1e-10)
    with pytest.raises(ValueError, match=r"\(2 of them are zero: "):
        ls._levels(np.r_[1.0, 1.0, np.arange(1.0, 29.0) * 1e12 / 28])


def test_unfolding_is_scale_invariant_for_small_levels():
    # Levels i^2 / 1e6 (all below 1): the degree-1 sqrt fit is exact as before, 0.5, 1.5, ...
    # (a span below 1 is not degenerate). The broadened staircase is scale invariant too
    # (widths scale with the levels): the same unfolded levels for lambda and lambda * 1e-3.
    want = np.arange(30) + 0.5
    sq = np.arange(1.0, 31.0) ** 2
    np.testing.assert_allclose(ls.unfold(sq / 1e6, degree=1, trim=0.0), want, atol=1e-9)
    lv = np.sort(np.random.default_rng(0).uniform(0, 60, 60))
    np.testing.assert_allclose(ls.unfold(lv * 1e-3, "broaden"), ls.unfold(lv, "broaden"), atol=1e-9)


# --------------------------------------------------------------------------- smooth staircase
def test_smooth_staircase_defaults_to_the_polynomial_in_sqrt():
    # smooth_staircase(levels) with no method: the polynomial (here degree 1) in sqrt(lambda):
    # exact for levels i^2, N(i^2) = i - 1/2, and N(0) = -1/2; a negative lambda is clipped to 0
    sq = np.arange(1.0, 31.0) ** 2
    fit = ls.smooth_staircase(sq, degree=1, trim=0.0)
    np.testing.assert_allclose(fit(sq), np.arange(30) + 0.5, atol=1e-9)
    np.testing.assert_allclose(fit([0.0, -4.0]), [-0.5, -0.5], atol=1e-9)
    # integer lambdas of any integer dtype are evaluated in double precision: sqrt(2) - 1/2 etc.
    for dtype in (np.uint8, np.int16):
        lam = np.array([2, 3, 200], dtype=dtype)
        np.testing.assert_allclose(fit(lam), np.sqrt([2.0, 3.0, 200.0]) - 0.5, rtol=0, atol=1e-9)


def test_polynomial_fit_on_its_minimum_size_boundary_and_the_message_below_it():
    # 20 levels, trim 0.25: 5 cut at each end, 10 kept. A polynomial of degree d needs
    # max(10, d + 2) kept levels: degree 8 needs exactly 10 (accepted; the degree-8 fit of a
    # straight line in sqrt(lambda) is that line), degree 12 (the default) needs 14.
    sq = np.arange(1.0, 21.0) ** 2
    np.testing.assert_allclose(ls.unfold(sq, degree=8, trim=0.25), np.arange(5, 15) + 0.5, atol=1e-7)
    msg = whole("after trimming 5 levels at each end only 10 remain; a polynomial of degree 12 "
                "needs at least 14 (lower trim or degree)")
    with pytest.raises(ValueError, match=msg):
        ls.smooth_staircase(sq, trim=0.25)
    with pytest.raises(ValueError, match=msg):
        ls.unfold(sq, trim=0.25)


def test_sqrt_and_auto_variables_on_the_sign_boundary():
    # levels i^2, i = 0..29 (one level exactly 0): "sqrt" allowed, "auto" picks sqrt (lambda_min
    # >= 0), both exact with a degree-1 fit: N(i^2) = i + 1/2
    sq0 = np.arange(30.0) ** 2
    want = np.arange(30) + 0.5
    np.testing.assert_allclose(ls.unfold(sq0, degree=1, variable="sqrt", trim=0.0), want, atol=1e-9)
    np.testing.assert_allclose(ls.unfold(sq0, degree=1, trim=0.0), want, atol=1e-9)
    # one negative level among 30 evenly spaced ones: "auto" fits in lambda (exact here),
    # "sqrt" is refused
    lin = np.arange(-1.0, 29.0)
    np.testing.assert_allclose(ls.unfold(lin, degree=1, trim=0.0), want, atol=1e-9)
    with pytest.raises(ValueError, match=r"^variable='sqrt' needs non-negative levels"):
        ls.unfold(lin, degree=1, variable="sqrt", trim=0.0)


def test_polynomial_fit_uses_a_margin_of_half_the_trimmed_levels():
    # 30 levels, trim 0.2: k = 6 cut at each end, the fit runs over j = k // 2 = 3 levels more on
    # each side, i.e. indices 3..26. Reference: ordinary least squares of i + 1/2 on
    # (1, x, x^2) with numpy's lstsq, x = sqrt(lambda) (a different route from Polynomial.fit;
    # the quadratic is well conditioned: rounding ~1e-12).
    lv = np.sort(np.random.default_rng(5).uniform(1, 100, 30))
    x, c = np.sqrt(lv), np.arange(30) + 0.5
    V = np.vander(x[3:27], 3)
    coef = np.linalg.lstsq(V, c[3:27], rcond=None)[0]
    fit = ls.smooth_staircase(lv, degree=2, trim=0.2)
    grid = np.linspace(lv[0], lv[-1], 50)
    np.testing.assert_allclose(fit(grid), np.vander(np.sqrt(grid), 3) @ coef, atol=1e-8)


def test_staircase_parameters_messages_whole():
    lv = np.arange(1.0, 61.0)
    with pytest.raises(ValueError, match=whole("method must be one of ['poly', 'broaden']; got 'spline'")):
        ls.smooth_staircase(lv, "spline")
    with pytest.raises(ValueError, match=whole("variable must be one of ['auto', 'level', 'sqrt']; got 'log'")):
        ls.smooth_staircase(lv, variable="log")
    with pytest.raises(ValueError, match=whole(
            "trim must lie in [0.0, 0.25]; got -0.1 (the fraction of levels cut at each end)")):
        ls.smooth_staircase(lv, trim=-0.1)
    # the window is checked for the polynomial too, although only broadening uses it
    with pytest.raises(ValueError, match=whole("window must lie in [1, inf); got 0")):
        ls.smooth_staircase(lv, "poly", window=0)


def test_broadened_staircase_default_window_and_a_window_beyond_the_spectrum():
    # the default window is 15 (the reference of the test above, written out); a window of 25
    # on 20 levels clamps every index to the ends (all widths = span / 2), which is allowed
    lv = np.sort(np.random.default_rng(3).uniform(0, 80, 80))
    x = np.linspace(lv[0], lv[-1], 301)
    for fit, ref in ((ls.smooth_staircase(lv, "broaden"), _broadened_staircase(lv, 15)),):
        np.testing.assert_allclose(fit(x) - fit(lv[:1]), ref(x) - ref(lv[:1]), atol=1e-3)
    e = ls.unfold(lv, "broaden")
    ref = _broadened_staircase(lv, 15)(lv[4:76])
    np.testing.assert_allclose(np.diff(e), np.diff(ref), atol=2e-3)
    short = np.arange(20.0)
    fit, ref = ls.smooth_staircase(short, "broaden", window=25), _broadened_staircase(short, 25)
    np.testing.assert_allclose(fit(short) - fit(short[:1]), ref(short) - ref(short[:1]), atol=1e-3)


def test_a_decreasing_fit_message_whole():
    rng = np.random.default_rng(14)
    W = rng.standard_normal((400, 200)) / 20
    W[:, :100] *= 100
    with pytest.raises(ValueError, match=whole(
            "the poly staircase fit decreases somewhere inside the kept levels; "
            "lower `degree`, raise `trim`, or use method='broaden'")):
        ls.unfold(ls.levels(W))


# --------------------------------------------------------------------------- reference laws
def test_spacing_laws_take_integer_spacings_in_double_precision():
    # unsigned and large integers: computed as floats (no wrap-around of -s, no overflow of s^2)
    one = np.array([1], dtype=np.uint8)
    assert ls.poisson_pdf(one)[0] == pytest.approx(math.exp(-1), rel=1e-12)
    assert ls.poisson_cdf(one)[0] == pytest.approx(1 - math.exp(-1), rel=1e-12)
    big = np.array([2**32])  # int64; its square overflows int64 to 0
    assert ls.goe_cdf(big)[0] == 1.0
    assert ls.goe_pdf(big)[0] == 0.0
    assert ls.goe_pdf(np.array([0]))[0] == 0.0  # s = 0 is in the support, value 0


def test_poisson_density_far_below_zero_is_zero_without_overflow():
    # exp(-s) for s = -1000 would overflow (with a RuntimeWarning); the density is 0 there, and
    # the clip keeps the exponent finite
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(ls.poisson_pdf(np.array([-1000.0, -1.0])), [0.0, 0.0])


# --------------------------------------------------------------------------- KS
def test_ks_distance_when_the_largest_gap_is_above_the_law():
    # spacings 0.01, 0.02: the empirical cdf reaches 1 long before the law does; the distance is
    # the last term i/n - F(s_i) = 1 - F(0.02): Poisson 1 - (1 - e^-0.02) = e^-0.02
    assert ls.ks_distance([0.02, 0.01], "poisson") == pytest.approx(math.exp(-0.02), rel=1e-12)
    assert ls.ks_distance([0.02, 0.01]) == pytest.approx(math.exp(-math.pi * 0.02**2 / 4), rel=1e-12)
    with pytest.raises(ValueError, match=whole("law must be one of ['goe', 'poisson']; got 'gue'")):
        ls.ks_distance([1.0, 2.0], "gue")


def test_ks_critical_alpha_is_an_open_interval_named_alpha():
    # K_{0.95} = 1.3581 (Kolmogorov distribution, tabulated), over sqrt(100)
    assert ls.ks_critical(100, 0.05) == pytest.approx(0.13581, abs=1e-4)
    for alpha in (0.0, 1.0, 1.5, -0.5):
        with pytest.raises(ValueError, match=whole(f"alpha must lie in (0, 1); got {alpha}")):
            ls.ks_critical(100, alpha)


# --------------------------------------------------------------------------- number variance
def test_number_variance_of_four_uneven_levels_by_hand():
    # levels 0, 0.5, 3, 4 (span 4), L = 2 (= span / 2, the largest allowed), step 0.5: start
    # points 0, 0.5, 1, 1.5; closed windows [x, x + 2] hold {0, 0.5}, {0.5}, {3}, {3}:
    # counts 2, 1, 1, 1, mean 5/4, variance 7/4 - 25/16 = 3/16. Unsorted input is sorted first.
    e = [3.0, 0.0, 4.0, 0.5]
    np.testing.assert_allclose(ls.number_variance(e, 2.0, step=0.5), [3 / 16], atol=1e-12)
    # three levels are enough: 0, 1, 2 with L = 1, step 0.25: starts 0, .25, .5, .75, counts
    # 2, 1, 1, 1: 3/16 again
    np.testing.assert_allclose(ls.number_variance([0.0, 1.0, 2.0], 1.0, step=0.25), [3 / 16], atol=1e-12)


def test_number_variance_messages_whole():
    with pytest.raises(ValueError, match=whole(
            "unfolded has 2 entries; at least 3 are needed (two spacings)")):
        ls.number_variance([0.0, 1.0], 1.0)
    # levels 50..149 span 99: L = 60 is refused, L = 49.5 = span / 2 exactly is allowed
    e = np.arange(100.0) + 50
    with pytest.raises(ValueError, match=whole(
            "L = 60 is larger than half the unfolded spectrum (100 levels spanning 99); use L <= 49.5")):
        ls.number_variance(e, 60.0)
    assert ls.number_variance(e, 49.5, step=0.5)[0] >= 0
    with pytest.raises(ValueError, match=whole("L must be 0-D or a 1-D array; got shape (2, 2)")):
        ls.number_variance_poisson(np.ones((2, 2)))
    with pytest.raises(ValueError, match=whole("unfolded has 2 entries; at least 3 are needed (2 spacings)")):
        ls.spacings([0.0, 1.0])


# --------------------------------------------------------------------------- Hill
def test_hill_default_k_band_and_level_by_hand():
    # values 8, 4, 2, 1 (given unsorted): alpha_1 = 1 / ln 2, alpha_2 = 1 / mean(ln 4, ln 2)
    # = 1 / (1.5 ln 2), alpha_3 = 1 / mean(ln 8, ln 4, ln 2) = 1 / (2 ln 2); band
    # alpha (1 -+ z / sqrt(k)), z = 1.959964 (two-sided 95%). Scaled by 1/16 (all below 1):
    # the same indices (the estimator is scale invariant).
    ln2 = math.log(2)
    want = np.array([1 / ln2, 1 / (1.5 * ln2), 1 / (2 * ln2)])
    z = 1.959963985
    for x in (np.array([2.0, 8.0, 1.0, 4.0]), np.array([2.0, 8.0, 1.0, 4.0]) / 16):
        est = ls.hill(x)
        np.testing.assert_array_equal(est.k, [1, 2, 3])
        np.testing.assert_allclose(est.alpha, want, rtol=1e-12)
        np.testing.assert_allclose(est.lower, want * (1 - z / np.sqrt([1, 2, 3])), rtol=1e-8)
        np.testing.assert_allclose(est.upper, want * (1 + z / np.sqrt([1, 2, 3])), rtol=1e-8)
        assert est.level == 0.95
    # k = 1 (the smallest allowed) on its own
    assert ls.hill(np.array([8.0, 4.0, 2.0, 1.0]), 1).alpha[0] == pytest.approx(1 / ln2, rel=1e-12)


def test_hill_needs_only_the_k_plus_1_largest_values_positive():
    # 4, 2, 1, 0 with k = 2: x_(3) = 1 > 0, the zero below it is never used
    est = ls.hill(np.array([4.0, 2.0, 1.0, 0.0]), 2)
    assert est.alpha[0] == pytest.approx(1 / (1.5 * math.log(2)), rel=1e-12)
    with pytest.raises(ValueError, match=whole(
            "the 4 largest values must be positive for the Hill estimator (x_(k+1) = 0); use a smaller k")):
        ls.hill(np.array([3.0, 2.0, 1.0, 0.0, -1.0]), 3)


def test_hill_of_a_flat_top_is_infinite():
    # 2, 2, 2, 1: for k = 1, 2 the top values equal the threshold, gap 0, alpha = inf (no tail);
    # k = 3: mean(ln 2, ln 2, ln 2) - ln 1 = ln 2, alpha = 1 / ln 2
    est = ls.hill(np.array([2.0, 2.0, 2.0, 1.0]))
    assert est.alpha.dtype == np.float64
    np.testing.assert_array_equal(est.alpha[:2], [np.inf, np.inf])
    assert est.alpha[2] == pytest.approx(1 / math.log(2), rel=1e-12)


def test_hill_k_messages_whole():
    x = np.arange(1.0, 11.0)
    for k, got in ((2.5, "2.5..2.5"), (0, "0..0")):
        with pytest.raises(ValueError, match=whole(
                f"k must be integers in [1, 9] (n - 1 for 10 values); got {got}")):
            ls.hill(x, k)
    with pytest.raises(ValueError, match=whole("k must be 0-D or a 1-D array; got shape (1, 1)")):
        ls.hill(x, [[3]])
    with pytest.raises(ValueError, match=whole(
            "values has 1 entries; at least 2 are needed (one tail value and a threshold)")):
        ls.hill([3.0], 1)


# --------------------------------------------------------------------------- summary
def _layer(n, m, seed):
    return np.random.default_rng(seed).standard_normal((n, m))


def test_summary_messages_whole():
    W = _layer(40, 20, 0)
    with pytest.raises(ValueError, match=whole("W must be a 2-D matrix; got shape (5,)")):
        ls.summary(np.ones(5))
    with pytest.raises(ValueError, match=whole("method must be one of ['poly', 'broaden']; got 'spline'")):
        ls.summary(W, method="spline")
    # a polynomial refused for its size is an error, not a reason to fall back to broadening;
    # the default degree is 12
    with pytest.raises(ValueError, match=whole(
            "after trimming 5 levels at each end only 10 remain; a polynomial of degree 12 "
            "needs at least 14 (lower trim or degree)")):
        ls.summary(W, trim=0.25)
    with pytest.raises(ValueError, match=whole(
            "after trimming 0 levels at each end only 20 remain; a polynomial of degree 19 "
            "needs at least 21 (lower trim or degree)")):
        ls.summary(W, degree=19, trim=0.0)
    with pytest.raises(ValueError, match=whole("window must lie in [1, inf); got 0")):
        ls.summary(W, window=0)


def test_summary_of_the_smallest_layer_and_its_hill_ks():
    # a 40 x 20 layer has exactly MIN_LEVELS = 20 levels: allowed. Hill at k_small = max(5, 0) = 5
    # and k_large = max(2 * 5, 20 // 5) = 10, written out on the singular values.
    W = _layer(40, 20, 1)
    out = ls.summary(W, trim=0.0)
    assert out["ls_n_levels"] == 20
    sv = np.linalg.svd(W, compute_uv=False)
    a5 = 1 / np.mean(np.log(sv[:5] / sv[5]))
    a10 = 1 / np.mean(np.log(sv[:10] / sv[10]))
    assert out["ls_hill_alpha_small"] == pytest.approx(a5, rel=1e-9)
    assert out["ls_hill_alpha_large"] == pytest.approx(a10, rel=1e-9)
    # broadening ignores the degree: degree 40 with 10 kept levels is no error there
    out = ls.summary(W, method="broaden", degree=40, trim=0.25)
    assert out["ls_unfolding"] == "broaden" and out["ls_n_levels"] == 10


def test_summary_hill_k_small_grows_as_m_over_50():
    # 300 levels: k_small = max(5, 300 // 50) = 6, k_large = max(12, 60) = 60
    W = _layer(600, 300, 2)
    out = ls.summary(W, L=(1.0,))
    sv = np.linalg.svd(W, compute_uv=False)
    a6 = 1 / np.mean(np.log(sv[:6] / sv[6]))
    a60 = 1 / np.mean(np.log(sv[:60] / sv[60]))
    assert out["ls_hill_alpha_small"] == pytest.approx(a6, rel=1e-9)
    assert out["ls_hill_alpha_large"] == pytest.approx(a60, rel=1e-9)


def test_summary_sigma2_on_the_half_span_boundary():
    # the number variance is measured for L <= span / 2 of the unfolded levels (boundary
    # included) and NaN beyond; span computed here from the public unfold of the same levels
    W = _layer(120, 60, 3)
    e = ls.unfold(ls.levels(W))
    half = (e[-1] - e[0]) / 2
    out = ls.summary(W, L=(half, half * 1.01))
    tags = [f"{v:g}".replace(".", "p") for v in (half, half * 1.01)]
    assert np.isfinite(out[f"ls_sigma2_L{tags[0]}"]) and np.isnan(out[f"ls_sigma2_L{tags[1]}"])


def test_summary_fallback_keeps_trim_and_window():
    # half the columns 6x larger: two bands of levels that no degree-12 polynomial follows
    # monotonically, so summary falls back to broadening. With trim 0 all 200 levels are kept,
    # and the broadening uses the window given (3 here, 15 by default). The keys are documented
    # as the KS distances of the spacings of the unfolded levels: checked against the public
    # functions called with those parameters, and the window must matter (the test can fail).
    rng = np.random.default_rng(14)
    W = rng.standard_normal((400, 200)) / 20
    W[:, :100] *= 6
    with pytest.raises(ValueError, match="decreases"):
        ls.unfold(ls.levels(W))
    lv = ls.levels(W)
    ks = {}
    for window in (3, 15):
        s = np.diff(ls.unfold(lv, "broaden", trim=0.0, window=window))
        ks[window] = ls.ks_distance(s, "goe")
    assert abs(ks[3] - ks[15]) > 0.05
    out = ls.summary(W, trim=0.0, window=3)
    assert out["ls_unfolding"] == "broaden" and out["ls_n_levels"] == 200
    assert out["ls_ks_goe"] == pytest.approx(ks[3], abs=1e-12)
    assert ls.summary(W, trim=0.0)["ls_ks_goe"] == pytest.approx(ks[15], abs=1e-12)


# --------------------------------------------------------------------------- the closed-form broadening (bug fix)
def test_broadened_unfolding_resolves_a_band_much_narrower_than_the_span():
    # Half the columns 100x larger: the 100 small levels lie in [0.14, 1.9], the span is 22,000.
    # The broadened staircase is sum_k Phi((lambda - lambda_k) / sigma_k) at every scale, so the
    # unfolded spacings inside the narrow band are those of the reference (of order 1), not
    # those of a grid laid over the whole span (session 4 found spacings of 0.001 there: the
    # band fell between two grid points of a 4000-point grid, and the KS distance to GOE was
    # 0.50 instead of 0.06). Closed form on both sides: only rounding differs (sums of 200
    # terms <= 1, ~1e-13); the width floor of broaden (1e-6 of the span = 0.022) lies below
    # every window-15 width here, so the reference needs none.
    rng = np.random.default_rng(14)
    W = rng.standard_normal((400, 200)) / 20
    W[:, :100] *= 100
    lv = np.sort(np.linalg.svd(W, compute_uv=False) ** 2)
    ref = _broadened_staircase(lv, 15)(lv)
    np.testing.assert_allclose(ls.unfold(lv, "broaden", trim=0.0), ref, atol=1e-9)
    # and the summary's fallback (poly fails here) reports the KS distance of those spacings
    s = np.sort(np.diff(ref))
    F = 1 - np.exp(-np.pi * s**2 / 4)
    n = len(s)
    ks = max((np.arange(1, n + 1) / n - F).max(), (F - np.arange(n) / n).max())
    out = ls.summary(W, trim=0.0)
    assert out["ls_unfolding"] == "broaden"
    assert out["ls_ks_goe"] == pytest.approx(ks, abs=1e-9)


def test_staircases_keep_the_shape_of_lambda():
    # "a vectorised function of lambda": a scalar gives a 0-d value, a 3 x 4 array a 3 x 4 array.
    # Values: levels 1..40 in the variable lambda with a degree-1 fit give N(lambda) = lambda - 1/2
    # exactly; the broadened one is the sum of normal cdfs (window 15).
    lv = np.arange(1.0, 41.0)
    grid = np.linspace(0.0, 41.0, 12)
    refs = {"poly": lambda lam: lam - 0.5, "broaden": _broadened_staircase(lv, 15)}
    for method, ref in refs.items():
        fit = ls.smooth_staircase(lv, method, degree=1, variable="level", trim=0.0)
        one = fit(5.0)
        assert np.shape(one) == () and float(one) == pytest.approx(float(ref(np.array([5.0]))[0]), abs=1e-9)
        two = fit(grid.reshape(3, 4))
        assert two.shape == (3, 4)
        np.testing.assert_allclose(two.ravel(), ref(grid), atol=1e-9)


def test_broadened_unfolding_is_translation_invariant():
    # levels 0..39 and the same levels shifted by 2^40 (exact in binary): the widths are
    # differences of levels, so the unfolded levels are the same (to rounding of the sums)
    lv = np.arange(40.0)
    np.testing.assert_allclose(ls.unfold(lv + 2.0**40, "broaden", window=1),
                               ls.unfold(lv, "broaden", window=1), atol=1e-9)

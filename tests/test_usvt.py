"""fit_usvt: the MP bulk scale trusting neither end (METHODS §10)."""
import math

import numpy as np
import pytest

from rmtlib import marchenko_pastur as mp


def _noise(N, M, s, seed):
    return np.random.default_rng(seed).normal(0.0, s, (N, M))


def _sv(W):
    return np.linalg.svd(W, compute_uv=False)


def test_pure_noise_sigma_and_no_false_deviations():
    # The energy estimate sigma^2 = sum nu^2 / M has relative sd ~ 1/sqrt(N M) (0.0024 for
    # 600 x 300), so 1% on sigma is > 8 sd. At level 0.99 each end crosses its TW quantile
    # with probability ~1%: over 8 seeds we allow at most 2 matrices with any deviation
    # (P(>= 3 | p = 0.03, n = 8) < 0.2%).
    N, M, s = 600, 300, 0.05
    flagged = 0
    for seed in range(8):
        f = mp.fit_usvt(_sv(_noise(N, M, s, seed)), (N, M))
        assert abs(f.sigma / (s * math.sqrt(N)) - 1) < 0.01
        flagged += (f.n_low + f.n_high) > 0
    assert flagged <= 2


def _planted(N, M, s, k_low, c, k_high, seed):
    """Noise with k_low right directions scaled by c and k_high rank-one spikes on top."""
    rng = np.random.default_rng(seed)
    G = rng.normal(0.0, s, (N, M))
    Q, _ = np.linalg.qr(rng.normal(size=(M, M)))
    P = Q[:, :k_low]
    W = G - (1 - c) * (G @ P) @ P.T
    U, _ = np.linalg.qr(rng.normal(size=(N, k_high)))
    thetas = np.linspace(3.0, 10.0, k_high) * s * math.sqrt(N)
    return W + (U * thetas) @ Q[:, k_low : k_low + k_high].T


def test_planted_spikes_at_both_ends_are_counted_and_sigma_recovered():
    # Low end: W = [G1, c G2] in a rotated basis. The k smallest singular values come from
    # the part of c G2 orthogonal to range(G1), an (N - M + k) x k Gaussian block:
    # nu ~ c s (sqrt(N - M + k) -+ sqrt(k)), here 0.1 s (22.47 -+ 2.2), far below the lower
    # edge s (sqrt N - sqrt M) = 9.26 s. High end: spikes of 3..10 sigma are above the BBP
    # threshold sigma q^(1/4) = 0.84 sigma, so all are outliers.
    N, M, s, k = 1000, 500, 0.05, 5
    W = _planted(N, M, s, k, 0.1, k, seed=3)
    sv = np.sort(_sv(W))
    f = mp.fit_usvt(sv, (N, M))
    assert f.n_low == k and f.n_high == k
    # excluding k columns and k rows/columns from the energy leaves sigma unbiased to
    # O(k / M^2); the estimate's sd is ~ 1/sqrt(N M): 1% is generous
    assert abs(f.sigma / (s * math.sqrt(N)) - 1) < 0.01
    low = sv[:k] / s
    centre = 0.1 * math.sqrt(N - M + k)
    assert np.all(np.abs(low - centre) < 0.1 * math.sqrt(k) + 0.5)


def test_naive_scale_is_biased_where_usvt_is_not():
    # the strongest spike alone adds theta^2 = 100 sigma^2 to sum nu^2 = sigma^2 M (k=5:
    # sum ~ 3^2+...+10^2 = 267 sigma^2), so the naive sigma is ~25% too large
    N, M, s = 1000, 500, 0.05
    sv = _sv(_planted(N, M, s, 5, 0.1, 5, seed=4))
    naive = math.sqrt(np.mean(sv**2)) / (s * math.sqrt(N))
    assert naive > 1.15
    assert abs(mp.fit_usvt(sv, (N, M)).sigma / (s * math.sqrt(N)) - 1) < 0.01


def test_square_matrix_has_a_hard_edge():
    N = 384
    f = mp.fit_usvt(_sv(_noise(N, N, 0.1, 0)), (N, N))
    assert f.hard_edge and f.low_cut == 0.0 and f.n_low == 0
    assert abs(f.sigma / (0.1 * math.sqrt(N)) - 1) < 0.02  # sd ~ 1/N = 0.26%


def test_edge_scales_match_simulated_largest_value():
    # the sd of the largest singular value of noise is ~1.27 TW scales (sd of TW1)
    N, M = 200, 50
    tops = [_sv(_noise(N, M, 1 / math.sqrt(N), seed)).max() for seed in range(50)]
    _, top = mp.edge_scales(1.0, M / N, N)
    # the sd of a 50-sample sd is ~10% (a bit more for the skewed TW law): 3 sd bounds,
    # plus ~10% finite-N correction at N = 200
    assert 0.65 < np.std(tops) / (1.27 * top) < 1.4


def test_bad_input():
    with pytest.raises(ValueError, match="singular values"):
        mp.fit_usvt(np.ones(10), (50, 20))
    with pytest.raises(ValueError, match="level"):
        mp.fit_usvt(np.ones(20), (50, 20), level=0.5)
    with pytest.raises(ValueError, match="zero matrix"):
        mp.fit_usvt(np.zeros(20), (50, 20))
    with pytest.raises(ValueError, match="non-negative"):
        mp.fit_usvt(-np.ones(20), (50, 20))

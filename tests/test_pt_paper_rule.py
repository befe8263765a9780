"""The paper's 2-sigma boundary rule (`porter_thomas.two_sigma_boundary`), kept for fidelity checks."""
import math

import numpy as np
import pytest
from scipy.stats import irwinhall

from rmtlib import porter_thomas as pt


def test_counts_the_leading_window_means_below_the_band_by_hand():
    # 20 p-values of 0 then 0.5: the centred window (w = 15, half-width 7) at position j
    # holds z_j = #{i in [j-7, j+7], i < 20} zeros among 15 values (j >= 7), so its mean is
    # 0.5 (15 - z_j) / 15, below 0.5 - 2 sigma iff z_j / 15 > 4 sigma.
    # sigma = 0.05: z_j > 3, z_j = 20 - (j - 7) -> j <= 23: 24 positions.
    # exact sigma = sqrt(1/180) = 0.0745: z_j / 15 > 0.298 -> z_j >= 5 -> j <= 22: 23 positions.
    p = np.r_[np.zeros(20), np.full(200, 0.5)]
    assert pt.two_sigma_boundary(p, 15, sigma=0.05) == 24
    assert pt.two_sigma_boundary(p, 15) == 23
    assert pt.two_sigma_boundary(np.full(100, 0.5), 15, sigma=0.05) == 0
    assert pt.two_sigma_boundary(np.zeros(30), 15) == 30


def test_false_positive_rate_on_uniform_pvalues_is_the_irwin_hall_probability_of_the_first_mean():
    # Pure noise: the first mean averages 8 uniform p-values (window 15 cut at the top), so
    # P(count > 0) = P(IH_8 / 8 < 0.4) for sigma = 0.05. With n = 4000 draws the observed
    # share has standard error sqrt(P (1 - P) / n) <= 0.0059; 4 standard errors of tolerance.
    rng = np.random.default_rng(3)
    n = 4000
    hits = np.mean([pt.two_sigma_boundary(rng.random(200), 15, sigma=0.05) > 0 for _ in range(n)])
    expected = float(irwinhall(8).cdf(8 * 0.4))
    assert 0.12 < expected < 0.2  # far above the book rule's 5%: the paper's band is narrow
    assert abs(hits - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


@pytest.mark.parametrize("kwargs, err", [
    (dict(pvalues=[0.5, 1.2]), ValueError),
    (dict(pvalues=np.full(20, 0.5), window=4), ValueError),
    (dict(pvalues=np.full(20, 0.5), sigma=-0.1), ValueError),
    (dict(pvalues=np.full(20, 0.5), k=0), ValueError),
    (dict(pvalues=np.full(20, 0.5), sigma="0.05"), TypeError),
])
def test_bad_input_is_refused(kwargs, err):
    with pytest.raises(err):
        pt.two_sigma_boundary(**kwargs)

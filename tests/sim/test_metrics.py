"""Statistics of the results: the accuracy intervals."""

import numpy as np
import pytest

from sim.metrics import wilson_interval


def _coverage(p: float, n: int, z: float = 1.959964, replicates: int = 4000) -> float:
    rng = np.random.default_rng([n, int(p * 1000)])
    outcomes = rng.random((replicates, n)) < p
    intervals = np.array([wilson_interval(row, z) for row in outcomes])
    return float(np.mean((intervals[:, 0] <= p) & (p <= intervals[:, 1])))


@pytest.mark.parametrize("n", [50, 400, 4000])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.75, 0.9])
def test_wilson_interval_covers_the_true_rate_95_percent_of_the_time(p, n):
    # Wilson's exact coverage oscillates about 0.95 with n and p (Brown, Cai & DasGupta 2001: about
    # 0.93-0.975 from n = 50); 4000 replicates add a standard error of about 0.0035
    assert 0.925 <= _coverage(p, n) <= 0.98


def test_a_one_sigma_interval_would_fail_the_coverage_check():
    assert _coverage(0.5, 400, z=1.0) < 0.72  # about 0.68: the check above tells the two apart


def test_wilson_interval_edges():
    low, high = wilson_interval(np.ones(20, bool))
    assert high == pytest.approx(1.0) and 0.8 < low < 0.9  # never [1, 1] from 20 successes
    assert np.isnan(wilson_interval(np.zeros(0, bool))).all()

import numpy as np
import pytest

from heavy.stats import curve_fit_line, groups_differ, linear_fit, resample, root_of, sample_frame


def test_linregress(frame):
    slope, intercept = linear_fit(frame)
    assert slope == pytest.approx(3.0, abs=0.05)
    assert intercept == pytest.approx(2.0, abs=0.2)


def test_curve_fit_agrees(frame):
    assert curve_fit_line(frame) == pytest.approx(linear_fit(frame), abs=1e-6)


@pytest.mark.parametrize("seed", range(10))
def test_fit_is_stable_across_seeds(seed):
    slope, _ = linear_fit(sample_frame(seed=seed))
    assert slope == pytest.approx(3.0, abs=0.05)


def test_groups_do_not_differ(frame):
    assert not groups_differ(frame, "y")


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7, 8])
def test_root_of_square(k):
    assert root_of(lambda x: x * x - k, 0.0, 10.0) == pytest.approx(np.sqrt(k))


@pytest.mark.parametrize("x", [0.5, 2.5, 5.0, 7.5, 9.5])
def test_resample_follows_line(frame, x):
    assert float(resample(frame, [x])[0]) == pytest.approx(3.0 * x + 2.0, abs=2.0)

import numpy as np
import pytest
from scipy import integrate, linalg, special, stats


@pytest.mark.parametrize("n", [0, 1, 2, 5, 10])
def test_gamma_is_factorial(n):
    assert special.gamma(n + 1) == pytest.approx(float(np.prod(np.arange(1, n + 1))))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_norm_ppf_inverts_cdf(p):
    assert stats.norm.cdf(stats.norm.ppf(p)) == pytest.approx(p)


def test_quad():
    value, _ = integrate.quad(np.sin, 0.0, np.pi)
    assert value == pytest.approx(2.0)


def test_solve():
    a = np.array([[3.0, 1.0], [1.0, 2.0]])
    b = np.array([9.0, 8.0])
    np.testing.assert_allclose(linalg.solve(a, b), [2.0, 3.0])

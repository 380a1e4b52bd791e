import pytest

import pkg


def test_square_area():
    assert pkg.area("square", 3) == 9


def test_circle_perimeter():
    assert pkg.perimeter("circle", 1) == pytest.approx(6.283185307)


def test_unknown_area():
    with pytest.raises(ValueError):
        pkg.area("hexagon", 1)


def test_lazy_import():
    from pkg import lazy

    assert lazy.double(4) == 8

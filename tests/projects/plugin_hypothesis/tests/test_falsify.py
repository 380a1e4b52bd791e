from hypothesis import given
from hypothesis import strategies as st


@given(st.integers())
def test_small_numbers_only(n):
    assert n < 1000

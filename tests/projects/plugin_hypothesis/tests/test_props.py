from hypothesis import given, settings
from hypothesis import strategies as st


@given(st.lists(st.integers()))
def test_sort_is_idempotent(xs):
    assert sorted(sorted(xs)) == sorted(xs)


@given(st.text(), st.text())
def test_concat_length(a, b):
    assert len(a + b) == len(a) + len(b)


@settings(max_examples=50)
@given(st.integers(min_value=0, max_value=1000))
def test_square_nonnegative(n):
    assert n * n >= 0

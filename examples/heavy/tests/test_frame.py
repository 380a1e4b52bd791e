import numpy as np
import pandas as pd
import pytest

from heavy.stats import sample_frame, summary, zscores, percentile_rank


def test_shape(frame):
    assert frame.shape == (200, 3)


def test_deterministic():
    pd.testing.assert_frame_equal(sample_frame(), sample_frame())


def test_summary_counts(frame):
    s = summary(frame, "y")
    assert list(s.index) == ["a", "b"]
    assert s["count"].tolist() == [100, 100]


@pytest.mark.parametrize("n", [2, 10, 50, 101, 500])
def test_sizes(n):
    df = sample_frame(n)
    assert len(df) == n
    assert df["x"].iloc[0] == 0.0 and df["x"].iloc[-1] == 10.0


@pytest.mark.parametrize("column", ["x", "y"])
def test_zscores_standardised(frame, column):
    z = zscores(frame[column])
    assert abs(z.mean()) < 1e-9
    assert z.std(ddof=0) == pytest.approx(1.0)


@pytest.mark.parametrize("q", [0, 25, 50, 75, 100])
def test_percentile_rank(frame, q):
    value = float(np.percentile(frame["x"], q))
    assert percentile_rank(frame["x"], value) == pytest.approx(q, abs=1.0)

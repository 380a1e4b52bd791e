"""Summaries, tests and fits over pandas frames, built on scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import interpolate, optimize, stats

RNG_SEED = 20260101


def sample_frame(n: int = 200, seed: int = RNG_SEED) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 10.0, n)
    return pd.DataFrame(
        {
            "group": np.where(np.arange(n) % 2 == 0, "a", "b"),
            "x": x,
            "y": 3.0 * x + 2.0 + rng.normal(0.0, 0.5, n),
        }
    )


def summary(df: pd.DataFrame, column: str) -> pd.DataFrame:
    return df.groupby("group")[column].agg(["count", "mean", "std", "min", "max"])


def linear_fit(df: pd.DataFrame) -> tuple[float, float]:
    res = stats.linregress(df["x"], df["y"])
    return float(res.slope), float(res.intercept)


def curve_fit_line(df: pd.DataFrame) -> tuple[float, float]:
    params, _ = optimize.curve_fit(lambda x, a, b: a * x + b, df["x"], df["y"])
    return float(params[0]), float(params[1])


def groups_differ(df: pd.DataFrame, column: str, alpha: float = 0.05) -> bool:
    a = df.loc[df["group"] == "a", column]
    b = df.loc[df["group"] == "b", column]
    return bool(stats.ttest_ind(a, b, equal_var=False).pvalue < alpha)


def root_of(fn, lo: float, hi: float) -> float:
    return float(optimize.brentq(fn, lo, hi))


def resample(df: pd.DataFrame, xs) -> np.ndarray:
    spline = interpolate.CubicSpline(df["x"], df["y"])
    return spline(np.asarray(xs, dtype=float))


def zscores(series: pd.Series) -> pd.Series:
    return pd.Series(stats.zscore(series.to_numpy()), index=series.index)


def percentile_rank(series: pd.Series, value: float) -> float:
    return float(stats.percentileofscore(series.to_numpy(), value))

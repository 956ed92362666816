"""pipeline/summary.py: per-metric statistics, the bootstrap CI of the mean, infinities, groups."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.summary import (
    bootstrap_mean_ci,
    metric_columns,
    status_counts,
    summarize,
    summarize_groups,
    summarize_metric,
)


def results_frame(rows: list[tuple[str, str, float | None, float | None]]) -> pd.DataFrame:
    """(group, status, psnr, ssim) rows as a results frame (lpips all null)."""
    frame = pd.DataFrame(rows, columns=["group", "status", "psnr", "ssim"])
    frame["key"] = [f"{group}/{index}" for index, group in enumerate(frame["group"])]
    frame["lpips"] = None
    return frame


# Bootstrap


def test_bootstrap_ci_of_a_normal_sample_is_the_normal_theory_interval():
    values = np.random.default_rng(7).normal(30.0, 2.0, 400)
    low, high = bootstrap_mean_ci(values)
    standard_error = values.std(ddof=1) / math.sqrt(values.size)
    assert low < values.mean() < high
    assert low == pytest.approx(values.mean() - 1.96 * standard_error, abs=0.25 * standard_error)
    assert high == pytest.approx(values.mean() + 1.96 * standard_error, abs=0.25 * standard_error)
    assert bootstrap_mean_ci(values) == (low, high)  # seeded: the same interval every time


def test_bootstrap_ci_level_and_sample_size():
    values = np.random.default_rng(3).normal(0.9, 0.05, 200)
    low95, high95 = bootstrap_mean_ci(values)
    low50, high50 = bootstrap_mean_ci(values, level=0.5)
    assert low95 < low50 < high50 < high95
    quarter = bootstrap_mean_ci(values[:50])
    assert quarter[1] - quarter[0] == pytest.approx(2 * (high95 - low95), rel=0.3)


def test_bootstrap_ci_of_a_constant_one_value_or_nothing():
    assert bootstrap_mean_ci(np.full(30, 0.75)) == (0.75, 0.75)
    assert bootstrap_mean_ci(np.array([31.5])) == (31.5, 31.5)
    low, high = bootstrap_mean_ci(np.array([]))
    assert math.isnan(low) and math.isnan(high)


# One metric


def test_infinities_and_nulls_are_counted_then_excluded():
    summary = summarize_metric(pd.Series([math.inf, 30.0, 32.0, None, 34.0, math.inf]), "psnr")
    assert (summary.count, summary.infinite, summary.missing) == (3, 2, 1)
    assert summary.mean == 32.0 and summary.median == 32.0
    assert (summary.min, summary.max) == (30.0, 34.0)
    assert summary.std == pytest.approx(2.0)
    assert summary.p5 == pytest.approx(30.2) and summary.p95 == pytest.approx(33.8)
    assert 30.0 <= summary.ci_low < 32.0 < summary.ci_high <= 34.0
    assert summary.higher_is_better and summary.group is None


def test_only_infinities_give_no_statistics():
    summary = summarize_metric(pd.Series([math.inf, math.inf]), "psnr", group="g")
    assert (summary.count, summary.infinite, summary.missing) == (0, 2, 0)
    assert summary.mean is None and summary.ci_low is None and summary.max is None
    assert summary.to_dict()["group"] == "g"


def test_one_value_has_zero_spread():
    summary = summarize_metric(pd.Series([0.25]), "lpips")
    assert summary.std == 0.0 and summary.ci_low == summary.ci_high == 0.25
    assert summary.higher_is_better is False


# A run


def test_summaries_use_only_ok_rows():
    frame = results_frame(
        [("a", "ok", 30.0, 0.9), ("a", "ok", 32.0, 0.8), ("b", "error", 99.0, 0.1), ("b", "ok", 34.0, None)]
    )
    by_metric = {s.metric: s for s in summarize(frame)}
    assert list(by_metric) == ["psnr", "ssim"]
    assert by_metric["psnr"].mean == 32.0 and by_metric["psnr"].count == 3
    assert by_metric["ssim"].mean == pytest.approx(0.85) and by_metric["ssim"].missing == 1
    only_ssim = summarize(frame, ["ssim"])
    assert [s.metric for s in only_ssim] == ["ssim"]


def test_group_summaries_in_sorted_group_order():
    frame = results_frame(
        [("b", "ok", 20.0, 0.5), ("a", "ok", 30.0, 0.9), ("b", "ok", 22.0, 0.7), ("a", "error", 1.0, 0.0)]
    )
    groups = summarize_groups(frame)
    assert [(s.group, s.metric) for s in groups] == [
        ("a", "psnr"),
        ("a", "ssim"),
        ("b", "psnr"),
        ("b", "ssim"),
    ]
    values = {(s.group, s.metric): (s.count, s.mean) for s in groups}
    assert values[("a", "psnr")] == (1, 30.0)
    assert values[("b", "psnr")] == (2, 21.0)
    assert values[("b", "ssim")][1] == pytest.approx(0.6)


def test_metric_columns_are_metrics_holding_a_value():
    frame = results_frame([("a", "ok", 30.0, None), ("a", "error", None, None)])
    frame["ms_ssim"] = [None, 0.5]
    frame["seconds"] = [0.1, 0.2]
    assert metric_columns(frame) == ["psnr", "ms_ssim"]
    assert metric_columns(frame.drop(columns=["psnr"])) == ["ms_ssim"]


def test_status_counts():
    frame = results_frame([("a", "ok", 1.0, None), ("a", "error", None, None), ("b", "ok", 2.0, None)])
    assert status_counts(frame) == {"rows": 3, "ok": 2, "error": 1}

"""pipeline/console.py: the plain-text tables printed by `iqa score`."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipeline.console import (
    format_convention,
    format_counts,
    format_failures,
    format_group_means,
    format_number,
    format_summary,
    format_table,
    format_warning_kinds,
)
from pipeline.summary import summarize_metric


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "-"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
        (31.25, "31.2500"),
        (0, "0.0000"),
        (1e-5, "0.0000"),
    ],
)
def test_format_number(value, text):
    assert format_number(value) == text


def test_format_table_aligns_the_columns():
    table = format_table(["metric", "n"], [["psnr", "12"], ["ms_ssim", "3"]])
    assert table.splitlines() == [
        "metric    n",
        "-------  --",
        "psnr     12",
        "ms_ssim   3",
    ]
    assert format_table(["metric", "n"], []).splitlines() == ["metric  n", "------  -"]


def test_format_summary_shows_infinities_and_empty_metrics():
    psnr = summarize_metric(pd.Series([30.0, 32.0, math.inf]), "psnr")
    lpips = summarize_metric(pd.Series([None, None], dtype=float), "lpips")
    header, rule, psnr_line, lpips_line = format_summary([psnr, lpips]).splitlines()
    assert header.split() == ["metric", "better", "n", "mean", "95%", "CI", "median", "min", "max"]
    assert set(rule) == {"-", " "}
    assert psnr_line.split()[:5] == ["psnr", "higher", "2", "(+1", "inf)"]
    assert "31.0000" in psnr_line and "30.0000" in psnr_line and "32.0000" in psnr_line
    assert lpips_line.split() == ["lpips", "lower", "0", "-", "-", "-", "-", "-"]


def test_format_counts_in_a_fixed_order():
    text = format_counts({"ok": 5, "pairs": 6, "error": 1, "extra": 2, "unknown": 9})
    assert text == "pairs=6  ok=5  error=1  missing=0  extra=2  duplicates=0  skipped=0"


def rows(*entries: tuple) -> pd.DataFrame:
    """A results frame of (key, group, status, psnr, error, warnings) entries."""
    columns = ["key", "group", "status", "psnr", "error", "warnings"]
    return pd.DataFrame([dict(zip(columns, entry, strict=True)) for entry in entries])


def test_the_convention_line_names_what_the_metrics_see_and_the_ssim_definition():
    manifest = {
        "convention": {"description": "sr-paper: Y (BT.601, MATLAB rgb2ycbcr), crop 4 px, float64"},
        "config": {"metrics": ["psnr", "ssim", "ms_ssim"], "ms_ssim_scales": 3},
    }
    line = format_convention(manifest)
    assert line.startswith("convention sr-paper: Y (BT.601, MATLAB rgb2ycbcr), crop 4 px, float64; ")
    assert "SSIM 11x11 Gaussian, sigma 1.5" in line and line.endswith("MS-SSIM 3 scales")
    manifest["config"]["metrics"] = ["psnr"]
    assert "SSIM" not in format_convention(manifest)


def test_group_means_over_finite_ok_values_and_groups_without_an_ok_pair():
    frame = rows(
        ("a/1", "a", "ok", 30.0, None, []),
        ("a/2", "a", "ok", math.inf, None, []),
        ("a/3", "a", "ok", 20.0, None, []),
        ("b/1", "b", "error", None, "size mismatch", []),
    )
    table = format_group_means(frame).splitlines()
    assert table[0].split() == ["group", "ok", "psnr"]
    assert table[2].split() == ["a", "3", "25.0000"] and table[3].split() == ["b", "0", "-"]
    assert format_group_means(frame[frame["group"] == "a"]) is None  # one group: the summary says it all


def test_group_means_show_at_most_the_limit():
    frame = rows(*[(f"g{i}/1", f"g{i}", "ok", float(i), None, []) for i in range(5)])
    table = format_group_means(frame, limit=2)
    assert table.count("\n") == 4 and table.endswith("... 3 more group(s): see the report")


def test_failures_list_the_first_messages_and_count_the_rest():
    frame = rows(
        ("ok", "", "ok", 30.0, None, []),
        *[(f"bad{i}", "", "error", None, f"message {i}", []) for i in range(4)],
    )
    assert format_failures(frame[frame["status"] == "ok"]) is None
    text = format_failures(frame, limit=2).splitlines()
    assert text == [
        "failed: bad0: message 0",
        "failed: bad1: message 1",
        "... and 2 more failed pair(s): the `error` column holds every message",
    ]


def test_warnings_are_counted_by_kind_most_frequent_first():
    frame = rows(
        ("1", "", "ok", 1.0, None, ["image is 8x8, smaller than the 11 px SSIM window", "alpha dropped"]),
        ("2", "", "ok", 1.0, None, ["image is 9x9, smaller than the 11 px SSIM window"]),
        ("3", "", "ok", 1.0, None, []),
    )
    assert format_warning_kinds(frame) == (
        "warnings: 2 x image is NxN, smaller than the N px SSIM window; 1 x alpha dropped"
    )
    assert format_warning_kinds(frame, limit=1).endswith("; and 1 more kind(s) (the `warnings` column)")
    assert format_warning_kinds(rows(("1", "", "ok", 1.0, None, []))) is None

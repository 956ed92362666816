"""pipeline/console.py: the plain-text tables printed by `iqa score`."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipeline.console import format_counts, format_number, format_summary, format_table
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

"""pipeline.comparison: paired statistics on frames, tolerance parsing, `iqa compare` through CliRunner."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.comparison import DEFAULT_TOLERANCES, compare_frames, compare_runs, parse_tolerances
from pipeline.errors import UsageError
from pipeline.manifest import write_manifest
from pipeline.results import PartWriter, ResultRow

runner = CliRunner()


def frame(values: dict[str, list[float]], keys: list[str] | None = None, **columns) -> pd.DataFrame:
    """A results frame: one row per key, status ok unless `status` is given."""
    n = len(next(iter(values.values())))
    keys = keys or [f"g{i % 2}/img{i:03d}" for i in range(n)]
    data = {"key": keys, "group": [k.split("/")[0] if "/" in k else "" for k in keys], "status": ["ok"] * n}
    data.update(values)
    data.update(columns)
    return pd.DataFrame(data)


def by_metric(comparison, metric: str):
    return next(m for m in comparison.metrics if m.metric == metric)


def test_self_compare_has_zero_deltas_and_passes():
    rng = np.random.default_rng(0)
    base = frame({"psnr": list(rng.uniform(25, 35, 20)), "lpips": list(rng.uniform(0.1, 0.3, 20))})
    result = compare_frames(base, base.copy())
    assert result.passed and not result.regressions
    for m in result.metrics:
        assert m.delta == 0 and m.improvement == 0 and m.worse_count == 0 and not m.regressed
        assert m.ci_low == 0 and m.ci_high == 0
        assert m.wilcoxon_p is None  # every difference is zero: the test is undefined
    assert (result.per_pair["improvement"] == 0).all()
    assert len(result.groups) == 4  # 2 groups x 2 metrics


@pytest.mark.parametrize(
    ("metric", "shift", "expect_regressed"),
    [
        ("psnr", -0.5, True),  # higher is better: lower PSNR is worse
        ("psnr", +0.5, False),
        ("lpips", +0.05, True),  # lower is better: higher LPIPS is worse
        ("lpips", -0.05, False),
        ("mse", +5.0, True),
        ("mse", -5.0, False),
    ],
)
def test_direction_of_each_metric(metric, shift, expect_regressed):
    rng = np.random.default_rng(1)
    values = rng.uniform(20, 30, 12) if metric != "lpips" else rng.uniform(0.2, 0.4, 12)
    result = compare_frames(frame({metric: list(values)}), frame({metric: list(values + shift)}))
    m = by_metric(result, metric)
    assert m.delta == pytest.approx(shift)
    higher = metric == "psnr"
    assert m.higher_is_better is higher
    assert m.improvement == pytest.approx(shift if higher else -shift)
    assert m.regressed is expect_regressed
    assert result.passed is not expect_regressed
    assert m.worse_count == (12 if expect_regressed else 0)
    if expect_regressed:
        assert result.regressions[0].startswith(f"{metric}: mean ")
        assert m.ci_high < 0


def test_tolerance_decides_the_verdict_and_worse_count():
    base = [30.0, 30.0, 30.0, 30.0]
    cand = [29.97, 29.97, 29.9, 30.04]  # mean change -0.03; one pair worse by 0.1
    result = compare_frames(frame({"psnr": base}), frame({"psnr": cand}))
    m = by_metric(result, "psnr")
    assert m.tolerance == DEFAULT_TOLERANCES["psnr"]
    assert m.improvement == pytest.approx(-0.03)
    assert not m.regressed and result.passed
    assert m.worse_count == 1
    strict = compare_frames(frame({"psnr": base}), frame({"psnr": cand}), tolerances={"psnr": 0.01})
    assert by_metric(strict, "psnr").regressed and not strict.passed
    assert by_metric(strict, "psnr").worse_count == 3


def test_wilcoxon_is_small_for_a_consistent_shift():
    rng = np.random.default_rng(2)
    base = rng.uniform(0.7, 0.9, 30)
    cand = base - 0.01 + rng.normal(0, 0.002, 30)
    m = by_metric(compare_frames(frame({"ssim": list(base)}), frame({"ssim": list(cand)})), "ssim")
    assert m.wilcoxon_p is not None and m.wilcoxon_p < 1e-4
    assert m.regressed and m.ci_low < m.improvement < m.ci_high < 0
    noisy = base + rng.normal(0, 0.002, 30)
    p = by_metric(
        compare_frames(frame({"ssim": list(base)}), frame({"ssim": list(noisy)})), "ssim"
    ).wilcoxon_p
    assert p > 0.01


def test_infinite_psnr_in_both_is_zero_change_in_one_is_excluded_and_counted():
    inf = math.inf
    base = frame({"psnr": [inf, inf, 30.0, 40.0, 35.0]})
    cand = frame({"psnr": [inf, 33.0, 29.0, inf, 35.0]})
    m = by_metric(compare_frames(base, cand), "psnr")
    assert m.infinite_both == 1 and m.infinite_one == 2
    assert m.n_pairs == 3  # inf/inf (0), 30 -> 29 (-1), 35 -> 35 (0)
    assert m.improvement == pytest.approx(-1 / 3)
    assert m.baseline_mean == pytest.approx(32.5) and m.candidate_mean == pytest.approx(32.0)
    assert m.worse_count == 2  # 30 -> 29, and inf -> 33 (no longer identical)
    per_pair = compare_frames(base, cand).per_pair.set_index("key")["improvement"]
    assert per_pair.iloc[1] == -inf and per_pair.iloc[3] == inf and per_pair.iloc[0] == 0
    assert all(math.isfinite(v) for v in (m.ci_low, m.ci_high))


def test_added_removed_keys_and_non_ok_rows():
    base = frame({"psnr": [30.0, 31.0, 32.0]}, keys=["a", "b", "c"])
    cand = frame({"psnr": [30.0, 99.0, 33.0]}, keys=["a", "b", "d"], status=["ok", "error", "ok"])
    result = compare_frames(base, cand)
    assert result.added_keys == ["d"] and result.removed_keys == ["c"]
    assert by_metric(result, "psnr").n_pairs == 1  # b is an error row in the candidate
    assert any("not ok" in note for note in result.notes)


def test_metric_present_in_one_run_only():
    base = frame({"psnr": [30.0, 31.0], "lpips": [0.2, 0.3], "ssim": [None, None]})
    cand = frame({"psnr": [30.0, 31.0], "ssim": [0.9, 0.8], "lpips": [None, None]})
    result = compare_frames(base, cand)
    assert [m.metric for m in result.metrics] == ["psnr"]
    assert result.baseline_only_metrics == ["lpips"]
    assert result.candidate_only_metrics == ["ssim"]
    assert result.passed


def test_to_dict_is_strict_json():
    base = frame({"psnr": [math.inf, 30.0, 31.0]})
    cand = frame({"psnr": [20.0, 29.0, 30.0]})
    data = json.loads(compare_frames(base, cand).to_json())
    assert data["passed"] is False
    assert data["metrics"][0]["metric"] == "psnr"
    assert data["worst_pairs"]["psnr"][0]["improvement"] == "-inf"


def test_parse_tolerances():
    assert parse_tolerances(["psnr=0.1", "lpips = 0.01"]) == {"psnr": 0.1, "lpips": 0.01}
    assert parse_tolerances([]) == {}
    for bad, named in (("psnr", "psnr"), ("foo=1", "foo"), ("psnr=abc", "abc"), ("ssim=-1", "ssim=-1")):
        with pytest.raises(UsageError, match=named):
            parse_tolerances([bad])


# Run directories and the CLI


def write_run(run_dir: Path, values: dict[str, list[float]]) -> Path:
    """A minimal run directory (one part, a manifest) holding `values` per metric for keys img000...."""
    n = len(next(iter(values.values())))
    rows = [ResultRow(f"img{i:03d}", "", "", "", "test") for i in range(n)]
    for i, row in enumerate(rows):
        for metric, column in values.items():
            row.set_metric(metric, column[i])
    PartWriter(run_dir, {"run_id": "test"}).write(rows)
    write_manifest(run_dir, {"run_id": "test", "convention": {"name": "default", "crop": 0}})
    return run_dir


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(3)
    psnr, ssim = rng.uniform(25, 35, 10), rng.uniform(0.8, 0.95, 10)
    base = write_run(tmp_path / "base", {"psnr": list(psnr), "ssim": list(ssim)})
    worse = write_run(tmp_path / "worse", {"psnr": list(psnr - 0.8), "ssim": list(ssim)})
    return base, worse


def test_compare_runs_reads_run_directories(runs):
    base, worse = runs
    result = compare_runs(base, worse)
    assert result.regressed_metrics == ["psnr"]
    assert result.baseline_run == str(base)


def test_cli_self_compare_exits_0(runs):
    base, _ = runs
    result = runner.invoke(app, ["compare", str(base), str(base)])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "+0.0000" in result.output


def test_cli_degraded_exits_1_and_names_the_metric(runs, tmp_path: Path):
    base, worse = runs
    report = tmp_path / "cmp.json"
    result = runner.invoke(app, ["compare", str(base), str(worse), "--json", str(report)])
    assert result.exit_code == 1, result.output
    assert "REGRESSION psnr: mean 0.8 dB worse" in result.output
    data = json.loads(report.read_text())
    assert data["passed"] is False
    psnr = next(m for m in data["metrics"] if m["metric"] == "psnr")
    assert psnr["regressed"] and psnr["improvement"] == pytest.approx(-0.8)
    assert psnr["worse_count"] == 10 and psnr["n_pairs"] == 10
    assert data["regressions"][0].startswith("psnr:")


def test_cli_tolerance_option_can_accept_the_change(runs):
    base, worse = runs
    result = runner.invoke(app, ["compare", str(base), str(worse), "-t", "psnr=1.0"])
    assert result.exit_code == 0, result.output


def test_cli_usage_errors_exit_2(runs, tmp_path: Path):
    base, _ = runs
    missing = runner.invoke(app, ["compare", str(base), str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "nope" in missing.output
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    assert runner.invoke(app, ["compare", str(not_a_run), str(base)]).exit_code == 2
    bad = runner.invoke(app, ["compare", str(base), str(base), "-t", "psnr"])
    assert bad.exit_code == 2 and "psnr" in bad.output

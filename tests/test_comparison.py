"""pipeline.comparison: paired statistics on frames, tolerance parsing, `iqa compare` through CliRunner."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipeline.choices import Convention
from pipeline.cli import app
from pipeline.comparison import (
    DEFAULT_TOLERANCES,
    compare_frames,
    compare_runs,
    parse_tolerances,
    run_differences,
)
from pipeline.conventions import SPECS
from pipeline.errors import NotComparableError, UsageError
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


DEFAULT_CONVENTION = {
    "name": "default",
    "crop": 0,
    "description": "default: channels as stored, crop 0 px, float32",
}
SR_PAPER_X4 = {
    "name": "sr-paper",
    "crop": 4,
    "description": "sr-paper: Y (BT.601, MATLAB rgb2ycbcr), crop 4 px, float64",
}


def write_run(run_dir: Path, values: dict[str, list[float]], *, manifest: dict | None = None) -> Path:
    """A minimal run directory (one part, a manifest) holding `values` per metric for keys img000....

    `manifest` replaces the manifest's content (default: the default convention, no crop); None values are
    left out of it.
    """
    n = len(next(iter(values.values())))
    rows = [ResultRow(f"img{i:03d}", "", "", "", "test") for i in range(n)]
    for i, row in enumerate(rows):
        for metric, column in values.items():
            row.set_metric(metric, column[i])
    PartWriter(run_dir, {"run_id": "test"}).write(rows)
    content = {"run_id": "test", "convention": DEFAULT_CONVENTION, **(manifest or {})}
    write_manifest(run_dir, {k: v for k, v in content.items() if v is not None})
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


# Comparability: runs scored with other conventions, crops or metric settings are refused unless forced

FORCE_HINT_TEXT = (
    "Score both with the same options, or pass --force to compare anyway (the verdict is then marked FORCED)."
)


def test_run_differences_names_each_definition_that_differs():
    default = {"convention": DEFAULT_CONVENTION, "config": {"ms_ssim_scales": 5, "lpips_net": "alex"}}
    assert run_differences(default, default, ["psnr", "ssim", "ms_ssim", "lpips"]) == []
    paper = {"convention": SR_PAPER_X4, "config": {"ms_ssim_scales": 3}}
    assert run_differences(default, paper, ["psnr"]) == ["convention default vs sr-paper", "crop 0 vs 4"]
    assert run_differences(default, paper, ["ms_ssim"])[-1] == "ms_ssim_scales 5 vs 3"
    fp32 = {**DEFAULT_CONVENTION, "description": "default: channels as stored, crop 0 px, float64"}
    assert run_differences(default, {"convention": fp32}, ["psnr"]) == [
        "convention default spec 'default: channels as stored, crop 0 px, float32' vs "
        "'default: channels as stored, crop 0 px, float64'"
    ]


def test_a_spec_field_a_run_did_not_record_is_taken_as_its_default():
    """Fields added to the spec later (pyiqa's and torchmetrics' options) do not make older runs of the same
    convention incomparable; a non-default value still does."""
    recorded = json.loads(json.dumps(SPECS[Convention.DEFAULT].to_dict()))
    older = json.loads(json.dumps(recorded))
    del older["quantize_8bit"], older["psnr_channels"], older["structural"]["relu_cs_map"]
    now = {"convention": {**DEFAULT_CONVENTION, "spec": recorded}}
    before = {"convention": {**DEFAULT_CONVENTION, "spec": older}}
    assert run_differences(before, now, ["psnr", "ssim"]) == []
    recorded["structural"]["relu_cs_map"] = True
    differences = run_differences(before, now, ["ssim"])
    assert differences == ["convention default structural.relu_cs_map false vs true"]


def test_run_differences_of_metric_settings_only_for_compared_metrics():
    def manifest(**config) -> dict:
        return {
            "convention": DEFAULT_CONVENTION,
            "config": config,
            "lpips_backbone": config.pop("backbone", None),
        }

    alex = manifest(lpips_net="alex", backbone="/cache/alexnet-owt-7be5be79.pth")
    assert (
        run_differences(
            alex, manifest(lpips_net="alex", backbone="/other/alexnet-owt-7be5be79.pth"), ["lpips"]
        )
        == []
    )
    assert run_differences(
        alex, manifest(lpips_net="alex", backbone="/cache/alexnet-mine.pth"), ["lpips"]
    ) == ["LPIPS backbone alexnet-owt-7be5be79.pth vs alexnet-mine.pth"]
    vgg = manifest(lpips_net="vgg", backbone="/cache/vgg16-397923af.pth")
    assert run_differences(alex, vgg, ["lpips"]) == ["lpips_net alex vs vgg"]
    assert run_differences(alex, vgg, ["psnr", "ssim"]) == []  # LPIPS is not compared
    assert run_differences(manifest(ms_ssim_scales=5), manifest(ms_ssim_scales=3), ["psnr"]) == []
    assert run_differences(manifest(), manifest(ms_ssim_scales=3), ["ms_ssim"]) == ["ms_ssim_scales 5 vs 3"]
    assert run_differences(manifest(), manifest(data_range=1.0), ["psnr"]) == [
        "data_range not recorded vs 1.0"
    ]
    # Mismatched sizes: with `error` such pairs are error rows, never compared; crop vs resize changes values.
    assert run_differences(manifest(size_mismatch="error"), manifest(size_mismatch="crop"), ["psnr"]) == []
    assert run_differences(manifest(size_mismatch="crop"), manifest(size_mismatch="resize"), ["psnr"]) == [
        "size_mismatch crop vs resize"
    ]


@pytest.fixture
def paper_runs(tmp_path: Path) -> tuple[Path, Path]:
    """The same PSNR values scored under the default convention and under sr-paper with scale 4."""
    psnr = list(np.random.default_rng(5).uniform(25, 35, 8))
    default = write_run(tmp_path / "default", {"psnr": psnr})
    paper = write_run(tmp_path / "paper", {"psnr": psnr}, manifest={"convention": SR_PAPER_X4})
    return default, paper


def test_compare_runs_refuses_runs_of_other_conventions(paper_runs):
    default, paper = paper_runs
    with pytest.raises(NotComparableError) as refused:
        compare_runs(default, paper)
    assert refused.value.exit_code == 2
    assert refused.value.differences == ["convention default vs sr-paper", "crop 0 vs 4"]
    assert (
        str(refused.value)
        == f"Runs are not comparable: convention default vs sr-paper; crop 0 vs 4. {FORCE_HINT_TEXT}"
    )
    forced = compare_runs(default, paper, force=True)
    assert forced.forced and forced.differences == refused.value.differences
    assert not compare_runs(default, default, force=True).forced  # --force marks only what needed it


def test_cli_refuses_runs_that_are_not_comparable_with_exit_2(paper_runs, tmp_path: Path):
    default, paper = paper_runs
    report = tmp_path / "cmp.json"
    result = runner.invoke(app, ["compare", str(default), str(paper), "--json", str(report)])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"error: Runs are not comparable: convention default vs sr-paper; crop 0 vs 4. {FORCE_HINT_TEXT}"
    )
    assert not report.exists()


def test_cli_force_compares_anyway_and_marks_the_verdict(paper_runs, tmp_path: Path):
    default, paper = paper_runs
    report = tmp_path / "cmp.json"
    result = runner.invoke(app, ["compare", str(default), str(paper), "--force", "--json", str(report)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith(
        "FORCED: the runs are not comparable (convention default vs sr-paper; crop 0 vs 4)"
    )
    assert lines[-1] == "PASS (FORCED: the runs are not comparable): no metric worse than its tolerance"
    data = json.loads(report.read_text())
    assert data["forced"] is True and data["passed"] is True
    assert data["differences"] == ["convention default vs sr-paper", "crop 0 vs 4"]
    same = json.loads(compare_runs(default, default).to_json())
    assert same["forced"] is False and same["differences"] == []


def test_a_run_without_manifest_is_not_comparable(runs):
    base, worse = runs
    (base / "manifest.json").unlink()
    result = runner.invoke(app, ["compare", str(base), str(worse)])
    assert result.exit_code == 2, result.output
    assert "the baseline has no readable manifest.json (how it was scored is unknown)" in result.output
    assert runner.invoke(app, ["compare", str(base), str(worse), "--force"]).exit_code == 1


# The statistical gate: --require-significant

SPANS_ZERO = np.array([0.02, -0.025, 0.018, -0.02, 0.01, -0.013])  # mean -0.00167, beyond the 0.001 tolerance
CLEAR_DROP = -0.01 + np.array([0.001, -0.001, 0.0005, -0.0005, 0.0, 0.0002])


def ssim_frames(change: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    base = np.random.default_rng(7).uniform(0.7, 0.9, change.size)
    return frame({"ssim": list(base)}), frame({"ssim": list(base + change)})


def test_a_drop_whose_ci_spans_zero_regresses_only_without_the_gate():
    base, cand = ssim_frames(SPANS_ZERO)
    default = by_metric(compare_frames(base, cand), "ssim")
    assert default.improvement == pytest.approx(SPANS_ZERO.mean()) and default.improvement < -0.001
    assert default.ci_low < 0 < default.ci_high
    assert default.beyond_tolerance and not default.significantly_worse
    assert default.regressed
    gated = compare_frames(base, cand, require_significant=True)
    ssim = by_metric(gated, "ssim")
    assert not ssim.regressed and gated.passed and gated.regressions == []
    assert (ssim.ci_low, ssim.ci_high) == (default.ci_low, default.ci_high)  # seeded: the same interval
    assert any("does not lie below 0" in note for note in gated.notes)


def test_a_clear_drop_regresses_with_and_without_the_gate():
    base, cand = ssim_frames(CLEAR_DROP)
    for gate in (False, True):
        result = compare_frames(base, cand, require_significant=gate)
        ssim = by_metric(result, "ssim")
        assert ssim.regressed and ssim.significantly_worse and ssim.ci_high < 0 and not result.passed
    assert "95% CI of the change [" in result.regressions[0]


def test_the_gate_needs_two_pairs():
    base, cand = frame({"psnr": [30.0]}), frame({"psnr": [29.0]})
    assert by_metric(compare_frames(base, cand), "psnr").regressed
    assert not by_metric(compare_frames(base, cand, require_significant=True), "psnr").regressed


def test_cli_require_significant(tmp_path: Path):
    ssim = list(np.random.default_rng(7).uniform(0.7, 0.9, SPANS_ZERO.size))
    base = write_run(tmp_path / "base", {"ssim": ssim})
    noisy = write_run(tmp_path / "noisy", {"ssim": list(ssim + SPANS_ZERO)})
    worse = write_run(tmp_path / "worse", {"ssim": list(ssim + CLEAR_DROP)})
    default = runner.invoke(app, ["compare", str(base), str(noisy)])
    assert default.exit_code == 1 and "REGRESSION ssim" in default.output, default.output
    report = tmp_path / "gated.json"
    gated = runner.invoke(
        app, ["compare", str(base), str(noisy), "--require-significant", "--json", str(report)]
    )
    assert gated.exit_code == 0, gated.output
    assert "not significant" in gated.output and "REGRESSION" not in gated.output
    assert gated.output.strip().splitlines()[-1] == "PASS: no metric significantly worse than its tolerance"
    data = json.loads(report.read_text())
    assert data["require_significant"] is True
    assert data["metrics"][0]["beyond_tolerance"] is True and data["metrics"][0]["regressed"] is False
    clear = runner.invoke(app, ["compare", str(base), str(worse), "--require-significant"])
    assert clear.exit_code == 1 and "REGRESSION ssim" in clear.output, clear.output

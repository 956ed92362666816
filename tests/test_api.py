"""pipeline/api.py and the lazy `pipeline` package: the Python functions that mirror the `iqa` commands.
(`pipeline.cli.main()` called from Python is in test_cli.py.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import make_dataset

import pipeline
from pipeline import api
from pipeline.api import Run
from pipeline.errors import ConfigError, NotComparableError, UsageError
from pipeline.summary import MetricSummary

FAST = {"metrics": "psnr,ssim", "scheduler": "sync", "progress": False}


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Run:
    """Six pairs of real photo crops in three groups, scored with the report."""
    root = tmp_path_factory.mktemp("api")
    ref, out = make_dataset(root, 6, size=96)
    return pipeline.score(ref, out, root / "run", **FAST)


def test_score_returns_the_run(scored):
    assert isinstance(scored, Run) and scored.complete
    frame = scored.frame
    assert len(frame) == 6 and frame["key"].is_unique and (frame["status"] == "ok").all()
    assert sorted(frame["group"].unique()) == ["g0", "g1", "g2"]
    assert frame[["psnr", "ssim"]].notna().all().all() and frame["lpips"].isna().all()
    assert scored.counts["pairs"] == scored.counts["ok"] == 6
    assert scored.manifest["metrics"] == ["psnr", "ssim"]
    assert scored.manifest["config_hash"] == scored.config.value_hash()
    assert [s.metric for s in scored.summary] == ["psnr", "ssim"]
    assert all(isinstance(s, MetricSummary) and s.count == 6 for s in scored.summary)
    assert scored.summary[0].mean == pytest.approx(frame["psnr"].mean())


def test_score_writes_the_report_unless_told_not_to(scored, tmp_path):
    assert scored.report_path == scored.run_dir / "report.html" and scored.report_path.is_file()
    ref, out = make_dataset(tmp_path, 2, size=64)
    plain = pipeline.score(ref, out, tmp_path / "run", report=False, **FAST)
    assert plain.report_path is None and not (tmp_path / "run" / "report.html").exists()
    assert plain.config.report is False


def test_options_are_keywords_and_win_over_a_config_file(tmp_path):
    ref, out = make_dataset(tmp_path, 2, size=64)
    config = tmp_path / "score.yaml"
    config.write_text(
        "metrics: [psnr, mse]\nconvention: sr-paper\nscale: 2\nscheduler: sync\nreport: false\n"
    )
    run = pipeline.score(ref, out, tmp_path / "run", config=config, scale=3, metrics=["psnr"], progress=False)
    assert run.config.scale == 3 and run.config.convention == "sr-paper" and run.config.metrics == ("psnr",)
    assert run.manifest["convention"]["crop"] == 3 and run.manifest["metrics"] == ["psnr"]
    assert run.frame["mse"].isna().all() and run.frame["psnr"].notna().all()


def test_a_bad_option_is_a_config_error_before_anything_is_written(tmp_path):
    ref, out = make_dataset(tmp_path, 1, size=32)
    with pytest.raises(ConfigError, match=r"^option --ms-ssim-scales: got '5' \(str\)"):
        pipeline.score(ref, out, tmp_path / "run", ms_ssim_scales="5", **FAST)
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        pipeline.score(ref, out, tmp_path / "run", colour="red", **FAST)
    assert not (tmp_path / "run").exists()


def test_compare_a_run_with_itself_passes(scored):
    comparison = api.compare(scored.run_dir, scored.run_dir)
    assert comparison.passed and comparison.regressions == []
    assert [m.metric for m in comparison.metrics] == ["psnr", "ssim"]
    assert all(m.delta == 0 and m.worse_count == 0 for m in comparison.metrics)
    with pytest.raises(UsageError, match="candidate"):
        api.compare(scored.run_dir, scored.run_dir / "missing")


def test_compare_takes_the_gate_and_force(scored, tmp_path):
    gated = api.compare(scored.run_dir, scored.run_dir, require_significant=True, force=True)
    assert gated.passed and gated.require_significant and not gated.forced
    other = tmp_path / "other"
    shutil.copytree(scored.run_dir, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["config"]["ms_ssim_scales"] = 3  # not compared: MS-SSIM was not scored
    manifest["convention"]["crop"] = 2
    (other / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(NotComparableError, match="crop 0 vs 2") as refused:
        api.compare(scored.run_dir, other)
    assert refused.value.differences == ["crop 0 vs 2"]
    assert api.compare(scored.run_dir, other, force=True).forced


def test_pairs_and_report(scored, tmp_path):
    pairing = pipeline.pairs(scored.manifest["reference_dir"], scored.manifest["output_dir"])
    assert len(pairing.pairs) == 6 and pairing.missing == [] and pairing.extra == []
    written = api.report(scored.run_dir, output=tmp_path / "again.html", worst=1)
    assert written == tmp_path / "again.html" and "<html" in written.read_text(encoding="utf-8")


def test_table_of_scored_runs_holds_their_group_means(scored, tmp_path):
    again = tmp_path / "again"
    shutil.copytree(scored.run_dir, again)
    frame = pipeline.table([scored.run_dir, again], by="group", metrics=["ssim"], labels=["first", "second"])
    expected = scored.frame.groupby("group")["ssim"].mean()
    assert list(frame.columns) == [(group, "ssim") for group in expected.index]
    assert frame.loc["first"].to_numpy() == pytest.approx(expected.to_numpy())
    assert frame.loc["second"].to_numpy() == pytest.approx(expected.to_numpy())


@pytest.mark.parametrize("name", ["score", "pairs", "run_nightly", "Run", "table"])
def test_the_package_exports_the_api(name):
    assert getattr(pipeline, name) is getattr(api, name)


def test_the_package_exports_load_results():
    from pipeline.results import load_results

    assert pipeline.load_results is load_results
    assert set(pipeline.__all__) >= {"score", "compare", "report", "pairs", "similar", "load_results"}
    assert "table" in pipeline.__all__ and "table" in api.__all__
    with pytest.raises(AttributeError, match="module 'pipeline' has no attribute 'scores'"):
        pipeline.scores  # noqa: B018


@pytest.mark.parametrize("name", ["compare", "report", "similar"])
def test_the_package_functions_named_like_submodules_are_the_api(name):
    assert callable(getattr(pipeline, name))
    assert getattr(pipeline, name) is getattr(api, name)


@pytest.mark.slow
def test_reading_results_does_not_import_torch(scored):
    code = (
        "import sys\n"
        "import pipeline\n"
        f"frame = pipeline.load_results({str(scored.run_dir)!r})\n"
        "print(len(frame), sorted(m for m in ('torch', 'distributed', 'pipeline.api') if m in sys.modules))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["6", "[]"]

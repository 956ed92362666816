"""The metric plugin interface: the built-ins go through it, and a package installed here (the fixture package
tests/fixtures/iqa_example_metric, installed with pip into a temporary folder) registers a metric under the
entry-point group `iqa_pipeline.metrics` that `iqa score` then scores like a built-in."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import degrade, make_dataset, one_line_error, save_image
from PIL import Image
from typer.testing import CliRunner

import pipeline
from pipeline import choices
from pipeline.choices import BUILTIN_METRICS, METRICS, installed_plugins
from pipeline.cli import app
from pipeline.config import validate_config
from pipeline.conventions import resolve_convention
from pipeline.errors import ConfigError
from pipeline.manifest import read_manifest
from pipeline.measure import BUILTIN_PLUGINS, Cache, measure, metric_plugin
from pipeline.metric_plugins import Batch, MetricInput
from pipeline.results import load_results

FIXTURE = Path(__file__).parent / "fixtures" / "iqa_example_metric"
runner = CliRunner()


@pytest.fixture(scope="module")
def plugin_package(tmp_path_factory):
    """The fixture package pip-installed into a folder put on sys.path; the entry points reloaded."""
    target = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
               "--target", str(target), str(FIXTURE)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    sys.path.insert(0, str(target))
    installed_plugins.cache_clear()
    yield target
    sys.path.remove(str(target))
    for name in [name for name in sys.modules if name.startswith("iqa_example_metric")]:
        del sys.modules[name]
    installed_plugins.cache_clear()


@pytest.fixture
def weight_file(tmp_path, monkeypatch):
    path = tmp_path / "weight.txt"
    path.write_text("2.0")
    monkeypatch.setenv("IQA_EXAMPLE_WEIGHT_FILE", str(path))
    return path


def test_the_built_in_metrics_are_plugins_of_the_interface():
    assert set(BUILTIN_PLUGINS) == set(BUILTIN_METRICS)
    for name, plugin in BUILTIN_PLUGINS.items():
        assert plugin.spec is BUILTIN_METRICS[name] and metric_plugin(name) is plugin


def test_each_built_in_computed_alone_equals_the_batch_of_all(photo_pair):
    ref, out = (torch.from_numpy(np.ascontiguousarray(a)) for a in photo_pair)
    ref, out = (x.permute(2, 0, 1)[None] if x.dim() == 3 else x[None, None] for x in (ref, out))
    convention, resources = resolve_convention("default"), Cache()
    together, _ = measure(ref, out, 255.0, ("psnr", "ssim", "ms_ssim", "mse"), convention, resources)
    for name in ("psnr", "ssim", "ms_ssim", "mse"):
        alone, _ = measure(ref, out, 255.0, (name,), convention, resources)
        assert alone[name] == together[name], name


def test_inputs_are_converted_as_the_plugin_declares():
    gray = torch.tensor([[[[0, 51], [102, 255]]]], dtype=torch.uint8)
    rgb = torch.stack([gray[:, 0], gray[:, 0] * 0, gray[:, 0] * 0], dim=1)
    batch = Batch(gray, gray, 255.0)
    as_rgb, _ = batch.inputs(MetricInput(channels="rgb"))
    assert as_rgb.shape == (1, 3, 2, 2) and torch.allclose(as_rgb[0, 2], gray[0, 0] / 255.0)
    as_255, _ = batch.inputs(MetricInput(scale="255", dtype=torch.float64))
    assert as_255.dtype == torch.float64 and as_255.max() == 255.0
    luma, _ = Batch(rgb, rgb, 255.0).inputs(MetricInput(channels="gray", scale="stored"))
    assert torch.allclose(luma[0, 0], 0.299 * gray[0, 0].float())


def test_an_installed_plugin_is_found_through_its_entry_point(plugin_package):
    assert "l1" in METRICS and METRICS["l1"].higher_is_better is False
    assert metric_plugin("l1").package == "iqa-example-metric"
    assert "broken" not in METRICS  # its entry point names nothing: left out with a warning


def test_a_plugin_metric_is_scored_like_a_built_in(plugin_package, weight_file, tmp_path):
    ref, out = make_dataset(tmp_path, 6, size=64)
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"),
                                 "--metrics", "psnr,l1", "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "l1" in result.output  # the console summary has its row
    rows = load_results(tmp_path / "run")
    for row in rows.itertuples():
        expected = np.abs(np.asarray(Image.open(row.ref_path), np.float64) -
                          np.asarray(Image.open(row.out_path), np.float64)).mean() / 255.0 * 2.0  # fmt: skip
        assert row.l1 == pytest.approx(expected, rel=1e-12)
    manifest = read_manifest(tmp_path / "run")
    described = manifest["metric_plugins"]["l1"]
    assert described["package"] == "iqa-example-metric" and described["version"] == "0.1.0"
    assert described["weights_sha256"] == hashlib.sha256(b"2.0").hexdigest()
    assert manifest["metrics"] == ["psnr", "l1"]
    assert "l1" in (tmp_path / "run" / "report.html").read_text()


def test_the_plugin_state_is_built_once_per_worker_and_device(plugin_package, weight_file, tmp_path):
    import iqa_example_metric

    iqa_example_metric.BUILDS.clear()
    ref, out = make_dataset(tmp_path, 8, size=64)
    pipeline.score(ref, out, tmp_path / "run", metrics="l1", scheduler="sync", shard_pairs=2, progress=False,
                   report=False)  # fmt: skip
    assert iqa_example_metric.BUILDS == ["cpu"]


def test_a_run_keeps_its_plugin_columns_where_the_plugin_is_not_installed(
    plugin_package, weight_file, tmp_path, monkeypatch
):
    """Runs scored with a plugin, read where it is not installed: the manifest's record of the column
    (direction, unit, tolerance, digits) keeps it in `iqa compare`, `iqa table` and the report, so a
    regression of a plugin metric is not passed over in silence."""
    ref, out = make_dataset(tmp_path, 6, size=64)
    worse = tmp_path / "worse"  # the outputs with a second, independent noise: every pair gets worse
    for index, path in enumerate(sorted(out.rglob("*.png"))):
        noisier = degrade(np.asarray(Image.open(path)), "noise", seed=100 + index)
        save_image(worse / path.relative_to(out), noisier)
    for name, outputs in (("base", out), ("cand", worse)):
        pipeline.score(ref, outputs, tmp_path / name, metrics="psnr,l1", scheduler="sync", progress=False,
                       report=False)  # fmt: skip
    monkeypatch.setattr(choices, "installed_plugins", lambda: {})  # the plugin's package is not installed
    monkeypatch.setattr(METRICS, "_recorded", {})  # and no run was read yet
    assert "l1" not in METRICS
    compared = runner.invoke(app, ["compare", str(tmp_path / "base"), str(tmp_path / "cand")])
    assert compared.exit_code == 1, compared.output
    (row,) = [line for line in compared.stdout.splitlines() if line.startswith("l1 ")]
    assert row.split()[1] == "lower" and "REGRESSION l1" in compared.stdout
    assert (METRICS["l1"].tolerance, METRICS["l1"].digits) == (0.001, 4)  # as the plugin declares them
    tabled = runner.invoke(app, ["table", str(tmp_path / "base"), str(tmp_path / "cand")])
    assert tabled.exit_code == 0 and "L1↓" in tabled.stdout, tabled.output
    reported = runner.invoke(app, ["report", str(tmp_path / "cand"), "--baseline", str(tmp_path / "base")])
    assert reported.exit_code == 0, reported.output
    page = (tmp_path / "cand" / "report.html").read_text()
    assert "<strong>l1</strong>" in page and 'id="regressions-l1"' in page  # its summary row and regressions
    with pytest.raises(ConfigError, match="unknown metric 'l1'"):  # read, never scored without its plugin
        validate_config({"metrics": "psnr,l1"})


def test_a_malformed_record_is_left_out_and_the_first_direction_of_a_column_stays():
    table = choices.MetricTable()
    malformed = {"x1": {"higher_is_better": "no"}, "x2": {"higher_is_better": True, "digits": 1.5}}
    assert len(table.record(malformed)) == 2 and "x1" not in table and "x2" not in table
    assert table.record({"x3": {"higher_is_better": True}}) == [] and table["x3"].tolerance == 0.0
    (conflict,) = table.record({"x3": {"higher_is_better": False}})
    assert "first run's direction is used" in conflict and table["x3"].higher_is_better is True
    assert table.record({"psnr": {"higher_is_better": False}}) == [] and table["psnr"].higher_is_better


def test_a_plugin_whose_weights_are_missing_stops_before_scoring(plugin_package, tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_EXAMPLE_WEIGHT_FILE", str(tmp_path / "nowhere.txt"))
    ref, out = make_dataset(tmp_path, 2, size=64)
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), "--metrics", "l1"])
    one_line_error(result, 2, "nowhere.txt", "IQA_EXAMPLE_WEIGHT_FILE")
    assert not (tmp_path / "run").exists()


def test_a_pair_smaller_than_the_plugin_takes_gets_a_null_and_a_warning(
    plugin_package, weight_file, tmp_path
):
    ref, out = make_dataset(tmp_path, 2, size=6)
    run = pipeline.score(ref, out, tmp_path / "run", metrics="psnr,l1", scheduler="sync", progress=False,
                         report=False)  # fmt: skip
    assert run.frame["l1"].isna().all() and run.frame["psnr"].notna().all()
    assert any("l1 left null" in warning for warning in run.frame["warnings"][0])


def test_a_new_plugin_version_changes_the_value_hash(plugin_package, weight_file, tmp_path):
    ref, out = make_dataset(tmp_path, 4, size=64)
    first = pipeline.score(ref, out, tmp_path / "run", metrics="l1", scheduler="sync", progress=False,
                           report=False)  # fmt: skip
    before = first.frame["l1"].tolist()
    weight_file.write_text("3.0")  # other weights: other values, so --resume rescores every pair
    again = pipeline.score(ref, out, tmp_path / "run", metrics="l1", scheduler="sync", progress=False,
                           report=False, resume=True)  # fmt: skip
    assert first.manifest["config_hash"] != again.manifest["config_hash"]
    assert again.manifest["resume"] == {"reused": 0, "scored": 4}
    assert again.frame["l1"].tolist() == pytest.approx([v * 1.5 for v in before])


def test_an_unknown_metric_lists_the_installed_ones(plugin_package, tmp_path):
    result = runner.invoke(app, ["score", str(tmp_path), str(tmp_path / "o"), "-o", str(tmp_path / "r"),
                                 "--metrics", "psnr,nope"])  # fmt: skip
    line = one_line_error(result, 2, "nope")
    assert "l1" in line and "lpips" in line

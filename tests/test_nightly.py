"""`iqa run nightly.yaml` end to end: a two-suite job as baseline, then one suite degraded (issue 5)."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from conftest import SKIMAGE_DATA
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.nightly import load_nightly_config

runner = CliRunner()
PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "camera.png")


def photo(name: str) -> Image.Image:
    image = Image.open(SKIMAGE_DATA / name)
    image = image.convert("L") if image.mode in ("L", "I", "I;16") else image.convert("RGB")
    scale = 192 / max(image.size)
    return image.resize(
        (int(image.width * scale) // 2 * 2, int(image.height * scale) // 2 * 2), Image.BICUBIC
    )


def save_jpeg_outputs(reference: Path, output: Path, quality: int) -> None:
    output.mkdir(parents=True, exist_ok=True)
    for path in sorted(reference.glob("*.png")):
        buffer = io.BytesIO()
        Image.open(path).save(buffer, format="JPEG", quality=quality)
        (output / f"{path.stem}.jpg").write_bytes(buffer.getvalue())


def build_suites(root: Path) -> None:
    """Suite `jpeg` (JPEG quality 60) and suite `sr_x2` (bicubic down/up x2), four real photos each."""
    for suite in ("jpeg", "sr_x2"):
        (root / suite / "reference").mkdir(parents=True)
        (root / suite / "output").mkdir(parents=True)
    for name in PHOTOS:
        image, stem = photo(name), Path(name).stem
        image.save(root / "jpeg" / "reference" / f"{stem}.png")
        image.save(root / "sr_x2" / "reference" / f"{stem}.png")
        small = image.resize((image.width // 2, image.height // 2), Image.BICUBIC)
        small.resize(image.size, Image.BICUBIC).save(root / "sr_x2" / "output" / f"{stem}.png")
    save_jpeg_outputs(root / "jpeg" / "reference", root / "jpeg" / "output", quality=60)


def write_config(root: Path, **extra) -> Path:
    config = {
        "baseline": "baseline",
        "runs": "runs",
        "tolerances": {"psnr": 0.05, "ssim": 0.001},
        "score": {"metrics": ["psnr", "ssim"], "scheduler": "sync"},
        "suites": [
            {"name": "jpeg", "reference": "data/jpeg/reference", "output": "data/jpeg/output"},
            {
                "name": "sr_x2",
                "reference": "data/sr_x2/reference",
                "output": "data/sr_x2/output",
                "convention": "sr-paper",
                "scale": 2,
            },
        ],
        **extra,
    }
    path = root / "nightly.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def invoke(*args: str):
    return runner.invoke(app, ["run", *args, "--no-progress"])


def suite_line(output: str, suite: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(f"{suite} "))


@pytest.fixture
def nightly(tmp_path: Path) -> Path:
    build_suites(tmp_path / "data")
    return write_config(tmp_path)


def test_degraded_suite_fails_the_nightly_run_and_the_other_passes(nightly: Path, tmp_path: Path):
    first = invoke(str(nightly), "--name", "day1", "--update-baseline")
    assert first.exit_code == 0, first.output
    assert "no baseline yet" in first.output and "baseline updated" in first.output
    baseline = tmp_path / "baseline"
    assert (baseline / "jpeg" / "manifest.json").is_file() and (
        baseline / "sr_x2" / "manifest.json"
    ).is_file()
    assert json.loads((baseline / "promoted.json").read_text())["run"] == "day1"

    # A run compared with itself: zero change, exit 0.
    same = runner.invoke(app, ["compare", str(baseline / "jpeg"), str(tmp_path / "runs" / "day1" / "jpeg")])
    assert same.exit_code == 0, same.output
    assert "+0.0000" in same.output and "REGRESSED" not in same.output

    save_jpeg_outputs(tmp_path / "data/jpeg/reference", tmp_path / "data/jpeg/output", quality=10)
    second = invoke(str(nightly), "--name", "day2", "--update-baseline")
    assert second.exit_code == 1, second.output
    jpeg_line, sr_line = suite_line(second.output, "jpeg"), suite_line(second.output, "sr_x2")
    assert "REGRESSED" in jpeg_line and "psnr" in jpeg_line and "ssim" in jpeg_line
    assert "PASSED" in sr_line
    assert "jpeg: psnr: mean" in second.output
    assert "FAIL: jpeg (regressed)" in second.output
    assert "baseline NOT updated" in second.output
    assert json.loads((baseline / "promoted.json").read_text())["run"] == "day1"

    summary = json.loads((tmp_path / "runs" / "day2" / "nightly.json").read_text())
    assert summary["exit_code"] == 1 and summary["baseline_updated"] is False
    verdicts = {s["name"]: s for s in summary["suites"]}
    assert verdicts["jpeg"]["verdict"] == "regressed"
    assert set(verdicts["jpeg"]["regressed_metrics"]) == {"psnr", "ssim"}
    assert verdicts["sr_x2"]["verdict"] == "passed" and verdicts["sr_x2"]["comparison"]["passed"] is True
    for metric in verdicts["sr_x2"]["comparison"]["metrics"]:
        assert metric["delta"] == 0

    try:
        from pipeline.html import render_nightly_report  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "runs" / "day2" / "report.html").is_file()
    assert summary["report"] == str(tmp_path / "runs" / "day2" / "report.html")


def test_junit_and_markdown_for_the_ci_job(nightly: Path, tmp_path: Path):
    """A first night passes (no baseline yet), a second regresses on `jpeg`: both written for the CI job."""
    ci = tmp_path / "ci"
    first = invoke(str(nightly), "--name", "day1", "--update-baseline", "--junit", str(ci / "day1.xml"))
    assert first.exit_code == 0, first.output
    passed = ET.parse(ci / "day1.xml").getroot()
    assert (passed.get("tests"), passed.get("failures")) == ("2", "0") and passed.find(".//failure") is None

    save_jpeg_outputs(tmp_path / "data/jpeg/reference", tmp_path / "data/jpeg/output", quality=10)
    outputs = ("--junit", str(ci / "day2.xml"), "--markdown", str(ci / "day2.md"))
    second = invoke(str(nightly), "--name", "day2", *outputs)
    assert second.exit_code == 1, second.output
    suite = ET.parse(ci / "day2.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("2", "1", "0")
    failure = suite.find("testcase[@name='jpeg']/failure")
    assert failure.get("type") == "regressed" and "psnr -" in failure.get("message")
    assert "REGRESSED" in failure.get("message") and suite.find("testcase[@name='sr_x2']/failure") is None
    summary = (ci / "day2.md").read_text(encoding="utf-8")
    assert "FAIL: jpeg (regressed)" in summary.splitlines()[0] and "| jpeg | ❌ REGRESSED |" in summary
    assert str(tmp_path / "runs" / "day2" / "report.html") in summary


def test_a_reused_name_never_changes_a_finished_night(nightly: Path, tmp_path: Path):
    """Run twice with one --name, the second night replaced the first's nightly.json and report (a REGRESSED
    verdict became FAILED) and its message named `iqa score`'s options."""
    night = tmp_path / "runs" / "day1"
    first = invoke(str(nightly), "--name", "day1")
    assert first.exit_code == 0, first.output
    before = {path: path.read_bytes() for path in sorted(night.rglob("*")) if path.is_file()}

    again = invoke(str(nightly), "--name", "day1")
    assert again.exit_code == 2, again.output
    assert "already holds the night 'day1' (nightly.json, report.html, jpeg, sr_x2)" in again.output
    assert "Give `iqa run` another --name" in again.output and "--overwrite" in again.output
    assert "--resume" not in again.output and "Traceback" not in again.output
    assert {path: path.read_bytes() for path in sorted(night.rglob("*")) if path.is_file()} == before

    replaced = invoke(str(nightly), "--name", "day1", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert json.loads((night / "nightly.json").read_text())["exit_code"] == 0


def test_incomplete_suite_fails(nightly: Path, tmp_path: Path):
    (tmp_path / "data/sr_x2/output/coffee.png").unlink()
    result = invoke(str(nightly), "--name", "day1", "--update-baseline")
    assert result.exit_code == 1, result.output
    assert "FAILED" in suite_line(result.output, "sr_x2") and "missing output" in result.output
    assert "PASSED" in suite_line(result.output, "jpeg")
    assert not (tmp_path / "baseline").exists()
    page = (tmp_path / "runs/day1/report.html").read_text(encoding="utf-8")
    assert '<h1>Nightly run <span class="verdict bad">FAILED</span></h1>' in page  # not REGRESSED
    assert '<h2>sr_x2 <span class="verdict bad">FAILED</span></h2>' in page
    assert '<h2>jpeg <span class="verdict none">no baseline</span></h2>' in page
    assert "REGRESSED" not in page


def test_a_key_two_outputs_claim_fails_its_suite_and_misnamed_outputs_get_a_hint(
    nightly: Path, tmp_path: Path
):
    jpeg_out, sr_out = tmp_path / "data/jpeg/output", tmp_path / "data/sr_x2/output"
    (jpeg_out / "coffee.png").write_bytes((tmp_path / "data/jpeg/reference/coffee.png").read_bytes())
    for path in sorted(sr_out.glob("*.png")):
        path.rename(sr_out / f"{path.stem}_x2.png")
    result = invoke(str(nightly), "--name", "day1", "--update-baseline")
    assert result.exit_code == 1, result.output
    jpeg_line, sr_line = suite_line(result.output, "jpeg"), suite_line(result.output, "sr_x2")
    assert (
        "FAILED" in jpeg_line
        and "0 missing output(s), 1 reference(s) whose key two or more files claim" in jpeg_line
    )
    assert "FAILED" in sr_line and "4 missing output(s)" in sr_line
    assert (
        "hint: 4 of 4 missing references match extra outputs named with the suffix '_x2' "
        f"(e.g. {sr_out / 'astronaut_x2.png'}" in sr_line
    )
    assert sr_line.endswith("add --output-suffix _x2.")
    assert "FAIL: jpeg (failed), sr_x2 (failed)" in result.output
    assert not (tmp_path / "baseline").exists()


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"colour": 1}, "'colour'"),
        ({"suites": [{"name": "x", "reference": "data/jpeg/reference"}]}, "'output'"),
        ({"suites": [{"name": "x", "reference": "data/jpeg/reference", "output": "o", "scal": 2}]}, "'scal'"),
        ({"suites": [{"name": "x", "reference": "nowhere", "output": "data/jpeg/output"}]}, "nowhere"),
        ({"tolerances": {"psnr": "lots"}}, "lots"),
        ({"tolerances": {"vmaf": 1}}, "vmaf"),
    ],
)
def test_config_errors_exit_2_naming_file_and_key(tmp_path: Path, change: dict, named: str):
    build_suites(tmp_path / "data")
    path = write_config(tmp_path, **change)
    result = invoke(str(path))
    assert result.exit_code == 2, result.output
    assert named in result.output and "nightly.yaml" in result.output
    assert not (tmp_path / "runs").exists()


def test_missing_key_and_example_config(tmp_path: Path):
    path = tmp_path / "nightly.yaml"
    path.write_text("runs: runs\nsuites: []\n", encoding="utf-8")
    result = invoke(str(path))
    assert result.exit_code == 2 and "'baseline'" in result.output
    example = yaml.safe_load((Path(__file__).parents[1] / "configs" / "nightly.yaml").read_text())
    assert {"baseline", "runs", "tolerances", "suites"} <= set(example)
    assert all({"name", "reference", "output"} <= set(s) for s in example["suites"])


def test_example_config_loads_on_demo_data(tmp_path: Path):
    example = Path(__file__).parents[1] / "configs" / "nightly.yaml"
    data = yaml.safe_load(example.read_text())
    for suite in data["suites"]:
        for role in ("reference", "output"):
            (tmp_path / "configs" / suite[role]).resolve().mkdir(parents=True, exist_ok=True)
    (tmp_path / "configs").mkdir(exist_ok=True)
    copy = tmp_path / "configs" / "nightly.yaml"
    copy.write_text(example.read_text())
    config = load_nightly_config(copy)
    assert [s.name for s in config.suites] == [s["name"] for s in data["suites"]]
    sr = next(s for s in config.suites if s.config.convention == "sr-paper")
    assert sr.config.effective_crop == 4


def test_a_suite_scored_differently_from_its_baseline_fails_with_the_reason(nightly: Path, tmp_path: Path):
    assert invoke(str(nightly), "--name", "day1", "--update-baseline").exit_code == 0
    config = yaml.safe_load(nightly.read_text())
    config["suites"][1]["scale"] = 3  # sr-paper crops 3 px instead of the baseline's 2
    nightly.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    result = invoke(str(nightly), "--name", "day2", "--update-baseline")
    assert result.exit_code == 2, result.output
    sr_line = suite_line(result.output, "sr_x2")
    assert "FAILED" in sr_line and "not comparable with its baseline" in sr_line and "crop 2 vs 3" in sr_line
    assert f"remove {tmp_path / 'baseline' / 'sr_x2'} to start a new baseline" in sr_line
    assert "PASSED" in suite_line(result.output, "jpeg")
    assert "baseline NOT updated" in result.output and "Traceback" not in result.output
    summary = json.loads((tmp_path / "runs" / "day2" / "nightly.json").read_text())
    verdicts = {s["name"]: s for s in summary["suites"]}
    assert summary["exit_code"] == 2
    assert verdicts["sr_x2"]["verdict"] == "failed" and verdicts["sr_x2"]["not_comparable"] == ["crop 2 vs 3"]
    assert verdicts["sr_x2"]["comparison"] is None and verdicts["jpeg"]["not_comparable"] == []


def test_require_significant_decides_a_drop_of_one_photo_in_four(nightly: Path, tmp_path: Path):
    """One output of four much worse, the rest unchanged: the mean drops beyond the tolerance, but the
    bootstrap CI of the change reaches 0 (resamples without that photo): only the default verdict
    regresses."""
    assert invoke(str(nightly), "--name", "day1", "--update-baseline").exit_code == 0
    reference = tmp_path / "data/jpeg/reference/coffee.png"
    buffer = io.BytesIO()
    Image.open(reference).save(buffer, format="JPEG", quality=5)
    (tmp_path / "data/jpeg/output/coffee.jpg").write_bytes(buffer.getvalue())

    gated = write_config(tmp_path, require_significant=True)
    result = invoke(str(gated), "--name", "day2")
    assert result.exit_code == 0, result.output
    assert "PASSED" in suite_line(result.output, "jpeg")
    summary = json.loads((tmp_path / "runs" / "day2" / "nightly.json").read_text())
    jpeg = next(s for s in summary["suites"] if s["name"] == "jpeg")["comparison"]
    assert jpeg["require_significant"] is True
    psnr = next(m for m in jpeg["metrics"] if m["metric"] == "psnr")
    assert psnr["beyond_tolerance"] and not psnr["regressed"] and psnr["ci_high"] >= 0

    config = yaml.safe_load(gated.read_text())
    config["suites"][0]["require_significant"] = False  # a suite's own key wins
    gated.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    result = invoke(str(gated), "--name", "day3")
    assert result.exit_code == 1, result.output
    assert "REGRESSED" in suite_line(result.output, "jpeg") and "psnr" in suite_line(result.output, "jpeg")


def test_require_significant_must_be_a_boolean(tmp_path: Path):
    build_suites(tmp_path / "data")
    path = write_config(tmp_path, require_significant="yes")
    result = invoke(str(path))
    assert result.exit_code == 2, result.output
    assert "'require_significant' must be true or false, got 'yes' (str)" in result.output
    assert "nightly.yaml line" in result.output
    config = load_nightly_config(write_config(tmp_path, require_significant=True))
    assert [s.require_significant for s in config.suites] == [True, True]
    assert not any(s.require_significant for s in load_nightly_config(write_config(tmp_path)).suites)

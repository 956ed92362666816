"""The `iqa` command line: exit codes, one-line errors, config files, `iqa pairs`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import degrade, real_image
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()
FAST = ["--metrics", "psnr,ssim", "--scheduler", "sync", "--no-report", "--no-progress"]


@pytest.fixture
def folders(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    for name in ("astronaut.png", "camera.png"):
        image = real_image(name)[:128, :128]
        for root, array in ((ref, image), (out, degrade(image, "noise"))):
            root.mkdir(exist_ok=True)
            Image.fromarray(array).save(root / name)
    return ref, out


def test_clean_run_exits_0_and_prints_summary(folders, tmp_path):
    ref, out = folders
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST])
    assert result.exit_code == 0, result.output
    assert "psnr" in result.output and "ok=2" in result.output


def test_failures_exit_1_unless_allowed(folders, tmp_path):
    ref, out = folders
    (out / "camera.png").write_bytes(b"not a png")
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST])
    assert result.exit_code == 1
    assert "error=1" in result.output
    allowed = ["--allow-failures", "--overwrite"]
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST, *allowed])
    assert result.exit_code == 0


def test_missing_output_exits_1(folders, tmp_path):
    ref, out = folders
    (out / "camera.png").unlink()
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST])
    assert result.exit_code == 1 and "missing=1" in result.output


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--metrics", "psnr,bogus"], "unknown metric 'bogus'"),
        (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "cannot be used with"),
        (["--convention", "nope"], "nope"),
    ],
)
def test_usage_errors_exit_2_with_one_line(folders, tmp_path, extra, needle):
    ref, out = folders
    args = ["score", str(ref), str(out), "-o", str(tmp_path / "run"), "--scheduler", "sync", *extra]
    if "--scheduler" in extra:
        args = ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert needle in result.output
    assert "Traceback" not in result.output


def test_missing_folder_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["score", str(tmp_path / "nope"), str(tmp_path), "-o", str(tmp_path / "r")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_config_file_values_are_overridden_by_options(folders, tmp_path):
    ref, out = folders
    config = tmp_path / "c.yaml"
    config.write_text("metrics: [psnr]\nconvention: sr-paper\nscale: 2\nscheduler: sync\nreport: false\n")
    result = runner.invoke(
        app,
        ["score", str(ref), str(out), "-o", str(tmp_path / "run"), "--config", str(config), "--scale", "3"],
    )
    assert result.exit_code == 0, result.output
    import json

    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["metrics"] == ["psnr"]
    assert manifest["convention"]["name"] == "sr-paper" and manifest["convention"]["crop"] == 3


def test_bad_config_key_names_line_and_key(folders, tmp_path):
    ref, out = folders
    config = tmp_path / "c.yaml"
    config.write_text("metrics: [psnr]\n\nconventoin: sr-paper\n")
    result = runner.invoke(
        app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), "--config", str(config)]
    )
    assert result.exit_code == 2
    assert "line 3" in result.output and "conventoin" in result.output


def test_pairs_lists_counts(folders):
    ref, out = folders
    (out / "camera.png").rename(out / "camera_other.png")
    result = runner.invoke(app, ["pairs", str(ref), str(out)])
    assert result.exit_code == 0
    assert "camera_other" in result.output and "camera" in result.output


def test_python_dash_m_runs_the_cli():
    completed = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0 and "score" in completed.stdout


def test_threads_scheduler_scores_like_sync(folders, tmp_path):
    ref, out = folders
    base = ["--metrics", "psnr,ssim", "--no-report", "--no-progress"]
    threads = runner.invoke(
        app, ["score", str(ref), str(out), "-o", str(tmp_path / "t"), *base, "--scheduler", "threads"]
    )
    assert threads.exit_code == 0, threads.output
    sync = runner.invoke(
        app, ["score", str(ref), str(out), "-o", str(tmp_path / "s"), *base, "--scheduler", "sync"]
    )
    assert sync.exit_code == 0, sync.output
    from pipeline.results import load_results

    columns = ["key", "psnr", "ssim"]
    assert load_results(tmp_path / "t")[columns].equals(load_results(tmp_path / "s")[columns])


def test_default_cluster_keeps_dask_chatter_off_the_console(folders, tmp_path):
    ref, out = folders
    command = [sys.executable, "-m", "pipeline", "score", str(ref), str(out), "-o", str(tmp_path / "run")]
    options = ["--metrics", "psnr,ssim", "--no-report", "--no-progress"]
    completed = subprocess.run([*command, *options], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "ok=2" in completed.stdout
    for chatter in ("Scheduler at", "Start worker", "Registered to", "Lost all workers"):
        assert chatter not in completed.stderr + completed.stdout


def test_main_returns_control_to_a_python_caller_with_a_system_exit(tmp_path, monkeypatch, capsys):
    """Called from Python, `main` ends in SystemExit with the command's code; the interpreter goes on."""
    from pipeline import cli

    monkeypatch.setattr(sys, "argv", ["iqa", "pairs", str(tmp_path / "missing"), str(tmp_path)])
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert ended.value.code == 2
    assert "missing" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["iqa", "pairs", str(tmp_path), str(tmp_path / "other")])
    (tmp_path / "other").mkdir()
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert ended.value.code == 0


def test_console_exit_codes(tmp_path):
    """Through the real entry point: a usage error exits 2 with its message, success exits 0."""
    missing = tmp_path / "missing"
    failed = subprocess.run(
        [sys.executable, "-m", "pipeline", "pairs", str(missing), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 2, failed.stderr
    assert "missing" in failed.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "pipeline", "compare", "--help"], capture_output=True, text=True
    )
    assert helped.returncode == 0 and "compare" in helped.stdout

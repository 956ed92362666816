"""pipeline/cli.py: exit codes, one-line errors, config files, `iqa pairs`, the entry points, and what reaches
the console (-v / -q, the dashboard link, notices)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest
from conftest import degrade, real_image
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import ConsoleHandler, app, configure_logging
from pipeline.results import load_results

runner = CliRunner()
FAST = ["--metrics", "psnr,ssim", "--scheduler", "sync", "--no-report", "--no-progress"]


def test_clean_run_exits_0_and_prints_summary(photo_folders, tmp_path):
    ref, out = photo_folders
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST])
    assert result.exit_code == 0, result.output
    assert "psnr" in result.output and "ok=2" in result.output


def test_failures_exit_1_unless_allowed(photo_folders, tmp_path):
    ref, out = photo_folders
    (out / "camera.png").write_bytes(b"not a png")
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST])
    assert result.exit_code == 1
    assert "error=1" in result.output
    allowed = ["--allow-failures", "--overwrite"]
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST, *allowed])
    assert result.exit_code == 0


def test_a_failed_pair_shows_its_message_on_the_console(photo_folders, tmp_path):
    """An off-by-one SR output said only "see manifest.json"; its message (both sizes, what to do) sat in
    Parquet. Now the console shows the convention, the failure's message and the warnings by kind."""
    ref, out = photo_folders
    image = Image.open(out / "camera.png")
    image.crop((0, 0, image.width - 1, image.height - 1)).save(out / "camera.png")
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST])
    assert result.exit_code == 1
    assert result.stdout.startswith("convention default: channels as stored, crop 0 px, float32; SSIM 11x11")
    failed = next(line for line in result.stdout.splitlines() if line.startswith("failed: "))
    assert failed.startswith("failed: camera: size mismatch: reference ")
    assert "--size-mismatch crop|resize" in failed
    assert "Some references have no ok row (1 failed, 0 missing output(s)" in result.stderr


def test_missing_output_exits_1(photo_folders, tmp_path):
    ref, out = photo_folders
    (out / "camera.png").unlink()
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST])
    assert result.exit_code == 1 and "missing=1" in result.output


@pytest.fixture
def tiny_tree(image_tree):
    """Factory: a reference and an output folder of 48 x 48 crops of a real photo, named as given."""
    crop = real_image("astronaut.png")[:48, :48]

    def make(references: list[str], outputs: list[str]):
        ref = image_tree("ref", {name: crop for name in references})
        out = image_tree("out", {name: degrade(crop, "noise") for name in outputs})
        return ref, out

    return make


def test_a_reference_whose_key_two_outputs_claim_is_not_scored_and_exits_1(tiny_tree, tmp_path):
    ref, out = tiny_tree(["01.png", "02.png"], ["01.png", "01.jpg", "02.png"])
    run_dir = tmp_path / "run"
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(run_dir), *FAST])
    assert result.exit_code == 1, result.output
    assert "ok=1" in result.stdout and "duplicates=1" in result.stdout
    assert (
        f"key '01' not scored: 2 output files claim it ({out / '01.jpg'}, {out / '01.png'}) "
        f"for reference {ref / '01.png'}; remove or rename all but one.\n"
    ) in result.stderr
    assert "Traceback" not in result.output
    assert list(load_results(run_dir)["key"]) == ["02"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["counts"]["unscored_duplicates"] == 1
    allowed = runner.invoke(app, ["score", str(ref), str(out), "-o", str(run_dir), *FAST, "--overwrite",
                                  "--allow-failures"])  # fmt: skip
    assert allowed.exit_code == 0 and "key '01' not scored" in allowed.stderr


def test_a_reference_key_claimed_twice_on_the_reference_side_exits_1(tiny_tree, tmp_path):
    ref, out = tiny_tree(["01.png", "01.jpg", "02.png"], ["01.png", "02.png"])
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST])
    assert result.exit_code == 1, result.output
    assert (
        f"key '01' not scored: 2 reference files claim it ({ref / '01.jpg'}, {ref / '01.png'}); "
        "remove or rename all but one."
    ) in result.stderr


def test_duplicate_outputs_without_a_reference_do_not_fail_the_run(tiny_tree, tmp_path):
    ref, out = tiny_tree(["01.png"], ["01.png", "09.png", "09.jpg"])
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST])
    assert result.exit_code == 0, result.output
    assert "duplicates=1" in result.stdout and "not scored" not in result.output


def test_many_keys_claimed_twice_print_five_lines_then_a_count(tiny_tree, tmp_path):
    names = [f"{i:02d}" for i in range(7)]
    ref, out = tiny_tree(
        [f"{n}.png" for n in names], [f"{n}{ext}" for n in names for ext in (".png", ".jpg")]
    )
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST])
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert sum(line.startswith("key '") for line in lines) == 5
    assert "... and 2 more keys claimed by two or more files; manifest.json lists them all." in lines


def test_score_prints_a_pairing_hint_when_few_references_pair(tiny_tree, tmp_path):
    ref, out = tiny_tree(["01.png", "02.png"], ["01_x4_SR.png", "02_x4_SR.png"])
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST])
    assert result.exit_code == 1, result.output
    assert (
        "hint: 2 of 2 missing references match extra outputs named with the suffix '_x4_SR' "
        f"(e.g. {out / '01_x4_SR.png'} for {ref / '01.png'}): add --output-suffix _x4_SR.\n"
    ) in result.stderr
    followed = runner.invoke(
        app, ["score", str(ref), str(out), "-o", str(tmp_path / "run2"), *FAST, "--output-suffix", "_x4_SR"]
    )
    assert followed.exit_code == 0, followed.output
    assert "hint:" not in followed.output


def test_pairs_prints_a_pairing_hint(tiny_tree):
    ref, out = tiny_tree(["01.png", "02.png"], ["x4/01.png", "x4/02.png"])
    result = runner.invoke(app, ["pairs", str(ref), str(out)])
    assert result.exit_code == 1, result.output  # references without output
    assert result.stdout.splitlines()[-1] == (
        "hint: 2 of 2 missing references match extra outputs one folder deeper, under 'x4' "
        f"(e.g. {out / 'x4/01.png'} for {ref / '01.png'}): pass {out / 'x4'} as the output folder."
    )


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--metrics", "psnr,bogus"], "unknown metric 'bogus'"),
        (["--scheduler", "tcp://127.0.0.1:1", "--workers", "2"], "cannot be used with"),
        (["--convention", "nope"], "nope"),
    ],
)
def test_usage_errors_exit_2_with_one_line(photo_folders, tmp_path, extra, needle):
    ref, out = photo_folders
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


def test_config_file_values_are_overridden_by_options(photo_folders, tmp_path):
    ref, out = photo_folders
    config = tmp_path / "c.yaml"
    config.write_text("metrics: [psnr]\nconvention: sr-paper\nscale: 2\nscheduler: sync\nreport: false\n")
    result = runner.invoke(
        app,
        ["score", str(ref), str(out), "-o", str(tmp_path / "run"), "--config", str(config), "--scale", "3"],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["metrics"] == ["psnr"]
    assert manifest["convention"]["name"] == "sr-paper" and manifest["convention"]["crop"] == 3


def test_bad_config_key_names_line_and_key(photo_folders, tmp_path):
    ref, out = photo_folders
    config = tmp_path / "c.yaml"
    config.write_text("metrics: [psnr]\n\nconventoin: sr-paper\n")
    result = runner.invoke(
        app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), "--config", str(config)]
    )
    assert result.exit_code == 2
    assert "line 3" in result.output and "conventoin" in result.output


def test_compare_refuses_a_default_run_against_an_sr_paper_run(photo_folders, tmp_path):
    """Issue 17, finding 6: such runs are not comparable; exit 2 naming the differences, or FORCED."""
    ref, out = photo_folders
    default, paper = tmp_path / "default", tmp_path / "paper"
    assert runner.invoke(app, ["score", str(ref), str(out), "-o", str(default), *FAST]).exit_code == 0
    paper_options = ["--convention", "sr-paper", "--scale", "4", *FAST]
    scored = runner.invoke(app, ["score", str(ref), str(out), "-o", str(paper), *paper_options])
    assert scored.exit_code == 0, scored.output
    refused = runner.invoke(app, ["compare", str(default), str(paper)])
    assert refused.exit_code == 2, refused.output
    assert refused.output.splitlines() == [
        "error: Runs are not comparable: convention default vs sr-paper; crop 0 vs 4. Score both with the "
        "same options, or pass --force to compare anyway (the verdict is then marked FORCED)."
    ]
    forced = runner.invoke(app, ["compare", str(default), str(paper), "--force"])
    assert forced.exit_code in (0, 1), forced.output
    assert forced.output.startswith("FORCED: the runs are not comparable (convention default vs sr-paper")
    assert "(FORCED: the runs are not comparable)" in forced.output.splitlines()[-1]


def test_pairs_lists_counts(photo_folders):
    ref, out = photo_folders
    complete = runner.invoke(app, ["pairs", str(ref), str(out)])
    assert complete.exit_code == 0, complete.output
    (out / "camera.png").rename(out / "camera_other.png")
    result = runner.invoke(app, ["pairs", str(ref), str(out)])
    assert result.exit_code == 1  # `iqa score` would leave `camera` without an ok row
    assert "camera_other" in result.output and "camera" in result.output


@pytest.mark.slow
def test_python_dash_m_runs_the_cli():
    completed = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0 and "score" in completed.stdout


def test_threads_scheduler_scores_like_sync(photo_folders, tmp_path):
    ref, out = photo_folders
    base = ["--metrics", "psnr,ssim", "--no-report", "--no-progress"]
    threads = runner.invoke(
        app, ["score", str(ref), str(out), "-o", str(tmp_path / "t"), *base, "--scheduler", "threads"]
    )
    assert threads.exit_code == 0, threads.output
    sync = runner.invoke(
        app, ["score", str(ref), str(out), "-o", str(tmp_path / "s"), *base, "--scheduler", "sync"]
    )
    assert sync.exit_code == 0, sync.output
    columns = ["key", "psnr", "ssim"]
    assert load_results(tmp_path / "t")[columns].equals(load_results(tmp_path / "s")[columns])


@pytest.mark.slow
def test_default_cluster_keeps_dask_chatter_off_the_console(photo_folders, tmp_path):
    ref, out = photo_folders
    command = [sys.executable, "-m", "pipeline", "score", str(ref), str(out), "-o", str(tmp_path / "run")]
    options = ["--metrics", "psnr,ssim", "--no-report", "--no-progress"]
    completed = subprocess.run([*command, *options], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "ok=2" in completed.stdout
    assert "Dask dashboard: http://127.0.0.1:" in completed.stderr
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


@pytest.mark.slow
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


# Console messages: -v / -q and notices


@pytest.fixture
def console_logging():
    """Put back what `configure_logging` changes on the `pipeline` and `distributed` loggers."""
    saved = {
        name: (logger, logger.level, logger.propagate, list(logger.handlers))
        for name in ("pipeline", "distributed")
        for logger in [logging.getLogger(name)]
    }
    yield
    for logger, level, propagate, handlers in saved.values():
        logger.setLevel(level)
        logger.propagate = propagate
        logger.handlers[:] = handlers


@pytest.mark.parametrize(
    ("verbose", "quiet", "ours", "dask"),
    [
        (False, False, logging.INFO, logging.WARNING),
        (False, True, logging.WARNING, logging.ERROR),
        (True, False, logging.INFO, logging.INFO),
        (True, True, logging.WARNING, logging.ERROR),
    ],
)
def test_configure_logging_levels(console_logging, verbose, quiet, ours, dask):
    assert configure_logging(verbose, quiet) == dask
    assert logging.getLogger("distributed").level == dask
    assert logging.getLogger("pipeline").level == ours
    configure_logging(verbose, quiet)
    handlers = [h for h in logging.getLogger("pipeline").handlers if isinstance(h, ConsoleHandler)]
    assert len(handlers) == 1 and not logging.getLogger("pipeline").propagate


@pytest.mark.parametrize(
    ("flags", "dask", "dashboard"),
    [([], logging.WARNING, True), (["-q"], logging.ERROR, False), (["--quiet"], logging.ERROR, False),
     (["-v"], logging.INFO, True), (["--verbose"], logging.INFO, True)],
)  # fmt: skip
def test_score_verbosity_flags(photo_folders, tmp_path, console_logging, flags, dask, dashboard):
    ref, out = photo_folders
    options = ["--metrics", "psnr", "--scheduler", "threads", "--no-report", "--no-progress", *flags]
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *options])
    assert result.exit_code == 0, result.output
    assert logging.getLogger("distributed").level == dask
    printed = [line for line in result.stderr.splitlines() if line.startswith("Dask dashboard: ")]
    assert len(printed) == (1 if dashboard else 0), result.stderr
    if dashboard:
        assert printed[0].startswith("Dask dashboard: http://127.0.0.1:")
    assert "Dask dashboard" not in result.stdout


@pytest.mark.parametrize("flags", [[], ["-q"]])
def test_lpips_not_scored_is_printed_once(photo_folders, tmp_path, offline, console_logging, flags):
    ref, out = photo_folders
    options = ["--scheduler", "sync", "--no-report", "--no-progress", *flags]
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *options])
    assert result.exit_code == 0, result.output
    assert result.output.count("LPIPS NOT SCORED") == 1, result.output
    assert result.stderr.count("LPIPS NOT SCORED") == 1
    (line,) = [line for line in result.stderr.splitlines() if "LPIPS NOT SCORED" in line]
    assert "alexnet-owt-7be5be79.pth" in line and str(offline) in line
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["notices"] == [line] and "lpips" not in manifest["metrics"]


def test_the_executable_sets_its_own_process_and_keeps_the_exit_code(monkeypatch, tmp_path):
    """`console` (the `iqa` executable) sets the collector and the allocator of its own process and exits with
    the command's code (the live objects frozen last); a Python caller of `main` is never affected."""
    import gc

    from pipeline import cli, executable

    calls = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "disable", lambda: calls.append("disable"))
    monkeypatch.setattr(gc, "enable", lambda: calls.append("enable"))
    monkeypatch.setattr(executable, "keep_freed_memory", lambda: calls.append("allocator") or True)
    monkeypatch.setattr(sys, "argv", ["iqa", "pairs", str(tmp_path / "missing"), str(tmp_path)])
    with pytest.raises(SystemExit) as ended:
        cli.main()
    assert calls == []
    with pytest.raises(SystemExit) as ended:
        executable.console()
    assert ended.value.code == 2
    assert calls == ["disable", "freeze", "enable", "allocator", "freeze"]


def test_basicsr_is_another_name_of_sr_paper_on_the_command_line(photo_folders, tmp_path):
    ref, out = photo_folders
    args = ["score", str(ref), str(out), *FAST, "--scale", "4"]
    alias = runner.invoke(app, [*args, "-o", str(tmp_path / "alias"), "--convention", "basicsr"])
    named = runner.invoke(app, [*args, "-o", str(tmp_path / "named"), "--convention", "sr-paper"])
    assert alias.exit_code == 0 and named.exit_code == 0, alias.output + named.output
    first_line = alias.stdout.splitlines()[0]
    assert first_line.startswith("convention sr-paper: Y (BT.601, MATLAB rgb2ycbcr), crop 4 px")
    columns = ["key", "psnr", "ssim"]
    assert load_results(tmp_path / "alias")[columns].equals(load_results(tmp_path / "named")[columns])

"""The README's nightly CI recipes run as written on a fresh copy of the repository (issue 20): every `run:`
step of the GitHub Actions job, then the cron line, on the demo data, through the installed `iqa` (this
checkout's package first on PYTHONPATH). Only `${{ github.run_id }}`, the cron line's folder and `iqa` path,
and `mail` are substituted."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
RUN_ID = "1234"
INSTALL_STEP = "pip install -e ."  # the installed `iqa` of this checkout stands in for it
GITHUB_SHELL = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"]  # what `run:` uses on ubuntu


def readme_block(heading: str, language: str) -> str:
    """The first fenced block of `language` under the README's `### heading`."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split(f"\n### {heading}\n", 1)[1]
    return re.search(rf"```{language}\n(.*?)```", section, re.DOTALL).group(1)


def github_expressions(text: str) -> str:
    """`text` with `${{ github.run_id }}` replaced; any other expression fails the test (it needs a value)."""
    text = re.sub(r"\$\{\{\s*github\.run_id\s*\}\}", RUN_ID, text)
    assert "${{" not in text, f"an expression this test cannot give a value: {text}"
    return text


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """What the recipes use of a fresh clone: configs/ and scripts/ (no demo data, no reports)."""
    repo = tmp_path / "repo"
    for folder in ("configs", "scripts"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    """PATH with this interpreter's `python` and `iqa` and a `mail` that records its calls; the package of
    this checkout first; a GitHub step summary file."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "mail").write_text('#!/bin/sh\necho "mail $*" >> "$MAIL_LOG"\ncat >> "$MAIL_LOG"\n')
    (stubs / "mail").chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith("DASK_")}
    return {
        **env,
        "PATH": os.pathsep.join([str(stubs), str(Path(sys.executable).parent), env.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        "GITHUB_STEP_SUMMARY": str(tmp_path / "step_summary.md"),
        "MAIL_LOG": str(tmp_path / "mail.log"),
    }


def run_github_job(repo: Path, env: dict[str, str]) -> list[str]:
    """Run the job's `run:` steps in order as GitHub does (after a failure only `if: always()` steps); the
    names of the steps that ran."""
    steps = yaml.safe_load(readme_block("GitHub Actions", "yaml"))["jobs"]["nightly"]["steps"]
    skipped = [step["run"] for step in steps if step.get("run") == INSTALL_STEP]
    assert skipped == [INSTALL_STEP]
    ran, failed = [], False
    for step in steps:
        if "run" not in step or step["run"] == INSTALL_STEP or (failed and step.get("if") != "always()"):
            continue
        command = github_expressions(step["run"])
        done = subprocess.run([*GITHUB_SHELL, command], cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0, (
            f"step {step.get('name', command)!r} exit {done.returncode}:\n{done.stderr}"
        )
        ran.append(step.get("name", command))
    return ran


def cron_command(repo: Path) -> str:
    """The README's crontab line's command, run in `repo` with the installed `iqa`."""
    line = next(line for line in readme_block("cron", "cron").splitlines() if not line.startswith("#"))
    command = line.split(None, 5)[5]
    assert command.count("cd /srv/iqa ") == 1 and command.count(" .venv/bin/iqa ") == 1, command
    iqa = shutil.which("iqa", path=str(Path(sys.executable).parent)) or shutil.which("iqa")
    command = command.replace("cd /srv/iqa ", f"cd {shlex.quote(str(repo))} ")
    return command.replace(" .venv/bin/iqa ", f" {shlex.quote(iqa)} ")


@pytest.mark.slow
def test_the_github_actions_job_and_the_cron_line_run_as_written(clone: Path, environment: dict[str, str]):
    if not (shutil.which("iqa", path=str(Path(sys.executable).parent)) or shutil.which("iqa")):
        pytest.skip("the `iqa` executable is not installed")
    ran = run_github_job(clone, environment)
    assert "Score and compare (exit 1 on regression)" in ran and len(ran) >= 3

    night = clone / "reports" / "nightly" / RUN_ID
    suites = ET.parse(night / "junit.xml").getroot().find("testsuite")
    assert (suites.get("tests"), suites.get("failures"), suites.get("errors")) == ("3", "0", "0")
    summary = Path(environment["GITHUB_STEP_SUMMARY"]).read_text(encoding="utf-8")
    assert "PASS: every suite passed" in summary and summary == (night / "summary.md").read_text("utf-8")
    steps = yaml.safe_load(readme_block("GitHub Actions", "yaml"))["jobs"]["nightly"]["steps"]
    for step in steps:
        if "path" in step.get("with", {}):  # the baseline cache and the artifact: both exist to be saved
            assert (clone / github_expressions(step["with"]["path"])).is_dir(), step["with"]["path"]

    done = subprocess.run(["sh", "-c", cron_command(clone)], env=environment, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not Path(environment["MAIL_LOG"]).exists()  # a passing night sends no mail
    log = (clone / "reports" / "nightly.log").read_text(encoding="utf-8")
    assert "PASS: every suite passed" in log and "no metric worse than its tolerance" in log  # compared

"""pipeline/run_dirs.py: claiming a run directory to write into, and requiring one to read."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import RunDirError, UsageError
from pipeline.run_dirs import MANIFEST_NAME, REPORT_NAME, SCORES_DIR, claim_run_dir, require_run_dir

OUTPUTS = (MANIFEST_NAME, SCORES_DIR, REPORT_NAME)


def finished_run(run_dir: Path) -> Path:
    """A run directory as `iqa score` leaves it, plus a file of the user's and an empty folder."""
    (run_dir / SCORES_DIR).mkdir(parents=True)
    (run_dir / SCORES_DIR / "part-00000.parquet").write_bytes(b"parquet")
    (run_dir / MANIFEST_NAME).write_text("{}")
    (run_dir / REPORT_NAME).write_text("<html></html>")
    (run_dir / "notes.txt").write_text("mine")
    (run_dir / "plots").mkdir()
    return run_dir


def test_a_new_run_directory_is_created_with_its_parents(tmp_path):
    run_dir = tmp_path / "runs" / "today"
    claim_run_dir(run_dir, OUTPUTS)
    assert run_dir.is_dir() and list(run_dir.iterdir()) == []


def test_a_folder_holding_a_run_is_refused_naming_what_it_holds(tmp_path):
    run_dir = finished_run(tmp_path / "run")
    with pytest.raises(RunDirError) as raised:
        claim_run_dir(run_dir, OUTPUTS, resume=False)
    assert str(raised.value) == (
        f"{run_dir} already holds a run (manifest.json, scores, report.html). Pass --resume to continue it, "
        "--overwrite to replace it, or choose another -o directory."
    )
    with pytest.raises(RunDirError, match=r"\(report\.html\)\. Pass --overwrite to replace them, or choose"):
        claim_run_dir(run_dir, (REPORT_NAME,))  # a command that cannot resume
    assert (run_dir / MANIFEST_NAME).read_text() == "{}"


def test_other_files_and_an_empty_scores_folder_are_not_a_run(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / SCORES_DIR).mkdir(parents=True)
    (run_dir / "notes.txt").write_text("mine")
    claim_run_dir(run_dir, OUTPUTS, resume=False)
    (run_dir / SCORES_DIR / ".part-00000.parquet.7.tmp").write_bytes(b"half")
    with pytest.raises(RunDirError, match=r"already holds a run \(scores\)"):
        claim_run_dir(run_dir, OUTPUTS, resume=False)


def test_overwrite_removes_only_the_runs_outputs(tmp_path):
    run_dir = finished_run(tmp_path / "run")
    claim_run_dir(run_dir, OUTPUTS, resume=False, overwrite=True)
    assert sorted(path.name for path in run_dir.iterdir()) == ["notes.txt", "plots"]
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_resume_keeps_the_run(tmp_path):
    run_dir = finished_run(tmp_path / "run")
    claim_run_dir(run_dir, OUTPUTS, resume=True)
    assert (run_dir / SCORES_DIR / "part-00000.parquet").read_bytes() == b"parquet"
    assert (run_dir / MANIFEST_NAME).is_file()


def test_resume_with_overwrite_is_a_usage_error(tmp_path):
    for run_dir in (tmp_path / "new", finished_run(tmp_path / "old")):
        with pytest.raises(UsageError, match="--resume and --overwrite contradict each other") as raised:
            claim_run_dir(run_dir, OUTPUTS, resume=True, overwrite=True)
        assert raised.value.exit_code == 2
    assert not (tmp_path / "new").exists() and (tmp_path / "old" / MANIFEST_NAME).is_file()


@pytest.mark.parametrize("where", ["inside", "equal", "linked"])
def test_a_run_directory_inside_an_input_folder_is_refused(tmp_path, where):
    ref, out = tmp_path / "ref", tmp_path / "out"
    ref.mkdir()
    out.mkdir()
    run_dir = {"inside": out / "results" / "run", "equal": out, "linked": tmp_path / "link" / "run"}[where]
    (tmp_path / "link").symlink_to(out, target_is_directory=True)
    with pytest.raises(UsageError) as raised:
        claim_run_dir(run_dir, OUTPUTS, inputs={"reference": ref, "output": out})
    assert f"The run directory {run_dir} is inside the output folder {out}" in str(raised.value)
    assert "Choose a run directory outside both input folders." in str(raised.value)
    assert list(out.iterdir()) == []


def test_a_sibling_that_shares_the_input_folders_prefix_is_fine(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    claim_run_dir(tmp_path / "ref-run", OUTPUTS, inputs={"reference": ref})
    assert (tmp_path / "ref-run").is_dir()


def test_a_file_in_place_of_the_folder_or_of_a_parent(tmp_path):
    target = tmp_path / "run"
    target.write_text("not a folder")
    with pytest.raises(RunDirError, match=r"run exists and is not a directory\. Choose another -o directory"):
        claim_run_dir(target, OUTPUTS)
    with pytest.raises(
        RunDirError, match=r"Cannot write into .*run/inner: .*Check permissions and free space"
    ):
        claim_run_dir(target / "inner", OUTPUTS)
    assert target.read_text() == "not a folder"


@pytest.mark.parametrize("role", ["baseline", "candidate"])
def test_require_run_dir_names_the_role(tmp_path, role):
    with pytest.raises(
        UsageError, match=rf"^The {role} run directory .*missing does not exist\. Pass a folder"
    ):
        require_run_dir(tmp_path / "missing", role)
    (tmp_path / SCORES_DIR).mkdir()
    with pytest.raises(
        UsageError, match=rf"\({role}\) is not a run directory: no manifest\.json and no scores"
    ):
        require_run_dir(tmp_path, role)


def test_require_run_dir_accepts_a_manifest_or_score_parts(tmp_path):
    with_manifest, with_parts = tmp_path / "a", tmp_path / "b"
    with_manifest.mkdir()
    (with_manifest / MANIFEST_NAME).write_text("{}")
    (with_parts / SCORES_DIR).mkdir(parents=True)
    (with_parts / SCORES_DIR / "part-00000.parquet").write_bytes(b"parquet")
    assert require_run_dir(with_manifest, "baseline").path == str(with_manifest)
    assert require_run_dir(with_parts, "candidate").path == str(with_parts)
    with pytest.raises(UsageError, match=r"Pass a folder written by `iqa score`\.$"):
        require_run_dir(with_manifest / MANIFEST_NAME, "baseline")

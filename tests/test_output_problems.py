"""Issue 7: an unwritable or full run directory, and a run directory that already holds a run.

The run stops with one clear error; results already written stay intact and readable; no temp file is left.
"""

from __future__ import annotations

import errno
import hashlib

import pyarrow.parquet as pq
import pytest
from conftest import degrade, one_line_error, real_image
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import ScoreConfig
from pipeline.errors import RunDirError, WriteError
from pipeline.manifest import read_manifest
from pipeline.results import load_results, part_paths
from pipeline.scoring import score_folders

runner = CliRunner()
FAST = ["--metrics", "psnr,ssim", "--scheduler", "sync", "--no-report", "--no-progress"]
NAMES = ("astronaut.png", "coffee.png", "camera.png", "chelsea.png")


@pytest.fixture
def folders(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    for name in NAMES:
        image = real_image(name)[:96, :96]
        for root, array in ((ref, image), (out, degrade(image, "blur"))):
            root.mkdir(exist_ok=True)
            Image.fromarray(array).save(root / name)
    return ref, out


def snapshot(run_dir) -> dict[str, str]:
    return {
        str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file()
    }


def config(**changes) -> ScoreConfig:
    return ScoreConfig(metrics=("psnr", "ssim"), scheduler="sync", report=False, **changes)


def test_run_dir_that_is_a_file(folders, tmp_path):
    ref, out = folders
    target = tmp_path / "run"
    target.write_text("not a folder")
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(target), *FAST])
    one_line_error(result, 2, str(target), "not a directory")
    assert target.read_text() == "not a folder"


def test_run_dir_under_a_file(folders, tmp_path):
    ref, out = folders
    parent = tmp_path / "blocker"
    parent.write_text("a file where a folder should be")
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(parent / "run"), *FAST])
    one_line_error(result, 2, "Cannot write into", "Not a directory")


def test_full_disk_stops_the_run_and_keeps_written_parts(folders, tmp_path, monkeypatch):
    ref, out = folders
    run_dir = tmp_path / "run"
    real_write = pq.write_table
    calls = []

    def write_table(table, where, *args, **kwargs):
        calls.append(where)
        if len(calls) == 2:
            where.write(b"PAR1 half a part")  # the open temp file of the part
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", write_table)
    with pytest.raises(WriteError) as caught:
        score_folders(ref, out, run_dir, config(shard_pairs=1), progress=False)
    message = str(caught.value)
    assert "part-00001.parquet" in message and "No space left on device" in message
    assert "--resume" in message and "\n" not in message
    assert [p.name for p in part_paths(run_dir)] == ["part-00000.parquet"]
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert not (run_dir / "manifest.json").exists()
    kept = load_results(run_dir)
    assert len(kept) == 1 and (kept.status == "ok").all()

    monkeypatch.setattr(pq, "write_table", real_write)
    result = score_folders(ref, out, run_dir, config(shard_pairs=1), resume=True, progress=False)
    assert result.complete and result.manifest["resume"] == {"reused": 1, "scored": 3}
    assert len(load_results(run_dir)) == len(NAMES)


def test_full_disk_through_the_cli_is_one_line(folders, tmp_path, monkeypatch):
    ref, out = folders

    def no_space(*_, **__):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", no_space)
    result = runner.invoke(app, ["score", str(ref), str(out), "-o", str(tmp_path / "run"), *FAST])
    one_line_error(result, 1, "No space left on device", "part-00000.parquet")


def test_existing_run_is_refused_and_left_byte_identical(folders, tmp_path):
    ref, out = folders
    run_dir = tmp_path / "run"
    args = ["score", str(ref), str(out), "-o", str(run_dir), *FAST]
    assert runner.invoke(app, args).exit_code == 0
    before = snapshot(run_dir)
    first_run = read_manifest(run_dir)["run_id"]

    (out / "camera.png").write_bytes(b"a different output now")
    refused = runner.invoke(app, args)
    one_line_error(refused, 2, "already holds a run", "--resume", "--overwrite")
    assert snapshot(run_dir) == before

    resumed = runner.invoke(app, [*args, "--resume", "--allow-failures"])
    assert resumed.exit_code == 0, resumed.output
    manifest = read_manifest(run_dir)
    assert manifest["resume"] == {"reused": 3, "scored": 1}
    after = snapshot(run_dir)  # a finished part is never changed: kept, or moved as it was to superseded/
    for name, digest in before.items():
        if name.startswith("scores/"):
            kept = after.get(name) or after.get(name.replace("scores/", "superseded/", 1))
            assert kept == digest, name
    frame = load_results(run_dir).set_index("key")
    assert frame.loc["camera", "status"] == "error" and (frame.drop(index="camera").status == "ok").all()

    replaced = runner.invoke(app, [*args, "--overwrite", "--allow-failures"])
    assert replaced.exit_code == 0, replaced.output
    manifest = read_manifest(run_dir)
    assert manifest["run_id"] != first_run and manifest["resume"] is None
    assert len(part_paths(run_dir)) == 1
    assert set(load_results(run_dir).run_id) == {manifest["run_id"]}


def test_parts_without_a_manifest_still_count_as_a_run(folders, tmp_path):
    ref, out = folders
    run_dir = tmp_path / "run"
    score_folders(ref, out, run_dir, config(), progress=False)
    (run_dir / "manifest.json").unlink()
    before = snapshot(run_dir)
    with pytest.raises(RunDirError, match="already holds a run"):
        score_folders(ref, out, run_dir, config(), progress=False)
    assert snapshot(run_dir) == before

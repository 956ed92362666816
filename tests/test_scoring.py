"""pipeline/scoring.py: `score_folders` from two folders to Parquet parts and manifest.json: error rows and
manifest lists for bad input, the Parquet layout, the same rows on every executor, run directories,
LPIPS left out when its weights are missing, resume."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from conftest import degrade, install, make_dataset, real_image, save_image, sha256_of
from PIL import Image

from pipeline.choices import Convention
from pipeline.cluster import THREADS_PER_PROCESS, available_cores
from pipeline.config import ScoreConfig
from pipeline.conventions import SPECS
from pipeline.errors import RunDirError, UsageError, WeightsError
from pipeline.manifest import read_manifest
from pipeline.results import load_results, part_metadata, part_paths
from pipeline.scoring import score_folders

PIXEL_METRICS = ("psnr", "ssim", "ms_ssim", "mse")


def make_folders(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    for i, name in enumerate(("astronaut.png", "coffee.png", "chelsea.png", "camera.png")):
        image = real_image(name)[:200, :240]
        save_image(ref / ("a" if i % 2 else "b") / f"img{i}.png", image)
        save_image(out / ("a" if i % 2 else "b") / f"img{i}.png", degrade(image, "jpeg"))
    save_image(ref / "a/missing_output.png", real_image("camera.png")[:64, :64])
    save_image(out / "b/extra_output.png", real_image("camera.png")[:64, :64])
    save_image(ref / "b/corrupt.png", real_image("camera.png")[:64, :64])
    (out / "b/corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    save_image(ref / "b/size.png", real_image("camera.png")[:64, :64])
    save_image(out / "b/size.png", real_image("camera.png")[:60, :64])
    return ref, out


def sync_config(**changes) -> ScoreConfig:
    return ScoreConfig(metrics=PIXEL_METRICS, scheduler="sync", report=False, **changes)


def test_bad_inputs_become_rows_and_entries(tmp_path):
    ref, out = make_folders(tmp_path)
    result = score_folders(ref, out, tmp_path / "run", sync_config(), progress=False)
    frame = load_results(tmp_path / "run")
    assert len(frame) == 6 and not result.complete
    errors = frame.set_index("key").loc[["b/corrupt", "b/size"], "error"]
    assert "corrupt.png" in errors["b/corrupt"]
    assert "size.png" in errors["b/size"] and "--size-mismatch" in errors["b/size"]
    manifest = read_manifest(tmp_path / "run")
    assert [m["key"] for m in manifest["missing"]] == ["a/missing_output"]
    assert [m["key"] for m in manifest["extra"]] == ["b/extra_output"]
    assert manifest["counts"] | {"ok": 4, "error": 2, "missing": 1, "extra": 1} == manifest["counts"]
    ok = frame[frame.status == "ok"]
    assert ok[["psnr", "ssim", "ms_ssim", "mse"]].notna().all().all()
    assert set(frame.group) == {"a", "b"}


def test_parquet_schema_and_metadata(tmp_path):
    ref, out = make_folders(tmp_path)
    score_folders(ref, out, tmp_path / "run", sync_config(convention="sr-paper", scale=4), progress=False)
    parts = part_paths(tmp_path / "run")
    frame = pd.read_parquet(tmp_path / "run" / "scores")
    assert list(frame.columns) == [
        "key", "group", "ref_path", "out_path", "height", "width", "depth", "channels", "bit_depth", "psnr",
        "ssim", "ms_ssim", "lpips", "mse", "status", "error", "warnings", "ref_sha256", "out_sha256",
        "seconds", "run_id",
    ]  # fmt: skip
    metadata = part_metadata(parts[0])
    assert metadata["convention"] == "sr-paper" and metadata["crop"] == 4
    assert metadata["convention_spec"] == json.loads(json.dumps(SPECS[Convention.SR_PAPER].to_dict()))
    count = duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/run/scores/*.parquet')").fetchall()[0][
        0
    ]
    assert count == len(frame)


@pytest.mark.slow
def test_local_cluster_rows_equal_sync_rows(tmp_path):
    ref, out = make_folders(tmp_path)
    score_folders(ref, out, tmp_path / "sync", sync_config(), progress=False)
    config = ScoreConfig(metrics=PIXEL_METRICS, workers=2, threads=1, report=False, shard_pairs=2)
    score_folders(ref, out, tmp_path / "dask", config, progress=False)
    a, b = load_results(tmp_path / "sync"), load_results(tmp_path / "dask")
    columns = ["key", "status", *PIXEL_METRICS, "ref_sha256", "out_sha256"]
    pd.testing.assert_frame_equal(a[columns], b[columns])


@pytest.mark.slow
def test_default_embedded_cluster_rows_equal_sync_rows(tmp_path, alex_weights):
    ref, out = make_folders(tmp_path)
    metrics = (*PIXEL_METRICS, "lpips")
    config = ScoreConfig(metrics=metrics, report=False, shard_pairs=1, lpips_weights=str(alex_weights))
    sync = ScoreConfig(metrics=metrics, report=False, scheduler="sync", lpips_weights=str(alex_weights))
    score_folders(ref, out, tmp_path / "sync", sync, progress=False)
    result = score_folders(ref, out, tmp_path / "default", config, progress=False)
    a, b = load_results(tmp_path / "sync"), load_results(tmp_path / "default")
    columns = ["key", "status", *metrics, "ref_sha256", "out_sha256"]
    pd.testing.assert_frame_equal(a[columns], b[columns])
    if available_cores() <= THREADS_PER_PROCESS:
        assert "in-process worker" in result.manifest["execution"]


def test_existing_run_is_refused_without_overwrite(tmp_path):
    ref, out = make_folders(tmp_path)
    score_folders(ref, out, tmp_path / "run", sync_config(), progress=False)
    with pytest.raises(RunDirError, match="--resume"):
        score_folders(ref, out, tmp_path / "run", sync_config(), progress=False)
    score_folders(ref, out, tmp_path / "run", sync_config(), overwrite=True, progress=False)
    assert len(part_paths(tmp_path / "run")) >= 1
    with pytest.raises(UsageError, match="inside the reference folder"):
        score_folders(ref, out, ref / "run", sync_config(), progress=False)


def test_default_metrics_without_lpips_weights_score_the_rest(tmp_path, offline, caplog):
    torch_home = offline
    ref, out = make_folders(tmp_path)
    config = ScoreConfig(scheduler="sync", report=False)
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        result = score_folders(ref, out, tmp_path / "run", config, progress=False)
    notices = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(notices) == 1 and notices == result.notices == result.manifest["notices"]
    assert "alexnet-owt-7be5be79.pth" in notices[0] and str(torch_home) in notices[0]
    assert result.manifest["metrics"] == ["psnr", "ssim", "ms_ssim", "mse"]
    explicit = ScoreConfig(metrics=("psnr", "lpips"), scheduler="sync")
    with pytest.raises(WeightsError, match=r"alexnet-owt-7be5be79\.pth"):
        score_folders(ref, out, tmp_path / "run2", explicit, progress=False)
    assert not (tmp_path / "run2" / "scores").exists()


@pytest.mark.slow
def test_manifest_counts_equal_the_parquet_rows(tmp_path):
    """Counts come from the rows written in this run (no readback)."""
    ref, out = make_folders(tmp_path)
    config = ScoreConfig(metrics=("psnr",), workers=1, report=False)
    result = score_folders(ref, out, tmp_path / "run", config, progress=False)
    frame = load_results(tmp_path / "run")
    counts = result.manifest["counts"]
    assert counts["rows"] == len(frame) == 6
    assert (counts["ok"], counts["error"]) == ((frame.status == "ok").sum(), (frame.status == "error").sum())


def test_resume_rescores_changed_files(tmp_path):
    ref, out = make_dataset(tmp_path, 4)
    config = ScoreConfig(metrics=("psnr",), scheduler="sync", report=False)
    score_folders(ref, out, tmp_path / "run", config, progress=False)
    changed = out / "g1" / "0001.png"
    Image.fromarray(degrade(real_image("camera.png")[:200, :200], "blur")).save(changed)
    result = score_folders(ref, out, tmp_path / "run", config, resume=True, progress=False)
    assert result.manifest["resume"] == {"reused": 3, "scored": 1}
    rows = load_results(tmp_path / "run")
    assert len(rows) == 4 and rows.set_index("key").loc["g1/0001", "run_id"] == result.manifest["run_id"]
    other = ScoreConfig(metrics=("psnr", "mse"), scheduler="sync", report=False)
    again = score_folders(ref, out, tmp_path / "run", other, resume=True, progress=False)
    assert again.manifest["resume"] == {"reused": 0, "scored": 4}


def test_resume_with_another_lpips_checkpoint_rescores_lpips(tmp_path, torch_home, checkpoint_store):
    ref, out = make_dataset(tmp_path, 2, size=64)

    weights = [
        install(checkpoint_store / f"alex-seed{seed}.pth", tmp_path / f"alex-{seed}.pth") for seed in (0, 1)
    ]

    def run(seed: int, run_dir: str, resume: bool) -> list[float]:
        config = ScoreConfig(
            metrics=("psnr", "lpips"), scheduler="sync", report=False, lpips_weights=str(weights[seed])
        )
        score_folders(ref, out, tmp_path / run_dir, config, resume=resume, progress=False)
        return load_results(tmp_path / run_dir)["lpips"].tolist()

    first = run(0, "run", resume=False)
    fresh = run(1, "fresh", resume=False)
    assert fresh != first
    assert run(1, "run", resume=True) == fresh


def test_resume_keys_lpips_rows_on_the_backbone_content_not_its_file_time(tmp_path, alex_weights):
    ref, out = make_dataset(tmp_path, 2, size=64)
    weights = Path(shutil.copyfile(alex_weights, tmp_path / "alex-copy.pth"))
    metrics = ("psnr", "lpips")
    config = ScoreConfig(metrics=metrics, scheduler="sync", report=False, lpips_weights=str(weights))
    first = score_folders(ref, out, tmp_path / "run", config, progress=False)
    later = weights.stat().st_mtime_ns + 10**9
    os.utime(weights, ns=(later, later))
    again = score_folders(ref, out, tmp_path / "run", config, resume=True, progress=False)
    assert again.manifest["resume"] == {"reused": 2, "scored": 0}
    assert again.manifest["config_hash"] == first.manifest["config_hash"]
    assert first.manifest["config_hash"] == config.value_hash(sha256_of(weights))

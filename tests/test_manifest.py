"""pipeline/manifest.py: what manifest.json records (counts, convention, config, versions) and reading it."""

from __future__ import annotations

import json
import platform

import pytest

from pipeline.config import validate_config
from pipeline.discover import Pair, Pairing
from pipeline.errors import RunDirError
from pipeline.manifest import (
    build_manifest,
    device_description,
    read_manifest,
    software_versions,
    write_manifest,
)
from pipeline.metrics.lpips_weights import BackboneFile


def manifest_of(tmp_path, statuses: dict[str, str], pairing: Pairing, backbone=None, **config):
    chosen = validate_config(config)
    return build_manifest(
        run_id="20260101T000000Z-abcdef",
        created="2026-01-01T00:00:00+00:00",
        ref_dir=tmp_path / "ref",
        out_dir=tmp_path / "out",
        config=chosen,
        value_hash=chosen.value_hash(),
        metrics=("psnr", "ssim"),
        backbone=backbone,
        pairing=pairing,
        statuses=statuses,
        execution={"description": "in-process (sync)", "shard_pairs": 2},
        timings={"total_s": 1.5},
        notices=["LPIPS NOT SCORED: ..."],
    )


def test_counts_come_from_the_statuses_and_the_pairing(tmp_path):
    pairing = Pairing(
        pairs=[Pair(key, "", f"r/{key}.png", f"o/{key}.png") for key in ("a", "b", "c")],
        missing=[{"key": "m", "path": "r/m.png"}],
        extra=[{"key": "x", "path": "o/x.png"}, {"key": "y", "path": "o/y.png"}],
        duplicates=[
            {"side": "reference", "key": "d", "paths": ["r/d.png", "r/d.jpg"]},
            {"side": "output", "key": "e", "paths": ["o/e.png", "o/e.jpg"]},
            {"side": "output", "key": "f", "paths": ["o/f.png", "o/f.bmp"]},
        ],
        skipped=[{"path": "r/loop", "reason": "symlink loop"}],
    )
    manifest = manifest_of(tmp_path, {"a": "ok", "b": "error", "c": "ok"}, pairing)
    assert manifest["counts"] == {
        "pairs": 3, "rows": 3, "ok": 2, "error": 1, "missing": 1, "extra": 2, "duplicates": 3,
        "duplicates_reference": 1, "skipped": 1,
    }  # fmt: skip
    assert manifest["missing"] == pairing.missing and manifest["skipped"] == pairing.skipped
    assert manifest["notices"] == ["LPIPS NOT SCORED: ..."]
    assert manifest["dashboard"] is None and manifest["shard_pairs"] == 2 and manifest["resume"] is None


def test_the_convention_config_and_hash_are_recorded(tmp_path):
    manifest = manifest_of(tmp_path, {}, Pairing(), convention="sr-paper", scale=4, metrics="psnr,ssim")
    assert manifest["convention"] == {
        "name": "sr-paper",
        "crop": 4,
        "description": "sr-paper: Y (BT.601, MATLAB rgb2ycbcr), crop 4 px, float64",
    }
    config = validate_config({"convention": "sr-paper", "scale": 4, "metrics": "psnr,ssim"})
    assert manifest["config"] == config.to_dict() and manifest["config_hash"] == config.value_hash()
    assert manifest["reference_dir"] == str((tmp_path / "ref").resolve())


def test_the_lpips_backbone_is_recorded_with_its_sha256(tmp_path):
    backbone = BackboneFile(tmp_path / "my-alexnet.pth", "ab" * 32, size=1234, mtime_ns=5678)
    manifest = manifest_of(tmp_path, {}, Pairing(), backbone=backbone, metrics="psnr,lpips")
    assert manifest["lpips_backbone"] == str(tmp_path / "my-alexnet.pth")
    assert manifest["lpips_backbone_sha256"] == "ab" * 32
    assert json.loads(json.dumps(manifest))["lpips_backbone_sha256"] == "ab" * 32
    without = manifest_of(tmp_path, {}, Pairing())
    assert without["lpips_backbone"] is None and without["lpips_backbone_sha256"] is None


def test_versions_and_device():
    versions = software_versions(("torch", "no-such-package-for-iqa"))
    assert versions["python"] == platform.python_version()
    assert versions["torch"].split(".")[0].isdigit()
    assert versions["no-such-package-for-iqa"] == "not installed"
    assert device_description("cpu") == f"cpu ({platform.machine()})"


def test_write_then_read(tmp_path):
    path = write_manifest(tmp_path, {"run_id": "r", "where": tmp_path, "counts": {"ok": 1}})
    assert path == tmp_path / "manifest.json"
    assert read_manifest(tmp_path) == {"run_id": "r", "where": str(tmp_path), "counts": {"ok": 1}}
    assert json.loads(path.read_text())["counts"] == {"ok": 1}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_missing_or_damaged_manifest_is_a_run_dir_error(tmp_path):
    with pytest.raises(RunDirError) as raised:
        read_manifest(tmp_path)
    assert str(raised.value) == (
        f"{tmp_path} is not a run directory: manifest.json is missing. Run `iqa score` first."
    )
    (tmp_path / "manifest.json").write_text('{"run_id": ')
    with pytest.raises(
        RunDirError, match=r"Cannot read .*manifest\.json: .*The run directory may be damaged"
    ):
        read_manifest(tmp_path)

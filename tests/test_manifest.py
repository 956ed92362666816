"""pipeline/manifest.py: what manifest.json records (counts, convention, config, versions) and reading it."""

from __future__ import annotations

import json
import platform

import pytest

from pipeline.choices import Convention
from pipeline.config import validate_config
from pipeline.conventions import SPECS
from pipeline.discover import Pair, Pairing, discover_pairs
from pipeline.errors import RunDirError
from pipeline.manifest import (
    build_manifest,
    device_description,
    read_manifest,
    run_complete,
    software_versions,
    write_manifest,
)
from pipeline.metrics.lpips_weights import BackboneFile


def manifest_of(tmp_path, status_counts: dict[str, int], pairing: Pairing, backbone=None, **config):
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
        status_counts=status_counts,
        execution={"description": "in-process (sync)", "shard_pairs": 2},
        timings={"total_s": 1.5},
        notices=["LPIPS NOT SCORED: ..."],
    )


def test_counts_come_from_the_status_counts_and_the_pairing(tmp_path):
    pairing = Pairing(
        pairs=[Pair(key, "", f"r/{key}.png", f"o/{key}.png") for key in ("a", "b", "c")],
        missing=[{"key": "m", "path": "r/m.png"}],
        extra=[{"key": "x", "path": "o/x.png"}, {"key": "y", "path": "o/y.png"}],
        duplicates=[
            {
                "side": "reference",
                "key": "d",
                "paths": ["r/d.png", "r/d.jpg"],
                "references": ["r/d.png", "r/d.jpg"],
            },
            {"side": "output", "key": "e", "paths": ["o/e.png", "o/e.jpg"], "references": ["r/e.png"]},
            {"side": "output", "key": "f", "paths": ["o/f.png", "o/f.bmp"], "references": []},
        ],
        skipped=[{"path": "r/loop", "reason": "symlink loop"}],
    )
    manifest = manifest_of(tmp_path, {"ok": 2, "error": 1}, pairing)
    assert manifest["counts"] == {
        "pairs": 3, "rows": 3, "ok": 2, "error": 1, "missing": 1, "extra": 2, "duplicates": 3,
        "duplicates_reference": 1, "unscored_duplicates": 2, "skipped": 1,
    }  # fmt: skip
    assert not run_complete(manifest)
    assert manifest["missing"] == pairing.missing and manifest["skipped"] == pairing.skipped
    assert manifest["notices"] == ["LPIPS NOT SCORED: ..."]
    assert manifest["dashboard"] is None and manifest["shard_pairs"] == 2 and manifest["resume"] is None


def test_the_convention_config_and_hash_are_recorded(tmp_path):
    manifest = manifest_of(tmp_path, {}, Pairing(), convention="sr-paper", scale=4, metrics="psnr,ssim")
    assert manifest["convention"] == {
        "name": "sr-paper",
        "crop": 4,
        "description": "sr-paper: Y (BT.601, MATLAB rgb2ycbcr), crop 4 px, float64",
        "spec": SPECS[Convention.SR_PAPER].to_dict(),
    }
    spec = manifest["convention"]["spec"]
    assert spec["channels"] == "bt601_y" and spec["precision"] == "float64" and spec["crop_from_scale"]
    assert spec["structural"]["window"] == {"kind": "gaussian", "size": 11, "sigma": 1.5}
    assert json.loads(json.dumps(spec))["structural"]["weights"] == list(spec["structural"]["weights"])
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


def test_versions_and_device(accelerators):
    versions = software_versions(("torch", "no-such-package-for-iqa"))
    assert versions["python"] == platform.python_version()
    assert versions["torch"].split(".")[0].isdigit()
    assert versions["no-such-package-for-iqa"] == "not installed"
    assert device_description("cpu") == f"cpu ({platform.machine()})"
    accelerators(cuda=0, mps=True)
    assert device_description("auto") == device_description("mps") == f"mps ({platform.machine()})"
    assert device_description("cpu") == f"cpu ({platform.machine()})"


def test_write_then_read(tmp_path):
    path = write_manifest(tmp_path, {"run_id": "r", "where": tmp_path, "counts": {"ok": 1}})
    assert path.path == str(tmp_path / "manifest.json")
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


def test_a_reference_whose_key_two_outputs_claim_makes_the_run_incomplete(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    for folder, names in (
        (ref, ("01.png", "02.png")),
        (out, ("01.png", "01.jpg", "02.png", "09.png", "09.jpg")),
    ):
        folder.mkdir()
        for name in names:
            (folder / name).write_bytes(b"")
    pairing = discover_pairs(ref, out)
    manifest = manifest_of(tmp_path, {"ok": 1}, pairing)
    assert manifest["counts"]["duplicates"] == 2 and manifest["counts"]["duplicates_reference"] == 0
    assert manifest["counts"]["unscored_duplicates"] == 1  # 01; 09 has no reference
    assert [d["references"] for d in manifest["duplicates"]] == [[str(ref / "01.png")], []]
    assert not run_complete(manifest)


def test_duplicate_outputs_without_a_reference_leave_the_run_complete(tmp_path):
    pairing = Pairing(
        pairs=[Pair("a", "", "r/a.png", "o/a.png")],
        duplicates=[{"side": "output", "key": "z", "paths": ["o/z.png", "o/z.jpg"], "references": []}],
    )
    assert run_complete(manifest_of(tmp_path, {"ok": 1}, pairing))


def test_an_older_manifest_without_the_unscored_count_uses_the_reference_duplicates():
    assert not run_complete({"counts": {"error": 0, "missing": 0, "duplicates_reference": 1}})
    assert run_complete({"counts": {"error": 0, "missing": 0, "duplicates_reference": 0}})


def test_hints_are_recorded_when_few_references_pair(tmp_path):
    missing = [{"key": k, "path": f"/r/{k}.png"} for k in ("01", "02")]
    extra = [{"key": f"{k}_SR", "path": f"/o/{k}_SR.png"} for k in ("01", "02")]
    manifest = manifest_of(tmp_path, {}, Pairing(missing=missing, extra=extra))
    assert manifest["hints"] == [
        "2 of 2 missing references match extra outputs named with the suffix '_SR' "
        "(e.g. /o/01_SR.png for /r/01.png): add --output-suffix _SR."
    ]
    assert manifest_of(tmp_path, {}, Pairing())["hints"] == []

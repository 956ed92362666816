"""Issue 7: usage errors exit 2 with one clear `error:` line and no traceback."""

from __future__ import annotations

import json

import pytest
from conftest import degrade, hash_named, install, one_line_error, real_image, sha256_of
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app

runner = CliRunner()
FAST = ["--metrics", "psnr", "--scheduler", "sync", "--no-report", "--no-progress"]


@pytest.fixture
def folders(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    image = real_image("camera.png")[:64, :64]
    for root, array in ((ref, image), (out, degrade(image, "noise"))):
        root.mkdir()
        Image.fromarray(array).save(root / "camera.png")
    return ref, out


def invoke(*args: str):
    return runner.invoke(app, ["score", *args])


def assert_one_error_line(result, *needles: str) -> str:
    return one_line_error(result, 2, *needles)


def test_missing_reference_folder(folders, tmp_path):
    _, out = folders
    result = invoke(str(tmp_path / "no-such-ref"), str(out), "-o", str(tmp_path / "run"), *FAST)
    assert_one_error_line(result, "Reference folder", "no-such-ref", "does not exist")


def test_missing_output_folder(folders, tmp_path):
    ref, _ = folders
    result = invoke(str(ref), str(tmp_path / "no-such-out"), "-o", str(tmp_path / "run"), *FAST)
    assert_one_error_line(result, "Output folder", "no-such-out", "does not exist")


def test_reference_given_as_a_file(folders, tmp_path):
    ref, out = folders
    result = invoke(str(ref / "camera.png"), str(out), "-o", str(tmp_path / "run"), *FAST)
    assert_one_error_line(result, "not a directory")


def test_reference_and_output_are_the_same_folder(folders, tmp_path):
    ref, _ = folders
    result = invoke(str(ref), str(ref / "." / ""), "-o", str(tmp_path / "run"), *FAST)
    assert_one_error_line(result, "same folder")


@pytest.mark.parametrize("side", ["reference", "output"])
def test_run_dir_inside_an_input_folder(folders, tmp_path, side):
    ref, out = folders
    inside = (ref if side == "reference" else out) / "results" / "run"
    result = invoke(str(ref), str(out), "-o", str(inside), *FAST)
    assert_one_error_line(result, f"inside the {side} folder", "outside both input folders")
    assert not inside.exists()


def test_run_dir_equal_to_an_input_folder(folders):
    ref, out = folders
    assert_one_error_line(invoke(str(ref), str(out), "-o", str(out), *FAST), "inside the output folder")


@pytest.mark.parametrize(("device", "name"), [("cuda", "CUDA"), ("mps", "Apple MPS")])
def test_an_accelerator_that_is_not_here(folders, tmp_path, accelerators, device, name):
    ref, out = folders
    accelerators(cuda=0, mps=False)
    result = invoke(str(ref), str(out), "-o", str(tmp_path / "run"), "--no-report", "--device", device)
    assert_one_error_line(result, f"--device {device} was asked for, but no {name} device", "--device cpu")
    assert not (tmp_path / "run").exists()


def test_unknown_metric(folders, tmp_path):
    ref, out = folders
    args = [str(ref), str(out), "-o", str(tmp_path / "run"), "--scheduler", "sync", "--metrics", "psnr,psnrr"]
    assert_one_error_line(invoke(*args), "unknown metric 'psnrr'", "psnr, ssim")


def test_unknown_convention_on_the_command_line(folders, tmp_path):
    ref, out = folders
    result = invoke(str(ref), str(out), "-o", str(tmp_path / "run"), *FAST, "--convention", "matlab-2004")
    assert result.exit_code == 2, result.output
    assert "matlab-2004" in result.output and "Traceback" not in result.output


def test_unknown_convention_in_config(folders, tmp_path):
    ref, out = folders
    config = tmp_path / "c.yaml"
    config.write_text("convention: matlab-2004\n")
    result = invoke(str(ref), str(out), "-o", str(tmp_path / "run"), *FAST, "--config", str(config))
    assert_one_error_line(result, "unknown convention 'matlab-2004'", "sr-paper")


def test_config_with_bad_yaml_names_the_line(folders, tmp_path):
    ref, out = folders
    config = tmp_path / "bad.yaml"
    config.write_text("metrics: [psnr, ssim]\nscale: 4\nconvention: [sr-paper\n")
    result = invoke(str(ref), str(out), "-o", str(tmp_path / "run"), *FAST, "--config", str(config))
    assert_one_error_line(result, "bad.yaml", "line ", "not valid YAML")


def test_config_with_unknown_key_names_line_and_key(folders, tmp_path):
    ref, out = folders
    config = tmp_path / "typo.yaml"
    config.write_text("metrics: [psnr]\nscale: 2\n\nworkerz: 3\n")
    result = invoke(str(ref), str(out), "-o", str(tmp_path / "run"), *FAST, "--config", str(config))
    assert_one_error_line(result, "typo.yaml", "line 4", "'workerz'")


def test_config_that_is_not_a_mapping(folders, tmp_path):
    ref, out = folders
    config = tmp_path / "list.yaml"
    config.write_text("- psnr\n- ssim\n")
    result = invoke(str(ref), str(out), "-o", str(tmp_path / "run"), *FAST, "--config", str(config))
    assert_one_error_line(result, "list.yaml", "mapping")


def test_missing_config_file(folders, tmp_path):
    ref, out = folders
    result = invoke(
        str(ref), str(out), "-o", str(tmp_path / "run"), *FAST, "--config", str(tmp_path / "x.yaml")
    )
    assert_one_error_line(result, "x.yaml")


def test_resume_with_overwrite(folders, tmp_path):
    ref, out = folders
    result = invoke(str(ref), str(out), "-o", str(tmp_path / "run"), *FAST, "--resume", "--overwrite")
    assert_one_error_line(result, "--resume", "--overwrite")


def test_scheduler_address_with_workers(folders, tmp_path):
    ref, out = folders
    args = [str(ref), str(out), "-o", str(tmp_path / "run"), "--metrics", "psnr", "--no-report"]
    result = invoke(*args, "--scheduler", "tcp://127.0.0.1:1", "--workers", "2")
    assert_one_error_line(result, "--workers", "--scheduler ADDRESS")


def test_scheduler_with_scheduler_file(folders, tmp_path):
    ref, out = folders
    args = [str(ref), str(out), "-o", str(tmp_path / "run"), "--metrics", "psnr", "--no-report"]
    result = invoke(*args, "--scheduler", "tcp://127.0.0.1:1", "--scheduler-file", str(tmp_path / "s.json"))
    assert_one_error_line(result, "--scheduler-file")


def test_pairs_with_missing_folder(tmp_path):
    result = runner.invoke(app, ["pairs", str(tmp_path / "a"), str(tmp_path)])
    assert_one_error_line(result, "does not exist")


# LPIPS weights: any problem stops the run before its folder is touched (issue 17)

SYNC = ["--scheduler", "sync", "--no-report", "--no-progress"]


@pytest.mark.parametrize("metrics", [["--metrics", "psnr,lpips"], []], ids=["lpips-named", "default-metrics"])
def test_cached_backbone_whose_hash_differs_from_its_name(folders, tmp_path, alex_home, no_download, metrics):
    ref, out = folders
    run = tmp_path / "run"
    result = invoke(str(ref), str(out), "-o", str(run), *SYNC, *metrics)
    actual = sha256_of(alex_home)[:8]
    assert_one_error_line(result, str(alex_home), f"sha256 starts with {actual}", "its name says 7be5be79")
    assert not run.exists()


def test_backbone_given_under_torchvision_name_with_another_hash(folders, tmp_path, alex_weights):
    ref, out = folders
    wrong = install(alex_weights, tmp_path / "weights" / "alexnet-owt-7be5be79.pth")
    result = invoke(str(ref), str(out), "-o", str(tmp_path / "run"), *SYNC, "--lpips-weights", str(wrong))
    assert_one_error_line(
        result, str(wrong), f"starts with {sha256_of(wrong)[:8]}", "7be5be79", "--lpips-weights"
    )
    assert not (tmp_path / "run").exists()


def test_backbone_named_after_its_own_hash_is_accepted(folders, tmp_path, alex_weights):
    ref, out = folders
    named = hash_named(alex_weights, tmp_path / "weights", "alexnet")
    result = invoke(str(ref), str(out), "-o", str(tmp_path / "run"), *SYNC, "--lpips-weights", str(named))
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert "lpips" in manifest["metrics"] and manifest["lpips_backbone_sha256"] == sha256_of(named)


@pytest.fixture
def truncated(checkpoint_store, tmp_path):
    path = tmp_path / "weights" / "my-alexnet.pth"
    path.parent.mkdir()
    path.write_bytes((checkpoint_store / "alex-seed0.pth").read_bytes()[:1_000_000])
    return path


def test_truncated_backbone_given_with_lpips_weights(folders, tmp_path, truncated):
    ref, out = folders
    result = invoke(str(ref), str(out), "-o", str(tmp_path / "run"), *SYNC, "--lpips-weights", str(truncated))
    assert_one_error_line(result, str(truncated), "cannot be loaded", "truncated")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_bad_backbone_leaves_an_earlier_run_alone(folders, tmp_path, truncated, flag):
    ref, out = folders
    run = tmp_path / "run"
    assert invoke(str(ref), str(out), "-o", str(run), *FAST).exit_code == 0
    before = {path: path.read_bytes() for path in run.rglob("*") if path.is_file()}
    assert run / "manifest.json" in before and any(path.suffix == ".parquet" for path in before)
    weights = ["--metrics", "psnr,lpips", "--lpips-weights", str(truncated)]
    result = invoke(str(ref), str(out), "-o", str(run), *SYNC, *weights, flag)
    assert_one_error_line(result, str(truncated), "cannot be loaded")
    assert {path: path.read_bytes() for path in run.rglob("*") if path.is_file()} == before

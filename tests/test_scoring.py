"""End-to-end scoring: conventions against independent references, rows for bad input, exit semantics."""

from __future__ import annotations

import logging
import math

import lpips as lpips_package
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PSNR_TOL, SSIM_TOL, degrade, real_image
from PIL import Image
from scipy.signal import convolve2d
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipeline.config import ScoreConfig
from pipeline.errors import RunDirError, UsageError, WeightsError
from pipeline.manifest import read_manifest
from pipeline.results import load_results, part_metadata, part_paths
from pipeline.scoring import score_folders
from pipeline.worker import PairTask, ShardSettings, score_shard

PIXEL_METRICS = ("psnr", "ssim", "ms_ssim", "mse")


# BasicSR / MATLAB convention, written out independently with numpy and scipy (DESIGN.md section 6).
def matlab_y(image: np.ndarray) -> np.ndarray:
    rgb = image.astype(np.float64)
    return 16.0 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255.0


def basicsr_prepare(image: np.ndarray, crop: int) -> np.ndarray:
    image = image[crop:-crop, crop:-crop] if crop else image
    return matlab_y(image) if image.ndim == 3 else image.astype(np.float64)


def basicsr_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else 20.0 * math.log10(255.0 / math.sqrt(mse))


def basicsr_ssim(a: np.ndarray, b: np.ndarray) -> float:
    coords = np.arange(11) - 5
    taps = np.exp(-(coords**2) / (2 * 1.5**2))
    window = np.outer(taps, taps) / np.outer(taps, taps).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def filt(x):
        return convolve2d(x, window, mode="valid")

    mu1, mu2 = filt(a), filt(b)
    s1, s2, s12 = filt(a * a) - mu1**2, filt(b * b) - mu2**2, filt(a * b) - mu1 * mu2
    ssim_map = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return str(path)


def score_arrays(tmp_path, reference, output, **settings):
    task = PairTask("k", "", write(tmp_path / "ref.png", reference), write(tmp_path / "out.png", output))
    metrics = settings.pop("metrics", PIXEL_METRICS)
    (row,) = score_shard([task], ShardSettings(metrics=metrics, **settings)).rows
    return row


@pytest.mark.parametrize(
    ("name", "kind", "scale"),
    [
        ("astronaut.png", "bicubic4", 4),
        ("coffee.png", "bicubic2", 2),
        ("chelsea.png", "jpeg", 3),
        ("camera.png", "bicubic4", 4),
        ("motorcycle_left.png", "noise", 4),
    ],
)
def test_sr_paper_matches_basicsr_formulas(tmp_path, name, kind, scale):
    reference = real_image(name)
    output = degrade(reference, kind)
    row = score_arrays(
        tmp_path, reference, output, convention="sr-paper", crop=scale, metrics=("psnr", "ssim")
    )
    a, b = basicsr_prepare(reference, scale), basicsr_prepare(output, scale)
    assert row.status == "ok", row.error
    assert abs(row.psnr - basicsr_psnr(a, b)) < PSNR_TOL
    assert abs(row.ssim - basicsr_ssim(a, b)) < SSIM_TOL


def test_sr_paper_gray_rgb_mix_is_replicated_then_converted(tmp_path):
    reference = real_image("astronaut.png")
    gray_output = np.asarray(Image.fromarray(degrade(reference, "blur")).convert("L"))
    row = score_arrays(
        tmp_path, reference, gray_output, convention="sr-paper", crop=4, metrics=("psnr", "ssim")
    )
    replicated = np.repeat(gray_output[..., None], 3, axis=2)
    a, b = basicsr_prepare(reference, 4), basicsr_prepare(replicated, 4)
    assert abs(row.psnr - basicsr_psnr(a, b)) < PSNR_TOL
    assert abs(row.ssim - basicsr_ssim(a, b)) < SSIM_TOL
    assert any("replicated" in w for w in row.warnings)


@pytest.mark.parametrize("name", ["astronaut.png", "camera.png", "chelsea.png"])
def test_default_convention_matches_skimage(tmp_path, name):
    reference = real_image(name)
    output = degrade(reference, "jpeg")
    row = score_arrays(tmp_path, reference, output)
    expected_ssim = structural_similarity(
        reference.astype(float),
        output.astype(float),
        channel_axis=2 if reference.ndim == 3 else None,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )
    assert abs(row.ssim - expected_ssim) < SSIM_TOL
    assert abs(row.psnr - peak_signal_noise_ratio(reference, output, data_range=255)) < PSNR_TOL
    assert row.bit_depth == 8 and row.channels == (3 if reference.ndim == 3 else 1)


def test_identical_pair_has_infinite_psnr(tmp_path):
    reference = real_image("coffee.png")
    row = score_arrays(tmp_path, reference, reference)
    assert row.psnr == float("inf") and row.mse == 0.0
    assert row.ssim == pytest.approx(1.0) and row.ms_ssim == pytest.approx(1.0)


def test_small_images_leave_structural_metrics_null_with_reason(tmp_path):
    tiny = real_image("camera.png")[:8, :8]
    row = score_arrays(tmp_path, tiny, tiny[::-1].copy())
    assert row.status == "ok" and row.psnr is not None
    assert row.ssim is None and row.ms_ssim is None
    assert any("11 px" in w for w in row.warnings)
    medium = real_image("camera.png")[:100, :150]
    row = score_arrays(tmp_path, medium, degrade(medium, "noise"))
    assert row.ssim is not None and row.ms_ssim is None
    assert any("ms_ssim left null" in w and "161" in w for w in row.warnings)


def test_constant_images_give_no_nan(tmp_path):
    flat = np.full((64, 64), 7, np.uint8)
    row = score_arrays(tmp_path, flat, np.full((64, 64), 9, np.uint8))
    assert all(np.isfinite(getattr(row, m)) for m in ("psnr", "ssim", "mse"))


def test_sixteen_bit_pair_uses_65535(tmp_path):
    reference = real_image("camera.png").astype(np.uint16) * 257 + 3
    output = (degrade(real_image("camera.png"), "blur").astype(np.uint16) * 257).astype(np.uint16)
    row = score_arrays(tmp_path, reference, output)
    assert row.bit_depth == 16
    assert abs(row.psnr - peak_signal_noise_ratio(reference, output, data_range=65535)) < PSNR_TOL


def make_folders(tmp_path):
    ref, out = tmp_path / "ref", tmp_path / "out"
    for i, name in enumerate(("astronaut.png", "coffee.png", "chelsea.png", "camera.png")):
        image = real_image(name)[:200, :240]
        write(ref / ("a" if i % 2 else "b") / f"img{i}.png", image)
        write(out / ("a" if i % 2 else "b") / f"img{i}.png", degrade(image, "jpeg"))
    write(ref / "a/missing_output.png", real_image("camera.png")[:64, :64])
    write(out / "b/extra_output.png", real_image("camera.png")[:64, :64])
    write(ref / "b/corrupt.png", real_image("camera.png")[:64, :64])
    (out / "b/corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    write(ref / "b/size.png", real_image("camera.png")[:64, :64])
    write(out / "b/size.png", real_image("camera.png")[:60, :64])
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
    import duckdb

    count = duckdb.sql(f"select count(*) from read_parquet('{tmp_path}/run/scores/*.parquet')").fetchall()[0][
        0
    ]
    assert count == len(frame)


def test_local_cluster_rows_equal_sync_rows(tmp_path):
    ref, out = make_folders(tmp_path)
    score_folders(ref, out, tmp_path / "sync", sync_config(), progress=False)
    config = ScoreConfig(metrics=PIXEL_METRICS, workers=2, threads=1, report=False, shard_pairs=2)
    score_folders(ref, out, tmp_path / "dask", config, progress=False)
    a, b = load_results(tmp_path / "sync"), load_results(tmp_path / "dask")
    columns = ["key", "status", *PIXEL_METRICS, "ref_sha256", "out_sha256"]
    pd.testing.assert_frame_equal(a[columns], b[columns])


def test_default_embedded_cluster_rows_equal_sync_rows(tmp_path, alex_home):
    from pipeline.cluster import THREADS_PER_PROCESS, available_cores

    ref, out = make_folders(tmp_path)
    metrics = (*PIXEL_METRICS, "lpips")
    config = ScoreConfig(metrics=metrics, report=False, shard_pairs=1, lpips_weights=str(alex_home))
    sync = ScoreConfig(metrics=metrics, report=False, scheduler="sync", lpips_weights=str(alex_home))
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


def test_lpips_through_the_pipeline_equals_lpips_package(tmp_path, alex_home):
    reference = real_image("astronaut.png")[:256, :256]
    output = degrade(reference, "jpeg")
    row = score_arrays(
        tmp_path, reference, output, metrics=("lpips",), lpips_weights=str(alex_home), device="cpu"
    )
    network = lpips_package.LPIPS(net="alex", verbose=False).eval()

    def scaled(a):
        return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 127.5 - 1

    expected = network(scaled(reference), scaled(output)).item()
    assert abs(row.lpips - expected) < 1e-5


def test_default_metrics_without_lpips_weights_score_the_rest(tmp_path, torch_home, monkeypatch, caplog):
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse_download)
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


def _refuse_download(*args, **kwargs):
    raise OSError("offline (test)")


def test_manifest_counts_equal_the_parquet_rows(tmp_path):
    """Counts come from the rows written in this run (no readback)."""
    ref, out = make_folders(tmp_path)
    config = ScoreConfig(metrics=("psnr",), workers=1, report=False)
    result = score_folders(ref, out, tmp_path / "run", config, progress=False)
    frame = load_results(tmp_path / "run")
    counts = result.manifest["counts"]
    assert counts["rows"] == len(frame) == 6
    assert (counts["ok"], counts["error"]) == ((frame.status == "ok").sum(), (frame.status == "error").sum())

"""3-D volumes through the pipeline: .npy (with --volumes) and NIfTI, parity with scikit-image's N-D SSIM."""

from __future__ import annotations

import gzip

import nibabel
import numpy as np
import pytest
from conftest import PSNR_TOL, SSIM_TOL, real_image
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.results import load_results
from pipeline.worker import PairTask, ShardSettings, score_shard


def photo_volume(depth: int = 24, size: int = 96) -> np.ndarray:
    """(D, H, W) uint8 volume of shifted crops of a real photo."""
    image = real_image("camera.png")
    return np.stack([image[100 + 3 * d : 100 + 3 * d + size, 150 : 150 + size] for d in range(depth)])


def degraded(volume: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    blurred = gaussian_filter(volume.astype(np.float64), 1.0) + rng.normal(0, 4, volume.shape)
    return np.clip(blurred, 0, 255).round().astype(np.uint8)


def expected(reference: np.ndarray, output: np.ndarray, data_range: float) -> tuple[float, float]:
    ssim = structural_similarity(
        reference.astype(np.float64),
        output.astype(np.float64),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
    )
    return peak_signal_noise_ratio(reference, output, data_range=data_range), ssim


def score(tmp_path, ref_name, out_name, **settings):
    task = PairTask("v", "", str(tmp_path / ref_name), str(tmp_path / out_name))
    (row,) = score_shard([task], ShardSettings(metrics=("psnr", "ssim", "ms_ssim", "lpips"), **settings)).rows
    return row


def test_npy_volume_matches_skimage_nd(tmp_path):
    reference, output = photo_volume(), degraded(photo_volume())
    np.save(tmp_path / "ref.npy", reference)
    np.save(tmp_path / "out.npy", output)
    row = score(tmp_path, "ref.npy", "out.npy", volumes=True)
    psnr, ssim = expected(reference, output, 255)
    assert row.status == "ok", row.error
    assert row.depth == 24 and row.height == 96 and row.width == 96
    assert abs(row.psnr - psnr) < PSNR_TOL and abs(row.ssim - ssim) < SSIM_TOL
    assert row.ms_ssim is None and row.lpips is None
    assert any("ms_ssim left null" in w for w in row.warnings)
    assert any("2-D images only" in w for w in row.warnings)


def save_nifti(path, volume: np.ndarray) -> None:
    image = nibabel.Nifti1Image(np.ascontiguousarray(volume.transpose(2, 1, 0)), affine=np.eye(4))
    data = image.to_bytes()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def test_nifti_float_volume_needs_and_uses_data_range(tmp_path):
    reference = photo_volume().astype(np.float32) / 255
    output = degraded(photo_volume()).astype(np.float32) / 255
    save_nifti(tmp_path / "ref.nii.gz", reference)
    save_nifti(tmp_path / "out.nii", output)
    row = score(tmp_path, "ref.nii.gz", "out.nii")
    assert row.status == "error" and "data range" in row.error and "ref.nii.gz" in row.error
    row = score(tmp_path, "ref.nii.gz", "out.nii", data_range=1.0)
    psnr, ssim = expected(reference, output, 1.0)
    assert row.status == "ok", row.error
    assert row.depth == 24 and row.bit_depth == 32
    assert abs(row.psnr - psnr) < PSNR_TOL and abs(row.ssim - ssim) < SSIM_TOL


def test_volume_folders_through_the_cli(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "out").mkdir()
    save_nifti(tmp_path / "ref" / "case1.nii.gz", photo_volume())
    save_nifti(tmp_path / "out" / "case1.nii.gz", degraded(photo_volume()))
    np.save(tmp_path / "ref" / "case2.npy", photo_volume())
    np.save(tmp_path / "out" / "case2.npy", degraded(photo_volume()))
    result = CliRunner().invoke(
        app,
        ["score", str(tmp_path / "ref"), str(tmp_path / "out"), "-o", str(tmp_path / "run"), "--volumes",
         "--metrics", "psnr,ssim", "--scheduler", "sync", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = load_results(tmp_path / "run").set_index("key")
    assert list(rows.index) == ["case1", "case2"] and (rows["depth"] == 24).all()
    assert rows.loc["case1", "ssim"] == pytest.approx(rows.loc["case2", "ssim"], abs=1e-12)


def test_volume_paired_with_image_is_an_error_row(tmp_path):
    np.save(tmp_path / "ref.npy", photo_volume())
    np.save(tmp_path / "out.npy", photo_volume()[0])
    row = score(tmp_path, "ref.npy", "out.npy", volumes=True)
    assert row.status == "error" and "out.npy" in row.error


def test_report_shows_the_middle_slice_of_volumes(tmp_path):
    from pipeline.html.display import ReadOptions
    from pipeline.html.pictures import PICTURE_BUDGET, PairFiles, pair_pictures

    np.save(tmp_path / "ref.npy", photo_volume())
    np.save(tmp_path / "out.npy", degraded(photo_volume()))
    files = PairFiles(str(tmp_path / "ref.npy"), str(tmp_path / "out.npy"))
    pictures = pair_pictures(files, [], ReadOptions(volume=True), PICTURE_BUDGET)
    assert [p.slot for p in pictures.wholes] == ["reference", "output", "error", "ssim"]
    assert all(p.data_uri and p.data_uri.startswith("data:image/png") for p in pictures.wholes), pictures
    assert (pictures.height, pictures.width) == photo_volume().shape[1:3]

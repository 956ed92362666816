"""The CUDA path: same values as the CPU path within DESIGN.md section 6 tolerances. Skips without CUDA."""

from __future__ import annotations

import pytest
from conftest import PSNR_TOL, SSIM_TOL, degrade, real_image
from PIL import Image

from pipeline.worker import PairTask, ShardSettings, score_shard

pytestmark = pytest.mark.gpu  # skipped without CUDA (conftest.py)


@pytest.mark.parametrize("convention", ["default", "sr-paper"])
def test_cuda_rows_equal_cpu_rows(tmp_path, convention):
    tasks = []
    for index, name in enumerate(("astronaut.png", "coffee.png", "camera.png", "chelsea.png")):
        reference = real_image(name)[:256, :256]
        Image.fromarray(reference).save(tmp_path / f"r{index}.png")
        Image.fromarray(degrade(reference, "jpeg")).save(tmp_path / f"o{index}.png")
        tasks.append(
            PairTask(f"k{index}", "", str(tmp_path / f"r{index}.png"), str(tmp_path / f"o{index}.png"))
        )
    metrics = ("psnr", "ssim", "ms_ssim", "mse")
    crop = 4 if convention == "sr-paper" else 0
    cpu = score_shard(
        tasks, ShardSettings(metrics=metrics, convention=convention, crop=crop, device="cpu")
    ).rows
    gpu = score_shard(
        tasks, ShardSettings(metrics=metrics, convention=convention, crop=crop, device="cuda")
    ).rows
    for a, b in zip(cpu, gpu, strict=True):
        assert abs(a.psnr - b.psnr) < PSNR_TOL
        assert abs(a.ssim - b.ssim) < SSIM_TOL and abs(a.ms_ssim - b.ms_ssim) < SSIM_TOL

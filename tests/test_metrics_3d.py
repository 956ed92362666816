"""3-D volumes (N, C, D, H, W): parity with scikit-image's N-D metrics and pytorch-msssim's 5-D mode.

Volumes are stacks of shifted crops of real photos, degraded with a 3-D Gaussian blur and noise.
Tolerances from DESIGN.md section 6: PSNR 1e-4 dB, SSIM and MS-SSIM 1e-5.

pytorch-msssim builds its Gaussian taps in float32; on 3-D volumes at data_range 255 that rounding alone moves
SSIM by up to ~3e-5, so the comparisons hand it the same float64 taps (`win=`), which compares the algorithm.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_msssim
import torch
from conftest import PSNR_TOL, SSIM_TOL, real_image
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipeline.metrics import ms_ssim, psnr, ssim, ssim_and_ms_ssim
from pipeline.metrics.ssim import gaussian_window, ms_ssim_min_side, ms_ssim_weights

DTYPES = [torch.float64, torch.float32]


def photo_volume(name: str, shape: tuple[int, int, int], *, step: int = 3) -> np.ndarray:
    """(D, H, W) float64 volume: slice k is the photo crop shifted by (step k, 2 k) pixels."""
    image = real_image(name).astype(np.float64)
    if image.ndim == 3:
        image = image.mean(axis=2)
    depth, height, width = shape
    slices = [image[k * step : k * step + height, 2 * k : 2 * k + width] for k in range(depth)]
    assert all(s.shape == (height, width) for s in slices)
    return np.stack(slices)


def degrade_volume(volume: np.ndarray, seed: int, *, sigma: float = 1.0, noise: float = 8.0) -> np.ndarray:
    """3-D Gaussian blur plus Gaussian noise, rounded and clipped to [0, 255]."""
    rng = np.random.default_rng(seed)
    blurred = ndimage.gaussian_filter(volume, sigma)
    return np.clip(blurred + rng.normal(0, noise, volume.shape), 0, 255).round()


def as_volume_batch(*volumes: np.ndarray, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(N, 1, D, H, W) tensor from (D, H, W) arrays."""
    return torch.from_numpy(np.stack(volumes)[:, None]).to(dtype)


def reference_window() -> torch.Tensor:
    """Our float64 taps in pytorch-msssim's 5-D window layout (1, 1, 1, 1, 11)."""
    return gaussian_window(dtype=torch.float64).view(1, 1, 1, 1, -1)


VOLUMES = {
    "camera": ("camera.png", (24, 40, 48)),
    "moon-odd": ("moon.png", (31, 37, 45)),
    "astronaut-thin": ("astronaut.png", (11, 64, 56)),
}


@pytest.fixture(scope="module", params=list(VOLUMES), ids=list(VOLUMES))
def volume_pair(request) -> tuple[np.ndarray, np.ndarray]:
    name, shape = VOLUMES[request.param]
    reference = photo_volume(name, shape)
    return reference, degrade_volume(reference, seed=len(request.param))


@pytest.mark.parametrize("dtype", DTYPES)
def test_ssim_matches_skimage_nd(volume_pair, dtype):
    reference, output = volume_pair
    expected = structural_similarity(
        reference, output, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    got = ssim(as_volume_batch(reference, dtype=dtype), as_volume_batch(output, dtype=dtype), data_range=255)
    assert got.shape == (1,)
    assert abs(got.item() - expected) < SSIM_TOL


@pytest.mark.parametrize("dtype", DTYPES)
def test_ssim_matches_pytorch_msssim_5d(volume_pair, dtype):
    reference, output = volume_pair
    second = degrade_volume(reference, seed=99, sigma=0.6, noise=4.0)
    x64 = as_volume_batch(reference, reference)
    y64 = as_volume_batch(output, second)
    expected = pytorch_msssim.ssim(x64, y64, data_range=255, size_average=False, win=reference_window())
    got = ssim(x64.to(dtype), y64.to(dtype), data_range=255)
    assert got.shape == (2,)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=SSIM_TOL)


@pytest.mark.parametrize("dtype", DTYPES)
def test_psnr_matches_skimage_nd(volume_pair, dtype):
    reference, output = volume_pair
    expected = peak_signal_noise_ratio(reference, output, data_range=255)
    got = psnr(as_volume_batch(reference, dtype=dtype), as_volume_batch(output, dtype=dtype), data_range=255)
    assert abs(got.item() - expected) < PSNR_TOL


MS_SCALES = 3


# pytorch-msssim asserts H, W > 160 whatever its `weights`; depth only needs the fewer scales' minimum.
@pytest.fixture(scope="module", params=[(41, 161, 161), (45, 165, 163)], ids=["minimal", "odd-sides"])
def ms_volume_case(request) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """(x, y, pytorch-msssim MS-SSIM with 3 scales, pytorch-msssim SSIM) on a large volume pair."""
    assert min(request.param) >= ms_ssim_min_side(MS_SCALES)
    reference = photo_volume("camera.png", request.param, step=2)
    x, y = as_volume_batch(reference), as_volume_batch(degrade_volume(reference, seed=1))
    weights = list(ms_ssim_weights(MS_SCALES))
    window = reference_window()
    expected = pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False, win=window, weights=weights)
    expected_ssim = pytorch_msssim.ssim(x, y, data_range=255, size_average=False, win=window)
    return x, y, expected.item(), expected_ssim.item()


@pytest.mark.parametrize("dtype", DTYPES)
def test_ms_ssim_three_scales_matches_pytorch_msssim_5d(ms_volume_case, dtype):
    x, y, expected, expected_ssim = ms_volume_case
    got_ssim, got = ssim_and_ms_ssim(x.to(dtype), y.to(dtype), data_range=255, scales=MS_SCALES)
    assert abs(got.item() - expected) < SSIM_TOL
    assert abs(got_ssim.item() - expected_ssim) < SSIM_TOL


def test_ms_ssim_on_a_volume_too_thin_for_the_scales_raises():
    volume = as_volume_batch(photo_volume("camera.png", (40, 64, 64)))
    with pytest.raises(ValueError, match=r"MS-SSIM with 3 scales needs every spatial side >= 41 px"):
        ms_ssim(volume, volume, data_range=255, scales=3)
    assert ms_ssim(volume, volume, data_range=255, scales=2).item() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_identical_volumes(dtype):
    volume = as_volume_batch(photo_volume("moon.png", (41, 48, 50)), dtype=dtype)
    assert ssim(volume, volume, data_range=255).item() == pytest.approx(1.0, abs=1e-6)
    assert ms_ssim(volume, volume, data_range=255, scales=3).item() == pytest.approx(1.0, abs=1e-6)
    assert psnr(volume, volume, data_range=255).item() == float("inf")


def test_volume_smaller_than_the_window_raises():
    volume = as_volume_batch(photo_volume("camera.png", (10, 32, 32)))
    with pytest.raises(ValueError, match=r"SSIM needs every spatial side >= 11 px, got \(10, 32, 32\)"):
        ssim(volume, volume, data_range=255)
    assert psnr(volume, volume, data_range=255).item() == float("inf")

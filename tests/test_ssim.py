"""SSIM and MS-SSIM: parity with scikit-image and pytorch-msssim on real photos, the strips, the pooling,
and the in-place path equal to the reference maths.

Tolerances from DESIGN.md section 6: SSIM and MS-SSIM 1e-5.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import pytorch_msssim
import torch
import torch.nn.functional as F
from conftest import PSNR_TOL, SSIM_TOL, degrade, image_batch, real_image, skimage_ssim
from skimage.metrics import peak_signal_noise_ratio

from pipeline.metrics import ms_ssim, psnr, ssim, ssim_and_ms_ssim
from pipeline.metrics.ssim import average_pool_2x, gaussian_window

ssim_module = importlib.import_module("pipeline.metrics.ssim")  # the package exports the function `ssim`


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ssim_matches_skimage(photo_pair, dtype):
    reference, output = photo_pair
    expected = skimage_ssim(reference, output, 255)
    got = ssim(image_batch(reference, dtype), image_batch(output, dtype), data_range=255).item()
    assert abs(got - expected) < SSIM_TOL


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ms_ssim_and_ssim_match_pytorch_msssim(photo_pair, dtype):
    reference, output = photo_pair
    x64, y64 = image_batch(reference, torch.float64), image_batch(output, torch.float64)
    expected_ms = pytorch_msssim.ms_ssim(x64, y64, data_range=255, size_average=False).item()
    expected_ssim = pytorch_msssim.ssim(x64, y64, data_range=255, size_average=False).item()
    got_ssim, got_ms = ssim_and_ms_ssim(
        image_batch(reference, dtype), image_batch(output, dtype), data_range=255
    )
    assert abs(got_ms.item() - expected_ms) < SSIM_TOL
    assert abs(got_ssim.item() - expected_ssim) < SSIM_TOL


@pytest.mark.parametrize("size", [(161, 161), (301, 263), (200, 333), (257, 511)])
def test_ms_ssim_odd_sizes_match_pytorch_msssim(size):
    reference = real_image("astronaut.png")[: size[0], : size[1]]
    output = degrade(reference, "jpeg")
    x, y = image_batch(reference, torch.float64), image_batch(output, torch.float64)
    expected = pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False).item()
    assert abs(ms_ssim(x, y, data_range=255).item() - expected) < SSIM_TOL


def test_batched_values_equal_one_by_one():
    names = ("astronaut.png", "coffee.png", "chelsea.png")
    refs = [real_image(n)[:256, :256] for n in names]
    outs = [degrade(r, "noise") for r in refs]
    x = torch.cat([image_batch(r, torch.float64) for r in refs])
    y = torch.cat([image_batch(o, torch.float64) for o in outs])
    batched = ms_ssim(x, y, data_range=255)
    single = torch.stack([ms_ssim(x[i : i + 1], y[i : i + 1], data_range=255)[0] for i in range(3)])
    assert batched.shape == (3,)
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-12)


def test_sixteen_bit_uses_data_range_65535():
    reference = real_image("camera.png").astype(np.uint16) * 257
    output = degrade(real_image("camera.png"), "blur").astype(np.uint16) * 257
    expected_ssim = skimage_ssim(reference, output, 65535)
    expected_psnr = peak_signal_noise_ratio(reference, output, data_range=65535)
    x, y = image_batch(reference, torch.float64), image_batch(output, torch.float64)
    assert abs(ssim(x, y, data_range=65535).item() - expected_ssim) < SSIM_TOL
    assert abs(psnr(x, y, data_range=65535).item() - expected_psnr) < PSNR_TOL


def test_strip_processing_of_large_images_gives_the_same_values(monkeypatch):
    reference = real_image("astronaut.png")
    output = degrade(reference, "noise")
    x, y = image_batch(reference, torch.float64), image_batch(output, torch.float64)
    monkeypatch.setattr(ssim_module, "CPU_STRIP_VALUES", 10**9)
    assert ssim_module._strip_rows(x, 11) >= 502
    whole = ssim_and_ms_ssim(x, y, data_range=255)
    monkeypatch.setattr(ssim_module, "CPU_STRIP_VALUES", 4 * 3 * 512 * 24)
    assert ssim_module._strip_rows(x, 11) < 502
    strips = ssim_and_ms_ssim(x, y, data_range=255)
    expected = pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False).item()
    assert abs(strips[1].item() - expected) < SSIM_TOL
    torch.testing.assert_close(strips[0], whole[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(strips[1], whole[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["astronaut.png", "camera.png"])
def test_in_place_maps_equal_the_reference_maps(name, dtype):
    """The path without gradients (one stack, in-place arithmetic, the CPU kernel) equals `_maps`."""
    reference = real_image(name)[:200, :300]
    x, y = image_batch(reference, dtype), image_batch(degrade(reference, "jpeg"), dtype)
    window = gaussian_window(dtype=dtype)
    centre = ssim_module._centre(x)
    expected = ssim_module._maps(x, y, window, 255.0, centre, with_ssim=True)
    with torch.inference_mode():
        got = ssim_module._maps_in_place(x, y, window, 255.0, centre, with_ssim=True)
    # float32: single values differ in the last bits (other summation order), their means do not
    tolerance = 5e-4 if dtype == torch.float32 else 1e-12
    for got_map, expected_map in zip(got, expected, strict=True):
        torch.testing.assert_close(got_map, expected_map, rtol=0, atol=tolerance)
        assert abs(got_map.double().mean() - expected_map.double().mean()) < 1e-6


def test_gradients_and_no_gradients_give_the_same_values():
    reference = real_image("coffee.png")[:256, :256]
    x, y = image_batch(reference, torch.float32), image_batch(degrade(reference, "blur"), torch.float32)
    with torch.inference_mode():
        plain = ssim_and_ms_ssim(x, y, data_range=255)
    differentiable = ssim_and_ms_ssim(x.clone().requires_grad_(), y, data_range=255)
    for a, b in zip(plain, differentiable, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=2e-6)


@pytest.mark.parametrize("shape", [(2, 3, 40), (2, 3, 37, 52), (1, 2, 15, 18, 21)])
def test_reference_blur_is_a_separable_gaussian(shape):
    """`blur_valid` equals filtering with the full outer-product window."""
    stack = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    window = gaussian_window()
    got = ssim_module.blur_valid(stack, window)
    spatial = len(shape) - 2
    kernel = window
    for _ in range(spatial - 1):
        kernel = kernel[..., None] * window
    convolve = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    expected = convolve(stack.flatten(0, 1)[:, None], kernel[None, None]).view(got.shape)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("shape", [(1, 2, 9), (2, 3, 16, 16), (1, 3, 17, 10), (1, 1, 5, 7, 9)])
def test_strided_pooling_equals_pytorch_msssim_pooling(shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    pool = {3: F.avg_pool1d, 4: F.avg_pool2d, 5: F.avg_pool3d}[x.dim()]
    expected = pool(x, kernel_size=2, padding=[side % 2 for side in shape[2:]])
    # summed in pairs rather than in a row: equal to the last bit of float32
    torch.testing.assert_close(average_pool_2x(x), expected, rtol=2.5e-7, atol=0)
    expected_64 = pool(x.double(), kernel_size=2, padding=[side % 2 for side in shape[2:]])
    torch.testing.assert_close(average_pool_2x(x.double()), expected_64, rtol=1e-15, atol=0)

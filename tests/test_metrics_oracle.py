"""Metric parity with third-party references on real photos: scikit-image, pytorch-msssim.

Tolerances from DESIGN.md section 6: PSNR 1e-4 dB, SSIM and MS-SSIM 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_msssim
import torch
from conftest import DEGRADATIONS, PSNR_TOL, SSIM_TOL, degrade, real_image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from pipeline.metrics import ms_ssim, psnr, ssim, ssim_and_ms_ssim

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "camera.png")


def as_batch(image: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    array = image if image.ndim == 3 else image[..., None]
    return torch.from_numpy(array.transpose(2, 0, 1).copy()).unsqueeze(0).to(dtype)


def skimage_ssim(a: np.ndarray, b: np.ndarray, data_range: float) -> float:
    return structural_similarity(
        a.astype(np.float64),
        b.astype(np.float64),
        channel_axis=2 if a.ndim == 3 else None,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=data_range,
    )


@pytest.fixture(
    scope="module", params=[(p, d) for p in PHOTOS for d in DEGRADATIONS], ids=lambda v: f"{v[0]}-{v[1]}"
)
def photo_pair(request):
    name, kind = request.param
    reference = real_image(name)
    return reference, degrade(reference, kind)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ssim_matches_skimage(photo_pair, dtype):
    reference, output = photo_pair
    expected = skimage_ssim(reference, output, 255)
    got = ssim(as_batch(reference, dtype), as_batch(output, dtype), data_range=255).item()
    assert abs(got - expected) < SSIM_TOL


def test_psnr_matches_skimage(photo_pair):
    reference, output = photo_pair
    expected = peak_signal_noise_ratio(reference, output, data_range=255)
    for dtype in (torch.float64, torch.float32):
        got = psnr(as_batch(reference, dtype), as_batch(output, dtype), data_range=255).item()
        assert abs(got - expected) < PSNR_TOL


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ms_ssim_and_ssim_match_pytorch_msssim(photo_pair, dtype):
    reference, output = photo_pair
    x64, y64 = as_batch(reference, torch.float64), as_batch(output, torch.float64)
    expected_ms = pytorch_msssim.ms_ssim(x64, y64, data_range=255, size_average=False).item()
    expected_ssim = pytorch_msssim.ssim(x64, y64, data_range=255, size_average=False).item()
    got_ssim, got_ms = ssim_and_ms_ssim(as_batch(reference, dtype), as_batch(output, dtype), data_range=255)
    assert abs(got_ms.item() - expected_ms) < SSIM_TOL
    assert abs(got_ssim.item() - expected_ssim) < SSIM_TOL


@pytest.mark.parametrize("size", [(161, 161), (301, 263), (200, 333), (257, 511)])
def test_ms_ssim_odd_sizes_match_pytorch_msssim(size):
    reference = real_image("astronaut.png")[: size[0], : size[1]]
    output = degrade(reference, "jpeg")
    x, y = as_batch(reference, torch.float64), as_batch(output, torch.float64)
    expected = pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False).item()
    assert abs(ms_ssim(x, y, data_range=255).item() - expected) < SSIM_TOL


def test_batched_values_equal_one_by_one():
    names = ("astronaut.png", "coffee.png", "chelsea.png")
    refs = [real_image(n)[:256, :256] for n in names]
    outs = [degrade(r, "noise") for r in refs]
    x = torch.cat([as_batch(r, torch.float64) for r in refs])
    y = torch.cat([as_batch(o, torch.float64) for o in outs])
    batched = ms_ssim(x, y, data_range=255)
    single = torch.stack([ms_ssim(x[i : i + 1], y[i : i + 1], data_range=255)[0] for i in range(3)])
    assert batched.shape == (3,)
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-12)


def test_sixteen_bit_uses_data_range_65535():
    reference = real_image("camera.png").astype(np.uint16) * 257
    output = degrade(real_image("camera.png"), "blur").astype(np.uint16) * 257
    expected_ssim = skimage_ssim(reference, output, 65535)
    expected_psnr = peak_signal_noise_ratio(reference, output, data_range=65535)
    x, y = as_batch(reference, torch.float64), as_batch(output, torch.float64)
    assert abs(ssim(x, y, data_range=65535).item() - expected_ssim) < SSIM_TOL
    assert abs(psnr(x, y, data_range=65535).item() - expected_psnr) < PSNR_TOL


def test_strip_processing_of_large_images_gives_the_same_values(monkeypatch):
    import importlib

    ssim_module = importlib.import_module("pipeline.metrics.ssim")
    reference = real_image("astronaut.png")
    output = degrade(reference, "noise")
    x, y = as_batch(reference, torch.float64), as_batch(output, torch.float64)
    monkeypatch.setattr(ssim_module, "CPU_STRIP_VALUES", 10**9)
    assert ssim_module._strip_rows(x, 11, ssim_module._strip_budget(x)) >= 502
    whole = ssim_and_ms_ssim(x, y, data_range=255)
    monkeypatch.setattr(ssim_module, "CPU_STRIP_VALUES", 4 * 3 * 512 * 24)
    assert ssim_module._strip_rows(x, 11, ssim_module._strip_budget(x)) < 502
    strips = ssim_and_ms_ssim(x, y, data_range=255)
    expected = pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False).item()
    assert abs(strips[1].item() - expected) < SSIM_TOL
    torch.testing.assert_close(strips[0], whole[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(strips[1], whole[1], rtol=0, atol=1e-12)


# The CPU fast paths equal the straightforward PyTorch operations they replace


@pytest.mark.parametrize("shape", [(2, 3, 40), (2, 3, 37, 52), (1, 2, 15, 18, 21)])
def test_shifted_sum_blur_equals_grouped_convolution(shape):
    import importlib

    ssim_module = importlib.import_module("pipeline.metrics.ssim")
    stack = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    window = ssim_module.gaussian_window()
    fast = ssim_module.blur_valid(stack, window)
    reference = ssim_module._grouped_conv_blur(stack, window)
    assert fast.shape == tuple([*shape[:2], *(side - 10 for side in shape[2:])])
    torch.testing.assert_close(fast, reference, rtol=0, atol=1e-13)


@pytest.mark.parametrize("shape", [(1, 12, 40, 64), (2, 4, 23, 37), (1, 1, 11, 16), (3, 2, 30, 500)])
def test_column_convolution_blur_equals_grouped_convolution(shape):
    """The CPU float32 path: vertical pass as one convolution over the columns, rows padded to LANES."""
    import importlib

    ssim_module = importlib.import_module("pipeline.metrics.ssim")
    stack = ssim_module.blur_ready_empty(shape, dtype=torch.float32, device=torch.device("cpu"))
    stack.copy_(torch.rand(shape, generator=torch.Generator().manual_seed(2)) * 255)
    assert stack.stride(2) % ssim_module.LANES == 0
    assert ssim_module._columns_fill_lanes(stack)
    window = ssim_module.gaussian_window(dtype=torch.float32)
    fast = ssim_module.blur_valid(stack, window)
    reference = ssim_module._grouped_conv_blur(stack.contiguous().double(), window.double())
    assert fast.shape == (*shape[:2], shape[2] - 10, shape[3] - 10)
    torch.testing.assert_close(fast.double(), reference, rtol=0, atol=255 * 2e-7)
    vertical = ssim_module._vertical_blur_by_columns(stack, window)
    shifted = ssim_module._shifted_sum(stack, window.tolist(), 2)
    torch.testing.assert_close(vertical, shifted, rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(1, 12, 40, 512), (2, 4, 23, 203), (1, 1, 11, 192), (1, 3, 30, 250)])
def test_lane_mixing_horizontal_pass_equals_shifted_sum(shape):
    """The CPU float32 horizontal pass as one lane-mixing convolution, on rows padded by blur_ready_empty
    (203 and 250 leave 11 and 10 columns in their last block, so the margin is a whole extra block)."""
    import importlib

    ssim_module = importlib.import_module("pipeline.metrics.ssim")
    stack = ssim_module.blur_ready_empty(shape, dtype=torch.float32, device=torch.device("cpu"))
    stack.copy_(torch.rand(shape, generator=torch.Generator().manual_seed(3)) * 255)
    window = ssim_module.gaussian_window(dtype=torch.float32)
    kernel = ssim_module.lane_mixing_kernel(window)
    assert kernel.shape == (ssim_module.LANES, ssim_module.LANES, 1, 2)
    assert ssim_module._rows_hold_lane_margin(stack, 11)
    horizontal = ssim_module._horizontal_blur_by_lanes(stack, kernel, 11)
    shifted = ssim_module._shifted_sum(stack, window.tolist(), 3)
    assert horizontal.shape == shifted.shape == (*shape[:3], shape[3] - 10)
    torch.testing.assert_close(horizontal, shifted, rtol=0, atol=255 * 1e-6)
    both = ssim_module.blur_valid(stack, window, kernel)
    reference = ssim_module._grouped_conv_blur(stack.contiguous().double(), window.double())
    torch.testing.assert_close(both.double(), reference, rtol=0, atol=255 * 2e-7)


def test_lane_mixing_reads_only_zeroed_padding_and_long_rows():
    """The padding the lane-mixing pass reads (with weight 0) is zero, so no stale NaN can leak into the
    maps; short rows, float64 and gradients keep the shifted sum."""
    import importlib

    ssim_module = importlib.import_module("pipeline.metrics.ssim")
    cpu = torch.device("cpu")
    for width in (192, 203, 250, 512):
        stack = ssim_module.blur_ready_empty([2, 3, 5, width], dtype=torch.float32, device=cpu)
        row = stack.stride(2)
        assert row >= width + ssim_module.LANES - 10 and row % ssim_module.LANES == 0
        whole_rows = stack.as_strided([2, 3, 5, row], [3 * 5 * row, 5 * row, row, 1])
        assert torch.count_nonzero(whole_rows[..., width:]) == 0
    window = ssim_module.gaussian_window(dtype=torch.float32)
    assert not ssim_module._rows_hold_lane_margin(
        ssim_module.blur_ready_empty([1, 4, 20, 128], torch.float32, cpu), 11
    )
    assert not ssim_module._rows_hold_lane_margin(torch.rand(1, 4, 20, 512), 11)  # no margin past the row
    image = torch.rand(1, 3, 64, 512)
    assert ssim_module._lane_kernel_for(image, window, False) is not None
    assert ssim_module._lane_kernel_for(image, window, True) is None
    assert ssim_module._lane_kernel_for(image.double(), window.double(), False) is None
    assert ssim_module._lane_kernel_for(image[..., :128], window, False) is None


def test_column_convolution_only_takes_stacks_it_can_read():
    import importlib

    ssim_module = importlib.import_module("pipeline.metrics.ssim")
    cpu = torch.device("cpu")
    assert not ssim_module._columns_fill_lanes(torch.rand(1, 4, 20, 37))  # row stride not a multiple of 16
    assert not ssim_module._columns_fill_lanes(torch.rand(1, 4, 20, 64, dtype=torch.float64))
    assert not ssim_module._columns_fill_lanes(torch.rand(1, 4, 20, 64)[:, ::2])  # planes not adjacent
    assert not ssim_module._columns_fill_lanes(torch.rand(1, 4, 64, 20).transpose(2, 3))
    assert ssim_module._columns_fill_lanes(torch.rand(2, 4, 20, 64))
    assert ssim_module.blur_ready_empty((1, 4, 20, 37), dtype=torch.float64, device=cpu).is_contiguous()
    assert ssim_module.blur_ready_empty((1, 4, 5, 20, 37), dtype=torch.float32, device=cpu).is_contiguous()


@pytest.mark.parametrize("shape", [(1, 2, 9), (2, 3, 16, 16), (1, 3, 17, 10), (1, 1, 5, 7, 9)])
def test_strided_pooling_equals_pytorch_msssim_pooling(shape):
    import torch.nn.functional as F

    from pipeline.metrics.ssim import average_pool_2x

    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    pool = {3: F.avg_pool1d, 4: F.avg_pool2d, 5: F.avg_pool3d}[x.dim()]
    expected = pool(x, kernel_size=2, padding=[side % 2 for side in shape[2:]])
    # summed in pairs rather than in a row: equal to the last bit of float32
    torch.testing.assert_close(average_pool_2x(x), expected, rtol=2.5e-7, atol=0)
    expected_64 = pool(x.double(), kernel_size=2, padding=[side % 2 for side in shape[2:]])
    torch.testing.assert_close(average_pool_2x(x.double()), expected_64, rtol=1e-15, atol=0)


def test_mse_in_strips_equals_the_whole_image(monkeypatch):
    import importlib

    from pipeline.metrics import mse

    psnr_module = importlib.import_module("pipeline.metrics.psnr")
    reference = real_image("coffee.png")
    x = as_batch(reference, torch.float32)
    y = as_batch(degrade(reference, "noise"), torch.float32)
    whole = mse(x, y)
    monkeypatch.setattr(psnr_module, "STRIP_VALUES", 3 * 400 * 7)
    strips = mse(x, y)
    expected = np.mean((reference.astype(np.float64) - degrade(reference, "noise")) ** 2)
    assert abs(strips.item() - expected) / expected < 1e-6
    torch.testing.assert_close(strips, whole, rtol=1e-6, atol=0)

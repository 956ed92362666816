"""The CPU kernel of SSIM's filtering equals the reference filtering; its layout keeps the padding out."""

from __future__ import annotations

import pytest
import torch

from pipeline.metrics import ssim_cpu
from pipeline.metrics.ssim import blur_valid, gaussian_window


def filled(shape: list[int], dtype: torch.dtype, seed: int) -> torch.Tensor:
    stack = ssim_cpu.new_stack(shape, dtype)
    return stack.copy_(torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 255)


@pytest.mark.parametrize(
    "shape",
    [[1, 12, 40, 512], [2, 4, 23, 203], [1, 1, 11, 16], [3, 2, 30, 37], [1, 3, 30, 250], [1, 4, 20, 64]],
)
def test_float32_images_filtered_as_lanes_equal_the_reference(shape):
    """Rows of 16 to 512 values, some leaving a partial last block (203, 250, 37)."""
    stack = filled(shape, torch.float32, 2)
    assert stack.stride(2) % ssim_cpu.LANES == 0 and ssim_cpu._laid_out_in_lanes(stack)
    window = gaussian_window(dtype=torch.float32)
    got = ssim_cpu.blur_valid(stack, window)
    expected = blur_valid(stack.contiguous().double(), window.double())
    assert got.shape == (*shape[:2], shape[2] - 10, shape[3] - 10)
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=255 * 2e-7)


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [([1, 4, 40, 52], torch.float64), ([2, 3, 15, 18, 21], torch.float32), ([1, 2, 20, 12], torch.float32)],
)
def test_other_stacks_are_filtered_as_shifted_sums(shape, dtype):
    stack = filled(shape, dtype, 0)
    assert not ssim_cpu._laid_out_in_lanes(stack)
    window = gaussian_window(dtype=dtype)
    got = ssim_cpu.blur_valid(stack, window)
    expected = blur_valid(stack.double(), window.double())
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=255 * 2e-7)


def test_vertical_pass_by_columns_equals_the_shifted_sum_exactly():
    stack = filled([1, 12, 40, 64], torch.float32, 1)
    window = gaussian_window(dtype=torch.float32)
    vertical = ssim_cpu._vertical_pass_by_columns(stack, ssim_cpu.lane_kernels(window)[0])
    shifted = ssim_cpu._shifted_sum(stack, window.tolist(), 2)
    torch.testing.assert_close(vertical, shifted, rtol=0, atol=0)


def test_row_padding_is_zeroed_and_never_in_the_result():
    """The horizontal pass reads the padding with weight 0: it must hold zeros, not stale NaN."""
    for width in (16, 192, 203, 250, 512):
        stack = ssim_cpu.new_stack([2, 3, 5, width], torch.float32)
        row = stack.stride(2)
        assert row >= width + ssim_cpu.LANES and row % ssim_cpu.LANES == 0
        whole_rows = stack.as_strided([2, 3, 5, row], [3 * 5 * row, 5 * row, row, 1])
        assert torch.count_nonzero(whole_rows[..., width:]) == 0


def test_only_stacks_laid_out_for_it_take_the_lane_path():
    assert not ssim_cpu._laid_out_in_lanes(torch.rand(1, 4, 20, 37))  # row stride not a multiple of 16
    assert not ssim_cpu._laid_out_in_lanes(torch.rand(1, 4, 20, 64))  # no margin past the row
    assert not ssim_cpu._laid_out_in_lanes(torch.rand(1, 4, 20, 64, dtype=torch.float64))
    assert not ssim_cpu._laid_out_in_lanes(ssim_cpu.new_stack([1, 8, 20, 64], torch.float32)[:, ::2])
    assert ssim_cpu.new_stack([1, 4, 20, 37], torch.float64).is_contiguous()
    assert ssim_cpu.new_stack([1, 4, 5, 20, 37], torch.float32).is_contiguous()


def test_lane_mixing_kernel_places_each_tap_once():
    window = gaussian_window(dtype=torch.float32)
    kernel = ssim_cpu.lane_mixing_kernel(window)
    assert kernel.shape == (ssim_cpu.LANES, ssim_cpu.LANES, 1, 2)
    torch.testing.assert_close(kernel.sum(dim=(1, 2, 3)), torch.full((ssim_cpu.LANES,), float(window.sum())))
    vertical, horizontal = ssim_cpu.lane_kernels(window)
    torch.testing.assert_close(horizontal, kernel, rtol=0, atol=0)
    assert ssim_cpu.lane_kernels(window)[1] is horizontal  # made once per window
    assert vertical.shape == (ssim_cpu.LANES, 1, 11, 1)

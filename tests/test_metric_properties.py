"""Hypothesis properties of the 2-D metrics: identity, symmetry, scale invariance, bounds, constant images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pipeline.metrics import mae, ms_ssim, mse, psnr, ssim
from pipeline.metrics.ssim import ms_ssim_min_side

MS_SCALES = 2
MS_SIDE = ms_ssim_min_side(MS_SCALES)
PROPERTIES = settings(max_examples=30, deadline=None, derandomize=True)
unit_pixels = st.just(0.0) | st.floats(1e-6, 1.0)  # no products that underflow
data_ranges = st.sampled_from([1.0, 255.0, 65535.0])
scale_factors = st.floats(1e-3, 1e3)


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny tensors: one intra-op thread avoids thread-pool contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@st.composite
def image_pairs(draw, min_side: int = 11, max_side: int = 18) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 (N, C, H, W) batches of equal shape with values in [0, 1]."""
    shape = (
        draw(st.integers(1, 2)),
        draw(st.sampled_from([1, 3])),
        draw(st.integers(min_side, max_side)),
        draw(st.integers(min_side, max_side)),
    )
    x = draw(arrays(np.float64, shape, elements=unit_pixels))
    y = draw(arrays(np.float64, shape, elements=unit_pixels))
    return torch.from_numpy(x), torch.from_numpy(y)


@PROPERTIES
@given(pair=image_pairs(min_side=MS_SIDE, max_side=MS_SIDE + 3), data_range=data_ranges)
def test_identity(pair, data_range):
    x = pair[0] * data_range
    n = x.shape[0]
    torch.testing.assert_close(ssim(x, x, data_range=data_range), torch.ones(n, dtype=x.dtype))
    torch.testing.assert_close(
        ms_ssim(x, x, data_range=data_range, scales=MS_SCALES), torch.ones(n, dtype=x.dtype)
    )
    assert torch.isinf(psnr(x, x, data_range=data_range)).all()
    assert (mse(x, x) == 0).all()
    assert (mae(x, x) == 0).all()


@PROPERTIES
@given(pair=image_pairs())
def test_symmetry(pair):
    x, y = pair
    torch.testing.assert_close(ssim(x, y, data_range=1.0), ssim(y, x, data_range=1.0), rtol=0, atol=1e-12)
    assert torch.equal(psnr(x, y, data_range=1.0), psnr(y, x, data_range=1.0))
    assert torch.equal(mse(x, y), mse(y, x))


@PROPERTIES
@given(pair=image_pairs(min_side=MS_SIDE, max_side=MS_SIDE + 3), factor=scale_factors, data_range=data_ranges)
def test_scaling_the_images_and_the_data_range_changes_nothing(pair, factor, data_range):
    x, y = (image * data_range for image in pair)
    kx, ky, k_range = factor * x, factor * y, factor * data_range
    torch.testing.assert_close(
        ssim(kx, ky, data_range=k_range), ssim(x, y, data_range=data_range), rtol=0, atol=1e-9
    )
    torch.testing.assert_close(
        ms_ssim(kx, ky, data_range=k_range, scales=MS_SCALES),
        ms_ssim(x, y, data_range=data_range, scales=MS_SCALES),
        rtol=0,
        atol=1e-9,
    )
    torch.testing.assert_close(
        psnr(kx, ky, data_range=k_range), psnr(x, y, data_range=data_range), rtol=0, atol=1e-9
    )


@PROPERTIES
@given(pair=image_pairs(), data_range=data_ranges)
def test_ssim_is_within_minus_one_and_one(pair, data_range):
    x, y = (image * data_range for image in pair)
    for value in (ssim(x, y, data_range=data_range), ssim(x, 1 - y, data_range=data_range)):
        assert torch.isfinite(value).all()
        assert (value >= -1).all() and (value <= 1).all()


@PROPERTIES
@given(pair=image_pairs(min_side=MS_SIDE, max_side=MS_SIDE + 3))
def test_ms_ssim_is_within_zero_and_one(pair):
    value = ms_ssim(*pair, data_range=1.0, scales=MS_SCALES)
    assert torch.isfinite(value).all()
    assert (value >= 0).all() and (value <= 1 + 1e-12).all()


@PROPERTIES
@given(
    first=unit_pixels,
    second=unit_pixels,
    side=st.integers(MS_SIDE, MS_SIDE + 3),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_constant_images_give_no_nan(first, second, side, dtype):
    x = torch.full((1, 3, side, side), first, dtype=dtype)
    y = torch.full((1, 3, side, side), second, dtype=dtype)
    ssim_value = ssim(x, y, data_range=1.0)
    ms_value = ms_ssim(x, y, data_range=1.0, scales=MS_SCALES)
    psnr_value = psnr(x, y, data_range=1.0)
    assert not torch.isnan(ssim_value).any() and not torch.isnan(ms_value).any()
    assert not torch.isnan(psnr_value).any()
    assert -1 <= ssim_value.item() <= 1 and 0 <= ms_value.item() <= 1 + 1e-6
    assert math.isinf(psnr_value.item()) == (mse(x, y).item() == 0)
    if first == second:
        assert ssim_value.item() == pytest.approx(1.0) and ms_value.item() == pytest.approx(1.0)

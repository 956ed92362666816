"""pipeline/conventions.py: what each convention does to a pair (channels, crop, precision) before the
pixel metrics see it, checked against BasicSR's rgb2ycbcr formula on real photos."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import matlab_y, real_image

from pipeline.choices import Convention
from pipeline.conventions import SPECS, crop_border, prepare_pixels, resolve_convention, rgb_to_y


def as_batch(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W) or (H, W, 3) -> (1, C, H, W) holding the stored integers."""
    tensor = torch.from_numpy(np.array(image))
    return tensor[None, None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)[None]


def test_every_convention_has_a_spec():
    assert set(SPECS) == set(Convention)
    for convention in Convention:
        assert resolve_convention(convention.value).spec is SPECS[convention]


@pytest.mark.parametrize("name", ["astronaut.png", "coffee.png", "chelsea.png"])
def test_sr_paper_y_is_basicsrs_rgb2ycbcr_on_a_real_photo(name):
    image = real_image(name)
    y = prepare_pixels(as_batch(image), resolve_convention("sr-paper"), data_range=255.0)
    assert y.shape == (1, 1, *image.shape[:2]) and y.dtype == torch.float64
    np.testing.assert_allclose(y[0, 0].numpy(), matlab_y(image), rtol=0, atol=1e-10)
    assert not np.array_equal(y[0, 0].numpy(), np.round(y[0, 0].numpy()))  # not rounded


def test_y_in_sixteen_bit_units_is_the_eight_bit_y_times_257():
    image = real_image("astronaut.png")[:64, :96]
    sixteen = as_batch(image.astype(np.int32) * 257)
    y = rgb_to_y(sixteen, data_range=65535.0, dtype=torch.float64)
    np.testing.assert_allclose(y[0, 0].numpy(), matlab_y(image) * 257, rtol=1e-12)
    white = rgb_to_y(torch.full((1, 3, 2, 2), 65535.0, dtype=torch.float64), data_range=65535.0)
    black = rgb_to_y(torch.zeros((1, 3, 2, 2), dtype=torch.float64), data_range=65535.0)
    assert white.unique().item() == pytest.approx(235 * 257) and black.unique().item() == pytest.approx(
        16 * 257
    )


def test_y_with_gradients_equals_y_without():
    image = as_batch(real_image("coffee.png")[:48, :48]).double()
    plain = rgb_to_y(image, data_range=255.0)
    tracked = image.clone().requires_grad_(True)
    y = rgb_to_y(tracked, data_range=255.0)
    torch.testing.assert_close(y.detach(), plain, rtol=0, atol=1e-12)
    y.sum().backward()
    expected = torch.tensor([65.481, 128.553, 24.966], dtype=torch.float64) / 255.0
    torch.testing.assert_close(tracked.grad[0, :, 0, 0], expected)


def test_gray_stays_gray_under_sr_paper():
    gray = real_image("camera.png")
    pixels = prepare_pixels(as_batch(gray), resolve_convention("sr-paper", crop=3), data_range=255.0)
    assert pixels.shape == (1, 1, gray.shape[0] - 6, gray.shape[1] - 6) and pixels.dtype == torch.float64
    np.testing.assert_array_equal(pixels[0, 0].numpy(), gray[3:-3, 3:-3].astype(np.float64))


def test_default_keeps_the_stored_channels_in_float32():
    image = real_image("astronaut.png")
    pixels = prepare_pixels(as_batch(image), resolve_convention("default"), data_range=255.0)
    assert pixels.dtype == torch.float32 and pixels.is_contiguous()
    np.testing.assert_array_equal(pixels[0].permute(1, 2, 0).numpy(), image.astype(np.float32))


def test_prepare_pixels_makes_a_contiguous_copy_of_a_strided_batch():
    stored = as_batch(real_image("chelsea.png"))  # a permuted (channels-last) view
    assert not stored.is_contiguous()
    pixels = prepare_pixels(stored, resolve_convention("default", crop=2), data_range=255.0)
    assert pixels.is_contiguous() and pixels.shape == (1, 3, stored.shape[2] - 4, stored.shape[3] - 4)
    torch.testing.assert_close(pixels, stored[..., 2:-2, 2:-2].float(), rtol=0, atol=0)


def test_crop_border():
    batch = torch.arange(2 * 3 * 10 * 12).view(2, 3, 10, 12)
    assert crop_border(batch, 0) is batch
    cropped = crop_border(batch, 2)
    assert cropped.shape == (2, 3, 6, 8)
    assert torch.equal(cropped, batch[:, :, 2:8, 2:10])
    volume = torch.zeros(1, 1, 4, 10, 12)
    assert crop_border(volume, 1).shape == (1, 1, 4, 8, 10)  # the depth is kept
    with pytest.raises(ValueError, match=r"Cannot crop 5 px from each border of a \(10, 12\) image"):
        crop_border(batch, 5)


@pytest.mark.parametrize(
    ("name", "crop", "description"),
    [
        ("default", 0, "default: channels as stored, crop 0 px, float32"),
        ("sr-paper", 4, "sr-paper: Y (BT.601, MATLAB rgb2ycbcr), crop 4 px, float64"),
        (Convention.SR_PAPER, 0, "sr-paper: Y (BT.601, MATLAB rgb2ycbcr), crop 0 px, float64"),
    ],
)
def test_resolve_convention_describes_itself(name, crop, description):
    resolved = resolve_convention(name, crop=crop)
    assert resolved.describe() == description
    assert resolved.crop == crop and resolved.name == Convention(name)


def test_unknown_convention_is_refused():
    with pytest.raises(ValueError, match="'ssim-2004'"):
        resolve_convention("ssim-2004")

"""Scoring conventions: which channels, which crop and which precision each metric sees.

`default`: channels as stored, no crop, float32, data range from the bit depth.
`sr-paper` (BasicSR / MATLAB, what SR papers report): PSNR, SSIM and MS-SSIM on
Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 (8-bit units, not rounded), `crop` pixels removed from each
border, float64. Gray-on-both-sides pairs are used as stored. LPIPS always sees the cropped RGB image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.errors import ConfigError
from pipeline.metrics.checks import needs_grad

Y_OFFSET = 16.0
Y_COEFFICIENTS = (65.481, 128.553, 24.966)


@dataclass(frozen=True)
class Convention:
    """How a pair is prepared before the metrics see it."""

    name: str
    luma_only: bool
    crop: int
    dtype: torch.dtype

    def describe(self) -> str:
        channels = "Y (BT.601, MATLAB rgb2ycbcr)" if self.luma_only else "channels as stored"
        return f"{self.name}: {channels}, crop {self.crop} px, {str(self.dtype).replace('torch.', '')}"


def make_convention(name: str, *, crop: int = 0) -> Convention:
    """The named convention with its border crop."""
    if name == "default":
        return Convention("default", luma_only=False, crop=crop, dtype=torch.float32)
    if name == "sr-paper":
        return Convention("sr-paper", luma_only=True, crop=crop, dtype=torch.float64)
    raise ConfigError(f"Unknown convention {name!r}: choose default or sr-paper.")


def rgb_to_y(x: Tensor, *, data_range: float, dtype: torch.dtype | None = None) -> Tensor:
    """BT.601 luma as MATLAB's rgb2ycbcr computes it, in the units of `data_range`, unrounded.

    Args:
        x: (N, 3, H, W) RGB in [0, data_range], any dtype (integers are converted channel by channel).
        dtype: result dtype (default: x's dtype if floating, else float32).

    Returns:
        (N, 1, H, W) Y in [16/255 R, 235/255 R] for R = data_range.
    """
    dtype = dtype or (x.dtype if x.is_floating_point() else torch.float32)
    if needs_grad(x):
        red, green, blue = (x[:, index : index + 1].to(dtype) for index in range(3))
        weighted = Y_COEFFICIENTS[0] * red + Y_COEFFICIENTS[1] * green + Y_COEFFICIENTS[2] * blue
        return Y_OFFSET * data_range / 255.0 + weighted / 255.0
    # One Y-sized buffer: the other channels are converted as they are added
    luma = x[:, 0:1].to(dtype, copy=True).mul_(Y_COEFFICIENTS[0])
    luma.add_(x[:, 1:2], alpha=Y_COEFFICIENTS[1]).add_(x[:, 2:3], alpha=Y_COEFFICIENTS[2])
    return luma.div_(255.0).add_(Y_OFFSET * data_range / 255.0)


def crop_border(x: Tensor, crop: int) -> Tensor:
    """Remove `crop` pixels from each spatial border of (N, C, H, W)."""
    if crop <= 0:
        return x
    if min(x.shape[-2:]) <= 2 * crop:
        raise ValueError(f"Cannot crop {crop} px from each border of a {tuple(x.shape[-2:])} image.")
    return x[..., crop:-crop, crop:-crop]


def prepare_for_pixel_metrics(x: Tensor, convention: Convention, *, data_range: float) -> Tensor:
    """Crop, cast and (for luma conventions) convert RGB to Y: (N, C, H, W) -> (N, C', H', W').

    `x` may hold the stored integers; the conversion to the convention's dtype happens after the crop.
    Without gradients the result is a contiguous (planar) copy, whatever the layout of `x` (decoded images
    arrive channels-last): the SSIM stack is filled from it about 5% faster than from channels-last.
    """
    x = crop_border(x, convention.crop)
    if convention.luma_only and x.shape[1] == 3:
        return rgb_to_y(x, data_range=data_range, dtype=convention.dtype)
    if needs_grad(x) or (x.dtype == convention.dtype and x.is_contiguous()):
        return x.to(convention.dtype)
    return torch.empty(x.shape, dtype=convention.dtype, device=x.device).copy_(x)

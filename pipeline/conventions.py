"""Scoring conventions: which channels, which crop and which precision the pixel metrics see.

Each convention is one declarative `ConventionSpec` in `SPECS`, keyed by `pipeline.choices.Convention`:

* `default`: channels as stored, no crop, float32, data range from the bit depth.
* `sr-paper` (BasicSR / MATLAB, what SR papers report): Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 in
  8-bit units, not rounded; `scale` (or `crop_border`) pixels removed from each border; float64. Gray on both
  sides is used as stored.

LPIPS always sees the cropped RGB image.

Example:
    >>> convention = resolve_convention("sr-paper", crop=4)
    >>> convention.describe()
    'sr-paper: Y (BT.601, MATLAB rgb2ycbcr), crop 4 px, float64'
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from pipeline.choices import Convention
from pipeline.metrics.checks import needs_grad

Y_OFFSET = 16.0
Y_COEFFICIENTS = (65.481, 128.553, 24.966)


@dataclass(frozen=True)
class ConventionSpec:
    """What a convention does to a pair before PSNR, SSIM and MS-SSIM see it.

    Attributes:
        luma_only: RGB becomes BT.601 Y (MATLAB's rgb2ycbcr, unrounded); gray stays as stored.
        crop_from_scale: the border crop defaults to `--scale` (else only `--crop-border` crops).
        precision: the float dtype of the computation.
        channels: how the channels are described in the manifest and the report.
    """

    luma_only: bool
    crop_from_scale: bool
    precision: torch.dtype
    channels: str


SPECS: dict[Convention, ConventionSpec] = {
    Convention.DEFAULT: ConventionSpec(False, False, torch.float32, "channels as stored"),
    Convention.SR_PAPER: ConventionSpec(True, True, torch.float64, "Y (BT.601, MATLAB rgb2ycbcr)"),
}


@dataclass(frozen=True)
class ResolvedConvention:
    """A convention with its border crop: what a worker applies to every pair."""

    name: Convention
    spec: ConventionSpec
    crop: int

    def describe(self) -> str:
        precision = str(self.spec.precision).removeprefix("torch.")
        return f"{self.name.value}: {self.spec.channels}, crop {self.crop} px, {precision}"


def resolve_convention(name: str | Convention, *, crop: int = 0) -> ResolvedConvention:
    """The named convention with its border crop (the config's `effective_crop`)."""
    convention = Convention(name)
    return ResolvedConvention(convention, SPECS[convention], crop)


def rgb_to_y(x: Tensor, *, data_range: float, dtype: torch.dtype | None = None) -> Tensor:
    """BT.601 luma as MATLAB's rgb2ycbcr computes it, in the units of `data_range`, unrounded.

    Args:
        x: (N, 3, H, W) RGB in [0, data_range], any dtype (integers are converted channel by channel).
        data_range: the peak value R.
        dtype: result dtype (default: x's dtype if floating, else float32).

    Returns:
        (N, 1, H, W) Y in [16 R / 255, 235 R / 255].

    Example:
        >>> round(float(rgb_to_y(torch.full((1, 3, 2, 2), 255.0), data_range=255.0)[0, 0, 0, 0]), 3)
        235.0
    """
    dtype = dtype or (x.dtype if x.is_floating_point() else torch.float32)
    if needs_grad(x):
        red, green, blue = (x[:, index : index + 1].to(dtype) for index in range(3))
        weighted = Y_COEFFICIENTS[0] * red + Y_COEFFICIENTS[1] * green + Y_COEFFICIENTS[2] * blue
        return Y_OFFSET * data_range / 255.0 + weighted / 255.0
    luma = x[:, 0:1].to(dtype, copy=True).mul_(Y_COEFFICIENTS[0])
    luma.add_(x[:, 1:2], alpha=Y_COEFFICIENTS[1]).add_(x[:, 2:3], alpha=Y_COEFFICIENTS[2])
    return luma.div_(255.0).add_(Y_OFFSET * data_range / 255.0)


def crop_border(x: Tensor, crop: int) -> Tensor:
    """Remove `crop` pixels from each spatial border of (N, C, H, W): -> (N, C, H - 2 crop, W - 2 crop)."""
    if crop <= 0:
        return x
    if min(x.shape[-2:]) <= 2 * crop:
        raise ValueError(f"Cannot crop {crop} px from each border of a {tuple(x.shape[-2:])} image.")
    return x[..., crop:-crop, crop:-crop]


def prepare_pixels(x: Tensor, convention: ResolvedConvention, *, data_range: float) -> Tensor:
    """Crop, cast and (for luma conventions) convert RGB to Y: (N, C, H, W) -> (N, C', H', W').

    `x` may hold the stored integers, in any layout; without gradients the result is contiguous, in the
    convention's precision: a copy, unless `x` already is such a tensor (then `x` itself).
    """
    x = crop_border(x, convention.crop)
    dtype = convention.spec.precision
    if convention.spec.luma_only and x.shape[1] == 3:
        return rgb_to_y(x, data_range=data_range, dtype=dtype)
    if needs_grad(x) or (x.dtype == dtype and x.is_contiguous()):
        return x.to(dtype)
    return torch.empty(x.shape, dtype=dtype, device=x.device).copy_(x)

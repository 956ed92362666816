"""Scoring conventions: what the pixel metrics see and how SSIM is computed, one declarative spec per name.

Each convention is one `ConventionSpec` in `SPECS`, keyed by `pipeline.choices.Convention`:

* `default`: channels as stored, no crop, float32, data range from the bit depth; SSIM as pytorch-msssim.
* `sr-paper` (alias `basicsr`; BasicSR / MATLAB, what SR papers report): Y = 16 + (65.481 R + 128.553 G +
  24.966 B) / 255 in 8-bit units, not rounded; `scale` (or `crop_border`) pixels removed from each border;
  float64. Gray on both sides is used as stored.
* `skimage-defaults`: scikit-image's `structural_similarity(a, b, data_range=R, channel_axis=-1)` and
  `peak_signal_noise_ratio(a, b, data_range=R)` with no other argument: 7x7 uniform window, sample
  covariance, the map's 3 px border left out of its mean; float64. scikit-image has no MS-SSIM: ms_ssim is
  left null, with that reason as the warning.
* `matlab`: Zhou Wang's `ssim_index.m` and `msssim.m` on MATLAB's `rgb2gray` of 8-bit RGB (rounded to
  integers); PSNR on the same gray image; float64. MS-SSIM is null below `msssim.m`'s minimum short side
  (11 x 2^(scales - 1) px; it returns -Inf there).
* `matlab-downsampled`: `matlab` with `ssim.m`'s automatic downsampling before SSIM (not MS-SSIM), its factor
  rounded as MATLAB rounds (2.5 -> 3).
* `piq`, `torchmetrics`, `pyiqa`: what `piq.psnr` / `piq.ssim` / `piq.multi_scale_ssim`, torchmetrics'
  functional `peak_signal_noise_ratio` / `structural_similarity_index_measure` /
  `multiscale_structural_similarity_index_measure`, and pyiqa's `create_metric("psnr" | "ssim" | "ms_ssim")`
  give with their default arguments on 8-bit images scaled to [0, 1] (data range 1.0 given where an
  argument takes it); each entry's comment below lists every default that matters.

LPIPS always sees the cropped RGB image (the `lpips` package; piq's and pyiqa's own LPIPS are not used).

Example:
    >>> convention = resolve_convention("sr-paper", crop=4)
    >>> convention.describe()
    'sr-paper: Y (BT.601, MATLAB rgb2ycbcr), crop 4 px, float64'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from pipeline.choices import Convention
from pipeline.errors import UsageError
from pipeline.metrics.checks import needs_grad
from pipeline.metrics.structural import StructuralSpec, Window

Y_OFFSET = 16.0
Y_COEFFICIENTS = (65.481, 128.553, 24.966)  # BT.601 Y of MATLAB's rgb2ycbcr, per 255 of the data range
MATLAB_GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)  # MATLAB's rgb2gray

YIQ_Y = (0.299, 0.587, 0.114)  # Y of YIQ, as pyiqa's rgb2yiq weighs it (float32)

Channels = Literal["stored", "bt601_y", "matlab_gray", "yiq_y"]
CHANNEL_DESCRIPTIONS = {
    "stored": "channels as stored",
    "bt601_y": "Y (BT.601, MATLAB rgb2ycbcr)",
    "matlab_gray": "gray (MATLAB rgb2gray)",
    "yiq_y": "Y of YIQ (pyiqa)",
}


@dataclass(frozen=True)
class ConventionSpec:
    """What a convention does to a pair before PSNR, SSIM and MS-SSIM see it, and how SSIM is computed.

    Attributes:
        channels: 'stored', 'bt601_y' (MATLAB's rgb2ycbcr Y, unrounded), 'matlab_gray' (rgb2gray) or
            'yiq_y' (YIQ's Y as pyiqa computes it, see `yiq_y`); the conversion applies to RGB, gray is used
            as stored.
        round_levels: the converted channel is rounded to integer levels (MATLAB's uint8 result).
        psnr_channels: what PSNR and MSE see where it differs from what SSIM and MS-SSIM see (pyiqa's
            defaults: PSNR on RGB, SSIM on Y), converted without rounding; None: the same as SSIM.
        quantize_8bit: SSIM's and MS-SSIM's input, converted or gray, is scaled to [0, 255] and rounded half
            to even, then scaled back to the data range (pyiqa's preprocess_rgb; on 8-bit gray a no-op).
        crop_from_scale: the border crop defaults to `--scale` (and a scale or a crop must be given).
        precision: the float dtype of the computation.
        structural: SSIM's and MS-SSIM's window, padding, statistics, downsampling and pyramid.
        psnr_epsilon: added to the MSE of values scaled to [0, 1] before PSNR (tools that avoid log(0)).
        users: who reports numbers this way (one line for `iqa conventions`).
        no_ms_ssim: why the named tool has no MS-SSIM, or None where it has one; when set, ms_ssim is left
            null with this reason as the warning rather than computed by a definition the tool lacks.
    """

    channels: Channels
    precision: torch.dtype
    users: str
    round_levels: bool = False
    crop_from_scale: bool = False
    structural: StructuralSpec = field(default_factory=StructuralSpec)
    psnr_epsilon: float = 0.0
    no_ms_ssim: str | None = None
    psnr_channels: Channels | None = None
    quantize_8bit: bool = False

    @property
    def channel_description(self) -> str:
        """What the metrics see: 'channels as stored', 'gray (MATLAB rgb2gray), rounded to integers', ..."""
        rounded = ", rounded to integers" if self.round_levels else ""
        rounded += ", rounded to 8-bit levels" if self.quantize_8bit else ""
        text = CHANNEL_DESCRIPTIONS[self.channels] + rounded
        if self.psnr_channels is not None and self.psnr_channels != self.channels:
            text += f"; PSNR: {CHANNEL_DESCRIPTIONS[self.psnr_channels]}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (for the manifest and the Parquet metadata)."""
        values = asdict(self)
        values["precision"] = str(self.precision).removeprefix("torch.")
        return values


MATLAB_STRUCTURAL = StructuralSpec(relu_cs=False, pyramid="matlab")

SPECS: dict[Convention, ConventionSpec] = {
    Convention.DEFAULT: ConventionSpec(
        "stored", torch.float32, "this tool's default; pytorch-msssim's ssim / ms_ssim on the stored values"
    ),
    Convention.SR_PAPER: ConventionSpec(
        "bt601_y",
        torch.float64,
        "super-resolution papers: BasicSR calculate_psnr / calculate_ssim (test_y_channel), EDSR, RCAN",
        crop_from_scale=True,
    ),
    Convention.SKIMAGE_DEFAULTS: ConventionSpec(
        "stored",
        torch.float64,
        "scikit-image structural_similarity / peak_signal_noise_ratio with defaults; many denoising papers",
        structural=StructuralSpec(
            window=Window("uniform", 7), padding="symmetric", sample_covariance=True, map_border=3
        ),
        no_ms_ssim="scikit-image has no MS-SSIM",
    ),
    Convention.MATLAB: ConventionSpec(
        "matlab_gray",
        torch.float64,
        "Zhou Wang's ssim_index.m / msssim.m on rgb2gray, as IQA databases' official results",
        round_levels=True,
        structural=MATLAB_STRUCTURAL,
    ),
    Convention.MATLAB_DOWNSAMPLED: ConventionSpec(
        "matlab_gray",
        torch.float64,
        "MATLAB's ssim.m (automatic downsampling by round(min(H, W) / 256)) on rgb2gray",
        round_levels=True,
        structural=StructuralSpec(relu_cs=False, pyramid="matlab", downsample="matlab"),
    ),
    # piq 0.8.0, defaults, x / 255 with data_range=1.0: psnr adds EPS = 1e-8 to the MSE (convert_to_greyscale
    # False: all channels); ssim average-pools both images by f = max(1, round(min(H, W) / 256)) (downsample
    # True), then an 11x11 Gaussian (sigma 1.5), 'valid', population statistics, per-channel map means, then
    # their mean; multi_scale_ssim (never downsampled): five scales, the standard weights, ReLU on each
    # channel's level values, product per channel, then the mean over channels; between scales, where either
    # side is odd, one row and one column replicated at the top and left, then 2x2 average pooling. Refuses
    # sides under 11 px (SSIM) and 161 px (MS-SSIM). piq and torchmetrics compute in their inputs' dtype:
    # with float32 inputs their own rounding moves SSIM and MS-SSIM by up to ~5e-5 on flat photos.
    Convention.PIQ: ConventionSpec(
        "stored",
        torch.float64,
        "piq psnr / ssim / multi_scale_ssim with defaults on [0, 1] inputs (SSIM average-pooled first)",
        structural=StructuralSpec(downsample="average_pool", pyramid="replicate_pool"),
        psnr_epsilon=1e-8,
    ),
    # torchmetrics >= 1.4.2 (1.9.0 verified; earlier versions also cropped 5 px from the SSIM map), functional
    # API, x / 255 with data_range=1.0 (PSNR requires it; SSIM's default None
    # would take max - min of the batch instead): PSNR 10 log10(R^2 / MSE), no epsilon (dim=None: one
    # image's MSE when called per pair); SSIM: 11x11 Gaussian (int(3.5 sigma + 0.5) * 2 + 1 taps, sigma
    # 1.5), both images reflect-padded by 5 px (torch's 'reflect', edge not repeated), population statistics
    # with the variances clamped at 0, the mean of the whole map over pixels and channels (nothing cropped);
    # MS-SSIM (normalize='relu'): per scale the whole SSIM map's mean and the cs map's mean with 5 px cropped
    # from each border, each over pixels and channels together, ReLU, then the product of the powers; between
    # scales 2x2 average pooling (an odd side's last row or column dropped); refuses sides under 176 px.
    Convention.TORCHMETRICS: ConventionSpec(
        "stored",
        torch.float64,
        "torchmetrics functional PSNR / SSIM / MS-SSIM, data_range=1.0 on [0, 1] inputs (reflect padding)",
        structural=StructuralSpec(
            padding="reflect",
            cs_border=5,
            clamp_variances=True,
            pyramid="average_pool",
            channel_pooling="before_product",
        ),
    ),
    # pyiqa 0.1.16, create_metric defaults on [0, 1] float32 inputs: 'psnr' (test_y_channel False) on the RGB
    # channels, 10 log10(1 / (MSE + 1e-8)); 'ssim' and 'ms_ssim' (test_y_channel True, color_space 'yiq',
    # downsample False) on YIQ's Y = 0.299 R + 0.587 G + 0.114 B computed in float32, times 255 and rounded
    # half to even (gray: times 255, rounded), in float64 with data range 255: 11x11 Gaussian (sigma 1.5),
    # 'valid', population statistics, the cs map clamped at 0 pixel by pixel (SSIM map = luminance x that
    # cs map), the map's mean; MS-SSIM: five scales, the standard weights, each level's mean over pixels
    # and channels, no further clamp, zero-padded 2x2 average pooling between scales (as pytorch-msssim).
    # pyiqa's window taps are float32 (fspecial(...).float()): it differs from this spec by < 1e-6.
    Convention.PYIQA: ConventionSpec(
        "yiq_y",
        torch.float64,
        "pyiqa create_metric('psnr' / 'ssim' / 'ms_ssim') defaults: PSNR on RGB, SSIM on rounded YIQ Y",
        structural=StructuralSpec(relu_cs=False, relu_cs_map=True, channel_pooling="before_product"),
        psnr_epsilon=1e-8,
        psnr_channels="stored",
        quantize_8bit=True,
    ),
}


def flat_spec(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A recorded spec (`ConventionSpec.to_dict()`, or a manifest's JSON) with nested fields as dotted keys.

    Example:
        >>> flat_spec({"channels": "stored", "structural": {"window": {"size": 7}}})
        {'channels': 'stored', 'structural.window.size': 7}
    """
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat.update(flat_spec(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass(frozen=True)
class ResolvedConvention:
    """A convention with its border crop: what a worker applies to every pair."""

    name: Convention
    spec: ConventionSpec
    crop: int

    def describe(self) -> str:
        precision = str(self.spec.precision).removeprefix("torch.")
        return f"{self.name.value}: {self.spec.channel_description}, crop {self.crop} px, {precision}"


def convention_named(name: str) -> Convention:
    """The convention called `name` (or one of its other names, e.g. 'basicsr').

    Raises:
        UsageError: no convention has that name (the message lists every name).

    Example:
        >>> convention_named("basicsr").value
        'sr-paper'
    """
    try:
        convention = Convention(name)
    except ValueError:
        convention = None
    if convention not in SPECS:
        names = ", ".join(known.value for known in SPECS)
        raise UsageError(f"Unknown convention {name!r}. Conventions: {names}.")
    return convention


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


def matlab_gray(x: Tensor, *, dtype: torch.dtype | None = None, round_levels: bool = True) -> Tensor:
    """MATLAB's rgb2gray: 0.298936021293775 R + 0.587043074451121 G + 0.114020904255103 B, rounded to
    integers as MATLAB rounds a uint8 result (half away from zero) when `round_levels`.

    Args:
        x: (N, 3, H, W) RGB in stored units, any dtype.

    Returns:
        (N, 1, H, W) in `dtype` (default: x's dtype if floating, else float64).

    Example:
        >>> matlab_gray(torch.tensor([[[[255]], [[0]], [[0]]]], dtype=torch.uint8))
        tensor([[[[76.]]]], dtype=torch.float64)
    """
    dtype = dtype or (x.dtype if x.is_floating_point() else torch.float64)
    weights = torch.tensor(MATLAB_GRAY, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    gray = (x.to(torch.float64) * weights).sum(dim=1, keepdim=True)
    if round_levels:
        gray = torch.floor(gray + 0.5)
    return gray.to(dtype)


def yiq_y(x: Tensor, *, data_range: float) -> Tensor:
    """YIQ's Y as pyiqa's `rgb2yiq` computes it from float32 inputs in [0, 1]: (x / R in float32) weighed by
    0.299, 0.587, 0.114 in float32 (its float32 rounding decides the ties of a later rounding).

    Args:
        x: (N, 3, H, W) RGB in [0, data_range], any dtype.

    Returns:
        (N, 1, H, W) float32 Y in [0, 1].

    Example:
        >>> yiq_y(torch.tensor([[[[255]], [[255]], [[0]]]], dtype=torch.uint8), data_range=255.0)
        tensor([[[[0.8860]]]])
    """
    unit = x.to(torch.float32) / float(data_range)  # as a user's `x.float() / 255`
    weights = torch.tensor(YIQ_Y, dtype=torch.float32, device=x.device)
    return unit[:, 0:1] * weights[0] + unit[:, 1:2] * weights[1] + unit[:, 2:3] * weights[2]


def prepare_pixels(
    x: Tensor, convention: ResolvedConvention, *, data_range: float, for_psnr: bool = False
) -> Tensor:
    """Crop, cast and convert the channels the convention's metrics see: (N, C, H, W) -> (N, C', H', W').

    `x` may hold the stored integers, in any layout; without gradients the result is contiguous, in the
    convention's precision: a copy, unless `x` already is such a tensor (then `x` itself). `for_psnr`: what
    PSNR and MSE see (the spec's `psnr_channels`, where given) rather than SSIM and MS-SSIM.
    """
    x = crop_border(x, convention.crop)
    spec = convention.spec
    dtype = spec.precision
    if for_psnr and spec.psnr_channels is not None:
        return _converted(x, spec.psnr_channels, dtype, data_range, round_levels=False)
    if spec.quantize_8bit:
        unit = yiq_y(x, data_range=data_range) if spec.channels == "yiq_y" and x.shape[1] == 3 else None
        unit = x.to(torch.float32) / float(data_range) if unit is None else unit
        return (unit * 255).round().to(dtype) * (data_range / 255.0)
    return _converted(x, spec.channels, dtype, data_range, round_levels=spec.round_levels)


def _converted(
    x: Tensor, channels: Channels, dtype: torch.dtype, data_range: float, *, round_levels: bool
) -> Tensor:
    """`channels` of (N, C, H, W) in `dtype` (RGB converted, anything else as stored)."""
    if channels == "bt601_y" and x.shape[1] == 3:
        return _rounded(rgb_to_y(x, data_range=data_range, dtype=dtype), round_levels)
    if channels == "matlab_gray" and x.shape[1] == 3:
        return matlab_gray(x, dtype=dtype, round_levels=round_levels)
    if channels == "yiq_y" and x.shape[1] == 3:
        return _rounded(yiq_y(x, data_range=data_range).to(dtype) * data_range, round_levels)
    if needs_grad(x) or (x.dtype == dtype and x.is_contiguous()):
        return x.to(dtype)
    return torch.empty(x.shape, dtype=dtype, device=x.device).copy_(x)


def _rounded(x: Tensor, round_levels: bool) -> Tensor:
    return torch.floor(x + 0.5) if round_levels else x

"""SSIM and MS-SSIM as any tool computes them: window, padding, statistics, downsampling and pooling as data.

`pipeline.metrics.ssim` is one definition (11-tap Gaussian, sigma 1.5, 'valid' filtering, population
statistics, pytorch-msssim's pyramid), made fast. Tools and papers differ in each of those choices; a
`StructuralSpec` names them, and `structural_similarity` computes SSIM and MS-SSIM under it, plainly and in
the dtype of its inputs (the conventions use float64). `pipeline.conventions` holds one spec per named
convention.

For every pixel p of the filtered maps (w the window, * filtering):

    mu_x = w * x,  sigma_x^2 = w * x^2 - mu_x^2 (times n / (n - 1) with sample statistics), likewise y, xy
    SSIM map = (2 mu_x mu_y + C1) (2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1) (sigma_x^2 + sigma_y^2 + C2))
    cs map = (2 sigma_xy + C2) / (sigma_x^2 + sigma_y^2 + C2)

The map's mean (after removing `map_border` px on each side) is taken per channel, then over the channels.

Example:
    >>> x = torch.rand(1, 1, 64, 64, dtype=torch.float64)
    >>> spec = StructuralSpec(window=Window("uniform", 7), padding="symmetric", sample_covariance=True,
    ...                       map_border=3)
    >>> ssim_value, _ = structural_similarity(x, x, spec, data_range=1.0, with_ms_ssim=False)
    >>> ssim_value
    tensor([1.], dtype=torch.float64)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.metrics import ssim_cpu
from pipeline.metrics.checks import check_data_range, check_pair
from pipeline.metrics.ssim import gaussian_window

Padding = Literal["valid", "symmetric", "reflect", "replicate", "zeros"]
Downsample = Literal["none", "matlab", "average_pool"]
Pyramid = Literal["zero_padded_pool", "matlab", "average_pool", "replicate_pool"]
ChannelPooling = Literal["after_product", "before_product"]
Rounding = Literal["half_even", "half_away"]
STANDARD_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@dataclass(frozen=True)
class Window:
    """The filtering window: a normalised Gaussian of `size` taps and `sigma`, or a uniform (box) window."""

    kind: Literal["gaussian", "uniform"]
    size: int
    sigma: float = 1.5

    def taps(self, dtype: torch.dtype, device: torch.device | str = "cpu") -> Tensor:
        """(size,) 1-D taps summing to 1; the window is their outer product.

        Example:
            >>> Window("uniform", 4).taps(torch.float64)
            tensor([0.2500, 0.2500, 0.2500, 0.2500], dtype=torch.float64)
        """
        if self.kind == "uniform":
            return torch.full((self.size,), 1.0 / self.size, dtype=dtype, device=device)
        return gaussian_window(self.size, self.sigma, dtype=dtype, device=device)

    def describe(self) -> str:
        side = f"{self.size}x{self.size}"
        return f"{side} Gaussian, sigma {self.sigma:g}" if self.kind == "gaussian" else f"{side} uniform"


@dataclass(frozen=True)
class StructuralSpec:
    """Every choice that makes one tool's SSIM and MS-SSIM differ from another's.

    Attributes:
        window: the filtering window.
        padding: 'valid' filters only where the window fits (the map is smaller than the image); the others
            filter the whole image, extending it by that rule: 'symmetric' repeats the edge pixel (MATLAB's
            'symmetric', scipy.ndimage's 'reflect'), 'reflect' does not (torch's and numpy's 'reflect'),
            'replicate' repeats the edge value, 'zeros' pads with 0.
        map_border: px removed from each border of the SSIM map (and of the cs map, unless `cs_border` is
            given) before its mean.
        cs_border: px removed from each border of the cs map, where it differs from `map_border`
            (torchmetrics crops only the cs map); None: `map_border`.
        sample_covariance: variances and covariance times n / (n - 1), n the window's pixel count.
        clamp_variances: the variances (not the covariance) are clamped at 0 (torchmetrics; only rounding
            makes them negative, so in float64 this changes nothing measurable).
        relu_cs_map: the cs map is clamped at 0 pixel by pixel, and the SSIM map is the luminance term times
            that clamped map (pyiqa).
        k1, k2: C1 = (k1 R)^2, C2 = (k2 R)^2 for the data range R.
        downsample: before SSIM (not MS-SSIM), shrink both images by f = max(1, round(min(H, W) / 256)):
            'matlab' as `ssim.m` (MATLAB's round, halves away from zero; f x f mean, symmetric 'same'
            filtering, every f-th pixel), 'average_pool' as piq (Python's round, halves to even;
            `F.avg_pool2d(kernel_size=f)`).
        pyramid: MS-SSIM's 2x reduction between scales: 'zero_padded_pool' (pytorch-msssim: 2x2 average
            pooling, odd sides zero-padded at both ends), 'matlab' (`msssim.m`: 2x2 mean, symmetric 'same'
            filtering, every second pixel), 'average_pool' (2x2 average pooling, an odd side's last row or
            column dropped), 'replicate_pool' (piq: where either side is odd, one row and one column repeated
            at the top and the left, then 2x2 average pooling).
        relu_cs: MS-SSIM clamps each scale's mean cs (and the last scale's SSIM) at 0 before the powers.
        weights: MS-SSIM's scale weights.
        channel_pooling: MS-SSIM of a multi-channel image: 'after_product' (the product of powers per
            channel, then the mean over channels: pytorch-msssim, piq) or 'before_product' (each scale's value
            averaged over the channels first, then clamped and raised: torchmetrics, pyiqa).
    """

    window: Window = field(default_factory=lambda: Window("gaussian", 11, 1.5))
    padding: Padding = "valid"
    map_border: int = 0
    sample_covariance: bool = False
    k1: float = 0.01
    k2: float = 0.03
    downsample: Downsample = "none"
    pyramid: Pyramid = "zero_padded_pool"
    relu_cs: bool = True
    weights: tuple[float, ...] = STANDARD_WEIGHTS
    cs_border: int | None = None
    clamp_variances: bool = False
    relu_cs_map: bool = False
    channel_pooling: ChannelPooling = "after_product"

    def describe(self) -> str:
        """One phrase: window, filtering, statistics.

        Example:
            >>> StructuralSpec().describe()
            '11x11 Gaussian, sigma 1.5, valid, population statistics'
        """
        statistics = "sample" if self.sample_covariance else "population"
        parts = [self.window.describe(), self.padding, f"{statistics} statistics"]
        if self.downsample != "none":
            parts.append(f"{self.downsample} downsampling")
        return ", ".join(parts)


def filter_same_or_valid(stack: Tensor, taps: Tensor, padding: Padding) -> Tensor:
    """Separable filtering of every channel of (N, K, H, W) with the outer product of `taps`.

    Returns:
        (N, K, H - S + 1, W - S + 1) for 'valid', else (N, K, H, W) for an odd number S of taps (an even S
        places the window's centre at tap S / 2 - 1, as MATLAB's `imfilter` does).

    Example:
        >>> filter_same_or_valid(torch.ones(1, 1, 8, 8), torch.full((3,), 1 / 3), "zeros")[0, 0, 0, :3]
        tensor([0.4444, 0.6667, 0.6667])
    """
    size = taps.numel()
    if padding != "valid":
        before, after = (size - 1) // 2, size // 2
        stack = _extend(stack, before, after, padding)
    if stack.device.type == "cpu" and stack.dtype == torch.float64:
        return ssim_cpu.blur_valid(stack, taps)  # sums of shifted views: 1.7x torch's float64 convolution
    channels = stack.shape[1]
    vertical = taps.view(1, 1, size, 1).expand(channels, 1, size, 1)
    horizontal = taps.view(1, 1, 1, size).expand(channels, 1, 1, size)
    return F.conv2d(F.conv2d(stack, vertical, groups=channels), horizontal, groups=channels)


def _extend(x: Tensor, before: int, after: int, padding: Padding) -> Tensor:
    """x with `before` rows / columns added at the top / left and `after` at the bottom / right."""
    if padding == "symmetric":
        return _symmetric(_symmetric(x, before, after, dim=2), before, after, dim=3)
    mode = {"reflect": "reflect", "replicate": "replicate", "zeros": "constant"}[padding]
    return F.pad(x, (before, after, before, after), mode=mode)


def _symmetric(x: Tensor, before: int, after: int, dim: int) -> Tensor:
    """Mirror `before` / `after` lines at the ends of `dim`, the edge line repeated (MATLAB's 'symmetric')."""
    head = x.narrow(dim, 0, before).flip(dim) if before else x.narrow(dim, 0, 0)
    tail = x.narrow(dim, x.shape[dim] - after, after).flip(dim) if after else x.narrow(dim, 0, 0)
    return torch.cat([head, x, tail], dim=dim)


def _maps(x: Tensor, y: Tensor, spec: StructuralSpec, data_range: float) -> tuple[Tensor, Tensor]:
    """(SSIM map, cs map), each (N, C, H', W') with its border (`map_border`, `cs_border`) removed."""
    c1, c2 = (spec.k1 * data_range) ** 2, (spec.k2 * data_range) ** 2
    channels = x.shape[1]
    taps = spec.window.taps(x.dtype, x.device)
    filtered = filter_same_or_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), taps, spec.padding)
    mu_x, mu_y, xx, yy, xy = filtered.split(channels, dim=1)
    scale = 1.0
    if spec.sample_covariance:
        count = spec.window.size**2
        scale = count / (count - 1)
    var_x, var_y = scale * (xx - mu_x * mu_x), scale * (yy - mu_y * mu_y)
    if spec.clamp_variances:
        var_x, var_y = var_x.clamp(min=0), var_y.clamp(min=0)
    covariance = scale * (xy - mu_x * mu_y)
    cs_map = (2 * covariance + c2) / (var_x + var_y + c2)
    if spec.relu_cs_map:
        cs_map = torch.relu(cs_map)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    cs_border = spec.map_border if spec.cs_border is None else spec.cs_border
    return _inner(luminance * cs_map, spec.map_border), _inner(cs_map, cs_border)


def _inner(image: Tensor, border: int) -> Tensor:
    """(..., H, W) without `border` px on each side: (..., H - 2 border, W - 2 border)."""
    return image[..., border:-border, border:-border] if border else image


def downsample_factor(height: int, width: int, *, rounding: Rounding = "half_even") -> int:
    """f = max(1, round(min(H, W) / 256)), the automatic downsampling factor of MATLAB's `ssim.m` and piq.

    Args:
        height, width: the image's sides.
        rounding: how a half rounds: 'half_even' as Python's `round` (piq), 'half_away' as MATLAB's `round`
            (`ssim.m`); they differ where min(H, W) / 256 is 2.5, 4.5, ... (a short side of 640, 1152, ...).

    Example:
        >>> downsample_factor(640, 701), downsample_factor(640, 701, rounding="half_away")
        (2, 3)
    """
    ratio = min(height, width) / 256
    rounded = math.floor(ratio + 0.5) if rounding == "half_away" else round(ratio)
    return max(1, rounded)


def _downsample(x: Tensor, how: Downsample) -> Tensor:
    """`ssim.m`'s ('matlab') or piq's ('average_pool') automatic downsampling of (N, C, H, W)."""
    rounding: Rounding = "half_away" if how == "matlab" else "half_even"
    factor = downsample_factor(x.shape[-2], x.shape[-1], rounding=rounding)
    if how == "none" or factor == 1:
        return x
    if how == "average_pool":
        return F.avg_pool2d(x, kernel_size=factor)
    taps = torch.full((factor,), 1.0 / factor, dtype=x.dtype, device=x.device)
    return filter_same_or_valid(x, taps, "symmetric")[..., ::factor, ::factor]


def _halve(x: Tensor, pyramid: Pyramid) -> Tensor:
    """One 2x reduction of MS-SSIM's pyramid."""
    if pyramid == "average_pool":
        return F.avg_pool2d(x, kernel_size=2)
    if pyramid == "matlab":
        taps = torch.full((2,), 0.5, dtype=x.dtype, device=x.device)
        return filter_same_or_valid(x, taps, "symmetric")[..., ::2, ::2]
    if pyramid == "replicate_pool":
        odd = max(x.shape[-2] % 2, x.shape[-1] % 2)
        return F.avg_pool2d(F.pad(x, (odd, 0, odd, 0), mode="replicate"), kernel_size=2)
    padding = [x.shape[-2] % 2, x.shape[-1] % 2]
    return F.avg_pool2d(x, kernel_size=2, padding=padding)


def structural_similarity(
    x: Tensor,
    y: Tensor,
    spec: StructuralSpec,
    *,
    data_range: float,
    with_ms_ssim: bool = True,
    scales: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """SSIM and MS-SSIM per image under `spec`.

    Args:
        x, y: (N, C, H, W) floats in [0, data_range].
        spec: the tool's choices.
        data_range: the peak value R.
        with_ms_ssim: also compute MS-SSIM (needs sides large enough for `scales` levels).
        scales: MS-SSIM levels (default: as many as `spec.weights`; fewer renormalise the first weights).

    Returns:
        ((N,) SSIM, (N,) MS-SSIM or None).

    Example:
        >>> x = torch.rand(2, 3, 192, 192, dtype=torch.float64)
        >>> ssim_value, ms_value = structural_similarity(x, x, StructuralSpec(), data_range=1.0)
        >>> ssim_value, ms_value
        (tensor([1., 1.], dtype=torch.float64), tensor([1., 1.], dtype=torch.float64))
    """
    check_pair(x, y)
    data_range = check_data_range(data_range)
    ssim_map, _ = _maps(_downsample(x, spec.downsample), _downsample(y, spec.downsample), spec, data_range)
    ssim_value = ssim_map.mean(dim=(2, 3)).mean(dim=1)
    if not with_ms_ssim:
        return ssim_value, None
    return ssim_value, _ms_ssim(x, y, spec, data_range, scales or len(spec.weights))


def _ms_ssim(x: Tensor, y: Tensor, spec: StructuralSpec, data_range: float, scales: int) -> Tensor:
    """(N,) MS-SSIM of (N, C, H, W) pairs: per level the mean cs (the last level's mean SSIM), pooled over
    the channels before or after the product of their powers."""
    weights = spec.weights[:scales]
    if scales != len(spec.weights):
        weights = tuple(w / sum(weights) for w in weights)
    before = spec.channel_pooling == "before_product"
    levels = []
    for level in range(scales):
        ssim_map, cs_map = _maps(x, y, spec, data_range)
        last = level == scales - 1
        value = (ssim_map if last else cs_map).mean(dim=(2, 3))  # (N, C)
        value = value.mean(dim=1, keepdim=True) if before else value
        levels.append(torch.relu(value) if spec.relu_cs else value)
        if not last:
            x, y = _halve(x, spec.pyramid), _halve(y, spec.pyramid)
    powers = torch.stack([level**weight for level, weight in zip(levels, weights, strict=True)])
    return torch.prod(powers, dim=0).mean(dim=1)


def min_side(spec: StructuralSpec, scales: int = 1) -> int:
    """The smallest image side for which each of `scales` levels has at least one map pixel under `spec`
    (for MS-SSIM, every level must hold both its SSIM and its cs map), and the padding fits; with the
    'matlab' pyramid, also what `msssim.m` accepts (short side / 2^(scales - 1) >= window size; it returns
    -Inf below).

    Example:
        >>> min_side(StructuralSpec(), 5), min_side(StructuralSpec(pyramid="average_pool"), 5)
        (161, 176)
        >>> min_side(StructuralSpec(pyramid="matlab"), 5), min_side(StructuralSpec(pyramid="matlab"))
        (176, 11)
    """
    border = spec.map_border
    if scales > 1 and spec.cs_border is not None:
        border = max(border, spec.cs_border)
    if spec.padding == "valid":
        per_level = spec.window.size + 2 * border
    else:
        per_level = max(_padding_fits(spec), 1 + 2 * border)
    growth = 2 ** (scales - 1)
    if spec.pyramid == "average_pool":
        return per_level * growth
    computable = (per_level - 1) * growth + 1
    return max(computable, spec.window.size * growth) if spec.pyramid == "matlab" else computable


def _padding_fits(spec: StructuralSpec) -> int:
    """The smallest side the 'same' padding can extend: torch's 'reflect' needs more than the pad width,
    the mirror of 'symmetric' at least the pad width."""
    after = spec.window.size // 2
    return {"reflect": after + 1, "symmetric": max(1, after)}.get(spec.padding, 1)


__all__ = [
    "STANDARD_WEIGHTS",
    "StructuralSpec",
    "Window",
    "downsample_factor",
    "filter_same_or_valid",
    "min_side",
    "structural_similarity",
]

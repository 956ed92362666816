"""SSIM (Wang et al. 2004) and MS-SSIM (Wang et al. 2003) with a separable Gaussian window.

Convention: 11-tap Gaussian, sigma 1.5, K1 = 0.01, K2 = 0.03, 'valid' filtering, population statistics, the
mean of the map per channel, then the mean over channels. MS-SSIM pools 2x2 between scales, odd sides
zero-padded as pytorch-msssim's `avg_pool2d(..., padding=s % 2)` call pads them. 2-D images (N, C, H, W) and
3-D volumes (N, C, D, H, W).

Per channel, with mu the Gaussian-filtered means and sigma the filtered (co)variances:

    luminance l = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    contrast-structure cs = (2 sigma_xy + C2) / (sigma_x^2 + sigma_y^2 + C2)
    SSIM = mean(l * cs);  MS-SSIM = prod_j relu(mean cs_j)^w_j over scales, the last scale contributing SSIM

Two paths compute the maps, tested equal: `_maps` (the reference, out of place, recorded by autograd) and,
without gradients, `_maps_in_place` (one stack of filtered maps, in-place arithmetic, bounded memory), which
filters with `pipeline.metrics.ssim_cpu` on CPU. Large images are processed in strips of rows.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.metrics import ssim_cpu
from pipeline.metrics.checks import (
    accumulation_dtype,
    check_data_range,
    check_min_side,
    check_pair,
    needs_grad,
)

WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1, K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MAPS = 4  # filtered maps per channel: x, y, x^2 + y^2, x * y
CPU_STRIP_VALUES = 500_000  # filtered values per strip on CPU: sized for the caches
GPU_STRIP_VALUES = 128_000_000  # on other devices: sized for memory
MIN_STRIP_HALOS = 8  # strips are at least this many window heights tall


def gaussian_window(
    size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA, *, dtype: torch.dtype = torch.float64, device=None
) -> Tensor:
    """Normalised 1-D Gaussian taps, shape (size,).

    Example:
        >>> window = gaussian_window()
        >>> window.shape, round(float(window.sum()), 6)
        (torch.Size([11]), 1.0)
    """
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2  # the centre, also for an even size
    taps = torch.exp(-(coords**2) / (2 * sigma**2))
    return (taps / taps.sum()).to(dtype=dtype, device=device)


def ms_ssim_min_side(scales: int = len(MS_SSIM_WEIGHTS), window_size: int = WINDOW_SIZE) -> int:
    """Smallest spatial side for which MS-SSIM with `scales` scales is defined.

    Example:
        >>> ms_ssim_min_side(5), ms_ssim_min_side(3)
        (161, 41)
    """
    return (window_size - 1) * 2 ** (scales - 1) + 1


def ms_ssim_weights(scales: int = len(MS_SSIM_WEIGHTS)) -> tuple[float, ...]:
    """The first `scales` MS-SSIM weights, renormalised to sum to 1 when fewer than 5 are asked for.

    Example:
        >>> [round(weight, 4) for weight in ms_ssim_weights(2)]
        [0.1356, 0.8644]
    """
    if not 1 <= scales <= len(MS_SSIM_WEIGHTS):
        raise ValueError(f"MS-SSIM supports 1 to {len(MS_SSIM_WEIGHTS)} scales, got {scales}.")
    head = MS_SSIM_WEIGHTS[:scales]
    return head if scales == len(MS_SSIM_WEIGHTS) else tuple(w / sum(head) for w in head)


# Filtering


def blur_valid(stack: Tensor, window: Tensor) -> Tensor:
    """Separable 'valid' filtering of every channel: one depthwise convolution per spatial dimension.

    Args:
        stack: (N, K, *spatial) with 1 to 3 spatial dimensions.
        window: (S,) taps applied along each spatial dimension in turn.

    Returns:
        (N, K, *(spatial - S + 1)).

    Example:
        >>> blur_valid(torch.ones(1, 2, 16, 16), gaussian_window(dtype=torch.float32)).shape
        torch.Size([1, 2, 6, 6])
    """
    channels, spatial = stack.shape[1], stack.dim() - 2
    convolve = (F.conv1d, F.conv2d, F.conv3d)[spatial - 1]
    out = stack
    for axis in range(spatial):
        shape = [1] * spatial
        shape[axis] = window.numel()
        taps = window.view(1, 1, *shape).expand(channels, 1, *shape)
        out = convolve(out, taps, groups=channels)
    return out


def average_pool_2x(x: Tensor) -> Tensor:
    """2x average pooling over every spatial dimension, odd sides zero-padded at both ends.

    pytorch-msssim's `avg_pool(x, kernel_size=2, padding=[s % 2 for s in sides])` (a padded window still
    divides by 2^d), as one sum of two strided views per dimension, last dimension first; values may differ
    from the pooling kernel in the last bit (its sums run in another order).

    Args:
        x: (N, C, *spatial) with 1 to 3 spatial dimensions.

    Returns:
        (N, C, *ceil(spatial / 2)).

    Example:
        >>> average_pool_2x(torch.arange(4.0).view(1, 1, 2, 2))
        tensor([[[[1.5000]]]])
    """
    padding: list[int] = []
    for axis in range(x.dim() - 1, 1, -1):
        padding += [x.shape[axis] % 2, 0]
    if any(padding):
        x = F.pad(x, padding)
    for axis in range(x.dim() - 1, 1, -1):
        pairs = x.unfold(axis, 2, 2)
        x = torch.add(pairs.select(-1, 0), pairs.select(-1, 1))
    return x.mul_(0.5 ** (x.dim() - 2))


# Maps


def _centre(x: Tensor) -> Tensor:
    """Per-image, per-channel mean of x, shaped to broadcast: (N, C, 1, ...).

    The statistics are computed on x - centre and y - centre: SSIM does not change, and float32 variances
    stay accurate.
    """
    return x.detach().flatten(2).mean(dim=2).view(*x.shape[:2], *[1] * (x.dim() - 2))


def _constants(data_range: float) -> tuple[float, float]:
    return (K1 * data_range) ** 2, (K2 * data_range) ** 2


def _maps(
    x: Tensor, y: Tensor, window: Tensor, data_range: float, centre: Tensor, with_ssim: bool
) -> tuple[Tensor | None, Tensor]:
    """The reference: SSIM (None unless `with_ssim`) and contrast-structure maps, (N, C, *valid spatial)."""
    c1, c2 = _constants(data_range)
    channels = x.shape[1]
    xc, yc = x - centre, y - centre
    filtered = blur_valid(torch.cat([xc, yc, xc * xc + yc * yc, xc * yc], dim=1), window)
    mu_xc, mu_yc, squares, products = filtered.split(channels, dim=1)
    # Variances and covariance
    variances = squares - mu_xc * mu_xc - mu_yc * mu_yc
    covariance = products - mu_xc * mu_yc
    cs_map = (2 * covariance + c2) / (variances + c2)
    if not with_ssim:
        return None, cs_map
    # Luminance, on the uncentred means
    mu_x, mu_y = mu_xc + centre, mu_yc + centre
    luminance = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return luminance * cs_map, cs_map


def _filtering(
    x: Tensor,
) -> tuple[Callable[[list[int], torch.dtype], Tensor], Callable[[Tensor, Tensor], Tensor]]:
    """(new stack, filter) for x's maps: `pipeline.metrics.ssim_cpu` on CPU, else `blur_valid`."""
    if ssim_cpu.supports(x):
        return ssim_cpu.new_stack, ssim_cpu.blur_valid
    return (lambda shape, dtype: torch.empty(shape, dtype=dtype, device=x.device)), blur_valid


def _maps_in_place(
    x: Tensor, y: Tensor, window: Tensor, data_range: float, centre: Tensor, with_ssim: bool
) -> tuple[Tensor | None, Tensor]:
    """The maps of `_maps` from one stack of filtered maps and in-place arithmetic (no gradients)."""
    c1, c2 = _constants(data_range)
    channels = x.shape[1]
    new_stack, blur = _filtering(x)
    stack = new_stack([x.shape[0], MAPS * channels, *x.shape[2:]], x.dtype)
    xc, yc, squares, products = _four(stack, channels)
    torch.sub(x, centre, out=xc)
    torch.sub(y, centre, out=yc)
    torch.mul(xc, xc, out=squares).addcmul_(yc, yc)
    torch.mul(xc, yc, out=products)
    mu_x, mu_y, variances, covariance = _four(blur(stack, window), channels)
    # Variances and covariance
    variances.addcmul_(mu_x, mu_x, value=-1).addcmul_(mu_y, mu_y, value=-1).add_(c2)
    covariance.addcmul_(mu_x, mu_y, value=-1)
    cs_map = covariance.mul_(2).add_(c2).div_(variances)
    if not with_ssim:
        return None, cs_map
    # Luminance, on the uncentred means
    mu_x.add_(centre)
    mu_y.add_(centre)
    numerator = torch.mul(mu_x, mu_y, out=variances).mul_(2).add_(c1)
    denominator = mu_x.mul_(mu_x).addcmul_(mu_y, mu_y).add_(c1)
    return numerator.div_(denominator).mul_(cs_map), cs_map


def _four(stack: Tensor, channels: int) -> tuple[Tensor, ...]:
    """The four maps of an (N, 4 C, *spatial) stack, as views (N, C, *spatial)."""
    return stack.view(stack.shape[0], MAPS, channels, *stack.shape[2:]).unbind(1)


def _strip_rows(x: Tensor, window_size: int) -> int:
    """Output rows per strip, so that one strip's filtered maps stay within the device's strip budget."""
    budget = CPU_STRIP_VALUES if x.device.type == "cpu" else GPU_STRIP_VALUES
    per_row = MAPS * x[:, :, 0].numel()
    return max(MIN_STRIP_HALOS * (window_size - 1), budget // per_row - (window_size - 1))


def _spatial_dims(x: Tensor) -> list[int]:
    return list(range(2, x.dim()))


def _mean_ssim_and_cs(
    x: Tensor, y: Tensor, window: Tensor, data_range: float, with_ssim: bool
) -> tuple[Tensor | None, Tensor]:
    """Per-channel means of the SSIM map (None unless `with_ssim`) and of the contrast-structure map, (N, C).

    Without gradients the maps are made in strips of rows along the first spatial axis (overlapping by the
    window); each strip's sums (in x's dtype) are accumulated in float64 (float32 on MPS:
    `accumulation_dtype`). A strip's maps are those of the whole image.
    """
    if needs_grad(x, y):
        ssim_map, cs_map = _maps(x, y, window, data_range, _centre(x), with_ssim)
        dims = _spatial_dims(cs_map)
        return (None if ssim_map is None else ssim_map.mean(dim=dims)), cs_map.mean(dim=dims)
    size = window.numel()
    out_rows = x.shape[2] - size + 1
    rows = _strip_rows(x, size)
    centre = _centre(x)
    dtype = accumulation_dtype(x.device)
    ssim_sum: Tensor | None = None
    cs_sum: Tensor | int = 0
    for start in range(0, out_rows, rows):
        stop = min(out_rows, start + rows) + size - 1
        ssim_map, cs_map = _maps_in_place(
            x[:, :, start:stop], y[:, :, start:stop], window, data_range, centre, with_ssim
        )
        dims = _spatial_dims(cs_map)
        if ssim_map is not None:
            part = ssim_map.sum(dim=dims).to(dtype)
            ssim_sum = part if ssim_sum is None else ssim_sum + part
        cs_sum = cs_sum + cs_map.sum(dim=dims).to(dtype)
    count = out_rows * _valid_count(x.shape[3:], size)
    ssim_mean = None if ssim_sum is None else (ssim_sum / count).to(x.dtype)
    return ssim_mean, (cs_sum / count).to(x.dtype)


def _valid_count(sides: tuple[int, ...], size: int) -> int:
    count = 1
    for side in sides:
        count *= side - size + 1
    return count


def _ms_ssim_levels(
    x: Tensor, y: Tensor, window: Tensor, data_range: float, weights: Tensor
) -> tuple[Tensor, Tensor]:
    """(N, C) SSIM at the first scale and (N, C) MS-SSIM over `weights.numel()` scales."""
    scales = weights.numel()
    levels: list[Tensor] = []
    first_ssim: Tensor | None = None
    for level in range(scales):
        last = level == scales - 1
        level_ssim, level_cs = _mean_ssim_and_cs(x, y, window, data_range, with_ssim=level == 0 or last)
        if level == 0:
            first_ssim = level_ssim
        if last:
            levels.append(torch.relu(level_ssim))  # the last scale contributes SSIM itself
        else:
            levels.append(torch.relu(level_cs))
            x, y = average_pool_2x(x), average_pool_2x(y)
    stacked = torch.stack(levels, dim=0)
    return first_ssim, torch.prod(stacked ** weights.view(-1, 1, 1), dim=0)


# Public functions


def _check_inputs(x: Tensor, y: Tensor, data_range: float, min_side: int, what: str) -> float:
    check_pair(x, y, ndim=x.dim())
    if not 3 <= x.dim() <= 5:
        raise ValueError(
            f"Expected (N, C, H, W) images or (N, C, D, H, W) volumes, got shape {tuple(x.shape)}."
        )
    check_min_side(x, min_side, what)
    return check_data_range(data_range)


def _window_for(x: Tensor, window: Tensor | None) -> Tensor:
    if window is None:
        return gaussian_window(dtype=x.dtype, device=x.device)
    return window.to(dtype=x.dtype, device=x.device)


def ssim(x: Tensor, y: Tensor, *, data_range: float, window: Tensor | None = None) -> Tensor:
    """Structural similarity per image (Wang et al. 2004).

    Args:
        x, y: (N, C, H, W) or (N, C, D, H, W) with values in [0, data_range]; every side >= 11.
        data_range: the peak value R; C1 = (0.01 R)^2, C2 = (0.03 R)^2.
        window: optional cached (11,) Gaussian taps (`gaussian_window()`).

    Returns:
        (N,) mean SSIM over the valid map and the channels.

    Example:
        >>> x = torch.rand(2, 3, 64, 64)
        >>> ssim(x, x, data_range=1.0)
        tensor([1., 1.])
    """
    data_range = _check_inputs(x, y, data_range, WINDOW_SIZE, "SSIM")
    per_channel, _ = _mean_ssim_and_cs(x, y, _window_for(x, window), data_range, with_ssim=True)
    return per_channel.mean(dim=1)


def ssim_map(x: Tensor, y: Tensor, *, data_range: float, window: Tensor | None = None) -> Tensor:
    """SSIM map averaged over channels.

    Args:
        x, y: (N, C, H, W) with values in [0, data_range]; every side >= 11.
        data_range: the peak value R.
        window: optional cached Gaussian taps.

    Returns:
        (N, H - 10, W - 10).

    Example:
        >>> x = torch.rand(1, 3, 32, 48)
        >>> ssim_map(x, x, data_range=1.0).shape
        torch.Size([1, 22, 38])
    """
    data_range = _check_inputs(x, y, data_range, WINDOW_SIZE, "SSIM")
    full_map, _ = _maps(x, y, _window_for(x, window), data_range, _centre(x), with_ssim=True)
    return full_map.mean(dim=1)


def ssim_and_ms_ssim(
    x: Tensor, y: Tensor, *, data_range: float, scales: int = 5, window: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """SSIM and MS-SSIM together, sharing the full-resolution filtering.

    Args:
        x, y: (N, C, H, W) or (N, C, D, H, W), every side >= `ms_ssim_min_side(scales)`.
        data_range: the peak value R.
        scales: number of scales (5 is the standard; fewer use renormalised weights).
        window: optional cached Gaussian taps.

    Returns:
        ((N,) SSIM, (N,) MS-SSIM).

    Example:
        >>> x = torch.rand(1, 1, 64, 64)
        >>> ssim_and_ms_ssim(x, x, data_range=1.0, scales=3)
        (tensor([1.]), tensor([1.]))
    """
    data_range = _check_inputs(x, y, data_range, ms_ssim_min_side(scales), f"MS-SSIM with {scales} scales")
    weights = torch.tensor(ms_ssim_weights(scales), dtype=x.dtype, device=x.device)
    first_ssim, per_channel = _ms_ssim_levels(x, y, _window_for(x, window), data_range, weights)
    return first_ssim.mean(dim=1), per_channel.mean(dim=1)


def ms_ssim(
    x: Tensor, y: Tensor, *, data_range: float, scales: int = 5, window: Tensor | None = None
) -> Tensor:
    """Multi-scale SSIM per image (Wang et al. 2003), as pytorch-msssim computes it.

    Args:
        x, y: (N, C, H, W) or (N, C, D, H, W); every side >= 161 px for 5 scales.
        data_range: the peak value R.
        scales: number of scales; weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333).
        window: optional cached Gaussian taps.

    Returns:
        (N,) product over scales per channel, then the mean over channels.

    Example:
        >>> x = torch.rand(2, 3, 161, 161)
        >>> ms_ssim(x, x, data_range=1.0)
        tensor([1., 1.])
    """
    return ssim_and_ms_ssim(x, y, data_range=data_range, scales=scales, window=window)[1]

"""SSIM (Wang et al. 2004) and MS-SSIM (Wang et al. 2003) with a separable Gaussian window.

Conventions: 11-tap Gaussian, sigma 1.5, K1 = 0.01, K2 = 0.03, 'valid' filtering, population statistics,
mean of the map per channel, then the mean over channels. MS-SSIM uses 2x2 average pooling between scales
with odd sides zero-padded exactly as pytorch-msssim's `avg_pool2d(..., padding=s % 2)` call.
Works on 2-D images (N, C, H, W) and 3-D volumes (N, C, D, H, W).

The filtering and map arithmetic (`_ssim_and_cs`, `_ms_ssim_levels` and what they call) is written in the
subset of Python that TorchScript compiles. Without gradients on CPU it runs compiled (`pipeline.metrics.
compiled`): its few hundred small tensor operations per image then run without taking the GIL between them,
so the task threads of an in-process worker no longer stall each other (see `_runner`). With gradients,
and on other devices, the same functions run as plain Python.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.metrics.checks import check_data_range, check_min_side, check_pair, needs_grad
from pipeline.metrics.compiled import compiled

WINDOW_SIZE = 11
WINDOW_SIGMA = 1.5
K1, K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
CPU_STRIP_VALUES = 500_000
MIN_STRIP_HALOS = 8
GPU_STRIP_VALUES = 128_000_000
MAPS = 4  # filtered maps per channel: x, y, x^2 + y^2, x * y
LANES = 16  # float32 values per AVX-512 register: the channel count the column convolution is fastest at
LANE_BLUR_MIN_WIDTH = 192  # shortest rows whose horizontal pass runs as a lane-mixing convolution


def gaussian_window(
    size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA, *, dtype: torch.dtype = torch.float64, device=None
) -> Tensor:
    """Normalised 1-D Gaussian taps, shape (size,)."""
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    taps = torch.exp(-(coords**2) / (2 * sigma**2))
    return (taps / taps.sum()).to(dtype=dtype, device=device)


def ms_ssim_min_side(scales: int = len(MS_SSIM_WEIGHTS), window_size: int = WINDOW_SIZE) -> int:
    """Smallest spatial side for which MS-SSIM with `scales` scales is defined (161 px for 5 scales)."""
    return (window_size - 1) * 2 ** (scales - 1) + 1


def _window_for(x: Tensor, window: Tensor | None) -> Tensor:
    if window is None:
        return gaussian_window(dtype=x.dtype, device=x.device)
    return window.to(dtype=x.dtype, device=x.device)


def blur_valid(stack: Tensor, window: Tensor, lane_kernel: Tensor | None = None) -> Tensor:
    """Separable 'valid' Gaussian filtering of every channel independently.

    Args:
        stack: (N, K, *spatial) with 1 to 3 spatial dimensions.
        window: (S,) 1-D taps applied along each spatial dimension in turn.
        lane_kernel: `lane_mixing_kernel(window)`, given only for a stack from `blur_ready_empty` (rows
            padded with zeros, which the horizontal pass then reads with weight 0).

    Returns:
        (N, K, *spatial - S + 1). On CPU the vertical pass of a float32 image stack whose rows are laid out
        in multiples of `LANES` values (see `blur_ready_empty`) is one depthwise convolution that reads the
        columns as channels (`_vertical_blur_by_columns`), and with `lane_kernel` the horizontal pass of rows
        of at least `LANE_BLUR_MIN_WIDTH` values is one convolution that mixes those channels
        (`_horizontal_blur_by_lanes`); every other pass is a sum of S shifted, weighted views (no layout
        conversions: with PyTorch's depthwise convolution on (N, K, H, W) itself, the channels-last
        conversions it needs took about 30% of SSIM's time). On other devices a grouped convolution per
        spatial dimension. All give the same values to rounding.
    """
    if stack.device.type != "cpu":
        return _grouped_conv_blur(stack, window)
    out = stack
    first_axis = 2
    if _columns_fill_lanes(stack):
        out = _vertical_blur_by_columns(stack, window)
        first_axis = 3
        if lane_kernel is not None and _rows_hold_lane_margin(out, window.numel()):
            return _horizontal_blur_by_lanes(out, lane_kernel, window.numel())
    taps: list[float] = window.tolist()
    for axis in range(first_axis, stack.dim()):
        out = _shifted_sum(out, taps, axis)
    return out


def blur_ready_empty(
    shape: list[int],
    dtype: torch.dtype,
    device: torch.device,
    lanes: int = LANES,
    window_size: int = WINDOW_SIZE,
) -> Tensor:
    """An (N, K, H, W) stack, uninitialised but for its row padding, laid out for `blur_valid` on CPU.

    For float32 on CPU each row is padded with zeros to a multiple of `LANES` values that leaves the
    margin `_horizontal_blur_by_lanes` reads past the last column (W + LANES - S + 1 values at least), so
    that both passes of `blur_valid(stack, window, lane_kernel)` run as convolutions. Other shapes, dtypes
    and devices get a plain contiguous tensor. The padding never reaches the result.
    """
    if len(shape) != 4 or dtype != torch.float32 or device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    width = shape[3]
    needed = max(width, width + lanes - window_size + 1)
    padded = (needed + lanes - 1) // lanes * lanes
    stack = torch.empty([shape[0], shape[1], shape[2], padded], dtype=dtype, device=device)
    stack[:, :, :, width:].zero_()
    return stack[:, :, :, :width]


def _rows_hold_lane_margin(
    stack: Tensor, window_size: int, lanes: int = LANES, min_width: int = LANE_BLUR_MIN_WIDTH
) -> bool:
    """True when a lane-laid-out stack's rows extend far enough past its last column for
    `_horizontal_blur_by_lanes` with an S-tap window (S <= LANES + 1), and the rows are long enough for
    it to be the faster pass (`LANE_BLUR_MIN_WIDTH`)."""
    width = stack.shape[3]
    return (
        window_size <= lanes + 1 and width >= min_width and stack.stride(2) >= width + lanes - window_size + 1
    )


def _columns_fill_lanes(stack: Tensor, lanes: int = LANES) -> bool:
    """True for a float32 (N, K, H, W) stack of row-major planes whose row stride is a multiple of `LANES`."""
    if stack.dim() != 4 or stack.dtype != torch.float32 or stack.shape[3] < lanes:
        return False
    n, k, h = stack.shape[0], stack.shape[1], stack.shape[2]
    row = stack.stride(2)
    return (
        stack.stride(3) == 1
        and row % lanes == 0
        and (k == 1 or stack.stride(1) == h * row)
        and (n == 1 or stack.stride(0) == k * h * row)
    )


def _vertical_blur_by_columns(stack: Tensor, window: Tensor, lanes: int = LANES) -> Tensor:
    """'valid' filtering of a (N, K, H, W) stack along H, as one depthwise convolution.

    A plane of rows with a row stride R that is a multiple of L = `LANES` is, in memory, a channels-last
    (L, H, R / L) image: each channel is every L-th column. Filtering that image along H with an (S, 1)
    kernel filters every column, with no copy in or out, and oneDNN's channels-last depthwise kernel is
    about 3x faster than the shifted sum along H (1.2 vs 3.6 ms on 12 x 512 x 512 values, one thread).
    The values are the same as `_shifted_sum`'s, summed in the same order. Returns (N, K, H - S + 1, W),
    a view with the same row stride.
    """
    n, k, h, w = stack.shape[0], stack.shape[1], stack.shape[2], stack.shape[3]
    row = stack.stride(2)
    as_image = stack.as_strided([n * k, lanes, h, row // lanes], [h * row, 1, row, lanes])
    kernel = window.to(stack.dtype).view(1, 1, -1, 1).expand(lanes, 1, -1, 1).contiguous()
    filtered = F.conv2d(as_image, kernel, groups=lanes)
    return filtered.permute(0, 2, 3, 1).reshape(n, k, filtered.shape[2], row)[:, :, :, :w]


def lane_mixing_kernel(window: Tensor, lanes: int = LANES) -> Tensor:
    """(L, L, 1, 2) convolution weights with which lane o of block p sums taps[k] * column o + k + L p.

    Weight [o, i, 0, j] is taps[i + L j - o] where that index is a tap, else 0: input lane i of block
    p + j is column i + L (p + j) = (o + L p) + (i + L j - o).
    """
    size = window.numel()
    output_lane = torch.arange(lanes, device=window.device).view(lanes, 1, 1)
    input_lane = torch.arange(lanes, device=window.device).view(1, lanes, 1)
    block = torch.arange(2, device=window.device).view(1, 1, 2)
    tap = input_lane + lanes * block - output_lane
    inside = (tap >= 0) & (tap < size)
    weights = torch.where(inside, window[tap.clamp(0, size - 1)], torch.zeros_like(window[:1]))
    return weights.unsqueeze(2)


def _horizontal_blur_by_lanes(stack: Tensor, kernel: Tensor, window_size: int, lanes: int = LANES) -> Tensor:
    """'valid' filtering of a (N, K, H, W) stack along W, as one convolution that mixes lanes.

    The same channels-last reading as `_vertical_blur_by_columns`: lane i of block p is column i + L p.
    Output column o + L p needs columns o + L p + k for the S taps k, which lie in blocks p and p + 1
    (S <= L + 1), so a (1, 2) convolution from L lanes to L lanes (`lane_mixing_kernel`) filters every
    row in one pass: 2 L multiply-adds per value instead of S, but one sweep over memory instead of S
    (0.23 vs 0.48 ms on 12 x 71 x 512 values, one thread; about equal at 128 values a row and slower on
    shorter ones, where the data stays in cache). The row padding is read with weight 0, so it must hold
    finite values (`blur_ready_empty` zeros it). `kernel`: `lane_mixing_kernel(window)`. Returns
    (N, K, H, W - S + 1), a view whose rows have stride R - L.
    """
    n, k, h, w = stack.shape[0], stack.shape[1], stack.shape[2], stack.shape[3]
    row = stack.stride(2)
    as_image = stack.as_strided([n * k, lanes, h, row // lanes], [h * row, 1, row, lanes])
    filtered = F.conv2d(as_image, kernel)
    rows = filtered.permute(0, 2, 3, 1).reshape(n, k, h, filtered.shape[3] * lanes)
    return rows[:, :, :, : w - window_size + 1]


def _shifted_sum(x: Tensor, taps: list[float], axis: int) -> Tensor:
    """'valid' correlation with `taps` along `axis`: sum_k taps[k] * x[..., k : k + L - S + 1, ...]."""
    length = x.shape[axis] - len(taps) + 1
    out = x.narrow(axis, 0, length) * taps[0]
    for offset in range(1, len(taps)):
        out.add_(x.narrow(axis, offset, length), alpha=taps[offset])
    return out


def _grouped_conv_blur(stack: Tensor, window: Tensor) -> Tensor:
    """`blur_valid` as one depthwise convolution per spatial dimension (the path for GPUs)."""
    channels = stack.shape[1]
    spatial = stack.dim() - 2
    out = stack
    for axis in range(spatial):
        shape = [1] * spatial
        shape[axis] = window.numel()
        taps = window.view([1, 1] + shape).expand([channels, 1] + shape).contiguous()  # noqa: RUF005 (TorchScript)
        if spatial == 1:
            out = F.conv1d(out, taps, groups=channels)
        elif spatial == 2:
            out = F.conv2d(out, taps, groups=channels)
        else:
            out = F.conv3d(out, taps, groups=channels)
    return out


def average_pool_2x(x: Tensor) -> Tensor:
    """2x average pooling over every spatial dimension, odd sides zero-padded at both ends.

    pytorch-msssim's `avg_pool(x, kernel_size=2, padding=[s % 2 for s in sides])` (count_include_pad: a
    padded window still divides by 2^d). On CPU it is one sum of two strided views per spatial dimension,
    the last dimension first, about 5x faster than PyTorch's pooling kernel (0.22 vs 1.1 ms on 512 x 512
    RGB, one thread). The sum is taken in pairs, ((a + b) + (c + d)) rather than the kernel's
    (((a + b) + c) + d), so values can differ from it in the last bit (float32: 1.5e-5 on values up to 255).

    Args:
        x: (N, C, *spatial) with 1 to 3 spatial dimensions.

    Returns:
        (N, C, *ceil(spatial / 2)).
    """
    spatial = x.dim() - 2
    if x.device.type != "cpu":
        odd = [side % 2 for side in x.shape[2:]]
        if spatial == 1:
            return F.avg_pool1d(x, kernel_size=2, padding=odd)
        if spatial == 2:
            return F.avg_pool2d(x, kernel_size=2, padding=odd)
        return F.avg_pool3d(x, kernel_size=2, padding=odd)
    padding: list[int] = []
    for axis in range(x.dim() - 1, 1, -1):
        padding += [x.shape[axis] % 2, 0]
    if sum(padding) > 0:
        x = F.pad(x, padding)
    for axis in range(x.dim() - 1, 1, -1):
        pairs = x.unfold(axis, 2, 2)  # the strided views x[..., 0::2, ...] and x[..., 1::2, ...] along `axis`
        x = torch.add(pairs.select(-1, 0), pairs.select(-1, 1))
    return x.mul_(0.5**spatial)


def _centre(x: Tensor) -> Tensor:
    """Per-image, per-channel mean of x, shaped to broadcast: (N, C, 1, ...)."""
    return x.detach().flatten(2).mean(dim=2).view([x.shape[0], x.shape[1]] + [1] * (x.dim() - 2))


def _ssim_and_cs_maps(
    x: Tensor,
    y: Tensor,
    window: Tensor,
    data_range: float,
    centre: Tensor | None = None,
    with_ssim: bool = True,
    differentiable: bool = False,
    lane_kernel: Tensor | None = None,
    k1: float = K1,
    k2: float = K2,
) -> tuple[Tensor | None, Tensor]:
    """SSIM and contrast-structure maps, each (N, C, *valid spatial); SSIM None unless `with_ssim`.

    `differentiable`: build the maps from out-of-place operations that autograd can record.
    `lane_kernel`: see `blur_valid` (used without gradients only).
    """
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    # Centering by the reference's mean keeps float32 variances accurate; SSIM is unchanged by it.
    if centre is None:
        centre = _centre(x)
    if differentiable:
        return _maps_differentiable(x, y, window, centre, c1, c2, with_ssim)
    return _maps_in_place(x, y, window, centre, c1, c2, with_ssim, lane_kernel)


def _maps_differentiable(
    x: Tensor, y: Tensor, window: Tensor, centre: Tensor, c1: float, c2: float, with_ssim: bool
) -> tuple[Tensor | None, Tensor]:
    c = x.shape[1]
    xc, yc = x - centre, y - centre
    blurred = blur_valid(torch.cat([xc, yc, xc * xc + yc * yc, xc * yc], dim=1), window)
    mu_xc, mu_yc, squares, xy = _four(blurred.split(c, dim=1))
    # Variances and covariance: sigma_x^2 + sigma_y^2 from one filtered map of x^2 + y^2
    variances = squares - mu_xc * mu_xc - mu_yc * mu_yc
    covariance = xy - mu_xc * mu_yc
    cs_map = (2 * covariance + c2) / (variances + c2)
    if not with_ssim:
        return None, cs_map
    # Luminance on the uncentred means
    mu_x, mu_y = mu_xc + centre, mu_yc + centre
    luminance = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return luminance * cs_map, cs_map


def _maps_in_place(
    x: Tensor,
    y: Tensor,
    window: Tensor,
    centre: Tensor,
    c1: float,
    c2: float,
    with_ssim: bool,
    lane_kernel: Tensor | None = None,
) -> tuple[Tensor | None, Tensor]:
    """The same maps as `_maps_differentiable`, with one preallocated stack and in-place arithmetic."""
    c = x.shape[1]
    stack = blur_ready_empty([x.shape[0], 4 * c] + list(x.shape[2:]), x.dtype, x.device)  # noqa: RUF005
    xc, yc, squares, xy = _four(stack.split(c, dim=1))
    torch.sub(x, centre, out=xc)
    torch.sub(y, centre, out=yc)
    torch.mul(xc, xc, out=squares).addcmul_(yc, yc)
    torch.mul(xc, yc, out=xy)
    mu_x, mu_y, variances, covariance = _four(blur_valid(stack, window, lane_kernel).split(c, dim=1))
    # Variances and covariance
    variances.addcmul_(mu_x, mu_x, value=-1).addcmul_(mu_y, mu_y, value=-1).add_(c2)
    covariance.addcmul_(mu_x, mu_y, value=-1)
    cs_map = covariance.mul_(2).add_(c2).div_(variances)
    if not with_ssim:
        return None, cs_map
    # Luminance on the uncentred means
    mu_x.add_(centre)
    mu_y.add_(centre)
    numerator = torch.mul(mu_x, mu_y, out=variances).mul_(2).add_(c1)
    denominator = mu_x.mul_(mu_x).addcmul_(mu_y, mu_y).add_(c1)
    return numerator.div_(denominator).mul_(cs_map), cs_map


def _four(parts: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four maps of a stack split by channels (x, y, squares, products)."""
    return parts[0], parts[1], parts[2], parts[3]


def _strip_budget(x: Tensor) -> int:
    """Values of the filtered maps per strip: sized for the caches on CPU, for memory on other devices."""
    return GPU_STRIP_VALUES if x.is_cuda else CPU_STRIP_VALUES


def _strip_rows(
    x: Tensor, window_size: int, budget: int, maps: int = MAPS, min_halos: int = MIN_STRIP_HALOS
) -> int:
    """Output rows per strip so that one strip's four filtered maps stay within the budget.

    On CPU the budget is sized for the caches (about 2 MB of float32 maps per strip; with two task threads
    3-6% faster than 4 MB, measured when the filtering ran compiled), not only for memory; strips are at
    least `MIN_STRIP_HALOS` window heights tall so the overlap recomputed between strips stays small.
    """
    per_row = maps * x[:, :, 0].numel()
    return max(min_halos * (window_size - 1), budget // per_row - (window_size - 1))


def _ssim_and_cs(
    x: Tensor,
    y: Tensor,
    window: Tensor,
    data_range: float,
    with_ssim: bool,
    budget: int,
    differentiable: bool,
) -> tuple[Tensor | None, Tensor]:
    """Per-channel mean SSIM (None unless `with_ssim`) and contrast-structure, each (N, C).

    Large inputs are processed in strips along the first spatial axis (overlapping by the window size) of
    about `budget` filtered values, so memory stays bounded; each strip's maps are exactly those of the
    whole image; each strip's sums (in x's dtype, pairwise) are accumulated in float64.
    """
    size = window.numel()
    out_rows = x.shape[2] - size + 1
    rows = _strip_rows(x, size, budget)
    lane_kernel = _lane_kernel_for(x, window, differentiable)
    if rows >= out_rows:
        ssim_map, cs_map = _ssim_and_cs_maps(
            x,
            y,
            window,
            data_range,
            with_ssim=with_ssim,
            differentiable=differentiable,
            lane_kernel=lane_kernel,
        )
        return _spatial_mean(ssim_map), cs_map.mean(dim=_spatial_dims(cs_map))
    centre = _centre(x)
    ssim_sum: Tensor | None = None
    cs_sum: Tensor | None = None
    count = 0
    for start in range(0, out_rows, rows):
        stop = min(out_rows, start + rows)
        ssim_map, cs_map = _ssim_and_cs_maps(
            x[:, :, start : stop + size - 1],
            y[:, :, start : stop + size - 1],
            window,
            data_range,
            centre,
            with_ssim=with_ssim,
            differentiable=differentiable,
            lane_kernel=lane_kernel,
        )
        if ssim_map is not None:
            ssim_part = ssim_map.sum(dim=_spatial_dims(ssim_map)).double()
            ssim_sum = ssim_part if ssim_sum is None else ssim_sum + ssim_part
        cs_part = cs_map.sum(dim=_spatial_dims(cs_map)).double()
        cs_sum = cs_part if cs_sum is None else cs_sum + cs_part
        count += cs_map[0, 0].numel()
    assert cs_sum is not None
    ssim_mean = None if ssim_sum is None else (ssim_sum / count).to(x.dtype)
    return ssim_mean, (cs_sum / count).to(x.dtype)


def _lane_kernel_for(
    x: Tensor, window: Tensor, differentiable: bool, min_width: int = LANE_BLUR_MIN_WIDTH
) -> Tensor | None:
    """`lane_mixing_kernel(window)` when `blur_valid` would run the horizontal pass of x's maps as a
    lane-mixing convolution (CPU, float32 images with rows of `LANE_BLUR_MIN_WIDTH` or more, no
    gradients), else None."""
    if differentiable or x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4:
        return None
    if x.shape[3] < min_width:
        return None
    return lane_mixing_kernel(window.to(x.dtype))


def _spatial_mean(maps: Tensor | None) -> Tensor | None:
    """(N, C, *spatial) -> (N, C); None stays None."""
    return None if maps is None else maps.mean(dim=_spatial_dims(maps))


def _spatial_dims(x: Tensor) -> list[int]:
    """The spatial dimensions of (N, C, *spatial), to reduce over in place of flattening (which copies
    the strided maps of `blur_valid`)."""
    return [axis for axis in range(2, x.dim())]


def _ms_ssim_levels(
    x: Tensor,
    y: Tensor,
    window: Tensor,
    data_range: float,
    weights: Tensor,
    budget: int,
    differentiable: bool,
) -> tuple[Tensor, Tensor]:
    """(N, C) SSIM of the first scale and (N, C) MS-SSIM over `weights.numel()` scales.

    SSIM itself is computed at the first scale (returned) and the last (MS-SSIM's luminance term), the
    contrast-structure term at every scale but the last.
    """
    scales = weights.numel()
    contrast_structure: list[Tensor] = []
    first_ssim: Tensor | None = None
    last_ssim: Tensor | None = None
    for level in range(scales):
        with_ssim = level == 0 or level == scales - 1
        level_ssim, level_cs = _ssim_and_cs(x, y, window, data_range, with_ssim, budget, differentiable)
        if level == 0:
            first_ssim = level_ssim
        if level < scales - 1:
            contrast_structure.append(torch.relu(level_cs))
            x = average_pool_2x(x)
            y = average_pool_2x(y)
        else:
            last_ssim = level_ssim
    assert first_ssim is not None and last_ssim is not None
    contrast_structure.append(torch.relu(last_ssim))  # the last scale contributes SSIM itself
    levels = torch.stack(contrast_structure, dim=0)
    return first_ssim, torch.prod(levels ** weights.view(-1, 1, 1), dim=0)


def _runner(x: Tensor, differentiable: bool, function):
    """`function` compiled for CPU inputs without gradients (`pipeline.metrics.compiled`), else as is."""
    if x.device.type == "cpu" and not differentiable:
        return compiled(function)
    return function


def _check_inputs(x: Tensor, y: Tensor, data_range: float) -> float:
    check_pair(x, y, ndim=x.dim())
    if not 3 <= x.dim() <= 5:
        raise ValueError(
            f"Expected (N, C, H, W) images or (N, C, D, H, W) volumes, got shape {tuple(x.shape)}."
        )
    return check_data_range(data_range)


def ssim(x: Tensor, y: Tensor, *, data_range: float, window: Tensor | None = None) -> Tensor:
    """Structural similarity per image (Wang et al. 2004).

    Args:
        x, y: (N, C, H, W) or (N, C, D, H, W) with values in [0, data_range]; every side >= 11.
        data_range: the peak value R; C1 = (0.01 R)^2, C2 = (0.03 R)^2.
        window: optional cached (11,) Gaussian taps.

    Returns:
        (N,) mean SSIM over the valid map and the channels.

    Example:
        >>> x = torch.rand(2, 3, 64, 64)
        >>> ssim(x, x, data_range=1.0)
        tensor([1., 1.])
    """
    data_range = _check_inputs(x, y, data_range)
    check_min_side(x, WINDOW_SIZE, "SSIM")
    differentiable = needs_grad(x, y)
    run = _runner(x, differentiable, _ssim_and_cs)
    per_channel, _ = run(x, y, _window_for(x, window), data_range, True, _strip_budget(x), differentiable)
    return per_channel.mean(dim=1)


def ssim_map(x: Tensor, y: Tensor, *, data_range: float, window: Tensor | None = None) -> Tensor:
    """SSIM map averaged over channels: (N, C, H, W) -> (N, H - 10, W - 10)."""
    data_range = _check_inputs(x, y, data_range)
    check_min_side(x, WINDOW_SIZE, "SSIM")
    full_map, _ = _ssim_and_cs_maps(x, y, _window_for(x, window), data_range, differentiable=needs_grad(x, y))
    return full_map.mean(dim=1)


def ms_ssim_weights(scales: int = len(MS_SSIM_WEIGHTS)) -> tuple[float, ...]:
    """The first `scales` MS-SSIM weights, renormalised to sum to 1 when fewer than 5 are asked for."""
    if not 1 <= scales <= len(MS_SSIM_WEIGHTS):
        raise ValueError(f"MS-SSIM supports 1 to {len(MS_SSIM_WEIGHTS)} scales, got {scales}.")
    if scales == len(MS_SSIM_WEIGHTS):
        return MS_SSIM_WEIGHTS
    head = MS_SSIM_WEIGHTS[:scales]
    return tuple(w / sum(head) for w in head)


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
    """
    data_range = _check_inputs(x, y, data_range)
    check_min_side(x, ms_ssim_min_side(scales), f"MS-SSIM with {scales} scales")
    weights = torch.tensor(ms_ssim_weights(scales), dtype=x.dtype, device=x.device)
    differentiable = needs_grad(x, y)
    run = _runner(x, differentiable, _ms_ssim_levels)
    first_ssim, per_channel = run(
        x, y, _window_for(x, window), data_range, weights, _strip_budget(x), differentiable
    )
    return first_ssim.mean(dim=1), per_channel.mean(dim=1)


def ms_ssim(
    x: Tensor, y: Tensor, *, data_range: float, scales: int = 5, window: Tensor | None = None
) -> Tensor:
    """Multi-scale SSIM per image (Wang et al. 2003), matching pytorch-msssim.

    Args:
        x, y: (N, C, H, W) or (N, C, D, H, W); every side >= 161 px for 5 scales.
        data_range: the peak value R.
        scales: number of scales; weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333).

    Returns:
        (N,) product over scales per channel, then the mean over channels.
    """
    return ssim_and_ms_ssim(x, y, data_range=data_range, scales=scales, window=window)[1]

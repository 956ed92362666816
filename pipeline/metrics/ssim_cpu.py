"""The accelerated CPU path of SSIM's filtering: separable 'valid' Gaussian filtering without gradients.

The interface is two functions that `pipeline.metrics.ssim` calls when `supports(x)` holds:

* `new_stack(shape, dtype)`: an uninitialised (N, K, *spatial) tensor laid out for `blur_valid`;
* `blur_valid(stack, window)`: every channel filtered along each spatial axis, (N, K, *spatial - S + 1).

Both give the values of the reference filtering (`pipeline.metrics.ssim.blur_valid`) to rounding.

How: a float32 image plane whose row stride is a multiple of L = `LANES` values is, in memory, a channels-last
(L, H, R / L) image in which lane i of block p is column i + L p. Read that way, one depthwise convolution
with an (S, 1) kernel filters every column (the vertical pass), and one (1, 2) convolution from L lanes to L
lanes (`lane_mixing_kernel`) filters every row (the horizontal pass); both run as oneDNN convolutions with no
layout conversion. `new_stack` pads each row with zeros to such a stride, with the margin the horizontal
pass reads past the last column. Other dtypes, volumes and planes narrower than L are filtered as sums of S
shifted, weighted views.
"""

from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import Tensor

LANES = 16

_LANE_KERNELS: dict[tuple, tuple[Tensor, Tensor]] = {}
_LANE_KERNELS_LOCK = threading.Lock()


def supports(x: Tensor) -> bool:
    """Whether this module filters x's maps: CPU tensors of 1 to 3 spatial dimensions.

    Example:
        >>> supports(torch.zeros(1, 3, 32, 32)), supports(torch.zeros(32, 32))
        (True, False)
    """
    return x.device.type == "cpu" and 3 <= x.dim() <= 5


def new_stack(shape: list[int], dtype: torch.dtype, lanes: int = LANES) -> Tensor:
    """An uninitialised (N, K, *spatial) CPU tensor for `blur_valid`; row padding (never in the result)
    zeroed for float32 images.

    Example:
        >>> stack = new_stack([1, 4, 20, 30], torch.float32)
        >>> stack.shape, stack.stride(2)
        (torch.Size([1, 4, 20, 30]), 48)
    """
    if not _takes_lanes(shape, dtype, lanes):
        return torch.empty(shape, dtype=dtype)
    width = shape[3]
    padded = -(-(width + lanes) // lanes) * lanes  # room for the horizontal pass's margin
    stack = torch.empty([*shape[:3], padded], dtype=dtype)
    stack[..., width:].zero_()
    return stack[..., :width]


def blur_valid(stack: Tensor, window: Tensor) -> Tensor:
    """Separable 'valid' filtering of every channel of a `new_stack` tensor.

    Args:
        stack: (N, K, *spatial) from `new_stack`, filled.
        window: (S,) taps, S <= `LANES` + 1, in the dtype of `stack`.

    Returns:
        (N, K, *(spatial - S + 1)), a view with padded rows for float32 images.

    Example:
        >>> stack = new_stack([1, 1, 32, 32], torch.float32)
        >>> _ = stack.fill_(1.0)
        >>> blur_valid(stack, torch.full((11,), 1 / 11)).shape
        torch.Size([1, 1, 22, 22])
    """
    if _laid_out_in_lanes(stack):
        vertical, horizontal = lane_kernels(window)
        columns = _vertical_pass_by_columns(stack, vertical)
        return _horizontal_pass_by_lanes(columns, horizontal, window.numel())
    taps = window.tolist()
    out = stack
    for axis in range(2, stack.dim()):
        out = _shifted_sum(out, taps, axis)
    return out


def _takes_lanes(shape: list[int], dtype: torch.dtype, lanes: int = LANES) -> bool:
    return len(shape) == 4 and dtype == torch.float32 and shape[3] >= lanes


def _laid_out_in_lanes(stack: Tensor, lanes: int = LANES) -> bool:
    """A float32 (N, K, H, W) stack of row-major planes with the row stride and margin of `new_stack`."""
    if stack.dtype != torch.float32 or stack.dim() != 4:
        return False
    n, k, h, w = stack.shape
    row = stack.stride(2)
    return (
        w >= lanes
        and stack.stride(3) == 1
        and row % lanes == 0
        and row >= w + lanes
        and (k == 1 or stack.stride(1) == h * row)
        and (n == 1 or stack.stride(0) == k * h * row)
    )


def _as_lane_image(stack: Tensor, lanes: int = LANES) -> Tensor:
    """The (N K, L, H, R / L) channels-last reading of a lane-laid-out stack (no copy)."""
    n, k, h = stack.shape[0], stack.shape[1], stack.shape[2]
    row = stack.stride(2)
    return stack.as_strided([n * k, lanes, h, row // lanes], [h * row, 1, row, lanes])


def _vertical_pass_by_columns(stack: Tensor, kernel: Tensor, lanes: int = LANES) -> Tensor:
    """'valid' filtering along H as one depthwise convolution over the columns (`kernel`: (L, 1, S, 1), the
    taps for every lane): (N, K, H - S + 1, W), a view with the row stride of `stack` (padding included,
    filtered like the columns)."""
    n, k, w = stack.shape[0], stack.shape[1], stack.shape[3]
    row = stack.stride(2)
    filtered = F.conv2d(_as_lane_image(stack), kernel, groups=lanes)
    return filtered.permute(0, 2, 3, 1).reshape(n, k, filtered.shape[2], row)[..., :w]


def lane_kernels(window: Tensor, lanes: int = LANES) -> tuple[Tensor, Tensor]:
    """The convolution weights of both passes for `window`, made once per window: the vertical pass's
    (L, 1, S, 1) depthwise taps and the horizontal pass's `lane_mixing_kernel`."""
    key = (tuple(window.tolist()), window.dtype, lanes)
    cached = _LANE_KERNELS.get(key)
    if cached is None:
        vertical = window.view(1, 1, -1, 1).expand(lanes, 1, -1, 1).contiguous()
        with _LANE_KERNELS_LOCK:
            cached = _LANE_KERNELS.setdefault(key, (vertical, lane_mixing_kernel(window, lanes)))
    return cached


def lane_mixing_kernel(window: Tensor, lanes: int = LANES) -> Tensor:
    """(L, L, 1, 2) weights with which output lane o of block p sums taps[t] * column (o + L p + t).

    Weight [o, i, 0, j] is taps[i + L j - o] where that index is a tap, else 0: input lane i of block p + j
    is column i + L (p + j) = (o + L p) + (i + L j - o).
    """
    size = window.numel()
    output_lane = torch.arange(lanes).view(lanes, 1, 1)
    input_lane = torch.arange(lanes).view(1, lanes, 1)
    block = torch.arange(2).view(1, 1, 2)
    tap = input_lane + lanes * block - output_lane
    inside = (tap >= 0) & (tap < size)
    weights = torch.where(inside, window[tap.clamp(0, size - 1)], torch.zeros((), dtype=window.dtype))
    return weights.unsqueeze(2)


def _horizontal_pass_by_lanes(stack: Tensor, kernel: Tensor, window_size: int, lanes: int = LANES) -> Tensor:
    """'valid' filtering along W as one (1, 2) lane-mixing convolution: (N, K, H, W - S + 1).

    Output column o + L p needs columns o + L p + t for the S taps t, which lie in blocks p and p + 1
    (S <= L + 1). The row padding is read with weight 0, so it must hold finite values.
    """
    n, k, h, w = stack.shape
    filtered = F.conv2d(_as_lane_image(stack), kernel)
    rows = filtered.permute(0, 2, 3, 1).reshape(n, k, h, filtered.shape[3] * lanes)
    return rows[..., : w - window_size + 1]


def _shifted_sum(x: Tensor, taps: list[float], axis: int) -> Tensor:
    """'valid' correlation with `taps` along `axis`: sum_t taps[t] * x[..., t : t + L - S + 1, ...]."""
    length = x.shape[axis] - len(taps) + 1
    out = x.narrow(axis, 0, length) * taps[0]
    for offset in range(1, len(taps)):
        out.add_(x.narrow(axis, offset, length), alpha=taps[offset])
    return out

"""Pixel-error metrics: MSE, MAE and PSNR, one value per image."""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.metrics.checks import accumulation_dtype, check_data_range, check_pair, needs_grad

STRIP_VALUES = 4_000_000


def mse(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error per image.

    Without gradients, large images are reduced in strips of rows (sums accumulated in float64, float32 on
    MPS: `accumulation_dtype`), so no image-sized temporary is made.

    Args:
        x, y: (N, C, *spatial) images in the same units.

    Returns:
        (N,) mean of (x - y)^2 over every channel and pixel.

    Example:
        >>> mse(torch.zeros(2, 1, 4, 4), torch.full((2, 1, 4, 4), 3.0))
        tensor([9., 9.])
    """
    check_pair(x, y, ndim=x.dim())
    rows = max(1, STRIP_VALUES // max(1, x[:, :, 0].numel()))
    if needs_grad(x, y) or rows >= x.shape[2]:
        return (x - y).pow(2).flatten(1).mean(dim=1)
    dtype = accumulation_dtype(x.device)
    total = torch.zeros(x.shape[0], dtype=dtype, device=x.device)
    for start in range(0, x.shape[2], rows):
        strip = x[:, :, start : start + rows] - y[:, :, start : start + rows]
        total += strip.pow_(2).flatten(1).sum(dim=1, dtype=dtype)
    return (total / x[0].numel()).to(x.dtype)


def mae(x: Tensor, y: Tensor) -> Tensor:
    """Mean absolute error per image: (N, C, *spatial) x2 -> (N,).

    Example:
        >>> mae(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), -2.0))
        tensor([2.])
    """
    check_pair(x, y, ndim=x.dim())
    return (x - y).abs().flatten(1).mean(dim=1)


def psnr_from_mse(mse_value: Tensor, *, data_range: float) -> Tensor:
    """PSNR in dB from per-image MSE: 10 log10(R^2 / MSE); inf where MSE is 0. (N,) -> (N,).

    Example:
        >>> psnr_from_mse(torch.tensor([65.025, 0.0]), data_range=255.0)
        tensor([30., inf])
    """
    data_range = check_data_range(data_range)
    return 10.0 * torch.log10(data_range**2 / mse_value)


def psnr(x: Tensor, y: Tensor, *, data_range: float) -> Tensor:
    """Peak signal-to-noise ratio per image.

    Args:
        x, y: (N, C, *spatial) images with values in [0, data_range].
        data_range: the peak value R (255 for 8-bit, 65535 for 16-bit, 1.0 for unit floats).

    Returns:
        (N,) PSNR in dB; `inf` for identical images.

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> psnr(x, (x + 0.01).clamp(0, 1), data_range=1.0).shape
        torch.Size([2])
    """
    return psnr_from_mse(mse(x, y), data_range=data_range)

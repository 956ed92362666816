"""Training losses built on the functional metrics: `1 - SSIM` and `1 - MS-SSIM`, with gradients.

The modules only cache the 1-D Gaussian window as a non-persistent buffer (it follows `.to()`, `.double()`
and `.cuda()` but stays out of the `state_dict`); the maths is `pipeline.metrics.ssim`.

Example:
    >>> loss_fn = SSIMLoss(data_range=1.0)
    >>> x = torch.rand(2, 3, 32, 32, requires_grad=True)
    >>> loss = loss_fn(x, torch.rand(2, 3, 32, 32))
    >>> loss.backward()
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from pipeline.metrics.checks import check_data_range
from pipeline.metrics.ssim import gaussian_window, ms_ssim, ms_ssim_weights, ssim

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")
SPATIAL_DIMS = (2, 3)


def _check_reduction(reduction: str) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
    return reduction


def _check_spatial_dims(spatial_dims: int) -> int:
    if spatial_dims not in SPATIAL_DIMS:
        raise ValueError(
            f"spatial_dims must be 2 for (N, C, H, W) images or 3 for (N, C, D, H, W) volumes, "
            f"got {spatial_dims!r}."
        )
    return spatial_dims


def _reduce(per_image: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "sum":
        return per_image.sum()
    return per_image


class _WindowedLoss(nn.Module):
    """Shared state of the SSIM losses: data range, reduction, expected rank and the cached window."""

    window: Tensor

    def __init__(self, data_range: float, reduction: Reduction, spatial_dims: int) -> None:
        super().__init__()
        self.data_range = check_data_range(data_range)
        self.reduction = _check_reduction(reduction)
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        self.register_buffer("window", gaussian_window(dtype=torch.get_default_dtype()), persistent=False)

    def _check_rank(self, x: Tensor) -> None:
        expected = self.spatial_dims + 2
        if x.dim() != expected:
            layout = "(N, C, H, W)" if self.spatial_dims == 2 else "(N, C, D, H, W)"
            raise ValueError(
                f"{type(self).__name__}(spatial_dims={self.spatial_dims}) expects {expected}-D {layout} "
                f"input, got shape {tuple(x.shape)}."
            )

    def extra_repr(self) -> str:
        return f"data_range={self.data_range}, reduction={self.reduction!r}, spatial_dims={self.spatial_dims}"


class SSIMLoss(_WindowedLoss):
    """`1 - SSIM` (Wang et al. 2004) as a differentiable training loss.

    Args:
        data_range: the peak value R of the inputs (1.0 for unit floats, 255 for 8-bit scale).
        reduction: 'mean' or 'sum' over the batch, or 'none' for one loss per image.
        spatial_dims: 2 for (N, C, H, W) images, 3 for (N, C, D, H, W) volumes.

    Shapes:
        x, y: (N, C, H, W) or (N, C, D, H, W), every side >= 11.
        output: () for 'mean' and 'sum', (N,) for 'none'.

    Example:
        >>> loss_fn = SSIMLoss(data_range=1.0, reduction="none")
        >>> x = torch.rand(2, 1, 16, 16)
        >>> loss_fn(x, x)
        tensor([0., 0.])
    """

    def __init__(self, data_range: float, reduction: Reduction = "mean", spatial_dims: int = 2) -> None:
        super().__init__(data_range, reduction, spatial_dims)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Loss between a prediction `x` and a target `y` of the same shape."""
        self._check_rank(x)
        return _reduce(1 - ssim(x, y, data_range=self.data_range, window=self.window), self.reduction)


class MSSSIMLoss(_WindowedLoss):
    """`1 - MS-SSIM` (Wang et al. 2003) as a differentiable training loss.

    Args:
        data_range: the peak value R of the inputs.
        reduction: 'mean' or 'sum' over the batch, or 'none' for one loss per image.
        scales: number of scales, 1 to 5; fewer than 5 use the first weights renormalised.
        spatial_dims: 2 for (N, C, H, W) images, 3 for (N, C, D, H, W) volumes.

    Shapes:
        x, y: (N, C, H, W) or (N, C, D, H, W), every side >= `ms_ssim_min_side(scales)` (161 for 5 scales).
        output: () for 'mean' and 'sum', (N,) for 'none'.

    Example:
        >>> loss_fn = MSSSIMLoss(data_range=1.0, scales=2)
        >>> x = torch.rand(1, 3, 32, 32)
        >>> loss_fn(x, x)
        tensor(0.)
    """

    def __init__(
        self, data_range: float, reduction: Reduction = "mean", scales: int = 5, spatial_dims: int = 2
    ) -> None:
        super().__init__(data_range, reduction, spatial_dims)
        self.scales = len(ms_ssim_weights(scales))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Loss between a prediction `x` and a target `y` of the same shape."""
        self._check_rank(x)
        value = ms_ssim(x, y, data_range=self.data_range, scales=self.scales, window=self.window)
        return _reduce(1 - value, self.reduction)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scales={self.scales}"

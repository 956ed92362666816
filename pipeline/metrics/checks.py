"""Input checks shared by the metric functions, whose messages carry the offending shapes and values, and the
dtype their sums accumulate in.

Example:
    >>> check_pair(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))
    Traceback (most recent call last):
    ...
    ValueError: Input images should have the same dimensions, but got (1, 3, 8, 8) and (1, 3, 8, 9).
    >>> check_data_range(255)
    255.0
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_same_shape(x: Tensor, y: Tensor) -> None:
    """Raise ValueError unless x and y have the same shape (any dtype)."""
    if x.shape != y.shape:
        raise ValueError(
            f"Input images should have the same dimensions, but got {tuple(x.shape)} and {tuple(y.shape)}."
        )


def check_pair(x: Tensor, y: Tensor, *, ndim: int = 4) -> None:
    """Raise ValueError unless x and y are floating tensors of equal shape with `ndim` dimensions."""
    check_same_shape(x, y)
    if x.dim() != ndim:
        raise ValueError(f"Expected {ndim}-D tensors (N, C, ...), got shape {tuple(x.shape)}.")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ValueError(f"Expected floating point tensors, got {x.dtype} and {y.dtype}.")


def check_data_range(data_range: float) -> float:
    """Return data_range as a float; it must be a positive finite number."""
    value = float(data_range)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"data_range must be a positive finite number, got {data_range!r}.")
    return value


def accumulation_dtype(device: torch.device) -> torch.dtype:
    """The dtype sums over many pixels accumulate in: float64, or float32 on Apple's MPS (it has no float64).

    Example:
        >>> accumulation_dtype(torch.device("cpu")), accumulation_dtype(torch.device("mps"))
        (torch.float64, torch.float32)
    """
    return torch.float32 if device.type == "mps" else torch.float64


def needs_grad(*tensors: Tensor) -> bool:
    """True when autograd will record operations on any of `tensors` (the differentiable path is needed)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def check_min_side(x: Tensor, min_side: int, what: str) -> None:
    """Raise ValueError if any spatial side of x is shorter than `min_side`."""
    sides = tuple(x.shape[2:])
    if min(sides) < min_side:
        raise ValueError(f"{what} needs every spatial side >= {min_side} px, got {sides}.")

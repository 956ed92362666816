"""Which device the metrics run on: `--device auto` takes CUDA, then Apple's MPS, then the CPU.

MPS is implemented as torch documents it but untested on hardware here (no Apple machine in CI).

Example:
    >>> device_kind("cpu"), resolve_device("cpu")
    (<Device.CPU: 'cpu'>, device(type='cpu'))
"""

from __future__ import annotations

import torch

from pipeline.choices import Device
from pipeline.errors import UsageError

ACCELERATOR_NAMES = {Device.CUDA: "CUDA", Device.MPS: "Apple MPS"}


def mps_available() -> bool:
    """Whether torch can use Apple's Metal backend (MPS) here (macOS on Apple silicon, torch built for it)."""
    return torch.backends.mps.is_available()


def device_kind(requested: str) -> Device:
    """The device `requested` resolves to here: `auto` takes CUDA when present, then MPS, else the CPU.

    Raises:
        UsageError: `cuda` or `mps` was asked for and is not available here.

    Example:
        >>> device_kind("cpu")
        <Device.CPU: 'cpu'>
    """
    requested = Device(requested)
    if requested == Device.CPU:
        return Device.CPU
    if requested in (Device.AUTO, Device.CUDA) and torch.cuda.is_available():
        return Device.CUDA
    if requested in (Device.AUTO, Device.MPS) and mps_available():
        return Device.MPS
    if requested == Device.AUTO:
        return Device.CPU
    raise UsageError(
        f"--device {requested} was asked for, but no {ACCELERATOR_NAMES[requested]} device is visible here. "
        "Use --device cpu or auto."
    )


def resolve_device(requested: str) -> torch.device:
    """The torch device of `device_kind(requested)` (the current CUDA device for CUDA)."""
    kind = device_kind(requested)
    if kind == Device.CUDA:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(kind.value)


def compute_device(device: torch.device, precision: torch.dtype) -> torch.device:
    """Where values of `precision` are computed: on `device`, but float64 on the CPU of an MPS worker (MPS has
    no float64).

    Example:
        >>> mps = torch.device("mps")
        >>> compute_device(mps, torch.float64), compute_device(mps, torch.float32)
        (device(type='cpu'), device(type='mps'))
    """
    if device.type == "mps" and precision == torch.float64:
        return torch.device("cpu")
    return device

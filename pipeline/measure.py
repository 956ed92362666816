"""Which metrics run on a batch of aligned pairs, under a convention, and why a value is left null.

Example:
    >>> import torch
    >>> from pipeline.conventions import resolve_convention
    >>> ref = torch.full((1, 1, 8, 8), 10, dtype=torch.uint8)
    >>> convention = resolve_convention("default")
    >>> values, warnings = measure(ref, ref + 1, 255.0, ("psnr", "ssim"), convention, Cache())
    >>> round(values["psnr"][0], 2), values["ssim"], warnings
    (48.13, [None], ['image is 8x8, smaller than the 11 px SSIM window: ssim and ms_ssim left null'])
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from pipeline.conventions import ResolvedConvention, crop_border, prepare_pixels
from pipeline.errors import ImageError
from pipeline.metrics.lpips_network import LpipsNetwork
from pipeline.metrics.perceptual import lpips_of_stored_values
from pipeline.metrics.psnr import mse, psnr_from_mse
from pipeline.metrics.ssim import WINDOW_SIZE, gaussian_window, ms_ssim_min_side, ssim, ssim_and_ms_ssim
from pipeline.metrics.structural import StructuralSpec, structural_similarity
from pipeline.metrics.structural import min_side as structural_min_side

FAST_STRUCTURAL = StructuralSpec()  # `pipeline.metrics.ssim`'s definition, computed by its fast path

Values = dict[str, list[float | None]]


class Resources(Protocol):
    """What the metrics need built once per process: Gaussian windows and the LPIPS network."""

    def window(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor: ...

    def lpips_network(self, device: torch.device) -> LpipsNetwork: ...


@dataclass
class Cache:
    """`Resources` built on first use and kept; `build_network(device)` makes the LPIPS network."""

    build_network: Callable[[torch.device], LpipsNetwork] | None = None
    windows: dict[tuple, torch.Tensor] = field(default_factory=dict)
    networks: dict[str, LpipsNetwork] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def window(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (dtype, str(device))
        if key not in self.windows:
            self.windows[key] = gaussian_window(dtype=dtype, device=device)
        return self.windows[key]

    def lpips_network(self, device: torch.device) -> LpipsNetwork:
        with self.lock:
            if str(device) not in self.networks:
                if self.build_network is None:
                    raise RuntimeError("LPIPS was asked for, but no network builder was given")
                self.networks[str(device)] = self.build_network(device)
            return self.networks[str(device)]


def _floats(tensor: torch.Tensor) -> list[float | None]:
    return [float(v) for v in tensor.cpu().double().tolist()]


def measure(
    ref: torch.Tensor,
    out: torch.Tensor,
    data_range: float,
    metrics: tuple[str, ...],
    convention: ResolvedConvention,
    resources: Resources,
    *,
    ms_ssim_scales: int = 5,
) -> tuple[Values, list[str]]:
    """Metric values for a batch of aligned pairs of one shape, under a convention.

    Args:
        ref, out: (N, C, H, W) or (N, C, D, H, W) stored values (integers or floats) in [0, data_range].
        data_range: the peak value of the stored values.
        metrics: names from `pipeline.choices.METRICS`.
        convention: what the pixel metrics see (channels, crop, precision).
        resources: the Gaussian window and the LPIPS network.
        ms_ssim_scales: MS-SSIM scales.

    Returns:
        ({metric: N values, None where left null}, warnings that explain every null; one list for the batch).

    Raises:
        ImageError: the images are too small for the convention's crop.
    """
    crop = convention.crop
    if crop and min(ref.shape[-2:]) <= 2 * crop:
        raise ImageError(
            f"the reference is {ref.shape[-1]}x{ref.shape[-2]}, too small to crop {crop} px from each "
            "border. Use a smaller --crop-border or --scale."
        )
    values: Values = {}
    warnings: list[str] = []
    # LPIPS first: its activations are the larger allocations, whose freed memory the pixel metrics reuse
    if "lpips" in metrics:
        values["lpips"] = _lpips(ref, out, data_range, crop, resources, warnings)
    if set(metrics) - {"lpips"}:
        values.update(
            _pixel_metrics(ref, out, data_range, metrics, convention, resources, ms_ssim_scales, warnings)
        )
    return values, warnings


def _lpips(
    ref: torch.Tensor,
    out: torch.Tensor,
    data_range: float,
    crop: int,
    resources: Resources,
    warnings: list[str],
) -> list[float | None]:
    if ref.dim() == 5:
        warnings.append("lpips left null: LPIPS is defined on 2-D images only, not on volumes")
        return [None] * ref.shape[0]
    distance = lpips_of_stored_values(
        crop_border(ref, crop),
        crop_border(out, crop),
        data_range=data_range,
        network=resources.lpips_network(ref.device),
    )
    return _floats(distance)


def _pixel_metrics(
    ref: torch.Tensor,
    out: torch.Tensor,
    data_range: float,
    metrics: tuple[str, ...],
    convention: ResolvedConvention,
    resources: Resources,
    scales: int,
    warnings: list[str],
) -> Values:
    """MSE, PSNR, SSIM and MS-SSIM on the convention's channels; its float copies are freed on return."""
    values: Values = {}
    ref_pixels = prepare_pixels(ref, convention, data_range=data_range)
    out_pixels = prepare_pixels(out, convention, data_range=data_range)
    if {"mse", "psnr"} & set(metrics):
        if convention.spec.psnr_channels is None:
            error = mse(ref_pixels, out_pixels)
        else:  # the convention's PSNR sees other channels than its SSIM
            ref_psnr = prepare_pixels(ref, convention, data_range=data_range, for_psnr=True)
            error = mse(ref_psnr, prepare_pixels(out, convention, data_range=data_range, for_psnr=True))
        if "mse" in metrics:
            values["mse"] = _floats(error)
        if "psnr" in metrics:
            epsilon = convention.spec.psnr_epsilon * data_range**2  # given for values scaled to [0, 1]
            values["psnr"] = _floats(psnr_from_mse(error + epsilon, data_range=data_range))
    if "ms_ssim" in metrics and convention.spec.no_ms_ssim:
        values["ms_ssim"] = [None] * ref.shape[0]
        warnings.append(
            f"ms_ssim left null: {convention.spec.no_ms_ssim} (convention {convention.name.value})"
        )
        metrics = tuple(name for name in metrics if name != "ms_ssim")
    if {"ssim", "ms_ssim"} & set(metrics):
        structural = convention.spec.structural
        if structural == FAST_STRUCTURAL:
            window = resources.window(ref_pixels.dtype, ref_pixels.device)
            values.update(_structural(ref_pixels, out_pixels, data_range, metrics, window, scales, warnings))
        else:
            values.update(
                _as_specified(ref_pixels, out_pixels, data_range, metrics, structural, scales, warnings)
            )
    return values


def _structural(
    ref: torch.Tensor,
    out: torch.Tensor,
    data_range: float,
    metrics: tuple[str, ...],
    window: torch.Tensor,
    scales: int,
    warnings: list[str],
) -> Values:
    """SSIM and MS-SSIM (sharing the full-resolution filtering when both are wanted), or nulls and why."""
    count, short_side = ref.shape[0], min(ref.shape[2:])
    wanted = [name for name in ("ssim", "ms_ssim") if name in metrics]
    values: Values = {name: [None] * count for name in wanted}
    if short_side < WINDOW_SIZE:
        size = "x".join(str(side) for side in reversed(ref.shape[2:]))
        warnings.append(
            f"image is {size}, smaller than the {WINDOW_SIZE} px SSIM window: ssim and ms_ssim left null"
        )
        return values
    min_side = ms_ssim_min_side(scales)
    if "ms_ssim" in wanted and short_side >= min_side:
        ssim_value, ms_value = ssim_and_ms_ssim(ref, out, data_range=data_range, scales=scales, window=window)
        values["ms_ssim"] = _floats(ms_value)
        if "ssim" in wanted:
            values["ssim"] = _floats(ssim_value)
        return values
    if "ms_ssim" in wanted:
        warnings.append(
            f"ms_ssim left null: {scales}-scale MS-SSIM needs >= {min_side} px on the short side, got "
            f"{short_side} (set ms_ssim_scales lower to score small images)"
        )
    if "ssim" in wanted:
        values["ssim"] = _floats(ssim(ref, out, data_range=data_range, window=window))
    return values


def _as_specified(
    ref: torch.Tensor,
    out: torch.Tensor,
    data_range: float,
    metrics: tuple[str, ...],
    spec: StructuralSpec,
    scales: int,
    warnings: list[str],
) -> Values:
    """SSIM and MS-SSIM under a tool's `StructuralSpec` (`pipeline.metrics.structural`), or nulls and why."""
    count, short_side = ref.shape[0], min(ref.shape[2:])
    wanted = [name for name in ("ssim", "ms_ssim") if name in metrics]
    values: Values = {name: [None] * count for name in wanted}
    if ref.dim() != 4:
        warnings.append("ssim and ms_ssim left null: this convention's SSIM is defined on 2-D images only")
        return values
    if short_side < structural_min_side(spec):
        warnings.append(
            f"image side {short_side} px is smaller than this convention's SSIM needs "
            f"({structural_min_side(spec)} px): ssim and ms_ssim left null"
        )
        return values
    needed = structural_min_side(spec, scales)
    with_ms = "ms_ssim" in wanted and short_side >= needed
    if "ms_ssim" in wanted and not with_ms:
        warnings.append(
            f"ms_ssim left null: {scales}-scale MS-SSIM needs >= {needed} px on the short side under this "
            f"convention, got {short_side} (set ms_ssim_scales lower)"
        )
    ssim_value, ms_value = structural_similarity(
        ref, out, spec, data_range=data_range, with_ms_ssim=with_ms, scales=scales
    )
    if "ssim" in wanted:
        values["ssim"] = _floats(ssim_value)
    if ms_value is not None:
        values["ms_ssim"] = _floats(ms_value)
    return values


__all__ = ["Cache", "Resources", "measure"]

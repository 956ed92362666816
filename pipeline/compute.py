"""Score one shard of pairs inside a worker: read -> hash -> decode -> align -> metrics -> rows.

Expensive state (the LPIPS network, Gaussian taps, the torch thread setting) lives in `WorkerState`, built
once per worker process and reused for every shard that process runs.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.align import AlignedPair, align_pair
from pipeline.conventions import (
    Convention,
    crop_border,
    make_convention,
    prepare_for_pixel_metrics,
    to_batch,
)
from pipeline.errors import ImageError, WeightsError
from pipeline.images import DecodedImage, read_image
from pipeline.metrics.psnr import mse as mse_metric
from pipeline.metrics.psnr import psnr_from_mse
from pipeline.metrics.ssim import WINDOW_SIZE, gaussian_window, ms_ssim_min_side, ssim, ssim_and_ms_ssim


@dataclass(frozen=True)
class PairTask:
    """What a worker receives for one pair: paths, never pixels."""

    key: str
    group: str
    ref_path: str
    out_path: str


@dataclass(frozen=True)
class ScoreSettings:
    """The picklable subset of the config that workers need."""

    metrics: tuple[str, ...]
    convention: str = "default"
    crop: int = 0
    size_mismatch: str = "error"
    ms_ssim_scales: int = 5
    data_range: float | None = None
    lpips_net: str = "alex"
    lpips_weights: str | None = None
    device: str = "auto"
    torch_threads: int | None = None
    run_id: str = ""


@dataclass
class WorkerState:
    """Per-process cache: device, LPIPS networks and Gaussian windows, built on first use."""

    threads_set: int | None = None
    networks: dict[tuple, torch.nn.Module] = field(default_factory=dict)
    windows: dict[tuple, torch.Tensor] = field(default_factory=dict)

    def configure_threads(self, threads: int | None) -> None:
        if threads and threads != self.threads_set:
            torch.set_num_threads(threads)
            self.threads_set = threads

    def window(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (dtype, str(device))
        if key not in self.windows:
            self.windows[key] = gaussian_window(dtype=dtype, device=device)
        return self.windows[key]

    def lpips_network(self, settings: ScoreSettings, device: torch.device) -> torch.nn.Module:
        from pipeline.metrics.perceptual import build_lpips_network

        key = (settings.lpips_net, settings.lpips_weights, str(device))
        if key not in self.networks:
            self.networks[key] = build_lpips_network(
                settings.lpips_net, settings.lpips_weights, device=device, allow_download=False
            )
        return self.networks[key]


_STATE = WorkerState()


def resolve_device(requested: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without CUDA raises a clear error."""
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise WeightsError(
            "--device cuda was asked for, but this worker has no CUDA device. Use --device cpu."
        )
    if requested in ("cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device(requested if requested != "auto" else "cpu")


def score_shard(tasks: list[PairTask], settings: ScoreSettings) -> list[dict[str, Any]]:
    """Score every pair of a shard; a pair that fails becomes an error row, the rest are still scored.

    Args:
        tasks: the shard's pairs.
        settings: metrics, convention and device.

    Returns:
        One row dict per task, in order, with the columns of `pipeline.sink.SCHEMA`.
    """
    _STATE.configure_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    convention = make_convention(settings.convention, crop=settings.crop)
    with torch.inference_mode():
        return [score_pair(task, settings, convention, device, _STATE) for task in tasks]


def score_pair(
    task: PairTask, settings: ScoreSettings, convention: Convention, device: torch.device, state: WorkerState
) -> dict[str, Any]:
    """One row for one pair; never raises for data problems."""
    start = time.perf_counter()
    row: dict[str, Any] = {
        "key": task.key,
        "group": task.group,
        "ref_path": task.ref_path,
        "out_path": task.out_path,
        "status": "ok",
        "error": None,
        "warnings": [],
        "run_id": settings.run_id,
    }
    try:
        ref = read_image(task.ref_path, data_range=settings.data_range)
        row.update(_describe(ref), ref_sha256=ref.sha256)
        out = read_image(task.out_path, data_range=settings.data_range)
        row["out_sha256"] = out.sha256
        aligned = align_pair(ref, out, size_mismatch=settings.size_mismatch)
        values, warnings = compute_metrics(aligned, settings, convention, device, state, task.key)
        row.update(values)
        row["warnings"] = [
            *_prefixed("reference", ref.warnings),
            *_prefixed("output", out.warnings),
            *aligned.warnings,
            *warnings,
        ]
    except ImageError as exc:
        row.update(status="error", error=str(exc))
    except WeightsError:
        raise
    except Exception as exc:
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        row.update(status="error", error=f"Unexpected failure scoring {task.key!r}: {detail}")
    row["seconds"] = time.perf_counter() - start
    return row


def _describe(image: DecodedImage) -> dict[str, int]:
    height, width, channels = image.pixels.shape
    return {"height": height, "width": width, "channels": channels, "bit_depth": image.bit_depth}


def _prefixed(side: str, warnings: list[str]) -> list[str]:
    return [f"{side}: {text}" for text in warnings]


def compute_metrics(
    pair: AlignedPair,
    settings: ScoreSettings,
    convention: Convention,
    device: torch.device,
    state: WorkerState,
    pair_key: str = "",
) -> tuple[dict[str, float | None], list[str]]:
    """Metric values for one aligned pair under a convention.

    Returns:
        ({metric: value or None}, warnings explaining every None).
    """
    wanted = set(settings.metrics)
    values: dict[str, float | None] = {}
    warnings: list[str] = []
    data_range = pair.data_range
    ref_rgb = to_batch(pair.ref, dtype=convention.dtype, device=device)
    out_rgb = to_batch(pair.out, dtype=convention.dtype, device=device)
    if convention.crop and min(ref_rgb.shape[-2:]) <= 2 * convention.crop:
        raise ImageError(
            f"Pair {pair_key!r}: the reference is {ref_rgb.shape[-2]}x{ref_rgb.shape[-1]}, "
            f"too small to crop {convention.crop} px "
            "from each border. Use a smaller --crop-border or --scale."
        )
    ref_pix = prepare_for_pixel_metrics(ref_rgb, convention, data_range=data_range)
    out_pix = prepare_for_pixel_metrics(out_rgb, convention, data_range=data_range)

    if wanted & {"mse", "psnr"}:
        mse_value = mse_metric(ref_pix, out_pix)
        if "mse" in wanted:
            values["mse"] = float(mse_value)
        if "psnr" in wanted:
            values["psnr"] = float(psnr_from_mse(mse_value, data_range=data_range))

    if wanted & {"ssim", "ms_ssim"}:
        values.update(_structural(ref_pix, out_pix, wanted, settings, data_range, state, warnings))

    if "lpips" in wanted:
        from pipeline.metrics.perceptual import lpips

        network = state.lpips_network(settings, device)
        ref_crop = crop_border(ref_rgb, convention.crop).float()
        out_crop = crop_border(out_rgb, convention.crop).float()
        values["lpips"] = float(lpips(ref_crop, out_crop, data_range=data_range, network=network))
    return values, warnings


def _structural(
    ref: torch.Tensor,
    out: torch.Tensor,
    wanted: set[str],
    settings: ScoreSettings,
    data_range: float,
    state: WorkerState,
    warnings: list[str],
) -> dict[str, float | None]:
    short_side = min(ref.shape[-2:])
    window = state.window(ref.dtype, ref.device)
    values: dict[str, float | None] = {name: None for name in wanted & {"ssim", "ms_ssim"}}
    if short_side < WINDOW_SIZE:
        warnings.append(
            f"image is {ref.shape[-2]}x{ref.shape[-1]}, smaller than the {WINDOW_SIZE} px SSIM window: "
            "ssim and ms_ssim left null"
        )
        return values
    ms_min = ms_ssim_min_side(settings.ms_ssim_scales)
    if "ms_ssim" in wanted and short_side >= ms_min:
        ssim_value, ms_value = ssim_and_ms_ssim(
            ref, out, data_range=data_range, scales=settings.ms_ssim_scales, window=window
        )
        values["ms_ssim"] = float(ms_value)
        if "ssim" in wanted:
            values["ssim"] = float(ssim_value)
        return values
    if "ms_ssim" in wanted:
        warnings.append(
            f"ms_ssim left null: {settings.ms_ssim_scales}-scale MS-SSIM needs >= {ms_min} px "
            f"on the short side, "
            f"got {short_side} (set ms_ssim_scales lower to score small images)"
        )
    if "ssim" in wanted:
        values["ssim"] = float(ssim(ref, out, data_range=data_range, window=window))
    return values

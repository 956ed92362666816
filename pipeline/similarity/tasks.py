"""The Dask tasks of `iqa similar`: a task compares two blocks of images, returning flat (a, b, value) arrays.

Workers receive paths, never pixels; each worker process prepares an image once (`prepare.load_block`'s
cache) and builds the LPIPS network once (`pipeline.worker.current_state`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.devices import compute_device, resolve_device
from pipeline.metrics.lpips_weights import BackboneFile
from pipeline.similarity.pairwise import lpips_matrix, ms_ssim_matrix, psnr_matrix, ssim_matrix, ssim_stats
from pipeline.similarity.prepare import load_block
from pipeline.worker import current_state

DEFAULT_METRIC = "ssim"
DEFAULT_SIZE = 128
DEFAULT_BLOCK = 64


@dataclass(frozen=True)
class SimilarSettings:
    """What workers need to prepare and compare images (picklable)."""

    metric: str = DEFAULT_METRIC
    size: int = DEFAULT_SIZE
    ms_ssim_scales: int = 5
    lpips_net: str = "alex"
    lpips_weights: BackboneFile | None = None
    device: str = "auto"


@dataclass(frozen=True)
class BlockPair:
    """One task: compare block `a_paths` (global indexes from `a_start`) with block `b_paths`.

    `diagonal` is True when both are the same block of a self comparison: only pairs `a < b` are computed.
    """

    a_start: int
    a_paths: tuple[str, ...]
    b_start: int
    b_paths: tuple[str, ...]
    diagonal: bool = False


@dataclass
class BlockResult:
    """What one task returns: flat `(P,)` arrays of global indexes and values, and failed paths."""

    a_index: np.ndarray
    b_index: np.ndarray
    values: np.ndarray
    failures: dict[str, str] = field(default_factory=dict)


def block_pairs(paths_a: list[str], paths_b: list[str] | None, block: int) -> Iterator[BlockPair]:
    """Tasks for a self comparison (`paths_b` None: blocks `i <= j` of `paths_a`) or the full `a x b` grid."""
    starts_a = list(range(0, len(paths_a), block))
    for i, start_i in enumerate(starts_a):
        chunk_a = tuple(paths_a[start_i : start_i + block])
        if paths_b is None:
            for start_j in starts_a[i:]:
                yield BlockPair(start_i, chunk_a, start_j, tuple(paths_a[start_j : start_j + block]),
                                diagonal=start_i == start_j)  # fmt: skip
        else:
            for start_j in range(0, len(paths_b), block):
                yield BlockPair(start_i, chunk_a, start_j, tuple(paths_b[start_j : start_j + block]))


def compare_blocks(task: BlockPair, settings: SimilarSettings) -> BlockResult:
    """Worker task: prepare both blocks (cached per process), compute the metric matrix, return flat rows.

    Returns:
        Global `(a_index, b_index, value)` arrays of every computed pair (only `a < b` on a diagonal block)
        and the paths that could not be prepared, with the reason.
    """
    device = compute_device(resolve_device(settings.device), torch.float64)  # the matrices are float64
    pos_a, images_a, failures = load_block(task.a_paths, settings.size)
    if task.diagonal:
        pos_b, images_b = pos_a, images_a
    else:
        pos_b, images_b, failures_b = load_block(task.b_paths, settings.size)
        failures.update(failures_b)
    empty = np.zeros(0, dtype=np.int64)
    if images_a is None or images_b is None:
        return BlockResult(empty, empty, np.zeros(0), failures)
    with torch.inference_mode():
        matrix = _metric_matrix(images_a.to(device), images_b.to(device), settings, device, task.diagonal)
    values = matrix.cpu().numpy()
    rows, cols = np.nonzero(
        np.triu(np.ones_like(values, dtype=bool), k=1) if task.diagonal else ~np.isnan(values)
    )
    return BlockResult(
        task.a_start + np.asarray(pos_a, dtype=np.int64)[rows],
        task.b_start + np.asarray(pos_b, dtype=np.int64)[cols],
        values[rows, cols].astype(np.float64),
        failures,
    )


def _metric_matrix(
    a: torch.Tensor, b: torch.Tensor, settings: SimilarSettings, device: torch.device, diagonal: bool
) -> torch.Tensor:
    resources = current_state().resources(settings.lpips_net, settings.lpips_weights)
    window = resources.window(torch.float32, device)
    if settings.metric == "ssim":
        stats_a = ssim_stats(a, window)
        stats_b = stats_a if diagonal else ssim_stats(b, window)
        return ssim_matrix(stats_a, stats_b, diagonal=diagonal)
    if settings.metric == "ms_ssim":
        return ms_ssim_matrix(a, b, window, scales=settings.ms_ssim_scales, diagonal=diagonal)
    if settings.metric == "psnr":
        return psnr_matrix(a, b)
    return lpips_matrix(a, b, resources.lpips_network(device))

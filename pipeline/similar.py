"""All-pairs similarity of a folder of images (`iqa similar`), or of a folder against a reference folder.

Common-size policy: every image is decoded by `pipeline.images.read_image`, converted to RGB (a gray image is
replicated to 3 channels), scaled to [0, 1] by its data_range, resized with bicubic interpolation (torch
`interpolate(..., antialias=True)`) so that its SHORT side equals `size`, then centre-cropped to
`size x size`. The aspect ratio is kept up to that centre crop, so a resized or slightly cropped copy of a
photo lands on nearly the same pixels as the original. Metrics then run on the `(3, size, size)` tensors with
`data_range=1.0`.

Engine: the images are split into blocks of `block` images; one Dask task compares two blocks (only blocks
`i <= j` when a folder is compared with itself) and returns `(a_index, b_index, value)` arrays, never pixels.
Workers receive paths; each worker process keeps the prepared images in an LRU cache bounded in bytes, so a
block used by several tasks on that worker is decoded once. Per-image work is done once per block and shared
by all pairs:

- `ssim`: per-image blurred means and variances; per pair only the blurred cross product (exactly the SSIM
  of `pipeline.metrics.ssim`, Wang et al. 2004).
- `psnr`: squared Euclidean distances between the flattened images (float64), `10 log10(1 / MSE)`.
- `lpips`: LPIPS v0.1 is a sum over layers of `sum_c w_c mean_hw (f_a - f_b)^2` of unit-normalised features,
  i.e. the squared Euclidean distance between per-image embeddings `f * sqrt(w_c / (H W))`; features are
  computed once per image.
- `ms_ssim`: `pipeline.metrics.ms_ssim` on the broadcast pairs (5 scales when `size >= 161`, else the most
  scales the size allows: 4 at the default 128 px).

Limits: the metrics are pixel-aligned, so near-duplicates are found when they cover the same field of view
(re-encoded, resized, brightened, cropped by a few percent per border); a crop of 8 % per border or more
changes the scale of the content after the centre crop and is often not found.

The default size is 128 px, not 256: all-pairs SSIM costs about 1.7 ms per pair at 128 px and about 16 ms at
256 px on one CPU core, so 500 images (124,750 pairs) take minutes instead of most of an hour on a laptop.

Results (RUN_DIR): `similarity.parquet` (long form `a, b, value, metric`; every ordered pair `a != b`, so a
folder compared with itself has both `(a, b)` and `(b, a)` with the same value), `nearest.csv` (each image's
nearest match), `manifest.json` (images, skipped files with the reason, settings, timings) and `similar.html`.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.compute import WorkerState, resolve_device
from pipeline.errors import IQAError, RunDirError, UsageError
from pipeline.images import is_image_path, read_image
from pipeline.metrics.registry import higher_is_better
from pipeline.metrics.ssim import K1, K2, WINDOW_SIZE, ms_ssim, ms_ssim_min_side
from pipeline.sink import write_atomic

SIMILAR_METRICS: tuple[str, ...] = ("ssim", "ms_ssim", "psnr", "lpips")
DEFAULT_METRIC = "ssim"
DEFAULT_SIZE = 128
DEFAULT_BLOCK = 64
CACHE_BYTES = 512 * 2**20
PAIR_CHUNK_VALUES = 200_000
TOP_PAIRS = 20
PARQUET_NAME = "similarity.parquet"
NEAREST_NAME = "nearest.csv"
MANIFEST_NAME = "manifest.json"
HTML_NAME = "similar.html"
SIZE_POLICY = (
    "decoded, RGB (gray replicated), scaled to [0, 1], bicubic resize (antialiased) so that the short side "
    "equals SIZE, centre crop to SIZE x SIZE (aspect ratio kept up to the crop)"
)


@dataclass(frozen=True)
class SimilarSettings:
    """What workers need to prepare and compare images (picklable)."""

    metric: str = DEFAULT_METRIC
    size: int = DEFAULT_SIZE
    ms_ssim_scales: int = 5
    lpips_net: str = "alex"
    lpips_weights: str | None = None
    torch_threads: int | None = None
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


@dataclass
class ImageSet:
    """The images of one folder: relative POSIX names and absolute paths, sorted by name."""

    root: str
    names: list[str]
    paths: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)


@dataclass
class SimilarResult:
    """Outcome of `run_similar`.

    Attributes:
        names_a: `(N,)` names of the compared images (relative to DIR), failed ones excluded from `valid_a`.
        names_b: `(M,)` names of the images compared against (DIR itself, or REF_DIR).
        matrix: `(N, M)` values; NaN on the diagonal of a self comparison and for failed images.
        nearest: `{'image', 'nearest', 'value'}` per valid image of DIR, in name order.
    """

    metric: str
    size: int
    self_mode: bool
    names_a: list[str]
    names_b: list[str]
    paths_a: list[str]
    paths_b: list[str]
    matrix: np.ndarray
    valid_a: np.ndarray
    valid_b: np.ndarray
    nearest: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    timings: dict[str, float]
    comparisons: int
    executor: str
    run_dir: Path
    files: dict[str, str] = field(default_factory=dict)

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)


# Listing


def list_images(folder: str | os.PathLike[str], what: str = "Image") -> ImageSet:
    """Image files under `folder`, recursively (hidden entries ignored, symlinked folders not followed).

    Raises:
        UsageError: the folder does not exist or is not a directory.
    """
    root = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(root):
        state = "does not exist" if not os.path.exists(root) else "is not a directory"
        raise UsageError(f"{what} folder {root} {state}; pass a folder of images.")
    found: list[tuple[str, str]] = []
    skipped: list[dict[str, str]] = []

    def on_error(exc: OSError) -> None:
        skipped.append({"path": str(exc.filename), "reason": f"cannot read directory: {exc.strerror or exc}"})

    for directory, subdirs, files in os.walk(root, onerror=on_error):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or not is_image_path(name):
                continue
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                skipped.append({"path": path, "reason": "not a regular file (or a broken symlink)"})
                continue
            found.append((Path(os.path.relpath(path, root)).as_posix(), path))
    found.sort()
    return ImageSet(root, [n for n, _ in found], [p for _, p in found], skipped)


# Preparation (inside workers)


def prepare_image(path: str, size: int) -> torch.Tensor:
    """Decode one file and apply the common-size policy.

    Returns:
        `(3, size, size)` float32 in [0, 1].

    Raises:
        IQAError: the file cannot be decoded (`ImageError`) or needs an explicit data range.
    """
    decoded = read_image(path)
    pixels = torch.from_numpy(decoded.pixels.astype(np.float32) / np.float32(decoded.data_range))
    image = pixels.permute(2, 0, 1).unsqueeze(0)
    if image.shape[1] == 1:
        image = image.expand(-1, 3, -1, -1)
    height, width = image.shape[2:]
    scale = size / min(height, width)
    new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
    if new_size != (height, width):
        image = F.interpolate(image, size=new_size, mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return image[0, :, top : top + size, left : left + size].clamp(0.0, 1.0).contiguous()


class PreparedCache:
    """LRU cache of prepared images (or their failure reasons), bounded in bytes, one per worker process."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.entries: OrderedDict[tuple[str, int], torch.Tensor | str] = OrderedDict()

    def get(self, path: str, size: int) -> torch.Tensor | str:
        """The prepared `(3, size, size)` tensor of `path`, or the reason it cannot be used."""
        key = (path, size)
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        try:
            entry: torch.Tensor | str = prepare_image(path, size)
        except IQAError as exc:
            entry = str(exc)
        except Exception as exc:
            entry = f"{path}: {type(exc).__name__}: {exc}"
        self.entries[key] = entry
        self.bytes += _nbytes(entry)
        while self.bytes > self.max_bytes and len(self.entries) > 1:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= _nbytes(dropped)
        return entry


def _nbytes(entry: torch.Tensor | str) -> int:
    return entry.numel() * entry.element_size() if isinstance(entry, torch.Tensor) else len(entry)


_CACHE = PreparedCache()
_STATE = WorkerState()


def _load_block(paths: tuple[str, ...], size: int) -> tuple[list[int], torch.Tensor | None, dict[str, str]]:
    """Prepared images of a block: positions that loaded, their `(B, 3, S, S)` stack, failures by path."""
    positions, tensors, failures = [], [], {}
    for position, path in enumerate(paths):
        entry = _CACHE.get(path, size)
        if isinstance(entry, str):
            failures[path] = entry
        else:
            positions.append(position)
            tensors.append(entry)
    return positions, (torch.stack(tensors) if tensors else None), failures


# Pairwise metrics: per-image features once, then (Ba, Bb) matrices


@dataclass
class SSIMStats:
    """Per-image SSIM statistics, each `(B, 3, S', S')` with `S' = S - 10` (valid Gaussian filtering)."""

    centred: torch.Tensor
    mu: torch.Tensor
    mu_centred: torch.Tensor
    sigma: torch.Tensor
    band: torch.Tensor


def band_matrix(size: int, window: torch.Tensor) -> torch.Tensor:
    """`(size - 10, size)` banded matrix G with `G @ X @ G.T` = the separable 'valid' Gaussian blur of X."""
    taps = window.numel()
    band = torch.zeros(size - taps + 1, size, dtype=window.dtype, device=window.device)
    for row in range(size - taps + 1):
        band[row, row : row + taps] = window
    return band


def _blur(images: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """'valid' Gaussian blur of `(..., S, S)` as two matrix products (faster than depthwise conv on CPU)."""
    return band @ images @ band.T


def ssim_stats(images: torch.Tensor, window: torch.Tensor) -> SSIMStats:
    """`(B, 3, S, S)` in [0, 1] -> per-image means and variances; each image is centred by its own mean."""
    band = band_matrix(images.shape[-1], window)
    mean = images.flatten(2).mean(dim=2)[:, :, None, None]
    centred = images - mean
    mu_centred = _blur(centred, band)
    sigma = _blur(centred * centred, band) - mu_centred * mu_centred
    return SSIMStats(centred, mu_centred + mean, mu_centred, sigma, band)


def ssim_matrix(a: SSIMStats, b: SSIMStats, *, diagonal: bool = False) -> torch.Tensor:
    """SSIM (data_range 1) of every pair; `diagonal` computes only the entries right of the diagonal.

    Returns:
        `(Ba, Bb)` float64; entries not computed are NaN.
    """
    c1, c2 = K1**2, K2**2
    count_a, count_b = a.centred.shape[0], b.centred.shape[0]
    out = torch.full((count_a, count_b), float("nan"), dtype=torch.float64)
    chunk = max(1, PAIR_CHUNK_VALUES // a.centred[0].numel())
    for i in range(count_a):
        first = i + 1 if diagonal else 0
        for start in range(first, count_b, chunk):
            part = slice(start, min(count_b, start + chunk))
            cross = _blur(a.centred[i : i + 1] * b.centred[part], a.band)
            sigma_xy = cross - a.mu_centred[i : i + 1] * b.mu_centred[part]
            cs_map = (2 * sigma_xy + c2) / (a.sigma[i : i + 1] + b.sigma[part] + c2)
            mu_x, mu_y = a.mu[i : i + 1], b.mu[part]
            luminance = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
            out[i, part] = (luminance * cs_map).flatten(2).mean(dim=2).mean(dim=1).double()
    return out


def ms_ssim_matrix(
    a: torch.Tensor, b: torch.Tensor, window: torch.Tensor, *, scales: int, diagonal: bool = False
) -> torch.Tensor:
    """MS-SSIM (data_range 1) of every pair of `(Ba, 3, S, S)` and `(Bb, 3, S, S)`; `(Ba, Bb)` float64."""
    out = torch.full((a.shape[0], b.shape[0]), float("nan"), dtype=torch.float64)
    chunk = max(1, PAIR_CHUNK_VALUES // a[0].numel())
    for i in range(a.shape[0]):
        first = i + 1 if diagonal else 0
        for start in range(first, b.shape[0], chunk):
            part = b[start : start + chunk]
            x = a[i : i + 1].expand(part.shape[0], -1, -1, -1)
            values = ms_ssim(x, part, data_range=1.0, scales=scales, window=window)
            out[i, start : start + part.shape[0]] = values.double()
    return out


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances of `(Ba, D)` and `(Bb, D)` rows, summed pairwise (no Gram cancellation)."""
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square()


def psnr_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR (data_range 1, dB) of every pair of `(Ba, 3, S, S)` and `(Bb, 3, S, S)`; `(Ba, Bb)` float64."""
    flat_a, flat_b = a.flatten(1).double(), b.flatten(1).double()
    mse = squared_distances(flat_a, flat_b) / flat_a.shape[1]
    return 10 * torch.log10(1.0 / mse)


def lpips_embeddings(images: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
    """`(B, 3, S, S)` in [0, 1] -> `(B, D)` embeddings whose squared distances are LPIPS v0.1 values.

    Each layer's unit-normalised features are weighted by `sqrt(w_c / (H W))` (the linear layer's
    non-negative 1x1 weights), so `sum_c w_c mean_hw (f_a - f_b)^2 = |e_a - e_b|^2` summed over layers.
    """
    from pipeline.metrics.lpips_network import unit_normalize
    from pipeline.metrics.perceptual import trunk_features

    outputs = trunk_features(network, network.scaling_layer(2 * images - 1))
    parts = []
    for layer, lin in zip(outputs, network.lins, strict=True):
        weight = lin.model[-1].weight.reshape(1, -1, 1, 1)
        features = unit_normalize(layer)
        scale = torch.sqrt(weight / (features.shape[2] * features.shape[3]))
        parts.append((features * scale).flatten(1))
    return torch.cat(parts, dim=1)


def lpips_matrix(a: torch.Tensor, b: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
    """LPIPS of every pair of `(Ba, 3, S, S)` and `(Bb, 3, S, S)` images; `(Ba, Bb)` float64."""
    return squared_distances(lpips_embeddings(a, network), lpips_embeddings(b, network)).double()


def compare_blocks(task: BlockPair, settings: SimilarSettings) -> BlockResult:
    """Worker task: prepare both blocks (cached per process), compute the metric matrix, return flat rows.

    Returns:
        Global `(a_index, b_index, value)` arrays of every computed pair (only `a < b` on a diagonal block)
        and the paths that could not be prepared, with the reason.
    """
    _STATE.configure_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    pos_a, images_a, failures = _load_block(task.a_paths, settings.size)
    if task.diagonal:
        pos_b, images_b = pos_a, images_a
    else:
        pos_b, images_b, failures_b = _load_block(task.b_paths, settings.size)
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
    window = _STATE.window(torch.float32, device)
    if settings.metric == "ssim":
        stats_a = ssim_stats(a, window)
        stats_b = stats_a if diagonal else ssim_stats(b, window)
        return ssim_matrix(stats_a, stats_b, diagonal=diagonal)
    if settings.metric == "ms_ssim":
        return ms_ssim_matrix(a, b, window, scales=settings.ms_ssim_scales, diagonal=diagonal)
    if settings.metric == "psnr":
        return psnr_matrix(a, b)
    from pipeline.compute import ScoreSettings

    network_settings = ScoreSettings(
        metrics=("lpips",), lpips_net=settings.lpips_net, lpips_weights=settings.lpips_weights
    )
    return lpips_matrix(a, b, _STATE.lpips_network(network_settings, device))


# Driver (client side)


def block_pairs(count_a: int, count_b: int | None, block: int, paths_a: list[str], paths_b: list[str]):
    """Tasks for a self comparison (`count_b` None: blocks `i <= j`) or a full `a x b` grid."""
    starts_a = range(0, count_a, block)
    if count_b is None:
        for i, start_i in enumerate(starts_a):
            for start_j in list(starts_a)[i:]:
                yield BlockPair(
                    start_i,
                    tuple(paths_a[start_i : start_i + block]),
                    start_j,
                    tuple(paths_a[start_j : start_j + block]),
                    diagonal=start_i == start_j,
                )
        return
    for start_i in starts_a:
        for start_j in range(0, count_b, block):
            yield BlockPair(
                start_i,
                tuple(paths_a[start_i : start_i + block]),
                start_j,
                tuple(paths_b[start_j : start_j + block]),
            )


def ms_ssim_scales_for(size: int) -> int:
    """Most MS-SSIM scales (at most 5) whose minimum side fits `size`.

    Raises:
        UsageError: `size` is below the 11 px window.
    """
    for scales in range(5, 0, -1):
        if ms_ssim_min_side(scales) <= size:
            return scales
    raise UsageError(f"--size {size} is below the {WINDOW_SIZE} px SSIM window; use --size 11 or more.")


def check_options(metric: str, size: int, block: int) -> None:
    """Validate user options; raises `UsageError` naming the option."""
    if metric not in SIMILAR_METRICS:
        raise UsageError(f"--metric {metric!r} is not supported; choose one of {', '.join(SIMILAR_METRICS)}.")
    if size < WINDOW_SIZE:
        raise UsageError(f"--size {size} is below the {WINDOW_SIZE} px SSIM window; use --size 11 or more.")
    if block < 1:
        raise UsageError(f"--block must be at least 1 image, got {block}.")


def check_run_dir(run_dir: Path, *, overwrite: bool) -> None:
    """Refuse to replace an earlier `iqa similar` run unless `overwrite`; create the folder."""
    existing = [name for name in (PARQUET_NAME, MANIFEST_NAME, HTML_NAME) if (run_dir / name).exists()]
    if existing and not overwrite:
        raise RunDirError(
            f"{run_dir} already holds results ({', '.join(existing)}); pass --overwrite to replace them "
            "or choose another -o RUN_DIR."
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"Cannot create run directory {run_dir}: {exc.strerror or exc}.") from exc


def run_similar(
    folder: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    against: str | os.PathLike[str] | None = None,
    metric: str = DEFAULT_METRIC,
    size: int = DEFAULT_SIZE,
    block: int = DEFAULT_BLOCK,
    scheduler: str | None = None,
    workers: int | None = None,
    lpips_net: str = "alex",
    lpips_weights: str | None = None,
    overwrite: bool = False,
    report: bool = True,
) -> SimilarResult:
    """Compare every image of `folder` with every other (or with every image of `against`) and write RUN_DIR.

    Args:
        folder: folder of images (walked recursively).
        run_dir: where `similarity.parquet`, `nearest.csv`, `manifest.json` and `similar.html` go.
        against: optional folder of reference images; then the grid is `folder x against`.
        metric: 'ssim' (default), 'ms_ssim', 'psnr' or 'lpips'.
        size: common side in pixels (see the module docstring for the policy).
        block: images per block; a task compares two blocks.
        scheduler, workers: as for `iqa score` (embedded LocalCluster by default).
        lpips_net, lpips_weights: LPIPS backbone and its checkpoint (resolved like `iqa score`, strictly).
        overwrite: replace results already in `run_dir`.
        report: also write `similar.html`.

    Returns:
        The result with the `(N, M)` matrix and each image's nearest match.

    Raises:
        UsageError: bad options, missing folders, fewer than two images to compare.
        WeightsError: LPIPS weights are missing.
        RunDirError: `run_dir` holds an earlier run (without `overwrite`) or cannot be written.
    """
    from pipeline.cluster import open_executor, run_bounded

    started = time.perf_counter()
    check_options(metric, size, block)
    run_path = Path(run_dir)
    set_a = list_images(folder, "Image")
    set_b = list_images(against, "Reference") if against is not None else set_a
    self_mode = against is None
    if len(set_a.paths) < (2 if self_mode else 1) or not set_b.paths:
        raise UsageError(
            f"Nothing to compare: {len(set_a.paths)} image(s) in {set_a.root}"
            + ("" if self_mode else f" and {len(set_b.paths)} in {set_b.root}")
            + "; a similarity search needs at least two images."
        )
    check_run_dir(run_path, overwrite=overwrite)
    weights = None
    if metric == "lpips":
        from pipeline.metrics.perceptual import resolve_backbone

        weights = str(resolve_backbone(lpips_net, lpips_weights))
    timings = {"list_s": time.perf_counter() - started}

    count_a, count_b = len(set_a.paths), len(set_b.paths)
    matrix = np.full((count_a, count_b), np.nan)
    failures: dict[str, str] = {}
    compare_start = time.perf_counter()
    with open_executor(scheduler, workers=workers) as execution:
        settings = SimilarSettings(
            metric=metric,
            size=size,
            ms_ssim_scales=ms_ssim_scales_for(size) if metric == "ms_ssim" else 5,
            lpips_net=lpips_net,
            lpips_weights=weights,
            torch_threads=execution.torch_threads,
        )
        tasks = block_pairs(count_a, None if self_mode else count_b, block, set_a.paths, set_b.paths)
        in_flight = 2 * execution.worker_count
        for task, result, error in run_bounded(
            execution.executor, compare_blocks, tasks, settings, max_in_flight=in_flight
        ):
            if error is not None:
                if isinstance(error, IQAError):
                    raise error
                raise IQAError(
                    f"Comparing images {task.a_start}.. with {task.b_start}.. failed on a worker "
                    f"({type(error).__name__}: {error}); rerun with --scheduler sync to see the traceback."
                ) from error
            matrix[result.a_index, result.b_index] = result.values
            if self_mode:
                matrix[result.b_index, result.a_index] = result.values
            failures.update(result.failures)
        description = execution.description
    timings["compare_s"] = time.perf_counter() - compare_start

    valid_a = np.array([p not in failures for p in set_a.paths], dtype=bool)
    valid_b = valid_a if self_mode else np.array([p not in failures for p in set_b.paths], dtype=bool)
    if self_mode:
        np.fill_diagonal(matrix, np.nan)
    skipped = set_a.skipped + ([] if self_mode else set_b.skipped)
    skipped += [{"path": path, "reason": reason} for path, reason in sorted(failures.items())]
    comparisons = (
        int(valid_a.sum()) * (int(valid_a.sum()) - 1) // 2
        if self_mode
        else int(valid_a.sum() * valid_b.sum())
    )
    result = SimilarResult(
        metric=metric,
        size=size,
        self_mode=self_mode,
        names_a=set_a.names,
        names_b=set_b.names,
        paths_a=set_a.paths,
        paths_b=set_b.paths,
        matrix=matrix,
        valid_a=valid_a,
        valid_b=valid_b,
        nearest=nearest_matches(matrix, set_a.names, set_b.names, valid_a, valid_b, higher_is_better(metric)),
        skipped=skipped,
        timings=timings,
        comparisons=comparisons,
        executor=description,
        run_dir=run_path,
    )
    write_start = time.perf_counter()
    write_parquet(result, run_path / PARQUET_NAME)
    write_nearest(result.nearest, run_path / NEAREST_NAME)
    result.files = {"parquet": str(run_path / PARQUET_NAME), "nearest": str(run_path / NEAREST_NAME)}
    timings["write_s"] = time.perf_counter() - write_start
    if report:
        from pipeline.report.similar_page import write_similar_page

        report_start = time.perf_counter()
        result.files["html"] = str(write_similar_page(result, run_path / HTML_NAME))
        timings["report_s"] = time.perf_counter() - report_start
    timings["total_s"] = time.perf_counter() - started
    result.files["manifest"] = str(run_path / MANIFEST_NAME)
    write_manifest(result, set_a.root, None if self_mode else set_b.root, block, run_path / MANIFEST_NAME)
    return result


def nearest_matches(
    matrix: np.ndarray,
    names_a: list[str],
    names_b: list[str],
    valid_a: np.ndarray,
    valid_b: np.ndarray,
    higher_better: bool,
) -> list[dict[str, Any]]:
    """Each valid row's best column of the `(N, M)` matrix (NaN entries ignored), in row order."""
    scores = np.where(np.isnan(matrix) | ~valid_b[None, :], -np.inf, matrix if higher_better else -matrix)
    nearest = []
    for row in np.flatnonzero(valid_a):
        column = int(np.argmax(scores[row]))
        if not valid_b[column] or np.isnan(matrix[row, column]):
            continue
        nearest.append(
            {"image": names_a[row], "nearest": names_b[column], "value": float(matrix[row, column])}
        )
    return nearest


def top_pairs(result: SimilarResult, count: int = TOP_PAIRS) -> list[tuple[int, int, float]]:
    """The `count` most similar pairs `(row, column, value)`; a self comparison counts each pair once."""
    scores = result.matrix if result.higher_is_better else -result.matrix
    scores = np.where(np.isnan(scores), -np.inf, scores)
    if result.self_mode:
        scores = np.where(np.triu(np.ones_like(scores, dtype=bool), k=1), scores, -np.inf)
    flat = scores.ravel()
    count = min(count, int(np.isfinite(flat).sum() + np.isposinf(flat).sum()))
    if count == 0:
        return []
    best = np.argpartition(-flat, count - 1)[:count]
    best = best[np.argsort(-flat[best], kind="stable")]
    columns = scores.shape[1]
    return [(int(i // columns), int(i % columns), float(result.matrix.ravel()[i])) for i in best]


# Writers


def parquet_schema():
    """Arrow schema of `similarity.parquet`: names dictionary-encoded, `value` in the metric's unit."""
    import pyarrow as pa

    names = pa.dictionary(pa.int32(), pa.string())
    return pa.schema(
        [
            pa.field("a", names, nullable=False),
            pa.field("b", names, nullable=False),
            pa.field("value", pa.float64()),
            pa.field("metric", names, nullable=False),
        ]
    )


def write_parquet(result: SimilarResult, path: Path) -> None:
    """Long form: one row per ordered pair `a != b` of valid images (both directions in a self comparison)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    mask = result.valid_a[:, None] & result.valid_b[None, :]
    if result.self_mode:
        np.fill_diagonal(mask, False)
    rows, cols = np.nonzero(mask)
    table = pa.Table.from_arrays(
        [
            pa.DictionaryArray.from_arrays(pa.array(rows, pa.int32()), pa.array(result.names_a, pa.string())),
            pa.DictionaryArray.from_arrays(pa.array(cols, pa.int32()), pa.array(result.names_b, pa.string())),
            pa.array(result.matrix[rows, cols], pa.float64()),
            pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(len(rows), dtype=np.int32)), pa.array([result.metric], pa.string())
            ),
        ],
        schema=parquet_schema().with_metadata(
            {"metric": result.metric, "size": str(result.size), "size_policy": SIZE_POLICY}
        ),
    )
    write_atomic(path, lambda temp: pq.write_table(table, temp))


def write_nearest(nearest: list[dict[str, Any]], path: Path) -> None:
    """`image,nearest,value` CSV."""

    def write(temp: Path) -> None:
        with temp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["image", "nearest", "value"])
            writer.writeheader()
            writer.writerows(nearest)

    write_atomic(path, write)


def write_manifest(result: SimilarResult, root: str, against: str | None, block: int, path: Path) -> None:
    """Settings, images, skipped files, counts and timings as JSON."""
    compare_s = result.timings.get("compare_s", 0.0)
    manifest = {
        "command": "similar",
        "folder": root,
        "against": against,
        "metric": result.metric,
        "higher_is_better": result.higher_is_better,
        "size": result.size,
        "size_policy": SIZE_POLICY,
        "block": block,
        "executor": result.executor,
        "images": [n for n, ok in zip(result.names_a, result.valid_a, strict=True) if ok],
        "references": None
        if result.self_mode
        else [n for n, ok in zip(result.names_b, result.valid_b, strict=True) if ok],
        "skipped": result.skipped,
        "comparisons": result.comparisons,
        "comparisons_per_s": result.comparisons / compare_s if compare_s > 0 else None,
        "timings": result.timings,
        "files": result.files,
        "settings": asdict(SimilarSettings(metric=result.metric, size=result.size)),
    }
    write_atomic(path, lambda temp: temp.write_text(json.dumps(manifest, indent=2), encoding="utf-8"))


def format_nearest(result: SimilarResult, limit: int = 50) -> str:
    """Console text: `image -> nearest (value)` lines, the first `limit`, then `... and N more`."""
    width = max((len(n["image"]) for n in result.nearest[:limit]), default=0)
    lines = [
        f"Nearest match by {result.metric} ({'higher' if result.higher_is_better else 'lower'} is closer):"
    ]
    lines += [
        f"  {n['image']:<{width}}  ->  {n['nearest']}  ({n['value']:.4f})" for n in result.nearest[:limit]
    ]
    if len(result.nearest) > limit:
        lines.append(f"  ... and {len(result.nearest) - limit} more (see {NEAREST_NAME})")
    for entry in result.skipped:
        lines.append(f"skipped: {entry['path']}: {entry['reason']}")
    rate = result.comparisons / result.timings["compare_s"] if result.timings.get("compare_s") else 0.0
    lines.append(
        f"{result.comparisons} comparisons in {result.timings['compare_s']:.1f} s ({rate:.0f}/s) on "
        f"{result.executor}"
    )
    lines += [f"{kind}: {path}" for kind, path in result.files.items()]
    return "\n".join(lines)

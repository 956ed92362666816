"""The driver of `iqa similar`: list the images, compare them in blocks on the Dask engine, write the results.

Results (RUN_DIR): `similarity.parquet`, `nearest.csv`, `manifest.json` and, when a page writer is given,
`similar.html` (see `pipeline.similarity.outputs`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.choices import SIMILAR_METRICS, higher_is_better
from pipeline.cluster import Execution, open_cluster, run_bounded
from pipeline.discover import walk_images
from pipeline.errors import IQAError, UsageError
from pipeline.metrics.lpips_weights import resolve_backbone, verify_backbone
from pipeline.metrics.ssim import WINDOW_SIZE, ms_ssim_min_side
from pipeline.run_dirs import claim_run_dir
from pipeline.similarity.outputs import write_manifest, write_nearest, write_parquet
from pipeline.similarity.result import (
    HTML_NAME,
    MANIFEST_NAME,
    NEAREST_NAME,
    OUTPUTS,
    PARQUET_NAME,
    PageWriter,
    SimilarResult,
    nearest_matches,
)
from pipeline.similarity.tasks import (
    DEFAULT_BLOCK,
    DEFAULT_METRIC,
    DEFAULT_SIZE,
    SimilarSettings,
    block_pairs,
    compare_blocks,
)
from pipeline.worker import scoring_plugin


@dataclass
class ImageSet:
    """The images of one folder: relative POSIX names and absolute paths, sorted by name."""

    root: str
    names: list[str]
    paths: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)


def list_images(folder: str | os.PathLike[str], what: str = "Image") -> ImageSet:
    """Image files under `folder`, walked as `iqa score` walks folders (`pipeline.discover.walk_images`)."""
    files, skipped = walk_images(folder, what)
    return ImageSet(os.path.abspath(os.fspath(folder)), [n for n, _ in files], [p for _, p in files], skipped)


def ms_ssim_scales_for(size: int) -> int:
    """Most MS-SSIM scales (at most 5) whose minimum side fits `size`.

    Example:
        >>> ms_ssim_scales_for(128), ms_ssim_scales_for(256)
        (4, 5)
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
    page_writer: PageWriter | None = None,
) -> SimilarResult:
    """Compare every image of `folder` with every other (or with every image of `against`) and write RUN_DIR.

    Args:
        folder: folder of images (walked recursively).
        run_dir: where `similarity.parquet`, `nearest.csv`, `manifest.json` (and `similar.html`) go.
        against: optional folder of reference images; then the grid is `folder x against`.
        metric: 'ssim' (default), 'ms_ssim', 'psnr' or 'lpips'.
        size: common side in pixels (see `pipeline.similarity.prepare`).
        block: images per block; a task compares two blocks.
        scheduler, workers: as for `iqa score` (embedded cluster by default).
        lpips_net, lpips_weights: LPIPS backbone and its checkpoint (resolved and verified like `iqa score`,
            before `run_dir` is touched).
        overwrite: replace results already in `run_dir`.
        page_writer: writes the HTML page of the result to a path (`pipeline.html.similar_page`).

    Returns:
        The result with the `(N, M)` matrix and each image's nearest match.

    Raises:
        UsageError: bad options, missing folders, fewer than two images to compare.
        WeightsError: LPIPS weights are missing or wrong.
        RunDirError: `run_dir` holds an earlier run (without `overwrite`) or cannot be written into.
        WriteError: an output file cannot be written.
    """
    started = time.perf_counter()
    check_options(metric, size, block)
    set_a, set_b = _image_sets(folder, against)
    run_path = Path(run_dir)
    backbone = None
    if metric == "lpips":
        backbone = verify_backbone(lpips_net, resolve_backbone(lpips_net, lpips_weights))
    settings = SimilarSettings(
        metric=metric,
        size=size,
        ms_ssim_scales=ms_ssim_scales_for(size) if metric == "ms_ssim" else 5,
        lpips_net=lpips_net,
        lpips_weights=backbone,
    )
    claim_run_dir(run_path, OUTPUTS, overwrite=overwrite)
    timings = {"list_s": time.perf_counter() - started}
    with open_cluster(scheduler, workers=workers) as execution:
        execution.register(scoring_plugin(execution, lpips_net, backbone))
        matrix, failures = _compare_all(
            execution, set_a, set_b if against is not None else None, settings, block
        )
        description = execution.description
    timings["compare_s"] = time.perf_counter() - started - timings["list_s"]
    result = _result(
        set_a, set_b, against is None, matrix, failures, settings, timings, description, run_path
    )
    result.block, result.roots = block, (set_a.root, None if against is None else set_b.root)
    result.lpips_backbone = (str(backbone.path), backbone.sha256) if backbone else None
    _write_outputs(result, page_writer)
    timings["total_s"] = time.perf_counter() - started
    return result


def _image_sets(
    folder: str | os.PathLike[str], against: str | os.PathLike[str] | None
) -> tuple[ImageSet, ImageSet]:
    set_a = list_images(folder, "Image")
    set_b = list_images(against, "Reference") if against is not None else set_a
    if len(set_a.paths) < (2 if against is None else 1) or not set_b.paths:
        raise UsageError(
            f"Nothing to compare: {len(set_a.paths)} image(s) in {set_a.root}"
            + ("" if against is None else f" and {len(set_b.paths)} in {set_b.root}")
            + "; a similarity search needs at least two images."
        )
    return set_a, set_b


def _compare_all(
    execution: Execution, set_a: ImageSet, set_b: ImageSet | None, settings: SimilarSettings, block: int
) -> tuple[np.ndarray, dict[str, str]]:
    """The `(N, M)` matrix (both triangles for a self comparison, `set_b` None) and the failed paths."""
    matrix = np.full((len(set_a.paths), len((set_b or set_a).paths)), np.nan)
    failures: dict[str, str] = {}
    tasks = block_pairs(set_a.paths, set_b.paths if set_b else None, block)
    for task, result, error in run_bounded(
        execution.executor, compare_blocks, tasks, settings, max_in_flight=2 * execution.task_threads
    ):
        if isinstance(error, IQAError):
            raise error
        if error is not None:
            raise IQAError(
                f"Comparing images {task.a_start}.. with {task.b_start}.. failed on a worker "
                f"({type(error).__name__}: {error}); rerun with --scheduler sync to see the traceback."
            ) from error
        matrix[result.a_index, result.b_index] = result.values
        if set_b is None:
            matrix[result.b_index, result.a_index] = result.values
        failures.update(result.failures)
    return matrix, failures


def _result(
    set_a: ImageSet,
    set_b: ImageSet,
    self_mode: bool,
    matrix: np.ndarray,
    failures: dict[str, str],
    settings: SimilarSettings,
    timings: dict[str, float],
    executor: str,
    run_dir: Path,
) -> SimilarResult:
    valid_a = np.array([p not in failures for p in set_a.paths], dtype=bool)
    valid_b = valid_a if self_mode else np.array([p not in failures for p in set_b.paths], dtype=bool)
    if self_mode:
        np.fill_diagonal(matrix, np.nan)
    skipped = set_a.skipped + ([] if self_mode else set_b.skipped)
    skipped += [{"path": path, "reason": reason} for path, reason in sorted(failures.items())]
    valid = int(valid_a.sum())
    comparisons = valid * (valid - 1) // 2 if self_mode else valid * int(valid_b.sum())
    better = higher_is_better(settings.metric)
    return SimilarResult(
        metric=settings.metric, size=settings.size, self_mode=self_mode, names_a=set_a.names,
        names_b=set_b.names, paths_a=set_a.paths, paths_b=set_b.paths, matrix=matrix, valid_a=valid_a,
        valid_b=valid_b, nearest=nearest_matches(matrix, set_a.names, set_b.names, valid_a, valid_b, better),
        skipped=skipped, timings=timings, comparisons=comparisons, executor=executor, run_dir=run_dir,
    )  # fmt: skip


def _write_outputs(result: SimilarResult, page_writer: PageWriter | None) -> None:
    start = time.perf_counter()
    run_dir = result.run_dir
    write_parquet(result, run_dir / PARQUET_NAME)
    write_nearest(result.nearest, run_dir / NEAREST_NAME)
    result.files = {"parquet": str(run_dir / PARQUET_NAME), "nearest": str(run_dir / NEAREST_NAME)}
    result.timings["write_s"] = time.perf_counter() - start
    if page_writer is not None:
        start = time.perf_counter()
        result.files["html"] = str(page_writer(result, run_dir / HTML_NAME))
        result.timings["report_s"] = time.perf_counter() - start
    result.files["manifest"] = str(run_dir / MANIFEST_NAME)
    write_manifest(result, run_dir / MANIFEST_NAME)

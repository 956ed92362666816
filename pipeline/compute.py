"""Score one shard of pairs inside a worker: read -> hash -> decode -> align -> metrics on device -> rows.

On a GPU (or a CPU task with several torch threads) decoding of the next pairs runs in a background thread
while the current batch is scored; pairs of the same size are stacked into one batch (the big win on a
GPU). Expensive state (the LPIPS network, Gaussian taps, the torch thread setting) lives in `WorkerState`,
built once per worker process and reused by every shard and task thread.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from pipeline.align import AlignedPair, align_pair
from pipeline.allocator import keep_freed_memory, return_freed_memory
from pipeline.conventions import Convention, crop_border, make_convention, prepare_for_pixel_metrics
from pipeline.errors import ImageError, UsageError, WeightsError
from pipeline.images import DecodedImage, decode_image, header_values, read_image_file
from pipeline.metrics.psnr import mse as mse_metric
from pipeline.metrics.psnr import psnr_from_mse
from pipeline.metrics.ssim import WINDOW_SIZE, gaussian_window, ms_ssim_min_side, ssim, ssim_and_ms_ssim

REUSED = "reused"
CPU_BATCH_VALUES = 1_000_000
GPU_BATCH_VALUES = 64_000_000
CPU_DECODE_THREADS = 1  # a CPU task with several torch threads decodes the next pair in one thread
GPU_DECODE_THREADS = 8  # most decode threads of a GPU worker (each decodes ~125 512 px pairs/s)
DECODED_AHEAD_VALUES = 32_000_000  # decoded values that several decode threads may hold ahead of scoring
SCORING_BUDGET_VALUES = 64_000_000  # one 4096 x 4096 RGB pair (50M values) at a time, or many smaller ones
LARGE_PAIR_VALUES = 8_000_000  # pairs this large reserve their values before decoding (see `load_pair`)


@dataclass(frozen=True)
class PairTask:
    """What a worker receives for one pair: paths, never pixels.

    `known_hashes` holds (ref_sha256, out_sha256) of an ok row from an earlier run with the same config; when
    both files still hash to these values the pair is not rescored (`--resume`).
    """

    key: str
    group: str
    ref_path: str
    out_path: str
    known_hashes: tuple[str, str] | None = None


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
    volumes: bool = False


class ValueBudget:
    """Image values being scored at once in this process; a batch waits until it fits (a batch larger than
    the whole budget runs alone)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._changed = threading.Condition()

    @contextmanager
    def hold(self, values: int) -> Iterator[None]:
        taken = self.reserve(values)
        try:
            yield
        finally:
            self.release(taken)

    def reserve(self, values: int) -> int:
        """Wait until `values` (at most the limit) fit, take them and return how many were taken."""
        values = min(values, self.limit)
        with self._changed:
            self._changed.wait_for(lambda: self.used + values <= self.limit)
            self.used += values
        return values

    def release(self, values: int) -> None:
        with self._changed:
            self.used -= values
            self._changed.notify_all()


@dataclass
class WorkerState:
    """Per-process cache: LPIPS networks and Gaussian windows, built on first use.

    Shared by the task threads of a worker; the lock makes each network be built once.
    """

    networks: dict[tuple, torch.nn.Module] = field(default_factory=dict)
    windows: dict[tuple, torch.Tensor] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    budget: ValueBudget = field(default_factory=lambda: ValueBudget(SCORING_BUDGET_VALUES))

    def configure_threads(self, threads: int | None) -> None:
        """Set torch's process-wide intra-op threads; checked on every task (the process may change them)."""
        if threads and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    def window(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (dtype, str(device))
        if key not in self.windows:
            self.windows[key] = gaussian_window(dtype=dtype, device=device)
        return self.windows[key]

    def lpips_network(self, settings: ScoreSettings, device: torch.device) -> torch.nn.Module:
        from pipeline.metrics.perceptual import build_lpips_network

        key = (settings.lpips_net, settings.lpips_weights, str(device))
        with self.lock:
            if key not in self.networks:
                self.networks[key] = build_lpips_network(
                    settings.lpips_net, settings.lpips_weights, device=device, allow_download=False
                )
            return self.networks[key]


_STATE = WorkerState()


@dataclass
class LoadedPair:
    """A pair after reading and decoding: `aligned` is None when `row` is already final (error or reused)."""

    row: dict[str, Any]
    aligned: AlignedPair | None = None
    reserved: int = 0  # values taken from the worker's budget before decoding, released once scored


def resolve_device(requested: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' without CUDA raises a clear error."""
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if requested == "cuda":
        raise UsageError("--device cuda was asked for, but this worker has no CUDA device. Use --device cpu.")
    return torch.device("cpu")


def score_shard(tasks: list[PairTask], settings: ScoreSettings) -> list[dict[str, Any]]:
    """Score every pair of a shard; a pair that fails becomes an error row, the rest are still scored.

    Args:
        tasks: the shard's pairs.
        settings: metrics, convention and device.

    Returns:
        One row dict per task, in order, with the columns of `pipeline.sink.SCHEMA`; rows of pairs skipped by
        `--resume` have status `REUSED` and are not written.
    """
    keep_freed_memory()
    _STATE.configure_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    convention = make_convention(settings.convention, crop=settings.crop)
    budget = GPU_BATCH_VALUES if device.type == "cuda" else CPU_BATCH_VALUES
    loaded_pairs: list[LoadedPair] = []
    pending: list[LoadedPair] = []
    pending_values = 0
    threads = decode_threads(device)
    # Without a decode thread, a large pair waits for its share of the budget before it is decoded, so the
    # task threads of a worker never hold several large decoded pairs at once (see `load_pair`).
    reserving = _STATE if threads == 0 else None
    with torch.inference_mode():
        decoded = prefetch(
            lambda task: load_pair(task, settings, reserving),
            tasks,
            threads,
            ahead_after=lambda loaded: pairs_ahead(loaded, threads),
        )
        for loaded in decoded:
            loaded_pairs.append(loaded)
            if loaded.aligned is None:
                continue
            pending.append(loaded)
            pending_values += loaded.aligned.ref.size
            if pending_values >= budget or loaded.reserved:
                score_pending(pending, settings, convention, device, _STATE)
                pending, pending_values = [], 0
        score_pending(pending, settings, convention, device, _STATE)
    return [loaded.row for loaded in loaded_pairs]


def decode_threads(device: torch.device) -> int:
    """Threads that decode pairs ahead of scoring them.

    0 (decoding inline) for a single-threaded CPU task: its thread already has a core to itself, and
    decoding beside it only competes for that core (measured 10% slower on 2 cores). One for a CPU task
    with several torch threads. On CUDA one per torch thread of the worker (its share of the cores), at most
    `GPU_DECODE_THREADS`: reading, hashing and decoding a 512 px pair takes about 8 ms of CPU, so one thread
    feeds a GPU about 125 pairs/s, and Pillow and hashlib release the GIL, so threads add up.
    """
    if device.type == "cuda":
        return max(1, min(GPU_DECODE_THREADS, torch.get_num_threads()))
    return 0 if torch.get_num_threads() == 1 else CPU_DECODE_THREADS


def pairs_ahead(loaded: LoadedPair, threads: int) -> int | None:
    """How many pairs the decode threads may hold ahead after `loaded`: as many as fit in
    `DECODED_AHEAD_VALUES` at its size (8 at 512 px, 1 at 4096 x 4096), 1 to `threads`; None (unchanged)
    after a pair that was not decoded."""
    if loaded.aligned is None:
        return None
    values = loaded.aligned.ref.size + loaded.aligned.out.size
    return max(1, min(threads, DECODED_AHEAD_VALUES // max(1, values)))


def prefetch(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    threads: int,
    ahead_after: Callable[[Any], int | None] | None = None,
) -> Iterator[Any]:
    """Yield fn(item) in order, computed in `threads` background threads ahead of the consumer (none at
    0: computed in the calling thread when it is needed).

    Without `ahead_after`, `threads` items are computed or waiting beyond the one being yielded. With it,
    one at first, then after each result as many as `ahead_after(result)` says (None: as before), so that
    the size of what was decoded bounds how much is decoded ahead.
    """
    if threads <= 0:
        yield from map(fn, items)
        return
    items = iter(items)
    ahead = threads if ahead_after is None else 1
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="iqa-decode") as pool:
        queue: list[Future] = [pool.submit(fn, item) for item in _take(items, ahead)]
        while queue:
            result = queue.pop(0).result()
            if ahead_after is not None:
                ahead = ahead_after(result) or ahead
            queue.extend(pool.submit(fn, item) for item in _take(items, max(0, ahead - len(queue))))
            yield result


def _take(items: Iterator[Any], count: int) -> list[Any]:
    taken = []
    for _ in range(count):
        item = next(items, _take)
        if item is _take:
            break
        taken.append(item)
    return taken


def new_row(task: PairTask, settings: ScoreSettings) -> dict[str, Any]:
    return {
        "key": task.key,
        "group": task.group,
        "ref_path": task.ref_path,
        "out_path": task.out_path,
        "status": "ok",
        "error": None,
        "warnings": [],
        "run_id": settings.run_id,
    }


def load_pair(task: PairTask, settings: ScoreSettings, state: WorkerState | None = None) -> LoadedPair:
    """Read, hash, decode and align one pair; data problems end in an error row, never an exception.

    With `state`, a pair whose headers say it holds at least `LARGE_PAIR_VALUES` values per image first
    reserves them in `state.budget` (`loaded.reserved`; `score_pending` releases them), so that a task
    thread does not decode a 4096 x 4096 pair while another one scores one (measured: a decoded pair
    waiting beside a scored one took the whole run from about 1.7 to 2.1 GB). The reservation leaves room for
    the small batches the same thread may still score before it (`_reservation_cap`).
    """
    start = time.perf_counter()
    row = new_row(task, settings)
    loaded = LoadedPair(row)
    try:
        ref_file = read_image_file(task.ref_path)
        row["ref_sha256"] = ref_file.sha256
        out_file = read_image_file(task.out_path)
        row["out_sha256"] = out_file.sha256
        if task.known_hashes == (ref_file.sha256, out_file.sha256):
            row["status"] = REUSED
            return loaded
        if state is not None:
            values = max(header_values(ref_file) or 0, header_values(out_file) or 0)
            if values >= LARGE_PAIR_VALUES:
                loaded.reserved = state.budget.reserve(min(values, _reservation_cap(state.budget)))
        ref = decode_image(ref_file, data_range=settings.data_range, volume=settings.volumes)
        row.update(_describe(ref))
        out = decode_image(out_file, data_range=settings.data_range, volume=settings.volumes)
        loaded.aligned = align_pair(ref, out, size_mismatch=settings.size_mismatch, as_float64=False)
        row["warnings"] = [
            *_prefixed("reference", ref.warnings),
            *_prefixed("output", out.warnings),
            *loaded.aligned.warnings,
        ]
    except ImageError as exc:
        row.update(status="error", error=str(exc))
    except Exception as exc:
        row.update(status="error", error=_unexpected(task, exc))
    if loaded.aligned is None and loaded.reserved and state is not None:
        state.budget.release(loaded.reserved)
        loaded.reserved = 0
    row["seconds"] = time.perf_counter() - start
    return loaded


def _reservation_cap(budget: ValueBudget) -> int:
    """The most one pair reserves: the limit less what a thread may still have pending unreserved (a CPU
    batch plus one pair just below `LARGE_PAIR_VALUES`), so its own small batches never wait for it."""
    return max(1, budget.limit - CPU_BATCH_VALUES - LARGE_PAIR_VALUES)


def _unexpected(task: PairTask, exc: BaseException) -> str:
    detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return f"Unexpected failure scoring {task.key!r} ({task.ref_path} vs {task.out_path}): {detail}"


def _describe(image: DecodedImage) -> dict[str, int | None]:
    return {
        "height": image.height,
        "width": image.width,
        "depth": image.depth,
        "channels": image.channels,
        "bit_depth": image.bit_depth,
    }


def _prefixed(side: str, warnings: list[str]) -> list[str]:
    return [f"{side}: {text}" for text in warnings]


def score_pending(
    pending: list[LoadedPair],
    settings: ScoreSettings,
    convention: Convention,
    device: torch.device,
    state: WorkerState,
) -> None:
    """Score decoded pairs in batches of equal shape and data range; fills each pair's row.

    Each batch first takes its values from the worker's `budget` (a large pair took them before it was
    decoded, in `load_pair`), so the task threads of one worker never hold more than `SCORING_BUDGET_VALUES`
    of images in scoring at once (large images one after another). Reservations are released once scored.
    """
    batches: dict[tuple, list[LoadedPair]] = {}
    for loaded in pending:
        batches.setdefault((loaded.aligned.ref.shape, loaded.aligned.data_range), []).append(loaded)
    for batch in batches.values():
        reserved = sum(loaded.reserved for loaded in batch)
        unreserved = sum(loaded.aligned.ref.size for loaded in batch if not loaded.reserved)
        try:
            with state.budget.hold(unreserved):
                _score_batch(batch, settings, convention, device, state)
        finally:
            if reserved:
                return_freed_memory()
                state.budget.release(reserved)
                for loaded in batch:
                    loaded.reserved = 0


def _score_batch(
    batch: list[LoadedPair],
    settings: ScoreSettings,
    convention: Convention,
    device: torch.device,
    state: WorkerState,
) -> None:
    start = time.perf_counter()
    data_range = batch[0].aligned.data_range
    try:
        ref = _stack([p.aligned.ref for p in batch], device)
        out = _stack([p.aligned.out for p in batch], device)
        for loaded in batch:
            loaded.aligned = None
        values, warnings = compute_metrics(ref, out, data_range, settings, convention, state)
    except ImageError as exc:
        for loaded in batch:
            loaded.row.update(status="error", error=f"{loaded.row['key']}: {exc}")
        return
    except WeightsError:
        raise
    except Exception as exc:
        for loaded in batch:
            loaded.row.update(status="error", error=_unexpected(_task_of(loaded.row), exc))
        return
    share = (time.perf_counter() - start) / len(batch)
    for index, loaded in enumerate(batch):
        loaded.row.update({name: column[index] for name, column in values.items()})
        loaded.row["warnings"] = [*loaded.row["warnings"], *warnings]
        loaded.row["seconds"] += share


def _task_of(row: dict[str, Any]) -> PairTask:
    return PairTask(row["key"], row["group"], row["ref_path"], row["out_path"])


def _stack(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """(H, W, C) arrays of one shape -> (N, C, H, W) tensor on `device`, keeping the stored values' dtype.

    16-bit images become int32 (torch has no arithmetic on uint16); floats stay as they are.
    """
    arrays = [image.astype(np.int32) if image.dtype == np.uint16 else image for image in images]
    batch = torch.from_numpy(np.ascontiguousarray(arrays[0])[None] if len(arrays) == 1 else np.stack(arrays))
    batch = batch.to(device=device, non_blocking=True)
    return batch.permute(0, batch.dim() - 1, *range(1, batch.dim() - 1))


def _floats(tensor: torch.Tensor) -> list[float]:
    return [float(v) for v in tensor.double().cpu().tolist()]


def compute_metrics(
    ref: torch.Tensor,
    out: torch.Tensor,
    data_range: float,
    settings: ScoreSettings,
    convention: Convention,
    state: WorkerState,
) -> tuple[dict[str, list[float | None]], list[str]]:
    """Metric values for a batch of aligned pairs of one shape, under a convention.

    Args:
        ref, out: (N, C, H, W) stored values (integers or floats) in [0, data_range].

    Returns:
        ({metric: N values or None}, warnings explaining every None; the same for the whole batch).
    """
    wanted = set(settings.metrics)
    values: dict[str, list[float | None]] = {}
    warnings: list[str] = []
    crop = convention.crop
    if crop and min(ref.shape[-2:]) <= 2 * crop:
        raise ImageError(
            f"the reference is {ref.shape[-2]}x{ref.shape[-1]}, too small to crop {crop} px from each "
            "border. Use a smaller --crop-border or --scale."
        )
    if wanted - {"lpips"}:
        values.update(_pixel_metrics(ref, out, data_range, settings, convention, state, warnings))

    if "lpips" in wanted and ref.dim() == 5:
        values["lpips"] = [None] * ref.shape[0]
        warnings.append("lpips left null: LPIPS is defined on 2-D images only, not on volumes")
    elif "lpips" in wanted:
        from pipeline.metrics.perceptual import lpips_of_stored_values

        network = state.lpips_network(settings, ref.device)
        distance = lpips_of_stored_values(
            crop_border(ref, crop), crop_border(out, crop), data_range=data_range, network=network
        )
        values["lpips"] = _floats(distance)
    return values, warnings


def _pixel_metrics(
    ref: torch.Tensor,
    out: torch.Tensor,
    data_range: float,
    settings: ScoreSettings,
    convention: Convention,
    state: WorkerState,
    warnings: list[str],
) -> dict[str, list[float | None]]:
    """MSE, PSNR, SSIM and MS-SSIM on the convention's channels; its float copies are freed on return."""
    wanted = set(settings.metrics)
    values: dict[str, list[float | None]] = {}
    ref_pix = prepare_for_pixel_metrics(ref, convention, data_range=data_range)
    out_pix = prepare_for_pixel_metrics(out, convention, data_range=data_range)
    if wanted & {"mse", "psnr"}:
        mse_value = mse_metric(ref_pix, out_pix)
        if "mse" in wanted:
            values["mse"] = _floats(mse_value)
        if "psnr" in wanted:
            values["psnr"] = _floats(psnr_from_mse(mse_value, data_range=data_range))
    if wanted & {"ssim", "ms_ssim"}:
        values.update(_structural(ref_pix, out_pix, wanted, settings, data_range, state, warnings))
    return values


def _structural(
    ref: torch.Tensor,
    out: torch.Tensor,
    wanted: set[str],
    settings: ScoreSettings,
    data_range: float,
    state: WorkerState,
    warnings: list[str],
) -> dict[str, list[float | None]]:
    count = ref.shape[0]
    short_side = min(ref.shape[2:])
    size = "x".join(str(side) for side in reversed(ref.shape[2:]))
    window = state.window(ref.dtype, ref.device)
    values: dict[str, list[float | None]] = {name: [None] * count for name in wanted & {"ssim", "ms_ssim"}}
    if short_side < WINDOW_SIZE:
        warnings.append(
            f"image is {size}, smaller than the {WINDOW_SIZE} px SSIM window: ssim and ms_ssim left null"
        )
        return values
    ms_min = ms_ssim_min_side(settings.ms_ssim_scales)
    if "ms_ssim" in wanted and short_side >= ms_min:
        ssim_value, ms_value = ssim_and_ms_ssim(
            ref, out, data_range=data_range, scales=settings.ms_ssim_scales, window=window
        )
        values["ms_ssim"] = _floats(ms_value)
        if "ssim" in wanted:
            values["ssim"] = _floats(ssim_value)
        return values
    if "ms_ssim" in wanted:
        warnings.append(
            f"ms_ssim left null: {settings.ms_ssim_scales}-scale MS-SSIM needs >= {ms_min} px "
            f"on the short side, got {short_side} (set ms_ssim_scales lower to score small images)"
        )
    if "ssim" in wanted:
        values["ssim"] = _floats(ssim(ref, out, data_range=data_range, window=window))
    return values

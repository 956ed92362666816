"""Score one shard of pairs inside a Dask worker: read -> hash -> decode -> align -> measure -> rows.

Worker mechanics live here; what is measured on a batch is `pipeline.measure`. Per worker process:

* `WorkerState` (the LPIPS network and Gaussian windows, built once and shared by the task threads, and a
  budget of image values in scoring at once) comes from `ScoringPlugin`, a Dask WorkerPlugin registered on
  the cluster, which also sets torch's thread count for the worker (and puts the previous one back when the
  worker closes, for an in-process worker). The plugin carries the LPIPS backbone's tensors from the client
  (`scoring_plugin`), and what plugin metrics ship (the adapted metrics' weights files: `MetricPlugin.ship`),
  so workers need neither a shared disk nor weights of their own.
* Pairs of the same shape and data range are stacked into one batch (the large win on a GPU); on a GPU,
  and on a CPU task with several torch threads, the next pairs are decoded in background threads while a
  batch is scored.
* A pair whose header says it is large reserves its share of the budget before it is decoded, so large
  pairs are decoded and scored one after another while small ones run many at once.
* With FID/KID asked for, each batch's images also go through the Inception extractor (built once per
  process from the weights the plugin carries); the shard returns the features of its ok pairs
  (`pipeline.dataset_metrics.ShardFeatures`) and the client reduces them. Under `--resume` unchanged pairs
  keep their rows but are decoded again for their features: FID and KID need every image.
"""

from __future__ import annotations

import gc
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from distributed import WorkerPlugin, get_worker

from pipeline.align import AlignedPair, align_pair
from pipeline.allocator import keep_freed_memory, return_freed_memory
from pipeline.choices import Device, InceptionResize
from pipeline.cluster import Execution
from pipeline.conventions import ResolvedConvention, resolve_convention
from pipeline.dataset_metrics import ShardFeatures
from pipeline.devices import compute_device, resolve_device
from pipeline.errors import ImageError, WeightsError
from pipeline.images import DecodedImage, ImageFile, decode_image, header_values, read_image_file
from pipeline.measure import Cache, measure, ship_plugins
from pipeline.metrics.inception import (
    InceptionFile,
    InceptionWeights,
    build_inception,
    inception_features,
    inception_input,
    read_inception,
)
from pipeline.metrics.lpips_network import LpipsNetwork
from pipeline.metrics.lpips_weights import (
    BackboneFile,
    BackboneWeights,
    build_lpips_network,
    load_backbone_weights,
)
from pipeline.results import ResultRow

PLUGIN_NAME = "iqa-scoring"
CPU_BATCH_VALUES = 1_000_000  # values of one CPU batch (then it is scored)
GPU_BATCH_VALUES = 64_000_000
GPU_DECODE_THREADS = 8  # the most decode threads of a GPU worker
DECODED_AHEAD_VALUES = 32_000_000  # decoded values the decode threads may hold ahead of scoring
SCORING_BUDGET_VALUES = 64_000_000  # image values in scoring at once per worker process
LARGE_PAIR_VALUES = 8_000_000  # pairs this large reserve their values before decoding


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
class ShardSettings:
    """What workers need to score a shard (picklable).

    `lpips_weights`: the backbone the client verified (`verify_backbone`), or a checkpoint path that is found
    and verified where the network is built (direct calls).
    """

    metrics: tuple[str, ...]
    run_id: str = ""
    convention: str = "default"
    crop: int = 0
    size_mismatch: str = "error"
    ms_ssim_scales: int = 5
    data_range: float | None = None
    volumes: bool = False
    lpips_net: str = "alex"
    lpips_weights: BackboneFile | str | None = None
    device: str = Device.AUTO.value
    torch_threads: int | None = None
    storage_options: dict[str, Any] | None = None  # for pairs named by URLs (`pipeline.locations`)
    plugin_setups: dict[str, Any] = field(default_factory=dict)  # `measure.prepare_plugins`, from the client
    dataset_metrics: tuple[str, ...] = ()  # 'fid', 'kid': Inception features are computed too
    inception: InceptionFile | None = None  # the weights the client verified (`verify_inception`)
    inception_resize: str = InceptionResize.TORCHMETRICS.value


@dataclass
class ShardResult:
    """A scored shard: one row per pair scored, how many pairs `--resume` found unchanged, and the Inception
    features of its ok pairs (reused ones too) when FID/KID were asked for."""

    rows: list[ResultRow]
    reused: int = 0
    features: ShardFeatures | None = None


class ValueBudget:
    """Image values being scored at once in a process; a batch waits until it fits (one larger than the
    whole budget runs alone)."""

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
    """Per-process state shared by the task threads: metric resources per LPIPS setting, the budget, and what
    the client shipped (None or empty outside a Dask run): the LPIPS backbone's tensors (`shipped`), the
    Inception weights, and {column: what a plugin metric shipped} (`shipped_plugins`, e.g. the bytes of an
    adapted metric's weights files, which its `build_state` writes where its library looks for them)."""

    budget: ValueBudget = field(default_factory=lambda: ValueBudget(SCORING_BUDGET_VALUES))
    caches: dict[tuple[str, BackboneFile | str | None, str], Cache] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    shipped: BackboneWeights | None = None
    shipped_inception: InceptionWeights | None = None
    shipped_plugins: dict[str, Any] = field(default_factory=dict)
    extractors: dict[tuple[str, str, str], torch.nn.Module] = field(default_factory=dict)

    def resources(
        self,
        lpips_net: str,
        lpips_weights: BackboneFile | str | None,
        plugin_setups: dict[str, Any] | None = None,
    ) -> Cache:
        """The windows, the LPIPS network (built on first use, strictly loaded) and the plugin metrics'
        states for this LPIPS setting and these plugin setups: the network from the shipped tensors when
        they are those of `lpips_weights`, else from the file; the plugins' states with what they shipped."""
        setups = plugin_setups or {}
        key = (lpips_net, lpips_weights, repr(sorted(setups.items())))
        with self.lock:
            if key not in self.caches:
                source = self.weights_source(lpips_net, lpips_weights)
                build = partial(build_network, lpips_net, source)
                shipped = self.shipped_plugins
                self.caches[key] = Cache(build_network=build, setups=dict(setups), shipped=shipped)
            return self.caches[key]

    def extractor(self, file: InceptionFile, resize: str, device: torch.device) -> torch.nn.Module:
        """The Inception extractor for these weights, resizing and device, built on first use: from the
        shipped bytes when they are those of `file`, else from the file read again."""
        key = (file.sha256, resize, str(device))
        with self.lock:
            if key not in self.extractors:
                shipped = self.shipped_inception
                weights = shipped if shipped and shipped.file == file else read_inception(file)
                self.extractors[key] = on_worker(build_inception, weights, resize, device)
            return self.extractors[key]

    def weights_source(
        self, lpips_net: str, lpips_weights: BackboneFile | str | None
    ) -> BackboneWeights | BackboneFile | str | None:
        """The shipped tensors when they came from the backbone file `lpips_weights` for `lpips_net`, else
        `lpips_weights` itself."""
        shipped = self.shipped
        if shipped is not None and (shipped.net, shipped.file) == (lpips_net, lpips_weights):
            return shipped
        return lpips_weights


def build_network(
    lpips_net: str, source: BackboneWeights | BackboneFile | str | None, device: torch.device
) -> LpipsNetwork:
    """`build_lpips_network` without downloads; on a Dask worker its WeightsError names the worker."""
    return on_worker(build_lpips_network, lpips_net, source, device=device, allow_download=False)


def on_worker(build: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`build(*args, **kwargs)`; on a Dask worker a WeightsError it raises names the worker."""
    try:
        return build(*args, **kwargs)
    except WeightsError as exc:
        address = worker_address()
        if address is None:
            raise
        raise WeightsError(f"On Dask worker {address}: {exc}") from exc


def worker_address() -> str | None:
    """The address of the Dask worker running this task; None outside a worker."""
    try:
        return get_worker().address
    except ValueError:
        return None


class ScoringPlugin(WorkerPlugin):
    """Gives each Dask worker its `WorkerState` and torch thread count (restored when the worker closes).

    `own_processes`: the workers are processes this run started, whose allocator may be tuned
    (`pipeline.allocator`) and whose imported objects are frozen out of the garbage collector's reach
    (`gc.freeze`, as the `iqa` executable does in its own process); never set for an in-process worker or a
    cluster someone else started.
    `backbone`: the LPIPS backbone's tensors, pickled with the plugin and sent to every worker (also to one
    that joins later), which builds the network from them instead of opening the client's file.
    `inception`: the bytes of the Inception weights file for FID/KID, shipped the same way.
    `plugins`: {column: what a plugin metric ships} (`measure.ship_plugins`), shipped the same way.
    """

    name = PLUGIN_NAME

    def __init__(
        self,
        torch_threads: int | None = None,
        own_processes: bool = False,
        backbone: BackboneWeights | None = None,
        inception: InceptionWeights | None = None,
        plugins: dict[str, Any] | None = None,
    ) -> None:
        self.torch_threads = torch_threads
        self.own_processes = own_processes
        self.backbone = backbone
        self.inception = inception
        self.plugins = plugins or {}
        self.state: WorkerState | None = None  # made in `setup`, on the worker
        self._previous_threads: int | None = None

    def setup(self, worker: Any) -> None:
        self.state = WorkerState(
            shipped=self.backbone, shipped_inception=self.inception, shipped_plugins=self.plugins
        )
        if self.own_processes:
            keep_freed_memory()
            gc.freeze()  # the imported modules' objects: later full collections no longer walk them
        if self.torch_threads:
            self._previous_threads = torch.get_num_threads()
            torch.set_num_threads(self.torch_threads)

    def teardown(self, worker: Any) -> None:
        if self._previous_threads:
            torch.set_num_threads(self._previous_threads)


def scoring_plugin(
    execution: Execution,
    lpips_net: str,
    backbone: BackboneFile | None,
    inception: InceptionWeights | None = None,
    plugin_setups: dict[str, Any] | None = None,
) -> ScoringPlugin:
    """The `ScoringPlugin` of a run on `execution`, carrying the verified LPIPS backbone's tensors and the
    Inception weights when the run has Dask workers (without workers the files are read where the networks
    are built), and what the plugin metrics of `plugin_setups` ship (`measure.ship_plugins`, whole weights
    files) when those workers are another cluster's, which may not see this machine's files.

    Raises:
        WeightsError: the backbone file or a plugin's weights file changed since it was verified, or cannot
            be loaded.
    """
    if not execution.has_workers:
        return ScoringPlugin(execution.torch_threads, own_processes=execution.own_processes)
    return ScoringPlugin(
        execution.torch_threads,
        own_processes=execution.own_processes,
        backbone=load_backbone_weights(lpips_net, backbone) if backbone else None,
        inception=inception,
        plugins={} if execution.started_here else ship_plugins(plugin_setups or {}),
    )


_LOCAL_STATE = WorkerState()  # for shards scored outside a Dask worker (`--scheduler sync`, direct calls)


def current_state() -> WorkerState:
    """The state of the Dask worker running this task (from its `ScoringPlugin`), else this process's own."""
    try:
        plugin = get_worker().plugins.get(PLUGIN_NAME)
    except ValueError:
        plugin = None
    if isinstance(plugin, ScoringPlugin) and plugin.state is not None:
        return plugin.state
    return _LOCAL_STATE


@dataclass
class LoadedPair:
    """A pair after reading and decoding; `aligned` is None when its row is final (an error, or reused
    without FID/KID). `features`: its (reference, output) Inception features, (2048,) float32 each."""

    row: ResultRow
    aligned: AlignedPair | None = None
    reserved: int = 0  # values taken from the budget before decoding, released once scored
    reused: bool = False
    features: tuple[np.ndarray, np.ndarray] | None = None


def score_shard(tasks: list[PairTask], settings: ShardSettings) -> ShardResult:
    """Score every pair of a shard; a pair that fails becomes an error row, the rest are still scored.

    Args:
        tasks: the shard's pairs.
        settings: metrics, convention, device and LPIPS weights.

    Returns:
        The rows of the pairs scored, in task order (an unchanged pair `--resume` reused has none, unless it
        failed this time), the count of pairs reused, and the ok pairs' Inception features with FID/KID.

    Raises:
        WeightsError: the LPIPS network cannot be built (the run stops: every pair would fail).
    """
    state = current_state()
    if settings.torch_threads and torch.get_num_threads() != settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    convention = resolve_convention(settings.convention, crop=settings.crop)
    device = compute_device(resolve_device(settings.device), convention.spec.precision)
    batch_values = CPU_BATCH_VALUES if device.type == "cpu" else GPU_BATCH_VALUES
    threads = decode_threads(device)
    # Without decode threads, a large pair waits for its share of the budget before it is decoded
    reserving = state if threads == 0 else None
    loaded_pairs: list[LoadedPair] = []
    pending: list[LoadedPair] = []
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
            if sum(p.aligned.ref.size for p in pending) >= batch_values or loaded.reserved:
                score_pending(pending, settings, convention, device, state)
                pending = []
        score_pending(pending, settings, convention, device, state)
    rows = [loaded.row for loaded in loaded_pairs if not loaded.reused or not loaded.row.ok]
    features = shard_features(loaded_pairs) if settings.dataset_metrics else None
    return ShardResult(rows, reused=len(loaded_pairs) - len(rows), features=features)


def shard_features(loaded_pairs: list[LoadedPair]) -> ShardFeatures:
    """The Inception features of the ok pairs that have them, in shard order."""
    done = [loaded for loaded in loaded_pairs if loaded.row.ok and loaded.features is not None]
    return ShardFeatures.concatenate([
        ShardFeatures([p.row.key], [p.row.group], p.features[0][None], p.features[1][None]) for p in done
    ])  # fmt: skip


def decode_threads(device: torch.device) -> int:
    """Threads that decode pairs ahead of scoring them.

    None (decoding inline) for a single-threaded CPU task, whose thread has its core to itself; one for a
    CPU task with several torch threads; on a GPU (CUDA or MPS) one per torch thread of the worker, at most
    `GPU_DECODE_THREADS` (Pillow, imagecodecs and hashlib release the GIL, so the threads add up).
    """
    if device.type != "cpu":
        return max(1, min(GPU_DECODE_THREADS, torch.get_num_threads()))
    return 0 if torch.get_num_threads() == 1 else 1


def pairs_ahead(loaded: LoadedPair, threads: int) -> int | None:
    """How many pairs the decode threads may hold ahead after `loaded`: as many as fit in
    `DECODED_AHEAD_VALUES` at its size, 1 to `threads`; None (unchanged) after a pair that was not decoded."""
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
    """Yield fn(item) in order, computed in `threads` background threads ahead of the consumer (none at 0:
    computed in the calling thread when it is needed).

    Without `ahead_after`, `threads` items are computed or waiting beyond the one being yielded. With it, one
    at first, then after each result as many as `ahead_after(result)` says (None: as before).
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


def load_pair(task: PairTask, settings: ShardSettings, state: WorkerState | None = None) -> LoadedPair:
    """Read, hash, decode and align one pair; data problems end in an error row, never an exception.

    With `state`, a pair whose headers say it holds at least `LARGE_PAIR_VALUES` values per image first
    reserves them in `state.budget` (released once it is scored), leaving room for the small batches the
    same thread may still score before it.
    """
    start = time.perf_counter()
    loaded = LoadedPair(ResultRow(task.key, task.group, task.ref_path, task.out_path, settings.run_id))
    row = loaded.row
    try:
        ref_file = read_image_file(task.ref_path, settings.storage_options)
        row.ref_sha256 = ref_file.sha256
        out_file = read_image_file(task.out_path, settings.storage_options)
        row.out_sha256 = out_file.sha256
        if task.known_hashes == (ref_file.sha256, out_file.sha256):
            loaded.reused = True
            if not settings.dataset_metrics:  # else decoded again for its Inception features
                return loaded
        if state is not None:
            loaded.reserved = _reserve_if_large(state.budget, ref_file, out_file)
        ref = decode_image(ref_file, data_range=settings.data_range, volume=settings.volumes)
        _describe(row, ref)
        out = decode_image(out_file, data_range=settings.data_range, volume=settings.volumes)
        loaded.aligned = align_pair(ref, out, size_mismatch=settings.size_mismatch, as_float64=False)
        row.warnings = [
            *(f"reference: {text}" for text in ref.warnings),
            *(f"output: {text}" for text in out.warnings),
            *loaded.aligned.warnings,
        ]
    except ImageError as exc:
        row.fail(str(exc))
    except Exception as exc:
        row.fail(_unexpected(task.key, task.ref_path, task.out_path, exc))
    if loaded.aligned is None and loaded.reserved and state is not None:
        state.budget.release(loaded.reserved)
        loaded.reserved = 0
    row.seconds = time.perf_counter() - start
    return loaded


def _reserve_if_large(budget: ValueBudget, ref_file: ImageFile, out_file: ImageFile) -> int:
    values = max(header_values(ref_file) or 0, header_values(out_file) or 0)
    if values < LARGE_PAIR_VALUES:
        return 0
    room = max(1, budget.limit - CPU_BATCH_VALUES - LARGE_PAIR_VALUES)  # what a thread may hold unreserved
    return budget.reserve(min(values, room))


def _unexpected(key: str, ref_path: str, out_path: str, exc: BaseException) -> str:
    detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return f"Unexpected failure scoring {key!r} ({ref_path} vs {out_path}): {detail}"


def _describe(row: ResultRow, image: DecodedImage) -> None:
    row.height, row.width, row.depth = image.height, image.width, image.depth
    row.channels, row.bit_depth = image.channels, image.bit_depth


def score_pending(
    pending: list[LoadedPair],
    settings: ShardSettings,
    convention: ResolvedConvention,
    device: torch.device,
    state: WorkerState,
) -> None:
    """Score decoded pairs in batches of equal shape and data range; fills each pair's row.

    Each batch first takes its values from the worker's budget (a large pair took them before it was
    decoded), so the task threads of one worker never hold more than `SCORING_BUDGET_VALUES` in scoring.
    """
    batches: dict[tuple, list[LoadedPair]] = {}
    for loaded in pending:
        shape = (loaded.aligned.ref.shape, loaded.aligned.data_range, loaded.reused)
        batches.setdefault(shape, []).append(loaded)
    for batch in batches.values():
        reserved = sum(loaded.reserved for loaded in batch)
        unreserved = sum(loaded.aligned.ref.size for loaded in batch if not loaded.reserved)
        try:
            with state.budget.hold(unreserved):
                _score_batch(batch, settings, convention, device, state)
        finally:
            if reserved:  # a large pair: its freed buffers go back to the OS before the next one is decoded
                return_freed_memory()
            state.budget.release(reserved)
            for loaded in batch:
                loaded.reserved = 0


def _score_batch(
    batch: list[LoadedPair],
    settings: ShardSettings,
    convention: ResolvedConvention,
    device: torch.device,
    state: WorkerState,
) -> None:
    start = time.perf_counter()
    data_range = batch[0].aligned.data_range
    try:
        ref = stack_images([p.aligned.ref for p in batch], device)
        out = stack_images([p.aligned.out for p in batch], device)
        for loaded in batch:
            loaded.aligned = None
        values: dict[str, list[float | None]] = {}
        warnings: list[str] = []
        if not batch[0].reused:  # a batch is all reused pairs (features only) or none
            values, warnings = measure(
                ref, out, data_range, settings.metrics, convention,
                state.resources(settings.lpips_net, settings.lpips_weights, settings.plugin_setups),
                ms_ssim_scales=settings.ms_ssim_scales,
            )  # fmt: skip
        features = batch_features(ref, out, data_range, settings, device, state, warnings)
    except WeightsError:
        raise
    except ImageError as exc:
        for loaded in batch:
            loaded.row.fail(f"{loaded.row.key}: {exc}")
        return
    except Exception as exc:
        for loaded in batch:
            row = loaded.row
            row.fail(_unexpected(row.key, row.ref_path, row.out_path, exc))
        return
    share = (time.perf_counter() - start) / len(batch)
    for index, loaded in enumerate(batch):
        for name, column in values.items():
            loaded.row.set_metric(name, column[index])
        loaded.row.warnings = [*loaded.row.warnings, *warnings]
        loaded.row.seconds += share
        if features is not None:
            loaded.features = (features[0][index], features[1][index])


def batch_features(
    ref: torch.Tensor,
    out: torch.Tensor,
    data_range: float,
    settings: ShardSettings,
    device: torch.device,
    state: WorkerState,
    warnings: list[str],
) -> tuple[np.ndarray, np.ndarray] | None:
    """(N, 2048) float32 Inception features of a batch's references and outputs, when FID/KID were asked for;
    None otherwise, and for volumes (with a warning appended to `warnings`).

    Args:
        ref, out: (N, C, H, W) stored values on `device`.
    """
    if not settings.dataset_metrics:
        return None
    if ref.dim() != 4:
        warnings.append("volume: left out of FID/KID (Inception features are defined for 2-D images)")
        return None
    assert settings.inception is not None, "FID/KID asked for without verified Inception weights"
    extractor = state.extractor(settings.inception, settings.inception_resize, device)
    return tuple(
        inception_features(extractor, inception_input(images, data_range)).numpy() for images in (ref, out)
    )


def stack_images(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """(H, W, C) arrays of one shape -> (N, C, H, W) tensor on `device`, keeping the stored values' dtype.

    16-bit images become int32 (torch has no arithmetic on uint16); floats stay as they are, but float64
    becomes float32 on MPS (it has no float64; `compute_device` keeps float64 conventions on the CPU).

    Example:
        >>> stack_images([np.zeros((4, 5, 3), np.uint16)] * 2, torch.device("cpu")).shape
        torch.Size([2, 3, 4, 5])
    """
    arrays = [_computable(image, device) for image in images]
    batch = torch.from_numpy(np.ascontiguousarray(arrays[0])[None] if len(arrays) == 1 else np.stack(arrays))
    batch = batch.to(device=device, non_blocking=True)
    return batch.permute(0, batch.dim() - 1, *range(1, batch.dim() - 1))


def _computable(image: np.ndarray, device: torch.device) -> np.ndarray:
    """`image` in a dtype torch computes with on `device`: uint16 as int32, float64 as float32 on MPS."""
    if image.dtype == np.uint16:
        return image.astype(np.int32)
    if image.dtype == np.float64 and device.type == "mps":
        return image.astype(np.float32)
    return image

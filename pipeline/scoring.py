"""`iqa score` end to end: discover -> pair -> shard -> Dask -> Parquet parts -> manifest -> report."""

from __future__ import annotations

import datetime as dt
import heapq
import logging
import math
import os
import platform
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.cluster import Execution, open_executor, run_bounded
from pipeline.compute import REUSED, PairTask, ScoreSettings, score_shard
from pipeline.config import ScoreConfig
from pipeline.discover import Pair, Pairing, discover_pairs
from pipeline.errors import RunDirError, UsageError, WeightsError
from pipeline.sink import (
    MANIFEST_NAME,
    SCORES_DIR,
    PartWriter,
    latest_rows,
    part_paths,
    remove_stale_temp_files,
    resume_index,
    write_manifest,
)

log = logging.getLogger("pipeline.scoring")

MAX_SHARD_PAIRS = 256
MIN_SHARD_PAIRS = 16
SHARDS_PER_THREAD = 4
BALANCE_WINDOW_SHARDS = 8  # shards balanced against each other at a time (`iter_shards`)


@dataclass
class RunResult:
    """What a finished `iqa score` run reports back to the CLI."""

    run_dir: Path
    manifest: dict[str, Any]
    notices: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return self.manifest["counts"]

    @property
    def complete(self) -> bool:
        """Every reference has an ok row (no failed pair, no missing output, no duplicate reference key)."""
        counts = self.counts
        return counts["error"] == 0 and counts["missing"] == 0 and counts["duplicates_reference"] == 0


def check_run_dir(run_dir: Path, ref_dir: Path, out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a run dir inside an input folder, or one holding another run without --resume/--overwrite."""
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other: pick one.")
    resolved = run_dir.resolve()
    for name, folder in (("reference", ref_dir), ("output", out_dir)):
        if resolved == folder.resolve() or folder.resolve() in resolved.parents:
            raise UsageError(
                f"The run directory {run_dir} is inside the {name} folder {folder}; "
                "its files would be scored. "
                "Choose a run directory outside both input folders."
            )
    holds_run = (run_dir / MANIFEST_NAME).exists() or bool(part_paths(run_dir))
    if holds_run and not (resume or overwrite):
        raise RunDirError(
            f"{run_dir} already holds a run. Pass --resume to continue it, --overwrite to replace it, "
            "or choose another -o directory."
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} exists and is not a directory. Choose another -o directory.")


def prepare_run_dir(run_dir: Path, *, overwrite: bool) -> None:
    if overwrite:
        shutil.rmtree(run_dir / SCORES_DIR, ignore_errors=True)
        for name in (MANIFEST_NAME, "report.html"):
            (run_dir / name).unlink(missing_ok=True)
    try:
        (run_dir / SCORES_DIR).mkdir(parents=True, exist_ok=True)
        probe = run_dir / SCORES_DIR / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(
            f"Cannot write into {run_dir}: {exc.strerror or exc}. Check permissions and free space."
        ) from exc


def resolve_lpips(config: ScoreConfig, notices: list[str]) -> tuple[tuple[str, ...], str | None]:
    """Find the LPIPS backbone before scoring.

    Returns:
        (metrics to score, resolved backbone path or None). If LPIPS was asked for explicitly and its weights
        are missing, raises WeightsError; if it is only in the default set, drops it with a notice.
    """
    if "lpips" not in config.metrics:
        return config.metrics, None
    from pipeline.metrics.perceptual import resolve_backbone

    try:
        return config.metrics, str(resolve_backbone(config.lpips_net, config.lpips_weights))
    except WeightsError as exc:
        if config.metrics_explicit or config.lpips_weights:
            raise
        notices.append(f"LPIPS NOT SCORED: {exc}")
        return tuple(m for m in config.metrics if m != "lpips"), None


def shard_size(pair_count: int, workers: int, requested: int | None) -> int:
    """Pairs per shard: coarse enough for >= 100 ms tasks, split evenly over the task threads.

    `workers` counts task threads. Up to `SHARDS_PER_THREAD` shards per thread while each keeps at least
    `MIN_SHARD_PAIRS` pairs (>= 100 ms of 512 px pairs on one core; each shard also costs a task round trip
    and a Parquet part, about 10 ms measured on 2 cores); the shard count is a multiple of the threads so
    that they finish together (60 pairs on 2 threads: 4 shards of 15, not 16 + 16 + 16 + 12); at most
    `MAX_SHARD_PAIRS` pairs.
    """
    if requested:
        return requested
    threads = max(1, workers)
    shards = min(threads * SHARDS_PER_THREAD, max(1, pair_count // MIN_SHARD_PAIRS))
    shards = math.ceil(shards / threads) * threads
    return max(1, min(MAX_SHARD_PAIRS, math.ceil(pair_count / shards)))


def iter_shards(
    pairs: list[Pair], size: int, known: dict[str, tuple[str, str]] | None = None, *, window: int = 1
) -> Iterator[list[PairTask]]:
    """Shards of about `size` tasks; `known` carries the hashes of pairs already scored ok (`--resume`).

    With `window` > 1 the pairs are taken `window` shards' worth at a time and split into shards of about
    equal cost, heaviest first (`balanced_shards`), so that the task threads finish together; with 1 the
    shards are consecutive runs of pairs.
    """
    known = known or {}
    for start in range(0, len(pairs), size * window):
        chunk = pairs[start : start + size * window]
        groups = balanced_shards(chunk, math.ceil(len(chunk) / size)) if window > 1 else [chunk]
        for group in groups:
            yield [PairTask(p.key, p.group, p.ref_path, p.out_path, known.get(p.key)) for p in group]


def balanced_shards(pairs: list[Pair], count: int) -> list[list[Pair]]:
    """`pairs` split into `count` shards of about equal estimated cost, heaviest shard first.

    Longest-processing-time first: each pair, most expensive first, joins the shard with the least cost so
    far; pairs keep their order within a shard. The cost of a pair is the bytes of its two files (one stat
    each): on the benchmark's 60 photo pairs (PNG and JPEG, 384-512 px) it tracked the measured seconds per
    pair with a correlation of 0.76, and 4 balanced shards instead of 4 runs of 15 consecutive pairs took
    `iqa score` on 2 threads from 113.3 to 118.9 pairs/s (9 of 11 alternations faster).
    """
    costs = [_file_bytes(p.ref_path) + _file_bytes(p.out_path) for p in pairs]
    loads = [(0, index) for index in range(count)]  # (cost so far, shard index): a min-heap
    members: list[list[int]] = [[] for _ in range(count)]
    for index in sorted(range(len(pairs)), key=lambda i: -costs[i]):
        load, shard = heapq.heappop(loads)
        members[shard].append(index)
        heapq.heappush(loads, (load + costs[index], shard))
    heaviest_first = sorted(loads, key=lambda item: (-item[0], item[1]))  # ties: lower shard index first
    return [[pairs[i] for i in sorted(members[shard])] for _, shard in heaviest_first if members[shard]]


def _file_bytes(path: str) -> int:
    """Size of a file, 0 when it cannot be read (its task reports the problem)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def failed_shard_rows(shard: list[PairTask], error: BaseException, run_id: str) -> list[dict[str, Any]]:
    """Error rows for every pair of a shard whose task failed as a whole (e.g. its worker kept dying)."""
    message = f"The worker task scoring this pair failed: {type(error).__name__}: {error}"
    return [
        {
            "key": t.key,
            "group": t.group,
            "ref_path": t.ref_path,
            "out_path": t.out_path,
            "status": "error",
            "error": message,
            "warnings": [],
            "run_id": run_id,
        }
        for t in shard
    ]


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


RECORDED_PACKAGES = (
    "iqa-pipeline", "torch", "torchvision", "lpips", "dask", "distributed", "numpy", "pillow", "pyarrow",
)  # fmt: skip


def software_versions(packages: tuple[str, ...] = RECORDED_PACKAGES) -> dict[str, str]:
    """{'python': version, package: installed version or 'not installed'}."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def device_description(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)} x{torch.cuda.device_count()})"
    return f"cpu ({platform.processor() or platform.machine()})"


def score_folders(
    ref_dir: str | Path,
    out_dir: str | Path,
    run_dir: str | Path,
    config: ScoreConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_notice: Callable[[str], None] | None = None,
) -> RunResult:
    """Score every pair of two folders into RUN_DIR (Parquet parts, manifest.json, report.html).

    Raises:
        UsageError, RunDirError, WeightsError, ClusterError: systemic problems, before any pair is scored.
    """
    started = time.perf_counter()
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    ref_dir, out_dir, run_dir = Path(ref_dir), Path(out_dir), Path(run_dir)
    pairing = discover_pairs(
        ref_dir,
        out_dir,
        output_suffix=config.output_suffix,
        output_template=config.output_template,
        output_regex=config.output_regex,
        group_depth=config.group_depth,
    )
    check_run_dir(run_dir, ref_dir, out_dir, resume=resume, overwrite=overwrite)
    notices: list[str] = []
    metrics, backbone = resolve_lpips(config, notices)
    for notice in notices:
        (on_notice or log.warning)(notice)
    prepare_run_dir(run_dir, overwrite=overwrite)
    known = resume_index(run_dir, config.value_hash()) if resume else {}
    if resume:
        remove_stale_temp_files(run_dir)
    discovered = time.perf_counter()

    run_id = new_run_id()
    metadata = {
        "run_id": run_id,
        "config_hash": config.value_hash(),
        "convention": config.convention,
        "crop": config.effective_crop,
        "metrics": list(metrics),
    }
    writer = PartWriter(run_dir, metadata)
    executor_context = ExitStack()
    try:
        execution = executor_context.enter_context(
            open_executor(
                config.scheduler,
                scheduler_file=config.scheduler_file,
                workers=config.workers,
                threads=config.threads_per_worker,
                device=config.device,
            )
        )
        settings = ScoreSettings(
            metrics=metrics,
            convention=config.convention,
            crop=config.effective_crop,
            size_mismatch=config.size_mismatch,
            ms_ssim_scales=config.ms_ssim_scales,
            data_range=config.data_range,
            volumes=config.volumes,
            lpips_net=config.lpips_net,
            lpips_weights=backbone,
            device=config.device,
            torch_threads=execution.torch_threads,
            run_id=run_id,
        )
        scoring = score_pairs(execution, pairing.pairs, settings, config, writer, known, progress=progress)
    except BaseException:
        executor_context.close()
        raise
    scored = time.perf_counter()
    # The cluster closes (about 15 ms for the embedded one) while the manifest and the report are written.
    closing = CloseInBackground(executor_context)
    try:
        if resume:  # the parts of earlier runs count too
            statuses = latest_rows(run_dir, ["status"])
            statuses = statuses[statuses["key"].isin({p.key for p in pairing.pairs})]
        else:
            statuses = pd.DataFrame(
                {"key": list(scoring.statuses), "status": list(scoring.statuses.values())}
            )
        manifest = build_manifest(
            run_id=run_id,
            created=created,
            ref_dir=ref_dir,
            out_dir=out_dir,
            config=config,
            metrics=metrics,
            backbone=backbone,
            pairing=pairing,
            statuses=statuses,
            execution=execution.description,
            dashboard=execution.dashboard_link,
            timings={
                "discover_s": discovered - started,
                "score_s": scored - discovered,
                "total_s": time.perf_counter() - started,
                "pairs_per_s": len(pairing.pairs) / max(scored - discovered, 1e-9),
            },
            notices=notices,
            shard_pairs=scoring.shard_pairs,
            resumed={"reused": scoring.reused, "scored": len(pairing.pairs) - scoring.reused}
            if resume
            else None,
        )
        write_manifest(run_dir, manifest)
        if config.report:
            from pipeline.report import render_run_report

            render_run_report(run_dir)
    finally:
        closing.wait()
    return RunResult(run_dir, manifest, notices)


@dataclass
class Scoring:
    """What scoring the pairs left behind: {key: status} of the rows written, pairs reused by `--resume`."""

    statuses: dict[str, str]
    reused: int
    shard_pairs: int


def score_pairs(
    execution: Execution,
    pairs: list[Pair],
    settings: ScoreSettings,
    config: ScoreConfig,
    writer: PartWriter,
    known: dict[str, tuple[str, str]],
    *,
    progress: bool,
) -> Scoring:
    """Score `pairs` in shards on `execution`, writing one Parquet part per finished shard."""
    workers = execution.worker_count
    size = shard_size(len(pairs), workers, config.shard_pairs)
    in_flight = config.max_in_flight or workers * 2 + 1
    statuses: dict[str, str] = {}
    reused = errors = 0
    with _progress_bar(len(pairs), progress) as bar:
        results = run_bounded(
            execution.executor,
            score_shard,
            iter_shards(pairs, size, known, window=BALANCE_WINDOW_SHARDS),
            settings,
            max_in_flight=in_flight,
        )
        for shard, rows, error in results:
            if error is not None:
                if isinstance(error, WeightsError):
                    raise error
                rows = failed_shard_rows(shard, error, settings.run_id)
            fresh = [row for row in rows if row["status"] != REUSED]
            reused += len(rows) - len(fresh)
            if fresh:
                _write_part(writer, fresh)
            statuses.update((row["key"], row["status"]) for row in fresh)
            errors += sum(row["status"] == "error" for row in fresh)
            bar.update(len(rows))
            bar.set_postfix(failed=errors, refresh=False)
    return Scoring(statuses, reused, size)


def build_manifest(
    *,
    run_id: str,
    created: str,
    ref_dir: Path,
    out_dir: Path,
    config: ScoreConfig,
    metrics: tuple[str, ...],
    backbone: str | None,
    pairing: Pairing,
    statuses,
    execution: str,
    dashboard: str | None,
    timings: dict[str, float],
    notices: list[str],
    shard_pairs: int,
    resumed: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The manifest.json content: what was run, how, on what, and every file that did not become a pair."""
    from pipeline.conventions import make_convention
    from pipeline.summary import status_counts

    status = status_counts(statuses)
    duplicate_refs = sum(d["side"] == "reference" for d in pairing.duplicates)
    return {
        "run_id": run_id,
        "created": created,
        "reference_dir": str(ref_dir.resolve()),
        "output_dir": str(out_dir.resolve()),
        "metrics": list(metrics),
        "convention": {
            "name": config.convention,
            "crop": config.effective_crop,
            "description": make_convention(config.convention, crop=config.effective_crop).describe(),
        },
        "config": config.to_dict(),
        "config_hash": config.value_hash(),
        "lpips_backbone": backbone,
        "versions": software_versions(),
        "device": device_description(config.device),
        "execution": execution,
        "dashboard": dashboard,
        "shard_pairs": shard_pairs,
        "resume": resumed,
        "timings": timings,
        "counts": {
            "pairs": len(pairing.pairs),
            "rows": status["rows"],
            "ok": status["ok"],
            "error": status["error"],
            "missing": len(pairing.missing),
            "extra": len(pairing.extra),
            "duplicates": len(pairing.duplicates),
            "duplicates_reference": duplicate_refs,
            "skipped": len(pairing.skipped),
        },
        "missing": pairing.missing,
        "extra": pairing.extra,
        "duplicates": pairing.duplicates,
        "skipped": pairing.skipped,
        "notices": notices,
    }


class CloseInBackground:
    """Close an ExitStack (the cluster of a finished run) in a thread; `wait` joins it and re-raises what
    closing raised."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._close, name="iqa-close-cluster", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        try:
            self._stack.close()
        except BaseException as exc:  # handed to the caller by `wait`
            self._error = exc

    def wait(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _write_part(writer: PartWriter, rows: list[dict[str, Any]]) -> None:
    """Write one part; on a write failure stop the run, saying the finished parts are kept for --resume."""
    try:
        writer.write(rows)
    except RunDirError as exc:
        raise RunDirError(
            f"{exc} The run stopped; the {len(writer.written)} part(s) already written are kept: "
            "fix the problem and rerun with --resume to continue."
        ) from exc


class _NullBar:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **_: Any) -> None:
        pass


def _progress_bar(total: int, enabled: bool):
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(_NullBar())
    from tqdm import tqdm

    return tqdm(total=total, unit="pair", desc="scoring", dynamic_ncols=True)

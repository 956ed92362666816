"""`iqa score` without the report: discover -> pair -> shard -> Dask -> Parquet parts -> manifest.

Messages for the person running it go to the `pipeline` logger: warnings (e.g. LPIPS left out) once, the
dashboard link at INFO.

With `dataset_metrics` (FID, KID) the Inception weights are verified before the run directory is touched, the
workers return each shard's features with its rows, and the client folds them into running sums as the shards
finish (`pipeline.dataset_metrics`); the result goes into the manifest's `dataset_metrics`.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.choices import BUILTIN_METRICS, Convention, Status
from pipeline.cluster import Execution, check_local_device, open_cluster, run_bounded
from pipeline.config import ScoreConfig
from pipeline.conventions import SPECS
from pipeline.dataset_metrics import DatasetAccumulator, dataset_metrics_manifest
from pipeline.discover import Pair, discover_pairs
from pipeline.errors import WeightsError, WriteError
from pipeline.locations import Location, StorageOptions, locate
from pipeline.manifest import build_manifest, run_complete, write_manifest
from pipeline.measure import plugin_provenance, prepare_plugins
from pipeline.metrics.inception import InceptionFile, InceptionWeights, resolve_inception, verify_inception
from pipeline.metrics.lpips_weights import BackboneFile, resolve_backbone, verify_backbone
from pipeline.progress import progress_bar
from pipeline.results import (
    PartWriter,
    ResultRow,
    latest_rows,
    remove_stale_temp_files,
    resume_index,
    retire_superseded_rows,
)
from pipeline.run_dirs import MANIFEST_NAME, REPORT_NAME, SCORES_DIR, SUPERSEDED_DIR, claim_run_dir
from pipeline.shards import BALANCE_WINDOW_SHARDS, iter_shards, shard_size
from pipeline.worker import PairTask, ShardResult, ShardSettings, score_shard, scoring_plugin

log = logging.getLogger("pipeline.scoring")

RUN_OUTPUTS = (MANIFEST_NAME, SCORES_DIR, SUPERSEDED_DIR, REPORT_NAME)  # what a run writes into its directory


@dataclass
class RunResult:
    """What a finished scoring run reports back."""

    run_dir: Path | str  # a path, or the URL of a run in object storage
    manifest: dict[str, Any]
    notices: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return self.manifest["counts"]

    @property
    def complete(self) -> bool:
        """Every reference has an ok row (no failed pair, no missing output, no key two files claim)."""
        return run_complete(self.manifest)


def new_run_id() -> str:
    """UTC time to the second and 6 random hex digits: '20261204T101500Z-1a2b3c'."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def resolve_metrics(config: ScoreConfig) -> tuple[tuple[str, ...], BackboneFile | None, list[str]]:
    """The metrics to score, the LPIPS backbone file verified here (or None), and notices for the user.

    Raises:
        WeightsError: the backbone file found is wrong (its hash differs from the prefix in its name, it
            cannot be loaded, or it is another architecture), or LPIPS was asked for (named in `metrics`, or
            weights given) and its backbone is missing. When LPIPS is only part of the default set and no
            backbone file is found, it is left out with a notice instead.
    """
    metrics = config.chosen_metrics
    if "lpips" not in metrics:
        return metrics, None, []
    net = config.lpips_net.value
    try:
        path = resolve_backbone(net, config.lpips_weights)
    except WeightsError as exc:
        if config.metrics is not None or config.lpips_weights:
            raise
        without = tuple(m for m in metrics if m != "lpips")
        return without, None, [f"LPIPS NOT SCORED: {exc}"]
    return metrics, verify_backbone(net, path), []


def resolve_dataset_weights(config: ScoreConfig) -> InceptionWeights | None:
    """The Inception weights FID/KID need, found and verified here (None without dataset metrics).

    Raises:
        WeightsError: the file is missing or wrong (`pipeline.metrics.inception`).
        UsageError: torchmetrics or torch-fidelity is not installed.
    """
    if not config.dataset_metrics:
        return None
    return verify_inception(resolve_inception(config.inception_weights))


def score_folders(
    ref_dir: str | Path,
    out_dir: str | Path,
    run_dir: str | Path,
    config: ScoreConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log_level: int = logging.WARNING,
    storage_options: StorageOptions | None = None,
) -> RunResult:
    """Score every pair of two folders into RUN_DIR (Parquet parts and manifest.json; no report).

    Args:
        ref_dir, out_dir: the folders of references and outputs, paired by key; paths or URLs.
        run_dir: the run directory, a path or a URL (`s3://bucket/runs/today`).
        config: the run configuration.
        resume: continue the run in `run_dir`, scoring only pairs without an ok row for the same config.
        overwrite: replace a run already in `run_dir`.
        progress: show a progress bar on stderr.
        log_level: the level of Dask's loggers in a cluster started here.
        storage_options: options of the file systems of URLs (client and workers); never recorded.

    Raises:
        UsageError, RunDirError, WeightsError, ClusterError, StorageError: systemic problems, before any
            pair is scored (a WeightsError, or a device missing on this machine for workers started here,
            also before the run directory is created or an earlier run in it is replaced).
    """
    started = time.perf_counter()
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    pairing = discover_pairs(
        ref_dir,
        out_dir,
        output_suffix=config.output_suffix,
        output_template=config.output_template,
        output_regex=config.output_regex,
        group_depth=config.group_depth,
        storage_options=storage_options,
    )
    metrics, backbone, notices = resolve_metrics(config)  # before the run directory is touched
    setups = prepare_plugins(metrics)
    plugins = plugin_provenance(metrics, setups)
    inception = resolve_dataset_weights(config)
    check_local_device(config.scheduler, config.scheduler_file, config.device)
    run = claim_run_dir(
        run_dir, RUN_OUTPUTS, resume=resume, overwrite=overwrite,
        inputs={"reference": ref_dir, "output": out_dir}, storage_options=storage_options,
    )  # fmt: skip
    for notice in notices:
        log.warning(notice)
    value_hash = config.value_hash(backbone.sha256 if backbone else None, plugins)
    known = resume_index(run, value_hash) if resume else {}
    if resume:
        remove_stale_temp_files(run)
    discovered = time.perf_counter()
    inception_file = inception.file if inception else None
    settings = shard_settings(
        config, metrics, backbone, new_run_id(), storage_options, setups, inception_file
    )
    scoring = score_pairs(
        pairing.pairs, run, settings, config, value_hash, known, progress, log_level, inception=inception
    )
    scored = time.perf_counter()
    counts = scoring.status_counts
    if resume:  # the rows of earlier runs count too
        retire_superseded_rows(run)  # each key in one part: every Parquet reader sees it once
        counts = latest_status_counts(run, pairing.pairs.keys)
    manifest = build_manifest(
        run_id=settings.run_id, created=created, ref_dir=locate(ref_dir, storage_options),
        out_dir=locate(out_dir, storage_options), config=config,
        value_hash=value_hash, metrics=metrics, backbone=backbone, pairing=pairing, status_counts=counts,
        notices=notices, plugins=plugins,
        execution=scoring.execution,
        timings={
            "discover_s": discovered - started,
            "score_s": scored - discovered,
            "total_s": time.perf_counter() - started,
            "pairs_per_s": len(pairing.pairs) / max(scored - discovered, 1e-9),
        },
        resumed={"reused": scoring.reused, "scored": len(pairing.pairs) - scoring.reused} if resume else None,
        dataset_metrics=dataset_results(scoring.dataset, settings, config),
    )  # fmt: skip
    write_manifest(run, manifest)
    return RunResult(Path(run.path) if run.local else run.url, manifest, notices)


def shard_settings(
    config: ScoreConfig,
    metrics: tuple[str, ...],
    backbone: BackboneFile | None,
    run_id: str,
    storage_options: StorageOptions | None = None,
    plugin_setups: dict[str, Any] | None = None,
    inception: InceptionFile | None = None,
) -> ShardSettings:
    """What the workers need of the config, the metrics that will run, the verified LPIPS backbone and
    Inception weights, and the options of the file systems their pairs are read from."""
    return ShardSettings(
        metrics=metrics, run_id=run_id, convention=config.convention.value, crop=config.effective_crop,
        size_mismatch=config.size_mismatch.value, ms_ssim_scales=config.ms_ssim_scales,
        data_range=config.data_range, volumes=config.volumes, lpips_net=config.lpips_net.value,
        lpips_weights=backbone, device=config.device.value,
        storage_options=dict(storage_options) if storage_options else None,
        plugin_setups=plugin_setups or {},
        dataset_metrics=config.dataset_metrics, inception=inception,
        inception_resize=config.inception_resize.value,
    )  # fmt: skip


def dataset_results(
    accumulator: DatasetAccumulator | None, settings: ShardSettings, config: ScoreConfig
) -> dict[str, Any] | None:
    """The manifest's `dataset_metrics` (None without FID/KID); each of its warnings is logged once."""
    if accumulator is None:
        return None
    assert settings.inception is not None, "FID/KID were computed without verified weights"
    result = dataset_metrics_manifest(
        accumulator, settings.inception, settings.inception_resize,
        kid_subsets=config.kid_subsets, kid_subset_size=config.kid_subset_size,
    )  # fmt: skip
    for warning in result["warnings"]:
        log.warning(warning)
    return result


def latest_status_counts(run_dir: Location, keys: pa.ChunkedArray) -> dict[str, int]:
    """{status: number of `keys` whose latest row in the run directory has it} (`--resume`: the rows of
    earlier runs count too, those of keys no longer paired do not)."""
    latest = latest_rows(run_dir, ["status"])
    paired = pc.is_in(pa.array(latest["key"], pa.string()), value_set=keys.combine_chunks())
    return Counter(latest["status"][paired.to_numpy(zero_copy_only=False)])


@dataclass
class Scoring:
    """What scoring the pairs left: {status: number} of the rows written, pairs reused by `--resume`, the
    cluster that scored them ({'description', 'dashboard', 'shard_pairs'}), and the reduced Inception
    features when FID/KID were asked for."""

    status_counts: dict[str, int]
    reused: int
    execution: dict[str, Any]
    dataset: DatasetAccumulator | None = None


def score_pairs(
    pairs: Sequence[Pair],
    run_dir: Location,
    settings: ShardSettings,
    config: ScoreConfig,
    value_hash: str,
    known: dict[str, tuple[str, str]],
    progress: bool,
    log_level: int = logging.WARNING,
    *,
    inception: InceptionWeights | None = None,
) -> Scoring:
    """Score `pairs` in shards on the configured cluster, writing one Parquet part per finished shard (and
    folding in their Inception features when `settings` asks for FID/KID; `inception` goes to the workers)."""
    writer = PartWriter(run_dir, {
        "run_id": settings.run_id, "config_hash": value_hash, "convention": settings.convention,
        "convention_spec": SPECS[Convention(settings.convention)].to_dict(), "crop": settings.crop,
        "metrics": list(settings.metrics),
    }, plugin_columns=tuple(m for m in settings.metrics if m not in BUILTIN_METRICS))  # fmt: skip
    cluster = open_cluster(
        config.scheduler, scheduler_file=config.scheduler_file, workers=config.workers,
        threads=config.threads, device=config.device, log_level=log_level,
    )  # fmt: skip
    with cluster as execution:
        if execution.dashboard_link:
            log.info("Dask dashboard: %s", execution.dashboard_link)
        execution.register(
            scoring_plugin(
                execution, settings.lpips_net, settings.lpips_weights, inception, settings.plugin_setups
            )
        )
        size = shard_size(len(pairs), execution.task_threads, config.shard_pairs)
        shards = iter_shards(pairs, size, known, window=BALANCE_WINDOW_SHARDS)
        in_flight = config.max_in_flight or execution.task_threads * 2 + 1
        dataset = (
            DatasetAccumulator(settings.dataset_metrics, {p.group for p in pairs})
            if settings.dataset_metrics
            else None
        )
        counts, reused = _run_shards(
            execution, shards, len(pairs), settings, writer, in_flight, progress, dataset
        )
        where = {
            "description": execution.description,
            "dashboard": execution.dashboard_link,
            "shard_pairs": size,
        }
    return Scoring(counts, reused, {**where, "shard_pairs": size}, dataset)


def _run_shards(
    execution: Execution,
    shards: Iterator[list[PairTask]],
    total: int,
    settings: ShardSettings,
    writer: PartWriter,
    in_flight: int,
    progress: bool,
    dataset: DatasetAccumulator | None = None,
) -> tuple[Counter[str], int]:
    """Run the shards with a bounded number in flight, writing each finished one and folding its features
    into `dataset`; ({status: rows}, reused)."""
    status_counts: Counter[str] = Counter()
    reused = 0
    with progress_bar(total, progress) as bar:
        for shard, result, error in run_bounded(
            execution.executor, score_shard, shards, settings, max_in_flight=in_flight
        ):
            if isinstance(error, WeightsError):
                raise error
            if error is not None:
                result = ShardResult(failed_shard_rows(shard, error, settings.run_id))
            if result.rows:
                _write_part(writer, result.rows)
            if dataset is not None:
                dataset.add(result.features)
            status_counts.update(row.status for row in result.rows)
            reused += result.reused
            bar.update(len(shard))
            bar.set_postfix(failed=status_counts.total() - status_counts[Status.OK.value], refresh=False)
    return status_counts, reused


def failed_shard_rows(shard: list[PairTask], error: BaseException, run_id: str) -> list[ResultRow]:
    """Error rows for every pair of a shard whose task failed as a whole (e.g. its worker kept dying)."""
    message = f"The worker task scoring this pair failed: {type(error).__name__}: {error}"
    rows = [ResultRow(t.key, t.group, t.ref_path, t.out_path, run_id) for t in shard]
    for row in rows:
        row.fail(message)
    return rows


def _write_part(writer: PartWriter, rows: list[ResultRow]) -> None:
    """Write one part; on a write failure stop the run, saying the finished parts are kept for --resume."""
    try:
        writer.write(rows)
    except WriteError as exc:
        raise WriteError(
            f"{exc} The run stopped; the {len(writer.written)} part(s) already written are kept: "
            "fix the problem and rerun with --resume to continue."
        ) from exc

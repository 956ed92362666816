"""`iqa explain`: which named convention reproduces someone's PSNR / SSIM / MS-SSIM on the same folders.

Every pair is read and decoded once, on the Dask path of `iqa score` (`pipeline.worker.load_pair`, the same
worker plugin, shards and bounded submission); the worker then measures PSNR, SSIM and MS-SSIM under every
convention of `pipeline.conventions.SPECS` on the decoded tensors, with crop 0 and, when a scale is given,
crop = scale (a `Variant` each). The client takes each variant's dataset means (ok pairs, finite values:
PSNR's `inf` of identical pairs is left out, as the summary does) and ranks the variants by their distance
to the given numbers: the sum over the given metrics of |mean - given| in units of half the last digit
given. A variant reproduces the numbers when every given metric's mean rounds to the digits given (each
term at most 1).

Example:
    >>> given = parse_given({"ssim": "0.9123"})
    >>> given["ssim"].half_unit
    5e-05
    >>> means = [VariantMeans(Variant("matlab", 0), {"ssim": 0.9131}, pairs=3),
    ...          VariantMeans(Variant("default", 0), {"ssim": 0.91234}, pairs=3)]
    >>> [(m.variant.convention, round(m.distance, 1), m.reproduces) for m in rank_variants(means, given)]
    [('default', 0.8, True), ('matlab', 16.0, False)]
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from pipeline.allocator import return_freed_memory
from pipeline.cluster import open_cluster, run_bounded
from pipeline.config import ScoreConfig, build_config
from pipeline.conventions import SPECS, ResolvedConvention, resolve_convention
from pipeline.devices import compute_device, resolve_device
from pipeline.discover import Pair, Pairing, discover_pairs
from pipeline.errors import ConfigError, ImageError, UsageError
from pipeline.locations import StorageOptions
from pipeline.measure import measure
from pipeline.progress import progress_bar
from pipeline.shards import BALANCE_WINDOW_SHARDS, iter_shards, shard_size
from pipeline.worker import (
    PairTask,
    ScoringPlugin,
    ShardSettings,
    WorkerState,
    current_state,
    load_pair,
    stack_images,
)

log = logging.getLogger("pipeline.explanation")

EXPLAINED_METRICS = ("psnr", "ssim", "ms_ssim")  # LPIPS is the lpips package under every convention
CONFIG_OPTIONS = (
    "scale", "output_suffix", "output_template", "output_regex", "group_depth", "size_mismatch", "data_range",
    "volumes", "ms_ssim_scales", "scheduler", "scheduler_file", "workers", "threads", "device", "shard_pairs",
    "max_in_flight",
)  # fmt: skip
REPRODUCES_SLACK = 1e-6  # of a half unit: the given value's own float representation error


@dataclass(frozen=True, order=True)
class Variant:
    """One way of scoring the folders: a convention and a border crop."""

    convention: str
    crop: int

    def describe(self) -> str:
        return f"{self.convention} crop {self.crop}"


def convention_variants(scale: int | None = None) -> tuple[Variant, ...]:
    """Every convention of `SPECS` with crop 0, and also with crop = `scale` when a scale is given.

    Example:
        >>> [v.describe() for v in convention_variants(4)][:2]
        ['default crop 0', 'default crop 4']
    """
    crops = (0, scale) if scale else (0,)
    return tuple(Variant(name.value, crop) for name in SPECS for crop in crops)


@dataclass(frozen=True)
class GivenValue:
    """A number someone reported, as text: its value and half a unit of its last digit."""

    metric: str
    text: str
    value: float
    half_unit: float

    @property
    def decimals(self) -> int:
        """Digits after the decimal point (0 for '31' or '3.1e1')."""
        return max(0, round(-math.log10(2 * self.half_unit)))


def parse_given(values: Mapping[str, str | float | None]) -> dict[str, GivenValue]:
    """{metric: text or number} -> {metric: GivenValue}, None left out; the text decides the digits.

    A float is read as Python prints it (0.9120 becomes '0.912': pass text to keep trailing zeros).

    Raises:
        UsageError: an unknown metric, or a value that is not a finite number.

    Example:
        >>> parse_given({"psnr": "31.27", "ssim": None})["psnr"].half_unit
        0.005
    """
    given: dict[str, GivenValue] = {}
    for metric, raw in values.items():
        if raw is None:
            continue
        option = f"--{metric.replace('_', '-')}"
        if metric not in EXPLAINED_METRICS:
            raise UsageError(f"{option}: explain compares {', '.join(EXPLAINED_METRICS)} only.")
        text = repr(raw) if isinstance(raw, float) else str(raw).strip()
        try:
            number = None if isinstance(raw, bool) else Decimal(text)
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite():
            raise UsageError(
                f"{option} {text!r} is not a finite number: give the value as it was reported, e.g. 0.9123."
            )
        half_unit = float(Decimal(5).scaleb(number.as_tuple().exponent - 1))
        given[metric] = GivenValue(metric, text, float(number), half_unit)
    return given


# Worker side: one decode per pair, every variant measured on the decoded tensors


@dataclass(frozen=True)
class ExplainSettings:
    """What workers need (picklable): how to read and align pairs, and the variants to measure."""

    shard: ShardSettings
    variants: tuple[Variant, ...]


@dataclass
class PairValues:
    """One pair under every variant: {variant: {metric: value}}, and why a variant has no values for it."""

    key: str
    ok: bool
    error: str | None = None
    values: dict[Variant, dict[str, float | None]] = field(default_factory=dict)
    problems: dict[Variant, str] = field(default_factory=dict)


def explain_shard(tasks: list[PairTask], settings: ExplainSettings) -> list[PairValues]:
    """Read and decode each pair of a shard once, then measure it under every variant (a Dask task).

    Returns:
        One PairValues per task, in task order; a pair that cannot be read or aligned has `ok` False.
    """
    state = current_state()
    conventions = [resolve_convention(v.convention, crop=v.crop) for v in settings.variants]
    device = resolve_device(settings.shard.device)
    for convention in conventions:  # one device for every variant: the CPU when one needs float64 on MPS
        device = compute_device(device, convention.spec.precision)
    with torch.inference_mode():
        return [explain_pair(task, settings, conventions, device, state) for task in tasks]


def explain_pair(
    task: PairTask,
    settings: ExplainSettings,
    conventions: list[ResolvedConvention],
    device: torch.device,
    state: WorkerState,
) -> PairValues:
    """One pair: `load_pair` (read, hash, decode, align) once, `measure` once per variant."""
    loaded = load_pair(task, settings.shard, state)
    if loaded.aligned is None:
        return PairValues(task.key, ok=False, error=loaded.row.error)
    aligned, reserved = loaded.aligned, loaded.reserved
    result = PairValues(task.key, ok=True)
    resources = state.resources(settings.shard.lpips_net, None)
    try:
        with state.budget.hold(0 if reserved else aligned.ref.size):
            ref, out = stack_images([aligned.ref], device), stack_images([aligned.out], device)
            for variant, convention in zip(settings.variants, conventions, strict=True):
                try:
                    values, _ = measure(
                        ref, out, aligned.data_range, EXPLAINED_METRICS, convention, resources,
                        ms_ssim_scales=settings.shard.ms_ssim_scales,
                    )  # fmt: skip
                except ImageError as exc:
                    result.problems[variant] = str(exc)
                    continue
                except Exception as exc:
                    result.problems[variant] = f"unexpected failure: {type(exc).__name__}: {exc}"
                    continue
                result.values[variant] = {name: column[0] for name, column in values.items()}
    finally:
        if reserved:
            return_freed_memory()
            state.budget.release(reserved)
    return result


# Client side: means per variant, ranking against the given numbers


@dataclass
class VariantMeans:
    """A variant's dataset means over the pairs it measured, and how far they are from the given numbers.

    `distance` is None without given numbers, `inf` when a given metric has no mean under this variant.
    """

    variant: Variant
    means: dict[str, float | None]
    pairs: int
    distance: float | None = None
    reproduces: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON entry: convention, crop, the means, distance (null when none or infinite), ..."""
        finite = self.distance is not None and math.isfinite(self.distance)
        return {
            "convention": self.variant.convention,
            "crop": self.variant.crop,
            **{metric: self.means.get(metric) for metric in EXPLAINED_METRICS},
            "distance": self.distance if finite else None,
            "reproduces": self.reproduces,
            "pairs": self.pairs,
        }


def rank_variants(means: list[VariantMeans], given: Mapping[str, GivenValue]) -> list[VariantMeans]:
    """Closest first (ties by convention and crop) with distances filled in; by convention and crop when
    nothing is given."""
    if not given:
        return sorted(means, key=lambda m: m.variant)
    ranked = []
    for entry in means:
        terms = [_term(entry.means.get(metric), value) for metric, value in given.items()]
        reproduces = all(term <= 1 + REPRODUCES_SLACK for term in terms)
        ranked.append(replace(entry, distance=sum(terms), reproduces=reproduces))
    return sorted(ranked, key=lambda m: (m.distance, m.variant))


def _term(mean: float | None, given: GivenValue) -> float:
    if mean is None:
        return math.inf
    return abs(mean - given.value) / given.half_unit


def values_frame(pairs: list[PairValues], variants: tuple[Variant, ...]) -> pd.DataFrame:
    """One row per (ok pair, variant that measured it): key, convention, crop, psnr, ssim, ms_ssim."""
    records = [
        {"key": pair.key, "convention": variant.convention, "crop": variant.crop, **pair.values[variant]}
        for pair in pairs
        for variant in variants
        if pair.ok and variant in pair.values
    ]
    frame = pd.DataFrame(records, columns=["key", "convention", "crop", *EXPLAINED_METRICS])
    return frame.astype({metric: "float64" for metric in EXPLAINED_METRICS})


def variant_means(frame: pd.DataFrame, variants: tuple[Variant, ...]) -> list[VariantMeans]:
    """Each variant's means over its rows of `values_frame`, finite values only (None: no finite value)."""
    result = []
    for variant in variants:
        rows = frame[(frame["convention"] == variant.convention) & (frame["crop"] == variant.crop)]
        finite = rows[list(EXPLAINED_METRICS)].replace([math.inf, -math.inf], math.nan)
        means = {m: None if finite[m].isna().all() else float(finite[m].mean()) for m in EXPLAINED_METRICS}
        result.append(VariantMeans(variant, means, pairs=len(rows)))
    return result


@dataclass
class Explanation:
    """What `iqa explain` found.

    Attributes:
        given: the numbers to explain, by metric.
        ranking: every variant's means, closest to `given` first (by convention and crop without `given`).
        values: one row per ok pair and variant (`values_frame`): the per-pair values behind the means.
        failures: {key: error} of the pairs that could not be read, decoded or aligned.
        left_out: {variant: {key: why}} for ok pairs a variant could not measure (e.g. too small to crop).
        pairing: how the folders paired up.
    """

    given: dict[str, GivenValue]
    ranking: list[VariantMeans]
    values: pd.DataFrame
    failures: dict[str, str]
    left_out: dict[Variant, dict[str, str]]
    pairing: Pairing

    @property
    def reproducing(self) -> list[VariantMeans]:
        """The variants whose means round to every given number (none without given numbers)."""
        return [entry for entry in self.ranking if entry.reproduces]

    @property
    def match(self) -> VariantMeans | None:
        """The closest variant that reproduces the given numbers, or None."""
        return next(iter(self.reproducing), None)

    @property
    def complete(self) -> bool:
        """Every reference was decoded with its output (no failed pair, missing output, or duplicate key)."""
        return not (self.failures or self.pairing.missing or self.pairing.unscored_duplicates())

    def to_dict(self) -> dict[str, Any]:
        """{'given': {metric: text}, 'ranking': [...], 'match': entry or None}, best first."""
        match = self.match
        return {
            "given": {metric: value.text for metric, value in self.given.items()},
            "ranking": [entry.to_dict() for entry in self.ranking],
            "match": match.to_dict() if match else None,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def explain_config(**options: Any) -> ScoreConfig:
    """A ScoreConfig of the options `iqa explain` takes (None: not given); others are a ConfigError.

    Example:
        >>> explain_config(scale=4, scheduler="sync").scale
        4
    """
    refused = sorted(name for name in options if name not in CONFIG_OPTIONS)
    if refused:
        raise ConfigError(
            f"explain does not take {', '.join(refused)}: it scores PSNR, SSIM and MS-SSIM under every "
            f"convention. Its options: {', '.join(CONFIG_OPTIONS)}."
        )
    return build_config(None, **options)


def explain_folders(
    reference: str | Path,
    output: str | Path,
    config: ScoreConfig,
    given: Mapping[str, GivenValue],
    *,
    progress: bool = True,
    log_level: int = logging.WARNING,
    storage_options: StorageOptions | None = None,
) -> Explanation:
    """Score the folders' pairs (paths or URLs) under every variant (one decode per pair) and rank them.

    Raises:
        UsageError, ClusterError: a missing folder, no pair at all, a cluster that cannot be reached.
        StorageError: a store refuses the listing (a folder given as a URL).
    """
    pairing = discover_pairs(
        reference, output, output_suffix=config.output_suffix, output_template=config.output_template,
        output_regex=config.output_regex, group_depth=config.group_depth, storage_options=storage_options,
    )  # fmt: skip
    if not pairing.pairs:
        raise UsageError(
            f"No pairs to explain: no reference under {reference} has an output with the same key under "
            f"{output}. `iqa pairs {reference} {output}` shows the pairing."
        )
    variants = convention_variants(config.scale)
    shard = ShardSettings(
        metrics=EXPLAINED_METRICS, size_mismatch=config.size_mismatch.value, data_range=config.data_range,
        ms_ssim_scales=config.ms_ssim_scales, volumes=config.volumes, device=config.device.value,
        storage_options=dict(storage_options) if storage_options else None,
    )  # fmt: skip
    pairs = run_explain(pairing.pairs, ExplainSettings(shard, variants), config, progress, log_level)
    frame = values_frame(pairs, variants)
    left_out: dict[Variant, dict[str, str]] = {}
    for pair in pairs:
        for variant, why in pair.problems.items():
            left_out.setdefault(variant, {})[pair.key] = why
    return Explanation(
        given=dict(given),
        ranking=rank_variants(variant_means(frame, variants), given),
        values=frame,
        failures={pair.key: pair.error or "" for pair in pairs if not pair.ok},
        left_out=left_out,
        pairing=pairing,
    )


def run_explain(
    pairs: Sequence[Pair], settings: ExplainSettings, config: ScoreConfig, progress: bool, log_level: int
) -> list[PairValues]:
    """`explain_shard` over shards of `pairs` on the configured cluster, as `iqa score` runs its shards."""
    cluster = open_cluster(
        config.scheduler, scheduler_file=config.scheduler_file, workers=config.workers,
        threads=config.threads, device=config.device, log_level=log_level,
    )  # fmt: skip
    results: list[PairValues] = []
    with cluster as execution:
        if execution.dashboard_link:
            log.info("Dask dashboard: %s", execution.dashboard_link)
        execution.register(ScoringPlugin(execution.torch_threads, own_processes=execution.own_processes))
        size = shard_size(len(pairs), execution.task_threads, config.shard_pairs)
        shards = iter_shards(pairs, size, window=BALANCE_WINDOW_SHARDS)
        in_flight = config.max_in_flight or execution.task_threads * 2 + 1
        with progress_bar(len(pairs), progress, "explaining") as bar:
            for shard, values, error in run_bounded(
                execution.executor, explain_shard, shards, settings, max_in_flight=in_flight
            ):
                if error is not None:
                    message = f"The worker task measuring this pair failed: {type(error).__name__}: {error}"
                    values = [PairValues(task.key, ok=False, error=message) for task in shard]
                results.extend(values)
                bar.update(len(shard))
    return sorted(results, key=lambda pair: pair.key)


__all__ = [
    "EXPLAINED_METRICS",
    "Explanation",
    "GivenValue",
    "PairValues",
    "Variant",
    "VariantMeans",
    "convention_variants",
    "explain_config",
    "explain_folders",
    "explain_shard",
    "parse_given",
    "rank_variants",
]

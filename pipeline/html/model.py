"""Computation stage of the report: a run directory (Parquet + manifest) -> plain dataclasses.

Nothing here formats text for display; the template receives these objects and the filters in
`pipeline.html.filters` turn numbers into strings.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.choices import METRICS
from pipeline.comparison import Comparison, compare_runs
from pipeline.discover import duplicate_message
from pipeline.html.display import ReadOptions
from pipeline.html.filters import relative_href
from pipeline.html.pair_table import PairTable, build_pair_table, pair_anchor
from pipeline.html.pictures import (
    CROP_ZOOM,
    FULL_SIDE,
    PICTURE_BUDGET,
    PairFiles,
    PairPictures,
    PictureBudget,
    RegionRequest,
    pair_pictures,
)
from pipeline.html.plots import distribution_plot
from pipeline.html.regions import CROP_SIDE, region_kind
from pipeline.locations import StorageOptions, locate
from pipeline.manifest import read_manifest
from pipeline.results import load_results
from pipeline.run_dirs import RunDir
from pipeline.summary import MetricSummary, metric_columns, summarize, summarize_groups

log = logging.getLogger("pipeline.html")

DEFAULT_WORST = 8
LIST_LIMIT = 500


@dataclass
class HeaderInfo:
    """What was run, where, how and how fast (from manifest.json)."""

    run_id: str
    created: str
    generated: str
    reference_dir: str
    output_dir: str
    convention: str
    convention_description: str
    metrics: list[str]
    versions: dict[str, str]
    device: str
    execution: str
    counts: dict[str, int]
    wall_seconds: float | None
    score_seconds: float | None
    throughput: float | None
    config_hash: str
    lpips_backbone: str | None
    lpips_backbone_sha256: str | None
    notices: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)


@dataclass
class MetricGroups:
    """Per-group statistics of one metric, groups in sorted order."""

    metric: str
    summaries: list[MetricSummary]


@dataclass
class DistributionPlot:
    """Distribution plot of one metric; `data_uri` is None when the metric has no finite value."""

    metric: str
    data_uri: str | None


@dataclass
class WorstCase:
    """One of the worst pairs of a metric; its pictures are in the card named by `anchor`."""

    rank: int
    key: str
    group: str
    value: float | None
    anchor: str


@dataclass
class WorstSection:
    """The worst K pairs of one metric, in the order of the metric's direction (worst first)."""

    metric: str
    higher_is_better: bool
    considered: int
    cases: list[WorstCase]


@dataclass
class FailureRow:
    """A pair whose row has status 'error'."""

    key: str
    group: str
    ref_path: str
    out_path: str
    error: str


@dataclass
class FileRow:
    """One file that did not become a scored pair."""

    key: str
    paths: list[str]
    note: str = ""


@dataclass
class FileList:
    """Missing, extra, duplicate or skipped files (from manifest.json), at most `LIST_LIMIT` rows shown."""

    id: str
    title: str
    explanation: str
    rows: list[FileRow]
    total: int


@dataclass
class RegressionCase:
    """A pair that got worse against the baseline on one metric; its pictures are in the card `anchor`."""

    rank: int
    key: str
    group: str
    baseline: float | None
    candidate: float | None
    improvement: float
    anchor: str


@dataclass(frozen=True)
class Listing:
    """A list that names a pair: a metric's worst cases (`worst`) or largest regressions (`regression`)."""

    metric: str
    kind: str
    rank: int


@dataclass
class PairValue:
    """One metric of a pair's card; `baseline` and `improvement` only with a baseline that has the pair."""

    metric: str
    value: float | None
    baseline: float | None = None
    improvement: float | None = None
    listed: bool = False


@dataclass
class PairCard:
    """A pair shown once, with all its metrics, the lists that name it and its pictures."""

    anchor: str
    key: str
    group: str
    values: list[PairValue]
    listings: list[Listing]
    ref_path: str
    out_path: str
    baseline_out: str
    warnings: list[str]
    pictures: PairPictures


@dataclass
class RegressionSection:
    """The largest per-pair regressions of one metric (most negative improvement first)."""

    metric: str
    worse_pairs: int
    cases: list[RegressionCase]


@dataclass
class BaselineData:
    """Comparison of this run (candidate) with a baseline run, as computed by `pipeline.comparison`.

    `forced`: the runs are not comparable (`differences` says why) and were compared because of `force`.
    """

    baseline_dir: str
    baseline_run_id: str
    passed: bool
    regressions: list[str]
    notes: list[str]
    metrics: list[Any]
    groups: list[tuple[str, list[Any]]]
    added_keys: list[str]
    added_total: int
    removed_keys: list[str]
    removed_total: int
    worst: list[RegressionSection]
    forced: bool = False
    differences: list[str] = field(default_factory=list)
    cards: list[PairCard] = field(default_factory=list)  # pairs that regressed, shown with the regressions


@dataclass
class DatasetSection:
    """FID and KID of the whole output set against the reference set (manifest.json's `dataset_metrics`).

    `metrics`: 'fid' and/or 'kid'. `groups`: (group, FID or None, images per side) of each group that has a
    FID of its own.
    """

    metrics: list[str]
    images: int
    extractor: str
    weights: str
    weights_sha256: str
    fid: float | None = None
    groups: list[tuple[str, float | None, int]] = field(default_factory=list)
    kid_mean: float | None = None
    kid_std: float | None = None
    kid_subsets: str = ""  # 'N subsets of M pairs'
    warnings: list[str] = field(default_factory=list)


def build_dataset_section(manifest: dict[str, Any]) -> DatasetSection | None:
    """The FID/KID section from manifest.json; None for a run that did not ask for them."""
    block = manifest.get("dataset_metrics")
    if not block:
        return None
    extractor = block.get("extractor") or {}
    images = block.get("images") or {}
    section = DatasetSection(
        metrics=[_text(m) for m in block.get("metrics") or []],
        images=int(images.get("reference") or 0),
        extractor=f"{_text(extractor.get('name'))}; {_text(extractor.get('resize_description'))}",
        weights=_text(block.get("weights")),
        weights_sha256=_text(block.get("weights_sha256")),
        warnings=[_text(w) for w in block.get("warnings") or []],
    )
    fid, kid = block.get("fid"), block.get("kid")
    if fid:
        section.fid = _number(fid.get("all"))
        counts = images.get("groups") or {}
        groups = (fid.get("groups") or {}).items()
        section.groups = [(str(g), _number(v), int(counts.get(g, 0))) for g, v in groups]
    if kid:
        section.kid_mean, section.kid_std = _number(kid.get("mean")), _number(kid.get("std"))
        section.kid_subsets = f"{kid.get('subsets')} subsets of {kid.get('subset_size')} pairs"
    return section


@dataclass
class ReportData:
    """Everything the run report shows."""

    header: HeaderInfo
    overall: list[MetricSummary]
    groups: list[MetricGroups]
    group_count: int
    plots: list[DistributionPlot]
    worst: list[WorstSection]
    worst_k: int
    failures: list[FailureRow]
    failures_total: int
    files: list[FileList]
    baseline: BaselineData | None = None
    pairs: PairTable | None = None
    cards: list[PairCard] = field(default_factory=list)  # worst pairs not shown with the regressions
    picture_budget: int = PICTURE_BUDGET
    pictures_size: int = 0
    full_side: int = FULL_SIDE
    crop_side: int = CROP_SIDE
    crop_zoom: int = CROP_ZOOM
    dataset: DatasetSection | None = None


@dataclass
class SuiteData:
    """One suite of a nightly run: its verdict, statistics and comparison."""

    name: str
    run_dir: str
    report_href: str | None
    passed: bool | None
    label: str  # the verdict shown: FAILED, REGRESSED, pass or no baseline (`verdict_label`)
    run_id: str
    counts: dict[str, int]
    overall: list[MetricSummary]
    comparison: list[Any]
    regressed_metrics: list[str]
    regressions: list[str]
    notes: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class NightlyData:
    """Everything the combined nightly page shows."""

    generated: str
    passed: bool | None
    label: str
    suites: list[SuiteData]


def now_text() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if pd.isna(number) else number


def _hash(value: Any) -> str | None:
    """A recorded sha256, or None when the row has none."""
    return _text(value) or None


def _warnings(value: Any) -> list[str]:
    return [] if value is None else [_text(w) for w in value]


def report_metrics(frame: pd.DataFrame, manifest: dict[str, Any]) -> list[str]:
    """Metrics of the run that hold at least one value, in the manifest's order."""
    present = metric_columns(frame)
    chosen = [m for m in manifest.get("metrics", []) if m in present]
    return chosen or present


def build_header(manifest: dict[str, Any], metrics: list[str]) -> HeaderInfo:
    """The header block from manifest.json."""
    convention = manifest.get("convention") or {}
    if isinstance(convention, str):
        convention = {"name": convention}
    timings = manifest.get("timings") or {}
    return HeaderInfo(
        run_id=_text(manifest.get("run_id")),
        created=_text(manifest.get("created")),
        generated=now_text(),
        reference_dir=_text(manifest.get("reference_dir")),
        output_dir=_text(manifest.get("output_dir")),
        convention=_text(convention.get("name")),
        convention_description=_text(convention.get("description")),
        metrics=metrics,
        versions={str(k): _text(v) for k, v in (manifest.get("versions") or {}).items()},
        device=_text(manifest.get("device")),
        execution=_text(manifest.get("execution")),
        counts={str(k): int(v) for k, v in (manifest.get("counts") or {}).items()},
        wall_seconds=_number(timings.get("total_s")),
        score_seconds=_number(timings.get("score_s")),
        throughput=_number(timings.get("pairs_per_s")),
        config_hash=_text(manifest.get("config_hash")),
        lpips_backbone=manifest.get("lpips_backbone"),
        lpips_backbone_sha256=manifest.get("lpips_backbone_sha256"),
        notices=[_text(n) for n in manifest.get("notices") or []],
        hints=[_text(h) for h in manifest.get("hints") or []],
    )


def worst_rows(ok_rows: pd.DataFrame, metric: str, k: int) -> pd.DataFrame:
    """The K worst rows of a metric: lowest first when higher is better, highest first otherwise.

    Rows without a finite value are left out; ties are broken by key.
    """
    values = pd.to_numeric(ok_rows[metric], errors="coerce")
    finite = ok_rows[values.notna() & ~values.isin([float("inf"), float("-inf")])]
    ascending = METRICS[metric].higher_is_better
    return finite.sort_values([metric, "key"], ascending=[ascending, True], kind="stable").head(k)


class Gallery:
    """One card per pair, however many lists name it; anchors in the order pairs are first listed."""

    def __init__(self) -> None:
        self.listings: dict[str, list[Listing]] = {}
        self.anchors: dict[str, str] = {}

    def anchor(self, key: str, listing: Listing) -> str:
        """Record that a list names `key`; the anchor of the key's card."""
        self.listings.setdefault(key, []).append(listing)
        return self.anchors.setdefault(key, pair_anchor(key))


def build_worst(ok_rows: pd.DataFrame, metrics: list[str], k: int, gallery: Gallery) -> list[WorstSection]:
    """Worst K pairs per metric, each linking to its card in `gallery`."""
    sections = []
    for metric in metrics:
        cases = [
            WorstCase(
                rank=rank,
                key=_text(row.key),
                group=_text(row.group),
                value=_number(getattr(row, metric)),
                anchor=gallery.anchor(_text(row.key), Listing(metric, "worst", rank)),
            )
            for rank, row in enumerate(worst_rows(ok_rows, metric, k).itertuples(index=False), start=1)
        ]
        considered = int(pd.to_numeric(ok_rows[metric], errors="coerce").notna().sum())
        sections.append(WorstSection(metric, METRICS[metric].higher_is_better, considered, cases))
    return sections


def build_failures(frame: pd.DataFrame) -> tuple[list[FailureRow], int]:
    """Error rows (at most `LIST_LIMIT`) and their total count."""
    errors = frame[frame["status"] != "ok"]
    rows = [
        FailureRow(
            key=_text(row.key),
            group=_text(row.group),
            ref_path=_text(row.ref_path),
            out_path=_text(row.out_path),
            error=_text(row.error),
        )
        for row in errors.head(LIST_LIMIT).itertuples(index=False)
    ]
    return rows, len(errors)


def build_file_lists(manifest: dict[str, Any]) -> list[FileList]:
    """Missing outputs, references left unscored by a duplicate key, extra, duplicate and skipped files from
    manifest.json."""
    missing = manifest.get("missing") or []
    extra = manifest.get("extra") or []
    duplicates = manifest.get("duplicates") or []
    unscored = [e for e in duplicates if e.get("references")]
    skipped = manifest.get("skipped") or []
    return [
        FileList(
            "files-missing",
            "Missing outputs",
            "References without an output: not scored.",
            [FileRow(_text(e.get("key")), [_text(e.get("path"))]) for e in missing[:LIST_LIMIT]],
            len(missing),
        ),
        FileList(
            "files-unscored-duplicates",
            "References not scored: key claimed by two or more files",
            "Two or more files (references or outputs) map to the key of these references, so they have no "
            "row and the run is incomplete. Keep one file per key.",
            [
                FileRow(
                    _text(e.get("key")),
                    [_text(p) for p in e.get("references") or []],
                    _text(duplicate_message(e)),
                )
                for e in unscored[:LIST_LIMIT]
            ],
            len(unscored),
        ),
        FileList(
            "files-extra",
            "Extra outputs",
            "Outputs without a reference: not scored.",
            [FileRow(_text(e.get("key")), [_text(e.get("path"))]) for e in extra[:LIST_LIMIT]],
            len(extra),
        ),
        FileList(
            "files-duplicates",
            "Duplicate keys",
            "Two or more files on one side map to the same key: the key is not scored.",
            [
                FileRow(_text(e.get("key")), [_text(p) for p in e.get("paths") or []], _text(e.get("side")))
                for e in duplicates[:LIST_LIMIT]
            ],
            len(duplicates),
        ),
        FileList(
            "files-skipped",
            "Skipped entries",
            "Seen while walking the folders but not usable.",
            [FileRow("", [_text(e.get("path"))], _text(e.get("reason"))) for e in skipped[:LIST_LIMIT]],
            len(skipped),
        ),
    ]


def _by_metric(items: list[Any], metrics: list[str]) -> list[tuple[str, list[Any]]]:
    blocks = [(m, [item for item in items if item.metric == m]) for m in metrics]
    return [(m, chosen) for m, chosen in blocks if chosen]


def build_regressions(per_pair: pd.DataFrame, metric: str, k: int, gallery: Gallery) -> RegressionSection:
    """The K pairs of `metric` that got most worse (`Comparison.per_pair`), each linking to its card."""
    rows = per_pair[(per_pair["metric"] == metric) & (per_pair["improvement"] < 0)]
    rows = rows.sort_values(["improvement", "key"], kind="stable")
    cases = [
        RegressionCase(
            rank=rank,
            key=_text(row.key),
            group=_text(row.group),
            baseline=_number(row.baseline),
            candidate=_number(row.candidate),
            improvement=float(row.improvement),
            anchor=gallery.anchor(_text(row.key), Listing(metric, "regression", rank)),
        )
        for rank, row in enumerate(rows.head(k).itertuples(index=False), start=1)
    ]
    return RegressionSection(metric, len(rows), cases)


def build_baseline(
    comparison: Comparison,
    baseline_dir: RunDir,
    metrics: list[str],
    k: int,
    gallery: Gallery,
    storage_options: StorageOptions | None = None,
) -> BaselineData:
    """The comparison section: verdict, deltas, and the largest per-pair regressions listed in `gallery`."""
    try:
        baseline_run_id = _text(read_manifest(baseline_dir, storage_options).get("run_id"))
    except Exception:
        baseline_run_id = ""
    compared = [m.metric for m in comparison.metrics]
    order = [m for m in metrics if m in compared] + [m for m in compared if m not in metrics]
    added = sorted(comparison.added_keys)
    removed = sorted(comparison.removed_keys)
    return BaselineData(
        baseline_dir=str(baseline_dir),
        baseline_run_id=baseline_run_id,
        passed=bool(comparison.passed),
        regressions=list(comparison.regressions),
        notes=[_text(n) for n in getattr(comparison, "notes", [])],
        metrics=list(comparison.metrics),
        groups=_by_metric(list(comparison.groups), order),
        added_keys=added[:LIST_LIMIT],
        added_total=len(added),
        removed_keys=removed[:LIST_LIMIT],
        removed_total=len(removed),
        worst=[build_regressions(comparison.per_pair, metric, k, gallery) for metric in order],
        forced=comparison.forced,
        differences=list(comparison.differences),
    )


def _rows_by_key(frame: pd.DataFrame | None) -> dict[str, dict[str, Any]]:
    """{key: row as a dict} of a results frame (empty without one)."""
    if frame is None:
        return {}
    return {_text(record["key"]): record for record in frame.to_dict("records")}


def region_requests(listings: list[Listing]) -> list[RegionRequest]:
    """One region per map kind and list kind, for the metrics those lists rank the pair in."""
    metrics: dict[tuple[Any, bool], list[str]] = {}
    for listing in listings:
        chosen = metrics.setdefault((region_kind(listing.metric), listing.kind == "regression"), [])
        chosen.extend([listing.metric] if listing.metric not in chosen else [])
    return [RegionRequest(kind, against, tuple(names)) for (kind, against), names in metrics.items()]


@dataclass
class CardSources:
    """What the cards are made from: both runs' rows by key, and from the per-pair comparison the baseline's
    value and the improvement of each (key, metric)."""

    candidate: dict[str, dict[str, Any]]
    baseline: dict[str, dict[str, Any]]
    improvements: dict[tuple[str, str], tuple[float | None, float | None]]

    @classmethod
    def of(
        cls, frame: pd.DataFrame, comparison: Comparison | None, baseline: pd.DataFrame | None
    ) -> CardSources:
        improvements = {}
        if comparison is not None:
            per_pair = comparison.per_pair
            columns = [per_pair[name] for name in ("key", "metric", "baseline", "improvement")]
            improvements = {
                (_text(key), _text(metric)): (_number(value), _number(improvement))
                for key, metric, value, improvement in zip(*columns, strict=True)
            }
        return cls(_rows_by_key(frame), _rows_by_key(baseline), improvements)

    def values(self, key: str, metrics: list[str], listings: list[Listing]) -> list[PairValue]:
        """Every metric of a pair, with the baseline's value and the improvement when compared."""
        row = self.candidate.get(key, {})
        listed = {listing.metric for listing in listings}
        return [
            PairValue(m, _number(row.get(m)), *self.improvements.get((key, m), (None, None)), m in listed)
            for m in metrics
        ]

    def files(self, key: str) -> PairFiles:
        """The pair's files and recorded hashes; the baseline's output when the baseline has the key."""
        row, base = self.candidate.get(key, {}), self.baseline.get(key, {})
        return PairFiles(
            _text(row.get("ref_path")),
            _text(row.get("out_path")),
            _hash(row.get("ref_sha256")),
            _hash(row.get("out_sha256")),
            _text(base.get("out_path")) or None,
            _hash(base.get("out_sha256")),
        )


def build_cards(
    gallery: Gallery, sources: CardSources, metrics: list[str], options: ReadOptions, budget: PictureBudget
) -> list[PairCard]:
    """One card per pair the gallery lists, in its order, each within its share of the picture budget."""
    cards = []
    for key, anchor in gallery.anchors.items():
        listings = gallery.listings[key]
        files = sources.files(key)
        pictures = pair_pictures(files, region_requests(listings), options, budget.share())
        budget.spend(pictures.size)
        row = sources.candidate.get(key, {})
        cards.append(
            PairCard(
                anchor=anchor,
                key=key,
                group=_text(row.get("group")),
                values=sources.values(key, metrics, listings),
                listings=listings,
                ref_path=files.ref_path,
                out_path=files.out_path,
                baseline_out=files.baseline_out or "",
                warnings=_warnings(row.get("warnings")),
                pictures=pictures,
            )
        )
    return cards


def _regressed(card: PairCard) -> bool:
    return any(listing.kind == "regression" for listing in card.listings)


def build_report(
    run_dir: RunDir,
    *,
    baseline: RunDir | None = None,
    worst: int | None = None,
    force: bool = False,
    storage_options: StorageOptions | None = None,
    picture_budget: int = PICTURE_BUDGET,
) -> ReportData:
    """Read a run directory and compute everything its report shows.

    Args:
        run_dir: Run directory written by `iqa score`.
        baseline: Optional baseline run directory to compare with.
        worst: Worst pairs per metric (and largest regressions per metric) shown with pictures;
            default: the run's `worst` config value, else `DEFAULT_WORST`.
        force: compare with a baseline that is not comparable anyway (the section is marked FORCED).
        storage_options: options of the file system of URLs (run, baseline and the images).
        picture_budget: characters of picture data URIs the page may hold (`pipeline.html.pictures`).

    Returns:
        The report's data, ready for the template.

    Raises:
        NotComparableError: the baseline is not comparable with the run and `force` is not given.
    """
    run_dir = locate(run_dir, storage_options)
    manifest = read_manifest(run_dir)
    frame = load_results(run_dir)
    if worst is None:
        worst = int((manifest.get("config") or {}).get("worst") or DEFAULT_WORST)
    worst = max(0, worst)
    metrics = report_metrics(frame, manifest)
    ok_rows = frame[frame["status"] == "ok"]
    group_summaries = summarize_groups(frame, metrics) if metrics else []
    failures, failures_total = build_failures(frame)
    gallery = Gallery()
    comparison = baseline_data = baseline_frame = None
    if baseline is not None:
        baseline_dir = locate(baseline, storage_options)
        comparison = compare_runs(baseline_dir, run_dir, force=force, storage_options=storage_options)
        baseline_frame = load_results(baseline_dir, storage_options=storage_options)
        baseline_data = build_baseline(comparison, baseline_dir, metrics, worst, gallery, storage_options)
    worst_sections = build_worst(ok_rows, metrics, worst, gallery)
    budget = PictureBudget(picture_budget, len(gallery.anchors))
    options = ReadOptions.from_manifest(manifest, storage_options)
    cards = build_cards(gallery, CardSources.of(frame, comparison, baseline_frame), metrics, options, budget)
    if baseline_data is not None:
        baseline_data.cards = [card for card in cards if _regressed(card)]
    report = ReportData(
        header=build_header(manifest, metrics),
        overall=summarize(frame, metrics) if metrics else [],
        groups=[MetricGroups(m, s) for m, s in _by_metric(group_summaries, metrics)],
        group_count=int(ok_rows["group"].nunique()),
        plots=[DistributionPlot(m, distribution_plot(ok_rows, m)) for m in metrics],
        worst=worst_sections,
        worst_k=worst,
        failures=failures,
        failures_total=failures_total,
        files=build_file_lists(manifest),
        baseline=baseline_data,
        cards=[card for card in cards if baseline_data is None or not _regressed(card)],
        picture_budget=picture_budget,
        pictures_size=picture_budget - budget.left,
        dataset=build_dataset_section(manifest),
    )
    report.pairs = build_pair_table(frame, metrics, pictured_keys(report))
    return report


def pictured_keys(report: ReportData) -> set[str]:
    """Keys whose card (with pictures) the report shows: worst cases and, with a baseline, regressions."""
    cards = [*report.cards, *(report.baseline.cards if report.baseline else [])]
    return {card.key for card in cards}


LABELS = ("FAILED", "REGRESSED", "pass", "no baseline")  # worst first


def verdict_label(verdict: str | None, passed: bool | None) -> str:
    """What a nightly suite shows: FAILED (scoring failed, an incomplete run, or a baseline that is not
    comparable), REGRESSED, pass, or no baseline.

    Example:
        >>> verdict_label("failed", False), verdict_label("regressed", False), verdict_label(None, None)
        ('FAILED', 'REGRESSED', 'no baseline')
    """
    if verdict == "failed":
        return "FAILED"
    if verdict == "regressed" or passed is False:
        return "REGRESSED"
    return "no baseline" if passed is None else "pass"


def build_suite(suite: dict[str, Any], output_dir: Path) -> SuiteData:
    """One nightly suite: verdict, statistics and comparison; a broken run directory becomes `error`."""
    run_dir = Path(suite["run_dir"])
    comparison = suite.get("comparison")
    report = run_dir / "report.html"
    data = SuiteData(
        name=_text(suite.get("name")),
        run_dir=str(run_dir),
        report_href=relative_href(report, output_dir) if report.exists() else None,
        passed=suite.get("passed"),
        label=verdict_label(suite.get("verdict"), suite.get("passed")),
        run_id="",
        counts={},
        overall=[],
        comparison=list(comparison.metrics) if comparison is not None else [],
        regressed_metrics=[m.metric for m in comparison.metrics if m.regressed]
        if comparison is not None
        else [],
        regressions=list(comparison.regressions) if comparison is not None else [],
        notes=[_text(n) for n in suite.get("notes") or []],
    )
    try:
        manifest = read_manifest(run_dir)
        frame = load_results(run_dir)
        metrics = report_metrics(frame, manifest)
        data.run_id = _text(manifest.get("run_id"))
        data.counts = {str(k): int(v) for k, v in (manifest.get("counts") or {}).items()}
        data.overall = summarize(frame, metrics) if metrics else []
    except Exception as exc:
        log.warning("nightly report: suite %s: %s", data.name, exc)
        data.error = str(exc)
    return data


def build_nightly(suites: list[dict[str, Any]], output: Path) -> NightlyData:
    """The combined nightly page: one verdict table per suite."""
    built = [build_suite(suite, output.parent) for suite in suites]
    verdicts = [s.passed for s in built if s.passed is not None]
    passed = all(verdicts) if verdicts else None
    label = min((s.label for s in built), key=LABELS.index, default="no baseline")
    return NightlyData(generated=now_text(), passed=passed, label=label, suites=built)

"""Paper tables (`iqa table`): one row per run, one column per metric (or per group and metric), each cell the
mean of the metric over the run's ok pairs with the half-width of its bootstrap 95% CI (`pipeline.summary`).

Computing lives here (`collect_table` -> `PaperTable`); printing as Markdown, LaTeX, CSV or HTML lives in
`pipeline.paper_table_formats`. The runs must have been scored under one definition of the values (the same
convention, crop and metric settings: `pipeline.comparison.run_differences`); otherwise `NotComparableError`.

Example:
    >>> frame = table(["runs/bicubic", "runs/ours"], by="group", metrics="psnr,ssim")  # doctest: +SKIP
    >>> frame.loc["ours", ("sr_x4", "psnr")]  # doctest: +SKIP
    27.41...
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline.choices import METRICS, TableColumns, metric_names
from pipeline.comparison import recorded_convention, run_differences, shared_metrics
from pipeline.errors import NotComparableError, UsageError
from pipeline.locations import Location, StorageOptions
from pipeline.manifest import read_manifest
from pipeline.results import load_results
from pipeline.run_dirs import RunDir, require_run_dir
from pipeline.summary import MetricSummary, metric_columns, summarize, summarize_groups

NOT_COMPARABLE_HINT = (
    "A table puts side by side only values defined the same way: score every run with the same convention, "
    "crop and metric settings."
)


@dataclass
class TableRun:
    """One run of a table: its row label, where it is, its manifest and its rows."""

    label: str
    location: Location
    manifest: dict[str, Any]
    frame: pd.DataFrame


@dataclass
class PaperTable:
    """The numbers of a paper table and what they mean.

    Attributes:
        means: rows = run labels (index `run`), columns = metric names, or (group, metric) with `by` group;
            NaN where a run has no value (the metric or the group is absent from it).
        half_widths: same shape: half the width of each mean's bootstrap 95% CI (NaN where absent).
        convention: the convention every run was scored with (manifest `convention.name`).
        crop: its border crop in pixels.
        description: the manifest's one-line description of the convention (None in old runs).
    """

    means: pd.DataFrame
    half_widths: pd.DataFrame
    convention: str
    crop: int | None
    description: str | None = None

    @property
    def by_group(self) -> bool:
        return isinstance(self.means.columns, pd.MultiIndex)

    @staticmethod
    def metric_of(column: str | tuple[str, str]) -> str:
        """The metric of a column (its last level when the columns are (group, metric))."""
        return column[-1] if isinstance(column, tuple) else column


def run_labels(locations: Sequence[Location], labels: Sequence[str] | None) -> list[str]:
    """The row label of each run: its `--label` (one per run, in order), else the run directory's name.

    Raises:
        UsageError: labels given for a different number of runs, or two rows with one label.
    """
    if labels and len(labels) != len(locations):
        raise UsageError(
            f"{len(labels)} --label for {len(locations)} runs: give one --label per run, in the runs' order."
        )
    names = list(labels) if labels else [location.name for location in locations]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(
            f"Two rows would be named {repeated[0]!r}: give each run a --label (one per run, in order)."
        )
    return names


def load_table_runs(
    runs: Sequence[RunDir], labels: Sequence[str] | None = None, storage_options: StorageOptions | None = None
) -> list[TableRun]:
    """Each run's Location, manifest.json and results, labelled.

    Raises:
        UsageError: no run, a path that is not a run directory, or bad labels. RunDirError: no manifest.json.
    """
    if not runs:
        raise UsageError("Name at least one run directory written by `iqa score`.")
    locations = [require_run_dir(run, "run", storage_options) for run in runs]
    names = run_labels(locations, labels)
    return [
        TableRun(name, location, read_manifest(location), load_results(location))
        for name, location in zip(names, locations, strict=True)
    ]


def table_metrics(runs: Sequence[TableRun], requested: str | Sequence[str] | None = None) -> list[str]:
    """The metrics of the columns: those asked for, in that order, else every metric a run holds (`METRICS`
    order, then the columns it finds by name only: adapted metrics and those the runs recorded, by name).

    Raises:
        UsageError: an unknown metric, or one no run holds.
    """
    held = {metric for run in runs for metric in metric_columns(run.frame)}
    if requested is None:
        listed = [metric for metric in METRICS if metric in held]
        return listed + sorted(held.difference(listed))
    names = metric_names(requested)
    for name in names:
        if name not in METRICS:
            raise UsageError(f"--metrics: unknown metric {name!r}; choose from {', '.join(METRICS)}.")
        if name not in held:
            raise UsageError(
                f"--metrics: no run holds {name!r} (they hold {', '.join(sorted(held)) or 'no metric'})."
            )
    return list(dict.fromkeys(names))


def _pair_differences(first: TableRun, second: TableRun, metrics: Sequence[str]) -> list[str]:
    """`run_differences` of two runs over the table's metrics that both hold, each phrase naming the rows."""
    compared = [m for m in shared_metrics(first.frame, second.frame) if m in metrics]
    found = run_differences(first.manifest, second.manifest, compared)
    return [f"{first.label} vs {second.label}: {difference}" for difference in found]


def check_comparable(runs: Sequence[TableRun], metrics: Sequence[str]) -> None:
    """Refuse runs whose values of the table's metrics follow different definitions.

    Each run is checked against every earlier run not already refused (a metric setting counts only between
    runs that both hold the metric), and the first difference found for it is reported.

    Raises:
        NotComparableError: naming each pair of rows and each difference, e.g. 'a vs b: crop 0 vs 4'.
    """
    differences: list[str] = []
    refused: set[int] = set()
    for index, run in enumerate(runs):
        for earlier in (i for i in range(index) if i not in refused):
            found = _pair_differences(runs[earlier], run, metrics)
            if found:
                differences += found
                refused.add(index)
                break
    if differences:
        raise NotComparableError(differences, NOT_COMPARABLE_HINT)


def _columns_by(by: TableColumns | str) -> TableColumns:
    try:
        return TableColumns(by)
    except ValueError:
        raise UsageError(
            f"by={by!r}: choose {', '.join(map(repr, TableColumns.values()))} or None."
        ) from None


def _cells(frame: pd.DataFrame, metrics: list[str], by_group: bool) -> list[MetricSummary]:
    return summarize_groups(frame, metrics) if by_group else summarize(frame, metrics)


def _column(summary: MetricSummary, by_group: bool) -> str | tuple[str, str]:
    return (str(summary.group), summary.metric) if by_group else summary.metric


def _half_width(summary: MetricSummary) -> float | None:
    if summary.ci_low is None or summary.ci_high is None:
        return None
    return (summary.ci_high - summary.ci_low) / 2


def _frame(
    values: dict[str, dict[Any, float | None]], labels: list[str], columns: list[str] | pd.MultiIndex
) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(values, orient="index", dtype=float).reindex(index=labels, columns=columns)
    frame.index.name = "run"
    return frame


def _columns(
    summaries: list[list[MetricSummary]], metrics: list[str], by_group: bool
) -> list[str] | pd.MultiIndex:
    if not by_group:
        return list(metrics)
    groups = sorted({str(s.group) for run in summaries for s in run})
    return pd.MultiIndex.from_product([groups, metrics], names=["group", "metric"])


def collect_table(
    runs: Sequence[RunDir],
    *,
    by: TableColumns | str | None = None,
    metrics: str | Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    storage_options: StorageOptions | None = None,
) -> PaperTable:
    """The means and CI half-widths of a paper table, and the convention its caption names.

    Args:
        runs: run directories written by `iqa score` (paths or URLs), one row each, in this order.
        by: 'group': one column per group and metric; None: one column per metric over all pairs.
        metrics: 'psnr,ssim' or a list, in the columns' order (default: every metric a run holds).
        labels: the row names, one per run (default: each run directory's name).
        storage_options: options of the file systems of URLs.

    Returns:
        The PaperTable. Means are over the ok rows; infinite values (PSNR of identical images) are left out
        (`pipeline.summary`).

    Raises:
        UsageError: no run, a folder that is not a run, bad labels or metrics. NotComparableError: runs scored
            under different conventions, crops or metric settings (`run_differences`).
    """
    by_group = by is not None and _columns_by(by) == TableColumns.GROUP
    loaded = load_table_runs(runs, labels, storage_options)
    chosen = table_metrics(loaded, metrics)
    check_comparable(loaded, chosen)
    summaries = {run.label: _cells(run.frame, chosen, by_group) for run in loaded}
    labels_in_order, columns = list(summaries), _columns(list(summaries.values()), chosen, by_group)

    def frame_of(value: Callable[[MetricSummary], float | None]) -> pd.DataFrame:
        cells = {label: {_column(s, by_group): value(s) for s in run} for label, run in summaries.items()}
        return _frame(cells, labels_in_order, columns)

    convention = recorded_convention(loaded[0].manifest)
    return PaperTable(
        means=frame_of(lambda summary: summary.mean),
        half_widths=frame_of(_half_width),
        convention=str(convention.get("name")),
        crop=convention.get("crop"),
        description=convention.get("description"),
    )


def table(
    runs: Sequence[RunDir],
    *,
    by: TableColumns | str | None = None,
    metrics: str | Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    storage_options: StorageOptions | None = None,
) -> pd.DataFrame:
    """The means of a paper table as a DataFrame, as `iqa table` prints them (`collect_table` has the CIs).

    Returns:
        Rows = runs (index `run`: labels or run directory names); columns = metrics, or a (group, metric)
        MultiIndex with `by='group'`; NaN where a run has no value.

    Example:
        >>> frame = table(["runs/a", "runs/b"], by="group", labels=["bicubic", "ours"])  # doctest: +SKIP
        >>> frame.xs("psnr", axis=1, level="metric")  # doctest: +SKIP
    """
    return collect_table(runs, by=by, metrics=metrics, labels=labels, storage_options=storage_options).means

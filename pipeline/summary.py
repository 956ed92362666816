"""Per-metric statistics of a run (overall and per group): pandas in, plain dataclasses out."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from pipeline.choices import METRICS

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
_BOOTSTRAP_BLOCK_VALUES = 4_000_000


@dataclass
class MetricSummary:
    """Statistics of one metric over the ok rows of a run (or of one group).

    Infinite values (PSNR of identical pairs) are counted in `infinite` and excluded from every statistic.
    """

    metric: str
    group: str | None
    higher_is_better: bool
    count: int
    infinite: int
    missing: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    median: float | None
    std: float | None
    p5: float | None
    p95: float | None
    min: float | None
    max: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_mean_ci(
    values: np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean.

    Args:
        values: (n,) finite values.

    Returns:
        (low, high); both equal the value when n == 1.
    """
    n = values.size
    if n == 0:
        return math.nan, math.nan
    if n == 1:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_BLOCK_VALUES // n)
    means = []
    for start in range(0, resamples, block):
        count = min(block, resamples - start)
        means.append(values[rng.integers(0, n, size=(count, n))].mean(axis=1))
    alpha = (1 - level) / 2
    low, high = np.quantile(np.concatenate(means), [alpha, 1 - alpha])
    return float(low), float(high)


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def summarize_metric(values: pd.Series, metric: str, group: str | None = None) -> MetricSummary:
    """Statistics of one metric column (nulls and infinities counted, then excluded)."""
    raw = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    missing = int(np.isnan(raw).sum())
    infinite = int(np.isinf(raw).sum())
    finite = raw[np.isfinite(raw)]
    info = METRICS[metric]
    if finite.size == 0:
        return MetricSummary(metric, group, info.higher_is_better, 0, infinite, missing, *([None] * 9))
    low, high = bootstrap_mean_ci(finite)
    p5, p95 = np.percentile(finite, [5, 95])
    return MetricSummary(
        metric=metric,
        group=group,
        higher_is_better=info.higher_is_better,
        count=int(finite.size),
        infinite=infinite,
        missing=missing,
        mean=_clean(finite.mean()),
        ci_low=_clean(low),
        ci_high=_clean(high),
        median=_clean(np.median(finite)),
        std=_clean(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        p5=_clean(p5),
        p95=_clean(p95),
        min=_clean(finite.min()),
        max=_clean(finite.max()),
    )


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Metric columns that hold at least one value in this run (built-ins, plugins' and adapted metrics'), in
    the order of the frame."""
    return [m for m in frame.columns if m in METRICS and frame[m].notna().any()]


def summarize(frame: pd.DataFrame, metrics: list[str] | None = None) -> list[MetricSummary]:
    """One MetricSummary per metric over the ok rows."""
    ok = frame[frame["status"] == "ok"]
    return [summarize_metric(ok[m], m) for m in (metrics or metric_columns(frame))]


def summarize_groups(frame: pd.DataFrame, metrics: list[str] | None = None) -> list[MetricSummary]:
    """One MetricSummary per (group, metric) over the ok rows, groups in sorted order."""
    ok = frame[frame["status"] == "ok"]
    metrics = metrics or metric_columns(frame)
    return [
        summarize_metric(rows[m], m, str(group))
        for group, rows in ok.groupby("group", sort=True)
        for m in metrics
    ]


def status_counts(frame: pd.DataFrame) -> dict[str, int]:
    """{'rows', 'ok', 'error'} counts of a results frame."""
    return {
        "rows": len(frame),
        "ok": int((frame["status"] == "ok").sum()),
        "error": int((frame["status"] == "error").sum()),
    }

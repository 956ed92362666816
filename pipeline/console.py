"""Plain-text tables for the terminal: pure formatting functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipeline.discover import duplicate_message
from pipeline.summary import MetricSummary

DUPLICATES_SHOWN = 5


def format_number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned first column, right-aligned others, two spaces between columns."""
    widths = [
        max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
        for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def format_summary(summaries: Sequence[MetricSummary]) -> str:
    """Per-metric table: direction, n, mean [95% CI], median, min, max."""
    headers = ["metric", "better", "n", "mean", "95% CI", "median", "min", "max"]
    rows = []
    for s in summaries:
        ci = f"[{format_number(s.ci_low)}, {format_number(s.ci_high)}]" if s.mean is not None else "-"
        count = f"{s.count}" + (f" (+{s.infinite} inf)" if s.infinite else "")
        rows.append(
            [
                s.metric,
                "higher" if s.higher_is_better else "lower",
                count,
                format_number(s.mean),
                ci,
                format_number(s.median),
                format_number(s.min),
                format_number(s.max),
            ]
        )
    return format_table(headers, rows)


def format_counts(counts: dict[str, int]) -> str:
    keys = ("pairs", "ok", "error", "missing", "extra", "duplicates", "skipped")
    return "  ".join(f"{k}={counts.get(k, 0)}" for k in keys)


def format_unscored_duplicates(duplicates: Sequence[dict], limit: int = DUPLICATES_SHOWN) -> list[str]:
    """One line per key that leaves a reference unscored because two or more files claim it (the first
    `limit`), then a line counting the rest; [] when every duplicate key is only an output without reference.

    Args:
        duplicates: manifest.json's `duplicates` (`{'side', 'key', 'paths', 'references'}` each).
    """
    unscored = [d for d in duplicates if d.get("references")]
    lines = [duplicate_message(d) for d in unscored[:limit]]
    if len(unscored) > limit:
        rest = len(unscored) - limit
        lines.append(f"... and {rest} more keys claimed by two or more files; manifest.json lists them all.")
    return lines

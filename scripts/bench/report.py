"""The benchmark's report: a markdown table per metric set, the target lines (PASS/FAIL), the JSON record.

Judged (issue 16): this pipeline against the fastest peer loop that computes every metric of the set, with
fresh processes on the scaled dataset. Started runs, fresh processes on the base dataset, the fraction of
the decode bound and the start-up seconds are printed for information.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.peers import LPIPS_METRICS, PIXEL_METRICS
from bench.timing import Method, Values

TARGETS = {PIXEL_METRICS: 3.0, LPIPS_METRICS: 1.3}  # this pipeline's pairs/s over the fastest peer loop's
JUDGED_MODE = "scaled"
NAMES = {PIXEL_METRICS: "PSNR+SSIM+MS-SSIM", LPIPS_METRICS: "LPIPS-alex"}
WEIGHTS_NOTE = (
    "LPIPS weights: AlexNet backbone from torch.manual_seed(0) (the same file for both); "
    "the speed does not depend on the weight values."
)
TITLES = {PIXEL_METRICS: "PSNR + SSIM + MS-SSIM", LPIPS_METRICS: "LPIPS (alex, seeded random backbone)"}


@dataclass
class Table:
    """One metric set: this pipeline, the peer loops that compute (some of) it, and the decode bound."""

    metrics: tuple[str, ...]
    ours: Method
    peers: list[Method]
    decode: Method | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # peer -> why it was not timed

    @property
    def rows(self) -> list[Method]:
        """The table's rows in order: ours, the peers, the decode bound."""
        return [self.ours, *self.peers, *([self.decode] if self.decode else [])]

    @property
    def complete_peers(self) -> list[Method]:
        """The peer loops that compute every metric of the set."""
        return [row for row in self.peers if set(self.metrics) <= set(row.metrics)]


def max_abs_difference(ours: Values, theirs: Values, metric: str) -> float | None:
    """Max |ours - theirs| of one metric over the keys of both (non-finite values left out); None if none."""
    differences = []
    for key, row in theirs.items():
        mine, other = ours.get(key, {}).get(metric), row.get(metric)
        if mine is None or other is None or not (math.isfinite(mine) and math.isfinite(other)):
            continue
        differences.append(abs(mine - other))
    return max(differences) if differences else None


def format_rate(value: float) -> str:
    """Pairs/s with 3 significant digits or so; '-' when not timed."""
    if math.isnan(value):
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def format_ratio(ours: float, theirs: float) -> str:
    """'2.50x', or '-' when either side was not timed."""
    return "-" if math.isnan(ours) or math.isnan(theirs) else f"{ours / theirs:.2f}x"


def format_difference(value: float | None) -> str:
    """'1.2e-05', or '-' when there was nothing to compare."""
    return "-" if value is None else f"{value:.1e}"


def difference_cells(table: Table, row: Method) -> list[str]:
    """The max |difference| of each metric of `row`'s values from ours ('ref' on our own row)."""
    if row is table.ours:
        return ["ref" for _ in table.metrics]
    return [
        format_difference(max_abs_difference(table.ours.values, row.values, m))
        if table.ours.values and row.values and m in row.metrics
        else "-"
        for m in table.metrics
    ]


def markdown_table(table: Table) -> str:
    """Every method's pairs/s in each mode, our ratio to it, and its values' difference from ours."""
    ours = table.ours
    head = [
        "method", "layout", "started pairs/s", "ours ÷ it", f"fresh process, {ours.pairs} pairs", "ours ÷ it",
        f"fresh process, {ours.scaled_pairs or '-'} pairs", "ours ÷ it",
        *(f"max abs Δ {m}" for m in table.metrics), "note",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table.rows:
        cells = [row.name, row.layout]
        for mode in ("started", "fresh", "scaled"):
            cells += [format_rate(row.rate(mode)), format_ratio(ours.rate(mode), row.rate(mode))]
        lines.append("| " + " | ".join([*cells, *difference_cells(table, row), row.note]) + " |")
    for name, why in table.skipped.items():
        lines.append("| " + " | ".join([name, *("-" for _ in range(len(head) - 2)), why]) + " |")
    return "\n".join(lines)


def verdict(label: str, ratio: float, target: float | None, detail: str) -> str:
    """One target line: PASS/FAIL against `target`, or 'info' (no target) when it is None."""
    if target is None:
        return f"- info: {label}: {ratio:.2f} ({detail})"
    status = "PASS" if ratio >= target else "FAIL"
    return f"- {status}: {label}: {ratio:.2f} (target >= {target:g}; {detail})"


def mode_label(ours: Method, mode: str) -> str:
    """'started', or 'fresh process, N pairs' with the pair count of that mode."""
    if mode == "started":
        return "started"
    return f"fresh process, {ours.scaled_pairs if mode == 'scaled' else ours.pairs} pairs"


def peer_line(table: Table, mode: str, target: float | None) -> list[str]:
    """Our pairs/s over the fastest complete peer loop's in one mode; nothing when either is not timed,
    except a 'not measured' line for the judged mode."""
    name, ours = NAMES[table.metrics], table.ours
    label = f"{name} vs the fastest peer loop, {mode_label(ours, mode)}"
    timed = [row for row in table.complete_peers if not math.isnan(row.rate(mode))]
    if not timed or math.isnan(ours.rate(mode)):
        return [] if target is None else [f"- not measured: {label} (needs --fresh-scale above 1)"]
    fastest = max(timed, key=lambda r: r.rate(mode))
    detail = f"{fastest.name}, {fastest.layout}: {format_rate(fastest.rate(mode))} pairs/s"
    return [verdict(label, ours.rate(mode) / fastest.rate(mode), target, detail)]


def information_lines(table: Table) -> list[str]:
    """The lines not judged: decode-bound fractions, start-up fits, peers that compute only part of it."""
    name, ours, lines = NAMES[table.metrics], table.ours, []
    for mode in ("started", "fresh"):
        if table.decode is not None and not math.isnan(ours.rate(mode) / table.decode.rate(mode)):
            detail = f"decode {format_rate(table.decode.rate(mode))} pairs/s"
            label = f"{name} fraction of the decode bound, {mode_label(ours, mode)}"
            lines.append(verdict(label, ours.rate(mode) / table.decode.rate(mode), None, detail))
    for row in (row for row in [ours, *table.complete_peers] if row.scaled and row.fresh):
        start_up, rate = row.start_up()
        fit = f"{start_up:.2f} s of start-up, then {format_rate(rate)} pairs/s" if rate > 0 else "no fit"
        lines.append(
            f"- info: {row.name} ({row.layout or 'CLI'}), fresh process: {fit} "
            f"(from the {row.pairs}- and {row.scaled_pairs}-pair runs)"
        )
    for row in (row for row in table.peers if not set(table.metrics) <= set(row.metrics)):
        lines.append(
            f"- info: vs {row.name} ({row.layout}, computes only {'+'.join(row.metrics)}): "
            f"{format_ratio(ours.rate('started'), row.rate('started'))} started, "
            f"{format_ratio(ours.rate('fresh'), row.rate('fresh'))} fresh process"
        )
    return lines


def target_lines(table: Table) -> list[str]:
    """The judged line (PASS/FAIL against `TARGETS`) first, then the information lines."""
    lines = peer_line(table, JUDGED_MODE, TARGETS[table.metrics])
    for mode in ("started", "fresh"):
        lines += peer_line(table, mode, None)
    return lines + information_lines(table)


def method_record(table: Table, row: Method) -> dict[str, Any]:
    """The JSON record of one row: its seconds per repeat, pairs/s and values' difference from ours."""
    record: dict[str, Any] = {"method": row.name, "layout": row.layout, "metrics": list(row.metrics)}
    record.update(pairs=row.pairs, scaled_pairs=row.scaled_pairs)
    for mode in ("started", "fresh", "scaled"):
        record[f"{mode}_seconds"] = getattr(row, mode)
        record[f"{mode}_pairs_per_s"] = row.rate(mode)
    record["max_abs_difference"] = (
        {m: max_abs_difference(table.ours.values, row.values, m) for m in table.metrics}
        if row.values and table.ours.values and row is not table.ours
        else {}
    )
    return record


@dataclass
class Context:
    """What the timings ran on and how often: printed above the tables and kept in the JSON record."""

    machine: dict[str, Any]  # `timing.machine_description()`
    load_average: tuple[float, float]  # before and after the rounds
    dataset: str  # `dataset.describe_dataset()`
    repeats: int


def render(tables: list[Table], context: Context) -> tuple[str, dict[str, Any]]:
    """The markdown report and the JSON-ready record of every table, the targets and the context."""
    machine, (before, after) = context.machine, context.load_average
    lines = [
        f"Machine: {machine['cores']} cores, {machine['cpu']} (load average {before:.1f} before, {after:.1f} "
        f"after). Dataset: {context.dataset}. Median of {context.repeats} repeats.",
        "",
    ]
    targets, records = [], {}
    for table in tables:
        lines += [f"### {TITLES[table.metrics]}", "", markdown_table(table), ""]
        records[",".join(table.metrics)] = [method_record(table, row) for row in table.rows]
        targets += target_lines(table)
    lines += ["### Targets", "", *targets, "", WEIGHTS_NOTE]
    return "\n".join(lines), {**asdict(context), "tables": records, "targets": targets}

"""Printing a `PaperTable` (`pipeline.paper_table`) as Markdown, LaTeX, CSV or HTML: pure functions, no I/O.

In each column the best mean is bold and the second best underlined (direction per metric from
`pipeline.choices.METRICS`), compared as shown (rounded to the metric's digits), so equal-looking values get
the same mark. A mark singles a value out from worse ones: a column of one distinct value has none, one of two
only the bold. A run without a value shows `-` (an empty cell in CSV).

Example:
    >>> import pandas as pd
    >>> means = pd.DataFrame({"psnr": [30.1234, 31.5], "lpips": [0.2, 0.25]}, index=["a", "b"])
    >>> widths = pd.DataFrame({"psnr": [0.4, 0.3], "lpips": [0.01, 0.02]}, index=["a", "b"])
    >>> print(format_markdown(PaperTable(means, widths, "default", 0)))
    | Run | PSNR↑ | LPIPS↓ |
    | :-- | --: | --: |
    | a | 30.12 | **0.2000** |
    | b | **31.50** | 0.2500 |
    <BLANKLINE>
    Table: Mean of each metric over the ok pairs of each run; ↑ higher, ↓ lower is better; best in bold,
    second underlined. Convention default, crop 0 px.
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import groupby

from pipeline.choices import TableFormat, higher_is_better
from pipeline.html.filters import metric_value
from pipeline.markdown_tables import escape_markdown, markdown_table
from pipeline.paper_table import PaperTable

MISSING = "-"
ROW_HEADER = "Run"
LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


@dataclass(frozen=True)
class Markup:
    """How one output format escapes text and marks the best (`bold`) and second (`underline`) values."""

    escape: Callable[[str], str]
    bold: str
    underline: str
    plus_minus: str
    up: str
    down: str

    def mark(self, text: str, rank: int | None) -> str:
        return {1: self.bold, 2: self.underline}.get(rank, "{}").format(text)


def latex_escape(text: str) -> str:
    r"""`text` with LaTeX's special characters escaped.

    Example:
        >>> latex_escape("sr_x4 & 50%")
        'sr\\_x4 \\& 50\\%'
    """
    return "".join(LATEX_SPECIAL.get(char, char) for char in str(text))


MARKDOWN = Markup(escape_markdown, "**{}**", "<u>{}</u>", "±", "↑", "↓")
LATEX = Markup(latex_escape, r"\textbf{{{}}}", r"\underline{{{}}}", r"$\pm$", r"$\uparrow$", r"$\downarrow$")
HTML = Markup(html.escape, "<b>{}</b>", "<u>{}</u>", "±", "↑", "↓")


def shown(value: float | None, metric: str) -> str | None:
    """A mean as the table shows it (the metric's digits: PSNR 2, SSIM 4, ...); None when absent.

    Example:
        >>> shown(31.2749, "psnr"), shown(0.91234, "ssim"), shown(float("nan"), "psnr")
        ('31.27', '0.9123', None)
    """
    if value is None or not math.isfinite(value):
        return None
    return metric_value(value, metric)


def column_ranks(values: Sequence[float | None], metric: str) -> list[int | None]:
    """Rank 1 (best) or 2 (second) of each value of a column as shown, None for the others.

    Ties share a rank; the next distinct value gets the next rank. A rank is given only to values that some
    value ranks below: one distinct value gets no mark, two get only rank 1.

    Example:
        >>> column_ranks([0.9, 0.8, 0.9, None, 0.7], "ssim"), column_ranks([0.3, 0.2], "lpips")
        ([1, 2, 1, None, None], [None, 1])
    """
    numbers = [None if text is None else float(text) for text in (shown(v, metric) for v in values)]
    distinct = sorted({n for n in numbers if n is not None}, reverse=higher_is_better(metric))
    marked = distinct[: min(2, len(distinct) - 1)]
    return [marked.index(n) + 1 if n in marked else None for n in numbers]


def metric_title(metric: str) -> str:
    """How a metric is named in a header: `PSNR`, `MS-SSIM`."""
    return metric.upper().replace("_", "-")


def _header(metric: str, markup: Markup) -> str:
    return metric_title(metric) + (markup.up if higher_is_better(metric) else markup.down)


def _cell(mean: str | None, half_width: str | None, rank: int | None, markup: Markup) -> str:
    if mean is None:
        return MISSING
    text = f"{mean} {markup.plus_minus} {half_width}" if half_width is not None else mean
    return markup.mark(text, rank)


def body_rows(table: PaperTable, markup: Markup, *, ci: bool = False) -> list[list[str]]:
    """Label and cells of each run, escaped and marked for one format."""
    columns: list[list[str]] = []
    for column in table.means.columns:
        metric = table.metric_of(column)
        means, widths = table.means[column].tolist(), table.half_widths[column].tolist()
        ranks = column_ranks(means, metric)
        columns.append(
            [
                _cell(shown(mean, metric), shown(width, metric) if ci else None, rank, markup)
                for mean, width, rank in zip(means, widths, ranks, strict=True)
            ]
        )
    labels = [markup.escape(str(label)) for label in table.means.index]
    return [[label, *cells] for label, *cells in zip(labels, *columns, strict=True)]


def group_spans(table: PaperTable) -> list[tuple[str, int]]:
    """(group, number of columns) in column order; [] when the columns are not split by group."""
    if not table.by_group:
        return []
    return [(str(group), len(list(run))) for group, run in groupby(table.means.columns, key=lambda c: c[0])]


def caption(table: PaperTable, markup: Markup, *, ci: bool = False) -> str:
    """What the cells are, how they are marked, and the convention (name and crop) they were scored under."""
    text = markup.escape
    over = "each run and group" if table.by_group else "each run"
    spread = f" ({markup.plus_minus} {text('half-width of its bootstrap 95% CI')})" if ci else ""
    convention = table.description or f"{table.convention}, crop {table.crop} px"
    return (
        f"{text(f'Mean of each metric over the ok pairs of {over}')}{spread}; {markup.up} {text('higher,')} "
        f"{markup.down} {text('lower is better; best in bold, second underlined. Convention')} "
        f"{text(convention)}."
    )


def format_markdown(table: PaperTable, *, ci: bool = False) -> str:
    """A GitHub-flavoured Markdown pipe table, then a `Table: caption` line (Pandoc's caption syntax)."""
    titles = [_header(table.metric_of(c), MARKDOWN) for c in table.means.columns]
    if table.by_group:
        groups = [escape_markdown(column[0]) for column in table.means.columns]
        titles = [f"{group} {title}" for group, title in zip(groups, titles, strict=True)]
    rows = body_rows(table, MARKDOWN, ci=ci)
    return f"{markdown_table([ROW_HEADER, *titles], rows)}\n\nTable: {caption(table, MARKDOWN, ci=ci)}"


def format_latex(table: PaperTable, *, ci: bool = False) -> str:
    r"""A LaTeX `table` float with a booktabs `tabular` (`\usepackage{booktabs}`), caption above."""
    count = len(table.means.columns)
    lines = [
        r"% needs \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{caption(table, LATEX, ci=ci)}}}",
        rf"\begin{{tabular}}{{l{'c' * count}}}",
        r"\toprule",
    ]
    spans = group_spans(table)
    if spans:
        groups = [rf"\multicolumn{{{n}}}{{c}}{{{latex_escape(g)}}}" for g, n in spans]
        lines.append(" & ".join(["", *groups]) + r" \\")
        lines.append(" ".join(_cmidrules(spans)))
    titles = [_header(table.metric_of(c), LATEX) for c in table.means.columns]
    lines.append(" & ".join([ROW_HEADER, *titles]) + r" \\")
    lines.append(r"\midrule")
    lines.extend(" & ".join(row) + r" \\" for row in body_rows(table, LATEX, ci=ci))
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def _cmidrules(spans: list[tuple[str, int]]) -> list[str]:
    rules, start = [], 2
    for _, count in spans:
        rules.append(rf"\cmidrule(lr){{{start}-{start + count - 1}}}")
        start += count
    return rules


def format_html(table: PaperTable, *, ci: bool = False) -> str:
    """An HTML `<table>` with a `<caption>`, group headers spanning their metrics; every text escaped."""
    spans = group_spans(table)
    row_header = f'<th rowspan="2">{ROW_HEADER}</th>' if spans else f"<th>{ROW_HEADER}</th>"
    titles = "".join(f"<th>{_header(table.metric_of(c), HTML)}</th>" for c in table.means.columns)
    head = [f"<tr>{row_header}{titles}</tr>"]
    if spans:
        groups = "".join(f'<th colspan="{n}">{html.escape(g)}</th>' for g, n in spans)
        head = [f"<tr>{row_header}{groups}</tr>", f"<tr>{titles}</tr>"]
    body = [
        f'<tr><th scope="row">{label}</th>{"".join(f"<td>{cell}</td>" for cell in cells)}</tr>'
        for label, *cells in body_rows(table, HTML, ci=ci)
    ]
    return "\n".join(
        [
            '<table class="iqa-table">',
            f"<caption>{caption(table, HTML, ci=ci)}</caption>",
            "<thead>",
            *head,
            "</thead>",
            "<tbody>",
            *body,
            "</tbody>",
            "</table>",
        ]
    )


def format_csv(table: PaperTable, *, ci: bool = False) -> str:
    """Plain CSV: `run`, then one column per metric (`group/metric` by group) and with `ci` its `_ci95`
    half-width after it; values as shown in the other formats, an empty cell where a run has none."""
    header, values = ["run"], []
    for column in table.means.columns:
        name, metric = "/".join(column) if table.by_group else column, table.metric_of(column)
        parts = [(name, table.means[column])] + ([(f"{name}_ci95", table.half_widths[column])] if ci else [])
        for title, series in parts:
            header.append(title)
            values.append([shown(value, metric) or "" for value in series.tolist()])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([label, *cells] for label, *cells in zip(table.means.index, *values, strict=True))
    return buffer.getvalue().rstrip("\n")


FORMATTERS: dict[TableFormat, Callable[..., str]] = {
    TableFormat.MD: format_markdown,
    TableFormat.LATEX: format_latex,
    TableFormat.CSV: format_csv,
    TableFormat.HTML: format_html,
}


def render_table(
    table: PaperTable, table_format: TableFormat | str = TableFormat.MD, *, ci: bool = False
) -> str:
    """The table in one of `TableFormat` (md, latex, csv, html), with `± CI half-width` when `ci`."""
    return FORMATTERS[TableFormat(table_format)](table, ci=ci)

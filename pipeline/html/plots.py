"""Distribution plots of one metric (matplotlib, Agg backend) as small PNG data URIs."""

from __future__ import annotations

import io
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipeline.choices import METRICS
from pipeline.html.display import data_uri

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_WIDTH = 7.6
PANEL_HEIGHT = 2.5
DPI = 80
MAX_GROUPS = 24
_BINS = 40
_FILL = "#3b6ea8"
_MEAN = "#c0392b"


def pyplot() -> ModuleType:
    """matplotlib's pyplot on the Agg backend, imported when the first plot is drawn: a heavy library that a
    run without a report never needs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot

    return matplotlib.pyplot


def png_uri(figure: Figure) -> str:
    """A figure as a PNG data URI; the figure is closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    pyplot().close(figure)
    return data_uri(buffer.getvalue(), "image/png")


def _label(metric: str) -> str:
    info = METRICS.get(metric)
    if info is None:
        return metric
    unit = f" ({info.unit})" if info.unit else ""
    sense = "higher is better" if info.higher_is_better else "lower is better"
    return f"{metric}{unit}, {sense}"


def tick_label(name: str) -> str:
    short = name if len(name) <= 24 else name[:23] + "…"
    return short.replace("$", r"\$")


def finite_values(series: pd.Series) -> np.ndarray:
    """Finite float values of a column (nulls and infinities dropped)."""
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    return values[np.isfinite(values)]


def distribution_plot(ok_rows: pd.DataFrame, metric: str) -> str | None:
    """Histogram of a metric over all ok rows, and a box plot per group beside it.

    Args:
        ok_rows: Result rows with status 'ok' and columns `group` and `metric`.
        metric: Metric column to plot.

    Returns:
        A PNG data URI, or None when the metric has no finite value.
    """
    values = finite_values(ok_rows[metric])
    if values.size == 0:
        return None
    groups = [(str(name), finite_values(rows[metric])) for name, rows in ok_rows.groupby("group", sort=True)]
    groups = [(name, v) for name, v in groups if v.size]
    groups.sort(key=lambda item: -item[1].size)
    shown = sorted(groups[:MAX_GROUPS], key=lambda item: item[0])
    with_groups = len(shown) > 1
    height = max(PANEL_HEIGHT, 0.22 * len(shown) + 0.8) if with_groups else PANEL_HEIGHT
    figure, axes = pyplot().subplots(
        1,
        2 if with_groups else 1,
        figsize=(FIGURE_WIDTH if with_groups else FIGURE_WIDTH / 1.7, height),
        squeeze=False,
        gridspec_kw={"width_ratios": [1.1, 1]} if with_groups else None,
    )
    histogram = axes[0][0]
    histogram.hist(values, bins=min(_BINS, max(5, values.size // 2)), color=_FILL, alpha=0.85)
    histogram.axvline(values.mean(), color=_MEAN, linewidth=1.2, label=f"mean {values.mean():.4g}")
    histogram.set_title(f"{metric}: all pairs (n={values.size:,})", fontsize=9)
    histogram.set_xlabel(_label(metric), fontsize=8)
    histogram.set_ylabel("pairs", fontsize=8)
    histogram.legend(fontsize=7, frameon=False)
    histogram.tick_params(labelsize=7)
    if with_groups:
        boxes = axes[0][1]
        boxes.boxplot(
            [v for _, v in shown],
            vert=False,
            widths=0.6,
            showmeans=True,
            flierprops={"markersize": 2, "alpha": 0.4},
            meanprops={"marker": "|", "markeredgecolor": _MEAN, "markersize": 8},
            medianprops={"color": _FILL},
        )
        boxes.set_yticks(range(1, len(shown) + 1), [tick_label(name) for name, _ in shown])
        boxes.invert_yaxis()
        more = f", {len(groups) - len(shown)} smaller groups not shown" if len(groups) > len(shown) else ""
        boxes.set_title(f"{metric} by group{more}", fontsize=9)
        boxes.set_xlabel(_label(metric), fontsize=8)
        boxes.tick_params(labelsize=7)
    figure.tight_layout()
    return png_uri(figure)

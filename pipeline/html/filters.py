"""Small pure formatting functions, registered as Jinja filters so the template does no arithmetic."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pipeline.choices import METRICS
from pipeline.html.pictures import CROP_ZOOM, Picture
from pipeline.html.regions import PROXY_METRICS, Window


def _finite(value: float | None) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


SIGNIFICANT_DIGITS = 4


def metric_digits(metric: str) -> int | None:
    """Decimals the report shows for a metric; None: `SIGNIFICANT_DIGITS` significant digits (unknown metrics
    too)."""
    spec = METRICS.get(metric)
    return spec.digits if spec is not None else None


def metric_value(value: float | None, metric: str = "") -> str:
    """A metric value with the precision its scale needs (`28.41`, `0.8123`, `41.7`); `–` when absent.

    Example:
        >>> metric_value(28.4137, "psnr"), metric_value(None, "ssim"), metric_value(float("inf"), "psnr")
        ('28.41', '–', '∞')
    """
    if not _finite(value):
        return "–"
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    digits = metric_digits(metric)
    if digits is not None:
        return f"{value:.{digits}f}"
    return f"{value:.{SIGNIFICANT_DIGITS}g}"


def signed(value: float | None, metric: str = "") -> str:
    """A delta with an explicit sign (`+0.12`, `-0.0031`); `–` when absent."""
    text = metric_value(value, metric)
    if text == "–" or text.startswith(("-", "∞")):
        return text
    return "+" + text


def interval(low: float | None, high: float | None, metric: str = "") -> str:
    """A confidence interval as `[low, high]`; `–` when either end is absent."""
    if not (_finite(low) and _finite(high)):
        return "–"
    return f"[{metric_value(low, metric)}, {metric_value(high, metric)}]"


def count(value: int | float | None) -> str:
    """An integer with thousands separators (`10,000`)."""
    if not _finite(value):
        return "–"
    return f"{int(value):,}"


def duration(seconds: float | None) -> str:
    """Seconds as `0.84 s`, `2 min 05 s` or `1 h 02 min`."""
    if not _finite(seconds):
        return "–"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def rate(value: float | None, unit: str = "pairs/s") -> str:
    """A throughput such as `123.4 pairs/s`."""
    if not _finite(value):
        return "–"
    return f"{float(value):,.1f} {unit}"


def pvalue(value: float | None) -> str:
    """A p-value as `0.031` or `<1e-4`."""
    if not _finite(value):
        return "–"
    value = float(value)
    return "<1e-4" if value < 1e-4 else f"{value:.3g}"


def direction(metric: str) -> str:
    """`higher is better` or `lower is better` for a registered metric."""
    info = METRICS.get(metric)
    if info is None:
        return ""
    return "higher is better" if info.higher_is_better else "lower is better"


def arrow(metric: str) -> str:
    """`↑` for higher-is-better metrics, `↓` for lower-is-better ones."""
    info = METRICS.get(metric)
    if info is None:
        return ""
    return "↑" if info.higher_is_better else "↓"


def unit(metric: str) -> str:
    """The metric's unit (`dB`), or an empty string."""
    info = METRICS.get(metric)
    return info.unit if info is not None else ""


def file_uri(path: str | os.PathLike[str] | None) -> str:
    """A `file://` URI for a path (made absolute, percent-encoded); empty when there is no path."""
    if not path:
        return ""
    try:
        return Path(os.path.abspath(path)).as_uri()
    except ValueError:
        return ""


def file_name(path: str | os.PathLike[str] | None) -> str:
    """The last component of a path (`b/0001.png` -> `0001.png`)."""
    return Path(path).name if path else ""


def short_hash(digest: str | None, digits: int = 12) -> str:
    """The first `digits` hex digits of a digest, enough to tell files apart; `–` when absent.

    Example:
        >>> short_hash("85e9ef81a0b1c2d3e4f5" + "0" * 44), short_hash(None)
        ('85e9ef81a0b1', '–')
    """
    return digest[:digits] if digest else "–"


def relative_href(target: str | os.PathLike[str], start: str | os.PathLike[str]) -> str:
    """A percent-encoded relative link from folder `start` to `target` (POSIX separators)."""
    relative = os.path.relpath(os.path.abspath(target), os.path.abspath(start))
    return quote(Path(relative).as_posix())


def verdict(passed: bool | None) -> str:
    """`pass`, `REGRESSED` or `no baseline` for a suite or metric verdict."""
    if passed is None:
        return "no baseline"
    return "pass" if passed else "REGRESSED"


def verdict_class(label: str) -> str:
    """The CSS class of a nightly verdict label: 'bad' (FAILED, REGRESSED), 'none' (no baseline) or ''.

    Example:
        >>> verdict_class("FAILED"), verdict_class("pass")
        ('bad', '')
    """
    return {"FAILED": "bad", "REGRESSED": "bad", "no baseline": "none"}.get(label, "")


def enlarged(pixels: int) -> int:
    """The displayed size of a crop side: `CROP_ZOOM` screen pixels per image pixel."""
    return pixels * CROP_ZOOM


def box_style(window: Window, height: int, width: int) -> str:
    """CSS placing a window's outline over a picture of an image of `height` x `width`, in percent.

    Example:
        >>> box_style(Window(10, 20, 50, 40), 100, 200)
        'top:10%;left:10%;height:50%;width:20%'
    """
    parts = (("top", window.top, height), ("left", window.left, width))
    parts += (("height", window.height, height), ("width", window.width, width))
    return ";".join(f"{name}:{100 * value / max(total, 1):.4g}%" for name, value, total in parts)


def window_text(window: Window) -> str:
    """A window as `96×96 px at x 120, y 48`."""
    return f"{window.width}×{window.height} px at x {window.left}, y {window.top}"


def picture_size(picture: Picture) -> str:
    """`512×512 px`, or `2040×1356 px shown at 1024×681` when downscaled; empty without a picture."""
    if not picture.data_uri:
        return ""
    full = f"{picture.full_width}×{picture.full_height} px"
    return f"{full} shown at {picture.width}×{picture.height}" if picture.downscaled else full


def mebibytes(size: int) -> str:
    """A size in characters or bytes as MiB (`32 MiB`, `1.4 MiB`)."""
    value = size / 2**20
    return f"{value:.0f} MiB" if value >= 10 or value == int(value) else f"{value:.1f} MiB"


def region_metrics(metrics: list[str]) -> str:
    """The metrics a region stands for, proxies marked: `ssim, lpips (proxy)`."""
    return ", ".join(f"{m} (proxy)" if m in PROXY_METRICS else m for m in metrics)


FILTERS: dict[str, Callable[..., Any]] = {
    "metric_value": metric_value,
    "verdict_class": verdict_class,
    "signed": signed,
    "interval": interval,
    "count": count,
    "duration": duration,
    "rate": rate,
    "pvalue": pvalue,
    "direction": direction,
    "arrow": arrow,
    "unit": unit,
    "file_uri": file_uri,
    "file_name": file_name,
    "short_hash": short_hash,
    "verdict": verdict,
    "enlarged": enlarged,
    "box_style": box_style,
    "window_text": window_text,
    "picture_size": picture_size,
    "mebibytes": mebibytes,
    "region_metrics": region_metrics,
}

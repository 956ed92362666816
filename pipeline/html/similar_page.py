"""HTML page of `iqa similar`: heatmap of the similarity matrix and the closest matches with thumbnails.

Structure (`SimilarPage`, plain dataclasses, formatted strings) is built here from a `SimilarResult`, then
rendered by `pipeline.html.render` (its Jinja environment: autoescape on, strict undefined, CSP).
Thumbnails are JPEG data URIs of each image as stored (not the common-size crop), one per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.html.display import jpeg_uri, to_uint8
from pipeline.html.plots import png_uri, pyplot, tick_label
from pipeline.html.render import render_html, write_html
from pipeline.images import read_image
from pipeline.similarity.prepare import SIZE_POLICY
from pipeline.similarity.result import SimilarResult, top_pairs

SIMILAR_TEMPLATE = "similar.html.j2"
LABELLED_HEATMAP_MAX = 60
NEAREST_ROWS = 200
THUMB_SIDE = 96
HEATMAP_INCHES = 7.6


@dataclass
class Picture:
    """One image's thumbnail (data URI) or the reason it is missing."""

    name: str
    data_uri: str | None
    note: str = ""


@dataclass
class MatchRow:
    """A table row: an image, its match, the value as text, and both thumbnails."""

    a: Picture
    b: Picture
    value: str


@dataclass
class SimilarPage:
    """Everything the template shows, formatted; the template does no arithmetic."""

    title: str
    metric: str
    sense: str
    size: int
    policy: str
    mode: str
    generated: str
    counts: dict[str, int]
    timings: dict[str, str]
    executor: str
    heatmap: str | None
    heatmap_note: str
    nearest: list[MatchRow]
    nearest_total: int
    top: list[MatchRow]
    skipped: list[dict[str, str]] = field(default_factory=list)


def _format(value: float) -> str:
    if math.isinf(value):
        return "∞ (identical)" if value > 0 else "−∞"
    return f"{value:.4f}"


def _picture(name: str, path: str) -> Picture:
    try:
        decoded = read_image(path)
        pixels = to_uint8(decoded.pixels.astype(np.float64), decoded.data_range)
        return Picture(name, jpeg_uri(pixels, THUMB_SIDE))
    except Exception as exc:  # a picture is optional: its failure is shown, never raised
        return Picture(name, None, f"no picture: {exc}")


def heatmap_plot(result: SimilarResult) -> str:
    """The `(N, M)` matrix as a PNG data URI; rows and columns labelled when both are at most 60."""
    values = result.matrix.copy()
    finite = values[np.isfinite(values)]
    if finite.size:
        values = np.clip(values, finite.min(), finite.max())
    rows, cols = values.shape
    labelled = max(rows, cols) <= LABELLED_HEATMAP_MAX
    figure, axes = pyplot().subplots(figsize=(HEATMAP_INCHES, HEATMAP_INCHES * 0.85), layout="constrained")
    colormap = "viridis" if result.higher_is_better else "viridis_r"
    image = axes.imshow(np.ma.masked_invalid(values), cmap=colormap, interpolation="nearest", aspect="auto")
    figure.colorbar(
        image,
        ax=axes,
        label=f"{result.metric} ({'higher' if result.higher_is_better else 'lower'} is more similar)",
    )
    if labelled:
        font = 7 if max(rows, cols) <= 30 else 5
        axes.set_xticks(range(cols), [tick_label(n) for n in result.names_b], rotation=90, fontsize=font)
        axes.set_yticks(range(rows), [tick_label(n) for n in result.names_a], fontsize=font)
    else:
        axes.set_xlabel("image index (sorted by name)" if result.self_mode else "reference index")
        axes.set_ylabel("image index (sorted by name)")
    return png_uri(figure)


def build_page(result: SimilarResult) -> SimilarPage:
    """Structure the result for the template (thumbnails made once per image shown)."""
    pictures: dict[tuple[str, int], Picture] = {}

    def picture(side: str, index: int) -> Picture:
        names, paths = (result.names_a, result.paths_a) if side == "a" else (result.names_b, result.paths_b)
        key = ("a" if result.self_mode else side, index)
        if key not in pictures:
            pictures[key] = _picture(names[index], paths[index])
        return pictures[key]

    index_a = {name: i for i, name in enumerate(result.names_a)}
    index_b = {name: i for i, name in enumerate(result.names_b)}
    order = sorted(result.nearest, key=lambda n: n["value"], reverse=result.higher_is_better)
    nearest = [
        MatchRow(picture("a", index_a[n["image"]]), picture("b", index_b[n["nearest"]]), _format(n["value"]))
        for n in order[:NEAREST_ROWS]
    ]
    top = [MatchRow(picture("a", i), picture("b", j), _format(v)) for i, j, v in top_pairs(result)]
    count_a, count_b = int(result.valid_a.sum()), int(result.valid_b.sum())
    counts = {"images": count_a, "comparisons": result.comparisons, "skipped": len(result.skipped)}
    if not result.self_mode:
        counts["references"] = count_b
    labelled = max(result.matrix.shape) <= LABELLED_HEATMAP_MAX
    return SimilarPage(
        title=f"Similarity by {result.metric}",
        metric=result.metric,
        sense="higher is more similar" if result.higher_is_better else "lower is more similar",
        size=result.size,
        policy=SIZE_POLICY.replace("SIZE", str(result.size)),
        mode="every image with every other" if result.self_mode else "every image with every reference",
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        counts=counts,
        timings={name: f"{seconds:.2f} s" for name, seconds in result.timings.items()},
        executor=result.executor,
        heatmap=heatmap_plot(result),
        heatmap_note=""
        if labelled
        else f"More than {LABELLED_HEATMAP_MAX} images: axes show indexes in name "
        "order (see similarity.parquet for names).",
        nearest=nearest,
        nearest_total=len(result.nearest),
        top=top,
        skipped=result.skipped,
    )


def write_similar_page(result: SimilarResult, output: Path) -> Path:
    """Render and write the self-contained page atomically; returns its path."""
    return write_html(render_html(SIMILAR_TEMPLATE, page=build_page(result)), output)

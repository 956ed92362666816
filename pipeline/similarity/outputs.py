"""The files of an `iqa similar` run: the long-form Parquet matrix, the nearest matches as CSV, the manifest,
and the console text."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.similarity.prepare import SIZE_POLICY
from pipeline.similarity.result import NEAREST_NAME, SimilarResult
from pipeline.similarity.tasks import SimilarSettings
from pipeline.storage import write_atomic, write_text_atomic


def parquet_schema() -> pa.Schema:
    """Arrow schema of `similarity.parquet`: names dictionary-encoded, `value` in the metric's unit."""
    names = pa.dictionary(pa.int32(), pa.string())
    return pa.schema(
        [
            pa.field("a", names, nullable=False),
            pa.field("b", names, nullable=False),
            pa.field("value", pa.float64()),
            pa.field("metric", names, nullable=False),
        ]
    )


def write_parquet(result: SimilarResult, path: Path) -> None:
    """Long form: one row per ordered pair `a != b` of valid images (both directions in a self comparison)."""
    mask = result.valid_a[:, None] & result.valid_b[None, :]
    if result.self_mode:
        np.fill_diagonal(mask, False)
    rows, cols = np.nonzero(mask)
    table = pa.Table.from_arrays(
        [
            pa.DictionaryArray.from_arrays(pa.array(rows, pa.int32()), pa.array(result.names_a, pa.string())),
            pa.DictionaryArray.from_arrays(pa.array(cols, pa.int32()), pa.array(result.names_b, pa.string())),
            pa.array(result.matrix[rows, cols], pa.float64()),
            pa.DictionaryArray.from_arrays(
                pa.array(np.zeros(len(rows), dtype=np.int32)), pa.array([result.metric], pa.string())
            ),
        ],
        schema=parquet_schema().with_metadata(
            {"metric": result.metric, "size": str(result.size), "size_policy": SIZE_POLICY}
        ),
    )
    write_atomic(path, lambda temp: pq.write_table(table, temp))


def write_nearest(nearest: list[dict[str, Any]], path: Path) -> None:
    """`image,nearest,value` CSV."""

    def write(temp: Path) -> None:
        with temp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["image", "nearest", "value"])
            writer.writeheader()
            writer.writerows(nearest)

    write_atomic(path, write)


def write_manifest(result: SimilarResult, path: Path) -> None:
    """Settings, images, skipped files, counts and timings as JSON."""
    compare_s = result.timings.get("compare_s", 0.0)
    manifest = {
        "command": "similar",
        "folder": result.roots[0],
        "against": result.roots[1],
        "metric": result.metric,
        "higher_is_better": result.higher_is_better,
        "size": result.size,
        "size_policy": SIZE_POLICY,
        "block": result.block,
        "executor": result.executor,
        "images": [n for n, ok in zip(result.names_a, result.valid_a, strict=True) if ok],
        "references": None
        if result.self_mode
        else [n for n, ok in zip(result.names_b, result.valid_b, strict=True) if ok],
        "skipped": result.skipped,
        "comparisons": result.comparisons,
        "comparisons_per_s": result.comparisons / compare_s if compare_s > 0 else None,
        "timings": result.timings,
        "files": result.files,
        "settings": asdict(SimilarSettings(metric=result.metric, size=result.size)),
        "lpips_backbone": result.lpips_backbone[0] if result.lpips_backbone else None,
        "lpips_backbone_sha256": result.lpips_backbone[1] if result.lpips_backbone else None,
    }
    write_text_atomic(path, json.dumps(manifest, indent=2))


def format_nearest(result: SimilarResult, limit: int = 50) -> str:
    """Console text: `image -> nearest (value)` lines, the first `limit`, then `... and N more`."""
    width = max((len(n["image"]) for n in result.nearest[:limit]), default=0)
    lines = [
        f"Nearest match by {result.metric} ({'higher' if result.higher_is_better else 'lower'} is closer):"
    ]
    lines += [
        f"  {n['image']:<{width}}  ->  {n['nearest']}  ({n['value']:.4f})" for n in result.nearest[:limit]
    ]
    if len(result.nearest) > limit:
        lines.append(f"  ... and {len(result.nearest) - limit} more (see {NEAREST_NAME})")
    for entry in result.skipped:
        lines.append(f"skipped: {entry['path']}: {entry['reason']}")
    rate = result.comparisons / result.timings["compare_s"] if result.timings.get("compare_s") else 0.0
    lines.append(
        f"{result.comparisons} comparisons in {result.timings['compare_s']:.1f} s ({rate:.0f}/s) on "
        f"{result.executor}"
    )
    lines += [f"{kind}: {path}" for kind, path in result.files.items()]
    return "\n".join(lines)

"""What `iqa similar` found: the matrix, each image's nearest match, and the most similar pairs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.choices import higher_is_better
from pipeline.similarity.tasks import DEFAULT_BLOCK

PARQUET_NAME = "similarity.parquet"
NEAREST_NAME = "nearest.csv"
MANIFEST_NAME = "manifest.json"
HTML_NAME = "similar.html"
OUTPUTS = (PARQUET_NAME, NEAREST_NAME, MANIFEST_NAME, HTML_NAME)
TOP_PAIRS = 20


@dataclass
class SimilarResult:
    """Outcome of `run_similar`.

    Attributes:
        names_a: `(N,)` names of the compared images (relative to DIR); failed ones are False in `valid_a`.
        names_b: `(M,)` names of the images compared against (DIR itself, or REF_DIR).
        matrix: `(N, M)` values; NaN on the diagonal of a self comparison and for failed images.
        nearest: `{'image', 'nearest', 'value'}` per valid image of DIR, in name order.
    """

    metric: str
    size: int
    self_mode: bool
    names_a: list[str]
    names_b: list[str]
    paths_a: list[str]
    paths_b: list[str]
    matrix: np.ndarray
    valid_a: np.ndarray
    valid_b: np.ndarray
    nearest: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    timings: dict[str, float]
    comparisons: int
    executor: str
    run_dir: Path
    block: int = DEFAULT_BLOCK
    roots: tuple[str, str | None] = ("", None)
    files: dict[str, str] = field(default_factory=dict)
    lpips_backbone: tuple[str, str] | None = None  # (path, sha256) of the verified backbone, for LPIPS

    @property
    def higher_is_better(self) -> bool:
        return higher_is_better(self.metric)


PageWriter = Callable[[SimilarResult, Path], Path]


def nearest_matches(
    matrix: np.ndarray,
    names_a: list[str],
    names_b: list[str],
    valid_a: np.ndarray,
    valid_b: np.ndarray,
    higher_better: bool,
) -> list[dict[str, Any]]:
    """Each valid row's best column of the `(N, M)` matrix (NaN entries ignored), in row order."""
    scores = np.where(np.isnan(matrix) | ~valid_b[None, :], -np.inf, matrix if higher_better else -matrix)
    nearest = []
    for row in np.flatnonzero(valid_a):
        column = int(np.argmax(scores[row]))
        if not valid_b[column] or np.isnan(matrix[row, column]):
            continue
        nearest.append(
            {"image": names_a[row], "nearest": names_b[column], "value": float(matrix[row, column])}
        )
    return nearest


def top_pairs(result: SimilarResult, count: int = TOP_PAIRS) -> list[tuple[int, int, float]]:
    """The `count` most similar pairs `(row, column, value)`; a self comparison counts each pair once."""
    scores = result.matrix if result.higher_is_better else -result.matrix
    scores = np.where(np.isnan(scores), -np.inf, scores)
    if result.self_mode:
        scores = np.where(np.triu(np.ones_like(scores, dtype=bool), k=1), scores, -np.inf)
    flat = scores.ravel()
    count = min(count, int(np.isfinite(flat).sum() + np.isposinf(flat).sum()))
    if count == 0:
        return []
    best = np.argpartition(-flat, count - 1)[:count]
    best = best[np.argsort(-flat[best], kind="stable")]
    columns = scores.shape[1]
    return [(int(i // columns), int(i % columns), float(result.matrix.ravel()[i])) for i in best]

"""The pairs a benchmark times: paths only, written to JSON for a child process, split into chunks."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

Item = TypeVar("Item")
CHUNKS_PER_WORKER = 4  # a pool's work in smaller pieces than its workers, so that no worker idles long


@dataclass(frozen=True)
class PairPaths:
    """One reference/output pair by key, as `iqa score` pairs them."""

    key: str
    ref: str
    out: str


def write_pairs(path: Path, pairs: list[PairPaths]) -> Path:
    """Write `pairs` as a JSON list for a child process; returns `path`."""
    path.write_text(json.dumps([asdict(pair) for pair in pairs]))
    return path


def read_pairs(path: Path) -> list[PairPaths]:
    """The pairs `write_pairs` wrote to `path`."""
    return [PairPaths(**pair) for pair in json.loads(path.read_text())]


def pool_chunks(items: list[Item], workers: int) -> list[list[Item]]:
    """`items` split in order into at most `CHUNKS_PER_WORKER` chunks per worker of a pool, of equal size
    (the last one shorter)."""
    size = max(1, math.ceil(len(items) / (workers * CHUNKS_PER_WORKER)))
    return [items[i : i + size] for i in range(0, len(items), size)]

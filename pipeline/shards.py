"""Grouping pairs into shards: coarse Dask tasks of about equal cost, so the task threads finish together.

Example:
    >>> shard_size(60, 2, None)
    15
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Iterator, Sequence

from pipeline.discover import Pair
from pipeline.worker import PairTask

MAX_SHARD_PAIRS = 256
MIN_SHARD_PAIRS = 16  # about 100 ms of 512 px pairs on one core: a task worth its round trip and Parquet part
SHARDS_PER_THREAD = 4
BALANCE_WINDOW_SHARDS = 8  # shards balanced against each other at a time


def shard_size(pair_count: int, task_threads: int, requested: int | None) -> int:
    """Pairs per shard: `requested`, else up to `SHARDS_PER_THREAD` shards per thread of at least
    `MIN_SHARD_PAIRS` pairs, a multiple of the threads in number, at most `MAX_SHARD_PAIRS` pairs."""
    if requested:
        return requested
    threads = max(1, task_threads)
    shards = min(threads * SHARDS_PER_THREAD, max(1, pair_count // MIN_SHARD_PAIRS))
    shards = math.ceil(shards / threads) * threads
    return max(1, min(MAX_SHARD_PAIRS, math.ceil(pair_count / shards)))


def iter_shards(
    pairs: Sequence[Pair], size: int, known: dict[str, tuple[str, str]] | None = None, *, window: int = 1
) -> Iterator[list[PairTask]]:
    """Shards of about `size` tasks; `known` carries the hashes of pairs already scored ok (`--resume`).

    Tasks are made one window at a time, as the shards are taken, so a `PairList` of a million pairs never
    exists as Python objects at once.

    With `window` > 1 the pairs are taken `window` shards' worth at a time and split into shards of about
    equal cost, heaviest first (`balanced_shards`); with 1 the shards are consecutive runs of pairs.
    """
    known = known or {}
    for start in range(0, len(pairs), size * window):
        chunk = pairs[start : start + size * window]
        groups = balanced_shards(chunk, math.ceil(len(chunk) / size)) if window > 1 else [chunk]
        for group in groups:
            yield [PairTask(p.key, p.group, p.ref_path, p.out_path, known.get(p.key)) for p in group]


def balanced_shards(pairs: list[Pair], count: int) -> list[list[Pair]]:
    """`pairs` split into `count` shards of about equal estimated cost, heaviest shard first.

    Longest-processing-time first: each pair, most expensive first, joins the shard with the least cost so
    far; pairs keep their order within a shard. A pair's cost is the bytes of its two files.
    """
    costs = [_file_bytes(p.ref_path) + _file_bytes(p.out_path) for p in pairs]
    loads = [(0, index) for index in range(count)]  # (cost so far, shard index): a min-heap
    members: list[list[int]] = [[] for _ in range(count)]
    for index in sorted(range(len(pairs)), key=lambda i: -costs[i]):
        load, shard = heapq.heappop(loads)
        members[shard].append(index)
        heapq.heappush(loads, (load + costs[index], shard))
    heaviest_first = sorted(loads, key=lambda item: (-item[0], item[1]))
    return [[pairs[i] for i in sorted(members[shard])] for _, shard in heaviest_first if members[shard]]


def _file_bytes(path: str) -> int:
    """Size of a file, 0 when it cannot be read (its task reports the problem)."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0

"""Grouping pairs into shards: sizes split evenly over the task threads, costs balanced within windows."""

from __future__ import annotations

import pytest

from pipeline.discover import Pair
from pipeline.shards import balanced_shards, iter_shards, shard_size


@pytest.mark.parametrize(
    ("pairs", "threads", "expected"),
    [(60, 2, 15), (240, 2, 30), (10, 2, 5), (1, 2, 1), (100_000, 2, 256), (60, 16, 4), (1000, 2, 125)],
)
def test_shards_split_pairs_evenly_over_task_threads(pairs, threads, expected):
    assert shard_size(pairs, threads, None) == expected
    assert shard_size(pairs, threads, 7) == 7


def _pairs_of_sizes(tmp_path, sizes):
    pairs = []
    for index, size in enumerate(sizes):
        ref, out = tmp_path / f"r{index}.png", tmp_path / f"o{index}.png"
        ref.write_bytes(b"x" * size)
        out.write_bytes(b"y" * size)
        pairs.append(Pair(f"k{index:02d}", "", str(ref), str(out)))
    return pairs


def test_balanced_shards_share_the_cost_and_keep_every_pair_once(tmp_path):
    sizes = [100, 100, 100, 100, 900, 10, 10, 10, 500, 480, 20, 20]
    pairs = _pairs_of_sizes(tmp_path, sizes)
    shards = balanced_shards(pairs, 3)
    assert sorted(p.key for shard in shards for p in shard) == [p.key for p in pairs]
    loads = [sum(2 * sizes[int(p.key[1:])] for p in shard) for shard in shards]
    assert loads == sorted(loads, reverse=True)  # heaviest first
    assert max(loads) - min(loads) <= 2 * max(sizes)
    assert max(loads) == 2 * 900  # the largest pair alone; consecutive thirds would give 800 / 1860 / 2040
    for shard in shards:
        assert [p.key for p in shard] == sorted(p.key for p in shard)
    (tmp_path / "r4.png").unlink()  # unreadable files cost nothing; their task reports them
    assert sorted(p.key for shard in balanced_shards(pairs, 3) for p in shard) == [p.key for p in pairs]


def test_shards_are_balanced_within_windows(tmp_path):
    pairs = _pairs_of_sizes(tmp_path, [10 * (i % 7 + 1) for i in range(50)])
    contiguous = [[t.key for t in shard] for shard in iter_shards(pairs, 5, window=1)]
    assert contiguous == [[p.key for p in pairs[i : i + 5]] for i in range(0, 50, 5)]
    windowed = [[t.key for t in shard] for shard in iter_shards(pairs, 5, window=4)]
    assert sorted(k for shard in windowed for k in shard) == [p.key for p in pairs]
    assert len(windowed) == 10
    windows = [{p.key for p in pairs[i : i + 20]} for i in range(0, 50, 20)]
    for shard in windowed:  # every shard draws from one window of 4 shards' pairs
        assert any(set(shard) <= window for window in windows)

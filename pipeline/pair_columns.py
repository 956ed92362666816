"""Pairs and listed files kept as Arrow columns: tens of bytes a pair instead of Python objects per path.

A path (or URL) is kept as the index of its directory (everything up to and including its last separator)
in a list of the distinct directories, plus the name after it. In a flat folder or in nested groups the
directories are few, and joining the two parts gives back the exact string. Keys and names are Arrow strings,
built `CHUNK_ROWS` rows at a time, so a listing of a million files never exists as Python objects at once;
`Pair` objects are made only for the rows that are read.

Example:
    >>> files = FileTable.build([("b", "/r/b.png"), ("a", "/r/a.png")])
    >>> files.take(files.key_order()).entries()
    [{'key': 'a', 'path': '/r/a.png'}, {'key': 'b', 'path': '/r/b.png'}]
    >>> pairs = PairList.from_pairs([Pair("a", "", "/r/a.png", "/o/a.jpg")])
    >>> pairs[0], len(pairs)
    (Pair(key='a', group='', ref_path='/r/a.png', out_path='/o/a.jpg'), 1)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CHUNK_ROWS = 65_536  # rows gathered as Python objects before they become an Arrow batch
READ_ROWS = 4_096  # rows made into `Pair` objects at a time when iterating
# The tables here and the temporary buffers of pairing (sorting and hashing keys) come from the C library's
# allocator, which gives large freed buffers back; Arrow's default pool keeps them, which raised the client's
# peak RSS on large folders (docs/performance.md, "Client memory").
POOL = pa.system_memory_pool()


@dataclass(frozen=True)
class Pair:
    """One reference image and the output image with the same key.

    Attributes:
        key: Path relative to its root, POSIX separators, without extension (`sub/0001`).
        group: First `group_depth` directory components of the key joined by `/`; `''` when none.
        ref_path: Absolute path of the reference image.
        out_path: Absolute path of the output image.
    """

    key: str
    group: str
    ref_path: str
    out_path: str


def split_path(path: str) -> tuple[str, str]:
    """(directory with its trailing separator, name): the name is what follows the last `/` (or `os.sep`).

    Example:
        >>> split_path("/r/sub/a.png"), split_path("s3://bucket/a.png"), split_path("a.png")
        (('/r/sub/', 'a.png'), ('s3://bucket/', 'a.png'), ('', 'a.png'))
    """
    cut = max(path.rfind("/"), path.rfind(os.sep)) + 1
    return path[:cut], path[cut:]


class Interner:
    """Distinct strings numbered in order of first appearance.

    Example:
        >>> names = Interner()
        >>> [names.id(x) for x in ("a", "b", "a")], names.values
        ([0, 1, 0], ['a', 'b'])
    """

    def __init__(self) -> None:
        self.values: list[str] = []
        self._ids: dict[str, int] = {}

    def id(self, value: str) -> int:
        """The number of `value`, given a new one when it is first seen."""
        found = self._ids.get(value)
        if found is None:
            found = self._ids[value] = len(self.values)
            self.values.append(value)
        return found


def build_table(rows: Iterable[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    """A table of `schema` from row tuples, converted `CHUNK_ROWS` rows at a time."""
    batches: list[pa.RecordBatch] = []
    columns: list[list[Any]] = [[] for _ in schema]
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            column.append(value)
        if len(columns[0]) == CHUNK_ROWS:
            batches.append(_batch(columns, schema))
            columns = [[] for _ in schema]
    if columns[0]:
        batches.append(_batch(columns, schema))
    return pa.Table.from_batches(batches, schema=schema)


def _batch(columns: list[list[Any]], schema: pa.Schema) -> pa.RecordBatch:
    """One record batch of `schema` from its columns' Python values."""
    arrays = [pa.array(values, f.type, memory_pool=POOL) for values, f in zip(columns, schema, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


FILE_SCHEMA = pa.schema([("key", pa.string()), ("directory", pa.int32()), ("name", pa.string())])


class FileTable:
    """Listed files as rows (key, directory id, name); `directories[id] + name` is a file's path."""

    def __init__(self, table: pa.Table, directories: list[str]) -> None:
        self.table = table
        self.directories = directories

    @classmethod
    def build(cls, entries: Iterable[tuple[str, str]]) -> FileTable:
        """Files from `(key, path)` entries, consumed as they come (a generator is never held whole)."""
        directories = Interner()

        def rows() -> Iterator[tuple[str, int, str]]:
            for key, path in entries:
                directory, name = split_path(path)
                yield key, directories.id(directory), name

        return cls(build_table(rows(), FILE_SCHEMA), directories.values)

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def keys(self) -> pa.ChunkedArray:
        return self.table["key"]

    def key_order(self) -> np.ndarray:
        """Row indices that sort the rows by key (rows with the same key keep their order)."""
        return pc.sort_indices(self.keys, memory_pool=POOL).to_numpy()

    def take(self, rows: pa.Array | np.ndarray) -> FileTable:
        """The rows at the indices `rows`, or where the boolean mask `rows` is true."""
        if not isinstance(rows, pa.Array | pa.ChunkedArray):
            rows = pa.array(rows, memory_pool=POOL)
        select = pc.filter if rows.type == pa.bool_() else pc.take
        return FileTable(select(self.table, rows, memory_pool=POOL), self.directories)

    def with_keys(self, keys: Iterable[str]) -> FileTable:
        """The rows whose key is one of `keys`."""
        return self.take(self._has_key(keys))

    def without(self, keys: Iterable[str]) -> FileTable:
        """The rows whose key is not one of `keys`."""
        keys = list(keys)
        return self.take(pc.invert(self._has_key(keys), memory_pool=POOL)) if keys else self

    def _has_key(self, keys: Iterable[str]) -> pa.ChunkedArray:
        """Per row, whether its key is one of `keys`."""
        return pc.is_in(self.keys, value_set=pa.array(list(keys), pa.string()), memory_pool=POOL)

    def matching_rows(self, other: FileTable) -> np.ndarray:
        """For each row, the row of `other` with the same key (the first one), or -1.

        Example:
            >>> refs = FileTable.build([("a", "/r/a.png"), ("b", "/r/b.png")])
            >>> refs.matching_rows(FileTable.build([("b", "/o/b.png")])).tolist()
            [-1, 0]
        """
        rows = pc.index_in(self.keys, value_set=other.keys, memory_pool=POOL)
        return pc.coalesce(rows, -1, memory_pool=POOL).to_numpy()

    def paths(self) -> list[str]:
        """Every row's path, in row order."""
        columns = self.table.select(["directory", "name"]).to_pydict()
        directories = self.directories
        return [directories[d] + name for d, name in zip(columns["directory"], columns["name"], strict=True)]

    def entries(self) -> list[dict[str, str]]:
        """`{'key', 'path'}` of every row, in row order (for the short lists: missing, extra, duplicates)."""
        return [
            {"key": key, "path": path} for key, path in zip(self.keys.to_pylist(), self.paths(), strict=True)
        ]

    def duplicate_keys(self) -> set[str]:
        """The keys of two or more rows (found by sorting: a hash count of every key takes several times the
        memory of the keys)."""
        if len(self) < 2:
            return set()
        keys = pc.take(self.keys, self.key_order(), memory_pool=POOL)
        repeated = pc.equal(keys.slice(1), keys.slice(0, len(self) - 1), memory_pool=POOL)
        return set(pc.filter(keys.slice(1), repeated, memory_pool=POOL).to_pylist())


PAIR_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("group", pa.int32()),
        ("ref_directory", pa.int32()),
        ("ref_name", pa.string()),
        ("out_directory", pa.int32()),
        ("out_name", pa.string()),
    ]
)


class PairList(Sequence[Pair]):
    """Pairs kept as columns that read like a list of `Pair`: an index gives a `Pair`, a slice a list of
    them, made only for the rows asked for. It equals any sequence of the same pairs."""

    def __init__(self, table: pa.Table, groups: list[str], ref_dirs: list[str], out_dirs: list[str]) -> None:
        self.table = table
        self.groups, self.ref_dirs, self.out_dirs = groups, ref_dirs, out_dirs

    @classmethod
    def from_pairs(cls, pairs: Iterable[Pair]) -> PairList:
        """The pairs, in the order given."""
        groups, ref_dirs, out_dirs = Interner(), Interner(), Interner()

        def rows() -> Iterator[tuple[str, int, int, str, int, str]]:
            for pair in pairs:
                ref_dir, ref_name = split_path(pair.ref_path)
                out_dir, out_name = split_path(pair.out_path)
                group = groups.id(pair.group)
                yield pair.key, group, ref_dirs.id(ref_dir), ref_name, out_dirs.id(out_dir), out_name

        return cls(build_table(rows(), PAIR_SCHEMA), groups.values, ref_dirs.values, out_dirs.values)

    @classmethod
    def join(cls, refs: FileTable, outs: FileTable, group_of: Callable[[str], str]) -> PairList:
        """Row i of `refs` with row i of `outs` (the same key), grouped by `group_of(key)`."""
        assert len(refs) == len(outs), "a pair needs one reference and one output"
        groups = Interner()
        group_ids = [
            pa.array([groups.id(group_of(key)) for key in chunk.to_pylist()], pa.int32(), memory_pool=POOL)
            for chunk in (refs.keys.slice(start, CHUNK_ROWS) for start in range(0, len(refs), CHUNK_ROWS))
        ]
        columns = [
            refs.keys,
            pa.chunked_array(group_ids, pa.int32()),
            refs.table["directory"],
            refs.table["name"],
            outs.table["directory"],
            outs.table["name"],
        ]
        return cls(pa.table(columns, schema=PAIR_SCHEMA), groups.values, refs.directories, outs.directories)

    @property
    def keys(self) -> pa.ChunkedArray:
        """Every pair's key, as Arrow strings."""
        return self.table["key"]

    def __len__(self) -> int:
        return self.table.num_rows

    @overload
    def __getitem__(self, index: int) -> Pair: ...

    @overload
    def __getitem__(self, index: slice) -> list[Pair]: ...

    def __getitem__(self, index: int | slice) -> Pair | list[Pair]:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._read(start, stop)
        position = index + len(self) if index < 0 else index
        if not 0 <= position < len(self):
            raise IndexError(f"pair index {index} out of range for {len(self)} pairs")
        return self._read(position, position + 1)[0]

    def __iter__(self) -> Iterator[Pair]:
        for start in range(0, len(self), READ_ROWS):
            yield from self._read(start, start + READ_ROWS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PairList({len(self)} pairs)"

    def _read(self, start: int, stop: int) -> list[Pair]:
        """Pairs of rows start..stop-1."""
        rows = self.table.slice(start, max(0, stop - start)).to_pydict()
        groups, ref_dirs, out_dirs = self.groups, self.ref_dirs, self.out_dirs
        return [
            Pair(key, groups[group], ref_dirs[ref_dir] + ref_name, out_dirs[out_dir] + out_name)
            for key, group, ref_dir, ref_name, out_dir, out_name in zip(*rows.values(), strict=True)
        ]

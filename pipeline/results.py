"""Parquet results: the row record and its Arrow schema (declared once), atomic part files, resume, reading.

Layout of a run directory::

    RUN_DIR/scores/part-00000.parquet   one file per shard, written to a hidden temp name then renamed
    RUN_DIR/manifest.json               see `pipeline.manifest`
    RUN_DIR/report.html                 see `pipeline.html`

Units: psnr in dB; mse in squared data units (of the convention's channels); ssim, ms_ssim, lpips unitless;
`seconds` is the worker's wall time for the pair; height, width, depth, channels and bit_depth describe the
reference (depth: slices of a volume, null for 2-D images).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.choices import BUILTIN_METRICS, METRICS, Status
from pipeline.errors import RunDirError
from pipeline.locations import Location, StorageOptions, locate
from pipeline.run_dirs import SCORES_DIR, SUPERSEDED_DIR, RunDir

PART_PATTERN = re.compile(r"^part-(\d{5,})\.parquet$")
METADATA_KEY = b"iqa_pipeline"

SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("ref_path", pa.string()),
        pa.field("out_path", pa.string()),
        pa.field("height", pa.int32()),
        pa.field("width", pa.int32()),
        pa.field("depth", pa.int32()),
        pa.field("channels", pa.int16()),
        pa.field("bit_depth", pa.int16()),
        *(pa.field(name, pa.float64()) for name in BUILTIN_METRICS),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("warnings", pa.list_(pa.string())),
        pa.field("ref_sha256", pa.string()),
        pa.field("out_sha256", pa.string()),
        pa.field("seconds", pa.float64()),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)
COLUMNS = tuple(SCHEMA.names)


@dataclass
class ResultRow:
    """One pair's row; its fields are exactly the columns of `SCHEMA` (checked when the module loads)."""

    key: str
    group: str
    ref_path: str
    out_path: str
    run_id: str
    status: str = Status.OK.value
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    height: int | None = None
    width: int | None = None
    depth: int | None = None
    channels: int | None = None
    bit_depth: int | None = None
    psnr: float | None = None
    ssim: float | None = None
    ms_ssim: float | None = None
    lpips: float | None = None
    mse: float | None = None
    ref_sha256: str | None = None
    out_sha256: str | None = None
    seconds: float = 0.0
    plugin_values: dict[str, float | None] = field(default_factory=dict)  # columns of plugin metrics

    def fail(self, message: str) -> None:
        """Mark the pair failed with `message` (which names the files and the problem)."""
        self.status = Status.ERROR.value
        self.error = message

    @property
    def ok(self) -> bool:
        return self.status == Status.OK.value

    def set_metric(self, name: str, value: float | None) -> None:
        """Set the column of metric `name` (one of `METRICS`: a built-in, or a plugin's column)."""
        if name in BUILTIN_METRICS:
            setattr(self, name, value)
        elif name in METRICS:
            self.plugin_values[name] = value
        else:
            raise KeyError(f"{name!r} is not a metric column; columns: {', '.join(METRICS)}")


ROW_FIELDS = tuple(f.name for f in fields(ResultRow) if f.name != "plugin_values")
if set(ROW_FIELDS) != set(COLUMNS):  # the record and the schema are one declaration
    raise ImportError(f"ResultRow fields {sorted(ROW_FIELDS)} differ from the schema {sorted(COLUMNS)}")


def schema_with(plugin_columns: tuple[str, ...] | list[str] = ()) -> pa.Schema:
    """`SCHEMA` grown by the float64 columns of plugin metrics, after the built-in metrics' columns.

    Example:
        >>> schema_with(["l1"]).names.index("l1") == SCHEMA.names.index("mse") + 1
        True
    """
    after = SCHEMA.get_field_index(list(BUILTIN_METRICS)[-1]) + 1
    extra = [pa.field(name, pa.float64()) for name in plugin_columns if name not in SCHEMA.names]
    ordered = list(SCHEMA)
    return pa.schema([*ordered[:after], *extra, *ordered[after:]])


def rows_to_table(
    rows: list[ResultRow], metadata: dict[str, Any] | None = None, plugin_columns: tuple[str, ...] = ()
) -> pa.Table:
    """Rows -> Arrow table of `SCHEMA` and the plugin columns (types checked by Arrow), with the run
    metadata when given."""
    columns = {name: [getattr(row, name) for row in rows] for name in COLUMNS}
    columns.update({name: [row.plugin_values.get(name) for row in rows] for name in plugin_columns})
    table = pa.Table.from_pydict(columns, schema=schema_with(plugin_columns))
    if metadata:
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
    return table


def part_paths(run_dir: RunDir, storage_options: StorageOptions | None = None) -> list[Location]:
    """Finished part files of a run, in part order (temp files are never listed)."""
    scores = locate(run_dir, storage_options).child(SCORES_DIR)
    parts = [name for name in scores.names() if PART_PATTERN.match(name)]
    parts.sort(key=lambda name: int(PART_PATTERN.match(name).group(1)))
    return [scores.child(name) for name in parts]


class PartWriter:
    """Writes numbered part files into RUN_DIR/scores, continuing after the parts already there; each name is
    written once (a local file through a temp file and a rename, an object by one upload)."""

    def __init__(
        self, run_dir: RunDir, metadata: dict[str, Any], plugin_columns: tuple[str, ...] = ()
    ) -> None:
        run = locate(run_dir)
        self.plugin_columns = tuple(plugin_columns)
        self.scores_dir = run.child(SCORES_DIR)
        self.scores_dir.make_dirs()
        existing = part_paths(run)
        self.next_index = int(PART_PATTERN.match(existing[-1].name).group(1)) + 1 if existing else 0
        self.metadata = metadata
        self.written: list[Location] = []

    def write(self, rows: list[ResultRow]) -> Location:
        """Write one shard's rows as the next part; returns its location."""
        return self.write_table(rows_to_table(rows, self.metadata, self.plugin_columns))

    def write_table(self, table: pa.Table) -> Location:
        """Write an Arrow table (with its own schema metadata) as the next part; returns its location."""
        part = self.scores_dir.child(f"part-{self.next_index:05d}.parquet")
        part.write(lambda handle: pq.write_table(table, handle))
        self.next_index += 1
        self.written.append(part)
        return part


def part_metadata(
    part: str | Path | Location, storage_options: StorageOptions | None = None
) -> dict[str, Any]:
    """The run metadata stored in one part file's Parquet key-value metadata."""
    with locate(part, storage_options).open() as handle:
        raw = (pq.read_schema(handle).metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def _read_part(part: Location, columns: list[str] | None = None) -> pa.Table:
    """A part's rows with the columns of `SCHEMA` (typed as there, null where an older part lacks one) and
    then the plugin metric columns it holds.

    Read as one file (`pq.ParquetFile`): `pq.read_table` goes through `pyarrow.dataset`, whose import costs a
    fresh `iqa score` about 0.14 s.
    """
    with part.open() as handle:
        table = pq.ParquetFile(handle).read(columns=columns)
    return conform(table, columns)


def conform(table: pa.Table, columns: list[str] | None = None) -> pa.Table:
    """`table` with every column of `SCHEMA` (or of `columns`) in order and type, null-filled where missing,
    followed by its other (plugin metric) columns as they are; schema metadata dropped."""
    wanted = [column for column in SCHEMA if columns is None or column.name in columns]
    arrays, names = [], []
    for column in wanted:
        present = column.name in table.column_names
        arrays.append(
            table.column(column.name).cast(column.type) if present else pa.nulls(len(table), column.type)
        )
        names.append(column.name)
    for name in table.column_names:
        if name not in SCHEMA.names:
            arrays.append(table.column(name))
            names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def load_results(
    path: RunDir, *, latest_only: bool = True, storage_options: StorageOptions | None = None
) -> pd.DataFrame:
    """Read a run directory (or its scores folder, or one part file) into a DataFrame, one row per key.

    A key rescored by `--resume` appears in several parts; by default only its latest row is kept.

    Args:
        path: RUN_DIR, RUN_DIR/scores, or a single part file; a local path or a URL (`s3://bucket/run`).
        latest_only: drop superseded rows (same key, earlier part).
        storage_options: options of the file system of a URL (e.g. {'endpoint_url': ...}).

    Returns:
        DataFrame with the columns of `SCHEMA`, sorted by key.

    Raises:
        RunDirError: the path does not exist.

    Example:
        >>> frame = load_results("RUN_DIR")  # doctest: +SKIP
        >>> frame.groupby("group")[["psnr", "ssim"]].mean()  # doctest: +SKIP
    """
    where = locate(path, storage_options)
    if where.is_file():
        files = [where]
    else:
        run_dir = where.parent if where.name == SCORES_DIR else where
        if not run_dir.is_dir():
            raise RunDirError(f"{path} does not exist. Pass a run directory written by `iqa score`.")
        files = part_paths(run_dir)
    if not files:
        return rows_to_table([]).to_pandas()
    frame = pa.concat_tables([_read_part(f) for f in files], promote_options="default").to_pandas()
    if latest_only:
        frame = frame.drop_duplicates(subset="key", keep="last")
    return frame.sort_values("key", kind="stable").reset_index(drop=True)


def remove_stale_temp_files(run_dir: RunDir) -> int:
    """Delete half-written part files a killed run left on a local disk; returns how many were removed
    (an object store keeps no half-written objects: an upload appears only when complete)."""
    scores = locate(run_dir).child(SCORES_DIR)
    if not scores.local or not os.path.isdir(scores.path):
        return 0
    stale = list(Path(scores.path).glob(".part-*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def latest_rows(run_dir: RunDir, columns: list[str], *, config_hash: str | None = None) -> pd.DataFrame:
    """The latest row per key over the finished parts, reading only `columns` (plus key).

    Args:
        run_dir: the run directory.
        columns: columns to read.
        config_hash: when given, only parts written with this config hash are read.
    """
    wanted = list(dict.fromkeys(["key", *columns]))
    tables = [
        _read_part(part, wanted)
        for part in part_paths(run_dir)
        if config_hash is None or part_metadata(part).get("config_hash") == config_hash
    ]
    if not tables:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in wanted})
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    return frame.drop_duplicates(subset="key", keep="last").reset_index(drop=True)


def retire_superseded_rows(run_dir: RunDir) -> int:
    """Leave every key in exactly one part of RUN_DIR/scores, so that any Parquet reader (pandas, DuckDB,
    polars, Dask) sees each key once with its latest values; returns how many rows were retired.

    A key rescored by `--resume` has rows in several parts; the latest part wins. Each part holding a row
    that a later part supersedes is replaced: its other rows are written first as a new part (keeping its
    metadata, so `--resume` still knows their configuration), then the part is moved to
    RUN_DIR/superseded/. A crash between the two steps leaves identical copies of rows that are still
    latest and stale rows that a later part supersedes, which `load_results` and `--resume` resolve as
    before; the next `--resume` retires them.
    """
    run = locate(run_dir)
    parts = part_paths(run)
    if len(parts) < 2:
        return 0
    keys = pa.concat_tables([_keys_of(part, index) for index, part in enumerate(parts)])
    latest = keys.group_by("key").aggregate([("part", "max")])
    stale = keys.join(latest, "key").filter(pc.field("part") < pc.field("part_max"))
    retired = 0
    writer = PartWriter(run, {})
    for index in sorted(set(stale.column("part").to_pylist())):
        part = parts[index]
        stale_keys = stale.filter(pc.field("part") == index).column("key")
        with part.open() as handle:
            table = pq.read_table(handle)
        kept = table.filter(pc.invert(pc.is_in(table.column("key"), value_set=stale_keys)))
        if kept.num_rows:
            writer.write_table(kept)
        part.move(run.child(SUPERSEDED_DIR, part.name))
        retired += table.num_rows - kept.num_rows
    return retired


def _keys_of(part: Location, index: int) -> pa.Table:
    """(key, part index) of every row of one part."""
    keys = _read_part(part, ["key"]).column("key")
    return pa.table({"key": keys, "part": pa.array([index] * len(keys), pa.int32())})


def resume_index(run_dir: RunDir, config_hash: str) -> dict[str, tuple[str, str]]:
    """{key: (ref_sha256, out_sha256)} of keys whose latest row under `config_hash` is ok (`--resume`)."""
    rows = latest_rows(run_dir, ["status", "ref_sha256", "out_sha256"], config_hash=config_hash)
    ok = rows[rows["status"] == Status.OK.value]
    return dict(zip(ok["key"], zip(ok["ref_sha256"], ok["out_sha256"], strict=True), strict=True))

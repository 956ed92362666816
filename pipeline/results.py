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
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.choices import METRICS, Status
from pipeline.errors import RunDirError
from pipeline.run_dirs import SCORES_DIR
from pipeline.storage import write_atomic

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
        *(pa.field(name, pa.float64()) for name in METRICS),
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

    def fail(self, message: str) -> None:
        """Mark the pair failed with `message` (which names the files and the problem)."""
        self.status = Status.ERROR.value
        self.error = message

    @property
    def ok(self) -> bool:
        return self.status == Status.OK.value

    def set_metric(self, name: str, value: float | None) -> None:
        """Set the column of metric `name` (one of `METRICS`)."""
        if name not in METRICS:
            raise KeyError(f"{name!r} is not a metric column; columns: {', '.join(METRICS)}")
        setattr(self, name, value)


ROW_FIELDS = tuple(f.name for f in fields(ResultRow))
if set(ROW_FIELDS) != set(COLUMNS):  # the record and the schema are one declaration
    raise ImportError(f"ResultRow fields {sorted(ROW_FIELDS)} differ from the schema {sorted(COLUMNS)}")


def rows_to_table(rows: list[ResultRow], metadata: dict[str, Any] | None = None) -> pa.Table:
    """Rows -> Arrow table of `SCHEMA` (types checked by Arrow), with the run metadata when given."""
    columns = {name: [getattr(row, name) for row in rows] for name in COLUMNS}
    table = pa.Table.from_pydict(columns, schema=SCHEMA)
    if metadata:
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, sort_keys=True).encode()})
    return table


def part_paths(run_dir: str | Path) -> list[Path]:
    """Finished part files of a run, in part order (temp files are never listed)."""
    scores = Path(run_dir) / SCORES_DIR
    if not scores.is_dir():
        return []
    parts = [p for p in scores.iterdir() if PART_PATTERN.match(p.name)]
    return sorted(parts, key=lambda p: int(PART_PATTERN.match(p.name).group(1)))


class PartWriter:
    """Writes numbered part files into RUN_DIR/scores, continuing after the parts already there."""

    def __init__(self, run_dir: str | Path, metadata: dict[str, Any]) -> None:
        self.scores_dir = Path(run_dir) / SCORES_DIR
        self.scores_dir.mkdir(parents=True, exist_ok=True)
        existing = part_paths(run_dir)
        self.next_index = int(PART_PATTERN.match(existing[-1].name).group(1)) + 1 if existing else 0
        self.metadata = metadata
        self.written: list[Path] = []

    def write(self, rows: list[ResultRow]) -> Path:
        """Write one shard's rows as the next part; returns its path."""
        table = rows_to_table(rows, self.metadata)
        path = self.scores_dir / f"part-{self.next_index:05d}.parquet"
        write_atomic(path, lambda temp: pq.write_table(table, temp))
        self.next_index += 1
        self.written.append(path)
        return path


def part_metadata(path: str | Path) -> dict[str, Any]:
    """The run metadata stored in one part file's Parquet key-value metadata."""
    raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def load_results(path: str | Path, *, latest_only: bool = True) -> pd.DataFrame:
    """Read a run directory (or its scores folder, or one part file) into a DataFrame, one row per key.

    A key rescored by `--resume` appears in several parts; by default only its latest row is kept.

    Args:
        path: RUN_DIR, RUN_DIR/scores, or a single part file.
        latest_only: drop superseded rows (same key, earlier part).

    Returns:
        DataFrame with the columns of `SCHEMA`, sorted by key.

    Raises:
        RunDirError: the path does not exist.

    Example:
        >>> frame = load_results("RUN_DIR")  # doctest: +SKIP
        >>> frame.groupby("group")[["psnr", "ssim"]].mean()  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    else:
        run_dir = path.parent if path.name == SCORES_DIR else path
        if not run_dir.is_dir():
            raise RunDirError(f"{path} does not exist. Pass a run directory written by `iqa score`.")
        files = part_paths(run_dir)
    if not files:
        return rows_to_table([]).to_pandas()
    frame = pa.concat_tables([pq.read_table(f, schema=SCHEMA) for f in files]).to_pandas()
    if latest_only:
        frame = frame.drop_duplicates(subset="key", keep="last")
    return frame.sort_values("key", kind="stable").reset_index(drop=True)


def remove_stale_temp_files(run_dir: str | Path) -> int:
    """Delete half-written part files left by a killed run; returns how many were removed."""
    scores = Path(run_dir) / SCORES_DIR
    stale = list(scores.glob(".part-*.tmp")) if scores.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def latest_rows(run_dir: str | Path, columns: list[str], *, config_hash: str | None = None) -> pd.DataFrame:
    """The latest row per key over the finished parts, reading only `columns` (plus key).

    Args:
        run_dir: the run directory.
        columns: columns to read.
        config_hash: when given, only parts written with this config hash are read.
    """
    wanted = list(dict.fromkeys(["key", *columns]))
    tables = [
        pq.read_table(path, columns=wanted, schema=SCHEMA)
        for path in part_paths(run_dir)
        if config_hash is None or part_metadata(path).get("config_hash") == config_hash
    ]
    if not tables:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in wanted})
    frame = pa.concat_tables(tables).to_pandas()
    return frame.drop_duplicates(subset="key", keep="last").reset_index(drop=True)


def resume_index(run_dir: str | Path, config_hash: str) -> dict[str, tuple[str, str]]:
    """{key: (ref_sha256, out_sha256)} of keys whose latest row under `config_hash` is ok (`--resume`)."""
    rows = latest_rows(run_dir, ["status", "ref_sha256", "out_sha256"], config_hash=config_hash)
    ok = rows[rows["status"] == Status.OK.value]
    return dict(zip(ok["key"], zip(ok["ref_sha256"], ok["out_sha256"], strict=True), strict=True))

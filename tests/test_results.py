"""pipeline/results.py: the row record and its Arrow schema, part files, reading a run, resume, stale
temp files."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pytest

from pipeline.choices import METRICS
from pipeline.errors import RunDirError
from pipeline.results import (
    COLUMNS,
    ROW_FIELDS,
    SCHEMA,
    PartWriter,
    ResultRow,
    latest_rows,
    load_results,
    part_metadata,
    part_paths,
    remove_stale_temp_files,
    resume_index,
    rows_to_table,
)


def row(key: str, run_id: str = "run-a", **values) -> ResultRow:
    return ResultRow(key, key.split("/")[0], f"ref/{key}.png", f"out/{key}.png", run_id, **values)


def write_parts(run_dir, *parts: list[ResultRow], config_hash: str = "hash-a") -> list:
    writer = PartWriter(run_dir, {"run_id": "run-a", "config_hash": config_hash})
    return [writer.write(rows) for rows in parts]


# The record and the schema


def test_row_fields_are_the_schema_columns():
    assert sorted(ROW_FIELDS) == sorted(COLUMNS) and len(ROW_FIELDS) == len(COLUMNS)
    assert [name for name in COLUMNS if name in METRICS] == list(METRICS)
    for metric in METRICS:
        assert SCHEMA.field(metric).type == pa.float64()
    required = {field.name for field in SCHEMA if not field.nullable}
    assert required == {"key", "group", "status", "run_id"}
    assert SCHEMA.field("warnings").type == pa.list_(pa.string())


def test_a_row_fails_with_its_message_and_rejects_unknown_metrics():
    result = row("a/1", psnr=30.0)
    assert result.ok and result.status == "ok" and result.error is None
    result.set_metric("ssim", 0.9)
    assert result.ssim == 0.9
    with pytest.raises(KeyError, match="'status' is not a metric column"):
        result.set_metric("status", 1.0)
    result.fail("out/a/1.png is truncated")
    assert not result.ok and result.status == "error" and result.error == "out/a/1.png is truncated"


def test_rows_to_table_has_the_schema_types_and_metadata():
    rows = [
        row("a/1", height=480, width=640, channels=3, bit_depth=8, psnr=31.5, warnings=["alpha dropped"]),
        row("b/2", psnr=math.inf, mse=0.0, seconds=0.25),
    ]
    table = rows_to_table(rows, {"run_id": "run-a", "crop": 4})
    assert table.schema.equals(SCHEMA, check_metadata=False)
    assert table.column("height").to_pylist() == [480, None]
    assert table.column("psnr").to_pylist() == [31.5, math.inf]
    assert table.column("warnings").to_pylist() == [["alpha dropped"], []]
    assert rows_to_table(rows).schema.metadata is None
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        rows_to_table([row("a/1", height="480")])


# Part files


def test_part_writer_numbers_parts_and_stores_the_metadata(tmp_path):
    paths = write_parts(tmp_path, [row("a/1")], [row("a/2")])
    assert [path.name for path in paths] == ["part-00000.parquet", "part-00001.parquet"]
    assert part_paths(tmp_path) == paths
    assert part_metadata(paths[1]) == {"run_id": "run-a", "config_hash": "hash-a"}
    assert not [p for p in (tmp_path / "scores").iterdir() if p.name.startswith(".")]


def test_part_writer_continues_after_the_parts_already_there(tmp_path):
    write_parts(tmp_path, [row("a/1")], [row("a/2")], [row("a/3")])
    (tmp_path / "scores" / "part-00001.parquet").unlink()
    (tmp_path / "scores" / ".part-00007.parquet.123.tmp").write_bytes(b"half-written")
    (tmp_path / "scores" / "part-notes.txt").write_text("not a part")
    (path,) = write_parts(tmp_path, [row("a/4")])
    assert path.name == "part-00003.parquet"
    assert [p.name for p in part_paths(tmp_path)] == [
        "part-00000.parquet", "part-00002.parquet", "part-00003.parquet",
    ]  # fmt: skip


def test_parts_are_ordered_by_number_past_five_digits(tmp_path):
    write_parts(tmp_path, [row("a/1")])
    (tmp_path / "scores" / "part-00000.parquet").rename(tmp_path / "scores" / "part-99999.parquet")
    (path,) = write_parts(tmp_path, [row("a/1", psnr=40.0)])
    assert path.name == "part-100000.parquet"
    assert [p.name for p in part_paths(tmp_path)] == ["part-99999.parquet", "part-100000.parquet"]
    assert load_results(tmp_path)["psnr"].tolist() == [40.0]


def test_no_scores_folder_has_no_parts(tmp_path):
    assert part_paths(tmp_path) == []
    assert part_paths(tmp_path / "nowhere") == []


# Reading


def test_load_results_reads_a_run_dir_its_scores_folder_or_one_part(tmp_path):
    first, second = write_parts(tmp_path, [row("b/2", psnr=20.0), row("a/1", psnr=30.0)], [row("c/3")])
    frame = load_results(tmp_path)
    assert list(frame.columns) == list(COLUMNS)
    assert frame["key"].tolist() == ["a/1", "b/2", "c/3"]
    assert frame["group"].tolist() == ["a", "b", "c"]
    pd.testing.assert_frame_equal(load_results(tmp_path / "scores"), frame)
    assert load_results(first)["key"].tolist() == ["a/1", "b/2"]
    assert load_results(second)["key"].tolist() == ["c/3"]


def test_latest_only_keeps_the_row_of_the_latest_part(tmp_path):
    write_parts(
        tmp_path,
        [row("a/1", psnr=20.0, run_id="first"), row("a/2", psnr=21.0, run_id="first")],
        [row("a/1", psnr=25.0, run_id="second")],
    )
    latest = load_results(tmp_path).set_index("key")
    assert latest.loc["a/1", "psnr"] == 25.0 and latest.loc["a/1", "run_id"] == "second"
    assert latest.loc["a/2", "psnr"] == 21.0 and len(latest) == 2
    every = load_results(tmp_path, latest_only=False)
    assert len(every) == 3 and every["key"].tolist() == ["a/1", "a/1", "a/2"]
    assert every["psnr"].tolist() == [20.0, 25.0, 21.0]


def test_load_results_of_an_empty_or_missing_run(tmp_path):
    empty = load_results(tmp_path)
    assert empty.empty and list(empty.columns) == list(COLUMNS)
    with pytest.raises(RunDirError, match=r"does not exist\. Pass a run directory written by `iqa score`"):
        load_results(tmp_path / "missing")


def test_latest_rows_reads_only_parts_of_one_config(tmp_path):
    write_parts(tmp_path, [row("a/1", psnr=20.0), row("a/2", psnr=21.0)], config_hash="hash-a")
    write_parts(tmp_path, [row("a/1", psnr=30.0)], config_hash="hash-b")
    under_a = latest_rows(tmp_path, ["psnr"], config_hash="hash-a")
    assert list(under_a.columns) == ["key", "psnr"]
    assert dict(zip(under_a["key"], under_a["psnr"], strict=True)) == {"a/1": 20.0, "a/2": 21.0}
    every = latest_rows(tmp_path, ["psnr", "key"])
    assert dict(zip(every["key"], every["psnr"], strict=True)) == {"a/1": 30.0, "a/2": 21.0}
    none = latest_rows(tmp_path, ["status"], config_hash="hash-c")
    assert none.empty and list(none.columns) == ["key", "status"]


def test_resume_index_holds_keys_whose_latest_row_is_ok(tmp_path):
    shas = {"ref_sha256": "r1", "out_sha256": "o1"}
    failed = row("a/2", **shas)
    failed.fail("broken")
    write_parts(tmp_path, [row("a/1", **shas), failed, row("a/3", **shas)])
    later_failure = row("a/3", **shas)
    later_failure.fail("worker died")
    write_parts(tmp_path, [later_failure, row("a/4", ref_sha256="r4", out_sha256="o4")])
    write_parts(tmp_path, [row("a/5", **shas)], config_hash="hash-b")
    assert resume_index(tmp_path, "hash-a") == {"a/1": ("r1", "o1"), "a/4": ("r4", "o4")}
    assert resume_index(tmp_path, "hash-b") == {"a/5": ("r1", "o1")}
    assert resume_index(tmp_path, "hash-c") == {}


def test_remove_stale_temp_files_keeps_finished_parts(tmp_path):
    assert remove_stale_temp_files(tmp_path) == 0
    (kept,) = write_parts(tmp_path, [row("a/1")])
    for name in (".part-00001.parquet.41.tmp", ".part-00002.parquet.42.tmp"):
        (tmp_path / "scores" / name).write_bytes(b"half")
    (tmp_path / "scores" / ".notes.tmp").write_text("not a part")
    assert remove_stale_temp_files(tmp_path) == 2
    assert sorted(p.name for p in (tmp_path / "scores").iterdir()) == [".notes.tmp", kept.name]
    assert remove_stale_temp_files(tmp_path) == 0

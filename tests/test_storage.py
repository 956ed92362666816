"""pipeline/storage.py: a file is written to a hidden temp name beside it, then renamed, so that a reader
never sees half of it and a failed write leaves the previous file and no temp behind."""

from __future__ import annotations

import errno

import pytest

from pipeline.errors import WriteError
from pipeline.storage import temp_name, write_atomic, write_text_atomic


def test_the_write_goes_to_a_hidden_temp_beside_the_target(tmp_path):
    target = tmp_path / "part-00000.parquet"
    seen = []

    def write(temp):
        seen.append(temp)
        assert not target.exists()
        temp.write_bytes(b"data")

    write_atomic(target, write)
    assert seen == [temp_name(target)]
    assert seen[0].parent == tmp_path and seen[0].name.startswith(".part-00000.parquet.")
    assert seen[0].name.endswith(".tmp")
    assert target.read_bytes() == b"data" and list(tmp_path.iterdir()) == [target]


def test_a_rewrite_replaces_the_file_whole(tmp_path):
    target = tmp_path / "manifest.json"
    write_text_atomic(target, "{}")
    write_text_atomic(target, '{"run_id": "b", "name": "é"}')
    assert target.read_text(encoding="utf-8") == '{"run_id": "b", "name": "é"}'


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text("previous")

    def fail(temp):
        temp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(WriteError) as raised:
        write_atomic(target, fail)
    assert str(raised.value) == (
        f"Cannot write {target}: No space left on device. Check free space and permissions."
    )
    assert target.read_text() == "previous" and list(tmp_path.iterdir()) == [target]


def test_a_failed_rename_leaves_no_temp(tmp_path):
    target = tmp_path / "report.html"
    (target / "inside").mkdir(parents=True)
    with pytest.raises(WriteError, match=r"Cannot write .*report\.html: "):
        write_text_atomic(target, "<html></html>")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_a_write_that_fails_otherwise_leaves_no_temp(tmp_path):
    target = tmp_path / "report.html"
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(target, "name \udcff")
    assert list(tmp_path.iterdir()) == []

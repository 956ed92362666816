"""pipeline/pair_columns.py: listed files and pairs kept as columns read back exactly as they were given."""

from __future__ import annotations

import pytest

import pipeline.pair_columns as pair_columns
from pipeline.pair_columns import FileTable, Pair, PairList, split_path


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 rows and reads of 2, so that a handful of rows crosses every boundary."""
    monkeypatch.setattr(pair_columns, "CHUNK_ROWS", 3)
    monkeypatch.setattr(pair_columns, "READ_ROWS", 2)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/r/sub/a.png", ("/r/sub/", "a.png")),
        ("s3://bucket/dir/a b.png", ("s3://bucket/dir/", "a b.png")),
        ("a.png", ("", "a.png")),
        ("/r/日本/ü.png", ("/r/日本/", "ü.png")),
    ],
)
def test_a_path_splits_into_its_directory_and_name_and_joins_back(path, expected):
    assert split_path(path) == expected
    assert "".join(split_path(path)) == path


def test_files_are_read_back_in_order_and_ordered_stably_by_key(small_chunks):
    entries = [("b", "/r/x/b.png"), ("a", "/r/a.png"), ("c", "/r/x/c.png"), ("a", "/r/a.jpg"), ("d", "d.png")]
    files = FileTable.build(iter(entries))
    assert len(files) == 5 and files.table["key"].num_chunks == 2
    assert files.directories == ["/r/x/", "/r/", ""]  # each distinct directory once
    assert files.entries() == [{"key": k, "path": p} for k, p in entries]
    by_key = ["/r/a.png", "/r/a.jpg", "/r/x/b.png", "/r/x/c.png", "d.png"]
    assert files.take(files.key_order()).paths() == by_key
    assert files.take([True, False, False, False, True]).paths() == ["/r/x/b.png", "d.png"]
    assert files.duplicate_keys() == {"a"}
    assert files.without({"a", "d"}).paths() == ["/r/x/b.png", "/r/x/c.png"]
    assert files.with_keys({"a", "d"}).paths() == ["/r/a.png", "/r/a.jpg", "d.png"]
    assert files.matching_rows(files.with_keys(["d", "b"])).tolist() == [0, -1, -1, -1, 1]
    assert files.without(set()) is files


def test_an_empty_listing_has_no_rows_and_no_duplicates():
    files = FileTable.build([])
    assert len(files) == 0 and files.entries() == [] and files.duplicate_keys() == set()
    assert files.key_order().tolist() == []


def test_pairs_read_like_the_list_they_were_made_from(small_chunks):
    given = [
        Pair(f"g{i % 2}/k{i}", f"g{i % 2}", f"/ref/g{i % 2}/k{i}.png", f"s3://out/g{i % 2}/k{i}.jpg")
        for i in range(7)
    ]
    pairs = PairList.from_pairs(given)
    assert len(pairs) == 7 and list(pairs) == given and pairs == given
    assert pairs[0] == given[0] and pairs[-1] == given[-1] and pairs[2:5] == given[2:5]
    assert pairs[::3] == given[::3] and pairs[5:100] == given[5:] and pairs[6:2] == []
    assert pairs.keys.to_pylist() == [p.key for p in given]
    assert pairs.groups == ["g0", "g1"] and pairs.ref_dirs == ["/ref/g0/", "/ref/g1/"]
    assert pairs != given[:-1] and pairs != [*given[:-1], Pair("other", "", "/r", "/o")]
    for index in (7, -8):
        with pytest.raises(IndexError, match="out of range for 7 pairs"):
            pairs[index]


def test_joined_files_become_pairs_grouped_by_their_key():
    refs = FileTable.build([("a/1", "/r/a/1.png"), ("b/2", "/r/b/2.png")])
    outs = FileTable.build([("a/1", "/o/a/1_SR.png"), ("b/2", "/o/b/2_SR.png")])
    pairs = PairList.join(refs, outs, lambda key: key.split("/")[0])
    assert pairs == [
        Pair("a/1", "a", "/r/a/1.png", "/o/a/1_SR.png"),
        Pair("b/2", "b", "/r/b/2.png", "/o/b/2_SR.png"),
    ]
    assert PairList.from_pairs([]) == [] and repr(pairs) == "PairList(2 pairs)"

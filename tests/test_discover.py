"""Tests for pipeline.discover: walking two folders and pairing their images by key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import touch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import discover
from pipeline.discover import Pair, Pairing, discover_pairs, format_pairing
from pipeline.errors import ConfigError, UsageError


def keys(pairing: Pairing) -> list[str]:
    return [p.key for p in pairing.pairs]


def stem_key(root: Path, path: str) -> str:
    return Path(path).relative_to(root).with_suffix("").as_posix()


# Basic pairing


def test_nested_pairs_with_different_extensions(dirs):
    ref, out = dirs
    touch(ref, "a.png", "sub/0001.png", "sub/deep/0002.png")
    touch(out, "a.jpg", "sub/0001.jpg", "sub/deep/0002.webp")
    pairing = discover_pairs(ref, out)
    assert keys(pairing) == ["a", "sub/0001", "sub/deep/0002"]
    assert pairing.pairs[1] == Pair("sub/0001", "sub", str(ref / "sub/0001.png"), str(out / "sub/0001.jpg"))
    assert all(os.path.isabs(p.ref_path) and os.path.isabs(p.out_path) for p in pairing.pairs)
    assert pairing.counts() == {"pairs": 3, "missing": 0, "extra": 0, "duplicates": 0, "skipped": 0}


def test_relative_folder_arguments_give_absolute_paths(dirs, monkeypatch):
    ref, out = dirs
    touch(ref, "a.png")
    touch(out, "a.png")
    monkeypatch.chdir(ref.parent)
    pairing = discover_pairs("ref", "out")
    assert pairing.pairs[0].ref_path == str(ref / "a.png")
    assert pairing.pairs[0].out_path == str(out / "a.png")


def test_missing_and_extra(dirs):
    ref, out = dirs
    touch(ref, "a.png", "b.png", "sub/c.png")
    touch(out, "a.png", "sub/d.png", "z.jpg")
    pairing = discover_pairs(ref, out)
    assert keys(pairing) == ["a"]
    assert pairing.missing == [
        {"key": "b", "path": str(ref / "b.png")},
        {"key": "sub/c", "path": str(ref / "sub/c.png")},
    ]
    assert pairing.extra == [
        {"key": "sub/d", "path": str(out / "sub/d.png")},
        {"key": "z", "path": str(out / "z.jpg")},
    ]


def test_duplicates_are_reported_and_not_paired(dirs):
    ref, out = dirs
    touch(ref, "a.png", "a.jpg", "b.png", "c.png", "only_ref_dup.png", "only_ref_dup.bmp")
    touch(out, "a.png", "b.png", "b.tif", "c.png", "only_out_dup.png", "only_out_dup.jpeg")
    pairing = discover_pairs(ref, out)
    assert keys(pairing) == ["c"]
    ref_a = [str(ref / "a.jpg"), str(ref / "a.png")]
    ref_only = [str(ref / "only_ref_dup.bmp"), str(ref / "only_ref_dup.png")]
    assert pairing.duplicates == [
        {"side": "reference", "key": "a", "paths": ref_a, "references": ref_a},
        {
            "side": "output",
            "key": "b",
            "paths": [str(out / "b.png"), str(out / "b.tif")],
            "references": [str(ref / "b.png")],
        },
        {
            "side": "output",
            "key": "only_out_dup",
            "paths": [str(out / "only_out_dup.jpeg"), str(out / "only_out_dup.png")],
            "references": [],
        },
        {"side": "reference", "key": "only_ref_dup", "paths": ref_only, "references": ref_only},
    ]
    assert pairing.missing == []
    assert pairing.extra == []
    assert pairing.unscored_duplicates() == 3  # a, b, only_ref_dup: references without a row


def test_a_key_claimed_twice_on_both_sides_is_one_unscored_reference(dirs):
    ref, out = dirs
    touch(ref, "01.png", "01.jpg", "02.png")
    touch(out, "01.png", "01.jpg", "02.png")
    pairing = discover_pairs(ref, out)
    assert keys(pairing) == ["02"]
    assert [(d["side"], d["references"]) for d in pairing.duplicates] == [
        ("output", [str(ref / "01.jpg"), str(ref / "01.png")]),
        ("reference", [str(ref / "01.jpg"), str(ref / "01.png")]),
    ]
    assert pairing.unscored_duplicates() == 1


def test_duplicate_message_names_the_files_the_reference_and_what_to_do(dirs):
    ref, out = dirs
    touch(ref, "sub/01.png", "a.png", "a.jpg")
    touch(out, "sub/01.png", "sub/01.jpg", "x.png", "x.bmp")
    by_key = {d["key"]: d for d in discover_pairs(ref, out).duplicates}
    assert discover.duplicate_message(by_key["sub/01"]) == (
        f"key 'sub/01' not scored: 2 output files claim it ({out / 'sub/01.jpg'}, {out / 'sub/01.png'}) "
        f"for reference {ref / 'sub/01.png'}; remove or rename all but one."
    )
    assert discover.duplicate_message(by_key["a"]) == (
        f"key 'a' not scored: 2 reference files claim it ({ref / 'a.jpg'}, {ref / 'a.png'}); "
        "remove or rename all but one."
    )
    assert discover.duplicate_message(by_key["x"]) == (
        f"key 'x': 2 output files claim it ({out / 'x.bmp'}, {out / 'x.png'}) and no reference has it; "
        "remove or rename all but one."
    )


def test_reversed_sort_trap_pairs_by_name_not_index(dirs):
    ref, out = dirs
    touch(ref, *(f"{i}.png" for i in range(1, 11)))
    touch(out, *(f"{i:03d}_{11 - i}.png" for i in range(1, 11)))
    pairing = discover_pairs(ref, out, output_regex=r"\d+_(?P<key>\d+)")
    assert len(pairing.pairs) == 10
    for pair in pairing.pairs:
        assert Path(pair.ref_path).stem == pair.key
        assert Path(pair.out_path).stem.split("_")[1] == pair.key
    assert keys(pairing) == sorted(str(i) for i in range(1, 11))


def test_sorted_index_trap_without_mapping(dirs):
    ref, out = dirs
    touch(ref, *(f"{i}.png" for i in range(1, 11)))
    touch(out, *(f"{i}.jpg" for i in range(2, 12)))
    pairing = discover_pairs(ref, out)
    for pair in pairing.pairs:
        assert stem_key(ref, pair.ref_path) == stem_key(out, pair.out_path) == pair.key
    assert [m["key"] for m in pairing.missing] == ["1"]
    assert [e["key"] for e in pairing.extra] == ["11"]


# Names


def test_uppercase_extensions_and_case_sensitive_keys(dirs):
    ref, out = dirs
    touch(ref, "A.PNG", "b.JpEg")
    touch(out, "A.png", "b.TIFF")
    pairing = discover_pairs(ref, out)
    assert keys(pairing) == ["A", "b"]


def test_non_image_and_hidden_files_are_ignored(dirs):
    ref, out = dirs
    touch(ref, "a.png", "notes.txt", "README", ".hidden.png", ".cache/b.png", "sub/.DS_Store")
    touch(out, "a.png", "log.csv", ".c.png")
    pairing = discover_pairs(ref, out)
    assert keys(pairing) == ["a"]
    assert pairing.counts() == {"pairs": 1, "missing": 0, "extra": 0, "duplicates": 0, "skipped": 0}


def test_non_ascii_and_spaces(dirs):
    ref, out = dirs
    names = ["été 01.png", "日本/画像 2.png", "with  two spaces.png", "sub dir/ü.png"]
    touch(ref, *names)
    touch(out, *(n.replace(".png", ".jpg") for n in names))
    pairing = discover_pairs(ref, out)
    assert sorted(keys(pairing)) == sorted(n[:-4] for n in names)
    assert {p.group for p in pairing.pairs} == {"", "日本", "sub dir"}


def test_dots_in_stem_only_last_extension_is_removed(dirs):
    ref, out = dirs
    touch(ref, "img.v2.png", "dir.with.dots/x.png")
    touch(out, "img.v2.jpg", "dir.with.dots/x.png")
    assert keys(discover_pairs(ref, out)) == ["dir.with.dots/x", "img.v2"]


# Groups


@pytest.mark.parametrize(
    ("depth", "expected"),
    [
        (0, ["", "", "", ""]),
        (1, ["", "a", "a", "a"]),
        (2, ["", "a", "a/b", "a/b"]),
        (5, ["", "a", "a/b", "a/b/c"]),
    ],
)
def test_group_depth(dirs, depth, expected):
    ref, out = dirs
    names = ["top.png", "a/one.png", "a/b/two.png", "a/b/c/three.png"]
    touch(ref, *names)
    touch(out, *names)
    pairing = discover_pairs(ref, out, group_depth=depth)
    by_key = {p.key: p.group for p in pairing.pairs}
    assert [by_key[n[:-4]] for n in names] == expected


def test_negative_group_depth_is_rejected(dirs):
    with pytest.raises(ConfigError, match="group_depth"):
        discover_pairs(*dirs, group_depth=-1)


# Output name mappings


def test_output_suffix(dirs):
    ref, out = dirs
    touch(ref, "0001.png", "sub/0002.png", "0003.png")
    touch(out, "0001_x4_SR.png", "sub/0002_x4_SR.jpg", "0003.png", "_x4_SR.png")
    pairing = discover_pairs(ref, out, output_suffix="_x4_SR")
    assert keys(pairing) == ["0001", "sub/0002"]
    assert pairing.pairs[1].out_path == str(out / "sub/0002_x4_SR.jpg")
    assert pairing.missing == [{"key": "0003", "path": str(ref / "0003.png")}]
    assert sorted(e["path"] for e in pairing.extra) == [str(out / "0003.png"), str(out / "_x4_SR.png")]


def test_output_template(dirs):
    ref, out = dirs
    touch(ref, "baby.png", "sub/bird.png", "x.png")
    touch(out, "SR_baby_x4.png", "sub/SR_bird_x4.png", "x_x4.png")
    pairing = discover_pairs(ref, out, output_template="SR_{stem}_x4")
    assert keys(pairing) == ["baby", "sub/bird"]
    assert [m["key"] for m in pairing.missing] == ["x"]
    assert [e["key"] for e in pairing.extra] == ["x_x4"]


def test_output_template_with_regex_metacharacters(dirs):
    ref, out = dirs
    touch(ref, "a.png")
    touch(out, "a (x4+).png", "ab(x4+).png")
    pairing = discover_pairs(ref, out, output_template="{stem} (x4+)")
    assert keys(pairing) == ["a"]
    assert [e["key"] for e in pairing.extra] == ["ab(x4+)"]


def test_output_regex_named_and_first_group(dirs):
    ref, out = dirs
    touch(ref, "sub/0001.png", "sub/0002.png")
    touch(out, "run7/sub/0001_out.png", "run7/sub/0002_out.png", "notes/readme.png")
    named = discover_pairs(ref, out, output_regex=r"run\d+/(?P<key>.+)_out")
    first = discover_pairs(ref, out, output_regex=r"run\d+/(.+)_out")
    assert keys(named) == keys(first) == ["sub/0001", "sub/0002"]
    assert [e["key"] for e in named.extra] == ["notes/readme"]


def test_regex_that_merges_outputs_reports_a_duplicate(dirs):
    ref, out = dirs
    touch(ref, "a.png")
    touch(out, "up__a.png", "a.png")
    pairing = discover_pairs(ref, out, output_regex=r"(?:up__)?(?P<key>.*)")
    assert keys(pairing) == []
    assert pairing.duplicates == [
        {
            "side": "output",
            "key": "a",
            "paths": [str(out / "a.png"), str(out / "up__a.png")],
            "references": [str(ref / "a.png")],
        }
    ]
    assert pairing.missing == pairing.extra == []


def test_unmatched_output_is_extra_even_when_its_raw_key_is_a_reference_key(dirs):
    ref, out = dirs
    touch(ref, "a.png")
    touch(out, "a.png")
    for mapping in ({"output_suffix": "_SR"}, {"output_template": "{stem}_SR"}, {"output_regex": "up/(.+)"}):
        pairing = discover_pairs(ref, out, **mapping)
        assert keys(pairing) == []
        assert pairing.missing == [{"key": "a", "path": str(ref / "a.png")}]
        assert pairing.extra == [{"key": "a", "path": str(out / "a.png")}]


def test_regex_is_matched_against_the_whole_relative_key(dirs):
    ref, out = dirs
    touch(ref, "a.png")
    touch(out, "a_SR_extra.png")
    pairing = discover_pairs(ref, out, output_regex=r"(?P<key>.+)_SR")
    assert keys(pairing) == []
    assert [e["key"] for e in pairing.extra] == ["a_SR_extra"]


def test_regex_key_that_is_not_a_clean_relative_path_is_skipped(dirs):
    ref, out = dirs
    touch(ref, "sub/x.png")
    touch(out, "sub/x.png")
    pairing = discover_pairs(ref, out, output_regex=r"(?P<key>sub/)x")
    assert pairing.pairs == []
    assert [s["path"] for s in pairing.skipped] == [str(out / "sub/x.png")]
    assert "not a relative path" in pairing.skipped[0]["reason"]


def test_clean_key_rules():
    assert discover._is_clean_key("a/b c/d")
    for bad in ("", "../a", "a/../b", "/abs", "a//b", "a/", "./a", "a\\b"):
        assert not discover._is_clean_key(bad), bad


def test_mapped_key_with_parent_component_is_skipped(dirs, monkeypatch):
    ref, out = dirs
    touch(ref, "a.png")
    touch(out, "x.png")
    monkeypatch.setattr(discover, "_regex_mapper", lambda regex: lambda raw: "../a")
    pairing = discover_pairs(ref, out, output_regex="(.*)")
    assert pairing.pairs == []
    assert pairing.skipped == [{"path": str(out / "x.png"), "reason": pairing.skipped[0]["reason"]}]
    assert "not a relative path" in pairing.skipped[0]["reason"]


@pytest.mark.parametrize(
    "template",
    ["x4_SR", "{stem}_{stem}", "{name}_x4", "{stem:>4}", "{stem!r}", "{}_x4", "{stem", "sub/{stem}"],
)
def test_bad_template_raises_config_error(dirs, template):
    with pytest.raises(ConfigError, match="output_template"):
        discover_pairs(*dirs, output_template=template)


@pytest.mark.parametrize("regex", ["(unclosed", "no_group_here", "[a-"])
def test_bad_regex_raises_config_error_naming_it(dirs, regex):
    with pytest.raises(ConfigError, match="output_regex") as info:
        discover_pairs(*dirs, output_regex=regex)
    assert repr(regex) in str(info.value)


def test_suffix_with_separator_is_rejected(dirs):
    with pytest.raises(ConfigError, match="output_suffix"):
        discover_pairs(*dirs, output_suffix="/x4")


def test_two_mappings_are_rejected(dirs):
    with pytest.raises(ConfigError, match="only one"):
        discover_pairs(*dirs, output_suffix="_x4", output_template="{stem}_x4")


# Folder errors


def test_missing_folder(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(UsageError, match=r"Reference folder .*nope.* does not exist"):
        discover_pairs(tmp_path / "nope", tmp_path / "out")
    with pytest.raises(UsageError, match=r"Output folder .*nope.* does not exist"):
        discover_pairs(tmp_path / "out", tmp_path / "nope")


def test_folder_that_is_a_file(tmp_path):
    (tmp_path / "out").mkdir()
    touch(tmp_path, "file.png")
    with pytest.raises(UsageError, match="not a directory"):
        discover_pairs(tmp_path / "file.png", tmp_path / "out")


def test_same_folder(tmp_path):
    (tmp_path / "ref").mkdir()
    os.symlink(tmp_path / "ref", tmp_path / "alias")
    with pytest.raises(UsageError, match="same folder"):
        discover_pairs(tmp_path / "ref", tmp_path / "ref")
    with pytest.raises(UsageError, match="same folder"):
        discover_pairs(tmp_path / "ref", tmp_path / "alias")


def test_output_folder_nested_in_reference_folder_is_not_walked_as_references(tmp_path):
    ref = tmp_path / "data"
    touch(ref, "a.png", "sr/a.png")
    pairing = discover_pairs(ref, ref / "sr")
    assert keys(pairing) == ["a"]
    assert pairing.skipped == [{"path": str(ref / "sr"), "reason": pairing.skipped[0]["reason"]}]


# Odd file-system entries


def test_directory_named_like_an_image(dirs):
    ref, out = dirs
    touch(ref, "a.png", "x.png/inner.png")
    touch(out, "a.png", "x.png/inner.png")
    pairing = discover_pairs(ref, out)
    assert keys(pairing) == ["a", "x.png/inner"]
    assert [s["path"] for s in pairing.skipped] == [str(out / "x.png"), str(ref / "x.png")]
    assert all(s["reason"] == "is a directory, not an image file" for s in pairing.skipped)


def test_broken_symlink(dirs):
    ref, out = dirs
    touch(ref, "a.png", "b.png")
    touch(out, "a.png")
    os.symlink(out / "gone.png", out / "b.png")
    pairing = discover_pairs(ref, out)
    assert keys(pairing) == ["a"]
    assert [m["key"] for m in pairing.missing] == ["b"]
    assert len(pairing.skipped) == 1
    assert pairing.skipped[0]["path"] == str(out / "b.png")
    assert "broken symlink" in pairing.skipped[0]["reason"]


def test_symlinked_files_and_directories_are_followed(tmp_path):
    ref, out, shared = tmp_path / "ref", tmp_path / "out", tmp_path / "shared"
    touch(ref, "a.png", "set/b.png")
    touch(shared, "b.png")
    touch(tmp_path, "elsewhere/a.png")
    out.mkdir()
    os.symlink(tmp_path / "elsewhere/a.png", out / "a.png")
    os.symlink(shared, out / "set")
    pairing = discover_pairs(ref, out)
    assert keys(pairing) == ["a", "set/b"]
    assert pairing.pairs[1].out_path == str(out / "set/b.png")


@pytest.mark.timeout(20)
def test_symlink_loop_is_skipped_not_followed_forever(dirs):
    ref, out = dirs
    touch(ref, "sub/a.png")
    touch(out, "sub/a.png")
    os.symlink(ref, ref / "sub" / "loop")
    os.symlink(out / "sub", out / "sub" / "self")
    pairing = discover_pairs(ref, out)
    assert keys(pairing) == ["sub/a"]
    assert sorted(s["path"] for s in pairing.skipped) == [str(out / "sub/self"), str(ref / "sub/loop")]
    assert all("symlink loop" in s["reason"] for s in pairing.skipped)


def test_directory_reached_twice_is_walked_once(dirs):
    ref, out = dirs
    touch(ref, "real/a.png")
    touch(out, "real/a.png")
    os.symlink(ref / "real", ref / "alias")
    pairing = discover_pairs(ref, out)
    assert keys(pairing) == ["real/a"]
    assert [s["path"] for s in pairing.skipped] == [str(ref / "alias")]
    assert "already walked" in pairing.skipped[0]["reason"]


def test_unreadable_directory_is_skipped(dirs, monkeypatch):
    ref, out = dirs
    touch(ref, "a.png", "locked/b.png")
    touch(out, "a.png")
    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(discover.os, "scandir", scandir)
    pairing = discover_pairs(ref, out)
    assert keys(pairing) == ["a"]
    assert pairing.skipped == [
        {"path": str(ref / "locked"), "reason": "cannot read directory: Permission denied"}
    ]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any directory")
def test_unreadable_directory_real_permissions(dirs):
    ref, out = dirs
    touch(ref, "a.png", "locked/b.png")
    touch(out, "a.png")
    (ref / "locked").chmod(0)
    try:
        pairing = discover_pairs(ref, out)
    finally:
        (ref / "locked").chmod(0o755)
    assert [s["path"] for s in pairing.skipped] == [str(ref / "locked")]


# format_pairing


def test_format_pairing_counts_and_truncation(dirs):
    ref, out = dirs
    touch(ref, *(f"m{i:02d}.png" for i in range(25)), "p.png", "d.png", "d.jpg")
    touch(out, "p.png", "e1.png", "e2.png")
    text = format_pairing(discover_pairs(ref, out), limit=20)
    assert text.splitlines()[0] == "pairs: 1, missing: 25, extra: 2, duplicates: 1, skipped: 0"
    assert "... and 5 more" in text
    assert "m19" in text and "m20" not in text
    assert "e1: " + str(out / "e1.png") in text
    assert "d (reference)" in text
    assert "Skipped" not in text


def test_format_pairing_limit_zero_and_empty(dirs):
    ref, out = dirs
    assert (
        format_pairing(discover_pairs(ref, out))
        == "pairs: 0, missing: 0, extra: 0, duplicates: 0, skipped: 0"
    )
    touch(ref, "a.png", "b.png")
    touch(out, "a.png")
    text = format_pairing(discover_pairs(ref, out), limit=0)
    assert "  ... and 1 more" in text
    assert str(ref / "b.png") not in text
    with pytest.raises(UsageError):
        format_pairing(Pairing(), limit=-1)


# Property


segment = st.text(alphabet="abcXYZ019 _-é", min_size=1, max_size=6)
key_names = st.lists(segment, min_size=1, max_size=2).map("/".join)
extensions = st.sampled_from([".png", ".jpg", ".PNG", ".bmp"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ref_files=st.lists(st.tuples(key_names, extensions), max_size=12),
    out_files=st.lists(st.tuples(key_names, extensions), max_size=12),
    suffix=st.sampled_from([None, "_SR"]),
)
def test_pairs_match_by_key_property(tmp_path_factory, ref_files, out_files, suffix):
    root = tmp_path_factory.mktemp("prop")
    ref, out = root / "ref", root / "out"
    ref.mkdir()
    out.mkdir()
    created_ref: dict[str, set[str]] = {}
    for key, ext in ref_files:
        touch(ref, key + ext)
        created_ref.setdefault(key, set()).add(str(ref / (key + ext)))
    created_out: dict[str, set[str]] = {}
    for key, ext in out_files:
        name = key + (suffix or "") + ext
        touch(out, name)
        created_out.setdefault(key, set()).add(str(out / name))

    pairing = discover_pairs(ref, out, output_suffix=suffix)

    strip = len(suffix or "")
    for pair in pairing.pairs:
        ref_stem = stem_key(ref, pair.ref_path)
        out_stem = stem_key(out, pair.out_path)
        assert ref_stem == pair.key
        assert (out_stem[:-strip] if strip else out_stem) == pair.key
    duplicate_keys = {d["key"] for d in pairing.duplicates}
    expected_duplicates = {
        k for side in (created_ref, created_out) for k, paths in side.items() if len(paths) > 1
    }
    assert duplicate_keys == expected_duplicates
    assert pairing.unscored_duplicates() == len(set(created_ref) & duplicate_keys)
    paired = {p.key for p in pairing.pairs}
    assert paired | {m["key"] for m in pairing.missing} == set(created_ref) - duplicate_keys
    assert paired == (set(created_ref) & set(created_out)) - duplicate_keys

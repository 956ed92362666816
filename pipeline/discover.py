"""Walk a reference folder and an output folder and pair their images by key, never by sorted index.

A key is a file's path relative to its root, POSIX separators, without the extension (`sub/0001`), so
`ref/sub/0001.png` pairs with `out/sub/0001.jpg`. An optional name mapping (a suffix, a `{stem}` template
or a regex) turns output names into keys. Whatever does not become a pair is reported, not hidden:
references without output (`missing`), outputs without reference (`extra`), keys that two files on one
side map to (`duplicates`), and entries that were seen but cannot be used (`skipped`).

Example:
    >>> pairing = discover_pairs("data/ref", "data/sr", output_suffix="_x4_SR")  # doctest: +SKIP
    >>> print(format_pairing(pairing))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import string
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from pipeline.errors import ConfigError, UsageError
from pipeline.images import image_extension
from pipeline.locations import StorageOptions, is_url, locate
from pipeline.pair_columns import FileTable, Pair, PairList

KeyMapper = Callable[[str], "str | None"]


@dataclass
class Pairing:
    """The result of pairing two folders: pairs plus everything that did not become a pair.

    Attributes:
        pairs: Pairs sorted by key, kept as columns (`pipeline.pair_columns.PairList`; a list given is
            converted), so that a million pairs take tens of MB.
        missing: `{'key', 'path'}` for references without output, sorted by key.
        extra: `{'key', 'path'}` for outputs without reference, sorted by key.
        duplicates: `{'side', 'key', 'paths', 'references'}` for keys that two or more files on one side
            map to; such keys are neither paired nor reported as missing or extra. `references` are the
            reference files the duplicate leaves unscored: `paths` on the reference side, the reference
            with that key (or none) on the output side.
        skipped: `{'path', 'reason'}` for entries seen but not usable (a directory named like an image,
            a broken symlink, a symlink loop, an unreadable directory).
    """

    pairs: Sequence[Pair] = field(default_factory=list)
    missing: list[dict] = field(default_factory=list)
    extra: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.pairs, PairList):
            self.pairs = PairList.from_pairs(self.pairs)

    def unscored_duplicates(self) -> int:
        """Number of reference keys left unscored because two or more files (on either side) claim them."""
        return len({d["key"] for d in self.duplicates if d["references"]})

    def counts(self) -> dict[str, int]:
        """Number of entries in each list, keyed by list name."""
        return {
            "pairs": len(self.pairs),
            "missing": len(self.missing),
            "extra": len(self.extra),
            "duplicates": len(self.duplicates),
            "skipped": len(self.skipped),
        }


def discover_pairs(
    ref_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    output_suffix: str | None = None,
    output_template: str | None = None,
    output_regex: str | None = None,
    group_depth: int = 1,
    storage_options: StorageOptions | None = None,
) -> Pairing:
    """Pair the images under `ref_dir` with those under `out_dir` by key.

    Both folders are walked recursively (symlinks followed, loops detected); hidden entries and files
    without an image extension are ignored. A folder may be a URL (`s3://bucket/ref`): it is listed through
    fsspec, and its pairs carry URLs instead of paths.

    Args:
        ref_dir: Folder of reference images, a path or a URL.
        out_dir: Folder of output images, a path or a URL.
        output_suffix: Output stem = reference stem + suffix (`_x4_SR`).
        output_template: Output stem as a template with one `{stem}` placeholder (`{stem}_x4_SR`).
        output_regex: Regex that must match an output's whole relative path without extension; its group
            `key` (or its first group) is the key.
        group_depth: Number of leading directory components of a key that form its group.
        storage_options: options of the file system of a URL folder.

    Returns:
        The pairing, every list sorted.

    Raises:
        UsageError: A folder is missing or not a directory, or both are the same folder.
        StorageError: a store refuses the listing (bucket, credentials, access), naming the URL.
        ConfigError: More than one mapping, a bad template or regex, or a negative `group_depth`.
    """
    if not isinstance(group_depth, int) or group_depth < 0:
        raise ConfigError(f"group_depth must be a non-negative integer, got {group_depth!r}.")
    mapper = _output_mapper(output_suffix, output_template, output_regex)
    skipped: list[dict] = []
    if is_url(ref_dir) or is_url(out_dir):
        if locate(ref_dir, storage_options).url == locate(out_dir, storage_options).url:
            raise UsageError(
                f"Reference folder {ref_dir} and output folder {out_dir} are the same folder; "
                "pass the folder of model outputs as the second argument."
            )
        ref_files = list_url_images(ref_dir, "Reference", storage_options)
        out_files = list_url_images(out_dir, "Output", storage_options)
        return pair_files(ref_files, out_files, skipped, mapper, group_depth)
    ref_root = _check_folder(ref_dir, "Reference")
    out_root = _check_folder(out_dir, "Output")
    ref_real, out_real = os.path.realpath(ref_root), os.path.realpath(out_root)
    if ref_real == out_real:
        raise UsageError(
            f"Reference folder {ref_root} and output folder {out_root} are the same folder ({ref_real}); "
            "pass the folder of model outputs as the second argument."
        )
    ref_files = _walk(ref_root, ref_real, out_real, skipped)
    out_files = _walk(out_root, out_real, ref_real, skipped)
    return pair_files(ref_files, out_files, skipped, mapper, group_depth)


def pair_files(
    ref_files: Iterable[tuple[str, str]],
    out_files: Iterable[tuple[str, str]],
    skipped: list[dict],
    mapper: KeyMapper | None,
    group_depth: int,
) -> Pairing:
    """Pair two listings of `(relative POSIX path, path or URL)` by key (read as they come); `skipped` holds
    what the listings could not use (more is appended)."""
    refs, _ = _index(ref_files, None, skipped)
    outs, unmatched = _index(out_files, mapper, skipped)
    duplicates = _duplicates(refs, outs)
    duplicate_keys = {d["key"] for d in duplicates}
    refs, outs = refs.without(duplicate_keys), outs.without(duplicate_keys)

    output_row = refs.matching_rows(outs)
    by_key = refs.key_order()
    paired, unpaired = by_key[output_row[by_key] >= 0], by_key[output_row[by_key] < 0]
    missing = refs.take(unpaired).entries()
    extra_rows = np.ones(len(outs), dtype=bool)
    extra_rows[output_row[paired]] = False
    extra = outs.take(extra_rows).entries()
    refs = refs.take(paired)
    pairs = PairList.join(refs, outs.take(output_row[paired]), partial(_group, depth=group_depth))
    extra.extend(unmatched)
    extra.sort(key=lambda e: (e["key"], e["path"]))
    skipped.sort(key=lambda s: s["path"])
    return Pairing(pairs=pairs, missing=missing, extra=extra, duplicates=duplicates, skipped=skipped)


def format_pairing(pairing: Pairing, *, limit: int = 20) -> str:
    """Human-readable text for `iqa pairs`: a counts line, then the first `limit` entries of each list.

    Args:
        pairing: Result of `discover_pairs`.
        limit: Entries shown per list; the rest are summarised as `... and N more`.

    Returns:
        Text without a trailing newline.
    """
    if limit < 0:
        raise UsageError(f"limit must be >= 0, got {limit}.")
    lines = [", ".join(f"{name}: {count}" for name, count in pairing.counts().items())]
    sections = [
        ("Pairs", pairing.pairs, lambda p: f"{p.key}: {p.ref_path} -> {p.out_path}"),
        ("Missing outputs (reference without output)", pairing.missing, lambda m: f"{m['key']}: {m['path']}"),
        ("Extra outputs (output without reference)", pairing.extra, lambda e: f"{e['key']}: {e['path']}"),
        (
            "Duplicate keys (not paired)",
            pairing.duplicates,
            lambda d: f"{d['key']} ({d['side']}): {', '.join(d['paths'])}",
        ),
        ("Skipped", pairing.skipped, lambda s: f"{s['path']}: {s['reason']}"),
    ]
    for title, items, describe in sections:
        if not items:
            continue
        lines.append("")
        lines.append(f"{title} ({len(items)}):")
        lines.extend(f"  {describe(item)}" for item in items[:limit])
        if len(items) > limit:
            lines.append(f"  ... and {len(items) - limit} more")
    return "\n".join(lines)


def duplicate_message(duplicate: dict) -> str:
    """One line on a key that two or more files claim: which files, what is not scored, what to do.

    Args:
        duplicate: An entry of `Pairing.duplicates` (or of manifest.json's `duplicates`).

    Example:
        >>> duplicate_message({"side": "reference", "key": "a", "paths": ["a.jpg", "a.png"]})
        "key 'a' not scored: 2 reference files claim it (a.jpg, a.png); remove or rename all but one."
    """
    side, paths = duplicate["side"], duplicate["paths"]
    references = duplicate.get("references") or []
    claim = f"{len(paths)} {side} files claim it ({', '.join(paths)})"
    if side == "reference":
        return f"key {duplicate['key']!r} not scored: {claim}; remove or rename all but one."
    if references:
        return (
            f"key {duplicate['key']!r} not scored: {claim} for reference {', '.join(references)}; "
            "remove or rename all but one."
        )
    return f"key {duplicate['key']!r}: {claim} and no reference has it; remove or rename all but one."


def walk_images(
    folder: str | os.PathLike[str], what: str = "Image"
) -> tuple[list[tuple[str, str]], list[dict]]:
    """Every image file under `folder`, as `discover_pairs` walks it: recursive, hidden entries ignored,
    symlinks followed with loops detected.

    Returns:
        ([(relative POSIX path, absolute path)] sorted by relative path, [{'path', 'reason'}] skipped).

    Raises:
        UsageError: the folder does not exist or is not a directory (`what` names it: 'Reference', ...).
    """
    root = _check_folder(folder, what)
    skipped: list[dict] = []
    files = _walk(root, os.path.realpath(root), "", skipped)
    return sorted(files), skipped


def list_url_images(
    folder: str, what: str, storage_options: StorageOptions | None = None
) -> Iterator[tuple[str, str]]:
    """Every image file below a folder URL (or a plain path, listed through fsspec the same way), as
    `(relative POSIX path, URL)` in relative path order; entries with a hidden component are ignored.

    Raises:
        UsageError: the folder does not exist (`what` names it: 'Reference', ...).
        StorageError: the store refuses the listing.
    """
    root = locate(folder, storage_options)
    if not root.is_dir():
        raise UsageError(
            f"{what} folder {root} does not exist or holds no files; pass an existing folder of images."
        )
    for relative, url in root.find():
        if image_extension(relative) and not any(part.startswith(".") for part in relative.split("/")):
            yield relative, url


def _check_folder(path: str | os.PathLike[str], what: str) -> str:
    text = os.path.abspath(os.fspath(path))
    if not os.path.exists(text):
        raise UsageError(f"{what} folder {text} does not exist; pass an existing folder of images.")
    if not os.path.isdir(text):
        raise UsageError(f"{what} folder {text} is not a directory; pass a folder of images, not a file.")
    return text


def _walk(root: str, root_real: str, exclude_real: str, skipped: list[dict]) -> Iterator[tuple[str, str]]:
    """Yield `(relative POSIX path, absolute path)` of every image file under `root`, as it is listed.

    Real directories are walked first and symlinked ones afterwards, so a directory reachable both ways
    is walked once under its real name. Problems are appended to `skipped`.
    """
    visited = {root_real}
    stack: list[tuple[str, str, str]] = [(root, "", root_real)]
    links: deque[tuple[str, str, str]] = deque()
    while stack or links:
        if not stack:
            path, rel, parent_real = links.popleft()
            real = os.path.realpath(path)
            if _enter(path, real, parent_real, visited, exclude_real, skipped):
                stack.append((path, rel, real))
            continue
        dir_path, dir_rel, dir_real = stack.pop()
        directories: list[os.DirEntry[str]] = []
        try:
            with os.scandir(dir_path) as iterator:
                for entry in iterator:
                    if entry.name.startswith("."):
                        continue
                    if _is_dir(entry):
                        directories.append(entry)
                    elif _is_image_file(entry, skipped):
                        yield f"{dir_rel}/{entry.name}" if dir_rel else entry.name, entry.path
        except OSError as exc:
            skipped.append({"path": dir_path, "reason": f"cannot read directory: {exc.strerror or exc}"})
            continue
        subdirs: list[tuple[str, str, str]] = []
        for entry in sorted(directories, key=lambda e: e.name):
            name = entry.name
            rel = f"{dir_rel}/{name}" if dir_rel else name
            if image_extension(name):
                skipped.append({"path": entry.path, "reason": "is a directory, not an image file"})
            if entry.is_symlink():
                links.append((entry.path, rel, dir_real))
            else:
                real = os.path.join(dir_real, name)
                if _enter(entry.path, real, dir_real, visited, exclude_real, skipped):
                    subdirs.append((entry.path, rel, real))
        stack.extend(reversed(subdirs))


def _is_image_file(entry: os.DirEntry[str], skipped: list[dict]) -> bool:
    """Whether a directory entry that is not a directory is an image file to pair; an entry named like an
    image that cannot be one (a broken symlink, a device) is appended to `skipped`."""
    is_image_name = bool(image_extension(entry.name))
    if _is_file(entry):
        return is_image_name
    if entry.is_symlink() and not os.path.exists(entry.path):
        skipped.append({"path": entry.path, "reason": f"broken symlink to {_readlink(entry.path)}"})
    elif is_image_name:
        skipped.append({"path": entry.path, "reason": "not a regular file"})
    return False


def _enter(
    path: str, real: str, parent_real: str, visited: set[str], exclude_real: str, skipped: list[dict]
) -> bool:
    """Decide whether to walk the directory at `path` (resolving to `real`); record why not."""
    if real == exclude_real:
        skipped.append({"path": path, "reason": "is the other folder of the pairing; not walked"})
        return False
    if real in visited:
        if parent_real == real or parent_real.startswith(real.rstrip(os.sep) + os.sep):
            reason = f"symlink loop: points to its own ancestor {real}"
        else:
            reason = f"directory {real} already walked under another name"
        skipped.append({"path": path, "reason": reason})
        return False
    visited.add(real)
    return True


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "an unreadable target"


def _index(
    files: Iterable[tuple[str, str]], mapper: KeyMapper | None, skipped: list[dict]
) -> tuple[FileTable, list[dict]]:
    """The files with their keys, read from `files` as they come; also the files the mapping rejects.

    A rejected output is listed under its raw key and never paired, even if a reference has that key.
    """
    unmatched: list[dict] = []
    return FileTable.build(_keyed(files, mapper, skipped, unmatched)), unmatched


def _keyed(
    files: Iterable[tuple[str, str]], mapper: KeyMapper | None, skipped: list[dict], unmatched: list[dict]
) -> Iterator[tuple[str, str]]:
    """`(key, path)` of each file that has a key; the others are appended to `skipped` or `unmatched`."""
    for rel, path in files:
        raw_key = _raw_key(rel)
        if raw_key is None:
            reason = "file name is not valid UTF-8; rename the file"
            skipped.append({"path": _printable(path), "reason": reason})
            continue
        if not _is_clean_key(raw_key):
            reason = "path contains a backslash, which a key cannot hold (keys use '/'); rename it"
            skipped.append({"path": path, "reason": reason})
            continue
        key = raw_key
        if mapper is not None:
            mapped = mapper(raw_key)
            if mapped is None:
                unmatched.append({"key": raw_key, "path": path})
                continue
            if not _is_clean_key(mapped):
                reason = f"output mapping turned {raw_key!r} into {mapped!r}, which is not a relative path"
                skipped.append({"path": path, "reason": reason})
                continue
            key = mapped
        yield key, path


def _duplicates(refs: FileTable, outs: FileTable) -> list[dict]:
    """`{'side', 'key', 'paths', 'references'}` of every key two or more files of one side claim, sorted by
    key and side; see `Pairing.duplicates`."""
    claimed = {"reference": refs.duplicate_keys(), "output": outs.duplicate_keys()}
    every_key = set().union(*claimed.values())
    if not every_key:
        return []
    references = _paths_by_key(refs, every_key)
    duplicates = []
    for side, table in (("reference", refs), ("output", outs)):
        for key, paths in _paths_by_key(table, claimed[side]).items():
            unscored = sorted(references.get(key, []))
            duplicates.append({"side": side, "key": key, "paths": sorted(paths), "references": unscored})
    return sorted(duplicates, key=lambda d: (d["key"], d["side"]))


def _paths_by_key(files: FileTable, keys: set[str]) -> dict[str, list[str]]:
    """{key: paths of the rows with that key} for the given keys."""
    found: dict[str, list[str]] = {}
    for entry in files.with_keys(keys).entries():
        found.setdefault(entry["key"], []).append(entry["path"])
    return found


def _printable(path: str) -> str:
    """`path` with undecodable bytes (surrogate escapes) shown as `\\xff`, so it can be printed and saved."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _raw_key(rel: str) -> str | None:
    """Relative path without extension, NFC-normalised; None for names that are not valid UTF-8."""
    key = rel[: len(rel) - len(image_extension(rel))] if image_extension(rel) else os.path.splitext(rel)[0]
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            return None
        key = unicodedata.normalize("NFC", key)
    return key


def _is_clean_key(key: str) -> bool:
    if not key or key.startswith("/") or "\\" in key:
        return False
    return all(part not in ("", ".", "..") for part in key.split("/"))


def _group(key: str, depth: int) -> str:
    return "/".join(key.split("/")[:-1][:depth])


def _output_mapper(suffix: str | None, template: str | None, regex: str | None) -> KeyMapper | None:
    """Build the function from an output's raw key to its key; it returns None when the name does not fit."""
    given = [name for name, value in (("suffix", suffix), ("template", template), ("regex", regex)) if value]
    if len(given) > 1:
        raise ConfigError(
            f"Use only one of output_suffix, output_template and output_regex; got {' and '.join(given)}."
        )
    if suffix:
        return _stem_mapper(_suffix_pattern(suffix))
    if template:
        return _stem_mapper(_template_pattern(template))
    if regex:
        return _regex_mapper(regex)
    return None


def _suffix_pattern(suffix: str) -> re.Pattern[str]:
    if "/" in suffix or "\\" in suffix:
        raise ConfigError(
            f"output_suffix {suffix!r} contains a path separator; it applies to file names only."
        )
    return re.compile("(?P<stem>.+)" + re.escape(unicodedata.normalize("NFC", suffix)), re.DOTALL)


def _template_pattern(template: str) -> re.Pattern[str]:
    hint = "use exactly one {stem}, e.g. '{stem}_x4_SR'"
    if "/" in template or "\\" in template:
        raise ConfigError(
            f"output_template {template!r} contains a path separator; it applies to file names only."
        )
    try:
        parts = list(string.Formatter().parse(unicodedata.normalize("NFC", template)))
    except ValueError as exc:
        raise ConfigError(f"output_template {template!r} is not a valid template ({exc}); {hint}.") from exc
    fields = [(name, spec, conversion) for _, name, spec, conversion in parts if name is not None]
    if fields != [("stem", "", None)]:
        raise ConfigError(f"output_template {template!r} must contain {{stem}} and no other field; {hint}.")
    pattern = "".join(
        re.escape(literal) + ("(?P<stem>.+)" if name is not None else "") for literal, name, _, _ in parts
    )
    return re.compile(pattern, re.DOTALL)


def _stem_mapper(pattern: re.Pattern[str]) -> KeyMapper:
    def mapper(raw_key: str) -> str | None:
        directory, _, stem = raw_key.rpartition("/")
        match = pattern.fullmatch(stem)
        if match is None:
            return None
        return f"{directory}/{match['stem']}" if directory else match["stem"]

    return mapper


def _regex_mapper(regex: str) -> KeyMapper:
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"output_regex {regex!r} is not a valid regular expression: {exc}.") from exc
    if pattern.groups == 0:
        raise ConfigError(
            f"output_regex {regex!r} has no group; mark the key with (?P<key>...), e.g. '(?P<key>.+)_x4_SR'."
        )
    group: str | int = "key" if "key" in pattern.groupindex else 1

    def mapper(raw_key: str) -> str | None:
        match = pattern.fullmatch(raw_key)
        if match is None:
            return None
        return match[group] or None

    return mapper

"""What a pairing that matched few references suggests: an option that maps output names, another folder.

Pure: looks only at the keys and paths of a `Pairing` (missing references, extra outputs), reads no file.
Hints are given when fewer than half of the references found an output:

- most missing references match extra outputs after removing a common suffix or prefix from the outputs'
  names (`01_x4_SR.png` for `01.png`): `--output-suffix _x4_SR` or `--output-template 'SR_{stem}'`;
- outputs that carry a second extension (`01.png.jpg` for `01.png`): `--output-suffix .png`;
- keys that match one folder level off (`out/x4/01.png` for `ref/01.png`): the folder to pass instead;
- nothing matches at all: what a key is, with one key of each side, or that the output folder holds no image.

Example:
    >>> from pipeline.discover import Pairing
    >>> pairing = Pairing(missing=[{"key": "01", "path": "/r/01.png"}],
    ...                   extra=[{"key": "01_SR", "path": "/o/01_SR.png"}])
    >>> pairing_hints(pairing)
    ["1 of 1 missing references match extra outputs named with the suffix '_SR' (e.g. /o/01_SR.png for /r/01.png): add --output-suffix _SR."]
"""  # noqa: E501

from __future__ import annotations

import os
import shlex
import unicodedata
from pathlib import PurePath

from pipeline.discover import Pairing
from pipeline.images import IMAGE_EXTENSIONS, image_extension

Match = tuple[str, str]  # (missing reference path, extra output path) of one example


def pairing_hints(pairing: Pairing) -> list[str]:
    """Suggestions for a pairing where fewer than half of the references found an output; [] otherwise.

    Args:
        pairing: Result of `pipeline.discover.discover_pairs` (only `pairs`, `missing`, `extra` are read).

    Returns:
        One sentence per hint, each naming an example and the option or folder to use.
    """
    missing, extra = pairing.missing, pairing.extra
    if not missing or len(pairing.pairs) >= len(missing):
        return []
    hints = [hint for hint in (_name_hint(missing, extra), _folder_hint(missing, extra)) if hint]
    if not hints and not pairing.pairs:
        hints.append(_nothing_matches_hint(missing, extra))
    return hints


def _name_hint(missing: list[dict], extra: list[dict]) -> str | None:
    """A common suffix, prefix or second extension that, removed from extra outputs, gives missing keys."""
    wanted = {_split(m["key"]): m["path"] for m in missing}
    suffixes: dict[str, dict[str, Match]] = {}
    prefixes: dict[str, dict[str, Match]] = {}
    for entry in extra:
        directory, stem = _split(entry["key"])[0], _file_stem(entry["path"])
        for cut in range(1, len(stem)):
            head, tail = (directory, stem[:cut]), (directory, stem[cut:])
            if head in wanted:
                suffixes.setdefault(stem[cut:], {})[wanted[head]] = (wanted[head], entry["path"])
            if tail in wanted:
                prefixes.setdefault(stem[:cut], {})[wanted[tail]] = (wanted[tail], entry["path"])
    suffix, prefix = _most_common(suffixes), _most_common(prefixes)
    if suffix and (not prefix or len(suffixes[suffix]) >= len(prefixes[prefix])):
        matches = suffixes[suffix]
        if not _enough(matches, missing):
            return None
        if suffix.lower() in IMAGE_EXTENSIONS:
            what = f"with a second extension {suffix!r}"
            todo = f"add {_option('--output-suffix', suffix)}, or rename the outputs"
        else:
            what, todo = f"named with the suffix {suffix!r}", f"add {_option('--output-suffix', suffix)}"
        return _sentence(matches, missing, f"extra outputs {what}", todo)
    if prefix and _enough(prefixes[prefix], missing):
        todo = f"add {_option('--output-template', prefix + '{stem}')}"
        return _sentence(prefixes[prefix], missing, f"extra outputs named with the prefix {prefix!r}", todo)
    return None


def _folder_hint(missing: list[dict], extra: list[dict]) -> str | None:
    """Keys that match after dropping the first folder of an output's key, or of a reference's key."""
    references = {m["key"]: m["path"] for m in missing}
    outputs = {e["key"]: e["path"] for e in extra}
    deeper = _one_level_off(outputs, references)
    shallower = _one_level_off(references, outputs)
    if deeper and (not shallower or len(deeper[2]) >= len(shallower[2])):
        folder, key, pairs = deeper
        matches = {reference: (reference, output) for output, reference in pairs}
        where = _top_folder(pairs[0][0], key)
        todo = f"pass {where} as the output folder" if where else f"point OUT_DIR at its folder {folder!r}"
        what = f"extra outputs one folder deeper, under {folder!r}"
    elif shallower:
        folder, key, pairs = shallower
        matches = {reference: (reference, output) for reference, output in pairs}
        where = _top_folder(pairs[0][0], key)
        todo = f"pass {where} as the reference folder" if where else f"point REF_DIR at its folder {folder!r}"
        what = f"extra outputs one folder up (the references are under {folder!r})"
    else:
        return None
    return _sentence(matches, missing, what, todo) if _enough(matches, missing) else None


def _one_level_off(deep: dict[str, str], shallow: dict[str, str]) -> tuple[str, str, list[Match]] | None:
    """The first folder under which the most keys of `deep`, without that folder, are keys of `shallow`.

    Args:
        deep, shallow: {key: path} of one side each.

    Returns:
        (folder, one such key of `deep`, [(deep path, shallow path)] sorted), or None when no key matches.
    """
    found: dict[str, dict[str, Match]] = {}
    for key, path in deep.items():
        folder, _, rest = key.partition("/")
        if rest and rest in shallow:
            found.setdefault(folder, {})[key] = (path, shallow[rest])
    folder = _most_common(found)
    if folder is None:
        return None
    key = min(found[folder])
    return folder, key, [found[folder][key], *sorted(v for k, v in found[folder].items() if k != key)]


def _nothing_matches_hint(missing: list[dict], extra: list[dict]) -> str:
    if not extra:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        return (
            f"no output image was found for the {len(missing)} references: the output folder holds no file "
            f"with an image extension ({extensions}); check that OUT_DIR is the folder of model outputs."
        )
    return (
        f"no output matches a reference: a key is the path relative to its folder without the extension, "
        f"e.g. reference {missing[0]['key']!r} ({missing[0]['path']}) and output {extra[0]['key']!r} "
        f"({extra[0]['path']}); map output names with --output-suffix, --output-template or --output-regex."
    )


def _sentence(matches: dict[str, Match], missing: list[dict], what: str, todo: str) -> str:
    reference, output = next(iter(sorted(matches.values())))
    return (
        f"{len(matches)} of {len(missing)} missing references match {what} "
        f"(e.g. {output} for {reference}): {todo}."
    )


def _enough(matches: dict[str, Match], missing: list[dict]) -> bool:
    """At least half of the missing references would find their output."""
    return 2 * len(matches) >= len(missing)


def _most_common(candidates: dict[str, dict[str, Match]]) -> str | None:
    """The candidate matching the most references; ties go to the shortest, then the first in order."""
    if not candidates:
        return None
    return min(candidates, key=lambda name: (-len(candidates[name]), len(name), name))


def _split(key: str) -> tuple[str, str]:
    directory, _, stem = key.rpartition("/")
    return directory, stem


def _file_stem(path: str) -> str:
    """A file's name without its image extension, NFC-normalised as keys are."""
    name = os.path.basename(path)
    return unicodedata.normalize("NFC", name[: len(name) - len(image_extension(name))])


def _top_folder(path: str, key: str) -> str | None:
    """The folder holding `path` just below its root (the first folder of `key`), when the path shows it."""
    parents = PurePath(path).parents
    depth = key.count("/") - 1
    if depth < 0 or depth >= len(parents) or parents[depth].name != key.partition("/")[0]:
        return None
    return str(parents[depth])


def _option(name: str, value: str) -> str:
    """`--name value` quoted for a shell; `--name=value` when the value starts with '-'."""
    quoted = shlex.quote(value)
    return f"{name}={quoted}" if value.startswith("-") else f"{name} {quoted}"

"""The checks on run directories, for every command: claiming one to write into, and requiring one to read.

Example:
    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> claim_run_dir(run, ("manifest.json",)).url == str(run)
    True
    >>> (run / "manifest.json").write_text("{}")
    2
    >>> claim_run_dir(run, ("manifest.json",))
    Traceback (most recent call last):
    ...
    pipeline.errors.RunDirError: ... already holds a run (manifest.json). Pass --overwrite ...
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pipeline.errors import RunDirError, UsageError
from pipeline.locations import Location, StorageOptions, locate

MANIFEST_NAME = "manifest.json"
SCORES_DIR = "scores"
SUPERSEDED_DIR = "superseded"  # parts whose rows a later `--resume` replaced (`retire_superseded_rows`)
REPORT_NAME = "report.html"

RunDir = str | Path | Location  # a run directory as commands take it: a path, a URL or a Location


def _present(run_dir: Location, names: tuple[str, ...]) -> list[str]:
    """The entries of `names` that exist in `run_dir` (a folder counts when it holds something)."""
    found = []
    for name in names:
        entry = run_dir.child(name)
        if entry.is_file() or entry.names():
            found.append(name)
    return found


def claim_run_dir(
    run_dir: RunDir,
    outputs: tuple[str, ...],
    *,
    resume: bool | None = None,
    overwrite: bool = False,
    inputs: Mapping[str, RunDir] | None = None,
    storage_options: StorageOptions | None = None,
) -> Location:
    """Make `run_dir` ready to write `outputs` into, refusing to clobber an earlier run by accident.

    Args:
        run_dir: the run directory, a path or a URL (created with its parents on a local disk).
        outputs: the files and folders a run writes there; any present means the folder holds a run.
        resume: None where the command cannot resume; else whether `--resume` was given.
        overwrite: remove the `outputs` present before writing.
        inputs: {role: folder} the run reads; the run directory must not lie inside them.
        storage_options: options of the file system of a URL.

    Returns:
        The run directory's Location.

    Raises:
        UsageError: contradicting options, or the run directory inside an input folder.
        RunDirError: it holds a run (without --resume or --overwrite), is a file, or cannot be written.
        StorageError: the store refuses (missing bucket, credentials, access), naming the URL.
    """
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other: pick one.")
    target = locate(run_dir, storage_options)
    if target.read_only:
        raise UsageError(f"{target} is read-only (http/https); write the run to a folder or a bucket.")
    for role, folder in (inputs or {}).items():
        if _inside(target, locate(folder, storage_options)):
            raise UsageError(
                f"The run directory {target} is inside the {role} folder {folder}; "
                "its files would be scored. "
                "Choose a run directory outside both input folders."
            )
    if target.is_file():
        raise RunDirError(f"{target} exists and is not a directory. Choose another -o directory.")
    found = _present(target, outputs)
    if found and not (resume or overwrite):
        options = (
            "Pass --resume to continue it, --overwrite to replace it"
            if resume is not None
            else ("Pass --overwrite to replace them")
        )
        raise RunDirError(
            f"{target} already holds a run ({', '.join(found)}). {options}, or choose another -o directory."
        )
    if overwrite:
        for name in found:
            target.child(name).remove()
    _check_writable(target)
    return target


def _inside(run_dir: Location, folder: Location) -> bool:
    """Whether `run_dir` is `folder` or lies below it (symlinks resolved on a local disk)."""
    if run_dir.local != folder.local or run_dir.fs.protocol != folder.fs.protocol:
        return False
    if run_dir.local:
        resolved, root = Path(run_dir.path).resolve(), Path(folder.path).resolve()
        return resolved == root or root in resolved.parents
    inner, outer = run_dir.path.rstrip("/"), folder.path.rstrip("/")
    return inner == outer or inner.startswith(outer + "/")


def _check_writable(run_dir: Location) -> None:
    """Create the folder and write and delete a probe file, so that a run fails here and not after scoring."""
    try:
        if run_dir.local:
            os.makedirs(run_dir.path, exist_ok=True)
            probe = Path(run_dir.path, ".write-test")
            probe.write_bytes(b"")
            probe.unlink()
        else:
            probe_location = run_dir.child(".write-test")
            probe_location.write_text("")
            probe_location.remove()
    except OSError as exc:
        check = "Check permissions and free space." if run_dir.local else "Check the bucket and your access."
        raise RunDirError(f"Cannot write into {run_dir}: {exc.strerror or exc}. {check}") from exc


def require_run_dir(path: RunDir, role: str, storage_options: StorageOptions | None = None) -> Location:
    """Check that `path` holds a run written by `iqa score` (a manifest or score parts); returns its Location.

    Raises:
        UsageError: naming the folder, its role ('baseline', 'candidate', 'run') and what to pass instead.
    """
    run_dir = locate(path, storage_options)
    if not run_dir.is_dir():
        raise UsageError(
            f"The {role} run directory {run_dir} does not exist. Pass a folder written by `iqa score`."
        )
    if not run_dir.child(MANIFEST_NAME).is_file() and not _present(run_dir, (SCORES_DIR,)):
        raise UsageError(
            f"{run_dir} ({role}) is not a run directory: no {MANIFEST_NAME} and no "
            f"{SCORES_DIR}/part-*.parquet. "
            "Pass a folder written by `iqa score`."
        )
    return run_dir

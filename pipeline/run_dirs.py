"""The checks on run directories, for every command: claiming one to write into, and requiring one to read.

Example:
    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp()) / "run"
    >>> claim_run_dir(run, ("manifest.json",))
    >>> (run / "manifest.json").write_text("{}")
    2
    >>> claim_run_dir(run, ("manifest.json",))
    Traceback (most recent call last):
    ...
    pipeline.errors.RunDirError: ... already holds a run (manifest.json). Pass --overwrite ...
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

from pipeline.errors import RunDirError, UsageError

MANIFEST_NAME = "manifest.json"
SCORES_DIR = "scores"
REPORT_NAME = "report.html"


def _present(run_dir: Path, names: tuple[str, ...]) -> list[str]:
    """The entries of `names` that exist in `run_dir` (a folder counts when it holds something)."""
    found = []
    for name in names:
        path = run_dir / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(name)
    return found


def claim_run_dir(
    run_dir: Path,
    outputs: tuple[str, ...],
    *,
    resume: bool | None = None,
    overwrite: bool = False,
    inputs: Mapping[str, Path] | None = None,
) -> None:
    """Make `run_dir` ready to write `outputs` into, refusing to clobber an earlier run by accident.

    Args:
        run_dir: the run directory (created with its parents).
        outputs: the files and folders a run writes there; any present means the folder holds a run.
        resume: None where the command cannot resume; else whether `--resume` was given.
        overwrite: remove the `outputs` present before writing.
        inputs: {role: folder} the run reads; the run directory must not lie inside them.

    Raises:
        UsageError: contradicting options, or the run directory inside an input folder.
        RunDirError: it holds a run (without --resume or --overwrite), is a file, or cannot be written.
    """
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other: pick one.")
    resolved = run_dir.resolve()
    for role, folder in (inputs or {}).items():
        if resolved == folder.resolve() or folder.resolve() in resolved.parents:
            raise UsageError(
                f"The run directory {run_dir} is inside the {role} folder {folder}; "
                "its files would be scored. "
                "Choose a run directory outside both input folders."
            )
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} exists and is not a directory. Choose another -o directory.")
    found = _present(run_dir, outputs) if run_dir.is_dir() else []
    if found and not (resume or overwrite):
        options = (
            "Pass --resume to continue it, --overwrite to replace it"
            if resume is not None
            else ("Pass --overwrite to replace them")
        )
        raise RunDirError(
            f"{run_dir} already holds a run ({', '.join(found)}). {options}, or choose another -o directory."
        )
    if overwrite:
        for name in found:
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    _check_writable(run_dir)


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(
            f"Cannot write into {run_dir}: {exc.strerror or exc}. Check permissions and free space."
        ) from exc


def require_run_dir(path: Path, role: str) -> Path:
    """Check that `path` holds a run written by `iqa score` (a manifest or score parts); returns it.

    Raises:
        UsageError: naming the folder, its role ('baseline', 'candidate', 'run') and what to pass instead.
    """
    if not path.is_dir():
        raise UsageError(
            f"The {role} run directory {path} does not exist. Pass a folder written by `iqa score`."
        )
    if not (path / MANIFEST_NAME).is_file() and not _present(path, (SCORES_DIR,)):
        raise UsageError(
            f"{path} ({role}) is not a run directory: no {MANIFEST_NAME} and no {SCORES_DIR}/part-*.parquet. "
            "Pass a folder written by `iqa score`."
        )
    return path

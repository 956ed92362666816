"""Writing files so that a reader never sees half of one: a hidden temp file beside the target, then a rename.

Example:
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> write_atomic(target, lambda temp: temp.write_text("done"))
    >>> target.read_text()
    'done'
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.errors import WriteError


def temp_name(path: Path) -> Path:
    """The hidden temp file a write of `path` goes to first."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """Call `write(temp_path)` for a hidden temp file beside `path`, then rename it onto `path`.

    Raises:
        WriteError: the file cannot be written (naming it and what to check).
    """
    temp = temp_name(path)
    try:
        write(temp)
        os.replace(temp, path)
    except OSError as exc:
        temp.unlink(missing_ok=True)
        raise WriteError(
            f"Cannot write {path}: {exc.strerror or exc}. Check free space and permissions."
        ) from exc
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """`write_atomic` of a UTF-8 text."""
    write_atomic(path, lambda temp: temp.write_text(text, encoding="utf-8"))

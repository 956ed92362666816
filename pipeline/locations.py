"""Where files live: local paths and fsspec URLs behind one small interface.

A command takes a plain path, a `file://` URL, or a URL of any fsspec file system: `s3://`, `gs://`,
`az://` (and `abfs://`), `memory://`, `http(s)://` (inputs only). Credentials and endpoints come the
standard way of each library (for S3: the `AWS_*` variables including `AWS_ENDPOINT_URL`; for GCS:
`GOOGLE_APPLICATION_CREDENTIALS`; fsspec's own config files and `FSSPEC_*` variables), plus
`storage_options` ({key: value}, `--storage-option KEY=VALUE`) for anything else, applied to every URL of
the command and never written into a run.

Writes are whole files: on a local disk through a hidden temp file and a rename (`pipeline.storage`), on an
object store by one upload to the final name (a store without atomic rename shows an object only once its
upload is complete). A run writes each name once and its manifest last.

Example:
    >>> run = locate("memory://iqa-doc/run")
    >>> run.child("notes.txt").write_text("done")
    >>> run.child("notes.txt").read_text(), run.child("notes.txt").url
    ('done', 'memory://iqa-doc/run/notes.txt')
    >>> locate("/tmp/../tmp/run").url
    '/tmp/run'
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from pipeline.errors import StorageError, UsageError
from pipeline.storage import write_atomic

# The extra that installs each protocol's library: `pip install 'iqa-pipeline[<extra>]'`.
PROTOCOL_EXTRAS = {
    "s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "abfss": "azure",
    "adl": "azure", "http": "http", "https": "http",
}  # fmt: skip
READ_ONLY_PROTOCOLS = frozenset({"http", "https"})
_URL = re.compile(r"^(?P<protocol>[a-zA-Z][a-zA-Z0-9+.-]+)://")

StorageOptions = Mapping[str, Any]


def url_protocol(target: str | os.PathLike[str]) -> str | None:
    """The protocol of a URL ('s3', 'file', ...), or None for a plain path.

    Example:
        >>> url_protocol("s3://bucket/ref"), url_protocol("data/ref"), url_protocol(Path("/data"))
        ('s3', None, None)
    """
    if isinstance(target, os.PathLike):
        return None
    match = _URL.match(target)
    return match["protocol"].lower() if match else None


def is_url(target: str | os.PathLike[str]) -> bool:
    """Whether `target` names a file system other than the local disk (a `file://` URL does not)."""
    return url_protocol(target) not in (None, "file")


@dataclass(frozen=True)
class Location:
    """A file or folder on the local disk or in object storage.

    Attributes:
        fs: the fsspec file system (it carries the storage options; it pickles, so it can travel to workers).
        path: the file system's own path (`bucket/key` for S3, an absolute path on the local disk).
        url: how people and the manifest see it: the absolute path on the local disk, else `protocol://path`.
    """

    fs: Any
    path: str
    url: str

    @property
    def local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    @property
    def read_only(self) -> bool:
        """Whether this file system cannot be written (http and https)."""
        return url_protocol(self.url) in READ_ONLY_PROTOCOLS

    @property
    def name(self) -> str:
        return posixpath.basename(self.path.rstrip("/"))

    @property
    def parent(self) -> Location:
        """The folder holding this file or folder."""
        if self.local:
            return Location(self.fs, os.path.dirname(self.path), os.path.dirname(self.path))
        return Location(
            self.fs, posixpath.dirname(self.path.rstrip("/")), posixpath.dirname(self.url.rstrip("/"))
        )

    def child(self, *names: str) -> Location:
        """The location `names` below this one."""
        path = posixpath.join(self.path, *names) if not self.local else os.path.join(self.path, *names)
        url = path if self.local else _url(self.url, *names)
        return Location(self.fs, path, url)

    def __str__(self) -> str:
        return self.url

    def exists(self) -> bool:
        return self._ask(self.fs.exists)

    def is_dir(self) -> bool:
        return self._ask(self.fs.isdir)

    def is_file(self) -> bool:
        return self._ask(self.fs.isfile)

    def names(self) -> list[str]:
        """Names of the entries directly inside this folder, sorted ([] when it does not exist)."""
        if not self.is_dir():
            return []
        entries = self._ask(lambda path: self.fs.ls(path, detail=False))
        return sorted(posixpath.basename(str(entry).rstrip("/")) for entry in entries)

    def read_bytes(self) -> bytes:
        return self._ask(self.fs.cat_file)

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")

    def write(self, write: Callable[[IO[bytes]], Any]) -> None:
        """Write the whole file through `write(binary file)`: atomically on a local disk (temp file and
        rename), by one upload to the final name elsewhere.

        Raises:
            WriteError: a local file cannot be written (disk full, permissions).
            StorageError: the store refuses the upload.
        """
        if self.local:
            write_atomic(Path(self.path), lambda temp: _write_file(temp, write))
            return
        self._refuse_read_only()
        with self._storage_errors("write"), self.fs.open(self.path, "wb") as handle:
            write(handle)

    def write_text(self, text: str) -> None:
        self.write(lambda handle: handle.write(text.encode("utf-8")))

    def open(self, mode: str = "rb") -> IO[bytes]:
        return self._ask(lambda path: self.fs.open(path, mode))

    def make_dirs(self) -> None:
        """Create this folder and its parents (object stores have no folders: nothing to do there)."""
        if self.local:
            os.makedirs(self.path, exist_ok=True)

    def remove(self) -> None:
        """Delete this file, or this folder with everything in it."""
        self._refuse_read_only()
        with self._storage_errors("delete"):
            self.fs.rm(self.path, recursive=True)

    def move(self, target: Location) -> None:
        """Move this file to `target` on the same file system (a rename on a local disk; copy and delete in
        object storage)."""
        target.parent.make_dirs()
        with self._storage_errors("move"):
            self.fs.mv(self.path, target.path)

    def find(self) -> Iterator[tuple[str, str]]:
        """Every file below this folder as (path relative to it with '/' separators, its URL), sorted."""
        root = self.path.rstrip("/")
        with self._storage_errors("list"):
            found = self.fs.find(root, withdirs=False)
        for path in sorted(found):
            relative = posixpath.relpath(str(path), root)
            yield relative, _url(self.url, relative)

    def _ask(self, call: Callable[[str], Any]) -> Any:
        with self._storage_errors("read"):
            return call(self.path)

    def _refuse_read_only(self) -> None:
        if self.read_only:
            raise UsageError(f"{self.url} is read-only (http/https); write runs to a folder or a bucket.")

    @contextmanager
    def _storage_errors(self, doing: str) -> Iterator[None]:
        """Turn a store's refusal (missing bucket, credentials, access) into one line naming the URL."""
        try:
            yield
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise
        except OSError as exc:
            if self.local:
                raise
            raise StorageError(storage_problem(self.url, doing, exc)) from exc
        except Exception as exc:
            if self.local or isinstance(exc, (UsageError, ValueError, TypeError)):
                raise
            raise StorageError(storage_problem(self.url, doing, exc)) from exc


def storage_problem(url: str, doing: str, exc: BaseException) -> str:
    """One line: what could not be done where, why, and what to check.

    Example:
        >>> storage_problem("s3://b/run", "write", PermissionError("Access Denied"))
        'Cannot write s3://b/run: Access Denied (PermissionError). Check the bucket, the credentials ...'
    """
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"Cannot {doing} {url}: {reason} ({type(exc).__name__}). Check the bucket, the credentials "
        "(AWS_*, GOOGLE_APPLICATION_CREDENTIALS, ...) and the endpoint (AWS_ENDPOINT_URL or "
        "--storage-option endpoint_url=...)."
    )


def locate(
    target: str | os.PathLike[str] | Location, storage_options: StorageOptions | None = None
) -> Location:
    """The Location of a plain path or URL, its file system built with `storage_options`.

    Raises:
        UsageError: the protocol is unknown, or its library is not installed (naming the extra to install).
    """
    if isinstance(target, Location):
        return target
    protocol = url_protocol(target)
    if protocol in (None, "file"):
        text = os.fspath(target)
        path = os.path.abspath(text[len("file://") :] if protocol else text)
        return Location(LocalFileSystem(), path, path)
    text = str(target).rstrip("/") or str(target)
    try:
        fs, path = fsspec.core.url_to_fs(text, **dict(storage_options or {}))
    except ImportError as exc:
        extra = PROTOCOL_EXTRAS.get(protocol, protocol)
        raise UsageError(
            f"{text}: reading {protocol}:// URLs needs a library that is not installed ({exc}). "
            f"Install it with: pip install 'iqa-pipeline[{extra}]'"
        ) from None
    except ValueError as exc:
        raise UsageError(f"{text}: {protocol}:// is not a storage protocol fsspec knows ({exc}).") from None
    except TypeError as exc:
        raise UsageError(f"{text}: a storage option does not fit {protocol}:// ({exc}).") from None
    return Location(fs, path, text)


def parse_storage_options(items: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """`KEY=VALUE` strings -> {key: value}; values 'true'/'false' and numbers become bool and int/float.

    Example:
        >>> parse_storage_options(["endpoint_url=http://127.0.0.1:9000", "anon=true"])
        {'endpoint_url': 'http://127.0.0.1:9000', 'anon': True}

    Raises:
        UsageError: an item without '='.
    """
    options: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(
                f"--storage-option {item!r} is not KEY=VALUE, e.g. endpoint_url=http://host:9000."
            )
        options[key.strip()] = _option_value(value)
    return options


def _option_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_url_bytes(url: str, storage_options: StorageOptions | None = None) -> bytes:
    """The bytes of one file named by a URL (workers read their pairs this way)."""
    return locate(url, storage_options).read_bytes()


def _url(base: str, *names: str) -> str:
    return "/".join([base.rstrip("/"), *(name.strip("/") for name in names)])


def _write_file(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    with open(path, "wb") as handle:
        write(handle)

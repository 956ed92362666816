"""Adapters: the full-reference metrics of pyiqa, piq and torchmetrics as metric plugins.

`--metrics pyiqa:fsim,piq:gmsd,torchmetrics:structural_similarity_index_measure` scores each library's own
implementation inside the Dask workers, one Parquet column per metric (`pyiqa_fsim`, ...: the column names
the metric, so a worker rebuilds the plugin from the column alone, `choices.adapted_plugin`). Each library is
an optional extra (`pip install 'iqa-pipeline[pyiqa]'`); its adapter module imports it, and is imported only
when one of its metrics is asked for.

What is shared here: the model (or function) of a metric is built by `build_scorer` once per worker and
device, and once on the client by `prepare`, which finds the weights files the library loads, checks each one
loads as plain tensors (`torch.load(weights_only=True)`, also when the library itself would unpickle it), and
records its sha256 (the setup, `WeightsFile`s). When the run has Dask workers, the client reads those files
again (`ship_weights`: they must still hash to what was recorded) and their bytes travel once to every worker
with the scoring worker plugin, as the built-in LPIPS backbone does. A worker builds the metric without
downloads: a file the library would download that was shipped is written from the shipped bytes where the
library asked for it (`write_shipped`), and the worker must then find the client's hashes; a file already on
its disk with other bytes is refused. A file the library would download and cannot is a one-line
`WeightsError` naming the file and the folder it belongs in, before any pair is scored.

Example (a metric of no weights, as an adapter module declares one):
    >>> import torch
    >>> from pipeline.choices import MetricSpec
    >>> def construct(device):
    ...     return lambda ref, out: (ref - out).abs().flatten(1).mean(1)
    >>> plugin = adapted_plugin(MetricSpec("toy_mae", False, "", "", 0.01), "iqa-pipeline", construct)
    >>> setup = plugin.prepare()
    >>> scorer = plugin.build_state(torch.device("cpu"), setup)
    >>> plugin.function(torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8), scorer).tolist(), setup
    ([1.0, 1.0], ())
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.hub

from pipeline.choices import MetricSpec
from pipeline.errors import ConfigError, IQAError, WeightsError, WriteError
from pipeline.metric_plugins import MetricInput, MetricPlugin
from pipeline.storage import write_atomic

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ref, out) -> (N,)
Construct = Callable[[torch.device], Scorer]
LIBRARY_INPUT = MetricInput(
    scale="unit", channels="rgb"
)  # RGB in [0, 1], gray replicated: what all 3 document
_WATCHING = threading.Lock()  # one build at a time per process sees the library's weights
WRITE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST})


@dataclass(frozen=True)
class WeightsFile:
    """A weights file a library loaded: its name, where it was, its sha256."""

    name: str
    path: str
    sha256: str


@dataclass(frozen=True, eq=False)
class ShippedFile:
    """The bytes of a weights file the client verified (`ship_weights`), sent once to every Dask worker.

    `file.sha256` is the sha256 of `data`, checked again on the worker before the bytes are written.
    """

    file: WeightsFile
    data: bytes = field(repr=False)


class ShippedWeightsError(Exception):
    """Shipped weights a worker cannot use: bytes of another hash, or a folder it cannot write."""


class MissingWeights(Exception):
    """The library asked for a weights file that is not on disk and could not (or may not) download it."""

    def __init__(self, url: str, path: str, reason: str) -> None:
        super().__init__(url, path, reason)
        self.url, self.path, self.reason = url, path, reason


@dataclass
class WeightsWatch:
    """What a library did about weights while a metric was built (`watching_weights`)."""

    allow_download: bool
    shipped: dict[str, ShippedFile] = field(default_factory=dict)  # by file name
    loaded: list[WeightsFile] = field(default_factory=list)

    def load(self, original: Callable[..., Any], file: Any, *args: Any, **kwargs: Any) -> Any:
        """`torch.load` of a weights file: recorded, and loaded as plain tensors only."""
        if isinstance(file, str | os.PathLike):
            path = os.path.abspath(os.fspath(file))
            self.loaded.append(WeightsFile(os.path.basename(path), path, file_sha256(path)))
            try:
                return original(file, *args, **{**kwargs, "weights_only": True})
            except Exception as exc:
                raise WeightsError(
                    f"The weights file {path} does not load as plain tensors (torch.load(weights_only=True): "
                    f"{type(exc).__name__}); loading it would run code from it. Replace it with the "
                    "library's own file."
                ) from None
        return original(file, *args, **kwargs)

    def download(self, original: Callable[..., Any], url: str, path: str, *args: Any, **kwargs: Any) -> None:
        """A library's download of a weights file: written from the shipped bytes of a file of that name, else
        refused, or tried; a failure is `MissingWeights`."""
        shipped = self.shipped.get(os.path.basename(path))
        if shipped is not None:
            write_shipped(shipped, str(path))
            return
        if not self.allow_download:
            raise MissingWeights(url, str(path), "downloads are not made here")
        try:
            original(url, path, *args, **kwargs)
        except Exception as exc:
            raise MissingWeights(url, str(path), f"the download failed: {type(exc).__name__}") from None


@contextlib.contextmanager
def watching_weights(
    allow_download: bool,
    aliases: tuple[tuple[Any, str], ...] = (),
    shipped: tuple[ShippedFile, ...] = (),
) -> Iterator[WeightsWatch]:
    """While a library builds a metric: every `torch.load` of a file recorded (and made `weights_only`), every
    download through `torch.hub.download_url_to_file` (also where a library bound it to a name of its own,
    `aliases`: (module, attribute)) written from the `shipped` file of the same name, else refused or failing
    as `MissingWeights`; its output silenced.

    The libraries fetch weights inside their constructors and have no API that names the files, so this is
    the one place that sees them; the functions are put back on exit, and builds take turns (a lock).
    """
    watch = WeightsWatch(allow_download, {item.file.name: item for item in shipped})
    load, download = torch.load, torch.hub.download_url_to_file
    places = ((torch.hub, "download_url_to_file"), *aliases)
    with _WATCHING, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        saved = [(module, name, getattr(module, name)) for module, name in places]
        torch.load = partial(watch.load, load)
        for module, name in places:
            setattr(module, name, partial(watch.download, download))
        try:
            yield watch
        finally:
            torch.load = load
            for module, name, value in saved:
                setattr(module, name, value)


def file_sha256(path: str) -> str:
    """The sha256 of a file, hex."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def write_shipped(shipped: ShippedFile, path: str) -> None:
    """Write shipped bytes to `path`, the file a library asked to download, once they hash as verified.

    Raises:
        ShippedWeightsError: the bytes do not hash to `shipped.file.sha256`, or the folder cannot be written.
    """
    name = shipped.file.name
    digest = hashlib.sha256(shipped.data).hexdigest()
    if digest != shipped.file.sha256:
        raise ShippedWeightsError(
            f"the bytes of the weights file {name} shipped from the client hash to {digest[:12]}, not to the "
            f"sha256 the client verified ({shipped.file.sha256[:12]}); they are refused: run again"
        )
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        write_atomic(Path(path), lambda temp: temp.write_bytes(shipped.data))
    except (OSError, WriteError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__cause__
        raise ShippedWeightsError(
            f"the weights file {name} shipped from the client cannot be written to {folder}, where the "
            f"library looks for it {unwritable(cause)}"
        ) from None


def unwritable(exc: OSError) -> str:
    """The end of a message about a folder that cannot be written: why, and what to do."""
    reason = exc.strerror or type(exc).__name__
    return f"({reason}): make that folder writable, or set TORCH_HOME to a writable folder"


def build_scorer(
    column: str,
    construct: Construct,
    device: torch.device,
    allow_download: bool,
    aliases: tuple[tuple[Any, str], ...] = (),
    shipped: tuple[ShippedFile, ...] = (),
) -> tuple[Scorer, tuple[WeightsFile, ...]]:
    """`construct(device)` with its weights watched: the scorer and the weights files it loaded; a file the
    library would download that is among `shipped` is written from the shipped bytes instead.

    Raises:
        WeightsError: a weights file is missing and cannot be downloaded (the message names it and its
            folder), or does not load as plain tensors, or shipped bytes do not hash as verified or cannot be
            written, or the library failed to fetch a file by other means.
        ConfigError: the library cannot build the metric otherwise (e.g. a module it needs is missing).
    """
    try:
        with watching_weights(allow_download, aliases, shipped) as watch:
            scorer = construct(device)
    except MissingWeights as missing:
        folder, name = os.path.split(missing.path)
        raise WeightsError(
            f"{adapted_selector(column)} needs the weights file {name}, which is not in {folder} and "
            f"{missing.reason}: put the file there ({missing.url}), where the library looks for it."
        ) from None
    except ShippedWeightsError as refused:
        raise WeightsError(f"{adapted_selector(column)}: {refused}") from None
    except IQAError:
        raise
    except Exception as exc:
        raise unbuildable(column, exc) from None
    return scorer, tuple(watch.loaded)


def unbuildable(column: str, exc: Exception) -> IQAError:
    """The one-line error of a metric the library could not build: a missing module, a file it fetches by
    other means than torch.hub (which this adapter cannot name), or anything else the library raised."""
    selector, detail = adapted_selector(column), f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ModuleNotFoundError):
        return ConfigError(f"{selector} needs the module {exc.name}, which is not installed: pip install it")
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS and exc.filename:
        return WeightsError(
            f"{selector} cannot be built: the library cannot make or write its weights folder {exc.filename} "
            f"{unwritable(exc)}"
        )
    if isinstance(exc, OSError):
        return WeightsError(
            f"{selector} cannot be built ({detail}); the library fetches a file by its own means: run once "
            "online, or put the file where the library looks for it"
        )
    return ConfigError(f"{selector} cannot be built: {detail}")


def adapted_selector(column: str) -> str:
    """'pyiqa_fsim' -> 'pyiqa:fsim' (how the metric is named on the command line)."""
    return column.replace("_", ":", 1)


def prepare_scorer(
    column: str, construct: Construct, aliases: tuple[tuple[Any, str], ...]
) -> tuple[WeightsFile, ...]:
    """On the client, before scoring: build the metric once on the CPU (a download allowed, as the library
    would), and return the weights files it loaded, with their hashes: the setup shipped to the workers."""
    _, files = build_scorer(column, construct, torch.device("cpu"), allow_download=True, aliases=aliases)
    return files


def ship_weights(column: str, setup: tuple[WeightsFile, ...]) -> tuple[ShippedFile, ...] | None:
    """On the client of a run with Dask workers: the bytes of the weights files `setup` names, read again and
    checked against the sha256 recorded by `prepare_scorer`; None for a metric of no weights files.

    Raises:
        WeightsError: a file cannot be read, or changed since it was verified.
    """
    return tuple(read_verified(column, file) for file in setup) or None


def read_verified(column: str, file: WeightsFile) -> ShippedFile:
    """The bytes of a verified weights file, which must still hash to `file.sha256`."""
    selector, fix = adapted_selector(column), "leave weights files alone while a run starts, and run again"
    try:
        with open(file.path, "rb") as opened:
            data = opened.read()
    except OSError as exc:
        raise WeightsError(
            f"{selector}: the weights file {file.path} cannot be read to ship it to the Dask workers "
            f"({exc.strerror or type(exc).__name__}): {fix}"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != file.sha256:
        raise WeightsError(
            f"{selector}: the weights file {file.path} changed since it was verified (sha256 {digest[:12]}, "
            f"verified {file.sha256[:12]}): {fix}"
        )
    return ShippedFile(file, data)


def worker_scorer(
    column: str,
    construct: Construct,
    aliases: tuple[tuple[Any, str], ...],
    device: torch.device,
    setup: tuple[WeightsFile, ...] | None,
    shipped: tuple[ShippedFile, ...] = (),
) -> Scorer:
    """On a worker, once per device: the metric built without downloads, on the weights files the client
    verified (`setup`; None: not checked, for direct calls); a file the library would download that is among
    `shipped` (and named by `setup`) is written from the shipped bytes where the library looks for it.

    Raises:
        WeightsError: a file is missing here, or differs from the client's, or shipped bytes are refused.
    """
    named = None if setup is None else {(file.name, file.sha256) for file in setup}
    usable = tuple(item for item in shipped if named is None or (item.file.name, item.file.sha256) in named)
    scorer, files = build_scorer(column, construct, device, False, aliases, usable)
    if setup is not None:
        expected = {file.name: file.sha256 for file in setup}
        for file in files:
            if expected.get(file.name) != file.sha256:
                verified = expected.get(file.name, "none")[:12]
                raise WeightsError(
                    f"{adapted_selector(column)}: the weights file {file.path} here (sha256 "
                    f"{file.sha256[:12]}) is not the one the client verified ({verified}): give every worker "
                    "the same file."
                )
    return scorer


def weights_digest(setup: tuple[WeightsFile, ...] | None) -> str | None:
    """`NAME=SHA256` of each weights file a metric loads, comma-separated; None when it loads none."""
    return ", ".join(f"{file.name}={file.sha256}" for file in setup) if setup else None


def per_pair_values(ref: torch.Tensor, out: torch.Tensor, scorer: Scorer) -> torch.Tensor:
    """The scorer's values of a batch (N, C, H, W) as (N,).

    Raises:
        ValueError: the library gave other than one value per pair.
    """
    values = scorer(ref, out)
    count = ref.shape[0]
    if values.numel() != count:
        raise ValueError(
            f"expected {count} values, one per pair, got a tensor of shape {tuple(values.shape)}"
        )
    return values.reshape(count)


def adapted_plugin(
    spec: MetricSpec,
    package: str,
    construct: Construct,
    *,
    input: MetricInput = LIBRARY_INPUT,
    aliases: tuple[tuple[Any, str], ...] = (),
) -> MetricPlugin:
    """The plugin of an adapted metric: `construct(device) -> scorer(ref, out) -> (N,)` built once per worker
    and device (and once on the client, whose weights files the workers must match, from the bytes the client
    ships them where their own disk lacks a file).

    Args:
        spec: the column (`choices.metric_column` of the selector), direction, unit, tolerance.
        package: the library's distribution (its version goes to the manifest).
        construct: builds the scorer on a device; any weights it loads are watched (`watching_weights`).
        input: what the scorer gets (default: RGB in [0, 1], float32); its smallest side at least the spec's.
        aliases: (module, attribute) where the library bound `torch.hub.download_url_to_file` to a name of its
            own.
    """
    return MetricPlugin(
        spec,
        function=per_pair_values,
        input=replace(input, min_side=max(input.min_side, spec.min_side)),
        build_state=partial(worker_scorer, spec.name, construct, aliases),
        prepare=partial(prepare_scorer, spec.name, construct, aliases),
        ship=partial(ship_weights, spec.name),
        package=package,
        weights_sha256=weights_digest,
    )


__all__ = [
    "LIBRARY_INPUT",
    "ShippedFile",
    "WeightsFile",
    "adapted_plugin",
    "adapted_selector",
    "build_scorer",
    "per_pair_values",
    "ship_weights",
    "watching_weights",
    "weights_digest",
]

"""The metric plugin interface: what a full-reference metric declares, and how a batch of pairs reaches it.

Every metric the pipeline scores is a `MetricPlugin`: the built-ins (`pipeline.measure`) and the metrics of
other packages, which register theirs under the entry-point group `iqa_pipeline.metrics`
(`pipeline.choices.PLUGIN_GROUP`) in their own pyproject.toml::

    [project.entry-points."iqa_pipeline.metrics"]
    l1 = "my_package.metrics:L1"

A plugin declares its column (a `MetricSpec`: name, direction, unit, tolerance, digits), the input its
function expects (`MetricInput`: value scale, channels, smallest side, volumes, devices), a batched function
`(ref, out, state) -> (N,)` on `(N, C, H, W)` tensors, the state it needs built once per worker process
(`build_state(device, setup)`, e.g. a network), what the client resolves and verifies before scoring and ships
to the workers (`prepare()` -> `setup`, e.g. checked weights; `ship(setup)` -> what the setup only names, e.g.
the bytes of weights files, sent once to every Dask worker), and its provenance (package, version, weights
sha256), which the manifest records.

Example (a plugin of another package; `pipeline.score(..., metrics="psnr,l1")` scores it):
    >>> import torch
    >>> from pipeline.choices import MetricSpec
    >>> L1 = MetricPlugin(
    ...     MetricSpec("l1", False, unit="", description="Mean absolute error.", tolerance=0.01),
    ...     function=lambda ref, out, state: (ref - out).abs().flatten(1).mean(1),
    ...     package="my-package",
    ... )
    >>> black, gray = torch.zeros(2, 3, 16, 16), torch.full((2, 3, 16, 16), 51.0)
    >>> [round(v, 6) for v in L1.compute(Batch(black, gray, data_range=255.0), None)]
    [0.2, 0.2]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

import torch

from pipeline.choices import MetricSpec
from pipeline.conventions import ResolvedConvention, crop_border, resolve_convention
from pipeline.errors import ConfigError

Scale = Literal["unit", "stored", "255"]  # [0, 1] floats; the stored values; floats in [0, 255]
Channels = Literal["stored", "rgb", "gray"]  # as stored; gray replicated to RGB; RGB as BT.601 luma
BT601 = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class MetricInput:
    """What a plugin's function receives.

    Attributes:
        scale: 'unit' (floats in [0, 1], the stored values divided by the data range), 'stored' (floats in
            the stored units) or '255' (floats in [0, 255]).
        channels: 'stored' (1 or 3 channels as decoded), 'rgb' (gray replicated to 3) or 'gray' (RGB as
            BT.601 luma, 0.299 R + 0.587 G + 0.114 B).
        min_side: the shortest side the metric is defined for; smaller pairs get a null and a warning.
        volumes: whether the function takes (N, C, D, H, W) volumes.
        devices: device types the function runs on; elsewhere the batch is moved to the CPU for it.
        dtype: the floating dtype of the tensors.
    """

    scale: Scale = "unit"
    channels: Channels = "stored"
    min_side: int = 1
    volumes: bool = False
    devices: tuple[str, ...] = ("cpu", "cuda", "mps")
    dtype: torch.dtype = torch.float32


@dataclass
class Batch:
    """Aligned pairs of one shape, as the worker scores them, and what the metrics of one batch share.

    Attributes:
        ref, out: (N, C, H, W) or (N, C, D, H, W) stored values (integers or floats) in [0, data_range].
        data_range: the peak of the stored values.
        convention: the run's convention (its crop applies to every metric).
        metrics: the metrics scored on this batch (metrics that share work look here).
        warnings: what explains each null value, for the whole batch.
        shared: results several metrics use (e.g. the SSIM filtering of SSIM and MS-SSIM), by name.
    """

    ref: torch.Tensor
    out: torch.Tensor
    data_range: float
    convention: ResolvedConvention = field(default_factory=lambda: resolve_convention("default"))
    metrics: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)
    shared: dict[Any, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.ref.shape[0]

    def once(self, name: Any, compute: Callable[[], Any]) -> Any:
        """`compute()` the first time `name` is asked for in this batch, its result after."""
        if name not in self.shared:
            self.shared[name] = compute()
        return self.shared[name]

    def inputs(self, wanted: MetricInput) -> tuple[torch.Tensor, torch.Tensor]:
        """(ref, out) cropped by the convention and converted as `wanted` says (computed once per kind)."""
        return self.once(
            ("inputs", wanted), lambda: (self._convert(self.ref, wanted), self._convert(self.out, wanted))
        )

    def _convert(self, x: torch.Tensor, wanted: MetricInput) -> torch.Tensor:
        x = crop_border(x, self.convention.crop)
        if x.device.type not in wanted.devices:
            x = x.cpu()
        x = x.to(wanted.dtype)
        if wanted.channels == "rgb" and x.shape[1] == 1:
            x = x.expand(-1, 3, *x.shape[2:])
        elif wanted.channels == "gray" and x.shape[1] == 3:
            weights = torch.tensor(BT601, dtype=x.dtype, device=x.device).view(1, 3, *[1] * (x.dim() - 2))
            x = (x * weights).sum(1, keepdim=True)
        if wanted.scale == "unit":
            return x / self.data_range
        if wanted.scale == "255":
            return x * (255.0 / self.data_range)
        return x


def installed_version(package: str) -> str:
    """The installed version of a distribution, or 'not installed'."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


@dataclass(frozen=True)
class MetricPlugin:
    """One full-reference metric: its column, its input, its batched function and its per-worker state.

    Attributes:
        spec: the column: name, direction, unit, description, tolerance, digits (`pipeline.choices`).
        function: (ref, out, state) -> (N,) tensor, on the inputs `input` describes.
        batch_function: instead of `function`, (batch, state) -> N values or None, for metrics that share
            work within a batch (the built-ins: MSE with PSNR, the SSIM filtering with MS-SSIM).
        input: what `function` expects.
        build_state: (device, setup) -> the state `function` gets, built once per worker process and device
            (e.g. a network with its weights); None when the function needs none.
        prepare: run once on the client before scoring: resolves and verifies what the workers need (weights)
            and returns a picklable setup shipped to them; raises `pipeline.errors.WeightsError` (a one-line
            message naming the file and where to put it) when it cannot.
        package: the distribution that provides the metric (its version is recorded).
        weights_sha256: (setup) -> the sha256 of the weights the setup holds, or None.
        ship: (setup) -> what every Dask worker receives once, with the run's worker plugin, so that it needs
            no disk of its own (e.g. the bytes of the weights files the setup names, read again and checked on
            the client; a `WeightsError` when they changed); None when the setup has nothing to ship. Called
            on the client only when the run's workers are another cluster's (a local cluster's workers read
            the client's files); `build_state` then gets it as the keyword `shipped` (`make_state`).
    """

    spec: MetricSpec
    function: Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor] | None = None
    batch_function: Callable[[Batch, Any], list[float | None]] | None = None
    input: MetricInput = MetricInput()
    build_state: Callable[[torch.device, Any], Any] | None = None
    prepare: Callable[[], Any] | None = None
    package: str = "iqa-pipeline"
    weights_sha256: Callable[[Any], str | None] | None = None
    ship: Callable[[Any], Any] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def make_state(self, device: torch.device, setup: Any, shipped: Any = None) -> Any:
        """The state `function` gets on `device`: `build_state(device, setup)`, with `shipped=` what `ship`
        sent this worker when it sent anything; None for a plugin without `build_state`."""
        if self.build_state is None:
            return None
        if shipped is None:
            return self.build_state(device, setup)
        return self.build_state(device, setup, shipped=shipped)

    def compute(self, batch: Batch, state: Any) -> list[float | None]:
        """The metric of every pair of `batch`, None (with a warning in `batch.warnings`) where undefined."""
        if self.batch_function is not None:
            return self.batch_function(batch, state)
        if self.function is None:
            raise NotImplementedError(f"metric {self.name} has no function")
        reason = self.undefined_because(batch)
        if reason:
            batch.warnings.append(f"{self.name} left null: {reason}")
            return [None] * batch.size
        ref, out = batch.inputs(self.input)
        values = self.function(ref, out, state)
        return [float(v) for v in values.detach().double().cpu().reshape(-1).tolist()]

    def undefined_because(self, batch: Batch) -> str | None:
        """Why the metric is not defined on this batch (a volume, a side too short), or None."""
        if batch.ref.dim() == 5 and not self.input.volumes:
            return f"{self.name} is defined on 2-D images only, not on volumes"
        side = min(batch.ref.shape[-2:]) - 2 * batch.convention.crop
        if side < self.input.min_side:
            return f"it needs >= {self.input.min_side} px on the short side, got {side}"
        return None

    def provenance(self, setup: Any = None) -> dict[str, Any]:
        """{'package', 'version', 'weights_sha256'} for the manifest."""
        return {
            "package": self.package,
            "version": installed_version(self.package),
            "weights_sha256": self.weights_sha256(setup) if self.weights_sha256 else None,
        }


@dataclass(frozen=True)
class MetricAdapter:
    """Metric plugins made on demand from the full-reference metrics of another library: `--metrics
    PREFIX:NAME` scores the library's metric NAME into the column `PREFIX_NAME` (`choices.metric_column`).

    This package's adapters (`pipeline.adapters`) are listed in `choices.BUILTIN_ADAPTERS`; other packages
    register theirs under the entry-point group `iqa_pipeline.metric_adapters` with the prefix as the name::

        [project.entry-points."iqa_pipeline.metric_adapters"]
        mylib = "my_package.adapter:ADAPTER"

    Attributes:
        prefix: the library's name on the command line, without underscores.
        package: the distribution of the library (its version is named in messages).
        names: () -> the full-reference metrics the installed library offers that the adapter can run.
        make: (name) -> the `MetricPlugin` of one of `names()`, its column `PREFIX_NAME`.
        unadapted: (name) -> why a metric of the library that is not among `names()` cannot be run (e.g. its
            direction is not declared), or None when the library has no such metric.

    Example:
        >>> from pipeline.choices import MetricSpec
        >>> def mean_error(name):
        ...     spec = MetricSpec(f"toy_{name}", False, "", "", 0.01)
        ...     return MetricPlugin(spec, lambda ref, out, state: (ref - out).abs().flatten(1).mean(1))
        >>> toy = MetricAdapter("toy", "iqa-pipeline", names=lambda: ("mae",), make=mean_error)
        >>> toy.plugin("mae").name
        'toy_mae'
        >>> toy.plugin("fid")
        Traceback (most recent call last):
        ...
        pipeline.errors.ConfigError: unknown toy metric 'fid' (toy:fid); ... offers these ...: toy:mae
    """

    prefix: str
    package: str
    names: Callable[[], tuple[str, ...]]
    make: Callable[[str], MetricPlugin]
    unadapted: Callable[[str], str | None] = lambda name: None

    def plugin(self, name: str) -> MetricPlugin:
        """The plugin of the library's metric `name`.

        Raises:
            ConfigError: the library has no such full-reference metric (the message lists those it has), or
                it has one that cannot be run here (the message says why).
        """
        offered = self.names()
        if name in offered:
            return self.make(name)
        listed = ", ".join(f"{self.prefix}:{known}" for known in offered)
        reason = self.unadapted(name)
        if reason:
            raise ConfigError(f"{self.prefix}:{name} {reason}; full-reference metrics it offers: {listed}")
        version = installed_version(self.package)
        raise ConfigError(
            f"unknown {self.prefix} metric {name!r} ({self.prefix}:{name}); {self.package} {version} offers "
            f"these full-reference metrics: {listed}"
        )


__all__ = ["Batch", "MetricAdapter", "MetricInput", "MetricPlugin", "installed_version"]

"""Every named choice of the pipeline, defined once: metrics, conventions, size-mismatch policies, devices and
LPIPS backbones. The CLI, the config model, alignment, conventions, comparison and the report all read them
from here.

Example:
    >>> METRICS["lpips"].higher_is_better
    False
    >>> metric_column("pyiqa:fsim"), adapted_name("pyiqa_fsim")
    ('pyiqa_fsim', ('pyiqa', 'fsim'))
    >>> [policy.value for policy in SizeMismatch]
    ['error', 'crop', 'resize']
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from importlib import metadata
from typing import Any

from pipeline.errors import ConfigError


class Choice(str, Enum):
    """A named option: compares equal to its value, prints as its value."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """Every value, in declaration order."""
        return tuple(member.value for member in cls)


class Convention(Choice):
    """How a pair is prepared before the metrics see it (`pipeline.conventions` holds each one's spec)."""

    DEFAULT = "default"
    SR_PAPER = "sr-paper"
    SKIMAGE_DEFAULTS = "skimage-defaults"
    MATLAB = "matlab"
    MATLAB_DOWNSAMPLED = "matlab-downsampled"
    PIQ = "piq"
    TORCHMETRICS = "torchmetrics"
    PYIQA = "pyiqa"

    @classmethod
    def _missing_(cls, value: object) -> Convention | None:
        """Other names of a convention: `basicsr` is `sr-paper`."""
        return cls.SR_PAPER if value == "basicsr" else None


class SizeMismatch(Choice):
    """What to do with a pair whose reference and output differ in size."""

    ERROR = "error"
    CROP = "crop"
    RESIZE = "resize"


class Device(Choice):
    """Where the metrics run: `auto` takes CUDA when present, then Apple's MPS, else the CPU; or forced.
    MPS is untested on hardware."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class LpipsNet(Choice):
    """LPIPS backbone network."""

    ALEX = "alex"
    VGG = "vgg"
    SQUEEZE = "squeeze"


class DatasetMetric(Choice):
    """Metrics of the whole output set against the whole reference set (`pipeline.dataset_metrics`)."""

    FID = "fid"
    KID = "kid"


class InceptionResize(Choice):
    """How FID/KID's Inception extractor resizes images to 299 x 299 (`pipeline.metrics.inception`)."""

    TORCHMETRICS = "torchmetrics"
    TORCH_FIDELITY = "torch-fidelity"


class Status(Choice):
    """Outcome of one pair in the results."""

    OK = "ok"
    ERROR = "error"


@dataclass(frozen=True)
class MetricSpec:
    """One metric column of the results.

    Attributes:
        name: the column name and the name used on the command line.
        higher_is_better: the direction used by summaries, worst cases and comparisons.
        unit: the unit of a value ("" when unitless).
        description: one line for help texts and the report.
        min_side: the shortest spatial side the metric is defined for.
        needs_network: whether the metric needs network weights (resolved before scoring).
        tolerance: the default regression tolerance of `iqa compare`, in `unit`.
        digits: decimals shown in reports (None: four significant digits).
    """

    name: str
    higher_is_better: bool
    unit: str
    description: str
    tolerance: float
    min_side: int = 1
    needs_network: bool = False
    digits: int | None = 4


BUILTIN_METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("psnr", True, "dB", "Peak signal-to-noise ratio, 10 log10(R^2 / MSE).", 0.05, digits=2),
        MetricSpec("ssim", True, "", "SSIM, Wang et al. 2004, 11x11 Gaussian window.", 0.001, min_side=11),
        MetricSpec("ms_ssim", True, "", "MS-SSIM, Wang et al. 2003, five scales.", 0.001, min_side=161),
        MetricSpec("lpips", False, "", "LPIPS v0.1 (Zhang et al. 2018).", 0.005, needs_network=True),
        # Squared data units: the default tolerance suits 8-bit images (about 0.04 dB at MSE 100).
        MetricSpec("mse", False, "(data units)^2", "Mean squared error in data units.", 1.0, digits=None),
    )
}
PLUGIN_GROUP = "iqa_pipeline.metrics"  # the entry-point group other packages register metric plugins under
ADAPTER_GROUP = "iqa_pipeline.metric_adapters"  # other packages' adapters of whole libraries, by prefix
# The adapters of this package (`pipeline.adapters`), named like entry points and loaded as they are, on first
# use: they import their library, an optional extra of the same name (`pip install 'iqa-pipeline[pyiqa]'`).
BUILTIN_ADAPTERS: dict[str, str] = {
    prefix: f"pipeline.adapters.{prefix}:ADAPTER" for prefix in ("pyiqa", "piq", "torchmetrics")
}
log = logging.getLogger("pipeline.choices")


@functools.cache
def installed_plugins() -> dict[str, Any]:
    """{column: plugin} of the metric plugins installed packages register under `PLUGIN_GROUP` (each entry
    point names a `pipeline.metric_plugins.MetricPlugin`, or a list of them), loaded once. An entry point that
    cannot be loaded, or names a built-in column, is left out with a warning; the other metrics still work.
    """
    plugins: dict[str, Any] = {}
    for entry in metadata.entry_points(group=PLUGIN_GROUP):
        try:
            loaded = entry.load()
        except Exception as exc:
            log.warning(
                "metric plugin %r (%s) cannot be loaded and is left out: %s", entry.name, entry.value, exc
            )
            continue
        for plugin in loaded if isinstance(loaded, list | tuple) else [loaded]:
            spec = getattr(plugin, "spec", None)
            if not isinstance(spec, MetricSpec) or spec.name in BUILTIN_METRICS:
                log.warning(
                    "metric plugin %r (%s) does not declare a new metric column; left out",
                    entry.name,
                    entry.value,
                )
                continue
            plugins[spec.name] = plugin
    return plugins


def metric_column(name: str) -> str:
    """The column of a metric as named on the command line: an adapted metric `LIBRARY:NAME` is the column
    `LIBRARY_NAME` (the prefix has no underscore, so the column names the metric alone: `adapted_name`);
    any other name is its own column.

    Example:
        >>> metric_column("piq:gmsd"), metric_column("psnr")
        ('piq_gmsd', 'psnr')
    """
    prefix, colon, rest = name.partition(":")
    return f"{prefix}_{rest}" if colon else name


def adapted_name(column: str) -> tuple[str, str] | None:
    """(library prefix, the library's metric name) of an adapted metric's column; None for other columns."""
    prefix, underscore, name = column.partition("_")
    if not underscore or not name or prefix not in adapter_entry_points():
        return None
    return prefix, name


@functools.cache
def adapter_entry_points() -> dict[str, metadata.EntryPoint]:
    """{prefix: entry point} of the metric adapters: this package's (`BUILTIN_ADAPTERS`), then those other
    packages register under `ADAPTER_GROUP` (a prefix already taken, or holding an underscore, is left out
    with a warning). Nothing is imported here."""
    builtin = BUILTIN_ADAPTERS.items()
    points = {name: metadata.EntryPoint(name, target, ADAPTER_GROUP) for name, target in builtin}
    for entry in metadata.entry_points(group=ADAPTER_GROUP):
        if entry.name in points or "_" in entry.name:
            log.warning("metric adapter %r (%s) is left out: its prefix is taken or holds '_'", entry.name,
                        entry.value)  # fmt: skip
            continue
        points[entry.name] = entry
    return points


@functools.cache
def metric_adapter(prefix: str) -> Any:
    """The `pipeline.metric_plugins.MetricAdapter` of a library prefix, loaded once.

    Raises:
        ConfigError: the adapter's library is not installed (the line names the extra that installs it).
    """
    entry = adapter_entry_points()[prefix]
    try:
        return entry.load()
    except ModuleNotFoundError as exc:
        builtin = prefix in BUILTIN_ADAPTERS
        extra = f"pip install 'iqa-pipeline[{prefix}]'" if builtin else f"install what {entry.value} needs"
        raise ConfigError(
            f"the metrics {prefix}:NAME need the {prefix} library, which cannot be imported ({exc}): {extra}"
        ) from None


@functools.cache
def adapted_plugin(column: str) -> Any:
    """The `pipeline.metric_plugins.MetricPlugin` of an adapted metric's column (`pyiqa_fsim`), made once.

    Raises:
        KeyError: the column is not an adapted metric's (no library prefix).
        ConfigError: the library is missing, or has no such full-reference metric (the line lists those it
            has), or the adapter cannot tell the metric's direction.
    """
    named = adapted_name(column)
    if named is None:
        raise KeyError(column)
    prefix, name = named
    return metric_adapter(prefix).plugin(name)


class MetricTable(Mapping[str, MetricSpec]):
    """The built-in metrics, then those of installed plugins (`installed_plugins`), looked up by column; the
    columns of adapted metrics (`pyiqa_fsim`: `adapted_plugin`) are found by name too, but not listed, since
    a library offers many. So are the columns that runs read here recorded and no installed plugin defines
    (`record`): a run scored with a plugin this machine lacks is still summarised, compared and reported on
    every column."""

    def __init__(self) -> None:
        self._recorded: dict[str, MetricSpec] = {}

    def _all(self) -> dict[str, MetricSpec]:
        return {**BUILTIN_METRICS, **{name: plugin.spec for name, plugin in installed_plugins().items()}}

    def __getitem__(self, name: str) -> MetricSpec:
        if name in BUILTIN_METRICS:
            return BUILTIN_METRICS[name]
        plugins = installed_plugins()
        if name in plugins:
            return plugins[name].spec
        if name in self._recorded:
            return self._recorded[name]
        try:
            return adapted_plugin(name).spec
        except ConfigError:
            raise KeyError(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __contains__(self, name: object) -> bool:
        try:
            self[str(name)]
        except KeyError:
            return False
        return True

    def scorable(self, name: str) -> bool:
        """Whether a built-in or an installed plugin defines column `name`: a column that runs only recorded
        is read, never scored (adapted metrics: `adapted_plugin`)."""
        return name in BUILTIN_METRICS or name in installed_plugins()

    def record(self, described: Mapping[str, Any]) -> list[str]:
        """Learn the plugin columns a run recorded (its manifest's `metric_plugins`: {column: {
        'higher_is_better', 'unit', 'description', 'tolerance', 'digits', ...}}); used only where no plugin
        installed here defines the column. The first record of a column stays.

        Returns:
            What could not be learnt, one sentence each: a malformed entry (left out), or a column an earlier
            run recorded with the other direction (the earlier record stays).

        Example:
            >>> table = MetricTable()
            >>> table.record({"l1": {"higher_is_better": False, "unit": "", "tolerance": 0.01}})
            []
            >>> table["l1"].higher_is_better, "l1" in table
            (False, True)
        """
        problems = []
        for name, entry in described.items():
            spec = _recorded_spec(name, entry)
            if spec is None:
                problems.append(
                    f"metric column {name!r}: its recorded description is malformed, so the column is left "
                    "out where its plugin is not installed"
                )
            elif name in BUILTIN_METRICS:
                continue
            elif name in self._recorded and self._recorded[name].higher_is_better != spec.higher_is_better:
                problems.append(
                    f"metric column {name!r} is recorded as higher- and as lower-is-better by two runs; the "
                    "first run's direction is used"
                )
            else:
                self._recorded.setdefault(name, spec)
        return problems


RECORDED_DEFAULTS = (("higher_is_better", None), ("tolerance", 0.0), ("digits", 4))


def _recorded_spec(name: Any, entry: Any) -> MetricSpec | None:
    """The MetricSpec of a manifest's `metric_plugins` entry; None when it is malformed. Manifests written
    before the tolerance and digits were recorded read as tolerance 0 (any worsening counts) and 4 digits."""
    if not isinstance(name, str) or not isinstance(entry, Mapping):
        return None
    direction, tolerance, digits = (entry.get(key, default) for key, default in RECORDED_DEFAULTS)
    if not isinstance(direction, bool) or not _is_number(tolerance):
        return None
    if digits is not None and not (_is_number(digits) and int(digits) == digits):
        return None
    return MetricSpec(
        name, direction, str(entry.get("unit") or ""), str(entry.get("description") or ""), float(tolerance),
        digits=None if digits is None else int(digits),
    )  # fmt: skip


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


METRICS = MetricTable()


class TableFormat(Choice):
    """How `iqa table` prints a table."""

    MD = "md"
    LATEX = "latex"
    CSV = "csv"
    HTML = "html"


class TableColumns(Choice):
    """What `iqa table --by` splits the columns by (besides the metric)."""

    GROUP = "group"


class SimilarMetric(Choice):
    """The metrics `iqa similar` compares images with."""

    SSIM = "ssim"
    MS_SSIM = "ms_ssim"
    PSNR = "psnr"
    LPIPS = "lpips"


SIMILAR_METRICS: tuple[str, ...] = SimilarMetric.values()


def metric_names(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Metric names from 'psnr,ssim' or a list, stripped, empty entries dropped, order kept.

    Example:
        >>> metric_names(" psnr, ssim ,")
        ('psnr', 'ssim')
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(str(item).strip() for item in items if str(item).strip())


def higher_is_better(metric: str) -> bool:
    """The direction of a metric of `METRICS`."""
    return METRICS[metric].higher_is_better

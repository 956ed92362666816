"""The run configuration: one typed model (pydantic) for YAML files, the command line and the Python API.

Values are checked strictly: a wrong type (`ms_ssim_scales: "5"`, `workers: true`), an unknown key or an
unknown choice ends in one `ConfigError` line naming the key, where it was given (file and line, or the
command-line option), what was given and what is allowed.

Example:
    >>> config = validate_config({"metrics": "psnr,ssim", "convention": "sr-paper", "scale": 4})
    >>> config.metrics, config.effective_crop
    (('psnr', 'ssim'), 4)
    >>> validate_config({"workers": True})
    Traceback (most recent call last):
    ...
    pipeline.errors.ConfigError: workers: got True (bool); input should be a valid integer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.choices import (
    BUILTIN_METRICS,
    METRICS,
    Convention,
    DatasetMetric,
    Device,
    InceptionResize,
    LpipsNet,
    SizeMismatch,
    adapted_name,
    adapted_plugin,
    adapter_entry_points,
    metric_column,
    metric_names,
)
from pipeline.conventions import SPECS
from pipeline.errors import ConfigError

PositiveInt = Annotated[int, Field(strict=True, ge=1)]
Count = Annotated[int, Field(strict=True, ge=0)]


class ScoreConfig(BaseModel):
    """Everything that decides how a run is scored and executed.

    `metrics` None means the default set (every metric; LPIPS is left out with a notice when its weights are
    missing). Fields in `VALUE_FIELDS` change metric values and make up `value_hash()`. `dataset_metrics`
    ('fid', 'kid'; none by default) are computed over the whole sets (`pipeline.dataset_metrics`) and
    change no row.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    metrics: tuple[str, ...] | None = None
    convention: Convention = Convention.DEFAULT
    scale: PositiveInt | None = None
    crop_border: Count | None = None
    size_mismatch: SizeMismatch = SizeMismatch.ERROR
    ms_ssim_scales: Annotated[int, Field(strict=True, ge=1, le=5)] = 5
    data_range: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    volumes: Annotated[bool, Field(strict=True)] = False
    lpips_net: LpipsNet = LpipsNet.ALEX
    lpips_weights: str | None = None
    output_suffix: str | None = None
    output_template: str | None = None
    output_regex: str | None = None
    group_depth: Count = 1
    scheduler: str | None = None
    scheduler_file: str | None = None
    workers: PositiveInt | None = None
    threads: PositiveInt | None = None
    device: Device = Device.AUTO
    shard_pairs: PositiveInt | None = None
    max_in_flight: PositiveInt | None = None
    report: Annotated[bool, Field(strict=True)] = True
    worst: Count = 8
    dataset_metrics: tuple[str, ...] = ()
    inception_weights: str | None = None
    inception_resize: InceptionResize = InceptionResize.TORCHMETRICS
    kid_subsets: PositiveInt = 100
    kid_subset_size: Annotated[int, Field(strict=True, ge=2)] = 1000

    VALUE_FIELDS: ClassVar[tuple[str, ...]] = (
        "convention", "scale", "crop_border", "size_mismatch", "ms_ssim_scales", "data_range", "volumes",
        "lpips_net",
    )  # fmt: skip

    @field_validator("metrics", mode="before")
    @classmethod
    def _metric_list(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str | list | tuple):
            raise ValueError(f"expected metric names, e.g. 'psnr,ssim', not a {type(value).__name__}")
        names = metric_names(value)
        if not names:
            raise ValueError(f"name at least one metric of {', '.join(METRICS)}")
        for name in names:
            _check_metric(name)
        return tuple(metric_column(name) for name in names)

    @field_validator("dataset_metrics", mode="before")
    @classmethod
    def _dataset_metric_list(cls, value: Any) -> Any:
        if value is None:
            return ()
        if not isinstance(value, str | list | tuple):
            raise ValueError(f"expected dataset metric names, e.g. 'fid,kid', not a {type(value).__name__}")
        names = metric_names(value)
        allowed = DatasetMetric.values()
        unknown = [name for name in names if name not in allowed]
        if unknown:
            raise ValueError(f"unknown dataset metric {unknown[0]!r}; choose from {', '.join(allowed)}")
        return tuple(dict.fromkeys(names))

    @field_validator("data_range", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float | None):
            raise ValueError("Input should be a number")
        return value

    @model_validator(mode="after")
    def _combinations(self) -> ScoreConfig:
        mappings = [m for m in ("output_suffix", "output_template", "output_regex") if getattr(self, m)]
        if len(mappings) > 1:
            given = " and ".join(mappings)
            raise ValueError(f"use only one of output_suffix, output_template and output_regex, not {given}")
        if self.scheduler and self.scheduler_file:
            raise ValueError("give either scheduler or scheduler_file, not both")
        if SPECS[self.convention].crop_from_scale and self.scale is None and self.crop_border is None:
            raise ValueError(
                f"convention {self.convention.value} crops the super-resolution scale from each border, but "
                "no scale was given: add --scale N (`scale: N` in a config file), or --crop-border N to crop "
                "N px (0: none)"
            )
        return self

    @property
    def chosen_metrics(self) -> tuple[str, ...]:
        """The metrics to score: the ones named, or every metric."""
        return self.metrics if self.metrics is not None else tuple(BUILTIN_METRICS)

    @property
    def effective_crop(self) -> int:
        """Border pixels cropped on each side: `crop_border` wins, else `scale` under a convention that crops
        the scale (sr-paper), else 0."""
        if self.crop_border is not None:
            return self.crop_border
        if self.scale is not None and SPECS[self.convention].crop_from_scale:
            return self.scale
        return 0

    def value_hash(
        self, lpips_backbone: str | None = None, plugins: dict[str, dict[str, Any]] | None = None
    ) -> str:
        """Hash of what changes metric values (used by `--resume`).

        Args:
            lpips_backbone: the sha256 of the LPIPS backbone file the run uses, when it scores LPIPS
                (`pipeline.metrics.lpips_weights.BackboneFile.sha256`).
            plugins: {column: provenance} of the plugin metrics (`measure.plugin_provenance`): their
                package versions and weights decide their values too.
        """
        payload = {name: _jsonable(getattr(self, name)) for name in self.VALUE_FIELDS}
        payload["metrics"] = list(self.chosen_metrics)
        payload["effective_crop"] = self.effective_crop
        if lpips_backbone is not None:
            payload["lpips_backbone"] = lpips_backbone
        if plugins:
            payload["plugins"] = plugins
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready field values (for the manifest)."""
        return {name: _jsonable(getattr(self, name)) for name in type(self).model_fields}


def _check_metric(name: str) -> None:
    """A metric that can be scored here: a built-in, an installed plugin's, or an adapted metric (its
    `LIBRARY:NAME` or its column).

    Raises:
        ValueError: what is wrong (an adapted metric's library missing or without that metric: its message).
    """
    column = metric_column(name)
    if adapted_name(column) is not None:
        try:
            adapted_plugin(column)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    elif not METRICS.scorable(column):
        adapters = ", ".join(f"{prefix}:NAME" for prefix in adapter_entry_points())
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRICS)} or {adapters}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Convention | SizeMismatch | Device | LpipsNet | InceptionResize):
        return value.value
    return value


FIELDS: tuple[str, ...] = tuple(ScoreConfig.model_fields)


def validate_config(values: Mapping[str, Any], where: Callable[[str], str] | None = None) -> ScoreConfig:
    """Build a ScoreConfig from `values`; the first problem becomes one ConfigError line.

    Args:
        values: field name (dashes or underscores) -> value.
        where: names where a key was given ('config.yaml line 3', '--workers'); default: nothing.
    """
    normalized = {str(key).replace("-", "_"): value for key, value in values.items()}
    try:
        return ScoreConfig.model_validate(normalized)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc.errors()[0], normalized, where)) from None


def _one_line(error: Mapping[str, Any], values: Mapping[str, Any], where: Callable[[str], str] | None) -> str:
    key = str(error["loc"][0]) if error["loc"] else ""
    place = where(key) if where and key else ""
    prefix = f"{place}: " if place else ""
    if error["type"] == "extra_forbidden":
        return f"{prefix}unknown key {key!r}. Known keys: {', '.join(FIELDS)}."
    given = values.get(key)
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    if error["type"] == "enum":
        choices = ScoreConfig.model_fields[key].annotation.values()
        message = f"unknown {key.replace('_', ' ')} {given!r}; choose one of {', '.join(choices)}"
    if not key:  # a rule on several keys: say where each of them was given
        named = [name for name in values if name in message and where and where(name)]
        given = "; ".join(f"{name} from {where(name)}" for name in named) if where else ""
        return f"{message}" + (f" ({given})." if given else ".")
    named = "" if place.startswith("option") else f"{key}: "
    return f"{prefix}{named}got {given!r} ({type(given).__name__}); {message}."


@dataclass
class ConfigFile:
    """The values of a YAML config file and the line of each key."""

    path: Path
    values: dict[str, Any]
    lines: dict[str, int] = field(default_factory=dict)

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"config file {self.path}" + (f" line {line}" if line else "")


def read_yaml(path: Path, what: str) -> tuple[Any, Any]:
    """Parse a YAML file into (data, node tree for line numbers); errors name `what`, file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        reason = exc.strerror or exc
        raise ConfigError(f"Cannot read {what.lower()} {path}: {reason}. Check the path.") from exc
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{what} {path}{where} is not valid YAML: {getattr(exc, 'problem', exc)}.") from exc


def key_lines(node: Any) -> dict[str, int]:
    """{key (underscores): 1-based line} of a YAML mapping node."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value).replace("-", "_"): k.start_mark.line + 1 for k, _ in node.value}


def load_config_file(path: str | Path) -> ConfigFile:
    """Read a YAML config file (a mapping of ScoreConfig keys); bad YAML is a ConfigError naming the line."""
    path = Path(path)
    data, node = read_yaml(path, "Config file")
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of key: value, got {type(data).__name__}.")
    values = {str(key).replace("-", "_"): value for key, value in data.items()}
    return ConfigFile(path, values, key_lines(node))


def build_config(file: ConfigFile | None = None, **options: Any) -> ScoreConfig:
    """Defaults < config file < command-line options (None in `options` means 'not given')."""
    given = {key: value for key, value in options.items() if value is not None}
    merged = {**(file.values if file else {}), **given}

    def where(key: str) -> str:
        if key in given:
            return f"option --{key.replace('_', '-')}"
        return file.where(key) if file else ""

    return validate_config(merged, where)

"""Typed run configuration: defaults, YAML loading (line and key named on errors), CLI overrides."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError

CONVENTIONS = ("default", "sr-paper")
SIZE_MISMATCH_POLICIES = ("error", "crop", "resize")
DEVICES = ("auto", "cpu", "cuda")
LPIPS_NETS = ("alex", "vgg", "squeeze")
DEFAULT_METRICS = ("psnr", "ssim", "ms_ssim", "lpips", "mse")


@dataclass
class ScoreConfig:
    """Everything that decides how a run is scored and executed.

    Fields that change metric values are part of `value_hash()`; execution fields are not.
    """

    metrics: tuple[str, ...] = DEFAULT_METRICS
    metrics_explicit: bool = False
    convention: str = "default"
    scale: int | None = None
    crop_border: int | None = None
    size_mismatch: str = "error"
    ms_ssim_scales: int = 5
    data_range: float | None = None
    volumes: bool = False
    lpips_net: str = "alex"
    lpips_weights: str | None = None
    output_suffix: str | None = None
    output_template: str | None = None
    output_regex: str | None = None
    group_depth: int = 1
    scheduler: str | None = None
    scheduler_file: str | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    device: str = "auto"
    shard_pairs: int | None = None
    max_in_flight: int | None = None
    report: bool = True
    worst: int = 8

    VALUE_FIELDS = (
        "metrics",
        "convention",
        "scale",
        "crop_border",
        "size_mismatch",
        "ms_ssim_scales",
        "data_range",
        "volumes",
        "lpips_net",
    )

    @property
    def effective_crop(self) -> int:
        """Border pixels cropped on each side: `--crop-border` wins, else `--scale`, else 0."""
        if self.crop_border is not None:
            return self.crop_border
        if self.scale is not None and self.convention == "sr-paper":
            return self.scale
        return 0

    def validate(self) -> ScoreConfig:
        """Raise ConfigError naming the bad value and the accepted ones."""
        from pipeline.metrics.registry import METRICS

        _require_choice("convention", self.convention, CONVENTIONS)
        _require_choice("size_mismatch", self.size_mismatch, SIZE_MISMATCH_POLICIES)
        _require_choice("device", self.device, DEVICES)
        _require_choice("lpips_net", self.lpips_net, LPIPS_NETS)
        if not self.metrics:
            raise ConfigError(
                "No metrics selected: pass --metrics with at least one of " + ", ".join(METRICS)
            )
        for name in self.metrics:
            _require_choice("metric", name, tuple(METRICS))
        for name in ("scale", "crop_border", "workers", "threads_per_worker", "shard_pairs", "max_in_flight"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ConfigError(f"{name} must be a non-negative integer, got {value!r}.")
        if not 1 <= self.ms_ssim_scales <= 5:
            raise ConfigError(f"ms_ssim_scales must be between 1 and 5, got {self.ms_ssim_scales}.")
        if self.group_depth < 0:
            raise ConfigError(f"group_depth must be >= 0, got {self.group_depth}.")
        mappings = [m for m in (self.output_suffix, self.output_template, self.output_regex) if m]
        if len(mappings) > 1:
            raise ConfigError("Use only one of output_suffix, output_template and output_regex.")
        if self.scheduler and self.scheduler_file:
            raise ConfigError("Give either --scheduler or --scheduler-file, not both.")
        return self

    def value_hash(self) -> str:
        """Hash of the fields that change metric values (used by --resume)."""
        payload = {name: _jsonable(getattr(self, name)) for name in self.VALUE_FIELDS}
        payload["effective_crop"] = self.effective_crop
        text = json.dumps(payload, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def _require_choice(what: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"Unknown {what} {value!r}: choose one of {', '.join(choices)}.")


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


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config into a dict of ScoreConfig field values.

    Keys may use dashes or underscores. Unknown keys and bad YAML raise ConfigError naming file, line and key.
    """
    path = Path(path)
    data, node = read_yaml(path, "Config file")
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file {path} must hold a mapping of option: value, got {type(data).__name__}."
        )
    lines = _key_lines(node)
    known = {f.name for f in fields(ScoreConfig)} - {"metrics_explicit"}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            line = lines.get(str(key))
            where = f" line {line}" if line else ""
            raise ConfigError(
                f"Config file {path}{where}: unknown key {key!r}. Known keys: {', '.join(sorted(known))}."
            )
        values[name] = value
    if "metrics" in values:
        metrics = values["metrics"]
        values["metrics"] = tuple(metrics.split(",") if isinstance(metrics, str) else metrics)
        values["metrics_explicit"] = True
    return values


def _key_lines(node: Any) -> dict[str, int]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}


def build_config(file_values: dict[str, Any] | None = None, **cli_values: Any) -> ScoreConfig:
    """Merge defaults < config file < CLI options (None in `cli_values` means 'not given')."""
    merged: dict[str, Any] = dict(file_values or {})
    merged.update({k: v for k, v in cli_values.items() if v is not None})
    try:
        config = ScoreConfig(**merged)
    except TypeError as exc:
        raise ConfigError(f"Bad configuration: {exc}.") from exc
    return config.validate()

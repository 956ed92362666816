"""pyiqa's full-reference metrics as metric plugins: `--metrics pyiqa:fsim` is the column `pyiqa_fsim`.

Each metric is `pyiqa.create_metric(name, as_loss=False, device=device)` (pyiqa's `InferenceModel`), built
once per worker and device, called as pyiqa documents it: `metric(output, reference)` on RGB (N, 3, H, W) in
[0, 1] (gray images replicated to RGB, as pyiqa's own image reader does), float32, with pyiqa's default
options for the metric (e.g. `ssim` on the Y channel). The direction is pyiqa's own `lower_better`; the
description quotes its `score_range`. Weights come from pyiqa's cache (`$TORCH_HOME/hub/pyiqa`) and
torchvision's (`$TORCH_HOME/hub/checkpoints`), downloaded by the client when online
(`pipeline.adapters`).

Example:
    >>> import torch
    >>> plugin = ADAPTER.plugin("gmsd")
    >>> plugin.name, plugin.spec.higher_is_better
    ('pyiqa_gmsd', False)
    >>> scorer = plugin.build_state(torch.device("cpu"), plugin.prepare())
    >>> ref = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> plugin.function(ref, ref, scorer).tolist()
    [0.0, 0.0]
"""

from __future__ import annotations

import logging
import re
from functools import partial

import pyiqa
import torch
from pyiqa.default_model_configs import DEFAULT_CONFIGS
from pyiqa.utils import download_util, get_root_logger

from pipeline.adapters import Scorer, adapted_plugin
from pipeline.choices import MetricSpec, metric_column
from pipeline.metric_plugins import MetricAdapter, MetricPlugin, installed_version

PREFIX = "pyiqa"
DECIBELS = ("psnr", "psnry")
DOWNLOAD_ALIASES = ((download_util, "download_url_to_file"),)  # pyiqa's own cache downloads
get_root_logger().setLevel(logging.WARNING)  # not one "Metric [...] is created." line per build


def full_reference_metrics() -> tuple[str, ...]:
    """pyiqa's full-reference metrics (`pyiqa.list_models(metric_mode='FR')`)."""
    return tuple(pyiqa.list_models(metric_mode="FR"))


def tolerance(score_range: str | None) -> float:
    """A thousandth of the upper end of pyiqa's `score_range` ('0, 1' -> 0.001, '~0, ~40' -> 0.04); 0.001
    when it has none.

    Example:
        >>> tolerance("~0, ~40"), tolerance("0, ~"), tolerance(None)
        (0.04, 0.001, 0.001)
    """
    upper = re.findall(r"-?\d+(?:\.\d+)?", (score_range or "").split(",")[-1])
    return round(float(upper[0]) / 1000, 6) if upper and float(upper[0]) > 1 else 0.001


def metric_spec(name: str) -> MetricSpec:
    """The column of pyiqa's metric `name`: its direction from pyiqa's `lower_better`."""
    config = DEFAULT_CONFIGS[name]
    score_range = config.get("score_range")
    description = (
        f"pyiqa {installed_version('pyiqa')} create_metric({name!r}), {config['metric_opts']['type']}"
        f"; pyiqa's score range {score_range}."
    )
    return MetricSpec(
        metric_column(f"{PREFIX}:{name}"),
        not config.get("lower_better", False),
        "dB" if name in DECIBELS else "",
        description,
        tolerance(score_range),
    )


def construct(name: str, device: torch.device) -> Scorer:
    """pyiqa's model of the metric on `device`, as (ref, out) -> (N,)."""
    model = pyiqa.create_metric(name, as_loss=False, device=device)
    return partial(score, model)


def score(model: torch.nn.Module, ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """pyiqa's call order: the distorted image first, then the reference."""
    return model(out, ref)


def make(name: str) -> MetricPlugin:
    """The plugin of pyiqa's full-reference metric `name`."""
    return adapted_plugin(metric_spec(name), "pyiqa", partial(construct, name), aliases=DOWNLOAD_ALIASES)


def unadapted(name: str) -> str | None:
    """Why a pyiqa metric that is not full-reference is not offered."""
    if name in DEFAULT_CONFIGS:
        return "is a no-reference metric of pyiqa, not a full-reference one"
    return None


ADAPTER = MetricAdapter(PREFIX, "pyiqa", names=full_reference_metrics, make=make, unadapted=unadapted)

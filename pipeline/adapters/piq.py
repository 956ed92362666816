"""piq's full-reference metrics as metric plugins: `--metrics piq:gmsd` is the column `piq_gmsd`.

A function metric is called as piq documents it, `piq.<name>(output, reference, data_range=1.0,
reduction='none')` on RGB (N, 3, H, W) in [0, 1] (gray replicated), float32, with piq's defaults otherwise
(e.g. `ssim` downsamples first). A network metric (`lpips`, `dists`, `pieapp`, `contentloss`, `styleloss`:
piq's classes, lower-cased) is built once per worker and device, `piq.<Class>(reduction='none')` in eval mode,
and called the same way; its weights come from torchvision's cache (`$TORCH_HOME/hub/checkpoints`), downloaded
by the client when online (`pipeline.adapters`).

piq declares no direction for its metrics, so `PIQ_METRICS` does, from each metric's definition (a
similarity: higher is better; a distance or a loss: lower); a piq name not in it is refused, not guessed.

Example:
    >>> import torch
    >>> plugin = ADAPTER.plugin("gmsd")
    >>> plugin.name, plugin.spec.higher_is_better
    ('piq_gmsd', False)
    >>> scorer = plugin.build_state(torch.device("cpu"), plugin.prepare())
    >>> ref = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> plugin.function(ref, ref, scorer).tolist()
    [0.0, 0.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import piq
import torch

from pipeline.adapters import Scorer, adapted_plugin
from pipeline.choices import MetricSpec, metric_column
from pipeline.metric_plugins import MetricAdapter, MetricPlugin, installed_version

PREFIX = "piq"


@dataclass(frozen=True)
class PiqMetric:
    """How one piq metric is called and which way is better.

    Attributes:
        attribute: its name in piq (a function, or a class for a network metric).
        higher_is_better: its direction (piq does not declare one).
        unit: the unit of a value.
        min_side: the shortest side piq accepts with its defaults.
        network: a class built once per worker, not a function.
        tolerance: the default regression tolerance of `iqa compare`.
    """

    attribute: str
    higher_is_better: bool
    unit: str = ""
    min_side: int = 1
    network: bool = False
    tolerance: float = 0.001


PIQ_METRICS: dict[str, PiqMetric] = {
    "psnr": PiqMetric("psnr", True, "dB", tolerance=0.05),
    "ssim": PiqMetric("ssim", True),
    "multi_scale_ssim": PiqMetric("multi_scale_ssim", True, min_side=161),
    "information_weighted_ssim": PiqMetric("information_weighted_ssim", True, min_side=161),
    "vif_p": PiqMetric("vif_p", True, min_side=41),
    "fsim": PiqMetric("fsim", True),
    "vsi": PiqMetric("vsi", True),
    "gmsd": PiqMetric("gmsd", False),
    "multi_scale_gmsd": PiqMetric("multi_scale_gmsd", False),
    "mdsi": PiqMetric("mdsi", False),
    "haarpsi": PiqMetric("haarpsi", True),
    "srsim": PiqMetric("srsim", True),
    "dss": PiqMetric("dss", True),
    "lpips": PiqMetric("LPIPS", False, network=True),
    "dists": PiqMetric("DISTS", False, network=True),
    "pieapp": PiqMetric("PieAPP", False, network=True),
    "contentloss": PiqMetric("ContentLoss", False, network=True),
    "styleloss": PiqMetric("StyleLoss", False, network=True),
}


def full_reference_metrics() -> tuple[str, ...]:
    """The metrics of `PIQ_METRICS` the installed piq has."""
    return tuple(name for name, metric in PIQ_METRICS.items() if hasattr(piq, metric.attribute))


def metric_spec(name: str) -> MetricSpec:
    """The column of piq's metric `name`, its direction from `PIQ_METRICS`."""
    metric = PIQ_METRICS[name]
    call = f"piq.{metric.attribute}(reduction='none')" if metric.network else f"piq.{metric.attribute}"
    return MetricSpec(
        metric_column(f"{PREFIX}:{name}"),
        metric.higher_is_better,
        metric.unit,
        f"piq {installed_version('piq')} {call}, data_range 1.",
        metric.tolerance,
        min_side=metric.min_side,
    )


def construct(name: str, device: torch.device) -> Scorer:
    """piq's function, or its network built on `device` in eval mode, as (ref, out) -> (N,)."""
    metric = PIQ_METRICS[name]
    if metric.network:
        network = getattr(piq, metric.attribute)(reduction="none").to(device).eval()
        return partial(score_network, network)
    return partial(score_function, getattr(piq, metric.attribute))


def score_function(function: object, ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """A piq function: the output first, then the reference, on [0, 1]."""
    return function(out, ref, data_range=1.0, reduction="none")


def score_network(network: torch.nn.Module, ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """A piq network metric: the output first, then the reference."""
    return network(out, ref)


def make(name: str) -> MetricPlugin:
    """The plugin of piq's metric `name`."""
    return adapted_plugin(metric_spec(name), "piq", partial(construct, name))


def unadapted(name: str) -> str | None:
    """Why a name piq has is not offered: no direction is declared for it here (none is guessed)."""
    if hasattr(piq, name) or any(attribute.lower() == name for attribute in dir(piq)):
        return (
            "is in piq, but has no declared direction here (piq declares none, and none is guessed; it may "
            "be a no-reference or a dataset metric)"
        )
    return None


ADAPTER = MetricAdapter(PREFIX, "piq", names=full_reference_metrics, make=make, unadapted=unadapted)

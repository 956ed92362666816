"""torchmetrics' full-reference image metrics as metric plugins: `--metrics torchmetrics:NAME`, NAME a
function of `torchmetrics.functional.image` (`structural_similarity_index_measure`), is the column
`torchmetrics_NAME`.

A metric is called as torchmetrics documents it,
`function(preds=output, target=reference, ...)` on RGB (N, 3, H, W) in [0, 1] (gray replicated), float32,
`data_range=1.0` where it takes one, with torchmetrics' defaults otherwise. `TORCHMETRICS_METRICS` says how
each gives one value per image: `reduction='none'` (a map is averaged per image, as its own 'elementwise_mean'
averages it over the batch), or one call per pair for functions that only reduce over the batch. LPIPS is
torchmetrics' class, built once per worker and device and called once per pair (the functional form rebuilds
the network on every call; DISTS, whose class does too, is not adapted). The direction is torchmetrics' own:
the `higher_is_better` of the metric's class in `torchmetrics.image`.

Example:
    >>> import torch
    >>> plugin = ADAPTER.plugin("universal_image_quality_index")
    >>> plugin.name, plugin.spec.higher_is_better
    ('torchmetrics_universal_image_quality_index', True)
    >>> scorer = plugin.build_state(torch.device("cpu"), plugin.prepare())
    >>> ref = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> [round(v, 4) for v in plugin.function(ref, ref, scorer).tolist()]
    [1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
import torchmetrics.functional.image as functional
import torchmetrics.image as modular

from pipeline.adapters import Scorer, adapted_plugin
from pipeline.choices import MetricSpec, metric_column
from pipeline.metric_plugins import MetricAdapter, MetricPlugin, installed_version

PREFIX = "torchmetrics"
Call = Literal["batched", "per_pair", "network"]


@dataclass(frozen=True)
class TorchmetricsMetric:
    """How one torchmetrics function gives a value per image.

    Attributes:
        class_name: its class in `torchmetrics.image`, whose `higher_is_better` is the direction (and which
            a network metric is built from).
        call: 'batched' (one call per batch, `keywords` giving per-image values or maps), 'per_pair' (one call
            per pair: the function reduces over the batch) or 'network' (the class, built once).
        keywords: passed to the function (or the class).
        unit: the unit of a value.
        min_side: the shortest side torchmetrics accepts with its defaults.
        tolerance: the default regression tolerance of `iqa compare`.
    """

    class_name: str
    call: Call = "batched"
    keywords: dict[str, Any] = field(default_factory=dict)
    unit: str = ""
    min_side: int = 1
    tolerance: float = 0.001


PER_IMAGE = {"reduction": "none"}
TORCHMETRICS_METRICS: dict[str, TorchmetricsMetric] = {
    "structural_similarity_index_measure": TorchmetricsMetric(
        "StructuralSimilarityIndexMeasure", keywords={**PER_IMAGE, "data_range": 1.0}
    ),
    "multiscale_structural_similarity_index_measure": TorchmetricsMetric(
        "MultiScaleStructuralSimilarityIndexMeasure", keywords={**PER_IMAGE, "data_range": 1.0}, min_side=161
    ),
    "peak_signal_noise_ratio": TorchmetricsMetric(
        "PeakSignalNoiseRatio",
        keywords={**PER_IMAGE, "data_range": 1.0, "dim": (1, 2, 3)},
        unit="dB",
        tolerance=0.05,
    ),
    "universal_image_quality_index": TorchmetricsMetric("UniversalImageQualityIndex", keywords=PER_IMAGE),
    "visual_information_fidelity": TorchmetricsMetric(
        "VisualInformationFidelity", keywords=PER_IMAGE, min_side=41
    ),
    "error_relative_global_dimensionless_synthesis": TorchmetricsMetric(
        "ErrorRelativeGlobalDimensionlessSynthesis", keywords=PER_IMAGE
    ),
    "spectral_angle_mapper": TorchmetricsMetric("SpectralAngleMapper", keywords=PER_IMAGE, unit="rad"),
    "spatial_correlation_coefficient": TorchmetricsMetric(
        "SpatialCorrelationCoefficient", keywords=PER_IMAGE
    ),
    "relative_average_spectral_error": TorchmetricsMetric("RelativeAverageSpectralError", "per_pair"),
    "root_mean_squared_error_using_sliding_window": TorchmetricsMetric(
        "RootMeanSquaredErrorUsingSlidingWindow", "per_pair"
    ),
    "learned_perceptual_image_patch_similarity": TorchmetricsMetric(
        "LearnedPerceptualImagePatchSimilarity", "network", keywords={"net_type": "alex", "normalize": True}
    ),
}


def full_reference_metrics() -> tuple[str, ...]:
    """The metrics of `TORCHMETRICS_METRICS` the installed torchmetrics has (function and class)."""
    return tuple(
        name
        for name, metric in TORCHMETRICS_METRICS.items()
        if hasattr(functional, name) and hasattr(modular, metric.class_name)
    )


def metric_spec(name: str) -> MetricSpec:
    """The column of torchmetrics' function `name`, its direction its class's `higher_is_better`."""
    metric = TORCHMETRICS_METRICS[name]
    shown = metric.class_name if metric.call == "network" else f"functional.image.{name}"
    return MetricSpec(
        metric_column(f"{PREFIX}:{name}"),
        bool(getattr(modular, metric.class_name).higher_is_better),
        metric.unit,
        f"torchmetrics {installed_version('torchmetrics')} {shown}, inputs in [0, 1].",
        metric.tolerance,
        min_side=metric.min_side,
    )


def construct(name: str, device: torch.device) -> Scorer:
    """torchmetrics' function of `name` (or its class built on `device`) as (ref, out) -> (N,)."""
    metric = TORCHMETRICS_METRICS[name]
    if metric.call == "network":
        network = getattr(modular, metric.class_name)(**metric.keywords).to(device).eval()
        return partial(each_pair, network_value, network)
    function = partial(getattr(functional, name), **metric.keywords)
    if metric.call == "per_pair":
        return partial(each_pair, function_value, function)
    return partial(per_image, function)


def per_image(function: Callable[..., torch.Tensor], ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """One call on the batch; a map (N, ...) averaged per image."""
    values = function(out, ref)
    return values.flatten(1).mean(1) if values.dim() > 1 else values


def each_pair(
    value: Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor],
    metric: Any,
    ref: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """One call per pair, for what reduces over its batch: (N,)."""
    return torch.stack([value(metric, ref[i : i + 1], out[i : i + 1]) for i in range(ref.shape[0])])


def function_value(
    function: Callable[..., torch.Tensor], ref: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    return function(out, ref).reshape(())


def network_value(network: Any, ref: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """A torchmetrics class on one pair: its state reset, the pair's value."""
    network.reset()
    return network(out, ref).reshape(())


def make(name: str) -> MetricPlugin:
    """The plugin of torchmetrics' function `name`."""
    return adapted_plugin(metric_spec(name), "torchmetrics", partial(construct, name))


def unadapted(name: str) -> str | None:
    """Why a function torchmetrics has is not offered: it is not a full-reference metric with a value per
    image (e.g. a no-reference or pan-sharpening metric), as `TORCHMETRICS_METRICS` declares them."""
    if name == "deep_image_structure_and_texture_similarity":
        return (
            "is not adapted: torchmetrics builds its VGG16 network, weights included, again on every call "
            "(use pyiqa:dists or piq:dists)"
        )
    if hasattr(functional, name):
        return "is in torchmetrics.functional.image, but not among the full-reference metrics declared here"
    return None


ADAPTER = MetricAdapter(PREFIX, "torchmetrics", names=full_reference_metrics, make=make, unadapted=unadapted)

"""Every named choice of the pipeline, defined once: metrics, conventions, size-mismatch policies, devices and
LPIPS backbones. The CLI, the config model, alignment, conventions, comparison and the report all read them
from here.

Example:
    >>> METRICS["lpips"].higher_is_better
    False
    >>> [policy.value for policy in SizeMismatch]
    ['error', 'crop', 'resize']
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


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


METRICS: dict[str, MetricSpec] = {
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

"""What each metric is: its direction, whether it needs a network, and its smallest usable image."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    """Static facts about one metric column."""

    name: str
    higher_is_better: bool
    unit: str
    needs_network: bool = False
    min_side: int = 1
    description: str = ""


METRICS: dict[str, MetricInfo] = {
    "psnr": MetricInfo("psnr", True, "dB", description="Peak signal-to-noise ratio, 10 log10(R^2 / MSE)."),
    "ssim": MetricInfo("ssim", True, "", min_side=11, description="SSIM, Wang et al. 2004, 11x11 Gaussian."),
    "ms_ssim": MetricInfo("ms_ssim", True, "", min_side=161, description="MS-SSIM, Wang et al. 2003."),
    "lpips": MetricInfo(
        "lpips", False, "", needs_network=True, description="LPIPS v0.1 (Zhang et al. 2018), lower is better."
    ),
    "mse": MetricInfo("mse", False, "(data units)^2", description="Mean squared error in data units."),
    "mae": MetricInfo("mae", False, "data units", description="Mean absolute error in data units."),
}

# Metrics written as Parquet columns (DESIGN.md section 8); `mae` is available in the library only.
COLUMN_METRICS: tuple[str, ...] = ("psnr", "ssim", "ms_ssim", "lpips", "mse")


def higher_is_better(name: str) -> bool:
    return METRICS[name].higher_is_better

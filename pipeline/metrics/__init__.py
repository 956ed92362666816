"""Pure, batched, differentiable image-quality metrics on (N, C, H, W) tensors; each returns (N,).

>>> from pipeline.metrics import psnr, ssim, ms_ssim, lpips
"""

from pipeline.metrics.losses import MSSSIMLoss, SSIMLoss
from pipeline.metrics.psnr import mae, mse, psnr
from pipeline.metrics.registry import METRICS, MetricInfo, higher_is_better
from pipeline.metrics.ssim import ms_ssim, ssim, ssim_and_ms_ssim, ssim_map

__all__ = [
    "METRICS",
    "MSSSIMLoss",
    "MetricInfo",
    "SSIMLoss",
    "higher_is_better",
    "lpips",
    "mae",
    "ms_ssim",
    "mse",
    "psnr",
    "ssim",
    "ssim_and_ms_ssim",
    "ssim_map",
]


def __getattr__(name: str):
    if name == "lpips":
        from pipeline.metrics.perceptual import lpips

        return lpips
    raise AttributeError(name)

"""Pure, batched, differentiable image-quality metrics on (N, C, H, W) tensors; each returns (N,).

Example:
    >>> import torch
    >>> from pipeline.metrics import psnr, ssim
    >>> x = torch.rand(2, 3, 32, 32)
    >>> ssim(x, x, data_range=1.0)
    tensor([1., 1.])
"""

from pipeline.metrics.losses import MSSSIMLoss, SSIMLoss
from pipeline.metrics.lpips_weights import build_lpips_network
from pipeline.metrics.perceptual import lpips
from pipeline.metrics.psnr import mae, mse, psnr
from pipeline.metrics.ssim import ms_ssim, ssim, ssim_and_ms_ssim, ssim_map

__all__ = [
    "MSSSIMLoss",
    "SSIMLoss",
    "build_lpips_network",
    "lpips",
    "mae",
    "ms_ssim",
    "mse",
    "psnr",
    "ssim",
    "ssim_and_ms_ssim",
    "ssim_map",
]

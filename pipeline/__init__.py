"""iqa-pipeline: dataset-level image-quality evaluation (PSNR, SSIM, MS-SSIM, LPIPS) on Dask."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_results"]


def __getattr__(name: str):
    if name == "load_results":
        from pipeline.sink import load_results

        return load_results
    raise AttributeError(name)

"""What each named convention costs: the metrics alone on one decoded pair, one thread, per convention.

    python scripts/bench_conventions.py            # astronaut (RGB) and camera (gray), 512 x 512, 5 repeats

Prints a Markdown table: milliseconds per pair for PSNR + SSIM + MS-SSIM through `pipeline.measure.measure`
(decoding excluded, the same for every convention), and each convention's time on the RGB pair relative
to `default`. The output is Gaussian noise (sigma 12) on scikit-image's photo.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import skimage.data
import torch

from pipeline.choices import Convention
from pipeline.conventions import resolve_convention
from pipeline.measure import Cache, measure

METRICS = ("psnr", "ssim", "ms_ssim")


def as_batch(image: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) -> (1, C, H, W)."""
    return torch.from_numpy((image if image.ndim == 3 else image[..., None]).transpose(2, 0, 1).copy())[None]


def noisy_pair(image: np.ndarray, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference, reference + noise) as (1, C, H, W) uint8 tensors."""
    noisy = np.clip(image + np.random.default_rng(seed).normal(0, 12, image.shape), 0, 255)
    return as_batch(image), as_batch(noisy.round().astype(np.uint8))


def milliseconds(convention: Convention, pair: tuple[torch.Tensor, torch.Tensor], repeats: int) -> float:
    """Median milliseconds of `measure` for one pair under `convention` (crop 4 for sr-paper)."""
    resolved = resolve_convention(convention, crop=4 if convention == Convention.SR_PAPER else 0)
    measure(*pair, 255.0, METRICS, resolved, Cache())  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        measure(*pair, 255.0, METRICS, resolved, Cache())
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    pairs = {
        "RGB 512x512": noisy_pair(skimage.data.astronaut()),
        "gray 512x512": noisy_pair(skimage.data.camera()),
    }
    print("| convention | " + " | ".join(f"{name} ms/pair" for name in pairs) + " | x default (RGB) |")
    print("|---|" + "---|" * (len(pairs) + 1))
    baseline = None
    for convention in Convention:
        cells = [milliseconds(convention, pair, args.repeats) for pair in pairs.values()]
        baseline = baseline or cells[0]
        shown = " | ".join(f"{value:.1f}" for value in cells)
        print(f"| `{convention.value}` | {shown} | {cells[0] / baseline:.1f}x |")


if __name__ == "__main__":
    main()

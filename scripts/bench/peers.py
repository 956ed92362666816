"""The per-pair loops a user writes with peer libraries: decode both files, convert, call the library.

PSNR+SSIM+MS-SSIM with scikit-image (no MS-SSIM there), pytorch-msssim (PSNR from the MSE in torch), piq,
torchmetrics and pyiqa (when installed); LPIPS with the `lpips` package. Each runs in one of two layouts on
the same cores: one process with `torch.set_num_threads(cores)` (`SINGLE`), or `cores` spawned processes with
one thread each (`POOL`). The libraries and torch are imported on first use, so that a fresh process pays
for them inside its timing.

    python -m bench.peers PEER LAYOUT PAIRS_JSON WORKERS   # one loop, start to exit (scripts/ on the path)
"""

from __future__ import annotations

import importlib.util
import math
import multiprocessing
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.pairs import PairPaths, pool_chunks, read_pairs

PIXEL_METRICS = ("psnr", "ssim", "ms_ssim")
LPIPS_METRICS = ("lpips",)
SINGLE, POOL = "single", "pool"
NOT_INSTALLED = "not installed (pip install '.[bench]')"
PYIQA_MISSING = (
    "not installed: `pip install pyiqa` pulls ~50 packages (transformers, datasets, timm, ...); its "
    "PSNR/SSIM/MS-SSIM import with `pip install --no-deps pyiqa` plus opencv-python-headless, requests and "
    "huggingface_hub (each with --no-deps and their own few needs)"
)

Scores = dict[str, float]


def decode_user(path: str) -> np.ndarray:
    """What a user writes: Pillow decode to uint8, gray kept as one channel, anything else as RGB."""
    with Image.open(path) as image:
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return np.asarray(image)


def to_tensor(pixels: np.ndarray) -> Any:
    """(H, W) or (H, W, C) uint8 -> (1, C, H, W) float32 torch tensor, values kept."""
    import torch

    tensor = torch.tensor(pixels, dtype=torch.float32)
    if tensor.dim() == 2:
        return tensor[None, None]
    return tensor.permute(2, 0, 1)[None]


def psnr_torch(x: Any, y: Any) -> float:
    """PSNR in dB of two tensors of data range 255, from their mean squared error."""
    import torch

    mse = torch.mean((x - y) ** 2)
    return float(10 * torch.log10(255.0**2 / mse))


def skimage_pixel(state: Any, ref: np.ndarray, out: np.ndarray) -> Scores:
    """PSNR and Gaussian SSIM with scikit-image on uint8 arrays (it has no MS-SSIM)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    channel_axis = -1 if ref.ndim == 3 else None
    ssim = structural_similarity(
        ref, out, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        channel_axis=channel_axis,
    )  # fmt: skip
    return {"psnr": float(peak_signal_noise_ratio(ref, out, data_range=255)), "ssim": float(ssim)}


def pytorch_msssim_pixel(state: Any, ref: np.ndarray, out: np.ndarray) -> Scores:
    """SSIM and MS-SSIM with pytorch-msssim, PSNR from the MSE in torch."""
    from pytorch_msssim import ms_ssim, ssim

    x, y = to_tensor(ref), to_tensor(out)
    return {
        "psnr": psnr_torch(x, y),
        "ssim": float(ssim(x, y, data_range=255, size_average=False)[0]),
        "ms_ssim": float(ms_ssim(x, y, data_range=255, size_average=False)[0]),
    }


def piq_pixel(state: Any, ref: np.ndarray, out: np.ndarray) -> Scores:
    """PSNR, SSIM (without its default downsampling) and MS-SSIM with piq."""
    import piq

    x, y = to_tensor(ref), to_tensor(out)
    return {
        "psnr": float(piq.psnr(x, y, data_range=255.0, reduction="none")[0]),
        "ssim": float(piq.ssim(x, y, data_range=255.0, reduction="none", downsample=False)[0]),
        "ms_ssim": float(piq.multi_scale_ssim(x, y, data_range=255.0, reduction="none")[0]),
    }


def torchmetrics_pixel(state: Any, ref: np.ndarray, out: np.ndarray) -> Scores:
    """PSNR, SSIM and MS-SSIM with torchmetrics' functional API, per image."""
    from torchmetrics.functional.image import (
        multiscale_structural_similarity_index_measure,
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    x, y = to_tensor(ref), to_tensor(out)
    return {
        "psnr": float(peak_signal_noise_ratio(x, y, data_range=255.0, reduction="none", dim=(1, 2, 3))[0]),
        "ssim": float(structural_similarity_index_measure(x, y, data_range=255.0, reduction="none")[0]),
        "ms_ssim": float(
            multiscale_structural_similarity_index_measure(x, y, data_range=255.0, reduction="none")[0]
        ),
    }


def lpips_setup() -> Any:
    """The `lpips` package's AlexNet LPIPS in eval mode (its backbone from torchvision's cache)."""
    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net="alex", verbose=False).eval()


def lpips_package(network: Any, ref: np.ndarray, out: np.ndarray) -> Scores:
    """LPIPS with the `lpips` package's network on inputs mapped to [-1, 1], gray replicated to RGB."""
    x, y = to_tensor(ref), to_tensor(out)
    if x.shape[1] == 1:
        x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
    return {"lpips": float(network(x / 127.5 - 1, y / 127.5 - 1).flatten()[0])}


def pyiqa_setup() -> Any:
    """pyiqa's PSNR, SSIM and MS-SSIM metrics on RGB as stored (not its default Y channel), on CPU."""
    import pyiqa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            name: pyiqa.create_metric(name, test_y_channel=False, device="cpu", as_loss=False)
            for name in PIXEL_METRICS
        }


def pyiqa_pixel(metrics: Any, ref: np.ndarray, out: np.ndarray) -> Scores:
    """pyiqa's metrics on inputs scaled to [0, 1]."""
    x, y = to_tensor(ref) / 255.0, to_tensor(out) / 255.0
    return {name: float(metric(x, y).flatten()[0]) for name, metric in metrics.items()}


@dataclass(frozen=True)
class Peer:
    """A peer library: the metrics its loop computes, how it scores one pair, what it builds once."""

    name: str
    package: str
    metrics: tuple[str, ...]
    score: Callable[[Any, np.ndarray, np.ndarray], Scores]
    setup: Callable[[], Any] | None = None
    note: str = ""
    sample: int | None = None  # slow peers: timed once, on this many pairs spread over the dataset

    def pairs_for(self, pairs: list[PairPaths]) -> list[PairPaths]:
        """The pairs this peer is timed on: all of them, or every n-th for a slow peer."""
        if self.sample is None or len(pairs) <= self.sample:
            return pairs
        return pairs[:: math.ceil(len(pairs) / self.sample)]


PEERS = {
    peer.name: peer
    for peer in (
        Peer("scikit-image", "skimage", ("psnr", "ssim"), skimage_pixel, note="no MS-SSIM in scikit-image"),
        Peer(
            "pytorch-msssim",
            "pytorch_msssim",
            PIXEL_METRICS,
            pytorch_msssim_pixel,
            note="PSNR from the MSE in torch",
        ),
        Peer("piq", "piq", PIXEL_METRICS, piq_pixel, note="ssim(downsample=False)"),
        Peer("torchmetrics", "torchmetrics", PIXEL_METRICS, torchmetrics_pixel),
        Peer(
            "pyiqa",
            "pyiqa",
            PIXEL_METRICS,
            pyiqa_pixel,
            setup=pyiqa_setup,
            note="create_metric(..., test_y_channel=False), float64, inputs / 255",
            sample=12,
        ),
        Peer(
            "lpips", "lpips", LPIPS_METRICS, lpips_package, setup=lpips_setup, note="lpips.LPIPS(net='alex')"
        ),
    )
}

_STATES: dict[str, Any] = {}


def choose_peers(wanted: str | None) -> tuple[list[str], dict[str, str]]:
    """The installed peers among `wanted` (comma-separated; None: all), and why each other one is left out.

    Raises:
        SystemExit: `wanted` names a peer this module does not know.
    """
    names = list(PEERS) if wanted is None else [name for name in wanted.split(",") if name]
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        raise SystemExit(f"--peers: unknown {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    available, skipped = [], {}
    for name in (name for name in PEERS if name in names):
        if importlib.util.find_spec(PEERS[name].package) is not None:
            available.append(name)
        else:
            skipped[name] = PYIQA_MISSING if name == "pyiqa" else NOT_INSTALLED
    return available, skipped


def run_peer(name: str, pairs: list[PairPaths]) -> dict[str, Scores]:
    """The user's loop: for every pair decode both files, convert, score; returns {key: {metric: value}}."""
    import torch

    peer = PEERS[name]
    if name not in _STATES:
        _STATES[name] = peer.setup() if peer.setup else None
    state = _STATES[name]
    values = {}
    with torch.no_grad():
        for pair in pairs:
            values[pair.key] = peer.score(state, decode_user(pair.ref), decode_user(pair.out))
    return values


def init_pool_worker(threads: int, peers: list[str], warm_pair: PairPaths | None) -> None:
    """Pool initializer: `threads` torch threads, each peer's library imported and its model built."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    for name in peers:
        run_peer(name, [warm_pair] if warm_pair else [])


def run_chunk(job: tuple[str, list[PairPaths]]) -> dict[str, Scores]:
    """`run_peer` on one (peer, pairs) chunk of a pool's work."""
    return run_peer(*job)


def run_in_pool(pool: Pool, name: str, pairs: list[PairPaths], workers: int) -> dict[str, Scores]:
    """One peer's loop over `pairs`, split into chunks over a started pool of `workers` processes."""
    values: dict[str, Scores] = {}
    jobs = [(name, chunk) for chunk in pool_chunks(pairs, workers)]
    for part in pool.map(run_chunk, jobs, chunksize=1):
        values.update(part)
    return values


def run_peer_process(name: str, layout: str, pairs: list[PairPaths], workers: int) -> None:
    """What a user's script does from start to exit: one thread per worker in a pool, or all in one."""
    if layout == SINGLE:
        import torch

        torch.set_num_threads(workers)
        run_peer(name, pairs)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, init_pool_worker, (1, [name], None)) as pool:
        run_in_pool(pool, name, pairs, workers)


def main(argv: list[str]) -> int:
    """`python -m bench.peers PEER LAYOUT PAIRS_JSON WORKERS`."""
    name, layout, pairs_file, workers = argv
    run_peer_process(name, layout, read_pairs(Path(pairs_file)), int(workers))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

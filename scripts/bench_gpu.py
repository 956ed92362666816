"""The GPU check of issue 6: LPIPS-alex on 512 x 512 RGB pairs, CUDA values against CPU, what bounds speed.

    python scripts/bench_gpu.py                           # 600 pairs, CUDA (target: 500 pairs/s)
    python scripts/bench_gpu.py --device cpu --photos 2   # the same steps on CPU (a smoke run)

One run prints, on the same pairs:
1. values: `score_folders` with PSNR, SSIM, MS-SSIM and LPIPS on `--device` and on CPU over the distinct
   pairs; the max |difference| per metric;
2. network only: the LPIPS network on batches of pairs already on the device, pairs/s (the device's bound);
3. decode only: `compute.prefetch` of `load_pair` with the worker's decode threads (`decode_threads`), pairs/s
   (what decoding can feed);
4. end to end: `score_folders` with LPIPS, started (after a warm-up call), pairs/s, and its fraction of the
   lower of the two bounds;
5. the `lpips` package looping over the pairs on the same device (decode included), pairs/s.
The AlexNet backbone is made with `torch.manual_seed(0)` in a temporary TORCH_HOME (no download); speed does
not depend on the weight values. Pairs: 12 photos from scikit-image, each cropped to 512 x 512 RGB, with
5 degradations (`bench.py`'s), repeated in copy-i/ folders up to `--pairs`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SIDE = 512
TARGET_GPU_PAIRS_PER_S = 500


def build_square_pairs(root: Path, photos: int | None = None) -> int:
    """`bench.build_dataset` with every photo cropped to 512 x 512 RGB (the first `photos` photos, default
    all 12): root/reference and root/output; returns the pair count."""
    import bench
    from PIL import ImageOps

    def square_rgb(photo):
        return ImageOps.fit(photo.convert("RGB"), (SIDE, SIDE))

    limit = photos * bench.PAIRS_PER_PHOTO if photos else None
    return bench.build_dataset(root, limit=limit, prepare=square_rgb)


def score_config(metrics: tuple[str, ...], weights: str, device: str):
    from pipeline.config import ScoreConfig

    return ScoreConfig(metrics=metrics, report=False, lpips_weights=weights, device=device)


def timed_score(ref_dir: Path, out_dir: Path, run_dir: Path, config) -> tuple[float, object]:
    """One `score_folders` run into `run_dir`: (wall seconds, its results as a DataFrame)."""
    import shutil

    from pipeline.results import load_results
    from pipeline.scoring import score_folders

    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    result = score_folders(ref_dir, out_dir, run_dir, config, progress=False)
    seconds = time.perf_counter() - start
    if result.counts["error"]:
        raise SystemExit(f"{result.counts['error']} pairs failed; see {run_dir}")
    return seconds, load_results(run_dir)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def network_rate(weights: str, device, batch: int, seconds: float = 3.0) -> float:
    """Pairs/s of the LPIPS network alone on (batch, 3, 512, 512) uint8 pairs already on the device."""
    import torch

    from pipeline.metrics.lpips_weights import build_lpips_network
    from pipeline.metrics.perceptual import lpips_of_stored_values

    network = build_lpips_network("alex", weights, device=device, allow_download=False)
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, SIDE, SIDE), dtype=torch.uint8, generator=generator).to(device)
    y = torch.randint(0, 256, (batch, 3, SIDE, SIDE), dtype=torch.uint8, generator=generator).to(device)
    with torch.inference_mode():
        for _ in range(3):
            lpips_of_stored_values(x, y, data_range=255.0, network=network)
        synchronize(device)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            lpips_of_stored_values(x, y, data_range=255.0, network=network)
            calls += 1
        synchronize(device)
    return calls * batch / (time.perf_counter() - start)


def decode_rate(ref_dir: Path, out_dir: Path, device) -> tuple[float, int]:
    """(pairs/s, threads) of loading every pair the way a worker on `device` does."""
    from bench_decode_threads import decode_seconds, pair_tasks

    from pipeline.worker import decode_threads

    tasks = pair_tasks(ref_dir, out_dir)
    threads = decode_threads(device)
    decode_seconds(tasks[: 4 * max(threads, 1)], threads)  # warm up
    return len(tasks) / decode_seconds(tasks, threads), threads


def lpips_package_rate(ref_dir: Path, out_dir: Path, device, limit: int) -> float:
    """Pairs/s of a per-pair loop over the `lpips` package on `device`, decoding with Pillow."""
    import bench
    import torch

    network = bench.lpips_setup().to(device)
    pairs = bench.list_pairs(ref_dir, out_dir)[:limit]

    def score(pair) -> float:
        x, y = (bench.to_tensor(bench.decode_user(p)).to(device) / 127.5 - 1 for p in (pair.ref, pair.out))
        return float(network(x, y).flatten()[0])

    with torch.no_grad():
        for pair in pairs[:3]:
            score(pair)
        synchronize(device)
        start = time.perf_counter()
        for pair in pairs:
            score(pair)
        synchronize(device)
    return len(pairs) / (time.perf_counter() - start)


def max_differences(ours, reference, metrics: tuple[str, ...]) -> dict[str, float]:
    """Max |ours - reference| per metric over the keys of both (infinite PSNRs left out)."""
    import numpy as np

    joined = ours[["key", *metrics]].merge(reference[["key", *metrics]], on="key", suffixes=("", "_cpu"))
    differences = {}
    for metric in metrics:
        delta = np.abs(joined[metric].to_numpy(float) - joined[f"{metric}_cpu"].to_numpy(float))
        differences[metric] = float(np.nanmax(np.where(np.isfinite(delta), delta, np.nan)))
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--pairs", type=int, default=600, help="pairs of 512 x 512 RGB (60 distinct)")
    parser.add_argument("--photos", type=int, default=None, help="use only the first N photos (smoke runs)")
    parser.add_argument("--batch", type=int, default=32, help="pairs per batch for the network-only rate")
    parser.add_argument("--repeats", type=int, default=3, help="timed end-to-end runs (median reported)")
    args = parser.parse_args(argv)
    import bench
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible: nothing to measure (use --device cpu for a smoke run)")
        return 0
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="iqa-gpu-bench-") as scratch:
        work = Path(scratch)
        os.environ["TORCH_HOME"] = str(work / "torch_home")
        weights = str(bench.seeded_alexnet(work / "torch_home"))
        distinct = build_square_pairs(work / "base", args.photos)
        copies = max(1, -(-args.pairs // distinct))
        ref_dir, out_dir = bench.scaled_dataset(
            work / "base/reference", work / "base/output", work / "all", copies
        )
        check_ref, check_out = work / "all/reference/copy-0", work / "all/output/copy-0"
        pairs = len(bench.list_pairs(ref_dir, out_dir))
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(
            f"device: {name}; {pairs} pairs of {SIDE} x {SIDE} RGB ({distinct} distinct); "
            f"cores: {os.cpu_count()}"
        )

        every = ("psnr", "ssim", "ms_ssim", "lpips")
        _, ours = timed_score(
            check_ref, check_out, work / "runs/check", score_config(every, weights, args.device)
        )
        _, cpu = timed_score(
            check_ref, check_out, work / "runs/check-cpu", score_config(every, weights, "cpu")
        )
        differences = max_differences(ours, cpu, every)
        print("1. max |difference| from CPU: " + ", ".join(f"{m} {v:.1e}" for m, v in differences.items()))

        network = network_rate(weights, device, args.batch)
        print(f"2. LPIPS network only, batches of {args.batch}: {network:.1f} pairs/s")
        decode, threads = decode_rate(ref_dir, out_dir, device)
        print(f"3. decode only, {threads} decode thread(s): {decode:.1f} pairs/s")

        config = score_config(("lpips",), weights, args.device)
        timed_score(ref_dir, out_dir, work / "runs/warm-up", config)
        rates = [
            pairs / timed_score(ref_dir, out_dir, work / f"runs/e2e-{i}", config)[0]
            for i in range(args.repeats)
        ]
        rate = statistics.median(rates)
        bound = min(network, decode)
        print(
            f"4. iqa score --metrics lpips, started: {rate:.1f} pairs/s (runs: "
            + ", ".join(f"{r:.1f}" for r in rates)
            + f"); {rate / bound:.2f} of the lower bound ({'decode' if decode < network else 'network'})"
        )
        package = lpips_package_rate(ref_dir, out_dir, device, limit=min(pairs, 300))
        print(f"5. lpips package loop: {package:.1f} pairs/s; iqa score / it: {rate / package:.2f}x")
        if device.type == "cuda":
            verdict = "PASS" if rate >= TARGET_GPU_PAIRS_PER_S else "FAIL"
            print(f"{verdict}: LPIPS-alex, 512 px, {rate:.1f} pairs/s on {name} (target >= 500 on one H100)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The GPU check of issue 6: LPIPS-alex on 512 x 512 RGB pairs, CUDA values against CPU, what bounds speed.

    python scripts/bench_gpu.py                           # 600 pairs, CUDA (target: 500 pairs/s)
    python scripts/bench_gpu.py --device cpu --photos 2   # the same steps on CPU (a smoke run)

One run prints, on the same pairs:
1. values: `pipeline.score` with PSNR, SSIM, MS-SSIM and LPIPS on `--device` and on CPU over the distinct
   pairs; the max |difference| per metric;
2. network only: the LPIPS network on batches of pairs already on the device, pairs/s (the device's bound);
3. decode only: `worker.prefetch` of `load_pair` with the worker's decode threads (`decode_threads`), pairs/s
   (what decoding can feed);
4. end to end: `pipeline.score` with LPIPS, started (after a warm-up call), pairs/s, and its fraction of the
   lower of the two bounds;
5. the `lpips` package looping over the pairs on the same device (decode included), pairs/s.
The AlexNet backbone is made with `torch.manual_seed(0)` in a temporary TORCH_HOME (no download); speed does
not depend on the weight values. Pairs: 12 photos from scikit-image, each cropped to 512 x 512 RGB, with
5 degradations (`bench.dataset.build_dataset`'s), repeated in copy-i/ folders up to `--pairs`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench.dataset import build_square_dataset, list_pairs, scaled_dataset, seeded_alexnet
from bench.peers import decode_user, lpips_setup, to_tensor
from bench.report import max_abs_difference
from bench.timing import run_values, score_started, usable_cores
from bench_decode_threads import decode_seconds, pair_tasks

from pipeline.metrics.lpips_weights import build_lpips_network
from pipeline.metrics.perceptual import lpips_of_stored_values
from pipeline.worker import decode_threads

SIDE = 512
TARGET_GPU_PAIRS_PER_S = 500
EVERY_METRIC = ("psnr", "ssim", "ms_ssim", "lpips")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (nothing to wait for on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def network_rate(weights: str, device: torch.device, batch: int, seconds: float = 3.0) -> float:
    """Pairs/s of the LPIPS network alone on (batch, 3, 512, 512) uint8 pairs already on the device."""
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


def decode_rate(ref_dir: Path, out_dir: Path, device: torch.device) -> tuple[float, int]:
    """(pairs/s, threads) of loading every pair the way a worker on `device` does."""
    tasks = pair_tasks(ref_dir, out_dir)
    threads = decode_threads(device)
    decode_seconds(tasks[: 4 * max(threads, 1)], threads)  # warm up
    return len(tasks) / decode_seconds(tasks, threads), threads


def lpips_package_rate(ref_dir: Path, out_dir: Path, device: torch.device, limit: int) -> float:
    """Pairs/s of a per-pair loop over the `lpips` package on `device`, decoding with Pillow."""
    network = lpips_setup().to(device)
    pairs = list_pairs(ref_dir, out_dir)[:limit]

    def score(pair) -> float:
        x, y = (to_tensor(decode_user(p)).to(device) / 127.5 - 1 for p in (pair.ref, pair.out))
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


def value_differences(work: Path, weights: str, device: str) -> dict[str, float | None]:
    """Max |difference| per metric between runs on `device` and on CPU over the distinct pairs (copy-0)."""
    ref_dir, out_dir = work / "all/reference/copy-0", work / "all/output/copy-0"
    values = []
    for index, on in enumerate((device, "cpu")):
        _, run = score_started(ref_dir, out_dir, work / f"runs/check-{index}", EVERY_METRIC, weights, on)
        values.append(run_values(run, EVERY_METRIC))
    return {metric: max_abs_difference(*values, metric) for metric in EVERY_METRIC}


def end_to_end_rates(
    ref_dir: Path, out_dir: Path, work: Path, weights: str, device: str, repeats: int
) -> list[float]:
    """Pairs/s of `pipeline.score --metrics lpips` started, `repeats` times after an untimed warm-up call."""
    runs = [
        score_started(ref_dir, out_dir, work / f"runs/e2e-{i}", ("lpips",), weights, device)
        for i in range(repeats + 1)
    ]
    return [run.counts["pairs"] / seconds for seconds, run in runs[1:]]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--pairs", type=int, default=600, help="pairs of 512 x 512 RGB (60 distinct)")
    parser.add_argument("--photos", type=int, default=None, help="use only the first N photos (smoke runs)")
    parser.add_argument("--batch", type=int, default=32, help="pairs per batch for the network-only rate")
    parser.add_argument("--repeats", type=int, default=3, help="timed end-to-end runs (median reported)")
    return parser.parse_args(argv)


def build_pairs(work: Path, photos: int | None, pairs: int) -> tuple[Path, Path, int]:
    """The square pairs under work/all, `copy-i/` folders up to `pairs`: (reference, output, distinct)."""
    distinct = build_square_dataset(work / "base", SIDE, photos)
    copies = max(1, -(-pairs // distinct))
    ref_dir, out_dir = scaled_dataset(work / "base/reference", work / "base/output", work / "all", copies)
    return ref_dir, out_dir, distinct


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible: nothing to measure (use --device cpu for a smoke run)")
        return 0
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    with tempfile.TemporaryDirectory(prefix="iqa-gpu-bench-") as scratch:
        work = Path(scratch)
        os.environ["TORCH_HOME"] = str(work / "torch_home")
        weights = str(seeded_alexnet(work / "torch_home"))
        ref_dir, out_dir, distinct = build_pairs(work, args.photos, args.pairs)
        pairs = len(list_pairs(ref_dir, out_dir))
        shape = f"{SIDE} x {SIDE} RGB"
        print(f"device: {name}; {pairs} pairs of {shape} ({distinct} distinct); cores: {usable_cores()}")
        differences = value_differences(work, weights, args.device)
        print("1. max |difference| from CPU: " + ", ".join(f"{m} {v:.1e}" for m, v in differences.items()))
        network = network_rate(weights, device, args.batch)
        print(f"2. LPIPS network only, batches of {args.batch}: {network:.1f} pairs/s")
        decode, threads = decode_rate(ref_dir, out_dir, device)
        print(f"3. decode only, {threads} decode thread(s): {decode:.1f} pairs/s")
        rates = end_to_end_rates(ref_dir, out_dir, work, weights, args.device, args.repeats)
        rate, bound = statistics.median(rates), min(network, decode)
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

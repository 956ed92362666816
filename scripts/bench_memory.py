"""Peak memory of scoring large pairs (issue 16: a whole run stays under 2 GB on 4096x4096 RGB).

    python scripts/bench_memory.py                  # 4096x4096 RGB, default metrics, both conventions
    python scripts/bench_memory.py --size 8192

Two kinds of measurement, each in a fresh child process that reports its own peak RSS (VmHWM, which unlike
`ru_maxrss` does not start from the parent's peak):

* one task: the worker's scoring function (`pipeline.worker.score_shard`) on two pairs with one torch
  thread, next to the child's RSS right after importing torch and the pipeline, so the figure shows what
  scoring adds. This is what each task thread of a worker needs.
* the whole `iqa score` process with its default embedded cluster (on up to 4 cores one in-process worker
  with a task thread per core, so that many pairs are in memory at once), on four pairs, all metrics.

LPIPS uses a seeded AlexNet checkpoint (speed and memory do not depend on the weight values). The last line
is PASS/FAIL: the whole run's largest process under 2 GiB (issue 16, at 4096 x 4096).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench.dataset import seeded_alexnet
from bench.timing import child_json, process_env, score_arguments
from make_demo_data import open_photo
from PIL import Image

PEAK_MB = r"""
def peak_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
"""
ONE_TASK = (
    PEAK_MB
    + r"""
import json, sys
import torch
from pipeline.worker import PairTask, ShardSettings, score_shard
baseline = peak_mb()
folder, convention, metrics, weights = sys.argv[1], sys.argv[2], tuple(sys.argv[3].split(",")), sys.argv[4]
tasks = [PairTask(f"k{i}", "", f"{folder}/reference/p{i}.png", f"{folder}/output/p{i}.png") for i in range(2)]
settings = ShardSettings(metrics=metrics, convention=convention, crop=4 if convention == "sr-paper" else 0,
                         lpips_weights=weights or None, device="cpu")
torch.set_num_threads(1)
rows = score_shard(tasks, settings).rows
assert all(r.ok for r in rows), [r.error for r in rows]
values = {m: getattr(rows[0], m) for m in metrics}
print(json.dumps({"import_rss_mb": baseline, "peak_rss_mb": peak_mb(), "values": values}))
"""
)
WHOLE_RUN = (
    PEAK_MB
    + r"""
import json, resource, runpy, sys
sys.argv = ["pipeline", *sys.argv[1:]]
try:
    runpy.run_module("pipeline", run_name="__main__", alter_sys=True)
finally:
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mb": max(peak_mb(), children)}))
"""
)


PAIRS = 4
ALL_METRICS = ("psnr", "ssim", "ms_ssim", "lpips", "mse")
LIMIT_MB = 2048  # issue 16: a whole run at 4096 x 4096 stays under 2 GiB (peak RSS in MiB)
TASK_CASES = (  # (convention, metrics, with the LPIPS weights)
    ("default", "psnr,ssim,ms_ssim,mse", False),
    ("sr-paper", "psnr,ssim,ms_ssim,mse", False),
    ("default", "lpips", True),
    ("default", "psnr,ssim,ms_ssim,lpips,mse", True),
    ("sr-paper", "psnr,ssim,ms_ssim,lpips,mse", True),
)


def make_pairs(folder: Path, size: int) -> None:
    """folder/reference/p{i}.png and folder/output/p{i}.png: a photo and a noisy copy, `PAIRS` times."""
    big = np.asarray(open_photo("astronaut.png").convert("RGB").resize((size, size), Image.BICUBIC))
    rng = np.random.default_rng(0)
    for side in ("reference", "output"):
        (folder / side).mkdir()
    for index in range(PAIRS):
        noisy = np.clip(big + rng.normal(0, 10, big.shape), 0, 255).astype(np.uint8)
        Image.fromarray(big).save(folder / "reference" / f"p{index}.png", compress_level=1)
        Image.fromarray(noisy).save(folder / "output" / f"p{index}.png", compress_level=1)


def whole_run_peak_mb(folder: Path, weights: Path) -> float:
    """Peak RSS of the largest process of an `iqa score` run (default layout) scoring every pair with all
    metrics: the CLI's process (`python -m pipeline` run in a child that reports its own peak) or any
    worker process it started."""
    arguments = score_arguments(
        folder / "reference", folder / "output", folder / "run", ALL_METRICS, str(weights)
    )
    return child_json([sys.executable, "-c", WHOLE_RUN, *arguments])["peak_rss_mb"]


def one_task(folder: Path, convention: str, metrics: str, weights: str) -> dict:
    """{'import_rss_mb', 'peak_rss_mb', 'values'} of a child scoring two pairs with `score_shard`."""
    return child_json(
        [sys.executable, "-c", ONE_TASK, str(folder), convention, metrics, weights], process_env(1)
    )


def main(argv: list[str] | None = None) -> int:
    """Print the whole run's peak, each task case's peak, and the verdict on the whole run; returns 0."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args(argv)
    shape = f"{args.size}x{args.size} RGB"
    with tempfile.TemporaryDirectory(prefix="iqa-memory-") as tmp:
        folder = Path(tmp)
        make_pairs(folder, args.size)
        weights = seeded_alexnet(folder / "torch_home")
        peak = whole_run_peak_mb(folder, weights)
        metrics = ",".join(ALL_METRICS)
        print(f"{shape}  iqa score (default layout, {PAIRS} pairs)  {metrics}  peak RSS {peak:7.0f} MB")
        for convention, names, with_weights in TASK_CASES:
            result = one_task(folder, convention, names, str(weights) if with_weights else "")
            peaks = (
                f"peak RSS {result['peak_rss_mb']:7.0f} MB (after imports {result['import_rss_mb']:5.0f} MB)"
            )
            print(f"{shape}  one task  {convention:8s}  {names:26s}  {peaks}", flush=True)
    verdict = "PASS" if peak < LIMIT_MB else "FAIL"
    print(
        f"{verdict}: whole `iqa score` run at {shape}, largest process {peak:.0f} MB (target < {LIMIT_MB} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

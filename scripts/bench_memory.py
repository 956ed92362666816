"""Peak memory of scoring large pairs (issue 6: a worker stays under 2 GB on 4096x4096 RGB).

    python scripts/bench_memory.py                  # 4096x4096 RGB, default metrics, both conventions
    python scripts/bench_memory.py --size 8192

Two kinds of measurement, each in a fresh child process whose peak RSS is reported:

* one task: the worker's scoring function (`pipeline.worker.score_shard`) on two pairs with one torch
  thread, next to the child's RSS right after importing torch and the pipeline, so the figure shows what
  scoring adds. This is what each task thread of a worker needs.
* the whole `iqa score` process with its default embedded cluster (on up to 4 cores one in-process worker
  with a task thread per core, so that many pairs are in memory at once), on four pairs, all metrics.

LPIPS uses a seeded AlexNet checkpoint (speed and memory do not depend on the weight values).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = r"""
import json, resource, sys
import torch
from pipeline.worker import PairTask, ShardSettings, score_shard
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
folder, convention, metrics, weights = sys.argv[1], sys.argv[2], tuple(sys.argv[3].split(",")), sys.argv[4]
tasks = [PairTask(f"k{i}", "", f"{folder}/reference/p{i}.png", f"{folder}/output/p{i}.png") for i in range(2)]
settings = ShardSettings(metrics=metrics, convention=convention, crop=4 if convention == "sr-paper" else 0,
                         lpips_weights=weights or None, device="cpu")
torch.set_num_threads(1)
rows = score_shard(tasks, settings).rows
assert all(r.ok for r in rows), [r.error for r in rows]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
values = {m: getattr(rows[0], m) for m in metrics}
print(json.dumps({"import_rss_mb": baseline, "peak_rss_mb": peak, "values": values}))
"""


PAIRS = 4


def make_pairs(folder: Path, size: int) -> None:
    """folder/reference/p{i}.png and folder/output/p{i}.png: a photo and a noisy copy, `PAIRS` times."""
    import skimage

    photo = Image.open(Path(skimage.__file__).parent / "data" / "astronaut.png").convert("RGB")
    big = np.asarray(photo.resize((size, size), Image.BICUBIC))
    rng = np.random.default_rng(0)
    for side in ("reference", "output"):
        (folder / side).mkdir()
    for index in range(PAIRS):
        noisy = np.clip(big + rng.normal(0, 10, big.shape), 0, 255).astype(np.uint8)
        Image.fromarray(big).save(folder / "reference" / f"p{index}.png", compress_level=1)
        Image.fromarray(noisy).save(folder / "output" / f"p{index}.png", compress_level=1)


def whole_run_peak_mb(folder: Path, weights: Path) -> float:
    """Peak RSS of an `iqa score` process (default layout) scoring every pair with all metrics."""
    import resource

    command = [
        sys.executable, "-m", "pipeline", "score", str(folder / "reference"), str(folder / "output"),
        "-o", str(folder / "run"), "--metrics", "psnr,ssim,ms_ssim,lpips,mse",
        "--lpips-weights", str(weights), "--device", "cpu", "--no-report", "--no-progress", "--overwrite",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(completed.stdout[-2000:] + completed.stderr[-3000:])
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def seeded_alexnet(folder: Path) -> Path:
    import torch
    import torchvision

    torch.manual_seed(0)
    path = folder / "alexnet-owt-7be5be79.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="iqa-memory-") as tmp:
        folder = Path(tmp)
        make_pairs(folder, args.size)
        weights = seeded_alexnet(folder)
        peak = whole_run_peak_mb(folder, weights)  # first: RUSAGE_CHILDREN then holds this child's peak alone
        print(
            f"{args.size}x{args.size} RGB  iqa score (default layout, {PAIRS} pairs)  "
            f"psnr,ssim,ms_ssim,lpips,mse  peak RSS {peak:7.0f} MB",
            flush=True,
        )
        cases = [
            ("default", "psnr,ssim,ms_ssim,mse", ""),
            ("sr-paper", "psnr,ssim,ms_ssim,mse", ""),
            ("default", "lpips", str(weights)),
            ("default", "psnr,ssim,ms_ssim,lpips,mse", str(weights)),
            ("sr-paper", "psnr,ssim,ms_ssim,lpips,mse", str(weights)),
        ]
        for convention, metrics, lpips_weights in cases:
            command = [sys.executable, "-c", CHILD, tmp, convention, metrics, lpips_weights]
            env = {**os.environ, "OMP_NUM_THREADS": "1"}
            completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if completed.returncode != 0:
                raise SystemExit(completed.stderr[-3000:])
            result = json.loads(completed.stdout.strip().splitlines()[-1])
            print(
                f"{args.size}x{args.size} RGB  one task  {convention:8s}  {metrics:26s}  "
                f"peak RSS {result['peak_rss_mb']:7.0f} MB "
                f"(after imports {result['import_rss_mb']:5.0f} MB)",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Scale benchmark: client peak RSS and pairs/s as the pair count grows (bounded submission: flat memory).

    python scripts/bench_scale.py                       # 1,000 / 10,000 / 100,000 pairs
    python scripts/bench_scale.py --counts 1000 5000    # other sizes

Each size runs `iqa score` end to end (embedded LocalCluster, Parquet written, no report) in a fresh child
process, so its peak RSS is the client's alone; the workers' peak RSS is read from the workers themselves.
Pairs are small (32x32 crops of a real photo with noise) so that the run measures the engine, not the metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench.timing import child_json
from make_demo_data import open_photo
from PIL import Image

CHILD = r"""
import json, resource, sys, time
from distributed import Client, LocalCluster
import pipeline

if __name__ == "__main__":
    ref, out, run, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0")
    client = Client(cluster)
    start = time.perf_counter()
    result = pipeline.score(ref, out, run, metrics=("psnr", "ssim", "mse"),
                            scheduler=cluster.scheduler_address, report=False, progress=False)
    wall = time.perf_counter() - start
    worker_rss = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    client.close()
    cluster.close()
    print(json.dumps({
        "pairs": result.counts["pairs"], "ok": result.counts["ok"], "wall_s": wall,
        "score_s": result.manifest["timings"]["score_s"],
        "client_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_peak_rss_mb": max(worker_rss.values()) / 1024,
        "parts": len(list((__import__("pathlib").Path(run) / "scores").glob("part-*.parquet"))),
    }))
"""


def make_pairs(root: Path, count: int, size: int = 32) -> tuple[Path, Path]:
    """`count` reference/output pairs of size x size crops of a real photo, 1,000 per folder."""
    photo = np.asarray(open_photo("astronaut.png").convert("RGB"))
    rng = np.random.default_rng(0)
    ref_dir, out_dir = root / "ref", root / "out"
    for index in range(count):
        y, x = rng.integers(0, photo.shape[0] - size, 2)
        crop = photo[y : y + size, x : x + size]
        noisy = np.clip(crop + rng.normal(0, 8, crop.shape), 0, 255).astype(np.uint8)
        folder = f"d{index // 1000:04d}"
        for base, array in ((ref_dir, crop), (out_dir, noisy)):
            (base / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(base / folder / f"{index:07d}.png", compress_level=1)
    return ref_dir, out_dir


def run_size(count: int, workers: int, work: Path) -> dict:
    """Make `count` pairs, score them in a fresh child; its figures and the seconds making the data took."""
    started = time.perf_counter()
    ref, out = make_pairs(work / f"n{count}", count)
    made = time.perf_counter() - started
    command = [sys.executable, "-c", CHILD, str(ref), str(out), str(work / f"run{count}"), str(workers)]
    result = child_json(command)
    result["make_data_s"] = made
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="iqa-scale-") as tmp:
        for count in args.counts:
            results.append(run_size(count, args.workers, Path(tmp)))
            r = results[-1]
            print(
                f"{r['pairs']:>8,} pairs  {r['pairs'] / r['wall_s']:8.0f} pairs/s end to end  "
                f"{r['pairs'] / r['score_s']:8.0f} pairs/s scoring  "
                f"client peak RSS {r['client_peak_rss_mb']:7.1f} MB  "
                f"worker peak RSS {r['worker_peak_rss_mb']:7.1f} MB  parts {r['parts']}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

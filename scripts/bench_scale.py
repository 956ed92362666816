"""Scale benchmark: client peak RSS and pairs/s as the pair count grows (streamed discovery, bounded
submission: the client's memory stays flat).

    python scripts/bench_scale.py                                  # 10,000 and 300,000 pairs, both layouts
    python scripts/bench_scale.py --counts 1000 10000 --layouts flat

Each size runs `pipeline.score` end to end (PSNR, SSIM and MSE on CPU; Parquet parts and manifest, no report)
in a fresh child process, with its embedded cluster of `--workers` worker processes, so that the child's
peak RSS (`VmHWM`) is the client's, with the scheduler that runs in it. Every size prints its client peak RSS,
and each layout the growth from its smallest to its largest size.

Pairs are 32 x 32 PNG crops of a real photo with noise, so that the run measures the engine, not the
metrics: `DISTINCT_PAIRS` distinct pairs are encoded once and hard-linked (copied where links are not
allowed) under the names of every pair, in one of two layouts:

* `flat`: every file in one folder (`ref/0000123.png`, `out/0000123.png`);
* `nested`: groups of 10,000 pairs, 100 per subfolder (`ref/g000/s001/0000123.png`).

One reference in `MISSING_EVERY` has no output, so the manifest lists missing files at every size.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench.dataset import link_or_copy
from bench.timing import child_json
from make_demo_data import open_photo
from PIL import Image

DISTINCT_PAIRS = 64
MISSING_EVERY = 1_000
LAYOUTS = ("flat", "nested")

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import pipeline

def peak_rss_mb():
    # VmHWM: ru_maxrss would count the RSS of the parent that started this process too (Linux carries the
    # high-water mark of the image replaced by exec over into the new one)
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

if __name__ == "__main__":
    ref, out, run, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    start = time.perf_counter()
    result = pipeline.score(ref, out, run, metrics=("psnr", "ssim", "mse"), workers=workers, device="cpu",
                            report=False, progress=False)
    wall = time.perf_counter() - start
    print(json.dumps({
        "pairs": result.counts["pairs"], "ok": result.counts["ok"], "missing": result.counts["missing"],
        "listed_missing": len(result.manifest["missing"]),
        "wall_s": wall, "score_s": result.manifest["timings"]["score_s"],
        "discover_s": result.manifest["timings"]["discover_s"],
        "client_peak_rss_mb": peak_rss_mb(),
        "parts": len(list((Path(run) / "scores").glob("part-*.parquet"))),
    }))
"""


def distinct_pairs(folder: Path, count: int = DISTINCT_PAIRS, size: int = 32) -> list[tuple[Path, Path]]:
    """Encode `count` (reference, output) PNG pairs of size x size crops of a photo into `folder`."""
    photo = np.asarray(open_photo("astronaut.png").convert("RGB"))
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for index in range(count):
        y, x = rng.integers(0, photo.shape[0] - size, 2)
        crop = photo[y : y + size, x : x + size]
        noisy = np.clip(crop + rng.normal(0, 8, crop.shape), 0, 255).astype(np.uint8)
        ref, out = folder / f"ref-{index}.png", folder / f"out-{index}.png"
        Image.fromarray(crop).save(ref, compress_level=1)
        Image.fromarray(noisy).save(out, compress_level=1)
        pairs.append((ref, out))
    return pairs


def pair_name(index: int, layout: str) -> str:
    """The relative path of pair `index` in `layout`.

    Example:
        >>> pair_name(12345, "nested"), pair_name(12345, "flat")
        ('g001/s023/0012345.png', '0012345.png')
    """
    if layout == "flat":
        return f"{index:07d}.png"
    return f"g{index // 10_000:03d}/s{index // 100 % 100:03d}/{index:07d}.png"


def make_pairs(root: Path, count: int, layout: str) -> tuple[Path, Path]:
    """root/ref and root/out with `count` references in `layout`, every one but each `MISSING_EVERY`th with
    its output; the files are links to `distinct_pairs`."""
    sources = distinct_pairs(root / "distinct")
    ref_dir, out_dir = root / "ref", root / "out"
    for index in range(count):
        ref, out = sources[index % len(sources)]
        name = pair_name(index, layout)
        link_or_copy(ref, ref_dir / name)
        if index % MISSING_EVERY != MISSING_EVERY - 1:
            link_or_copy(out, out_dir / name)
    return ref_dir, out_dir


def run_size(count: int, layout: str, workers: int, work: Path) -> dict:
    """Make `count` pairs, score them in a fresh child; its figures and the seconds making the data took."""
    started = time.perf_counter()
    ref, out = make_pairs(work / f"{layout}-{count}", count, layout)
    made = time.perf_counter() - started
    run_dir = work / f"run-{layout}-{count}"
    result = child_json([sys.executable, "-c", CHILD, str(ref), str(out), str(run_dir), str(workers)])
    if result["listed_missing"] != result["missing"]:
        listed, missing = result["listed_missing"], result["missing"]
        raise SystemExit(f"manifest.json lists {listed} of {missing} missing outputs")
    result.update(layout=layout, references=count, make_data_s=made)
    return result


def growth_lines(results: list[dict]) -> list[str]:
    """Per layout, the client's peak RSS growth from its smallest to its largest size."""
    lines = []
    for layout in dict.fromkeys(r["layout"] for r in results):
        runs = sorted((r for r in results if r["layout"] == layout), key=lambda r: r["references"])
        if len(runs) > 1:
            low, high = runs[0], runs[-1]
            growth = high["client_peak_rss_mb"] - low["client_peak_rss_mb"]
            lines.append(
                f"{layout}: client peak RSS grows {growth:+.1f} MB from {low['references']:,} to "
                f"{high['references']:,} references"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 300_000])
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="iqa-scale-") as tmp:
        for layout in args.layouts:
            for count in args.counts:
                results.append(r := run_size(count, layout, args.workers, Path(tmp)))
                print(
                    f"{layout:>6} {r['pairs']:>8,} pairs ({r['missing']:,} missing)  "
                    f"{r['pairs'] / r['wall_s']:6.0f} pairs/s end to end  "
                    f"{r['pairs'] / r['score_s']:6.0f} pairs/s scoring  discovery {r['discover_s']:5.1f} s  "
                    f"client peak RSS {r['client_peak_rss_mb']:7.1f} MB  parts {r['parts']}  "
                    f"(data made in {r['make_data_s']:.0f} s)",
                    flush=True,
                )
    for line in growth_lines(results):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

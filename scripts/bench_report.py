"""Benchmark the HTML report on a synthetic run of many pairs: file size, render time, browser load time.

The run directory is written directly (Parquet parts via `PartWriter`, manifest via `write_manifest`), with
plausible metric values; every row points at one of a handful of real image files so the worst cases get
real pictures. A second run with slightly different values serves as the baseline.

Usage:
    python scripts/bench_report.py [--pairs 10000] [--groups 20] [--workdir DIR] [--no-browser]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.html import render_run_report
from pipeline.manifest import write_manifest
from pipeline.results import PartWriter, ResultRow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
IMAGE_FILES = 6
IMAGE_SIZE = (256, 384)
ROWS_PER_PART = 1000


def synthetic_images(folder: Path, count: int, seed: int) -> list[tuple[str, str]]:
    """Write `count` (reference, degraded output) PNG pairs; returns their paths."""
    rng = np.random.default_rng(seed)
    height, width = IMAGE_SIZE
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    pairs = []
    for index in range(count):
        phase = rng.uniform(0, 2 * math.pi, size=3)
        frequency = rng.uniform(3, 12, size=3)
        channels = [
            0.5 + 0.35 * np.sin(frequency[c] * (x + y * (c + 1) / 3) * 2 * math.pi + phase[c])
            for c in range(3)
        ]
        reference = (np.stack(channels, axis=2) * 255).round().astype(np.uint8)
        noise = rng.normal(0, 4 + 4 * index, reference.shape)
        output = np.clip(reference + noise, 0, 255).round().astype(np.uint8)
        ref_path, out_path = folder / "ref" / f"img{index}.png", folder / "out" / f"img{index}.png"
        for path, pixels in ((ref_path, reference), (out_path, output)):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
        pairs.append((str(ref_path), str(out_path)))
    return pairs


def synthetic_rows(
    pairs: int, groups: int, files: list[tuple[str, str]], run_id: str, seed: int
) -> list[dict]:
    """Plausible rows: PSNR ~ N(29 + group offset, 3) dB; SSIM, MS-SSIM, LPIPS and MSE follow it."""
    rng = np.random.default_rng(seed)
    group_offset = rng.normal(0, 1.5, size=groups)
    rows = []
    for index in range(pairs):
        group = index % groups
        ref_path, out_path = files[index % len(files)]
        row = {
            "key": f"g{group:02d}/img{index:05d}",
            "group": f"g{group:02d}",
            "ref_path": ref_path,
            "out_path": out_path,
            "height": IMAGE_SIZE[0],
            "width": IMAGE_SIZE[1],
            "channels": 3,
            "bit_depth": 8,
            "warnings": [],
            "ref_sha256": f"{index:064x}",
            "out_sha256": f"{index + 1:064x}",
            "seconds": float(rng.uniform(0.01, 0.05)),
            "run_id": run_id,
        }
        if index % 97 == 13:
            row.update(status="error", error=f"{out_path} is truncated or corrupt: image file is truncated")
        else:
            psnr = float(rng.normal(29 + group_offset[group], 3))
            mse = 255.0**2 / 10 ** (psnr / 10)
            quality = 1 / (1 + math.exp(-(psnr - 24) / 4))
            row.update(
                status="ok",
                psnr=psnr,
                mse=mse,
                ssim=float(np.clip(quality + rng.normal(0, 0.03), 0, 1)),
                ms_ssim=float(np.clip(0.5 + quality / 2 + rng.normal(0, 0.01), 0, 1)),
                lpips=float(np.clip(0.6 * (1 - quality) + rng.normal(0, 0.03), 0, 1)),
            )
        rows.append(row)
    return rows


def write_run(run_dir: Path, rows: list[dict], run_id: str, folder: Path, groups: int) -> None:
    """Parquet parts and manifest.json of a synthetic run."""
    metrics = ["psnr", "ssim", "ms_ssim", "lpips", "mse"]
    writer = PartWriter(run_dir, {"run_id": run_id, "convention": "default", "metrics": metrics})
    for start in range(0, len(rows), ROWS_PER_PART):
        writer.write([ResultRow(**row) for row in rows[start : start + ROWS_PER_PART]])
    errors = sum(row["status"] == "error" for row in rows)
    missing = [
        {"key": f"g{i % groups:02d}/lost{i:03d}", "path": f"{folder}/ref/lost{i:03d}.png"} for i in range(40)
    ]
    extra = [
        {"key": f"g{i % groups:02d}/stray{i:03d}", "path": f"{folder}/out/stray{i:03d}.png"}
        for i in range(40)
    ]
    write_manifest(
        run_dir,
        {
            "run_id": run_id,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "reference_dir": str(folder / "ref"),
            "output_dir": str(folder / "out"),
            "metrics": metrics,
            "convention": {"name": "default", "crop": 0, "description": "synthetic benchmark run"},
            "config": {"worst": 8},
            "config_hash": "bench",
            "versions": {"iqa-pipeline": "bench"},
            "device": "synthetic",
            "execution": "synthetic",
            "timings": {"total_s": 600.0, "score_s": 590.0, "pairs_per_s": len(rows) / 590.0},
            "counts": {
                "pairs": len(rows),
                "rows": len(rows),
                "ok": len(rows) - errors,
                "error": errors,
                "missing": len(missing),
                "extra": len(extra),
                "duplicates": 0,
                "duplicates_reference": 0,
                "unscored_duplicates": 0,
                "skipped": 0,
            },
            "missing": missing,
            "extra": extra,
            "duplicates": [],
            "skipped": [],
            "notices": [],
        },
    )


def browser_load_seconds(report: Path) -> tuple[float, float, int] | None:
    """(goto wall seconds, navigation-timing load event seconds, decoded pictures); None without Chromium."""
    if not CHROMIUM.exists():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 768})
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        started = time.perf_counter()
        page.goto(report.resolve().as_uri(), wait_until="load")
        wall = time.perf_counter() - started
        timing = page.evaluate(
            "() => { const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd; }"
        )
        decoded = page.evaluate("() => Array.from(document.images).filter(i => i.naturalWidth > 0).length")
        total = page.evaluate("() => document.images.length")
        browser.close()
    if errors:
        print(f"browser errors: {errors}")
    if decoded != total:
        print(f"only {decoded} of {total} pictures decoded")
    return wall, timing / 1000.0, decoded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=10_000)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=None, help="Keep the runs here (default: temp dir).")
    parser.add_argument("--no-browser", action="store_true", help="Skip the Chromium load time.")
    args = parser.parse_args()

    folder = args.workdir or Path(tempfile.mkdtemp(prefix="bench-report-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        files = synthetic_images(folder / "images", IMAGE_FILES, seed=0)
        candidate, baseline = folder / "run", folder / "baseline"
        for run_dir, seed in ((candidate, 1), (baseline, 2)):
            shutil.rmtree(run_dir, ignore_errors=True)
            run_id = f"bench-{run_dir.name}"
            write_run(
                run_dir,
                synthetic_rows(args.pairs, args.groups, files, run_id, seed),
                run_id,
                folder,
                args.groups,
            )
        elapsed = time.perf_counter() - started
        print(f"synthetic runs of {args.pairs:,} pairs in {args.groups} groups: {elapsed:.1f} s")

        for label, baseline_dir, name in (
            ("run", None, "report.html"),
            ("run + baseline", baseline, "report-baseline.html"),
        ):
            started = time.perf_counter()
            report = render_run_report(candidate, baseline=baseline_dir, output=candidate / name)
            render = time.perf_counter() - started
            size = report.stat().st_size
            line = f"{label}: {report} {size / 1e6:.2f} MB ({size:,} bytes), render {render:.1f} s"
            loaded = None if args.no_browser else browser_load_seconds(report)
            if loaded:
                wall, load_event, decoded = loaded
                line += (
                    f", Chromium load event {load_event:.2f} s (goto wall {wall:.2f} s, {decoded} pictures)"
                )
            print(line)
    finally:
        if args.workdir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

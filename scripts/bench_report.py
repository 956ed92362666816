"""Benchmark the HTML report on synthetic runs of many pairs: file size, render time, Chromium load and heap.

The run directory is written directly (Parquet parts via `PartWriter`, manifest via `write_manifest`), with
plausible metric values; every row points at one of a handful of real image files so the worst cases get
real pictures. A second run with slightly different values serves as the baseline. In Chromium: the load
event, the table of all pairs ready, the JS heap after a garbage collection, DOM nodes, and the time a sort
and a search of that table take.

Usage:
    python scripts/bench_report.py [--pairs 1000 10000 100000] [--groups 20] [--workdir DIR] [--no-browser]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
VIEWPORT = {"width": 1366, "height": 768}
TABLE_READY = "#pairs:not([aria-busy])"
SORT_SCRIPT = "document.querySelector('#pairs th[data-column=\"{column}\"] button').click()"
SEARCH_SCRIPT = (
    "const box = document.getElementById('pairs-search'); box.value = '{text}'; "
    "box.dispatchEvent(new Event('input'))"
)
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


@dataclass
class PageFigures:
    """What opening a report costs in Chromium.

    Attributes:
        load_event_s: navigation start to the end of the load event.
        table_ready_s: navigation start to the table of all pairs being drawn (its `iqa-pairs-ready` mark).
        js_heap_mb: JavaScript heap in use after a garbage collection, table ready (CDP Performance metrics).
        dom_nodes: DOM nodes of the page.
        sort_ms: clicking a metric's column header: sorting every pair and drawing the rows in view.
        search_ms: typing a search: filtering every key and drawing.
        pictures: (decoded, total) pictures of the page.
    """

    load_event_s: float
    table_ready_s: float
    js_heap_mb: float
    dom_nodes: int
    sort_ms: float
    search_ms: float
    pictures: tuple[int, int]

    def line(self) -> str:
        """The figures as one line of text."""
        return (
            f"Chromium load event {self.load_event_s:.2f} s, table ready {self.table_ready_s:.2f} s, "
            f"JS heap {self.js_heap_mb:.1f} MB, {self.dom_nodes:,} DOM nodes, sort {self.sort_ms:.0f} ms, "
            f"search {self.search_ms:.0f} ms, {self.pictures[0]}/{self.pictures[1]} pictures"
        )


def wait_for_table(page) -> None:
    """Wait until the table of all pairs is drawn (or has said why it cannot be)."""
    page.wait_for_selector(TABLE_READY, state="attached", timeout=120_000)


def timed_ms(page, script: str) -> float:
    """Milliseconds the page takes to run `script` (a function body): handlers run synchronously in it."""
    return page.evaluate(
        f"() => {{ const started = performance.now(); {script}; return performance.now() - started; }}"
    )


def js_heap_and_nodes(page) -> tuple[float, int]:
    """(used JS heap in MB after a garbage collection, DOM nodes), from the Chrome DevTools Protocol."""
    session = page.context.new_cdp_session(page)
    session.send("HeapProfiler.collectGarbage")
    session.send("Performance.enable")
    metrics = {m["name"]: m["value"] for m in session.send("Performance.getMetrics")["metrics"]}
    session.detach()
    return metrics["JSHeapUsedSize"] / 1e6, int(metrics["Nodes"])


def page_figures(page, sort_column: str = "psnr") -> PageFigures:
    """Figures of a report page that has loaded and drawn its table; sorts by `sort_column` and searches once
    (then clears the search)."""
    load_event, ready = page.evaluate(
        """() => [performance.getEntriesByType('navigation')[0].loadEventEnd,
                  performance.getEntriesByName('iqa-pairs-ready')[0].startTime]"""
    )
    heap, nodes = js_heap_and_nodes(page)
    sort = timed_ms(page, SORT_SCRIPT.format(column=sort_column))
    search = timed_ms(page, SEARCH_SCRIPT.format(text="img0001"))
    page.evaluate(f"() => {{ {SEARCH_SCRIPT.format(text='')}; }}")
    decoded, total = page.evaluate(
        "() => [Array.from(document.images).filter(i => i.naturalWidth > 0).length, document.images.length]"
    )
    return PageFigures(load_event / 1000, ready / 1000, heap, nodes, sort, search, (decoded, total))


@contextlib.contextmanager
def chromium() -> Iterator[object | None]:
    """A headless Chromium (playwright, CHROMIUM); None when either is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("no Chromium figures: the playwright package is not installed")
        yield None
        return
    if not CHROMIUM.exists():
        print(f"no Chromium figures: {CHROMIUM} is missing")
        yield None
        return
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def measure_in_chromium(browser, report: Path) -> PageFigures:
    """Open a report in a new context (a fresh page) of a Chromium and measure it."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        page.goto(report.resolve().as_uri(), wait_until="load", timeout=120_000)
        wait_for_table(page)
        figures = page_figures(page)
    finally:
        context.close()
    if errors:
        print(f"browser errors: {errors}")
    return figures


def write_synthetic_run(run_dir: Path, pairs: int, groups: int, folder: Path, seed: int) -> Path:
    """A synthetic run of `pairs` rows in RUN_DIR (replacing one there), its pictures' files in `folder`."""
    files = synthetic_images(folder / "images", IMAGE_FILES, seed=0)
    shutil.rmtree(run_dir, ignore_errors=True)
    run_id = f"bench-{run_dir.name}"
    write_run(run_dir, synthetic_rows(pairs, groups, files, run_id, seed), run_id, folder, groups)
    return run_dir


def table_bytes(report: Path) -> int:
    """Size of the embedded data of the table of all pairs (gzip + base64) in a report file."""
    match = re.search(r'id="pairs-data">([^<]*)</script>', report.read_text(encoding="utf-8"))
    return len(match.group(1)) if match else 0


def bench_size(folder: Path, pairs: int, groups: int, browser=None) -> None:
    """Write a run and a baseline of `pairs` pairs, render both reports, print their figures (in Chromium too
    with a playwright `browser`)."""
    started = time.perf_counter()
    candidate, baseline = folder / "run", folder / "baseline"
    for run_dir, seed in ((candidate, 1), (baseline, 2)):
        write_synthetic_run(run_dir, pairs, groups, folder, seed)
    elapsed = time.perf_counter() - started
    print(f"synthetic runs of {pairs:,} pairs in {groups} groups: {elapsed:.1f} s")
    for label, baseline_dir, name in (
        ("run", None, "report.html"),
        ("run + baseline", baseline, "report-baseline.html"),
    ):
        started = time.perf_counter()
        report = render_run_report(candidate, baseline=baseline_dir, output=candidate / name)
        render = time.perf_counter() - started
        size = report.stat().st_size
        megabytes, table = size / 1e6, table_bytes(report) / 1e6
        print(f"  {label}: {megabytes:.2f} MB ({size:,} B; table data {table:.2f} MB), render {render:.1f} s")
        if browser is not None:
            print(f"    {measure_in_chromium(browser, report).line()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=None, help="Keep the runs here (default: temp dir).")
    parser.add_argument("--no-browser", action="store_true", help="Skip the Chromium figures.")
    args = parser.parse_args()

    folder = args.workdir or Path(tempfile.mkdtemp(prefix="bench-report-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with contextlib.nullcontext() if args.no_browser else chromium() as browser:
            for pairs in args.pairs:
                bench_size(folder, pairs, args.groups, browser)
    finally:
        if args.workdir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

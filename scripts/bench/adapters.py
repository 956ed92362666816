"""Adapted metrics (`pyiqa:fsim`, ...) through the pipeline against the library's own per-pair loop, on the
same pairs: `python scripts/bench.py --adapters [LIBRARY:NAME,...]`.

For every metric, on the benchmark dataset (`bench.dataset.build_dataset`: scikit-image's photos, denoising,
x2 and x4 super-resolution and JPEG outputs):

* loop: what a user writes with the library, in one process with torch threads = cores: the metric built and
  called once (not timed), then for each pair both files decoded with Pillow to RGB, scaled to [0, 1] and
  given to the library's call (the adapter's scorer: e.g. pyiqa's `metric(output, reference)`), no grad.
* pipeline: `pipeline.score(REF, OUT, RUN, metrics=LIBRARY:NAME, report=False)` end to end (discovery,
  hashing, decoding, the metric, Parquet, manifest) in its default layout (on up to 4 cores one in-process
  worker with a task thread per core, one torch thread each), its embedded cluster started and the metric
  built in the call, after one untimed warm-up call. Its start-up is the same call on the first pair alone;
  the rate after start-up is (pairs - 1) / (seconds - start-up seconds).

Reported: median seconds over the repeats and pairs/s of each, the ratio, and the largest difference between
their values (|a - b| / max(1, |b|)).
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numpy as np
import torch

from bench.dataset import build_dataset, list_pairs
from bench.pairs import PairPaths
from bench.peers import decode_user
from bench.timing import Stopwatch, score_started, usable_cores
from pipeline.choices import metric_column
from pipeline.measure import metric_plugin

ADAPTED_METRICS = (
    "pyiqa:fsim", "pyiqa:vif", "pyiqa:gmsd", "pyiqa:nlpd", "pyiqa:vsi", "pyiqa:cw_ssim",
    "piq:gmsd", "piq:fsim", "piq:vif_p", "piq:haarpsi",
    "torchmetrics:structural_similarity_index_measure", "torchmetrics:universal_image_quality_index",
    "torchmetrics:visual_information_fidelity",
)  # fmt: skip
PAIRS_PER_PHOTO = 5


def unit_rgb(path: str) -> torch.Tensor:
    """A file decoded as a user does (`bench.peers.decode_user`), as RGB (1, 3, H, W) float32 in [0, 1]."""
    pixels = decode_user(path)
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).float() / 255.0
    tensor = tensor[None, None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)[None]
    return tensor.expand(-1, 3, -1, -1)


def library_loop(selector: str, pairs: list[PairPaths]) -> tuple[float, dict[str, float]]:
    """(seconds, {key: value}) of the library's per-pair loop, its metric built and called once on the first
    pair before the clock starts."""
    plugin = metric_plugin(metric_column(selector))
    scorer = plugin.build_state(torch.device("cpu"), None)
    values = {}
    with torch.inference_mode():
        scorer(unit_rgb(pairs[0].ref), unit_rgb(pairs[0].out))
        with Stopwatch() as watch:
            for pair in pairs:
                values[pair.key] = float(scorer(unit_rgb(pair.ref), unit_rgb(pair.out)).reshape(-1)[0])
    return watch.seconds, values


def pipeline_run(selector: str, ref: Path, out: Path, run_dir: Path) -> tuple[float, dict[str, float]]:
    """(seconds, {key: value}) of one `pipeline.score` call."""
    seconds, run = score_started(ref, out, run_dir, (selector,), None)
    column = metric_column(selector)
    return seconds, dict(zip(run.frame["key"], run.frame[column].astype(float), strict=True))


def largest_difference(ours: dict[str, float], theirs: dict[str, float]) -> float:
    """max over keys of |ours - theirs| / max(1, |theirs|); equal infinities are equal."""
    return max(
        0.0 if ours[key] == value else abs(ours[key] - value) / max(1.0, abs(value))
        for key, value in theirs.items()
    )


def first_pair_folders(pair: PairPaths, ref: Path, out: Path, root: Path) -> tuple[Path, Path]:
    """root/reference and root/output with only the first pair (links), to time the pipeline's start-up."""
    folders = root / "reference", root / "output"
    for source, folder, path in ((ref, folders[0], pair.ref), (out, folders[1], pair.out)):
        target = folder / Path(path).relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(path, target)
    return folders


def bench_metric(selector: str, ref: Path, out: Path, workdir: Path, repeats: int) -> dict[str, float]:
    """Every timing of one metric: loop and pipeline seconds (medians), start-up, values' difference."""
    pairs = list_pairs(ref, out)
    loops, runs, starts = [], [], []
    for _ in range(repeats):
        seconds, theirs = library_loop(selector, pairs)
        loops.append(seconds)
        seconds, ours = pipeline_run(selector, ref, out, workdir / "run")
        runs.append(seconds)
        starts.append(pipeline_run(selector, *first_pair_folders(pairs[0], ref, out, workdir / "one"),
                                   workdir / "run-one")[0])  # fmt: skip
    loop, run, start = (statistics.median(t) for t in (loops, runs, starts))
    return {
        "pairs": len(pairs), "loop_s": loop, "pipeline_s": run, "pipeline_start_s": start,
        "loop_pairs_per_s": len(pairs) / loop, "pipeline_pairs_per_s": len(pairs) / run,
        "pipeline_after_start_pairs_per_s": (len(pairs) - 1) / max(run - start, 1e-9),
        "largest_difference": largest_difference(ours, theirs),
    }  # fmt: skip


def table(results: dict[str, dict[str, float]]) -> str:
    """Markdown table of every metric's figures."""
    lines = [
        "| metric | loop s | pipeline s | pipeline / loop time | loop pairs/s | pipeline pairs/s "
        "| pipeline start-up s | pipeline pairs/s after start-up | max difference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for selector, r in results.items():
        lines.append(
            f"| `{selector}` | {r['loop_s']:.1f} | {r['pipeline_s']:.1f} "
            f"| {r['pipeline_s'] / r['loop_s']:.2f} "
            f"| {r['loop_pairs_per_s']:.2f} | {r['pipeline_pairs_per_s']:.2f} | {r['pipeline_start_s']:.1f} "
            f"| {r['pipeline_after_start_pairs_per_s']:.2f} | {r['largest_difference']:.1e} |"
        )
    return "\n".join(lines)


def run_adapters(
    selectors: list[str], workdir: Path, photos: int, repeats: int
) -> dict[str, dict[str, float]]:
    """Time every metric of `selectors` (LIBRARY:NAME) on `photos` x 5 pairs built in `workdir`, print each
    metric's figures as they come and the table at the end; returns the figures by selector."""
    cores = usable_cores()
    torch.set_num_threads(cores)
    build_dataset(workdir / "data", limit=photos * PAIRS_PER_PHOTO)
    ref, out = workdir / "data" / "reference", workdir / "data" / "output"
    pipeline_run(selectors[0], ref, out, workdir / "warm-up")
    print(f"{cores} cores, load {os.getloadavg()[0]:.1f}; {len(list_pairs(ref, out))} pairs", flush=True)
    results = {}
    for selector in selectors:
        results[selector] = bench_metric(selector, ref, out, workdir, repeats)
        print(f"  {selector}: {json.dumps(results[selector])}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f}\n\n{table(results)}")
    return results

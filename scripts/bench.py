"""Throughput of `iqa score` against the per-pair Python loops a user would write with peer libraries.

    python scripts/bench.py                          # >= 50 pairs built from scikit-image's photos
    python scripts/bench.py --data REF_DIR OUT_DIR   # your own folders (paired like `iqa score` pairs them)
    python scripts/bench.py --quick                  # small smoke run
    python scripts/bench.py --json bench.json        # also save the raw numbers

What is measured, in pairs per second (median over `--repeats`), all on the same pairs:

* this pipeline: `score_folders` with its embedded LocalCluster (default: one worker process per core, one
  torch thread each), Parquet written, no HTML report; the wall time includes starting the cluster. Also
  shown: the rate from the manifest's `timings.score_s`, and the wall time on an already running cluster of
  the same size (what a long-lived cluster gives).
* peer loops, one pair at a time as a user would write them: decode both files with Pillow/numpy, convert,
  call the library. PSNR+SSIM+MS-SSIM with scikit-image (no MS-SSIM there), pytorch-msssim (PSNR from the
  MSE in torch), piq and torchmetrics; LPIPS with the `lpips` package. Every peer gets the same 2-core budget
  in the two layouts a user would pick: one process with `torch.set_num_threads(cores)`, and `cores` processes
  with one thread each (a `multiprocessing` pool, started and warmed before timing). The faster layout is the
  one the targets compare against.
* the decode bound: `pipeline.images.read_image` on both files of every pair in a pool of as many processes
  as the pipeline has workers.

All methods use one convention: channels as stored (RGB, or gray as one channel), data range 255, 11x11
Gaussian SSIM with sigma 1.5, 5-scale MS-SSIM. The max |difference| of each peer's values from ours shows it
is the same computation. LPIPS uses AlexNet backbone weights made with `torch.manual_seed(0)` in a temporary
TORCH_HOME (no download); speed does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_demo_data

PIXEL_METRICS = ("psnr", "ssim", "ms_ssim")
EXTRA_PHOTOS = ("coins.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_right.png")
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
TARGET_PIXEL_SPEEDUP = 2.0
TARGET_DECODE_FRACTION = 0.40
TARGET_LPIPS_SPEEDUP = 1.3
PYIQA_SKIPPED = (
    "not installed: its install pulls ~50 packages (transformers, datasets, bitsandbytes, opencv, "
    "tensorboard, timm, numba, ...) into the environment"
)


# Dataset


def build_dataset(root: Path, limit: int | None = None) -> int:
    """Write root/reference and root/output: 12 photos (3 gray) x 5 degradations = 60 pairs around 512 px."""
    count = 0
    photos = (*make_demo_data.PHOTOS, *EXTRA_PHOTOS)
    for index, name in enumerate(photos):
        stem = Path(name).stem
        image = make_demo_data.load_photo(name)
        outputs = {
            f"denoise/{stem}.png": make_demo_data.denoise_output(image, index),
            f"sr_x2/{stem}.png": make_demo_data.super_resolution_output(image, 2),
            f"sr_x4/{stem}.png": make_demo_data.super_resolution_output(image, 4),
        }
        for key, output in outputs.items():
            make_demo_data.save(root / "reference" / key, image)
            make_demo_data.save(root / "output" / key, output)
            count += 1
        for quality in (20, 50):
            make_demo_data.save(root / "reference" / f"jpeg_q{quality}/{stem}.png", image)
            target = root / "output" / f"jpeg_q{quality}/{stem}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(make_demo_data.jpeg_bytes(image, quality))
            count += 1
        if limit and count >= limit:
            break
    return count


@dataclass(frozen=True)
class PairPaths:
    key: str
    ref: str
    out: str


def list_pairs(ref_dir: Path, out_dir: Path) -> list[PairPaths]:
    from pipeline.discover import discover_pairs

    pairing = discover_pairs(ref_dir, out_dir)
    return [PairPaths(p.key, str(p.ref_path), str(p.out_path)) for p in pairing.pairs]


def describe_dataset(pairs: list[PairPaths]) -> str:
    sizes, gray = [], 0
    for pair in pairs:
        with Image.open(pair.ref) as image:
            sizes.append(max(image.size))
            gray += image.mode == "L"
    return (
        f"{len(pairs)} pairs, long side {min(sizes)}-{max(sizes)} px "
        f"(median {statistics.median(sizes):.0f}), "
        f"{gray} gray, {len(pairs) - gray} RGB"
    )


# Peer loops: decode as a user would, convert, call the library


def decode_user(path: str) -> np.ndarray:
    """What a user writes: Pillow decode to uint8, gray kept as one channel, anything else as RGB."""
    with Image.open(path) as image:
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        return np.asarray(image)


def to_tensor(pixels: np.ndarray):
    import torch

    tensor = torch.tensor(pixels, dtype=torch.float32)
    if tensor.dim() == 2:
        return tensor[None, None]
    return tensor.permute(2, 0, 1)[None]


def psnr_torch(x, y) -> float:
    import torch

    mse = torch.mean((x - y) ** 2)
    return float(10 * torch.log10(255.0**2 / mse))


def skimage_pixel(state: Any, ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    channel_axis = -1 if ref.ndim == 3 else None
    return {
        "psnr": float(peak_signal_noise_ratio(ref, out, data_range=255)),
        "ssim": float(
            structural_similarity(
                ref,
                out,
                data_range=255,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                channel_axis=channel_axis,
            )
        ),
    }


def pytorch_msssim_pixel(state: Any, ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    from pytorch_msssim import ms_ssim, ssim

    x, y = to_tensor(ref), to_tensor(out)
    return {
        "psnr": psnr_torch(x, y),
        "ssim": float(ssim(x, y, data_range=255, size_average=False)[0]),
        "ms_ssim": float(ms_ssim(x, y, data_range=255, size_average=False)[0]),
    }


def piq_pixel(state: Any, ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    import piq

    x, y = to_tensor(ref), to_tensor(out)
    return {
        "psnr": float(piq.psnr(x, y, data_range=255.0, reduction="none")[0]),
        "ssim": float(piq.ssim(x, y, data_range=255.0, reduction="none", downsample=False)[0]),
        "ms_ssim": float(piq.multi_scale_ssim(x, y, data_range=255.0, reduction="none")[0]),
    }


def torchmetrics_pixel(state: Any, ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
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
    import warnings

    import lpips

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net="alex", verbose=False).eval()


def lpips_package(network: Any, ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    x, y = to_tensor(ref), to_tensor(out)
    if x.shape[1] == 1:
        x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
    return {"lpips": float(network(x / 127.5 - 1, y / 127.5 - 1).flatten()[0])}


@dataclass(frozen=True)
class Peer:
    name: str
    package: str
    metrics: tuple[str, ...]
    score: Callable[[Any, np.ndarray, np.ndarray], dict[str, float]]
    setup: Callable[[], Any] | None = None
    note: str = ""


PEERS = {
    "scikit-image": Peer(
        "scikit-image", "skimage", ("psnr", "ssim"), skimage_pixel, note="no MS-SSIM in scikit-image"
    ),
    "pytorch-msssim": Peer(
        "pytorch-msssim",
        "pytorch_msssim",
        PIXEL_METRICS,
        pytorch_msssim_pixel,
        note="PSNR from the MSE in torch",
    ),
    "piq": Peer("piq", "piq", PIXEL_METRICS, piq_pixel, note="ssim(downsample=False)"),
    "torchmetrics": Peer("torchmetrics", "torchmetrics", PIXEL_METRICS, torchmetrics_pixel),
    "lpips": Peer(
        "lpips", "lpips", ("lpips",), lpips_package, setup=lpips_setup, note="lpips.LPIPS(net='alex')"
    ),
}

_STATES: dict[str, Any] = {}


def run_peer(name: str, pairs: list[PairPaths]) -> dict[str, dict[str, float]]:
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


def _init_pool_worker(threads: int, peers: list[str], warm_pair: PairPaths | None) -> None:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    for name in peers:
        run_peer(name, [warm_pair] if warm_pair else [])


def _run_chunk(job: tuple[str, list[PairPaths]]) -> dict[str, dict[str, float]]:
    return run_peer(*job)


def _decode_chunk(pairs: list[PairPaths]) -> int:
    from pipeline.images import read_image

    for pair in pairs:
        read_image(pair.ref)
        read_image(pair.out)
    return len(pairs)


def chunks(items: list[Any], count: int) -> list[list[Any]]:
    size = max(1, math.ceil(len(items) / count))
    return [items[i : i + size] for i in range(0, len(items), size)]


# Pipeline runs


def pipeline_config(metrics: tuple[str, ...], weights: str, args: argparse.Namespace, scheduler: str | None):
    from pipeline.config import ScoreConfig

    return ScoreConfig(
        metrics=metrics,
        metrics_explicit=True,
        report=False,
        lpips_weights=weights if "lpips" in metrics else None,
        scheduler=scheduler,
        workers=None if scheduler else args.workers,
        device="cpu",
    ).validate()


def run_pipeline(ref_dir: Path, out_dir: Path, run_dir: Path, config) -> tuple[float, dict[str, Any]]:
    """One `iqa score` run into a fresh run dir: (wall seconds including cluster start, manifest)."""
    from pipeline.scoring import score_folders

    shutil.rmtree(run_dir, ignore_errors=True)
    start = time.perf_counter()
    result = score_folders(ref_dir, out_dir, run_dir, config, progress=False)
    wall = time.perf_counter() - start
    if result.counts["error"]:
        raise SystemExit(
            f"the pipeline run in {run_dir} has {result.counts['error']} error rows; see its Parquet"
        )
    return wall, result.manifest


def pipeline_values(run_dir: Path, metrics: tuple[str, ...]) -> dict[str, dict[str, float]]:
    from pipeline.sink import load_results

    frame = load_results(run_dir)
    return {row["key"]: {m: row[m] for m in metrics} for _, row in frame.iterrows()}


# Results


@dataclass
class Method:
    """One timed row of the table."""

    name: str
    metrics: tuple[str, ...]
    layout: str
    seconds: list[float] = field(default_factory=list)
    pairs: int = 0
    values: dict[str, dict[str, float]] | None = None
    note: str = ""
    kind: str = "peer"

    @property
    def rate(self) -> float:
        return self.pairs / statistics.median(self.seconds) if self.seconds else float("nan")


def max_abs_difference(ours: dict[str, dict[str, float]], theirs: dict[str, dict[str, float]], metric: str):
    differences = []
    for key, row in theirs.items():
        mine, other = ours.get(key, {}).get(metric), row.get(metric)
        if mine is None or other is None or not (math.isfinite(mine) and math.isfinite(other)):
            continue
        differences.append(abs(mine - other))
    return max(differences) if differences else None


def format_rate(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def format_difference(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def markdown_table(
    rows: list[Method], ours: Method, metrics: tuple[str, ...], skipped: dict[str, str]
) -> str:
    head = ["method", "layout", "pairs/s", "ours ÷ method", *(f"max abs Δ {m}" for m in metrics), "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        ratio = ours.rate / row.rate
        differences = [
            format_difference(max_abs_difference(ours.values, row.values, m))
            if row.values and m in row.metrics and row is not ours
            else ("ref" if row is ours else "-")
            for m in metrics
        ]
        cells = [row.name, row.layout, format_rate(row.rate), f"{ratio:.2f}x", *differences, row.note]
        lines.append("| " + " | ".join(cells) + " |")
    for name, why in skipped.items():
        lines.append("| " + " | ".join([name, "-", "-", "-", *("-" for _ in metrics), why]) + " |")
    return "\n".join(lines)


def verdict(label: str, ratio: float, target: float, detail: str) -> str:
    status = "PASS" if ratio >= target else "FAIL"
    return f"- {status}: {label}: {ratio:.2f} (target >= {target:g}; {detail})"


def machine_description() -> dict[str, Any]:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from pipeline.scoring import software_versions

    peers = (
        "torch",
        "numpy",
        "pillow",
        "dask",
        "scikit-image",
        "pytorch-msssim",
        "piq",
        "torchmetrics",
        "lpips",
    )
    versions = software_versions(peers)
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version(), "versions": versions}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs=2, type=Path, metavar=("REF_DIR", "OUT_DIR"), help="folders to score")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per method (median reported)")
    parser.add_argument("--workers", type=int, default=None, help="pipeline workers (default: one per core)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 15 generated pairs, 1 repeat")
    parser.add_argument("--json", type=Path, help="write the raw numbers to this file")
    parser.add_argument("--workdir", type=Path, help="keep data and run dirs here instead of a temp dir")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = args.workers or cores
    repeats = 1 if args.quick else args.repeats
    workdir = Path(tempfile.mkdtemp(prefix="iqa-bench-")) if args.workdir is None else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["TORCH_HOME"] = str(workdir / "torch_home")
    os.environ.setdefault("OMP_NUM_THREADS", str(cores))
    os.environ.setdefault("MKL_NUM_THREADS", str(cores))
    try:
        return benchmark(args, workdir, cores, workers, repeats)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


def seeded_alexnet(torch_home: Path) -> Path:
    import torch
    import torchvision

    path = torch_home / "hub" / "checkpoints" / ALEXNET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)
    return path


def benchmark(args: argparse.Namespace, workdir: Path, cores: int, workers: int, repeats: int) -> int:
    import importlib.util

    import torch

    weights = str(seeded_alexnet(Path(os.environ["TORCH_HOME"])))
    if args.data:
        ref_dir, out_dir = args.data
        for folder in (ref_dir, out_dir):
            if not folder.is_dir():
                raise SystemExit(f"--data: {folder} is not a directory")
    else:
        ref_dir, out_dir = workdir / "data" / "reference", workdir / "data" / "output"
        if not ref_dir.exists():
            build_dataset(workdir / "data", limit=12 if args.quick else None)
    pairs = list_pairs(ref_dir, out_dir)
    if not pairs:
        raise SystemExit(f"no pairs found between {ref_dir} and {out_dir}")
    machine = machine_description()
    dataset = describe_dataset(pairs)
    print(f"machine: {cores} cores, {machine['cpu']}; dataset: {dataset}; repeats: {repeats}", flush=True)
    load_before = os.getloadavg()[0]
    if load_before > cores / 2:
        print(
            f"warning: load average {load_before:.1f} on {cores} cores: other processes skew timings",
            flush=True,
        )

    skipped: dict[str, str] = {}
    available = []
    for name, peer in PEERS.items():
        if importlib.util.find_spec(peer.package) is None:
            skipped[name] = "not installed (pip install '.[bench]')"
        else:
            available.append(name)
    skipped["pyiqa"] = PYIQA_SKIPPED if importlib.util.find_spec("pyiqa") is None else "not benchmarked yet"

    single = f"1 proc x {cores} threads"
    multi = f"{workers} procs x 1 thread"
    peer_rows: list[tuple[str, str, Method]] = []
    for name in available:
        peer = PEERS[name]
        for layout in (single, multi):
            row = Method(peer.name, peer.metrics, layout, pairs=len(pairs), note=peer.note)
            peer_rows.append((name, layout, row))
    ours = {
        metrics: [
            Method(
                "iqa score (wall, cluster start included)",
                metrics,
                f"{workers} workers x 1 thread",
                kind="ours",
            ),
            Method(
                "iqa score (manifest score_s)", metrics, f"{workers} workers x 1 thread", kind="ours-manifest"
            ),
            Method(
                "iqa score on a running cluster", metrics, f"{workers} workers x 1 thread", kind="ours-warm"
            ),
        ]
        for metrics in (PIXEL_METRICS, ("lpips",))
    }
    decode = Method("decode only (read_image)", (), f"{workers} procs", pairs=len(pairs), kind="decode")

    torch.set_num_threads(cores)
    for name in available:
        run_peer(name, pairs[:1])
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, _init_pool_worker, (1, available, pairs[0])) as pool:
        pool.map(_decode_chunk, [pairs[:1]] * workers)
        for repeat in range(repeats):
            print(f"repeat {repeat + 1}/{repeats}", flush=True)
            start = time.perf_counter()
            pool.map(_decode_chunk, chunks(pairs, workers * 4), chunksize=1)
            decode.seconds.append(time.perf_counter() - start)
            for name, layout, row in peer_rows:
                start = time.perf_counter()
                if layout == single:
                    values = run_peer(name, pairs)
                else:
                    values = {}
                    for part in pool.map(
                        _run_chunk, [(name, c) for c in chunks(pairs, workers * 4)], chunksize=1
                    ):
                        values.update(part)
                row.seconds.append(time.perf_counter() - start)
                row.values = row.values or values
                print(f"  {row.name:<16} {layout:<22} {row.pairs / row.seconds[-1]:7.2f} pairs/s", flush=True)
            for metrics, (cold, manifest_row, _) in ours.items():
                run_dir = workdir / "runs" / f"{'-'.join(metrics)}-{repeat}"
                wall, manifest = run_pipeline(
                    ref_dir, out_dir, run_dir, pipeline_config(metrics, weights, args, None)
                )
                cold.pairs = manifest_row.pairs = manifest["counts"]["pairs"]
                cold.seconds.append(wall)
                manifest_row.seconds.append(manifest["timings"]["score_s"])
                if cold.values is None:
                    cold.values = manifest_row.values = pipeline_values(run_dir, metrics)
                    cold.note = manifest["execution"]
                print(f"  iqa score {','.join(metrics):<22} {cold.pairs / wall:7.2f} pairs/s", flush=True)
    run_on_running_cluster(ours, ref_dir, out_dir, workdir, weights, args, workers, repeats)

    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    lines = [
        f"Machine: {cores} cores, {machine['cpu']} ({load}). Dataset: {dataset}. "
        f"Median of {repeats} repeats.",
        "",
    ]
    results: dict[str, Any] = {
        "machine": machine,
        "load_average": [load_before, os.getloadavg()[0]],
        "dataset": dataset,
        "repeats": repeats,
        "tables": {},
    }
    targets = []
    for metrics, our_rows in ours.items():
        cold = our_rows[0]
        rows = [*our_rows, *(row for _, _, row in peer_rows if row.metrics[0] in metrics)]
        if metrics == PIXEL_METRICS:
            rows.append(decode)
        title = (
            "PSNR + SSIM + MS-SSIM" if metrics == PIXEL_METRICS else "LPIPS (alex, seeded random backbone)"
        )
        table_skips = {k: v for k, v in skipped.items() if (k == "lpips") == (metrics != PIXEL_METRICS)}
        lines += [f"### {title}", "", markdown_table(rows, cold, metrics, table_skips), ""]
        results["tables"][",".join(metrics)] = [
            {
                "method": r.name,
                "layout": r.layout,
                "metrics": list(r.metrics),
                "pairs": r.pairs,
                "seconds": r.seconds,
                "pairs_per_s": r.rate,
                "max_abs_difference": {
                    m: max_abs_difference(cold.values, r.values, m)
                    for m in metrics
                    if r.values and r is not cold
                },
            }
            for r in rows
        ]
        complete = [row for _, _, row in peer_rows if set(metrics) <= set(row.metrics)]
        if complete:
            fastest = max(complete, key=lambda r: r.rate)
            label = "PSNR+SSIM+MS-SSIM vs fastest peer" if metrics == PIXEL_METRICS else "LPIPS-alex vs lpips"
            target = TARGET_PIXEL_SPEEDUP if metrics == PIXEL_METRICS else TARGET_LPIPS_SPEEDUP
            targets.append(
                verdict(
                    label,
                    cold.rate / fastest.rate,
                    target,
                    f"{fastest.name}, {fastest.layout}; wall incl. cluster start",
                )
            )
        if metrics == PIXEL_METRICS:
            targets.append(
                verdict(
                    "PSNR+SSIM+MS-SSIM fraction of the decode bound",
                    cold.rate / decode.rate,
                    TARGET_DECODE_FRACTION,
                    f"decode {format_rate(decode.rate)} pairs/s",
                )
            )
            partial = [
                row
                for _, _, row in peer_rows
                if row.metrics[0] in metrics and not set(metrics) <= set(row.metrics)
            ]
            for row in partial:
                targets.append(
                    f"- info: vs {row.name} ({row.layout}, computes only {'+'.join(row.metrics)}): "
                    f"{cold.rate / row.rate:.2f}x"
                )
    lines += ["### Targets", "", *targets, ""]
    lines.append(
        "LPIPS weights: AlexNet backbone from torch.manual_seed(0) (the same file for both); "
        "the speed does not depend on the weight values."
    )
    report = "\n".join(lines)
    print("\n" + report)
    if args.json:
        results["targets"] = targets
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def run_on_running_cluster(ours, ref_dir, out_dir, workdir, weights, args, workers, repeats) -> None:
    """Same runs on a LocalCluster started once (workers keep their LPIPS network between runs)."""
    import logging

    from distributed import LocalCluster

    from pipeline.cluster import local_worker_environment

    with (
        local_worker_environment(),
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            silence_logs=logging.ERROR,
        ) as cluster,
    ):
        for metrics, (_, _, warm) in ours.items():
            config = pipeline_config(metrics, weights, args, cluster.scheduler_address)
            run_pipeline(ref_dir, out_dir, workdir / "runs" / "warm-up", config)
            for repeat in range(repeats):
                wall, manifest = run_pipeline(ref_dir, out_dir, workdir / "runs" / f"warm-{repeat}", config)
                warm.pairs = manifest["counts"]["pairs"]
                warm.seconds.append(wall)
                if warm.values is None:
                    warm.values = pipeline_values(workdir / "runs" / f"warm-{repeat}", metrics)


if __name__ == "__main__":
    sys.exit(main())

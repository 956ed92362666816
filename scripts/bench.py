"""Throughput of `iqa score` against the per-pair Python loops a user would write with peer libraries.

    python scripts/bench.py                          # 60 pairs built from scikit-image's photos, 3 repeats
    python scripts/bench.py --data REF_DIR OUT_DIR   # your own folders (paired like `iqa score` pairs them)
    python scripts/bench.py --quick                  # small smoke run
    python scripts/bench.py --json bench.json        # also save the raw numbers

Every method is timed in two ways on the same pairs, pairs per second as the median over `--repeats`:

* started: once the libraries are imported and models built. This pipeline runs `score_folders` end to
  end (discovery, hashing, decoding, metrics, Parquet parts and the manifest, no HTML report), starting its
  embedded cluster of the default layout in each call, after one untimed warm-up call in this process (which
  keeps the LPIPS network). Each peer loop runs in a process or `multiprocessing` pool that has imported its
  library and built its model. Every repeat times each method once: the peers, then the decode bound and
  this pipeline back to back (their ratio is the target that a drifting machine skews most).
* fresh process: what a user waits for, interpreter start, imports and model building included. This
  pipeline runs `python -m pipeline score ... --no-report` (the `iqa score` CLI); each peer runs this script
  with `--peer-process`, which imports the library, starts its pool if it has one, and runs the loop.
  Start-up (about 2 s here, mostly `import torch`, which every method pays) weighs most on a small dataset,
  so fresh processes are also timed on the dataset `--fresh-scale` times over (default 5: 300 pairs), for
  this pipeline and the fastest peer layouts. From the two sizes each of those methods gets its start-up
  seconds and its pairs/s after start-up.

Peer loops, one pair at a time as a user would write them: decode both files with Pillow/numpy, convert,
call the library. PSNR+SSIM+MS-SSIM with scikit-image (no MS-SSIM there), pytorch-msssim (PSNR from the MSE
in torch), piq, torchmetrics and pyiqa (when installed); LPIPS with the `lpips` package. Every peer gets
the same cores in the two layouts a user would pick: one process with `torch.set_num_threads(cores)`, and
`cores` processes with one thread each (a spawn pool). The targets compare with the faster layout.

The decode bound: `pipeline.images.read_image` (read, SHA-256, decode) on both files of every pair in a pool
of one process per core: started beforehand, and as a fresh process that starts its pool (importing no
torch) and decodes, for the fresh-process fraction.

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
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PIXEL_METRICS = ("psnr", "ssim", "ms_ssim")
EXTRA_PHOTOS = ("coins.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_right.png")
PAIRS_PER_PHOTO = 5  # `build_dataset`: denoise, sr_x2, sr_x4, jpeg_q20, jpeg_q50
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
TARGET_PIXEL_SPEEDUP = 2.0
TARGET_DECODE_FRACTION = 0.40
TARGET_LPIPS_SPEEDUP = 1.3
PYIQA_MISSING = (
    "not installed: `pip install pyiqa` pulls ~50 packages (transformers, datasets, timm, ...); its "
    "PSNR/SSIM/MS-SSIM import with `pip install --no-deps pyiqa` plus opencv-python-headless, requests and "
    "huggingface_hub (each with --no-deps and their own few needs)"
)
SINGLE, POOL = "single", "pool"
DECODE = "decode"  # --peer-process name of the decode bound


# Dataset


def build_dataset(
    root: Path, limit: int | None = None, prepare: Callable[[Image.Image], Image.Image] | None = None
) -> int:
    """Write root/reference and root/output: 12 photos (3 gray) x 5 degradations = 60 pairs around 512 px.

    Args:
        limit: stop after the photo that reaches this many pairs.
        prepare: applied to each photo before its degradations (e.g. a square RGB crop).
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import make_demo_data

    count = 0
    photos = (*make_demo_data.PHOTOS, *EXTRA_PHOTOS)
    for index, name in enumerate(photos):
        stem = Path(name).stem
        image = make_demo_data.load_photo(name)
        if prepare is not None:
            image = prepare(image)
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


def pyiqa_setup() -> Any:
    import warnings

    import pyiqa

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            name: pyiqa.create_metric(name, test_y_channel=False, device="cpu", as_loss=False)
            for name in ("psnr", "ssim", "ms_ssim")
        }


def pyiqa_pixel(metrics: Any, ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    x, y = to_tensor(ref) / 255.0, to_tensor(out) / 255.0
    return {name: float(metric(x, y).flatten()[0]) for name, metric in metrics.items()}


@dataclass(frozen=True)
class Peer:
    name: str
    package: str
    metrics: tuple[str, ...]
    score: Callable[[Any, np.ndarray, np.ndarray], dict[str, float]]
    setup: Callable[[], Any] | None = None
    note: str = ""
    sample: int | None = None  # slow peers: timed once, on this many pairs spread over the dataset

    def pairs_for(self, pairs: list[PairPaths]) -> list[PairPaths]:
        if self.sample is None or len(pairs) <= self.sample:
            return pairs
        return pairs[:: math.ceil(len(pairs) / self.sample)]


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
    "pyiqa": Peer(
        "pyiqa",
        "pyiqa",
        PIXEL_METRICS,
        pyiqa_pixel,
        setup=pyiqa_setup,
        note="create_metric(..., test_y_channel=False), float64, inputs / 255",
        sample=12,
    ),
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


# Fresh processes: interpreter start, imports and model building included


def run_peer_process(name: str, layout: str, pairs_file: Path, workers: int) -> None:
    """`--peer-process`: what a user's script does from start to exit (the parent times this process);
    `name` DECODE: the decode bound (a spawn pool that only reads and decodes, importing no torch)."""
    pairs = [PairPaths(**pair) for pair in json.loads(pairs_file.read_text())]
    if name == DECODE:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            pool.map(_decode_chunk, chunks(pairs, workers * 4), chunksize=1)
        return
    if layout == SINGLE:
        import torch

        torch.set_num_threads(workers)
        run_peer(name, pairs)
        return
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, _init_pool_worker, (1, [name], None)) as pool:
        pool.map(_run_chunk, [(name, chunk) for chunk in chunks(pairs, workers * 4)], chunksize=1)


def timed_process(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds from starting `command` until it exits; raises with its output when it fails."""
    start = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    return wall


def process_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def peer_command(name: str, layout: str, pairs_file: Path, workers: int) -> list[str]:
    return [
        sys.executable, str(Path(__file__).resolve()), "--peer-process", name, layout, str(pairs_file),
        "--workers", str(workers),
    ]  # fmt: skip


def pipeline_command(
    ref_dir: Path,
    out_dir: Path,
    run_dir: Path,
    metrics: tuple[str, ...],
    weights: str,
    args: argparse.Namespace,
) -> list[str]:
    """The `iqa score` CLI as a user runs it (via `python -m pipeline`, the same entry point)."""
    command = [
        sys.executable, "-m", "pipeline", "score", str(ref_dir), str(out_dir), "-o", str(run_dir),
        "--metrics", ",".join(metrics), "--device", "cpu", "--no-report", "--no-progress", "--overwrite",
    ]  # fmt: skip
    if "lpips" in metrics:
        command += ["--lpips-weights", weights]
    if args.workers:
        command += ["--workers", str(args.workers)]
    return command


# Pipeline runs on a started cluster


def pipeline_config(metrics: tuple[str, ...], weights: str, args: argparse.Namespace, scheduler: str | None):
    from pipeline.config import ScoreConfig

    return ScoreConfig(
        metrics=metrics,
        report=False,
        lpips_weights=weights if "lpips" in metrics else None,
        scheduler=scheduler,
        workers=None if scheduler else args.workers,
        device="cpu",
    )


def run_pipeline(ref_dir: Path, out_dir: Path, run_dir: Path, config) -> tuple[float, dict[str, Any]]:
    """One `score_folders` run into a fresh run dir: (wall seconds, manifest)."""
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
    from pipeline.results import load_results

    frame = load_results(run_dir)
    return {row["key"]: {m: row[m] for m in metrics} for _, row in frame.iterrows()}


# Results


@dataclass
class Method:
    """One row of a table: a method timed started and (optionally) as a fresh process."""

    name: str
    metrics: tuple[str, ...]
    layout: str
    pairs: int
    started: list[float] = field(default_factory=list)
    fresh: list[float] = field(default_factory=list)
    scaled: list[float] = field(default_factory=list)  # fresh, on the dataset `--fresh-scale` times over
    scaled_pairs: int = 0
    values: dict[str, dict[str, float]] | None = None
    note: str = ""

    def seconds(self, mode: str) -> float:
        """Median wall seconds of one mode: 'started', 'fresh' or 'scaled'."""
        timings = {"started": self.started, "fresh": self.fresh, "scaled": self.scaled}[mode]
        return statistics.median(timings) if timings else float("nan")

    def rate(self, mode: str) -> float:
        pairs = self.scaled_pairs if mode == "scaled" else self.pairs
        return pairs / self.seconds(mode)

    def start_up(self) -> tuple[float, float]:
        """(start-up seconds, pairs/s after it) of a fresh process, from its two dataset sizes: the line
        through (pairs, median seconds) of the fresh and scaled runs."""
        per_pair = (self.seconds("scaled") - self.seconds("fresh")) / (self.scaled_pairs - self.pairs)
        return self.seconds("fresh") - self.pairs * per_pair, 1 / per_pair


def max_abs_difference(ours: dict[str, dict[str, float]], theirs: dict[str, dict[str, float]], metric: str):
    differences = []
    for key, row in theirs.items():
        mine, other = ours.get(key, {}).get(metric), row.get(metric)
        if mine is None or other is None or not (math.isfinite(mine) and math.isfinite(other)):
            continue
        differences.append(abs(mine - other))
    return max(differences) if differences else None


def format_rate(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def format_ratio(ours: float, theirs: float) -> str:
    return "-" if math.isnan(ours) or math.isnan(theirs) else f"{ours / theirs:.2f}x"


def format_difference(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def markdown_table(
    rows: list[Method], ours: Method, metrics: tuple[str, ...], skipped: dict[str, str]
) -> str:
    head = [
        "method", "layout", "started pairs/s", "ours ÷ it", f"fresh process, {ours.pairs} pairs", "ours ÷ it",
        f"fresh process, {ours.scaled_pairs or '-'} pairs", "ours ÷ it", *(f"max abs Δ {m}" for m in metrics),
        "note",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        differences = [
            format_difference(max_abs_difference(ours.values, row.values, m))
            if row.values and m in row.metrics and row is not ours
            else ("ref" if row is ours else "-")
            for m in metrics
        ]
        cells = [
            row.name,
            row.layout,
            format_rate(row.rate("started")),
            format_ratio(ours.rate("started"), row.rate("started")),
            format_rate(row.rate("fresh")),
            format_ratio(ours.rate("fresh"), row.rate("fresh")),
            format_rate(row.rate("scaled")),
            format_ratio(ours.rate("scaled"), row.rate("scaled")),
            *differences,
            row.note,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for name, why in skipped.items():
        lines.append("| " + " | ".join([name, *("-" for _ in range(len(head) - 2)), why]) + " |")
    return "\n".join(lines)


def peer_method(peer: Peer, layout: str, pair_count: int, repeats: int) -> Method:
    note = peer.note
    pairs = pair_count
    if peer.sample and pair_count > peer.sample:
        pairs = math.ceil(pair_count / math.ceil(pair_count / peer.sample))
        note = f"{note}; slow: timed once on {pairs} of the {pair_count} pairs" if repeats > 1 else note
    return Method(peer.name, peer.metrics, layout, pairs, note=note)


def verdict(label: str, ratio: float, target: float | None, detail: str) -> str:
    """One target line: PASS/FAIL against `target`, or 'info' (no target) when it is None."""
    if target is None:
        return f"- info: {label}: {ratio:.2f} ({detail})"
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
    from pipeline.manifest import software_versions

    peers = (
        "torch",
        "numpy",
        "pillow",
        "dask",
        "scikit-image",
        "pytorch-msssim",
        "piq",
        "torchmetrics",
        "pyiqa",
        "lpips",
    )
    versions = software_versions(peers)
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version(), "versions": versions}


def target_lines(
    metrics: tuple[str, ...], ours: Method, peers: list[Method], decode: Method | None
) -> list[str]:
    """Issue 6's targets for one metric set: PASS/FAIL on started runs and on fresh processes over the
    scaled dataset; fresh processes over the base dataset, where start-up dominates, for information."""
    lines = []
    complete = [row for row in peers if set(metrics) <= set(row.metrics)]
    name = "PSNR+SSIM+MS-SSIM" if metrics == PIXEL_METRICS else "LPIPS-alex"
    target = TARGET_PIXEL_SPEEDUP if metrics == PIXEL_METRICS else TARGET_LPIPS_SPEEDUP
    modes = (
        ("started", "started", True),
        ("scaled", f"fresh process, {ours.scaled_pairs} pairs", True),
        ("fresh", f"fresh process, {ours.pairs} pairs", False),
    )
    for mode, label, judged in modes:
        timed = [row for row in complete if not math.isnan(row.rate(mode))]
        if timed and not math.isnan(ours.rate(mode)):
            fastest = max(timed, key=lambda r: r.rate(mode))
            lines.append(
                verdict(
                    f"{name} vs the fastest peer loop, {label}",
                    ours.rate(mode) / fastest.rate(mode),
                    target if judged else None,
                    f"{fastest.name}, {fastest.layout}: {format_rate(fastest.rate(mode))} pairs/s",
                )
            )
        if decode is not None and mode != "scaled":
            lines.append(
                verdict(
                    f"{name} fraction of the decode bound, {label}",
                    ours.rate(mode) / decode.rate(mode),
                    TARGET_DECODE_FRACTION if judged else None,
                    f"decode {format_rate(decode.rate(mode))} pairs/s",
                )
            )
    for row in [ours, *complete]:
        if row.scaled:
            start_up, rate = row.start_up()
            lines.append(
                f"- info: {row.name} ({row.layout or 'CLI'}), fresh process: {start_up:.2f} s of start-up, "
                f"then {format_rate(rate)} pairs/s (from the {row.pairs}- and {row.scaled_pairs}-pair runs)"
            )
    for row in peers:
        if row.metrics[0] in metrics and not set(metrics) <= set(row.metrics):
            lines.append(
                f"- info: vs {row.name} ({row.layout}, computes only {'+'.join(row.metrics)}): "
                f"{format_ratio(ours.rate('started'), row.rate('started'))} started, "
                f"{format_ratio(ours.rate('fresh'), row.rate('fresh'))} fresh process"
            )
    return lines


# Driver


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs=2, type=Path, metavar=("REF_DIR", "OUT_DIR"), help="folders to score")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per method (median reported)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="pipeline --workers (default: its own layout); peer processes",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 15 generated pairs, 1 repeat")
    parser.add_argument(
        "--peers", help=f"comma-separated peers to time (default: every installed one of {', '.join(PEERS)})"
    )
    parser.add_argument(
        "--fresh-scale",
        type=int,
        default=None,
        help="also time fresh processes on the dataset this many times over (default 5, 2 with --quick; "
        "1: not at all): this pipeline and the fastest peer layouts",
    )
    parser.add_argument("--json", type=Path, help="write the raw numbers to this file")
    parser.add_argument("--workdir", type=Path, help="keep data and run dirs here instead of a temp dir")
    parser.add_argument(
        "--peer-process", nargs=3, metavar=("PEER", "LAYOUT", "PAIRS_JSON"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if args.peer_process:
        name, layout, pairs_file = args.peer_process
        run_peer_process(name, layout, Path(pairs_file), args.workers or cores)
        return 0
    repeats = 1 if args.quick else args.repeats
    workdir = Path(tempfile.mkdtemp(prefix="iqa-bench-")) if args.workdir is None else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["TORCH_HOME"] = str(workdir / "torch_home")
    os.environ.setdefault("OMP_NUM_THREADS", str(cores))
    os.environ.setdefault("MKL_NUM_THREADS", str(cores))
    try:
        return benchmark(args, workdir, cores, args.workers or cores, repeats)
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


def dataset_folders(args: argparse.Namespace, workdir: Path) -> tuple[Path, Path]:
    if args.data:
        for folder in args.data:
            if not folder.is_dir():
                raise SystemExit(f"--data: {folder} is not a directory")
        return args.data[0], args.data[1]
    root = workdir / "data"
    if not (root / "reference").exists():
        build_dataset(root, limit=12 if args.quick else None)
    return root / "reference", root / "output"


def benchmark(args: argparse.Namespace, workdir: Path, cores: int, workers: int, repeats: int) -> int:
    import importlib.util

    import torch

    weights = str(seeded_alexnet(Path(os.environ["TORCH_HOME"])))
    ref_dir, out_dir = dataset_folders(args, workdir)
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
    wanted = PEERS if args.peers is None else [name for name in args.peers.split(",") if name]
    unknown = sorted(set(wanted) - set(PEERS))
    if unknown:
        raise SystemExit(f"--peers: unknown {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    for name, peer in PEERS.items():
        if name not in wanted:
            continue
        if importlib.util.find_spec(peer.package) is None:
            skipped[name] = PYIQA_MISSING if name == "pyiqa" else "not installed (pip install '.[bench]')"
        else:
            available.append(name)
    layouts = {SINGLE: f"1 proc x {cores} threads", POOL: f"{workers} procs x 1 thread"}
    peer_rows = [
        (name, layout, peer_method(PEERS[name], layouts[layout], len(pairs), repeats))
        for name in available
        for layout in (SINGLE, POOL)
    ]
    peer_pairs = {name: PEERS[name].pairs_for(pairs) for name in available}
    peer_files = {
        name: write_pairs(workdir / f"pairs-{name}.json", subset) for name, subset in peer_pairs.items()
    }
    all_pairs_file = write_pairs(workdir / "pairs-all.json", pairs)
    ours = {metrics: Method("iqa score", metrics, "", len(pairs)) for metrics in (PIXEL_METRICS, ("lpips",))}
    decode = Method("decode only (read_image)", (), f"{workers} procs", len(pairs))

    torch.set_num_threads(cores)
    for name in available:
        run_peer(name, pairs[:1])
    configs = {metrics: pipeline_config(metrics, weights, args, None) for metrics in ours}
    for config in configs.values():  # untimed warm-up call (it keeps the LPIPS network, as a worker does)
        run_pipeline(ref_dir, out_dir, workdir / "runs" / "warm-up", config)
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, _init_pool_worker, (1, available, pairs[0])) as pool:
        pool.map(_decode_chunk, [pairs[:1]] * workers)
        for repeat in range(repeats):
            print(f"repeat {repeat + 1}/{repeats}: started", flush=True)
            torch.set_num_threads(cores)  # for the single-process peers; the pipeline's tasks set their own
            for name, layout, row in peer_rows:
                if repeat > 0 and PEERS[name].sample:
                    continue
                subset = peer_pairs[name]
                start = time.perf_counter()
                if layout == SINGLE:
                    values = run_peer(name, subset)
                else:
                    values = {}
                    jobs = [(name, c) for c in chunks(subset, workers * 4)]
                    for part in pool.map(_run_chunk, jobs, chunksize=1):
                        values.update(part)
                row.started.append(time.perf_counter() - start)
                row.values = row.values or values
                print_rate(row, row.started[-1])
            # the decode bound and this pipeline back to back, so their ratio sees one state of the machine
            start = time.perf_counter()
            pool.map(_decode_chunk, chunks(pairs, workers * 4), chunksize=1)
            decode.started.append(time.perf_counter() - start)
            print_rate(decode, decode.started[-1])
            for metrics, row in ours.items():
                run_pipeline_started(
                    row, ref_dir, out_dir, workdir / "runs" / f"started-{repeat}", configs[metrics]
                )
    for repeat in range(repeats):
        print(f"repeat {repeat + 1}/{repeats}: fresh processes", flush=True)
        for name, layout, row in peer_rows:
            if repeat > 0 and PEERS[name].sample:
                continue
            row.fresh.append(
                timed_process(peer_command(name, layout, peer_files[name], workers), process_env(1))
            )
            print_rate(row, row.fresh[-1])
        decode.fresh.append(
            timed_process(peer_command(DECODE, POOL, all_pairs_file, workers), process_env(1))
        )
        print_rate(decode, decode.fresh[-1])
        for metrics, row in ours.items():
            command = pipeline_command(ref_dir, out_dir, workdir / "runs" / "fresh", metrics, weights, args)
            row.fresh.append(timed_process(command, process_env(1)))
            print(f"  iqa score {','.join(metrics):<22} {row.pairs / row.fresh[-1]:7.2f} pairs/s", flush=True)
    scale = args.fresh_scale or (2 if args.quick else 5)
    if scale > 1:
        scaled_ref, scaled_out = scaled_dataset(ref_dir, out_dir, workdir / f"data-x{scale}", scale)
        scaled_pairs = list_pairs(scaled_ref, scaled_out)
        scaled_file = write_pairs(workdir / "pairs-scaled.json", scaled_pairs)
        chosen = scaled_picks(peer_rows)
        picks = [(name, layout, row) for name, layout, row in peer_rows if any(row is c for c in chosen)]
        for row in [*(row for _, _, row in picks), *ours.values()]:
            row.scaled_pairs = len(scaled_pairs)
        for repeat in range(repeats):
            print(f"repeat {repeat + 1}/{repeats}: fresh processes, {len(scaled_pairs)} pairs", flush=True)
            for name, layout, row in picks:
                row.scaled.append(
                    timed_process(peer_command(name, layout, scaled_file, workers), process_env(1))
                )
                print_rate(row, row.scaled[-1], row.scaled_pairs)
            for metrics, row in ours.items():
                command = pipeline_command(
                    scaled_ref, scaled_out, workdir / "runs" / "scaled", metrics, weights, args
                )
                row.scaled.append(timed_process(command, process_env(1)))
                print_rate(row, row.scaled[-1], row.scaled_pairs)

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
    for metrics, our_row in ours.items():
        rows_here = [row for _, _, row in peer_rows if row.metrics[0] in metrics]
        rows = [our_row, *rows_here, *([decode] if metrics == PIXEL_METRICS else [])]
        title = (
            "PSNR + SSIM + MS-SSIM" if metrics == PIXEL_METRICS else "LPIPS (alex, seeded random backbone)"
        )
        table_skips = {k: v for k, v in skipped.items() if (k == "lpips") == (metrics != PIXEL_METRICS)}
        lines += [f"### {title}", "", markdown_table(rows, our_row, metrics, table_skips), ""]
        results["tables"][",".join(metrics)] = [
            {
                "method": r.name,
                "layout": r.layout,
                "metrics": list(r.metrics),
                "pairs": r.pairs,
                "started_seconds": r.started,
                "fresh_seconds": r.fresh,
                "started_pairs_per_s": r.rate("started"),
                "fresh_pairs_per_s": r.rate("fresh"),
                "scaled_pairs": r.scaled_pairs,
                "scaled_seconds": r.scaled,
                "scaled_pairs_per_s": r.rate("scaled"),
                "max_abs_difference": {
                    m: max_abs_difference(our_row.values, r.values, m)
                    for m in metrics
                    if r.values and r is not our_row
                },
            }
            for r in rows
        ]
        targets += target_lines(metrics, our_row, rows_here, decode if metrics == PIXEL_METRICS else None)
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


def scaled_dataset(ref_dir: Path, out_dir: Path, root: Path, copies: int) -> tuple[Path, Path]:
    """`copies` copies of both folders as root/reference/copy-{i}/ and root/output/copy-{i}/ (hard links
    where the file system allows): the same pairs `copies` times over, paired the same way."""
    targets = root / "reference", root / "output"
    if targets[0].exists():
        return targets
    for source, target in zip((ref_dir, out_dir), targets, strict=True):
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            for copy in range(copies):
                destination = target / f"copy-{copy}" / path.relative_to(source)
                destination.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, destination)
                except OSError:
                    shutil.copy2(path, destination)
    return targets


def scaled_picks(peer_rows: list[tuple[str, str, Method]]) -> list[Method]:
    """The peer layouts to time on the scaled dataset: for each metric set, the fastest started and the
    fastest fresh one among the peers that compute all of it on every pair."""
    picks: list[Method] = []
    for metrics in (PIXEL_METRICS, ("lpips",)):
        complete = [
            row
            for name, _, row in peer_rows
            if set(metrics) <= set(row.metrics) and not PEERS[name].sample and row.started and row.fresh
        ]
        for mode in ("started", "fresh"):
            if complete:
                fastest = max(complete, key=lambda r: r.rate(mode))
                if all(fastest is not pick for pick in picks):
                    picks.append(fastest)
    return picks


def write_pairs(path: Path, pairs: list[PairPaths]) -> Path:
    """The pairs as JSON for a `--peer-process` child; returns `path`."""
    path.write_text(json.dumps([pair.__dict__ for pair in pairs]))
    return path


def print_rate(row: Method, seconds: float, pairs: int | None = None) -> None:
    """One progress line: a method's pairs/s for one timing (of `pairs`, default its dataset's pairs)."""
    print(f"  {row.name:<16} {row.layout:<22} {(pairs or row.pairs) / seconds:7.2f} pairs/s", flush=True)


def run_pipeline_started(row: Method, ref_dir: Path, out_dir: Path, run_dir: Path, config) -> None:
    """One timed `score_folders` call, starting its embedded cluster, appended to `row`."""
    wall, manifest = run_pipeline(ref_dir, out_dir, run_dir, config)
    row.started.append(wall)
    row.layout = manifest["execution"].removeprefix("local cluster: ")
    if row.values is None:
        row.values = pipeline_values(run_dir, row.metrics)
    print(f"  iqa score {','.join(row.metrics):<22} {row.pairs / wall:7.2f} pairs/s", flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""Timing: fresh processes from start to exit, started runs of this pipeline, and the record of each method.

A fresh process is what a user waits for (interpreter start, imports and model building included); a started
run is this pipeline's `pipeline.score` called in a process that has imported it. `Method` keeps the wall
seconds of each repeat and reports medians; timed on two dataset sizes, a fresh process's start-up seconds
and its pairs/s after start-up are the line through both.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pipeline
from pipeline.api import Run
from pipeline.manifest import software_versions

SCRIPTS = Path(__file__).resolve().parents[1]
RECORDED_PACKAGES = (
    "torch", "numpy", "pillow", "dask", "scikit-image", "pytorch-msssim", "piq", "torchmetrics", "pyiqa",
    "lpips",
)  # fmt: skip

Values = dict[str, dict[str, float]]  # {key: {metric: value}}


def usable_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def machine_description() -> dict[str, Any]:
    """{'cores', 'cpu' (model name), 'python', 'versions' of torch and the peer libraries}."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": usable_cores(),
        "cpu": model,
        "python": platform.python_version(),
        "versions": software_versions(RECORDED_PACKAGES),
    }


def process_env(threads: int) -> dict[str, str]:
    """The environment of a timed child: `threads` OpenMP/MKL threads, scripts/ importable (`bench`)."""
    path = os.pathsep.join(p for p in (str(SCRIPTS), os.environ.get("PYTHONPATH")) if p)
    return {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": path,
    }


def run_child(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `command` to its exit, output captured.

    Raises:
        SystemExit: it failed; the message holds the end of its output.
    """
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        output = completed.stdout[-2000:] + completed.stderr[-3000:]
        raise SystemExit(f"{' '.join(command)} failed ({completed.returncode}):\n{output}")
    return completed


class Stopwatch:
    """The wall seconds of a `with` block: `with Stopwatch() as watch: ...`, then `watch.seconds`."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.perf_counter() - self.start


def timed_process(command: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds from starting `command` until it exits (`run_child`)."""
    with Stopwatch() as watch:
        run_child(command, env)
    return watch.seconds


def child_json(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """The JSON object a child prints on its last line of output (`run_child`)."""
    return json.loads(run_child(command, env).stdout.strip().splitlines()[-1])


def peer_command(name: str, layout: str, pairs_file: Path, workers: int) -> list[str]:
    """A fresh process running one peer's loop (`bench.peers`) over the pairs in `pairs_file`."""
    return [sys.executable, "-m", "bench.peers", name, layout, str(pairs_file), str(workers)]


def decode_command(pairs_file: Path, workers: int) -> list[str]:
    """A fresh process decoding the pairs in `pairs_file` in a pool of `workers` (`bench.decode`)."""
    return [sys.executable, "-m", "bench.decode", str(pairs_file), str(workers)]


def score_arguments(
    ref_dir: Path, out_dir: Path, run_dir: Path, metrics: tuple[str, ...], weights: str | None,
    workers: int | None = None,
) -> list[str]:  # fmt: skip
    """The arguments of `iqa score` on CPU without a report: LPIPS weights when LPIPS is scored, `--workers`
    when given (default: its own layout)."""
    arguments = [
        "score", str(ref_dir), str(out_dir), "-o", str(run_dir), "--metrics", ",".join(metrics),
        "--device", "cpu", "--no-report", "--no-progress", "--overwrite",
    ]  # fmt: skip
    if weights and "lpips" in metrics:
        arguments += ["--lpips-weights", weights]
    if workers:
        arguments += ["--workers", str(workers)]
    return arguments


def score_command(
    ref_dir: Path, out_dir: Path, run_dir: Path, metrics: tuple[str, ...], weights: str | None,
    workers: int | None = None,
) -> list[str]:  # fmt: skip
    """The `iqa score` CLI as a user runs it (through `python -m pipeline`, the same entry point)."""
    arguments = score_arguments(ref_dir, out_dir, run_dir, metrics, weights, workers)
    return [sys.executable, "-m", "pipeline", *arguments]


def score_started(
    ref_dir: Path, out_dir: Path, run_dir: Path, metrics: tuple[str, ...], weights: str | None,
    device: str = "cpu", workers: int | None = None,
) -> tuple[float, Run]:  # fmt: skip
    """One timed `pipeline.score` run into `run_dir` (replaced), its cluster started in the call.

    Returns:
        (wall seconds, the Run).

    Raises:
        SystemExit: a pair failed.
    """
    with Stopwatch() as watch:
        run = pipeline.score(
            ref_dir, out_dir, run_dir, metrics=metrics, report=False, progress=False, device=device,
            lpips_weights=weights if "lpips" in metrics else None, workers=workers, overwrite=True,
        )  # fmt: skip
    if run.counts["error"]:
        raise SystemExit(
            f"the pipeline run in {run_dir} has {run.counts['error']} error rows; see its Parquet"
        )
    return watch.seconds, run


def run_values(run: Run, metrics: tuple[str, ...]) -> Values:
    """{key: {metric: value}} of a run's rows."""
    return {row["key"]: {m: row[m] for m in metrics} for _, row in run.frame.iterrows()}


@dataclass
class Method:
    """One row of a table: a method timed started and as a fresh process on one or two dataset sizes."""

    name: str
    metrics: tuple[str, ...]
    layout: str
    pairs: int
    started: list[float] = field(default_factory=list)
    fresh: list[float] = field(default_factory=list)
    scaled: list[float] = field(default_factory=list)  # fresh, on the dataset several times over
    scaled_pairs: int = 0
    values: Values | None = None
    note: str = ""

    def pairs_in(self, mode: str) -> int:
        """The pairs timed in one mode: 'started', 'fresh' or 'scaled'."""
        return self.scaled_pairs if mode == "scaled" else self.pairs

    def seconds(self, mode: str) -> float:
        """Median wall seconds of one mode: 'started', 'fresh' or 'scaled' (NaN when not timed)."""
        timings = {"started": self.started, "fresh": self.fresh, "scaled": self.scaled}[mode]
        return statistics.median(timings) if timings else float("nan")

    def rate(self, mode: str) -> float:
        """Pairs/s of one mode, from its median seconds."""
        return self.pairs_in(mode) / self.seconds(mode)

    def start_up(self) -> tuple[float, float]:
        """(start-up seconds, pairs/s after it) of a fresh process, from its two dataset sizes: the line
        through (pairs, median seconds) of the fresh and scaled runs."""
        per_pair = (self.seconds("scaled") - self.seconds("fresh")) / (self.scaled_pairs - self.pairs)
        return self.seconds("fresh") - self.pairs * per_pair, 1 / per_pair


def record(row: Method, mode: str, seconds: float) -> None:
    """Add one timing of `mode` to `row` and print its pairs/s as a progress line."""
    getattr(row, mode).append(seconds)
    rate = row.pairs_in(mode) / seconds
    print(f"  {row.name:<16} {'+'.join(row.metrics):<18} {row.layout:<24} {rate:7.2f} pairs/s", flush=True)

"""The rounds of `scripts/bench.py`: every method timed started, as a fresh process, and as a fresh process
on the dataset several times over (this pipeline and the fastest peer layouts).

Every repeat of the started round times each method once: the peers, then the decode bound and this
pipeline back to back, so that their ratio sees one state of the machine. This pipeline's started runs come
after one untimed warm-up call per metric set in this process (which keeps the LPIPS network, as a worker
does); each peer loop runs in this process or in a spawned pool that has imported its library and built its
model.
"""

from __future__ import annotations

import math
import multiprocessing
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path

import torch

from bench.dataset import list_pairs, scaled_dataset
from bench.decode import decode_chunk, decode_in_pool
from bench.pairs import PairPaths, write_pairs
from bench.peers import (
    LPIPS_METRICS,
    PEERS,
    PIXEL_METRICS,
    POOL,
    SINGLE,
    init_pool_worker,
    run_in_pool,
    run_peer,
)
from bench.report import Table
from bench.timing import (
    Method,
    Stopwatch,
    decode_command,
    peer_command,
    process_env,
    record,
    run_values,
    score_command,
    score_started,
    timed_process,
)
from pipeline.api import Run

METRIC_SETS = (PIXEL_METRICS, LPIPS_METRICS)


@dataclass(frozen=True)
class Data:
    """A dataset to time: its folders, its pairs and their JSON file for child processes."""

    ref_dir: Path
    out_dir: Path
    pairs: list[PairPaths]
    pairs_file: Path


@dataclass(frozen=True)
class Setup:
    """What every round needs."""

    data: Data
    workdir: Path
    weights: str  # the seeded AlexNet checkpoint, for both this pipeline and the lpips package
    cores: int
    workers: int  # processes of a peer pool and of the decode bound
    pipeline_workers: int | None  # `iqa score --workers`; None: its own layout
    repeats: int


@dataclass
class PeerRow:
    """A peer loop in one layout (`SINGLE` or `POOL`), the pairs it is timed on, and its timings."""

    name: str
    layout: str
    pairs: list[PairPaths]
    pairs_file: Path
    method: Method


@dataclass
class Methods:
    """Every method of a benchmark run and its timings."""

    peers: list[PeerRow]
    ours: dict[tuple[str, ...], Method]
    decode: Method
    skipped: dict[str, str]

    def tables(self) -> list[Table]:
        """One table per metric set, with the peers that compute (some of) it."""
        tables = []
        for metrics in METRIC_SETS:
            peers = [row.method for row in self.peers if row.method.metrics[0] in metrics]
            skipped = {k: v for k, v in self.skipped.items() if PEERS[k].metrics[0] in metrics}
            decode = self.decode if metrics == PIXEL_METRICS else None
            tables.append(Table(metrics, self.ours[metrics], peers, decode, skipped))
        return tables


def load_data(ref_dir: Path, out_dir: Path, workdir: Path) -> Data:
    """The pairs of two folders, written for child processes under `workdir`.

    Raises:
        SystemExit: the folders hold no pair.
    """
    pairs = list_pairs(ref_dir, out_dir)
    if not pairs:
        raise SystemExit(f"no pairs found between {ref_dir} and {out_dir}")
    return Data(ref_dir, out_dir, pairs, write_pairs(workdir / "pairs-all.json", pairs))


def plan_methods(setup: Setup, available: list[str], skipped: dict[str, str]) -> Methods:
    """The methods to time: each available peer in both layouts, this pipeline per metric set, decoding."""
    pairs = setup.data.pairs
    layouts = {SINGLE: f"1 proc x {setup.cores} threads", POOL: f"{setup.workers} procs x 1 thread"}
    rows = []
    for name in available:
        subset = PEERS[name].pairs_for(pairs)
        pairs_file = write_pairs(setup.workdir / f"pairs-{name}.json", subset)
        for layout, description in layouts.items():
            method = peer_method(name, description, len(pairs), setup.repeats)
            rows.append(PeerRow(name, layout, subset, pairs_file, method))
    ours = {metrics: Method("iqa score", metrics, "", len(pairs)) for metrics in METRIC_SETS}
    decode = Method("decode only (read_image)", (), f"{setup.workers} procs", len(pairs))
    return Methods(rows, ours, decode, skipped)


def peer_method(name: str, layout: str, pair_count: int, repeats: int) -> Method:
    """The record of one peer layout; a slow peer's note says it is timed once on a sample."""
    peer = PEERS[name]
    pairs, note = pair_count, peer.note
    if peer.sample and pair_count > peer.sample:
        pairs = math.ceil(pair_count / math.ceil(pair_count / peer.sample))
        note = f"{note}; slow: timed once on {pairs} of the {pair_count} pairs" if repeats > 1 else note
    return Method(peer.name, peer.metrics, layout, pairs, note=note)


def timed_this_repeat(row: PeerRow, repeat: int) -> bool:
    """A slow peer (one timed on a sample) is timed in the first repeat only."""
    return repeat == 0 or not PEERS[row.name].sample


def time_started(setup: Setup, methods: Methods) -> None:
    """The started round: warm-up, then `repeats` times every peer, the decode bound and this pipeline."""
    data, workers = setup.data, setup.workers
    available = sorted({row.name for row in methods.peers})
    torch.set_num_threads(setup.cores)
    for name in available:
        run_peer(name, data.pairs[:1])
    for metrics in methods.ours:
        score_here(setup, metrics, setup.workdir / "runs" / "warm-up")
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, init_pool_worker, (1, available, data.pairs[0])) as pool:
        pool.map(decode_chunk, [data.pairs[:1]] * workers)
        for repeat in range(setup.repeats):
            print(f"repeat {repeat + 1}/{setup.repeats}: started", flush=True)
            # for the single-process peers; the pipeline's tasks set their own
            torch.set_num_threads(setup.cores)
            for row in (row for row in methods.peers if timed_this_repeat(row, repeat)):
                time_peer_started(row, pool, workers)
            with Stopwatch() as watch:
                decode_in_pool(pool, data.pairs, workers)
            record(methods.decode, "started", watch.seconds)
            for row in methods.ours.values():
                time_ours_started(setup, row, setup.workdir / "runs" / f"started-{repeat}")


def time_peer_started(row: PeerRow, pool: Pool, workers: int) -> None:
    """One started timing of a peer loop, in this process or over the started pool."""
    with Stopwatch() as watch:
        if row.layout == SINGLE:
            values = run_peer(row.name, row.pairs)
        else:
            values = run_in_pool(pool, row.name, row.pairs, workers)
    record(row.method, "started", watch.seconds)
    row.method.values = row.method.values or values


def score_here(setup: Setup, metrics: tuple[str, ...], run_dir: Path) -> tuple[float, Run]:
    """One timed `pipeline.score` run of the dataset in this process (`timing.score_started`)."""
    data = setup.data
    return score_started(
        data.ref_dir, data.out_dir, run_dir, metrics, setup.weights, workers=setup.pipeline_workers
    )


def time_ours_started(setup: Setup, row: Method, run_dir: Path) -> None:
    """One started timing of `pipeline.score`; the first one also keeps its values and layout."""
    seconds, run = score_here(setup, row.metrics, run_dir)
    row.layout = run.manifest["execution"].removeprefix("local cluster: ")
    record(row, "started", seconds)
    if row.values is None:
        row.values = run_values(run, row.metrics)


def time_fresh(setup: Setup, methods: Methods, rows: list[PeerRow], data: Data, mode: str) -> None:
    """`repeats` times, a fresh process of each peer row, of the decode bound (base dataset only) and of
    `iqa score` per metric set on `data`; timings go to `mode` ('fresh' or 'scaled')."""
    env = process_env(1)
    for repeat in range(setup.repeats):
        print(f"repeat {repeat + 1}/{setup.repeats}: fresh processes, {len(data.pairs)} pairs", flush=True)
        for row in (row for row in rows if timed_this_repeat(row, repeat)):
            pairs_file = row.pairs_file if mode == "fresh" else data.pairs_file
            command = peer_command(row.name, row.layout, pairs_file, setup.workers)
            record(row.method, mode, timed_process(command, env))
        if mode == "fresh":
            record(methods.decode, mode, timed_process(decode_command(data.pairs_file, setup.workers), env))
        for metrics, row in methods.ours.items():
            run_dir = setup.workdir / "runs" / mode
            command = score_command(
                data.ref_dir, data.out_dir, run_dir, metrics, setup.weights, setup.pipeline_workers
            )
            record(row, mode, timed_process(command, env))


def scaled_data(setup: Setup, copies: int) -> Data:
    """The dataset `copies` times over, under the work dir."""
    ref_dir, out_dir = scaled_dataset(
        setup.data.ref_dir, setup.data.out_dir, setup.workdir / f"data-x{copies}", copies
    )
    pairs = list_pairs(ref_dir, out_dir)
    return Data(ref_dir, out_dir, pairs, write_pairs(setup.workdir / "pairs-scaled.json", pairs))


def scaled_picks(rows: list[PeerRow]) -> list[PeerRow]:
    """The peer layouts to time on the scaled dataset: for each metric set, the fastest started and the
    fastest fresh one among the peers that compute all of it on every pair."""
    picks: list[PeerRow] = []
    for metrics in METRIC_SETS:
        complete = [
            row
            for row in rows
            if set(metrics) <= set(row.method.metrics)
            and not PEERS[row.name].sample
            and row.method.started
            and row.method.fresh
        ]
        for mode in ("started", "fresh"):
            if complete:
                fastest = max(complete, key=lambda row: row.method.rate(mode))
                if all(fastest is not pick for pick in picks):
                    picks.append(fastest)
    return picks


def time_scaled(setup: Setup, methods: Methods, copies: int) -> None:
    """Fresh processes of this pipeline and the fastest peer layouts on the dataset `copies` times over."""
    data = scaled_data(setup, copies)
    picks = scaled_picks(methods.peers)
    for row in [*(pick.method for pick in picks), *methods.ours.values()]:
        row.scaled_pairs = len(data.pairs)
    time_fresh(setup, methods, picks, data, "scaled")


def run_rounds(setup: Setup, methods: Methods, copies: int) -> None:
    """Started, fresh, and (when `copies` > 1) fresh on the dataset `copies` times over."""
    time_started(setup, methods)
    time_fresh(setup, methods, methods.peers, setup.data, "fresh")
    if copies > 1:
        time_scaled(setup, methods, copies)

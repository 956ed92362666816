"""Throughput of `iqa score` against the per-pair Python loops a user would write with peer libraries.

    python scripts/bench.py                          # 60 pairs built from scikit-image's photos, 3 repeats
    python scripts/bench.py --data REF_DIR OUT_DIR   # your own folders (paired like `iqa score` pairs them)
    python scripts/bench.py --quick                  # small smoke run
    python scripts/bench.py --json bench.json        # also save the raw numbers
    python scripts/bench.py --adapters               # adapted metrics (pyiqa:fsim, ...) vs their libraries
    python scripts/bench.py --adapters pyiqa:fsim,piq:gmsd --photos 12   # some of them, 60 pairs

Every method is timed on the same pairs, pairs per second as the median over `--repeats`:

* started: libraries imported and models built. This pipeline runs `pipeline.score` end to end (discovery,
  hashing, decoding, metrics, Parquet parts and the manifest, no HTML report), starting its embedded cluster
  in each call; each peer loop runs in a process or pool that has imported its library and built its model.
* fresh process: what a user waits for, interpreter start, imports and model building included. This
  pipeline runs `python -m pipeline score ... --no-report` (the `iqa score` CLI); each peer runs
  `python -m bench.peers`, which imports the library, starts its pool if it has one, and runs the loop.
  Start-up weighs most on a small dataset, so fresh processes are also timed on the dataset `--fresh-scale`
  times over (default 5: 300 pairs), for this pipeline and the fastest peer layouts; the targets are judged
  there, and the two sizes give each of those methods its start-up seconds and pairs/s after start-up.

Peers (`bench.peers`): scikit-image, pytorch-msssim, piq, torchmetrics and pyiqa (when installed) for
PSNR+SSIM+MS-SSIM, the `lpips` package for LPIPS; each in one process with `cores` threads and in a pool of
`cores` processes with one thread each. The decode bound (`bench.decode`): the pipeline's decoder on every
pair in a pool of one process per core. All methods use one convention (channels as stored, data range 255,
11x11 Gaussian SSIM with sigma 1.5, 5-scale MS-SSIM); the max |difference| of each peer's values from ours
shows it is the same computation. LPIPS uses AlexNet backbone weights made with `torch.manual_seed(0)` in a
temporary TORCH_HOME (no download); speed does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench.adapters import ADAPTED_METRICS, run_adapters
from bench.dataset import dataset_folders, describe_dataset, seeded_alexnet
from bench.peers import PEERS, choose_peers
from bench.report import Context, render
from bench.suite import Setup, load_data, plan_methods, run_rounds
from bench.timing import machine_description, usable_cores

QUICK_PAIRS = 12  # --quick: the photos that make at least this many pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (`--help` shows the module docstring)."""
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
        "--adapters",
        nargs="?",
        const=",".join(ADAPTED_METRICS),
        metavar="LIBRARY:NAME,...",
        help="instead: adapted metrics through the pipeline against each library's own loop "
        "(`bench.adapters`; default: 6 of pyiqa, 4 of piq, 3 of torchmetrics)",
    )
    parser.add_argument(
        "--photos", type=int, default=3, help="with --adapters: photos of the dataset (5 pairs each)"
    )
    return parser.parse_args(argv)


def benchmark(args: argparse.Namespace, workdir: Path) -> int:
    """Every round over every method, then the report (and the JSON record with `--json`)."""
    cores, repeats = usable_cores(), 1 if args.quick else args.repeats
    weights = str(seeded_alexnet(Path(os.environ["TORCH_HOME"])))
    data = load_data(
        *dataset_folders(workdir / "data", args.data, QUICK_PAIRS if args.quick else None), workdir
    )
    setup = Setup(data, workdir, weights, cores, args.workers or cores, args.workers, repeats)
    machine, described = machine_description(), describe_dataset(data.pairs)
    print(f"machine: {cores} cores, {machine['cpu']}; dataset: {described}; repeats: {repeats}", flush=True)
    load_before = os.getloadavg()[0]
    if load_before > cores / 2:
        print(f"warning: load average {load_before:.1f} on {cores} cores: other processes skew timings")
    methods = plan_methods(setup, *choose_peers(args.peers))
    run_rounds(setup, methods, args.fresh_scale or (2 if args.quick else 5))
    context = Context(machine, (load_before, os.getloadavg()[0]), described, repeats)
    report, record = render(methods.tables(), context)
    print("\n" + report)
    if args.json:
        args.json.write_text(json.dumps(record, indent=2, default=str))
    return 0


def adapters(args: argparse.Namespace, workdir: Path) -> int:
    """`--adapters`: each adapted metric timed through the pipeline and in its library's loop (medians of
    `--repeats`), the figures also in the JSON file of `--json`."""
    selectors = [name.strip() for name in args.adapters.split(",") if name.strip()]
    repeats = 1 if args.quick else args.repeats
    results = run_adapters(selectors, workdir, args.photos, repeats)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark in `--workdir` or a temporary folder (removed afterwards); returns the exit code."""
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="iqa-bench-")) if args.workdir is None else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ["TORCH_HOME"] = str(workdir / "torch_home")
    os.environ.setdefault("OMP_NUM_THREADS", str(usable_cores()))
    os.environ.setdefault("MKL_NUM_THREADS", str(usable_cores()))
    try:
        if args.adapters:
            return adapters(args, workdir)
        return benchmark(args, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""How fast a worker's decode threads read, hash, decode and align pairs (`worker.prefetch` of `load_pair`).

    python scripts/bench_decode_threads.py                          # bench.py's 60 photo pairs
    python scripts/bench_decode_threads.py --data REF_DIR OUT_DIR   # your own folders
    python scripts/bench_decode_threads.py --threads 0,1,2,4,8      # thread counts to time

A GPU worker decodes in `worker.decode_threads` threads (one per core of the worker, at most
`GPU_DECODE_THREADS`) while its task thread scores on the GPU; this shows whether those threads can feed
it (the GPU target of issue 6 is 500 pairs/s of 512 px LPIPS). 0 threads decodes in the calling thread.
Prints the median pairs/s of `--repeats` passes per thread count and the ratio to one thread. Pairs:
`bench.dataset.build_dataset`'s, or the folders given with `--data`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.dataset import dataset_folders, list_pairs
from bench.timing import usable_cores

from pipeline.worker import PairTask, ShardSettings, load_pair, prefetch


def pair_tasks(ref_dir: Path, out_dir: Path) -> list[PairTask]:
    """The pairs of two folders as a worker receives them."""
    return [PairTask(pair.key, "", pair.ref, pair.out) for pair in list_pairs(ref_dir, out_dir)]


def decode_seconds(tasks: list[PairTask], threads: int) -> float:
    """Wall seconds to load every pair through `prefetch` with `threads` decode threads."""
    settings = ShardSettings(metrics=("psnr",))
    start = time.perf_counter()
    for loaded in prefetch(lambda task: load_pair(task, settings), tasks, threads):
        if not loaded.row.ok:
            raise SystemExit(f"{loaded.row.key}: {loaded.row.error}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", nargs=2, type=Path, metavar=("REF_DIR", "OUT_DIR"))
    cores = usable_cores()
    parser.add_argument("--threads", default=",".join(str(n) for n in range(cores + 1)))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="iqa-decode-") as scratch:
        ref_dir, out_dir = dataset_folders(Path(scratch), args.data, None)
        tasks = pair_tasks(ref_dir, out_dir)
        counts = [int(n) for n in args.threads.split(",") if n.strip()]
        decode_seconds(tasks, max(counts))  # warm the page cache and the decoders
        rates: dict[int, list[float]] = {n: [] for n in counts}
        for _ in range(args.repeats):  # thread counts alternate within each repeat
            for threads in counts:
                rates[threads].append(len(tasks) / decode_seconds(tasks, threads))
    print(f"{len(tasks)} pairs, {cores} cores, median of {args.repeats} repeats")
    one = statistics.median(rates[1]) if 1 in rates else None
    for threads, values in rates.items():
        rate = statistics.median(values)
        ratio = f"{rate / one:5.2f}x one thread" if one else ""
        print(f"  {threads:2d} decode thread(s): {rate:8.1f} pairs/s  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

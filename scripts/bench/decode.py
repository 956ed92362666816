"""The decode bound: the pipeline's decoder (read, SHA-256, decode) on both files of every pair, in a pool of
processes. It imports no torch, so a fresh process of it shows what reading alone costs from start to exit.

    python -m bench.decode PAIRS_JSON WORKERS   # spawn a pool, decode every pair, exit (scripts/ on the path)
"""

from __future__ import annotations

import multiprocessing
import sys
from multiprocessing.pool import Pool
from pathlib import Path

from bench.pairs import PairPaths, pool_chunks, read_pairs
from pipeline.images import read_image


def decode_chunk(pairs: list[PairPaths]) -> int:
    """Read and decode both files of each pair; returns the pair count."""
    for pair in pairs:
        read_image(pair.ref)
        read_image(pair.out)
    return len(pairs)


def decode_in_pool(pool: Pool, pairs: list[PairPaths], workers: int) -> None:
    """Every pair decoded once, in chunks over a started pool of `workers` processes."""
    pool.map(decode_chunk, pool_chunks(pairs, workers), chunksize=1)


def main(argv: list[str]) -> int:
    """`python -m bench.decode PAIRS_JSON WORKERS`."""
    pairs_file, workers = argv
    with multiprocessing.get_context("spawn").Pool(int(workers)) as pool:
        decode_in_pool(pool, read_pairs(Path(pairs_file)), int(workers))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

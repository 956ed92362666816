"""The benchmark kit behind `scripts/bench.py` and the other `scripts/bench_*.py` scripts.

Modules, one job each:

* `pairs`: the pair list (paths only) handed to child processes as JSON, and its chunks.
* `dataset`: the benchmark dataset built from scikit-image's photos, its scaled copy, listing and describing
  pairs, the seeded AlexNet checkpoint for LPIPS.
* `peers`: the per-pair loops a user writes with peer libraries, in one process or a process pool;
  `python -m bench.peers` runs one loop as a fresh process.
* `decode`: the decode bound, the pipeline's decoder on every pair in a process pool; `python -m bench.decode`
  runs it as a fresh process that imports no torch.
* `timing`: timing fresh processes and started runs of this pipeline, the `Method` record with medians and
  the start-up fit, the machine description.
* `report`: the markdown tables, the target lines (PASS/FAIL) and the JSON record.
* `suite`: the rounds of `scripts/bench.py`: started, fresh, and fresh on the scaled dataset.
* `adapters`: `scripts/bench.py --adapters`, adapted metrics through the pipeline against each library's
  own loop.

The package is imported as `bench` with `scripts/` on `sys.path` (as it is when a script in `scripts/` runs);
a package wins over the module `scripts/bench.py` of the same name, which is only ever run as a script.
Nothing is imported here, so that a child process loads only the module it runs.
"""

"""All-pairs similarity of a folder of images (`iqa similar`), or of a folder against a reference folder.

Every image is brought to a common size (`prepare`), the images are split into blocks and one Dask task
compares two blocks (`tasks`, with the per-image work done once per block: `pairwise`); the driver (`run`)
collects the `(N, M)` matrix and writes `similarity.parquet`, `nearest.csv` and `manifest.json` (`outputs`).

Limits: the metrics are pixel-aligned, so near-duplicates are found when they cover the same field of view
(re-encoded, resized, brightened, cropped by a few percent per border); a crop of 8 % per border or more
changes the scale of the content after the centre crop and is often not found.
"""

from pipeline.similarity.outputs import format_nearest
from pipeline.similarity.result import SimilarResult, top_pairs
from pipeline.similarity.run import run_similar

__all__ = ["SimilarResult", "format_nearest", "run_similar", "top_pairs"]

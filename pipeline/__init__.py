"""iqa-pipeline: dataset-level image-quality evaluation (PSNR, SSIM, MS-SSIM, LPIPS) on Dask.

The Python API mirrors the `iqa` command line (`pipeline.api`): `pipeline.score`, `pipeline.compare`,
`pipeline.report`, `pipeline.pairs`, `pipeline.explain`, `pipeline.similar`, `pipeline.run_nightly`,
`pipeline.table`, and `pipeline.load_results`.
(No submodule shares one of these names: an imported submodule would replace the function.)
They are imported on first use, so `import pipeline` itself stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "Run": "pipeline.api",
    "score": "pipeline.api",
    "compare": "pipeline.api",
    "explain": "pipeline.api",
    "report": "pipeline.api",
    "pairs": "pipeline.api",
    "similar": "pipeline.api",
    "run_nightly": "pipeline.api",
    "table": "pipeline.api",
    "load_results": "pipeline.results",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")

"""Metric kernels compiled with TorchScript, so that their tensor operations run without the GIL.

A CPU metric issues a few hundred tensor operations per image. Called from Python, every one of them takes
and releases the GIL, and the task threads of an in-process Dask worker then wait for each other at each
handoff: on 2 cores, SSIM + MS-SSIM on 512 px images ran 1.38x slower per thread with two threads than
with one. As a TorchScript function the same operations run in C++ without the GIL (1.08x), and give the
same values (the same ATen kernels, in the same order; tested).

The compiled functions run with the graph executor's optimisations off (`_unoptimized`): no profiling runs,
no specialisation on input shapes (which change from image to image), no rewriting of the graph.

TorchScript is deprecated in PyTorch 2.x but still shipped (2.14 here). Where `torch.jit.script` is missing
or fails on a function, that function runs as plain Python (the same operations, slower with threads);
the reason is logged once. `USE_TORCHSCRIPT = False`, or the environment variable `IQA_TORCHSCRIPT=0` in
the scoring processes, turns compilation off (tests compare both).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger("pipeline.metrics.compiled")

USE_TORCHSCRIPT = os.environ.get("IQA_TORCHSCRIPT", "1") != "0"

_LOCK = threading.Lock()
_COMPILED: dict[Callable, Callable] = {}


def compiled(function: Callable) -> Callable:
    """`function` compiled by TorchScript (once per process), or `function` itself where that fails."""
    if not USE_TORCHSCRIPT:
        return function
    found = _COMPILED.get(function)
    if found is not None:
        return found
    with _LOCK:
        if function not in _COMPILED:
            _COMPILED[function] = _script(function)
        return _COMPILED[function]


def _script(function: Callable) -> Callable:
    try:
        with warnings.catch_warnings():
            # "torch.jit.script is deprecated": known, and the fallback below covers its removal
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            script = torch.jit.script(function)
    except Exception as exc:  # TorchScript missing, or unable to compile this function
        log.info("%s runs as plain Python: TorchScript could not compile it (%s)", function.__name__, exc)
        return function
    return _unoptimized(script)


def _unoptimized(script: Callable) -> Callable:
    """Call `script` with the graph executor's optimisations off for the calling thread."""

    @functools.wraps(script)
    def run(*args: Any) -> Any:
        with torch.jit.optimized_execution(False):
            return script(*args)

    return run

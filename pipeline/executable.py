"""The `iqa` executable and `python -m pipeline`: the command line in a process that is this tool's own.

Only here, and in the worker processes it starts, does the tool change process-wide settings (the garbage
collector and glibc's allocator); `pipeline.cli.main()` called from a caller's Python leaves them alone.

- The collector is off while the command line's modules are imported (torch, pandas, Dask, ...: about
  300,000 objects, none of them garbage worth collecting), then those objects are frozen out of its reach
  (`gc.freeze`) and it is turned back on. A full collection after the imports otherwise walks all of them
  while holding the GIL (what that cost a fresh `iqa score`: docs/performance.md, eighth round).
- Before the interpreter's teardown every live object is frozen again, so that the final collections skip
  them instead of walking them all. Files and the cluster are closed and atexit handlers still run.
- glibc keeps freed buffers for reuse (`pipeline.allocator.keep_freed_memory`), as in the worker processes
  this tool starts: the embedded cluster's in-process worker scores in this process, and each pair's
  image-sized buffers would otherwise go back to the operating system and be faulted in again, zero-filled.

`pipeline.cli` is imported inside `console` on purpose: the collector must be off before it is.
"""

from __future__ import annotations

import gc

from pipeline.allocator import keep_freed_memory


def console() -> None:
    """Run `pipeline.cli.main` on `sys.argv` with the collector and the allocator set as above; ends in
    SystemExit with the command's exit code."""
    gc.disable()
    try:
        from pipeline import cli
    finally:
        gc.freeze()
        gc.enable()
    keep_freed_memory()
    try:
        cli.main()
    finally:
        gc.freeze()

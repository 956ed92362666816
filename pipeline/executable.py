"""The `iqa` executable and `python -m pipeline`: the command line in a process that is this tool's own.

Only here does the tool set the garbage collector, a process-wide setting; `pipeline.cli.main()` called from
a caller's Python leaves it alone.

- The collector is off while the command line's modules are imported (torch, pandas, Dask, ...: about
  300,000 objects, none of them garbage worth collecting), then those objects are frozen out of its reach
  (`gc.freeze`) and it is turned back on. A full collection after the imports otherwise walks all of them
  while holding the GIL; in a fresh `iqa score` such collections took about 0.5 s (before 0.2, after 0.3).
- Before the interpreter's teardown every live object is frozen again, so that the final collections skip
  them instead of walking them all. Files and the cluster are closed and atexit handlers still run.

`pipeline.cli` is imported inside `console` on purpose: the collector must be off before it is.
"""

from __future__ import annotations

import gc


def console() -> None:
    """Run `pipeline.cli.main` on `sys.argv` with the collector set as above; ends in SystemExit with the
    command's exit code."""
    gc.disable()
    try:
        from pipeline import cli
    finally:
        gc.freeze()
        gc.enable()
    try:
        cli.main()
    finally:
        gc.freeze()

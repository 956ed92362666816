"""HTML reports: computation (`model`: pandas -> dataclasses) then rendering (`render`: Jinja, autoescape on).

`render_run_report(run_dir)` writes RUN_DIR/report.html; `render_nightly_report(suites, output)` writes one
page over several suites that links to each suite's own report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.html.model import build_nightly, build_report
from pipeline.html.render import render_nightly_data, render_report_data, write_html
from pipeline.locations import StorageOptions, locate
from pipeline.run_dirs import REPORT_NAME

__all__ = ["render_nightly_report", "render_run_report"]


def render_run_report(
    run_dir: str | Path,
    *,
    baseline: str | Path | None = None,
    output: str | Path | None = None,
    worst: int | None = None,
    force: bool = False,
    storage_options: StorageOptions | None = None,
) -> Path | str:
    """Write the self-contained HTML report of a run.

    Args:
        run_dir: Run directory written by `iqa score` (Parquet parts and manifest.json).
        baseline: Optional baseline run directory; adds the comparison section (`pipeline.comparison`).
        output: HTML file to write; default RUN_DIR/report.html.
        worst: Worst pairs per metric shown with pictures (and largest regressions with a baseline);
            default: the run's configured `worst` (8).
        force: compare with a baseline that is not comparable anyway; the section is marked FORCED.
        storage_options: options of the file system of URLs (run, baseline, output, the images).

    Returns:
        The path of the written file (its URL in object storage).

    Raises:
        RunDirError: `run_dir` (or `baseline`) is not a readable run directory.
        WriteError: the report cannot be written.
        NotComparableError: the baseline is not comparable with the run and `force` is not given.

    Example:
        >>> render_run_report("runs/today", baseline="runs/yesterday")  # doctest: +SKIP
        PosixPath('runs/today/report.html')
    """
    run = locate(run_dir, storage_options)
    target = locate(output, storage_options) if output is not None else run.child(REPORT_NAME)
    report = build_report(run, baseline=baseline, worst=worst, force=force, storage_options=storage_options)
    return write_html(render_report_data(report), target)


def render_nightly_report(suites: list[dict[str, Any]], output: str | Path) -> Path:
    """Write one page over several suites: a verdict table per suite, linking to each suite's report.

    Args:
        suites: Dicts with `name`, `run_dir`, `passed` (bool or None without a baseline) and `comparison`
            (a `pipeline.comparison.Comparison` or None).
        output: HTML file to write; links to the suites' report.html files are relative to its folder.

    Returns:
        The path of the written file.
    """
    target = Path(output)
    return write_html(render_nightly_data(build_nightly(suites, target)), target)

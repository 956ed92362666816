"""The Python API: one function per `iqa` command, taking the same options and returning results as objects.

Example (a notebook):
    >>> import pipeline
    >>> run = pipeline.score("data/ref", "data/sr", "runs/today", metrics="psnr,ssim")  # doctest: +SKIP
    >>> run.summary[0].metric, run.summary[0].mean  # doctest: +SKIP
    ('psnr', 31.27...)
    >>> run.frame.groupby("group")["ssim"].mean()  # doctest: +SKIP
    >>> pipeline.compare("runs/yesterday", "runs/today").passed  # doctest: +SKIP
    True
    >>> pipeline.table(["runs/bicubic", "runs/today"], by="group")  # doctest: +SKIP

Folders and run directories may be URLs (`s3://bucket/runs/today`, see `pipeline.locations`); the
`storage_options` argument of each function passes options to their file systems.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.comparison import Comparison, compare_runs
from pipeline.config import ScoreConfig, build_config, load_config_file
from pipeline.discover import Pairing, discover_pairs
from pipeline.explanation import Explanation, explain_config, explain_folders, parse_given
from pipeline.html import render_run_report
from pipeline.html.similar_page import write_similar_page
from pipeline.manifest import run_complete
from pipeline.nightly import NightlyResult
from pipeline.nightly import run_nightly as run_nightly_job
from pipeline.nightly_outputs import write_ci_outputs
from pipeline.paper_table import table  # `iqa table`
from pipeline.results import load_results
from pipeline.scoring import score_folders
from pipeline.similarity import SimilarResult, run_similar
from pipeline.summary import MetricSummary, summarize

__all__ = [
    "Run", "compare", "explain", "load_results", "pairs", "report", "run_nightly", "score", "similar",
    "table",
]  # fmt: skip


@dataclass
class Run:
    """A scored run: where it is, what its manifest says, its rows and statistics.

    Attributes:
        run_dir: the run directory (its URL for a run in object storage).
        config: the configuration it was scored with.
        manifest: the content of manifest.json.
        notices: what the run said the user must know (e.g. LPIPS left out).
        report_path: the HTML report (its URL in object storage), when one was written.
        storage_options: options of the file system of a URL run directory.
    """

    run_dir: Path | str
    config: ScoreConfig
    manifest: dict[str, Any]
    notices: list[str] = field(default_factory=list)
    report_path: Path | str | None = None
    storage_options: dict[str, Any] | None = field(default=None, repr=False)

    @cached_property
    def frame(self) -> pd.DataFrame:
        """One row per pair (`pipeline.load_results`)."""
        return load_results(self.run_dir, storage_options=self.storage_options)

    @cached_property
    def summary(self) -> list[MetricSummary]:
        """Per-metric statistics over the ok rows (mean with bootstrap CI, median, ...)."""
        return summarize(self.frame)

    @property
    def counts(self) -> dict[str, int]:
        """pairs, ok, error, missing, extra, duplicates, skipped (from the manifest)."""
        return self.manifest["counts"]

    @property
    def complete(self) -> bool:
        """Every reference has an ok row: no failed pair, missing output, or key two files claim."""
        return run_complete(self.manifest)


def score(
    reference: str | Path,
    output: str | Path,
    run_dir: str | Path,
    *,
    config: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log_level: int = logging.WARNING,
    storage_options: dict[str, Any] | None = None,
    **options: Any,
) -> Run:
    """Score every reference/output pair of two folders into `run_dir`, as `iqa score` does.

    Args:
        reference, output: the folders, paired by relative path without extension (paths or URLs).
        run_dir: where the Parquet parts, manifest.json and report.html go (a path or a URL).
        config: a YAML config file; `options` win over it.
        resume, overwrite: continue or replace a run already in `run_dir`.
        progress: show a progress bar.
        log_level: the level of Dask's loggers in a cluster started here.
        storage_options: options of the file systems of URLs, e.g. {'endpoint_url': 'http://...'}.
        **options: any `pipeline.config.ScoreConfig` field: metrics ('psnr,ssim' or a list), convention,
            scale, crop_border, size_mismatch, workers, scheduler, report, ...

    Returns:
        The Run (its `frame`, `summary`, `manifest`, `report_path`).

    Raises:
        ConfigError, UsageError, RunDirError, WeightsError, ClusterError: before any pair is scored.
    """
    chosen = build_config(load_config_file(config) if config else None, **options)
    result = score_folders(
        reference, output, run_dir, chosen, resume=resume, overwrite=overwrite, progress=progress,
        log_level=log_level, storage_options=storage_options,
    )  # fmt: skip
    report_path = None
    if chosen.report:
        report_path = render_run_report(result.run_dir, storage_options=storage_options)
    return Run(result.run_dir, chosen, result.manifest, result.notices, report_path, storage_options)


def compare(
    baseline: str | Path,
    candidate: str | Path,
    *,
    tolerances: dict[str, float] | None = None,
    require_significant: bool = False,
    force: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> Comparison:
    """Compare two runs pair by pair, as `iqa compare` does; `.passed` is False on a regression.

    Args:
        tolerances: {metric: absolute tolerance}; other metrics use the defaults.
        require_significant: a metric regresses only when its paired bootstrap 95% CI also lies below 0
            (default: its mean change against the tolerance decides).
        force: compare runs that are not comparable anyway; `.forced` marks the result.

    Raises:
        NotComparableError: the runs differ in convention, crop or metric settings (a UsageError naming each
            difference), unless `force` is given.
    """
    return compare_runs(
        baseline, candidate, tolerances=tolerances, require_significant=require_significant, force=force,
        storage_options=storage_options,
    )  # fmt: skip


def report(
    run_dir: str | Path,
    *,
    baseline: str | Path | None = None,
    output: str | Path | None = None,
    worst: int | None = None,
    force: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> Path | str:
    """Write the HTML report of a run (with a baseline section when given), as `iqa report` does.

    `force` compares with a baseline that is not comparable anyway (the section is then marked FORCED).
    """
    return render_run_report(
        run_dir, baseline=baseline, output=output, worst=worst, force=force, storage_options=storage_options
    )


def explain(
    reference: str | Path,
    output: str | Path,
    *,
    psnr: str | float | None = None,
    ssim: str | float | None = None,
    ms_ssim: str | float | None = None,
    scale: int | None = None,
    progress: bool = True,
    log_level: int = logging.WARNING,
    storage_options: dict[str, Any] | None = None,
    **options: Any,
) -> Explanation:
    """Which convention reproduces reported numbers on these folders, as `iqa explain` tells.

    Every pair is decoded once and measured under every convention (crop 0, and crop = `scale` too when a
    scale is given); the variants are ranked by the distance of their dataset means to the given values.

    Args:
        reference, output: the folders, paired by relative path without extension (paths or URLs).
        psnr, ssim, ms_ssim: the reported dataset means, best as text as printed ('0.9123'): the digits
            given decide what reproduces them (a float is read as Python prints it).
        scale: the super-resolution scale: every convention is also measured with this border crop.
        progress: show a progress bar.
        log_level: the level of Dask's loggers in a cluster started here.
        storage_options: options of the file systems of URLs.
        **options: output_suffix, output_template, output_regex, size_mismatch, data_range, volumes,
            ms_ssim_scales, scheduler, scheduler_file, workers, threads, device, shard_pairs, max_in_flight.

    Returns:
        The Explanation: `ranking` (closest first), `match` (None when no convention reproduces the
        values), the per-pair `values` behind the means, `failures`.

    Raises:
        ConfigError, UsageError, ClusterError: before any pair is measured.

    Example:
        >>> found = pipeline.explain("Set5/HR", "Set5/SR_x4", ssim="0.9101", scale=4)  # doctest: +SKIP
        >>> found.match.variant.describe()  # doctest: +SKIP
        'sr-paper crop 4'
    """
    given = parse_given({"psnr": psnr, "ssim": ssim, "ms_ssim": ms_ssim})
    config = explain_config(scale=scale, **options)
    return explain_folders(
        reference,
        output,
        config,
        given,
        progress=progress,
        log_level=log_level,
        storage_options=storage_options,
    )


def pairs(
    reference: str | Path,
    output: str | Path,
    *,
    storage_options: dict[str, Any] | None = None,
    **mapping: Any,
) -> Pairing:
    """How two folders pair up, as `iqa pairs` shows it (`output_suffix`, `output_template`, ...)."""
    return discover_pairs(reference, output, storage_options=storage_options, **mapping)


def run_nightly(
    config: str | Path,
    *,
    name: str | None = None,
    update_baseline: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    junit: str | Path | None = None,
    markdown: str | Path | None = None,
) -> NightlyResult:
    """Score every suite of a nightly config and compare each with its baseline, as `iqa run` does.

    Args:
        config: the nightly YAML file (see `pipeline.nightly`).
        name: folder under `runs` for this night (default: UTC date and time).
        update_baseline: after a night where every suite passed, make its runs the baseline.
        overwrite: replace suite runs already in `runs/<name>`.
        progress: show a progress bar per suite.
        junit: also write the night as JUnit XML to this file (`pipeline.nightly_outputs`).
        markdown: also write a Markdown summary for a CI job page to this file.

    Returns:
        The NightlyResult (`exit_code`, each suite's verdict and comparison, where everything was written).

    Raises:
        ConfigError: bad config (before anything is scored). WriteError: outputs cannot be written.

    Example:
        >>> night = pipeline.run_nightly("configs/nightly.yaml", junit="junit.xml")  # doctest: +SKIP
        >>> [(suite.name, suite.verdict) for suite in night.suites]  # doctest: +SKIP
        [('jpeg', 'passed'), ('denoise', 'passed'), ('sr_x4', 'passed')]
    """
    result = run_nightly_job(
        config, name=name, update_baseline=update_baseline, overwrite=overwrite, progress=progress
    )
    write_ci_outputs(
        result, junit=Path(junit) if junit else None, markdown=Path(markdown) if markdown else None
    )
    return result


def similar(folder: str | Path, run_dir: str | Path, *, report: bool = True, **options: Any) -> SimilarResult:
    """All-pairs similarity of a folder (or against a reference folder), as `iqa similar` does.

    Args:
        folder: the images.
        run_dir: where the results go.
        report: also write similar.html.
        **options: `against`, `metric`, `size`, `block`, `scheduler`, `workers`, `lpips_net`,
            `lpips_weights`, `overwrite` (see `pipeline.similarity.run_similar`).
    """
    return run_similar(folder, run_dir, page_writer=write_similar_page if report else None, **options)

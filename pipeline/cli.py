"""The `iqa` command line (Typer): parse options, call the library, print, set the exit code."""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import IQAError
from pipeline.process_exit import exit_without_teardown

app = typer.Typer(
    name="iqa",
    help="Image quality (PSNR, SSIM, MS-SSIM, LPIPS) of whole folders, on Dask, to Parquet and HTML.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Convention(str, Enum):
    default = "default"
    sr_paper = "sr-paper"


class SizeMismatch(str, Enum):
    error = "error"
    crop = "crop"
    resize = "resize"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class LpipsNet(str, Enum):
    alex = "alex"
    vgg = "vgg"
    squeeze = "squeeze"


def user_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn an IQAError into one red line on stderr and its exit code (2 usage, 1 otherwise); no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except IQAError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _warn(message: str) -> None:
    typer.secho(message, fg=typer.colors.YELLOW, err=True)


@app.command()
@user_errors
def score(
    reference: Annotated[Path, typer.Argument(help="Folder of reference (ground-truth) images.")],
    output: Annotated[
        Path, typer.Argument(help="Folder of model outputs, paired with references by relative path.")
    ],
    run_dir: Annotated[
        Path, typer.Option("-o", "--out", "--run-dir", help="Run directory to write results into.")
    ],
    metrics: Annotated[
        str | None,
        typer.Option(help="Comma-separated metrics: psnr,ssim,ms_ssim,lpips,mse (default: all five)."),
    ] = None,
    convention: Annotated[
        Convention | None,
        typer.Option(help="default (RGB as stored) or sr-paper (BasicSR/MATLAB: Y, crop, float64)."),
    ] = None,
    scale: Annotated[
        int | None, typer.Option(help="Super-resolution scale; sr-paper crops this many border px.")
    ] = None,
    crop_border: Annotated[
        int | None, typer.Option(help="Border pixels to crop; overrides what --scale implies.")
    ] = None,
    size_mismatch: Annotated[
        SizeMismatch | None,
        typer.Option(help="Pairs of different sizes: error, crop (top-left) or resize (bicubic)."),
    ] = None,
    data_range: Annotated[
        float | None,
        typer.Option(help="Peak value for float .npy arrays (integer images use their bit depth)."),
    ] = None,
    volumes: Annotated[
        bool | None,
        typer.Option(
            "--volumes/--no-volumes",
            help="Read 3-D .npy arrays as volumes (D, H, W[, C]); NIfTI (.nii, .nii.gz) is always a volume.",
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address (tcp://host:8786), or 'threads' / 'sync' to debug."),
    ] = None,
    scheduler_file: Annotated[
        str | None, typer.Option(help="Dask scheduler file of an existing cluster.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes of the embedded cluster, one task each at a time (default on CPU: one "
            "in-process worker with a thread per core; above 4 cores, processes of up to 4 threads)."
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(help="Torch threads per task (default 1; with --workers: cores / workers)."),
    ] = None,
    device: Annotated[Device | None, typer.Option(help="auto (CUDA when present), cpu or cuda.")] = None,
    lpips_net: Annotated[LpipsNet | None, typer.Option(help="LPIPS backbone: alex, vgg or squeeze.")] = None,
    lpips_weights: Annotated[
        str | None, typer.Option(help="Backbone checkpoint file (or folder holding it) for LPIPS.")
    ] = None,
    output_suffix: Annotated[
        str | None, typer.Option(help="Output stem = reference stem + this suffix.")
    ] = None,
    output_template: Annotated[
        str | None, typer.Option(help="Output stem template, e.g. '{stem}_x4_SR'.")
    ] = None,
    output_regex: Annotated[
        str | None, typer.Option(help="Regex on the output's relative path; group 'key' gives the key.")
    ] = None,
    group_depth: Annotated[int | None, typer.Option(help="Key path components that form the group.")] = None,
    ms_ssim_scales: Annotated[
        int | None, typer.Option(help="MS-SSIM scales (5 standard; fewer for small images).")
    ] = None,
    shard_pairs: Annotated[int | None, typer.Option(help="Pairs per Dask task (default: automatic).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML config file; command-line options win over it.")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue a run: skip pairs already scored with the same config.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a run already in the run directory.")] = False,
    allow_failures: Annotated[
        bool, typer.Option(help="Exit 0 even when pairs failed or outputs are missing.")
    ] = False,
    report: Annotated[bool, typer.Option(help="Write RUN_DIR/report.html.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Score every reference/output pair of two folders into RUN_DIR (Parquet, manifest, report)."""
    from pipeline.config import build_config, load_config_file
    from pipeline.console import format_counts, format_summary
    from pipeline.scoring import score_folders
    from pipeline.sink import load_results
    from pipeline.summary import summarize

    file_values = load_config_file(config) if config else {}
    chosen_metrics = tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics else None
    cfg = build_config(
        file_values,
        metrics=chosen_metrics,
        metrics_explicit=True if chosen_metrics else None,
        convention=convention.value if convention else None,
        scale=scale,
        crop_border=crop_border,
        size_mismatch=size_mismatch.value if size_mismatch else None,
        data_range=data_range,
        volumes=volumes,
        scheduler=scheduler,
        scheduler_file=scheduler_file,
        workers=workers,
        threads_per_worker=threads,
        device=device.value if device else None,
        lpips_net=lpips_net.value if lpips_net else None,
        lpips_weights=lpips_weights,
        output_suffix=output_suffix,
        output_template=output_template,
        output_regex=output_regex,
        group_depth=group_depth,
        ms_ssim_scales=ms_ssim_scales,
        shard_pairs=shard_pairs,
        report=None if report else False,
    )
    result = score_folders(
        reference, output, run_dir, cfg, resume=resume, overwrite=overwrite, progress=progress
    )
    for notice in result.notices:
        typer.secho(notice, fg=typer.colors.YELLOW, err=True)
    frame = load_results(run_dir)
    typer.echo(format_summary(summarize(frame)))
    typer.echo(format_counts(result.counts))
    typer.echo(f"results: {run_dir}")
    for notice in result.notices:
        _warn(notice)
    if not result.complete and not allow_failures:
        typer.secho(
            "Some references have no ok row (failed, missing or duplicate): "
            "see manifest.json and the error column.",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)


@app.command()
@user_errors
def pairs(
    reference: Annotated[Path, typer.Argument(help="Folder of reference images.")],
    output: Annotated[Path, typer.Argument(help="Folder of model outputs.")],
    output_suffix: Annotated[
        str | None, typer.Option(help="Output stem = reference stem + this suffix.")
    ] = None,
    output_template: Annotated[
        str | None, typer.Option(help="Output stem template, e.g. '{stem}_x4_SR'.")
    ] = None,
    output_regex: Annotated[str | None, typer.Option(help="Regex on the output's relative path.")] = None,
    group_depth: Annotated[int, typer.Option(help="Key path components that form the group.")] = 1,
    limit: Annotated[int, typer.Option(help="Entries to list per section.")] = 20,
) -> None:
    """Print how the two folders pair up (counts and lists) without scoring."""
    from pipeline.discover import discover_pairs, format_pairing

    pairing = discover_pairs(
        reference,
        output,
        output_suffix=output_suffix,
        output_template=output_template,
        output_regex=output_regex,
        group_depth=group_depth,
    )
    typer.echo(format_pairing(pairing, limit=limit))


@app.command()
@user_errors
def compare(
    baseline: Annotated[Path, typer.Argument(help="Baseline run directory (written by `iqa score`).")],
    candidate: Annotated[Path, typer.Argument(help="Candidate run directory, compared pair by pair.")],
    tolerance: Annotated[
        list[str] | None,
        typer.Option(
            "--tolerance",
            "-t",
            help="metric=value, repeatable (e.g. -t psnr=0.05 -t lpips=0.005); else per-metric defaults.",
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the comparison as JSON to this file.")
    ] = None,
) -> None:
    """Compare two runs by key: exit 1 when a metric's mean got worse than its tolerance, 0 otherwise."""
    from pipeline.compare import compare_runs, format_comparison, parse_tolerances

    comparison = compare_runs(baseline, candidate, tolerances=parse_tolerances(tolerance or []))
    if json_path:
        json_path.write_text(comparison.to_json(), encoding="utf-8")
    typer.echo(format_comparison(comparison))
    if not comparison.passed:
        raise typer.Exit(1)


@app.command("run")
@user_errors
def run_nightly(
    config: Annotated[Path, typer.Argument(help="Nightly YAML: baseline, runs, tolerances, suites.")],
    name: Annotated[
        str | None, typer.Option(help="Folder name of this run under `runs` (default: UTC date and time).")
    ] = None,
    update_baseline: Annotated[
        bool, typer.Option(help="After a run where every suite passed, make it the new baseline.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace suite runs already under runs/NAME.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar per suite.")] = True,
) -> None:
    """Score every suite of a nightly config, compare each with its baseline; exit 1 if any suite failed."""
    from pipeline.suites import format_nightly
    from pipeline.suites import run_nightly as run_suites

    result = run_suites(
        config, name=name, update_baseline=update_baseline, overwrite=overwrite, progress=progress
    )
    typer.echo(format_nightly(result))
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `iqa score`.")],
    baseline: Annotated[
        Path | None, typer.Option(help="Baseline run directory: adds deltas and the largest regressions.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="HTML file to write (default RUN_DIR/report.html).")
    ] = None,
    worst: Annotated[
        int | None, typer.Option(min=0, help="Worst pairs per metric shown with pictures (default 8).")
    ] = None,
) -> None:
    """Write the self-contained HTML report of a run (statistics, plots, worst cases, failures)."""
    from pipeline.report import render_run_report

    path = render_run_report(run_dir, baseline=baseline, output=output, worst=worst)
    typer.echo(f"report: {path}")


class SimilarMetric(str, Enum):
    ssim = "ssim"
    ms_ssim = "ms_ssim"
    psnr = "psnr"
    lpips = "lpips"


@app.command()
@user_errors
def similar(
    folder: Annotated[Path, typer.Argument(help="Folder of images (recursive) to compare with each other.")],
    run_dir: Annotated[
        Path, typer.Option("-o", "--out", help="Run directory for similarity.parquet, nearest.csv, HTML.")
    ],
    against: Annotated[
        Path | None, typer.Option(help="Reference folder: compare every image with every reference instead.")
    ] = None,
    metric: Annotated[SimilarMetric, typer.Option(help="ssim, ms_ssim, psnr or lpips.")] = SimilarMetric.ssim,
    size: Annotated[
        int,
        typer.Option(
            help="Common size: each image (RGB, [0, 1]) is resized bicubic (antialiased) so its short "
            "side is SIZE, then centre-cropped to SIZE x SIZE (aspect ratio kept up to the crop). 128 by "
            "default (SSIM cost grows with SIZE^2); MS-SSIM uses 5 scales from 161 px, fewer below."
        ),
    ] = 128,
    block: Annotated[int, typer.Option(help="Images per block; one Dask task compares two blocks.")] = 64,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Dask scheduler address (tcp://host:8786), or 'threads' / 'sync' to debug."),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes of the embedded cluster.")] = None,
    lpips_net: Annotated[
        LpipsNet, typer.Option(help="LPIPS backbone: alex, vgg or squeeze.")
    ] = LpipsNet.alex,
    lpips_weights: Annotated[
        str | None, typer.Option(help="Backbone checkpoint file (or folder holding it) for LPIPS.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace results already in the run directory.")] = False,
    report: Annotated[bool, typer.Option(help="Write RUN_DIR/similar.html.")] = True,
) -> None:
    """Compare every image with every other (or every reference) and print each image's nearest match."""
    from pipeline.similar import format_nearest, run_similar

    result = run_similar(
        folder,
        run_dir,
        against=against,
        metric=metric.value,
        size=size,
        block=block,
        scheduler=scheduler,
        workers=workers,
        lpips_net=lpips_net.value,
        lpips_weights=lpips_weights,
        overwrite=overwrite,
        report=report,
    )
    typer.echo(format_nearest(result))


def main() -> None:
    """Console entry point (`iqa`, `python -m pipeline`).

    Once the command is done, the process ends through `exit_without_teardown`: the atexit handlers run
    and the output is flushed, but the interpreter's teardown of torch and every module is skipped (0.18 s
    of a fresh `iqa score`). Where that falls back to the usual exit (a thread still running, or an
    unexpected exception), every live object is first frozen out of the garbage collector, so that the
    final collections skip torch's millions of objects (0.2 s instead of 0.6-0.9 s on 2 cores).
    """
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        app()
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        gc.freeze()
    exit_without_teardown(code)

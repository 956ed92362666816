"""The `iqa` command line (Typer): parse the options, call `pipeline.api`, print, set the exit code.

Exit codes, for every command: 0 ok; 1 failed or missing pairs, or a regression; 2 usage or configuration
errors. A user's mistake prints one line (`error: ...`) and no traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline import api
from pipeline.choices import (
    METRICS,
    Convention,
    DatasetMetric,
    Device,
    InceptionResize,
    LpipsNet,
    SimilarMetric,
    SizeMismatch,
    TableColumns,
    TableFormat,
)
from pipeline.comparison import format_comparison, parse_tolerances
from pipeline.config import FIELDS
from pipeline.console import (
    format_convention,
    format_convention_spec,
    format_conventions,
    format_counts,
    format_dataset_metrics,
    format_explanation,
    format_failures,
    format_group_means,
    format_summary,
    format_unscored_duplicates,
    format_warning_kinds,
)
from pipeline.conventions import SPECS, convention_named
from pipeline.discover import format_pairing
from pipeline.errors import IQAError
from pipeline.explanation import Explanation
from pipeline.locations import parse_storage_options
from pipeline.nightly import format_nightly
from pipeline.pairing_hints import pairing_hints
from pipeline.paper_table import collect_table
from pipeline.paper_table_formats import render_table
from pipeline.similarity import format_nearest
from pipeline.storage import write_text_atomic

app = typer.Typer(
    name="iqa",
    help="Image quality (PSNR, SSIM, MS-SSIM, LPIPS) of whole folders, on Dask, to Parquet and HTML.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Verbose = Annotated[bool, typer.Option("-v", "--verbose", help="Also show Dask's INFO messages.")]
Quiet = Annotated[bool, typer.Option("-q", "--quiet", help="Show only errors, and warnings of this tool.")]

# Options several commands take, declared once
OutputSuffix = Annotated[str | None, typer.Option(help="Output stem = reference stem + this suffix.")]
OutputTemplate = Annotated[str | None, typer.Option(help="Output stem template, e.g. '{stem}_x4_SR'.")]
OutputRegex = Annotated[
    str | None, typer.Option(help="Regex on the output's relative path; group 'key' gives the key.")
]
SizeMismatchOption = Annotated[
    SizeMismatch | None,
    typer.Option(help="Pairs of different sizes: error, crop (top-left) or resize (bicubic)."),
]
DataRange = Annotated[
    float | None, typer.Option(help="Peak value for float .npy arrays (integer images use their bit depth).")
]
MsSsimScales = Annotated[
    int | None, typer.Option(help="MS-SSIM scales (5 standard; fewer for small images).")
]
Scheduler = Annotated[
    str | None,
    typer.Option(
        help="Dask scheduler address (tcp://host:8786), or 'threads' / 'sync' to debug. Without it or "
        "--scheduler-file, the address in DASK_SCHEDULER_ADDRESS (Dask's scheduler-address config) is used "
        "when set, else an embedded local cluster starts. See docs/clusters.md."
    ),
]
SchedulerFile = Annotated[str | None, typer.Option(help="Dask scheduler file of an existing cluster.")]
Threads = Annotated[
    int | None, typer.Option(help="Torch threads per task (default 1; with --workers: cores / workers).")
]
DeviceOption = Annotated[
    Device | None,
    typer.Option(help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda or mps (MPS: untested on hardware)."),
]
Progress = Annotated[bool, typer.Option(help="Show a progress bar.")]
StorageOption = Annotated[
    list[str] | None,
    typer.Option(
        "--storage-option",
        help="KEY=VALUE for the file system of URL arguments (s3://, gs://, az://, ...), repeatable, e.g. "
        "endpoint_url=http://127.0.0.1:9000. Credentials come the standard way (AWS_*, ...).",
    ),
]
Folder = str  # a path or a URL (`s3://bucket/ref`): typer's Path would fold the URL's '//'
COLOURS = {logging.WARNING: typer.colors.YELLOW, logging.ERROR: typer.colors.RED}


class ConsoleHandler(logging.Handler):
    """Log records as plain lines on stderr, warnings in yellow, errors in red."""

    def emit(self, record: logging.LogRecord) -> None:
        colour = COLOURS.get(record.levelno) if record.levelno < logging.CRITICAL else typer.colors.RED
        typer.secho(self.format(record), fg=colour, err=True)


def configure_logging(verbose: bool = False, quiet: bool = False) -> int:
    """This tool's messages (the dashboard link, notices) and Dask's warnings on stderr; returns Dask's level.

    Default: this tool at INFO, Dask at WARNING (worker restarts, memory kills). `-q`: this tool's warnings,
    Dask's errors. `-v`: Dask's INFO too.
    """
    ours, dask_level = logging.INFO, logging.WARNING
    if quiet:
        ours, dask_level = logging.WARNING, logging.ERROR
    elif verbose:
        dask_level = logging.INFO
    logger = logging.getLogger("pipeline")
    if not any(isinstance(handler, ConsoleHandler) for handler in logger.handlers):
        logger.addHandler(ConsoleHandler())
    logger.setLevel(ours)
    logger.propagate = False
    logging.getLogger("distributed").setLevel(dask_level)
    return dask_level


def user_errors(command: Callable[..., None]) -> Callable[..., None]:
    """Turn an IQAError into one red line on stderr and its exit code (2 usage, 1 otherwise); no traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            return command(*args, **kwargs)
        except IQAError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def print_pairing_problems(manifest: dict[str, Any]) -> None:
    """On stderr: each reference left unscored by a key two files claim (red), then the pairing hints."""
    for line in format_unscored_duplicates(manifest.get("duplicates") or []):
        typer.secho(line, fg=typer.colors.RED, err=True)
    for hint in manifest.get("hints") or []:
        typer.secho(f"hint: {hint}", fg=typer.colors.YELLOW, err=True)


def _config_options(values: dict[str, Any]) -> dict[str, Any]:
    """The command's arguments that are config fields (None: not given on the command line)."""
    return {name: value for name, value in values.items() if name in FIELDS}


@app.command()
@user_errors
def score(
    reference: Annotated[Folder, typer.Argument(help="Folder of reference (ground-truth) images, or a URL.")],
    output: Annotated[
        Folder,
        typer.Argument(help="Folder of model outputs (or a URL), paired with references by relative path."),
    ],
    run_dir: Annotated[
        Folder,
        typer.Option("-o", "--out", "--run-dir", help="Run directory to write results into (or a URL)."),
    ],
    metrics: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated metrics: {','.join(METRICS)} (default: all), or another library's "
            "full-reference metric: pyiqa:NAME, piq:NAME, torchmetrics:NAME (docs/metrics.md)."
        ),
    ] = None,
    convention: Annotated[
        str | None,
        typer.Option(
            help=f"How the metrics see the images and compute SSIM: {', '.join(Convention.values())} "
            "(basicsr = sr-paper); `iqa conventions` describes each."
        ),
    ] = None,
    scale: Annotated[
        int | None, typer.Option(help="Super-resolution scale; sr-paper crops this many border px.")
    ] = None,
    crop_border: Annotated[
        int | None, typer.Option(help="Border pixels to crop; overrides what --scale implies.")
    ] = None,
    size_mismatch: SizeMismatchOption = None,
    data_range: DataRange = None,
    volumes: Annotated[
        bool | None,
        typer.Option(
            "--volumes/--no-volumes",
            help="Read 3-D .npy arrays as volumes (D, H, W[, C]); NIfTI (.nii, .nii.gz) always is one.",
        ),
    ] = None,
    scheduler: Scheduler = None,
    scheduler_file: SchedulerFile = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes of the embedded cluster, one task each at a time (default on CPU: "
            "one in-process worker with a thread per core; above 4 cores, processes of up to 4 threads)."
        ),
    ] = None,
    threads: Threads = None,
    device: DeviceOption = None,
    lpips_net: Annotated[LpipsNet | None, typer.Option(help="LPIPS backbone: alex, vgg or squeeze.")] = None,
    lpips_weights: Annotated[
        str | None, typer.Option(help="Backbone checkpoint file (or folder holding it) for LPIPS.")
    ] = None,
    dataset_metrics: Annotated[
        str | None,
        typer.Option(
            help=f"Comma-separated metrics of the whole output set against the reference set: "
            f"{','.join(DatasetMetric.values())} (default: none). Needs Inception weights, the `fid` extra."
        ),
    ] = None,
    inception_weights: Annotated[
        str | None,
        typer.Option(
            help="Inception checkpoint file (or folder holding it) for FID/KID (default: torch's cache)."
        ),
    ] = None,
    inception_resize: Annotated[
        InceptionResize | None,
        typer.Option(help="FID/KID's resize to 299 px: torchmetrics (antialiased) or torch-fidelity (TF1)."),
    ] = None,
    kid_subsets: Annotated[int | None, typer.Option(help="KID subsets (default 100).")] = None,
    kid_subset_size: Annotated[int | None, typer.Option(help="Pairs per KID subset (default 1000).")] = None,
    output_suffix: OutputSuffix = None,
    output_template: OutputTemplate = None,
    output_regex: OutputRegex = None,
    group_depth: Annotated[int | None, typer.Option(help="Key path components that form the group.")] = None,
    ms_ssim_scales: MsSsimScales = None,
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
    report: Annotated[
        bool | None, typer.Option("--report/--no-report", help="Write RUN_DIR/report.html.")
    ] = None,
    progress: Progress = True,
    storage_option: StorageOption = None,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Score every reference/output pair of two folders into RUN_DIR (Parquet, manifest, report)."""
    dask_level = configure_logging(verbose, quiet)
    run = api.score(
        reference,
        output,
        run_dir,
        config=config,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        log_level=dask_level,
        storage_options=parse_storage_options(storage_option),
        **_config_options(locals()),
    )
    _print_run(run)
    print_pairing_problems(run.manifest)
    if not run.complete and not allow_failures:
        counts = run.counts
        typer.secho(
            f"Some references have no ok row ({counts['error']} failed, {counts['missing']} missing "
            f"output(s), {counts.get('unscored_duplicates', 0)} key(s) claimed by two files): see above, "
            f"{run.run_dir}/manifest.json and the `error` column. Exit 1 (--allow-failures: 0).",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)


def _print_run(run: api.Run) -> None:
    """The convention, the per-metric and per-group tables, counts, failures and warnings of a run."""
    typer.echo(format_convention(run.manifest))
    typer.echo(format_summary(run.summary))
    details = (
        *format_dataset_metrics(run.manifest),
        format_group_means(run.frame),
        format_counts(run.counts),
    )
    details += (format_failures(run.frame), format_warning_kinds(run.frame))
    for text in details:
        if text:
            typer.echo(text)
    typer.echo(f"results: {run.run_dir}" + (f"  report: {run.report_path}" if run.report_path else ""))


@app.command()
@user_errors
def pairs(
    reference: Annotated[Folder, typer.Argument(help="Folder of reference images, or a URL.")],
    output: Annotated[Folder, typer.Argument(help="Folder of model outputs, or a URL.")],
    output_suffix: OutputSuffix = None,
    output_template: OutputTemplate = None,
    output_regex: OutputRegex = None,
    group_depth: Annotated[int, typer.Option(help="Key path components that form the group.")] = 1,
    limit: Annotated[int, typer.Option(help="Entries to list per section.")] = 20,
    storage_option: StorageOption = None,
) -> None:
    """Print how the two folders pair up (counts and lists) without scoring; exit 1 when a reference would get
    no ok row (no output, or a key two files claim)."""
    pairing = api.pairs(
        reference,
        output,
        output_suffix=output_suffix,
        output_template=output_template,
        output_regex=output_regex,
        group_depth=group_depth,
        storage_options=parse_storage_options(storage_option),
    )
    typer.echo(format_pairing(pairing, limit=limit))
    for hint in pairing_hints(pairing):
        typer.echo(f"hint: {hint}")
    if pairing.missing or pairing.unscored_duplicates():
        raise typer.Exit(1)  # `iqa score` of these folders would leave references without an ok row


@app.command()
@user_errors
def conventions(
    name: Annotated[
        str | None, typer.Argument(help="A convention's name: print every field of its spec.")
    ] = None,
) -> None:
    """List the conventions (what the metrics see, window, padding, statistics, crop, who uses it), or print
    the full spec of one."""
    if name is None:
        typer.echo(format_conventions(SPECS))
        return
    convention = convention_named(name)
    typer.echo(format_convention_spec(convention, SPECS[convention]))


GIVEN_HELP = "as it was reported (e.g. {}): the digits given set the rounding that reproduces it."


@app.command()
@user_errors
def explain(
    reference: Annotated[Folder, typer.Argument(help="Folder of reference (ground-truth) images, or a URL.")],
    output: Annotated[
        Folder, typer.Argument(help="Folder of model outputs (or a URL), paired by relative path.")
    ],
    psnr: Annotated[str | None, typer.Option(help="Dataset mean PSNR " + GIVEN_HELP.format("31.27"))] = None,
    ssim: Annotated[str | None, typer.Option(help="Dataset mean SSIM " + GIVEN_HELP.format("0.9123"))] = None,
    ms_ssim: Annotated[
        str | None, typer.Option(help="Dataset mean MS-SSIM " + GIVEN_HELP.format("0.9871"))
    ] = None,
    scale: Annotated[
        int | None,
        typer.Option(min=1, help="Super-resolution scale: every convention is also measured with this crop."),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the ranking and the match as JSON to this file.")
    ] = None,
    output_suffix: OutputSuffix = None,
    output_template: OutputTemplate = None,
    output_regex: OutputRegex = None,
    size_mismatch: SizeMismatchOption = None,
    data_range: DataRange = None,
    ms_ssim_scales: MsSsimScales = None,
    scheduler: Scheduler = None,
    scheduler_file: SchedulerFile = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes of the embedded cluster.")] = None,
    threads: Threads = None,
    device: DeviceOption = None,
    progress: Progress = True,
    storage_option: StorageOption = None,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Measure the pairs under every convention (each pair decoded once) and rank the conventions by how
    close their dataset means come to the given numbers; say which reproduce them."""
    dask_level = configure_logging(verbose, quiet)
    explanation = api.explain(
        reference, output, psnr=psnr, ssim=ssim, ms_ssim=ms_ssim, progress=progress, log_level=dask_level,
        storage_options=parse_storage_options(storage_option), **_config_options(locals()),
    )  # fmt: skip
    if json_path:
        write_text_atomic(json_path, explanation.to_json())
    typer.echo(format_explanation(explanation))
    if not explanation.complete:
        _explain_incomplete(explanation)


def _explain_incomplete(explanation: Explanation) -> None:
    """Say which references the means leave out (failed, missing, claimed twice) and exit 1."""
    pairing = explanation.pairing
    typer.secho(
        f"The means leave references out ({len(explanation.failures)} failed, {len(pairing.missing)} "
        f"missing output(s), {pairing.unscored_duplicates()} key(s) claimed by two files): the numbers "
        "you compare with may cover them. `iqa pairs` shows the pairing. Exit 1.",
        fg=typer.colors.RED,
        err=True,
    )
    raise typer.Exit(1)


@app.command()
@user_errors
def compare(
    baseline: Annotated[Folder, typer.Argument(help="Baseline run directory (written by `iqa score`).")],
    candidate: Annotated[Folder, typer.Argument(help="Candidate run directory, compared pair by pair.")],
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
    require_significant: Annotated[
        bool,
        typer.Option(
            help="Count a metric as regressed only when its paired bootstrap 95% CI of the change also lies "
            "below 0 (default: the mean change against the tolerance decides)."
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            help="Compare runs scored with different conventions, crops or metric settings anyway "
            "(otherwise exit 2); the verdict is marked FORCED."
        ),
    ] = False,
    storage_option: StorageOption = None,
) -> None:
    """Compare two runs by key: exit 1 when a metric's mean got worse than its tolerance, 0 otherwise."""
    comparison = api.compare(
        baseline,
        candidate,
        tolerances=parse_tolerances(tolerance or []),
        require_significant=require_significant,
        force=force,
        storage_options=parse_storage_options(storage_option),
    )
    if json_path:
        json_path.write_text(comparison.to_json(), encoding="utf-8")
    typer.echo(format_comparison(comparison))
    if not comparison.passed:
        raise typer.Exit(1)


@app.command()
@user_errors
def table(
    runs: Annotated[
        list[Folder], typer.Argument(help="Run directories written by `iqa score` (or URLs): one row each.")
    ],
    by: Annotated[
        TableColumns | None,
        typer.Option(help="group: one column per group and metric (default: per metric, over all pairs)."),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(help=f"Comma-separated metrics of {','.join(METRICS)} (default: all the runs hold)."),
    ] = None,
    table_format: Annotated[
        TableFormat, typer.Option("--format", "-f", help="md (Markdown), latex, csv or html.")
    ] = TableFormat.MD,
    label: Annotated[
        list[str] | None,
        typer.Option(help="Row name of each run, one per run in order (default: the run directory's name)."),
    ] = None,
    ci: Annotated[
        bool, typer.Option("--ci", help="Add ± the half-width of each mean's bootstrap 95% CI.")
    ] = False,
    storage_option: StorageOption = None,
) -> None:
    """Print a paper table: one row per run, the mean of each metric (per group with --by group), the best of
    each column bold and the second underlined, the convention in the caption. Runs scored under different
    conventions, crops or metric settings are refused (exit 2)."""
    paper = collect_table(
        runs, by=by, metrics=metrics, labels=label, storage_options=parse_storage_options(storage_option)
    )
    typer.echo(render_table(paper, table_format, ci=ci))


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
    junit: Annotated[
        Path | None,
        typer.Option(help="Also write JUnit XML here: a testcase per suite, a failure per suite not passed."),
    ] = None,
    markdown: Annotated[
        Path | None,
        typer.Option(help="Also write a Markdown summary here, for a CI job page ($GITHUB_STEP_SUMMARY)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar per suite.")] = True,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Score every suite of a nightly config, compare each with its baseline; exit 1 if any suite failed."""
    configure_logging(verbose, quiet)
    result = api.run_nightly(
        config, name=name, update_baseline=update_baseline, overwrite=overwrite, progress=progress,
        junit=junit, markdown=markdown,
    )  # fmt: skip
    typer.echo(format_nightly(result))
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
@user_errors
def report(
    run_dir: Annotated[Folder, typer.Argument(help="Run directory written by `iqa score`, or a URL.")],
    baseline: Annotated[
        Folder | None, typer.Option(help="Baseline run directory: adds deltas and the largest regressions.")
    ] = None,
    output: Annotated[
        Folder | None,
        typer.Option("-o", "--output", help="HTML file to write (default RUN_DIR/report.html)."),
    ] = None,
    worst: Annotated[
        int | None, typer.Option(min=0, help="Worst pairs per metric shown with pictures (default 8).")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Compare with a baseline that is not comparable anyway (marked FORCED).")
    ] = False,
    storage_option: StorageOption = None,
) -> None:
    """Write the self-contained HTML report of a run (statistics, plots, worst cases, failures)."""
    path = api.report(
        run_dir, baseline=baseline, output=output, worst=worst, force=force,
        storage_options=parse_storage_options(storage_option),
    )  # fmt: skip
    typer.echo(f"report: {path}")


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
    metric: Annotated[SimilarMetric, typer.Option(help="ssim, ms_ssim, psnr or lpips.")] = SimilarMetric.SSIM,
    size: Annotated[
        int,
        typer.Option(
            help="Common size: each image (RGB, [0, 1]) is resized bicubic (antialiased) so its short side "
            "is "
            "SIZE, then centre-cropped to SIZE x SIZE. 128 by default (SSIM cost grows with SIZE^2); "
            "MS-SSIM uses 5 scales from 161 px, fewer below."
        ),
    ] = 128,
    block: Annotated[int, typer.Option(help="Images per block; one Dask task compares two blocks.")] = 64,
    scheduler: Scheduler = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes of the embedded cluster.")] = None,
    lpips_net: Annotated[
        LpipsNet, typer.Option(help="LPIPS backbone: alex, vgg or squeeze.")
    ] = LpipsNet.ALEX,
    lpips_weights: Annotated[
        str | None, typer.Option(help="Backbone checkpoint file (or folder holding it) for LPIPS.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace results already in the run directory.")] = False,
    report: Annotated[bool, typer.Option(help="Write RUN_DIR/similar.html.")] = True,
    verbose: Verbose = False,
    quiet: Quiet = False,
) -> None:
    """Compare every image with every other (or every reference) and print each image's nearest match."""
    configure_logging(verbose, quiet)
    result = api.similar(
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
    """Run the `iqa` command line on `sys.argv`; ends in SystemExit with the command's exit code.

    Callable from Python: control returns to the caller with the SystemExit.
    """
    app()

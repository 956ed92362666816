"""Plain-text tables for the terminal: pure formatting functions, no I/O."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipeline.choices import Convention
from pipeline.conventions import ConventionSpec, flat_spec
from pipeline.discover import duplicate_message
from pipeline.explanation import EXPLAINED_METRICS, Explanation, GivenValue
from pipeline.metrics.ssim import WINDOW_SIGMA, WINDOW_SIZE
from pipeline.summary import MetricSummary, metric_columns

SHOWN_GROUPS = 20  # groups in the console's per-group table; the report has them all
SHOWN_FAILURES = 5  # failed pairs listed with their messages
SHOWN_WARNING_KINDS = 5
SHOWN_DUPLICATES = 5  # keys claimed by two or more files, listed with their files
LPIPS_NOTE = "LPIPS is the lpips package (v0.1) in every convention, on the (cropped) RGB image."
CONVENTION_HEADERS = (
    "convention", "what the metrics see", "window", "padding", "statistics", "crop", "used by"
)  # fmt: skip


def format_number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """The first `left` columns left-aligned, the others right-aligned, two spaces between columns.

    Example:
        >>> print(format_table(["name", "n"], [["a", "10"], ["bb", "2"]]))
        name   n
        ----  --
        a     10
        bb     2
    """
    widths = [
        max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
        for i, h in enumerate(headers)
    ]

    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        parts = [str(cell).ljust(w) if i < left else str(cell).rjust(w) for i, (cell, w) in pairs]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def format_summary(summaries: Sequence[MetricSummary]) -> str:
    """Per-metric table: direction, n, mean [95% CI], median, min, max."""
    headers = ["metric", "better", "n", "mean", "95% CI", "median", "min", "max"]
    rows = []
    for s in summaries:
        ci = f"[{format_number(s.ci_low)}, {format_number(s.ci_high)}]" if s.mean is not None else "-"
        count = f"{s.count}" + (f" (+{s.infinite} inf)" if s.infinite else "")
        rows.append(
            [
                s.metric,
                "higher" if s.higher_is_better else "lower",
                count,
                format_number(s.mean),
                ci,
                format_number(s.median),
                format_number(s.min),
                format_number(s.max),
            ]
        )
    return format_table(headers, rows)


def format_counts(counts: dict[str, int]) -> str:
    keys = ("pairs", "ok", "error", "missing", "extra", "duplicates", "skipped")
    return "  ".join(f"{k}={counts.get(k, 0)}" for k in keys)


def format_convention(manifest: dict[str, Any]) -> str:
    """One line: the convention behind the numbers (what the metrics see, the crop) and SSIM's definition.

    Example:
        >>> manifest = {"convention": {"description": "sr-paper: Y, crop 4 px, float64"},
        ...             "config": {"metrics": ["psnr", "ssim"], "ms_ssim_scales": 5}}
        >>> print(format_convention(manifest))
        convention sr-paper: Y, crop 4 px, float64; SSIM 11x11 Gaussian, sigma 1.5
    """
    config = manifest.get("config", {})
    metrics = config.get("metrics") or ("ssim", "ms_ssim")  # None: the default set, with both
    parts = [f"convention {manifest['convention']['description']}"]
    if {"ssim", "ms_ssim"} & set(metrics):
        parts.append(f"SSIM {WINDOW_SIZE}x{WINDOW_SIZE} Gaussian, sigma {WINDOW_SIGMA}")
    if "ms_ssim" in metrics:
        parts.append(f"MS-SSIM {config.get('ms_ssim_scales', 5)} scales")
    return "; ".join(parts)


def format_dataset_metrics(manifest: dict[str, Any]) -> list[str]:
    """One line for FID and one for KID of a run that asked for them; [] otherwise. Their warnings are
    printed while the run ends (and kept in manifest.json).

    Example:
        >>> block = {"images": {"reference": 12}, "weights_sha256": "ab" * 32,
        ...          "extractor": {"resize": "torchmetrics"},
        ...          "fid": {"all": 31.5, "groups": {"a": 30.25, "b": None}},
        ...          "kid": {"mean": 0.0123, "std": 0.0012, "subsets": 100, "subset_size": 12}}
        >>> for line in format_dataset_metrics({"dataset_metrics": block}):
        ...     print(line)
        FID 31.5000 (12 images per side; groups a 30.2500, b -; torchmetrics Inception, weights abababab)
        KID 0.012300 +- 0.001200 (100 subsets of 12 pairs)
    """
    block = manifest.get("dataset_metrics")
    if not block:
        return []
    lines = []
    if "fid" in block:
        fid = block["fid"]
        groups = ", ".join(f"{g} {format_number(v)}" for g, v in fid["groups"].items())
        shown = f"; groups {groups}" if len(fid["groups"]) > 1 else ""
        extractor = f"{block['extractor']['resize']} Inception, weights {block['weights_sha256'][:8]}"
        count = block["images"]["reference"]
        lines.append(f"FID {format_number(fid['all'])} ({count} images per side{shown}; {extractor})")
    if "kid" in block:
        kid = block["kid"]
        spread = f"{format_number(kid['mean'], 6)} +- {format_number(kid['std'], 6)}"
        lines.append(f"KID {spread} ({kid['subsets']} subsets of {kid['subset_size']} pairs)")
    return lines


def format_group_means(frame: pd.DataFrame, limit: int = SHOWN_GROUPS) -> str | None:
    """Per-group table of ok pairs and mean of each metric (over finite values); None for a single group."""
    metrics = metric_columns(frame)
    if frame["group"].nunique() < 2 or not metrics:
        return None
    ok = frame["status"] == "ok"
    finite = frame[metrics].replace([np.inf, -np.inf], np.nan).where(ok)
    means = finite.groupby(frame["group"], sort=True).mean()
    counts = ok.groupby(frame["group"], sort=True).sum()
    rows = [
        [str(group), str(counts[group]), *(format_number(_plain(means.at[group, m])) for m in metrics)]
        for group in means.index[:limit]
    ]
    table = format_table(["group", "ok", *metrics], rows)
    hidden = len(means.index) - limit
    return table + (f"\n... {hidden} more group(s): see the report" if hidden > 0 else "")


def format_failures(frame: pd.DataFrame, limit: int = SHOWN_FAILURES) -> str | None:
    """The first failed pairs with their messages, and how many more; None when none failed."""
    failed = frame[frame["status"] == "error"]
    if failed.empty:
        return None
    lines = [f"failed: {row.key}: {row.error}" for row in failed.head(limit).itertuples()]
    if len(failed) > limit:
        lines.append(
            f"... and {len(failed) - limit} more failed pair(s): the `error` column holds every message"
        )
    return "\n".join(lines)


def warning_kind(message: str) -> str:
    """A warning with its numbers replaced by N, so that warnings of one kind count together.

    Example:
        >>> warning_kind("image is 8x8, smaller than the 11 px SSIM window: ssim and ms_ssim left null")
        'image is NxN, smaller than the N px SSIM window: ssim and ms_ssim left null'
    """
    return re.sub(r"\d+", "N", message)


def format_warning_kinds(frame: pd.DataFrame, limit: int = SHOWN_WARNING_KINDS) -> str | None:
    """'warnings: 12 x alpha channel dropped (RGBA); ...', the most frequent kinds first; None without any."""
    kinds = Counter(warning_kind(message) for messages in frame["warnings"].dropna() for message in messages)
    if not kinds:
        return None
    shown = "; ".join(f"{count} x {kind}" for kind, count in kinds.most_common(limit))
    more = len(kinds) - limit
    return f"warnings: {shown}" + (f"; and {more} more kind(s) (the `warnings` column)" if more > 0 else "")


def _plain(value: Any) -> float | None:
    return None if pd.isna(value) else float(value)


def format_unscored_duplicates(duplicates: Sequence[dict], limit: int = SHOWN_DUPLICATES) -> list[str]:
    """One line per key that leaves a reference unscored because two or more files claim it (the first
    `limit`), then a line counting the rest; [] when every duplicate key is only an output without reference.

    Args:
        duplicates: manifest.json's `duplicates` (`{'side', 'key', 'paths', 'references'}` each).
    """
    unscored = [d for d in duplicates if d.get("references")]
    lines = [duplicate_message(d) for d in unscored[:limit]]
    if len(unscored) > limit:
        rest = len(unscored) - limit
        lines.append(f"... and {rest} more keys claimed by two or more files; manifest.json lists them all.")
    return lines


def format_conventions(specs: Mapping[Convention, ConventionSpec]) -> str:
    """One line per convention: what the metrics see, window, padding, statistics, crop, who uses it.

    Example:
        >>> from pipeline.conventions import SPECS
        >>> print(format_conventions(SPECS).splitlines()[2])  # doctest: +ELLIPSIS
        default  channels as stored, float32  11x11 Gaussian, sigma 1.5  valid  population  none ...
    """
    rows = [[name.value, *convention_columns(spec)] for name, spec in specs.items()]
    return format_table(CONVENTION_HEADERS, rows, left=len(CONVENTION_HEADERS)) + "\n" + LPIPS_NOTE


def convention_columns(spec: ConventionSpec) -> list[str]:
    """The cells of `format_conventions` for one spec, after its name.

    Example:
        >>> from pipeline.conventions import SPECS
        >>> convention_columns(SPECS[Convention.SKIMAGE_DEFAULTS])[1:4]
        ['7x7 uniform', 'symmetric, 3 px map border left out', 'sample']
    """
    structural = spec.structural
    precision = str(spec.precision).removeprefix("torch.")
    window = structural.window.describe()
    if structural.downsample != "none":
        window += f", {structural.downsample} downsampling first"
    padding = structural.padding
    if structural.map_border:
        padding += f", {structural.map_border} px map border left out"
    statistics = "sample" if structural.sample_covariance else "population"
    crop = "--scale px (or --crop-border)" if spec.crop_from_scale else "none (or --crop-border)"
    return [f"{spec.channel_description}, {precision}", window, padding, statistics, crop, spec.users]


def format_convention_spec(name: Convention, spec: ConventionSpec) -> str:
    """Every field of a convention's spec, nested fields as dotted names, one per line.

    Example:
        >>> from pipeline.conventions import SPECS
        >>> print(format_convention_spec(Convention.DEFAULT, SPECS[Convention.DEFAULT]))  # doctest: +ELLIPSIS
        convention default
          channels: stored
          precision: float32
        ...
          structural.window.kind: gaussian
        ...
    """
    lines = [f"convention {name.value}"]
    lines.extend(f"  {key}: {_shown(value)}" for key, value in flat_spec(spec.to_dict()).items())
    lines.append(f"  lpips: {LPIPS_NOTE}")
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ", ".join(str(item) for item in value)
    return "none" if value is None else str(value)


def format_explanation(explanation: Explanation) -> str:
    """The variants' dataset means, closest to the given numbers first, and which reproduce them.

    Without given numbers: the means by convention and crop, and no verdict.
    """
    given = explanation.given
    crops = sorted({entry.variant.crop for entry in explanation.ranking})
    lines = [
        f"{len(explanation.pairing.pairs)} pair(s), each decoded once and measured under "
        f"{len(explanation.ranking)} convention x crop variants (crop {', '.join(map(str, crops))})"
    ]
    if given:
        lines.append(f"given: {_given_text(given)} (reproduced when every mean rounds to the digits given)")
    headers = ["convention", "crop", "pairs", *EXPLAINED_METRICS]
    headers += ["distance", "reproduces"] if given else []
    rows = []
    for entry in explanation.ranking:
        means = [format_number(entry.means.get(m), _shown_digits(m, given)) for m in EXPLAINED_METRICS]
        row = [entry.variant.convention, str(entry.variant.crop), str(entry.pairs), *means]
        if given:
            row += [format_number(entry.distance, 2), "yes" if entry.reproduces else ""]
        rows.append(row)
    lines.append(format_table(headers, rows))
    if given:
        lines.append(_verdict(explanation))
    lines.extend(_explanation_problems(explanation))
    return "\n".join(lines)


def _given_text(given: Mapping[str, GivenValue]) -> str:
    return ", ".join(f"{metric} {value.text}" for metric, value in given.items())


def _shown_digits(metric: str, given: Mapping[str, GivenValue]) -> int:
    """Decimals of a mean: 4 for PSNR, 6 otherwise, and two more than the number given has."""
    shown = 4 if metric == "psnr" else 6
    if metric in given:
        shown = max(shown, given[metric].decimals + 2)
    return shown


def _verdict(explanation: Explanation) -> str:
    given = _given_text(explanation.given)
    reproducing = explanation.reproducing
    if reproducing:
        names = ", ".join(entry.variant.describe() for entry in reproducing)
        return f"reproduced by {names}: the means round to {given}"
    best = explanation.ranking[0]
    return (
        f"no convention reproduces {given}; the closest is {best.variant.describe()} "
        f"(distance {format_number(best.distance, 1)} half-units of the last digit given)"
    )


def _explanation_problems(explanation: Explanation, limit: int = SHOWN_FAILURES) -> list[str]:
    """Failed pairs (the first `limit`) and the pairs each variant left out of its means."""
    failures = list(explanation.failures.items())
    lines = [f"failed: {key}: {error}" for key, error in failures[:limit]]
    if len(failures) > limit:
        lines.append(f"... and {len(failures) - limit} more failed pair(s)")
    for variant, problems in sorted(explanation.left_out.items()):
        key, why = next(iter(problems.items()))
        count = len(problems)
        lines.append(f"{variant.describe()}: {count} pair(s) left out of its means, e.g. {key}: {why}")
    return lines

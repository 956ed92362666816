"""Paired comparison of two runs (`iqa compare`, the nightly job, the report's baseline section).

Rows are paired by key; only keys whose row is `status == 'ok'` in both runs are compared. For every metric
present in both runs (a column that is all-null in a run is absent from it), overall and per group:
baseline and candidate means, the mean change signed so that positive is better (`improvement`), a paired
bootstrap 95% CI of that mean, a Wilcoxon signed-rank p-value, and how many pairs got worse by more than
the metric's tolerance.

Infinite values (PSNR of identical images):

* infinite in both runs: the pair is unchanged; its improvement is 0 and it counts in the mean change;
* infinite in one run only: the change is unbounded, so the pair is left out of the means, the CI and the
  test and counted in `infinite_one`; its per-pair improvement is +inf or -inf, so a pair that stopped being
  identical to its reference counts in `worse_count`.

`baseline_mean` and `candidate_mean` average the finite values of the compared pairs; `delta` is the mean of
the per-pair differences (so pairs infinite in both runs pull it towards 0).

Verdict: a metric regresses when its overall mean improvement is below `-tolerance`; the comparison passes
when no metric regresses. With `require_significant`, a metric also needs its paired bootstrap 95% CI to lie
below 0 (at least two pairs; the bootstrap is seeded, so the verdict is the same every time). Group rows,
added/removed keys and one-sided metrics are reported, not judged.

Comparability: two run directories are compared only when their manifests agree on what defines the values
of the compared metrics (`run_differences`); otherwise `compare_runs` raises `NotComparableError` naming
each difference, unless `force` is given, and then the comparison is marked `forced`.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.choices import METRICS, SizeMismatch
from pipeline.config import ScoreConfig
from pipeline.console import format_number, format_table
from pipeline.conventions import ConventionSpec, flat_spec
from pipeline.errors import NotComparableError, RunDirError, UsageError
from pipeline.locations import StorageOptions
from pipeline.manifest import read_manifest
from pipeline.metrics.structural import StructuralSpec
from pipeline.results import load_results
from pipeline.run_dirs import RunDir, require_run_dir
from pipeline.summary import bootstrap_mean_ci, metric_columns

DEFAULT_TOLERANCES: dict[str, float] = {name: spec.tolerance for name, spec in METRICS.items()}
WORST_PAIRS_IN_JSON = 5
FORCE_HINT = (
    "Score both with the same options, or pass --force to compare anyway (the verdict is then marked FORCED)."
)
_DEFAULT_SETTINGS = ScoreConfig().to_dict()


@dataclass
class MetricComparison:
    """Change of one metric between two runs, over the pairs ok in both (or those of one group).

    `wilcoxon_p` is None when fewer than two pairs differ or every difference is zero (the test is undefined).
    `beyond_tolerance`: the mean improvement is below `-tolerance`. `significantly_worse`: at least two pairs
    and the whole 95% CI of the improvement is below 0. `regressed`: beyond tolerance, and significantly worse
    when the comparison requires significance.
    """

    metric: str
    group: str | None
    higher_is_better: bool
    n_pairs: int
    baseline_mean: float | None
    candidate_mean: float | None
    delta: float | None
    improvement: float | None
    ci_low: float | None
    ci_high: float | None
    wilcoxon_p: float | None
    worse_count: int
    tolerance: float
    regressed: bool
    infinite_both: int = 0
    infinite_one: int = 0
    beyond_tolerance: bool = False
    significantly_worse: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {k: _json_value(v) for k, v in asdict(self).items()}


@dataclass
class Comparison:
    """Everything `iqa compare` reports; `per_pair` is long: key, group, metric, baseline, candidate,
    improvement.

    `require_significant`: the verdict also needed each regressed metric's CI below 0. `forced`: the runs are
    not comparable (`differences` says why) and were compared anyway; the numbers mix two definitions.
    """

    baseline_run: str
    candidate_run: str
    metrics: list[MetricComparison]
    groups: list[MetricComparison]
    added_keys: list[str]
    removed_keys: list[str]
    baseline_only_metrics: list[str]
    candidate_only_metrics: list[str]
    per_pair: pd.DataFrame
    regressions: list[str]
    passed: bool
    notes: list[str] = field(default_factory=list)
    require_significant: bool = False
    forced: bool = False
    differences: list[str] = field(default_factory=list)

    @property
    def regressed_metrics(self) -> list[str]:
        return [m.metric for m in self.metrics if m.regressed]

    def worst_pairs(self, metric: str, count: int = WORST_PAIRS_IN_JSON) -> pd.DataFrame:
        """The `count` pairs of `metric` that got most worse (improvement < 0), worst first."""
        rows = self.per_pair[(self.per_pair["metric"] == metric) & (self.per_pair["improvement"] < 0)]
        return rows.sort_values(["improvement", "key"], kind="stable").head(count)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready content (non-finite numbers become 'inf'/'-inf' strings or null); per-pair rows are
        reduced to the worst few pairs per metric."""
        return {
            "baseline_run": self.baseline_run,
            "candidate_run": self.candidate_run,
            "passed": self.passed,
            "forced": self.forced,
            "differences": list(self.differences),
            "require_significant": self.require_significant,
            "regressions": list(self.regressions),
            "pairs": int(self.per_pair["key"].nunique()) if len(self.per_pair) else 0,
            "metrics": [m.to_dict() for m in self.metrics],
            "groups": [g.to_dict() for g in self.groups],
            "added_keys": list(self.added_keys),
            "removed_keys": list(self.removed_keys),
            "baseline_only_metrics": list(self.baseline_only_metrics),
            "candidate_only_metrics": list(self.candidate_only_metrics),
            "notes": list(self.notes),
            "worst_pairs": {
                m.metric: [
                    {k: _json_value(v) for k, v in row.items()}
                    for row in self.worst_pairs(m.metric).to_dict(orient="records")
                ]
                for m in self.metrics
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


def _json_value(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def parse_tolerances(items: list[str] | None) -> dict[str, float]:
    """Parse `metric=value` strings (e.g. `psnr=0.05`) into {metric: tolerance}.

    Raises:
        UsageError: naming the item that is malformed, names an unknown metric, or is negative.
    """
    tolerances: dict[str, float] = {}
    for item in items or []:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise UsageError(f"Bad tolerance {item!r}: write metric=value, e.g. psnr=0.05.")
        tolerances[_check_metric(name, f"tolerance {item!r}")] = _check_value(text, f"tolerance {item!r}")
    return tolerances


def check_tolerances(values: dict[str, Any], where: str) -> dict[str, float]:
    """Validate a {metric: tolerance} mapping from a config file; errors name `where`."""
    return {
        _check_metric(str(name), f"{where}: tolerance {name!r}"): _check_value(
            value, f"{where}: tolerance {name!r}"
        )
        for name, value in values.items()
    }


def _check_metric(name: str, what: str) -> str:
    if name not in METRICS:
        raise UsageError(f"{what} names unknown metric {name!r}: choose one of {', '.join(METRICS)}.")
    return name


def _check_value(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{what}: {value!r} is not a number.") from None
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"{what}: the tolerance must be a finite number >= 0, got {value!r}.")
    return number


def _pair_improvements(base: np.ndarray, cand: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Per-pair change signed so that positive is better; equal infinities give 0."""
    with np.errstate(invalid="ignore"):
        diff = cand - base
    diff = np.where(np.isinf(base) & np.isinf(cand) & (base == cand), 0.0, diff)
    return diff if higher_is_better else -diff


def _wilcoxon(improvements: np.ndarray) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value; None when fewer than two non-zero differences."""
    if np.count_nonzero(improvements) < 2:
        return None
    from scipy.stats import wilcoxon

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p = float(wilcoxon(improvements).pvalue)
        except ValueError:
            return None
    return p if math.isfinite(p) else None


def compare_metric(
    base: np.ndarray,
    cand: np.ndarray,
    metric: str,
    group: str | None,
    tolerance: float,
    *,
    require_significant: bool = False,
) -> MetricComparison:
    """Compare one metric over paired values (n,) and (n,); NaN in either side drops the pair.

    With `require_significant`, the metric regresses only when its seeded bootstrap 95% CI
    (`pipeline.summary.bootstrap_mean_ci` of the per-pair improvements) also lies below 0.
    """
    info = METRICS[metric]
    present = ~(np.isnan(base) | np.isnan(cand))
    base, cand = base[present], cand[present]
    improvements = _pair_improvements(base, cand, info.higher_is_better)
    infinite_both = int((np.isinf(base) & np.isinf(cand)).sum())
    usable = np.isfinite(improvements)
    infinite_one = int((~usable).sum())
    worse_count = int((improvements < -tolerance).sum())
    kept = improvements[usable]
    n_pairs = int(kept.size)
    if n_pairs == 0:
        return MetricComparison(
            metric, group, info.higher_is_better, 0, None, None, None, None, None, None, None,
            worse_count, tolerance, False, infinite_both, infinite_one,
        )  # fmt: skip
    finite_pairs = usable & np.isfinite(base) & np.isfinite(cand)
    improvement = float(kept.mean())
    low, high = bootstrap_mean_ci(kept)
    beyond_tolerance = improvement < -tolerance
    significantly_worse = n_pairs >= 2 and high < 0
    return MetricComparison(
        metric=metric,
        group=group,
        higher_is_better=info.higher_is_better,
        n_pairs=n_pairs,
        baseline_mean=float(base[finite_pairs].mean()) if finite_pairs.any() else None,
        candidate_mean=float(cand[finite_pairs].mean()) if finite_pairs.any() else None,
        delta=improvement if info.higher_is_better else -improvement,
        improvement=improvement,
        ci_low=low,
        ci_high=high,
        wilcoxon_p=_wilcoxon(kept),
        worse_count=worse_count,
        tolerance=tolerance,
        regressed=beyond_tolerance and (significantly_worse or not require_significant),
        infinite_both=infinite_both,
        infinite_one=infinite_one,
        beyond_tolerance=beyond_tolerance,
        significantly_worse=significantly_worse,
    )


def _regression_text(m: MetricComparison, with_ci: bool = False) -> str:
    unit = f" {METRICS[m.metric].unit}" if METRICS[m.metric].unit == "dB" else ""
    where = f" in group {m.group!r}" if m.group is not None else ""
    ci = f"; 95% CI of the change [{m.ci_low:.4g}, {m.ci_high:.4g}]" if with_ci else ""
    return (
        f"{m.metric}{where}: mean {abs(m.improvement):.4g}{unit} worse than baseline "
        f"({m.baseline_mean:.4g} -> {m.candidate_mean:.4g}, tolerance {m.tolerance:g}; "
        f"{m.worse_count}/{m.n_pairs + m.infinite_one} pairs worse beyond tolerance{ci})"
    )


def _ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The ok rows of a results frame, the latest row of each key."""
    return frame[frame["status"] == "ok"].drop_duplicates("key", keep="last")


def shared_metrics(baseline: pd.DataFrame, candidate: pd.DataFrame) -> list[str]:
    """The metrics a comparison of two results frames compares: those holding a value among the ok rows of
    both."""
    cand_metrics = metric_columns(_ok_rows(candidate))
    return [m for m in metric_columns(_ok_rows(baseline)) if m in cand_metrics]


def compare_frames(
    baseline: pd.DataFrame,
    candidate: pd.DataFrame,
    *,
    tolerances: dict[str, float] | None = None,
    require_significant: bool = False,
    baseline_run: str = "",
    candidate_run: str = "",
) -> Comparison:
    """Compare two results frames (as from `load_results`) pair by pair.

    Args:
        baseline, candidate: one row per key with `key`, `group`, `status` and metric columns.
        tolerances: per-metric absolute tolerances; missing metrics use `DEFAULT_TOLERANCES`.
        require_significant: a metric regresses only when its paired bootstrap 95% CI also lies below 0.

    Returns:
        The Comparison; `passed` is False when any metric regressed.
    """
    tol = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    base_ok, cand_ok = _ok_rows(baseline), _ok_rows(candidate)
    base_metrics, cand_metrics = metric_columns(base_ok), metric_columns(cand_ok)
    metrics = shared_metrics(baseline, candidate)
    base_keys, cand_keys = set(baseline["key"]), set(candidate["key"])
    notes = []
    not_ok = sorted((base_keys & cand_keys) - (set(base_ok["key"]) & set(cand_ok["key"])))
    if not_ok:
        notes.append(f"{len(not_ok)} key(s) in both runs are not ok in one of them and are not compared.")

    paired = base_ok.merge(cand_ok, on="key", suffixes=("_base", "_cand"), how="inner")
    overall, by_group, per_pair = _compare_metrics(paired, metrics, tol, require_significant)
    notes += _metric_notes(overall, require_significant)
    regressions = [_regression_text(m, require_significant) for m in overall if m.regressed]
    return Comparison(
        baseline_run=baseline_run,
        candidate_run=candidate_run,
        metrics=overall,
        groups=by_group,
        added_keys=sorted(cand_keys - base_keys),
        removed_keys=sorted(base_keys - cand_keys),
        baseline_only_metrics=[m for m in base_metrics if m not in cand_metrics],
        candidate_only_metrics=[m for m in cand_metrics if m not in base_metrics],
        per_pair=per_pair,
        regressions=regressions,
        passed=not regressions,
        notes=notes,
        require_significant=require_significant,
    )


PER_PAIR_COLUMNS = ["key", "group", "metric", "baseline", "candidate", "improvement"]


def _compare_metrics(
    paired: pd.DataFrame, metrics: list[str], tolerances: dict[str, float], require_significant: bool
) -> tuple[list[MetricComparison], list[MetricComparison], pd.DataFrame]:
    """Overall and per-group comparisons of each metric over the paired rows, and the long per-pair table."""
    groups = paired["group_cand"].astype(str).to_numpy() if len(paired) else np.array([], dtype=str)
    overall, by_group, long_parts = [], [], []
    for metric in metrics:
        base = pd.to_numeric(paired[f"{metric}_base"], errors="coerce").to_numpy(dtype=float)
        cand = pd.to_numeric(paired[f"{metric}_cand"], errors="coerce").to_numpy(dtype=float)
        tolerance = float(tolerances.get(metric, METRICS[metric].tolerance))
        gate = {"require_significant": require_significant}
        overall.append(compare_metric(base, cand, metric, None, tolerance, **gate))
        for group in sorted(set(groups)):
            rows = groups == group
            by_group.append(compare_metric(base[rows], cand[rows], metric, group, tolerance, **gate))
        present = ~(np.isnan(base) | np.isnan(cand))
        improvement = _pair_improvements(base[present], cand[present], METRICS[metric].higher_is_better)
        long_parts.append(
            pd.DataFrame(
                {
                    "key": paired["key"].to_numpy()[present],
                    "group": groups[present],
                    "metric": metric,
                    "baseline": base[present],
                    "candidate": cand[present],
                    "improvement": improvement,
                }
            )
        )
    per_pair = (
        pd.concat(long_parts, ignore_index=True) if long_parts else pd.DataFrame(columns=PER_PAIR_COLUMNS)
    )
    return overall, by_group, per_pair


def _metric_notes(overall: list[MetricComparison], require_significant: bool) -> list[str]:
    notes = []
    for m in overall:
        if m.n_pairs == 0:
            notes.append(f"{m.metric}: no pair has a finite value in both runs; not compared.")
        if m.infinite_one:
            notes.append(
                f"{m.metric}: {m.infinite_one} pair(s) infinite in one run only, left out of the mean."
            )
        if require_significant and m.beyond_tolerance and not m.regressed:
            notes.append(
                f"{m.metric}: mean {abs(m.improvement):.4g} worse than baseline, beyond its tolerance "
                f"{m.tolerance:g}, but the 95% CI of the change [{m.ci_low:.4g}, {m.ci_high:.4g}] does not "
                f"lie below 0 ({m.n_pairs} pair(s)): not a regression, as significance is required."
            )
    return notes


def _shown(value: Any) -> str:
    return "not recorded" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _quoted(value: Any) -> str | None:
    return None if value is None else f"'{value}'"


def recorded_convention(manifest: dict[str, Any]) -> dict[str, Any]:
    """The convention a manifest records ({'name', 'crop', 'description', 'spec'}; old runs: only a name)."""
    convention = manifest.get("convention") or {}
    return {"name": convention} if isinstance(convention, str) else convention


def _setting(manifest: dict[str, Any], name: str) -> Any:
    """A value-defining config setting of a run; one its manifest does not record is the default."""
    return (manifest.get("config") or {}).get(name, _DEFAULT_SETTINGS[name])


def _backbone_file(manifest: dict[str, Any]) -> str | None:
    backbone = manifest.get("lpips_backbone")
    return Path(str(backbone)).name if backbone else None


def _spec_defaults() -> dict[str, Any]:
    """Dotted spec keys -> their field's default: what a spec recorded before the field existed holds."""
    defaults: dict[str, Any] = {f.name: f.default for f in fields(ConventionSpec) if f.default is not MISSING}
    defaults["structural"] = asdict(StructuralSpec())
    return flat_spec(json.loads(json.dumps(defaults)))


def _spec_differences(name: str, base: dict[str, Any], cand: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(label, baseline value, candidate value) for every field of two recorded specs (`users` aside), a
    field one of them does not record taken as its default."""
    defaults = _spec_defaults()
    base_spec, cand_spec = {**defaults, **flat_spec(base)}, {**defaults, **flat_spec(cand)}
    return [
        (f"convention {name} {key}", base_spec.get(key), cand_spec.get(key))
        for key in sorted(base_spec.keys() | cand_spec.keys())
        if key != "users"
    ]


def _backbones(baseline: dict[str, Any], candidate: dict[str, Any]) -> tuple[str, Any, Any]:
    """The LPIPS backbones of two runs by content (sha256) where both recorded it, else by file name."""
    hashes = baseline.get("lpips_backbone_sha256"), candidate.get("lpips_backbone_sha256")
    if all(hashes):
        return ("LPIPS backbone sha256", str(hashes[0])[:12], str(hashes[1])[:12])
    return ("LPIPS backbone", _backbone_file(baseline), _backbone_file(candidate))


def run_differences(baseline: dict[str, Any], candidate: dict[str, Any], metrics: Iterable[str]) -> list[str]:
    """What defines the values of two runs' compared metrics, where their manifests differ: one phrase each.

    Compared: the convention (its name, and its resolved spec as recorded: channels, precision) and its
    border crop; `data_range` (float arrays) and `volumes` (3-D arrays); the size-mismatch policy when both
    runs score mismatched pairs (`crop` vs `resize`; with `error` such pairs are not compared);
    `ms_ssim_scales` when MS-SSIM is compared; the LPIPS net and its backbone weights file when LPIPS is
    compared. The set of metrics is not a difference (one-sided metrics are reported, not compared). A config
    setting a manifest does not record is taken as its default.

    Args:
        baseline, candidate: the runs' manifest.json contents.
        metrics: the metrics the comparison compares (`shared_metrics`).

    Returns:
        [] when the runs are comparable.

    Example:
        >>> default = {"convention": {"name": "default", "crop": 0}}
        >>> paper = {"convention": {"name": "sr-paper", "crop": 4}}
        >>> run_differences(default, paper, ["psnr"])
        ['convention default vs sr-paper', 'crop 0 vs 4']
    """
    metrics = set(metrics)
    base_conv, cand_conv = recorded_convention(baseline), recorded_convention(candidate)
    values: list[tuple[str, Any, Any]] = [
        ("convention", base_conv.get("name"), cand_conv.get("name")),
        ("crop", base_conv.get("crop"), cand_conv.get("crop")),
    ]
    if all(base == cand for _, base, cand in values):
        name = _shown(base_conv.get("name"))
        specs = _quoted(base_conv.get("description")), _quoted(cand_conv.get("description"))
        values.append((f"convention {name} spec", *specs))
        if base_conv.get("spec") and cand_conv.get("spec"):  # recorded from issue 18 on
            values += _spec_differences(name, base_conv["spec"], cand_conv["spec"])
    settings = ["data_range", "volumes"]
    if SizeMismatch.ERROR.value not in (
        _setting(baseline, "size_mismatch"),
        _setting(candidate, "size_mismatch"),
    ):
        settings.append("size_mismatch")
    settings += ["ms_ssim_scales"] if "ms_ssim" in metrics else []
    settings += ["lpips_net"] if "lpips" in metrics else []
    values += [(name, _setting(baseline, name), _setting(candidate, name)) for name in settings]
    if "lpips" in metrics and _setting(baseline, "lpips_net") == _setting(candidate, "lpips_net"):
        values.append(_backbones(baseline, candidate))
    return [f"{label} {_shown(base)} vs {_shown(cand)}" for label, base, cand in values if base != cand]


def _read_manifest_or_none(run_dir: RunDir) -> dict[str, Any] | None:
    try:
        return read_manifest(run_dir)
    except RunDirError:
        return None


def manifest_differences(
    baseline: dict[str, Any] | None, candidate: dict[str, Any] | None, metrics: Iterable[str]
) -> list[str]:
    """`run_differences` of two runs' manifests; a run without a readable manifest.json (None) is a
    difference too (how it was scored is unknown)."""
    unknown = [
        f"the {role} has no readable manifest.json (how it was scored is unknown)"
        for role, manifest in (("baseline", baseline), ("candidate", candidate))
        if manifest is None
    ]
    if baseline is None or candidate is None:
        return unknown
    return run_differences(baseline, candidate, metrics)


def compare_runs(
    baseline_dir: str | Path,
    candidate_dir: str | Path,
    *,
    tolerances: dict[str, float] | None = None,
    require_significant: bool = False,
    force: bool = False,
    storage_options: StorageOptions | None = None,
) -> Comparison:
    """Compare two run directories written by `iqa score` (paths or URLs).

    Args:
        tolerances: per-metric absolute tolerances (else `DEFAULT_TOLERANCES`).
        require_significant: a metric regresses only when its paired bootstrap 95% CI also lies below 0.
        force: compare runs that are not comparable anyway; the result is marked `forced`.
        storage_options: options of the file system of URLs.

    Raises:
        UsageError: when a folder does not exist or is not a run directory.
        NotComparableError: the runs' values follow different definitions (`run_differences`) and `force`
            is not given.
    """
    baseline_dir = require_run_dir(baseline_dir, "baseline", storage_options)
    candidate_dir = require_run_dir(candidate_dir, "candidate", storage_options)
    # The manifests first: the plugin columns they record become known before the metrics are listed
    manifests = _read_manifest_or_none(baseline_dir), _read_manifest_or_none(candidate_dir)
    baseline, candidate = load_results(baseline_dir), load_results(candidate_dir)
    differences = manifest_differences(*manifests, shared_metrics(baseline, candidate))
    if differences and not force:
        raise NotComparableError(differences, FORCE_HINT)
    comparison = compare_frames(
        baseline,
        candidate,
        tolerances=tolerances,
        require_significant=require_significant,
        baseline_run=str(baseline_dir),
        candidate_run=str(candidate_dir),
    )
    comparison.forced, comparison.differences = bool(differences), differences
    return comparison


def verdict_line(comparison: Comparison) -> str:
    """The last line of `iqa compare`: PASS or FAIL, marked FORCED when the runs were not comparable."""
    forced = " (FORCED: the runs are not comparable)" if comparison.forced else ""
    if not comparison.passed:
        return f"FAIL{forced}: regression"
    if comparison.require_significant:
        return f"PASS{forced}: no metric significantly worse than its tolerance"
    return f"PASS{forced}: no metric worse than its tolerance"


def metric_status(m: MetricComparison) -> str:
    """'REGRESSED', 'not significant' (beyond tolerance, CI reaching 0) or 'ok'."""
    if m.regressed:
        return "REGRESSED"
    return "not significant" if m.beyond_tolerance else "ok"


COMPARISON_HEADERS = (
    "metric", "better", "pairs", "baseline", "candidate", "change", "95% CI", "p", "worse", "tol", "",
)  # fmt: skip


def format_comparison(comparison: Comparison, *, groups: bool = True) -> str:
    """Console table: one line per metric, the regressed groups, key/metric differences, the verdict."""
    rows = [_metric_row(m) for m in comparison.metrics]
    lines = []
    if comparison.forced:
        lines.append(
            f"FORCED: the runs are not comparable ({'; '.join(comparison.differences)}); compared anyway "
            "because of --force: the changes below mix two definitions."
        )
    lines += [
        f"baseline:  {comparison.baseline_run}",
        f"candidate: {comparison.candidate_run}",
        "change = candidate - baseline, signed so that + is better",
    ]
    if comparison.require_significant:
        lines.append(
            "a metric regresses when its change is worse than its tolerance and its 95% CI is below 0"
        )
    lines.append(format_table(list(COMPARISON_HEADERS), rows) if rows else "no metric present in both runs")
    bad_groups = [g for g in comparison.groups if g.regressed]
    if groups and bad_groups and len({g.group for g in comparison.groups}) > 1:
        lines.append(
            "groups worse beyond tolerance: "
            + ", ".join(f"{g.group or '(top level)'}/{g.metric} {g.improvement:+.4g}" for g in bad_groups)
        )
    lines.append(
        f"keys: {len(comparison.added_keys)} added, {len(comparison.removed_keys)} removed"
        + _listing(" (added: ", comparison.added_keys)
        + _listing(" (removed: ", comparison.removed_keys)
    )
    if comparison.baseline_only_metrics:
        lines.append("metrics only in baseline: " + ", ".join(comparison.baseline_only_metrics))
    if comparison.candidate_only_metrics:
        lines.append("metrics only in candidate: " + ", ".join(comparison.candidate_only_metrics))
    lines.extend(f"note: {note}" for note in comparison.notes)
    lines.extend(f"REGRESSION {text}" for text in comparison.regressions)
    lines.append(verdict_line(comparison))
    return "\n".join(lines)


def _metric_row(m: MetricComparison) -> list[str]:
    """One metric's cells, in the order of `COMPARISON_HEADERS`."""
    ci = f"[{format_number(m.ci_low)}, {format_number(m.ci_high)}]" if m.n_pairs else "-"
    return [
        m.metric,
        "higher" if m.higher_is_better else "lower",
        str(m.n_pairs),
        format_number(m.baseline_mean),
        format_number(m.candidate_mean),
        "-" if m.improvement is None else f"{m.improvement:+.4f}",
        ci,
        "-" if m.wilcoxon_p is None else f"{m.wilcoxon_p:.3g}",
        str(m.worse_count),
        f"{m.tolerance:g}",
        metric_status(m),
    ]


def _listing(prefix: str, keys: list[str], limit: int = 5) -> str:
    if not keys:
        return ""
    shown = ", ".join(keys[:limit]) + (f", ... {len(keys) - limit} more" if len(keys) > limit else "")
    return f"{prefix}{shown})"

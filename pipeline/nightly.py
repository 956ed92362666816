"""`iqa run nightly.yaml`: score several suites, compare each with its baseline, one report, one exit code.

Config (paths relative to the YAML file's folder)::

    baseline: baselines/nightly      # one sub-folder per suite holding a previous run directory
    runs: reports/nightly            # today's run: RUNS/<name>/<suite>/ plus nightly.json and report.html
    tolerances: {psnr: 0.05, ssim: 0.001}
    require_significant: false       # optional: as `iqa compare --require-significant`; a suite may override
    score: {scheduler: sync, metrics: [psnr, ssim]}   # optional; any `iqa score --config` key
    suites:
      - name: jpeg
        reference: demo-data/reference/jpeg
        output: demo-data/output/jpeg
        convention: default          # any `iqa score --config` key; overrides `score`
        tolerances: {psnr: 0.1}      # optional; overrides the top-level tolerances

Verdict of a suite: `failed` when scoring raised, the run is incomplete (failed pairs, missing outputs,
duplicate references) or it is not comparable with its baseline (scored with another convention, crop or
metric settings: `pipeline.comparison.run_differences`), else `regressed` when the comparison with its
baseline fails, else `passed` (also when it has no baseline yet). The exit code is 0 when every suite passed,
2 when a suite is not comparable with its baseline (a configuration error), else 1; other config problems
(exit 2) are found before anything is scored. The nightly job has no `force`: a deliberate change of how a
suite is scored starts a new baseline (remove the suite's baseline folder).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.comparison import DEFAULT_TOLERANCES, Comparison, check_tolerances, compare_runs
from pipeline.config import ScoreConfig, read_yaml, validate_config
from pipeline.errors import ConfigError, IQAError, NotComparableError, UsageError, WriteError
from pipeline.html import render_nightly_report, render_run_report
from pipeline.run_dirs import MANIFEST_NAME, REPORT_NAME
from pipeline.scoring import score_folders
from pipeline.storage import write_text_atomic

TOP_KEYS = ("baseline", "runs", "tolerances", "require_significant", "score", "suites")
REQUIRED_TOP_KEYS = ("baseline", "runs", "suites")
SUITE_KEYS = ("name", "reference", "output", "tolerances", "require_significant")
REQUIRED_SUITE_KEYS = ("name", "reference", "output")
SUMMARY_NAME = "nightly.json"

PASSED, REGRESSED, FAILED = "passed", "regressed", "failed"

log = logging.getLogger("pipeline.nightly")


@dataclass
class Suite:
    """One suite of the nightly job: two folders scored with one config."""

    name: str
    reference: Path
    output: Path
    config: ScoreConfig
    tolerances: dict[str, float]
    require_significant: bool = False


@dataclass
class NightlyConfig:
    """A parsed nightly YAML file."""

    path: Path
    baseline: Path
    runs: Path
    suites: list[Suite]


@dataclass
class SuiteResult:
    """What happened to one suite: its verdict, its run directory and its comparison with the baseline.

    `differences`: why the run is not comparable with its baseline (then the verdict is `failed`, exit 2).
    `seconds`: the wall time of scoring and comparing the suite.
    """

    name: str
    run_dir: Path
    verdict: str
    comparison: Comparison | None = None
    notes: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.verdict == PASSED

    @property
    def exit_code(self) -> int:
        if self.differences:
            return NotComparableError.exit_code
        return 0 if self.passed else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "run_dir": str(self.run_dir),
            "verdict": self.verdict,
            "passed": self.passed,
            "regressed_metrics": self.comparison.regressed_metrics if self.comparison else [],
            "not_comparable": list(self.differences),
            "notes": list(self.notes),
            "comparison": self.comparison.to_dict() if self.comparison else None,
        }


@dataclass
class NightlyResult:
    """The whole job: one result per suite, where it was written, and the exit code (worst suite).

    `started`: when the job started (UTC).
    """

    name: str
    run_root: Path
    suites: list[SuiteResult]
    summary_path: Path
    started: dt.datetime | None = None
    report_path: Path | None = None
    baseline_updated: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return max((s.exit_code for s in self.suites), default=0)


# Config


def _key_line(node: Any, path: tuple[Any, ...]) -> int | None:
    """Line (1-based) of the key or item at `path` inside a composed YAML node, when it can be found."""
    line = None
    for step in path:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == step), None)
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            return line
    return line


@dataclass
class _Located:
    """A parsed nightly file and its YAML nodes, to name the line of any key in a message."""

    path: Path
    node: Any

    def where(self, *keys: Any) -> str:
        line = _key_line(self.node, keys)
        return f"{self.path}" + (f" line {line}" if line else "")


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a mapping of key: value, got {type(value).__name__}.")
    return {str(k).replace("-", "_"): v for k, v in value.items()}


def _tolerances(value: Any, where: str) -> dict[str, float]:
    try:
        return check_tolerances(_mapping(value, f"{where}: tolerances"), where)
    except ConfigError:
        raise
    except UsageError as exc:
        raise ConfigError(str(exc)) from None


def _flag(value: Any, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key!r} must be true or false, got {value!r} ({type(value).__name__}).")
    return value


def _join(folder: Path, value: Any) -> Path:
    return Path(os.path.normpath(folder / str(value)))


def _check_top_level(data: dict[str, Any], source: _Located) -> None:
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{source.where(key)}: unknown key {key!r}. Known keys: {', '.join(TOP_KEYS)}.")
    for key in REQUIRED_TOP_KEYS:
        if data.get(key) in (None, "", []):
            raise ConfigError(f"Nightly config {source.path}: missing key {key!r}. See configs/nightly.yaml.")
    if not isinstance(data["suites"], list):
        raise ConfigError(f"{source.where('suites')}: 'suites' must be a list of suites.")


def load_nightly_config(path: str | Path) -> NightlyConfig:
    """Read and check a nightly YAML file; every problem is a ConfigError naming the file, line and key."""
    path = Path(path)
    data, node = read_yaml(path, "Nightly config")
    source = _Located(path, node)
    data = _mapping(data or {}, f"Nightly config {path}")
    _check_top_level(data, source)
    folder = Path(os.path.normpath(path.parent))
    tolerances = {
        **DEFAULT_TOLERANCES,
        **_tolerances(data.get("tolerances") or {}, source.where("tolerances")),
    }
    shared = _mapping(data.get("score") or {}, f"{path}: score")
    gate = data.get("require_significant", False)
    significant = _flag(gate, source.where("require_significant"), "require_significant")
    suites: list[Suite] = []
    for index, raw in enumerate(data["suites"]):
        suite = _load_suite(raw, index, shared, tolerances, folder, source, require_significant=significant)
        if any(s.name == suite.name for s in suites):
            raise ConfigError(
                f"{source.where('suites', index)}: two suites are named {suite.name!r}; names must be unique."
            )
        suites.append(suite)
    if not suites:
        raise ConfigError(f"Nightly config {path}: 'suites' is empty; add at least one suite.")
    return NightlyConfig(path, _join(folder, data["baseline"]), _join(folder, data["runs"]), suites)


def _load_suite(
    raw: Any,
    index: int,
    shared: dict[str, Any],
    tolerances: dict[str, float],
    folder: Path,
    source: _Located,
    *,
    require_significant: bool = False,
) -> Suite:
    """One entry of `suites`: its name, folders, tolerances, significance gate and `iqa score` options (over
    the top-level `tolerances`, `require_significant` and `score` options)."""
    where = source.where("suites", index)
    entry = _mapping(raw, f"{where}: suite {index + 1}")
    for key in REQUIRED_SUITE_KEYS:
        if entry.get(key) in (None, ""):
            raise ConfigError(f"{where}: suite {index + 1} is missing key {key!r}.")
    name = str(entry.pop("name"))
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"{where}: suite name {name!r} must be a plain folder name.")
    reference, output = _join(folder, entry.pop("reference")), _join(folder, entry.pop("output"))
    suite_tolerances = _tolerances(entry.pop("tolerances", None) or {}, f"{where} (suite {name!r})")
    if "require_significant" in entry:
        gate_where = f"{source.where('suites', index, 'require_significant')} (suite {name!r})"
        require_significant = _flag(entry.pop("require_significant"), gate_where, "require_significant")

    def key_where(key: str) -> str:
        if key in entry:
            return f"{source.where('suites', index, key)} (suite {name!r})"
        return f"{source.where('score', key)} (score)"

    config = validate_config({**shared, **entry}, key_where)
    for role, folder_path in (("reference", reference), ("output", output)):
        if not folder_path.is_dir():
            raise ConfigError(
                f"{where} (suite {name!r}): {role} folder {folder_path} does not exist. "
                "Paths are relative to the config file's folder."
            )
    return Suite(name, reference, output, config, {**tolerances, **suite_tolerances}, require_significant)


# Running


def default_run_name() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")


def run_suite(
    suite: Suite, run_dir: Path, baseline: Path, *, overwrite: bool = False, progress: bool = False
) -> SuiteResult:
    """Score one suite into `run_dir`, then compare it with `baseline/<suite>` when that exists."""
    try:
        scored = score_folders(
            suite.reference, suite.output, run_dir, suite.config, overwrite=overwrite, progress=progress
        )
        if suite.config.report:
            render_run_report(run_dir)
    except IQAError as exc:
        return SuiteResult(suite.name, run_dir, FAILED, notes=[f"scoring failed: {exc}"])
    notes = list(scored.notices)
    verdict = PASSED
    if not scored.complete:
        counts = scored.counts
        verdict = FAILED
        notes.append(
            f"incomplete run: {counts['error']} failed pair(s), {counts['missing']} missing output(s), "
            f"{counts['unscored_duplicates']} reference(s) whose key two or more files claim; "
            f"see {run_dir / MANIFEST_NAME}."
        )
        notes.extend(f"hint: {hint}" for hint in scored.manifest.get("hints") or [])
    previous = baseline / suite.name
    if not (previous / MANIFEST_NAME).is_file():
        notes.append(f"no baseline yet ({previous}); pass --update-baseline after a good run.")
        return SuiteResult(suite.name, run_dir, verdict, None, notes)
    try:
        comparison = compare_runs(
            previous, run_dir, tolerances=suite.tolerances, require_significant=suite.require_significant
        )
    except NotComparableError as exc:
        notes.append(
            f"not comparable with its baseline {previous}: {'; '.join(exc.differences)}. Score the suite as "
            f"the baseline was scored or, for a deliberate change, remove {previous} to start a new baseline."
        )
        return SuiteResult(suite.name, run_dir, FAILED, None, notes, exc.differences)
    if not comparison.passed and verdict == PASSED:
        verdict = REGRESSED
    return SuiteResult(suite.name, run_dir, verdict, comparison, notes)


def run_nightly(
    config_path: str | Path,
    *,
    name: str | None = None,
    update_baseline: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> NightlyResult:
    """Run every suite of a nightly config, write `nightly.json` (and `report.html` when available).

    Args:
        name: folder under `runs` for this run (default: UTC date and time).
        update_baseline: after a run where every suite passed, promote its run directories to the baseline.
        overwrite: replace suite runs already in `runs/<name>`.

    Raises:
        ConfigError: bad config (before anything is scored). WriteError: outputs cannot be written.
    """
    config = load_nightly_config(config_path)
    name = name or default_run_name()
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise UsageError(f"--name {name!r} must be a plain folder name.")
    run_root = config.runs / name
    _refuse_finished_night(run_root, [suite.name for suite in config.suites], overwrite)
    started = dt.datetime.now(dt.timezone.utc)
    results = [
        _timed_suite(suite, run_root / suite.name, config.baseline, overwrite=overwrite, progress=progress)
        for suite in config.suites
    ]
    result = NightlyResult(name, run_root, results, run_root / SUMMARY_NAME, started)
    result.report_path = _write_report(results, run_root / REPORT_NAME, result.notes)
    if update_baseline:
        if result.exit_code == 0:
            promote(results, config.baseline, name)
            result.baseline_updated = True
        else:
            result.notes.append("baseline NOT updated: not every suite passed.")
    write_summary(result, config)
    return result


def _timed_suite(suite: Suite, run_dir: Path, baseline: Path, **options: Any) -> SuiteResult:
    """`run_suite`, its wall time recorded in `seconds`."""
    start = time.perf_counter()
    result = run_suite(suite, run_dir, baseline, **options)
    result.seconds = time.perf_counter() - start
    return result


def _refuse_finished_night(run_root: Path, suites: list[str], overwrite: bool) -> None:
    """A night's files are never changed unless `overwrite`: a reused --name is a usage error."""
    found = [entry for entry in (SUMMARY_NAME, REPORT_NAME, *suites) if (run_root / entry).exists()]
    if found and not overwrite:
        raise UsageError(
            f"{run_root} already holds the night {run_root.name!r} ({', '.join(found)}). Give `iqa run` "
            "another --name (default: the UTC date and time), or pass --overwrite to replace that night."
        )


def _write_report(results: list[SuiteResult], output: Path, notes: list[str]) -> Path | None:
    """The combined HTML report.

    A failure to render is a note, not a crash: the verdicts and nightly.json matter more than the page.
    """
    suites = [
        {
            "name": r.name,
            "run_dir": r.run_dir,
            "passed": None if r.passed and r.comparison is None else r.passed,
            "comparison": r.comparison,
            "verdict": r.verdict,
            "notes": list(r.notes),
        }
        for r in results
    ]
    try:
        return render_nightly_report(suites, output)
    except Exception as exc:
        log.exception("combined nightly report failed")
        notes.append(f"combined HTML report failed: {type(exc).__name__}: {exc}")
        return None


def write_summary(result: NightlyResult, config: NightlyConfig) -> Path:
    """Write RUN_ROOT/nightly.json: verdicts, comparisons and where everything is."""
    payload = {
        "name": result.name,
        "config": str(config.path),
        "baseline": str(config.baseline),
        "run_root": str(result.run_root),
        "exit_code": result.exit_code,
        "passed": result.exit_code == 0,
        "baseline_updated": result.baseline_updated,
        "report": str(result.report_path) if result.report_path else None,
        "notes": result.notes,
        "suites": [s.to_dict() for s in result.suites],
    }
    result.run_root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(result.summary_path, json.dumps(payload, indent=2, allow_nan=False))
    return result.summary_path


def promote(results: list[SuiteResult], baseline: Path, name: str) -> None:
    """Copy each suite's run directory to `baseline/<suite>`: copy to a temp folder, then swap it in."""
    try:
        baseline.mkdir(parents=True, exist_ok=True)
        for suite in results:
            target = baseline / suite.name
            temp = baseline / f".{suite.name}.new-{os.getpid()}"
            old = baseline / f".{suite.name}.old-{os.getpid()}"
            shutil.rmtree(temp, ignore_errors=True)
            shutil.copytree(suite.run_dir, temp)
            if target.exists():
                os.replace(target, old)
            os.replace(temp, target)
            shutil.rmtree(old, ignore_errors=True)
        stamp = {"run": name, "promoted": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        (baseline / "promoted.json").write_text(json.dumps(stamp, indent=2), encoding="utf-8")
    except OSError as exc:
        raise WriteError(
            f"Cannot update the baseline in {baseline}: {exc.strerror or exc}. Check permissions and space."
        ) from exc


def _suite_detail(s: SuiteResult) -> str:
    if s.verdict == FAILED:
        return "; ".join(n for n in s.notes if not n.startswith("no baseline yet")) or "failed"
    if s.comparison is None:
        return "no baseline yet"
    if s.comparison.regressions:
        worse = [m for m in s.comparison.metrics if m.regressed]
        return "mean change: " + ", ".join(f"{m.metric} {m.improvement:+.4g}" for m in worse)
    return "no metric worse than its tolerance"


NIGHTLY_HEADERS = ("suite", "verdict", "regressed", "details")


def nightly_rows(result: NightlyResult) -> list[list[str]]:
    """One row per suite under `NIGHTLY_HEADERS`: name, VERDICT, regressed metrics ('-': none), details."""
    return [
        [
            s.name,
            s.verdict.upper(),
            ", ".join(s.comparison.regressed_metrics)
            if s.comparison and s.comparison.regressed_metrics
            else "-",
            _suite_detail(s),
        ]
        for s in result.suites
    ]


def format_nightly(result: NightlyResult) -> str:
    """Five-second table: suite, verdict, regressed metrics, details; then notes and where the results are."""
    headers, rows = list(NIGHTLY_HEADERS), nightly_rows(result)
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(3)]
    lines = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True)), row[3]]).rstrip()
        for row in [headers, ["-" * w for w in widths] + ["-" * 7], *rows]
    ]
    for suite in result.suites:
        if suite.comparison is not None:
            lines.extend(f"{suite.name}: {text}" for text in suite.comparison.regressions)
    lines.extend(f"note: {n}" for n in result.notes)
    lines.append(f"results: {result.run_root}")
    if result.report_path:
        lines.append(f"report: {result.report_path}")
    if result.baseline_updated:
        lines.append("baseline updated from this run")
    lines.append(verdict_line(result))
    return "\n".join(lines)


def verdict_line(result: NightlyResult) -> str:
    """'PASS: every suite passed', or 'FAIL: ' and each suite that did not pass with its verdict."""
    failed = [f"{s.name} ({s.verdict})" for s in result.suites if not s.passed]
    return "PASS: every suite passed" if not failed else f"FAIL: {', '.join(failed)}"

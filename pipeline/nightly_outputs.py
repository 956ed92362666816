"""What `iqa run --junit FILE --markdown FILE` writes for a CI system: pure formatting, then one write each.

* JUnit XML (the Jenkins/Surefire schema `junit-10.xsd` that GitLab, GitHub test-report actions and Jenkins
  read): one `<testsuite>` for the night, one `<testcase>` per suite, a `<failure>` in each regressed or
  failed suite whose `message` holds the per-metric changes (and the body the full comparison table).
* Markdown for a CI job page such as `$GITHUB_STEP_SUMMARY`: the verdict, one row per suite, a table of the
  per-metric changes of each compared suite, and where the reports are.

Example:
    >>> result = pipeline.run_nightly("configs/nightly.yaml")  # doctest: +SKIP
    >>> write_ci_outputs(result, junit=Path("junit.xml"), markdown=Path("summary.md"))  # doctest: +SKIP
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from pipeline.choices import METRICS
from pipeline.comparison import Comparison, MetricComparison, format_comparison, metric_status
from pipeline.errors import WriteError
from pipeline.html.filters import interval, metric_value, signed
from pipeline.markdown_tables import escape_markdown, markdown_table
from pipeline.nightly import FAILED, NIGHTLY_HEADERS, NightlyResult, SuiteResult, nightly_rows, verdict_line
from pipeline.run_dirs import REPORT_NAME
from pipeline.storage import write_text_atomic

JUNIT_CLASSNAME = "iqa.nightly"
VERDICT_ICONS = {"passed": "✅", "regressed": "❌", "failed": "❌"}
DELTA_HEADERS = ("metric", "pairs", "baseline", "candidate", "change", "95% CI", "tolerance", "status")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """`text` without the characters XML 1.0 cannot hold (control characters from file names, ...)."""
    return _NOT_XML.sub("?", text)


def metric_change(m: MetricComparison) -> str:
    """One metric's change, signed so that + is better, with both means, its tolerance and its status.

    Example:
        >>> from pipeline.comparison import compare_metric
        >>> import numpy as np
        >>> metric_change(compare_metric(np.array([30.0, 32.0]), np.array([29.0, 31.0]), "psnr", None, 0.05))
        'psnr -1.00 dB (31.00 -> 30.00, tolerance 0.05): REGRESSED'
    """
    if m.improvement is None:
        return f"{m.metric}: not compared (no pair has a finite value in both runs)"
    unit = f" {METRICS[m.metric].unit}" if METRICS[m.metric].unit == "dB" else ""
    means = f"{metric_value(m.baseline_mean, m.metric)} -> {metric_value(m.candidate_mean, m.metric)}"
    return (
        f"{m.metric} {signed(m.improvement, m.metric)}{unit} ({means}, tolerance {m.tolerance:g}): "
        f"{metric_status(m)}"
    )


def failure_message(suite: SuiteResult) -> str:
    """Why a suite did not pass, in one line: its verdict, its notes when it failed, each metric's change."""
    parts = [n for n in suite.notes if not n.startswith("hint: ")] if suite.verdict == FAILED else []
    if suite.comparison is not None:
        parts.append("change (+ is better): " + "; ".join(metric_change(m) for m in suite.comparison.metrics))
    return f"{suite.name} {suite.verdict}: " + " | ".join(parts or ["see the suite's notes"])


def _suite_log(suite: SuiteResult) -> str:
    """The notes, the comparison table and where the suite's results are: the testcase's text."""
    lines = [f"note: {note}" for note in suite.notes]
    if suite.comparison is not None:
        lines.append(format_comparison(suite.comparison))
    lines.append(f"results: {suite.run_dir}")
    if (suite.run_dir / REPORT_NAME).is_file():
        lines.append(f"report: {suite.run_dir / REPORT_NAME}")
    return "\n".join(lines)


def _testcase(suite: SuiteResult) -> ET.Element:
    case = ET.Element("testcase", name=suite.name, classname=JUNIT_CLASSNAME, time=f"{suite.seconds:.3f}")
    if not suite.passed:
        failure = ET.SubElement(
            case, "failure", message=_xml_text(failure_message(suite)), type=suite.verdict
        )
        failure.text = _xml_text(_suite_log(suite))
    else:
        ET.SubElement(case, "system-out").text = _xml_text(_suite_log(suite))
    return case


def junit_xml(result: NightlyResult) -> str:
    """The night as JUnit XML: `<testsuites>` holding one `<testsuite>`, one `<testcase>` per suite.

    Counts: `tests` suites, `failures` suites not passed (regressed or failed), `errors` 0. Valid under the
    Jenkins/Surefire `junit-10.xsd` (the attributes it allows, times as seconds with a decimal point).
    """
    failures = sum(not suite.passed for suite in result.suites)
    seconds = f"{sum(suite.seconds for suite in result.suites):.3f}"
    counts = {"tests": str(len(result.suites)), "failures": str(failures), "errors": "0"}
    root = ET.Element("testsuites", name="iqa nightly", time=seconds, **counts)
    suite_element = ET.SubElement(
        root, "testsuite", name=_xml_text(f"iqa nightly {result.name}"), skipped="0", time=seconds, **counts
    )
    if result.started is not None:
        suite_element.set("timestamp", result.started.strftime("%Y-%m-%dT%H:%M:%S"))
    suite_element.extend(_testcase(suite) for suite in result.suites)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def delta_rows(comparison: Comparison) -> list[list[str]]:
    """One Markdown row per metric under `DELTA_HEADERS` (change signed so that + is better)."""
    return [
        [
            escape_markdown(m.metric),
            str(m.n_pairs),
            metric_value(m.baseline_mean, m.metric),
            metric_value(m.candidate_mean, m.metric),
            signed(m.improvement, m.metric),
            interval(m.ci_low, m.ci_high, m.metric),
            f"{m.tolerance:g}",
            f"**{metric_status(m)}**" if m.regressed else metric_status(m),
        ]
        for m in comparison.metrics
    ]


def _code(path: object) -> str:
    return f"`{str(path).replace('`', '')}`"


def _suite_section(suite: SuiteResult) -> list[str]:
    """A heading, the per-metric changes (when compared) and the report of one suite."""
    lines = [f"#### {escape_markdown(suite.name)}: {suite.verdict.upper()}", ""]
    if suite.comparison is not None:
        lines += [markdown_table(DELTA_HEADERS, delta_rows(suite.comparison)), ""]
    lines += [f"- {escape_markdown(note)}" for note in suite.notes]
    report = suite.run_dir / REPORT_NAME
    lines.append(f"- report: {_code(report)}" if report.is_file() else f"- results: {_code(suite.run_dir)}")
    return [*lines, ""]


def markdown_summary(result: NightlyResult) -> str:
    """The night for a CI job page: verdict, a row per suite, each suite's changes, the reports' paths."""
    passed = result.exit_code == 0
    rows = [
        [escape_markdown(name), f"{VERDICT_ICONS[verdict.lower()]} {verdict}", *map(escape_markdown, rest)]
        for name, verdict, *rest in nightly_rows(result)
    ]
    verdict = f"{'✅' if passed else '❌'} {escape_markdown(verdict_line(result))}"
    lines = [
        f"### iqa nightly {_code(result.name)}: {verdict}",
        "",
        markdown_table(NIGHTLY_HEADERS, rows, left=len(NIGHTLY_HEADERS)),
        "",
        "Change = candidate − baseline, signed so that + is better.",
        "",
    ]
    for suite in result.suites:
        lines += _suite_section(suite)
    if result.report_path:
        lines.append(f"Combined report: {_code(result.report_path)}  ")
    lines.append(f"Verdicts as JSON: {_code(result.summary_path)}")
    lines += [f"- {escape_markdown(note)}" for note in result.notes]
    if result.baseline_updated:
        lines.append("\nThe baseline was updated from this run.")
    return "\n".join(lines) + "\n"


def write_ci_outputs(
    result: NightlyResult, *, junit: Path | None = None, markdown: Path | None = None
) -> None:
    """Write the JUnit XML and the Markdown summary where asked (parent folders created; atomic writes).

    Raises:
        WriteError: a file cannot be written.
    """
    for path, render in ((junit, junit_xml), (markdown, markdown_summary)):
        if path is not None:
            path = Path(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise WriteError(f"Cannot create the folder of {path}: {exc.strerror or exc}.") from exc
            write_text_atomic(path, render(result))

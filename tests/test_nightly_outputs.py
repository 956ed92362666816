"""pipeline/nightly_outputs.py: the JUnit XML and the Markdown summary of a night, from results built here
(real comparisons of small frames; `iqa run --junit --markdown` end to end is in test_nightly.py)."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from pipeline.comparison import Comparison, compare_frames
from pipeline.nightly import FAILED, PASSED, REGRESSED, NightlyResult, SuiteResult
from pipeline.nightly_outputs import junit_xml, markdown_summary, write_ci_outputs

# What the Jenkins/Surefire junit-10.xsd allows: {element: (required, allowed attributes, child elements)}
MESSAGE = (set(), {"type", "message"}, set())
TEXT = (set(), set(), set())
SUITE_ATTRIBUTES = {"name", "tests", "failures", "errors"}
SUITE_OPTIONAL = {"group", "time", "skipped", "timestamp", "hostname", "id", "package", "file", "log", "url"}
JUNIT_10 = {
    "testsuites": (set(), {"name", "time", "tests", "failures", "errors"}, {"testsuite"}),
    "testsuite": (
        SUITE_ATTRIBUTES,
        SUITE_ATTRIBUTES | SUITE_OPTIONAL,
        {"testsuite", "properties", "testcase", "system-out", "system-err"},
    ),
    "testcase": (
        {"name"},
        {"name", "time", "classname", "group"},
        {"skipped", "error", "failure", "system-out", "system-err"},
    ),
    "failure": MESSAGE,
    "error": MESSAGE,
    "skipped": MESSAGE,
    "system-out": TEXT,
    "system-err": TEXT,
}
SUREFIRE_TIME = re.compile(r"(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]*)?")


def check_junit_10(element: ET.Element) -> None:
    """Assert that `element` and its children follow junit-10.xsd (attributes, children, time values)."""
    required, allowed, children = JUNIT_10[element.tag]
    assert required <= set(element.attrib) <= allowed, (element.tag, element.attrib)
    if element.tag.startswith("testsuite") and "time" in element.attrib:
        assert SUREFIRE_TIME.fullmatch(element.attrib["time"]), element.attrib["time"]
    for child in element:
        assert child.tag in children, (element.tag, child.tag)
        check_junit_10(child)


def frame(psnr: list[float], ssim: list[float]) -> pd.DataFrame:
    keys = [f"img{index}" for index in range(len(psnr))]
    return pd.DataFrame({"key": keys, "group": "g", "status": "ok", "psnr": psnr, "ssim": ssim})


def comparison(psnr_drop: float) -> Comparison:
    base = frame([30.0, 32.0, 34.0], [0.90, 0.92, 0.94])
    cand = frame([30.0 - psnr_drop, 32.0 - psnr_drop, 34.0 - psnr_drop], [0.90, 0.92, 0.94])
    return compare_frames(base, cand, tolerances={"psnr": 0.05})


@pytest.fixture
def night(tmp_path: Path) -> NightlyResult:
    """Three suites: `jpeg` regressed (PSNR 1 dB down), `denoise` passed, `sr <x4> & co` failed to score."""
    (tmp_path / "jpeg").mkdir()
    (tmp_path / "jpeg" / "report.html").write_text("<html></html>")
    suites = [
        SuiteResult("jpeg", tmp_path / "jpeg", REGRESSED, comparison(1.0), seconds=1.5),
        SuiteResult("denoise", tmp_path / "denoise", PASSED, comparison(0.0), seconds=2.25),
        SuiteResult(
            "sr <x4> & co",
            tmp_path / "sr",
            FAILED,
            None,
            ["scoring failed: bad \x01file 'a\"b'"],
            seconds=0.5,
        ),
    ]
    started = dt.datetime(2024, 5, 1, 3, 17, tzinfo=dt.timezone.utc)
    return NightlyResult("day2", tmp_path, suites, tmp_path / "nightly.json", started=started)


def test_junit_has_a_testcase_per_suite_and_a_failure_per_suite_not_passed(night: NightlyResult):
    root = ET.fromstring(junit_xml(night).encode("utf-8"))
    check_junit_10(root)
    (suite,) = root.findall("testsuite")
    for element in (root, suite):
        assert (element.get("tests"), element.get("failures"), element.get("errors")) == ("3", "2", "0")
    assert suite.get("time") == "4.250" and suite.get("timestamp") == "2024-05-01T03:17:00"
    cases = {case.get("name"): case for case in suite.findall("testcase")}
    assert list(cases) == ["jpeg", "denoise", "sr <x4> & co"]
    assert cases["jpeg"].get("time") == "1.500" and cases["jpeg"].get("classname") == "iqa.nightly"
    assert cases["denoise"].find("failure") is None and "PASS" in cases["denoise"].findtext("system-out")
    regressed = cases["jpeg"].find("failure")
    assert regressed.get("type") == "regressed"
    message = regressed.get("message")
    assert message.startswith("jpeg regressed: ")
    assert "psnr -1.00 dB (32.00 -> 31.00, tolerance 0.05): REGRESSED" in message
    assert "ssim +0.0000 (0.9200 -> 0.9200, tolerance 0.001): ok" in message
    assert "REGRESSION psnr" in regressed.text and "report: " in regressed.text
    failed = cases["sr <x4> & co"].find("failure")
    assert failed.get("type") == "failed" and "scoring failed: bad ?file 'a\"b'" in failed.get("message")


def test_the_junit_check_refuses_what_the_schema_does_not_allow():
    with pytest.raises(AssertionError):
        check_junit_10(ET.fromstring('<testsuites skipped="0"><testsuite name="n" tests="1" failures="0" '
                                     'errors="0"/></testsuites>'))  # fmt: skip
    with pytest.raises(AssertionError):
        check_junit_10(ET.fromstring('<testsuite name="n" tests="1" failures="0" errors="0" time="1.5s"/>'))


def test_a_passing_night_has_no_failure(night: NightlyResult):
    night.suites = night.suites[1:2]
    root = ET.fromstring(junit_xml(night).encode("utf-8"))
    check_junit_10(root)
    assert root.get("failures") == "0" and root.find(".//failure") is None


def test_markdown_summary_gives_the_verdicts_the_changes_and_the_reports(night: NightlyResult):
    text = markdown_summary(night)
    heading = r"### iqa nightly `day2`: ❌ FAIL: jpeg (regressed), sr \<x4\> & co (failed)"
    assert text.splitlines()[0] == heading
    assert "| jpeg | ❌ REGRESSED | psnr | mean change: psnr -1 |" in text
    assert "| denoise | ✅ PASSED | - | no metric worse than its tolerance |" in text
    assert "| psnr | 3 | 32.00 | 31.00 | -1.00 | [-1.00, -1.00] | 0.05 | **REGRESSED** |" in text
    assert f"report: `{night.run_root / 'jpeg' / 'report.html'}`" in text
    assert f"results: `{night.run_root / 'sr'}`" in text and f"`{night.summary_path}`" in text
    markdown_it = pytest.importorskip("markdown_it")
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(text)
    assert html.count("<table>") == 3  # the suites, then the changes of each compared suite
    assert ">sr &lt;x4&gt; &amp; co</td>" in html and "<strong>REGRESSED</strong>" in html


def test_write_ci_outputs_creates_the_folders(night: NightlyResult, tmp_path: Path):
    junit, markdown = tmp_path / "ci" / "junit.xml", tmp_path / "ci" / "deeper" / "summary.md"
    write_ci_outputs(night, junit=junit, markdown=markdown)
    assert ET.parse(junit).getroot().get("tests") == "3"
    assert markdown.read_text(encoding="utf-8") == markdown_summary(night)

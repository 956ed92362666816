"""HTML report: sections, escaping of untrusted names, self-containment, worst-case order, baseline, CLI."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import degrade, install, real_image, sha256_of
from markupsafe import escape
from PIL import Image
from typer.testing import CliRunner

from pipeline.choices import METRICS
from pipeline.cli import app
from pipeline.config import ScoreConfig
from pipeline.discover import duplicate_message
from pipeline.errors import NotComparableError
from pipeline.html import filters, render_nightly_report, render_run_report
from pipeline.html.display import CHANGED_NOTE, GONE_NOTE, ReadOptions
from pipeline.html.model import PairCard, ReportData, build_report
from pipeline.html.pictures import PICTURE_BUDGET, PairFiles, pair_pictures
from pipeline.html.render import render_report_data
from pipeline.results import load_results
from pipeline.scoring import score_folders

HOSTILE_STEM = "<img src=x onerror=alert(1)>"
HOSTILE_EXTRA_STEM = "<script>alert(2)</script>"
SECTION_IDS = ("header", "summary", "groups", "distributions", "worst", "failures", "files")
METRIC_NAMES = ("psnr", "ssim", "ms_ssim", "mse")


class _TagCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def parse_tags(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """Every start tag of a page with its attributes, as a browser's tokenizer sees them."""
    collector = _TagCollector()
    collector.feed(html)
    return collector.tags


@dataclass
class ReportRun:
    """A scored run (candidate) and a baseline scored on the same references."""

    reference: Path
    run_dir: Path
    baseline_dir: Path


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def build_report_run(root: Path) -> ReportRun:
    """Real photos in groups a/ and b/, one corrupt output, one missing, one extra, one hostile name.

    The baseline is mostly more degraded (noise), but better on the hostile-named pair, so the baseline
    section has per-pair regressions to show.
    """
    photos = {
        "a/astronaut": real_image("astronaut.png"),
        "a/coffee": real_image("coffee.png"),
        "a/brick": real_image("brick.png"),
        "b/chelsea": real_image("chelsea.png"),
        "b/camera": real_image("camera.png"),
        f"b/{HOSTILE_STEM}": real_image("motorcycle_left.png")[:256, :384],
    }
    candidate = {
        "a/astronaut": "jpeg",
        "a/coffee": "blur",
        "b/chelsea": "noise",
        f"b/{HOSTILE_STEM}": "bicubic4",
    }
    reference, outputs, baseline_outputs = root / "ref", root / "out", root / "out-baseline"
    for key, image in photos.items():
        _save(reference / f"{key}.png", image)
    for key, kind in candidate.items():
        _save(outputs / f"{key}.png", degrade(photos[key], kind))
        milder = "bicubic2" if key.endswith(HOSTILE_STEM) else "noise"
        _save(baseline_outputs / f"{key}.png", degrade(photos[key], milder, seed=1))
    for folder in (outputs, baseline_outputs):
        (folder / "b" / "camera.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
        _save(folder / "b" / f"{HOSTILE_EXTRA_STEM}.png", photos["b/chelsea"])
    config = ScoreConfig(metrics=METRIC_NAMES, scheduler="sync", report=False)
    run_dir, baseline_dir = root / "run", root / "baseline"
    score_folders(reference, baseline_outputs, baseline_dir, config, progress=False)
    score_folders(reference, outputs, run_dir, config, progress=False)
    return ReportRun(reference, run_dir, baseline_dir)


@pytest.fixture(scope="module")
def report_run(tmp_path_factory: pytest.TempPathFactory) -> ReportRun:
    return build_report_run(tmp_path_factory.mktemp("report-run"))


@pytest.fixture(scope="module")
def report_html(report_run: ReportRun) -> str:
    path = render_run_report(report_run.run_dir)
    assert path == report_run.run_dir / "report.html"
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def baseline_html(report_run: ReportRun, tmp_path_factory: pytest.TempPathFactory) -> str:
    output = tmp_path_factory.mktemp("with-baseline") / "report.html"
    render_run_report(report_run.run_dir, baseline=report_run.baseline_dir, output=output, worst=3)
    return output.read_text(encoding="utf-8")


def test_report_has_every_section(report_html: str) -> None:
    for section in SECTION_IDS:
        assert f'<section id="{section}"' in report_html
    assert 'id="baseline"' not in report_html
    assert "(8 per metric)" in report_html
    for metric in METRIC_NAMES:
        assert f'id="worst-{metric}"' in report_html


def test_untrusted_file_names_are_escaped(report_html: str, baseline_html: str) -> None:
    for html in (report_html, baseline_html):
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "<img src=x onerror" not in html
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
        assert "<script>alert" not in html
        assert "onerror=" not in html.replace("&lt;img src=x onerror=alert(1)&gt;", "")
        tags = parse_tags(html)
        assert not [(tag, name) for tag, attrs in tags for name, _ in attrs if name.startswith("on")]
        script_types = [dict(attrs).get("type") for tag, attrs in tags if tag == "script"]
        assert script_types.count(None) == 1, "one executable script (its hash is in the CSP)"
        assert set(script_types) <= {None, "application/gzip"}, "other scripts are data blocks"


def test_report_is_self_contained(report_html: str, baseline_html: str) -> None:
    for html in (report_html, baseline_html):
        assert "http://" not in html and "https://" not in html
        sources = [
            value or ""
            for tag, attrs in parse_tags(html)
            if tag in ("img", "script", "link", "iframe", "source", "embed", "object")
            for name, value in attrs
            if name in ("src", "href", "data")
        ]
        assert sources, "the report has pictures"
        assert all(s.startswith("data:") for s in sources), sources
        assert "<style>" in html and 'rel="stylesheet"' not in html
        assert "Content-Security-Policy" in html


def test_report_lists_failures_missing_and_extra(report_html: str) -> None:
    failures = report_html.split('<section id="failures"', 1)[1].split("</section>", 1)[0]
    assert "b/camera" in failures and "camera.png" in failures
    files = report_html.split('<section id="files"', 1)[1].split("</section>", 1)[0]
    assert "a/brick" in files
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in files
    assert "file://" in files


def test_report_lists_references_a_duplicate_key_left_unscored_and_the_pairing_hints(tmp_path: Path) -> None:
    crop = real_image("camera.png")[:48, :48]
    reference, outputs = tmp_path / "ref", tmp_path / "out"
    for stem in ("01", "02", "03", "04", "05"):
        _save(reference / f"{stem}.png", crop)
    for name in ("01.png", "01.jpg", "02_SR.png", "03_SR.png", "04_SR.png", "05.png"):
        _save(outputs / name, degrade(crop, "noise"))
    run_dir = tmp_path / "run"
    scored = score_folders(
        reference, outputs, run_dir, ScoreConfig(metrics="psnr", scheduler="sync"), progress=False
    )
    html = render_run_report(run_dir).read_text(encoding="utf-8")

    header = html.split('<section id="header"', 1)[1].split("</section>", 1)[0]
    assert "references with a duplicate key" in header
    (hint,) = scored.manifest["hints"]
    assert "add --output-suffix _SR" in hint and f"hint: {escape(hint)}" in header
    files = html.split('<section id="files"', 1)[1].split("</section>", 1)[0]
    listing = files.split('id="files-unscored-duplicates"', 1)[1].split("<h3", 1)[0]
    assert "References not scored: key claimed by two or more files" in files
    (duplicate,) = scored.manifest["duplicates"]
    assert str(escape(duplicate_message(duplicate))) in listing
    assert f"for reference {reference / '01.png'}" in duplicate_message(duplicate)
    assert "file://" in listing and "(1)" in files.split('id="files-unscored-duplicates"', 1)[1][:80]


@pytest.fixture(scope="module")
def report_data(report_run: ReportRun) -> ReportData:
    return build_report(report_run.run_dir, worst=3)


def cards_by_anchor(report: ReportData) -> dict[str, PairCard]:
    cards = report.cards + (report.baseline.cards if report.baseline else [])
    return {card.anchor: card for card in cards}


def test_worst_cases_follow_each_metric_direction(report_run: ReportRun, report_data: ReportData) -> None:
    report = report_data
    frame = load_results(report_run.run_dir)
    ok = frame[frame["status"] == "ok"]
    cards = cards_by_anchor(report)
    assert [s.metric for s in report.worst] == list(METRIC_NAMES)
    for section in report.worst:
        values = [case.value for case in section.cases]
        assert len(values) == 3
        higher = METRICS[section.metric].higher_is_better
        assert section.higher_is_better is higher
        assert values == sorted(values, reverse=not higher)
        column = ok[section.metric].astype(float)
        assert values[0] == pytest.approx(column.min() if higher else column.max())
        for case in section.cases:
            card = cards[case.anchor]
            assert card.key == case.key
            assert [p.slot for p in card.pictures.wholes] == ["reference", "output", "error", "ssim"]
            assert all(
                p.data_uri and p.data_uri.startswith("data:image/png;base64,") for p in card.pictures.wholes
            )


def test_each_pair_is_shown_once_and_the_lists_link_to_it(report_data: ReportData) -> None:
    cards = cards_by_anchor(report_data)
    listed = {case.key for section in report_data.worst for case in section.cases}
    assert sorted(card.key for card in cards.values()) == sorted(listed)
    repeated = [card for card in cards.values() if len(card.listings) > 1]
    assert repeated, "with 3 of 4 pairs per metric some pair is worst in several metrics"
    for card in repeated:
        for listing in card.listings:
            (case,) = [
                c
                for c in next(s for s in report_data.worst if s.metric == listing.metric).cases
                if c.key == card.key
            ]
            assert case.anchor == card.anchor and case.rank == listing.rank
        regions = [metric for region in card.pictures.regions for metric in region.metrics]
        assert sorted(regions) == sorted(listing.metric for listing in card.listings)

    html = render_report_data(report_data)
    targets = re.findall(r'href="#(pair-[0-9a-f]{16})"', html)
    assert set(targets) == set(cards)
    for anchor, card in cards.items():
        assert html.count(f'id="{anchor}"') == 1
        for listing in card.listings:
            assert f'href="#worst-{listing.metric}">{listing.metric} worst #{listing.rank}</a>' in html
        for picture in card.pictures.wholes:
            assert html.count(picture.data_uri) == 1, (card.key, picture.slot)


def many_pairs_run(root: Path) -> Path:
    """24 pairs of 160 px crops of six photos under four degradations, scored with PSNR, SSIM and MSE."""
    photos = ("astronaut.png", "coffee.png", "chelsea.png", "camera.png", "motorcycle_left.png", "brick.png")
    for photo in photos:
        image = real_image(photo)
        for kind in ("jpeg", "blur", "noise", "bicubic4"):
            crop = image[100:260, 120:280]
            _save(root / "ref" / kind / photo, crop)
            _save(root / "out" / kind / photo, degrade(crop, kind))
    config = ScoreConfig(metrics=("psnr", "ssim", "mse"), scheduler="sync", report=False)
    score_folders(root / "ref", root / "out", root / "run", config, progress=False)
    return root / "run"


def test_the_pictures_of_a_page_stay_within_the_stated_budget(tmp_path: Path) -> None:
    budget = 600_000
    report = build_report(many_pairs_run(tmp_path), worst=10, picture_budget=budget)
    html = render_report_data(report)
    cards = report.cards
    assert len(cards) >= 12
    pictures = re.findall(
        r'"(data:image/png;base64,[^"]+)"', "".join(html.split('<article class="pair"')[1:])
    )
    assert 0 < sum(map(len, pictures)) == report.pictures_size <= budget
    assert f"take at most {filters.mebibytes(budget)} of this page" in html
    assert len(html.encode("utf-8")) <= budget + 2**20  # pictures, then text and plots
    downscaled = [p for card in cards for p in card.pictures.wholes if p.data_uri and p.downscaled]
    assert downscaled and "160×160 px shown at" in html


def test_report_statistics_and_plots(report_data: ReportData) -> None:
    report = report_data
    assert report.header.counts["error"] == 1
    assert report.header.counts["missing"] == 1
    assert report.header.counts["extra"] == 1
    assert [s.metric for s in report.overall] == list(METRIC_NAMES)
    assert report.overall[0].ci_low <= report.overall[0].mean <= report.overall[0].ci_high
    assert {s.group for block in report.groups for s in block.summaries} == {"a", "b"}
    assert all(p.data_uri and p.data_uri.startswith("data:image/png;base64,") for p in report.plots)
    assert report.worst_k == 3


def test_baseline_section_shows_deltas_and_regressions(baseline_html: str, report_run: ReportRun) -> None:
    assert '<section id="baseline"' in baseline_html
    section = baseline_html.split('<section id="baseline"', 1)[1].split("</section>", 1)[0]
    assert "improvement" in section and "Wilcoxon" in section
    report = build_report(report_run.run_dir, baseline=report_run.baseline_dir, worst=3)
    assert report.baseline is not None
    psnr = next(s for s in report.baseline.worst if s.metric == "psnr")
    assert psnr.cases and psnr.cases[0].key == f"b/{HOSTILE_STEM}"
    assert psnr.cases[0].improvement < 0
    card = cards_by_anchor(report)[psnr.cases[0].anchor]
    assert card in report.baseline.cards and card not in report.cards
    assert [p.slot for p in card.pictures.wholes] == ["reference", "baseline", "output", "error", "ssim"]
    assert all(p.data_uri for p in card.pictures.wholes)
    regions = [r for r in card.pictures.regions if "against the baseline" in r.title]
    assert regions and "psnr" in regions[0].metrics
    for region in regions:
        assert [p.slot for p in region.crops][:3] == ["reference", "baseline", "output"]
    assert "&lt;img src=x onerror=alert(1)&gt;" in section


def test_pictures_of_missing_files_become_placeholders(tmp_path: Path) -> None:
    files = PairFiles(str(tmp_path / "nope.png"), str(tmp_path / "nada.png"))
    pictures = pair_pictures(files, [], ReadOptions(), PICTURE_BUDGET)
    assert len(pictures.wholes) == 4 and not pictures.regions and pictures.size == 0
    assert all(p.data_uri is None and "does not exist" in p.note for p in pictures.wholes)
    small = tmp_path / "small.png"
    _save(small, np.zeros((8, 8), dtype=np.uint8))
    pictures = pair_pictures(PairFiles(str(small), str(small)), [], ReadOptions(), PICTURE_BUDGET)
    shown = {p.slot: p for p in pictures.wholes}
    assert shown["reference"].data_uri and shown["error"].data_uri
    assert shown["ssim"].data_uri is None and "11 px" in shown["ssim"].note


def test_filters_format_without_template_arithmetic() -> None:
    assert filters.metric_value(28.41372, "psnr") == "28.41"
    assert filters.metric_value(0.812345, "ssim") == "0.8123"
    assert filters.metric_value(None, "ssim") == "–"
    assert filters.metric_value(float("nan"), "ssim") == "–"
    assert filters.metric_value(float("inf"), "psnr") == "∞"
    assert filters.signed(0.5, "psnr") == "+0.50"
    assert filters.signed(-0.5, "psnr") == "-0.50"
    assert filters.interval(1.0, 2.0, "psnr") == "[1.00, 2.00]"
    assert filters.count(10000) == "10,000"
    assert filters.duration(125) == "2 min 05 s"
    assert filters.pvalue(1e-9) == "<1e-4"
    assert filters.file_uri("/tmp/<a b>.png") == "file:///tmp/%3Ca%20b%3E.png"
    assert filters.verdict(None) == "no baseline"
    assert filters.short_hash("0123456789abcdef" * 4) == "0123456789ab" and filters.short_hash(None) == "–"


def test_nightly_report_links_each_suite(report_run: ReportRun, tmp_path: Path) -> None:
    from pipeline.comparison import compare_runs

    render_run_report(report_run.run_dir)
    comparison = compare_runs(report_run.baseline_dir, report_run.run_dir)
    output = tmp_path / "nightly" / "index.html"
    suites = [
        {
            "name": "sr <x4>",
            "run_dir": report_run.run_dir,
            "passed": comparison.passed,
            "comparison": comparison,
        },
        {
            "name": "baseline",
            "run_dir": report_run.baseline_dir,
            "passed": None,
            "comparison": None,
            "notes": ["note <b>x</b>"],
        },
        {"name": "broken", "run_dir": tmp_path / "absent", "passed": False, "comparison": None},
    ]
    html = render_nightly_report(suites, output).read_text(encoding="utf-8")
    assert "sr &lt;x4&gt;" in html and "sr <x4>" not in html
    assert "note &lt;b&gt;x&lt;/b&gt;" in html
    hrefs = re.findall(r'href="([^"#][^"]*report\.html)"', html)
    assert hrefs and all(not h.startswith(("/", "file:", "http")) for h in hrefs)
    assert (output.parent / hrefs[0]).resolve() == (report_run.run_dir / "report.html").resolve()
    assert "no baseline" in html and "REGRESSED" in html
    assert "http://" not in html and "https://" not in html


def test_report_names_the_lpips_backbone_and_its_sha256(tmp_path: Path, alex_weights: Path) -> None:
    weights = install(alex_weights, tmp_path / "weights" / "my-alexnet.pth")
    image = real_image("chelsea.png")[:64, :96]
    _save(tmp_path / "ref" / "cat.png", image)
    _save(tmp_path / "out" / "cat.png", degrade(image, "blur"))
    config = ScoreConfig(
        metrics=("psnr", "lpips"), scheduler="sync", report=False, lpips_weights=str(weights)
    )
    scored = score_folders(tmp_path / "ref", tmp_path / "out", tmp_path / "run", config, progress=False)
    digest = sha256_of(weights)
    written = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    assert written["lpips_backbone"] == str(weights) and written["lpips_backbone_sha256"] == digest
    assert scored.manifest["config_hash"] == config.value_hash(digest)
    html = render_run_report(tmp_path / "run").read_text(encoding="utf-8")
    (row,) = re.findall(r"<dt>LPIPS backbone</dt><dd[^>]*>(.*?)</dd>", html, flags=re.S)
    assert str(weights) in row and f"(sha256 {digest[:12]})" in row and f'title="sha256 {digest}"' in row


def test_report_without_lpips_has_no_backbone_line(report_html: str) -> None:
    assert "LPIPS backbone" not in report_html


def test_cli_report_command(report_run: ReportRun, tmp_path: Path) -> None:
    output = tmp_path / "cli-report.html"
    result = CliRunner().invoke(app, ["report", str(report_run.run_dir), "-o", str(output), "--worst", "2"])
    assert result.exit_code == 0, result.output
    assert str(output) in result.output
    assert '<section id="worst"' in output.read_text(encoding="utf-8")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "no-such-run")])
    assert result.exit_code != 0
    assert "Traceback" not in result.output


# Pictures only of the files a run scored; a forced comparison is marked


@pytest.fixture
def regressed_runs(tmp_path: Path) -> tuple[ReportRun, Path]:
    """Three RGB photo crops: the baseline's outputs bicubic x2, the candidate's noisy (worse on every pair);
    both runs scored with the default convention. Returns the runs and the baseline's output folder."""
    reference, baseline_out, candidate_out = tmp_path / "ref", tmp_path / "out-baseline", tmp_path / "out"
    for name in ("astronaut.png", "coffee.png", "chelsea.png"):
        image = real_image(name)[:96, :96]
        _save(reference / name, image)
        _save(baseline_out / name, degrade(image, "bicubic2"))
        _save(candidate_out / name, degrade(image, "noise"))
    config = ScoreConfig(metrics=("psnr", "ssim"), scheduler="sync", report=False)
    score_folders(reference, baseline_out, tmp_path / "baseline", config, progress=False)
    score_folders(reference, candidate_out, tmp_path / "run", config, progress=False)
    return ReportRun(reference, tmp_path / "run", tmp_path / "baseline"), baseline_out


def _baseline_section(html: str) -> str:
    return html.split('<section id="baseline"', 1)[1].split("</section>", 1)[0]


def test_regression_pictures_only_of_the_files_the_baseline_scored(regressed_runs, tmp_path: Path) -> None:
    runs, baseline_out = regressed_runs
    regenerated = baseline_out / "astronaut.png"
    _save(regenerated, np.full((96, 96, 3), (200, 40, 90), dtype=np.uint8))  # today's file, same path
    (baseline_out / "coffee.png").unlink()
    unchecked = PairFiles(
        str(runs.reference / "astronaut.png"), str(runs.run_dir.parent / "out/astronaut.png"),
        baseline_out=str(regenerated),
    )  # fmt: skip
    todays_picture = pair_pictures(unchecked, [], ReadOptions(), PICTURE_BUDGET).wholes[1].data_uri
    assert todays_picture and todays_picture.startswith("data:image/png;base64,")

    output = tmp_path / "with-baseline.html"
    section = _baseline_section(
        render_run_report(runs.run_dir, baseline=runs.baseline_dir, output=output).read_text()
    )
    assert "no picture: file changed since that run (sha256 differs)" in section
    assert "no picture: file no longer exists" in section
    assert todays_picture not in section

    report = build_report(runs.run_dir, baseline=runs.baseline_dir)
    cards = {card.key: card for card in report.baseline.cards}
    assert set(cards) == {"astronaut", "coffee", "chelsea"}
    for key, note in (("astronaut", CHANGED_NOTE), ("coffee", GONE_NOTE)):
        wholes = {p.slot: p for p in cards[key].pictures.wholes}
        assert wholes["baseline"].data_uri is None and note in wholes["baseline"].note
        assert all(wholes[slot].data_uri for slot in ("reference", "output", "error", "ssim")), key
        crops = [p.slot for region in cards[key].pictures.regions for p in region.crops]
        assert crops and "baseline" not in crops
    assert all(p.data_uri for p in cards["chelsea"].pictures.wholes)


def test_worst_case_pictures_only_of_the_files_the_run_scored(regressed_runs) -> None:
    runs, _ = regressed_runs
    row = load_results(runs.run_dir).set_index("key").loc["chelsea"]
    files = PairFiles(row.ref_path, row.out_path, row.ref_sha256, row.out_sha256)
    intact = pair_pictures(files, [], ReadOptions(), PICTURE_BUDGET).wholes
    assert all(p.data_uri for p in intact)
    _save(Path(row.out_path), np.zeros((96, 96, 3), dtype=np.uint8))
    changed = pair_pictures(files, [], ReadOptions(), PICTURE_BUDGET).wholes
    assert changed[0].data_uri == intact[0].data_uri  # the reference did not change
    assert all(p.data_uri is None and CHANGED_NOTE in p.note for p in changed[1:])
    report = build_report(runs.run_dir)
    chelsea = next(card for card in report.cards if card.key == "chelsea")
    assert [p.data_uri is None for p in chelsea.pictures.wholes] == [False, True, True, True]
    assert not chelsea.pictures.regions


def test_a_forced_baseline_section_is_marked(regressed_runs, tmp_path: Path) -> None:
    runs, baseline_out = regressed_runs
    paper = tmp_path / "paper"
    config = ScoreConfig(
        metrics=("psnr", "ssim"), convention="sr-paper", scale=2, scheduler="sync", report=False
    )
    score_folders(runs.reference, baseline_out, paper, config, progress=False)
    with pytest.raises(NotComparableError, match=r"convention sr-paper vs default; crop 2 vs 0\. "):
        render_run_report(runs.run_dir, baseline=paper, output=tmp_path / "refused.html")
    assert not (tmp_path / "refused.html").exists()
    html = render_run_report(
        runs.run_dir, baseline=paper, output=tmp_path / "forced.html", force=True
    ).read_text()
    section = _baseline_section(html)
    assert '<span class="verdict bad">FORCED</span>' in section
    assert "not comparable: convention sr-paper vs default; crop 2 vs 0." in " ".join(section.split())
    plain = _baseline_section(
        render_run_report(
            runs.run_dir, baseline=runs.baseline_dir, output=tmp_path / "plain.html"
        ).read_text()
    )
    assert "FORCED" not in plain

    refused = CliRunner().invoke(
        app, ["report", str(runs.run_dir), "--baseline", str(paper), "-o", str(tmp_path / "c.html")]
    )
    assert (
        refused.exit_code == 2
        and "Runs are not comparable" in refused.output
        and "Traceback" not in refused.output
    )
    forced = CliRunner().invoke(
        app,
        ["report", str(runs.run_dir), "--baseline", str(paper), "-o", str(tmp_path / "c.html"), "--force"],
    )
    assert forced.exit_code == 0, forced.output

"""The report in headless Chromium, opened from disk (nothing is served): sections, pictures, no errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from test_html import HOSTILE_STEM, SECTION_IDS, ReportRun, build_report_run

from pipeline.html import render_run_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 768}
CSP_LISTENER = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.cspViolations.push(event.violatedDirective + " " + event.blockedURI);
});
"""
SCREENSHOT_COPY = Path(__file__).resolve().parent.parent / "reports" / "report-screenshot.png"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium driven by playwright; skips when either is missing or cannot start."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    try:
        manager = sync_api.sync_playwright().start()
    except Exception as exc:
        pytest.skip(f"playwright cannot start: {exc}")
    try:
        chromium = manager.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    except Exception as exc:
        manager.stop()
        pytest.skip(f"playwright cannot launch {CHROMIUM}: {exc}")
    yield chromium
    chromium.close()
    manager.stop()


@pytest.fixture(scope="module")
def browser_run(tmp_path_factory: pytest.TempPathFactory) -> ReportRun:
    return build_report_run(tmp_path_factory.mktemp("browser-run"))


def open_report(browser, path: Path) -> tuple[object, list[str], list[str]]:
    """Open a report file; returns the page, problems (console errors, page errors, dialogs) and requests."""
    page = browser.new_page(viewport=VIEWPORT)
    problems: list[str] = []
    requests: list[str] = []
    page.on(
        "console",
        lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None,
    )
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def on_dialog(dialog) -> None:
        problems.append(f"dialog {dialog.type}: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("request", lambda request: requests.append(request.url))
    page.add_init_script(CSP_LISTENER)
    page.goto(path.resolve().as_uri(), wait_until="load")
    page.wait_for_timeout(300)
    return page, problems, requests


def check_page(page, problems: list[str], requests: list[str], sections: tuple[str, ...]) -> None:
    for section in sections:
        locator = page.locator(f"section#{section}")
        assert locator.count() == 1, section
        assert locator.is_visible(), section
    images = page.evaluate("() => Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
    assert images, "the report has pictures"
    broken = [alt for alt, complete, width in images if not complete or width <= 0]
    assert not broken, f"pictures that do not decode: {broken}"
    assert not problems, problems
    assert page.evaluate("() => window.cspViolations") == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


def test_report_in_chromium(browser, browser_run: ReportRun, tmp_path: Path) -> None:
    path = render_run_report(browser_run.run_dir, baseline=browser_run.baseline_dir)
    page, problems, requests = open_report(browser, path)
    check_page(page, problems, requests, (*SECTION_IDS, "baseline"))
    assert page.get_by_text(HOSTILE_STEM, exact=False).count() > 0, "the hostile name shows as text"
    assert page.evaluate("() => document.querySelectorAll('img[onerror], [onerror]').length") == 0
    header = page.locator("#summary table.sortable th").nth(2)
    header.click()
    assert header.get_attribute("aria-sort") == "ascending"
    screenshot = tmp_path / "report-screenshot.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    SCREENSHOT_COPY.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, SCREENSHOT_COPY)
    page.close()
    assert not problems, problems


def test_plain_report_in_chromium(browser, browser_run: ReportRun, tmp_path: Path) -> None:
    path = render_run_report(browser_run.run_dir, output=tmp_path / "plain.html", worst=2)
    page, problems, requests = open_report(browser, path)
    check_page(page, problems, requests, SECTION_IDS)
    assert page.locator("section#baseline").count() == 0
    page.close()


def overlay_state(page, anchor: str) -> dict:
    """Whether the figure `anchor` is the full-size overlay, and its picture's natural and shown size."""
    return page.evaluate(
        """(anchor) => {
            const figure = document.getElementById(anchor);
            const image = figure.querySelector("img");
            const box = image.getBoundingClientRect();
            return {fixed: getComputedStyle(figure).position === "fixed", natural: image.naturalWidth,
                    shown: image.clientWidth, visible: box.width > 0 && box.top < innerHeight};
        }""",
        anchor,
    )


def test_crops_open_their_whole_picture_full_size(browser, browser_run: ReportRun, tmp_path: Path) -> None:
    path = render_run_report(browser_run.run_dir, output=tmp_path / "pictures.html", worst=2)
    page, problems, _ = open_report(browser, path)
    crops = page.evaluate(
        """() => Array.from(document.querySelectorAll(".crop img")).map(i => [i.complete, i.naturalWidth,
            getComputedStyle(i).imageRendering, i.clientWidth])"""
    )
    assert crops and all(complete and natural > 0 for complete, natural, _, _ in crops)
    assert all(rendering == "pixelated" and shown == 3 * natural for _, natural, rendering, shown in crops)

    crop = page.locator("article.pair .crop a").first
    target = crop.get_attribute("href").lstrip("#")
    assert not overlay_state(page, target)["fixed"]
    crop.click()
    state = overlay_state(page, target)
    assert state["fixed"] and state["visible"] and state["shown"] == state["natural"] > 0
    page.locator(f"#{target} a.close").click()
    assert not overlay_state(page, target)["fixed"]
    assert page.evaluate("() => location.hash") == "#" + target.rsplit("-", 1)[0]

    whole = page.locator("article.pair .whole a.open").nth(1)
    opened = whole.get_attribute("href").lstrip("#")
    whole.click()
    assert overlay_state(page, opened)["fixed"]
    page.close()
    assert not problems, problems


def test_with_a_baseline_the_verdict_and_deltas_come_before_the_regressions(
    browser, browser_run: ReportRun, tmp_path: Path
) -> None:
    path = render_run_report(
        browser_run.run_dir, baseline=browser_run.baseline_dir, output=tmp_path / "b.html"
    )
    page, problems, requests = open_report(browser, path)
    check_page(page, problems, requests, (*SECTION_IDS, "baseline"))
    tops = page.evaluate(
        """() => Object.fromEntries(["verdict", "deltas", "regressions", "header", "worst"].map(
            id => [id, document.getElementById(id).getBoundingClientRect().top]))"""
    )
    assert tops["verdict"] < tops["deltas"] < tops["regressions"] < tops["header"] < tops["worst"]
    assert tops["verdict"] < VIEWPORT["height"], "the verdict is on the first screen"
    first_card = page.locator("#baseline article.pair").first
    assert first_card.locator(".crop img").count() > 0
    labels = first_card.locator(".region").first.locator("figcaption").all_inner_texts()
    assert labels[:3] == ["reference", "baseline output", "output"]
    page.close()

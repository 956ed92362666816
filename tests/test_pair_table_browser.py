"""The table of all pairs in headless Chromium: sorting (nulls last), group filter, key search, rows drawn
on demand, links to pictures, under the report's CSP; and at 100,000 pairs, its load time and heap printed."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path

import pytest
from test_html_browser import browser, open_report  # noqa: F401  (the fixture is used by name)
from test_pair_table import HOSTILE_KEY, embedded_data, load_bench_report, write_table_run

from pipeline.html import render_run_report
from pipeline.html.pair_table import pair_anchor

pytestmark = pytest.mark.slow

ROW_BOUND = 100  # rows in the DOM at most: the rows in view and a margin, never the whole table
SHOWN_ROWS_SCRIPT = """() => Array.from(document.querySelectorAll('#pairs tbody tr[aria-rowindex]'))
    .map(row => [Number(row.getAttribute('aria-rowindex')), Array.from(row.cells, c => c.textContent)])"""
REMOVE_ELEMENT_SCRIPT = "id => document.getElementById(id).remove()"


def expected_order(values: list, descending: bool = False) -> list[int]:
    """Rows ordered by a stored column: empty values last either way, ties in key (row) order."""
    numbers = [{None: math.nan, "inf": math.inf, "-inf": -math.inf}.get(v, v) for v in values]
    sign = -1 if descending else 1
    empty = [math.isnan(number) for number in numbers]
    return sorted(range(len(numbers)), key=lambda r: (empty[r], 0 if empty[r] else sign * numbers[r], r))


class TablePage:
    """A report page whose table of all pairs has been drawn, and what the tests read or do on it."""

    def __init__(self, page, data: dict) -> None:
        self.page = page
        self.data = data
        load_bench_report().wait_for_table(page)

    def shown(self) -> list[tuple[int, list[str]]]:
        """(position from 1, cell texts) of the rows in the DOM."""
        return [(index - 1, cells) for index, cells in self.page.evaluate(SHOWN_ROWS_SCRIPT)]

    def shown_keys(self) -> list[str]:
        return [cells[0] for _, cells in self.shown()]

    def count_text(self) -> str:
        return self.page.locator("#pairs-shown").text_content()

    def sort(self, column: str) -> None:
        self.page.locator(f'#pairs th[data-column="{column}"] button').click()

    def scroll_to(self, fraction: float) -> None:
        self.page.locator("#pairs-scroll").evaluate(f"e => {{ e.scrollTop = {fraction} * e.scrollHeight; }}")
        self.page.wait_for_timeout(150)

    def rows_in_dom(self) -> int:
        return self.page.locator("#pairs tbody tr").count()

    def keys_in(self, rows: list[int]) -> list[str]:
        return [self.data["keys"][row] for row in rows]


@pytest.fixture(scope="module")
def table_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = write_table_run(tmp_path_factory.mktemp("table-browser"), pairs=2_000)
    return render_run_report(run_dir, output=run_dir / "table.html", worst=2)


@pytest.fixture
def table_page(browser, table_report: Path):  # noqa: F811
    page, problems, requests = open_report(browser, table_report)
    yield TablePage(page, embedded_data(table_report.read_text(encoding="utf-8")))
    page.close()
    assert not problems, problems
    assert all(url.startswith(("file:", "data:")) for url in requests), requests


def test_sorts_any_column_numbers_numerically_and_empty_values_last(table_page: TablePage) -> None:
    data = table_page.data
    assert table_page.count_text() == "2,000 of 2,000 pairs shown"
    assert table_page.shown_keys()[:20] == data["keys"][:20], "key order first"
    ssim = data["metrics"][1]["values"]
    for descending in (False, True):
        table_page.sort("ssim")
        order = expected_order(ssim, descending)
        assert table_page.shown_keys()[:30] == table_page.keys_in(order[:30])
        table_page.scroll_to(1.0)
        positions = [position for position, _ in table_page.shown()]
        assert positions[-1] == len(order), "the last row is reachable"
        assert [cells[0] for _, cells in table_page.shown()][-1] == data["keys"][order[-1]]
        assert table_page.shown()[-1][1][3] == "–", "the empty value stays last"
        table_page.scroll_to(0.0)
    table_page.sort("group")
    groups = [cells[1] for _, cells in table_page.shown()]
    assert groups == sorted(groups) and groups[0] == data["groups"][0]


def test_filters_by_group_and_searches_keys(table_page: TablePage) -> None:
    data = table_page.data
    group = data["groups"].index("g03")
    in_group = [row for row, code in enumerate(data["group"]) if code == group]
    table_page.page.locator("#pairs-group").select_option(str(group))
    assert table_page.count_text() == f"{len(in_group):,} of 2,000 pairs shown"
    assert {cells[1] for _, cells in table_page.shown()} == {"g03"}
    table_page.page.locator("#pairs-search").fill("IMG001")
    matching = [row for row in in_group if "img001" in data["keys"][row]]
    assert table_page.shown_keys() == table_page.keys_in(matching)
    table_page.page.locator("#pairs-group").select_option("")
    everywhere = [key for key in data["keys"] if "img001" in key]
    assert table_page.count_text() == f"{len(everywhere):,} of 2,000 pairs shown"
    table_page.page.locator("#pairs-search").fill("no such key")
    assert table_page.count_text() == "0 of 2,000 pairs shown"
    assert table_page.page.locator("#pairs td.empty").text_content() == "No pair matches."


def test_only_rows_in_view_are_in_the_dom(table_page: TablePage) -> None:
    for fraction in (0.0, 0.5, 1.0):
        table_page.scroll_to(fraction)
        assert 10 < table_page.rows_in_dom() <= ROW_BOUND
    middle = [position for position, _ in table_page.shown()]
    assert middle == list(range(middle[0], middle[0] + len(middle))) and middle[0] > 1900


def test_hostile_key_is_text_and_pictured_keys_link_to_their_pictures(table_page: TablePage) -> None:
    page = table_page.page
    page.locator("#pairs-search").fill("</script>")
    assert table_page.shown_keys() == [HOSTILE_KEY]
    assert page.locator("#pairs tbody img").count() == 0
    row, anchor = next(iter(table_page.data["anchors"].items()))
    key = table_page.data["keys"][int(row)]
    assert anchor == pair_anchor(key)
    assert page.locator(f'[id="{anchor}"]').count() == 1  # the pair's card
    page.locator("#pairs-search").fill(key)
    link = page.locator(f'#pairs tbody a[href="#{anchor}"]')
    assert link.text_content() == key
    link.click()
    assert page.evaluate("() => location.hash") == f"#{anchor}"
    page.evaluate(REMOVE_ELEMENT_SCRIPT, anchor)
    page.locator("#pairs-search").dispatch_event("input")
    assert page.locator("#pairs tbody a").count() == 0, "no link while the page has no such anchor"


def test_hundred_thousand_pairs(browser, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    bench = load_bench_report()
    run_dir = bench.write_synthetic_run(tmp_path / "run", 100_000, 20, tmp_path, seed=1)
    started = time.perf_counter()
    report = render_run_report(run_dir)
    render_s = time.perf_counter() - started
    page, problems, _ = open_report(browser, report)
    table = TablePage(page, embedded_data(report.read_text(encoding="utf-8")))
    figures = bench.page_figures(page, sort_column="psnr")
    order = expected_order(table.data["metrics"][0]["values"])
    assert table.shown_keys()[:30] == table.keys_in(order[:30])
    assert table.rows_in_dom() <= ROW_BOUND
    table.scroll_to(0.5)
    assert table.rows_in_dom() <= ROW_BOUND
    page.locator("#pairs-group").select_option(str(table.data["groups"].index("g07")))
    assert table.count_text() == "5,000 of 100,000 pairs shown"
    page.locator("#pairs-search").fill("IMG1")
    expected = [key for key in table.keys_in(order) if key.startswith("g07/") and "img1" in key]
    assert table.count_text() == f"{len(expected):,} of 100,000 pairs shown"
    shown = table.shown_keys()
    assert shown == expected[: len(shown)] and len(shown) <= ROW_BOUND < len(expected)
    page.close()
    assert not problems, problems
    size = report.stat().st_size
    with capsys.disabled():
        print(f"\n100,000 pairs: report {size / 1e6:.2f} MB, render {render_s:.1f} s; {figures.line()}")


def test_bench_report_prints_size_render_load_and_heap(
    browser,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    load_bench_report().bench_size(tmp_path, 300, 4, browser)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("synthetic runs of 300 pairs in 4 groups")
    assert [line.split(":")[0].strip() for line in lines[1::2]] == ["run", "run + baseline"]
    assert all("MB (" in line and "table data" in line and "render" in line for line in lines[1::2])
    assert all("table ready" in line and "JS heap" in line for line in lines[2::2])
    assert all(re.search(r" (\d+)/\1 pictures", line) for line in lines[2::2]), "every picture decodes"

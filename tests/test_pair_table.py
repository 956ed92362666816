"""The report's table of all pairs: its data (keys, indexed texts, rounded values, anchors), how the page
embeds it, and the script and CSP that go with it. The browser side is in test_pair_table_browser.py."""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import math
import re
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_html import parse_tags

from pipeline.html import filters, render_run_report
from pipeline.html.filters import metric_digits
from pipeline.html.model import build_report, pictured_keys
from pipeline.html.pair_table import (
    build_pair_table,
    decode_payload,
    encode_payload,
    json_number,
    pair_anchor,
)
from pipeline.results import load_results

BENCH_REPORT = Path(__file__).resolve().parents[1] / "scripts" / "bench_report.py"
HOSTILE_KEY = "g01/</script><img src=x onerror=alert(1)>"
METRIC_NAMES = ["psnr", "ssim", "ms_ssim", "lpips", "mse"]


@functools.cache
def load_bench_report() -> ModuleType:
    """scripts/bench_report.py as a module: its synthetic runs and its Chromium measurements."""
    spec = importlib.util.spec_from_file_location("bench_report", BENCH_REPORT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_table_run(root: Path, pairs: int, groups: int = 7) -> Path:
    """A synthetic run (scripts/bench_report.py) with a hostile key, warnings, an infinite and a null value.

    Its error rows (one in 97) have no metric values."""
    bench = load_bench_report()
    files = bench.synthetic_images(root / "images", bench.IMAGE_FILES, seed=0)
    rows = bench.synthetic_rows(pairs, groups, files, "table-run", seed=3)
    rows[1]["key"] = HOSTILE_KEY
    rows[2]["warnings"] = ["output clipped to [0, 255]"]
    rows[3]["warnings"] = ["output clipped to [0, 255]", "size mismatch: cropped"]
    rows[4]["psnr"] = math.inf
    rows[5]["ssim"] = None
    run_dir = root / "run"
    bench.write_run(run_dir, rows, "table-run", root, groups)
    return run_dir


@pytest.fixture(scope="module")
def table_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_table_run(tmp_path_factory.mktemp("table-run"), pairs=300)


@pytest.fixture(scope="module")
def table_html(table_run: Path) -> str:
    return render_run_report(table_run, output=table_run / "table.html", worst=3).read_text(encoding="utf-8")


def embedded_data(html: str) -> dict:
    """The decoded data block of a report page."""
    (payload,) = re.findall(r'<script type="application/gzip" id="pairs-data">([^<]*)</script>', html)
    return decode_payload(payload)


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "key": ["b/2", "a/1", "c/3", "a/0"],
            "group": ["b", "a", "c", "a"],
            "psnr": [31.256, math.inf, None, 28.0],
            "mse": [1234.567, 0.0, None, 0.000123456],
            "status": ["ok", "ok", "error", "ok"],
            "warnings": [["clipped"], None, [], ["clipped", "cropped"]],
        }
    )


def test_rows_sorted_by_key_with_texts_stored_once() -> None:
    data = build_pair_table(frame(), ["psnr", "mse"]).data
    assert data["keys"] == ["a/0", "a/1", "b/2", "c/3"]
    assert data["groups"] == ["a", "b", "c"] and data["group"] == [0, 0, 1, 2]
    assert data["statuses"] == ["error", "ok"] and data["status"] == [1, 1, 1, 0]
    assert data["warnings"] == ["", "clipped", "clipped; cropped"] and data["warning"] == [2, 0, 1, 0]
    assert data["anchors"] == {}


def test_values_rounded_as_shown_null_when_absent_infinity_as_text() -> None:
    table = build_pair_table(frame(), ["psnr", "mse"])
    psnr, mse = table.data["metrics"]
    assert psnr == {"name": "psnr", "digits": 2, "values": [28.0, "inf", 31.26, None]}
    assert mse == {"name": "mse", "digits": None, "values": [0.0001235, 0.0, 1235.0, None]}
    assert table.columns == ["key", "group", "psnr", "mse", "status", "warnings"]
    assert metric_digits("unknown") is None


@given(
    value=st.floats(allow_nan=True, allow_infinity=True, width=64),
    metric=st.sampled_from([*METRIC_NAMES, "unregistered"]),
)
def test_stored_value_shows_as_the_report_shows_the_value(value: float, metric: str) -> None:
    stored = json_number(value, metric_digits(metric))
    shown = {None: math.nan, "inf": math.inf, "-inf": -math.inf}.get(stored, stored)
    assert filters.metric_value(shown, metric) == filters.metric_value(value, metric)


def test_anchor_is_a_stable_valid_id_of_any_key() -> None:
    assert pair_anchor("a/0001") == "pair-" + hashlib.sha256(b"a/0001").hexdigest()[:16]
    keys = [f"g{i % 7}/img{i:05d}" for i in range(20_000)] + [HOSTILE_KEY, "a b/ü", "bad\udcff"]
    anchors = [pair_anchor(key) for key in keys]
    assert len(set(anchors)) == len(keys)
    assert all(re.fullmatch(r"pair-[0-9a-f]{16}", anchor) for anchor in anchors)


def test_anchors_only_for_pictured_keys() -> None:
    data = build_pair_table(frame(), ["psnr"], pictured=["c/3", "a/1", "not/a/row"]).data
    assert data["anchors"] == {"1": pair_anchor("a/1"), "3": pair_anchor("c/3")}


def test_payload_is_deterministic_base64_that_round_trips() -> None:
    data = build_pair_table(frame(), ["psnr", "mse"], pictured=["a/1"]).data
    payload = encode_payload(data)
    assert payload == encode_payload(data), "no timestamp in the gzip header"
    assert re.fullmatch(r"[A-Za-z0-9+/]+=*", payload), "nothing a page could parse as markup"
    assert decode_payload(payload) == data
    with pytest.raises(ValueError):
        encode_payload({"values": [math.nan]})


def test_report_embeds_every_pair_with_links_for_pictured_keys(table_run: Path, table_html: str) -> None:
    data = embedded_data(table_html)
    results = load_results(table_run)
    assert data["keys"] == results["key"].tolist()
    assert [metric["name"] for metric in data["metrics"]] == METRIC_NAMES
    psnr = dict(zip(data["keys"], data["metrics"][0]["values"], strict=True))
    for row in results.itertuples():
        assert psnr[row.key] == json_number(row.psnr, 2)
    assert "inf" in psnr.values() and None in data["metrics"][1]["values"]
    assert "output clipped to [0, 255]; size mismatch: cropped" in data["warnings"]
    pictured = pictured_keys(build_report(table_run, worst=3))
    assert pictured and {data["keys"][int(row)] for row in data["anchors"]} == pictured
    assert all(anchor == pair_anchor(data["keys"][int(row)]) for row, anchor in data["anchors"].items())


def test_report_section_and_its_script_are_allowed_by_the_csp(table_html: str) -> None:
    section = table_html.split('<section id="pairs"', 1)[1].split("</section>", 1)[0]
    assert 'All pairs <span class="muted">(300)</span>' in section
    headers = re.findall(r'<th scope="col" data-column="([^"]+)"', section)
    assert headers == ["key", "group", *METRIC_NAMES, "status", "warnings"]
    assert '<a href="#pairs">All pairs</a>' in table_html
    assert HOSTILE_KEY not in table_html
    tags = parse_tags(table_html)
    assert not [(tag, name) for tag, attrs in tags for name, _ in attrs if name.startswith("on")]
    (script,) = re.findall(r"<script>(.*?)</script>", table_html, re.S)
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    (policy,) = [dict(attrs)["content"] for tag, attrs in tags if dict(attrs).get("http-equiv")]
    assert f"script-src 'sha256-{digest}';" in policy
    assert "pairs-data" in script and "DecompressionStream" in script

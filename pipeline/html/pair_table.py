"""The report's table of every pair: its data, embedded once in the page as compact column arrays.

The page embeds `PairTable.data` as JSON, gzip-compressed and base64-encoded (`encode_payload`), in a data
block that its script (`pairs_table.js.j2`) decompresses with the browser's own `DecompressionStream`. The
script sorts, filters and searches these arrays and draws only the rows in view, so the page stays
responsive at 100,000 pairs. Layout of the data (rows sorted by key; repeated texts are stored once, in lists
of distinct, sorted strings, and rows hold indices into them):

    keys       [str]                     one per row
    groups     [str]                     distinct groups; `group` holds one index per row
    statuses   [str]                     distinct statuses; `status` holds one index per row
    warnings   [str]                     distinct "; "-joined warnings ("" first: none); `warning` per row
    metrics    [{name, digits, values}]  values rounded to what the report shows: `digits` decimals, or four
                                         significant digits when `digits` is null; null when absent,
                                         "inf" / "-inf" when infinite (JSON has no infinity)
    anchors    {row: id}                 rows whose pictures the page shows, by `pair_anchor(key)`
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline.html.filters import SIGNIFICANT_DIGITS, metric_digits

WARNING_SEPARATOR = "; "
GZIP_LEVEL = 6

JsonNumber = float | str | None


@dataclass
class PairTable:
    """Every pair of a run for the report's "All pairs" table.

    Attributes:
        count: number of pairs (rows).
        metrics: metric columns, in the report's order.
        data: the JSON-ready column arrays described in the module docstring.
    """

    count: int
    metrics: list[str]
    data: dict[str, Any]

    @property
    def columns(self) -> list[str]:
        """Column names in display order: key, group, every metric, status, warnings."""
        return ["key", "group", *self.metrics, "status", "warnings"]

    @property
    def payload(self) -> str:
        """`data` as the page embeds it (`encode_payload`)."""
        return encode_payload(self.data)


def encode_payload(data: dict[str, Any]) -> str:
    """JSON, gzip-compressed without a timestamp (the same data gives the same bytes), then base64.

    Example:
        >>> decode_payload(encode_payload({"keys": ["a/1"]}))
        {'keys': ['a/1']}
    """
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    compressed = gzip.compress(text.encode("ascii"), compresslevel=GZIP_LEVEL, mtime=0)
    return base64.b64encode(compressed).decode("ascii")


def decode_payload(payload: str) -> dict[str, Any]:
    """The data of an embedded payload (`encode_payload`), e.g. to read a report's table back."""
    return json.loads(gzip.decompress(base64.b64decode(payload)))


def pair_anchor(key: str) -> str:
    """The HTML id of a pair's pictures: `pair-` and 16 hex digits of the SHA-256 of its key.

    Any key (slashes, spaces, markup, undecodable bytes) gives a valid id; the page's table links a key to
    it when an element with this id exists.

    Example:
        >>> pair_anchor("a/0001")
        'pair-bf05dbc5adc3b0ae'
    """
    return "pair-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def json_number(value: float | None, digits: int | None) -> JsonNumber:
    """A metric value as the table stores it: rounded to the digits shown, None when absent, "inf"/"-inf".

    Example:
        >>> json_number(28.4137, 2), json_number(1234.567, None), json_number(float("nan"), 4)
        (28.41, 1235.0, None)
        >>> json_number(float("-inf"), 2)
        '-inf'
    """
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    rounded = float(f"{value:.{SIGNIFICANT_DIGITS}g}") if digits is None else round(value, digits)
    return rounded if math.isfinite(rounded) else value


def warning_text(value: Any) -> str:
    """A row's warnings as one text ("" for none); `value` is a list, an array or None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return WARNING_SEPARATOR.join(str(warning) for warning in value)


def distinct_codes(values: pd.Series) -> tuple[list[int], list[str]]:
    """(index per row, distinct sorted strings) of a text column; missing values become ""."""
    codes, uniques = pd.factorize(values.fillna("").astype(str), sort=True)
    return codes.tolist(), [str(text) for text in uniques]


def metric_column(values: pd.Series, metric: str) -> dict[str, Any]:
    """One metric's entry of `data["metrics"]`."""
    digits = metric_digits(metric)
    numbers = pd.to_numeric(values, errors="coerce").astype("float64")
    return {"name": metric, "digits": digits, "values": [json_number(v, digits) for v in numbers.tolist()]}


def build_pair_table(frame: pd.DataFrame, metrics: list[str], pictured: Iterable[str] = ()) -> PairTable:
    """The "All pairs" table of a results frame (`pipeline.results.load_results`).

    Args:
        frame: one row per key, the columns of `pipeline.results.SCHEMA` (any row order).
        metrics: metric columns to show, in order.
        pictured: keys whose pictures the page shows under `pair_anchor(key)`.

    Returns:
        The table, rows sorted by key.

    Example:
        >>> rows = pd.DataFrame({"key": ["b", "a"], "group": ["g", "g"], "psnr": [30.123, float("inf")],
        ...                      "status": ["ok", "ok"], "warnings": [None, ["clipped"]]})
        >>> table = build_pair_table(rows, ["psnr"], pictured=["b"])
        >>> table.data["keys"], table.data["metrics"][0]["values"], table.data["warning"]
        (['a', 'b'], ['inf', 30.12], [1, 0])
        >>> table.data["anchors"]
        {'1': 'pair-3e23e8160039594a'}
    """
    rows = frame.sort_values("key", kind="stable")
    keys = rows["key"].astype(str).tolist()
    group, groups = distinct_codes(rows["group"])
    status, statuses = distinct_codes(rows["status"])
    warning, warnings = distinct_codes(rows["warnings"].map(warning_text))
    pictured = set(pictured)
    data = {
        "keys": keys,
        "groups": groups,
        "group": group,
        "statuses": statuses,
        "status": status,
        "warnings": warnings,
        "warning": warning,
        "metrics": [metric_column(rows[metric], metric) for metric in metrics],
        "anchors": {str(row): pair_anchor(key) for row, key in enumerate(keys) if key in pictured},
    }
    return PairTable(count=len(keys), metrics=list(metrics), data=data)

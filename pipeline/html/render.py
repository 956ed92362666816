"""Rendering stage of the report: dataclasses from `pipeline.html.model` -> one self-contained HTML file.

This module owns Jinja. Autoescape is on for every template: file names and error messages are untrusted.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from markupsafe import Markup

from pipeline.html.filters import FILTERS
from pipeline.html.model import NightlyData, ReportData
from pipeline.html.pair_table import pair_anchor
from pipeline.locations import Location, locate

if TYPE_CHECKING:
    import jinja2

RUN_TEMPLATE = "template.html.j2"
NIGHTLY_TEMPLATE = "nightly.html.j2"
SCRIPT_TEMPLATES = ("sortable.js.j2", "pairs_table.js.j2")


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The Jinja environment: templates from this package folder, autoescape on, strict undefined.

    Jinja is imported here, when the first page is rendered: a run without a report never needs it.
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )
    env.filters.update(FILTERS, pair_anchor=pair_anchor)
    return env


def _script() -> tuple[Markup, str]:
    """The inline script (sortable tables, the table of all pairs) and the CSP source allowing exactly it."""
    text = "\n".join(environment().get_template(name).render() for name in SCRIPT_TEMPLATES)
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return Markup(text), f"'sha256-{digest}'"


def content_security_policy(script_source: str) -> str:
    """No network, no plugins: images only as data URIs, inline CSS, and only our own script."""
    return (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src {script_source}; base-uri 'none'; form-action 'none'"
    )


def render_html(template: str, **context: object) -> str:
    """Render one page template with the shared script and its Content-Security-Policy."""
    script, source = _script()
    return (
        environment()
        .get_template(template)
        .render(script=script, csp=content_security_policy(source), **context)
    )


def write_html(html: str, output: Path | Location) -> Path | str:
    """Write the page whole (atomically on a local disk, one upload to a store); its path, or its URL."""
    target = locate(output)
    target.parent.make_dirs()
    target.write_text(html)
    return Path(target.path) if target.local else target.url


def render_report_data(report: ReportData) -> str:
    """The run report page as a string."""
    return render_html(RUN_TEMPLATE, report=report)


def render_nightly_data(nightly: NightlyData) -> str:
    """The nightly page as a string."""
    return render_html(NIGHTLY_TEMPLATE, nightly=nightly)

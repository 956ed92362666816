"""GitHub-flavoured Markdown pipe tables: pure functions shared by `iqa table` and the nightly job summary.

Example:
    >>> print(markdown_table(["run", "PSNR"], [[escape_markdown("sr_x4"), "**31.27**"]]))
    | run | PSNR |
    | :-- | --: |
    | sr\\_x4 | **31.27** |
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|#~])")


def escape_markdown(text: object) -> str:
    """`text` with Markdown's special characters backslash-escaped, so that it shows as written.

    Example:
        >>> escape_markdown("a|b_*c*")
        'a\\\\|b\\\\_\\\\*c\\\\*'
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """A pipe table of cells that are already Markdown; the first `left` columns left-aligned, the rest right.

    Raises:
        ValueError: a row whose length differs from the header's.
    """
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a row has {len(row)} cells, the header {len(headers)}: {list(row)}")
    rule = [":--" if index < left else "--:" for index in range(len(headers))]
    return "\n".join(f"| {' | '.join(cells)} |" for cells in [list(headers), rule, *rows])

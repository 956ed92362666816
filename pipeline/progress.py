"""The client's progress bar (tqdm): pairs done, pairs/s, ETA and failures so far; or nothing."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from tqdm import tqdm


class NullBar:
    """A bar that shows nothing (`--no-progress`)."""

    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **_: Any) -> None:
        pass


def progress_bar(total: int, enabled: bool, what: str = "scoring") -> AbstractContextManager[Any]:
    """A tqdm bar over `total` pairs on stderr, or a `NullBar`."""
    if not enabled:
        return nullcontext(NullBar())
    return tqdm(total=total, unit="pair", desc=what, dynamic_ncols=True)

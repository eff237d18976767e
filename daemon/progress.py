"""A progress bar driven by ``(done, total)`` callbacks, for long work whose total is learnt as it goes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm


@contextmanager
def progress_bar(desc: str, unit: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar (hidden when not ``enabled``) and the ``(done, total)`` callback that moves it. The bar is drawn
    at the first callback: work that fails before it starts (a video that cannot be read) prints its error
    alone, not after an empty bar ('0frame [00:00, ?frame/s]')."""
    bars: list[Any] = []  # the bar, once drawn

    def step(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(desc=desc, unit=unit, total=total, disable=not enabled))
        bar = bars[0]
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield step
    finally:
        for bar in bars:
            bar.close()

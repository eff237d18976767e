"""A progress bar driven by ``(done, total)`` callbacks, for long work whose total is learnt as it goes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm import tqdm


@contextmanager
def progress_bar(desc: str, unit: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar (hidden when not ``enabled``) and the ``(done, total)`` callback that moves it."""
    with tqdm(desc=desc, unit=unit, disable=not enabled) as bar:

        def step(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield step

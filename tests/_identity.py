"""Helpers shared by the identity tests: a counting id allocator and the bridge's job done by hand.

Import as ``from _identity import Counter, relay``.
"""

from __future__ import annotations

from collections.abc import Iterable

from daemon.identity import IdentityResolver, ProfileUpdate


class Counter:
    """Allocator for tests: 1, 2, 3, ... and how often it was called."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        return self.calls


def relay(updates: Iterable[ProfileUpdate | None], *to: IdentityResolver) -> None:
    """Hand ``updates`` to the other cameras' resolvers ``to`` (the bridge's job; None: nothing to hand)."""
    for u in updates:
        for r in to:
            if u is not None:
                r.ingest_remote(u)

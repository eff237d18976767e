"""Where a person can be: the camera adjacency graph with minimum and maximum travel times.

* ``min_travel(a, b)``: fewest seconds between a sighting on ``a`` and one on ``b``: the shortest path's sum of
  ``min_s`` (Dijkstra over the small graph; a direct edge is one path, and a route round it may be shorter),
  else 0 (no path: nothing known).
* ``overlapping(a, b)``: may one person be seen by both at the same time? An edge says so with ``min_s == 0``;
  cameras without an edge between them overlap only when ``allow_overlapping_views`` is set.
* ``in_window(a, b, dt)``: a direct edge joins them and ``min_s <= dt <= max_s`` (a plausible direct walk).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

from daemon.config import CameraEdge
from daemon.errors import ConfigError


class TravelModel:
    """Travel-time queries over an adjacency graph (empty graph: no constraint but no simultaneity)."""

    def __init__(self, edges: Sequence[CameraEdge], allow_overlapping_views: bool) -> None:
        self.allow_overlapping_views = allow_overlapping_views
        self._edges: dict[frozenset[str], CameraEdge] = {}
        self._adj: dict[str, list[tuple[str, float]]] = {}
        for e in edges:
            pair = frozenset((e.a, e.b))
            if pair in self._edges:
                raise ConfigError(f"identity.adjacency: cameras {e.a!r} and {e.b!r} are joined twice")
            self._edges[pair] = e
            self._adj.setdefault(e.a, []).append((e.b, e.min_s))
            self._adj.setdefault(e.b, []).append((e.a, e.min_s))
        self._paths: dict[str, dict[str, float]] = {c: self._dijkstra(c) for c in self._adj}

    def _dijkstra(self, start: str) -> dict[str, float]:
        dist = {start: 0.0}
        heap = [(0.0, start)]
        while heap:
            d, cam = heapq.heappop(heap)
            if d > dist.get(cam, float("inf")):
                continue
            for nxt, w in self._adj[cam]:
                if d + w < dist.get(nxt, float("inf")):
                    dist[nxt] = d + w
                    heapq.heappush(heap, (d + w, nxt))
        return dist

    @property
    def has_graph(self) -> bool:
        return bool(self._edges)

    def min_travel(self, a: str, b: str) -> float:
        """Fewest seconds between sightings on ``a`` and ``b`` (0 for the same camera or with no path)."""
        if a == b:
            return 0.0
        return self._paths.get(a, {}).get(b, 0.0)

    def overlapping(self, a: str, b: str) -> bool:
        """Whether one person may be seen on ``a`` and ``b`` at the same time."""
        if a == b:
            return True
        edge = self._edges.get(frozenset((a, b)))
        if edge is None:
            return self.allow_overlapping_views
        return edge.min_s == 0.0

    def in_window(self, a: str, b: str, dt: float) -> bool:
        """A direct edge joins ``a`` and ``b`` and ``dt`` seconds fit its [min_s, max_s]."""
        edge = self._edges.get(frozenset((a, b)))
        return edge is not None and edge.min_s <= dt <= edge.max_s

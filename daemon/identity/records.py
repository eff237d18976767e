"""Typed records the identity resolver takes and gives: per-track assignments and fleet profile updates."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from daemon.errors import DataError
from daemon.types import FloatArray, Position, finite_pair

Source = Literal["gallery", "fleet", "new", "pending"]
"""How a track got its identity: a named gallery identity, a fleet identity, a newly allocated global id, or
none yet (``pending``: too few observations, or not confident enough for a new id)."""

UNIT_TOL = 1e-2  # exemplars must be L2-normalised to within this (float16 transport); they are renormalised


@dataclass(frozen=True, slots=True)
class IdentityAssignment:
    """The identity of one track on one frame.

    ``global_id`` is the fleet-wide id (None while ``pending``); ``label`` the name of a named identity (from
    the local gallery or learned from the fleet). ``similarity`` is the track-to-identity cosine of the last
    decision (0 for ``new`` and ``pending``). ``changed``: the global id or label differs from this track's
    previous frame (the first assignment of a global id counts as a change). ``switched``: on this frame the
    track was found to have switched people (``identity.switch_similarity``): its boxes before this frame were
    someone else, whatever id it takes next.
    """

    camera: str
    track_id: int
    global_id: int | None
    label: str | None
    similarity: float
    source: Source
    changed: bool
    switched: bool = False


@dataclass(frozen=True, slots=True, eq=False)
class ProfileUpdate:
    """What a camera tells the fleet about one of its tracks; also what ``ingest_remote`` takes back.

    ``exemplars`` (K, D) float32 are the track's L2-normalised exemplars (rows within 1 % of unit length are
    accepted, e.g. after float16 transport, and stored renormalised); K = 0 is a keep-alive that renews
    the claim and leaves the exemplars known for this track as they are. ``timestamp`` is the time of the
    news (seconds on the clock the fleet shares), ``since`` when this track took ``global_id`` (defaults to
    ``timestamp``), ``quality`` the best observation quality in [0, 1], ``ended`` that the track is over,
    ``position`` where the track was at ``timestamp`` on the site plan (None: its camera has no site),
    ``velocity`` its recent velocity there (site units per second; None: not known yet).
    The constructor validates every field and raises :class:`DataError` naming the first problem.
    """

    camera: str
    track_id: int
    global_id: int
    timestamp: float
    quality: float
    exemplars: FloatArray
    label: str | None = None
    ended: bool = False
    since: float = field(default=math.nan)
    position: Position | None = None
    velocity: Position | None = None

    def __post_init__(self) -> None:
        _check_scalars(self)
        for name in ("position", "velocity"):
            object.__setattr__(self, name, _pair(name, getattr(self, name)))
        ex = np.asarray(self.exemplars)
        if ex.ndim != 2 or ex.shape[1] < 1:
            raise DataError(f"profile update: exemplars must be (K, D) with D >= 1, got shape {ex.shape}")
        if ex.dtype != np.float32:
            raise DataError(f"profile update: exemplars must be float32, got {ex.dtype}")
        if len(ex) and not np.isfinite(ex).all():
            raise DataError("profile update: exemplars hold NaN or infinity")
        norms = np.linalg.norm(ex, axis=1) if len(ex) else np.ones(0)
        if len(ex) and np.abs(norms - 1.0).max() > UNIT_TOL:
            raise DataError("profile update: exemplars must be L2-normalised rows")
        frozen = (ex / norms[:, None]).astype(np.float32) if len(ex) else ex.copy()
        frozen.flags.writeable = False
        object.__setattr__(self, "exemplars", frozen)
        if math.isnan(self.since):
            object.__setattr__(self, "since", float(self.timestamp))

    @property
    def key(self) -> tuple[str, int]:
        """``(camera, track_id)``: the track this update is about."""
        return (self.camera, self.track_id)

    @property
    def dim(self) -> int:
        return int(self.exemplars.shape[1])


def _pair(name: str, value: object) -> Position | None:
    if value is None:
        return None
    try:
        return finite_pair(value, name)
    except ValueError:
        raise DataError(f"profile update: {name} must be None or two finite numbers, got {value!r}") from None


def _check_scalars(u: ProfileUpdate) -> None:
    if not isinstance(u.camera, str) or not u.camera:
        raise DataError(f"profile update: camera must be a non-empty string, got {u.camera!r}")
    for name in ("track_id", "global_id"):
        v = getattr(u, name)
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
            raise DataError(f"profile update: {name} must be a non-negative integer, got {v!r}")
    for name in ("timestamp", "quality"):
        v = getattr(u, name)
        if isinstance(v, bool) or not isinstance(v, int | float | np.floating) or not math.isfinite(v):
            raise DataError(f"profile update: {name} must be a finite number, got {v!r}")
    if not 0.0 <= u.quality <= 1.0:
        raise DataError(f"profile update: quality must be within [0, 1], got {u.quality!r}")
    if not isinstance(u.since, int | float | np.floating) or math.isinf(u.since):
        raise DataError(f"profile update: since must be a finite number, got {u.since!r}")
    if u.label is not None and (not isinstance(u.label, str) or not u.label.strip()):
        raise DataError(f"profile update: label must be None or a non-empty string, got {u.label!r}")


@dataclass(frozen=True, slots=True)
class FrameIdentities:
    """What one ``IdentityResolver.update`` call gives: an assignment per reported track (in input order), the
    profile updates to publish to the fleet (decisions, material exemplar changes, keep-alives, ends), and the
    labels the resolver's gallery dropped since the previous call (``set_gallery``: no longer given to anyone;
    each once), so that the camera's files stop naming them too."""

    assignments: tuple[IdentityAssignment, ...]
    updates: tuple[ProfileUpdate, ...]
    unnamed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IdentityStats:
    """Counters and sizes of a resolver (for logs, ``summary.json`` and tests of the bounds)."""

    identities: int
    exemplar_rows: int
    contributions: int
    live_tracks: int
    allocations: int
    remote_accepted: int
    remote_rejected: dict[str, int]
    expired_identities: int
    evicted_identities: int
    dropped_contributions: int
    forgotten: int
    label_merges: int
    allocations_put_off: int = 0  # new-id decisions retried later because the allocator was away
    switches: int = 0  # tracks found to have switched people and resolved afresh (switch_similarity)
    # tracks ended with new_min_observations observations and no global id: of them, those whose best quality
    # stayed under new_min_quality (people too small, dim or hidden for a new id: quality_full_height_px)
    ended_observed: int = 0
    ended_too_faint: int = 0

"""Fleet identity resolution, the pure core: which person each track of a camera is, fleet-wide.

``IdentityResolver(camera, dim, allocate, cfg, gallery)`` takes each frame's tracks and embeddings
(``update``), other cameras' :class:`ProfileUpdate` records (``ingest_remote``), track ends (``end_track``)
and erasures (``forget``), and answers an :class:`IdentityAssignment` per track plus the updates to
publish. No I/O: the Valkey bridge carries the updates and provides the id allocator.
"""

from daemon.identity.profile import TrackProfile, set_similarity
from daemon.identity.quality import (
    QualityParams,
    box_qualities,
    occlusion_fractions,
    overlap_fractions,
    truncation_factors,
)
from daemon.identity.records import (
    FrameIdentities,
    IdentityAssignment,
    IdentityStats,
    ProfileUpdate,
    Source,
)
from daemon.identity.resolver import Allocator, AllocatorUnavailable, IdentityResolver, assign
from daemon.identity.travel import TravelModel

__all__ = [
    "Allocator",
    "AllocatorUnavailable",
    "FrameIdentities",
    "IdentityAssignment",
    "IdentityResolver",
    "IdentityStats",
    "ProfileUpdate",
    "QualityParams",
    "Source",
    "TrackProfile",
    "TravelModel",
    "assign",
    "box_qualities",
    "occlusion_fractions",
    "overlap_fractions",
    "set_similarity",
    "truncation_factors",
]

"""Where people stand on the site plan, and whether two sightings can be one person. Pure: arrays in, numbers out.

A camera with a :class:`~daemon.config.SiteConfig` maps each box's bottom centre (the feet) through its
homography to site coordinates shared by the whole fleet. Two sightings ``dt`` seconds apart at distance ``d``
can be one person only when ``d <= radius + speed * dt``; the closer they are within that bound, the more the
position speaks for them being one person (:func:`closeness`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from daemon.config import SiteConfig
from daemon.errors import ConfigError
from daemon.types import FloatArray, Position

MAX_LEAD_S = 2.0  # a sighting is carried on at its velocity for at most this long


class SiteMap:
    """Image pixels -> site coordinates of one camera (a 3x3 homography)."""

    def __init__(self, cfg: SiteConfig, camera: str = "") -> None:
        where = f"cameras.{camera}.site" if camera else "site"
        if cfg.homography is not None:
            h = np.asarray(cfg.homography, dtype=np.float64)
            if h.shape != (3, 3):
                raise ConfigError(f"{where}.homography must be 3x3, got shape {h.shape}")
        else:
            h = _fit(np.asarray(cfg.image_points, np.float64), np.asarray(cfg.site_points, np.float64), where)
        if not np.isfinite(h).all() or abs(np.linalg.det(h)) < 1e-12:
            raise ConfigError(f"{where}: the homography is singular or not finite: {h.tolist()}")
        self.matrix = h / h[2, 2] if abs(h[2, 2]) > 1e-12 else h

    def feet(self, xyxy: FloatArray) -> FloatArray:
        """(N, 2) site positions of the bottom centres of boxes ``xyxy`` (N, 4); NaN where a point maps to
        infinity (above the horizon)."""
        boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        pts = np.column_stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3], np.ones(len(boxes))])
        mapped = pts @ self.matrix.T
        w = mapped[:, 2:3]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(np.abs(w) > 1e-9, mapped[:, :2] / w, np.nan)
        out[~np.isfinite(out).all(axis=1)] = np.nan
        return out.astype(np.float32)


def _fit(image: np.ndarray, site: np.ndarray, where: str) -> np.ndarray:
    if not (np.isfinite(image).all() and np.isfinite(site).all()):
        raise ConfigError(f"{where}: image_points and site_points must be finite numbers")
    h, _ = cv2.findHomography(image.astype(np.float32), site.astype(np.float32), 0)
    if h is None:
        raise ConfigError(
            f"{where}: no homography fits image_points -> site_points (are three of the points in a line?)"
        )
    back = cv2.perspectiveTransform(image.reshape(-1, 1, 2), h).reshape(-1, 2)
    scale = max(float(np.ptp(site, axis=0).max()), 1e-9)
    if float(np.abs(back - site).max()) > 0.05 * scale:
        raise ConfigError(
            f"{where}: the points do not fit one homography (an error of "
            f"{float(np.abs(back - site).max()):.3g} site units); check that the pairs match and lie on the floor"
        )
    return np.asarray(h, dtype=np.float64)


def closeness(
    a: Position,
    ta: float,
    b: Position,
    tb: float,
    radius: float,
    speed: float,
    velocity: Position | None = None,
) -> float:
    """How well sighting ``a`` fits sighting ``b`` (``velocity``: b's, when known): 1 at the expected spot,
    0 at the edge of what fits, negative when they cannot be one person.

    Beyond ``radius + speed * |ta - tb|`` of ``b`` nobody could have walked: negative. Otherwise, without a
    velocity, 1 - distance / that bound; with one, the expected spot is ``b`` carried on at ``velocity``
    (for at most ``MAX_LEAD_S``) and the fit falls to 0 at ``radius + speed / 2 * |ta - tb|`` from it (people
    change pace and heading slowly), so of two people walking side by side the one on the predicted path fits.
    """
    gap = abs(ta - tb)
    reach = radius + speed * gap
    near = 1.0 - math.hypot(a[0] - b[0], a[1] - b[1]) / reach
    if near < 0 or velocity is None:
        return near
    lead = max(-MAX_LEAD_S, min(MAX_LEAD_S, ta - tb))
    ex, ey = b[0] + velocity[0] * lead, b[1] + velocity[1] * lead
    return max(0.0, 1.0 - math.hypot(a[0] - ex, a[1] - ey) / (radius + 0.5 * speed * gap))


def velocity(trail: Sequence[tuple[float, float, float]], min_span_s: float = 0.3) -> Position | None:
    """Mean velocity over ``trail`` (time, x, y), oldest first; None over less than ``min_span_s``."""
    if len(trail) < 2:
        return None
    t0, x0, y0 = trail[0]
    t1, x1, y1 = trail[-1]
    span = t1 - t0
    if span < min_span_s:
        return None
    return (x1 - x0) / span, (y1 - y0) / span

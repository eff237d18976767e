"""A track's appearance: a few diverse, quality-checked exemplars (not one smoothed vector), and how two
sets of exemplars are compared.

Exemplar policy (``TrackProfile.offer``), with at most ``capacity`` exemplars:

* an observation below ``min_quality`` is ignored (it does not count as an observation either);
* while there is room, every observation becomes an exemplar;
* when full, the set's *most redundant* member goes: take the closest pair among the exemplars and the
  new vector. When the new vector is part of that pair it adds no diversity: it replaces its nearest exemplar
  only when its quality is higher by ``replace_margin`` (same look, better view), otherwise it is dropped.
  Otherwise the lower-quality member of the closest existing pair makes room for it.

Set-to-set similarity (``set_similarity``, track exemplars as rows, identity exemplars as columns): ``max``
is the best exemplar pair; ``top_mean`` lets each track exemplar take its best match among the identity's
exemplars and averages the ``top`` best of those (fewer when the track has fewer exemplars). A single odd
exemplar (a noisy crop, a moment of occlusion) then cannot carry a match alone, which ``max`` allows.

Measured on PETS09-S2L1 ground-truth crops embedded with MobileNetV2-ImageNet (each person's first half of
sightings as the known identity, the second half cut into tracks of 10 observations, 19 identities, 64
tracks): AUC same-vs-different 0.923 for ``max``, 0.931 for the mean of the top 3 pairs, 0.931 for
``top_mean`` (3); balanced accuracy at the best threshold (0.80) 0.85 / 0.88 / 0.87. Diverse exemplars (8)
beat the 8 most recent ones (AUC 0.920) and the 8 best-quality ones (0.888).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

from daemon.types import FloatArray

MatchScore = Literal["max", "top_mean"]


class TrackProfile:
    """Bounded set of diverse exemplars of one track, with their qualities."""

    def __init__(self, dim: int, capacity: int, min_quality: float, replace_margin: float) -> None:
        self.dim = dim
        self.capacity = capacity
        self.min_quality = min_quality
        self.replace_margin = replace_margin
        self._ex = np.zeros((capacity, dim), dtype=np.float32)
        self._q = np.zeros(capacity, dtype=np.float32)
        self._sim = np.full((capacity, capacity), -np.inf, dtype=np.float32)  # pairwise, -inf on the diagonal
        self._n = 0
        self.observations = 0

    def __len__(self) -> int:
        return self._n

    @property
    def exemplars(self) -> FloatArray:
        """(K, D) read-only view of the exemplars."""
        view = self._ex[: self._n]
        view.flags.writeable = False
        return view

    @property
    def qualities(self) -> FloatArray:
        return self._q[: self._n].copy()

    @property
    def best_quality(self) -> float:
        return float(self._q[: self._n].max()) if self._n else 0.0

    def clear(self) -> None:
        """Forget every exemplar and observation."""
        self._n = 0
        self.observations = 0
        self._sim.fill(-np.inf)

    def offer(self, embedding: FloatArray, quality: float) -> bool:
        """Consider one L2-normalised (D,) observation; True when the exemplar set changed."""
        if not quality >= self.min_quality:
            return False
        self.observations += 1
        return self._take(np.asarray(embedding, dtype=np.float32).reshape(-1), quality)

    def resume(self, exemplars: FloatArray, qualities: FloatArray) -> None:
        """Start from an earlier run's (K, D) ``exemplars`` and their ``qualities``: they are taken first, then
        this profile's own, each by the rule of ``offer`` (the most redundant goes), so the set stays within
        ``capacity`` and as diverse as one run's would. The observation count stays this run's."""
        mine, mine_q = self.exemplars.copy(), self.qualities
        observations = self.observations
        self.clear()
        for vec, q in zip((*exemplars, *mine), (*qualities, *mine_q), strict=True):
            self._take(np.asarray(vec, dtype=np.float32), float(q))
        self.observations = observations

    def _take(self, vec: FloatArray, quality: float) -> bool:
        sims = self._ex[: self._n] @ vec
        if self._n < self.capacity:
            self._put(self._n, vec, quality, sims)
            self._n += 1
            return True
        nearest = int(np.argmax(sims))
        i, j = np.unravel_index(int(np.argmax(self._sim)), self._sim.shape)
        if sims[nearest] >= self._sim[i, j]:  # the new vector is the most redundant one
            if quality < self._q[nearest] + self.replace_margin:
                return False
            victim = nearest
        else:
            victim = int(i) if self._q[i] <= self._q[j] else int(j)
        sims[victim] = -np.inf
        self._put(victim, vec, quality, sims)
        return True

    def _put(self, slot: int, vec: FloatArray, quality: float, sims: FloatArray) -> None:
        n = max(self._n, slot + 1)
        self._ex[slot] = vec
        self._q[slot] = quality
        row = np.full(self.capacity, -np.inf, dtype=np.float32)
        row[: len(sims)] = sims
        row[slot] = -np.inf
        row[n:] = -np.inf
        self._sim[slot, :] = row
        self._sim[:, slot] = row


def set_similarity(sims: NDArray[np.float32], how: MatchScore, top: int) -> float:
    """Similarity of a track's exemplars (rows) to an identity's (columns) from their (K1, K2) cosines.

    -inf when either set is empty.
    """
    if sims.size == 0:
        return float("-inf")
    if how == "max":
        return float(sims.max())
    per_row = sims.max(axis=1)
    k = min(top, per_row.size)
    best = np.partition(per_row, per_row.size - k)[per_row.size - k :]
    return float(best.mean())

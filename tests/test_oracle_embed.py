"""Looks made from the ground truth (embedder type 'ground-truth', daemon/oracle_embed.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from daemon.config import EmbedderConfig, RuntimeConfig
from daemon.embed import build_embedder
from daemon.errors import DataError
from daemon.oracle_embed import ORACLE_DIM, GroundTruthEmbedder, noise_scale
from daemon.types import FrameEmbedder

FRAMES = 200
BOXES = np.array(
    [[10, 10, 40, 70], [100, 10, 130, 70], [300, 300, 330, 360]], np.float32
)  # people 1, 2, nobody


def _truth(tmp_path: Path) -> Path:
    path = tmp_path / "gt.txt"
    rows = [f"{f},{p},{x},10,30,60,1,1,1" for f in range(1, FRAMES + 1) for p, x in ((1, 10), (2, 100))]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_noise_scale_gives_the_asked_similarity_and_refuses_nonsense() -> None:
    assert noise_scale(0.5) == pytest.approx(1.0)
    assert noise_scale(0.75) == pytest.approx((1 / 3) ** 0.5)
    for bad in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ValueError, match="between 0 and 1"):
            noise_scale(bad)


def test_looks_of_one_person_are_as_close_as_asked_and_two_people_are_far_apart(tmp_path: Path) -> None:
    emb = GroundTruthEmbedder.from_file(str(_truth(tmp_path)), similarity=0.75, seed=3)
    image = np.zeros((400, 400, 3), np.uint8)
    looks = np.stack([emb.embed_at(i, image, BOXES) for i in range(FRAMES)])  # (frames, 3 boxes, dim)
    assert looks.shape == (FRAMES, 3, ORACLE_DIM) and looks.dtype == np.float32
    assert np.allclose(np.linalg.norm(looks, axis=2), 1.0, atol=1e-5)
    same = np.einsum("fd,fd->f", looks[:-1, 0], looks[1:, 0])  # person 1 on consecutive frames
    other = np.einsum("fd,fd->f", looks[:, 0], looks[:, 1])  # persons 1 and 2 on one frame
    nobody = np.einsum("fd,fd->f", looks[:-1, 2], looks[1:, 2])  # a box on nobody, frame to frame
    assert same.mean() == pytest.approx(0.75, abs=0.03)
    assert abs(other.mean()) < 0.05 and abs(nobody.mean()) < 0.05 and other.max() < 0.5
    assert emb.people(1, BOXES) == [1, 2, -1]
    assert np.array_equal(emb.embed_at(7, image, BOXES), looks[7])  # seeded by frame: a run repeats
    assert emb.embed_at(7, image, np.zeros((0, 4), np.float32)).shape == (0, ORACLE_DIM)


def test_a_box_must_cover_the_person_to_get_their_look(tmp_path: Path) -> None:
    emb = GroundTruthEmbedder.from_file(str(_truth(tmp_path)), similarity=0.75)
    shifted = BOXES[:1] + np.array([[16, 0, 16, 0]], np.float32)  # IoU 0.30 with person 1's box
    assert emb.people(1, shifted) == [-1]
    assert emb.people(1, BOXES[:1] + np.array([[5, 0, 5, 0]], np.float32)) == [1]  # IoU 0.71
    assert emb.people(FRAMES + 5, BOXES) == [-1, -1, -1]  # a frame without ground truth


def test_it_is_built_from_the_config_and_works_only_with_the_frame_index(tmp_path: Path) -> None:
    cfg = EmbedderConfig(type="ground-truth", truth={"path": _truth(tmp_path), "similarity": 0.6})
    emb = build_embedder(cfg, RuntimeConfig(), tmp_path)
    assert isinstance(emb, FrameEmbedder) and emb is not None and emb.dim == ORACLE_DIM
    with pytest.raises(DataError, match="needs to know which frame"):
        emb.embed(np.zeros((10, 10, 3), np.uint8), BOXES)
    with pytest.raises(ValueError, match="needs `truth`"):
        EmbedderConfig(type="ground-truth")
    with pytest.raises(ValueError, match="needs `truth`"):
        EmbedderConfig(type="onnx", truth={"path": "gt.txt"})

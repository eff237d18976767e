"""``source.loop``: a video file replayed endlessly (soak tests, demos); indices and timestamps keep increasing."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from _video import make_image_folder, make_video, match_frame

from daemon.config import GroundTruthDetectorConfig, SourceConfig
from daemon.errors import SourceError
from daemon.oracle_embed import GroundTruthEmbedder
from daemon.replay_detect import build_replay_detector
from daemon.sources import open_source


def test_looped_file_starts_again_and_keeps_counting(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=12, fps=10.0, people=3, size=(320, 240))
    with open_source(SourceConfig(uri=str(clip.path), loop=True, max_frames=30)) as src:
        assert src.frame_count == 30  # endless but for max_frames
        frames = list(src)
        stats = src.stats
    assert [f.index for f in frames] == list(range(30))
    assert [match_frame(f.image, clip) for f in frames] == [i % 12 for i in range(30)]
    assert [f.clip_index for f in frames] == [i % 12 for i in range(30)]  # what files about the clip number
    assert all(b.timestamp > a.timestamp for a, b in itertools.pairwise(frames))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10.0 for i in range(30)])
    assert stats.loops == 2 and stats.last_error == ""


def test_looped_file_with_a_stride(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=10, fps=10.0, people=3, size=(320, 240))
    with open_source(SourceConfig(uri=str(clip.path), loop=True, stride=3, max_frames=8)) as src:
        frames = list(src)
    assert [f.index for f in frames] == [0, 3, 6, 9, 12, 15, 18, 21]
    # stride counts across the seam: source positions 0 3 6 9 | 2 5 8 | 1
    assert [match_frame(f.image, clip) for f in frames] == [0, 3, 6, 9, 2, 5, 8, 1]
    assert [f.clip_index for f in frames] == [0, 3, 6, 9, 2, 5, 8, 1]


def test_every_pass_of_a_looped_file_gets_its_replayed_boxes_and_looks(tmp_path: Path) -> None:
    """A replay detector (det.txt, ground truth) and the ground-truth embedder looked frames up by index, which
    goes on across a looped file's passes: only the first pass had boxes, and the tracker idled after it."""
    clip = make_video(tmp_path / "clip.mp4", frames=6, fps=10.0, people=2, size=(320, 240))
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    detector = build_replay_detector(GroundTruthDetectorConfig(path=gt))
    looks = GroundTruthEmbedder.from_file(str(gt), similarity=0.75)
    with open_source(SourceConfig(uri=str(clip.path), loop=True, max_frames=18)) as src:
        frames = list(src)
    boxes = [detector.detect(f) for f in frames]
    assert all(len(b) == 2 for b in boxes)
    for a, b in zip(boxes[:6], boxes[12:], strict=True):  # pass 3 is pass 1 again
        np.testing.assert_array_equal(a.xyxy, b.xyxy)
    first, third = (
        looks.embed_at(f.clip_index, f.image, b.xyxy)
        for f, b in ((frames[1], boxes[1]), (frames[13], boxes[13]))
    )
    assert first.shape == (2, looks.dim) and np.array_equal(first, third)


def test_loop_is_for_video_files_only(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "imgs", frames=3, size=(64, 48))
    with pytest.raises(SourceError, match=r"source\.loop works with video files only, not a folder"):
        open_source(SourceConfig(uri=str(folder.path), loop=True))
    with pytest.raises(SourceError, match="not a rtsp source"):
        open_source(SourceConfig(uri="rtsp://127.0.0.1:1/x", loop=True))

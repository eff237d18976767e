"""benchmarks/similarity_scale.py: an embedder's scale measured from a camera's own tracks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _data import REPO_ROOT, load_benchmark
from _video import make_video

from daemon.adapt import Tracklets, cooccurrence
from daemon.config import IdentityConfig

SCRIPT = REPO_ROOT / "benchmarks" / "similarity_scale.py"


def _tracklets(looks: dict[int, list[list[float]]], together: list[tuple[int, ...]]) -> Tracklets:
    feats = np.array([v for t in sorted(looks) for v in looks[t]], np.float32)
    labels = np.array([t for t in sorted(looks) for _ in looks[t]], np.int64)
    cliques = tuple(np.array(c, np.int64) for c in together)
    n = len(feats)
    zeros = np.zeros(n, np.int64)
    return Tracklets(feats, labels, zeros, zeros, cooccurrence(cliques, len(looks)), cliques, 10)


def test_scale_of_scores_pairs_seen_together_halves_and_looks() -> None:
    a = [[1.0, 0.0, 0.0]] * 4  # one person, always the same look
    b = [[0.0, 1.0, 0.0]] * 2 + [[0.6, 0.8, 0.0]] * 2  # another, who turns towards a's look
    c = [[0.0, 0.0, 1.0]] * 4  # never seen with a or b: no pair with them
    similarity_scale = load_benchmark("similarity_scale")
    s = similarity_scale.scale_of(_tracklets({0: a, 1: b, 2: c}, [(0, 1)]), IdentityConfig(top_exemplars=1))
    assert s.tracks == 3
    assert np.allclose(s.two_people, [0.6])  # only a-b: a's looks match b's turned looks best
    assert np.allclose(sorted(s.one_person), [0.8, 1.0, 1.0])  # b's first half against its second
    assert len(s.look_own) == 12 and len(s.look_beside) == 8  # c has nobody beside it
    summary = similarity_scale.summary(s, IdentityConfig(fleet_threshold=0.9, switch_similarity=0.5))
    assert summary["two_people_at_or_above_fleet_threshold"] == 0.0
    assert abs(summary["one_person_below_fleet_threshold"] - 1 / 3) < 1e-9


def _true_looks_camera(tmp_path: Path) -> dict[str, object]:
    """A camera of three people always together, on true boxes with looks from the ground truth."""
    clip = make_video(tmp_path / "clip.mp4", frames=40, size=(320, 240), people=3)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    return {
        "source": {"uri": str(clip.path)},
        "detector": {"type": "ground-truth", "path": str(gt)},
        "embedder": {"type": "ground-truth", "truth": {"path": str(gt), "similarity": 0.75}},
    }


def test_script_on_true_boxes_and_true_looks_separates_people(tmp_path: Path) -> None:
    cam = _true_looks_camera(tmp_path)
    cfg = {"identity": {"fleet_threshold": 0.6}, "cameras": {"cam": cam}}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    png = tmp_path / "scale.png"
    cmd = [sys.executable, str(SCRIPT), "--config", str(path), "--json", "--no-progress", "--plot", str(png)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    s = json.loads(done.stdout)
    assert s["tracks"] == 3 and s["cameras"] == ["cam"]
    assert s["two_people"]["n"] == 3 and s["two_people"]["max"] < 0.5  # three people, always together
    assert s["one_person"]["n"] == 3 and s["one_person"]["q0.01"] > 0.6
    assert s["two_people_at_or_above_fleet_threshold"] == 0.0
    assert s["one_person_below_fleet_threshold"] == 0.0
    assert s["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cameras_it_cannot_measure_are_named(tmp_path: Path, capsys: Any) -> None:
    main = load_benchmark("similarity_scale").main
    cfg = {
        "cameras": {
            "blind": {"source": {"uri": "clip.mp4"}, "embedder": {"type": "none"}},
            "door": {"source": {"uri": "rtsp://127.0.0.1:8554/door"}},
            "kiosk": {"source": {"uri": "clip.mp4", "loop": True}},
        }
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(path), "--cameras", "blind"]) == 2
    assert "camera blind has no embedder" in capsys.readouterr().err
    assert main(["--config", str(path), "--cameras", "door"]) == 2
    assert "camera door reads a live rtsp source: give --max-frames" in capsys.readouterr().err
    assert main(["--config", str(path), "--cameras", "kiosk"]) == 2
    assert "camera kiosk loops its video (source.loop): give --max-frames" in capsys.readouterr().err
    assert main(["--config", str(path), "--cameras", "lobby"]) == 2
    assert "no camera 'lobby' in the config (cameras: blind, door, kiosk)" in capsys.readouterr().err


def test_a_missing_model_exits_1_as_the_cli_does(tmp_path: Path, capsys: Any) -> None:
    """A model that is not there exited 2, a configuration error's code (systemd and scripts read it so), where
    the CLI exits 1."""
    clip = make_video(tmp_path / "clip.mp4", frames=10, size=(320, 240), people=2)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    cam = {
        "source": {"uri": str(clip.path)},
        "detector": {"type": "ground-truth", "path": str(gt)},
        "embedder": {"model": str(tmp_path / "absent.onnx")},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"cam": cam}}))
    assert load_benchmark("similarity_scale").main(["--config", str(path), "--no-progress"]) == 1
    assert f"model file not found: {tmp_path / 'absent.onnx'}" in capsys.readouterr().err


def test_nothing_measured_is_an_error_not_a_table_of_nan(tmp_path: Path, capsys: Any) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=10, size=(320, 240), people=2)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    cam = {"source": {"uri": str(clip.path)}, "detector": {"type": "ground-truth", "path": str(gt)}}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"cam": cam}}))
    main = load_benchmark("similarity_scale").main
    assert main(["--config", str(path), "--no-progress", "--min-height", "1000", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # no JSON with NaN in it
    assert "nothing to measure: no track in cam (--min-height 1000" in captured.err


def test_shares_of_a_kind_never_seen_are_null_not_nan() -> None:
    """One person alone on a camera: no pair seen together, so no share of them; --json wrote NaN (not JSON)."""
    similarity_scale = load_benchmark("similarity_scale")
    looks = {0: [[1.0, 0.0, 0.0]] * 2 + [[0.8, 0.6, 0.0]] * 2}
    s = similarity_scale.summary(
        similarity_scale.scale_of(_tracklets(looks, [(0,)]), IdentityConfig()), IdentityConfig()
    )
    assert s["two_people"] == {} and s["two_people_at_or_above_fleet_threshold"] is None
    assert s["one_person_below_fleet_threshold"] == 0.0  # halves at 0.8..1.0 vs 0.85: top_mean of the best
    json.dumps(s, allow_nan=False)
    assert "two people at or above n/a" in "\n".join(similarity_scale.text(s))


@pytest.mark.parametrize(
    ("option", "said"),
    [
        # it was a pydantic traceback
        (["--min-height", "-5"], "--min-height: Input should be greater than or equal to 0"),
        # it was reported as the config field it sets: 'cameras.cam.source.max_frames: Input should be ...'
        (["--max-frames", "-1"], "argument --max-frames: must be 0 (no limit) or more frames, not -1"),
    ],
)
def test_a_bad_option_is_a_usage_error_naming_it(
    tmp_path: Path, capsys: Any, option: list[str], said: str
) -> None:
    main = load_benchmark("similarity_scale").main
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"cam": {"source": {"uri": "clip.mp4"}}}}))
    with pytest.raises(SystemExit) as e:
        main(["--config", str(path), *option])
    assert e.value.code == 2 and said in capsys.readouterr().err


def test_a_camera_named_twice_is_measured_once(tmp_path: Path) -> None:
    """--cameras cam,cam mined and pooled the camera twice: every score counted double."""
    cam = _true_looks_camera(tmp_path)
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"cam": cam}}))
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--config",
        str(path),
        "--json",
        "--no-progress",
        "--cameras",
        "cam,cam",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    s = json.loads(done.stdout)
    assert s["cameras"] == ["cam"] and s["tracks"] == 3 and s["two_people"]["n"] == 3

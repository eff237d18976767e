"""Metric regression on the real PETS09-S2L1 clip: the shipped config must not lose accuracy.

Runs the whole pipeline as `reid-daemon run` does (real decoding, SSDLite, MobileNetV2 embedder, BoT-SORT)
and scores it with TrackEval. The baseline is committed in tests/baselines.json; raise it when the
pipeline gets better, never lower it to make a change pass.
"""

import json
from pathlib import Path

import pytest
from _data import require_pets09

from daemon.cli import main
from daemon.config import load_settings, with_overrides
from daemon.evaluate import evaluate
from daemon.outputs import earlier_folders
from daemon.worker import CameraWorker

ROOT = Path(__file__).resolve().parents[1]
BASELINE = json.loads((ROOT / "tests" / "baselines.json").read_text())["pets09"]


@pytest.mark.slow
def test_pets09_accuracy_stays_at_baseline(
    tmp_path: Path, ssdlite_model: Path, mobilenet_model: Path
) -> None:
    folder = require_pets09()
    settings = load_settings(ROOT / "configs" / "pets09.yaml")
    settings = with_overrides(
        settings,
        "pets09",
        {
            "source.uri": str(folder / "vtest.avi"),
            "output.dir": str(tmp_path),
            "output.video": False,
            "output.progress": False,
        },
    )
    summary = CameraWorker(settings, "pets09").run()
    assert summary.frames == 795
    m = evaluate(folder / "gt" / "gt.txt", summary.outputs["mot"])
    print(m.summary())
    assert BASELINE["IDF1"] <= m.IDF1
    assert BASELINE["HOTA"] <= m.HOTA
    assert BASELINE["MOTA"] <= m.MOTA


def _rows_of_run(camera_dir: Path) -> str:
    """The camera's MOT rows over its run laid end to end by hand: its rotated folders', oldest first, then its
    own (the worker writes each frame once, into the files open at the time)."""
    folders = [*earlier_folders(camera_dir), camera_dir]
    return "".join((d / "pets09.txt").read_text(encoding="utf-8") for d in folders)


@pytest.mark.shared_data
def test_a_rotated_recording_is_scored_over_all_its_files(
    tmp_path: Path, ssdlite_model: Path, mobilenet_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With output.rotate_mb splitting a run across earlier-* folders, eval (--config, and --results on the
    run's pets09.txt) scored only the newest file against every frame up to the summary's last_frame: the
    frames written before the last rotation were all misses (FN 4x the run's own)."""
    folder = require_pets09()
    monkeypatch.setenv("REID_CAMERAS__pets09__SOURCE__URI", str(folder / "vtest.avi"))
    monkeypatch.setenv("REID_CAMERAS__pets09__OUTPUT__ROTATE_MB", "0.05")  # ~25 frames of files
    gt, out = folder / "gt" / "gt.txt", tmp_path / "runs"
    run = ["--config", str(ROOT / "configs" / "pets09.yaml"), "--output", str(out), "--max-frames", "110"]
    ran, scored = tmp_path / "ran.json", tmp_path / "scored.json"
    assert main(["eval", "--gt", str(gt), *run, "--no-video", "--no-progress", "--json", str(ran)]) == 0
    camera_dir = out / "pets09"
    assert len(earlier_folders(camera_dir)) >= 3
    whole = tmp_path / "whole.txt"
    whole.write_text(_rows_of_run(camera_dir), encoding="utf-8")
    expected = evaluate(gt, whole, num_frames=110).as_dict()
    assert expected["FN"] < 300  # ~6 people on 110 frames: most of them found
    assert json.loads(ran.read_text()) == expected
    results = camera_dir / "pets09.txt"
    assert main(["eval", "--gt", str(gt), "--results", str(results), "--json", str(scored)]) == 0
    assert json.loads(scored.read_text()) == expected

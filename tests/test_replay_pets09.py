"""Metric regression on the real PETS09-S2L1 clip: the shipped config must not lose accuracy.

Runs the whole pipeline as `reid-daemon run` does (real decoding, SSDLite, MobileNetV2 embedder, BoT-SORT)
and scores it with TrackEval. The baseline is committed in tests/baselines.json; raise it when the
pipeline gets better, never lower it to make a change pass.
"""

import json
from pathlib import Path

import pytest
from _data import require_pets09

from daemon.config import load_settings, with_overrides
from daemon.evaluate import evaluate
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

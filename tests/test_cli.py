"""CLI smoke tests: every command runs, and bad input gives one clear message and a non-zero exit."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from _video import make_image_folder, make_video

from daemon.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(body)
    return p


@pytest.fixture()
def synth(tmp_path: Path) -> tuple[Path, Path, Path]:
    clip = make_video(tmp_path / "clip.mp4", frames=25, size=(320, 240), people=2)
    gt = clip.write_mot_gt(tmp_path / "gt.txt")
    cfg = _config(
        tmp_path,
        f"cameras:\n  door:\n    source: {{uri: {clip.path}}}\n"
        f"    detector: {{type: ground-truth, path: {gt}}}\n    embedder: {{type: none}}\n"
        f"    output: {{dir: {tmp_path / 'runs'}, progress: false}}\n",
    )
    return clip.path, gt, cfg


def test_version_as_a_console_script() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "daemon", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("reid-daemon ")


def test_config_check_show_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(ROOT / "configs" / "pets09.yaml")]) == 0
    assert "valid (1 camera(s): pets09)" in capsys.readouterr().out
    assert main(["config", "show", str(ROOT / "configs" / "pets09.yaml")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["cameras"]["pets09"]["tracker"]["track_buffer"] == 60
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "track_buffer" in schema["$defs"]["TrackerConfig"]["properties"]
    undescribed = [
        f"{model}.{field}"
        for model, spec in [("Settings", schema), *schema["$defs"].items()]
        for field, prop in spec.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert undescribed == []  # the README: the schema gives every field with its description


def test_config_show_hides_url_passwords(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The stream's and Valkey's passwords were printed, while the secret fields showed as ********."""
    cfg = _config(
        tmp_path,
        "bridge: {url: 'redis://fleet:vk-pass@10.0.0.2:6379', signing_key: {value: 0123456789abcdef0123456789}}\n"
        "cameras:\n  lobby:\n    source: {uri: 'rtsp://admin:cam-pass@10.0.0.5/s1'}\n",
    )
    assert main(["config", "show", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "cam-pass" not in out and "vk-pass" not in out and "0123456789abcdef" not in out
    shown = json.loads(out)
    assert shown["cameras"]["lobby"]["source"]["uri"] == "rtsp://admin:***@10.0.0.5/s1"
    assert shown["bridge"]["url"] == "redis://fleet:***@10.0.0.2:6379"


def test_wrong_config_field_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, "cameras:\n  a:\n    source: {uri: x.mp4}\n    trackr: {}\n")
    assert main(["run", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "cameras.a.trackr" in err and str(cfg) in err


def test_missing_video_exits_1_naming_it(
    synth: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, cfg = synth
    assert main(["run", "--config", str(cfg), "--source", "/no/such/video.mp4"]) == 1
    assert "/no/such/video.mp4" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "eval", "adapt"])
def test_an_empty_source_is_refused_naming_the_option(
    tmp_path: Path, synth: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """`run --source ""` (a variable that was not set, in a script) ran the config's source without a word, as
    if no --source were given: the user took its tracks for those of the source they meant."""
    _, gt, cfg = synth
    args = {"run": [], "eval": ["--gt", str(gt)], "adapt": ["--out", str(tmp_path / "head.npz")]}[command]
    assert main([command, "--config", str(cfg), "--source", "", *args]) == 2
    err = capsys.readouterr().err
    assert "--source" in err and "at least 1 character" in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_run_on_a_folder_skips_a_corrupt_image_and_counts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """`run` on a folder of stills failed at its first corrupt image, the frames before it written and the rest
    never run; it skips the image with a warning naming it, the summary counts it, and the frames after it keep
    their numbers: scored against the folder's ground truth, only the skipped frame's boxes are missed."""
    folder = make_image_folder(tmp_path / "stills", frames=10, size=(320, 240))
    gt = folder.write_mot_gt(tmp_path / "gt.txt")
    bad = folder.path / "frame_4.png"
    bad.write_bytes(b"\x89PNG cut short")
    cfg = _config(
        tmp_path,
        f"cameras:\n  door:\n    source: {{uri: {folder.path}, folder_fps: 10}}\n"
        f"    detector: {{type: ground-truth, path: {gt}}}\n    embedder: {{type: none}}\n"
        f"    output: {{dir: {tmp_path / 'runs'}, progress: false}}\n",
    )
    with caplog.at_level("WARNING", logger="daemon"):
        assert main(["run", "--config", str(cfg)]) == 0
    assert str(bad) in caplog.text
    assert "1 undecodable frame skipped" in capsys.readouterr().out
    summary = json.loads((tmp_path / "runs" / "door" / "summary.json").read_text())
    assert summary["frames"] == 9 and summary["source_stats"]["frames_skipped"] == 1
    mot = tmp_path / "runs" / "door" / "door.txt"
    frames = sorted({int(line.split(",")[0]) for line in mot.read_text().splitlines()})
    assert frames == [1, 2, 3, 5, 6, 7, 8, 9, 10]
    m = tmp_path / "m.json"
    assert main(["eval", "--gt", str(gt), "--results", str(mot), "--json", str(m)]) == 0
    scored = json.loads(m.read_text())
    assert scored["IDF1"] > 90  # frame 5 on is aligned with the ground truth: only frame 4 is missed


@pytest.mark.parametrize("command", ["run", "eval"])
@pytest.mark.parametrize("option", ["--output", "--detections"])
def test_an_empty_output_or_detections_is_refused_naming_the_option(
    tmp_path: Path,
    synth: tuple[Path, Path, Path],
    capsys: pytest.CaptureFixture[str],
    command: str,
    option: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run --output ""` wrote the run into the config's output folder and `--detections ""` detected with the
    config's detector, each without a word, as if the option were not given (a variable that was not set)."""
    _, gt, cfg = synth
    monkeypatch.chdir(tmp_path)
    args = {"run": [], "eval": ["--gt", str(gt)]}[command]
    assert main([command, "--config", str(cfg), option, "", *args]) == 2
    err = capsys.readouterr().err
    assert f"{option} is empty" in err and "Traceback" not in err, err
    assert not (tmp_path / "runs").exists()  # nothing ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml", "clip.mp4", "gt.txt"]


@pytest.mark.parametrize("option", ["--json", "--results", "--gt"])
def test_an_empty_path_to_eval_is_refused_naming_the_option(
    tmp_path: Path, synth: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str], option: str
) -> None:
    """`eval --json ""` scored and wrote no JSON without a word (a truthiness check), and `--results ""` or
    `--gt ""` stopped with "error: .: cannot read: Is a directory", naming no option."""
    _, gt, cfg = synth
    assert main(["run", "--config", str(cfg)]) == 0
    given = {"--gt": str(gt), "--results": str(tmp_path / "runs" / "door" / "door.txt"), "--json": None}
    args = [x for flag, path in (given | {option: ""}).items() if path is not None for x in (flag, path)]
    capsys.readouterr()
    assert main(["eval", *args]) == 2
    out, err = capsys.readouterr()
    assert f"{option} is empty" in err and "IDF1" not in out and "Traceback" not in err, err


def test_the_help_of_run_says_an_empty_output_or_detections_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "output folder (an empty path is refused" in text and "detecting (an empty path is refused" in text


def test_unreadable_video_exits_1(tmp_path: Path, synth: tuple[Path, Path, Path]) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    assert main(["run", "--config", str(synth[2]), "--source", str(bad)]) == 1


def test_unwritable_output_dir_exits_2_naming_the_field(
    tmp_path: Path, synth: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """An output folder that cannot be made (here: under a file) was a NotADirectoryError traceback."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert main(["run", "--config", str(synth[2]), "--output", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err
    assert "cameras.door.output.dir" in err and str(blocker) in err and "Traceback" not in err


def test_missing_model_exits_1_with_fetch_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=3, size=(160, 120), people=1)
    cfg = _config(tmp_path, f"cameras:\n  a:\n    source: {{uri: {clip.path}}}\n")
    monkeypatch.setenv("REID_MODELS_DIR", str(tmp_path / "empty-cache"))
    assert main(["run", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert "ssdlite-mobilenetv2-pedestrian" in err and "reid-daemon models fetch" in err


def test_run_then_eval(
    synth: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, gt, cfg = synth
    assert main(["run", "--config", str(cfg), "--video"]) == 0
    out = capsys.readouterr().out
    assert "25 frames" in out
    results = tmp_path / "runs" / "door" / "door.txt"
    assert (tmp_path / "runs" / "door" / "annotated.mp4").stat().st_size > 0
    metrics_json = tmp_path / "m.json"
    assert main(["eval", "--gt", str(gt), "--results", str(results), "--json", str(metrics_json)]) == 0
    assert "IDF1" in capsys.readouterr().out
    assert json.loads(metrics_json.read_text())["IDF1"] == pytest.approx(100.0)
    # options that run the tracker were ignored beside --results: the file was scored as it was
    bad = [
        "eval",
        "--gt",
        str(gt),
        "--results",
        str(results),
        "--gt-noise",
        "0.1",
        "0.2",
        "0.5",
        "-c",
        str(cfg),
    ]
    assert main(bad) == 2
    assert "--config, --gt-noise (for running the tracker) would be ignored" in capsys.readouterr().err


def test_eval_runs_tracker_on_noisy_gt_and_det_file(
    synth: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, gt, cfg = synth
    m1 = tmp_path / "noisy.json"
    assert (
        main(
            [
                "eval",
                "--gt",
                str(gt),
                "--config",
                str(cfg),
                "--gt-noise",
                "0.02",
                "0.2",
                "0",
                "--json",
                str(m1),
            ]
        )
        == 0
    )
    noisy = json.loads(m1.read_text())
    assert 50.0 < noisy["IDF1"] < 100.0  # 20 % of boxes dropped: worse than perfect, still tracked
    # the same boxes recorded as a det.txt replay to the same result
    det = tmp_path / "det.txt"
    det.write_text(
        "".join(
            f"{line.split(',')[0]},-1,{','.join(line.split(',')[2:6])},0.9,-1,-1,-1\n"
            for line in gt.read_text().splitlines()
        )
    )
    m2 = tmp_path / "det.json"
    assert (
        main(["eval", "--gt", str(gt), "--config", str(cfg), "--detections", str(det), "--json", str(m2)])
        == 0
    )
    assert json.loads(m2.read_text())["IDF1"] == pytest.approx(100.0)


def test_eval_that_runs_the_tracker_names_the_files_it_wrote(
    synth: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """eval --config --detections (or --gt-noise) runs the camera into its output folder, replacing the files a
    `run` left there (the README's run then eval), and said nothing of it: run prints its files, eval did not."""
    _, gt, cfg = synth
    det = tmp_path / "det.txt"
    det.write_text(
        "".join(
            f"{x.split(',')[0]},-1,{','.join(x.split(',')[2:6])},0.9,-1,-1,-1\n"
            for x in gt.read_text().split()
        )
    )
    capsys.readouterr()
    assert main(["eval", "--gt", str(gt), "--config", str(cfg), "--detections", str(det)]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "runs" / "door"
    assert f"  mot: {folder / 'door.txt'}" in out and f"  events: {folder / 'events.jsonl'}" in out, out


@pytest.mark.parametrize("given", ["results", "config"])
def test_eval_json_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path, synth: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str], given: str
) -> None:
    """An unwritable --json path ended eval with a NotADirectoryError traceback; then it was one message, but
    only once the whole pipeline had run (minutes on a real video) and its scores were lost to the file. It is
    checked first, as embed's, enroll's and search's outputs are: nothing runs."""
    _, gt, cfg = synth
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    what = ["--results", str(gt)] if given == "results" else ["--config", str(cfg)]
    assert main(["eval", "--gt", str(gt), *what, "--json", str(blocker / "m.json")]) == 2
    captured = capsys.readouterr()
    assert f"--json {blocker / 'm.json'}: {blocker} is not a folder" in captured.err, captured.err
    assert "IDF1" not in captured.out and not (tmp_path / "runs").exists()


def test_eval_json_into_a_folder_not_made_yet(tmp_path: Path, synth: tuple[Path, Path, Path]) -> None:
    """The folder of --json is made, as embed's and enroll's outputs' are (the check before the run passes it)."""
    _, gt, _ = synth
    out = tmp_path / "scores" / "m.json"
    assert main(["eval", "--gt", str(gt), "--results", str(gt), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["IDF1"] == pytest.approx(100.0)


def test_bad_results_file_exits_1(tmp_path: Path, synth: tuple[Path, Path, Path]) -> None:
    bad = tmp_path / "res.txt"
    bad.write_text("1,2,three,4\n")
    assert main(["eval", "--gt", str(synth[1]), "--results", str(bad)]) == 1


def test_models_dir_from_the_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `models` read $REID_MODELS_DIR with its own fallback, the recognition commands with another: an empty
    # variable was the current folder for one and the default cache for the other
    from daemon.config import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("REID_MODELS_DIR", str(tmp_path / "env"))
    assert main(["models", "list"]) == 0
    assert f"model cache: {tmp_path / 'env'}" in capsys.readouterr().out
    monkeypatch.setenv("REID_MODELS_DIR", "")
    assert main(["models", "list"]) == 0
    assert f"model cache: {default_cache_dir()}" in capsys.readouterr().out
    assert default_cache_dir() == tmp_path / "xdg" / "reid-daemon" / "models"


def test_models_dir_help_names_where_the_cache_is_when_nothing_names_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `models --models-dir` said "(default $REID_MODELS_DIR or ~/.cache/reid-daemon/models)" and the recognition
    # commands "~/.cache", while the cache is under $XDG_CACHE_HOME where that is set: help and code disagreed
    import argparse

    from daemon.cli import build_parser

    monkeypatch.delenv("REID_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert main(["models", "list"]) == 0
    assert f"model cache: {tmp_path / 'xdg' / 'reid-daemon' / 'models'}" in capsys.readouterr().out
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = {
        cmd: a.help or "" for cmd, p in sub.choices.items() for a in p._actions if a.dest == "models_dir"
    }
    assert {"models", "embed", "enroll", "recognize", "search", "serve"} <= set(helps)
    for cmd, text in helps.items():
        if cmd != "adapt":  # adapt's is the config's, which names its own (config schema)
            assert "$XDG_CACHE_HOME/reid-daemon/models" in text and "$REID_MODELS_DIR" in text, cmd


def test_models_list(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["models", "list", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("ssdlite-mobilenetv2-pedestrian", "yolov8s-person", "mobilenetv2-imagenet"):
        assert name in out
    assert main(["models", "fetch", "--models-dir", str(tmp_path)]) == 2
    assert main(["models", "fetch", "no-such-model", "--models-dir", str(tmp_path)]) == 1


def test_eval_of_a_partial_run_scores_only_the_frames_run(
    synth: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    _, gt, cfg = synth
    m = tmp_path / "partial.json"
    assert main(["eval", "--gt", str(gt), "--config", str(cfg), "--max-frames", "10", "--json", str(m)]) == 0
    scored = json.loads(m.read_text())
    assert scored["Frames"] == 10
    assert scored["IDF1"] == pytest.approx(100.0)  # frames 11-25 were not run, so they are not misses


def test_eval_of_a_strided_run_scores_only_the_frames_it_saw(
    synth: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With source.stride 3 the tracker sees every 3rd frame, and eval charged the other two thirds of the
    ground truth as misses: perfect tracking scored IDF1 ~50 and MOTA ~33."""
    _, gt, cfg = synth
    monkeypatch.setenv("REID_CAMERAS__door__SOURCE__STRIDE", "3")
    m = tmp_path / "strided.json"
    assert main(["eval", "--gt", str(gt), "--config", str(cfg), "--json", str(m)]) == 0
    scored = json.loads(m.read_text())
    assert scored["IDF1"] == pytest.approx(100.0) and scored["MOTA"] == pytest.approx(100.0)
    assert scored["GT_Dets"] == 2 * 9  # two people on frames 1, 4, ..., 25
    assert scored["Frames"] == 9 and scored["Stride"] == 3  # the frames it ran, not the 25 of the video
    # the run's own results file, scored later: its summary.json says which frames the run saw
    results = tmp_path / "runs" / "door" / "door.txt"
    assert main(["eval", "--gt", str(gt), "--results", str(results), "--json", str(m)]) == 0
    scored = json.loads(m.read_text())
    assert scored["IDF1"] == pytest.approx(100.0) and scored["GT_Dets"] == 2 * 9


def test_eval_of_a_run_with_a_relative_output_dir_from_another_folder_scores_the_frames_run(
    synth: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """summary.json records the MOT file as the config gives it (runs/door/door.txt, from the run's working
    directory); scored from another folder (`cd runs/door; eval --results door.txt`), the summary was taken for
    another run's and a 10-frame run was charged the whole ground truth: IDF1 ~50 instead of 100."""
    clip, gt, _ = synth
    cfg = _config(
        tmp_path,
        f"cameras:\n  door:\n    source: {{uri: {clip}, max_frames: 10}}\n"
        f"    detector: {{type: ground-truth, path: {gt}}}\n    embedder: {{type: none}}\n"
        "    output: {dir: runs, progress: false}\n",
    )
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--config", str(cfg), "--no-progress"]) == 0
    monkeypatch.chdir(tmp_path / "runs" / "door")
    m = tmp_path / "m.json"
    assert main(["eval", "--gt", str(gt), "--results", "door.txt", "--json", str(m)]) == 0
    scored = json.loads(m.read_text())
    assert scored["Frames"] == 10 and scored["IDF1"] == pytest.approx(100.0)
    (tmp_path / "runs" / "door" / "door.txt").rename(tmp_path / "runs" / "door" / "other.txt")
    assert main(["eval", "--gt", str(gt), "--results", "other.txt", "--json", str(m)]) == 0
    assert json.loads(m.read_text())["Frames"] == 25  # not the run's MOT file: the summary says nothing of it


def test_source_on_the_command_line_is_timed_by_its_own_rate(
    synth: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """`run --config configs/pets09.yaml --source OTHER` kept the config's source.fps (PETS09-S2L1's 7), the
    rate of another file: the given video was timed at 7 fps, and a stream given so failed ("source.fps works
    with video files only")."""
    clip, gt, _ = synth  # a 10 fps clip
    cfg = _config(
        tmp_path,
        f"cameras:\n  door:\n    source: {{uri: /elsewhere/pets.avi, fps: 7}}\n"
        f"    detector: {{type: ground-truth, path: {gt}}}\n    embedder: {{type: none}}\n"
        f"    output: {{dir: {tmp_path / 'runs'}, progress: false}}\n",
    )
    assert main(["run", "--config", str(cfg), "--source", str(clip), "--max-frames", "3"]) == 0
    events = [json.loads(x) for x in (tmp_path / "runs" / "door" / "events.jsonl").read_text().splitlines()]
    assert max(e["ts"] for e in events if e["frame"] == 2) == pytest.approx(0.2)


def test_eval_needs_the_mot_output(tmp_path: Path, synth: tuple[Path, Path, Path]) -> None:
    clip, gt, _ = synth
    cfg = _config(
        tmp_path,
        f"cameras:\n  door:\n    source: {{uri: {clip}}}\n    detector: {{type: ground-truth, path: {gt}}}\n"
        f"    embedder: {{type: none}}\n    output: {{dir: {tmp_path / 'r'}, mot: false, progress: false}}\n",
    )
    assert main(["eval", "--gt", str(gt), "--config", str(cfg)]) == 2


def test_quiet_means_warnings_only_for_the_daemon_too() -> None:
    import logging

    from daemon.cli import _setup_logging

    daemon_log = logging.getLogger("daemon")
    before = daemon_log.level
    try:
        _setup_logging(0)
        assert daemon_log.getEffectiveLevel() == logging.WARNING
        _setup_logging(1)
        assert daemon_log.getEffectiveLevel() == logging.INFO
        _setup_logging(2)
        assert daemon_log.getEffectiveLevel() == logging.DEBUG
    finally:
        daemon_log.setLevel(before)


def test_a_reader_that_stops_reading_ends_the_command_quietly() -> None:
    """``reid-daemon config schema | head -1`` printed a BrokenPipeError traceback (exit 1)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", "config", "schema"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip() == b"{"
    proc.stdout.close()  # what `head -1` does after its line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_preset_names_after_an_option_are_names() -> None:
    """`models fetch --models-dir D NAME` was refused: 'unrecognized arguments: NAME'."""
    from daemon.cli import _parse, build_parser

    args = _parse(build_parser(), ["models", "fetch", "--models-dir", "/tmp/m", "a", "b"])
    assert args.names == ["a", "b"] and args.models_dir == "/tmp/m"
    args = _parse(build_parser(), ["models", "fetch", "a", "--models-dir", "/tmp/m", "b"])
    assert args.names == ["a", "b"]
    with pytest.raises(SystemExit) as bad:
        _parse(build_parser(), ["models", "fetch", "--models-dir", "/tmp/m", "--bogus"])
    assert bad.value.code == 2
    with pytest.raises(SystemExit):  # only the models command takes stray words as names
        _parse(build_parser(), ["config", "check", "a.yaml", "b.yaml"])


def test_scenario_list_refuses_a_name(capsys: pytest.CaptureFixture[str]) -> None:
    """`scenario list NAME` listed every preset and exited 0, as if NAME were a filter or did something."""
    assert main(["scenario", "list"]) == 0
    assert "pets09-2cam-overlap:" in capsys.readouterr().out
    assert main(["scenario", "list", "pets09-2cam-overlp"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "scenario list takes no NAME" in captured.err


def test_a_det_file_with_no_box_on_the_frames_run_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --detections det.txt` of another (longer) video ran with no box at all and said nothing of why."""
    clip = make_video(tmp_path / "clip.mp4", frames=5, size=(160, 120), people=1)
    det = tmp_path / "det.txt"
    det.write_text("".join(f"{f},-1,10,10,20,40,0.9,-1,-1,-1\n" for f in range(100, 103)))
    cfg = tmp_path / "cam.yaml"
    cfg.write_text(f"cameras:\n  door:\n    source: {{uri: {clip.path}}}\n    embedder: {{type: none}}\n")
    args = [
        "run",
        "-c",
        str(cfg),
        "--detections",
        str(det),
        "--output",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    with caplog.at_level(logging.WARNING, logger="daemon"):
        assert main(args) == 0
    assert f"{det}: none of its 3 boxes is on the 5 frames run (its frames are 100-102)" in caplog.text
    caplog.clear()
    det.write_text("".join(f"{f},-1,10,10,20,40,0.9,-1,-1,-1\n" for f in range(1, 4)))
    with caplog.at_level(logging.WARNING, logger="daemon"):
        assert main(args) == 0  # boxes on the frames run: nothing to say
    assert "none of its" not in caplog.text


def test_fleet_cameras_may_have_spaces_after_the_commas() -> None:
    """`fleet --cameras "a, b"` was refused as an unknown camera ' b'."""
    from daemon.cli import camera_list

    assert camera_list("a, b") == ["a", "b"] and camera_list(" a ,b,") == ["a", "b"]


def test_eval_of_a_run_stopped_early_scores_the_frames_it_ran(
    synth: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`eval --results` of a run cut short (--max-frames, a stopped service) charged it with the rest of the
    ground truth as missed: the run's summary.json beside the file says where it ended."""
    _, gt, cfg = synth
    assert main(["run", "--config", str(cfg), "--max-frames", "10"]) == 0
    results = tmp_path / "runs" / "door" / "door.txt"
    capsys.readouterr()
    metrics_json = tmp_path / "m.json"
    assert main(["eval", "--gt", str(gt), "--results", str(results), "--json", str(metrics_json)]) == 0
    scored = json.loads(metrics_json.read_text())
    assert scored["Frames"] == 10 and scored["IDF1"] == pytest.approx(100.0)
    elsewhere = tmp_path / "copy.txt"  # no summary of its own beside it: the whole ground truth
    elsewhere.write_bytes(results.read_bytes())
    assert main(["eval", "--gt", str(gt), "--results", str(elsewhere), "--json", str(metrics_json)]) == 0
    scored = json.loads(metrics_json.read_text())
    assert scored["Frames"] == 25 and scored["IDF1"] < 80


def test_eval_beside_a_summary_it_cannot_read_says_so(
    synth: tuple[Path, Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A summary.json beside the results that could not be read (cut short by a full disk, another user's) was
    taken for none without a word: a run of 10 frames was charged the rest of the ground truth as missed."""
    _, gt, cfg = synth
    assert main(["run", "--config", str(cfg), "--max-frames", "10"]) == 0
    results = tmp_path / "runs" / "door" / "door.txt"
    summary = results.parent / "summary.json"
    summary.write_text(summary.read_text()[:40])
    caplog.clear()
    assert main(["eval", "--gt", str(gt), "--results", str(results)]) == 0
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"cannot read {summary} (") and "every frame of the ground truth" in warning


def test_eval_of_a_run_still_going_says_so(
    synth: tuple[Path, Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`eval --results` of a camera's file while its run goes on (README's run in one shell, eval in another)
    scored it against the whole ground truth, the frames not reached yet as misses (PETS09-S2L1 after 42 frames:
    HOTA 10.7 for 47), without a word: a running worker has no summary.json yet, and its status.json, which
    says it runs, was not read. The folder as a worker leaves it mid-run: status.json 'running', no summary."""
    _, gt, cfg = synth
    assert main(["run", "--config", str(cfg), "--max-frames", "10"]) == 0
    results = tmp_path / "runs" / "door" / "door.txt"
    (results.parent / "summary.json").unlink()
    status = results.parent / "status.json"
    status.write_text(json.dumps({**json.loads(status.read_text()), "state": "running"}))
    caplog.clear()
    assert main(["eval", "--gt", str(gt), "--results", str(results)]) == 0
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warning.startswith(f"{status} says its run is still going (10 frames so far")
    assert "every frame of the ground truth is scored" in warning
    status.write_text(json.dumps({**json.loads(status.read_text()), "state": "done"}))
    caplog.clear()
    assert main(["eval", "--gt", str(gt), "--results", str(results)]) == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # a run that ended: nothing to say


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["models", "list", "yolov8s-person"], "yolov8s-person"),
        (["models", "list", "--all"], "--all"),
        (["models", "list", "--force"], "--force"),
        (["models", "fetch-boxmot"], "zoo name"),
        (["models", "fetch-boxmot", "--all"], "--all"),
    ],
)
def test_models_options_an_action_would_ignore_are_refused(
    argv: list[str], named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`models list NAME` listed every preset as if NAME were a filter; `models fetch-boxmot` with no name (or
    with --all) fetched nothing and exited 0."""
    assert main([*argv, "--models-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and named in captured.err


def test_scenario_build_options_out_of_bounds_exit_2_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`scenario build ... --fps -3` or `--max-frames -3` exited 1, as a broken input file does, not 2."""
    video = make_video(tmp_path / "v.mp4", frames=3)
    build = ["scenario", "build", "pets09-2cam-overlap", "--video", str(video), "--out", str(tmp_path / "s")]
    assert main([*build, "--fps", "-3", "--no-progress"]) == 2
    assert "--fps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main([*build, "--max-frames", "-3", "--no-progress"])
    assert stop.value.code == 2 and "argument --max-frames" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_run_with_an_option_out_of_bounds_names_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --max-frames -5` said only 'cameras.cam.source.max_frames: ...', a field the user never wrote."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("cameras:\n  cam:\n    source: {uri: x.mp4}\n")
    assert main(["run", "--config", str(cfg), "--max-frames", "-5"]) == 2
    assert "--max-frames (cameras.cam.source.max_frames): Input should be greater" in capsys.readouterr().err


def test_verbose_help_says_what_one_v_does() -> None:
    """The help said `-v, --verbose: More logging (-vv debug)`, but the default is info, so one -v is debug."""
    from daemon.cli import _parse, build_parser

    parser = build_parser()
    assert _parse(parser, ["-v", "config", "schema"]).verbose > 1  # what _setup_logging takes as debug
    text = " ".join(parser.format_help().split())
    assert "-vv" not in text and "-v, --verbose Debug logging" in text


def test_config_schema_refuses_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`config schema my.yaml` printed the schema as if it were my.yaml's (the file was never read)."""
    assert main(["config", "schema", str(tmp_path / "my.yaml")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "config schema takes no FILE" in captured.err


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--gt-noise", "0", "0", "0", "--detections", "det.txt"], "--gt-noise"),  # ran on the gt boxes
        (["--seed", "3"], "--seed"),  # seeds nothing without --gt-noise
        (["--results", "r.txt", "--output", "out"], "--output"),  # the file was scored as it is
        (["--results", "r.txt", "--seed", "3"], "--seed"),
    ],
)
def test_eval_options_it_would_ignore_are_refused(
    extra: list[str], says: str, synth: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`eval --gt-noise ... --detections det.txt` tracked the noisy ground truth, not the det.txt; --seed
    without --gt-noise, and --output with --results, did nothing. Each ran and exited 0."""
    _, gt, cfg = synth
    config = [] if "--results" in extra else ["--config", str(cfg)]
    assert main(["eval", "--gt", str(gt), *config, *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and says in captured.err


def test_help_names_config_defaults_rather_than_copying_them() -> None:
    # `serve --help` said "(default 127.0.0.1)" and "(default 8080)": copies of ServeConfig's defaults that
    # would go on saying so after the config changed; an option's help names the config field instead
    import argparse
    import re

    from daemon.cli import build_parser
    from daemon.config import Settings

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    helps = [(f"{cmd} {a.dest}", a.help or "") for cmd, p in sub.choices.items() for a in p._actions]
    assert not [(where, h) for where, h in helps if re.search(r"\(default:? [\d.]+\)", h)]
    named = [(where, m) for where, h in helps for m in re.findall(r"default: ([a-z_]+)\.([a-z_]+)", h)]
    assert ("serve host", ("serve", "host")) in named and ("serve port", ("serve", "port")) in named
    for where, (section, field) in named:
        model = Settings.model_fields[section].annotation
        assert field in model.model_fields, where  # type: ignore[union-attr]


def test_eval_of_a_fleet_cameras_global_ids_scores_the_frames_it_ran(
    synth: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """`eval --results <camera>.global.txt` (a fleet camera's global ids) took the summary.json beside it for
    another file's, so a run at source.stride 2 that stopped after frame 10 was charged with every frame of the
    ground truth: perfect ids scored IDF1 ~57 instead of 100."""
    _, gt, _ = synth
    cam = tmp_path / "runs" / "door"
    cam.mkdir(parents=True)
    rows = [line for line in gt.read_text().splitlines() if int(line.split(",")[0]) in range(1, 11, 2)]
    (cam / "door.txt").write_text("\n".join(rows) + "\n")
    (cam / "door.global.txt").write_text("\n".join(rows) + "\n")
    outputs = {"mot": str(cam / "door.txt"), "global_mot": str(cam / "door.global.txt")}
    summary = {"v": 1, "last_frame": 8, "stride": 2, "outputs": outputs}
    (cam / "summary.json").write_text(json.dumps(summary))
    m = tmp_path / "m.json"
    assert main(["eval", "--gt", str(gt), "--results", str(cam / "door.global.txt"), "--json", str(m)]) == 0
    scored = json.loads(m.read_text())
    assert scored["Frames"] == 5 and scored["Stride"] == 2  # frames 1, 3, ..., 9: those it ran
    assert scored["IDF1"] == pytest.approx(100.0) and scored["GT_Dets"] == 2 * 5


def test_fleet_s_last_lines_name_a_camera_s_video_segments_as_they_are(tmp_path: Path) -> None:
    # Regression: the fleet's line of what a camera wrote counted the video's segments past the first and put
    # them in place of its first file's name, taken to be annotated.mp4: where that had been removed (the
    # oldest hour of a long run's video, to free the disk) the line named annotated.mp4, which was not there,
    # in place of another file (cam.global.txt), and with no other file it ended the command in an IndexError.
    from daemon.cli import _camera_written

    assert _camera_written("cam", tmp_path) == "nothing written"
    for name in ("annotated-001.mp4", "annotated-002.mp4"):
        (tmp_path / name).write_bytes(b"")
    assert _camera_written("cam", tmp_path) == "annotated-001.mp4 and 1 more segment"
    (tmp_path / "cam.global.txt").write_text("", encoding="utf-8")
    assert _camera_written("cam", tmp_path) == "annotated-001.mp4 and 1 more segment, cam.global.txt"
    (tmp_path / "annotated.mp4").write_bytes(b"")
    assert _camera_written("cam", tmp_path) == "annotated.mp4 and 2 more segments, cam.global.txt"


def test_eval_of_a_config_camera_scores_on_its_ground_truth_setting(
    synth: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`eval --config fleet.yaml --camera X` needed --gt even where the config names the camera's ground truth
    (cameras.X.ground_truth, the file the fleet scores it on): argparse refused the command. --gt defaults to the
    chosen camera's setting (another camera's is not taken), and a camera without one is refused naming it."""
    clip, gt, _ = synth
    first_only = tmp_path / "first-only.txt"
    first_only.write_text("".join(f"{x}\n" for x in gt.read_text().split() if x.split(",")[1] == "1"))
    runs = tmp_path / "runs"
    camera = (
        f"source: {{uri: {clip}}}, detector: {{type: ground-truth, path: {gt}}}, embedder: {{type: none}}"
    )
    cfg = _config(
        tmp_path,
        f"camera_defaults: {{output: {{dir: {runs}, progress: false}}}}\ncameras:\n"
        f"  hall: {{{camera}, ground_truth: {gt}}}\n  door: {{{camera}, ground_truth: {first_only}}}\n"
        f"  yard: {{{camera}}}\n",
    )
    m = tmp_path / "m.json"
    assert main(["eval", "--config", str(cfg), "--camera", "hall", "--json", str(m)]) == 0
    scored = json.loads(m.read_text())
    assert scored["GT_Dets"] == 2 * 25 and scored["IDF1"] == pytest.approx(100.0)
    assert main(["eval", "--config", str(cfg), "--camera", "door", "--json", str(m)]) == 0
    scored = json.loads(m.read_text())
    assert scored["GT_Dets"] == 25 and scored["FP"] == 25  # door's truth: the other person's boxes are FPs
    # --gt-noise detects from the camera's truth too, and --gt still overrides the setting
    assert (
        main(
            ["eval", "--config", str(cfg), "--camera", "door", "--gt-noise", "0", "0", "0", "--json", str(m)]
        )
        == 0
    )
    assert json.loads(m.read_text())["FP"] == 0
    assert main(["eval", "--gt", str(gt), "--config", str(cfg), "--camera", "door", "--json", str(m)]) == 0
    assert json.loads(m.read_text())["GT_Dets"] == 2 * 25
    capsys.readouterr()
    assert main(["eval", "--config", str(cfg), "--camera", "yard"]) == 2
    assert "cameras.yard.ground_truth" in capsys.readouterr().err and not (runs / "yard").exists()
    assert main(["eval", "--results", str(runs / "hall" / "hall.txt")]) == 2
    assert "--gt" in capsys.readouterr().err


@pytest.mark.parametrize("setting", [False, True])
def test_eval_reads_the_ground_truth_before_running_the_camera(
    synth: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: bool
) -> None:
    """`eval --config` read its ground truth only once the camera had run to its end (minutes on a real video):
    a truth that was missing, or not MOTChallenge (0-based frames), was named after the run, its work lost. It
    is read first, as the fleet reads its cameras' (given as --gt or as cameras.<name>.ground_truth)."""
    clip, gt, _ = synth
    zero_based = tmp_path / "zero-based.txt"
    zero_based.write_text(
        "".join(f"{int(x.split(',')[0]) - 1},{x.split(',', 1)[1]}\n" for x in gt.read_text().split())
    )
    truth = f", ground_truth: {zero_based}" if setting else ""
    cfg = _config(
        tmp_path,
        f"cameras:\n  door: {{source: {{uri: {clip}}}, detector: {{type: ground-truth, path: {gt}}}, "
        f"embedder: {{type: none}}, output: {{dir: {tmp_path / 'runs'}, progress: false}}{truth}}}\n",
    )
    given = [] if setting else ["--gt", str(zero_based)]
    assert main(["eval", *given, "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert f"{zero_based}, line 1: frame must be an integer >= 1" in err, err
    assert ("cameras.door.ground_truth: " in err) == setting  # where the path came from
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_eval_running_a_camera_warns_of_a_ground_truth_made_for_another_size(
    tmp_path: Path, synth: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """eval --config ran the camera and scored it on a truth whose boxes lie outside the video's frames (the
    truth of the video at twice the size: every such box a miss) without a word, where the fleet warns of it
    (the same check, daemon.motio.check_truth_size); the camera's own truth is not warned about."""
    _, gt, cfg = synth
    doubled = tmp_path / "doubled.txt"
    rows = [line.split(",") for line in gt.read_text().splitlines()]
    doubled.write_text(
        "".join(",".join([*r[:2], *(str(2 * float(v)) for v in r[2:6]), *r[6:]]) + "\n" for r in rows)
    )
    for truth, warned in ((doubled, True), (gt, False)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="daemon"):
            assert main(["eval", "--config", str(cfg), "--gt", str(truth)]) == 0
        said = [r.getMessage() for r in caplog.records if "lie wholly outside" in r.getMessage()]
        assert len(said) == int(warned), said
        if warned:
            assert said[0].startswith("--gt: ") and str(doubled) in said[0], said[0]
            assert "lie wholly outside the camera's 320x240 frames" in said[0], said[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["adapt", "--no-tracklets", "--reference", "refs", "--out", "head.npz"],
        ["config", "check"],
        ["config", "show"],
    ],
    ids=["adapt", "config check", "config show"],
)
def test_a_default_config_absent_from_the_folder_run_in_is_named_as_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    """`adapt` and `config check` given no config read configs/pets09.yaml from the folder they were run in; run
    anywhere but the repository's root (a service host's /etc/reid-daemon, a home folder) they said "config
    file not found: configs/pets09.yaml", a file the user never named, and nothing of how to give theirs. They
    say it is the default, where it was looked for, and the option that gives one."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "configs/pets09.yaml" in err and "default" in err and str(tmp_path) in err, err
    assert ("--config FILE" if argv[0] == "adapt" else f"config {argv[1]} FILE") in err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("command", "option", "field"),
    [
        ("enroll", "--threshold", "gallery.threshold"),
        ("enroll", "--max-per-label", "gallery.max_per_label"),
        ("serve", "--threshold", "gallery.threshold"),
        ("serve", "--max-per-label", "gallery.max_per_label"),
        ("verify", "--pairs", "recognition.confusable_pairs"),
        ("verify", "--margin-warn", "recognition.margin_warn"),
        ("search", "--threshold", "gallery.threshold"),
        ("enroll", "--label-from", "enroll.label_from"),
        ("enroll", "--recursive", "enroll.recursive"),
        ("run", "--video", "output.video"),
        ("eval", "--video", "output.video"),
        ("embed", "--flip", "embedder.flip_average"),
        ("serve", "--flip", "embedder.flip_average"),
    ],
)
def test_an_options_help_names_the_setting_it_defaults_to(command: str, option: str, field: str) -> None:
    """`verify --help` said `--pairs: Most confusable label pairs to list` and `enroll --help` `--threshold:
    Match threshold stored in a new gallery`, nothing of what is taken without them (5 pairs, 0.5): a newcomer
    could not tell without reading the code. Each names the config setting that gives it, as -k and --every do."""
    import argparse

    from daemon.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    action = next(a for a in sub.choices[command]._actions if option in a.option_strings)
    text = " ".join((action.help or "").split())
    assert "default" in text and field in text, text


def test_the_programs_help_says_what_it_is_in_plain_text() -> None:
    """`reid-daemon --help` began with the module's docstring, "The ``reid-daemon`` command line.": reST markup
    on a terminal, and nothing a newcomer did not know. It says what the program does and how to get a
    command's options."""
    from daemon.cli import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "``" not in text and "re-identification" in text and "COMMAND --help" in text


@pytest.mark.parametrize(
    ("command", "option"), [("forget", "--timeout"), ("who", "--timeout"), ("who", "--listen")]
)
def test_a_default_of_the_command_line_s_own_is_stated_from_the_option(command: str, option: str) -> None:
    """`forget --help` and `who --help` said `--timeout: Seconds to wait for Valkey.`, not how long is waited
    without it (5 s); who's --listen wrote its 2 into the help by hand. Options whose default is the command
    line's own (no config setting gives it) state it from the option itself, so the two cannot disagree."""
    import argparse

    from daemon.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    action = next(a for a in parser._actions if option in a.option_strings)
    text = " ".join(parser.format_help().split())
    assert isinstance(action.help, str) and "%(default)" in action.help
    assert f"({action.default:g}" in text, text


def test_every_argument_of_every_command_has_a_help() -> None:
    """`config --help` listed `{check,show,schema}` and `scenario --help` `{build,list}` with no word of what each
    does (that show fills in every default and hides secrets, that list prints the presets), and `models --help`
    said what fetch and fetch-boxmot do but not list."""
    import argparse

    from daemon.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    bare = [f"{n} {a.dest}" for n, p in sub.choices.items() for a in p._actions if not a.help]
    assert bare == []
    for name, parser in sub.choices.items():
        for action in parser._actions:
            if action.choices is not None and not action.option_strings:  # an action word: each one said
                missing = [c for c in action.choices if f"{c}:" not in " ".join((action.help or "").split())]
                assert missing == [], f"{name} {action.dest}"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--gt-noise", "2", "0", "0"], "--gt-noise JITTER (cameras.door.detector.jitter)"),
        (["--gt-noise", "0", "1.5", "0"], "--gt-noise DROP (cameras.door.detector.drop_rate)"),
        (
            ["--gt-noise", "0", "0", "-1"],
            "--gt-noise FP_PER_FRAME (cameras.door.detector.false_positive_rate)",
        ),
        (["--gt-noise", "0", "0", "0", "--seed", "-1"], "--seed (cameras.door.detector.seed)"),
    ],
)
def test_a_bad_gt_noise_or_seed_is_named_by_its_option(
    extra: list[str], named: str, synth: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`eval --gt-noise 2 0 0` was refused as 'cameras.door.detector.jitter: Input should be less than or equal
    to 1', a setting the user never wrote: the error names the option and which of its three values."""
    _, gt, cfg = synth
    assert main(["eval", "--gt", str(gt), "--config", str(cfg), *extra]) == 2
    captured = capsys.readouterr()
    assert named in captured.err and captured.out == "", captured.err


def test_eval_help_says_what_each_gt_noise_value_is() -> None:
    """`eval --help` gave `--gt-noise JITTER DROP FP_PER_FRAME: Detect from the ground truth with this noise
    instead of a detector.`, nothing of their units (jitter a fraction of the box's size, drop a probability, the
    false boxes a mean count a frame): `--gt-noise 5 20 0`, read as pixels and percent, is refused."""
    import argparse

    from daemon.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = " ".join(sub.choices["eval"].format_help().split())
    for field in ("detector.jitter", "detector.drop_rate", "detector.false_positive_rate"):
        assert field in text, field
    assert "fraction of" in text and "probability" in text and "per frame" in text


@pytest.mark.parametrize("cameras", ["", ",", " , "])
@pytest.mark.parametrize("report_only", [False, True])
def test_fleet_refuses_an_empty_camera_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cameras: str, report_only: bool
) -> None:
    """`fleet --cameras "$CAMS"` with the variable unset (or `--cameras ,`) ran, or reported on, every camera of
    the YAML, and a fleet not in lockstep followed the file as with no --cameras at all: the option was taken
    as absent without a word. It is refused, naming it, before anything starts or is written."""
    cfg = _config(
        tmp_path,
        f"fleet: {{enabled: true}}\nbridge: {{allow_unsigned: true}}\n"
        f"camera_defaults:\n  output: {{dir: {tmp_path / 'runs'}}}\n"
        "cameras:\n  a: {source: {uri: a.mp4}}\n  b: {source: {uri: b.mp4}}\n",
    )
    argv = ["fleet", "--config", str(cfg), "--cameras", cameras, "--no-progress"]
    assert main([*argv, *(["--report-only"] if report_only else [])]) == 2
    err = capsys.readouterr().err
    assert "--cameras is empty" in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml"]


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["embed", "{img}", "--out", ""], "--out"),
        (["search", "{refs}", "--query", "{img}", "--out", ""], "--out"),
        (["models", "list", "--models-dir", ""], "--models-dir"),
        (["embed", "{img}", "--models-dir", "", "--out", "{tmp}/e.npz"], "--models-dir"),
        (
            ["adapt", "--no-tracklets", "--reference", "{refs}", "--out", "{tmp}/h.npz", "--cache-dir", ""],
            "--cache-dir",
        ),
        (["embed", "{img}", "--config", "", "--out", "{tmp}/e.npz"], "--config"),
        (["recognize", "{img}", "--gallery", "{tmp}/g.npz", "--config", ""], "--config"),
    ],
)
def test_an_empty_path_is_refused_not_taken_as_no_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], option: str
) -> None:
    """`embed photos/ --out "$OUT"` with the variable unset embedded, printed and wrote nothing (exit 0), as did
    `search --out ""`; `--models-dir ""` took the default cache, `adapt --cache-dir ""` the default folder and
    `embed --config ""` the default models, each without a word: the option was taken as absent. Each is refused
    naming the option, before any work."""
    refs = tmp_path / "refs"
    refs.mkdir()
    img = refs / "a.jpg"
    import cv2
    import numpy as np

    cv2.imwrite(str(img), np.full((64, 32, 3), 128, np.uint8))
    cfg = _config(tmp_path, "cameras:\n  a:\n    source: {uri: x.mp4}\n")
    args = [a.format(img=img, refs=refs, tmp=tmp_path) for a in argv]
    if args[0] == "adapt":
        args += ["--config", str(cfg)]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert f"{option} is empty" in captured.err and captured.out == "", captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.yaml", "refs"]

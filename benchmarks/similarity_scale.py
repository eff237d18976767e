"""Where an embedder puts one person and two people on a fleet's own video, against the resolver's thresholds.

    python benchmarks/similarity_scale.py --config runs/hand/fleet.gt-boxes.yaml           # every camera
    python benchmarks/similarity_scale.py --config fleet.yaml --cameras lobby,door --max-frames 2000 --json
    python benchmarks/similarity_scale.py --config fleet.yaml --plot runs/scale.png   # and the histograms

The resolver's similarity thresholds (``identity.fleet_threshold``, ``look_only_threshold``,
``switch_similarity``) only mean something on one embedder's scale: the shipped ImageNet embedder keeps every
person within ~0.2 of each other, a ReID-trained model spreads them far apart. This measures the scale without
labels, from each camera's own tracks (its detector and tracker as configured, appearance re-linking off, every
box embedded as the camera's embedder would, so any embedder type works):

* **two people**: tracks seen on one frame together are certainly different people; each such pair is scored as
  the resolver scores a track against an identity (``identity.match_score`` over up to
  ``exemplars_per_track`` exemplars spread over the track, the ``top_exemplars`` best averaged);
* **one person**: the first half of a track against its second half, scored the same way (within one camera,
  so this is the kind side of what a person scores across cameras);
* **looks**: one sampled look against its own track's other exemplars (best cosine), and against the tracks
  beside it (best over them): what ``switch_similarity`` separates.

Then the share of each on the wrong side of the config's thresholds. A tracker's id switch puts two people in
one track: it shows as a few high "two people" scores and low "own track" looks, so read the upper tail of the
first and the lower tail of the second with that in mind. Figures for the scenario replays are in
benchmarks/RESULTS.md ("The similarity scale of an embedder").
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from daemon.adapt import AdaptConfig, FrameTracks, Tracklets, mine_tracklets, pipeline_frames
from daemon.cli import whole_number
from daemon.config import IdentityConfig, Settings, load_settings, with_overrides
from daemon.errors import ConfigError, DaemonError, exit_code
from daemon.identity.profile import set_similarity
from daemon.sources import source_kind
from daemon.types import FloatArray, ImageBGR

QUANTILES = (0.01, 0.05, 0.1, 0.5, 0.9, 0.95, 0.99)
FRAME_LIMIT = whole_number(0, "frames", zero="no limit")  # --max-frames, as the CLI's


class _PipelineLooks:
    """The miner's embedder: every box already has the pipeline's look (``embedder.policy: all``); a box
    without one (none computed) gets a zero row, dropped afterwards."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def embed(self, image: ImageBGR, xyxy: FloatArray) -> FloatArray:
        return np.zeros((len(xyxy), self.dim), np.float32)

    def embed_crops(self, crops: Any) -> FloatArray:
        raise RuntimeError("similarity_scale does not augment crops")


@dataclass(frozen=True)
class Scale:
    """Scores of one fleet's tracks (see the module docstring)."""

    two_people: NDArray[np.float64]
    one_person: NDArray[np.float64]
    look_own: NDArray[np.float64]
    look_beside: NDArray[np.float64]
    tracks: int


def _spread(rows: NDArray[np.intp], k: int) -> NDArray[np.intp]:
    """Up to ``k`` of ``rows`` spread evenly over them (a track's exemplars over its life)."""
    return rows[np.unique(np.linspace(0, len(rows) - 1, min(k, len(rows))).round().astype(np.intp))]


def scale_of(tracklets: Tracklets, cfg: IdentityConfig) -> Scale:
    """Scores of every co-occurring pair, track half and sampled look of ``tracklets`` (pure)."""
    raw = tracklets.features.astype(np.float32)
    norms = np.linalg.norm(raw, axis=1)
    ok = norms > 0
    feats = (raw / np.where(ok, norms, 1.0)[:, None]).astype(np.float32)
    rows = [np.flatnonzero((tracklets.labels == t) & ok) for t in range(tracklets.num_tracks)]
    k, how, top = cfg.exemplars_per_track, cfg.match_score, cfg.top_exemplars
    ex = [feats[_spread(r, k)] for r in rows]
    co = tracklets.cooccur
    two = [
        set_similarity(ex[a] @ ex[b].T, how, top)
        for a, b in itertools.combinations(range(len(rows)), 2)
        if co[a, b] and len(rows[a]) and len(rows[b])
    ]
    one = [
        set_similarity(feats[_spread(r[: len(r) // 2], k)] @ feats[_spread(r[len(r) // 2 :], k)].T, how, top)
        for r in rows
        if len(r) >= 4
    ]
    own: list[NDArray[np.float32]] = []
    beside: list[NDArray[np.float32]] = []
    for t, r in enumerate(rows):
        if len(r) >= 2:  # each look's best match among the track's other looks
            gram = feats[r] @ feats[r].T
            np.fill_diagonal(gram, -np.inf)
            own.append(gram.max(axis=1))
        mates = [ex[b] for b in np.flatnonzero(co[t]) if len(rows[b])]
        if mates and len(r):  # and among the exemplars of every track seen with it
            beside.append((feats[r] @ np.concatenate(mates).T).max(axis=1))
    return Scale(np.array(two), np.array(one), _flat(own), _flat(beside), len(rows))


def _flat(parts: list[NDArray[np.float32]]) -> NDArray[np.float64]:
    return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)


def _frames_with_looks(
    frames: Iterable[tuple[ImageBGR, FrameTracks]], looks: _PipelineLooks
) -> Iterator[tuple[ImageBGR, FrameTracks]]:
    """The frames, with ``looks.dim`` set from the first frame that carries the pipeline's embeddings."""
    for image, ft in frames:
        if ft.embeddings is not None and ft.embeddings.size:
            looks.dim = int(ft.embeddings.shape[1])
        if looks.dim:
            yield image, ft


def check_camera(settings: Settings, camera: str) -> None:
    """ConfigError naming the problem when the camera cannot be measured: unknown, no embedder, or a live
    stream or a looping file with no frame limit (it would never end)."""
    if camera not in settings.cameras:
        raise ConfigError(f"no camera {camera!r} in the config (cameras: {', '.join(settings.cameras)})")
    cam = settings.cameras[camera]
    if cam.embedder.type == "none":
        raise ConfigError(f"camera {camera} has no embedder (embedder.type: none): nothing to measure")
    kind = source_kind(cam.source)
    if kind not in ("file", "folder") and not cam.source.max_frames:
        raise ConfigError(
            f"camera {camera} reads a live {kind} source: give --max-frames to bound the recording"
        )
    if cam.source.loop and not cam.source.max_frames:
        raise ConfigError(f"camera {camera} loops its video (source.loop): give --max-frames to bound it")


def camera_tracklets(settings: Settings, camera: str, mining: AdaptConfig, progress: bool) -> Tracklets:
    """Sampled looks of the camera's own tracks, every box embedded by the camera's embedder."""
    settings = with_overrides(settings, camera, {"embedder.policy": "all"})
    looks = _PipelineLooks(0)
    frames = _frames_with_looks(pipeline_frames(settings, camera, progress=progress), looks)
    return mine_tracklets(frames, looks, mining)


def _pooled(parts: list[Scale]) -> Scale:
    def cat(name: str) -> NDArray[np.float64]:
        return np.concatenate([getattr(p, name) for p in parts]) if parts else np.zeros(0)

    return Scale(
        cat("two_people"),
        cat("one_person"),
        cat("look_own"),
        cat("look_beside"),
        sum(p.tracks for p in parts),
    )


def _share(values: NDArray[np.float64], above: float, below: bool = False) -> float | None:
    """The share of ``values`` at or above ``above`` (under it with ``below``); None when there are none."""
    if not len(values):
        return None
    return float(np.mean(values < above if below else values >= above))


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.1%}"


def summary(scale: Scale, cfg: IdentityConfig) -> dict[str, Any]:
    """Quantiles of each score, and the share of each on the wrong side of ``cfg``'s thresholds."""

    def qs(v: NDArray[np.float64]) -> dict[str, float]:
        if not len(v):
            return {}
        return {
            "n": len(v),
            "max": float(v.max()),
            **{f"q{q:g}": float(np.quantile(v, q)) for q in QUANTILES},
        }

    return {
        "tracks": scale.tracks,
        "two_people": qs(scale.two_people),
        "one_person": qs(scale.one_person),
        "look_own_track": qs(scale.look_own),
        "look_tracks_beside": qs(scale.look_beside),
        "thresholds": {
            "fleet_threshold": cfg.fleet_threshold,
            "look_only_threshold": cfg.look_only_threshold,
            "switch_similarity": cfg.switch_similarity,
        },
        "two_people_at_or_above_fleet_threshold": _share(scale.two_people, cfg.fleet_threshold),
        "two_people_at_or_above_look_only_threshold": _share(scale.two_people, cfg.look_only_threshold),
        "one_person_below_fleet_threshold": _share(scale.one_person, cfg.fleet_threshold, below=True),
        "own_looks_below_switch_similarity": _share(scale.look_own, cfg.switch_similarity, below=True),
        "looks_beside_at_or_above_switch_similarity": _share(scale.look_beside, cfg.switch_similarity),
    }


def _line(name: str, q: dict[str, float]) -> str:
    if not q:
        return f"{name}: none"
    return f"{name} (n={q['n']}): " + "  ".join(f"{k} {v:.3f}" for k, v in q.items() if k != "n")


def text(s: dict[str, Any]) -> list[str]:
    t = s["thresholds"]
    return [
        f"{s['tracks']} tracks",
        _line("two people seen together, track vs track", s["two_people"]),
        _line("one person, track half vs half", s["one_person"]),
        _line("a look vs its own track", s["look_own_track"]),
        _line("a look vs the tracks beside it", s["look_tracks_beside"]),
        f"fleet_threshold {t['fleet_threshold']:g}: two people at or above "
        f"{_pct(s['two_people_at_or_above_fleet_threshold'])}, one person below "
        f"{_pct(s['one_person_below_fleet_threshold'])}",
        f"look_only_threshold {t['look_only_threshold']:g}: two people at or above "
        f"{_pct(s['two_people_at_or_above_look_only_threshold'])}",
        f"switch_similarity {t['switch_similarity']:g}: own-track looks below "
        f"{_pct(s['own_looks_below_switch_similarity'])}, looks beside at or above "
        f"{_pct(s['looks_beside_at_or_above_switch_similarity'])}",
    ]


def plot(scale: Scale, cfg: IdentityConfig, path: Path, title: str) -> Path:
    """Histograms of the four scores with the config's thresholds marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    bins = np.linspace(-0.2, 1.0, 61)
    for ax, parts, lines in (
        (
            top,
            [
                ("two people seen together", scale.two_people, "tab:red"),
                ("one person, half vs half", scale.one_person, "tab:green"),
            ],
            [
                ("fleet_threshold", cfg.fleet_threshold, "k"),
                ("look_only_threshold", cfg.look_only_threshold, "0.5"),
            ],
        ),
        (
            bottom,
            [
                ("a look vs tracks beside it", scale.look_beside, "tab:red"),
                ("a look vs its own track", scale.look_own, "tab:green"),
            ],
            [("switch_similarity", cfg.switch_similarity, "k")],
        ),
    ):
        for label, values, colour in parts:
            if len(values):
                ax.hist(
                    values,
                    bins=bins,
                    density=True,
                    alpha=0.5,
                    color=colour,
                    label=f"{label} (n={len(values)})",
                )
        for label, x, colour in lines:
            ax.axvline(x, color=colour, linestyle="--", label=f"{label} {x:g}")
        ax.set_ylabel("density")
        ax.legend(fontsize=8, loc="upper left")
    top.set_title(title, fontsize=9)
    bottom.set_xlabel(
        "cosine similarity (top: track vs track, the resolver's set score; bottom: one look's best match)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, type=Path, help="Fleet (or camera) YAML.")
    p.add_argument("--cameras", default="", help="Comma-separated camera names (default: all).")
    p.add_argument(
        "--max-frames", type=FRAME_LIMIT, default=0, help="Frames per camera (0: the whole source)."
    )
    p.add_argument("--min-height", type=float, default=0.0, help="Skip boxes shorter than this (px).")
    p.add_argument("--json", action="store_true", help="One JSON object instead of text.")
    p.add_argument("--plot", type=Path, help="Also draw the histograms and thresholds to this PNG.")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        mining = AdaptConfig(min_height=args.min_height, min_score=0.0, max_covered=0.3)
    except ValidationError as e:
        p.error("; ".join(f"--min-height: {err['msg']}" for err in e.errors()))
    try:
        settings = load_settings(args.config)
        named = [c.strip() for c in args.cameras.split(",") if c.strip()]
        cameras = list(dict.fromkeys(named)) or list(settings.cameras)  # each camera once, in the order given
        parts = []
        for cam in cameras:
            if args.max_frames and cam in settings.cameras:
                settings = with_overrides(settings, cam, {"source.max_frames": args.max_frames})
            check_camera(settings, cam)
            tracklets = camera_tracklets(settings, cam, mining, not args.no_progress)
            parts.append(scale_of(tracklets, settings.identity))
    except DaemonError as e:  # 2 for the config, 1 for a model or source that fails, as the CLI
        print(f"error: {e}", file=sys.stderr)
        return exit_code(e)
    pooled = _pooled(parts)
    if not pooled.tracks:  # every figure would be nan
        print(
            f"nothing to measure: no track in {', '.join(cameras)} (--min-height {args.min_height:g}, "
            f"--max-frames {args.max_frames or 'none'}); give more frames or a lower --min-height",
            file=sys.stderr,
        )
        return 2
    s = summary(pooled, settings.identity)
    s["config"], s["cameras"] = str(args.config), cameras
    if args.plot:
        s["plot"] = str(plot(pooled, settings.identity, args.plot, f"{args.config} ({', '.join(cameras)})"))
    if args.json:
        print(json.dumps(s))
    else:
        print(f"{args.config}: cameras {', '.join(cameras)}")
        print("\n".join(text(s)))
        if args.plot:
            print(f"plot: {s['plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

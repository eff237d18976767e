"""Does a head adapted to the site help retrieval? mAP / rank-1 on PETS09-S2L1, trained on the first part only.

    python benchmarks/adapt_bench.py [--split 400] [--seeds 0 1 2] [--out runs/adapt-bench]

Training data (frames before --split only; nothing from the evaluated part):
* tracklets: our detector + tracker (--config, appearance re-linking off) over frames [0, split); no labels;
* reference: a labelled folder built from ground-truth crops of frames [0, split) (--refs-per-id crops per
  person, evenly spaced in time, at least --min-height px tall), written as ``person_<id>--<k>.png``;
* both: the two together.
Evaluation: ground-truth crops of frames [split, end), split into query/gallery by alternating time segments
with a junk window (``daemon/retrieval.py`` says exactly how), embedded once by the frozen model; each head
is applied to those features in numpy, exactly as the embedder applies ``embedder.head`` (checked below).
Rows "centred" (minus the tracklet mean feature) and "PCA init" (the untrained head) show what part of the
gain needs no training. Trained heads are reported as the mean (and min-max) over --seeds.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pets_clip import GT, VIDEO, absent_hint, models_dir, positive_int
from pydantic import ValidationError

from daemon.adapt import (
    AdaptConfig,
    BaseModelInfo,
    LabelledFeatures,
    ProjectionHead,
    Tracklets,
    base_info,
    collect_tracklets,
    init_head_arrays,
    list_reference,
    reference_features,
    save_head,
    train_head,
)
from daemon.config import Settings, load_settings, with_overrides
from daemon.embed import OnnxEmbedder, crop_boxes
from daemon.errors import ConfigError, DaemonError, exit_code
from daemon.motio import MotGroundTruth, read_ground_truth, xywh_to_xyxy
from daemon.retrieval import (
    CropSet,
    Embedded,
    RetrievalScore,
    RetrievalSplit,
    SplitConfig,
    build_split,
    embed_crop_sets,
    evaluate,
)
from daemon.types import FloatArray

ROOT = Path(__file__).resolve().parents[1]
Transform = Callable[[FloatArray], FloatArray]
FLAGS = {  # SplitConfig / AdaptConfig field -> the option that sets it
    "start": "--split",
    "end": "--end",
    "segment": "--segment",
    "query_stride": "--stride",
    "gallery_stride": "--stride",
    "min_height": "--min-height",
    "junk_frames": "--junk",
    "steps": "--steps",
    "dim": "--dim",
    "seed": "--seeds",
}


# ------------------------------------------------------------------------------------------ training data


def reference_picks(
    gt: MotGroundTruth, end: int, per_id: int, min_h: float
) -> dict[int, list[tuple[int, int]]]:
    """0-based frame -> [(gt row, variant k)]: ``per_id`` rows per person of frames [0, end), evenly spaced."""
    f0 = gt.frame - 1
    keep = gt.consider & (f0 < end) & (gt.xywh[:, 3] >= min_h)
    out: dict[int, list[tuple[int, int]]] = {}
    for pid in np.unique(gt.track_id[keep]):
        rows = np.flatnonzero(keep & (gt.track_id == pid))
        pick = rows[np.linspace(0, len(rows) - 1, min(per_id, len(rows))).round().astype(int)]
        for k, r in enumerate(np.unique(pick)):
            out.setdefault(int(f0[r]), []).append((int(r), k))
    return out


def write_reference(
    gt: MotGroundTruth, video: Path, picks: dict[int, list[tuple[int, int]]], out: Path
) -> int:
    """Write the picked gt crops as ``person_<id>--<k>.png`` into ``out`` (emptied first)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    cap = cv2.VideoCapture(str(video))
    written, index, last = 0, 0, max(picks, default=-1)
    while index <= last:
        ok, image = cap.read()
        if not ok:
            raise SystemExit(f"{video} ended at frame {index}, before frame {last}")
        for r, k in picks.get(index, []):
            crop = crop_boxes(np.asarray(image, np.uint8), xywh_to_xyxy(gt.xywh[r : r + 1]))[0]
            cv2.imwrite(str(out / f"person_{int(gt.track_id[r]):03d}--{k:02d}.png"), crop)
            written += 1
        index += 1
    cap.release()
    return written


# ------------------------------------------------------------------------------------------ evaluation


class EvalData(NamedTuple):
    split: RetrievalSplit
    query: Embedded
    gallery: Embedded
    unseen: np.ndarray  # queries of people absent from the training part's ground truth


def split_config(args: argparse.Namespace) -> SplitConfig:
    return SplitConfig(
        start=args.split,
        end=args.end,
        segment=args.segment,
        query_stride=args.stride,
        gallery_stride=args.stride,
        min_height=args.min_height,
        junk_frames=args.junk,
    )


def eval_data(args: argparse.Namespace, embedder: OnnxEmbedder) -> EvalData:
    gt = read_ground_truth(args.gt)
    split = build_split(gt, split_config(args))
    q, g = embed_crop_sets(args.video, [split.query, split.gallery], embedder, progress=args.progress)
    seen = np.unique(gt.track_id[gt.consider & (gt.frame - 1 < args.split)])
    return EvalData(
        split,
        Embedded(q, split.query.ids, split.query.frames),
        Embedded(g, split.gallery.ids, split.gallery.frames),
        ~np.isin(split.query.ids, seen),
    )


class Scores(NamedTuple):
    all: RetrievalScore
    unseen: RetrievalScore


def score(data: EvalData, transform: Transform | None) -> Scores:
    q, g = data.query, data.gallery
    if transform is not None:
        q = Embedded(transform(q.features), q.ids, q.frames)
        g = Embedded(transform(g.features), g.ids, g.frames)
    u = data.unseen
    q_unseen = Embedded(q.features[u], q.ids[u], q.frames[u])
    return Scores(evaluate(q, g, data.split.junk_frames), evaluate(q_unseen, g, data.split.junk_frames))


def centred(mean: FloatArray) -> Transform:
    def f(x: FloatArray) -> FloatArray:
        c = x - mean
        out: FloatArray = (c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        return out

    return f


# ------------------------------------------------------------------------------------------ runs


class Row(NamedTuple):
    name: str
    scores: list[Scores]
    note: str = ""

    def cells(self, base: Scores | None) -> str:
        m = np.array([s.all.mean_ap for s in self.scores]) * 100
        r1 = np.array([s.all.rank1 for s in self.scores]) * 100
        r5 = np.array([s.all.rank(5) for s in self.scores]) * 100
        mu = np.array([s.unseen.mean_ap for s in self.scores]) * 100
        r1u = np.array([s.unseen.rank1 for s in self.scores]) * 100
        spread = f" ({m.min():.1f}–{m.max():.1f})" if len(m) > 1 else ""
        delta = f"{m.mean() - 100 * base.all.mean_ap:+.1f}" if base is not None else "–"
        delta_u = f"{mu.mean() - 100 * base.unseen.mean_ap:+.1f}" if base is not None else "–"
        return (
            f"| {self.name} | {m.mean():.1f}{spread} | {delta} | {r1.mean():.1f} | {r5.mean():.1f} | "
            f"{mu.mean():.1f} ({delta_u}) | {r1u.mean():.1f} | {len(self.scores)} | {self.note} |"
        )


def load_bench_settings(args: argparse.Namespace) -> tuple[Settings, str]:
    """--config's only camera, reading --video up to --split. ConfigError when it is not one camera."""
    settings = load_settings(args.config, models_dir=str(args.models_dir))
    if len(settings.cameras) != 1:  # adapt_bench has no --camera to choose one
        raise ConfigError(
            f"{args.config} holds cameras {', '.join(settings.cameras)}; --config takes a config of one camera"
        )
    (name,) = settings.cameras
    updates = {"source.uri": str(args.video), "source.max_frames": args.split, "output.progress": False}
    return with_overrides(settings, name, updates), name


def train_rows(
    args: argparse.Namespace,
    base: BaseModelInfo,
    tracklets: Tracklets,
    reference: LabelledFeatures,
    data: EvalData,
) -> tuple[list[Row], ProjectionHead]:
    rows: list[Row] = []
    last: ProjectionHead | None = None
    for name, t, r in (
        ("head: reference folder (gt crops, part 1)", None, reference),
        ("head: tracklets (no labels)", tracklets, None),
        ("head: tracklets + reference", tracklets, reference),
    ):
        scores, secs = [], []
        for seed in args.seeds:
            cfg = AdaptConfig(**{**args.adapt, "seed": seed})
            head, report = train_head(t, r, base, cfg, progress=False)
            scores.append(score(data, head.apply))
            secs.append(report.seconds)
            if t is not None and r is None:
                last = head
        rows.append(Row(name, scores, f"train {np.mean(secs):.1f} s"))
    assert last is not None
    return rows, last


def check_embedder_applies_head(
    args: argparse.Namespace, settings: Settings, name: str, head: ProjectionHead, data: EvalData
) -> float:
    """Largest |difference| between the embedder with ``embedder.head`` and head.apply on raw features."""
    path = save_head(head, args.out / "head-tracklets.npz")
    ecfg = settings.cameras[name].embedder.model_copy(update={"head": path})
    with_head = OnnxEmbedder(ecfg, settings.runtime, settings.models_dir)
    n = min(16, len(data.split.query))
    sub = data.split.query
    few = CropSet(sub.frames[:n], sub.ids[:n], sub.xyxy[:n])
    (direct,) = embed_crop_sets(args.video, [few], with_head, progress=False)
    return float(np.abs(direct - head.apply(data.query.features[:n])).max())


def run(args: argparse.Namespace, settings: Settings, name: str) -> int:
    t0 = time.perf_counter()
    embedder = OnnxEmbedder(settings.cameras[name].embedder, settings.runtime, settings.models_dir)
    base = base_info(embedder, settings.cameras[name].embedder.model, embedder.model_path)
    cfg = AdaptConfig(**args.adapt)
    tracklets = collect_tracklets(
        settings, name, embedder, base, cfg, cache_dir=args.out / "cache", progress=args.progress
    )
    gt = read_ground_truth(args.gt)
    picks = reference_picks(gt, args.split, args.refs_per_id, args.min_height)
    written = write_reference(gt, args.video, picks, args.out / "reference")
    paths, labels = list_reference(args.out / "reference")
    reference = reference_features(paths, labels, embedder, progress=args.progress)
    data = eval_data(args, embedder)
    raw = score(data, None)
    init = init_head_arrays(tracklets.features, cfg, np.random.default_rng(0))
    pca = ProjectionHead.from_arrays(init)
    rows = [
        Row("raw embedder (MobileNetV2-ImageNet, 1280-d)", [raw]),
        Row("centred on the tracklet mean (no training)", [score(data, centred(init["mean"]))]),
        Row(f"PCA init of the head ({cfg.dim}-d, no training)", [score(data, pca.apply)]),
    ]
    trained, head = train_rows(args, base, tracklets, reference, data)
    rows += trained
    diff = check_embedder_applies_head(args, settings, name, head, data)
    report(args, tracklets, reference, written, data, rows, raw, diff, time.perf_counter() - t0)
    return 0


def report(
    args: argparse.Namespace,
    tracklets: Tracklets,
    reference: LabelledFeatures,
    written: int,
    data: EvalData,
    rows: list[Row],
    raw: Scores,
    diff: float,
    seconds: float,
) -> None:
    s = tracklets.summary()
    lines = [
        f"Command: `{' '.join([sys.executable, *sys.argv])}`",
        "",
        f"Training part: frames 0-{args.split - 1}. Tracklets (no labels): {s['samples']} samples of "
        f"{s['tracks']} tracks, {s['cliques']} co-occurrence cliques, {s['co_occurring_pairs']} co-occurring "
        f"pairs, from {s['frames_read']} frames. Reference folder: {written} gt crops of "
        f"{len(reference.names)} people (frames < {args.split}).",
        f"Evaluated part: frames {args.split}-{args.end - 1 if args.end else 'end'}. {data.split.describe()}.",
        f"Queries from even {args.segment}-frame segments, gallery from odd ones, every {args.stride}th frame, "
        f"boxes >= {args.min_height:g} px; same-identity gallery crops within ±{args.junk} frames of the query "
        "are junk; AP non-interpolated; mAP over queries with a true match left.",
        f"Unseen people: {int(data.unseen.sum())} queries of "
        f"{len(np.unique(data.query.ids[data.unseen]))} identities absent from the training part's gt.",
        f"Head settings: {AdaptConfig(**args.adapt).model_dump(exclude={'seed'})}; seeds {args.seeds}.",
        f"Embedder with `embedder.head` vs head.apply on raw features: max |diff| {diff:.2e}.",
        "",
        "| features | mAP (seed min–max) | ΔmAP vs raw | rank-1 | rank-5 | mAP unseen people (Δ) | "
        "rank-1 unseen | runs | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [r.cells(None if r.scores[0] is raw else raw) for r in rows]
    lines += ["", f"Total {seconds:.0f} s."]
    text = "\n".join(lines)
    print(text)
    (args.out / "results.md").write_text(text + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--video", type=Path, default=VIDEO)
    p.add_argument("--gt", type=Path, default=GT)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "pets09.yaml")
    p.add_argument("--models-dir", type=Path, default=models_dir())
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "adapt-bench")
    p.add_argument("--split", type=int, default=400, help="First 0-based frame of the evaluated part.")
    p.add_argument("--end", type=int, default=0, help="End of the evaluated part (0 = the clip's end).")
    p.add_argument("--segment", type=int, default=50, help="Query/gallery time segment length (frames).")
    p.add_argument("--stride", type=int, default=5, help="Take eval crops on every Nth frame.")
    p.add_argument("--junk", type=int, default=25, help="Junk window around a query (frames).")
    p.add_argument("--min-height", type=float, default=50.0, help="Smallest gt box used (px).")
    p.add_argument(
        "--refs-per-id", type=positive_int, default=8, help="Reference crops per person (gt, part 1)."
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, help="Training steps (default: AdaptConfig's).")
    p.add_argument("--dim", type=int, help="Head output dim (default: AdaptConfig's).")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    args = p.parse_args(argv)
    args.adapt = {k: v for k, v in (("steps", args.steps), ("dim", args.dim)) if v is not None}
    try:
        split_config(args)
        for seed in args.seeds:
            AdaptConfig(**args.adapt, seed=seed)
    except ValidationError as e:  # once each: --stride sets two fields
        p.error(
            "; ".join(
                dict.fromkeys(
                    f"{FLAGS.get(str(err['loc'][0]) if err['loc'] else '', '--split/--end')}: {err['msg']}"
                    for err in e.errors()
                )
            )
        )
    if not args.video.is_file() or not args.gt.is_file():
        print(f"missing {args.video} or {args.gt}{absent_hint(args.video, args.gt)}", file=sys.stderr)
        return 2
    try:
        settings, name = load_bench_settings(args)
        split = build_split(read_ground_truth(args.gt), split_config(args))
    except DaemonError as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_code(e)
    if not len(split.query) or not len(split.gallery):  # every score would be nan
        print(
            f"nothing to score: the evaluated part gives {split.describe()}; "
            "make it longer (--split, --end) or --segment shorter",
            file=sys.stderr,
        )
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        return run(args, settings, name)
    except DaemonError as e:  # a model absent or broken (exit 1, as the CLI's): its message says what to do
        print(f"error: {e}", file=sys.stderr)
        return exit_code(e)


if __name__ == "__main__":
    raise SystemExit(main())

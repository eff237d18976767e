"""The identity report of a fleet run (who was seen where and when) and its scoring against a scenario's truth.

``build_report`` reads each camera's ``identities.json`` (written by the worker in fleet mode; with those of
its rotated files, and of its earlier runs where global ids are fleet-wide: ``identity_tables``) and writes
``report.json`` (every global id: label, cameras with first/last seen, frames and sighting spans), ``report.md``
(a summary, the timeline, the same as tables; the scores are appended when the run is scored) and
``timeline.png`` (one row per identity, those on most cameras first, at most TIMELINE_MAX_ROWS; a bar per
sighting span: an id absent from a camera longer than its ``output.sighting_gap_s`` gets a new bar). Times are
seconds since the fleet's first frame (the earliest ``first_frame_time`` of the tables), as fleet.mp4's banner
counts them, so a time of the report can be looked up in the video, unless the report covers more than the video
(earlier runs: the video shows the latest run, its rotated files included), where report.md says where the video's
0.0 s falls (``video_origin``); tables written before they recorded it
count from the first sighting, and say so (``time_base``), as do tables of both kinds where an older one
saw someone before the first recorded frame (never a negative time).
``evaluate_run`` scores the run with :func:`daemon.fleet_eval.evaluate_fleet` against each camera's ground truth:
the files the config names (``cameras.<name>.ground_truth``: a user's own recordings) or, for a config that sits
in a scenario folder, ``<camera>.gt.txt`` beside it (``scenario_truths``; ``evaluate_scenario``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from daemon.embedding import LEFTOVER_AGE_S, atomic_write, remove_leftovers, temp_stem
from daemon.errors import DataError
from daemon.fleet import IDENTITY_TABLE_REFRESH_S, merge_spans
from daemon.fleet_eval import CameraRun, counted, evaluate_fleet
from daemon.motio import read_sequence_truth
from daemon.outputs import (
    VIDEO,
    json_object,
    run_extent,
    run_first_frame,
    run_folders,
    run_results,
    video_segment,
    video_segments,
)
from daemon.tempdirs import Leftovers

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

TIMELINE_MAX_ROWS = 40
TIMELINE_MIN_BAR = 0.004  # the shortest bar of the timeline, as a part of its length (~3 px of the plot)
TIMELINE_UNITS = ((1200.0, "seconds", 1.0), (43200.0, "minutes", 60.0), (345600.0, "hours", 3600.0))
FROM_FIRST_FRAME = "s since the fleet's first frame"
FROM_FIRST_SIGHTING = "s since the first sighting"
REPORT_FILES: Final = ("report.json", "report.md", "timeline.png", "fleet_metrics.json", "fleet_metrics.txt")
"""The report's files in the output root, each written whole with ``atomic_write``."""


MOSAIC_FILE: Final = "fleet.mp4"
"""The cameras side by side in the output root (daemon/fleet_mosaic.py), written whole through its temporary
file ``.fleet.mp4.<12 hex>.tmp.mp4`` (``fleet_mosaic.temp_video``)."""


def remove_report_leftovers(out: Path) -> Leftovers:
    """The temporary files of the report's files (``REPORT_FILES``) and of the mosaic (``MOSAIC_FILE``) that a
    fleet, or a ``forget`` making its report again, killed while it wrote one left in the output root ``out``,
    removed once ``LEFTOVER_AGE_S`` old: no lock that every writer of them takes is held (a ``forget`` may be
    writing one now; a live mosaic's file is written to all along). Nothing else of that pattern there: the
    cameras' folders and their files are their workers'."""
    ours = {temp_stem(f) for f in REPORT_FILES}
    before = time.time() - LEFTOVER_AGE_S
    mosaic = temp_stem(MOSAIC_FILE)
    suffix = Path(MOSAIC_FILE).suffix
    return remove_leftovers(out, ours.__contains__, before=before) + remove_leftovers(
        out, mosaic.__eq__, before=before, suffix=suffix
    )


def _table_doc(path: Path) -> dict[str, Any]:
    """An identity table as written; DataError naming the file when it is not one."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read the identity table {path}: {e}") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("identities"), dict):
        raise DataError(f"{path}: not an identity table (no 'identities' mapping)")
    return doc


Tables = dict[
    str, list[tuple[Path, dict[str, Any]]]
]  # camera -> its identity tables (path, as read), oldest first


def read_tables(camera_dirs: dict[str, Path], earlier_runs: bool = False) -> Tables:
    """Every camera's ``identity_tables``, each read once (DataError naming a file that is not one)."""
    return {
        cam: [(path, _table_doc(path)) for path in identity_tables(d, earlier_runs)]
        for cam, d in camera_dirs.items()
    }


def _number(v: Any) -> float | None:
    """A table's number (a bool or anything else is not one: None)."""
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _first_frame_time(doc: dict[str, Any]) -> float | None:
    """The fleet time of the first frame the table's camera wrote; None in a table from before it was recorded
    (or one naming no number)."""
    return _number(doc.get("first_frame_time"))


def run_first_frames(camera_dirs: dict[str, Path]) -> dict[str, float | None]:
    """Each camera's ``first_frame_time`` in the oldest identity table of its run (``identity_tables``: the files
    it rotated included), from which fleet.mp4 places its tiles; None for a camera that left no table or whose
    table does not record it."""
    firsts: dict[str, float | None] = {}
    for cam, d in camera_dirs.items():
        tables = identity_tables(d)
        firsts[cam] = _first_frame_time(_table_doc(tables[0])) if tables else None
    return firsts


def run_videos(camera_dir: Path) -> list[tuple[Path, float | None]]:
    """A camera's annotated videos of its run, oldest first (its folder's and those of the ``earlier-*`` folders
    its run rotated its files into, as ``identity_tables``; each folder's segments in order, ``video_segments``),
    the first of a folder with the ``first_frame_time`` of the identity table beside it (None where there is none,
    or it does not record it), the later segments with None: each follows the one before it. Segments past one
    that was removed (the oldest hour of video, to free the disk) are left out, with a warning: where they begin
    is not known."""
    videos: list[tuple[Path, float | None]] = []
    for folder in run_folders(camera_dir):
        table = folder / "identities.json"
        segments = _placeable(folder, video_segments(folder))
        if segments:
            first = _first_frame_time(_table_doc(table)) if table.is_file() else None
            videos += [(segments[0], first), *((v, None) for v in segments[1:])]
    return videos


def _placeable(folder: Path, segments: list[Path]) -> list[Path]:
    """``segments`` of ``folder`` up to the first one missing (annotated.mp4, annotated-001.mp4, ...): a segment
    begins where the one before it ends, and the first where the folder's table says; a warning names those left
    out."""
    n = 0
    while n < len(segments) and segments[n] == video_segment(folder / VIDEO, n):
        n += 1
    if n < len(segments):
        missing = video_segment(folder / VIDEO, n).name
        log.warning(
            "%s: %s is not there, so where %s and the %d after it begin is not known: left out of fleet.mp4",
            folder,
            missing,
            segments[n].name,
            len(segments) - n - 1,
        )
    return segments[:n]


def fleet_start(tables: Tables) -> float | None:
    """The fleet time of the fleet's first frame: the earliest ``first_frame_time`` of the cameras' tables
    (``read_tables``); None when no table records one, or when a table that does not (written by a version
    before it was recorded: an earlier run, a camera not yet upgraded) saw someone before it, where the first
    frame is not known."""
    recorded: list[float] = []
    unrecorded: list[float] = []  # the first sightings of the tables that do not record their first frame
    for path, doc in (table for camera in tables.values() for table in camera):
        if (t := _first_frame_time(doc)) is not None:
            recorded.append(t)
        else:
            rows = doc["identities"].items()
            unrecorded += (_sighting(path, gid, row)[2]["first_seen"] for gid, row in rows)
    start = min(recorded, default=None)
    if start is None or min(unrecorded, default=start) < start:
        return None
    return start


def identity_tables(camera_dir: Path, earlier_runs: bool = False) -> list[Path]:
    """A camera's ``identities.json`` files, oldest first, in its ``run_folders``: each table of a rotated folder
    holds what was seen since the rotation before."""
    tables = [p / "identities.json" for p in run_folders(camera_dir, earlier_runs)]
    return [t for t in tables if t.is_file()]


def collect(tables: Tables) -> dict[int, dict[str, Any]]:
    """Global id -> {label, cameras: {camera: {first_seen, last_seen, frames, tracks, spans}}} over all cameras
    and their tables (``read_tables``; one identity over several: first and last of all, frames summed, tracks and
    spans joined, those of a camera no more than its ``sighting_gap_s`` apart as one: a sighting across a rotation
    of the files). A table written before spans were recorded gives one span, first to last."""
    people: dict[int, dict[str, Any]] = {}
    for cam, read in tables.items():
        gap = max((_sighting_gap(doc) for _, doc in read), default=0.0)
        for path, doc in read:
            for gid_text, row in doc["identities"].items():
                gid, label, seen = _sighting(path, gid_text, row)
                entry = people.setdefault(gid, {"label": None, "cameras": {}})
                entry["label"] = entry["label"] or label
                entry["cameras"][cam] = (
                    _joined(entry["cameras"][cam], seen, gap) if cam in entry["cameras"] else seen
                )
    return dict(sorted(people.items()))


def _sighting(path: Path, gid_text: str, row: Any) -> tuple[int, str | None, dict[str, Any]]:
    """(global id, label, {first_seen, last_seen, frames, tracks, spans}) of a table's row; DataError naming the
    file and the id when it is not one the worker writes."""
    try:
        if not isinstance(row, dict):
            raise ValueError(f"a row must be an object, got {type(row).__name__}")
        seen = {k: row[k] for k in ("first_seen", "last_seen", "frames", "tracks")}
        _check_sighting(seen, row.get("label"))
        seen["spans"] = _spans(row.get("spans")) or [[seen["first_seen"], seen["last_seen"]]]
        return int(gid_text), row.get("label"), seen
    except KeyError as e:
        raise DataError(f"{path}: global id {gid_text}: no {e.args[0]!r}") from e
    except ValueError as e:
        raise DataError(f"{path}: global id {gid_text}: {e}") from e


def _is_time(v: Any) -> bool:
    """A table's finite number."""
    n = _number(v)
    return n is not None and math.isfinite(n)


def _check_sighting(seen: dict[str, Any], label: Any) -> None:
    """ValueError naming the first field of a row that is not as the worker writes it."""
    if not (_is_time(seen["first_seen"]) and _is_time(seen["last_seen"])):
        first, last = seen["first_seen"], seen["last_seen"]
        raise ValueError(f"first_seen and last_seen must be times, got {first!r}, {last!r}")
    if not isinstance(seen["frames"], int) or isinstance(seen["frames"], bool) or seen["frames"] < 0:
        raise ValueError(f"frames must be a count, got {seen['frames']!r}")
    tracks = seen["tracks"]
    if not isinstance(tracks, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in tracks
    ):
        raise ValueError(f"tracks must be a list of track ids, got {tracks!r}")
    if label is not None and not isinstance(label, str):
        raise ValueError(f"label must be a text or null, got {label!r}")


def _spans(spans: Any) -> list[list[float]]:
    """A row's sighting spans, checked ([] for a row from before they were recorded)."""
    if spans is None:
        return []
    if not isinstance(spans, list) or not all(
        isinstance(s, list) and len(s) == 2 and _is_time(s[0]) and _is_time(s[1]) and s[0] <= s[1]
        for s in spans
    ):
        raise ValueError(f"spans must be a list of [start, end] times, got {spans!r}"[:300])
    return [[float(a), float(b)] for a, b in spans]


def _sighting_gap(doc: dict[str, Any]) -> float:
    """The longest absence within one sighting span of a table (0 in one from before it was recorded)."""
    gap = _number(doc.get("sighting_gap_s"))
    return 0.0 if gap is None else gap


def _joined(a: dict[str, Any], b: dict[str, Any], gap_s: float) -> dict[str, Any]:
    """One camera's sightings of an identity in two tables (rotated files) as one; spans no more than ``gap_s``
    apart are one (a sighting across a rotation of the files)."""
    return {
        "first_seen": min(a["first_seen"], b["first_seen"]),
        "last_seen": max(a["last_seen"], b["last_seen"]),
        "frames": a["frames"] + b["frames"],
        "tracks": sorted(set(a["tracks"]) | set(b["tracks"])),
        "spans": merge_spans(a["spans"] + b["spans"], gap_s),
    }


def build_report(camera_dirs: dict[str, Path], out: Path, earlier_runs: bool = False) -> dict[str, Any]:
    """Write report.json / report.md / timeline.png into ``out`` (from ``collect``, times from ``fleet_start``);
    return the report."""
    tables = read_tables(camera_dirs, earlier_runs)
    people = collect(tables)
    origin = _time_origin(people, fleet_start(tables))
    stopped = unfinished(camera_dirs)
    again = started_again(camera_dirs, earlier_runs)
    return _write_report(people, sorted(camera_dirs), out, origin, video_origin(camera_dirs), stopped, again)


@dataclass(frozen=True, slots=True)
class Unfinished:
    """The cameras whose worker did not end its run (``unfinished``): ``states`` how each ``status.json`` leaves
    it (``failed``, ``running``, ``killed``); ``errors`` the error a failed one stopped with, where it says."""

    states: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


def unfinished(camera_dirs: dict[str, Path]) -> Unfinished:
    """The cameras whose worker did not end its run, with how its ``status.json`` leaves it: ``failed`` (and the
    error, which a worker that failed before its source opened records too: ``runner.StatusFile.failed``),
    ``running`` (still writing) or ``killed`` (left ``running`` by a process that is gone). What the report holds
    of them ends where they stopped. A camera without a readable status (a worker run without the runner's
    ``StatusFile``) is not named."""
    from daemon.runner import worker_running

    stopped = Unfinished()
    for cam, d in sorted(camera_dirs.items()):
        doc = json_object(d / "status.json")
        state, error = doc.get("state"), doc.get("error")
        if state == "running" and not worker_running(d):
            state = "killed"
        if state in ("failed", "running", "killed"):
            stopped.states[cam] = state
        if state == "failed" and isinstance(error, str) and error:
            stopped.errors[cam] = error
    return stopped


def started_again(camera_dirs: dict[str, Path], earlier_runs: bool = False) -> dict[str, dict[str, Any]]:
    """The cameras whose worker ``reid-daemon fleet`` started again with new settings as it followed its YAML
    (their ``status.json`` names the keys that changed: ``runner.started_again_keys``), each with ``keys``, the
    ``first_frame_time`` of the run the report holds (None where its table does not say), and whether its run
    before is in the report too (``earlier_run_in_report``: a live camera's, put aside, where ``earlier_runs``;
    a recording's was replaced)."""
    firsts = run_first_frames(camera_dirs)
    again: dict[str, dict[str, Any]] = {}
    for cam, d in sorted(camera_dirs.items()):
        keys = json_object(d / "status.json").get("started_again")
        if not isinstance(keys, list) or not keys:
            continue
        earlier = len(identity_tables(d, earlier_runs)) > len(identity_tables(d))
        again[cam] = {
            "keys": [str(k) for k in keys],
            "first_frame_time": firsts.get(cam),
            "earlier_run_in_report": earlier,
        }
    return again


def video_origin(camera_dirs: dict[str, Path]) -> float | None:
    """The fleet time of fleet.mp4's 0.0 s: the earliest first frame of the cameras' runs, which it shows, rotated
    files included (``run_first_frames``); None where a camera's table does not record it."""
    firsts = run_first_frames(camera_dirs).values()
    return None if None in firsts else min((t for t in firsts if t is not None), default=None)


def _time_origin(people: dict[int, dict[str, Any]], start: float | None) -> tuple[float, str]:
    """(origin, time base): the fleet's first frame, or the first sighting where no table recorded it."""
    if start is not None:
        return start, FROM_FIRST_FRAME
    first = min((c["first_seen"] for p in people.values() for c in p["cameras"].values()), default=0.0)
    return first, FROM_FIRST_SIGHTING


def leave_out_of_report(out: Path, global_id: int) -> bool:
    """Take ``global_id`` out of the report in ``out`` as it stands (report.json, report.md, timeline.png; the
    scores appended again, said to be the run's: ``scores_before_forget``), where the cameras' tables cannot be
    read again yet: a running camera erases its own when the forget reaches it. False when there is no report
    or it does not hold the id."""
    try:
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        people = {int(g): p for g, p in report["people"].items()}
        cameras = list(report["cameras"])
        origin = (float(report["time_origin"]), str(report.get("time_base", FROM_FIRST_SIGHTING)))
        video = report.get("video_origin")
        video = float(video) if video is not None else None
        stopped = Unfinished(
            {str(c): str(why) for c, why in report.get("unfinished", {}).items()},
            {str(c): str(why) for c, why in report.get("errors", {}).items()},
        )
        again = {str(c): dict(how) for c, how in report.get("started_again", {}).items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False  # no report here, or not one this daemon wrote
    if people.pop(global_id, None) is None:
        return False
    _write_report(people, cameras, out, origin, video, stopped, again)
    scores = out / "fleet_metrics.txt"
    if scores.is_file():
        append_metrics(out / "report.md", scores.read_text(encoding="utf-8"), scores_before_forget(global_id))
    return True


def scores_before_forget(global_id: int) -> str:
    """The line before the run's scores appended again to a report ``global_id`` was taken out of: they are
    the run's, made before it was forgotten (they count its boxes)."""
    return f"The run's scores, from before global id {global_id} was forgotten (they count its boxes)."


def _write_report(
    people: dict[int, dict[str, Any]],
    cameras: list[str],
    out: Path,
    origin: tuple[float, str],
    video: float | None,
    stopped: Unfinished,
    again: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    epoch, base = origin
    report = {
        "cameras": cameras,
        "unfinished": stopped.states,
        "errors": stopped.errors,
        "started_again": again,
        "identities": len(people),
        "seen_on_several_cameras": sum(_on_several(p) for p in people.values()),
        "time_origin": epoch,
        "time_base": base,
        "video_origin": video,
        "people": {str(g): p for g, p in people.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    if people:  # the picture first: report.md, which shows it, never names an earlier run's
        plot_timeline(people, epoch, out / "timeline.png", base)
    else:  # nobody seen: no picture, and not an earlier run's in its place
        (out / "timeline.png").unlink(missing_ok=True)
    atomic_write(out / "report.json", json.dumps(report, indent=1).encode("utf-8"))
    atomic_write(out / "report.md", report_markdown(report).encode("utf-8"))
    return report


def _on_several(person: dict[str, Any]) -> bool:
    return len(person["cameras"]) >= 2


def _headline(report: dict[str, Any]) -> str:
    cameras = report["cameras"]
    return (
        f"{counted(report['identities'], 'identity', 'identities')} over "
        f"{'camera' if len(cameras) == 1 else 'cameras'} {', '.join(cameras)}; "
        f"{report['seen_on_several_cameras']} seen on two or more cameras{_nobody_said(report)}"
    )


def _nobody_said(report: dict[str, Any]) -> str:
    """'; camera c saw nobody' for the cameras of the report none of its identities was seen on (nothing where
    nobody was seen at all: the count says it)."""
    people = report["people"].values()
    if not people:
        return ""
    silent = [c for c in report["cameras"] if not any(c in p["cameras"] for p in people)]
    if not silent:
        return ""
    return f"; {'camera' if len(silent) == 1 else 'cameras'} {', '.join(silent)} saw nobody"


def report_markdown(report: dict[str, Any]) -> str:
    """report.md: a summary, the timeline picture, then every identity, those seen on several cameras first."""
    people, epoch, base = report["people"], report["time_origin"], _base(report)
    multi = {g: p for g, p in people.items() if _on_several(p)}
    single = {g: p for g, p in people.items() if not _on_several(p)}
    lines = ["# Fleet identity report", "", f"{_headline(report)}.{_times_said(report)}", ""]
    if report.get("unfinished"):
        lines += [_unfinished_said(report["unfinished"], report.get("errors", {})), ""]
    if report.get("started_again"):
        lines += [_started_again_said(report["started_again"], epoch), ""]
    if people:
        lines += ["![Who was seen where and when](timeline.png)", ""]
        if len(people) > TIMELINE_MAX_ROWS:
            lines += [
                f"The timeline shows {_timeline_rows_said(len(people))}; the tables list every one.",
                "",
            ]
    for title, group in (("Seen on several cameras", multi), ("Seen on one camera", single)):
        if group:
            lines += [f"## {title}", "", *_identity_table(group, epoch, base), ""]
    return "\n".join(lines)


_UNFINISHED_SAID = {
    "failed": "failed",
    "running": "is still running",
    "killed": "was stopped without finishing (killed)",
}


def _unfinished_said(
    stopped: dict[str, str], errors: dict[str, str], lead: str = "**Not a whole run:**"
) -> str:
    """report.md's line (the terminal's, with a plain ``lead``) on the cameras whose run did not end (and the
    error of each that failed, where its status.json said it): what the report holds of them ends there."""
    said = "; ".join(
        f"camera {cam} {_UNFINISHED_SAID.get(why, why)}{_error_said(errors.get(cam))}"
        for cam, why in stopped.items()
    )
    running = [cam for cam, why in stopped.items() if why == "running"]
    ended = [cam for cam in stopped if cam not in running]
    both = bool(running and ended)  # then each group is named
    held = [_held_said(ended, False, both)] if ended else []
    held += [_held_said(running, True, both)] if running else []
    them = "; ".join(held)
    return f"{lead} {said}. {them[0].upper()}{them[1:]}."


def _held_said(cams: list[str], running: bool, named: bool) -> str:
    """Where what ``cams`` saw ends in the report: where they stopped, or (``running``) at their identity tables'
    last writing; ``named``: the cameras by name (beside another group), else 'it' or 'they'."""
    one = len(cams) == 1
    who = ", ".join(cams) if named else ("it" if one else "they")
    if not running:
        return f"what {who} saw ends where {'it' if one else 'they'} stopped"
    tables = "its identity table's" if one else "their identity tables'"
    return (
        f"what {who} saw is here up to {tables} last writing "
        f"(every {IDENTITY_TABLE_REFRESH_S:g} s while {'it runs' if one else 'they run'})"
    )


def _started_again_said(
    again: dict[str, dict[str, Any]], epoch: float, lead: str = "**Started again with new settings:**"
) -> str:
    """report.md's line (the terminal's, with a plain ``lead``) on the cameras the fleet started again with new
    settings as it followed its YAML: the keys that changed, from when the report holds its run, and whether
    what it saw before is in the report."""
    said = []
    for cam, how in again.items():
        keys = ", ".join(f"`{k}`" for k in how["keys"])
        first = _number(how.get("first_frame_time"))
        since = f", its run from {first - epoch:.1f} s" if first is not None else ""
        before = (
            "its run before is in the report too"
            if how.get("earlier_run_in_report")
            else "what it saw before is not in the report"
        )
        said.append(f"camera {cam} ({keys} changed){since}: {before}")
    return f"{lead} {'; '.join(said)}."


def _error_said(error: str | None) -> str:
    """``: `the error` `` (as code: a path's underscores are no emphasis), or nothing where none was said."""
    return ": `" + error.replace("`", "'") + "`" if error else ""


def _times_said(report: dict[str, Any]) -> str:
    """report.md's sentence on what its times count from (none where nobody was seen: it holds no times)."""
    if not report["people"]:
        return ""
    start = datetime.fromtimestamp(report["time_origin"], tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    said = "the fleet's first frame" if _base(report) == FROM_FIRST_FRAME else "the first sighting"
    return f" Times are seconds since {said} ({start}){_video_said(report)}"


def _video_said(report: dict[str, Any]) -> str:
    """The end of report.md's sentence on its times: how fleet.mp4's banner counts them, where that is known."""
    video, epoch = report.get("video_origin"), report["time_origin"]
    if video is None:
        return "."
    if abs(video - epoch) < 0.0005 and _base(report) == FROM_FIRST_FRAME:
        return ", as fleet.mp4's banner counts them."
    return (
        f". fleet.mp4 shows the cameras' latest runs only: its banner's 0.0 s is {video - epoch:.1f} s here."
    )


def _base(report: dict[str, Any]) -> str:
    """The report's time base; a report written before it said one counted from the first sighting."""
    return str(report.get("time_base", FROM_FIRST_SIGHTING))


def _identity_table(people: dict[str, dict[str, Any]], epoch: float, base: str) -> list[str]:
    lines = [
        f"| global id | label | cameras (seen from – to, {base}; frames) |",
        "|---|---|---|",
    ]
    for gid, p in people.items():
        cams = "; ".join(
            f"{cam} {_spans_text(c, epoch)} ({c['frames']})"
            for cam, c in sorted(p["cameras"].items(), key=lambda kv: kv[1]["first_seen"])
        )
        lines.append(f"| {gid} | {p['label'] or ''} | {cams} |")
    return lines


def _spans_text(seen: dict[str, Any], epoch: float, dash: str = "–", join: str = ", ", unit: str = "") -> str:
    """A camera's sighting spans of an identity, 'from–to, from–to' (one, first to last, without spans)."""
    return join.join(f"{a - epoch:.1f}{dash}{b - epoch:.1f}{unit}" for a, b in _sighting_spans(seen))


def report_text(report: dict[str, Any], limit: int = 30) -> str:
    """A few lines for the terminal: counts and the identities seen on several cameras, with their sighting spans
    on each ('door 0.0-5.0s and 20.0-25.0s, hall 8.0-16.0s'), and the cameras whose run did not end (report.md's
    line: a failed one with its error)."""
    epoch = report["time_origin"]
    stopped = (
        [_unfinished_said(report["unfinished"], report.get("errors", {}), "Not a whole run:")]
        if report.get("unfinished")
        else []
    )
    if report.get("started_again"):
        stopped.append(
            _started_again_said(report["started_again"], epoch, "Started again with new settings:")
        )
    if not report["people"]:
        return "\n".join([f"{_headline(report)}.", *stopped])
    lines = [f"{_headline(report)} ({_base(report)}):"]
    several = [(gid, p) for gid, p in report["people"].items() if _on_several(p)]
    for gid, p in several[:limit]:
        where = ", ".join(
            f"{cam} {_spans_text(c, epoch, '-', ' and ', 's')}"
            for cam, c in sorted(p["cameras"].items(), key=lambda kv: kv[1]["first_seen"])
        )
        name = f" ({p['label']})" if p["label"] else ""
        lines.append(f"  G{gid}{name}: {where}")
    if len(several) > limit:
        lines.append(
            f"  ... and {len(several) - limit} more seen on several cameras (report.md lists every one)"
        )
    return "\n".join([*lines, *stopped])


def plot_timeline(
    people: dict[int, dict[str, Any]], epoch: float, path: Path, base: str = FROM_FIRST_FRAME
) -> None:
    """Write ``timeline_figure`` to ``path`` (PNG), whole or not at all (``atomic_write``: a writer killed
    meanwhile leaves its temporary file, not a cut picture under that name)."""
    import matplotlib.pyplot as plt

    fig = timeline_figure(people, epoch, base)
    try:
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
    finally:
        plt.close(fig)


def timeline_figure(people: dict[int, dict[str, Any]], epoch: float, base: str = FROM_FIRST_FRAME) -> Figure:
    """One row per identity (those on most cameras first), one coloured bar per sighting span of a camera (an
    entry without spans: one, first to last seen), each camera of the row in its own lane (a row of more than
    three cameras is taller); the cameras' legend sits right of the plot, where it hides no bar. A bar is at
    least ``TIMELINE_MIN_BAR`` of the timeline's length wide, and a long timeline counts in minutes, hours or days
    (``_time_unit``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = sorted(people.items(), key=lambda kv: (-len(kv[1]["cameras"]), kv[0]))[:TIMELINE_MAX_ROWS]
    cams = sorted({c for _, p in rows for c in p["cameras"]})
    colours = dict(zip(cams, _camera_colours(len(cams)), strict=True))
    # a lane for each camera of a row, in the fleet's order: bars of one moment never hide each other
    lanes = [sorted(p["cameras"], key=cams.index) for _, p in rows]
    spans = {(y, cam): _sighting_spans(c) for y, (_, p) in enumerate(rows) for cam, c in p["cameras"].items()}
    length = max((b - epoch for found in spans.values() for _, b in found), default=0.0)
    unit, per = _time_unit(length)
    shortest = max(0.2, length * TIMELINE_MIN_BAR)  # seconds: a short sighting of a long run still shows
    row_in = 0.1 * max([3, *map(len, lanes)])  # a row of many cameras is taller: each lane stays ~0.08 in
    fig, ax = plt.subplots(figsize=(10, row_in * len(rows) + 1.5))
    for (y, cam), found in spans.items():
        lane = 0.8 / len(lanes[y])
        centre = y - 0.4 + (lanes[y].index(cam) + 0.5) * lane
        for first, last in found:
            width = max(last - first, shortest) / per
            ax.barh(centre, width, left=(first - epoch) / per, height=lane * 0.9, color=colours[cam])
    earliest = min((a - epoch for found in spans.values() for a, _ in found), default=0.0)
    ax.set_xlim(
        min(earliest / per, 0.0), ax.get_xlim()[1]
    )  # from the 0 the times count from; its margin right
    for y in range(len(rows) - 1):
        ax.axhline(y + 0.5, color="0.9", linewidth=0.5, zorder=0)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([f"G{g}" + (f" {p['label']}" if p["label"] else "") for g, p in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(base.replace("s since", f"{unit} since", 1))
    left_out = f"\n{_timeline_rows_said(len(people))}" if len(people) > len(rows) else ""
    ax.set_title(f"Who was seen where and when{left_out}")
    handles = [Rectangle((0, 0), 1, 1, color=colours[c]) for c in cams]
    ax.legend(handles, cams, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    return fig


def _timeline_rows_said(identities: int) -> str:
    """Which identities a timeline of more than ``TIMELINE_MAX_ROWS`` shows."""
    return f"{TIMELINE_MAX_ROWS} of the {identities} identities, those seen on the most cameras (then the lowest ids)"


def _camera_colours(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` colours told apart: matplotlib's ten, its twenty past ten cameras, hues evenly round the wheel past
    twenty (a camera's bars and its legend entry would otherwise share a colour with another camera's)."""
    import matplotlib.pyplot as plt

    if n <= 20:
        cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
        return [cmap(i) for i in range(n)]
    return [plt.get_cmap("hsv")(i / n) for i in range(n)]


def _sighting_spans(seen: dict[str, Any]) -> list[list[float]]:
    """A camera's sighting spans of an identity (one, first to last seen, in an entry without spans)."""
    return seen.get("spans") or [[seen["first_seen"], seen["last_seen"]]]


def _time_unit(length_s: float) -> tuple[str, float]:
    """The unit a timeline of ``length_s`` seconds counts in (its name, its seconds): seconds up to 20 minutes,
    then minutes, hours and, past four days, days, so that its axis does not count to tens of thousands."""
    for longest, unit, per in TIMELINE_UNITS:
        if length_s <= longest:
            return unit, per
    return "days", 86400.0


@dataclass(frozen=True)
class Truth:
    """A camera's ground truth and the frames of its video (None where not known: a user's own recording, scored
    up to the frame its worker ran to, else to the last frame of its truth and results)."""

    path: Path
    frames: int | None = None


def scoring_inputs(scenario_dir: Path, camera: str, camera_dir: Path) -> tuple[Path, Path, Path]:
    """What scoring ``camera`` of a scenario needs: its ground truth, its tracks' results and its global ids'."""
    return (scenario_dir / f"{camera}.gt.txt", *results_files(camera, camera_dir))


def results_files(camera: str, camera_dir: Path) -> tuple[Path, Path]:
    """A camera's results: its tracks' (``<camera>.txt``) and its global ids' (``<camera>.global.txt``)."""
    return camera_dir / f"{camera}.txt", camera_dir / f"{camera}.global.txt"


def scenario_truths(scenario_dir: Path, cameras: list[str]) -> dict[str, Truth]:
    """The ground truth of each camera of the scenario in ``scenario_dir`` (scenario.json's frame counts)."""
    desc = json.loads((scenario_dir / "scenario.json").read_text(encoding="utf-8"))
    return {c: Truth(scenario_dir / f"{c}.gt.txt", int(desc["cameras"][c]["frames"])) for c in cameras}


def evaluate_scenario(scenario_dir: Path, camera_dirs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Score the run against the scenario's ground truth; write fleet_metrics.json; return it as a dict."""
    return evaluate_run(scenario_truths(scenario_dir, list(camera_dirs)), camera_dirs, out)


def evaluate_run(truths: dict[str, Truth], camera_dirs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Score the run against each camera's ground truth (``truths``, by camera); write fleet_metrics.json and
    .txt, append the scores to report.md; return them as a dict."""
    runs: dict[str, CameraRun] = {}
    for cam, d in camera_dirs.items():
        truth = truths[cam]
        local, global_path = results_files(cam, d)
        if not (truth.path.is_file() and local.is_file() and global_path.is_file()):
            raise DataError(f"cannot score camera {cam}: need {truth.path}, {local} and {global_path}")
        gt, local_ids, global_ids = (
            read_sequence_truth(truth.path),
            run_results(local),
            run_results(global_path),
        )
        known = truth.frames
        if known is None:  # as far as anything was seen, where the worker left no summary
            known = int(max([0, *gt.frame.tolist(), *local_ids.frame.tolist(), *global_ids.frame.tolist()]))
        frames, stride = _frames_run(d / "summary.json", known)
        kept = (gt.frame <= frames) & (gt.frame >= run_first_frame(local))  # past files keep_earlier deleted
        runs[cam] = CameraRun(gt.select(kept), local_ids, global_ids, frames, stride)
    metrics = evaluate_fleet(runs)
    doc = metrics.as_dict()
    atomic_write(out / "fleet_metrics.json", json.dumps(doc, indent=1).encode("utf-8"))
    atomic_write(out / "fleet_metrics.txt", (metrics.text() + "\n").encode("utf-8"))
    append_metrics(out / "report.md", metrics.text())
    return doc


def _frames_run(summary: Path, frames: int) -> tuple[int, int]:
    """(frames, stride): the camera's frames up to the last one its worker ran (a ``max_frames`` run, or a
    worker stopped early, is not charged for the rest of the ground truth), of which it ran every stride-th
    (``source.stride``); all of them, stride 1, when it left no summary."""
    ran = run_extent(summary)
    return (frames, 1) if ran is None else (min(frames, ran.last_frame + 1), ran.stride)


def append_metrics(report_md: Path, text: str, note: str = "") -> None:
    """Add the scores against the ground truth at the end of report.md (``note``: a line before them,
    e.g. that they are the run's and the report was made again since)."""
    said = f"{note}\n\n" if note else ""
    with report_md.open("a", encoding="utf-8") as f:
        f.write(f"\n## Scored against the ground truth\n\n{said}```text\n{text.rstrip()}\n```\n")

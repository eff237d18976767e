"""daemon/fleet_report.py: the identity report of a fleet run, from the identity tables the workers write."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _ops import wait_until

from daemon.embedding import LEFTOVER_AGE_S
from daemon.errors import DataError
from daemon.fleet import IdentityLog
from daemon.fleet_report import (
    append_metrics,
    build_report,
    evaluate_scenario,
    leave_out_of_report,
    remove_report_leftovers,
    report_text,
    run_first_frames,
    run_folders,
)
from daemon.identity import IdentityAssignment
from daemon.outputs import RunRecord
from daemon.tempdirs import Leftovers

T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def _table(cam_dir: Path, camera: str, rows: dict[int, dict[str, Any]]) -> None:
    """An identities.json as a fleet worker writes it."""
    cam_dir.mkdir(parents=True)
    doc = {"v": 1, "camera": camera, "identities": {str(g): r for g, r in rows.items()}}
    (cam_dir / "identities.json").write_text(json.dumps(doc), encoding="utf-8")


def _seen(first: float, last: float, frames: int, label: str | None = None) -> dict[str, Any]:
    return {"label": label, "first_seen": T0 + first, "last_seen": T0 + last, "frames": frames, "tracks": [1]}


@pytest.fixture
def two_cameras(tmp_path: Path) -> dict[str, Path]:
    dirs = {"door": tmp_path / "runs" / "door", "hall": tmp_path / "runs" / "hall"}
    _table(dirs["door"], "door", {3: _seen(0.0, 4.0, 28), 7: _seen(2.0, 3.0, 8, "alice")})
    _table(dirs["hall"], "hall", {3: _seen(6.5, 9.0, 18), 9: _seen(1.0, 2.0, 7)})
    return dirs


def test_report_joins_the_cameras_tables_by_global_id(two_cameras: dict[str, Path], tmp_path: Path) -> None:
    report = build_report(two_cameras, tmp_path / "out")
    assert report["cameras"] == ["door", "hall"]
    assert report["identities"] == 3 and report["seen_on_several_cameras"] == 1
    assert report["time_origin"] == T0
    assert sorted(report["people"]["3"]["cameras"]) == ["door", "hall"]
    assert report["people"]["7"]["label"] == "alice"
    saved = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert saved == report
    assert (tmp_path / "out" / "timeline.png").stat().st_size > 0
    assert "G3: door 0.0-4.0s, hall 6.5-9.0s" in report_text(report)


def test_report_md_sums_up_shows_the_timeline_and_puts_several_cameras_first(
    two_cameras: dict[str, Path], tmp_path: Path
) -> None:
    build_report(two_cameras, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# Fleet identity report\n")
    assert "3 identities over cameras door, hall; 1 seen on two or more cameras" in md
    assert "(2027-01-15 08:00:00 UTC)" in md
    assert "![Who was seen where and when](timeline.png)" in md
    several, one = md.index("## Seen on several cameras"), md.index("## Seen on one camera")
    row3 = md.index("| 3 |  | door 0.0–4.0 (28); hall 6.5–9.0 (18) |")
    assert several < row3 < one
    assert one < md.index("| 7 | alice | door 2.0–3.0 (8) |") and one < md.index(
        "| 9 |  | hall 1.0–2.0 (7) |"
    )


def test_report_times_count_from_the_fleets_first_frame_as_fleet_mp4_does(tmp_path: Path) -> None:
    # Regression: the report counted from the first sighting and fleet.mp4's banner from the earliest camera's
    # first frame, so on the handover replay the report's 0.0 was the video's 2.0 s: a time of the report could
    # not be looked up in the video. Both count from the fleet's first frame now (a camera 2 s early, here).
    door, hall = tmp_path / "runs" / "door", tmp_path / "runs" / "hall"
    _table(door, "door", {3: _seen(0.0, 4.0, 28)})
    _table(hall, "hall", {3: _seen(6.5, 9.0, 18)})
    for cam, first in ((door, T0), (hall, T0 - 2.0)):  # nobody on hall's first 8.5 s
        doc = json.loads((cam / "identities.json").read_text(encoding="utf-8"))
        (cam / "identities.json").write_text(json.dumps(doc | {"first_frame_time": first}), encoding="utf-8")
    report = build_report({"door": door, "hall": hall}, tmp_path / "out")
    assert report["time_origin"] == T0 - 2.0 and report["time_base"] == "s since the fleet's first frame"
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "Times are seconds since the fleet's first frame (2027-01-15 07:59:58 UTC)" in md
    assert "fleet.mp4" in md and "| 3 |  | door 2.0–6.0 (28); hall 8.5–11.0 (18) |" in md
    assert "G3: door 2.0-6.0s, hall 8.5-11.0s" in report_text(report)
    assert "s since the fleet's first frame" in report_text(report)
    from daemon.fleet_report import leave_out_of_report

    assert leave_out_of_report(tmp_path / "out", 3)  # made again from report.json: the same time base
    again = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert again["time_origin"] == T0 - 2.0 and again["time_base"] == report["time_base"]


def test_a_report_of_tables_without_a_first_frame_counts_from_the_first_sighting_and_says_so(
    two_cameras: dict[str, Path], tmp_path: Path
) -> None:
    report = build_report(
        two_cameras, tmp_path / "out"
    )  # tables written before they recorded the first frame
    assert report["time_origin"] == T0 and report["time_base"] == "s since the first sighting"
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "Times are seconds since the first sighting (2027-01-15 08:00:00 UTC)." in md
    assert "fleet.mp4" not in md


def test_an_upgraded_cameras_earlier_table_without_a_first_frame_gives_no_negative_times(
    tmp_path: Path,
) -> None:
    # Regression: after an upgrade in place, a live camera's earlier run (moved to earlier-*, read with a shared
    # Valkey) left an identities.json written before tables recorded the first frame; the report counted from
    # the new run's first frame, so everything the camera saw before the upgrade came out at negative times
    # ('G1: a -116.2--102.4s'). A table without the record now counts from the first sighting when one of its
    # sightings comes before every recorded first frame, and says so.
    door = tmp_path / "runs" / "door"
    _table(door, "door", {8: _seen(100.0, 104.0, 28)})
    _table(door / "earlier-20270115T080000Z", "door", {3: _seen(0.0, 4.0, 28)})  # the previous version's
    (door / "earlier-20270115T080000Z" / "status.json").write_text("{}", encoding="utf-8")
    doc = json.loads((door / "identities.json").read_text(encoding="utf-8"))
    (door / "identities.json").write_text(json.dumps(doc | {"first_frame_time": T0 + 99.0}), encoding="utf-8")
    report = build_report({"door": door}, tmp_path / "out", earlier_runs=True)
    assert report["time_origin"] == T0 and report["time_base"] == "s since the first sighting"
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "| 3 |  | door 0.0–4.0 (28) |" in md and "| 8 |  | door 100.0–104.0 (28) |" in md
    assert "Times are seconds since the first sighting" in md
    assert "fleet.mp4 shows the cameras' latest runs only: its banner's 0.0 s is 99.0 s here." in md


def _first_frame(cam_dir: Path, t: float) -> None:
    """Record ``t`` as the first frame of the table in ``cam_dir``."""
    doc = json.loads((cam_dir / "identities.json").read_text(encoding="utf-8"))
    (cam_dir / "identities.json").write_text(json.dumps(doc | {"first_frame_time": t}), encoding="utf-8")


def test_a_report_of_earlier_runs_says_where_fleet_mp4s_count_begins(tmp_path: Path) -> None:
    # Regression: with a shared Valkey the report covers the cameras' earlier runs and counts from the earliest
    # run's first frame, but fleet.mp4 shows the current run only (from its first frame, 100 s later here), and
    # report.md said its times were "as fleet.mp4's banner counts them": G8 at 100.0 s was at the video's 0.0.
    door = tmp_path / "runs" / "door"
    earlier = door / "earlier-20270115T080000Z"
    _table(door, "door", {8: _seen(100.0, 104.0, 28)})
    _first_frame(door, T0 + 100.0)
    _table(earlier, "door", {3: _seen(1.0, 4.0, 28)})
    _first_frame(earlier, T0)
    (earlier / "status.json").write_text("{}", encoding="utf-8")
    report = build_report({"door": door}, tmp_path / "out", earlier_runs=True)
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "as fleet.mp4's banner counts them" not in md and "| 8 |  | door 100.0–104.0 (28) |" in md
    said = "fleet.mp4 shows the cameras' latest runs only: its banner's 0.0 s is 100.0 s here."
    assert said in md
    assert report["time_origin"] == T0 and report["video_origin"] == T0 + 100.0
    from daemon.fleet_report import leave_out_of_report

    assert leave_out_of_report(tmp_path / "out", 3)  # made again from report.json: the same sentence
    assert said in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    this_run = build_report({"door": door}, tmp_path / "out")  # without the earlier run: the video's count
    assert this_run["time_origin"] == this_run["video_origin"] == T0 + 100.0
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "as fleet.mp4's banner counts them" in md and "| 8 |  | door 0.0–4.0 (28) |" in md


def test_a_table_without_a_first_frame_seen_after_the_recorded_first_frame_keeps_the_first_frame(
    tmp_path: Path,
) -> None:
    # a camera still on the previous version beside an upgraded one: its sightings after the upgraded camera's
    # first frame leave the origin at that frame
    door, hall = tmp_path / "runs" / "door", tmp_path / "runs" / "hall"
    _table(door, "door", {3: _seen(1.0, 4.0, 28)})
    _table(hall, "hall", {3: _seen(6.5, 9.0, 18)})
    doc = json.loads((hall / "identities.json").read_text(encoding="utf-8"))
    (hall / "identities.json").write_text(json.dumps(doc | {"first_frame_time": T0}), encoding="utf-8")
    report = build_report({"door": door, "hall": hall}, tmp_path / "out")
    assert report["time_origin"] == T0 and report["time_base"] == "s since the fleet's first frame"


def test_scores_are_appended_to_report_md(two_cameras: dict[str, Path], tmp_path: Path) -> None:
    build_report(two_cameras, tmp_path / "out")
    append_metrics(tmp_path / "out" / "report.md", "global ids: IDF1 91.3\n")
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert md.index("## Seen on one camera") < md.index("\n\n## Scored against the ground truth\n")
    assert md.endswith("```text\nglobal ids: IDF1 91.3\n```\n")


def test_a_run_where_nobody_was_seen_says_so(tmp_path: Path) -> None:
    dirs = {"door": tmp_path / "door"}
    _table(dirs["door"], "door", {})
    report = build_report(dirs, tmp_path / "out")
    assert report["identities"] == 0
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "0 identities over camera door; 0 seen on two or more cameras" in md
    assert "timeline.png" not in md and not (tmp_path / "out" / "timeline.png").exists()
    # Regression: it went on "Times are seconds since the fleet's first frame (-).", of times it has none of,
    # and the terminal's line ended "(s since the fleet's first frame):" before nothing.
    assert "Times are" not in md and "(-)" not in md
    assert report_text(report) == "0 identities over camera door; 0 seen on two or more cameras."


def test_a_corrupt_identity_table_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "door"
    bad.mkdir()
    (bad / "identities.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"cannot read the identity table .*door/identities\.json"):
        build_report({"door": bad}, tmp_path / "out")
    (bad / "identities.json").write_text('{"v": 1}', encoding="utf-8")
    with pytest.raises(DataError, match="not an identity table"):
        build_report({"door": bad}, tmp_path / "out")


@pytest.mark.parametrize(
    "row",
    [
        {"spans": [[T0]]},  # a span that is no [start, end] pair
        {"spans": "0-4"},
        {"first_seen": None},
        {"frames": "28"},
        {"tracks": 1},
    ],
)
def test_a_malformed_row_of_an_identity_table_names_the_file_and_the_id(
    tmp_path: Path, row: dict[str, Any]
) -> None:
    # Regression: a row the report could not read ended in a KeyError, TypeError or ValueError with no file named
    # (a 'spans' entry that was no [start, end] pair: 'not enough values to unpack').
    door = tmp_path / "door"
    _table(door, "door", {3: _seen(0.0, 4.0, 28) | {"spans": [[T0, T0 + 4.0]]} | row})
    with pytest.raises(DataError, match=r"door/identities\.json: global id 3: "):
        build_report({"door": door}, tmp_path / "out")
    _table(tmp_path / "hall", "hall", {5: {"first_seen": T0}})  # a missing field
    with pytest.raises(DataError, match=r"hall/identities\.json: global id 5: .*last_seen"):
        build_report({"hall": tmp_path / "hall"}, tmp_path / "out")


def test_report_takes_the_tables_of_rotated_files_and_with_fleet_wide_ids_of_earlier_runs(
    tmp_path: Path,
) -> None:
    """output.rotate_mb starts new files, identities.json with them, and a restarted live camera moves its
    earlier run's to earlier-*: the report read the newest identities.json alone, so everyone seen before the
    last rotation or restart was silently left out (the deploy example rotates every 100 MB)."""
    door = tmp_path / "runs" / "door"
    _table(door / "earlier-20270115T070000Z", "door", {5: _seen(-3600.0, -3500.0, 40)})  # an earlier run
    (door / "earlier-20270115T070000Z" / "status.json").write_text('{"v": 1, "state": "done"}')
    _table(door / "earlier-20270115T080000Z", "door", {3: _seen(0.0, 4.0, 28), 7: _seen(2.0, 3.0, 8)})
    doc = {"v": 1, "camera": "door", "identities": {"3": _seen(5.0, 9.0, 10) | {"tracks": [2]}}}
    (door / "identities.json").write_text(json.dumps(doc), encoding="utf-8")

    report = build_report({"door": door}, tmp_path / "out")
    assert sorted(report["people"]) == ["3", "7"]  # this run's, rotated files and all; not the earlier run's
    three = report["people"]["3"]["cameras"]["door"]
    assert three == {
        "first_seen": T0,
        "last_seen": T0 + 9.0,
        "frames": 38,
        "tracks": [1, 2],
        "spans": [[T0, T0 + 4.0], [T0 + 5.0, T0 + 9.0]],  # tables without spans: one, first to last
    }
    with_earlier = build_report({"door": door}, tmp_path / "out", earlier_runs=True)
    assert sorted(with_earlier["people"]) == ["3", "5", "7"] and with_earlier["time_origin"] == T0 - 3600.0


def test_with_fleet_wide_ids_a_replaced_recording_run_is_left_out_and_a_live_camera_s_kept_run_taken(
    tmp_path: Path,
) -> None:
    """A recording run again into a folder replaces that run's last files, not the earlier-* folders it rotated
    into: with a shared Valkey the report took them as an earlier run (half a run, its end gone), beside the new
    run's own rotated files. The runs are told apart by their run.json: a run whose last files were kept (moved
    with its status.json, a restarted live camera) is an earlier run; one whose last files are gone is not.
    Folders of a version before run.json are taken as before (without their run, nothing tells them apart)."""
    door = tmp_path / "runs" / "door"

    def part(stamp: str, run: str | None, gid: int, last: bool = False) -> None:
        folder = door / f"earlier-20270115T{stamp}Z"
        _table(folder, "door", {gid: _seen(float(gid), gid + 1.0, 7)})
        if run is not None:
            RunRecord("door", run, "2027-01-15T08:00:00Z", live=last).write(folder)
        if last:
            (folder / "status.json").write_text('{"v": 1, "state": "done"}', encoding="utf-8")

    part("060000", None, 1, last=True)  # a live run of the previous version, kept whole
    part("061000", None, 2)  # the previous version's rotated files of the run after it
    part("070000", "live", 3)  # a live run that rotated, then was restarted: its last files kept
    part("071000", "live", 4, last=True)
    part("080000", "replay", 5)  # a recording run's rotated files: it was run again, its last files replaced
    part("081000", "now", 6)  # this run's rotated files
    doc = {"v": 1, "camera": "door", "identities": {"7": _seen(7.0, 8.0, 7)}}
    (door / "identities.json").write_text(json.dumps(doc), encoding="utf-8")
    RunRecord("door", "now", "2027-01-15T08:10:00Z", live=False).write(door)

    def gids(**kw: bool) -> list[int]:
        return sorted(map(int, build_report({"door": door}, tmp_path / "out", **kw)["people"]))

    assert gids() == [6, 7]
    assert gids(earlier_runs=True) == [1, 2, 3, 4, 6, 7]


def test_the_report_says_which_cameras_did_not_finish_their_run(
    two_cameras: dict[str, Path], tmp_path: Path
) -> None:
    # Regression: a camera that failed or was killed half way left half its sightings, and report.md (what is read
    # after the run, the terminal's error long gone) showed them as if the camera had seen nobody after that.
    # The cameras' status.json says how each run ended; those that did not end are named, also after a forget.
    (two_cameras["door"] / "status.json").write_text('{"v": 1, "state": "failed"}', encoding="utf-8")
    (two_cameras["hall"] / "status.json").write_text('{"v": 1, "state": "done"}', encoding="utf-8")
    report = build_report(two_cameras, tmp_path / "out")
    assert report["unfinished"] == {"door": "failed"}
    said = "**Not a whole run:** camera door failed. What it saw ends where it stopped."
    assert said in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert leave_out_of_report(tmp_path / "out", 9)
    assert said in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    dead = {"v": 1, "state": "running", "pid": 2**22 + 1, "host": socket.gethostname()}  # no such process
    (two_cameras["hall"] / "status.json").write_text(json.dumps(dead), encoding="utf-8")
    assert build_report(two_cameras, tmp_path / "out")["unfinished"] == {"door": "failed", "hall": "killed"}
    (two_cameras["door"] / "status.json").write_text('{"v": 1, "state": "done"}', encoding="utf-8")
    (two_cameras["hall"] / "status.json").unlink()  # no status: not said
    report = build_report(two_cameras, tmp_path / "out")
    assert report["unfinished"] == {}
    assert "Not a whole run" not in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")


def test_a_sighting_across_a_rotation_of_the_files_is_one_span(tmp_path: Path) -> None:
    # Regression: output.rotate_mb starts a new identities.json mid-sighting, and the report laid the two tables'
    # spans side by side: a person in view throughout showed as two ranges ('0.0–10.0, 10.5–20.0') and two bars.
    # Spans of one camera less than its sighting gap apart (recorded in the table) are one; a real absence stays.
    door = tmp_path / "runs" / "door"
    rotated = door / "earlier-20270115T080000Z"
    rotated.mkdir(parents=True)
    for folder, times in (
        (rotated, np.arange(0.0, 10.1, 0.5)),
        (door, [*np.arange(10.5, 20.1, 0.5), 30.0, 31.0]),
    ):
        log = IdentityLog(folder, "door", gap_s=1.0)
        for i, t in enumerate(times):
            log.frame(i, T0 + float(t), (IdentityAssignment("door", 1, 3, None, 0.9, "fleet", False),))
        log.close()
    assert json.loads((door / "identities.json").read_text(encoding="utf-8"))["sighting_gap_s"] == 1.0
    report = build_report({"door": door}, tmp_path / "out")
    spans = report["people"]["3"]["cameras"]["door"]["spans"]
    assert spans == [[T0, T0 + 20.0], [T0 + 30.0, T0 + 31.0]], [[a - T0, b - T0] for a, b in spans]
    assert "| 3 |  | door 0.0–20.0, 30.0–31.0 (43) |" in (tmp_path / "out" / "report.md").read_text("utf-8")


def _scenario_with_one_camera(tmp_path: Path, ran: int) -> tuple[Path, Path]:
    """A 10-frame camera whose ground truth is one person on every frame, and results for its first ``ran``."""
    scenario, cam = tmp_path / "scenario", tmp_path / "runs" / "a"
    scenario.mkdir()
    cam.mkdir(parents=True)
    (scenario / "scenario.json").write_text(json.dumps({"cameras": {"a": {"frames": 10}}}), encoding="utf-8")
    (scenario / "a.gt.txt").write_text(
        "".join(f"{f},1,10,20,30,60,1,-1,-1,-1\n" for f in range(1, 11)), encoding="utf-8"
    )
    rows = "".join(f"{f},5,10,20,30,60,1,-1,-1,-1\n" for f in range(1, ran + 1))
    (cam / "a.txt").write_text(rows, encoding="utf-8")
    (cam / "a.global.txt").write_text(rows, encoding="utf-8")
    return scenario, cam


def test_a_camera_stopped_early_is_scored_on_the_frames_it_ran(tmp_path: Path) -> None:
    scenario, cam = _scenario_with_one_camera(tmp_path, ran=5)
    (cam / "summary.json").write_text(json.dumps({"last_frame": 4}), encoding="utf-8")
    (tmp_path / "report.md").write_text("# report\n", encoding="utf-8")
    doc = evaluate_scenario(scenario, {"a": cam}, tmp_path)
    assert doc["per_camera"]["a"]["IDF1"] == pytest.approx(100.0)
    assert doc["global"]["GT_Dets"] == 5
    # without a summary (a camera still running, or killed) the whole ground truth is scored
    (cam / "summary.json").unlink()
    doc = evaluate_scenario(scenario, {"a": cam}, tmp_path)
    assert doc["global"]["GT_Dets"] == 10 and doc["per_camera"]["a"]["IDF1"] < 70


def test_fleet_metrics_json_has_no_consistency_where_nobody_was_on_two_cameras(tmp_path: Path) -> None:
    # Regression: with one camera nobody can be seen on two, and fleet_metrics.json said consistency 1.0, which a
    # reader could not tell from every such person keeping one global id; it is null, as the text says.
    scenario, cam = _scenario_with_one_camera(tmp_path, ran=10)
    (tmp_path / "report.md").write_text("# report\n", encoding="utf-8")
    doc = evaluate_scenario(scenario, {"a": cam}, tmp_path)
    written = json.loads((tmp_path / "fleet_metrics.json").read_text(encoding="utf-8"))
    assert written == doc and written["matched_boxes"] == 10
    assert (written["people_on_several_cameras"], written["cross_camera_consistency"]) == (0, None)
    assert "nobody was seen on several cameras" in (tmp_path / "fleet_metrics.txt").read_text(
        encoding="utf-8"
    )


def test_a_strided_camera_is_scored_on_the_frames_it_ran(tmp_path: Path) -> None:
    # Regression: the summary's stride (source.stride) was ignored, so the frames the camera skipped were misses.
    scenario, cam = _scenario_with_one_camera(tmp_path, ran=10)
    rows = "".join(f"{f},5,10,20,30,60,1,-1,-1,-1\n" for f in range(1, 11, 2))
    (cam / "a.txt").write_text(rows, encoding="utf-8")
    (cam / "a.global.txt").write_text(rows, encoding="utf-8")
    (cam / "summary.json").write_text(json.dumps({"last_frame": 8, "stride": 2}), encoding="utf-8")
    (tmp_path / "report.md").write_text("# report\n", encoding="utf-8")
    doc = evaluate_scenario(scenario, {"a": cam}, tmp_path)
    assert doc["per_camera"]["a"]["IDF1"] == pytest.approx(100.0) and doc["per_camera"]["a"]["FN"] == 0
    assert doc["global"]["GT_Dets"] == 5 and doc["global"]["IDF1"] == pytest.approx(100.0)


def test_a_camera_whose_run_rotated_its_files_is_scored_on_all_of_them(tmp_path: Path) -> None:
    """output.rotate_mb moved a camera's first rows into an earlier-* folder, and the fleet scored only the rows
    of its folder's <camera>.txt against every frame it ran: the rotated frames were all misses (FN 6 of 10). The
    rows of an earlier run's rotated folder (another run.json) are still left out."""
    scenario, cam = _scenario_with_one_camera(tmp_path, ran=10)
    rows = [f"{f},5,10,20,30,60,1,-1,-1,-1\n" for f in range(1, 11)]
    run = RunRecord("a", "this-run", "2026-01-01T00:00:00Z", False)
    for name, kept, record in (
        (
            "earlier-20260101T000000Z",
            rows[:2],
            RunRecord("a", "an-earlier-run", "2025-01-01T00:00:00Z", False),
        ),
        ("earlier-20260101T000001Z", rows[:4], run),
        ("earlier-20260101T000002Z", rows[4:6], run),
    ):
        (cam / name).mkdir()
        record.write(cam / name)
        for f in ("a.txt", "a.global.txt"):
            (cam / name / f).write_text("".join(kept), encoding="utf-8")
    run.write(cam)
    for f in ("a.txt", "a.global.txt"):
        (cam / f).write_text("".join(rows[6:]), encoding="utf-8")
    (cam / "summary.json").write_text(json.dumps({"last_frame": 9}), encoding="utf-8")
    (tmp_path / "report.md").write_text("# report\n", encoding="utf-8")
    doc = evaluate_scenario(scenario, {"a": cam}, tmp_path)
    assert doc["per_camera"]["a"]["FN"] == 0 and doc["per_camera"]["a"]["IDF1"] == pytest.approx(100.0)
    assert doc["global"]["GT_Dets"] == 10 and doc["global"]["IDF1"] == pytest.approx(100.0)


def test_the_timeline_legend_hides_no_bar() -> None:
    # The legend sat inside the plot, lower right: the last rows' bars that ran to the end went under it.
    from daemon.fleet_report import timeline_figure

    sighting = {"first_seen": 0.0, "last_seen": 30.0, "frames": 200, "tracks": [1]}
    people = {g: {"label": None, "cameras": {cam: sighting for cam in "abc"}} for g in range(1, 6)}
    fig = timeline_figure(people, 0.0)
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    bars = [b.get_window_extent() for b in ax.patches]
    assert len(bars) == 15
    assert not any(legend.overlaps(bar) for bar in bars)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_day_long_timeline_shows_every_short_sighting_and_counts_in_hours() -> None:
    # Regression: a bar was at least 0.2 s wide, so on a live fleet's day-long timeline a person seen for a few
    # seconds was a bar a 20th of a pixel wide (rows with three cameras' sightings came out empty), on an axis
    # counting to 86,400 seconds. Each bar is now a few pixels wide at least, and the axis counts in hours.
    from daemon.fleet_report import timeline_figure

    def seen(at: float) -> dict[str, Any]:
        return {
            "first_seen": at,
            "last_seen": at + 5.0,
            "frames": 35,
            "tracks": [1],
            "spans": [[at, at + 5.0]],
        }

    people = {
        g: {"label": None, "cameras": {"a": seen(g * 8000.0), "b": seen(g * 8000.0 + 60)}} for g in range(11)
    }
    people[11] = {"label": None, "cameras": {"a": seen(86395.0)}}
    fig = timeline_figure(people, 0.0)
    fig.canvas.draw()
    ax = fig.axes[0]
    widths = [b.get_window_extent().width for b in ax.patches]
    assert len(widths) == 23 and min(widths) >= 2.5, widths
    assert ax.get_xlabel() == "hours since the fleet's first frame"
    assert max(b.get_x() for b in ax.patches) == pytest.approx(86395.0 / 3600)
    import matplotlib.pyplot as plt

    plt.close(fig)


@pytest.mark.parametrize("cameras", [3, 12, 25])
def test_every_camera_of_the_timeline_has_a_colour_of_its_own(cameras: int) -> None:
    # Regression: the cameras' colours went round matplotlib's ten, so in a fleet of 12 cameras cam10's bars and
    # legend entry were cam00's blue, and cam11's cam01's orange: the legend could not tell them apart.
    from daemon.fleet_report import timeline_figure

    sighting = {"first_seen": 0.0, "last_seen": 30.0, "frames": 200, "tracks": [1]}
    people = {g: {"label": None, "cameras": {f"cam{g:02d}": sighting}} for g in range(cameras)}
    fig = timeline_figure(people, 0.0)
    legend = fig.axes[0].get_legend()
    colours = {tuple(h.get_facecolor()) for h in legend.legend_handles}
    assert len(legend.legend_handles) == len(colours) == cameras
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_timeline_of_more_identities_than_it_has_rows_says_which_it_shows(tmp_path: Path) -> None:
    # Regression: the timeline drew the first 40 identities (those on most cameras) and left the others out
    # without a word: a reader of report.md took the picture for everyone seen.
    from daemon.fleet_report import TIMELINE_MAX_ROWS, timeline_figure

    rows = {g: _seen(float(g), g + 2.0, 14) for g in range(1, TIMELINE_MAX_ROWS + 6)}
    _table(tmp_path / "runs" / "door", "door", rows)
    report = build_report({"door": tmp_path / "runs" / "door"}, tmp_path / "out")
    said = f"{TIMELINE_MAX_ROWS} of the {TIMELINE_MAX_ROWS + 5} identities, those seen on the most cameras"
    assert said in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    fig = timeline_figure({int(g): p for g, p in report["people"].items()}, T0)
    assert said in fig.axes[0].get_title()
    assert len(fig.axes[0].get_yticks()) == TIMELINE_MAX_ROWS
    few = timeline_figure({1: report["people"]["1"]}, T0)  # all shown: nothing said
    assert few.axes[0].get_title() == "Who was seen where and when"
    import matplotlib.pyplot as plt

    plt.close(fig)
    plt.close(few)


def test_a_fleet_of_many_cameras_draws_bars_that_can_be_seen() -> None:
    # Regression: each row of the timeline held a lane for every camera of the fleet, so with 12 cameras a bar was
    # under 2 px tall (under 1 with 25), though each person was seen by two of them. A row now holds lanes for
    # its own cameras only, and a row of many cameras is taller.
    from daemon.fleet_report import timeline_figure

    sighting = {"first_seen": 0.0, "last_seen": 30.0, "frames": 200, "tracks": [1]}
    cams = [f"cam{i:02d}" for i in range(12)]
    people: dict[int, dict[str, Any]] = {
        g: {"label": None, "cameras": {cams[g % 12]: sighting, cams[(g + 5) % 12]: sighting}}
        for g in range(20)
    }
    people[20] = {"label": None, "cameras": dict.fromkeys(cams, sighting)}  # one seen by all twelve
    fig = timeline_figure(people, 0.0)
    fig.canvas.draw()
    heights = [b.get_window_extent().height for b in fig.axes[0].patches]
    assert len(heights) == 20 * 2 + 12 and min(heights) >= 6.0, min(heights)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_an_id_away_from_a_camera_between_two_sightings_gets_two_bars(tmp_path: Path) -> None:
    # Regression: the timeline drew one bar from a camera's first to its last sighting of an id, so a person who
    # walked from door to hall and back looked as if door had seen them all along, while hall saw them.
    door, hall = tmp_path / "runs" / "door", tmp_path / "runs" / "hall"
    spans = [[T0, T0 + 5.0], [T0 + 20.0, T0 + 25.0]]
    _table(door, "door", {3: _seen(0.0, 25.0, 70) | {"spans": spans}})
    _table(hall, "hall", {3: _seen(8.0, 16.0, 56) | {"spans": [[T0 + 8.0, T0 + 16.0]]}})
    report = build_report({"door": door, "hall": hall}, tmp_path / "out")
    assert report["people"]["3"]["cameras"]["door"]["spans"] == spans
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "| 3 |  | door 0.0–5.0, 20.0–25.0 (70); hall 8.0–16.0 (56) |" in md
    # the terminal summary too: it showed 'door 0.0-25.0s', door seeing them all along
    assert "G3: door 0.0-5.0s and 20.0-25.0s, hall 8.0-16.0s" in report_text(report), report_text(report)

    from daemon.fleet_report import timeline_figure

    fig = timeline_figure({int(g): p for g, p in report["people"].items()}, T0)
    fig.canvas.draw()
    bars = sorted((round(b.get_x(), 3), round(b.get_width(), 3)) for b in fig.axes[0].patches)
    assert bars == [(0.0, 5.0), (8.0, 8.0), (20.0, 5.0)]  # door's two sightings, hall's one between them
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_run_rotated_more_than_nine_times_within_a_second_is_read_in_order(tmp_path: Path) -> None:
    # Regression: the tenth folder rotated into within one second is earlier-<time>-10, which sorted before -2
    # by name, so the report read the run's tables (and fleet.mp4 its videos) out of order: fleet.mp4 placed the
    # camera's tile by the tenth folder's first frame, not the run's.
    door = tmp_path / "runs" / "door"
    stamp = "earlier-20270115T080000Z"
    rotated = [door / stamp, *(door / f"{stamp}-{n}" for n in range(2, 12))]
    for i, folder in enumerate(rotated):
        _table(folder, "door", {i + 1: _seen(float(i), i + 0.5, 3)})
        doc = json.loads((folder / "identities.json").read_text(encoding="utf-8"))
        doc["first_frame_time"] = T0 + i
        (folder / "identities.json").write_text(json.dumps(doc), encoding="utf-8")
        RunRecord("door", "now", "2027-01-15T08:00:00Z", live=False).write(folder)
    RunRecord("door", "now", "2027-01-15T08:00:00Z", live=False).write(door)
    assert run_folders(door) == [*rotated, door]
    assert run_first_frames({"door": door}) == {"door": T0}


def test_the_terminal_summary_says_how_many_it_left_out(tmp_path: Path) -> None:
    # Regression: past its limit the summary ended "  ..." with no word of how many more were seen on several
    # cameras, nor where they are listed.
    dirs = {"door": tmp_path / "door", "hall": tmp_path / "hall"}
    _table(dirs["door"], "door", {g: _seen(g, g + 1.0, 5) for g in range(1, 6)})
    _table(dirs["hall"], "hall", {g: _seen(g + 2.0, g + 3.0, 5) for g in range(1, 6)})
    text = report_text(build_report(dirs, tmp_path / "out"), limit=2).splitlines()
    assert [line.split(":")[0] for line in text[1:3]] == ["  G1", "  G2"]
    assert text[3:] == ["  ... and 3 more seen on several cameras (report.md lists every one)"]
    assert report_text(build_report(dirs, tmp_path / "out"), limit=4).splitlines()[-1] == (
        "  ... and 1 more seen on several cameras (report.md lists every one)"
    )
    assert len(report_text(build_report(dirs, tmp_path / "out"), limit=5).splitlines()) == 6


@pytest.mark.parametrize("first", [0.0, 50.0])
def test_the_timeline_s_axis_starts_at_the_fleet_s_first_frame(first: float) -> None:
    # Regression: the axis started at the first sighting (50 s here), not at the 0 its times count from, so a
    # reader took the first bar for the start of the run.
    from daemon.fleet_report import timeline_figure

    sighting = {"first_seen": first, "last_seen": first + 30.0, "frames": 200, "tracks": [1]}
    people = {g: {"label": None, "cameras": {"a": sighting}} for g in range(3)}
    fig = timeline_figure(people, 0.0)
    left, right = fig.axes[0].get_xlim()
    assert left == 0.0 and right > first + 30.0  # a margin right of the last bar, as before
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_the_report_s_counts_agree_with_their_nouns(tmp_path: Path) -> None:
    # Regression: one person on one camera read "1 identities over cameras door", and one camera that did not
    # finish "What they saw ends where they stopped."
    dirs = {"door": tmp_path / "door"}
    _table(dirs["door"], "door", {3: _seen(0.0, 4.0, 28)})
    (dirs["door"] / "status.json").write_text('{"v": 1, "state": "failed"}', encoding="utf-8")
    report = build_report(dirs, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "1 identity over camera door; 0 seen on two or more cameras." in md
    assert "camera door failed. What it saw ends where it stopped." in md
    assert report_text(report).startswith("1 identity over camera door; 0 seen on two or more cameras (")


def test_a_track_that_changes_ids_leaves_both_spells_in_the_report_and_forget_takes_one(
    tmp_path: Path,
) -> None:
    """Track 7 is G12 for 1 s, then (lost and back as someone else) G30 for 1 s: the worker's table, the report
    (json, md, the terminal's) and the timeline keep both, each under its id with track 7; forgetting G12 from
    the camera's files and the report leaves G30's spell."""
    from daemon.erase import erase_stopped_camera
    from daemon.fleet_report import timeline_figure

    door = tmp_path / "runs" / "door"
    door.mkdir(parents=True)
    log = IdentityLog(door, "door", gap_s=0.5)
    for i in range(20):
        gid, t = (12, T0 + 0.1 * i) if i < 10 else (30, T0 + 2.0 + 0.1 * i)
        log.frame(i, t, (IdentityAssignment("door", 7, gid, None, 0.9, "fleet", i in (0, 10)),))
    log.close()
    out = tmp_path / "out"
    report = build_report({"door": door}, out)
    seen = {g: p["cameras"]["door"] for g, p in report["people"].items()}
    assert {g: (s["tracks"], s["spans"]) for g, s in seen.items()} == {
        "12": ([7], [[T0, T0 + 0.9]]),
        "30": ([7], [[T0 + 3.0, T0 + 3.9]]),
    }
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| 12 |  | door 0.0–0.9 (10) |" in md and "| 30 |  | door 3.0–3.9 (10) |" in md
    fig = timeline_figure({int(g): p for g, p in report["people"].items()}, T0)
    assert len(fig.axes[0].patches) == 2  # a bar for each spell
    import matplotlib.pyplot as plt

    plt.close(fig)
    assert erase_stopped_camera(door, "door", [12], T0 + 10.0).held == {12}
    assert leave_out_of_report(out, 12)
    for people in (build_report({"door": door}, tmp_path / "again")["people"], _people(out)):
        assert {g: p["cameras"]["door"]["spans"] for g, p in people.items()} == {"30": [[T0 + 3.0, T0 + 3.9]]}


def _people(out: Path) -> dict[str, Any]:
    people: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))["people"]
    return people


def test_scores_appended_again_as_an_id_leaves_the_report_say_they_are_from_before(
    two_cameras: dict[str, Path], tmp_path: Path
) -> None:
    # Regression: forget with a camera still running takes the id out of the report as it stands
    # (leave_out_of_report) and appended the run's scores again as if they were the report's own, where the
    # report made again from the tables (forget on stopped cameras) says they are from before the id was
    # forgotten (they count its boxes); both say so now.
    out = tmp_path / "out"
    report = build_report(two_cameras, out)
    gid = int(next(iter(report["people"])))
    (out / "fleet_metrics.txt").write_text("global ids: IDF1 91.3\n", encoding="utf-8")
    assert leave_out_of_report(out, gid)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert f"The run's scores, from before global id {gid} was forgotten (they count its boxes)." in md, md
    assert md.endswith("```text\nglobal ids: IDF1 91.3\n```\n")


def test_a_folder_s_video_segments_after_one_removed_are_not_placed_where_it_was(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: fleet.mp4 placed a folder's first video segment at the first frame its identity table records
    # and each later one after the one before, whatever segment was there: with annotated.mp4 removed (the
    # oldest hour of video, to free the disk) annotated-001.mp4 was shown at the run's first frame, an hour early
    # beside the other cameras, and with annotated-001.mp4 removed annotated-002.mp4 an hour early after
    # annotated.mp4. A segment is placed only after the one before it; those past a removed one are left out,
    # with a warning naming them.
    from daemon.fleet_report import run_videos

    cam = tmp_path / "door"
    _table(cam, "door", {})
    doc = json.loads((cam / "identities.json").read_text(encoding="utf-8"))
    (cam / "identities.json").write_text(json.dumps(doc | {"first_frame_time": T0}), encoding="utf-8")
    for name in ("annotated-001.mp4", "annotated-002.mp4"):
        (cam / name).write_bytes(b"")
    with caplog.at_level("WARNING", logger="daemon.fleet_report"):
        assert run_videos(cam) == []
    assert "annotated-001.mp4" in caplog.text and "left out of fleet.mp4" in caplog.text, caplog.text
    (cam / "annotated.mp4").write_bytes(b"")
    (cam / "annotated-001.mp4").unlink()
    assert run_videos(cam) == [(cam / "annotated.mp4", T0)]
    (cam / "annotated-001.mp4").write_bytes(b"")
    assert run_videos(cam) == [
        (cam / "annotated.mp4", T0),
        (cam / "annotated-001.mp4", None),
        (cam / "annotated-002.mp4", None),
    ]


def test_a_fleet_camera_whose_first_rotated_files_were_deleted_is_scored_from_where_its_files_begin(
    tmp_path: Path,
) -> None:
    # Regression: the fleet's scores took each camera's rows of its run over the earlier-* folders left and its
    # ground truth from frame 1, so where output.keep_earlier had deleted the folders of its first files every
    # frame of those was a miss (here 5 of 15). The run is scored from where the oldest files left begin
    # (run.json's first_frame), as eval does.
    from daemon.fleet_report import Truth, evaluate_run

    cam = tmp_path / "runs" / "door"
    kept = cam / "earlier-20270115T080000Z"
    kept.mkdir(parents=True)
    row = "{f},1,10,20,30,60,1,-1,-1,-1\n"
    for folder, frames, first in ((kept, range(6, 11), 5), (cam, range(11, 16), 10)):
        record = {
            "v": 1,
            "camera": "door",
            "run": "this-run",
            "started": "2027-01-15T08:00:00Z",
            "live": False,
        }
        (folder / "run.json").write_text(json.dumps(record | {"first_frame": first}), encoding="utf-8")
        for name in ("door.txt", "door.global.txt"):
            (folder / name).write_text("".join(row.format(f=f) for f in frames), encoding="utf-8")
    gt = tmp_path / "gt.txt"
    gt.write_text("".join(row.format(f=f).replace(",1,-1,-1,-1", ",1,1,1") for f in range(1, 16)))
    (tmp_path / "out").mkdir()
    doc = evaluate_run({"door": Truth(gt, 15)}, {"door": cam}, tmp_path / "out")
    assert doc["per_camera"]["door"]["FN"] == 0 and doc["global"]["IDF1"] == 100.0, doc


@pytest.mark.parametrize(("sequence", "fp"), [("MOT20-05", 0), ("MOT17-04", 1)])
def test_a_fleet_camera_on_a_mot20_sequence_is_scored_by_the_mot20_rule(
    tmp_path: Path, sequence: str, fp: int
) -> None:
    """The fleet scored every camera by the MOT16/17 rule: a box on a MOT20 sequence's non-motorised vehicle
    (class 6, a distractor in TrackEval's MOT20) was a false positive, where `reid-daemon eval` (and TrackEval)
    remove it. A camera's truth is read as eval reads it by default."""
    from daemon.fleet_report import Truth, evaluate_run

    cam = tmp_path / "runs" / "door"
    cam.mkdir(parents=True)
    person, cart = "{f},1,10,20,30,60,1,-1,-1,-1\n", "{f},2,200,20,30,60,1,-1,-1,-1\n"
    for name in ("door.txt", "door.global.txt"):
        (cam / name).write_text(
            "".join(person.format(f=f) + cart.format(f=f) for f in (1,)), encoding="utf-8"
        )
    gt = tmp_path / "MOTX" / sequence / "gt" / "gt.txt"
    gt.parent.mkdir(parents=True)
    gt.write_text("1,1,10,20,30,60,1,1,1\n1,7,200,20,30,60,0,6,1\n", encoding="utf-8")
    (tmp_path / "out").mkdir()
    doc = evaluate_run({"door": Truth(gt, 1)}, {"door": cam}, tmp_path / "out")
    assert (doc["per_camera"]["door"]["FP"], doc["per_camera"]["door"]["FN"]) == (fp, 0), doc


_HALF_A_PICTURE = """
import io, json, sys, time
from pathlib import Path
from matplotlib.backends.backend_agg import FigureCanvasAgg
from daemon.fleet_report import build_report

out, held, dirs = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
png = FigureCanvasAgg.print_png

def half(self, target, **kw):  # halfway through the picture, then held until killed
    buf = io.BytesIO()
    png(self, buf, metadata=kw.get("metadata"), pil_kwargs=kw.get("pil_kwargs"))  # not print_figure's others
    if isinstance(target, io.BytesIO):  # matplotlib's own dry run
        return
    fh = open(target, "wb") if isinstance(target, (str, Path)) else target
    fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    fh.flush()
    held.touch()
    time.sleep(600)

FigureCanvasAgg.print_png = half
build_report({name: Path(d) for name, d in dirs.items()}, out)
"""


def test_a_report_killed_while_it_draws_the_timeline_leaves_the_picture_whole(
    two_cameras: dict[str, Path], tmp_path: Path
) -> None:
    """Regression: timeline.png was drawn in place, so a fleet (or a forget) killed while it wrote the picture
    left a cut PNG under that name, which report.md shows. It is written whole through a temporary file (the
    earlier picture stays meanwhile), whose leftover the next fleet removes as it does the report's
    (remove_report_leftovers)."""
    out = tmp_path / "out"
    build_report(two_cameras, out)
    picture = (out / "timeline.png").read_bytes()
    held = tmp_path / "held"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]), MPLBACKEND="agg")
    dirs = json.dumps({name: str(d) for name, d in two_cameras.items()})
    proc = subprocess.Popen([sys.executable, "-c", _HALF_A_PICTURE, str(out), str(held), dirs], env=env)
    try:
        wait_until(lambda: held.exists() or proc.poll() is not None, 60.0, "the picture half written")
        assert held.exists(), "the writer ended before it was half done"
    finally:
        proc.kill()
        proc.wait()
    assert (out / "timeline.png").read_bytes() == picture  # before: its first half
    (left,) = [p for p in out.iterdir() if p.name.startswith(".timeline.png.")]
    assert 0 < left.stat().st_size < len(picture)
    assert remove_report_leftovers(out) == Leftovers()  # a young one: its writer may live
    size = left.stat().st_size
    os.utime(left, (time.time() - LEFTOVER_AGE_S - 60,) * 2)
    assert remove_report_leftovers(out) == Leftovers(1, size)
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md", "timeline.png"]


def test_a_camera_the_fleet_started_again_is_named_with_its_changed_keys_and_what_the_report_holds(
    tmp_path: Path,
) -> None:
    # Regression: a camera the fleet started again with new settings (its YAML edited mid-run) showed in the
    # report as if it had run once: nothing said it was started again, nor that what its first worker saw was
    # not in the report (a recording's run is replaced). Its status.json names the keys (runner.StatusFile,
    # told by the fleet); the report says them, from when it holds its run, and what became of the run before.
    door, hall = tmp_path / "runs" / "door", tmp_path / "runs" / "hall"
    _table(door, "door", {3: _seen(0.0, 4.0, 28)})
    _first_frame(door, T0)
    _table(hall, "hall", {3: _seen(6.5, 9.0, 18)})
    _first_frame(hall, T0 + 5.0)
    status = {"state": "done", "started_again": ["cameras.hall.source.uri"]}
    (hall / "status.json").write_text(json.dumps(status), encoding="utf-8")
    (door / "status.json").write_text(json.dumps({"state": "done"}), encoding="utf-8")
    report = build_report({"door": door, "hall": hall}, tmp_path / "out")
    assert report["started_again"] == {
        "hall": {
            "keys": ["cameras.hall.source.uri"],
            "first_frame_time": T0 + 5.0,
            "earlier_run_in_report": False,
        }
    }
    said = (
        "camera hall (`cameras.hall.source.uri` changed), its run from 5.0 s: what it saw before is not in the "
        "report."
    )
    assert f"**Started again with new settings:** {said}" in (tmp_path / "out" / "report.md").read_text()
    assert f"Started again with new settings: {said}" in report_text(report)
    from daemon.fleet_report import leave_out_of_report

    assert leave_out_of_report(tmp_path / "out", 3)  # made again from report.json: still said
    assert said in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    # a live camera's run before, put aside, is in a report that takes earlier runs (a shared Valkey)
    earlier = hall / "earlier-20270115T080000Z"
    _table(earlier, "hall", {9: _seen(1.0, 2.0, 7)})
    (earlier / "status.json").write_text("{}", encoding="utf-8")
    report = build_report({"door": door, "hall": hall}, tmp_path / "out", earlier_runs=True)
    assert report["started_again"]["hall"]["earlier_run_in_report"] is True
    assert "its run before is in the report too" in (tmp_path / "out" / "report.md").read_text()
    assert (
        build_report({"door": door}, tmp_path / "out2")["started_again"] == {}
    )  # door was not started again


def test_a_camera_that_saw_nobody_is_said_to_have_seen_nobody(
    two_cameras: dict[str, Path], tmp_path: Path
) -> None:
    """Regression: the report of door and hall, who saw people, and porch, who saw nobody, said "3 identities
    over cameras door, hall, porch" and nothing more of porch, as if it had seen some of them; report.md and the
    terminal say porch saw nobody, and again once a forget took its only person out of the report."""
    dirs = {**two_cameras, "porch": tmp_path / "runs" / "porch"}
    _table(dirs["porch"], "porch", {})
    report = build_report(dirs, tmp_path / "out")
    head = (
        "3 identities over cameras door, hall, porch; 1 seen on two or more cameras; camera porch saw nobody"
    )
    assert head in (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert report_text(report).startswith(head + " (")
    only_door = build_report(two_cameras, tmp_path / "two")
    assert "saw nobody" not in report_text(only_door)
    assert leave_out_of_report(tmp_path / "two", 9)  # hall's only other person: hall still saw G3
    assert leave_out_of_report(tmp_path / "two", 3)
    md = (tmp_path / "two" / "report.md").read_text(encoding="utf-8")
    assert "1 identity over cameras door, hall; 0 seen on two or more cameras; camera hall saw nobody." in md


def test_a_camera_still_running_is_not_said_to_have_stopped(
    two_cameras: dict[str, Path], tmp_path: Path
) -> None:
    """Regression: a report made while a camera ran (fleet --report-only beside the fleet, a forget) said "camera
    hall is still running. What it saw ends where it stopped.", of a camera that had not stopped: what the report
    holds of it ends at its identity table's last writing (every 60 s); one that failed still ends where it
    stopped, each said of its own."""
    elsewhere = {"v": 1, "state": "running", "pid": 1, "host": socket.gethostname() + "-other"}
    (two_cameras["hall"] / "status.json").write_text(json.dumps(elsewhere), encoding="utf-8")
    report = build_report(two_cameras, tmp_path / "out")
    assert report["unfinished"] == {"hall": "running"}
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    said = (
        "**Not a whole run:** camera hall is still running. What it saw is here up to its identity table's last "
        "writing (every 60 s while it runs)."
    )
    assert said in md and "ends where" not in md
    (two_cameras["door"] / "status.json").write_text('{"v": 1, "state": "failed"}', encoding="utf-8")
    build_report(two_cameras, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert (
        "**Not a whole run:** camera door failed; camera hall is still running. What door saw ends where it "
        "stopped; what hall saw is here up to its identity table's last writing (every 60 s while it runs)."
    ) in md

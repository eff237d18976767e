"""daemon/fleet_report.py: the identity report of a fleet run, from the identity tables the workers write."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from daemon.errors import DataError
from daemon.fleet_report import append_metrics, build_report, report_text

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


def test_scores_are_appended_to_report_md(two_cameras: dict[str, Path], tmp_path: Path) -> None:
    build_report(two_cameras, tmp_path / "out")
    append_metrics(tmp_path / "out" / "report.md", "global ids: IDF1 91.3\n")
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert md.index("## Seen on one camera") < md.index("\n\n## Scored against the scenario's ground truth\n")
    assert md.endswith("```text\nglobal ids: IDF1 91.3\n```\n")


def test_a_run_where_nobody_was_seen_says_so(tmp_path: Path) -> None:
    dirs = {"door": tmp_path / "door"}
    _table(dirs["door"], "door", {})
    report = build_report(dirs, tmp_path / "out")
    assert report["identities"] == 0
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "0 identities over cameras door; 0 seen on two or more cameras" in md
    assert "timeline.png" not in md and not (tmp_path / "out" / "timeline.png").exists()


def test_a_corrupt_identity_table_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "door"
    bad.mkdir()
    (bad / "identities.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=r"cannot read the identity table .*door/identities\.json"):
        build_report({"door": bad}, tmp_path / "out")
    (bad / "identities.json").write_text('{"v": 1}', encoding="utf-8")
    with pytest.raises(DataError, match="not an identity table"):
        build_report({"door": bad}, tmp_path / "out")

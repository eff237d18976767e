"""MOTChallenge file I/O: round trips, the streaming writer, and one test per kind of malformed file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _data import require_pets09_gt

from daemon.errors import DataError
from daemon.motio import (
    MotDetections,
    MotGroundTruth,
    MotTracks,
    MotWriter,
    detections_from_array,
    ground_truth_from_array,
    read_detections,
    read_ground_truth,
    read_results,
    results_from_array,
    rows_by_frame,
    write_detections_file,
    write_ground_truth,
    write_results,
    xywh_to_xyxy,
    xyxy_to_xywh,
)
from daemon.types import Detections, Track


def _tracks() -> MotTracks:
    return MotTracks(
        frame=np.array([1, 1, 2, 3], dtype=np.int64),
        track_id=np.array([4, 7, 4, 9], dtype=np.int64),
        xywh=np.array([[10.5, 20.25, 30.0, 60.125], [0, 0, 1, 2], [11, 21, 30, 60], [-5.5, 3, 7, 8]]),
        conf=np.array([0.9, 0.123456, 1.0, -1.0]),
    )


def _write(tmp_path: Path, text: str, name: str = "file.txt") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# -------------------------------------------------------------------------------- round trips


def test_results_round_trip(tmp_path: Path) -> None:
    t = _tracks()
    write_results(tmp_path / "r.txt", t)
    back = read_results(tmp_path / "r.txt")
    np.testing.assert_array_equal(back.frame, t.frame)
    np.testing.assert_array_equal(back.track_id, t.track_id)
    np.testing.assert_allclose(back.xywh, t.xywh, atol=5e-4)
    np.testing.assert_allclose(back.conf, t.conf, rtol=1e-6)
    assert (tmp_path / "r.txt").read_text().splitlines()[0] == "1,4,10.5,20.25,30,60.125,0.9,-1,-1,-1"


def test_detections_round_trip(tmp_path: Path) -> None:
    d = MotDetections(np.array([2, 5]), np.array([[1.0, 2, 3, 4], [5, 6, 7, 8]]), np.array([0.25, 0.75]))
    write_detections_file(tmp_path / "det.txt", d)
    assert (tmp_path / "det.txt").read_text().splitlines()[1] == "5,-1,5,6,7,8,0.75,-1,-1,-1"
    back = read_detections(tmp_path / "det.txt")
    np.testing.assert_array_equal(back.frame, d.frame)
    np.testing.assert_array_equal(back.xywh, d.xywh)
    np.testing.assert_array_equal(back.score, d.score)


def test_ground_truth_round_trip_keeps_consider_flags(tmp_path: Path) -> None:
    gt = MotGroundTruth(
        np.array([1, 1, 2]),
        np.array([1, 2, 1]),
        np.array([[0.0, 0, 5, 5], [9, 9, 5, 5], [1, 1, 5, 5]]),
        np.array([True, False, True]),
    )
    write_ground_truth(tmp_path / "gt.txt", gt)
    back = read_ground_truth(tmp_path / "gt.txt")
    np.testing.assert_array_equal(back.consider, gt.consider)
    np.testing.assert_array_equal(back.xywh, gt.xywh)
    assert len(back.considered()) == 2


def test_reads_the_real_mot15_ground_truth() -> None:
    gt = read_ground_truth(require_pets09_gt())
    assert len(gt) == 4650
    assert int((~gt.consider).sum()) == 174  # documented in ../shared/data/README.md
    assert len(np.unique(gt.track_id)) == 19
    assert (gt.frame.min(), gt.frame.max()) == (1, 795)
    np.testing.assert_allclose(gt.xywh[0], [499, 158, 31.03, 75.17])


def test_lenient_layouts_blank_lines_spaces_and_trailing_comma(tmp_path: Path) -> None:
    p = _write(tmp_path, "1, 3, 1, 2, 3, 4, 0.5,\n\n")
    assert len(read_results(p)) == 1
    q = _write(tmp_path, "1 3 1 2 3 4 0.5\n2 3 1 2 3 4 0.5\n", "spaces.txt")
    np.testing.assert_array_equal(read_results(q).frame, [1, 2])
    bom = tmp_path / "bom.txt"  # saved by a Windows tool: was "line 1: not a number ('\ufeff1')"
    bom.write_bytes(b"\xef\xbb\xbf1,3,1,2,3,4,0.5\r\n2,3,1,2,3,4,0.5\r\n")
    np.testing.assert_array_equal(read_results(bom).frame, [1, 2])


def test_empty_file_is_an_empty_table(tmp_path: Path) -> None:
    assert len(read_results(_write(tmp_path, ""))) == 0
    assert len(read_detections(_write(tmp_path, "\n\n", "d.txt"))) == 0


def test_box_conversions_are_inverse() -> None:
    xywh = np.array([[1.5, 2.0, 3.0, 4.0], [0, 0, 0, 0]])
    xyxy = xywh_to_xyxy(xywh)
    assert xyxy.dtype == np.float32
    np.testing.assert_array_equal(xyxy[0], [1.5, 2.0, 4.5, 6.0])
    np.testing.assert_array_equal(xyxy_to_xywh(xyxy), xywh)


def test_rows_by_frame_keeps_file_order_within_a_frame() -> None:
    groups = rows_by_frame(np.array([3, 1, 3, 2, 1], dtype=np.int64))
    assert list(groups) == [1, 2, 3]
    np.testing.assert_array_equal(groups[1], [1, 4])
    np.testing.assert_array_equal(groups[3], [0, 2])


def test_records_check_their_shapes() -> None:
    with pytest.raises(ValueError, match="xywh"):
        MotTracks(np.array([1]), np.array([1]), np.zeros((1, 3)), np.zeros(1))
    with pytest.raises(ValueError, match="score"):
        MotDetections(np.array([1]), np.zeros((1, 4)), np.zeros(2))


# -------------------------------------------------------------------------------- writer


def test_writer_streams_tracks_and_detections(tmp_path: Path) -> None:
    path = tmp_path / "out" / "cam.txt"  # the folder is made
    with MotWriter(path) as w:
        w.write_track(1, 5, (10.0, 20.0, 40.0, 80.0), 0.8)
        w.write_track(1, 6, (50.0, 20.0, 60.0, 80.0), 0.7)
        # frame 1 is on disk as soon as frame 2 starts, while the writer is still open
        w.write_track(2, 5, (11.0, 21.0, 41.0, 81.0), 0.9)
        assert len(path.read_text().splitlines()) == 2
        w.write_tracks(3, [Track("cam", 5, (12.0, 22.0, 42.0, 82.0), 0.95, 0)])
        assert len(path.read_text().splitlines()) == 4  # write_tracks flushes
        assert w.rows == 4
    assert w.closed
    back = read_results(path)
    np.testing.assert_array_equal(back.frame, [1, 1, 2, 3])
    np.testing.assert_array_equal(back.track_id, [5, 6, 5, 5])
    np.testing.assert_allclose(back.xywh[0], [10, 20, 30, 60])


def test_writer_records_detections_as_det_rows(tmp_path: Path) -> None:
    dets = Detections(np.array([[0, 0, 10, 20], [5, 5, 6, 9]], np.float32), np.array([0.5, 0.25], np.float32))
    with MotWriter(tmp_path / "det.txt") as w:
        w.write_detections(4, dets)
        w.write_detections(5, Detections.empty())
    back = read_detections(tmp_path / "det.txt")
    np.testing.assert_array_equal(back.frame, [4, 4])
    np.testing.assert_allclose(xywh_to_xyxy(back.xywh), dets.xyxy)
    assert (tmp_path / "det.txt").read_text().startswith("4,-1,")


def test_writer_appends_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    with MotWriter(path) as w:
        w.write_track(1, 1, (0, 0, 1, 1), 1.0)
    with MotWriter(path, append=True) as w:
        w.write_track(2, 1, (0, 0, 1, 1), 1.0)
    assert len(read_results(path)) == 2


@pytest.mark.parametrize(
    ("frame", "track_id", "xyxy", "score", "match"),
    [
        (0, 1, (0.0, 0.0, 1.0, 1.0), 1.0, "must be >= 1"),
        (1, -1, (0.0, 0.0, 1.0, 1.0), 1.0, "track id"),
        (1, 1, (0.0, float("nan"), 1.0, 1.0), 1.0, "non-finite"),
        (1, 1, (0.0, 0.0, 1.0, 1.0), float("inf"), "non-finite"),
        (1, 1, (5.0, 0.0, 1.0, 1.0), 1.0, "negative width"),
    ],
)
def test_writer_refuses_rows_the_readers_would_reject(
    tmp_path: Path,
    frame: int,
    track_id: int,
    xyxy: tuple[float, float, float, float],
    score: float,
    match: str,
) -> None:
    with MotWriter(tmp_path / "r.txt") as w, pytest.raises(ValueError, match=match):
        w.write_track(frame, track_id, xyxy, score)


# -------------------------------------------------------------------------------- malformed


GOOD = "1,1,10,10,5,5,1,-1,-1,-1\n"


@pytest.mark.parametrize(
    ("bad_line", "match"),
    [
        ("2,1,10,10,5,5", "expected 7 to 10"),  # too few columns
        ("2,1,10,10,5,5,1,-1,-1,-1,0", "expected 7 to 10"),  # too many
        ("2,1,10,10,5,5,1,-1", "8 columns where the lines above have 10"),
        ("2,1,10,ten,5,5,1,-1,-1,-1", "not a number"),
        ("2,1,10,10,nan,5,1,-1,-1,-1", "NaN or infinite"),
        ("2,1,10,10,5,inf,1,-1,-1,-1", "NaN or infinite"),
        ("2,1,10,10,-5,5,1,-1,-1,-1", "negative box width or height"),
        ("2,1,10,10,5,-0.5,1,-1,-1,-1", "negative box width or height"),
        ("0,1,10,10,5,5,1,-1,-1,-1", "frame must be an integer >= 1"),
        ("2.5,1,10,10,5,5,1,-1,-1,-1", "frame must be an integer >= 1"),
        ("2,-3,10,10,5,5,1,-1,-1,-1", "id must be an integer >= 0"),
        ("2,1.5,10,10,5,5,1,-1,-1,-1", "id must be an integer >= 0"),
        # read as 2**53 and -2**63 (taken without a word, or 'the same id twice' of two ids): refused
        ("2,9007199254740993,10,10,5,5,1,-1,-1,-1", r"id must be below 2\*\*53 \(9007199254740992\)"),
        ("2,100000000000000000000,10,10,5,5,1,-1,-1,-1", r"id must be below 2\*\*53"),
        ("9007199254740993,1,10,10,5,5,1,-1,-1,-1", r"frame must be below 2\*\*53"),
        ("1,1,20,20,5,5,1,-1,-1,-1", "same id appears twice in one frame"),
    ],
)
@pytest.mark.parametrize("reader", [read_results, read_ground_truth])
def test_malformed_tracks_name_file_and_line(
    tmp_path: Path, reader: Callable[[Path], object], bad_line: str, match: str
) -> None:
    path = _write(tmp_path, GOOD + "\n" + bad_line + "\n")  # the blank line still counts
    with pytest.raises(DataError, match=match) as err:
        reader(path)
    assert f"{path}, line 3" in str(err.value)


def test_ground_truth_consider_flag_must_be_0_or_1(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD + "2,1,10,10,5,5,0.7,-1,-1,-1\n")
    with pytest.raises(DataError, match=r"line 2: consider flag") as err:
        read_ground_truth(path)
    assert "a score there means results or detections, not ground truth" in str(
        err.value
    )  # eval's args swapped


def test_results_of_a_class_above_1_are_refused_as_trackeval_refuses_them(tmp_path: Path) -> None:
    """Column 8 of a results row is its class (TrackEval's MotChallenge2DBox): a car (3) was read, and scored, as
    a pedestrian; TrackEval refuses to score any results row of a class above 1, so the reader refuses it,
    naming the file, the line and the class. -1 (unused, as the worker writes it), 0 and 1 are read."""
    ok = _write(
        tmp_path, "1,1,10,10,5,5,0.9,-1,-1,-1\n1,2,10,10,5,5,0.9,0,-1,-1\n2,1,10,10,5,5,0.9,1,-1,-1\n"
    )
    assert len(read_results(ok)) == 3
    car = _write(tmp_path, GOOD + "1,2,20,20,5,5,0.8,3,-1,-1\n", "car.txt")
    with pytest.raises(DataError, match=r"car\.txt, line 2: class 3 \(column 8\)") as err:
        read_results(car)
    assert "TrackEval scores pedestrians (class 1) alone" in str(err.value)
    with pytest.raises(DataError, match=r"<results array>, row 1: class 2 \(column 8\)"):
        results_from_array(np.array([[1, 1, 0, 0, 5, 5, 1, 2]], dtype=float))


def test_det_file_ignores_ids_but_checks_the_rest(tmp_path: Path) -> None:
    ok = _write(tmp_path, "1,-1,10,10,5,5,0.9\n1,-1,12,10,5,5,0.4\n")
    assert len(read_detections(ok)) == 2  # id -1 twice in a frame is how det.txt looks
    bad = _write(tmp_path, "1,-1,10,10,5,5,0.9\n1,-1,12,10,5,5,-inf\n", "bad.txt")
    with pytest.raises(DataError, match=r"bad.txt, line 2: NaN or infinite"):
        read_detections(bad)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.txt: file not found"):
        read_results(tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"bin\.txt: cannot read"):
        read_detections(tmp_path / "bin.txt")


def test_arrays_are_validated_like_files() -> None:
    good = np.array([[1, 1, 0, 0, 5, 5, 1], [2, 1, 0, 0, 5, 5, 0]], dtype=float)
    assert len(results_from_array(good)) == 2
    assert ground_truth_from_array(good).consider.tolist() == [True, False]
    assert len(detections_from_array(good)) == 2
    bad = good.copy()
    bad[1, 4] = -1
    with pytest.raises(DataError, match=r"<results array>, row 2: negative"):
        results_from_array(bad)
    with pytest.raises(DataError, match=r"mine: expected an \(N, 7..10\) array"):
        ground_truth_from_array(np.zeros((3, 6)), name="mine")


# -------------------------------------------------------------------------------- MOT16/17/20 classes


def test_mot17_layout_reads_its_class_column_and_mot15_world_coordinates_are_not_classes(
    tmp_path: Path,
) -> None:
    """A 9-column gt (frame,id,x,y,w,h,consider,class,visibility) scores pedestrians (class 1) with consider=1,
    and takes classes 2, 7, 8, 12 for distractors (TrackEval's MOT16/17 rule); a MOT15 gt's 8th column is the
    world x (PETS09's runs from -15 to 15, 2 or 7 among them): a 10-column file is read by its consider flag."""
    mot17 = _write(
        tmp_path,
        "1,1,0,0,5,5,1,1,1\n1,2,9,0,5,5,1,7,0.5\n1,3,18,0,5,5,0,1,0.2\n1,4,27,0,5,5,0,3,1\n1,5,36,0,5,5,0,12,1\n",
    )
    gt = read_ground_truth(mot17)
    assert gt.consider.tolist() == [True, False, False, False, False]
    assert gt.distractors().tolist() == [False, True, False, False, True]
    mot15 = _write(
        tmp_path, "1,1,0,0,5,5,1,7,2,0\n1,2,9,0,5,5,0,2,-1,0\n1,3,18,0,5,5,1,-1,-1,-1\n", "mot15.txt"
    )
    gt15 = read_ground_truth(mot15)
    assert gt15.consider.tolist() == [True, False, True] and gt15.distractor is None
    assert gt15.distractors().tolist() == [False, True, False]  # every row not considered, as before
    unused = read_ground_truth(_write(tmp_path, "1,1,0,0,5,5,1,-1,-1\n1,2,9,0,5,5,0,-1,-1\n", "unused.txt"))
    assert unused.distractor is None and unused.consider.tolist() == [
        True,
        False,
    ]  # 9 columns, class -1: none


@pytest.mark.parametrize("klass", ["0", "14", "1.5", "-1"])  # -1 beside classes (alone: unused, as MOT15)
def test_mot17_class_outside_1_to_13_names_the_line_and_the_layout(tmp_path: Path, klass: str) -> None:
    path = _write(tmp_path, f"1,1,0,0,5,5,1,1,1\n2,1,0,0,5,5,1,{klass},1\n")
    with pytest.raises(DataError, match=r"line 2: class \(column 8 of 9") as err:
        read_ground_truth(path)
    assert "MOT15 ground truth has 10 columns" in str(err.value)


def test_ground_truth_with_classes_written_and_read_back_keeps_its_distractors(tmp_path: Path) -> None:
    """write_ground_truth wrote every gt in the MOT15 layout, so a car (neither scored nor a distractor) read
    back as a distractor; a gt read with classes is written in their layout and reads back the same."""
    gt = read_ground_truth(
        _write(tmp_path, "1,1,0,0,5,5,1,1,1\n1,2,9,0,5,5,0,7,1\n1,4,27,0,5,5,0,3,1\n2,1,1,0,5,5,0,1,1\n")
    )
    write_ground_truth(tmp_path / "out.txt", gt)
    back = read_ground_truth(tmp_path / "out.txt")
    assert back.consider.tolist() == gt.consider.tolist() == [True, False, False, False]
    assert back.distractors().tolist() == gt.distractors().tolist() == [False, True, False, False]
    np.testing.assert_array_equal(back.xywh, gt.xywh)
    joined = MotGroundTruth.joined(
        [gt, read_ground_truth(_write(tmp_path, "1,1,0,0,5,5,0,-1,-1,-1\n", "15.txt"))]
    )
    assert joined.distractors().tolist() == [False, True, False, False, True]
    assert joined.select(np.array([1, 4])).distractors().tolist() == [True, True]

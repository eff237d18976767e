"""Frame sources: files, folders, live streams (fake captures, a real local RTSP server), backoff, close."""

from __future__ import annotations

import itertools
import logging
import os
import random
import re
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from _crops import png_declaring
from _unreadable import unreadable_file
from _video import SyntheticClip, frame_number, make_image_folder, make_video, match_frame, numbered_frame

from daemon.config import SourceConfig, redact
from daemon.errors import SourceError
from daemon.sources import (
    Backoff,
    CaptureRequest,
    FrameSource,
    RepeatedFailure,
    SourceStats,
    _ffmpeg_capture_options,
    check_video_file,
    infer_kind,
    natural_key,
    open_source,
    open_source_waiting,
)
from daemon.types import Frame

SYSTEM_PYTHON = Path("/usr/bin/python3")
RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> SyntheticClip:
    return make_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames=30, fps=10.0, people=3)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


# ------------------------------------------------------------------------------------------- files, folders


def test_file_source_reads_every_frame_in_order(clip: SyntheticClip) -> None:
    with open_source(SourceConfig(uri=str(clip.path), queue_size=1)) as src:
        assert (src.kind, src.live, src.fps, src.frame_count) == ("file", False, 10.0, 30)
        frames = list(src)
    assert [f.index for f in frames] == list(range(30))
    assert [f.timestamp for f in frames] == pytest.approx([i / 10.0 for i in range(30)])
    assert [match_frame(f.image, clip) for f in frames] == list(range(30))
    assert all(f.image.shape == (240, 320, 3) and f.image.dtype == np.uint8 for f in frames)
    assert frames[0].source == str(clip.path)
    stats = src.stats
    assert (stats.frames_decoded, stats.frames_delivered, stats.frames_dropped) == (30, 30, 0)
    assert stats.decode_seconds > 0 and not stats.connected and stats.reconnects == 0
    assert stats.last_error == ""  # a file's normal end is not an error


@pytest.mark.parametrize(
    ("stride", "max_frames", "expected"), [(3, 5, [0, 3, 6, 9, 12]), (4, 0, list(range(0, 30, 4)))]
)
def test_file_stride_and_max_frames(
    clip: SyntheticClip, stride: int, max_frames: int, expected: list[int]
) -> None:
    cfg = SourceConfig(uri=str(clip.path), stride=stride, max_frames=max_frames)
    with open_source(cfg, name="lobby") as src:
        assert src.frame_count == len(expected)
        frames = list(src)
    assert [f.index for f in frames] == expected  # positions in the source, so results line up with gt
    assert [match_frame(f.image, clip) for f in frames] == expected
    assert [f.timestamp for f in frames] == pytest.approx([i / 10.0 for i in expected])
    assert {f.source for f in frames} == {"lobby"}


def test_folder_source_natural_order_and_fps_timestamps(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "imgs", frames=12, size=(160, 120))
    (folder.path / "notes.txt").write_text("not an image")
    with open_source(SourceConfig(uri=str(folder.path), folder_fps=5.0, stride=2)) as src:
        assert (src.kind, src.fps, src.frame_count) == ("folder", 5.0, 6)
        frames = list(src)
    assert [match_frame(f.image, folder) for f in frames] == [0, 2, 4, 6, 8, 10]  # frame_10 after frame_9
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.4, 0.8, 1.2, 1.6, 2.0])
    assert [f.index for f in frames] == [0, 2, 4, 6, 8, 10]


def test_file_uris_are_percent_decoded(tmp_path: Path) -> None:
    """A file URI as a file manager copies it (file:///my%20videos/clip%201.mp4) was read literally: "video
    file not found: .../my%20videos/clip%201.mp4", and a folder's URI was taken for a video file."""
    from urllib.parse import quote

    video = make_video(tmp_path / "my videos" / "clip 1.mp4", frames=3).path
    with open_source(SourceConfig(uri="file://" + quote(str(video)))) as src:
        assert src.kind == "file" and len(list(src)) == 3
    folder = make_image_folder(tmp_path / "my stills", frames=2).path
    with open_source(SourceConfig(uri="file://" + quote(str(folder)))) as src:
        assert src.kind == "folder" and len(list(src)) == 2


def test_natural_key_orders_numbers_by_value() -> None:
    names = ["img10.png", "img2.png", "IMG1.png", "img2b.png", "a.png"]
    assert sorted(names, key=natural_key) == ["a.png", "IMG1.png", "img2.png", "img2b.png", "img10.png"]


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("0", "webcam"),
        ("webcam:2", "webcam"),
        ("rtsp://cam/x", "rtsp"),
        ("HTTPS://cam/mjpg", "rtsp"),
        ("a.mp4", "file"),
    ],
)
def test_infer_kind(uri: str, kind: str) -> None:
    assert infer_kind(uri) == kind


def test_infer_kind_folder_and_bad_scheme(tmp_path: Path) -> None:
    assert infer_kind(str(tmp_path)) == "folder"
    with pytest.raises(SourceError, match="ftp"):
        infer_kind("ftp://host/video.mp4")


def test_bare_number_naming_a_folder_is_not_taken_for_a_webcam(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder of stills named by its date, given as it is listed (``--source 20240101``), was opened as webcam
    number 20240101: "cannot open webcam 20240101", with no word of the folder. A bare number that also names a
    file or folder is refused, naming both spellings."""
    make_image_folder(tmp_path / "20240101", frames=2)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SourceError, match=r"names the folder .*20240101.*\./20240101.*webcam:20240101"):
        open_source(SourceConfig(uri="20240101"))
    with open_source(SourceConfig(uri="./20240101")) as src:
        assert src.kind == "folder" and len(list(src)) == 2
    assert infer_kind("webcam:20240101") == "webcam" and infer_kind("7") == "webcam"


def test_redact_hides_passwords() -> None:
    assert redact("rtsp://admin:s3cret@10.0.0.5:554/live") == "rtsp://admin:***@10.0.0.5:554/live"
    assert redact("rtsp://10.0.0.5/live") == "rtsp://10.0.0.5/live"
    assert redact("rtsp://u:p@ss@host/a") == "rtsp://u:***@host/a"
    # the password may as well be 'p@ss@host/a' (an '@' and a '/' unencoded): all up to the last '@' is hidden
    assert redact("rtsp://u:p@ss@host/a@b") == "rtsp://u:***@b"


def test_a_password_with_a_slash_is_hidden_too() -> None:
    """The *** masking stopped at the first '/', so a camera password holding '/', '?' or '#' unencoded (a
    base64 one holds '/') was printed whole: in 'cannot open stream ...', the source's name in the logs and
    status.json's source. The password runs to the URL's last '@' when its host part (up to the first '/', '?'
    or '#') holds a ':' but no '@'."""
    uri = "rtsp://admin:Zm9v/YmFy+cXV4=@127.0.0.1:1/stream"
    with pytest.raises(SourceError) as e, open_source(SourceConfig(uri=uri, open_timeout_s=1)):
        pass
    assert "rtsp://admin:***@127.0.0.1:1/stream" in str(e.value) and "Zm9v" not in str(e.value), str(e.value)
    for secret in ("Zm9v/YmFy", "Kq3?Jx8", "Vb5#Hn2", "12/34", "p:s/s"):
        assert redact(f"rtsp://admin:{secret}@cam:554/live") == "rtsp://admin:***@cam:554/live", secret
        assert redact(f"rtsp://:{secret}@cam/live") == "rtsp://:***@cam/live", secret
    assert redact("unix:///run/valkey@main/valkey.sock") == "unix:///run/valkey@main/valkey.sock"
    assert redact("rtsp://cam.test/live?user=a@b") == "rtsp://cam.test/live?user=a@b"
    assert redact("redis://[::1]:6379/0") == "redis://[::1]:6379/0"


def test_a_password_with_an_at_and_a_slash_leaves_no_fragment_shown(caplog: pytest.LogCaptureFixture) -> None:
    """A camera password holding both '@' and '/' unencoded was hidden only up to its own '@' (the host part, up
    to the first '/', held an '@', taken for the end of the password), so what followed its '/' was shown: in
    'cannot open stream ...', the source's name in the logs and status.json. Where an '@' comes after the host
    part too, the password runs to the URL's last '@'."""
    secret = "Qx@127.0.0.1:1/Zm9v"  # FFmpeg takes the host up to the first '/': 127.0.0.1, refused at once
    uri = f"rtsp://admin:{secret}@127.0.0.1:1/stream"
    with (
        caplog.at_level(logging.DEBUG, logger="daemon"),
        pytest.raises(SourceError) as e,
        open_source(SourceConfig(uri=uri, open_timeout_s=1)),
    ):
        pass
    shown = f"{e.value}\n{caplog.text}"
    assert "rtsp://admin:***@127.0.0.1:1/stream" in str(e.value), shown
    assert "Qx" not in shown and "Zm9v" not in shown, shown
    for secret in ("p@ss/w0rd", "a@b?c", "a@b#c", "@/", "x/y@z"):
        assert redact(f"rtsp://admin:{secret}@cam:554/live") == "rtsp://admin:***@cam:554/live", secret
        assert redact(f"rtsp://:{secret}@cam/live") == "rtsp://:***@cam/live", secret


def test_a_password_after_a_user_name_with_a_slash_is_hidden() -> None:
    """A user name holding '/', '?' or '#' unencoded ('site/viewer') ended the host part before the ':' that
    begins the password, so redact saw no password and showed the URL whole. A password runs from the first ':'
    to the URL's last '@' wherever that ':' is."""
    for user in ("site/viewer", "site?viewer", "site#viewer"):
        shown = redact(f"rtsp://{user}:Zm9v/YmFy@cam:554/live")
        assert shown == f"rtsp://{user}:***@cam:554/live", shown
    assert (
        redact("rtsp://site/viewer@cam/live") == "rtsp://site/viewer@cam/live"
    )  # no password: nothing hidden
    assert redact("rtsp://cam.test/live?user=a@b") == "rtsp://cam.test/live?user=a@b"


# ------------------------------------------------------------------------------------------ opening errors


def test_missing_file_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match=r"nope\.mp4"):
        open_source(SourceConfig(uri=str(missing)))
    # a relative uri (configs/pets09.yaml has one) is taken from the working directory, not the config's
    # folder: run from elsewhere, the error said only "video file not found: ../shared/...", and said nothing
    # of where it had looked
    monkeypatch.chdir(tmp_path)
    for uri, what in (("../videos/nope.mp4", "video file"), ("../stills", "image folder")):
        with pytest.raises(
            SourceError, match=f"{what} not found: {uri} .*{tmp_path.parent / uri.split('/')[1]}"
        ):
            open_source(SourceConfig(uri=uri, kind="folder" if what == "image folder" else "file"))


def test_corrupt_video_raises(tmp_path: Path) -> None:
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(np.random.default_rng(1).bytes(20_000))
    with pytest.raises(SourceError, match=r"garbage\.mp4"):
        open_source(SourceConfig(uri=str(bad)))
    # a camera's worker names its source by the camera: the error names the file as well (it said "b" alone)
    with pytest.raises(SourceError, match=r"video file .*garbage\.mp4 \(cam-b\): unreadable"):
        open_source(SourceConfig(uri=str(bad)), name="cam-b")


def test_empty_folder_raises(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match="no images"):
        open_source(SourceConfig(uri=str(tmp_path)))


@pytest.mark.parametrize("uri", ["rtsp://", "rtsp://:554/x", "http:///path"])
def test_bad_url_raises(uri: str) -> None:
    with pytest.raises(SourceError, match="no host"):
        open_source(SourceConfig(uri=uri))


def test_unreachable_stream_fails_at_open_not_in_the_loop() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(SourceError, match=f"127.0.0.1:{port}"):
        open_source(SourceConfig(uri=f"rtsp://127.0.0.1:{port}/cam", open_timeout_s=1.0, read_timeout_s=1.0))
    assert time.monotonic() - t0 < 5.0
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ


def test_a_refused_stream_is_not_reported_as_a_timeout() -> None:
    """A camera whose port refused the connection was 'cannot open stream ... within 5000 ms' (in the log, in
    /health), as if it had not answered in time: an operator looks at the network, not at the camera."""
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError) as e:
        open_source(SourceConfig(uri=f"rtsp://127.0.0.1:{port}/cam", open_timeout_s=5.0))
    assert "within 5000 ms" not in str(e.value) and "failed after 0." in str(e.value), str(e.value)


def test_a_corrupt_image_in_a_folder_is_skipped_naming_it_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A folder replay ended at its first corrupt image (the whole run failed), where enroll skips such a file
    and a video's decoder passes over a frame it cannot decode: it is skipped with a warning naming it, counted,
    and the images after it keep their frame numbers and times (a folder's ground truth still lines up)."""
    folder = make_image_folder(tmp_path / "imgs", frames=5)
    (folder.path / "frame_3.png").write_bytes(b"not a png")
    with caplog.at_level("WARNING", logger="daemon"), open_source(SourceConfig(uri=str(folder.path))) as src:
        frames = list(src)
    assert [f.index for f in frames] == [0, 1, 3, 4]
    assert [match_frame(f.image, folder) for f in frames] == [0, 1, 3, 4]
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.1, 0.3, 0.4])
    stats = src.stats
    assert (stats.frames_skipped, stats.frames_decoded, stats.frames_delivered) == (1, 5, 4)
    assert re.search(r"skipped .*frame_3\.png.*corrupt or unsupported", caplog.text), caplog.text
    assert "ended after" not in caplog.text  # not taken for a replay cut short


def test_a_truncated_png_in_a_folder_is_skipped_saying_so_without_libpngs_own_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """A PNG cut short in a folder replay was skipped as 'corrupt or unsupported', and libpng printed its own
    'libpng error: PNG input buffer is incomplete' on stderr beside the warning: the warning says it is
    truncated, alone."""
    folder = make_image_folder(tmp_path / "imgs", frames=4)
    png = folder.path / "frame_3.png"
    whole = png.read_bytes()
    png.write_bytes(whole[: len(whole) // 2])
    with caplog.at_level("WARNING", logger="daemon"), open_source(SourceConfig(uri=str(folder.path))) as src:
        assert [f.index for f in src] == [0, 1, 3]
    said = f"skipped {png}: the PNG file is truncated: it ends at byte {len(whole) // 2}, inside its 'IDAT' chunk"
    assert said in caplog.text, caplog.text
    assert "libpng" not in capfd.readouterr().err


def test_a_video_named_as_an_image_in_a_folder_is_skipped_as_a_video(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A clip saved as frame_3.png in a folder replay was skipped as 'corrupt or unsupported': it is skipped
    saying it is a video."""
    folder = make_image_folder(tmp_path / "imgs", frames=4)
    clip = make_video(tmp_path / "clip.mp4", frames=3, size=(64, 48)).path
    (folder.path / "frame_3.png").write_bytes(clip.read_bytes())
    with caplog.at_level("WARNING", logger="daemon"), open_source(SourceConfig(uri=str(folder.path))) as src:
        assert [f.index for f in src] == [0, 1, 3]
    said = f"skipped {folder.path / 'frame_3.png'}: it is an MP4/MOV video, not an image (whatever its name)"
    assert said in caplog.text, caplog.text


def test_a_corrupt_image_in_a_folder_keeps_the_stride_in_step(tmp_path: Path) -> None:
    """With source.stride 2 the run takes images 0, 2, 4: a corrupt image 2 is that frame missed, not image 3
    taken in its place (the stride, and the scoring of every second frame, out of step from there)."""
    folder = make_image_folder(tmp_path / "imgs", frames=6)
    (folder.path / "frame_3.png").write_bytes(b"not a png")
    with open_source(SourceConfig(uri=str(folder.path), stride=2)) as src:
        assert [f.index for f in src] == [0, 4]
    assert (src.stats.frames_skipped, src.stats.frames_decoded) == (1, 6)


def test_a_folder_whose_first_and_last_images_are_corrupt_keeps_its_frame_numbers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = make_image_folder(tmp_path / "imgs", frames=4)
    for n in (1, 4):
        (folder.path / f"frame_{n}.png").write_bytes(b"")
    with caplog.at_level("WARNING", logger="daemon"), open_source(SourceConfig(uri=str(folder.path))) as src:
        assert [f.index for f in src] == [1, 2]
    assert (src.stats.frames_skipped, src.stats.frames_decoded) == (2, 4)
    assert "frame_1.png" in caplog.text and "frame_4.png" in caplog.text


def test_a_folder_where_no_image_decodes_is_an_error(tmp_path: Path) -> None:
    folder = make_image_folder(tmp_path / "imgs", frames=2)
    for f in folder.path.iterdir():
        f.write_bytes(b"not a png")
    with pytest.raises(
        SourceError, match=r"imgs: none of the 2 images read could be decoded \(the first, .*frame_1"
    ):
        open_source(SourceConfig(uri=str(folder.path)))


def test_a_text_file_given_as_the_video_is_refused(tmp_path: Path) -> None:
    """`run --source gt.txt` (the ground truth given for the video) ran on FFmpeg's rendering of the text as a
    640x400 video and wrote results for it."""
    gt = tmp_path / "gt.txt"
    gt.write_text("1,1,10,10,20,40,1,-1,-1,-1\n" * 50)
    with pytest.raises(SourceError, match=r"gt\.txt is a text file, not a video"):
        open_source(SourceConfig(uri=str(gt)))


@pytest.mark.parametrize(
    ("name", "ext", "kind"),
    [
        ("photo.jpg", ".jpg", "JPEG"),
        ("clip.mp4", ".jpg", "JPEG"),
        ("still.png", ".png", "PNG"),
        ("a.avi", ".bmp", "BMP"),
    ],
)
def test_a_still_image_given_as_the_video_is_refused(tmp_path: Path, name: str, ext: str, kind: str) -> None:
    """`run --source photo.jpg` (or a photo saved as .mp4) ran on it as a video of one frame, wrote its files
    and ended with exit 0: a service given a snapshot's path for its camera's stopped for good, its unit
    content. A file whose bytes are one still image is refused, naming it, its kind and what to give instead."""
    image = numbered_frame(3)
    path = tmp_path / name
    path.write_bytes(cv2.imencode(ext, image)[1].tobytes())
    with pytest.raises(SourceError) as e:
        open_source(SourceConfig(uri=str(path)))
    assert str(e.value) == (
        f"{path} is a still image ({kind}), not a video: give a video, or the folder of a sequence of images"
    )


def test_a_named_pipe_given_as_the_video_is_refused_at_once(tmp_path: Path) -> None:
    """`run --source clip.mp4` where clip.mp4 is a named pipe (mkfifo: a recorder's output, a mistake) hung for
    good before the models loaded: the text check opened it, which waits for a writer, and SIGTERM could not end
    the wait (Python retries the open). It is refused at once, naming it and why."""
    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def check() -> None:
        try:
            check_video_file(SourceConfig(uri=str(fifo)))
        except SourceError as e:
            outcome.append(e)

    worker = threading.Thread(target=check, daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive():  # let the stuck open go, or the test run hangs with it
        with open(fifo, "wb"):
            pass
        worker.join(5)
        pytest.fail("the check waited for a writer of the pipe")
    assert [str(e) for e in outcome] == [
        f"{fifo} is not a regular file (a named pipe, a device): give a video file, or a stream by its URL"
    ]


def test_an_empty_or_unreadable_video_file_says_which(tmp_path: Path) -> None:
    """A video file of 0 bytes (a recording that never began, a copy that failed) and one whose read fails (no
    read permission, a failing disk) were both 'unreadable, corrupt or not a video': each says what it is."""
    empty = tmp_path / "empty.mp4"
    empty.touch()
    unreadable = unreadable_file(tmp_path / "unreadable.mp4")
    for path, why in (
        (empty, "the file is empty (0 bytes)"),
        (unreadable, "it cannot be read: Input/output error"),
    ):
        with pytest.raises(SourceError) as e:
            open_source(SourceConfig(uri=str(path)))
        assert str(e.value) == f"cannot open video file {path}: {why}"


def test_an_mp4_cut_before_its_index_says_it_is_unfinished(tmp_path: Path) -> None:
    """An MP4 whose writer was stopped before it wrote its index (the 'moov' box, written last: a recording
    interrupted, a copy not complete) was 'unreadable, corrupt or not a video', as a file of another kind: it
    says the file is truncated or unfinished, where, and what to do."""
    whole = make_video(tmp_path / "whole.mp4", frames=10).path
    data = whole.read_bytes()
    moov = data.rindex(b"moov") - 4
    assert moov > len(data) // 2  # OpenCV's writer puts the index last
    cuts = {
        "in_frames.mp4": (moov // 2, f"it ends at byte {moov // 2}, inside its 'mdat' box, with no index"),
        "no_index.mp4": (moov, f"it ends at byte {moov} with no index ('moov' box)"),
        "in_index.mp4": (moov + 40, f"its index ('moov' box) is cut short at byte {moov + 40}"),
    }
    for name, (size, where) in cuts.items():
        cut = tmp_path / name
        cut.write_bytes(data[:size])
        with pytest.raises(SourceError) as e:
            open_source(SourceConfig(uri=str(cut)))
        said = str(e.value)
        assert said.startswith(
            f"cannot open video file {cut}: the MP4/MOV file is truncated or unfinished: "
        ), said
        assert where in said and "copy the whole file again" in said, said
    other = tmp_path / "other.mp4"  # not an ISO media file: the general words stay
    other.write_bytes(b"\x00" * 64)
    with pytest.raises(SourceError, match="unreadable, corrupt or not a video"):
        open_source(SourceConfig(uri=str(other)))


def test_a_motion_jpeg_file_of_several_pictures_is_a_video(tmp_path: Path) -> None:
    """Raw Motion JPEG (JPEG pictures one after the other, as some cameras record) begins as a JPEG image does:
    it is read as the video it is, every picture a frame."""
    path = tmp_path / "camera.mjpeg"
    path.write_bytes(b"".join(cv2.imencode(".jpg", numbered_frame(n))[1].tobytes() for n in range(3)))
    with open_source(SourceConfig(uri=str(path), fps=5)) as src:
        assert [frame_number(f.image) for f in src] == [0, 1, 2]


def test_an_image_over_opencvs_pixel_bound_in_a_folder_is_skipped_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Regression: `run` on a folder holding a 74-byte PNG that declares 50000x50000 ended in a cv2.error
    # traceback (OpenCV's CV_IO_MAX_IMAGE_PIXELS assertion) instead of naming the file; it is skipped as a
    # corrupt image is, the warning saying why.
    folder = make_image_folder(tmp_path, frames=3)
    (folder.path / "frame_2.png").write_bytes(png_declaring(50_000, 50_000, pixel_data=True))
    with caplog.at_level("WARNING", logger="daemon"), open_source(SourceConfig(uri=str(folder.path))) as src:
        assert [f.index for f in src] == [0, 2]
    assert re.search(r"frame_2\.png: OpenCV refuses it .*pixels", caplog.text), caplog.text


# ------------------------------------------------------------------------------------------------- closing


CLOSE_S = 2.0
"""What close() may take: it wakes the decoder thread (waiting to queue a frame, or between two tries) and waits
for it to end and release the capture, milliseconds on an idle host; it gives up on a decoder blocked in a read
only after open_timeout_s or read_timeout_s and 1 s (6 s here), leaving the thread behind."""


def _closed_promptly(src: FrameSource) -> None:
    thread = src._thread
    assert thread is not None
    t0 = time.monotonic()
    src.close()
    took = time.monotonic() - t0
    assert not thread.is_alive() and took < CLOSE_S, took  # woken and ended, not given up on


def test_close_while_producer_blocked_returns_quickly(clip: SyntheticClip) -> None:
    src = open_source(SourceConfig(uri=str(clip.path), queue_size=1))
    wait_for(lambda: src.stats.frames_decoded >= 2)  # one queued, one waiting to be queued
    # the producer waits in put() (CPython's Condition keeps its waiters' locks)
    wait_for(lambda: len(src._buffer._cond._waiters) == 1)  # type: ignore[attr-defined]
    _closed_promptly(src)
    assert not src.stats.connected  # the thread ended and released the capture
    src.close()  # idempotent
    with pytest.raises(StopIteration):
        next(src)


def test_close_before_start_and_context_manager(clip: SyntheticClip) -> None:
    src = FrameSource(SourceConfig(uri=str(clip.path)))
    src.close()
    with pytest.raises(SourceError, match="closed"):
        src.start()
    with FrameSource(SourceConfig(uri=str(clip.path))) as src2:
        assert next(src2).index == 0
    assert list(src2) == []


# --------------------------------------------------------------------------------- live: fakes and backoff


def test_backoff_schedule() -> None:
    b = Backoff(0.5, 4.0)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay() == 0.5
    limited = Backoff(0.5, 4.0, attempts=3)
    assert [limited.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, None, None]
    assert limited.exhausted
    assert Backoff(1.0, 10.0).delay(100_000) == 10.0  # no overflow on long outages


def test_backoff_jitter_only_shortens_and_validates() -> None:
    b = Backoff(1.0, 8.0, jitter=0.1, rng=random.Random(0))
    for nominal in [1.0, 2.0, 4.0, 8.0, 8.0]:
        d = b.next_delay()
        assert d is not None and 0.9 * nominal <= d <= nominal
    for bad in [(0.0, 1.0, 0, 0.0), (1.0, 1.0, -1, 0.0), (1.0, 1.0, 0, 1.0)]:
        with pytest.raises(ValueError):
            Backoff(*bad)


class FakeCapture:
    """Yields ``frames`` frames (pixel value = frame number), then fails like a dropped stream."""

    def __init__(self, frames: int, opened: bool = True, error: Exception | None = None) -> None:
        self.left, self.opened, self.error = frames, opened, error
        self.served = 0
        self.released = False

    def isOpened(self) -> bool:
        return self.opened

    def grab(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        self.served += 1
        return True

    def retrieve(self) -> tuple[bool, np.ndarray]:
        if self.error is not None:
            raise self.error
        return True, np.full((4, 6, 3), self.served % 256, np.uint8)

    def get(self, prop: int) -> float:
        return 25.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        self.released = True


class ScriptedFactory:
    """Hands out the given captures in order, then captures that fail to open."""

    def __init__(self, *captures: FakeCapture) -> None:
        self.script = list(captures)
        self.requests: list[CaptureRequest] = []
        self.handed: list[FakeCapture] = []

    def __call__(self, req: CaptureRequest) -> FakeCapture:
        self.requests.append(req)
        cap = self.script.pop(0) if self.script else FakeCapture(0, opened=False)
        self.handed.append(cap)
        return cap


def live_cfg(**kw: object) -> SourceConfig:
    base: dict[str, object] = {
        "uri": "rtsp://user:pw@cam.test/stream",
        "reconnect_initial_s": 0.01,
        "reconnect_max_s": 0.02,
        "reconnect_attempts": 3,
        "queue_size": 64,
    }
    return SourceConfig.model_validate(base | kw)


def drain(src: FrameSource) -> tuple[list[Frame], SourceError | None]:
    frames: list[Frame] = []
    try:
        for f in src:
            frames.append(f)
    except SourceError as e:
        return frames, e
    return frames, None


def test_live_source_reconnects_keeps_indices_and_gives_up_loudly() -> None:
    factory = ScriptedFactory(FakeCapture(5), FakeCapture(0, opened=False), FakeCapture(5))
    with open_source(live_cfg(), capture_factory=factory) as src:
        assert src.live and src.frame_count is None and src.fps == 25.0
        assert src.name == "rtsp://user:***@cam.test/stream"
        frames, error = drain(src)
    assert [f.index for f in frames] == list(range(10))  # indices continue across the reconnect
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    assert error is not None and "gave up" in str(error) and "3 reconnect attempts" in str(error)
    assert "pw" not in str(error)
    stats = src.stats
    assert (stats.reconnects, stats.reconnect_failures) == (1, 4)
    assert not stats.connected and "cannot open stream" in stats.last_error
    assert factory.requests[0] == CaptureRequest("rtsp", "rtsp://user:pw@cam.test/stream", 5000, 5000)
    assert all(cap.released for cap in factory.handed)


def test_live_source_drops_oldest_when_consumer_is_slow() -> None:
    factory = ScriptedFactory(FakeCapture(50))
    src = open_source(live_cfg(queue_size=2, reconnect_attempts=1), capture_factory=factory)
    wait_for(lambda: src.stats.reconnect_failures == 1)  # the producer is done: 50 frames, then gave up
    frames, error = drain(src)
    src.close()
    assert [f.index for f in frames] == [48, 49]
    assert src.stats.frames_dropped == 48 and src.stats.frames_delivered == 2
    assert error is not None


def test_file_timestamps_fall_back_to_index_over_fps(tmp_path: Path) -> None:
    video = tmp_path / "no_positions.mp4"
    video.write_bytes(b"")  # only needs to exist: the fake capture reports no position and no length
    factory = ScriptedFactory(FakeCapture(6))
    with open_source(SourceConfig(uri=str(video), stride=2), capture_factory=factory) as src:
        assert (src.live, src.fps, src.frame_count) == (False, 25.0, None)
        frames = list(src)
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.08, 0.16])
    assert [int(f.image[0, 0, 0]) for f in frames] == [1, 3, 5]
    assert factory.requests == [CaptureRequest("file", str(video), 5000, 5000)]


def _mjpeg_avi(video: Path, frames: int) -> bytearray:
    """An MJPEG AVI of ``frames`` 64x48 frames of rising grey written to ``video``; its bytes, to edit."""
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    return bytearray(video.read_bytes())


def test_a_file_whose_container_rate_is_implausible_is_timed_at_the_fallback_rate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An AVI whose header says 5000 fps: the source reported folder_fps (its fallback) as its rate, so the
    annotated video was written at 8 fps, but frames kept the container's positions at 5000 fps (frame 5 at
    1 ms), so events and the fleet clock ran 600x fast; and nothing said the rate was not used."""
    import struct

    video = tmp_path / "bogus-rate.avi"
    data = _mjpeg_avi(video, 6)
    strh = data.find(b"strh") + 8  # fccType, fccHandler, flags, priority, language, initial frames
    struct.pack_into("<II", data, strh + 20, 1, 5000)  # dwScale 1, dwRate 5000: 5000 fps
    video.write_bytes(data)
    assert cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FPS) == 5000.0
    with open_source(SourceConfig(uri=str(video), folder_fps=8)) as src:
        frames = list(src)
        assert src.fps == 8.0
    assert [f.timestamp for f in frames] == pytest.approx([i / 8 for i in range(6)])
    assert "no plausible frame rate (5000)" in caplog.text and "folder_fps" in caplog.text


class VariableRateCapture(FakeCapture):
    """A file of frames at the given positions (ms) whose container counts ``count`` frames (MKV and WebM carry
    no count: OpenCV gives their duration times the nominal rate, too many for a variable frame rate)."""

    def __init__(self, positions_ms: list[float], count: int, fps: float = 10.0) -> None:
        super().__init__(len(positions_ms))
        self.positions_ms, self.count, self.fps = positions_ms, count, fps

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_POS_MSEC:
            return self.positions_ms[self.served - 1] if self.served else 0.0
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_COUNT: float(self.count)}.get(prop, 0.0)


def test_a_variable_rate_file_read_to_its_end_is_not_said_to_end_early(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A variable-rate MKV of 100 frames over 17.3 s (10 fps nominal: OpenCV counts 173) warned 'ended after 100
    of 173 frames: read failed or the stream ended' and left that error in summary.json, though every frame was
    read. Read to its end, it is now told as such (which is also what a file whose decoder skipped frames it
    could not decode looks like); a file that does stop short of the end its container gives is still reported."""
    video = tmp_path / "vfr.mkv"
    video.write_bytes(b"")  # only needs to exist: the fake capture is the file
    vfr = [i * 100.0 for i in range(50)] + [5000.0 + i * 250.0 for i in range(50)]  # last frame at 17.25 s
    cut = [i * 100.0 for i in range(41)]  # a 10 s file that breaks off after 4 s
    for positions, count, early in ((vfr, 173, False), (cut, 100, True)):
        caplog.clear()
        factory = ScriptedFactory(VariableRateCapture(positions, count))
        with open_source(SourceConfig(uri=str(video)), capture_factory=factory) as src:
            frames = list(src)
            assert len(frames) == len(positions)
            assert [f.timestamp for f in frames] == pytest.approx([p / 1000 for p in positions])
        assert ("ended after" in caplog.text) is early, caplog.text
        assert ("read to its end" in caplog.text) is not early, caplog.text
        assert bool(src.stats.last_error) is early
        if not early:
            assert (
                "100 frames where its container counts 173: a variable frame rate, or frames" in caplog.text
            )
    assert "ended after 41 of 100 frames" in caplog.text


def test_a_video_file_with_no_decodable_frame_is_named_in_the_error(tmp_path: Path) -> None:
    """An AVI that opens (header and index intact) but none of whose frames decodes said 'no frame could be read
    from cam: read failed or the stream ended': the camera's name, not the file that is broken."""
    import struct

    video = tmp_path / "no frames é.avi"
    data = _mjpeg_avi(video, 5)
    pos, index = data.find(b"movi") + 4, data.find(b"idx1")
    while pos < index:  # blank every frame's JPEG data, keeping the chunks
        chunk, size = bytes(data[pos : pos + 4]), struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk.endswith(b"dc"):
            data[pos + 8 : pos + 8 + size] = bytes(size)
        pos += 8 + size + (size & 1)
    video.write_bytes(data)
    with pytest.raises(SourceError, match=rf"no frame could be read from {re.escape(str(video))} \(cam\)"):
        open_source(SourceConfig(uri=str(video)), name="cam")


def _blank_frames(data: bytearray, which: set[int]) -> bytearray:
    """An MJPEG AVI's bytes with the JPEG data of frames ``which`` (0-based) blanked, the chunks kept."""
    import struct

    pos, index, n = data.find(b"movi") + 4, data.find(b"idx1"), 0
    while pos < index:
        chunk, size = bytes(data[pos : pos + 4]), struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk.endswith(b"dc"):
            if n in which:
                data[pos + 8 : pos + 8 + size] = bytes(size)
            n += 1
        pos += 8 + size + (size & 1)
    return data


@pytest.mark.parametrize("stride", [1, 2])
def test_an_undecodable_frame_of_a_video_file_is_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, stride: int
) -> None:
    """An AVI with one damaged frame (its JPEG data lost) ended the replay there: OpenCV's grab fails at a frame
    FFmpeg cannot decode, and the run stopped at frame 2 of 6, 'ended after 2 of 6 frames: read failed or the
    stream ended', the rest of the file never read. The frame is passed over as a folder's corrupt image is:
    counted, named by its number in a warning, the frames after it keeping their numbers, times and stride."""
    video = tmp_path / "damaged.avi"
    video.write_bytes(_blank_frames(_mjpeg_avi(video, 6), {2}))
    with (
        caplog.at_level("WARNING", logger="daemon"),
        open_source(SourceConfig(uri=str(video), stride=stride)) as src,
    ):
        frames = list(src)
    want = [0, 1, 3, 4, 5] if stride == 1 else [0, 4]
    assert [f.index for f in frames] == want
    assert [round(float(f.image.mean()) / 40) for f in frames] == want  # frame i is grey 40 * i
    assert [f.timestamp for f in frames] == pytest.approx([i / 10 for i in want])
    assert (src.stats.frames_skipped, src.stats.frames_decoded) == (1, 6)
    assert f"{video}: frame 2 could not be decoded" in caplog.text and "ended after" not in caplog.text


def test_an_undecodable_frame_between_the_frames_a_stride_keeps_does_not_end_the_replay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With stride 2, a damaged frame among those the stride passes over (grabbed, not delivered) ended the replay
    there, 'ended after 3 of 6 frames: read failed or the stream ended', as if the file had been cut: only the
    frames read were passed over when they could not be decoded. Frame 3 is passed over as frame 2 is."""
    video = tmp_path / "damaged.avi"
    video.write_bytes(_blank_frames(_mjpeg_avi(video, 6), {3}))
    with (
        caplog.at_level("WARNING", logger="daemon"),
        open_source(SourceConfig(uri=str(video), stride=2)) as src,
    ):
        frames = list(src)
    assert [f.index for f in frames] == [round(float(f.image.mean()) / 40) for f in frames] == [0, 2, 4]
    assert (src.stats.frames_skipped, src.stats.frames_decoded) == (1, 6)
    assert f"{video}: frame 3 could not be decoded" in caplog.text and "ended after" not in caplog.text


def test_a_video_file_cut_short_still_says_it_ended_early(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Frames that cannot be decoded up to the end are not taken for damaged ones: the file ended early."""
    video = tmp_path / "cut.avi"
    video.write_bytes(_blank_frames(_mjpeg_avi(video, 6), {3, 4, 5}))
    with caplog.at_level("WARNING", logger="daemon"), open_source(SourceConfig(uri=str(video))) as src:
        assert [f.index for f in src] == [0, 1, 2]
    assert src.stats.frames_skipped == 0 and "ended after 3 of 6 frames" in caplog.text, caplog.text


def test_a_video_file_s_wrong_container_rate_can_be_corrected(tmp_path: Path) -> None:
    """PETS09-S2L1's container says 10 fps, its real rate is 7: configs/pets09.yaml set tracker.frame_rate 7,
    which timed nothing (it only scaled BoxMOT's buffer, which the tracker undid), so events and the annotated
    video kept the container's 10 fps and there was no setting that fixed them."""
    video = make_video(tmp_path / "clip.mp4", frames=5, fps=10.0).path
    with open_source(SourceConfig(uri=str(video), fps=7.0, stride=2)) as src:
        frames = list(src)
        assert (src.fps, src.delivered_fps) == (7.0, 3.5)
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 2 / 7, 4 / 7])
    with pytest.raises(SourceError, match=r"source\.fps works with video files only, not a folder source"):
        FrameSource(SourceConfig(uri=str(tmp_path), fps=7.0))


def test_webcam_index_and_wall_clock_timestamps() -> None:
    factory = ScriptedFactory(FakeCapture(3))
    t0 = time.time()
    with open_source(live_cfg(uri="webcam:0", reconnect_attempts=1), capture_factory=factory) as src:
        frames, error = drain(src)
    assert factory.requests[0].kind == "webcam" and factory.requests[0].target == 0
    assert len(frames) == 3 and error is not None
    assert all(t0 <= f.timestamp <= time.time() for f in frames)
    assert [f.timestamp for f in frames] == sorted(f.timestamp for f in frames)


def test_live_frames_carry_a_monotonic_reading_with_their_stamp(clip: SyntheticClip) -> None:
    """What tells a clock step from time passing (identity.retention_s counts real time): a live frame's reading of
    a monotonic clock, taken with its wall-clock stamp; a file's frames, timed by their position, have none."""
    factory = ScriptedFactory(FakeCapture(5))
    with open_source(live_cfg(reconnect_attempts=1), capture_factory=factory) as src:
        frames, _ = drain(src)
    readings = [f.monotonic for f in frames]
    assert len(frames) == 5 and all(isinstance(m, float) for m in readings)
    offsets = [f.timestamp - m for f, m in zip(frames, readings, strict=True) if m is not None]
    assert readings == sorted(readings) and max(offsets) - min(offsets) < 0.05  # the two clocks ran together
    with open_source(SourceConfig(uri=str(clip.path), max_frames=3)) as src:
        assert [f.monotonic for f in src] == [None] * 3


def test_error_in_decoder_thread_reaches_consumer_with_cause() -> None:
    boom = RuntimeError("decoder exploded")
    factory = ScriptedFactory(FakeCapture(1), FakeCapture(5, error=boom))
    with open_source(live_cfg(), capture_factory=factory) as src:
        frames, error = drain(src)
        with pytest.raises(SourceError):  # a failure is sticky: the iterator never turns into a silent end
            next(src)
    assert len(frames) == 1
    assert error is not None and "decoder exploded" in str(error) and error.__cause__ is boom


def test_live_close_during_backoff_is_prompt() -> None:
    factory = ScriptedFactory(FakeCapture(1))
    src = open_source(live_cfg(reconnect_initial_s=30, reconnect_max_s=30), capture_factory=factory)
    wait_for(lambda: not src.stats.connected)  # its first try failed: 30 s to the next
    _closed_promptly(src)


def test_ffmpeg_options_set_only_during_open(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", raising=False)
    with _ffmpeg_capture_options("rtsp_transport;tcp"):
        assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;tcp"
    assert "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;udp")
    with _ffmpeg_capture_options("rtsp_transport;tcp"):
        assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;udp"  # the user's choice wins
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "rtsp_transport;udp"


def test_stats_is_a_snapshot(clip: SyntheticClip) -> None:
    with open_source(SourceConfig(uri=str(clip.path))) as src:
        snap = src.stats
        assert isinstance(snap, SourceStats)
        snap.frames_delivered = 999
        assert src.stats.frames_delivered == 0


# ------------------------------------------------------------------------------------ real RTSP (GStreamer)


class RtspServer:
    """tests/rtsp_server.py under Debian's python3; skips the test when GStreamer's RTSP server is missing."""

    def __init__(self, video: Path) -> None:
        self.video = video
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        if not SYSTEM_PYTHON.exists():
            pytest.skip(f"{SYSTEM_PYTHON} not found: the RTSP test server needs Debian's python3-gst-1.0")
        cmd = [str(SYSTEM_PYTHON), str(RTSP_SERVER), str(self.video), "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 15.0)
        line = self.proc.stdout.readline().strip() if ready else ""
        if line.startswith("UNAVAILABLE"):
            self.stop()
            pytest.skip(
                f"GstRtspServer unusable under {SYSTEM_PYTHON} ({line[12:]}); install python3-gi "
                "python3-gst-1.0 gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,bad}"
            )
        if not line.startswith("READY "):
            self.stop()
            raise AssertionError(f"RTSP test server did not start: {line!r}")
        self.port = int(line.split()[1])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"


@pytest.fixture
def rtsp(tmp_path: Path) -> Iterator[tuple[RtspServer, SyntheticClip]]:
    clip = make_video(tmp_path / "stream.mp4", frames=150, fps=25.0, people=3)
    server = RtspServer(clip.path)
    server.start()
    try:
        yield server, clip
    finally:
        server.stop()


def rtsp_cfg(url: str, **kw: object) -> SourceConfig:
    base: dict[str, object] = {
        "uri": url,
        "open_timeout_s": 3.0,
        "read_timeout_s": 2.0,
        "reconnect_initial_s": 0.1,
        "reconnect_max_s": 0.4,
        "reconnect_attempts": 30,
        "queue_size": 64,
    }
    return SourceConfig.model_validate(base | kw)


def test_rtsp_stream_from_local_server(rtsp: tuple[RtspServer, SyntheticClip]) -> None:
    server, clip = rtsp
    with open_source(rtsp_cfg(server.url, max_frames=20)) as src:
        assert (src.kind, src.live, src.frame_count) == ("rtsp", True, None)
        frames = list(src)
    assert [f.index for f in frames] == list(range(20))
    assert [match_frame(f.image, clip) for f in frames] == list(range(20))  # TCP: nothing lost, in order
    assert all(b.timestamp >= a.timestamp for a, b in itertools.pairwise(frames))
    assert src.stats.reconnects == 0 and src.stats.frames_dropped == 0


def test_a_stream_its_server_will_not_play_is_told_from_one_nobody_serves(
    rtsp: tuple[RtspServer, SyntheticClip],
) -> None:
    """With FFmpeg kept quiet, its line saying which (refused, or 'DESCRIBE failed: 404 Not Found') is gone: the
    error says whether the server could be reached."""
    server, _ = rtsp
    with pytest.raises(SourceError, match="its server takes connections but would not play it"):
        open_source(rtsp_cfg(server.url.replace("/cam", "/nope")))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError, match=rf"connection refused by 127\.0\.0\.1:{port} \(nothing listens"):
        open_source(rtsp_cfg(f"rtsp://127.0.0.1:{port}/cam"))
    with pytest.raises(SourceError, match=r"host name 'camera\.invalid' not resolved"):
        open_source(rtsp_cfg("rtsp://camera.invalid/cam"))


def test_rtsp_server_restart_reconnects_and_resumes(rtsp: tuple[RtspServer, SyntheticClip]) -> None:
    server, clip = rtsp
    frames: list[Frame] = []
    deadline = time.monotonic() + 20.0
    with open_source(rtsp_cfg(server.url)) as src:
        for frame in src:
            frames.append(frame)
            if len(frames) == 10:
                server.stop()
                server.start()  # same port
            if src.stats.reconnects >= 1 and match_frame(frame.image, clip) >= 5 and len(frames) > 15:
                break
            assert time.monotonic() < deadline, f"no resume after restart: {src.stats}"
        stats = src.stats
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))  # increasing across the reconnect
    positions = [match_frame(f.image, clip) for f in frames]
    restart = next(i for i in range(1, len(positions)) if positions[i] < positions[i - 1])
    assert positions[restart] <= 2  # the new session starts again at the file's beginning
    assert stats.reconnects >= 1 and stats.connected


def test_a_stream_that_stops_sending_is_down_after_one_read_timeout(
    rtsp: tuple[RtspServer, SyntheticClip],
) -> None:
    """A camera that stops sending without closing the connection (frozen, or the network hangs): FFmpeg,
    interrupted after read_timeout_s, still hands out the frames its decoder holds, one more per timeout, and
    each was taken as the stream being alive: it was down only after 3 x read_timeout_s (15 s at the default
    5 s, with /health saying ok throughout)."""
    server, _ = rtsp
    timeout = 2.5  # seconds of slack under the bound below for a loaded host
    cfg = rtsp_cfg(server.url, read_timeout_s=timeout, reconnect_initial_s=5.0, reconnect_max_s=5.0)
    with open_source(cfg) as src:
        for n, _frame in enumerate(src):
            if n == 10:
                break
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)  # the server holds its connection and sends nothing
        try:
            t0 = time.monotonic()
            wait_for(lambda: not src.stats.connected, timeout=4 * timeout)
            took = time.monotonic() - t0
            error = src.stats.last_error
        finally:
            server.proc.send_signal(signal.SIGCONT)
    # the defect took 3 timeouts (the decoder's held frames, each handed out after one); one held frame alone
    # makes it 2: the bound, not the time one timeout takes on an idle host
    assert took < 2 * timeout, f"down after {took:.2f} s"
    assert "no frame for" in error and "source.read_timeout_s" in error


def test_a_long_outage_logs_its_first_failure_and_recovery_not_every_try(
    rtsp: tuple[RtspServer, SyntheticClip], caplog: pytest.LogCaptureFixture
) -> None:
    """Each reconnect attempt of a stream that was down logged a WARNING (one every 2 s with the deployed
    backoff: 43,000 lines a day of a camera unplugged). The first failure shows, the tries after it are held
    back (source.log_every_s), and the recovery says how many failed over how long."""
    server, _clip = rtsp
    seen = 0
    with (
        caplog.at_level(logging.INFO, logger="daemon.sources"),
        open_source(
            rtsp_cfg(server.url, reconnect_initial_s=0.05, reconnect_max_s=0.1, reconnect_attempts=0)
        ) as src,
    ):
        for _ in src:
            seen += 1
            if seen == 5:
                server.stop()
                # some 30 tries fail meanwhile (3 s of them on an idle host; however long a loaded one takes)
                wait_for(lambda: src.stats.reconnect_failures >= 30, timeout=60.0)
                server.start()  # same port
            if src.stats.reconnects >= 1:
                break
            assert seen < 500, "no reconnect"
        failures = src.stats.reconnect_failures
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert failures >= 10 and len(warnings) <= 3, warnings
    [back] = [r.getMessage() for r in caplog.records if "reconnected after" in r.getMessage()]
    assert "reconnecting in" in warnings[0] and server.url in warnings[0]  # the first one, with why
    assert re.search(rf"reconnected after \d+\.\d s \({failures} failed tries\)$", back), back


def test_repeated_failures_show_each_change_of_reason_and_count_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    repeats = RepeatedFailure(60.0, clock=lambda: now[0])
    tries = ["refused after 0.1 s"] * 5 + ["timed out"] * 3 + ["refused after 0.3 s"] * 2
    with caplog.at_level(logging.WARNING, logger="daemon.sources"):
        for why in tries:
            now[0] += 2.0
            repeats.warn(why, "cam: %s", why)
        now[0] += 60.0
        repeats.warn(
            "refused after 9.9 s", "cam: %s", "refused after 9.9 s"
        )  # a period later: with the count
        repeats.recovered()
        repeats.warn("refused after 0.1 s", "cam: %s", "refused after 0.1 s")  # a new outage: at once
    assert caplog.messages == [
        "cam: refused after 0.1 s",
        "cam: timed out (4 more like the one before)",
        "cam: refused after 0.3 s (2 more like the one before)",
        "cam: refused after 9.9 s (1 more like this since the last report)",
        "cam: refused after 0.1 s",
    ]


# ------------------------------------------------------------------------------ a camera that comes up late


def _dead_rtsp_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"rtsp://127.0.0.1:{s.getsockname()[1]}/cam"


def test_a_stream_that_comes_up_after_the_worker_is_waited_for(tmp_path: Path) -> None:
    """A camera that boots after the host (a power cut): with startup_wait_s the source keeps trying, then reads."""
    clip = make_video(tmp_path / "stream.mp4", frames=150, fps=25.0, people=3)
    server = RtspServer(clip.path)
    server.start()  # here, so a missing GStreamer skips; then down until the timer starts it on the same port
    server.stop()
    starter = threading.Timer(2.0, server.start)
    starter.start()
    t0 = time.monotonic()
    try:
        src = open_source_waiting(rtsp_cfg(server.url, startup_wait_s=30.0), threading.Event(), name="door")
        assert src is not None
        with src:
            first = next(iter(src))
        waited = time.monotonic() - t0
    finally:
        starter.join()
        server.stop()
    assert first.index == 0 and first.image.ndim == 3 and first.image.size > 0
    assert waited >= 1.5  # it did wait for the server rather than read something else


def test_a_stream_that_comes_up_in_the_last_backoff_slot_of_the_startup_wait_is_read(tmp_path: Path) -> None:
    """The wait gave up as soon as the next full backoff delay would end past source.startup_wait_s: with
    startup_wait_s 6 and 4 s delays it stopped after 4 s, saying it "tried for 6 s", and a camera up at 5 s was
    never opened. The last delay is cut to the deadline and the source is tried once more there."""
    clip = make_video(tmp_path / "stream.mp4", frames=150, fps=25.0, people=3)
    server = RtspServer(clip.path)
    server.start()
    server.stop()
    starter = threading.Timer(4.5, server.start)
    starter.start()
    cfg = rtsp_cfg(server.url, startup_wait_s=6.0, reconnect_initial_s=4.0, reconnect_max_s=4.0)
    try:
        src = open_source_waiting(cfg, threading.Event(), name="door")
        assert src is not None
        with src:
            first = next(iter(src))
    finally:
        starter.join()
        server.stop()
    assert first.index == 0


def test_without_a_startup_wait_a_dead_stream_fails_at_once() -> None:
    t0 = time.monotonic()
    with pytest.raises(SourceError) as err:
        open_source_waiting(rtsp_cfg(_dead_rtsp_url()), threading.Event())
    assert time.monotonic() - t0 < 5.0
    assert "startup_wait_s" not in str(err.value)


def test_a_stream_still_down_after_the_startup_wait_names_the_setting() -> None:
    t0 = time.monotonic()
    retries: list[str] = []  # each said to the caller (the worker's /health and STATUS say it)
    with pytest.raises(SourceError, match=r"tried for 1\.5 s: source\.startup_wait_s"):
        open_source_waiting(
            rtsp_cfg(_dead_rtsp_url(), startup_wait_s=1.5), threading.Event(), on_retry=retries.append
        )
    assert 1.0 <= time.monotonic() - t0 < 8.0
    assert retries and all("rtsp://127.0.0.1:" in r and "trying again in" in r for r in retries)


def test_a_stream_down_at_start_logs_its_first_failure_not_every_try(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each try to open a camera not up yet logged a WARNING (source.startup_wait_s: 240 s of them at the
    deployed backoff); the first shows, the rest are held back, and the worker's /health still hears each."""
    retries: list[str] = []
    cfg = rtsp_cfg(_dead_rtsp_url(), startup_wait_s=1.5, reconnect_initial_s=0.02, reconnect_max_s=0.05)
    with caplog.at_level(logging.WARNING, logger="daemon.sources"), pytest.raises(SourceError):
        open_source_waiting(cfg, threading.Event(), on_retry=retries.append)
    assert len(retries) >= 10
    assert len(caplog.messages) == 1 and "trying again in" in caplog.messages[0], caplog.messages


def test_a_missing_file_is_not_waited_for(tmp_path: Path) -> None:
    wait_s = 60.0
    t0 = time.monotonic()
    with pytest.raises(SourceError):
        open_source_waiting(
            SourceConfig(uri=str(tmp_path / "nope.mp4"), startup_wait_s=wait_s), threading.Event()
        )
    assert time.monotonic() - t0 < wait_s / 2  # one waited for takes all of startup_wait_s


def test_a_stop_while_waiting_for_the_stream_returns_none_promptly() -> None:
    stop = threading.Event()
    wait_s = 60.0
    threading.Timer(1.0, stop.set).start()
    t0 = time.monotonic()
    assert open_source_waiting(rtsp_cfg(_dead_rtsp_url(), startup_wait_s=wait_s), stop) is None
    assert time.monotonic() - t0 < wait_s / 2  # a wait the stop does not end takes all of startup_wait_s


def test_a_video_file_of_no_frames_is_named_so(tmp_path: Path) -> None:
    """`run --source empty.avi` (a recording stopped before its first frame: an AVI of 0 frames, which OpenCV
    opens) said 'no frame could be read from empty.avi: read failed or the stream ended', as a stream that
    dropped says it; the file is said to hold no frames (and one cut after its header, that the first of the
    frames its container counts cannot be read)."""
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter.fourcc(*"MJPG"), 7.0, (64, 48)).release()
    assert cv2.VideoCapture(str(empty)).isOpened()  # opened: the container is valid, it has no frame
    with pytest.raises(SourceError) as e:
        open_source(SourceConfig(uri=str(empty)))
    assert (
        str(e.value)
        == f"no frame could be read from {empty}: the file holds no frames (its container counts none)"
    )
    full = tmp_path / "full.avi"
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter.fourcc(*"MJPG"), 7.0, (64, 48))
    for value in (60, 120, 180):
        writer.write(np.full((48, 64, 3), value, np.uint8))
    writer.release()
    cut = tmp_path / "cut.avi"  # its header (as long as the empty file's) and nothing after it
    cut.write_bytes(full.read_bytes()[: empty.stat().st_size])
    with pytest.raises(
        SourceError, match=r"cut\.avi: its first frame could not be read \(its container counts 3\)$"
    ):
        open_source(SourceConfig(uri=str(cut)))

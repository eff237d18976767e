"""FFmpeg's and OpenCV's own messages, which go to the process's stderr (or stdout) past the logging.

Each failed reconnection of a stream that is down printed two: FFmpeg's ``[tcp @ 0x...] Connection to
tcp://...:554?timeout=0 failed: Connection refused`` and OpenCV's ``[ WARN:0@2.0] global cap.cpp:212 open
VIDEOIO(FFMPEG): backend is generally available but can't be used to capture by name``, unthrottled and in no log
format. They are kept quiet (FFmpeg's all, OpenCV's but its errors); what they said is in the errors the sources
raise (``sources.why_unreachable``) and the writers check. A level the user set in the environment
(``OPENCV_FFMPEG_LOGLEVEL``, ``OPENCV_LOG_LEVEL``) is left as it is. Kept apart from ``daemon.sources`` so that the
command line sets FFmpeg's before any command runs without importing OpenCV for every command.
"""

from __future__ import annotations

import functools
import os
from typing import Final

FFMPEG_LOG_ENV: Final = "OPENCV_FFMPEG_LOGLEVEL"  # read once, when OpenCV first uses FFmpeg
OPENCV_LOG_ENV: Final = "OPENCV_LOG_LEVEL"  # read when cv2 is imported
# AV_LOG_QUIET, not AV_LOG_FATAL (8): with a level set, OpenCV prints FFmpeg's messages to stdout, where a command's
# output goes
AV_LOG_QUIET: Final = "-8"


def quiet_ffmpeg() -> None:
    """FFmpeg's messages off, unless the user set their level; before OpenCV first uses FFmpeg (``cli.main``)."""
    os.environ.setdefault(FFMPEG_LOG_ENV, AV_LOG_QUIET)


@functools.cache
def quiet_video_libraries() -> None:
    """``quiet_ffmpeg``, and OpenCV's own messages kept to its errors unless the user set their level (cv2 read
    it when imported); once, before the first capture is opened."""
    quiet_ffmpeg()
    if OPENCV_LOG_ENV not in os.environ:
        import cv2

        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)

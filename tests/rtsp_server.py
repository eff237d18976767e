"""A tiny RTSP server for tests: serves an mp4 file (mp4v, H.264 or HEVC) over RTSP/TCP on 127.0.0.1, without
re-encoding.

Run it with Debian's interpreter (``/usr/bin/python3``), which sees the GStreamer bindings from the packages
python3-gi, python3-gst-1.0, gir1.2-gst-rtsp-server-1.0 and gstreamer1.0-plugins-{base,good,bad}:

    /usr/bin/python3 tests/rtsp_server.py VIDEO.mp4 [--codec mpeg4|h264|h265] [--port 0] [--mount /cam]

It prints ``READY <port>`` once listening (port 0 picks a free one) and serves until killed. Each client gets
the file from its start. When the bindings are missing it prints ``UNAVAILABLE <reason>`` and exits with 3, so
tests can skip with that reason.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

UNAVAILABLE_EXIT = 3
# the parser and RTP payloader of each codec an mp4 may hold (h264 and h265 with B-frames too)
_CODECS = {
    "mpeg4": ("mpeg4videoparse", "rtpmp4vpay"),
    "h264": ("h264parse", "rtph264pay"),
    "h265": ("h265parse", "rtph265pay"),
}


def _load_gstreamer(codec: str) -> tuple[Any, Any, Any]:
    import gi  # type: ignore[import-not-found, unused-ignore]  # Debian's python3-gi, not the venv

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtsp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # type: ignore[import-not-found, unused-ignore]

    Gst.init(None)
    for element in ("filesrc", "qtdemux", *_CODECS[codec]):
        if Gst.ElementFactory.find(element) is None:
            raise ImportError(f"GStreamer element {element!r} is missing")
    return GLib, GstRtsp, GstRtspServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "video", type=Path, help="mp4 file with MPEG-4 Part 2 video (cv2 'mp4v'), or --codec's"
    )
    parser.add_argument("--codec", choices=sorted(_CODECS), default="mpeg4", help="the video's codec")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free one)")
    parser.add_argument("--mount", default="/cam", help="path of the stream in the URL")
    args = parser.parse_args(argv)
    try:
        glib, gst_rtsp, gst_rtsp_server = _load_gstreamer(args.codec)
    except (ImportError, ValueError) as e:
        print(f"UNAVAILABLE {e}", flush=True)
        return UNAVAILABLE_EXIT
    if not args.video.is_file():
        parser.error(f"no such file: {args.video}")

    server = gst_rtsp_server.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = gst_rtsp_server.RTSPMediaFactory()
    location = str(args.video.resolve()).replace('"', '\\"')
    parse, pay = _CODECS[args.codec]
    factory.set_launch(f'( filesrc location="{location}" ! qtdemux ! {parse} ! {pay} name=pay0 pt=96 )')
    factory.set_protocols(gst_rtsp.RTSPLowerTrans.TCP)
    factory.set_shared(False)
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"UNAVAILABLE cannot listen on 127.0.0.1:{args.port}", flush=True)
        return 1
    print(f"READY {server.get_bound_port()}", flush=True)
    glib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

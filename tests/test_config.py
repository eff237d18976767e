from pathlib import Path

import pytest

from daemon.config import (
    CameraConfig,
    GroundTruthDetectorConfig,
    SourceConfig,
    SSDLiteDetectorConfig,
    load_settings,
    single_camera_settings,
    with_overrides,
)
from daemon.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "cam.yaml"
    p.write_text(text)
    return p


def test_shipped_configs_are_valid() -> None:
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        s = load_settings(path)
        assert s.cameras, path


def test_defaults_come_from_the_models(tmp_path: Path) -> None:
    s = load_settings(_write(tmp_path, "cameras:\n  a:\n    source: {uri: x.mp4}\n"))
    name, cam = s.camera()
    assert name == "a"
    assert isinstance(cam.detector, SSDLiteDetectorConfig)
    assert cam.tracker.track_buffer == 60
    assert cam.embedder.policy == "needed"


def test_unknown_nested_field_names_field_and_file(tmp_path: Path) -> None:
    p = _write(tmp_path, "cameras:\n  a:\n    source: {uri: x.mp4}\n    tracker: {track_bufer: 3}\n")
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    msg = str(e.value)
    assert str(p) in msg
    assert "cameras.a.tracker.track_bufer" in msg


def test_out_of_range_value(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "cameras:\n  a:\n    source: {uri: x.mp4}\n    detector: {type: ssdlite, score_threshold: 1.5}\n",
    )
    with pytest.raises(ConfigError, match=r"cameras\.a\.detector\.ssdlite\.score_threshold"):
        load_settings(p)


def test_unknown_detector_type(tmp_path: Path) -> None:
    p = _write(tmp_path, "cameras:\n  a:\n    source: {uri: x.mp4}\n    detector: {type: magic}\n")
    with pytest.raises(ConfigError, match="detector"):
        load_settings(p)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(_write(tmp_path, "cameras: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(_write(tmp_path, "- a\n- b\n"))


def test_no_cameras_and_bad_camera_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one camera"):
        load_settings(_write(tmp_path, "cameras: {}\n"))
    with pytest.raises(ConfigError, match="letters, digits"):
        load_settings(_write(tmp_path, "cameras:\n  'a b':\n    source: {uri: x}\n"))


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path, "cameras:\n  lobby:\n    source: {uri: x.mp4}\n    tracker: {track_buffer: 30}\n")
    monkeypatch.setenv("REID_CAMERAS__lobby__TRACKER__TRACK_BUFFER", "90")
    monkeypatch.setenv("REID_RUNTIME__ALLOW_SPINNING", "true")
    s = load_settings(p)
    assert s.cameras["lobby"].tracker.track_buffer == 90
    assert s.cameras["lobby"].source.uri == "x.mp4"
    assert s.runtime.allow_spinning is True


def test_bad_environment_value_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path, "cameras:\n  lobby:\n    source: {uri: x.mp4}\n")
    monkeypatch.setenv("REID_CAMERAS__lobby__TRACKER__TRACK_BUFFER", "-4")
    with pytest.raises(ConfigError, match="track_buffer"):
        load_settings(p)


def test_choosing_a_camera(tmp_path: Path) -> None:
    s = load_settings(_write(tmp_path, "cameras:\n  a: {source: {uri: x}}\n  b: {source: {uri: y}}\n"))
    with pytest.raises(ConfigError, match="--camera"):
        s.camera()
    assert s.camera("b")[1].source.uri == "y"
    with pytest.raises(ConfigError, match="no camera 'c'"):
        s.camera("c")


def test_with_overrides_revalidates() -> None:
    s = single_camera_settings(CameraConfig(source=SourceConfig(uri="a.mp4")), name="cam")
    s2 = with_overrides(
        s, "cam", {"source.uri": "b.mp4", "detector": {"type": "ground-truth", "path": "gt.txt"}}
    )
    assert s2.cameras["cam"].source.uri == "b.mp4"
    assert isinstance(s2.cameras["cam"].detector, GroundTruthDetectorConfig)
    assert s.cameras["cam"].source.uri == "a.mp4"
    with pytest.raises(ConfigError, match="max_frames"):
        with_overrides(s, "cam", {"source.max_frames": -1})


def test_tiles_bounds() -> None:
    with pytest.raises(ValueError, match="tiles"):
        SSDLiteDetectorConfig(tiles=(0, 2))

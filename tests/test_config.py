import json
import os
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from daemon.config import (
    BridgeConfig,
    CameraConfig,
    EmbedderConfig,
    GroundTruthDetectorConfig,
    Settings,
    SourceConfig,
    SSDLiteDetectorConfig,
    YoloDetectorConfig,
    default_cache_dir,
    load_settings,
    merge_defaults,
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


def test_a_detector_section_without_type_tunes_the_default_detector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: `detector: {score_threshold: 0.3}` (every field optional, as the shipped config says) stopped
    # with "cameras.a.detector: Unable to extract tag using discriminator 'type'", naming nothing to fix, and so
    # did REID_CAMERAS__a__DETECTOR__SCORE_THRESHOLD on a camera whose file has no detector section; an embedder
    # section without type was taken as the default embedder's all along.
    p = _write(tmp_path, "cameras:\n  a:\n    source: {uri: x.mp4}\n    detector: {score_threshold: 0.3}\n")
    _, cam = load_settings(p).camera()
    assert isinstance(cam.detector, SSDLiteDetectorConfig)
    assert cam.detector.score_threshold == 0.3
    monkeypatch.setenv("REID_CAMERAS__a__DETECTOR__TILES", "[2, 1]")
    _, cam = load_settings(_write(tmp_path, "cameras:\n  a:\n    source: {uri: x.mp4}\n")).camera()
    assert isinstance(cam.detector, SSDLiteDetectorConfig)
    assert cam.detector.tiles == (2, 1)


def test_out_of_range_value(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "cameras:\n  a:\n    source: {uri: x.mp4}\n    detector: {type: ssdlite, score_threshold: 1.5}\n",
    )
    with pytest.raises(ConfigError, match=r"cameras\.a\.detector\.score_threshold"):
        load_settings(p)


def test_source_uri_with_an_unknown_scheme_is_a_config_error(tmp_path: Path) -> None:
    """'rstp://' passed `config check`, then `run` failed with exit 1 (restarted by systemd) not naming the field."""
    p = _write(tmp_path, "cameras:\n  lobby:\n    source: {uri: 'rstp://admin:pw@10.0.0.5/s'}\n")
    with pytest.raises(ConfigError, match=r"cameras\.lobby\.source\.uri: .*scheme 'rstp'") as e:
        load_settings(p)
    assert "pw" not in str(e.value)
    assert SourceConfig(uri="RTSP://cam/s").uri == "RTSP://cam/s"
    assert SourceConfig(uri="file:///videos/a.mp4").uri == "file:///videos/a.mp4"


@pytest.mark.parametrize(
    "uri",
    [
        "rtsp:/admin:pw@10.0.0.5/s",
        "rtsp:admin:pw@10.0.0.5/s",
        "RTSP//admin:pw@10.0.0.5/s",
        "https:/cam/x.mp4",
    ],
)
def test_a_stream_url_with_its_slashes_mistyped_is_a_config_error(tmp_path: Path, uri: str) -> None:
    """'rtsp:/cam/s' (a slash short) passed `config check` as a file path, then `run` failed, exit 1 (restarted by
    systemd), with 'video file not found: rtsp:/cam/s (looked for at /srv/rtsp:/cam/s ...)'. The field is
    named with what is wrong, and never the URL's password."""
    scheme = uri.split(":")[0].split("/")[0]
    p = _write(tmp_path, f"cameras:\n  lobby:\n    source: {{uri: '{uri}'}}\n")
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert (
        f"cameras.lobby.source.uri: Value error, a stream URL needs '://' after its scheme ({scheme}://host/"
        "path); a file path cannot begin so either" in str(e.value)
    )
    assert "pw" not in str(e.value)
    assert SourceConfig(uri="rtsp_clips/a.mp4").uri == "rtsp_clips/a.mp4"  # a folder named so is a path
    assert SourceConfig(uri="file:/videos/a.mp4").uri == "file:/videos/a.mp4"  # left to the path check


def test_a_camera_named_by_a_yaml_number_or_boolean_says_to_quote_it(tmp_path: Path) -> None:
    """Cameras named by room number (`101:`) or a word YAML reads as a boolean (`on:`, `yes:`) are no text:
    the error said 'cameras.101.[key]: Input should be a valid string', and for `yes:` named it camera 1
    (True). It names the section, the name as read and what to write."""
    p = _write(
        tmp_path,
        "cameras:\n  101:\n    source: {uri: a.mp4}\n  yes:\n    source: {uri: b.mp4}\n"
        "ops: {camera_ports: {2.5: 9000}}\n",
    )
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    hint = "YAML reads an unquoted number, or yes/no/on/off/true/false, so: write the name in quotes"
    assert str(e.value).splitlines()[1:] == [
        f"  cameras: the name 101 is not text ({hint})",
        f"  cameras: the name True is not text ({hint})",
        f"  ops.camera_ports: the name 2.5 is not text ({hint})",
    ]


def test_unknown_detector_type(tmp_path: Path) -> None:
    p = _write(tmp_path, "cameras:\n  a:\n    source: {uri: x.mp4}\n    detector: {type: magic}\n")
    with pytest.raises(ConfigError, match="detector"):
        load_settings(p)


def test_a_key_given_twice_is_an_error_naming_it(tmp_path: Path) -> None:
    """YAML keeps the last of two equal keys: a camera block pasted twice under one name lost the first camera,
    and `config check` said valid."""
    twice = "cameras:\n  lobby:\n    source: {uri: a.mp4}\n  lobby:\n    source: {uri: b.mp4}\n"
    with pytest.raises(ConfigError, match=r"key 'lobby' is given twice(.|\n)*line 4"):
        load_settings(_write(tmp_path, twice))
    anchors = "cameras:\n  a: &a\n    source: {uri: a.mp4}\n  b:\n    <<: *a\n    source: {uri: b.mp4}\n"
    s = load_settings(_write(tmp_path, anchors))  # a merge key and the keys beside it are not repeats
    assert [c.source.uri for c in s.cameras.values()] == ["a.mp4", "b.mp4"]


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(_write(tmp_path, "cameras: [unclosed\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(_write(tmp_path, "- a\n- b\n"))


def test_a_folder_given_as_the_config_is_named_a_folder_not_missing(tmp_path: Path) -> None:
    # Regression: `config check configs/` (or a --config pointing at a folder) said "config file not found"
    # about a path that exists, sending the user to look for a typo in it.
    with pytest.raises(ConfigError, match=f"^config file {tmp_path} is a folder, not a YAML file$"):
        load_settings(tmp_path)


def test_a_named_pipe_given_as_the_config_is_named_so_not_missing(tmp_path: Path) -> None:
    """A named pipe (`--config <(generate-config)` in bash gives one, /dev/fd/63) was 'config file not found',
    about a path that is there."""
    pipe = tmp_path / "fleet.yaml"
    os.mkfifo(pipe)
    with pytest.raises(ConfigError) as e:
        load_settings(pipe)
    assert str(e.value) == (
        f"config file {pipe} is not a regular file (a named pipe, a device): write the config to a file and give that"
    )


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


def test_environment_variable_naming_no_section_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: REID_TRACKR__TRACK_BUFFER (a typo) was ignored without a word and config check said valid.
    p = _write(tmp_path, "cameras:\n  lobby:\n    source: {uri: x.mp4}\n")
    monkeypatch.setenv("REID_TRACKR__TRACK_BUFFER", "90")
    with pytest.raises(ConfigError, match=r"REID_TRACKR__TRACK_BUFFER name no field of the config .*runtime"):
        load_settings(p)
    monkeypatch.delenv("REID_TRACKR__TRACK_BUFFER")
    monkeypatch.setenv("REID_SITE_KEY", "a secret for {env: REID_SITE_KEY}")  # no '__': left alone
    monkeypatch.setenv("REID_MODELS_DIR", str(tmp_path))
    assert load_settings(p).models_dir == tmp_path
    monkeypatch.setenv(
        "REID_MODELS_DIR", ""
    )  # was the current folder; the recognition commands took the default
    assert load_settings(p).models_dir == default_cache_dir()


def test_environment_override_of_a_camera_named_in_upper_case_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Env names are lower-cased: REID_CAMERAS__Lobby__SOURCE__URI silently added a second camera 'lobby'
    and left camera 'Lobby' on the YAML's uri (a service ran the wrong stream, `config check` said valid)."""
    p = _write(tmp_path, "cameras:\n  Lobby:\n    source: {uri: x.mp4}\n")
    assert list(load_settings(p).cameras) == ["Lobby"]  # fine on its own
    monkeypatch.setenv("REID_CAMERAS__Lobby__SOURCE__URI", "rtsp://cam/stream")
    with pytest.raises(ConfigError, match=r"REID_CAMERAS__Lobby__SOURCE__URI cannot set camera 'Lobby'"):
        load_settings(p)


@pytest.mark.parametrize("spelt", ["Lobby", "LOBBY", "lobby"])
def test_environment_override_of_any_field_of_an_upper_case_camera_names_why_it_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelt: str
) -> None:
    """A variable setting any field but its source's uri (REID_CAMERAS__Lobby__TRACKER__TRACK_BUFFER=90) made
    the camera 'lobby' it adds fail first, so the message was 'cameras.lobby.source.uri: Field required' for a
    field the YAML gives: the variable, the camera and why are named, however the variable spells it."""
    p = _write(tmp_path, "cameras:\n  Lobby:\n    source: {uri: x.mp4}\n")
    monkeypatch.setenv(f"REID_CAMERAS__{spelt}__TRACKER__TRACK_BUFFER", "90")
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert str(e.value) == (
        f"environment variable(s) REID_CAMERAS__{spelt}__TRACKER__TRACK_BUFFER cannot set camera 'Lobby' of {p}: "
        "REID_ variable names are not case-sensitive (they set a camera 'lobby'), so name a camera set from the "
        "environment in lower case"
    )


def test_environment_override_of_a_camera_the_file_does_not_hold_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REID_CAMERAS__front_door__SOURCE__URI silently added a camera 'front_door' beside the file's 'front-door',
    which kept the YAML's uri. systemd drops variables whose name holds '-' from an EnvironmentFile, so that
    spelling was the only one a unit could pass: the camera ran the wrong stream, `config check` said valid."""
    p = _write(tmp_path, "cameras:\n  front-door:\n    source: {uri: x.mp4}\n")
    monkeypatch.setenv("REID_CAMERAS__front_door__SOURCE__URI", "rtsp://cam/stream")
    with pytest.raises(
        ConfigError, match=r"REID_CAMERAS__front_door__SOURCE__URI .*no camera 'front_door'"
    ) as e:
        load_settings(p)
    assert "'-'" in str(e.value) and "front-door" in str(e.value)  # why, and which camera it meant
    monkeypatch.delenv("REID_CAMERAS__front_door__SOURCE__URI")
    monkeypatch.setenv("REID_CAMERAS__frontdoor__TRACKER__TRACK_BUFFER", "90")  # a typo
    with pytest.raises(ConfigError, match=r"no camera 'frontdoor'.*front-door"):
        load_settings(p)


def test_a_port_for_a_camera_the_config_does_not_hold_is_an_error(tmp_path: Path) -> None:
    """A misspelt ops.camera_ports key was ignored: the camera served on a random port instead."""
    p = _write(
        tmp_path, "cameras:\n  lobby:\n    source: {uri: x.mp4}\nops: {camera_ports: {lobbby: 9471}}\n"
    )
    with pytest.raises(ConfigError, match=r"ops.camera_ports names no camera \['lobbby'\]"):
        load_settings(p)


def test_an_adjacency_edge_naming_a_camera_the_config_does_not_hold_is_an_error(tmp_path: Path) -> None:
    """A misspelt camera in identity.adjacency was taken as given: the real pair had no edge, so two
    overlapping views could never hold one person's id at once (every person shown by both got two ids)."""
    cams = "cameras:\n  lobby:\n    source: {uri: x.mp4}\n  door:\n    source: {uri: y.mp4}\n"
    edge = "identity: {adjacency: [{a: lobby, b: dor, min_s: 0, max_s: 10}]}\n"
    with pytest.raises(ConfigError, match=r"identity.adjacency names no camera \['dor'\]"):
        load_settings(_write(tmp_path, cams + edge))


def test_environment_switches_a_camera_to_another_detector_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REID_CAMERAS__a__DETECTOR__TYPE=yolo was merged key by key into the file's ssdlite section, whose tiles
    and full_frame the yolo backend refuses: no variable (not even the whole section as JSON) could switch it."""
    p = _write(
        tmp_path,
        "cameras:\n  a:\n    source: {uri: x.mp4}\n"
        "    detector: {type: ssdlite, tiles: [2, 1], full_frame: false}\n"
        "    embedder: {type: onnx, policy: all}\n",
    )
    monkeypatch.setenv("REID_CAMERAS__a__DETECTOR__TYPE", "yolo")
    monkeypatch.setenv("REID_CAMERAS__a__DETECTOR__MODEL", "yolov8s-person")
    monkeypatch.setenv("REID_CAMERAS__a__EMBEDDER__BATCH_SIZE", "4")
    cam = load_settings(p).cameras["a"]
    assert isinstance(cam.detector, YoloDetectorConfig) and cam.detector.model == "yolov8s-person"
    assert (cam.embedder.policy, cam.embedder.batch_size) == ("all", 4)  # same backend: merged key by key


def test_bad_environment_value_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path, "cameras:\n  lobby:\n    source: {uri: x.mp4}\n")
    monkeypatch.setenv("REID_CAMERAS__lobby__TRACKER__TRACK_BUFFER", "-4")
    with pytest.raises(ConfigError, match="track_buffer") as e:
        load_settings(p)
    # the error named only the file, where the bad value is not (and `config check` without the env passes)
    assert f"{p} and the environment (REID_CAMERAS__lobby__TRACKER__TRACK_BUFFER)" in str(e.value)


def test_environment_section_that_is_not_json_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REID_RUNTIME='{bad' escaped as pydantic-settings' SettingsError: a traceback and exit 1, not exit 2."""
    p = _write(tmp_path, "cameras:\n  lobby:\n    source: {uri: x.mp4}\n")
    monkeypatch.setenv("REID_RUNTIME", "{bad")
    with pytest.raises(ConfigError, match='field "runtime"'):
        load_settings(p)
    with pytest.raises(ConfigError, match="environment override"):
        single_camera_settings(CameraConfig(source=SourceConfig(uri="x.mp4")))


def test_environment_section_that_is_not_json_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REID_CAMERAS__lobby__TRACKER=90 (a section set to text that is not JSON) was reported as 'invalid
    environment override (REID_...)': which of the service's variables was wrong, it did not say."""
    p = _write(tmp_path, "cameras:\n  lobby:\n    source: {uri: x.mp4}\n")
    monkeypatch.setenv("REID_CAMERAS__lobby__TRACKER", "90 frames")
    monkeypatch.setenv("REID_RUNTIME__ALLOW_SPINNING", "true")  # a good one of another section: not named
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert str(e.value).startswith("invalid environment override (REID_CAMERAS__lobby__TRACKER): "), e.value
    assert "ALLOW_SPINNING" not in str(e.value)


def test_a_list_field_set_from_the_environment_not_as_json_says_how_to_write_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REID_CAMERAS__lobby__DETECTOR__TILES=2,1 (a list written as people write one) was told 'a variable that
    sets a whole section holds JSON', of no section: a list is JSON too, and the message says so with its form."""
    p = _write(tmp_path, "cameras:\n  lobby:\n    source: {uri: x.mp4}\n")
    monkeypatch.setenv("REID_CAMERAS__lobby__DETECTOR__TILES", "2,1")
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert "(REID_CAMERAS__lobby__DETECTOR__TILES)" in str(e.value), e.value
    assert "a list, as JSON: [2, 1]" in str(e.value), e.value


FLEET_WITH_DEFAULTS = """
camera_defaults:
  embedder: {batch_size: 4, flip_average: true}
  tracker: {track_buffer: 45}
  detector: {score_threshold: 0.2}
cameras:
  a:
    source: {uri: a.mp4}
    tracker: {track_buffer: 90}
  b:
    source: {uri: b.mp4}
    detector: {type: ground-truth, path: b.gt.txt}
"""


def test_camera_defaults_reach_every_camera_and_a_camera_own_setting_wins(tmp_path: Path) -> None:
    s = load_settings(_write(tmp_path, FLEET_WITH_DEFAULTS))
    a, b = s.cameras["a"], s.cameras["b"]
    assert (a.embedder.batch_size, b.embedder.batch_size) == (4, 4)
    assert a.embedder.flip_average and b.embedder.flip_average
    assert (a.tracker.track_buffer, b.tracker.track_buffer) == (90, 45)
    assert isinstance(a.detector, SSDLiteDetectorConfig) and a.detector.score_threshold == 0.2
    # b names another detector backend: the default detector section does not leak its keys into it
    assert isinstance(b.detector, GroundTruthDetectorConfig) and b.detector.path == Path("b.gt.txt")
    # a changed copy keeps the defaults (they are merged again on re-validation, the camera's values winning)
    s2 = with_overrides(s, "a", {"source.uri": "c.mp4"})
    assert s2.cameras["a"].tracker.track_buffer == 90 and s2.cameras["b"].embedder.batch_size == 4


def test_camera_defaults_from_the_environment_switch_every_camera(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REID_CAMERA_DEFAULTS__EMBEDDER__BATCH_SIZE", "8")
    s = load_settings(_write(tmp_path, FLEET_WITH_DEFAULTS))
    assert [c.embedder.batch_size for c in s.cameras.values()] == [8, 8]
    assert all(c.embedder.flip_average for c in s.cameras.values())  # the YAML's other defaults stay


def test_camera_defaults_name_what_is_wrong(tmp_path: Path) -> None:
    cams = "cameras:\n  a: {source: {uri: x}}\n"
    with pytest.raises(ConfigError, match=r"unknown camera setting\(s\) \['embeder'\]"):
        load_settings(_write(tmp_path, "camera_defaults:\n  embeder: {}\n" + cams))
    with pytest.raises(ConfigError, match=r"camera_defaults\.embedder: unknown setting\(s\) \['modle'\]"):
        load_settings(_write(tmp_path, "camera_defaults:\n  embedder: {modle: x}\n" + cams))
    with pytest.raises(ConfigError, match="camera_defaults must be a mapping"):
        load_settings(_write(tmp_path, "camera_defaults: [1]\n" + cams))
    with pytest.raises(ConfigError, match=r"cameras\.a\.tracker\.track_buffer"):
        load_settings(_write(tmp_path, "camera_defaults:\n  tracker: {track_buffer: -1}\n" + cams))


def test_merge_defaults_by_mapping_lists_replaced_other_backend_replaces() -> None:
    defaults = {"type": "x", "a": 1, "n": {"b": 2, "c": 3}, "l": [1, 2]}
    assert merge_defaults(defaults, {"n": {"c": 4}, "l": [5]}) == {
        "type": "x",
        "a": 1,
        "n": {"b": 2, "c": 4},
        "l": [5],
    }
    assert merge_defaults(defaults, {"type": "y", "z": 0}) == {"type": "y", "z": 0}
    assert defaults["n"] == {"b": 2, "c": 3}  # the defaults are not changed


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


def test_an_embedder_input_size_without_pixels_is_refused() -> None:
    """input_size [0, 128] passed validation and crashed in cv2's resize at the first crop."""
    with pytest.raises(ValidationError, match="input_size"):
        EmbedderConfig(input_size=(0, 128))
    assert EmbedderConfig(input_size=(224, 112)).input_size == (224, 112)


def test_an_error_in_a_detector_names_the_field_as_the_yaml_has_it(tmp_path: Path) -> None:
    """The path carried the backend's tag that pydantic adds: 'cameras.a.detector.yolo.tiles', a field no
    config has; it is 'cameras.a.detector.tiles'."""
    p = tmp_path / "c.yaml"
    p.write_text("cameras:\n  a:\n    source: {uri: x.mp4}\n    detector: {type: yolo, tiles: [0, 1]}\n")
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert "cameras.a.detector.tiles" in str(e.value) and "detector.yolo" not in str(e.value)


def test_a_path_starting_with_a_tilde_is_in_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`output: {dir: ~/reid-runs}` wrote into ./~/reid-runs and `source: {uri: ~/clip.mp4}` was looked for at
    <cwd>/~/clip.mp4: a YAML file (or an environment variable) is not read by a shell."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("REID_CAMERAS__cam__DETECTOR__PATH", "~/gt.txt")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "models_dir: ~/models\n"
        "cameras:\n  cam:\n    source: {uri: ~/clip.mp4}\n    output: {dir: ~/reid-runs}\n"
        "    detector: {type: ground-truth, path: x}\n    embedder: {model: ~/osnet.onnx}\n"
    )
    s = load_settings(cfg)
    cam = s.cameras["cam"]
    assert cam.source.uri == str(tmp_path / "clip.mp4") and cam.output.dir == tmp_path / "reid-runs"
    assert cam.detector.path == tmp_path / "gt.txt"  # type: ignore[union-attr]
    assert cam.embedder.model == str(tmp_path / "osnet.onnx") and s.models_dir == tmp_path / "models"
    cfg.write_text("cameras:\n  cam:\n    source: {uri: 'rtsp://h/~x'}\n    output: {dir: a~b}\n")
    monkeypatch.delenv("REID_CAMERAS__cam__DETECTOR__PATH")
    cam = load_settings(cfg).cameras["cam"]
    assert cam.source.uri == "rtsp://h/~x" and cam.output.dir == Path("a~b")  # only a leading ~ is home


def test_accepted_fleet_keys_without_a_signing_key_are_refused() -> None:
    """bridge.accept_keys with no signing_key (allow_unsigned) was taken and silently ignored: nothing is signed
    or checked then, so the keys a user set for a rotation did nothing."""
    key = {"value": "the-next-fleet-key-9876543210"}
    with pytest.raises(ValidationError, match=r"accept_keys .* signing_key, which is not set"):
        BridgeConfig(allow_unsigned=True, accept_keys=[key])  # type: ignore[list-item]
    assert BridgeConfig(signing_key=key, accept_keys=[key]).accept_keys  # type: ignore[arg-type,list-item]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (None, r"is null: an embedded Valkey is one node, not a Cluster"),
        ("unix:///run/valkey/valkey.sock", r"a unix socket: a Cluster is reached over TCP"),
        ("redis://10.0.0.5:7000/2", r"names database 2: a Cluster has database 0 only"),
        ("redis://10.0.0.5:7000?db=1", r"names database 1: a Cluster has database 0 only"),
    ],
)
def test_a_cluster_reached_where_valkey_py_cannot_is_refused(
    tmp_path: Path, url: str | None, problem: str
) -> None:
    """bridge.cluster with no URL (the embedded server, one node), a unix socket or a database other than 0 was
    valid; then every fleet worker failed in a traceback ('Cluster mode is not enabled on this node', 'does not
    currently support Unix Domain Socket connections'), and `who` too. Each names bridge.cluster and why."""
    body = "cameras:\n  c: {source: {uri: x.mp4}}\nbridge:\n  cluster: true\n"
    body += "" if url is None else f"  url: '{url}'\n"
    with pytest.raises(ConfigError, match=r"bridge: .*bridge\.cluster is set but bridge\.url .*" + problem):
        load_settings(_write(tmp_path, body))
    for fine in ("redis://10.0.0.5:7000", "rediss://u:p@10.0.0.5:7000/0"):
        assert BridgeConfig(url=fine, cluster=True).cluster


def test_a_credential_file_others_can_read_is_warned_about_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`who` and `forget` are run with CREDENTIALS_DIRECTORY=/etc/reid-daemon/credentials (deploy/README), a
    folder systemd does not guard: a fleet key there that its group or anyone could read (a copy made without
    umask 077) was read without a word, as ssh would not. One warning names the file and its mode (never its
    content); a file for its owner alone, and systemd's own credentials folder, give none."""
    from daemon.config import SecretSource

    key = "fleet-key-for-tests-0123456789"
    folder = tmp_path / "etc-credentials"
    folder.mkdir()
    for name, mode in (("fleet-key", 0o644), ("valkey-password", 0o640), ("own-key", 0o600)):
        (folder / name).write_text(key + "\n", encoding="utf-8")
        (folder / name).chmod(mode)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(folder))
    with caplog.at_level("WARNING", logger="daemon.config"):
        for _ in range(2):
            assert SecretSource(credential="fleet-key").resolve("bridge.signing_key") == key.encode()
        SecretSource(credential="valkey-password").resolve("bridge.password")
        SecretSource(credential="own-key").resolve("bridge.signing_key")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2 and key not in caplog.text, warned
    assert (
        f"{folder / 'fleet-key'}" in warned[0] and "0644" in warned[0] and "bridge.signing_key" in warned[0]
    )
    assert f"{folder / 'valkey-password'}" in warned[1] and "0640" in warned[1] and "chmod 600" in warned[1]
    caplog.clear()
    runtime = tmp_path / "run-user"
    systemd = runtime / "credentials" / "reid-daemon@lobby.service"  # a user unit's credentials folder
    systemd.mkdir(parents=True)
    (systemd / "fleet-key").write_text(key, encoding="utf-8")
    (systemd / "fleet-key").chmod(0o644)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(systemd))
    with caplog.at_level("WARNING", logger="daemon.config"):
        SecretSource(credential="fleet-key").resolve("bridge.signing_key")
    assert not caplog.records


def test_a_config_holding_secrets_that_others_can_read_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A config file holding a secret in its own text (an inline fleet key, a password in bridge.url or in a
    camera's stream URL) was read whatever its mode, where a credential file its group or others may read is
    warned about, as ssh does. One warning names the file, its mode and the settings (never a secret); a file
    for its owner alone, and one holding no secret (secrets from the environment or credentials), give none."""
    secrets = ("fleet-key-for-tests-0123456789", "hunter2", "s3cret")
    text = (
        "cameras:\n"
        "  lobby: {source: {uri: 'rtsp://admin:s3cret@10.0.0.5/s1'}}\n"
        "  door: {source: {uri: 'rtsp://10.0.0.6/s1'}}\n"
        "fleet: {enabled: true}\n"
        "bridge:\n"
        "  url: 'redis://:hunter2@127.0.0.1:6379'\n"
        "  signing_key: {value: fleet-key-for-tests-0123456789}\n"
    )
    open_file, own_file, clean_file = (tmp_path / f"{n}.yaml" for n in ("open", "own", "clean"))
    open_file.write_text(text, encoding="utf-8")
    own_file.write_text(text, encoding="utf-8")
    clean_file.write_text(
        "cameras: {lobby: {source: {uri: 'rtsp://10.0.0.5/s1'}}}\n"
        "bridge: {url: 'redis://127.0.0.1:6379', signing_key: {credential: fleet-key}}\n",
        encoding="utf-8",
    )
    open_file.chmod(0o644)
    own_file.chmod(0o600)
    clean_file.chmod(0o644)
    with caplog.at_level("WARNING", logger="daemon.config"):
        for p in (open_file, open_file, own_file, clean_file):
            load_settings(p)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned
    assert f"{open_file} is open to its group or others (mode 0644)" in warned[0], warned
    for setting in ("cameras.lobby.source.uri", "bridge.url", "bridge.signing_key.value"):
        assert setting in warned[0], warned
    assert "cameras.door" not in warned[0] and not any(s in caplog.text for s in secrets), warned


# `section.field` (N ...) or `section.field`, N ...: how README.md and deploy/README.md state a default
_STATED_DEFAULT = re.compile(r"`([a-z_]+(?:\.[a-z_]+)+)`(?: \(|, )(\d+(?:\.\d+)?)(?=[ ,:;)])")


def _model_default(path: str) -> Any:
    """The default of a dotted config path (a camera's sections by their own name: ``source.read_timeout_s``)."""
    model: Any = CameraConfig if path.split(".")[0] in CameraConfig.model_fields else Settings
    for name in path.split("."):
        f = model.model_fields[name]
        sub = [a for a in (f.annotation, *typing.get_args(f.annotation)) if isinstance(a, type)]
        model = next((a for a in sub if issubclass(a, BaseModel)), None)
        if model is None:
            return f.get_default(call_default_factory=True)
    raise AssertionError(f"{path} is a section, not a field")


def test_the_defaults_the_readmes_state_are_the_configs() -> None:
    # README.md and deploy/README.md give defaults in prose ("`identity.lost_after_s` (1 s)", "`bridge.resync_s`
    # (5 s)"); one changed in the config and not there would go on being documented
    stated = [
        (doc.name, m.group(1), float(m.group(2)))
        for doc in (ROOT / "README.md", ROOT / "deploy" / "README.md")
        for m in _STATED_DEFAULT.finditer(doc.read_text())
    ]
    assert len(stated) >= 6  # the check reads what it should (it found 9 when written)
    wrong = [(doc, path, value, _model_default(path)) for doc, path, value in stated]
    assert [w for w in wrong if w[2] != w[3]] == []


_CAM = "cameras:\n  a:\n    source: {uri: x.mp4}\n"
_TWO = _CAM + "  b:\n    source: {uri: y.mp4}\n"
_POINTS3 = "[[0, 0], [1, 0], [0, 1]]"
_POINTS4 = "[[0, 0], [1, 0], [0, 1], [1, 1]]"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (_CAM[:-2] + ", open_timeout_s: 0}\n", r"cameras\.a\.source\.open_timeout_s: .*greater than 0"),
        (_CAM[:-2] + ", queue_size: 0}\n", r"cameras\.a\.source\.queue_size: .*greater than or equal to 1"),
        (_CAM[:-2] + ", stride: 0}\n", r"cameras\.a\.source\.stride: .*greater than or equal to 1"),
        (_CAM + "    detector: {tiles: [1, 9]}\n", r"cameras\.a\.detector\.tiles: .*between 1 and 8"),
        (
            _CAM + "    detector: {tile_overlap: 0.9}\n",
            r"cameras\.a\.detector\.tile_overlap: .*less than 0\.9",
        ),
        (_CAM + "    detector: {type: yolo, imgsz: 650}\n", r"cameras\.a\.detector\.imgsz: .*multiple of 32"),
        (
            _CAM + "    embedder: {type: onnx, truth: {path: gt.txt}}\n",
            r"cameras\.a\.embedder: .*needs `truth` .*only it takes one",
        ),
        (
            _CAM + "    embedder: {type: boxmot, model: osnet.pt, head: h.npz}\n",
            r"cameras\.a\.embedder: .*head works with embedder type 'onnx' only, not 'boxmot'",
        ),
        (
            _CAM + "    embedder: {type: none, detail_height: 64}\n",
            r"cameras\.a\.embedder: .*colour_norm and detail_height work with embedder type 'onnx' only",
        ),
        (
            _CAM + "    embedder: {input_size: [4, 128]}\n",
            r"cameras\.a\.embedder\.input_size\.0: .*equal to 8",
        ),
        (
            _CAM + f"    site: {{image_points: {_POINTS3}, site_points: {_POINTS3}}}\n",
            r"cameras\.a\.site: .*at least four image_points and as many site_points \(got 3 and 3\)",
        ),
        (
            _CAM + f"    site: {{image_points: {_POINTS4}, site_points: {_POINTS3}}}\n",
            r"cameras\.a\.site: .*as many site_points \(got 4 and 3\)",
        ),
        (
            _CAM + f"    site: {{homography: [[1, 0, 0], [0, 1, 0], [0, 0, 1]], image_points: {_POINTS4}}}\n",
            r"cameras\.a\.site: .*either homography or image_points \+ site_points, not both",
        ),
        (
            _CAM + "    site: {homography: [[1, 0, 0], [0, 1, 0]]}\n",
            r"cameras\.a\.site: .*homography must have 3 rows, got 2",
        ),
        (
            _TWO + "identity: {adjacency: [{a: a, b: a, min_s: 0, max_s: 5}]}\n",
            r"identity\.adjacency\.0: .*two different cameras, got 'a' twice",
        ),
        (
            _TWO + "identity: {adjacency: [{a: a, b: b, min_s: 6, max_s: 5}]}\n",
            r"identity\.adjacency\.0: .*max_s \(5\.0\) must be at least min_s \(6\.0\)",
        ),
        (
            _TWO
            + "identity:\n  adjacency: [{a: a, b: b, min_s: 0, max_s: 5}, {a: b, b: a, min_s: 1, max_s: 9}]\n",
            r"identity: .*cameras 'a' and 'b' are joined twice",
        ),
        (
            _CAM + "identity: {min_observations: 3, new_min_observations: 2}\n",
            r"identity: .*new_min_observations \(2\) must be at least min_observations \(3\)",
        ),
        (
            _CAM + "identity: {track_timeout_s: 10, max_frame_gap_s: 10}\n",
            r"identity: .*max_frame_gap_s \(10\) must be below track_timeout_s \(10\)",
        ),
        (_CAM + "ops: {latency_buckets: [0, 1]}\n", r"ops\.latency_buckets: .*positive, finite and strictly"),
        (_CAM + "ops: {latency_buckets: [0.1, 0.1, 1]}\n", r"ops\.latency_buckets: .*strictly increasing"),
        (_CAM + "ops: {camera_ports: {a: 70000}}\n", r"ops\.camera_ports\.a: .*less than or equal to 65535"),
        (
            _CAM + "bridge: {reconnect_initial_s: 2, reconnect_max_s: 1}\n",
            r"bridge: .*reconnect_max_s \(1\.0\) must be at least reconnect_initial_s \(2\.0\)",
        ),
        (_CAM + "bridge: {tls: {cert: c.pem}}\n", r"bridge\.tls: .*cert and key go together"),
        (_CAM + "bridge: {tls: {key: k.pem}}\n", r"bridge\.tls: .*cert and key go together"),
        (_CAM + "bridge: {url: 'http://10.0.0.5:6379'}\n", r"bridge\.url: .*unknown scheme 'http'"),
        (
            _CAM + "gallery: {path: people.txt}\n",
            r"gallery\.path: .*a gallery file ends in \.rdg, \.npz, \.json, not \.txt",
        ),
        ("cameras:\n  a:\n    source: {uri: ' rstp://cam/s'}\n", r"cameras\.a\.source\.uri: .*scheme 'rstp'"),
        (
            _CAM + "bridge: {password: {}}\n",
            r"bridge\.password: .*give exactly one of value, env, credential \(got none\)",
        ),
        (_CAM + "bridge: {signing_key: {env: 'FLEET KEY'}}\n", r"bridge\.signing_key\.env: .*match pattern"),
        (
            _CAM + "bridge: {signing_key: {credential: ../../etc/fleet-key}}\n",
            r"bridge\.signing_key\.credential: .*match pattern",
        ),
    ],
)
def test_a_value_out_of_its_bounds_is_an_error_naming_the_setting(
    tmp_path: Path, body: str, named: str
) -> None:
    """Each bound and cross-field check of the config, tried through a YAML file as a user writes it: the
    error names the setting by its path in the file and says what is wrong (a mutation audit found each of
    them unchecked by the config tests: the bound moved or the check removed, every config test passed)."""
    with pytest.raises(ConfigError, match=named):
        load_settings(_write(tmp_path, body))


@pytest.mark.parametrize(
    "body",
    [
        _CAM + "    detector: {tiles: [8, 8]}\n",
        _CAM + "    embedder: {input_size: [8, 8]}\n",
        _TWO + "identity: {adjacency: [{a: a, b: b, min_s: 5, max_s: 5}]}\n",
        _CAM + "identity: {min_observations: 3, new_min_observations: 3}\n",
        _CAM + "bridge: {reconnect_initial_s: 2, reconnect_max_s: 2}\n",
        _CAM + f"    site: {{image_points: {_POINTS4}, site_points: {_POINTS4}}}\n",
    ],
)
def test_a_value_at_its_bound_is_taken(tmp_path: Path, body: str) -> None:
    """The bounds are inclusive where the help says 'at least' or 'between': a value at one is valid."""
    assert load_settings(_write(tmp_path, body)).cameras


def test_a_short_track_timeout_without_a_frame_gap_gets_half_of_it(tmp_path: Path) -> None:
    """identity.track_timeout_s at or below max_frame_gap_s's default (2 s), valid before that setting came,
    gets half of it rather than an error about a setting the file never wrote; set, or above 2 s, it stays."""
    gaps = [
        load_settings(_write(tmp_path, _CAM + f"identity: {{{ident}}}\n")).identity.max_frame_gap_s
        for ident in (
            "track_timeout_s: 2",
            "track_timeout_s: 1.5",
            "track_timeout_s: 3",
            "track_timeout_s: 2, max_frame_gap_s: 0.5",
        )
    ]
    assert gaps == [1.0, 0.75, 2.0, 0.5]


def test_a_secret_that_is_missing_or_empty_is_an_error_naming_the_setting_and_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret is read as a component starts: an unset variable, an empty one and an empty credential file are
    each named with the setting (never a secret), and a credential loses one trailing newline, no more (a
    mutation audit: the unset check, the empty check, and the newline stripped whole, passed every config
    test)."""
    from daemon.config import SecretSource

    monkeypatch.delenv("REID_TEST_FLEET_KEY", raising=False)
    with pytest.raises(
        ConfigError, match=r"^bridge\.signing_key: environment variable REID_TEST_FLEET_KEY is not set$"
    ):
        SecretSource(env="REID_TEST_FLEET_KEY").resolve("bridge.signing_key")
    monkeypatch.setenv("REID_TEST_FLEET_KEY", "")
    with pytest.raises(
        ConfigError, match=r"^bridge\.password: environment variable REID_TEST_FLEET_KEY is empty$"
    ):
        SecretSource(env="REID_TEST_FLEET_KEY").resolve("bridge.password")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    for name, text in (("empty", b""), ("newline", b"\n"), ("key", b" fleet key \n\n")):
        (tmp_path / name).write_bytes(text)
        (tmp_path / name).chmod(0o600)
    for name in ("empty", "newline"):
        with pytest.raises(
            ConfigError, match=rf"^bridge\.signing_key: systemd credential {tmp_path / name} is empty$"
        ):
            SecretSource(credential=name).resolve("bridge.signing_key")
    assert SecretSource(credential="key").resolve("bridge.signing_key") == b" fleet key \n"


def test_an_earlier_fleet_key_written_in_an_open_config_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """bridge.accept_keys is a list: an earlier fleet key written in it (a key rotation, deploy/README.md) is
    a secret in the file's text as signing_key's value is, and is named by its place in the list (a mutation
    audit: the list's items left unread passed every config test)."""
    old = "the-earlier-fleet-key-0123456789"
    p = _write(
        tmp_path,
        _CAM
        + f"bridge:\n  signing_key: {{env: REID_FLEET_KEY}}\n  accept_keys: [{{env: OTHER}}, {{value: {old}}}]\n",
    )
    p.chmod(0o640)
    with caplog.at_level("WARNING", logger="daemon.config"):
        load_settings(p)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and f"{p} is open to its group or others (mode 0640)" in warned[0], warned
    assert "bridge.accept_keys[1].value" in warned[0] and "accept_keys[0]" not in warned[0], warned
    assert old not in caplog.text


def test_a_command_line_option_is_named_only_for_its_own_setting() -> None:
    """with_overrides names the option a bad value came from (--video for output.video), and not for another
    setting whose name begins with the same letters (output.video_segment_s; a mutation audit: the prefix
    taken without its '.' passed every config test)."""
    s = single_camera_settings(CameraConfig(source=SourceConfig(uri="a.mp4")), name="cam")
    flags = {"output.video": "--video", "source.max_frames": "--max-frames"}
    with pytest.raises(ConfigError) as e:
        with_overrides(s, "cam", {"output.video": True, "output.video_segment_s": 0.5}, flags)
    assert "\n  cameras.cam.output.video_segment_s: Input should be greater" in str(e.value), e.value
    assert "--video" not in str(e.value)
    with pytest.raises(ConfigError, match=r"--max-frames \(cameras\.cam\.source\.max_frames\): "):
        with_overrides(s, "cam", {"source.max_frames": -1}, flags)


def test_a_path_given_in_code_starting_with_a_tilde_is_in_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Path (a command-line option's, with_overrides') written ~/... is in the home folder as a YAML string
    is (a mutation audit: the Path branch of the expansion removed passed every config test)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    s = single_camera_settings(CameraConfig(source=SourceConfig(uri="a.mp4")), name="cam")
    s2 = with_overrides(s, "cam", {"output.dir": Path("~/runs")})
    assert s2.cameras["cam"].output.dir == tmp_path / "runs"


def test_an_empty_xdg_cache_home_is_taken_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """XDG_CACHE_HOME= (set empty, as a unit's Environment= may leave it) is unset by the XDG rule: the model
    cache is ~/.cache/reid-daemon/models, not reid-daemon/models in the current folder (a mutation audit: the
    variable read with a default, empty taken as a folder, passed every config test)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.delenv("REID_MODELS_DIR", raising=False)
    assert default_cache_dir() == tmp_path / ".cache" / "reid-daemon" / "models"
    assert load_settings(_write(tmp_path, _CAM)).models_dir == tmp_path / ".cache" / "reid-daemon" / "models"


def test_a_config_without_a_bridge_section_signs_its_messages(tmp_path: Path) -> None:
    """A fleet whose config leaves out the bridge section is not one that takes unsigned messages: anyone who
    reaches Valkey could then inject identities (a mutation audit: the section's default built with
    allow_unsigned=True passed every config test)."""
    from daemon.bridge import signing_key

    s = load_settings(_write(tmp_path, _CAM + "fleet: {enabled: true}\n"))
    assert s.bridge.allow_unsigned is False and s.bridge.signing_key is None
    with pytest.raises(ConfigError, match=r"^bridge\.signing_key is not set: .*bridge\.allow_unsigned: true"):
        signing_key(s.bridge)  # what a fleet worker's bridge asks for as it starts


def test_an_error_names_its_file_alone_and_a_whole_config_problem_as_the_top_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without REID_ variables the error names the file alone (with them, the variables too: another test),
    and a problem of the whole config is on a line of its own called the top level (a mutation audit: the
    environment named whether set or not, and the top level left blank (': Value error'), passed every config
    test)."""
    monkeypatch.delenv("REID_MODELS_DIR", raising=False)
    p = _write(tmp_path, "cameras: {}\n")
    with pytest.raises(ConfigError) as e:
        load_settings(p)
    assert str(e.value) == (
        f"invalid configuration in {p}:\n  (top level): Value error, at least one camera is needed under 'cameras'"
    )


def test_a_track_timeout_that_is_no_number_or_not_positive_is_named_alone(tmp_path: Path) -> None:
    """identity.track_timeout_s 'soon' or 0 is an error naming that setting, not a conversion error of the
    identity section nor one about max_frame_gap_s, which the file never set (a mutation audit: the halving of
    a short timeout done without its number check, or for 0 too, passed every config test)."""
    for value, why in (("soon", "Input should be a valid number"), ("0", "Input should be greater than 0")):
        with pytest.raises(ConfigError) as e:
            load_settings(_write(tmp_path, _CAM + f"identity: {{track_timeout_s: {value}}}\n"))
        lines = str(e.value).splitlines()[1:]
        assert len(lines) == 1 and lines[0].startswith(f"  identity.track_timeout_s: {why}"), lines


def test_the_tracker_frame_rate_no_longer_used_is_warned_about_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A config is validated more than once in a process (with_overrides, each camera of a fleet): the unused
    setting is said once (a mutation audit: said at each validation passed every config test)."""
    import daemon.config

    monkeypatch.setattr(daemon.config, "_UNUSED_SAID", set())
    p = _write(tmp_path, _CAM + "    tracker: {frame_rate: 25}\n")
    with caplog.at_level("WARNING", logger="daemon.config"):
        s = load_settings(p)
        with_overrides(s, "a", {"source.uri": "y.mp4"})
        load_settings(p)
    assert [r.getMessage() for r in caplog.records] == [
        "tracker.frame_rate (25) has no effect: track_buffer is in frames; remove it"
    ]


def test_a_lower_case_environment_variable_is_checked_as_an_upper_case_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REID_ variables are not case-sensitive, so reid_cameras__... sets a camera as REID_CAMERAS__... does; a
    typo in one spelt in lower case is refused as in upper case (a mutation audit: only upper-case names
    checked passed every config test, and the typo was then ignored without a word)."""
    p = _write(tmp_path, _CAM)
    monkeypatch.setenv("reid_cameras__a__tracker__track_buffer", "90")
    assert load_settings(p).cameras["a"].tracker.track_buffer == 90
    monkeypatch.setenv("reid_trackr__track_buffer", "90")
    with pytest.raises(ConfigError, match=r"reid_trackr__track_buffer name no field of the config"):
        load_settings(p)
    monkeypatch.delenv("reid_trackr__track_buffer")
    monkeypatch.setenv("reid_cameras__lobby__tracker__track_buffer", "90")
    with pytest.raises(
        ConfigError, match=r"reid_cameras__lobby__tracker__track_buffer name no camera 'lobby'"
    ):
        load_settings(p)


def test_only_systemds_own_credentials_folders_are_left_unchecked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """systemd makes /run/credentials/<unit> (a user unit's: $XDG_RUNTIME_DIR/credentials/<unit>) for the
    unit's user alone; any other folder's secret files are checked, /run/credentials itself and folders below
    a unit's too (a mutation audit: /run changed, and any depth under credentials/ taken, passed every config
    test)."""
    from daemon.config import _systemd_credentials, warn_if_key_open

    runtime = tmp_path / "run-user"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert _systemd_credentials(Path("/run/credentials/reid-daemon@lobby.service"))
    assert _systemd_credentials(runtime / "credentials" / "reid-daemon@lobby.service")
    for other in (
        "/run/credentials",
        "/run/credentials/unit/sub",
        "/etc/reid-daemon/credentials",
        "/var/run/x",
    ):
        assert not _systemd_credentials(Path(other)), other
    unit = runtime / "credentials" / "reid-daemon@lobby.service"
    unit.mkdir(parents=True)
    for folder in (unit, tmp_path):
        (folder / "client.key").write_text("-----BEGIN PRIVATE KEY-----\n")
        (folder / "client.key").chmod(0o644)
    with caplog.at_level("WARNING", logger="daemon.config"):
        warn_if_key_open(unit / "client.key", "bridge.tls.key")
        warn_if_key_open(tmp_path / "client.key", "bridge.tls.key")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and f"{tmp_path / 'client.key'} is open" in warned[0], warned


def test_tls_checks_the_server_certificate_unless_told_not_to(tmp_path: Path) -> None:
    """bridge.tls switched on (or a rediss:// URL) checks the server's certificate and host name: verify is
    for local experiments only (a mutation audit: its default as false passed every config test)."""
    s = load_settings(
        _write(tmp_path, _CAM + "bridge: {url: 'rediss://10.0.0.5:6379', tls: {enabled: true}}\n")
    )
    assert s.bridge.tls.verify is True


_CAMERA_SECTIONS = ("source", "embedder", "tracker", "output")


@pytest.mark.parametrize(
    ("setting", "value", "bound"),
    [
        ("source.folder_fps", 0, "greater than 0"),
        ("source.fps", 0, "greater than 0"),
        ("source.read_timeout_s", 0, "greater than 0"),
        ("source.reconnect_initial_s", 0, "greater than 0"),
        ("source.log_every_s", 0, "greater than 0"),
        ("embedder.batch_size", 0, "greater than or equal to 1"),
        ("embedder.refresh_every", 0, "greater than or equal to 1"),
        ("tracker.track_buffer", 0, "greater than or equal to 1"),
        ("tracker.min_hits", 0, "greater than or equal to 1"),
        ("tracker.detect_every", 0, "greater than or equal to 1"),
        ("tracker.relink_max_speed", 0, "greater than 0"),
        ("output.event_every", 0, "greater than or equal to 1"),
        ("output.video_segment_s", 0.5, "greater than or equal to 1"),
        ("output.rotate_mb", 0, "greater than 0"),
        ("output.live_rotate_s", 0, "greater than 0"),
        ("output.sighting_gap_s", 0, "greater than 0"),
        ("runtime.detect_workers", 0, "greater than or equal to 1"),
        ("recognition.top_k", 0, "greater than or equal to 1"),
        ("recognition.video_every", 0, "greater than or equal to 1"),
        ("recognition.search_hits", 0, "greater than or equal to 1"),
        ("serve.top_k", 0, "greater than or equal to 1"),
        ("serve.max_entries", 0, "greater than or equal to 1"),
        ("serve.lock_wait_s", 0, "greater than 0"),
        ("serve.client_timeout_s", 0, "greater than 0"),
        ("serve.port", 65536, "less than or equal to 65535"),
        ("gallery.max_per_label", 0, "greater than or equal to 1"),
        ("gallery.pq_m", 0, "greater than or equal to 1"),
        ("gallery.rebuild_fraction", 0, "greater than 0"),
        ("gallery.pq_candidates", 0, "greater than or equal to 1"),
        ("gallery.hnsw_ef_search", 0, "greater than or equal to 1"),
        ("identity.quality_full_height_px", 0, "greater than 0"),
        ("identity.claim_ttl_s", 0, "greater than 0"),
        ("identity.retention_s", 0, "greater than 0"),
        ("identity.site_radius", 0, "greater than 0"),
        ("identity.site_speed", 0, "greater than 0"),
        ("identity.switch_similarity", 1, "less than 1"),
        ("identity.top_exemplars", 0, "greater than or equal to 1"),
        ("identity.exemplars_per_track", 0, "greater than or equal to 1"),
        ("identity.hysteresis_count", 0, "greater than or equal to 1"),
        ("identity.position_interval_s", 0, "greater than 0"),
        ("identity.max_identities", 0, "greater than or equal to 1"),
        ("bridge.max_age_s", 0, "greater than 0"),
        ("bridge.stream_maxlen", 9, "greater than or equal to 10"),
        ("bridge.max_message_bytes", 1023, "greater than or equal to 1024"),
        ("bridge.publish_batch", 0, "greater than or equal to 1"),
        ("bridge.state_ttl_s", 0, "greater than or equal to 1"),
        ("bridge.forget_ack_ttl_s", 59, "greater than or equal to 60"),
        ("bridge.forget_keep_s", 59, "greater than or equal to 60"),
        ("bridge.socket_timeout_s", 0, "greater than 0"),
        ("bridge.log_every_s", 0, "greater than 0"),
        ("bridge.inbox_size", 0, "greater than or equal to 1"),
        ("bridge.backlog_size", 0, "greater than or equal to 1"),
        ("fleet.replay_speed", 0, "greater than 0"),
        ("fleet.lockstep_timeout_s", 0, "greater than 0"),
        ("ops.fps_window_s", 0, "greater than 0"),
        ("ops.stall_after_s", 0, "greater than 0"),
        ("ops.valkey_probe_s", 0, "greater than 0"),
        ("embedder.truth.similarity", 0, "greater than 0"),
        ("embedder.truth.similarity", 1, "less than 1"),
    ],
)
def test_a_count_a_period_or_a_size_past_its_bound_is_refused_naming_the_setting(
    tmp_path: Path, setting: str, value: float, bound: str
) -> None:
    """Counts, periods and sizes a loop, a queue, a cache or a division takes (a batch of 0, every 0th frame, a
    timeout of 0 s, a looks' similarity of 1), and a port past 65535, are refused at the bound the schema
    gives, naming the setting, before anything starts (a mutation audit: each of these bounds loosened by one
    step, gt=0 as ge=0, ge=N as a lower N, lt=1 as le=1, le=65535 as 65536, passed every config test)."""
    section, *keys = setting.split(".")
    camera: dict[str, Any] = {"source": {"uri": "x.mp4"}}
    config: dict[str, Any] = {"cameras": {"a": camera}}
    node = camera if section in _CAMERA_SECTIONS else config
    for key in (section, *keys[:-1]):
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    if "truth" in keys:  # the looks of a ground truth: only embedder type 'ground-truth' takes them
        camera["embedder"] = {"type": "ground-truth", "truth": {"path": "gt.txt", **node}}
    where = f"cameras.a.{setting}" if section in _CAMERA_SECTIONS else setting
    with pytest.raises(ConfigError, match=rf"\n  {re.escape(where)}: Input should be {bound}"):
        load_settings(_write(tmp_path, json.dumps(config)))  # JSON is YAML


def test_environment_switches_a_backend_section_that_names_no_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A detector or embedder section that names no type is the default backend's (or camera_defaults'), as
    one naming it is; REID_..._DETECTOR__TYPE=yolo then merged the yolo type into the file's ssdlite keys,
    'cameras.a.detector.tiles: Extra inputs are not permitted', where the same file with `type: ssdlite`
    written out switched (found by the mutation audit of yield_to_backends)."""
    p = _write(
        tmp_path,
        _CAM + "    detector: {tiles: [3, 1], full_frame: false}\n    embedder: {colour_norm: grey_world}\n",
    )
    monkeypatch.setenv("REID_CAMERAS__a__DETECTOR__TYPE", "yolo")
    monkeypatch.setenv("REID_CAMERAS__a__EMBEDDER__TYPE", "none")
    cam = load_settings(p).cameras["a"]
    assert isinstance(cam.detector, YoloDetectorConfig) and cam.embedder.type == "none"
    # a section naming no type under camera_defaults' yolo detector is a yolo one: the same type keeps its keys
    monkeypatch.delenv("REID_CAMERAS__a__EMBEDDER__TYPE")
    p = _write(
        tmp_path,
        "camera_defaults: {detector: {type: yolo, imgsz: 320}}\n" + _CAM + "    detector: {nms_iou: 0.4}\n",
    )
    cam = load_settings(p).cameras["a"]
    assert isinstance(cam.detector, YoloDetectorConfig) and (cam.detector.imgsz, cam.detector.nms_iou) == (
        320,
        0.4,
    )
    # and camera_defaults' own section naming no type is the default detector's
    monkeypatch.delenv("REID_CAMERAS__a__DETECTOR__TYPE")
    monkeypatch.setenv("REID_CAMERA_DEFAULTS__DETECTOR__TYPE", "yolo")
    p = _write(tmp_path, "camera_defaults: {detector: {tiles: [3, 1]}}\n" + _CAM)
    assert isinstance(load_settings(p).cameras["a"].detector, YoloDetectorConfig)
    # the backends named for the comparison are not written into the file's sections: a camera's section naming
    # none still tunes the detector camera_defaults takes from the environment
    monkeypatch.setenv("REID_CAMERAS__a__DETECTOR__SCORE_THRESHOLD", "0.3")
    cam = load_settings(_write(tmp_path, _CAM + "    detector: {nms_iou: 0.4}\n")).cameras["a"]
    assert isinstance(cam.detector, YoloDetectorConfig)
    assert (cam.detector.nms_iou, cam.detector.score_threshold) == (0.4, 0.3)

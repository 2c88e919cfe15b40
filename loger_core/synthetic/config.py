"""Configuration dataclasses for synthetic sequences and their validation.

Every bad value raises :class:`SynthError` naming the field and the value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

__all__ = [
    "SCENE_KINDS",
    "TRAJECTORY_KINDS",
    "SynthError",
    "SceneConfig",
    "TrajectoryConfig",
    "SynthConfig",
    "parse_size",
]

SCENE_KINDS = ("room", "corridor", "street", "loop")
# Bag formats and encodings of rosbag_writer, here so that the CLI's parser needs neither rosbags nor cv2.
STORAGES = ("mcap", "sqlite3", "ros1")
IMAGE_ENCODINGS = ("rgb8", "bgr8", "jpeg")
DEPTH_ENCODINGS = ("16UC1", "32FC1")
TRAJECTORY_KINDS = ("handheld", "ground_robot", "car")

# Per-kind defaults: (speed m/s, camera height m, downward tilt deg). Heights are the
# usual mounting heights: eye level, a small robot's mast, a car's roof-line camera.
TRAJECTORY_DEFAULTS = {
    "handheld": (0.6, 1.5, 8.0),
    "ground_robot": (0.5, 0.35, 10.0),
    "car": (10.0, 1.6, 2.0),
}

# Far enough from 0 that a ROS tf buffer never mistakes a stamp for "latest" (time 0).
DEFAULT_START_STAMP_NS = 1_700_000_000 * 1_000_000_000


class SynthError(ValueError):
    """Invalid synthetic-sequence configuration or writer input."""


def _check_positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise SynthError(f"{name} must be a positive finite number, got {value!r}")


def _check_int(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SynthError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_range(name: str, value: tuple, lo_min: float = 0.0) -> None:
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
        or not lo_min < value[0] <= value[1]
    ):
        raise SynthError(f"{name} must be a (min, max) pair with {lo_min} < min <= max, got {value!r}")


@dataclass
class SceneConfig:
    """Tuning of the procedural scene; the scene kind and seed live in :class:`SynthConfig`.

    Attributes:
        length_m: route length (corridor/street) or loop perimeter in metres; ``None``
            derives it from the trajectory's travelled distance so the camera never runs
            off the end (a loop is sized so the camera laps it ``loop_laps`` times).
        loop_laps: laps of the loop scene when ``length_m`` is ``None``; > 1 means the
            camera revisits its start and continues over already-seen ground.
        room_size_m: room interior (x, y, z) extent in metres.
        furniture: number of furniture-like boxes in the room.
        corridor_width_m / corridor_height_m: corridor cross-section.
        road_width_m: curb-to-curb width of street roads (loops may shrink it).
        sidewalk_width_m: sidewalk width on each side of a road.
        building_height_m: (min, max) facade heights.
        texture_size: texels per side of each texture (power of two).
        textures: number of distinct base textures; faces also differ in tint, scale
            and offset, so surfaces are unique even when they share a base texture.
        repeat_materials: instead, give every surface one of only ``textures``
            identical materials (same texture, scale, phase and tint), for tests that
            want repeated, ambiguous appearance.
        max_distance_m: outdoor faces whose nearest point is farther than this are not
            drawn (they show as sky); keeps per-frame cost flat on long streets.
    """

    length_m: Optional[float] = None
    loop_laps: float = 1.3
    room_size_m: tuple = (7.5, 6.0, 2.8)
    furniture: int = 10
    corridor_width_m: float = 2.4
    corridor_height_m: float = 2.7
    road_width_m: float = 12.0
    sidewalk_width_m: float = 3.5
    building_height_m: tuple = (7.0, 35.0)
    texture_size: int = 128
    textures: int = 48
    repeat_materials: bool = False
    max_distance_m: float = 400.0

    def validate(self) -> None:
        if self.length_m is not None:
            _check_positive("SceneConfig.length_m", self.length_m)
        _check_positive("SceneConfig.loop_laps", self.loop_laps)
        if (
            not isinstance(self.room_size_m, (tuple, list))
            or len(self.room_size_m) != 3
            or not all(isinstance(v, (int, float)) and v >= 2.0 for v in self.room_size_m)
        ):
            raise SynthError(f"SceneConfig.room_size_m must be 3 sizes >= 2 m, got {self.room_size_m!r}")
        _check_int("SceneConfig.furniture", self.furniture, 0)
        _check_positive("SceneConfig.corridor_width_m", self.corridor_width_m)
        _check_positive("SceneConfig.corridor_height_m", self.corridor_height_m)
        _check_positive("SceneConfig.road_width_m", self.road_width_m)
        _check_positive("SceneConfig.sidewalk_width_m", self.sidewalk_width_m)
        _check_range("SceneConfig.building_height_m", self.building_height_m)
        ts = self.texture_size
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 8 or ts > 1024 or ts & (ts - 1):
            raise SynthError(f"SceneConfig.texture_size must be a power of two in [8, 1024], got {ts!r}")
        _check_int("SceneConfig.textures", self.textures, 4)
        if not isinstance(self.repeat_materials, bool):
            raise SynthError(f"SceneConfig.repeat_materials must be a bool, got {self.repeat_materials!r}")
        _check_positive("SceneConfig.max_distance_m", self.max_distance_m)


@dataclass
class TrajectoryConfig:
    """Tuning of the camera motion; the kind lives in :class:`SynthConfig`.

    ``None`` fields take the per-kind defaults (see ``TRAJECTORY_DEFAULTS``).

    Attributes:
        speed_mps: mean forward speed in metres per second.
        height_m: camera height above the floor/ground in metres.
        tilt_deg: downward pitch of the optical axis in degrees (positive looks down).
        wobble: scale of the random motion (handheld shake, car sway); 0 gives the
            smooth base path (ground robots have no wobble by design).
        look_around_deg: amplitude of the slow handheld gaze sweep around the heading.
    """

    speed_mps: Optional[float] = None
    height_m: Optional[float] = None
    tilt_deg: Optional[float] = None
    wobble: float = 1.0
    look_around_deg: float = 35.0

    def resolved(self, kind: str) -> "TrajectoryConfig":
        """Copy with the per-kind defaults filled in."""
        speed, height, tilt = TRAJECTORY_DEFAULTS[kind]
        return TrajectoryConfig(
            speed_mps=speed if self.speed_mps is None else self.speed_mps,
            height_m=height if self.height_m is None else self.height_m,
            tilt_deg=tilt if self.tilt_deg is None else self.tilt_deg,
            wobble=self.wobble,
            look_around_deg=self.look_around_deg,
        )

    def validate(self) -> None:
        if self.speed_mps is not None:
            _check_positive("TrajectoryConfig.speed_mps", self.speed_mps)
        if self.height_m is not None:
            _check_positive("TrajectoryConfig.height_m", self.height_m)
        if self.tilt_deg is not None and (
            not isinstance(self.tilt_deg, (int, float)) or not -60.0 <= self.tilt_deg <= 60.0
        ):
            raise SynthError(f"TrajectoryConfig.tilt_deg must be in [-60, 60], got {self.tilt_deg!r}")
        if not isinstance(self.wobble, (int, float)) or not 0.0 <= self.wobble <= 10.0:
            raise SynthError(f"TrajectoryConfig.wobble must be in [0, 10], got {self.wobble!r}")
        if not isinstance(self.look_around_deg, (int, float)) or not 0.0 <= self.look_around_deg <= 90.0:
            raise SynthError(
                f"TrajectoryConfig.look_around_deg must be in [0, 90], got {self.look_around_deg!r}"
            )


@dataclass
class SynthConfig:
    """A complete synthetic sequence: scene, motion, camera and timing.

    Attributes:
        scene: one of ``room``, ``corridor``, ``street``, ``loop``.
        trajectory: one of ``handheld``, ``ground_robot``, ``car``.
        frames: number of frames.
        width, height: image size in pixels.
        fov_deg: horizontal field of view in degrees (square pixels).
        fps: frame rate; frame k has stamp ``start_stamp_ns + round(k * 1e9 / fps)``.
        seed: seeds scene layout, textures and motion; same seed -> same bytes.
        start_stamp_ns: stamp of frame 0 in integer nanoseconds.
        scene_config / trajectory_config: optional tuning (defaults when ``None``).
    """

    scene: str = "room"
    trajectory: str = "handheld"
    frames: int = 100
    width: int = 320
    height: int = 240
    fov_deg: float = 70.0
    fps: float = 30.0
    seed: int = 0
    start_stamp_ns: int = DEFAULT_START_STAMP_NS
    scene_config: SceneConfig = field(default_factory=SceneConfig)
    trajectory_config: TrajectoryConfig = field(default_factory=TrajectoryConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`SynthError` for the first invalid field."""
        if self.scene not in SCENE_KINDS:
            raise SynthError(f"SynthConfig.scene must be one of {SCENE_KINDS}, got {self.scene!r}")
        if self.trajectory not in TRAJECTORY_KINDS:
            raise SynthError(
                f"SynthConfig.trajectory must be one of {TRAJECTORY_KINDS}, got {self.trajectory!r}"
            )
        _check_int("SynthConfig.frames", self.frames, 1)
        _check_int("SynthConfig.width", self.width, 8)
        _check_int("SynthConfig.height", self.height, 8)
        if not isinstance(self.fov_deg, (int, float)) or not 10.0 <= self.fov_deg <= 150.0:
            raise SynthError(f"SynthConfig.fov_deg must be in [10, 150], got {self.fov_deg!r}")
        _check_positive("SynthConfig.fps", self.fps)
        _check_int("SynthConfig.seed", self.seed, 0)
        _check_int("SynthConfig.start_stamp_ns", self.start_stamp_ns, 0)
        if not isinstance(self.scene_config, SceneConfig):
            raise SynthError(f"SynthConfig.scene_config must be a SceneConfig, got {self.scene_config!r}")
        if not isinstance(self.trajectory_config, TrajectoryConfig):
            raise SynthError(
                f"SynthConfig.trajectory_config must be a TrajectoryConfig, got {self.trajectory_config!r}"
            )
        self.scene_config.validate()
        self.trajectory_config.validate()

    @property
    def stamps_ns(self) -> list[int]:
        """Frame stamps in integer nanoseconds, ``len == frames``."""
        return [self.start_stamp_ns + round(k * 1e9 / self.fps) for k in range(self.frames)]

    @property
    def duration_s(self) -> float:
        return (self.frames - 1) / self.fps


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"WIDTHxHEIGHT"`` (e.g. ``"320x240"``) into ``(width, height)``."""
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise SynthError(f"size must look like WIDTHxHEIGHT (e.g. 320x240), got {text!r}")
    width, height = (int(p) for p in parts)
    if width < 8 or height < 8:
        raise SynthError(f"size must be at least 8x8, got {text!r}")
    return width, height

"""Synthetic ground-truth sequences (ROS-free): procedural scenes, camera motion,
exact depth and poses, written as image folders and ROS bags (rosbags, no ROS).
May import: ``loger_core.io``.

World frame: right-handed, metres, **z up**, floor/ground at ``z = 0``. Cameras use
the OpenCV optical convention (x right, y down, z forward); poses are camera-to-world
``T_world_cam (4, 4) float64``. Depth is z-depth (distance along the optical axis)
in metres, ``inf`` where a ray hits nothing (sky).

Quick start::

    from loger_core.synthetic import SynthConfig, render_frames, write_image_folder
    frames = render_frames(SynthConfig(scene="room", trajectory="handheld", frames=12, width=64, height=48))
    write_image_folder("/tmp/seq", frames)

Scenes: ``room``, ``corridor``, ``street`` (kilometre-scale city canyon), ``loop``
(closed block loop that revisits its start). Trajectories: ``handheld``,
``ground_robot``, ``car``. Everything is deterministic in ``SynthConfig.seed``.
"""

from loger_core.io.image_folder import ImageFolderWriter, write_image_folder

from .camera import intrinsics_from_fov
from .config import SCENE_KINDS, TRAJECTORY_KINDS, SceneConfig, SynthConfig, SynthError, TrajectoryConfig
from .renderer import Renderer, RenderOutput
from .scene import Material, Route, Scene
from .sequence import SynthFrame, SynthSetup, generate_sequence, prepare, render_frames

_BAG_NAMES = ("BagTopics", "RosbagWriter", "write_rosbag")


def __getattr__(name: str):
    # Bag writing needs the rosbags package; importing it lazily keeps rendering
    # usable where only torch/numpy/opencv are installed (e.g. a bare GPU box).
    if name in _BAG_NAMES:
        from . import rosbag_writer

        return getattr(rosbag_writer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SCENE_KINDS",
    "TRAJECTORY_KINDS",
    "SceneConfig",
    "TrajectoryConfig",
    "SynthConfig",
    "SynthError",
    "SynthFrame",
    "SynthSetup",
    "generate_sequence",
    "render_frames",
    "prepare",
    "write_image_folder",
    "ImageFolderWriter",
    "write_rosbag",
    "RosbagWriter",
    "BagTopics",
    "Renderer",
    "RenderOutput",
    "Scene",
    "Material",
    "Route",
    "intrinsics_from_fov",
]

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

import importlib

# Everything resolves on first use: rendering needs torch, bags need rosbags and cv2, and
# `loger-synth --help` (loger_core.synthetic.cli) or the pure config should need neither.
_LAZY = {
    "ImageFolderWriter": "loger_core.io.image_folder", "write_image_folder": "loger_core.io.image_folder",
    "intrinsics_from_fov": ".camera",
    "SCENE_KINDS": ".config", "TRAJECTORY_KINDS": ".config", "SceneConfig": ".config", "SynthConfig": ".config",
    "SynthError": ".config", "TrajectoryConfig": ".config",
    "Renderer": ".renderer", "RenderOutput": ".renderer",
    "Material": ".scene", "Route": ".scene", "Scene": ".scene",
    "SynthFrame": ".sequence", "SynthSetup": ".sequence", "generate_sequence": ".sequence", "prepare": ".sequence",
    "render_frames": ".sequence",
    "BagTopics": ".rosbag_writer", "RosbagWriter": ".rosbag_writer", "write_rosbag": ".rosbag_writer",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
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

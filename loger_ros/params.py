"""Parameters of the mapping node: one dataclass, the single source of truth.

:class:`NodeParams` lists every parameter with its type, default, description and allowed
values. The same table

- generates the ROS 2 parameter declarations (``node.py`` iterates :func:`param_specs`),
- maps 1:1 onto ``config/loger.yaml`` (``loger: ros__parameters: {name: value}``),
- builds the streaming core's :class:`~loger_core.stream.StreamConfig` and the voxel
  map's :class:`~loger_core.mapping.voxel_map.MapConfig`, so the node and offline replay agree.

Every invalid value raises :class:`ParamsError` naming the parameter and the value.
ROS parameters are typed: a float parameter must be written ``2.0`` in YAML (``2`` would
be an integer and rclpy refuses it), which the YAML test checks.

Why one file of about 750 lines: it is one table, a field per parameter with its description;
splitting it by group would scatter the single source of truth the node, the YAML and the
replay share.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from loger_core.backend.config import BackendConfig, BackendConfigError
from loger_core.mapping.grid import GridConfig, GridError
from loger_core.model.selection import MODEL_CHOICES, MODEL_DEFAULTS, ModelSelection, ModelSelectionError, select_model

__all__ = [
    "NODE_NAME",
    "OUTPUT_TOPICS",
    "READY_MESSAGE",
    "SCALE_SOURCES",
    "TF_MODES",
    "IMAGE_TRANSPORTS",
    "LIVE_PARAMETERS",
    "SHUTDOWN_PARTIAL_WINDOW",
    "NodeParams",
    "ParamSpec",
    "ParamsError",
    "load_params_yaml",
    "parameter_update",
    "param_specs",
    "params_to_yaml",
]

# The node's name: the key of config/loger.yaml and the prefix of its private (~/) topics.
NODE_NAME = "loger"
# Private output topics (``~/name`` resolves to ``/<node name>/name``) and services.
OUTPUT_TOPICS: dict[str, str] = {
    "odom": "~/odom",
    "path": "~/path",
    "cloud": "~/cloud",
    "map": "~/map",
    "grid": "~/grid",
    "loop_closures": "~/loop_closures",
}
SERVICES: dict[str, str] = {"reset": "~/reset", "save_map": "~/save_map"}
DIAGNOSTICS_TOPIC = "/diagnostics"
# The node logs a line starting with this once its model is loaded and its subscriptions exist;
# launch/replay.launch.py starts `ros2 bag play` when it sees it.
READY_MESSAGE = "loger_node ready"

IMAGE_TRANSPORTS = ("auto", "raw", "compressed")
SCALE_SOURCES = ("auto", "none", "depth", "odometry", "fixed")
TF_MODES = ("odom_to_base", "map_to_odom")
DTYPES = ("auto", "float32", "bfloat16", "float16")
ALIGNMENTS = ("auto", "none", "se3", "sim3")
SHUTDOWN_PARTIAL_WINDOW = ("finish", "drop")

PathLike = Union[str, "os.PathLike[str]"]


class ParamsError(ValueError):
    """An invalid node parameter (name and value in the message) or parameter file."""


_GRID = GridConfig()  # the grid parameters' defaults
_BACKEND = BackendConfig()  # the back-end parameters' defaults


def _p(default: Any, description: str, *, choices: Optional[tuple] = None,
       minimum: Optional[float] = None, maximum: Optional[float] = None, group: str = "") -> Any:
    """A dataclass field carrying the ROS parameter metadata."""
    meta = {"description": description, "choices": choices, "minimum": minimum, "maximum": maximum, "group": group}
    return field(default=default, metadata=meta)


@dataclass
class NodeParams:
    """Every parameter of ``loger_node`` (see each field's description)."""

    # ---------------------------------------------------------------- inputs
    image_topic: str = _p(
        "/camera/image_raw",
        "Camera image topic (sensor_msgs/Image or sensor_msgs/CompressedImage, see image_transport).",
        group="inputs")
    image_transport: str = _p(
        "auto",
        "How image_topic is read: 'raw' (sensor_msgs/Image), 'compressed' (sensor_msgs/CompressedImage) or "
        "'auto' (the advertised type of image_topic; if not yet advertised, 'compressed' when the name ends "
        "in '/compressed', else 'raw').",
        choices=IMAGE_TRANSPORTS, group="inputs")
    camera_info_topic: str = _p(
        "/camera/camera_info",
        "sensor_msgs/CameraInfo of the camera; '' = none (intrinsics are then estimated from the prediction). "
        "Distorted images are undistorted with it before inference (see undistort).",
        group="inputs")
    undistort: bool = _p(
        True, "Undistort images with the CameraInfo distortion model before inference.", group="inputs")
    depth_topic: str = _p(
        "",
        "Optional metric depth image (sensor_msgs/Image 16UC1 mm or 32FC1 m, registered to the colour image) "
        "used for metric scale; '' = none.",
        group="inputs")
    odometry_topic: str = _p(
        "",
        "Optional external nav_msgs/Odometry (e.g. wheel odometry) used for metric scale; '' = none.",
        group="inputs")
    queue_size: int = _p(
        32,
        "Frames waiting for inference; when full the OLDEST is dropped (counted in diagnostics) so "
        "callbacks never block and the newest frame is always processed. A window pass blocks inference "
        "for about 1.5 s (full model, H100), so this should hold the frames of that time (fps x 1.5 s).",
        minimum=1, maximum=1024, group="inputs")
    lossless: bool = _p(
        False,
        "Never drop a queued frame, for replaying a bag (every frame wanted; a live camera cannot wait, so off "
        "there: the newest frame matters). Instead of dropping the oldest when the queue fills, the node pauses the "
        "rosbag2 player (lossless_player's ~/pause service) when queue_size/2 frames wait and resumes it at "
        "queue_size/4; frames still on their way grow the queue past queue_size rather than being dropped, the image "
        "subscription keeps queue_size messages, and on shutdown the queued frames are mapped (within "
        "shutdown_timeout_s) instead of dropped. replay.launch.py turns it on.",
        group="inputs")
    lossless_player: str = _p(
        "/rosbag2_player",
        "Fully qualified name of the rosbag2 player node whose ~/pause and ~/resume services lossless mode calls "
        "('ros2 bag play' names its player /rosbag2_player).",
        group="inputs")
    sync_tolerance_s: float = _p(
        0.02, "Largest stamp difference (s) for pairing a depth image or an odometry sample with an image.",
        minimum=0.0, maximum=10.0, group="inputs")

    # ----------------------------------------------------------------- model
    model_config: str = _p(
        "auto",
        "Network: 'auto' (the bundled demo model 'small' when checkpoint_path is empty, else the model named "
        "by the JSON beside a .safetensors checkpoint, else 'loger_star'), 'loger', 'loger_star' (SE(3) window "
        "alignment), 'small', 'small_deep' or 'tiny' (CPU-sized).",
        choices=MODEL_CHOICES, group="model")
    checkpoint_path: str = _p(
        "",
        "Checkpoint: the authors' latest.pt or a .safetensors file ('~' is expanded). '' = the trained 'small' "
        "weights bundled with the package (a demo model trained on synthetic scenes: its poses are NOT fit for "
        "navigation; a warning is logged and diagnostics stay WARN).",
        group="model")
    allow_synthetic_weights: bool = _p(
        False,
        "With checkpoint_path '', run deterministic untrained (synthetic) weights instead of the bundled demo "
        "weights (tests and benchmarks only: the poses are NOT meaningful).",
        group="model")
    device: str = _p("auto", "Torch device: 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...",
                     group="model")
    dtype: str = _p("auto", "Compute precision: 'auto' (bfloat16 on CUDA, float32 on CPU), 'float32', "
                    "'bfloat16' or 'float16'.", choices=DTYPES, group="model")
    input_width: int = _p(
        0, "Network input width in pixels (multiple of 14); 0 together with input_height 0 = the model's "
        "default: 'small' (the bundled one), 'small_deep' and 'tiny' about 10k pixels at the first image's aspect "
        "ratio (112x84 for 4:3, CPU-sized), "
        "'loger'/'loger_star' 504x280 (GPU).", minimum=0, maximum=4096, group="model")
    input_height: int = _p(
        0, "Network input height in pixels (multiple of 14); see input_width.", minimum=0, maximum=4096,
        group="model")

    # ------------------------------------------------------------- streaming
    window_size: int = _p(0, "Frames per window of the network; 0 = the model's default ('small'/'small_deep'/'tiny' 16, "
                          "'loger'/'loger_star' 32).", minimum=0, maximum=1024, group="streaming")
    overlap_size: int = _p(3, "Frames shared by consecutive windows (< the window size).", minimum=0, maximum=1023,
                           group="streaming")
    reset_every: int = _p(0, "Reset the TTT fast-weight memory every N windows (0 = never; the authors "
                          "suggest 5 beyond ~1k frames).", minimum=0, maximum=1_000_000, group="streaming")
    provisional_every: int = _p(
        3,
        "Low-latency poses: every N new frames of an incomplete window, run the network on the window so far "
        "without committing its memory and publish the newest frame's pose at once (0 = only committed "
        "windows, i.e. poses in bursts of a window).",
        minimum=0, maximum=1024, group="streaming")
    provisional_budget: float = _p(
        0.5, "Largest share of the inference thread's time the low-latency passes may take (0, 1]: after a pass "
        "of t seconds the next waits t*(1-budget)/budget, so slow passes are thinned out instead of making the "
        "node drop camera frames.", minimum=0.01, maximum=1.0, group="streaming")
    provisional_anchors: int = _p(
        1, "Frames of the last committed window a low-latency pass carries before the newest frames: 0 = all "
        "overlap_size of them, N = the first N (cheaper passes, less context).", minimum=0, maximum=1023,
        group="streaming")
    fast_paths: str = _p("auto", "GPU fast paths (fastest attention kernel per shape, bf16 weights, compiled "
                         "blocks): 'auto' = on for CUDA with bfloat16, 'on', 'off' (eager reference path).",
                         choices=("auto", "on", "off"), group="streaming")
    preprocess_threads: int = _p(2, "Threads that resize incoming frames while the network runs (0 = resize on "
                                 "the inference thread).", minimum=0, maximum=64, group="streaming")
    async_windows: str = _p("auto", "Run each completed window on a worker thread (on CUDA a low-priority stream) "
                            "while new frames keep getting provisional poses on a high-priority stream: "
                            "'auto' = on for CUDA, 'on', 'off' (the window blocks the inference thread).",
                            choices=("auto", "on", "off"), group="streaming")
    cuda_graphs: str = _p("auto", "Provisional passes, and committed windows while provisional_every is 0, replay "
                          "a CUDA graph per input shape (one launch instead of thousands from Python): 'auto' = on "
                          "with async windows on CUDA, 'on', 'off' (eager launches).",
                          choices=("auto", "on", "off"), group="streaming")
    pass_priority: str = _p("auto", "While a low-latency pass runs, the committed window stops launching work at "
                            "its next transformer block (and never runs more than a few blocks ahead of the GPU), "
                            "so odometry does not wait behind a whole window: 'auto' = on with async windows on CUDA, "
                            "'on', 'off'.", choices=("auto", "on", "off"), group="streaming")
    warm_up: str = _p("auto", "Before the first camera frame, run the model over a few windows of random frames, "
                      "so that compiling the fast paths, choosing kernels and capturing CUDA graphs (about 45 s "
                      "for the full model on an H100) happens at start-up (a managed node: in configure) "
                      "instead of dropping live frames: 'auto' = on for CUDA, 'on', 'off'.",
                      choices=("auto", "on", "off"), group="streaming")
    warm_up_image_width: int = _p(640, "Camera image width the warm-up assumes when the network input size comes "
                                  "from the camera (input_width/input_height 0 and a model without a fixed size, "
                                  "e.g. small): set your camera's, or the first real windows compile again.",
                                  minimum=14, maximum=8192, group="streaming")
    warm_up_image_height: int = _p(480, "Camera image height the warm-up assumes; see warm_up_image_width.",
                                   minimum=14, maximum=8192, group="streaming")
    provisional_outputs: str = _p("pose", "What a low-latency pass returns: 'pose' (only the camera pose leaves the "
                                  "GPU: all odometry needs) or 'full' (depth, masks and points too, unused by the node).",
                                  choices=("pose", "full"), group="streaming")
    alignment: str = _p("auto", "Alignment of each window to the previous one: 'auto' (the model's: se3 for "
                        "loger_star), 'none', 'se3' or 'sim3'.", choices=ALIGNMENTS, group="streaming")

    # ----------------------------------------------------------------- scale
    scale_source: str = _p(
        "auto",
        "Metric scale: 'none' (model scale), 'depth' (depth_topic), 'odometry' (odometry_topic), 'fixed' "
        "(scale_factor) or 'auto' (depth if depth_topic is set, else odometry if odometry_topic is set, else none).",
        choices=SCALE_SOURCES, group="scale")
    scale_factor: float = _p(1.0, "Metres per model unit for scale_source 'fixed'.", minimum=1e-9,
                             maximum=1e9, group="scale")
    scale_history: int = _p(200, "Scale = median of the last N per-frame scale samples.", minimum=1,
                            maximum=100_000, group="scale")
    scale_freeze_after: int = _p(0, "Freeze the scale after N samples (0 = keep updating).", minimum=0,
                                 maximum=100_000, group="scale")

    # ------------------------------------------------------------------- map
    confidence_threshold: float = _p(
        0.0, "Points whose confidence (probability in [0, 1]) is below this are not mapped.",
        minimum=0.0, maximum=1.0, group="map")
    confidence_percentile: float = _p(
        20.0, "Also drop each frame's least confident N percent of points (the authors' demo uses 20).",
        minimum=0.0, maximum=99.999, group="map")
    voxel_size: float = _p(0.05, "Voxel edge of the global map in metres.", minimum=1e-4, maximum=100.0,
                           group="map")
    point_voxel_size: float = _p(
        -1.0, "Merge each committed frame's points per voxel of this edge on the model's device before they "
        "reach the map; a merged point carries its pixel count, so the map fuses it like that many pixels "
        "(~/cloud carries the merged points). -1 = auto (voxel_size / 2 on CUDA, where fusing every pixel on "
        "the CPU holds back inference; 0 on CPU), 0 = off (every pixel is a point). In map units (metres); "
        "under scale_source 'depth' or 'odometry' in model units (the scale is not known at start).",
        minimum=-1.0, maximum=100.0, group="map")
    map_device: str = _p(
        "auto", "Where the global voxel map lives: 'cpu' (numpy hash table), 'cuda' / 'cuda:N' (tensors on that GPU: "
        "fusing a window is a few kernels instead of seconds of CPU when points do not merge per voxel) or 'auto' "
        "(the model's GPU when it runs on one, else 'cpu'). Should the GPU map fail, the node moves the map to "
        "the CPU and goes on (logged).", group="map")
    max_map_points: int = _p(2_000_000, "Voxel budget of the global map; beyond it the farthest voxels from "
                             "the camera are evicted.", minimum=1, maximum=2_000_000_000, group="map")
    map_publish_period_s: float = _p(2.0, "Period of ~/map (transient-local PointCloud2) in seconds of the "
                                     "node clock (sim time when use_sim_time).", minimum=0.01, maximum=3600.0,
                                     group="map")
    cloud_max_points: int = _p(200_000, "~/cloud (latest window) is subsampled to at most this many points.",
                               minimum=1, maximum=100_000_000, group="map")
    path_max_poses: int = _p(2000, "~/path carries the newest N committed poses (0 = all; the saved "
                             "trajectory always has all).", minimum=0, maximum=10_000_000, group="map")

    # ------------------------------------------------------------------ grid
    # Defaults come from GridConfig: grid_<name> is GridConfig.<name> (see grid_config()).
    grid_enabled: bool = _p(True, "Build the 2D occupancy grid for Nav2 (~/grid, and map.pgm/map.yaml on "
                            "~/save_map and shutdown).", group="grid")
    grid_publish_period_s: float = _p(2.0, "Period of ~/grid (transient-local nav_msgs/OccupancyGrid in map_frame) "
                                      "in seconds of the node clock; published only when it changed.",
                                      minimum=0.01, maximum=3600.0, group="grid")
    grid_resolution: float = _p(_GRID.resolution, "Edge of one occupancy grid cell (m).", minimum=0.005, maximum=10.0, group="grid")
    grid_max_extent: float = _p(_GRID.max_extent, "The grid reaches at most this far from the map origin along x "
                                "and y (m); observations beyond are ignored. Bounds memory: (2 max_extent / "
                                "resolution)^2 cells at most.", minimum=0.1, maximum=100_000.0, group="grid")
    grid_ground_z: float = _p(_GRID.ground_z, "z of the ground in base_frame (m): 0 when base_frame lies on the "
                              "ground (base_footprint), negative when base_link is above it (e.g. -0.1 at a 10 cm "
                              "axle). Heights are measured in the base_frame of the frame that saw each point.",
                              minimum=-100.0, maximum=100.0, group="grid")
    grid_min_height: float = _p(_GRID.min_height, "Bottom of the obstacle band above the ground (m): lower points "
                                "are floor (free).", minimum=-100.0, maximum=100.0, group="grid")
    grid_max_height: float = _p(_GRID.max_height, "Top of the obstacle band above the ground (m), e.g. the robot's "
                                "height: higher points (ceilings) are not obstacles.", minimum=-100.0, maximum=1000.0,
                                group="grid")
    grid_max_range: float = _p(_GRID.max_range, "Points farther than this from the camera are not mapped and rays "
                               "are cut here (m): far depth is the least reliable.", minimum=0.01, maximum=1000.0,
                               group="grid")
    grid_rays_per_frame: int = _p(_GRID.rays_per_frame, "Free-space rays cast per committed frame (camera centre "
                                  "to an observed point, evenly spread over its points); bounds the cost per "
                                  "update.", minimum=0, maximum=10_000_000, group="grid")
    grid_hit_log_odds: float = _p(_GRID.hit_log_odds, "Log-odds added to a cell that holds an obstacle point in a "
                                  "frame (> 0).", minimum=1e-6, maximum=100.0, group="grid")
    grid_miss_log_odds: float = _p(_GRID.miss_log_odds, "Log-odds added to a cell a ray passes through in a frame "
                                   "(< 0).", minimum=-100.0, maximum=-1e-6, group="grid")
    grid_min_log_odds: float = _p(_GRID.min_log_odds, "Lower clamp of a cell's log-odds (how quickly a freed cell "
                                  "can become occupied again).", minimum=-100.0, maximum=-1e-6, group="grid")
    grid_max_log_odds: float = _p(_GRID.max_log_odds, "Upper clamp of a cell's log-odds.", minimum=1e-6,
                                  maximum=100.0, group="grid")

    # ---------------------------------------------------------------- frames
    map_frame: str = _p("map", "Global frame (REP-105).", group="frames")
    odom_frame: str = _p("odom", "Continuous odometry frame (REP-105).", group="frames")
    base_frame: str = _p("base_link", "Robot body frame whose pose is published (REP-105).", group="frames")
    camera_frame: str = _p(
        "",
        "Camera optical frame; '' = the image header's frame_id. The camera-to-base transform is looked up "
        "in TF (base_frame <- camera_frame); identity with a warning when TF has none.",
        group="frames")
    publish_tf: bool = _p(True, "Broadcast the transforms chosen by tf_mode.", group="frames")
    tf_mode: str = _p(
        "odom_to_base",
        "'odom_to_base': this node is the odometry source and broadcasts odom->base_link (continuous) and "
        "map->odom (corrections); ~/odom is in odom_frame. 'map_to_odom': another node broadcasts "
        "odom->base_link; this node broadcasts only map->odom (from TF's odom->base_link at the image stamp); "
        "~/odom then carries the pose in map_frame.",
        choices=TF_MODES, group="frames")
    tf_timeout_s: float = _p(0.1, "Longest wait (s) for a TF lookup on the inference thread.", minimum=0.0,
                             maximum=10.0, group="frames")

    # ---------------------------------------------------------------- output
    output_dir: str = _p("~/.ros/loger", "Folder of ~/save_map and the shutdown save (map.ply, "
                         "trajectory.tum); '~' is expanded.", group="output")
    save_map_on_shutdown: bool = _p(True, "Save map.ply and trajectory.tum to output_dir on shutdown.",
                                    group="output")
    reset_clears_map: bool = _p(False, "~/reset also clears the global map and path (else only the network "
                                "memory restarts and the new reconstruction continues in the same map frame).",
                                group="output")
    diagnostics_period_s: float = _p(1.0, "Period of /diagnostics in seconds of steady (wall) time, also under "
                                     "use_sim_time, so that a paused or finished bag does not silence them (their "
                                     "stamps follow the node clock).", minimum=0.01,
                                     maximum=3600.0, group="output")
    input_timeout_s: float = _p(
        3.0, "No image on image_topic for this long (wall clock, while the node is active) turns /diagnostics "
        "WARN and logs a warning naming the topic (a camera that stopped, or a topic that is not remapped); "
        "0 = off.", minimum=0.0, maximum=3600.0, group="output")
    shutdown_partial_window: str = _p(
        "finish",
        "On shutdown (SIGINT/SIGTERM, Ctrl-C) frames still waiting in the queue are dropped (mapped first under "
        "lossless); the frames already in "
        "the network's incomplete window are either committed by one last window pass ('finish', they get "
        "poses and map points) or discarded ('drop', fastest exit). Then the map is saved.",
        choices=SHUTDOWN_PARTIAL_WINDOW, group="output")
    shutdown_timeout_s: float = _p(
        10.0,
        "Longest wait on shutdown for the window pass that is running (and the 'finish' pass) before the map "
        "is saved without them; the launch files give the node this plus a margin before escalating to SIGTERM.",
        minimum=0.0, maximum=3600.0, group="output")

    # --------------------------------------------------------------- back end
    # Defaults come from BackendConfig: backend_<name> is BackendConfig.<name> (see backend_config()).
    backend_enabled: bool = _p(
        _BACKEND.enabled, "Geometric back end: keyframes with SIFT features, feature-verified relative poses (PnP "
        "against the network's depth, or the essential matrix), loop closure and a GTSAM pose graph correct the "
        "network's trajectory and map. Corrections go into map->odom (odom->base_link stays continuous), ~/path is "
        "republished corrected, the map is fused again from the keyframes after a loop closure.", group="backend")
    backend_loop_closure: bool = _p(_BACKEND.loop_closure, "Detect and close loops (place recognition + geometric "
                                    "verification + consistency over consecutive keyframes).", group="backend")
    backend_place_descriptor: str = _p(_BACKEND.place_descriptor, "Place recognition for loop candidates: 'tokens' "
                                       "(the network's own encoder tokens pooled per frame; VLAD where a frame has "
                                       "none), 'vlad' (VLAD over each keyframe's SIFT features), 'fusion' (ranked by "
                                       "both), 'none' (no loop closure); docs/architecture.md compares them.", choices=("vlad", "tokens", "fusion", "none"),
                                       group="backend")
    backend_max_features: int = _p(_BACKEND.max_features, "SIFT features per frame.", minimum=50, maximum=20000,
                                   group="backend")
    backend_max_image_width: int = _p(_BACKEND.max_image_width, "Wider images are downscaled to this width for "
                                      "features (pixels).", minimum=64, maximum=8192, group="backend")
    backend_min_inliers: int = _p(_BACKEND.min_inliers, "A relative pose with fewer RANSAC inliers is not "
                                  "verified; the network's own is kept for that step.", minimum=8, maximum=10000,
                                  group="backend")
    backend_keyframe_parallax_deg: float = _p(_BACKEND.keyframe_parallax_deg, "A frame becomes a keyframe when the "
                                              "median parallax to the last keyframe (rotation taken out) reaches "
                                              "this (degrees).", minimum=0.01, maximum=45.0, group="backend")
    backend_keyframe_max_gap: int = _p(_BACKEND.keyframe_max_gap, "... or after this many frames.", minimum=1,
                                       maximum=10000, group="backend")
    backend_loop_min_inliers: int = _p(_BACKEND.loop_min_inliers, "Essential-matrix inliers a loop candidate needs "
                                       "(geometric verification).", minimum=8, maximum=10000, group="backend")
    backend_loop_min_inlier_ratio: float = _p(_BACKEND.loop_min_inlier_ratio, "... and this share of its "
                                              "ratio-test matches.", minimum=0.0, maximum=1.0, group="backend")
    backend_loop_min_age: int = _p(_BACKEND.loop_min_age, "Loop candidates are keyframes at least this many frames "
                                   "older than the query.", minimum=1, maximum=10_000_000, group="backend")
    backend_loop_consistency: int = _p(_BACKEND.loop_consistency, "Consecutive keyframes that must agree on a loop's "
                                       "correction before it is closed (1: none).", minimum=1, maximum=10,
                                       group="backend")
    backend_threaded: bool = _p(_BACKEND.threaded, "Run the back end on its own thread (the frame path never waits "
                                "on it). false: inline on the inference thread, so outputs do not depend on timing "
                                "(offline replay).", group="backend")
    backend_max_queue: int = _p(_BACKEND.max_queue, "Frames waiting for the back end beyond this are not tracked "
                                "(their poses are interpolated between keyframes), so it stays bounded behind a "
                                "fast camera; 0: track every frame (offline replay).", minimum=0, maximum=100000,
                                group="backend")
    backend_cpu_share: float = _p(_BACKEND.cpu_share, "Live: the largest share of wall time the back end's thread "
                                  "works; frames arriving while it rests are not tracked (poses interpolated). 0: "
                                  "auto (0.3 when the network runs on the CPU, whose cores it needs; else no "
                                  "limit); 1: no limit.", minimum=0.0, maximum=1.0, group="backend")

    # --------------------------------------------------------------- session
    autosave_period_s: float = _p(
        0.0,
        "Save the mapping session (network memory, voxel map, trajectory, map->odom; see README 'Sessions') "
        "atomically to session_path every N seconds of wall time and on shutdown, so that a restarted node "
        "can continue with resume_session; 0 = off. A full-model session holds about a gigabyte of network "
        "memory; the small and tiny models' a few megabytes.",
        minimum=0.0, maximum=86400.0, group="session")
    session_path: str = _p(
        "",
        "Session file of the autosaves ('~' is expanded); '' = <output_dir>/session.loger.safetensors. An "
        "existing file that this run did not resume from is never overwritten: the autosaves then go next to "
        "it, to '<session_path>.new-<UTC time>'.",
        group="session")
    resume_session: str = _p(
        "",
        "Session file to continue from at start-up ('' = a fresh map): the same map frame, trajectory, map and "
        "network memory, as if the node had not stopped. A file that cannot be used (missing, truncated, "
        "damaged, another format version, another model or other window/alignment settings) is logged with "
        "the reason and a fresh map starts; the file is left untouched.",
        group="session")

    def __post_init__(self) -> None:
        for spec in param_specs():
            value = getattr(self, spec.name)
            setattr(self, spec.name, spec.validate(value))
        if self.window_size and self.overlap_size >= self.window_size:
            raise ParamsError(
                f"overlap_size {self.overlap_size} must be < window_size {self.window_size}")
        if (self.input_width == 0) != (self.input_height == 0):
            raise ParamsError(
                f"input_width {self.input_width} and input_height {self.input_height} must both be 0 (automatic) "
                "or both be set")
        for name in ("input_width", "input_height"):
            value = getattr(self, name)
            if value % 14:
                raise ParamsError(f"{name} {value} must be a multiple of the patch size 14 (or 0)")
        for name in ("map_frame", "odom_frame", "base_frame"):
            value = getattr(self, name)
            if not value or value.startswith("/") or " " in value:
                raise ParamsError(f"{name} {value!r} must be a non-empty frame id without a leading '/' or spaces")
        if self.camera_frame.startswith("/"):
            raise ParamsError(f"camera_frame {self.camera_frame!r} must not start with '/'")
        if len({self.map_frame, self.odom_frame, self.base_frame}) != 3:
            raise ParamsError(
                f"map_frame {self.map_frame!r}, odom_frame {self.odom_frame!r} and base_frame {self.base_frame!r} "
                "must be three different frames")
        if self.map_device not in ("auto", "cpu") and not re.fullmatch(r"cuda(:\d+)?", self.map_device):
            raise ParamsError(f"map_device {self.map_device!r} must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        if self.point_voxel_size < 0 and self.point_voxel_size != -1.0:
            raise ParamsError(f"point_voxel_size {self.point_voxel_size} must be -1 (auto), 0 (off) or > 0")
        if not self.image_topic:
            raise ParamsError("image_topic '' must name a topic")
        if not re.fullmatch(r"(/[A-Za-z_][A-Za-z0-9_]*)+", self.lossless_player):
            raise ParamsError(f"lossless_player {self.lossless_player!r} must be a fully qualified node name "
                              "('/rosbag2_player', '/robot1/player')")
        self.backend_config()
        self.grid_config()  # cross-field checks of the grid (e.g. grid_max_height > grid_min_height)
        if self.scale_source == "depth" and not self.depth_topic:
            raise ParamsError("scale_source 'depth' needs depth_topic (it is '')")
        if self.scale_source == "odometry" and not self.odometry_topic:
            raise ParamsError("scale_source 'odometry' needs odometry_topic (it is '')")

    # ------------------------------------------------------------- derived
    @property
    def resolved_scale_source(self) -> str:
        """The scale source after resolving 'auto'."""
        if self.scale_source != "auto":
            return self.scale_source
        if self.depth_topic:
            return "depth"
        if self.odometry_topic:
            return "odometry"
        return "none"

    def resolved_point_voxel_size(self, cuda: bool) -> float:
        """``StreamConfig.point_voxel_size`` (model units) on a CUDA (``cuda``) or CPU model device.

        Auto (-1) is ``voxel_size / 2`` on CUDA: merged voxels nest in the map's voxels (when the map
        anchor is the identity), so the map loses no resolution, and each frame sends the CPU map one
        point per occupied half-edge voxel instead of every pixel. On CPU auto is 0: inference is far
        slower than fusion there. Metres become model units through ``scale_factor`` under scale_source
        'fixed'; with a measured scale (depth/odometry) the factor is unknown when the stream starts
        and the edge is taken in model units.
        """
        edge = self.point_voxel_size
        if edge < 0:
            edge = self.voxel_size / 2.0 if cuda else 0.0
        if edge > 0 and self.resolved_scale_source == "fixed":
            edge /= self.scale_factor
        return edge

    @property
    def resolved_output_dir(self) -> Path:
        return Path(os.path.expanduser(self.output_dir))

    @property
    def resolved_session_path(self) -> Path:
        """The autosave file before the never-overwrite rule (see session_path)."""
        if self.session_path:
            return Path(os.path.expanduser(self.session_path))
        return self.resolved_output_dir / "session.loger.safetensors"

    def model_selection(self) -> ModelSelection:
        """Model and weights: checkpoint_path if set, else the bundled small demo weights (or synthetic
        weights with allow_synthetic_weights). Raises ParamsError for a full model without a checkpoint."""
        try:
            return select_model(self.model_config, self.checkpoint_path, synthetic=self.allow_synthetic_weights)
        except ModelSelectionError as err:
            raise ParamsError(f"model_config {self.model_config!r} / checkpoint_path {self.checkpoint_path!r}: "
                              f"{err}") from None

    def effective_window_size(self, selection: Optional[ModelSelection] = None) -> int:
        """window_size, or the model's default when it is 0."""
        if self.window_size:
            return self.window_size
        return (selection or self.model_selection()).defaults.window_size

    def stream_config(self, selection: Optional[ModelSelection] = None):
        """The :class:`~loger_core.stream.StreamConfig` these parameters ask for (model defaults filled in
        where input_width/input_height/window_size are 0).

        Raises ParamsError for an impossible model/checkpoint combination or window.
        """
        from loger_core.stream import ScaleConfig, StreamConfig, StreamInputError

        selection = selection or self.model_selection()
        defaults = selection.defaults
        window = self.effective_window_size(selection)
        if self.overlap_size >= window:
            raise ParamsError(f"overlap_size {self.overlap_size} must be < the window size {window} "
                              f"(window_size {self.window_size}, model {selection.model!r})")
        resolution = defaults.resolution if self.input_width == 0 else (self.input_width, self.input_height)
        cfg = StreamConfig(
            model=selection.model,
            checkpoint=selection.checkpoint,
            device=self.device,
            dtype=self.dtype,
            resolution=resolution,
            pixel_limit=defaults.pixel_limit,
            window_size=window,
            overlap_size=self.overlap_size,
            reset_every=self.reset_every,
            alignment=None if self.alignment == "auto" else self.alignment,
            conf_threshold=self.confidence_threshold,
            conf_percentile=self.confidence_percentile,
            provisional_every=self.provisional_every,
            provisional_budget=self.provisional_budget,
            provisional_anchors=self.provisional_anchors,
            fast_paths=self.fast_paths,
            preprocess_threads=self.preprocess_threads,
            async_windows=self.async_windows,
            cuda_graphs=self.cuda_graphs,
            pass_priority=self.pass_priority,
            provisional_outputs=self.provisional_outputs,
            out_of_order="drop",
            scale=ScaleConfig(
                source=self.resolved_scale_source,
                factor=self.scale_factor,
                history=self.scale_history,
                freeze_after=self.scale_freeze_after,
            ),
        )
        if self.point_voxel_size == 0:
            return cfg
        try:
            cuda = cfg.torch_device().type == "cuda"
        except StreamInputError:
            cuda = False  # an unusable device is reported when the model is loaded
        return replace(cfg, point_voxel_size=self.resolved_point_voxel_size(cuda))

    def resolved_map_device(self) -> str:
        """'cpu' or the CUDA device of the voxel map (``map_device``; 'auto' follows the model)."""
        if self.map_device != "auto":
            import torch

            if self.map_device.startswith("cuda") and not torch.cuda.is_available():
                raise ParamsError(f"map_device {self.map_device!r} but CUDA is not available here: use 'auto' or 'cpu'")
            return self.map_device
        try:
            device = self.stream_config().torch_device()
        except Exception:  # an unusable model device is reported when the model is loaded
            return "cpu"
        return str(device) if device.type == "cuda" else "cpu"

    def map_config(self):
        """The :class:`~loger_core.mapping.voxel_map.MapConfig` of the global map (confidence filtered upstream)."""
        from loger_core.mapping.voxel_map import MapConfig

        return MapConfig(voxel_size=self.voxel_size, max_points=self.max_map_points, policy="drop_far")

    def backend_config(self) -> BackendConfig:
        """The :class:`~loger_core.backend.BackendConfig`: ``backend_<name>`` -> ``<name>``, the rest its defaults."""
        from dataclasses import fields as dc_fields

        names = {f.name for f in dc_fields(BackendConfig)}
        values = {name[len("backend_"):]: getattr(self, name) for name in (spec.name for spec in param_specs())
                  if name.startswith("backend_") and name[len("backend_"):] in names}
        try:
            return BackendConfig(**values)
        except BackendConfigError as err:
            raise ParamsError(f"parameter {err}") from None

    def grid_config(self) -> GridConfig:
        """The :class:`~loger_core.mapping.grid.GridConfig` of the occupancy grid: ``grid_<name>`` -> ``<name>``."""
        from dataclasses import fields as dc_fields

        values = {f.name: getattr(self, f"grid_{f.name}") for f in dc_fields(GridConfig)}
        try:
            return GridConfig(**values)
        except GridError as err:
            text = str(err).removeprefix("GridConfig: ")
            for name in values:  # report the node's parameter names
                text = re.sub(rf"\b{name}\b", f"grid_{name}", text)
            raise ParamsError(f"parameter {text}") from None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, source: str = "parameters") -> "NodeParams":
        """Build from ``{name: value}`` (e.g. a YAML file or rclpy parameters); unknown names are errors."""
        known = {spec.name for spec in param_specs()}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ParamsError(f"{source}: unknown parameter(s) {unknown} (known: {sorted(known)})")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return {spec.name: getattr(self, spec.name) for spec in param_specs()}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: ``type_`` is str, int, float or bool; ``choices``/``minimum``/``maximum`` constrain it."""

    name: str
    type_: type
    default: Any
    description: str
    choices: Optional[tuple] = None
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    group: str = ""

    @property
    def constraints(self) -> str:
        """Human-readable constraints (ROS ParameterDescriptor.additional_constraints)."""
        if self.choices:
            return "one of: " + ", ".join(repr(c) for c in self.choices)
        if self.minimum is not None or self.maximum is not None:
            return f"in [{self.minimum}, {self.maximum}]"
        return ""

    def validate(self, value: Any) -> Any:
        """Return ``value`` as this parameter's type or raise ParamsError naming it."""
        if self.type_ is bool:
            if not isinstance(value, bool):
                raise ParamsError(f"parameter {self.name} {value!r} must be a bool (true/false)")
            return value
        if self.type_ is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ParamsError(f"parameter {self.name} {value!r} must be an integer")
        elif self.type_ is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ParamsError(f"parameter {self.name} {value!r} must be a finite number")
            value = float(value)
        elif self.type_ is str:
            if not isinstance(value, str):
                raise ParamsError(f"parameter {self.name} {value!r} must be a string")
        if self.choices is not None and value not in self.choices:
            raise ParamsError(f"parameter {self.name} {value!r} must be one of {list(self.choices)}")
        if self.minimum is not None and value < self.minimum:
            raise ParamsError(f"parameter {self.name} {value!r} must be >= {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise ParamsError(f"parameter {self.name} {value!r} must be <= {self.maximum}")
        return value


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def param_specs() -> list[ParamSpec]:
    """Every parameter of :class:`NodeParams`, in declaration order."""
    specs = []
    for f in fields(NodeParams):
        type_ = _TYPES[f.type] if isinstance(f.type, str) else f.type
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        m = f.metadata
        specs.append(ParamSpec(f.name, type_, default, m["description"], m["choices"], m["minimum"],
                               m["maximum"], m["group"]))
    return specs


# Parameters a running node applies at once (`ros2 param set`, rqt_reconfigure): the low-latency
# passes' knobs, read by the stream at every frame. Every other parameter shapes what the node built
# at start-up (model, topics, map, TF) and is refused while it runs, rather than accepted and ignored.
LIVE_PARAMETERS = ("provisional_every", "provisional_budget", "provisional_anchors")


def parameter_update(current: NodeParams, changes: Mapping[str, Any], running: bool) -> NodeParams:
    """The parameters after ``changes`` ({name: new value}).

    Raises ParamsError with the reason to give the caller: a parameter that only takes effect at
    start-up while the node is ``running`` (a managed node that is not configured takes anything:
    its configure transition reads and checks them), or a value or combination NodeParams refuses.
    """
    values = current.to_dict()
    changed = {name: value for name, value in changes.items() if name != "use_sim_time"}  # rclpy's own
    if running:
        fixed = sorted(name for name, value in changed.items() if name not in LIVE_PARAMETERS and values.get(name) != value)
        if fixed:
            raise ParamsError(
                f"{', '.join(fixed)}: only read at start-up, so not changed while the node runs; restart it with the new "
                f"value (loger_lifecycle_node: cleanup, set, configure). Changeable while running: {', '.join(LIVE_PARAMETERS)}")
    values.update(changed)
    return NodeParams.from_mapping(values, source="parameter update")


def _load_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"parameter file {str(path)!r} does not exist") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"parameter file {str(path)!r} is not valid YAML: {err}") from None


def load_params_yaml(path: PathLike, node_name: str = NODE_NAME,
                     overrides: Optional[Mapping[str, Any]] = None) -> NodeParams:
    """Read ``<node_name>: ros__parameters: {...}`` from a ROS 2 parameter file (plus ``overrides``).

    ``use_sim_time`` (declared by rclpy itself) is accepted and ignored.
    """
    path = Path(path)
    doc = _load_yaml(path)
    section = doc.get(node_name) if isinstance(doc, dict) else None
    if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
        raise ParamsError(f"parameter file {str(path)!r} has no '{node_name}: ros__parameters:' mapping")
    values = dict(section["ros__parameters"])
    values.pop("use_sim_time", None)
    values.update(overrides or {})
    return NodeParams.from_mapping(values, source=str(path))


def _yaml_scalar(value: Any) -> str:
    import yaml

    if isinstance(value, float):
        return repr(value)  # always has a '.' or 'e', so ROS reads a double
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def params_to_yaml(params: Optional[NodeParams] = None, node_name: str = NODE_NAME) -> str:
    """A ROS 2 parameter file for ``params`` (defaults when None), each entry preceded by its description."""
    import textwrap

    values = params.to_dict() if params is not None else {s.name: s.default for s in param_specs()}
    lines = [f"{node_name}:", "  ros__parameters:"]
    group = None
    for spec in param_specs():
        if spec.group != group:
            group = spec.group
            lines.append(f"    # ---- {group}")
        text = spec.description + (f" ({spec.constraints})" if spec.constraints else "")
        lines += ["    # " + line for line in textwrap.wrap(text, 100)]
        lines.append(f"    {spec.name}: {_yaml_scalar(values[spec.name])}")
    return "\n".join(lines) + "\n"

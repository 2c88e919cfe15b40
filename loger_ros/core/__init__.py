"""ROS-free core of the mapping node: everything ``node.py`` wires to rclpy, tested without ROS.

Modules (one job each): ``frame_queue`` (bounded drop-oldest queue), ``inputs`` (messages ->
numpy, stamp pairing), ``extrinsics`` (camera-to-base from TF with identity fallback),
``pose_tracker`` (REP-105 map/odom/base bookkeeping, continuous odom), ``map_fusion`` (the
voxel map fed by committed windows, on its own thread), ``grid_mapping`` (the Nav2 occupancy
grid fed by the same windows), ``publications``
(message records for the ROS layer), ``telemetry`` (rates, latency), ``outputs`` (PLY/TUM
saving), ``session_keeper`` (mapping sessions: resume, autosave) and ``mapping_core``
(:class:`MappingCore`, which ties them together).
"""
from loger_ros.core.errors import DROP_REASONS, CoreError
from loger_ros.core.extrinsics import CameraMount, LookupFn
from loger_ros.core.frame_queue import DropOldestQueue
from loger_ros.core.grid_mapping import GridMapping
from loger_ros.core.inputs import DecodedImage, InputDecoder, header_of, resolve_image_transport
from loger_ros.core.map_fusion import MapFusion, MapJob
from loger_ros.core.mapping_core import CoreCounters, MappingCore
from loger_ros.core.outputs import SavedOutputs, save_map_and_trajectory
from loger_ros.core.pose_tracker import PoseTracker, TrackedPose, TrackerUpdate, invert
from loger_ros.core.publications import CHANNEL_TYPES, CHANNELS, MessageBuilder, Publication
from loger_ros.core.session_keeper import SavedSession, SessionKeeper, SessionPart
from loger_ros.core.telemetry import LatencyStats, LatencySummary, RateMeter

__all__ = [
    "CHANNELS", "CHANNEL_TYPES", "DROP_REASONS", "CameraMount", "CoreCounters", "CoreError", "DecodedImage",
    "DropOldestQueue", "GridMapping", "InputDecoder", "LatencyStats", "LatencySummary", "LookupFn", "MapFusion", "MapJob", "MappingCore",
    "MessageBuilder", "PoseTracker", "Publication", "RateMeter", "SavedOutputs", "SavedSession", "SessionKeeper", "SessionPart", "TrackedPose", "TrackerUpdate",
    "header_of", "invert", "resolve_image_transport", "save_map_and_trajectory",
]

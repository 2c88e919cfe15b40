"""Deprecated alias (one release): the ROS-free core moved to :mod:`loger_core.pipeline`, the
message side to :mod:`loger_ros.mapping_core`, :mod:`loger_ros.inputs` and
:mod:`loger_ros.publications` (see CHANGELOG.md). May import: loger_core, loger_ros.
"""
from loger_core.pipeline.errors import DROP_REASONS, CoreError
from loger_core.pipeline.extrinsics import CameraMount, LookupFn
from loger_core.pipeline.frame_queue import DropOldestQueue
from loger_core.pipeline.grid_mapping import GridMapping
from loger_core.pipeline.map_fusion import MapFusion, MapJob
from loger_core.pipeline.outputs import SavedOutputs, save_map_and_trajectory
from loger_core.pipeline.pose_tracker import PoseTracker, TrackedPose, TrackerUpdate, invert
from loger_core.pipeline.session_keeper import SavedSession, SessionKeeper
from loger_core.pipeline.session_parts import SessionPart
from loger_core.pipeline.telemetry import LatencyStats, LatencySummary, RateMeter
from loger_ros.inputs import DecodedImage, InputDecoder, header_of, resolve_image_transport
from loger_ros.mapping_core import CoreCounters, MappingCore
from loger_ros.publications import CHANNEL_TYPES, CHANNELS, MessageBuilder, Publication

__all__ = [
    "CHANNELS", "CHANNEL_TYPES", "DROP_REASONS", "CameraMount", "CoreCounters", "CoreError", "DecodedImage",
    "DropOldestQueue", "GridMapping", "InputDecoder", "LatencyStats", "LatencySummary", "LookupFn", "MapFusion", "MapJob",
    "MappingCore", "MessageBuilder", "PoseTracker", "Publication", "RateMeter", "SavedOutputs", "SavedSession",
    "SessionKeeper", "SessionPart", "TrackedPose", "TrackerUpdate", "header_of", "invert", "resolve_image_transport",
    "save_map_and_trajectory",
]

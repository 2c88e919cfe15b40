"""The ROS-free mapping pipeline that the node, replay, batch and reconstruct all drive: queue,
stream, pose tracking, the shared commit path (:class:`Mapper`, with the back-end hook), map
fusion scheduling, sessions, telemetry.

May import: ``loger_core.stream``, ``.model``, ``.mapping``, ``.io`` (never ``loger_ros``,
``rclpy``, ``.eval`` or ``.cli``). Modules: ``core`` (:class:`MappingPipeline`), ``mapper``
(:class:`Mapper`, :class:`FrameConsumer`), ``inputs`` (decoded frames), ``records`` (outputs),
``frame_queue``, ``pose_tracker``, ``extrinsics``, ``map_fusion``, ``grid_mapping``,
``session_keeper`` (with ``session_parts``), ``outputs`` (PLY/TUM files), ``telemetry``, ``checks``, ``errors``; the parts of
:class:`MappingPipeline` in ``diagnostics`` (:class:`CoreCounters`), ``warm_up``, ``resets``,
``pose_outputs``, ``map_outputs``.
Names are loaded lazily, so ``loger_core.pipeline.checks`` stays light.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "MappingPipeline": "core", "CoreCounters": "diagnostics",
    "Mapper": "mapper", "FrameConsumer": "mapper", "CommittedFrame": "mapper", "PoseCorrection": "mapper",
    "DecodedImage": "inputs", "FrameDecoder": "inputs", "FrameInput": "inputs", "NumpyDecoder": "inputs",
    "CHANNELS": "records", "Emitter": "records", "OutputRecord": "records", "RecordEmitter": "records",
    "DropOldestQueue": "frame_queue", "PoseTracker": "pose_tracker", "TrackedPose": "pose_tracker",
    "TrackerUpdate": "pose_tracker", "invert": "pose_tracker", "CameraMount": "extrinsics", "LookupFn": "extrinsics",
    "MapFusion": "map_fusion", "MapJob": "map_fusion", "GridMapping": "grid_mapping",
    "SavedSession": "session_keeper", "SessionKeeper": "session_keeper", "SessionPart": "session_parts",
    "SavedOutputs": "outputs", "save_map_and_trajectory": "outputs",
    "LatencyStats": "telemetry", "LatencySummary": "telemetry", "RateMeter": "telemetry",
    "DROP_REASONS": "errors", "CoreError": "errors",
    "TransformError": "checks", "validate_rigid_transform": "checks",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'loger_core.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(f"loger_core.pipeline.{module}"), name)

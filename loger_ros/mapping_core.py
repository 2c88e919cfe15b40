"""``MappingCore``: the ROS-free mapping pipeline with ROS messages in and out.

:class:`~loger_core.pipeline.core.MappingPipeline` does the work (queue, stream, pose
tracking, the shared :class:`~loger_core.pipeline.mapper.Mapper`, sessions, telemetry) on numpy
frames. This class adds what needs ROS message types: the callbacks that take ``sensor_msgs`` /
``nav_msgs`` messages (decoded on the inference thread by :class:`~loger_ros.inputs.InputDecoder`)
and a :class:`~loger_ros.publications.MessageBuilder` as the pipeline's emitter, so every output
is a finished message in a :class:`~loger_ros.publications.Publication`. ``node.py`` wires it to
rclpy; ``loger-replay`` and ``loger-batch`` feed it bag messages.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

from loger_core.pipeline.core import MappingPipeline
from loger_core.pipeline.diagnostics import CoreCounters
from loger_core.pipeline.extrinsics import LookupFn
from loger_core.pipeline.mapper import FrameConsumer
from loger_core.stream import StreamingReconstructor
from loger_ros.conversions import ConversionError, MessageFactory
from loger_ros.conversions.image import check_image
from loger_ros.inputs import InputDecoder
from loger_ros.params import NodeParams, ParamsError
from loger_ros.publications import MessageBuilder

__all__ = ["CoreCounters", "MappingCore"]


def _backend_consumer(params: NodeParams) -> FrameConsumer:
    """The geometric back end of the node's parameters (SE(3) graph with a metric scale source)."""
    from loger_core.backend import BackendConsumer

    # The node always stretches the whole image to the network input (StreamConfig's 'resize').
    metric = params.resolved_scale_source in ("depth", "odometry", "fixed")
    try:
        on_cpu = params.stream_config().torch_device().type == "cpu"
    except Exception:  # noqa: BLE001 - an unusable device is reported when the model is loaded
        on_cpu = False
    return BackendConsumer(params.backend_config(), metric=metric, network_on_cpu=on_cpu)


class MappingCore(MappingPipeline):
    """ROS-free core of ``loger_node`` (see the module docstring).

    Args:
        params: node parameters.
        factory: builds the published messages (RclpyFactory in the node, RosbagsFactory offline).
        reconstructor: a ready streaming reconstructor (tests, replay); default: built from
            ``params.stream_config()`` (loads the checkpoint).
        lookup: TF lookup ``(target, source, stamp_ns or None) -> T_target_source or None``.
        logger: ``debug/info/warning/error`` methods taking one string (rclpy logger or logging).
        monotonic_ns: clock for latency and rates (injectable for tests).
        consumer: a back end offered every committed frame (see :mod:`loger_core.pipeline.mapper`).
    """

    def __init__(
        self,
        params: NodeParams,
        factory: MessageFactory,
        *,
        reconstructor: Optional[StreamingReconstructor] = None,
        lookup: Optional[LookupFn] = None,
        logger: Any = None,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        consumer: Optional[FrameConsumer] = None,
    ) -> None:
        try:
            selection = params.model_selection()
        except ParamsError:
            if reconstructor is None:
                raise
            selection = None  # a caller-built reconstructor (tests, benchmarks) brings its own model
        if consumer is None and params.backend_enabled:
            consumer = _backend_consumer(params)
        super().__init__(
            params, MessageBuilder(factory),
            decoder=InputDecoder(params.undistort, int(round(params.sync_tolerance_s * 1e9))),
            selection=selection, consumer=consumer, reconstructor=reconstructor, lookup=lookup, logger=logger,
            monotonic_ns=monotonic_ns,
        )

    # ================================================================ callbacks
    def on_image(self, msg: Any, compressed: bool = False) -> None:
        """Queue an image message (never blocks; a full queue drops its oldest frame; after
        :meth:`stop_intake` every image is dropped)."""
        self._enqueue(msg, compressed, None if compressed else check_image)

    def on_camera_info(self, msg: Any) -> None:
        """Keep the camera model (an invalid CameraInfo is logged; the previous one stays in use)."""
        self._side_input(self.decoder.set_camera_info, msg, "invalid_camera_info", "camera_info",
                         "ignoring invalid CameraInfo")

    def on_depth(self, msg: Any) -> None:
        """Buffer a depth image for metric scale."""
        self._side_input(self.decoder.add_depth, msg, "invalid_depth", "depth", "ignoring invalid depth image")

    def on_odometry(self, msg: Any) -> None:
        """Buffer an external odometry pose for metric scale."""
        self._side_input(self.decoder.add_odometry, msg, "invalid_odometry", "odometry",
                         "ignoring invalid odometry message")

    def _side_input(self, take: Callable[[Any], Any], msg: Any, counter: str, key: str, text: str) -> None:
        """``take(msg)``; a ConversionError is counted in ``counters.<counter>`` and logged (throttled)."""
        try:
            take(msg)
        except ConversionError as err:
            with self._lock:
                setattr(self.counters, counter, getattr(self.counters, counter) + 1)
            self._warn("warning", key, f"{text}: {err}")

"""``loger_node``: the rclpy shell around :class:`~loger_ros.core.MappingCore`.

This module only wires the ROS-free core to rclpy: it declares the parameters of
:class:`~loger_ros.params.NodeParams` (with descriptions and ranges), subscribes with the
sensor-data QoS, hands messages to the core's non-blocking callbacks, runs the core's inference
thread, publishes what the core returns, offers the ``~/reset`` and ``~/save_map`` services and
saves the map on shutdown. It imports rclpy at the top, so it is importable only where ROS 2 is
installed; all logic is tested through the core.

Topics (``~`` = ``/loger``): ``~/odom`` (nav_msgs/Odometry), ``~/path`` (nav_msgs/Path),
``~/cloud`` (latest window, sensor_msgs/PointCloud2), ``~/map`` (PointCloud2, transient local),
``/diagnostics``, TF. Inputs: ``image_topic`` (+ ``camera_info_topic``, ``depth_topic``,
``odometry_topic``). Honours ``use_sim_time`` (node clock for the map/diagnostics periods).
"""
from __future__ import annotations

import sys
from typing import Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_srvs.srv import Trigger
from tf2_ros import Buffer, StaticTransformBroadcaster, TransformBroadcaster, TransformException, TransformListener

from loger_ros.conversions import RclpyFactory, matrix_from_transform
from loger_ros.core import MappingCore, Publication, resolve_image_transport
from loger_ros.params import DIAGNOSTICS_TOPIC, NODE_NAME, OUTPUT_TOPICS, SERVICES, NodeParams, param_specs

_MAP_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
_STOP_TIMEOUT_S = 30.0


class LogerNode(Node):
    """Parameters, subscriptions, publishers, TF, services and timers around one MappingCore."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.params = self._declare_parameters()
        self._tf_buffer = Buffer()
        self._tf_listener = TransformListener(self._tf_buffer, self)
        self._tf_broadcaster = TransformBroadcaster(self)
        self._static_broadcaster = StaticTransformBroadcaster(self)
        self.core = MappingCore(self.params, RclpyFactory(), lookup=self._lookup, logger=self.get_logger())
        self._publishers_by_channel = {
            "odom": self.create_publisher(Odometry, OUTPUT_TOPICS["odom"], 10),
            "path": self.create_publisher(Path, OUTPUT_TOPICS["path"], 10),
            "cloud": self.create_publisher(PointCloud2, OUTPUT_TOPICS["cloud"], 5),
            "map": self.create_publisher(PointCloud2, OUTPUT_TOPICS["map"], _MAP_QOS),
            "diagnostics": self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10),
        }
        self._subscribe()
        services = ReentrantCallbackGroup()
        self.create_service(Trigger, SERVICES["reset"], self._on_reset, callback_group=services)
        self.create_service(Trigger, SERVICES["save_map"], self._on_save_map, callback_group=services)
        self.create_timer(self.params.diagnostics_period_s, self._on_diagnostics,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self.core.start(self._dispatch, self._clock_ns)
        self.get_logger().info(
            f"mapping {self.params.image_topic} with model {self.params.model_config!r}; "
            f"publishing on ~/odom, ~/path, ~/cloud, ~/map (tf_mode {self.params.tf_mode})")

    # ------------------------------------------------------------ parameters
    def _declare_parameters(self) -> NodeParams:
        for spec in param_specs():
            descriptor = ParameterDescriptor(
                description=spec.description, additional_constraints=spec.constraints, read_only=True)
            if spec.type_ is int and spec.minimum is not None and spec.maximum is not None:
                descriptor.integer_range = [
                    IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
            elif spec.type_ is float and spec.minimum is not None and spec.maximum is not None:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
            self.declare_parameter(spec.name, spec.default, descriptor)
        values = {spec.name: self.get_parameter(spec.name).value for spec in param_specs()}
        return NodeParams.from_mapping(values, source=f"parameters of {self.get_fully_qualified_name()}")

    # ---------------------------------------------------------- subscriptions
    def _subscribe(self) -> None:
        p = self.params
        inputs = ReentrantCallbackGroup()
        advertised = dict(self.get_topic_names_and_types()).get(self.resolve_topic_name(p.image_topic))
        transport = resolve_image_transport(p.image_transport, p.image_topic, advertised)
        compressed = transport == "compressed"
        self.create_subscription(
            CompressedImage if compressed else Image, p.image_topic,
            lambda msg: self.core.on_image(msg, compressed), qos_profile_sensor_data, callback_group=inputs)
        self.get_logger().info(f"image input: {p.image_topic} ({transport})")
        if p.camera_info_topic:
            self.create_subscription(CameraInfo, p.camera_info_topic, self.core.on_camera_info,
                                     qos_profile_sensor_data, callback_group=inputs)
        if p.depth_topic:
            self.create_subscription(Image, p.depth_topic, self.core.on_depth, qos_profile_sensor_data,
                                     callback_group=inputs)
        if p.odometry_topic:
            self.create_subscription(Odometry, p.odometry_topic, self.core.on_odometry, qos_profile_sensor_data,
                                     callback_group=inputs)

    # -------------------------------------------------------------- publishing
    def _clock_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _dispatch(self, pub: Publication) -> None:
        if pub.channel == "tf":
            self._tf_broadcaster.sendTransform(list(pub.msg.transforms))
        elif pub.channel == "tf_static":
            self._static_broadcaster.sendTransform(list(pub.msg.transforms))
        else:
            self._publishers_by_channel[pub.channel].publish(pub.msg)

    def _lookup(self, target: str, source: str, stamp_ns: Optional[int]):
        when = Time() if stamp_ns is None else Time(nanoseconds=stamp_ns)
        try:
            tf = self._tf_buffer.lookup_transform(
                target, source, when, timeout=Duration(seconds=self.params.tf_timeout_s))
        except TransformException:
            return None
        return matrix_from_transform(tf.transform)

    def _on_diagnostics(self) -> None:
        self._dispatch(self.core.diagnostics(self._clock_ns()))

    # --------------------------------------------------------------- services
    def _on_reset(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.message = self.core.request_reset()
        response.success = True
        return response

    def _on_save_map(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        try:
            saved = self.core.save_map()
        except (OSError, ValueError) as err:
            response.success, response.message = False, f"saving the map failed: {err}"
            return response
        response.success = True
        response.message = f"wrote {saved.points} points to {saved.map_ply} and {saved.poses} poses to {saved.trajectory_tum}"
        return response

    # --------------------------------------------------------------- shutdown
    def shutdown(self) -> None:
        """Stop inference, commit the frames still in the window, publish them if ROS is still up
        and save the map when ``save_map_on_shutdown``."""
        if not self.core.stop(_STOP_TIMEOUT_S):
            self.get_logger().warning("the inference thread did not stop in time; saving what is mapped")
        else:
            for pub in self.core.flush():
                if rclpy.ok():
                    try:
                        self._dispatch(pub)
                    except Exception:  # the context may be going down under us
                        break
        if self.params.save_map_on_shutdown:
            try:
                saved = self.core.save_map()
                self.get_logger().info(f"saved {saved.points} map points to {saved.map_ply}, "
                                       f"{saved.poses} poses to {saved.trajectory_tum}")
            except (OSError, ValueError) as err:
                self.get_logger().error(f"saving the map on shutdown failed: {err}")


def main(args: Optional[list[str]] = None) -> int:
    """Console script ``loger_node``."""
    rclpy.init(args=args)
    node: Optional[LogerNode] = None
    code = 0
    try:
        node = LogerNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, RuntimeError, OSError, ParameterException) as err:
        # Startup failures: a parameter out of its range (rclpy), ParamsError / StreamInputError,
        # CheckpointError, a missing checkpoint file.
        print(f"loger_node: cannot start: {err}", file=sys.stderr)
        code = 2
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())

"""``loger_node``: the rclpy shell around :class:`~loger_ros.mapping_core.MappingCore`.

This module only wires the ROS-free core to rclpy: it declares the parameters of
:class:`~loger_ros.params.NodeParams` (with descriptions and ranges), subscribes with the
sensor-data QoS, hands messages to the core's non-blocking callbacks, runs the core's inference
thread, publishes what the core returns, offers the ``~/reset`` and ``~/save_map`` services and
saves the map on shutdown. It imports rclpy at the top, so it is importable only where ROS 2 is
installed; all logic is tested through the core (and in a real ROS graph by test/ros/).

Shutdown: SIGINT (Ctrl-C) and SIGTERM are handled by the node, not by rclpy, so ROS stays up while
the node stops taking frames, drops the queued ones, finishes or drops the incomplete window
(``shutdown_partial_window``, bounded by ``shutdown_timeout_s``), publishes the last poses and the
final map, saves ``map.ply``/``trajectory.tum`` atomically and logs it; only then is rclpy shut down
(no log call after that reaches rosout) and the process exits 0. With ``autosave_period_s`` > 0 the
mapping session is saved every period and, on shutdown, before the incomplete window's last pass
(``MappingCore.finish``); ``resume_session`` continues one at start-up (README 'Sessions').

Topics (``~`` = ``/loger``): ``~/odom`` (nav_msgs/Odometry), ``~/path`` (nav_msgs/Path),
``~/cloud`` (latest window, sensor_msgs/PointCloud2), ``~/map`` (PointCloud2, transient local),
``~/grid`` (nav_msgs/OccupancyGrid for Nav2, transient local), ``~/loop_closures`` (visualization_msgs/MarkerArray, the back end's closed loops), ``/diagnostics``, TF. Inputs: ``image_topic`` (+ ``camera_info_topic``, ``depth_topic``,
``odometry_topic``). Honours ``use_sim_time`` (node clock for the map/diagnostics periods).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import OccupancyGrid, Odometry, Path
from visualization_msgs.msg import MarkerArray
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_srvs.srv import Trigger
from tf2_ros import Buffer, StaticTransformBroadcaster, TransformBroadcaster, TransformException, TransformListener

from loger_ros.conversions import RclpyFactory, matrix_from_transform
from loger_ros.inputs import resolve_image_transport
from loger_ros.mapping_core import MappingCore
from loger_ros.publications import Publication
from loger_ros.params import (
    DIAGNOSTICS_TOPIC,
    LIVE_PARAMETERS,
    NODE_NAME,
    OUTPUT_TOPICS,
    READY_MESSAGE,
    SERVICES,
    NodeParams,
    ParamsError,
    param_specs,
    parameter_update,
)

_MAP_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
_SPIN_PERIOD_S = 0.1  # how often the main thread looks at the shutdown request


class GuardedLogger:
    """The node's rclpy logger while ROS is up, Python logging (stderr) once ``ros_up`` is False, so
    that no thread logs to the rosout publisher of a context that is gone."""

    def __init__(self, ros_logger: Any) -> None:
        self._ros = ros_logger
        self._fallback = logging.getLogger("loger_node")
        self.ros_up = True

    # One call line per severity: rclpy refuses a call site whose severity changes between calls.
    def debug(self, text: str) -> None:
        if self.ros_up:
            self._ros.debug(text)
        else:
            self._fallback.debug(text)

    def info(self, text: str) -> None:
        if self.ros_up:
            self._ros.info(text)
        else:
            self._fallback.info(text)

    def warning(self, text: str) -> None:
        if self.ros_up:
            self._ros.warning(text)
        else:
            self._fallback.warning(text)

    def error(self, text: str) -> None:
        if self.ros_up:
            self._ros.error(text)
        else:
            self._fallback.error(text)


class MappingShell:
    """What both node flavours (:class:`LogerNode`, and the managed ``loger_ros.lifecycle_node``) do
    around one MappingCore; mixed into an rclpy ``Node`` subclass."""

    def _setup_outputs(self) -> None:
        """TF, publishers, services, the diagnostics timer and the core (which loads the model)."""
        if not hasattr(self, "_tf_buffer"):  # once per node (a managed node can be configured again)
            self._tf_buffer = Buffer()
            self._tf_listener = TransformListener(self._tf_buffer, self)
            self._tf_broadcaster = TransformBroadcaster(self)
            self._static_broadcaster = StaticTransformBroadcaster(self)
        self.core = MappingCore(self.params, RclpyFactory(), lookup=self._lookup, logger=self.log)
        self.core.warm_up()  # before any subscription: compiling must not cost camera frames
        self._publishers_by_channel = {
            "odom": self.create_publisher(Odometry, OUTPUT_TOPICS["odom"], 10),
            "path": self.create_publisher(Path, OUTPUT_TOPICS["path"], 10),
            "cloud": self.create_publisher(PointCloud2, OUTPUT_TOPICS["cloud"], 5),
            "map": self.create_publisher(PointCloud2, OUTPUT_TOPICS["map"], _MAP_QOS),
            "grid": self.create_publisher(OccupancyGrid, OUTPUT_TOPICS["grid"], _MAP_QOS),
            "loop_closures": self.create_publisher(MarkerArray, OUTPUT_TOPICS["loop_closures"], _MAP_QOS),
            "diagnostics": self.create_publisher(DiagnosticArray, DIAGNOSTICS_TOPIC, 10),
        }
        services = ReentrantCallbackGroup()
        self._shell_services = [
            self.create_service(Trigger, SERVICES["reset"], self._on_reset, callback_group=services),
            self.create_service(Trigger, SERVICES["save_map"], self._on_save_map, callback_group=services)]
        # On the steady clock, not the node's: under use_sim_time a paused bag (lossless replay) or one
        # that has ended stops /clock, and the node's state must still be reported while it works
        # through what it queued (the messages keep the node clock's stamps).
        self._shell_timers = [self.create_timer(self.params.diagnostics_period_s, self._on_diagnostics,
                                               callback_group=MutuallyExclusiveCallbackGroup(),
                                               clock=Clock(clock_type=ClockType.STEADY_TIME))]
        self._player_control = None
        if self.params.lossless:
            # Imported here: only lossless mode needs rosbag2_interfaces.
            from loger_ros.player_control import PlayerControl

            policy = self.core.backpressure
            self._player_control = PlayerControl(self, self.params.lossless_player, policy, self.log)
            self.core.set_flow_control(self._player_control)
            self.log.info(f"lossless: every frame is kept; {self.params.lossless_player} is paused at "
                          f"{policy.high_water} queued frames and resumed at {policy.low_water}")

    def _log_ready(self) -> None:
        selection = self.core.selection.describe() if self.core.selection is not None else self.params.model_config
        self.log.info(
            f"{READY_MESSAGE}: mapping {self.params.image_topic} with {selection} "
            f"(window {self.core.window_size}); publishing on ~/odom, ~/path, ~/cloud, ~/map, ~/grid "
            f"(tf_mode {self.params.tf_mode})")

    # ------------------------------------------------------------ parameters
    # A managed node takes any parameter while unconfigured (its configure reads them); see
    # `_on_set_parameters`.
    _MANAGED = False

    def _declare_parameters(self) -> NodeParams:
        for spec in param_specs():
            # Read-only: what only start-up reads (`ros2 param set` says so instead of pretending).
            read_only = not self._MANAGED and spec.name not in LIVE_PARAMETERS
            descriptor = ParameterDescriptor(
                description=spec.description, additional_constraints=spec.constraints, read_only=read_only)
            if spec.type_ is int and spec.minimum is not None and spec.maximum is not None:
                descriptor.integer_range = [
                    IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=1)]
            elif spec.type_ is float and spec.minimum is not None and spec.maximum is not None:
                descriptor.floating_point_range = [
                    FloatingPointRange(from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
            self.declare_parameter(spec.name, spec.default, descriptor)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        return self._read_parameters()

    def _on_set_parameters(self, parameters: list) -> SetParametersResult:
        """``ros2 param set`` / rqt_reconfigure: while the node maps, only `LIVE_PARAMETERS` change
        (applied from the next frame); other changes are refused with the reason. A managed node
        that is not configured accepts anything: configure checks the whole set."""
        core = getattr(self, "core", None)
        if core is None or self.params is None:
            return SetParametersResult(successful=True)
        changes = {param.name: param.value for param in parameters}
        try:
            params = parameter_update(self.params, changes, running=True)
        except ParamsError as err:
            self.log.warning(f"parameter change refused: {err}")
            return SetParametersResult(successful=False, reason=str(err))
        live = {name: value for name, value in changes.items() if name in LIVE_PARAMETERS}
        core.apply_live_params(params)
        self.params = params
        if live:
            self.log.info(f"parameters changed while mapping: {live}")
        return SetParametersResult(successful=True)

    def _read_parameters(self) -> NodeParams:
        """The declared parameters' values, checked (``ParamsError`` names the first bad one)."""
        values = {spec.name: self.get_parameter(spec.name).value for spec in param_specs()}
        return NodeParams.from_mapping(values, source=f"parameters of {self.get_fully_qualified_name()}")

    # ---------------------------------------------------------- subscriptions
    def _unsubscribe(self) -> None:
        for sub in getattr(self, "_input_subscriptions", []):
            self.destroy_subscription(sub)
        self._input_subscriptions = []

    def _subscribe(self) -> None:
        p = self.params
        inputs = ReentrantCallbackGroup()
        advertised = dict(self.get_topic_names_and_types()).get(self.resolve_topic_name(p.image_topic))
        transport = resolve_image_transport(p.image_transport, p.image_topic, advertised)
        compressed = transport == "compressed"
        image_qos = qos_profile_sensor_data
        if p.lossless:
            # Still best effort (a reliable subscription would not match a bag recorded from a best-effort
            # camera, which ros2 bag play replays best effort), but deep enough that a busy executor does not
            # lose frames in the subscription's own history before they reach the lossless queue.
            image_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(qos_profile_sensor_data.depth,
                                   p.queue_size), reliability=ReliabilityPolicy.BEST_EFFORT,
                                   durability=DurabilityPolicy.VOLATILE)
        subs = [self.create_subscription(
            CompressedImage if compressed else Image, p.image_topic,
            lambda msg: self.core.on_image(msg, compressed), image_qos, callback_group=inputs)]
        self.log.info(f"image input: {p.image_topic} ({transport})")
        if p.camera_info_topic:
            subs.append(self.create_subscription(CameraInfo, p.camera_info_topic, self.core.on_camera_info,
                                                 qos_profile_sensor_data, callback_group=inputs))
        if p.depth_topic:
            subs.append(self.create_subscription(Image, p.depth_topic, self.core.on_depth, qos_profile_sensor_data,
                                                 callback_group=inputs))
        if p.odometry_topic:
            subs.append(self.create_subscription(Odometry, p.odometry_topic, self.core.on_odometry,
                                                 qos_profile_sensor_data, callback_group=inputs))
        self._input_subscriptions = subs

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
        if saved.grid_yaml is not None:
            response.message += f"; occupancy grid to {saved.grid_yaml} ({saved.grid_pgm.name})"
        return response

    # --------------------------------------------------------------- shutdown
    def shutdown(self, reason: str) -> None:
        """Stop taking frames, drop the queued ones, finish or drop the incomplete window within
        ``shutdown_timeout_s``, publish what is left (ROS is still up) and save the map."""
        p = self.params
        t0 = time.monotonic()
        if p.lossless:
            # Every frame is wanted: map the queued ones too (bounded by the shutdown timeout).
            queued = len(self.core.queue)
            self.core.stop_intake(keep_queued=True)
            self.log.info(f"shutting down ({reason}): lossless, mapping {queued} queued frame(s) first; incomplete "
                          f"window: {p.shutdown_partial_window}; then saving the map")
            if not self.core.wait_drained(p.shutdown_timeout_s):
                self.log.warning(f"lossless: {len(self.core.queue)} queued frame(s) not mapped within "
                                 f"shutdown_timeout_s {p.shutdown_timeout_s} s")
            policy = self.core.backpressure
            if policy is not None:
                stats = policy.stats()
                self.log.info(f"lossless: paused the player {stats['pauses']} time(s), resumed it {stats['resumes']} "
                              f"time(s) ({stats['failures']} request(s) failed); queue peak {stats['max_depth']} "
                              f"frame(s) of queue_size {p.queue_size}")
        else:
            dropped = self.core.stop_intake()
            self.log.info(f"shutting down ({reason}): dropped {dropped} queued frame(s); incomplete window: "
                          f"{p.shutdown_partial_window}; then saving the map")
        stopped = self.core.stop(max(0.0, p.shutdown_timeout_s - (time.monotonic() - t0)))
        t_stop = time.monotonic() - t0
        # A pass still running when the map is saved cannot be stopped; main() then leaves at once.
        self.left_running = not stopped
        if not stopped:
            self.log.warning(f"the running window pass did not end within shutdown_timeout_s "
                             f"{p.shutdown_timeout_s} s: saving what is mapped")
            if self.core.sessions.enabled:
                self.log.warning("the mapping session is not saved on this shutdown (a window pass is still "
                                 f"running); the last autosave stays: {self.core.sessions.target}")
        else:
            pubs: list = []
            finisher = threading.Thread(target=lambda: pubs.extend(self.core.finish(p.shutdown_partial_window)),
                                        name="loger-finish", daemon=True)
            finisher.start()
            finisher.join(max(0.0, p.shutdown_timeout_s - (time.monotonic() - t0)))
            if finisher.is_alive():
                self.left_running = True
                self.log.warning(f"the last window pass did not end within shutdown_timeout_s "
                                 f"{p.shutdown_timeout_s} s: saving the map without it")
            else:
                for pub in pubs:
                    try:
                        self._dispatch(pub)
                    except Exception:  # publishing is best effort here; the saved map is what counts
                        break
        t_window = time.monotonic() - t0 - t_stop
        if p.save_map_on_shutdown:
            try:
                saved = self.core.save_map()
                total = time.monotonic() - t0
                self.log.info(f"saved {saved.points} map points to {saved.map_ply}, {saved.poses} poses to "
                              f"{saved.trajectory_tum} ({total:.2f} s after the shutdown request: running pass "
                              f"{t_stop:.2f} s, last window {t_window:.2f} s, saving {total - t_stop - t_window:.2f} s)")
            except (OSError, ValueError) as err:
                self.log.error(f"saving the map on shutdown failed: {err}")


class LogerNode(MappingShell, Node):
    """Parameters, subscriptions, publishers, TF, services and timers around one MappingCore; maps
    from construction on (the managed variant is ``loger_ros.lifecycle_node``)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.log = GuardedLogger(self.get_logger())
        self.params = self._declare_parameters()
        self._setup_outputs()
        self._subscribe()
        self.core.start(self._dispatch, self._clock_ns)
        self._log_ready()


def _install_signal_handlers(on_signal: Callable[[str], None]) -> None:
    """SIGINT and SIGTERM request a graceful shutdown (rclpy's own handlers are off: they would shut
    the context down before the map is saved and published)."""
    def handler(signum, frame) -> None:
        on_signal(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def main(args: Optional[list[str]] = None, node_class: Optional[Callable[[], Node]] = None) -> int:
    """Console script ``loger_node``: 0 after a clean or signalled shutdown, 2 when it cannot start.
    ``node_class``: the node to run (default :class:`LogerNode`)."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    requested: list[str] = []
    stop = threading.Event()

    def on_signal(name: str) -> None:
        requested.append(name)
        stop.set()

    _install_signal_handlers(on_signal)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node: Optional[MappingShell] = None
    executor: Optional[MultiThreadedExecutor] = None
    code = 0
    try:
        node = (node_class or LogerNode)()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=_SPIN_PERIOD_S)
    except ExternalShutdownException:
        pass
    except (ValueError, RuntimeError, OSError, ParameterException) as err:
        # Startup failures: a parameter out of its range (rclpy), ParamsError / StreamInputError,
        # CheckpointError, a missing checkpoint file.
        print(f"loger_node: cannot start: {err}", file=sys.stderr)
        code = 2
    finally:
        if node is not None:
            try:
                node.shutdown(requested[0] if requested else "ROS shut down")
            finally:
                if executor is not None:
                    executor.shutdown(timeout_sec=1.0)
                node.log.ros_up = False  # from here on the core's threads log to stderr
                node.destroy_node()
        rclpy.try_shutdown()
    if node is not None and getattr(node, "left_running", False):
        # A window pass overran shutdown_timeout_s and still runs on its thread (torch, GTSAM): the map
        # is saved, but the interpreter's exit would destroy the C++ thread pools under it and abort
        # ("terminate called without an active exception", exit code -6). Leave now, with the code.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())

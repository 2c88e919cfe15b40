"""``loger_lifecycle_node``: the mapping node as a managed (lifecycle) node, for a launch that
brings its nodes up in order (e.g. Nav2's ``lifecycle_manager`` with ``bond_timeout: 0.0``: rclpy
has no bond; or ``launch_ros.actions.LifecycleNode`` with its transition events).

Same parameters, topics, services and shutdown as ``loger_node`` (:class:`loger_ros.node.MappingShell`):

- unconfigured: parameters declared, and any of them can be set (``ros2 param set``), nothing loaded,
  nothing published;
- ``configure``: the parameters are read and checked, the core is built and the model loaded
  (FAILURE, with the reason logged, on a bad parameter or checkpoint: the node stays unconfigured,
  the parameter can be set right and the node configured again); once configured only the live
  parameters (``LIVE_PARAMETERS``: the low-latency passes' rate, budget, anchors) change;
- ``activate``: the camera inputs are subscribed and mapping starts (``READY_MESSAGE``);
- ``deactivate``: the inputs are unsubscribed; the map, the network memory and the trajectory stay,
  and a later ``activate`` goes on mapping in the same ``map`` frame;
- ``cleanup`` / ``shutdown`` (and SIGINT / SIGTERM): the incomplete window is finished or dropped and
  the map saved as ``loger_node`` does on shutdown; after ``cleanup`` a ``configure`` starts a new map.
"""
from __future__ import annotations

import sys
from typing import Optional

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from loger_ros.node import GuardedLogger, MappingShell, main as _node_main
from loger_ros.params import NODE_NAME


class LogerLifecycleNode(MappingShell, LifecycleNode):
    """The managed mapping node (states and transitions in the module docstring)."""

    _MANAGED = True

    def __init__(self, **kwargs) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.log = GuardedLogger(self.get_logger())
        self.core = None
        self._started = False
        try:
            self.params = self._declare_parameters()
        except (ValueError, RuntimeError) as err:  # reported again by configure, which refuses
            self.params = None
            self.log.error(f"invalid parameters: {err}")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.params = self._read_parameters()
            self._setup_outputs()
        except (ValueError, RuntimeError, OSError) as err:
            # ParamsError / StreamInputError / CheckpointError / a missing file: stay unconfigured.
            self.log.error(f"configure failed: {err}")
            self._teardown_outputs()
            return TransitionCallbackReturn.FAILURE
        self.log.info("configured: model loaded; activate to start mapping")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._subscribe()
        if not self._started:
            self.core.start(self._dispatch, self._clock_ns)
            self._started = True
        self.core.watch_input(True)
        self._log_ready()
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self.core.watch_input(False)  # no image is expected while inactive
        self.log.info("deactivated: inputs unsubscribed; map and memory kept")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.shutdown("cleanup")
        self._teardown_outputs()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.shutdown("lifecycle shutdown")
        return TransitionCallbackReturn.SUCCESS

    def shutdown(self, reason: str) -> None:
        """As :meth:`MappingShell.shutdown`, once, and only when configured."""
        if self.core is None or getattr(self, "_shut_down", False):
            return
        self._unsubscribe()
        self._shut_down = True
        super().shutdown(reason)

    def _teardown_outputs(self) -> None:
        """Drops what ``_setup_outputs`` made, so that a later configure starts clean."""
        core, self.core = self.core, None
        if core is not None and hasattr(core.reconstructor, "close"):
            core.reconstructor.close()  # its window thread and preprocessing pool
        for pub in getattr(self, "_publishers_by_channel", {}).values():
            self.destroy_publisher(pub)
        self._publishers_by_channel = {}
        # (Not `_services` / `_timers`: those are rclpy's own lists of the node's entities.)
        for srv in getattr(self, "_shell_services", []):
            self.destroy_service(srv)
        for timer in getattr(self, "_shell_timers", []):
            self.destroy_timer(timer)
        self._shell_services, self._shell_timers = [], []
        control, self._player_control = getattr(self, "_player_control", None), None
        if control is not None:
            control.destroy()
        self._started = False
        self._shut_down = False


def main(args: Optional[list[str]] = None) -> int:
    """Console script ``loger_lifecycle_node``: 0 after a clean or signalled shutdown."""
    return _node_main(args, node_class=LogerLifecycleNode)


if __name__ == "__main__":
    sys.exit(main())

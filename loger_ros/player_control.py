"""Lossless replay: the rosbag2 player's ``~/pause`` and ``~/resume`` services as the pipeline's
flow-control sink (parameter ``lossless``).

The policy (when to pause, when to resume) is ROS-free:
:class:`~loger_core.pipeline.backpressure.BackPressure`, driven by the pipeline's queue depth. This
module only turns its actions into service requests. Requests are asynchronous: the sink is called
from the image callback and from the inference thread, and neither may wait for a round trip (the
callback would stall the executor that delivers the answer; the inference thread would stall
mapping). A pause that cannot be sent (no player yet, or none at all) or a request that fails is
handed back to the policy, which asks again on a later queue update; a resume for a player that has
gone (the bag ended) is dropped.

Imported only when ``lossless`` is on, so a live node does not need rosbag2_interfaces.
"""
from __future__ import annotations

import time
from typing import Any

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rosbag2_interfaces.srv import Pause, Resume

from loger_core.pipeline.backpressure import PAUSE, RESUME, BackPressure

__all__ = ["PlayerControl"]

_WARN_PERIOD_S = 5.0  # a missing player is retried on every queue update: say so at most this often


class PlayerControl:
    """Pauses and resumes the rosbag2 player ``player`` (a fully qualified node name) for ``policy``."""

    def __init__(self, node: Node, player: str, policy: BackPressure, log: Any) -> None:
        self._policy = policy
        self._log = log
        self.player = player
        group = ReentrantCallbackGroup()
        self._clients = {
            PAUSE: node.create_client(Pause, f"{player}/pause", callback_group=group),
            RESUME: node.create_client(Resume, f"{player}/resume", callback_group=group),
        }
        self._node = node
        self._last_warning = -float("inf")
        self.sent = {PAUSE: 0, RESUME: 0}

    def __call__(self, action: str) -> None:
        """Send ``action`` (``"pause"`` / ``"resume"``) without waiting for the answer."""
        client = self._clients[action]
        if not client.service_is_ready():
            if action == RESUME:
                # The player that was paused is gone (the bag ended, or it was stopped): nothing is
                # left paused, and asking again on every queue update would only repeat this.
                self._log.info(f"lossless: {client.srv_name} is gone; not resuming")
                return
            self._policy.failed(action)
            self._warn(f"lossless: cannot {action} the player: {client.srv_name} is not available (is `ros2 bag "
                       f"play` running, as {self.player}?); the frames wait in the queue meanwhile")
            return
        future = client.call_async(client.srv_type.Request())
        self.sent[action] += 1
        future.add_done_callback(lambda done: self._answered(action, done))
        self._log.debug(f"lossless: asked {self.player} to {action}")

    def _answered(self, action: str, future: Any) -> None:
        error = future.exception()
        if error is not None:
            self._policy.failed(action)
            self._warn(f"lossless: {action} request to {self.player} failed: {error!r}")

    def _warn(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_PERIOD_S:
            self._last_warning = now
            self._log.warning(text)

    def destroy(self) -> None:
        for client in self._clients.values():
            self._node.destroy_client(client)
        self._clients = {}

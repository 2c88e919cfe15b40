"""The camera-to-base transform ``T_base_cam``: looked up in TF, identity as a warned fallback.

Poses are published for ``base_frame`` (REP-105), while the network estimates the camera
(optical frame, OpenCV axes). The mount comes from TF (``base_frame <- camera frame``, the
camera frame being the image header's ``frame_id`` unless overridden). It is looked up on
every frame until the first pose anchors the map, then frozen: changing it afterwards would
shift every later base pose. If TF never had it, identity is used and ONE warning says so.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np

from loger_core.pipeline.checks import TransformError, validate_rigid_transform

__all__ = ["LookupFn", "CameraMount"]

# lookup(target_frame, source_frame, stamp_ns or None for "latest") -> T_target_source (4, 4) or None.
LookupFn = Callable[[str, str, Optional[int]], Optional[np.ndarray]]


class CameraMount:
    """Resolves and then freezes ``T_base_cam (4, 4) float64``.

    Args:
        base_frame: the robot body frame.
        lookup: TF lookup (see :data:`LookupFn`); None = TF unavailable (identity).
        logger: object with ``warning``/``info`` (rclpy or logging).
    """

    def __init__(self, base_frame: str, lookup: Optional[LookupFn], logger: Any) -> None:
        self.base_frame = base_frame
        self._lookup = lookup
        self._log = logger
        self._T: Optional[np.ndarray] = None
        self._frozen = False
        self.camera_frame: Optional[str] = None
        self.source = "unresolved"  # 'tf', 'same_frame', 'identity_fallback'

    @property
    def frozen(self) -> bool:
        return self._frozen

    def current(self, camera_frame: str) -> np.ndarray:
        """``T_base_cam`` for ``camera_frame``: the frozen value, else a fresh TF lookup (identity when none)."""
        if self._frozen:
            return self._T.copy()  # type: ignore[union-attr]
        self.camera_frame = camera_frame
        if camera_frame == self.base_frame:
            self._T, self.source = np.eye(4), "same_frame"
            return self._T.copy()
        found = self._try_lookup(camera_frame)
        if found is not None:
            self._T, self.source = found, "tf"
            return found.copy()
        return np.eye(4)

    def freeze(self, camera_frame: str) -> np.ndarray:
        """Fix the mount (called when the map is anchored); warns once if TF had no transform."""
        if self._frozen:
            return self._T.copy()  # type: ignore[union-attr]
        T = self.current(camera_frame)
        if self.source not in ("tf", "same_frame"):
            self.source = "identity_fallback"
            self._log.warning(
                f"no TF transform {self.base_frame} <- {camera_frame!r}: using identity, i.e. publishing the "
                f"camera pose as {self.base_frame} (publish the camera mount, e.g. with the launch file's "
                "camera_* arguments, to fix this)"
            )
        self._T = T
        self._frozen = True
        return T.copy()

    def unfreeze(self) -> None:
        """Allow a new lookup (after a reset that restarts the map frame)."""
        self._frozen = False

    def _try_lookup(self, camera_frame: str) -> Optional[np.ndarray]:
        if self._lookup is None:
            return None
        try:
            T = self._lookup(self.base_frame, camera_frame, None)
        except Exception as err:  # a TF backend error is a missing transform here, never a crash
            self._log.debug(f"TF lookup {self.base_frame} <- {camera_frame!r} failed: {err}")
            return None
        if T is None:
            return None
        try:
            return validate_rigid_transform(T, f"TF {self.base_frame} <- {camera_frame}")
        except TransformError as err:
            self._log.warning(f"ignoring invalid camera mount from TF: {err}")
            return None

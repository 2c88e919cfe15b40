"""Camera poses -> ``nav_msgs/Odometry`` with twist from consecutive poses and covariance from confidence.

Frames: ``header.frame_id`` is the fixed frame (e.g. ``odom``/``map``), ``child_frame_id``
the moving body (e.g. the camera); the pose is ``T_frame_child`` and, as ROS specifies,
the twist is expressed in the child frame.

Twist (first-order finite difference of ``T_prev`` at ``t - dt`` and ``T`` at ``t``):

- linear  ``v = R^T (p - p_prev) / dt`` (world displacement rotated into the child frame at t)
- angular ``w = log(R_prev^T R) / dt`` (rotation vector of the relative rotation; its axis
  is the same in the child frame at ``t - dt`` and ``t``).

Covariance (:class:`CovarianceModel`, 6x6 row-major, order x, y, z, rot_x, rot_y, rot_z,
diagonal only): with ``c = clip(confidence, min_confidence, max_confidence)``

- pose:  ``sigma_pos = position_sigma_m / c``, ``sigma_rot = rotation_sigma_rad / c``
- twist: ``sqrt(2) * sigma / dt`` (difference of two poses with independent errors)
- unknown (confidence None or NaN, or no previous pose for the twist): every diagonal
  entry is ``unknown_variance`` so consumers (e.g. robot_localization) ignore it.

Confidence 1 therefore means "nominal accuracy"; a confidence of 0 is clamped to the floor
(large but finite covariance) and a negative confidence is an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from loger_ros.conversions.factory import MessageFactory
from loger_ros.conversions.geometry import make_pose, validate_rigid_transform
from loger_ros.conversions.stamps import make_header, validate_frame_id
from loger_ros.errors import ConversionError

__all__ = ["CovarianceModel", "odometry_from_poses", "twist_from_poses"]


@dataclass(frozen=True)
class CovarianceModel:
    """Confidence -> covariance mapping (see module docstring); all values must be > 0."""

    position_sigma_m: float = 0.05
    rotation_sigma_rad: float = 0.02
    min_confidence: float = 0.05
    max_confidence: float = 10.0
    unknown_variance: float = 1.0e6

    def __post_init__(self) -> None:
        for name in ("position_sigma_m", "rotation_sigma_rad", "min_confidence", "max_confidence", "unknown_variance"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConversionError(
                    f"CovarianceModel.{name} {value!r} must be a finite number > 0", field=name, value=value
                )
        if self.min_confidence > self.max_confidence:
            raise ConversionError(
                f"CovarianceModel.min_confidence {self.min_confidence} > max_confidence {self.max_confidence}",
                field="min_confidence",
                value=self.min_confidence,
            )

    def _clamped(self, confidence: float | None) -> float | None:
        if confidence is None:
            return None
        try:
            value = float(confidence)
        except (TypeError, ValueError):
            raise ConversionError(
                f"confidence {confidence!r} is not a number", field="confidence", value=confidence
            ) from None
        if math.isnan(value):
            return None
        if value < 0:
            raise ConversionError(f"confidence {value} must be >= 0", field="confidence", value=value)
        return min(max(value, self.min_confidence), self.max_confidence)

    def _diagonal(self, sigma_linear: float | None, sigma_angular: float | None) -> np.ndarray:
        if sigma_linear is None or sigma_angular is None:
            variances = np.full(6, self.unknown_variance)
        else:
            variances = np.array([sigma_linear**2] * 3 + [sigma_angular**2] * 3)
        return np.diag(variances).reshape(36)

    def pose_covariance(self, confidence: float | None) -> np.ndarray:
        """``(36,)`` float64 row-major 6x6 pose covariance for a confidence (None/NaN = unknown)."""
        c = self._clamped(confidence)
        if c is None:
            return self._diagonal(None, None)
        return self._diagonal(self.position_sigma_m / c, self.rotation_sigma_rad / c)

    def twist_covariance(self, confidence: float | None, dt_s: float | None) -> np.ndarray:
        """``(36,)`` float64 row-major 6x6 twist covariance; unknown when ``dt_s`` is None."""
        c = self._clamped(confidence)
        if c is None or dt_s is None:
            return self._diagonal(None, None)
        scale = math.sqrt(2.0) / (c * dt_s)
        return self._diagonal(self.position_sigma_m * scale, self.rotation_sigma_rad * scale)


def _check_dt(dt_s: Any) -> float:
    try:
        dt = float(dt_s)
    except (TypeError, ValueError):
        raise ConversionError(f"dt_s {dt_s!r} is not a number", field="dt_s", value=dt_s) from None
    if not (math.isfinite(dt) and dt > 0):
        raise ConversionError(f"dt_s {dt} must be a finite time > 0 seconds", field="dt_s", value=dt)
    return dt


def twist_from_poses(T_prev: Any, T: Any, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame twist between ``T_prev`` and ``T`` (both ``T_frame_child (4, 4)``), ``dt_s`` apart.

    Returns:
        ``(linear (3,) m/s, angular (3,) rad/s)`` float64, expressed in the child frame at ``T``.
    """
    dt = _check_dt(dt_s)
    previous = validate_rigid_transform(T_prev, "T_prev")
    current = validate_rigid_transform(T, "T")
    rotation = current[:3, :3]
    linear = rotation.T @ (current[:3, 3] - previous[:3, 3]) / dt
    angular = Rotation.from_matrix(previous[:3, :3].T @ rotation).as_rotvec() / dt
    return linear, angular


def _vector3(factory: MessageFactory, values: np.ndarray) -> Any:
    x, y, z = (float(v) for v in values)
    return factory.make("geometry_msgs/msg/Vector3", x=x, y=y, z=z)


def odometry_from_poses(
    factory: MessageFactory,
    stamp_ns: int,
    frame_id: str,
    child_frame_id: str,
    T: Any,
    T_prev: Any | None = None,
    dt_s: float | None = None,
    confidence: float | None = None,
    covariance_model: CovarianceModel | None = None,
) -> Any:
    """Build a ``nav_msgs/msg/Odometry``.

    Args:
        factory: message factory (rosbags or rclpy).
        stamp_ns: stamp of ``T`` in int nanoseconds.
        frame_id: fixed frame of the pose.
        child_frame_id: moving frame; the twist is expressed in it.
        T: ``T_frame_child (4, 4)`` at ``stamp_ns``.
        T_prev: ``T_frame_child (4, 4)`` at ``stamp_ns - dt_s``, or None (twist zero, covariance unknown).
        dt_s: seconds between ``T_prev`` and ``T``; given exactly when ``T_prev`` is.
        confidence: pose confidence (1 = nominal), None/NaN = unknown; see module docstring.
        covariance_model: mapping confidence -> covariance (default :class:`CovarianceModel()`).
    """
    model = covariance_model or CovarianceModel()
    child = validate_frame_id(child_frame_id, "Odometry.child_frame_id")
    if (T_prev is None) != (dt_s is None):
        raise ConversionError(
            f"T_prev and dt_s must be given together (T_prev {'None' if T_prev is None else 'given'}, dt_s {dt_s!r})",
            field="dt_s",
            value=dt_s,
        )
    if T_prev is None:
        linear, angular = np.zeros(3), np.zeros(3)
        twist_covariance = model.twist_covariance(None, None)
    else:
        linear, angular = twist_from_poses(T_prev, T, dt_s)
        twist_covariance = model.twist_covariance(confidence, _check_dt(dt_s))
    return factory.make(
        "nav_msgs/msg/Odometry",
        header=make_header(factory, stamp_ns, frame_id),
        child_frame_id=child,
        pose=factory.make(
            "geometry_msgs/msg/PoseWithCovariance",
            pose=make_pose(factory, T, "T"),
            covariance=model.pose_covariance(confidence),
        ),
        twist=factory.make(
            "geometry_msgs/msg/TwistWithCovariance",
            twist=factory.make(
                "geometry_msgs/msg/Twist", linear=_vector3(factory, linear), angular=_vector3(factory, angular)
            ),
            covariance=twist_covariance,
        ),
    )

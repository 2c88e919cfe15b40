"""Rigid transforms <-> ``geometry_msgs`` / ``nav_msgs/Path``.

Matrices are ``T_parent_child (4, 4)`` float64 (a point in the child frame maps to the
parent frame by ``T @ p``); e.g. a camera pose is ``T_world_cam``. Quaternions are in ROS
order (x, y, z, w) and come from ``scipy.spatial.transform.Rotation``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from loger_core.pipeline.checks import ROTATION_TOLERANCE, TransformError
from loger_core.pipeline.checks import validate_rigid_transform as _validate
from loger_ros.conversions._fields import get_field
from loger_ros.conversions.factory import MessageFactory
from loger_ros.conversions.stamps import make_header, validate_frame_id
from loger_ros.errors import ConversionError

__all__ = [
    "make_pose",
    "make_transform",
    "matrix_from_pose",
    "matrix_from_transform",
    "path_from_poses",
    "pose_stamped_from_matrix",
    "transform_stamped_from_matrix",
    "validate_rigid_transform",
]

# Poses from a float32 network drift slightly off SO(3); scipy re-orthonormalises them,
# the check only catches matrices that are not rotations at all (scale, shear, reflection).
_ROTATION_TOLERANCE = ROTATION_TOLERANCE


def validate_rigid_transform(T: Any, name: str = "T") -> np.ndarray:
    """Check a ``(4, 4)`` rigid transform and return it as float64; raise ConversionError otherwise
    (the check is :func:`loger_core.pipeline.checks.validate_rigid_transform`)."""
    try:
        return _validate(T, name)
    except TransformError as err:
        raise ConversionError(str(err), field=err.field, value=err.value) from None


def _quaternion_xyzw(matrix: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(matrix[:3, :3]).as_quat()


def _translation_quaternion(T: Any, name: str) -> tuple[list[float], list[float]]:
    """Validated rigid `T` -> ([x, y, z], [qx, qy, qz, qw]) as Python floats (ROS order)."""
    matrix = validate_rigid_transform(T, name)
    return [float(v) for v in matrix[:3, 3]], [float(v) for v in _quaternion_xyzw(matrix)]


def make_transform(factory: MessageFactory, T: Any, name: str = "T") -> Any:
    """``geometry_msgs/msg/Transform`` from a ``(4, 4)`` rigid transform."""
    (x, y, z), (qx, qy, qz, qw) = _translation_quaternion(T, name)
    return factory.make(
        "geometry_msgs/msg/Transform",
        translation=factory.make("geometry_msgs/msg/Vector3", x=x, y=y, z=z),
        rotation=factory.make("geometry_msgs/msg/Quaternion", x=qx, y=qy, z=qz, w=qw),
    )


def make_pose(factory: MessageFactory, T: Any, name: str = "T") -> Any:
    """``geometry_msgs/msg/Pose`` from a ``(4, 4)`` rigid transform."""
    (x, y, z), (qx, qy, qz, qw) = _translation_quaternion(T, name)
    return factory.make(
        "geometry_msgs/msg/Pose",
        position=factory.make("geometry_msgs/msg/Point", x=x, y=y, z=z),
        orientation=factory.make("geometry_msgs/msg/Quaternion", x=qx, y=qy, z=qz, w=qw),
    )


def transform_stamped_from_matrix(
    factory: MessageFactory, stamp_ns: int, parent_frame: str, child_frame: str, T_parent_child: Any
) -> Any:
    """``geometry_msgs/msg/TransformStamped`` (for tf2) from ``T_parent_child (4, 4)``."""
    child = validate_frame_id(child_frame, "TransformStamped.child_frame_id")
    if child == parent_frame:
        raise ConversionError(
            f"TransformStamped.child_frame_id {child!r} equals the parent frame", field="child_frame_id", value=child
        )
    return factory.make(
        "geometry_msgs/msg/TransformStamped",
        header=make_header(factory, stamp_ns, parent_frame),
        child_frame_id=child,
        transform=make_transform(factory, T_parent_child, "T_parent_child"),
    )


def pose_stamped_from_matrix(factory: MessageFactory, stamp_ns: int, frame_id: str, T_frame_body: Any) -> Any:
    """``geometry_msgs/msg/PoseStamped`` of a body pose ``T_frame_body (4, 4)`` expressed in ``frame_id``."""
    return factory.make(
        "geometry_msgs/msg/PoseStamped",
        header=make_header(factory, stamp_ns, frame_id),
        pose=make_pose(factory, T_frame_body, "T_frame_body"),
    )


def path_from_poses(factory: MessageFactory, stamp_ns: int, frame_id: str, stamps_ns: Any, poses: Any) -> Any:
    """``nav_msgs/msg/Path`` of ``poses (N, 4, 4)`` (``T_frame_body``) stamped ``stamps_ns (N,)`` int ns."""
    try:
        stamps = list(stamps_ns)
    except TypeError:
        raise ConversionError(
            f"stamps_ns {stamps_ns!r} is not a sequence", field="stamps_ns", value=stamps_ns
        ) from None
    try:
        matrices = np.asarray(poses, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConversionError("poses is not a numeric (N, 4, 4) array", field="poses") from None
    if matrices.ndim != 3 or matrices.shape[1:] != (4, 4):
        raise ConversionError(
            f"poses has shape {matrices.shape}, expected (N, 4, 4)", field="poses", value=matrices.shape
        )
    if len(stamps) != matrices.shape[0]:
        raise ConversionError(
            f"stamps_ns has {len(stamps)} entries but poses has {matrices.shape[0]}",
            field="stamps_ns",
            value=len(stamps),
        )
    pose_messages = [
        factory.make(
            "geometry_msgs/msg/PoseStamped",
            header=make_header(factory, stamp, frame_id),
            pose=make_pose(factory, matrix, f"poses[{index}]"),
        )
        for index, (stamp, matrix) in enumerate(zip(stamps, matrices))
    ]
    return factory.make("nav_msgs/msg/Path", header=make_header(factory, stamp_ns, frame_id), poses=pose_messages)


def _components(msg: Any, type_name: str, axes: str) -> np.ndarray:
    values = [get_field(msg, type_name, axis) for axis in axes]
    try:
        vector = np.array([float(v) for v in values])
    except (TypeError, ValueError):
        raise ConversionError(
            f"{type_name} ({', '.join(axes)}) {values!r} are not all numbers", field=type_name, value=values
        ) from None
    if not np.all(np.isfinite(vector)):
        raise ConversionError(
            f"{type_name} ({', '.join(axes)}) {vector.tolist()} contains NaN or infinity",
            field=type_name,
            value=vector.tolist(),
        )
    return vector


def _xyz(msg: Any, type_name: str) -> np.ndarray:
    return _components(msg, type_name, "xyz")


def _matrix(translation: np.ndarray, quaternion: Any, field: str) -> np.ndarray:
    xyzw = _components(quaternion, field, "xyzw")
    norm = float(np.linalg.norm(xyzw))
    if norm < 1e-6:
        raise ConversionError(
            f"{field} quaternion (x, y, z, w) {xyzw.tolist()} is not a rotation (norm {norm:.3g})",
            field=field,
            value=xyzw.tolist(),
        )
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_quat(xyzw / norm).as_matrix()
    matrix[:3, 3] = translation
    return matrix


def matrix_from_transform(transform: Any) -> np.ndarray:
    """``geometry_msgs/Transform`` -> ``(4, 4)`` float64 (non-unit quaternions are normalised)."""
    translation = _xyz(get_field(transform, "Transform", "translation"), "Transform.translation")
    return _matrix(translation, get_field(transform, "Transform", "rotation"), "Transform.rotation")


def matrix_from_pose(pose: Any) -> np.ndarray:
    """``geometry_msgs/Pose`` -> ``(4, 4)`` float64 (non-unit quaternions are normalised)."""
    position = _xyz(get_field(pose, "Pose", "position"), "Pose.position")
    return _matrix(position, get_field(pose, "Pose", "orientation"), "Pose.orientation")

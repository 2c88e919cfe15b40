"""Checks on numeric inputs of the pipeline (ROS-free): rigid transforms from the network or TF."""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TransformError", "validate_rigid_transform"]

# Poses from a float32 network drift slightly off SO(3); this only catches matrices that are not
# rotations at all (scale, shear, reflection).
ROTATION_TOLERANCE = 1e-3


class TransformError(ValueError):
    """A matrix is not a rigid transform; ``field`` names it, ``value`` is the offending part."""

    def __init__(self, message: str, *, field: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


def validate_rigid_transform(T: Any, name: str = "T") -> np.ndarray:
    """Check a ``(4, 4)`` rigid transform and return it as float64; raise TransformError otherwise."""
    try:
        matrix = np.asarray(T, dtype=np.float64)
    except (TypeError, ValueError):
        raise TransformError(f"{name} {T!r} is not a numeric array", field=name, value=T) from None
    if matrix.shape != (4, 4):
        raise TransformError(f"{name} has shape {matrix.shape}, expected (4, 4)", field=name, value=matrix.shape)
    if not np.all(np.isfinite(matrix)):
        raise TransformError(f"{name} contains NaN or infinity: {matrix.tolist()}", field=name, value=matrix.tolist())
    if not np.allclose(matrix[3], (0.0, 0.0, 0.0, 1.0), atol=1e-9):
        raise TransformError(
            f"{name} last row {matrix[3].tolist()} must be [0, 0, 0, 1]", field=name, value=matrix[3].tolist()
        )
    rotation = matrix[:3, :3]
    error = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    if error > ROTATION_TOLERANCE or np.linalg.det(rotation) <= 0:
        raise TransformError(
            f"{name} rotation block is not a rotation (max |R^T R - I| = {error:.3g}, "
            f"det = {np.linalg.det(rotation):.3g})",
            field=name,
            value=rotation.tolist(),
        )
    return matrix

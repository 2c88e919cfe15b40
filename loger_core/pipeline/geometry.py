"""Small pose helpers the pipeline's modules share."""
from __future__ import annotations

import numpy as np

__all__ = ["similarity_pose"]


def similarity_pose(S: np.ndarray, T: np.ndarray) -> np.ndarray:
    """The rigid pose ``T (4, 4)`` moved by the similarity ``S = [s R | t]``: rotation ``R @ R_T``,
    centre ``S`` applied to ``T``'s centre (the scale moves positions, it does not scale rotations)."""
    S = np.asarray(S, np.float64)
    s = float(np.cbrt(np.linalg.det(S[:3, :3])))
    out = np.eye(4)
    out[:3, :3] = (S[:3, :3] / s) @ np.asarray(T, np.float64)[:3, :3]
    out[:3, 3] = S[:3, :3] @ np.asarray(T, np.float64)[:3, 3] + S[:3, 3]
    return out

"""What the streaming reconstructor returns."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np


@dataclass
class FrameResult:
    """One frame's reconstruction, in the world frame of the current map (the first window's
    first camera), metric scale applied (`scale`).

    index: frame number within the current map (0-based, counting accepted frames).
    stamp_ns: the stamp given to `push` (int nanoseconds).
    T_world_cam: (4, 4) float64 camera-to-world pose (OpenCV camera axes).
    depth: (h, w) float32 z-depth at model resolution (NaN where the prediction is not finite).
    confidence: (h, w) float32 sigmoid probability in [0, 1] of the prediction at each pixel.
    valid: (h, w) bool pixels kept as points (finite, positive depth, confidence filters passed).
    points: (M, 3) float32 world-frame points of the `valid` pixels (row-major pixel order).
    colors: (M, 3) uint8 RGB of those pixels (from the resized input image).
    point_confidence: (M,) float32 their confidence.
    K: (3, 3) float64 intrinsics of the ORIGINAL image: the `K` given to `push` when known
        intrinsics are in use, else the one implied by the predicted points (mapped back through
        resize and crop; focal lengths NaN when no pixel was usable).
    K_model: (3, 3) float64 intrinsics at model resolution implied by the predicted points.
    image_size: (W, H) of the original image; model_size: (w, h) of the network input.
    scale, scale_std: metric factor applied and its 1-sigma uncertainty (see `ScaleEstimate`).
    scale_valid: False while a measuring scale source had no measurement (model scale used).
    window_index: index of the window that produced the result.
    provisional: True for a result of an uncommitted pass; the committed result of the same frame
        (same index and stamp) comes later and supersedes it. Pose-only by default
        (`StreamConfig.provisional_outputs`): empty depth / masks / points, `K_model` of the last
        committed frame.
    intrinsics_known: True when `K` is the one given to `push`.
    point_weights: None when every valid pixel is a point; with `StreamConfig.point_voxel_size`
        > 0, (M,) int32 number of valid pixels merged into each point (sums to `valid.sum()`).
    descriptor: (C,) float32 unit global descriptor of the frame pooled from the encoder's patch
        tokens (C = encoder width: 128 for `small`, 1024 for ViT-L), for place recognition; None
        where the pass gives none (pose-only provisional results, provisional CUDA graphs, a model
        or test double without descriptors).
    """

    index: int
    stamp_ns: int
    T_world_cam: np.ndarray
    depth: np.ndarray
    confidence: np.ndarray
    valid: np.ndarray
    points: np.ndarray
    colors: np.ndarray
    point_confidence: np.ndarray
    K: np.ndarray
    K_model: np.ndarray
    image_size: tuple[int, int]
    model_size: tuple[int, int]
    scale: float
    scale_std: float
    scale_valid: bool
    window_index: int
    provisional: bool = False
    intrinsics_known: bool = False
    point_weights: Optional[np.ndarray] = None
    descriptor: Optional[np.ndarray] = None

    @property
    def position(self) -> np.ndarray:
        """(3,) float64 camera centre in the world frame."""
        return self.T_world_cam[:3, 3]


@dataclass
class StreamStats:
    """Counters of one reconstructor (cumulative over resets except where stated)."""

    frames_pushed: int = 0
    frames_accepted: int = 0
    frames_committed: int = 0
    frames_dropped_out_of_order: int = 0
    frames_dropped_nonfinite: int = 0
    windows_run: int = 0
    windows_dropped_nonfinite: int = 0
    windows_failed_error: int = 0  # the model raised (e.g. out of memory); the exception propagated
    frames_dropped_error: int = 0
    provisional_runs: int = 0
    provisional_skipped_budget: int = 0  # passes not run: provisional_budget was spent
    provisional_deferred: int = 0  # due passes held back by the caller (frames were waiting)
    provisional_dropped_nonfinite: int = 0
    window_graph_replays: int = 0  # committed windows replayed from a CUDA graph (`window_graphs`)
    resets: int = 0
    state_bytes: int = 0  # current memory state (TTT fast weights + SWA cache)
    last_window_s: float = 0.0
    commit_s_total: float = 0.0  # wall time in committed window passes (network + outputs)
    provisional_s_total: float = 0.0  # wall time in provisional passes

    def to_dict(self) -> dict:
        return asdict(self)

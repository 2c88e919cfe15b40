"""Window schedule, inter-window alignment and merging, as the authors' windowed inference does.

Each window's predictions live in the frame of the memory at that window. Optionally each window
is mapped into the first window's frame by a rigid (SE(3)) or similarity (Sim(3)) transform
estimated on the first frame shared with the previous, already aligned window:

    R = R_prev @ R_curr^T,   s = robust ratio of depths (Sim(3) only),   t = t_prev - s R t_curr

applied as `T_world_cam <- [R | t] * (scaled) T_window_cam` and `local_points <- s * local_points`.
With alignment 'none' and `reset_every > 0`, an SE(3) transform is estimated at each TTT reset and
reused for the following windows of that reset block (the memory keeps those windows consistent).
"""
from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor

from .prediction import WindowPrediction, transform_points

ALIGNMENTS = ("none", "se3", "sim3")
SCALE_MODES = ("median", "trimmed_mean", "median_all", "trimmed_mean_all", "sim3_avg1")


def window_schedule(num_frames: int, window_size: int, overlap_size: int) -> list[tuple[int, int]]:
    """[start, end) frame ranges of the windows covering `num_frames` frames."""
    if num_frames <= 0:
        return []
    if window_size <= 0 or window_size >= num_frames:
        return [(0, num_frames)]
    stride = max(window_size - overlap_size, 1)
    windows = []
    for start in range(0, num_frames, stride):
        end = min(start + window_size, num_frames)
        if end - start >= overlap_size or end == num_frames:
            windows.append((start, end))
        if end == num_frames:
            break
    return windows


def trimmed_mean(values: Tensor, trim: float = 0.25) -> Tensor:
    """Mean of a 1-D tensor after dropping the lowest and highest `trim` fraction."""
    n = values.numel()
    s, _ = torch.sort(values)
    cut = int(n * trim)
    if cut >= n - cut:
        return s[n // 2]
    return s[cut : n - cut].mean()


@dataclass
class WindowTransform:
    """world <- window similarity: x_world = scale * R @ x_window + t. R: (B, 3, 3), t: (B, 3), scale: (B,)."""

    R: Tensor
    t: Tensor
    scale: Tensor

    @staticmethod
    def identity(batch: int, device: torch.device, dtype: torch.dtype) -> "WindowTransform":
        return WindowTransform(
            torch.eye(3, device=device, dtype=dtype).unsqueeze(0).repeat(batch, 1, 1),
            torch.zeros(batch, 3, device=device, dtype=dtype),
            torch.ones(batch, device=device, dtype=dtype),
        )

    def matrix(self) -> Tensor:
        """(B, 4, 4) with the scale folded into the rotation block."""
        B = self.R.shape[0]
        T = torch.eye(4, device=self.R.device, dtype=self.R.dtype).unsqueeze(0).repeat(B, 1, 1)
        T[:, :3, :3] = self.R * self.scale.view(B, 1, 1)
        T[:, :3, 3] = self.t
        return T

    def clone(self) -> "WindowTransform":
        return WindowTransform(self.R.clone(), self.t.clone(), self.scale.clone())


class WindowAligner:
    """Maps each window's predictions into the first window's frame, one window at a time.

    Holds only the last `overlap` aligned frames of the previous window and the last `history`
    window transforms (constant memory).
    """

    def __init__(
        self, alignment: str = "none", overlap_size: int = 0, reset_every: int = 0, scale_mode: str = "median",
        history: int = 1,
    ) -> None:
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        if scale_mode not in SCALE_MODES:
            raise ValueError(f"sim3 scale mode must be one of {SCALE_MODES}, got {scale_mode!r}")
        self.alignment = alignment
        self.overlap = overlap_size
        self.reset_every = reset_every
        self.scale_mode = scale_mode
        self.allow_scale = alignment == "sim3"
        self.reuse_in_block = alignment == "none" and reset_every > 0
        self.active = alignment != "none" or reset_every > 0
        self.window_index = 0
        self._prev: WindowPrediction | None = None  # tail of the previous aligned window
        self._prev_frames = 0
        self._block: WindowTransform | None = None
        self.transforms: deque[WindowTransform] = deque(maxlen=history)

    def align(self, pred: WindowPrediction) -> WindowPrediction:
        """Aligns the next window (in sequence order) and returns the aligned predictions."""
        if not self.active:
            self.window_index += 1
            return pred
        B = pred.camera_poses.shape[0]
        k = self.window_index
        if k == 0:
            tf = WindowTransform.identity(B, pred.camera_poses.device, pred.camera_poses.dtype)
            if self.reuse_in_block:
                self._block = tf.clone()
        elif self.reuse_in_block and k % self.reset_every != 0 and self._block is not None:
            tf = self._block.clone()
        else:
            tf = self._estimate(pred)
            if self.reuse_in_block:
                self._block = tf.clone()
        aligned = self._apply(pred, tf)
        self.transforms.append(tf)
        keep = min(self.overlap, aligned.num_frames) if self.overlap > 0 else 0
        self._prev = aligned.frames(aligned.num_frames - keep) if keep else None
        self._prev_frames = aligned.num_frames
        self.window_index += 1
        return aligned

    def peek(self, pred: WindowPrediction) -> WindowPrediction:
        """Aligns `pred` as the next window would be, without changing this aligner (for
        provisional, uncommitted predictions)."""
        return self.snapshot().align(pred)

    def snapshot(self) -> "WindowAligner":
        """A copy that later `align` calls of this aligner do not change (they replace, never
        mutate, the previous window's tail and transforms)."""
        scratch = copy.copy(self)
        scratch.transforms = deque(self.transforms, maxlen=self.transforms.maxlen)
        return scratch

    def _apply(self, pred: WindowPrediction, tf: WindowTransform) -> WindowPrediction:
        B, N = pred.camera_poses.shape[:2]
        local = pred.local_points * tf.scale.view(B, 1, 1, 1, 1) if self.allow_scale else pred.local_points
        R = tf.R.unsqueeze(1).expand(-1, N, -1, -1)
        rot = torch.matmul(R, pred.camera_poses[..., :3, :3])
        trans = torch.matmul(R, pred.camera_poses[..., :3, 3].unsqueeze(-1)).squeeze(-1)
        if self.allow_scale:
            trans = trans * tf.scale.view(B, 1, 1)
        trans = trans + tf.t.unsqueeze(1)
        poses = pred.camera_poses.clone()
        poses[..., :3, :3] = rot
        poses[..., :3, 3] = trans
        return WindowPrediction(local, pred.conf, poses, transform_points(poses, local), pred.descriptors)

    def _estimate(self, curr: WindowPrediction) -> WindowTransform:
        B = curr.camera_poses.shape[0]
        dev, dtype = curr.camera_poses.device, curr.camera_poses.dtype
        prev = self._prev
        if self.overlap <= 0 or prev is None or curr.num_frames == 0:
            return WindowTransform.identity(B, dev, dtype)
        # `prev` holds the last min(overlap, frames) frames; the reference is the first shared frame.
        prev_pose = prev.camera_poses[:, 0]
        curr_pose = curr.camera_poses[:, 0]
        R = torch.matmul(prev_pose[:, :3, :3], curr_pose[:, :3, :3].transpose(-1, -2))
        scale = torch.ones(B, device=dev, dtype=dtype)
        if self.allow_scale:
            scale = self._scale(prev, curr, B, dtype)
        t = prev_pose[:, :3, 3] - scale.unsqueeze(-1) * torch.matmul(R, curr_pose[:, :3, 3].unsqueeze(-1)).squeeze(-1)
        return WindowTransform(R.to(dtype), t.to(dtype), scale)

    def _scale(self, prev: WindowPrediction, curr: WindowPrediction, B: int, dtype: torch.dtype) -> Tensor:
        if self.scale_mode.endswith("_all"):
            n = min(self.overlap, prev.num_frames, curr.num_frames)
            prev_d = prev.local_points[:, :n, ..., 2]
            curr_d = curr.local_points[:, :n, ..., 2]
        else:
            prev_d = prev.local_points[:, 0, ..., 2]
            curr_d = curr.local_points[:, 0, ..., 2]
        prev_d = prev_d.float().reshape(B, -1)
        curr_d = curr_d.float().reshape(B, -1)
        valid = torch.isfinite(prev_d) & torch.isfinite(curr_d) & (curr_d.abs() > torch.finfo(torch.float32).eps)
        scales = []
        for b in range(B):
            if not valid[b].any():
                scales.append(torch.tensor(1.0, device=prev_d.device))
                continue
            ratios = prev_d[b, valid[b]] / curr_d[b, valid[b]]
            if self.scale_mode.startswith("trimmed_mean"):
                scales.append(trimmed_mean(ratios, 0.25))
            else:
                s = ratios.median()
                scales.append((s + 1.0) / 2.0 if self.scale_mode == "sim3_avg1" else s)
        return torch.clamp(torch.stack(scales).to(dtype), 1e-3, 1e3)


class SequenceMerger:
    """Aligns windows in order and concatenates them, dropping each window's last `overlap` frames
    except for the final window's (they are re-predicted as the next window's first frames)."""

    def __init__(self, alignment: str = "none", overlap_size: int = 0, reset_every: int = 0, scale_mode: str = "median") -> None:
        self.aligner = WindowAligner(alignment, overlap_size, reset_every, scale_mode)
        self.overlap = overlap_size
        self._parts: list[WindowPrediction] = []
        self._last: WindowPrediction | None = None

    def add(self, pred: WindowPrediction) -> WindowPrediction:
        """Adds the next window; returns its aligned predictions."""
        aligned = self.aligner.align(pred)
        if self._last is not None:
            committed = self._committed_part(self._last)
            if committed is not None:
                self._parts.append(committed)
        self._last = aligned
        return aligned

    def _committed_part(self, pred: WindowPrediction) -> WindowPrediction | None:
        if self.overlap <= 0:
            return pred
        if pred.num_frames <= self.overlap:
            return None
        return pred.frames(0, pred.num_frames - self.overlap)

    def result(self) -> WindowPrediction:
        if self._last is None:
            raise ValueError("no windows were added")
        return WindowPrediction.cat([*self._parts, self._last])

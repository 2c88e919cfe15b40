"""Output assembly of the streaming reconstructor: a window's prediction -> per-frame
`FrameResult`s. Masks, confidence cuts, intrinsics fits, point selection and colours are made for
all frames at once on the model's device (`_device_outputs`), copied to the host in one transfer
(`_emit_start`), then scaled and built into results (`_emit_finish`, `_result`). Poses are
T_world_cam (4, 4) in the network world frame; points (M, 3) world, colours (M, 3) uint8.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from loger_core.model.prediction import WindowPrediction

from .confidence_cuts import percentile_cuts
from .frames import BufferedFrame
from .gpu_share import yield_point
from .intrinsics import estimate_intrinsics_batch, model_to_original
from .results import FrameResult
from .scale import ScaleEstimate, ScaleObservation

__all__ = ["OutputAssembly", "Outputs"]


@dataclass
@dataclass
class Outputs:
    """Per-frame outputs of `frames` whose device-to-host copies were queued; `event` (CUDA) fires
    when they are in host memory."""

    frames: list[BufferedFrame]
    host: dict
    event: Any
    window_index: int
    provisional: bool


class OutputAssembly:
    """Mixin of `StreamingReconstructor`: its output methods. Uses the reconstructor's `config`,
    `device`, `stats`, `_scale` / `_scale_lock` (the scale source) and `_last_K_model`."""

    def _emit(
        self, frames: list[BufferedFrame], pred: WindowPrediction, rgb: torch.Tensor, start: int, window_index: int,
        provisional: bool,
    ) -> list[FrameResult]:
        """Results for `frames`, which are the window frames start, start + 1, ... of `pred`;
        `rgb` holds the window's (n, h, w, 3) uint8 images on the model's device.

        Masks, confidence cuts, intrinsics fits, point selection and colours are computed for all
        frames at once on the model's device; the host gets them in one transfer per call."""
        return self._emit_finish(self._emit_start(frames, pred, rgb, start, window_index, provisional))

    def _emit_start(
        self, frames: list[BufferedFrame], pred: WindowPrediction, rgb: torch.Tensor, start: int, window_index: int,
        provisional: bool,
    ) -> Outputs:
        """Computes the outputs of `frames` on the device and queues their copies to the host."""
        end = start + len(frames)
        if provisional and self.config.provisional_outputs == "pose":
            out_t = {}
        else:
            out_t = self._device_outputs(pred, rgb, start, end)
        out_t["poses"] = pred.camera_poses[0, start:end].double()
        if pred.descriptors is not None and "depth" in out_t:
            out_t["descriptors"] = pred.descriptors[0, start:end].float()
        event = None
        if self.device.type == "cuda":
            # Asynchronous copies into pinned host memory; one event marks them all.
            host = {k: v.to("cpu", non_blocking=True) for k, v in out_t.items()}
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.device))
        else:
            host = {k: v.cpu() for k, v in out_t.items()}
        return Outputs(frames, host, event, window_index, provisional)

    def _emit_finish(self, outputs: Outputs) -> list[FrameResult]:
        """Waits for the copies of `_emit_start` and builds the frames' results."""
        frames, host, window_index, provisional = outputs.frames, outputs.host, outputs.window_index, outputs.provisional
        if outputs.event is not None:
            outputs.event.synchronize()
        if "depth" not in host:
            return self._pose_results(outputs)
        depth_all = host["depth"].numpy()
        conf_all = host["confidence"].numpy()
        valid_all = host["valid"].numpy()
        K_all = host["K_model"].numpy()
        poses = host["poses"].numpy()
        counts = host["counts"].numpy()
        offsets = np.concatenate([[0], np.cumsum(counts)])
        pts_all, col_all, pconf_all = host["points"].numpy(), host["colors"].numpy(), host["point_confidence"].numpy()
        weights_all = host["weights"].numpy() if "weights" in host else None
        desc_all = host["descriptors"].numpy() if "descriptors" in host else None
        out: list[FrameResult] = []
        for i, fr in enumerate(frames):
            depth, confidence, valid = depth_all[i], conf_all[i], valid_all[i]
            a, b = offsets[i], offsets[i + 1]
            with self._scale_lock:
                if not provisional:
                    self._scale.observe(ScaleObservation(depth, valid, poses[i, :3, 3], fr.depth, fr.odom))
                est = self._scale.estimate()
            s = est.scale
            out.append(self._result(
                fr, poses[i], est, K_all[i], window_index, provisional,
                depth=depth * np.float32(s) if s != 1.0 else depth,
                confidence=confidence,
                valid=valid,
                points=pts_all[a:b] * np.float32(s) if s != 1.0 else pts_all[a:b],
                colors=col_all[a:b],
                point_confidence=pconf_all[a:b],
                point_weights=None if weights_all is None else weights_all[a:b],
                descriptor=None if desc_all is None else desc_all[i].copy(),
            ))
        if not provisional:
            self.stats.frames_committed += len(out)
            if out:
                self._last_K_model = out[-1].K_model
        return out

    def _pose_results(self, outputs: Outputs) -> list[FrameResult]:
        """Pose-only provisional results (`StreamConfig.provisional_outputs` 'pose')."""
        poses = outputs.host["poses"].numpy()
        with self._scale_lock:
            est = self._scale.estimate()
        return [self._result(
            fr, poses[i], est, self._last_K_model.copy(), outputs.window_index, True,
            depth=np.zeros((0, 0), np.float32), confidence=np.zeros((0, 0), np.float32),
            valid=np.zeros((0, 0), bool), points=np.zeros((0, 3), np.float32),
            colors=np.zeros((0, 3), np.uint8), point_confidence=np.zeros((0,), np.float32), point_weights=None,
        ) for i, fr in enumerate(outputs.frames)]

    def _result(self, fr: BufferedFrame, pose: np.ndarray, est: ScaleEstimate, K_model: np.ndarray, window_index: int,
                provisional: bool, **geometry: Any) -> FrameResult:
        """The FrameResult of frame `fr`: `pose` (4, 4) in model scale, scaled by `est`; `geometry`
        the per-pixel / per-point fields, already scaled."""
        T = pose.copy()
        T[:3, 3] *= est.scale
        known = fr.K is not None and self.config.use_known_intrinsics
        return FrameResult(
            index=fr.index, stamp_ns=fr.stamp_ns, T_world_cam=T,
            K=fr.K.copy() if known else model_to_original(K_model, fr.geometry), K_model=K_model,
            image_size=fr.geometry.original_size, model_size=fr.geometry.model_size,
            scale=est.scale, scale_std=est.std, scale_valid=est.valid, window_index=window_index,
            provisional=provisional, intrinsics_known=known, **geometry,
        )

    def _device_outputs(self, pred: WindowPrediction, rgb: torch.Tensor, start: int, end: int) -> dict:
        """Per-frame outputs of window frames [start, end) as tensors on the model's device:
        depth / confidence / valid (n, h, w), K_model (n, 3, 3) float64, and the valid pixels'
        points (M, 3), colors (M, 3) uint8, point_confidence (M,) with per-frame `counts` (n,) —
        or, with `point_voxel_size`, their per-frame voxel merge plus `weights` (M,)."""
        cfg = self.config
        yield_point()  # the masks and the point selection are a window's worth of kernels too
        local = pred.local_points[0, start:end]
        world = pred.points[0, start:end]
        conf = torch.nan_to_num(torch.sigmoid(pred.conf[0, start:end, ..., 0]), nan=0.0)
        finite = torch.isfinite(world).all(dim=-1) & torch.isfinite(local).all(dim=-1) & (local[..., 2] > 0)
        valid = finite & (conf >= cfg.conf_threshold)
        if cfg.conf_percentile > 0:
            valid &= conf >= percentile_cuts(conf, finite, cfg.conf_percentile)[:, None, None]
        depth = local[..., 2]
        out = {
            "depth": torch.where(torch.isfinite(depth), depth, torch.full_like(depth, float("nan"))),
            "confidence": conf,
            "valid": valid,
            "K_model": estimate_intrinsics_batch(local, valid),
        }
        colors = rgb[start:end]
        if cfg.point_voxel_size > 0:
            from loger_core.mapping.voxel_downsample import downsample_frames

            vox = downsample_frames(world, colors, conf, valid, cfg.point_voxel_size)
            out.update(points=vox.points, colors=vox.colors, point_confidence=vox.confidence,
                       weights=vox.weights, counts=vox.frame_counts)
        else:
            out.update(points=world[valid], colors=colors[valid], point_confidence=conf[valid],
                       counts=valid.flatten(1).sum(1))
        return out


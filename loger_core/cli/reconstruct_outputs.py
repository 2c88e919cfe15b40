"""What ``loger-reconstruct`` maps into: the pipeline's one commit path (:class:`Mapper`) with an
automatic voxel size, the floor grid and the network's own poses beside the corrected ones, their
session components, and the back end built from the command line."""
from __future__ import annotations

import logging
from typing import Any, Optional

import numpy as np

from loger_core.backend import BackendConfig, BackendConfigError, BackendConsumer
from loger_core.cli.reconstruct_args import AUTO_VOXEL_FRACTION
from loger_core.io.session import (
    Session, SessionComponent, SessionConfigMismatchError, restore_voxel_map, trajectory_component,
    trajectory_from_component, voxel_map_component,
)
from loger_core.io.trajectory import Trajectory
from loger_core.mapping.grid import FloorGridBuilder
from loger_core.mapping.voxel_map import MapConfig, VoxelMap
from loger_core.pipeline.grid_mapping import FloorGridFeed
from loger_core.pipeline.map_fusion import MapFusion
from loger_core.pipeline.mapper import FrameConsumer, Mapper
from loger_core.stream import FrameResult, StreamConfig, StreamInputError

__all__ = ["ReconstructOutputs", "backend_config", "make_backend"]

log = logging.getLogger("loger-reconstruct")


class ReconstructOutputs:
    """What the run writes, through the pipeline's one commit path (:class:`Mapper`): the
    trajectory (grows with the frames, by nature), the bounded voxel map (its size automatic at
    the first committed frame unless given) and the floor grid."""

    def __init__(self, voxel: Optional[float], max_points: int, grid: Optional[FloorGridBuilder] = None,
                 consumer: Optional[FrameConsumer] = None) -> None:
        self.voxel = voxel
        self.max_points = max_points
        self.grid_feed = FloorGridFeed(grid) if grid is not None else None
        self.consumer = consumer
        self.mapper = Mapper(make_fusion=self._make_fusion, consumer=consumer)
        self.frontend_stamps: list[int] = []
        self.frontend_poses: list[np.ndarray] = []

    def _make_fusion(self, first: FrameResult, config: Optional[MapConfig] = None) -> MapFusion:
        if self.voxel is None:
            depth = first.depth[np.isfinite(first.depth) & (first.depth > 0)]
            median = float(np.median(depth)) if depth.size else 1.0
            self.voxel = max(median * AUTO_VOXEL_FRACTION, 1e-6)
        fusion = MapFusion(config or MapConfig(voxel_size=self.voxel, max_points=self.max_points), None, "world", 0, log,
                           strict=True, skip_empty=False)
        fusion.grid = self.grid_feed
        return fusion

    @property
    def grid(self) -> Optional[FloorGridBuilder]:
        return self.grid_feed.builder if self.grid_feed is not None else None

    @property
    def map(self) -> Optional[VoxelMap]:
        return self.mapper.fusion.map if self.mapper.fusion is not None else None

    @property
    def last_K(self) -> Optional[np.ndarray]:
        return self.mapper.last_K

    def remember(self, stamp_ns: int, rgb: np.ndarray) -> None:
        self.mapper.remember_image(stamp_ns, rgb)

    def add(self, results) -> None:
        """Commit the stream's results (provisional ones are skipped), fused inline."""
        for r in results:
            if not r.provisional:
                self.frontend_stamps.append(int(r.stamp_ns))
                self.frontend_poses.append(np.asarray(r.T_world_cam, np.float64))
        if self.mapper.commit(results) >= 0:
            self.mapper.fusion.run_pending()

    def finish_backend(self) -> None:
        """Wait for the back end, then apply its full correction (every pose, the map and grid
        fused again from its keyframes)."""
        if self.consumer is None or self.mapper.fusion is None:
            return
        self.mapper.apply_correction(self.consumer.final())
        self.mapper.fusion.run_pending()

    def frontend_trajectory(self) -> Trajectory:
        """The network's own committed poses (before the back end)."""
        return Trajectory(np.asarray(self.frontend_stamps, np.int64), np.asarray(self.frontend_poses).reshape(-1, 4, 4))

    def trajectory(self) -> Trajectory:
        return self.mapper.trajectory("camera")

    # Mapping sessions: the map, the trajectory and the automatic voxel size travel with the stream.
    def session_components(self) -> dict[str, SessionComponent]:
        m = self.mapper
        comps = {"trajectory": trajectory_component(m.stamps, {
                     "T_world_cam": np.asarray(m.poses_cam).reshape(-1, 4, 4),
                     "T_world_cam_frontend": np.asarray(self.frontend_poses).reshape(-1, 4, 4)}),
                 "reconstruct": SessionComponent({}, {"voxel_size": self.voxel, "last_K": None if m.last_K is None
                                                      else m.last_K.tolist()})}
        if self.map is not None:
            comps["map"] = voxel_map_component(self.map)
        if self.consumer is not None:
            tensors, meta = self.consumer.capture(m.correction)
            tensors.update(m.images_state())  # frames pushed but not committed: the back end needs their images
            comps["backend"] = SessionComponent(tensors, meta)
        return comps

    def restore(self, session: Session, path: str) -> None:
        meta = session.component("reconstruct", path).meta
        saved_voxel = meta["voxel_size"]
        if self.voxel is not None and saved_voxel is not None and self.voxel != saved_voxel:
            raise SessionConfigMismatchError(path, f"its map has voxel size {saved_voxel}, --voxel-size is {self.voxel}")
        self.voxel = saved_voxel if saved_voxel is not None else self.voxel
        stamps, poses = trajectory_from_component(session.component("trajectory", path), path)
        m = self.mapper
        m.stamps[:] = [int(v) for v in stamps]
        m.poses_cam[:] = list(poses["T_world_cam"])
        m.poses_base[:] = list(poses["T_world_cam"])
        self.frontend_stamps = [int(v) for v in stamps]
        self.frontend_poses = list(poses.get("T_world_cam_frontend", poses["T_world_cam"]))
        if self.consumer is not None:
            if "backend" not in session.components:
                raise SessionConfigMismatchError(path, "it was written without the back end: resume it with --backend off")
            comp = session.components["backend"]
            try:
                m.correction = self.consumer.restore(comp.tensors, comp.meta, path)
                m.restore_images(comp.tensors)
            except (ValueError, KeyError) as err:
                raise SessionConfigMismatchError(path, f"its back-end state cannot be used ({err})") from None
        m.last_K = None if meta["last_K"] is None else np.asarray(meta["last_K"], dtype=np.float64)
        if "map" in session.components:
            m.fusion = self._make_fusion(None, MapConfig(voxel_size=self.voxel, max_points=self.max_points))
            restore_voxel_map(m.fusion.map, session.components["map"], path)


def make_backend(args, cfg: StreamConfig) -> Optional[BackendConsumer]:
    """The back end of the run, or None with ``--backend off``."""
    if getattr(args, "backend", "on") == "off":
        return None
    bcfg = backend_config(args)
    # Metric scale (depth images, a fixed factor): SE(3) graph; the network's own scale: Sim(3).
    metric = cfg.scale.source in ("depth", "fixed")
    crop = None
    if cfg.resize_mode == "crop":
        from loger_core.stream.preprocess import center_crop_box

        def crop(result):  # noqa: F811
            W, H = result.image_size
            w, h = result.model_size
            return center_crop_box(W, H, w / h)
    return BackendConsumer(bcfg, metric=metric, crop_of=crop)


def backend_config(args) -> BackendConfig:
    """The back end's settings from ``--loop-closure`` and ``--backend-param`` (StreamInputError when bad).
    Offline: every frame is tracked (max_queue 0), whatever the back end's pace."""
    values: dict[str, Any] = {"loop_closure": getattr(args, "loop_closure", "on") == "on", "max_queue": 0}
    for item in getattr(args, "backend_param", []) or []:
        name, sep, text = item.partition("=")
        if not sep:
            raise StreamInputError(f"--backend-param must be NAME=VALUE, got {item!r}")
        values[name.strip()] = _parse_value(text.strip())
    try:
        return BackendConfig.from_mapping(values)
    except (BackendConfigError, TypeError) as err:
        raise StreamInputError(f"--backend-param: {err}") from None


def _parse_value(text: str) -> Any:
    """A YAML scalar (numbers, booleans, strings) for --backend-param."""
    import yaml

    return yaml.safe_load(text)

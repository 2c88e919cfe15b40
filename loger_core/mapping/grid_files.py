"""Occupancy-grid files: ``nav2_map_server`` maps (``<name>.pgm`` binary P5 + ``<name>.yaml``,
trinary mode, written atomically) and a PNG picture of a :class:`GridSnapshot` with a trajectory
(x, y in the map frame, metres).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import numpy as np

from .occupancy_grid import FREE, OCCUPIED, UNKNOWN, GridError, GridSnapshot

__all__ = [
    "MAP_SERVER_FREE_THRESH",
    "MAP_SERVER_OCCUPIED_THRESH",
    "PGM_FREE",
    "PGM_OCCUPIED",
    "PGM_UNKNOWN",
    "load_map_server",
    "pgm_image",
    "render_grid_png",
    "write_map_server",
]

PathLike = Union[str, "os.PathLike[str]"]

# map_server image values (map_saver's trinary output): white-ish free, black occupied, grey unknown.
PGM_FREE, PGM_OCCUPIED, PGM_UNKNOWN = 254, 0, 205
# map_server reads occ = (255 - pixel) / 255 and calls a cell occupied when occ > occupied_thresh,
# free when occ < free_thresh. Grey 205 gives occ = 50/255 = 0.19608: with Nav2's default
# free_thresh 0.25 unknown space would load as FREE, so we write ROS 1's 0.196 (just below it).
MAP_SERVER_OCCUPIED_THRESH = 0.65
MAP_SERVER_FREE_THRESH = 0.196


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def pgm_image(snapshot: GridSnapshot) -> np.ndarray:
    """The map_server image ``(H, W) uint8``: row 0 = HIGHEST y (image top), 254/0/205."""
    img = np.full(snapshot.data.shape, PGM_UNKNOWN, dtype=np.uint8)
    img[snapshot.data == FREE] = PGM_FREE
    img[snapshot.data == OCCUPIED] = PGM_OCCUPIED
    return img[::-1]


def write_map_server(directory: PathLike, snapshot: GridSnapshot, name: str = "map") -> tuple[Path, Path]:
    """Write ``<name>.pgm`` (binary P5) and ``<name>.yaml`` for ``nav2_map_server`` (trinary mode).

    The yaml's ``origin`` is ``[x, y, yaw]`` of the lower-left pixel's corner in the map frame
    (yaw 0: the grid is axis-aligned with the map frame). Both files are written then renamed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if snapshot.width == 0 or snapshot.height == 0:
        raise GridError("the occupancy grid is empty (no frame observed): nothing to save as a map_server map")
    img = pgm_image(snapshot)
    header = f"P5\n# loger_ros occupancy grid, {snapshot.resolution:g} m/cell\n{snapshot.width} {snapshot.height}\n255\n"
    pgm = directory / f"{name}.pgm"
    _atomic_write(pgm, header.encode("ascii") + img.tobytes())
    yaml_text = (
        f"image: {name}.pgm\n"
        "mode: trinary\n"
        f"resolution: {snapshot.resolution!r}\n"
        f"origin: [{round(float(snapshot.origin[0]), 9)!r}, {round(float(snapshot.origin[1]), 9)!r}, 0.0]\n"
        "negate: 0\n"
        f"occupied_thresh: {MAP_SERVER_OCCUPIED_THRESH}\n"
        f"free_thresh: {MAP_SERVER_FREE_THRESH}\n"
    )
    yml = directory / f"{name}.yaml"
    _atomic_write(yml, yaml_text.encode("ascii"))
    return pgm, yml


def render_grid_png(path: PathLike, snapshot: GridSnapshot, trajectory_xy: Optional[np.ndarray] = None,
                    title: str = "occupancy grid", max_pixels: int = 900) -> Path:
    """A picture of the grid (free white, occupied black, unknown grey; +y up) with the trajectory."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(6, 6), dpi=max(60, min(150, max_pixels // 6)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    if snapshot.width and snapshot.height:
        shade = np.full(snapshot.data.shape, 0.75)
        shade[snapshot.data == FREE] = 1.0
        shade[snapshot.data == OCCUPIED] = 0.0
        x0, y0 = snapshot.origin
        extent = (x0, x0 + snapshot.width * snapshot.resolution, y0, y0 + snapshot.height * snapshot.resolution)
        ax.imshow(shade, cmap="gray", vmin=0.0, vmax=1.0, origin="lower", extent=extent, interpolation="nearest")
    if trajectory_xy is not None and len(trajectory_xy):
        t = np.asarray(trajectory_xy, dtype=np.float64)
        ax.plot(t[:, 0], t[:, 1], color="tab:red", linewidth=1.2, label="trajectory")
        ax.plot(t[:1, 0], t[:1, 1], "o", color="tab:red", markersize=4)
        ax.legend(loc="upper right", fontsize=8)
    counts = snapshot.counts()
    ax.set_title(f"{title}\n{snapshot.width}x{snapshot.height} cells @ {snapshot.resolution:g} m: "
                 f"{counts['occupied']} occupied, {counts['free']} free", fontsize=9)
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path)
    return path


def load_map_server(yaml_path: PathLike) -> GridSnapshot:
    """A ``map.yaml`` + image read back as ``nav2_map_server`` reads them (trinary mode): the grid
    the robot's costmap will see (row 0 = lowest y)."""
    import yaml
    from PIL import Image

    yaml_path = Path(yaml_path)
    meta = yaml.safe_load(yaml_path.read_text())
    img = np.asarray(Image.open(yaml_path.parent / meta["image"])).astype(np.float64)
    occ = 1.0 - img / 255.0
    data = np.full(img.shape, UNKNOWN, np.int8)
    data[occ < meta["free_thresh"]] = FREE
    data[occ > meta["occupied_thresh"]] = OCCUPIED
    return GridSnapshot(data[::-1], float(meta["resolution"]), (meta["origin"][0], meta["origin"][1]))

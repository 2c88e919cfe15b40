"""EuRoC MAV sequences (the ASL dataset format).

Layout::

    SEQ/mav0/cam0/data.csv                      "#timestamp [ns],filename" per image
    SEQ/mav0/cam0/data/1403636579763555584.png  mono8 images
    SEQ/mav0/cam0/sensor.yaml                   intrinsics [fu, fv, cu, cv], distortion_model,
                                                distortion_coefficients, T_BS (body <- sensor, 4x4)
    SEQ/mav0/state_groundtruth_estimate0/data.csv
        "#timestamp, p_RS_R_x [m], p_RS_R_y, p_RS_R_z, q_RS_w, q_RS_x, q_RS_y, q_RS_z, v..., b..."

Images are undistorted (``radial-tangential``: OpenCV's plumb-bob model; ``equidistant``: OpenCV's
fisheye model) with one remap table built at start; the yielded K is the undistorted camera's,
chosen by OpenCV so that every output pixel sees the scene (no black border: a border would look
like structure to the network). ``undistort=False`` yields the raw images with the raw K.

Ground truth is the pose of the BODY (IMU) frame ``T_world_body`` at 200 Hz; the camera's is
``T_world_cam = T_world_body @ T_BS`` (EuRoC's ``T_BS`` maps camera coordinates into the body
frame). It is sampled at the image stamps by linear interpolation of the position and slerp of the
rotation (see :func:`loger_core.io.groundtruth.poses_at_stamps`); images outside the ground-truth
time span (EuRoC's often starts a little after the images) have none. The world frame is the
motion-capture frame (z up), not the camera frame of the first image. Undistortion keeps the
camera's orientation, so the poses hold for the undistorted images.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
import yaml
from scipy.spatial.transform import Rotation

from .groundtruth import SequenceFormatError, poses_at_stamps
from .indexed import IndexedImageSequence
from .trajectory import Trajectory

__all__ = ["EurocSequence", "read_euroc_sensor_yaml", "read_euroc_groundtruth", "is_euroc_sequence", "EurocCamera"]

PathLike = Union[str, "os.PathLike[str]"]
_RADTAN = ("radial-tangential", "radtan", "plumb_bob", "pinhole-radtan")
_EQUIDISTANT = ("equidistant", "equi", "fisheye")
# T_BS must be a rigid transform; a larger deviation means a mistyped matrix, not rounding.
_RIGID_TOL = 1e-3


def _mav_dir(path: Path) -> Optional[Path]:
    if (path / "mav0").is_dir():
        return path / "mav0"
    if (path / "cam0").is_dir() and (path / "cam0" / "data.csv").is_file():
        return path
    return None


def is_euroc_sequence(path: PathLike) -> bool:
    """True for a EuRoC sequence folder (holding ``mav0/``) or its ``mav0`` folder."""
    p = Path(path)
    return p.is_dir() and _mav_dir(p) is not None


class EurocCamera:
    """Calibration of one EuRoC camera (``sensor.yaml``).

    Attributes:
        K: ``(3, 3) float64`` raw pinhole intrinsics.
        dist: ``(4,) float64`` distortion coefficients (radtan: k1 k2 p1 p2; equidistant: k1..k4).
        model: ``'radial-tangential'``, ``'equidistant'`` or ``'none'``.
        T_BS: ``(4, 4) float64`` camera (sensor) to body transform.
        resolution: ``(width, height)`` or ``None``.
    """

    def __init__(self, K: np.ndarray, dist: np.ndarray, model: str, T_BS: np.ndarray,
                 resolution: Optional[tuple[int, int]]) -> None:
        self.K, self.dist, self.model, self.T_BS, self.resolution = K, dist, model, T_BS, resolution


def _numbers(data, key: str, n: Optional[int], path: Path) -> np.ndarray:
    value = data.get(key)
    if isinstance(value, dict):  # OpenCV-style matrix: {rows, cols, data: [...]}
        value = value.get("data")
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise SequenceFormatError(f"{path}: {key} must be a list of numbers, got {value!r}") from None
    if (n is not None and arr.size != n) or not np.all(np.isfinite(arr)):
        raise SequenceFormatError(f"{path}: {key} must hold {n} finite numbers, got {value!r}")
    return arr


def read_euroc_sensor_yaml(path: PathLike) -> EurocCamera:
    """Read a EuRoC camera ``sensor.yaml`` (intrinsics, distortion, ``T_BS``).

    Raises:
        SequenceFormatError: missing file, invalid YAML, missing/malformed key, unknown distortion
            model, or a ``T_BS`` that is not rigid.
    """
    path = Path(path)
    if not path.is_file():
        raise SequenceFormatError(f"{path}: missing (EuRoC cameras need sensor.yaml with intrinsics and T_BS)")
    text = path.read_text(encoding="utf-8")
    # OpenCV FileStorage writes a "%YAML:1.0" directive that PyYAML rejects.
    text = "\n".join(line for line in text.splitlines() if not line.startswith("%YAML"))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SequenceFormatError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise SequenceFormatError(f"{path}: expected a mapping with intrinsics, T_BS, ...")
    for key in ("intrinsics", "T_BS"):
        if key not in data:
            raise SequenceFormatError(f"{path}: missing key {key!r}")
    fu, fv, cu, cv = _numbers(data, "intrinsics", 4, path)
    if not (fu > 0 and fv > 0):
        raise SequenceFormatError(f"{path}: focal lengths must be positive, got fu={fu} fv={fv}")
    K = np.array([[fu, 0.0, cu], [0.0, fv, cv], [0.0, 0.0, 1.0]])
    model = str(data.get("distortion_model", "none")).strip().lower()
    if "distortion_coefficients" in data and model not in ("none", ""):
        dist = _numbers(data, "distortion_coefficients", None, path)
    else:
        dist, model = np.zeros(4), "none"
    if model in _RADTAN:
        model = "radial-tangential"
        if dist.size not in (4, 5):
            raise SequenceFormatError(f"{path}: radial-tangential needs 4 coefficients (k1 k2 p1 p2), got {dist.size}")
    elif model in _EQUIDISTANT:
        model = "equidistant"
        if dist.size != 4:
            raise SequenceFormatError(f"{path}: equidistant needs 4 coefficients (k1..k4), got {dist.size}")
    elif model not in ("none", ""):
        raise SequenceFormatError(
            f"{path}: distortion_model {model!r} is not supported (radial-tangential, equidistant or none)"
        )
    T_BS = _numbers(data, "T_BS", 16, path).reshape(4, 4)
    R = T_BS[:3, :3]
    if np.abs(R @ R.T - np.eye(3)).max() > _RIGID_TOL or np.abs(T_BS[3] - [0, 0, 0, 1]).max() > _RIGID_TOL \
            or np.linalg.det(R) < 0:
        raise SequenceFormatError(f"{path}: T_BS is not a rigid transform (rotation + translation): {T_BS.tolist()}")
    res = data.get("resolution")
    resolution = (int(res[0]), int(res[1])) if isinstance(res, (list, tuple)) and len(res) == 2 else None
    return EurocCamera(K, dist, model, T_BS, resolution)


def read_euroc_groundtruth(path: PathLike) -> Trajectory:
    """Read ``state_groundtruth_estimate0/data.csv`` (or any EuRoC pose CSV whose first 8 columns are
    ``timestamp [ns], p_x, p_y, p_z, q_w, q_x, q_y, q_z``) as the BODY trajectory ``T_world_body``.

    Raises:
        SequenceFormatError: malformed line (file and line named) or no pose.
    """
    path = Path(path)
    stamps, rows = [], []
    with open(path, "r", encoding="utf-8") as fh:
        for line_no, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = [t.strip() for t in line.split(",")]
            try:
                if len(parts) < 8:
                    raise ValueError
                stamp = int(parts[0])
                vals = [float(t) for t in parts[1:8]]
            except ValueError:
                raise SequenceFormatError(
                    f"{path}:{line_no}: expected 'timestamp_ns, px, py, pz, qw, qx, qy, qz, ...', got {line!r}"
                ) from None
            q = np.asarray(vals[3:])
            norm = float(np.linalg.norm(q))
            if not (np.all(np.isfinite(vals)) and abs(norm - 1.0) < 1e-2):
                raise SequenceFormatError(f"{path}:{line_no}: non-finite value or non-unit quaternion in {line!r}")
            stamps.append(stamp)
            rows.append(vals)
    if not rows:
        raise SequenceFormatError(f"{path}: no pose lines found")
    arr = np.asarray(rows)
    poses = np.tile(np.eye(4), (len(arr), 1, 1))
    # EuRoC quaternions are scalar-first (w, x, y, z); scipy wants scalar-last.
    poses[:, :3, :3] = Rotation.from_quat(arr[:, [4, 5, 6, 3]]).as_matrix()
    poses[:, :3, 3] = arr[:, :3]
    return Trajectory(np.asarray(stamps, dtype=np.int64), poses)


def _read_image_list(path: Path) -> tuple[np.ndarray, list[str]]:
    stamps, names = [], []
    with open(path, "r", encoding="utf-8") as fh:
        for line_no, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = [t.strip() for t in line.split(",")]
            try:
                if len(parts) != 2 or not parts[1]:
                    raise ValueError
                stamps.append(int(parts[0]))
            except ValueError:
                raise SequenceFormatError(f"{path}:{line_no}: expected 'timestamp_ns,filename', got {line!r}") from None
            names.append(parts[1])
    return np.asarray(stamps, dtype=np.int64), names


class EurocSequence(IndexedImageSequence):
    """A EuRoC MAV sequence (see the module docstring for the layout, undistortion and ground truth).

    Args:
        path: the sequence folder (holding ``mav0/``) or its ``mav0`` folder.
        fps: unused (``data.csv`` has the stamps); accepted for :func:`open_sequence`'s uniform call.
        groundtruth: a TUM or KITTI pose file of the CAMERA (``T_world_cam``) replacing the
            sequence's ground truth (no body-to-camera conversion is applied to it).
        camera: ``'cam0'`` (default) or ``'cam1'``.
        undistort: remap to an undistorted pinhole image (default); ``False``: raw images, raw K.

    Frames: ``rgb (H, W, 3) uint8`` (grey repeated; :meth:`gray` gives the undistorted mono8 image).
    """

    layout = "euroc"

    def __init__(
        self,
        path: PathLike,
        fps: Optional[float] = None,
        groundtruth: Optional[PathLike] = None,
        camera: str = "cam0",
        undistort: bool = True,
    ) -> None:
        given = Path(path)
        if not given.is_dir():
            raise SequenceFormatError(f"EuRoC sequence {str(given)!r} is not a directory")
        mav = _mav_dir(given)
        if mav is None:
            raise SequenceFormatError(f"{given}: not a EuRoC sequence (no mav0/ folder, no cam0/data.csv)")
        self.root = given
        self.mav = mav
        cam_dir = mav / camera
        csv = cam_dir / "data.csv"
        if not csv.is_file():
            raise SequenceFormatError(f"{csv}: missing (EuRoC image list '#timestamp [ns],filename')")
        self._stamps, names = _read_image_list(csv)
        self._stamps_source = str(csv)
        self._paths = [cam_dir / "data" / name for name in names]
        missing = [p for p in self._paths if not p.is_file()]
        if missing:
            raise SequenceFormatError(f"{csv}: {len(missing)} listed image(s) missing, e.g. {missing[0]}")
        self.calibration = read_euroc_sensor_yaml(cam_dir / "sensor.yaml")
        self._maps: Optional[tuple[np.ndarray, np.ndarray]] = None
        self._frame_poses = None
        self._check_frames()
        self._K = self._setup_undistortion(undistort)
        self._meta = {"camera": camera, "sensor_yaml": str(cam_dir / "sensor.yaml"),
                      "distortion_model": self.calibration.model,
                      "distortion_coefficients": self.calibration.dist.tolist(),
                      "K_raw": self.calibration.K.tolist(), "undistorted": self._maps is not None,
                      "T_BS": self.calibration.T_BS.tolist()}
        if groundtruth is not None:
            self._use_groundtruth_file(groundtruth)
        else:
            gt_csv = mav / "state_groundtruth_estimate0" / "data.csv"
            if gt_csv.is_file():
                body = read_euroc_groundtruth(gt_csv)
                cam = Trajectory(body.stamps_ns, body.poses @ self.calibration.T_BS)
                self._frame_poses = poses_at_stamps(self._stamps, cam)
                self.groundtruth_source = str(gt_csv)

    def _setup_undistortion(self, undistort: bool) -> np.ndarray:
        cal = self.calibration
        size = self.image_size
        if cal.resolution is not None and cal.resolution != size:
            raise SequenceFormatError(
                f"{self.mav}: sensor.yaml resolution {list(cal.resolution)} != image size {list(size)} "
                f"of {self._paths[0]}"
            )
        if not undistort or cal.model == "none" or not np.any(cal.dist):
            return cal.K.copy()
        if cal.model == "equidistant":
            new_K = cv2.fisheye.estimateNewCameraMatrixForUndistortRectify(
                cal.K, cal.dist, size, np.eye(3), balance=0.0)
            m1, m2 = cv2.fisheye.initUndistortRectifyMap(cal.K, cal.dist, np.eye(3), new_K, size, cv2.CV_16SC2)
        else:
            # alpha=0: the largest undistorted view with no invalid (black) pixel.
            new_K, _ = cv2.getOptimalNewCameraMatrix(cal.K, cal.dist, size, 0.0, size, centerPrincipalPoint=False)
            m1, m2 = cv2.initUndistortRectifyMap(cal.K, cal.dist, None, new_K, size, cv2.CV_16SC2)
        self._maps = (m1, m2)
        return np.asarray(new_K, dtype=np.float64)

    def _load(self, i: int) -> np.ndarray:
        img = self._decode(self._paths[i])
        if self._maps is None:
            return img
        return cv2.remap(img, self._maps[0], self._maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

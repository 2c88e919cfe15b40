"""EuRoC MAV layout: image list, undistortion, body->camera ground truth with interpolation, errors."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from loger_core.cli.reconstruct import main
from loger_core.io.euroc import EurocSequence, read_euroc_groundtruth, read_euroc_sensor_yaml
from loger_core.io.groundtruth import SequenceFormatError, poses_at_stamps
from loger_core.io.sequences import detect_layout, open_sequence
from loger_core.io.trajectory import Trajectory, write_tum

W, H = 96, 72
FU, FV, CU, CV = 80.0, 79.0, 47.5, 36.2
DIST = [-0.28, 0.07, 0.0002, 0.00002]
T0 = 1_403_636_579_763_555_584  # a real EuRoC stamp: beyond float64's exact integers
IMG_DT = 50_000_000  # 20 Hz
GT_DT = 5_000_000  # 200 Hz
N = 8

# Camera -> body, as EuRoC's cam0 (axes permuted + an offset): not the identity.
T_BS = np.array([
    [0.0148655429818, -0.999880929698, 0.00414029679422, -0.0216401454975],
    [0.999557249008, 0.0149672133247, 0.025715529948, -0.064676986768],
    [-0.0257744366974, 0.00375618835797, 0.999660727178, 0.00981073058949],
    [0.0, 0.0, 0.0, 1.0],
])


def body_pose(t_ns: int) -> np.ndarray:
    """T_world_body at ``t_ns``: constant velocity and constant yaw rate (so linear + slerp is exact)."""
    s = (t_ns - T0) / 1e9
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0.0, 0.0, 0.8 * s]).as_matrix() @ Rotation.from_rotvec([0.1, 0.2, 0.0]).as_matrix()
    T[:3, 3] = [1.0 + 0.5 * s, -2.0 + 0.25 * s, 1.2 + 0.1 * s]
    return T


def sensor_yaml(dist=DIST, model="radial-tangential", tbs=T_BS) -> str:
    flat = ", ".join(repr(float(v)) for v in np.asarray(tbs).reshape(-1))
    return f"""# General sensor definitions.
sensor_type: camera
comment: VI-Sensor cam0 (MT9M034)

# Sensor extrinsics wrt. the body-frame.
T_BS:
  cols: 4
  rows: 4
  data: [{flat}]

# Camera specific definitions.
rate_hz: 20
resolution: [{W}, {H}]
camera_model: pinhole
intrinsics: [{FU}, {FV}, {CU}, {CV}] #fu, fv, cu, cv
distortion_model: {model}
distortion_coefficients: {list(dist)}
"""


def image_stamps() -> list[int]:
    # 1.7 ms off the 200 Hz ground-truth grid: every frame needs interpolation.
    return [T0 + 1_700_000 + k * IMG_DT for k in range(N)]


def make_euroc(root: Path, gt: bool = True, gt_start_ns: int = T0 + IMG_DT) -> Path:
    cam = root / "mav0" / "cam0"
    (cam / "data").mkdir(parents=True)
    lines = ["#timestamp [ns],filename"]
    rng = np.random.default_rng(0)
    for k, t in enumerate(image_stamps()):
        img = cv2.resize(rng.integers(0, 255, (9, 12), dtype=np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(cam / "data" / f"{t}.png"), img)
        lines.append(f"{t},{t}.png")
    (cam / "data.csv").write_text("\r\n".join(lines) + "\r\n")  # EuRoC files have CRLF endings
    (cam / "sensor.yaml").write_text(sensor_yaml())
    if gt:
        d = root / "mav0" / "state_groundtruth_estimate0"
        d.mkdir()
        rows = ["#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], q_RS_y [], q_RS_z [], "
                "v_RS_R_x [m s^-1], v_RS_R_y [m s^-1], v_RS_R_z [m s^-1], b_w_RS_S_x [rad s^-1], b_w_RS_S_y [rad s^-1], "
                "b_w_RS_S_z [rad s^-1], b_a_RS_S_x [m s^-2], b_a_RS_S_y [m s^-2], b_a_RS_S_z [m s^-2]"]
        t = gt_start_ns
        while t <= image_stamps()[-1] + 20_000_000:
            T = body_pose(t)
            qx, qy, qz, qw = Rotation.from_matrix(T[:3, :3]).as_quat()
            vals = [*T[:3, 3], qw, qx, qy, qz, 0.5, 0.25, 0.1, 0, 0, 0, 0, 0, 0]
            rows.append(f"{t}," + ",".join(f"{v:.12f}" for v in vals))
            t += GT_DT
        (d / "data.csv").write_text("\n".join(rows) + "\n")
    return root


def test_frames_stamps_undistorted_K_and_gray(tmp_path):
    root = make_euroc(tmp_path / "MH_01_easy")
    seq = open_sequence(root)
    assert isinstance(seq, EurocSequence) and len(seq) == N and seq.grayscale
    np.testing.assert_array_equal(seq.stamps_ns, image_stamps())  # exact int64 ns
    K_raw = np.array([[FU, 0, CU], [0, FV, CV], [0, 0, 1]])
    expected_K, _ = cv2.getOptimalNewCameraMatrix(K_raw, np.array(DIST), (W, H), 0.0, (W, H))
    np.testing.assert_allclose(seq.K, expected_K)
    # alpha=0: every undistorted pixel sees the scene, no black border (a white image stays white).
    cv2.imwrite(str(seq.paths[5]), np.full((H, W), 255, np.uint8))
    assert seq.gray(5).min() == 255
    f = seq[2]
    assert f.rgb.shape == (H, W, 3) and f.rgb.dtype == np.uint8 and f.stamp_ns == image_stamps()[2]
    np.testing.assert_array_equal(f.rgb[..., 0], seq.gray(2))
    np.testing.assert_array_equal(f.rgb[..., 1], f.rgb[..., 2])
    np.testing.assert_allclose(f.K, seq.K)
    # Same folder given as mav0, and undistortion can be turned off.
    assert len(open_sequence(root / "mav0")) == N and detect_layout(root / "mav0") == "euroc"
    raw = EurocSequence(root, undistort=False)
    np.testing.assert_allclose(raw.K, K_raw)
    np.testing.assert_array_equal(raw.gray(1), cv2.imread(str(raw.paths[1]), cv2.IMREAD_GRAYSCALE))


def test_undistortion_moves_a_point_to_its_pinhole_projection(tmp_path):
    root = make_euroc(tmp_path / "V1", gt=False)
    K_raw = np.array([[FU, 0, CU], [0, FV, CV], [0, 0, 1]])
    seq = EurocSequence(root)
    X = np.array([[0.35, -0.25, 1.0]])  # a ray towards a corner, where the distortion is strong
    distorted, _ = cv2.projectPoints(X, np.zeros(3), np.zeros(3), K_raw, np.array(DIST))
    u, v = distorted.reshape(2)
    img = np.zeros((H, W), np.uint8)
    cv2.circle(img, (int(round(u * 16)), int(round(v * 16))), 2 * 16, 255, -1, lineType=cv2.LINE_AA, shift=4)
    path = seq.paths[0]
    cv2.imwrite(str(path), img)
    out = seq.gray(0).astype(np.float64)
    ys, xs = np.mgrid[:H, :W]
    centre = np.array([(out * xs).sum(), (out * ys).sum()]) / out.sum()
    pinhole = (seq.K @ X[0])[:2] / X[0, 2]
    assert np.linalg.norm(pinhole - [u, v]) > 1.5  # without the remap the point would be elsewhere
    assert np.linalg.norm(centre - pinhole) < 0.25


def test_groundtruth_is_camera_pose_interpolated_at_image_stamps(tmp_path):
    root = make_euroc(tmp_path / "MH_02", gt_start_ns=T0 + IMG_DT)  # starts after the first image
    seq = open_sequence(root)
    assert seq.has_groundtruth
    gt = seq.groundtruth()
    # Frame 0 is before the first ground-truth pose: no pose; the rest are interpolated.
    np.testing.assert_array_equal(gt.stamps_ns, image_stamps()[1:])
    for t, T in zip(gt.stamps_ns, gt.poses):
        np.testing.assert_allclose(T, body_pose(int(t)) @ T_BS, atol=1e-7)
    assert seq[0].T_world_cam is None
    np.testing.assert_allclose(seq[3].T_world_cam, body_pose(image_stamps()[3]) @ T_BS, atol=1e-7)
    # Not the body pose: T_BS was applied.
    assert np.abs(gt.poses[0] - body_pose(int(gt.stamps_ns[0]))).max() > 0.5

    body = read_euroc_groundtruth(root / "mav0/state_groundtruth_estimate0/data.csv")
    assert body.stamps_ns[0] == T0 + IMG_DT
    np.testing.assert_allclose(body.poses[0], body_pose(T0 + IMG_DT), atol=1e-9)


def test_poses_at_stamps_gap_and_tolerance():
    stamps = np.array([0, 10_000_000, 500_000_000], dtype=np.int64)
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, 0, 3] = [0.0, 1.0, 2.0]
    traj = Trajectory(stamps, poses)
    out = poses_at_stamps(np.array([5_000_000, 25_000_000, 200_000_000, 510_000_000, 600_000_000]), traj)
    assert out[0][0, 3] == pytest.approx(0.5)  # interpolated
    assert out[1][0, 3] == 1.0  # 15 ms past the last pose before a 490 ms gap: nearest
    assert out[2] is None  # inside the gap, far from both: none invented
    assert out[3][0, 3] == 2.0 and out[4] is None  # after the end: nearest within 20 ms only


def test_groundtruth_override_and_cli_metrics(tmp_path):
    root = make_euroc(tmp_path / "V2")
    cam = Trajectory(np.array(image_stamps(), dtype=np.int64), np.stack([np.eye(4)] * N))
    cam.poses[:, 2, 3] = np.arange(N) * 0.3
    write_tum(tmp_path / "cam.tum", cam)
    seq = open_sequence(root, groundtruth=tmp_path / "cam.tum")
    np.testing.assert_allclose(seq.groundtruth().poses, cam.poses)  # taken as camera poses, as is

    out = tmp_path / "out"
    assert main([str(root), "--out", str(out), "--synthetic-weights", "--model", "tiny", "--resolution", "84x56",
                 "--window", "4", "--overlap", "1", "--device", "cpu", "--quiet", "--no-grid"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_matched"] == N - 1 and "ate" in metrics


@pytest.mark.parametrize("breakage, message", [
    (lambda r: (r / "mav0/cam0/sensor.yaml").unlink(), r"sensor\.yaml: missing"),
    (lambda r: (r / "mav0/cam0/sensor.yaml").write_text(sensor_yaml(tbs=np.eye(4)[:3])), r"T_BS must hold 16"),
    (lambda r: (r / "mav0/cam0/sensor.yaml").write_text(sensor_yaml(tbs=2 * np.eye(4))), r"T_BS is not a rigid"),
    (lambda r: (r / "mav0/cam0/sensor.yaml").write_text(sensor_yaml(model="kannala")), r"'kannala' is not supported"),
    (lambda r: (r / "mav0/cam0/sensor.yaml").write_text(sensor_yaml(dist=[0.1, 0.2])), r"needs 4 coefficients"),
    (lambda r: next((r / "mav0/cam0/data").iterdir()).unlink(), r"data\.csv: 1 listed image\(s\) missing"),
    (lambda r: (r / "mav0/cam0/data.csv").write_text("#timestamp [ns],filename\nabc,x.png\n"), r"data\.csv:2: expected"),
    (lambda r: (r / "mav0/cam0/data.csv").unlink(), r"data\.csv: missing"),
    (lambda r: open(r / "mav0/state_groundtruth_estimate0/data.csv", "a").write("1,2,3\n"),
     r"state_groundtruth_estimate0/data\.csv:\d+: expected"),
])
def test_broken_layouts_name_the_file(tmp_path, breakage, message):
    root = make_euroc(tmp_path / "seq")
    breakage(root)
    with pytest.raises(SequenceFormatError, match=message):
        open_sequence(root)


def test_equidistant_and_no_distortion(tmp_path):
    root = make_euroc(tmp_path / "tumvi", gt=False)
    (root / "mav0/cam0/sensor.yaml").write_text(sensor_yaml(dist=[0.01, -0.005, 0.001, 0.0], model="equidistant"))
    seq = open_sequence(root)
    assert seq.metadata["distortion_model"] == "equidistant" and seq.metadata["undistorted"]
    assert seq[0].rgb.shape == (H, W, 3)
    (root / "mav0/cam0/sensor.yaml").write_text(sensor_yaml(dist=[0, 0, 0, 0]))
    seq = open_sequence(root)
    np.testing.assert_allclose(seq.K, [[FU, 0, CU], [0, FV, CV], [0, 0, 1]])
    assert not seq.metadata["undistorted"] and not seq.has_groundtruth
    cal = read_euroc_sensor_yaml(root / "mav0/cam0/sensor.yaml")
    assert cal.resolution == (W, H) and cal.model == "radial-tangential"

"""Top-view plot: file written, plane choice, inputs validated."""

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from loger_core.io.trajectory import Trajectory
from loger_core.eval.plotting import PlotError, plot_top_view, top_view_axes


def _ground_loop(n=200, up_axis=1):
    """Circle of radius 3 m on the plane orthogonal to ``up_axis``, slight bobbing."""
    t = np.linspace(0, 2 * np.pi, n)
    plane = [a for a in range(3) if a != up_axis]
    pos = np.zeros((n, 3))
    pos[:, plane[0]] = 3 * np.cos(t)
    pos[:, plane[1]] = 3 * np.sin(t)
    pos[:, up_axis] = 0.05 * np.sin(5 * t)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :3] = Rotation.from_rotvec(np.outer(t, np.eye(3)[up_axis])).as_matrix()
    poses[:, :3, 3] = pos
    return Trajectory(np.arange(n, dtype=np.int64) * 33_000_000, poses)


def test_writes_png_with_map_and_gt(tmp_path):
    est = _ground_loop()
    gt = Trajectory(est.stamps_ns, est.poses.copy())
    gt.poses[:, :3, 3] *= 1.05
    rng = np.random.default_rng(0)
    pts = rng.uniform([-4, -1, -4], [4, 1.5, 4], size=(20_000, 3)).astype(np.float32)
    cols = np.zeros((20_000, 3), np.uint8)
    cols[:, [0, 2]] = 255  # magenta: a colour no other plot element uses
    path = tmp_path / "top.png"
    axes = plot_top_view(path, est, gt=gt, map_points=pts, map_colors=cols, title="loop",
                         max_map_points=5000, figsize=(6, 5), dpi=80)
    assert axes == (0, 2)  # y is the thin axis here
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (5 * 80, 6 * 80, 3)
    assert path.stat().st_size > 10_000
    magenta = (img[..., 0] > 180) & (img[..., 2] > 180) & (img[..., 1] < 120)
    assert magenta.sum() > 1000


@pytest.mark.parametrize("up_axis, expected", [(0, (1, 2)), (2, (0, 1))])
def test_plane_follows_flattest_axis(tmp_path, up_axis, expected):
    est = _ground_loop(up_axis=up_axis)
    assert top_view_axes(est.positions) == expected
    # Poses as a bare (N, 4, 4) array and no map/GT are accepted too.
    assert plot_top_view(tmp_path / "p.png", est.poses, dpi=40, figsize=(4, 4)) == expected
    assert (tmp_path / "p.png").stat().st_size > 2_000


def test_map_outliers_do_not_pick_the_plane():
    est = _ground_loop(up_axis=1)
    rng = np.random.default_rng(1)
    pts = rng.uniform([-4, -0.5, -4], [4, 0.5, 4], size=(5000, 3))
    pts[:20, 1] = 1e4  # a few wild depth outliers along the up axis
    assert top_view_axes(est.positions, pts) == (0, 2)


def test_bad_inputs(tmp_path):
    est = _ground_loop()
    with pytest.raises(PlotError, match="est must be"):
        plot_top_view(tmp_path / "x.png", np.zeros((5, 2)))
    with pytest.raises(PlotError, match="no finite poses"):
        plot_top_view(tmp_path / "x.png", np.full((3, 3), np.nan))
    with pytest.raises(PlotError, match=r"map_points must be \(M, 3\)"):
        plot_top_view(tmp_path / "x.png", est, map_points=np.zeros((4, 2)))
    with pytest.raises(PlotError, match="map_colors must be a uint8"):
        plot_top_view(tmp_path / "x.png", est, map_points=np.zeros((4, 3)), map_colors=np.zeros((4, 3)))
    with pytest.raises(PlotError, match="max_map_points"):
        plot_top_view(tmp_path / "x.png", est, max_map_points=0)
    assert not (tmp_path / "x.png").exists()


# ----------------------------------------------------------------------------- ground plane
from loger_core.eval.plotting import TopViewProjection, top_view_projection  # noqa: E402
from loger_core.synthetic.config import TrajectoryConfig  # noqa: E402
from loger_core.synthetic.scene import Route  # noqa: E402
from loger_core.synthetic.trajectories import make_poses  # noqa: E402

_L_ROUTE = Route(np.array([[0.0, 0.0], [6.0, 0.0], [6.0, 5.0]]), corner_radius_m=1.0, clearance_m=0.3)
_STRAIGHT = Route(np.array([[0.0, 0.0], [40.0, 0.0]]), clearance_m=0.3)


def _synthetic_poses(kind, route, seconds, seed=0):
    times = np.arange(0.0, seconds, 1 / 15)
    return make_poses(kind, TrajectoryConfig(), route, times, np.random.default_rng(seed))


def _rotated(poses, seed):
    """The same motion in an arbitrarily rotated and shifted world; returns the poses and the true up."""
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    T[:3, 3] = np.random.default_rng(seed).uniform(-50, 50, 3)
    return np.einsum("ij,njk->nik", T, poses), T[:3, :3] @ np.array([0.0, 0.0, 1.0])


def _angle_deg(a, b):
    return np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))


@pytest.mark.parametrize("kind, seconds", [("handheld", 25.0), ("ground_robot", 25.0), ("car", 1.0)])
@pytest.mark.parametrize("seed", [None, 1, 2])
def test_up_of_a_turning_path_is_gravity(kind, seconds, seed):
    poses = _synthetic_poses(kind, _L_ROUTE, seconds)
    up_true = np.array([0.0, 0.0, 1.0])
    if seed is not None:
        poses, up_true = _rotated(poses, seed)
    proj = top_view_projection(poses[:, :3, 3], poses[:, :3, :3])
    assert proj.source == "trajectory_plane"
    assert _angle_deg(proj.up, up_true) < 3.0
    # Positions alone fix the plane, not its side: the axis must still be right.
    assert min(_angle_deg(top_view_projection(poses[:, :3, 3]).up, s * up_true) for s in (1, -1)) < 3.0
    # A top view of a planar path is 2D, never a line.
    xy = proj.project(poses[:, :3, 3])
    extent = np.ptp(xy, axis=0)
    assert extent.min() > 0.3 * extent.max()
    assert np.allclose(np.cross(proj.R[0], proj.R[1]), proj.up)  # seen from above, not mirrored


@pytest.mark.parametrize("kind", ["handheld", "ground_robot", "car"])
@pytest.mark.parametrize("seed", [None, 3])
def test_up_of_a_straight_path_comes_from_the_cameras(kind, seed):
    poses = _synthetic_poses(kind, _STRAIGHT, 4.0 if kind == "car" else 30.0, seed=5)
    up_true = np.array([0.0, 0.0, 1.0])
    if seed is not None:
        poses, up_true = _rotated(poses, seed)
    proj = top_view_projection(poses[:, :3, 3], poses[:, :3, :3])
    assert proj.source == "camera_axes"
    # The cameras look down by their tilt; only roll and shake (a few degrees handheld) remain.
    assert _angle_deg(proj.up, up_true) < (5.0 if kind == "handheld" else 1.0)


def test_straight_path_without_rotations_uses_the_map_floor():
    poses = _synthetic_poses("car", _STRAIGHT, 3.0)
    poses, up_true = _rotated(poses, 4)
    rng = np.random.default_rng(0)
    road = np.c_[rng.uniform(-5, 40, 6000), rng.uniform(-4, 4, 6000), np.zeros(6000)]
    clutter = rng.uniform([-5, -6, 0], [40, 6, 8], size=(2000, 3))
    pts = np.concatenate([road, clutter])
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=4).as_matrix()
    T[:3, 3] = np.random.default_rng(4).uniform(-50, 50, 3)
    pts = pts @ T[:3, :3].T + T[:3, 3]
    proj = top_view_projection(poses[:, :3, 3], None, pts)
    assert proj.source == "map_floor"
    assert _angle_deg(proj.up, up_true) < 3.0


def test_old_side_view_case_is_now_a_top_view(tmp_path):
    """A car on a straight street in a z-up world: the widest axes are x and z, a side view."""
    poses = _synthetic_poses("car", _STRAIGHT, 3.0)
    pts = np.c_[np.random.default_rng(0).uniform(0, 30, (3000, 2)) * [1, 0.3] - [0, 4.5], np.zeros(3000)]
    pts = np.concatenate([pts, np.c_[np.linspace(0, 30, 3000), np.full(3000, 5.0), np.linspace(0, 20, 3000)]])
    assert top_view_axes(poses[:, :3, 3], pts) == (0, 2)
    view = plot_top_view(tmp_path / "car.png", poses, map_points=pts, dpi=40, figsize=(4, 4))
    assert view == (0, 1) and view.projection.source == "camera_axes"
    assert _angle_deg(view.projection.up, np.array([0.0, 0.0, 1.0])) < 1.0


def test_given_up_and_floor_frame_are_used(tmp_path):
    poses, up_true = _rotated(_synthetic_poses("ground_robot", _L_ROUTE, 25.0), 7)
    view = plot_top_view(tmp_path / "a.png", poses, up=up_true * 3.0, dpi=40, figsize=(4, 4))
    assert view.projection.source == "up" and _angle_deg(view.projection.up, up_true) < 1e-6
    assert view.projection.xlabel == "ground plane x [m]"
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0.1, -0.2, 0.4]).as_matrix()
    T[:3, 3] = [1.0, 2.0, 3.0]
    view = plot_top_view(tmp_path / "b.png", poses, T_world_ground=T, dpi=40, figsize=(4, 4))
    p = view.projection
    assert p.source == "T_world_ground" and (p.xlabel, p.ylabel) == ("ground x [m]", "ground y [m]")
    local = (poses[:, :3, 3] - T[:3, 3]) @ T[:3, :3]
    assert np.allclose(p.project(poses[:, :3, 3]), local[:, :2])
    with pytest.raises(PlotError, match="up must be"):
        plot_top_view(tmp_path / "c.png", poses, up=[0.0, 0.0, 0.0])
    with pytest.raises(PlotError, match="T_world_ground"):
        plot_top_view(tmp_path / "c.png", poses, T_world_ground=np.diag([1.0, 1.0, -1.0, 1.0]))


def test_labels_and_long_title_fit_in_the_figure(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    saved = []
    original = Figure.savefig

    def spy(fig, *a, **k):
        saved.append(fig)
        return original(fig, *a, **k)

    monkeypatch.setattr(Figure, "savefig", spy)
    poses, _ = _rotated(_synthetic_poses("handheld", _L_ROUTE, 25.0), 8)
    title = "small: 1024 frames (SYNTHETIC WEIGHTS - not meaningful), ATE 12.345 on a very long sequence name"
    view = plot_top_view(tmp_path / "t.png", poses * 1000.0, title=title, dpi=60, figsize=(5, 4))
    assert isinstance(view.projection, TopViewProjection)
    fig = saved[0]
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    ax = fig.axes[0]
    # Everything drawn (labels, tick labels, the wrapped title) lies inside the saved figure.
    drawn = ax.get_tightbbox(renderer)
    assert drawn.x0 >= box.x0 - 0.5 and drawn.x1 <= box.x1 + 0.5 and drawn.y0 >= box.y0 - 0.5 and drawn.y1 <= box.y1 + 0.5
    assert "\n" in ax.title.get_text()
    assert ax.xaxis.label.get_text() == "ground plane x [m]"

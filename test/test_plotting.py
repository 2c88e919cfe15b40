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

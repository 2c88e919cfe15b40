"""Camera motion along a scene route: handheld, ground robot and car.

The route polyline gets its corners rounded into circular arcs and is resampled by
arc length; each motion model then chooses, per frame time, a distance along the
route, a sideways offset, a height and yaw/pitch/roll. Random components are sums of
a few sinusoids with random frequencies and phases, so every pose is a smooth,
differentiable function of time (no frame-to-frame jitter, realistic dynamics):

* ``handheld``: walking speed with surges, sideways sway, step bob, a slow gaze sweep
  around the walking direction and small hand shake in all three angles (6-DoF).
* ``ground_robot``: planar motion at constant speed along the route (turns included);
  the camera sits at a fixed height with a fixed downward tilt and no roll.
* ``car``: fast forward motion with gentle speed changes, slow lane drift (the yaw
  follows the drift), and slight suspension pitch/roll/heave.

Poses are ``T_world_cam (N, 4, 4) float64`` in the z-up world of
:mod:`loger_core.synthetic.scene`, camera axes in the OpenCV convention.
"""

from __future__ import annotations

import math

import numpy as np

from .camera import look_rotation
from .config import SynthError, TrajectoryConfig
from .scene import Route

__all__ = ["PathSampler", "camera_mount", "make_poses", "route_length_needed"]


class _SmoothNoise:
    """``sum_k w_k sin(2 pi f_k t + phi_k)`` with weights summing to 1 (range [-1, 1])."""

    def __init__(self, rng: np.random.Generator, f_lo: float, f_hi: float, n: int = 4) -> None:
        self.f = rng.uniform(f_lo, f_hi, n)
        self.phi = rng.uniform(0.0, 2 * math.pi, n)
        w = rng.uniform(0.5, 1.0, n)
        self.w = w / w.sum()

    def _arg(self, t: np.ndarray) -> np.ndarray:
        return 2 * math.pi * self.f * np.asarray(t, dtype=np.float64)[..., None] + self.phi

    def __call__(self, t: np.ndarray) -> np.ndarray:
        return np.sin(self._arg(t)) @ self.w

    def deriv(self, t: np.ndarray) -> np.ndarray:
        return np.cos(self._arg(t)) @ (self.w * 2 * math.pi * self.f)

    def integral(self, t: np.ndarray) -> np.ndarray:
        """Integral from 0 to ``t``."""
        k = self.w / (2 * math.pi * self.f)
        return (np.cos(self.phi) - np.cos(self._arg(t))) @ k


def _rounded(points: np.ndarray, closed: bool, radius: float, step: float) -> np.ndarray:
    """Polyline with each corner replaced by a circular arc of (at most) ``radius``."""
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    if radius <= 0.0 or n < 3:
        return np.vstack([pts, pts[:1]]) if closed else pts
    out = [] if closed else [pts[0]]
    corners = range(n) if closed else range(1, n - 1)
    for i in corners:
        prev, cur, nxt = pts[i - 1], pts[i], pts[(i + 1) % n]
        v0, v1 = cur - prev, nxt - cur
        l0, l1 = np.linalg.norm(v0), np.linalg.norm(v1)
        d0, d1 = v0 / l0, v1 / l1
        cross = d0[0] * d1[1] - d0[1] * d1[0]
        theta = math.acos(float(np.clip(d0 @ d1, -1.0, 1.0)))
        if theta < 1e-6:
            out.append(cur)
            continue
        tan_half = math.tan(theta / 2)
        tangent = min(radius * tan_half, 0.5 * min(l0, l1))
        r = tangent / tan_half
        left = 1.0 if cross > 0 else -1.0
        a = cur - d0 * tangent
        centre = a + left * np.array([-d0[1], d0[0]]) * r
        start = math.atan2(a[1] - centre[1], a[0] - centre[0])
        m = max(2, int(math.ceil(r * theta / step)) + 1)
        ang = start + left * theta * np.linspace(0.0, 1.0, m)
        out.extend(np.stack([centre[0] + r * np.cos(ang), centre[1] + r * np.sin(ang)], axis=1))
    if closed:
        out.append(out[0])
    else:
        out.append(pts[-1])
    return np.asarray(out)


class PathSampler:
    """Arc-length parametrised, corner-rounded route: ``at(s)`` -> positions and headings."""

    def __init__(self, route: Route, step: float = 0.05) -> None:
        pts = np.asarray(route.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
            raise SynthError(f"Route.points must be (K >= 2, 2), got shape {pts.shape}")
        dense = _rounded(pts, route.closed, route.corner_radius_m, step)
        seg = np.linalg.norm(np.diff(dense, axis=0), axis=1)
        keep = np.concatenate([[True], seg > 1e-9])
        dense = dense[keep]
        cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
        self.length = float(cum[-1])
        self.closed = route.closed
        self._cum = cum
        self._pts = dense
        # Heading from a centred difference over +-delta smooths the polyline's kinks.
        self._delta = max(2 * step, 0.2)

    def _xy(self, s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, dtype=np.float64)
        if self.closed:
            s = np.mod(s, self.length)
            return np.stack([np.interp(s, self._cum, self._pts[:, k]) for k in range(2)], axis=-1)
        inside = np.clip(s, 0.0, self.length)
        xy = np.stack([np.interp(inside, self._cum, self._pts[:, k]) for k in range(2)], axis=-1)
        # Beyond either end, continue straight along the end segment.
        end_dir = self._pts[-1] - self._pts[-2]
        start_dir = self._pts[1] - self._pts[0]
        over = (s - inside)[..., None]
        d = np.where(over > 0, end_dir / np.linalg.norm(end_dir), start_dir / np.linalg.norm(start_dir))
        return xy + over * d

    def at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions ``(n, 2)`` and headings ``(n,)`` (rad, ccw from +x) at arc lengths ``s``."""
        s = np.asarray(s, dtype=np.float64)
        ahead, behind = self._xy(s + self._delta), self._xy(s - self._delta)
        diff = ahead - behind
        return self._xy(s), np.arctan2(diff[..., 1], diff[..., 0])


def route_length_needed(kind: str, cfg: TrajectoryConfig, duration_s: float) -> float:
    """Route metres a trajectory of ``duration_s`` may cover (speed surges included)."""
    speed = cfg.resolved(kind).speed_mps
    return speed * duration_s * 1.2 + 2.0


def make_poses(
    kind: str, cfg: TrajectoryConfig, route: Route, times_s: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Camera poses ``T_world_cam (N, 4, 4) float64`` at ``times_s (N,)`` seconds.

    Args:
        kind: ``handheld``, ``ground_robot`` or ``car``.
        cfg: motion tuning (``None`` fields take the per-kind defaults).
        route: the scene's route (start, clearance, corner radius).
        times_s: frame times in seconds from the start.
        rng: source of the random motion components.
    """
    if kind not in ("handheld", "ground_robot", "car"):
        raise SynthError(f"trajectory kind must be handheld, ground_robot or car, got {kind!r}")
    c = cfg.resolved(kind)
    t = np.asarray(times_s, dtype=np.float64)
    path = PathSampler(route)
    v, h, tilt = c.speed_mps, c.height_m, math.radians(c.tilt_deg)
    wob = float(c.wobble)
    calm = min(1.0, wob)
    deg = math.radians
    clear = route.clearance_m
    zeros = np.zeros_like(t)

    if kind == "handheld":
        surge = _SmoothNoise(rng, 0.05, 0.3)
        s = route.start_s + v * t + v * 0.15 * calm * surge.integral(t)
        sway, step_phase = _SmoothNoise(rng, 0.03, 0.2), rng.uniform(0, 2 * math.pi)
        lat = clear * calm * sway(t) + 0.015 * wob * np.sin(2 * math.pi * 0.95 * t + step_phase)
        lat = np.clip(lat, -clear, clear)
        heave = _SmoothNoise(rng, 0.1, 0.4)
        z = h + wob * (0.03 * heave(t) + 0.012 * np.sin(2 * math.pi * 1.9 * t + 2 * step_phase))
        gaze, shake_y = _SmoothNoise(rng, 0.02, 0.1), _SmoothNoise(rng, 0.6, 2.5)
        nod, shake_p = _SmoothNoise(rng, 0.05, 0.2), _SmoothNoise(rng, 0.6, 2.5)
        tilt_n, shake_r = _SmoothNoise(rng, 0.05, 0.3), _SmoothNoise(rng, 0.8, 3.0)
        xy, heading = path.at(s)
        yaw = heading + deg(c.look_around_deg) * gaze(t) + wob * deg(1.5) * shake_y(t)
        pitch = tilt + calm * deg(5.0) * nod(t) + wob * deg(1.0) * shake_p(t)
        roll = wob * (deg(2.5) * tilt_n(t) + deg(0.7) * shake_r(t))
    elif kind == "ground_robot":
        s = route.start_s + v * t
        lat = zeros
        xy, heading = path.at(s)
        z = np.full_like(t, h)
        yaw, pitch, roll = heading, np.full_like(t, tilt), zeros
    else:
        surge = _SmoothNoise(rng, 0.01, 0.05)
        s = route.start_s + v * t + v * 0.12 * calm * surge.integral(t)
        speed = v * (1.0 + 0.12 * calm * surge(t))
        drift = _SmoothNoise(rng, 0.01, 0.05)
        lat = 0.8 * clear * calm * drift(t)
        lat_rate = 0.8 * clear * calm * drift.deriv(t)
        heave, pitch_n, roll_n = _SmoothNoise(rng, 1.0, 3.0), _SmoothNoise(rng, 0.8, 2.5), _SmoothNoise(rng, 0.3, 1.5)
        xy, heading = path.at(s)
        yaw = heading + np.arctan2(lat_rate, speed)
        z = h + wob * 0.008 * heave(t)
        pitch = tilt + wob * deg(0.3) * pitch_n(t)
        roll = wob * deg(0.4) * roll_n(t)

    left = np.stack([-np.sin(heading), np.cos(heading)], axis=-1)
    pos_xy = xy + left * lat[..., None]
    poses = np.tile(np.eye(4), (t.size, 1, 1))
    poses[:, :3, :3] = look_rotation(yaw, pitch, roll)
    poses[:, 0, 3] = pos_xy[:, 0]
    poses[:, 1, 3] = pos_xy[:, 1]
    poses[:, 2, 3] = z
    return poses


# REP-103 body axes (x forward, y left, z up) -> OpenCV optical axes (x right, y down, z forward).
_R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def camera_mount(kind: str, cfg: TrajectoryConfig) -> np.ndarray:
    """``T_base_cam (4, 4)``: the camera's mount on a z-up ``base_link`` on the ground.

    The camera sits at the motion model's height above ``base_link``, pitched down by its tilt,
    ``base_link`` x pointing where the camera looks. For ``ground_robot`` this is exact:
    ``T_world_cam = T_world_base @ T_base_cam`` with ``base_link`` on the floor, z up, yawed with
    the route. For ``handheld`` and ``car`` the same fixed mount makes ``base_link`` carry the
    motion's bob, sway and shake (a handheld rig or a car body does), so its z is up only on
    average.
    """
    c = cfg.resolved(kind)
    p = math.radians(c.tilt_deg)
    # Pitch about base y: positive turns the optical axis (base x) down, as make_poses' tilt does.
    R_pitch = np.array([[math.cos(p), 0.0, math.sin(p)], [0.0, 1.0, 0.0], [-math.sin(p), 0.0, math.cos(p)]])
    T = np.eye(4)
    T[:3, :3] = R_pitch @ _R_BODY_OPTICAL
    T[2, 3] = c.height_m
    return T

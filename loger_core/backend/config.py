"""Back-end settings: one dataclass, mapped 1:1 by the YAML group ``backend``, the node's parameters
and the CLIs' ``--backend*`` options."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

__all__ = ["BackendConfig", "BackendConfigError", "resolved_cpu_share"]

FEATURE_TYPES = ("sift", "orb")
# Place recognition (backend.place): 'votes' is the first name of 'vlad', still read (old YAML, sessions).
PLACE_DESCRIPTORS = ("vlad", "tokens", "fusion", "none", "votes")


class BackendConfigError(ValueError):
    """A back-end setting out of its range (the message names it)."""


@dataclass
class BackendConfig:
    """Geometric back end: keyframes, feature-verified relative poses, loop closure, pose graph.

    Units: pixels are of the image given to the back end after ``max_image_width`` downscaling;
    angles in degrees; sigmas are 1-sigma standard deviations of the graph's noise models.
    """

    enabled: bool = True  # False reproduces the front end's output exactly
    loop_closure: bool = True
    feature: str = "sift"
    max_features: int = 2000
    sift_contrast: float = 0.02  # SIFT contrast threshold (OpenCV's default 0.04 starves smooth scenes)
    max_image_width: int = 800  # larger inputs are downscaled for features (KITTI 1241 -> 800)
    ratio: float = 0.8  # Lowe's ratio test
    ransac_px: float = 1.0  # essential-matrix RANSAC threshold (pixels)
    min_inliers: int = 30  # fewer: the relative pose is not verified; the network's is kept
    min_inlier_ratio: float = 0.25
    # PnP against the previous keyframe's network depth is used for a step when its inliers reach
    # this fraction of the essential matrix's: the depth explains the matches (else the depth is
    # poor there, e.g. a model trained indoors on a road, and the essential matrix is used).
    pnp_px: float = 2.0
    pnp_min_inlier_fraction: float = 0.6
    # Where PnP holds, its translation's length is the step ('pnp'), or it is one measurement the
    # scale chain fuses with the triangulated ratio ('chain').
    pnp_scale: str = "pnp"
    # Keyframes: a frame becomes one when its rotation-compensated parallax to the last keyframe
    # reaches keyframe_parallax_deg, when tracking weakens (inliers below keyframe_track_ratio of the
    # first frame tracked against the keyframe), or
    # after keyframe_max_gap frames.
    keyframe_parallax_deg: float = 1.0
    keyframe_track_ratio: float = 0.5
    keyframe_max_gap: int = 15
    # Scale along the chain of keyframes (monocular): the ratio of consecutive steps from the
    # depths both triangulations give to the shared keyframe's points (sigma in log scale), anchored
    # to the network's depth (its sigma in log scale: loose, it only stops long-run scale drift).
    scale_chain_sigma: float = 0.05
    scale_network_sigma: float = 0.5
    scale_network_sigma_poor: float = 2.0  # where PnP does not hold (the network's depth explains few matches)
    # Graph noise: a verified step (rotation deg, translation as a fraction of the step) and the
    # network's own relative pose where nothing verifies it.
    verified_rot_sigma_deg: float = 0.2
    verified_trans_sigma: float = 0.05
    network_rot_sigma_deg: float = 2.0
    network_trans_sigma: float = 0.5
    # Loop closure: candidates by place_descriptor among keyframes older than loop_min_age frames,
    # accepted after geometric verification with loop_min_inliers and loop_min_inlier_ratio and
    # confirmed by loop_consistency consecutive keyframes agreeing on the same correction.
    # tokens | vlad | fusion | none (backend.place). 'tokens' (the network's encoder tokens, VLAD where a
    # frame has none) ranked true revisits first far more often than VLAD (bench/place_recognition.py).
    place_descriptor: str = "tokens"
    loop_min_age: int = 60
    loop_candidates: int = 3
    loop_min_inliers: int = 60
    loop_min_inlier_ratio: float = 0.35
    loop_consistency: int = 2
    loop_cooldown_keyframes: int = 10  # after a closure, this many keyframes look for no new loop
    loop_consistency_deg: float = 5.0
    loop_consistency_trans: float = 0.2  # fraction of the loop's span
    loop_rot_sigma_deg: float = 1.0
    loop_trans_sigma: float = 0.1
    robust_kernel: str = "huber"  # on loop factors: huber, cauchy or none (a whitened loop residual of several sigma is normal after drift: cauchy at k=1 ignores true loops)
    robust_k: float = 3.0
    # Bounded memory: descriptors kept per keyframe for place recognition, and the map points each
    # keyframe keeps for re-fusion.
    place_features_per_keyframe: int = 300
    keyframe_points: int = 4000
    refuse_tolerance: float = 0.02  # re-fuse keyframes whose pose moved more than this (fraction of median depth)
    threaded: bool = True  # run on its own thread; False: inline (tests, offline determinism)
    # Live: frames waiting beyond this are recorded but not tracked (their poses are interpolated)
    # so the back end stays bounded behind a fast camera; 0: every frame is tracked (offline tools).
    max_queue: int = 16
    # Live (threaded): the largest share of wall time the worker may spend working. After a frame
    # that took t seconds it rests t * (1 / cpu_share - 1); frames arriving meanwhile are recorded
    # untracked (their poses interpolated between keyframes). Where the network runs on the CPU the
    # two share the cores, and a greedy back end starves inference (on 2 cores odometry fell from
    # 15 to 9 Hz). 0: auto, see :func:`resolved_cpu_share`; 1: no limit.
    cpu_share: float = 0.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.feature not in FEATURE_TYPES:
            raise BackendConfigError(f"backend feature must be one of {FEATURE_TYPES}, got {self.feature!r}")
        if self.place_descriptor not in PLACE_DESCRIPTORS:
            raise BackendConfigError(f"backend place_descriptor must be one of {PLACE_DESCRIPTORS}, got {self.place_descriptor!r}")
        if self.pnp_scale not in ("pnp", "chain"):
            raise BackendConfigError(f"backend pnp_scale must be pnp or chain, got {self.pnp_scale!r}")
        if self.robust_kernel not in ("cauchy", "huber", "none"):
            raise BackendConfigError(f"backend robust_kernel must be cauchy, huber or none, got {self.robust_kernel!r}")
        for name in ("max_features", "max_image_width", "min_inliers", "keyframe_max_gap",
                     "loop_min_inliers", "loop_candidates", "loop_consistency", "place_features_per_keyframe",
                     "keyframe_points"):
            if int(getattr(self, name)) < 1:
                raise BackendConfigError(f"backend {name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("ratio", "ransac_px", "pnp_px", "sift_contrast", "keyframe_parallax_deg", "scale_chain_sigma", "scale_network_sigma",
                     "verified_rot_sigma_deg", "scale_network_sigma_poor", "keyframe_track_ratio", "verified_trans_sigma", "network_rot_sigma_deg", "network_trans_sigma",
                     "loop_rot_sigma_deg", "loop_trans_sigma", "robust_k", "loop_consistency_deg",
                     "loop_consistency_trans"):
            v = float(getattr(self, name))
            if not v > 0:
                raise BackendConfigError(f"backend {name} must be > 0, got {v!r}")
        if not 0 < self.ratio < 1:
            raise BackendConfigError(f"backend ratio must be in (0, 1), got {self.ratio!r}")
        for name in ("min_inlier_ratio", "loop_min_inlier_ratio"):
            v = float(getattr(self, name))
            if not 0 <= v <= 1:
                raise BackendConfigError(f"backend {name} must be in [0, 1], got {v!r}")
        if self.loop_cooldown_keyframes < 0:
            raise BackendConfigError(f"backend loop_cooldown_keyframes must be >= 0, got {self.loop_cooldown_keyframes!r}")
        if not 0 <= self.cpu_share <= 1:
            raise BackendConfigError(f"backend cpu_share must be in [0, 1], got {self.cpu_share!r}")
        if self.max_queue < 0:
            raise BackendConfigError(f"backend max_queue must be >= 0, got {self.max_queue!r}")
        if self.loop_min_age < 1:
            raise BackendConfigError(f"backend loop_min_age must be >= 1, got {self.loop_min_age!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "BackendConfig":
        """From a YAML group / parameter dict; unknown keys are an error naming them."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise BackendConfigError(f"unknown backend setting(s) {unknown}; known: {sorted(names)}")
        return cls(**dict(values))


# The auto share where the network runs on the CPU: measured on 2 cores with `small` at 15 fps
# (bench/node_latency.py), the share that kept odometry at the back-end-off rate while still taking
# a keyframe every few frames.
CPU_NETWORK_SHARE = 0.3


def resolved_cpu_share(cfg: BackendConfig, network_on_cpu: bool) -> float:
    """``cfg.cpu_share``, or for 0 (auto): :data:`CPU_NETWORK_SHARE` when the network runs on the CPU
    (it needs the cores), else 1.0 (a GPU does the network's work; the back end may use a core)."""
    if cfg.cpu_share > 0:
        return float(cfg.cpu_share)
    return CPU_NETWORK_SHARE if network_on_cpu else 1.0

"""Place recognition by the network's own global descriptors (``FrameResult.descriptor``: the mean
of the encoder's patch tokens, L2-normalised; see ``loger_core.model.descriptor``) and the fusion of
their ranking with VLAD's. Like ``place``, this only ranks; geometric verification decides."""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["TokenIndex", "fuse_rankings", "top_allowed"]


def top_allowed(keys: np.ndarray, scores: np.ndarray, keys_allowed: Optional[set], top: int) -> list[tuple[int, float]]:
    """The ``top`` (key, score) of ``keys`` (K,) by ``scores`` (K,) descending, only ``keys_allowed``
    if given; ties keep insertion order (stable), so reruns rank identically."""
    out: list[tuple[int, float]] = []
    for i in np.argsort(-scores, kind="stable"):
        key = int(keys[i])
        if keys_allowed is None or key in keys_allowed:
            out.append((key, float(scores[i])))
            if len(out) >= top:
                break
    return out


class TokenIndex:
    """Unit global descriptors (C,) of keyframes, ranked by cosine similarity (one matmul: a few
    thousand keyframes of 1024-d are a few MB and well under a millisecond per query)."""

    def __init__(self) -> None:
        self._keys: list[int] = []
        self._vecs: list[np.ndarray] = []
        self._matrix: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: int, descriptor: np.ndarray) -> None:
        """Index keyframe ``key`` by its descriptor (C,) (normalised again here: cheap, and a
        descriptor from elsewhere need not be a unit vector)."""
        v = np.asarray(descriptor, np.float32).ravel()
        n = float(np.linalg.norm(v))
        self._keys.append(int(key))
        self._vecs.append(v / n if n > 0 else v)
        self._matrix = None

    def remove(self, keys: set) -> None:
        """Forget keyframes ``keys`` (a bounded keyframe database culls old ones)."""
        keep = [i for i, k in enumerate(self._keys) if k not in keys]
        self._keys = [self._keys[i] for i in keep]
        self._vecs = [self._vecs[i] for i in keep]
        self._matrix = None

    def scores(self, descriptor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys (K,) int64, cosine similarities (K,) float32) of every indexed keyframe."""
        if not self._keys:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self._matrix is None:
            self._matrix = np.stack(self._vecs)
        q = np.asarray(descriptor, np.float32).ravel()
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        return np.asarray(self._keys, np.int64), self._matrix @ q

    def query(self, descriptor: np.ndarray, keys_allowed: Optional[set] = None, top: int = 3) -> list[tuple[int, float]]:
        """The ``top`` (key, cosine) among indexed keyframes (only ``keys_allowed`` if given), best first."""
        keys, sims = self.scores(descriptor)
        return top_allowed(keys, sims, keys_allowed, top)

    def state(self) -> dict:
        return {"keys": np.asarray(self._keys, np.int64),
                "vecs": np.stack(self._vecs) if self._vecs else np.zeros((0, 0), np.float32)}


def fuse_rankings(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                  keys_allowed: Optional[set]) -> tuple[np.ndarray, np.ndarray]:
    """(keys, fused scores) of the keys ranked by both ``a`` and ``b`` (each (keys, scores)), among
    ``keys_allowed``: minus the mean of the two ranks (0 = best). By rank, not by score: the two
    cosines live on different scales (VLAD's spread over 0..1, the tokens' bunched near 1), and
    ranks need no weight tuned to one sequence."""
    def ranks(keys: np.ndarray, scores: np.ndarray) -> dict[int, int]:
        keep = [i for i, k in enumerate(keys) if keys_allowed is None or int(k) in keys_allowed]
        order = sorted(keep, key=lambda i: -float(scores[i]))
        return {int(keys[i]): r for r, i in enumerate(order)}

    ra, rb = ranks(*a), ranks(*b)
    common = [k for k in ra if k in rb]
    keys = np.asarray(common, np.int64)
    return keys, -0.5 * np.asarray([ra[k] + rb[k] for k in common], np.float64)

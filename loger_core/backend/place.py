"""Place recognition over keyframes, by ``BackendConfig.place_descriptor``:

- 'vlad' (legacy name 'votes'): VLAD global descriptors (Jegou et al., CVPR 2010) of each keyframe's
  local descriptors against a small vocabulary learned from the run's first keyframes;
- 'tokens': the network's own global descriptor of the frame (``place_tokens.TokenIndex``), with
  VLAD for keyframes that have none (a model or input without descriptors, an older session);
- 'fusion': keyframes ranked by the mean of both rankings.

Cosine similarity for retrieval. Geometric verification (``loop_closure``) decides; this only ranks."""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from loger_core.backend.place_tokens import TokenIndex, fuse_rankings, top_allowed

__all__ = ["PlaceIndex", "place_mode", "vlad"]


def place_mode(place_descriptor: str) -> str:
    """The index's mode for a ``place_descriptor`` setting: 'votes' (the first name of 'vlad', in
    older YAML files and sessions) reads as 'vlad'."""
    return "vlad" if place_descriptor == "votes" else place_descriptor


def vlad(desc: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """(k * D,) float32 VLAD vector of descriptors ``desc`` (N, D): residuals to the nearest centre
    summed per centre, signed square root (power normalisation), intra- and global L2 normalisation."""
    d = np.asarray(desc, np.float32)
    k, dim = centers.shape
    out = np.zeros((k, dim), np.float32)
    if len(d):
        dist = (d * d).sum(1)[:, None] - 2.0 * d @ centers.T + (centers * centers).sum(1)[None]
        nearest = np.argmin(dist, axis=1)
        np.add.at(out, nearest, d - centers[nearest])
    out = np.sign(out) * np.sqrt(np.abs(out))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    out = np.where(norms > 0, out / np.maximum(norms, 1e-12), 0.0)
    v = out.ravel()
    n = np.linalg.norm(v)
    return (v / n if n > 0 else v).astype(np.float32)


class PlaceIndex:
    """Global descriptors of keyframes, ranked by cosine similarity.

    The vocabulary (``k`` centres) is learned once ``vocab_keyframes`` keyframes have been added
    (k-means over their descriptors); keyframes added before that are described then. ``mode``
    (see :func:`place_mode`): 'vlad' ranks by VLAD alone, 'tokens' by the keyframes' network
    descriptors (VLAD, kept alongside, for a query without one or before any keyframe has one),
    'fusion' by both (VLAD alone until its vocabulary exists, or for a query without a network
    descriptor).
    """

    def __init__(self, k: int = 32, vocab_keyframes: int = 8, seed: int = 0, mode: str = "vlad") -> None:
        self.mode = place_mode(mode)
        self.tokens = TokenIndex()
        self.k = k
        self.vocab_keyframes = vocab_keyframes
        self.seed = seed
        self.centers: Optional[np.ndarray] = None
        self._pending: list[tuple[int, np.ndarray]] = []
        self._keys: list[int] = []
        self._vecs: list[np.ndarray] = []
        self._matrix: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: int, desc: np.ndarray, token: Optional[np.ndarray] = None) -> None:
        """Index keyframe ``key`` by its local descriptors (N, D) and its network descriptor ``token``
        (C,) or None."""
        if self.mode in ("tokens", "fusion") and token is not None:
            self.tokens.add(key, token)
        self._add_vlad(key, desc)

    def _add_vlad(self, key: int, desc: np.ndarray) -> None:
        if self.centers is None:
            self._pending.append((key, np.asarray(desc, np.float32)))
            if len(self._pending) >= self.vocab_keyframes:
                self._learn()
            return
        self._keys.append(key)
        self._vecs.append(vlad(desc, self.centers))
        self._matrix = None

    def remove(self, keys: set) -> None:
        """Forget keyframes ``keys`` in every index (a bounded keyframe database culls old ones; the
        vocabulary stays)."""
        keys = set(keys)
        self.tokens.remove(keys)
        keep = [i for i, k in enumerate(self._keys) if k not in keys]
        self._keys = [self._keys[i] for i in keep]
        self._vecs = [self._vecs[i] for i in keep]
        self._pending = [(k, d) for k, d in self._pending if k not in keys]
        self._matrix = None

    def _learn(self) -> None:
        parts = [d for _, d in self._pending if len(d)]
        if sum(len(d) for d in parts) < self.k * 4:
            return  # too little texture yet (a dark or flat start): keep collecting
        data = np.concatenate(parts, axis=0)
        cv2.setRNGSeed(self.seed)
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 1e-3)
        _, _, centers = cv2.kmeans(data.astype(np.float32), self.k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
        self.centers = centers.astype(np.float32)
        pending, self._pending = self._pending, []
        for key, d in pending:
            self._add_vlad(key, d)

    def query(self, desc: np.ndarray, keys_allowed: Optional[set] = None, top: int = 3,
              token: Optional[np.ndarray] = None) -> list[tuple[int, float]]:
        """The ``top`` (key, score) among indexed keyframes (only ``keys_allowed`` if given), best
        first, for a keyframe of local descriptors ``desc`` (N, D) and network descriptor ``token``
        (C,) or None. Scores: cosine similarity ('vlad', 'tokens'); minus the mean rank ('fusion')."""
        if self.mode == "tokens" and token is not None and len(self.tokens):
            return self.tokens.query(token, keys_allowed, top)
        by_vlad = self.vlad_scores(desc)
        if self.mode == "fusion" and token is not None and len(self.tokens):
            if not len(by_vlad[0]):
                return self.tokens.query(token, keys_allowed, top)
            keys, fused = fuse_rankings(by_vlad, self.tokens.scores(token), keys_allowed)
            return top_allowed(keys, fused, None, top)
        return top_allowed(*by_vlad, keys_allowed, top)

    def vlad_scores(self, desc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(keys (K,) int64, VLAD cosine similarities (K,)) of every keyframe VLAD indexes (none
        before the vocabulary is learned)."""
        if self.centers is None or not self._keys:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self._matrix is None:
            self._matrix = np.stack(self._vecs)
        return np.asarray(self._keys, np.int64), self._matrix @ vlad(desc, self.centers)

    def state(self) -> dict:
        return {"centers": self.centers, "keys": np.asarray(self._keys, np.int64),
                "vecs": np.stack(self._vecs) if self._vecs else np.zeros((0, 0), np.float32),
                "pending": self._pending}

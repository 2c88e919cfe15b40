"""Explicit cross-window memory of LoGeR, and the options that govern it."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

FastWeights = tuple[Tensor, Tensor, Tensor]
KVCache = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class MemoryOptions:
    """How windows are cut and how memory is carried between them.

    window_size / overlap_size: frames per window and frames shared by consecutive windows;
    windows start every `window_size - overlap_size` frames. reset_every: reset the TTT fast weights
    every N windows (0 = never); the SWA history is kept, as the authors do. use_ttt / use_swa:
    ablations (the layer's gated contribution is removed).
    """

    window_size: int = 32
    overlap_size: int = 3
    reset_every: int = 0
    use_ttt: bool = True
    use_swa: bool = True

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {self.window_size}")
        if not 0 <= self.overlap_size < self.window_size:
            raise ValueError(f"overlap_size must be in [0, window_size), got {self.overlap_size} (window {self.window_size})")
        if self.reset_every < 0:
            raise ValueError(f"reset_every must be >= 0, got {self.reset_every}")

    @property
    def stride(self) -> int:
        return self.window_size - self.overlap_size

    def resets_ttt_at(self, window_index: int) -> bool:
        """Whether the window after `window_index` committed windows starts from fresh TTT weights."""
        return self.reset_every > 0 and window_index > 0 and window_index % self.reset_every == 0


@dataclass
class MemoryState:
    """Memory carried from one window to the next.

    ttt[j]: fast weights `(w0 (B*h, d, dh), w1 (B*h, dh, d), w2 (B*h, d, dh))` of TTT layer j, or
        None before the first update / after a reset (the layer then starts from its learned weights).
    swa[l]: keys/values `(B, heads, N_prev * tokens_per_frame, head_dim)` of the previous window's
        tokens at SWA layer l, or None before the first window.
    window_index: number of windows committed so far.

    The size is bounded: fast weights have a fixed shape and the SWA cache holds one window.
    """

    ttt: list[FastWeights | None]
    swa: list[KVCache | None]
    window_index: int = 0
    frames_seen: int = field(default=0)

    @classmethod
    def empty(cls, num_ttt: int, num_swa: int) -> "MemoryState":
        return cls(ttt=[None] * num_ttt, swa=[None] * num_swa)

    def tensors(self) -> list[Tensor]:
        out: list[Tensor] = []
        for w in self.ttt:
            if w is not None:
                out.extend(w)
        for kv in self.swa:
            if kv is not None:
                out.extend(kv)
        return out

    def nbytes(self) -> int:
        """Bytes held by the state's tensors."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def map_tensors(self, fn) -> "MemoryState":
        """A state whose tensors are `fn(tensor)` of this one's (None entries and counters kept)."""
        return MemoryState(
            ttt=[None if w is None else tuple(fn(t) for t in w) for w in self.ttt],  # type: ignore[misc]
            swa=[None if kv is None else tuple(fn(t) for t in kv) for kv in self.swa],  # type: ignore[misc]
            window_index=self.window_index,
            frames_seen=self.frames_seen,
        )

    def detach(self) -> "MemoryState":
        return self.map_tensors(Tensor.detach)

    def clone(self) -> "MemoryState":
        """A copy whose tensors are new (cloned) ones."""
        return self.map_tensors(Tensor.clone)

    def layout(self) -> tuple:
        """Hashable description of the shapes and dtypes of the state's tensors (None entries kept):
        fixed once the first window ran, so it keys anything captured against the memory."""
        def entry(group):
            return None if group is None else tuple((tuple(t.shape), t.dtype) for t in group)

        return tuple(entry(w) for w in self.ttt), tuple(entry(kv) for kv in self.swa)

    def reset_ttt(self) -> "MemoryState":
        return MemoryState(ttt=[None] * len(self.ttt), swa=list(self.swa), window_index=self.window_index, frames_seen=self.frames_seen)

    def to(self, device: torch.device | str) -> "MemoryState":
        return self.map_tensors(lambda t: t.to(device))

"""CUDA graphs of the provisional pass.

A provisional pass is a small network call (the anchor frames plus the newest few) made for every
few camera frames. Run eagerly it costs thousands of kernel launches from Python, and on the caller's
thread it competes for the interpreter with the window worker: on an H100 that made a pass of 5
frames at 504x280 cost 170-190 ms of host time for about 10 ms of device work, so the passes, not the
GPU, limited the node. A captured graph replays the whole pass with one launch.

One graph per input shape, anchor count and memory layout (the memory's tensors have fixed shapes once the first
window ran). The graph reads its own copies of the input images and of the committed memory; the
memory is copied in once per committed window (device-to-device), the images once per pass.
Capture is only tried while no window is being computed, or while the window worker is stopped
between two blocks for this very pass (`capture_allowed`, `gpu_share`), and a shape that fails
to capture (or a pass whose memory has no fixed layout: before the first window, a TTT reset) runs
eagerly instead: graphs are an optimisation, never a condition.

What a graph holds: with compiled fast paths, the compiled blocks (fused kernels: on an H100 a
4-frame pass of the full model replays in 25 ms instead of the eager blocks' 50 ms,
`bench/pass_cost.py --compiled-graph`), but only where capturing compiles nothing: for a pass shape
that was captured from compiled blocks on this model before (by the warm-up, whose stream is made
with `compile_new=True`), since a first compile takes seconds and would stall the live stream.
Other shapes capture the eager blocks, as a model without compiled fast paths does.
"""
from __future__ import annotations

import logging
import weakref
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Optional, Union

import torch

from loger_core.model.fast_paths import eager_regions
from loger_core.model.prediction import WindowPrediction, finish_raw_camera
from loger_core.model.state import MemoryOptions, MemoryState
from loger_core.model.window_graphs import capture_graph, get_or_capture

from .preprocess import rgb_batch

log = logging.getLogger(__name__)

__all__ = ["ProvisionalGraphs"]


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    rgb: torch.Tensor  # (n, h, w, 3) uint8, the graph's input
    state: MemoryState  # the graph's copy of the memory
    out: WindowPrediction  # the graph's outputs (raw camera, no points), overwritten by every replay
    bound: Optional[weakref.ref] = None  # the memory last copied in


class ProvisionalGraphs:
    """Replays `model.forward_window(images, state, options, commit=False)` from CUDA graphs.

    autocast: returns the context the reconstructor runs the network in (bf16 autocast or none).
    """

    def __init__(self, model: torch.nn.Module, options: MemoryOptions, autocast: Callable[[], ContextManager],
                 max_graphs: int = 8, compile_new: bool = False) -> None:
        self.model = model
        self.options = options
        self.autocast = autocast
        self.max_graphs = max_graphs
        self.compile_new = compile_new
        fast = getattr(model, "fast_paths", None)
        self._compiled_blocks = bool(getattr(fast, "compile", False))
        # Pass keys captured from compiled blocks on this model, by any stream (the warm-up's).
        self._compiled_keys: set = model.__dict__.setdefault("_loger_compiled_pass_keys", set()) \
            if isinstance(model, torch.nn.Module) else set()
        self.compiled_captures = 0
        self._graphs: dict[Any, _Graph] = {}
        self._failed: set = set()
        self.replays = 0
        self.captures = 0

    def usable_for(self, state: Optional[MemoryState]) -> bool:
        """Whether a pass on `state` can replay a graph: the memory must exist (after the first
        window) and no TTT reset may be due (it would change the memory inside the pass)."""
        return state is not None and not self.options.resets_ttt_at(state.window_index)

    def run(self, rgb: torch.Tensor, state: MemoryState, capture_allowed: Union[bool, Callable[[], bool]],
            anchor_frames: Optional[int] = None) -> Optional[WindowPrediction]:
        """The provisional prediction for `rgb` ((n, h, w, 3) uint8 on the device) against
        `state` (`anchor_frames`: see `LoGeR.forward_window`), on the current stream, as new
        tensors; None when no graph serves this pass (the caller runs it eagerly).
        capture_allowed: whether a missing graph may be captured now (a callable is asked only
        when one is missing)."""
        if not self.usable_for(state):
            return None
        key = (tuple(rgb.shape), anchor_frames, state.layout())
        if key in self._failed:
            return None
        if key not in self._graphs and (len(self._graphs) >= self.max_graphs or not (
                capture_allowed() if callable(capture_allowed) else capture_allowed)):
            return None
        entry = get_or_capture(self._graphs, self._failed, key, lambda: self._capture(key, rgb, state, anchor_frames),
                               f"provisional pass of shape {tuple(rgb.shape)}")
        if entry is None:
            return None
        entry.rgb.copy_(rgb, non_blocking=True)
        if entry.bound is None or entry.bound() is not state:
            for dst, src in zip(entry.state.tensors(), state.tensors()):
                dst.copy_(src, non_blocking=True)
            entry.bound = weakref.ref(state)
        entry.graph.replay()
        self.replays += 1
        out = entry.out
        local_points = out.local_points.clone()
        poses, points = finish_raw_camera(local_points, out.camera_poses)
        return WindowPrediction(local_points, out.conf.clone(), poses, points)

    def uses_compiled_blocks(self, key: Any) -> bool:
        """Whether the graph of pass `key` (input shape, anchors, memory layout) is captured from the
        model's compiled blocks: it has some, and this shape compiled before on this model or may
        compile now (`compile_new`)."""
        return self._compiled_blocks and (key in self._compiled_keys or self.compile_new)

    def _capture(self, key: Any, rgb: torch.Tensor, state: MemoryState, anchor_frames: Optional[int]) -> _Graph:
        static_rgb = rgb.clone()
        static_state = state.clone()
        compiled = self.uses_compiled_blocks(key)

        def forward() -> WindowPrediction:
            # Eager blocks unless this shape's compiled code exists (or may be made now): see the
            # module docstring. The capture runs while the window worker waits between two blocks.
            with torch.no_grad(), self.autocast(), (nullcontext() if compiled else eager_regions()):
                pred, _ = self.model.forward_window(rgb_batch(static_rgb), static_state,
                                                    self.options, commit=False, raw_camera=True,
                                                    anchor_frames=anchor_frames)
                # The camera head's SVD stays out of the graph (its error check copies to the host).
                return WindowPrediction(pred.local_points.float(), pred.conf.float(), pred.camera_poses.float(), None)

        graph, out = capture_graph(forward, rgb.device, warm_ups=2)
        self.captures += 1
        if compiled:
            self._compiled_keys.add(key)
            self.compiled_captures += 1
        log.info("provisional pass of shape %s captured as a CUDA graph (%s blocks)", tuple(rgb.shape),
                 "compiled" if compiled else "eager")
        return _Graph(graph, static_rgb, static_state, out, weakref.ref(state))

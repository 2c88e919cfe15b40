"""CUDA graphs of committed windows.

A committed window of the full model is about 4,000 kernels. Compiled blocks launch them from
Python in roughly a third of the window's device time, so alone the GPU stays busy; but the thread
that launches them shares the interpreter with everything else a stream does (taking and resizing
frames, building results), and whenever it falls behind the device idles. One graph replay
launches the whole window at once.

One graph per input shape and memory layout, and only for windows whose memory is complete (every
TTT layer and SWA layer holds a state: from the second window on) and that no TTT reset touches.
A shape is captured the second time it is seen: the first run, eager, compiles its blocks and
times its attention kernels outside any capture. The graph reads its own copies of the input and
of the memory (copied in before every replay) and its outputs, the new memory included, are
cloned out, so nothing a caller keeps is overwritten by the next replay. Graphs are an
optimisation, never a condition: a window that cannot be captured runs eagerly.
"""
from __future__ import annotations

import functools
import logging
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Optional

import torch
from torch import Tensor

from .prediction import WindowPrediction, finish_raw_camera
from .state import MemoryOptions, MemoryState

log = logging.getLogger(__name__)

__all__ = ["WindowGraphs", "capture_graph", "get_or_capture", "graph_autocast"]


def graph_autocast(device_type: str, dtype: Optional[torch.dtype]) -> Callable[[], ContextManager]:
    """The context factory a CUDA graph runs the network in: `dtype` autocast (none for None or
    float32) without autocast's weight-cast cache, whose copies are freed after a capture and their
    memory reused, so that a replay would read garbage weights."""
    if dtype is None or dtype == torch.float32:
        return nullcontext
    return functools.partial(torch.autocast, device_type=device_type, dtype=dtype, cache_enabled=False)


def get_or_capture(graphs: dict, failed: set, key: Any, capture: Callable[[], Any], what: str) -> Optional[Any]:
    """`graphs[key]`, made by `capture()` if missing; None if that fails, and `key` goes into
    `failed` (logged; the caller runs that work eagerly from then on: graphs are an optimisation)."""
    entry = graphs.get(key)
    if entry is None:
        try:
            entry = capture()
        except Exception as err:  # noqa: BLE001 - an optimisation only
            log.warning("%s not captured as a CUDA graph (%s: %s); it runs eagerly", what, type(err).__name__, err)
            failed.add(key)
            return None
        graphs[key] = entry
    return entry


def capture_graph(forward: Callable[[], Any], device: torch.device, warm_ups: int = 1) -> tuple[torch.cuda.CUDAGraph, Any]:
    """Captures `forward()` (which reads and writes only static tensors) as a CUDA graph on
    `device`; returns the graph and the outputs of the captured call (overwritten by every replay).

    It runs `warm_ups` times first, outside the graph on a side stream: library workspaces and
    per-shape kernel choices (attention timing syncs) must exist before capture. The capture is
    thread-local: other threads (window worker, provisional passes, output copies) may go on launching
    and allocating meanwhile."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warm_ups):
            forward()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        out = forward()
    return graph, out


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    x: Tensor  # the graph's input, as `prepare` takes it
    state: MemoryState  # the graph's copy of the incoming memory
    out: WindowPrediction  # raw camera, no points; overwritten by every replay
    new_state: MemoryState  # the memory the window leaves; overwritten by every replay


class WindowGraphs:
    """Replays `model.forward_window(prepare(x), state, options, commit=True)` from CUDA graphs.

    autocast: returns the context the network runs in (bf16 autocast without its weight-cast
        cache, or none). prepare: turns the input `x` into the (1, N, 3, H, W) images the model
        takes, inside the graph (e.g. uint8 -> normalised floats); identity by default.
    """

    def __init__(self, model: torch.nn.Module, options: MemoryOptions,
                 autocast: Callable[[], ContextManager] = nullcontext,
                 prepare: Callable[[Tensor], Tensor] = lambda x: x, max_graphs: int = 2) -> None:
        self.model = model
        self.options = options
        self.autocast = autocast
        self.prepare = prepare
        self.max_graphs = max_graphs
        self._graphs: dict[Any, _Graph] = {}
        self._seen: set = set()
        self._failed: set = set()
        self._lock = threading.Lock()
        self.replays = 0
        self.captures = 0

    def usable_for(self, state: Optional[MemoryState]) -> bool:
        """Whether a window on `state` can replay a graph: every memory layer holds a state and no
        TTT reset is due at this window (it would change the memory inside the window)."""
        if state is None or any(w is None for w in state.ttt) or any(kv is None for kv in state.swa):
            return False
        return not self.options.resets_ttt_at(state.window_index)

    def run(self, x: Tensor, state: Optional[MemoryState],
            finish: bool = True) -> Optional[tuple[WindowPrediction, MemoryState]]:
        """The committed window's (prediction, next memory) for input `x` (on the model's CUDA
        device) after memory `state`, on the current stream, as new tensors; None when no graph
        serves it (the caller runs the window eagerly). finish: False returns the camera head's
        raw output and no points (`finish_raw_camera` completes them; its SVD waits for the device)."""
        if not self.usable_for(state):
            return None
        key = (tuple(x.shape), x.dtype, state.layout())
        with self._lock:
            if key in self._failed:
                return None
            if key not in self._graphs and (key not in self._seen or len(self._graphs) >= self.max_graphs):
                self._seen.add(key)  # the eager run of this shape compiles and times it
                return None
            entry = get_or_capture(self._graphs, self._failed, key, lambda: self._capture(x, state),
                                   f"committed window of shape {tuple(x.shape)}")
            if entry is None:
                return None
            entry.x.copy_(x, non_blocking=True)
            for dst, src in zip(entry.state.tensors(), state.tensors()):
                dst.copy_(src, non_blocking=True)
            entry.graph.replay()
            self.replays += 1
            out = entry.out
            local_points = out.local_points.clone()
            pred = WindowPrediction(local_points, out.conf.clone(), out.camera_poses.clone(), None,
                                    None if out.descriptors is None else out.descriptors.clone())
            new_state = entry.new_state.clone()
        if finish:
            with torch.autocast(x.device.type, enabled=False):  # the SVD in fp32 whatever the caller's autocast
                poses, points = finish_raw_camera(local_points, pred.camera_poses)
            pred = WindowPrediction(local_points, pred.conf, poses, points, pred.descriptors)
        new_state.window_index = state.window_index + 1
        new_state.frames_seen = state.frames_seen + local_points.shape[1]
        return pred, new_state

    @classmethod
    def shared(cls, model: torch.nn.Module, key: Any, make: Callable[[], "WindowGraphs"]) -> "WindowGraphs":
        """The graphs kept on `model` under `key`, made by `make()` the first time: every stream or
        `reconstruct` call on one model replays the same graphs instead of capturing its own."""
        cache = model.__dict__.setdefault("_loger_window_graphs", {})
        if key not in cache:
            cache[key] = make()
        return cache[key]

    def release(self) -> None:
        """Frees the graphs and their memory pools."""
        with self._lock:
            for entry in self._graphs.values():
                entry.graph.reset()
            self._graphs.clear()

    def _forward(self, x: Tensor, state: MemoryState) -> tuple[WindowPrediction, MemoryState]:
        with torch.no_grad(), self.autocast():
            pred, new_state = self.model.forward_window(self.prepare(x), state, self.options, commit=True,
                                                        raw_camera=True)
        # The camera head's SVD stays out of the graph (its error check copies to the host).
        return WindowPrediction(pred.local_points.float(), pred.conf.float(), pred.camera_poses.float(), None,
                                pred.descriptors), new_state

    def _capture(self, x: Tensor, state: MemoryState) -> _Graph:
        static_x = x.clone()
        static_state = state.clone()
        graph, (out, new_state) = capture_graph(lambda: self._forward(static_x, static_state), x.device)
        self.captures += 1
        log.info("committed window of shape %s captured as a CUDA graph", tuple(x.shape))
        return _Graph(graph, static_x, static_state, out, new_state)

"""The streaming reconstructor's state as a session component, and back.

What carries across windows, all of it, so that a restored stream continues exactly as the
original would have (same windows, same memory, same alignment, same scale):

- the network memory (:class:`~loger_core.model.state.MemoryState`: TTT fast weights, SWA cache,
  window counter);
- the window aligner (the previous window's aligned shared frames, its transforms, the TTT-reset
  block transform, the window counter);
- the frames buffered for the next window (the shared overlap frames and any newer ones) as the
  network sees them (uint8 RGB at model resolution) with their stamps, geometry, intrinsics,
  depth and odometry, and the pending predictions of the last window's shared frames (emitted
  if the stream ends there);
- the scale source's samples, the frame counter, the last stamp, the input size and the stats.

Only committed state is captured: with ``async_windows`` the caller drains the worker first
(:meth:`StreamingReconstructor.drain`); a window still in flight is refused. A finished stream
(after ``flush``) is refused too: its last partial window is already merged and cannot be
continued exactly; capture before ``flush``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any, Optional

import numpy as np
import torch

from loger_core.model.prediction import WindowPrediction
from loger_core.model.state import MemoryState
from loger_core.model.windowing import WindowTransform
from loger_core.io.session import SessionComponent, SessionCorruptError, SessionStateError

from .frames import BufferedFrame, CommittedView
from .preprocess import ImageGeometry, PreparedImage

__all__ = ["STREAM_COMPONENT", "capture_stream", "restore_stream", "stream_settings"]

STREAM_COMPONENT = "stream"
_PRED_FIELDS = ("local_points", "conf", "camera_poses", "points")


def stream_settings(rec: Any) -> dict:
    """Settings of ``rec`` that a resumed stream must share (the memory and the alignment were made
    with them): windowing, memory switches, alignment, input size rule and scale source."""
    cfg = rec.config
    return {
        "stream.window_size": cfg.window_size,
        "stream.overlap_size": cfg.overlap_size,
        "stream.reset_every": cfg.reset_every,
        "stream.use_ttt": cfg.use_ttt,
        "stream.use_swa": cfg.use_swa,
        "stream.alignment": rec.alignment,
        "stream.sim3_scale_mode": cfg.sim3_scale_mode,
        "stream.resize_mode": cfg.resize_mode,
        "stream.scale_source": cfg.scale.source,
    }


class _Packer:
    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}

    def put(self, name: str, value: Any) -> str:
        t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
        self.tensors[name] = t.detach().to("cpu", copy=True).contiguous()
        return name


def _put_pred(p: _Packer, prefix: str, pred: WindowPrediction) -> None:
    for name in _PRED_FIELDS:
        p.put(f"{prefix}.{name}", getattr(pred, name))
    if pred.descriptors is not None:  # optional: sessions written before it restore without
        p.put(f"{prefix}.descriptors", pred.descriptors)


def _put_transform(p: _Packer, prefix: str, tf: WindowTransform) -> None:
    p.put(f"{prefix}.R", tf.R)
    p.put(f"{prefix}.t", tf.t)
    p.put(f"{prefix}.scale", tf.scale)


def capture_stream(rec: Any) -> SessionComponent:
    """The committed state of a :class:`~loger_core.stream.StreamingReconstructor` (see module doc).

    Raises SessionStateError while a window is in flight, after ``flush()``, or for a memory state
    this module does not know (a test double's)."""
    if rec.windows_in_flight:
        raise SessionStateError(None, "a window is still running on the worker: drain() the stream first")
    if rec._finished:
        raise SessionStateError(None, "the stream is finished (flush() ran): capture the session before flush()")
    state = rec._state
    if state is not None and not isinstance(state, MemoryState):
        raise SessionStateError(None, f"the model's memory state ({type(state).__name__}) cannot be saved")
    p = _Packer()
    frames: dict[int, int] = {}  # id(BufferedFrame) -> position in the saved list
    frame_meta: list[dict] = []

    def ref(fr) -> int:
        key = id(fr)
        if key not in frames:
            k = len(frame_meta)
            frames[key] = k
            prepared = fr.ready()
            g = prepared.geometry
            p.put(f"frame.{k}.rgb", prepared.rgb)
            meta = {"index": int(fr.index), "stamp_ns": int(fr.stamp_ns), "original_size": list(g.original_size),
                    "model_size": list(g.model_size), "crop": list(g.crop)}
            for name in ("K", "depth", "odom"):
                value = getattr(fr, name)
                meta[name] = value is not None
                if value is not None:
                    p.put(f"frame.{k}.{name}", value)
            frame_meta.append(meta)
        return frames[key]

    meta: dict[str, Any] = {
        "next_index": int(rec._next_index),
        "last_stamp": rec._last_stamp,
        "resolution": list(rec._resolution) if rec._resolution is not None else None,
        "head": int(rec._head),
        "async": bool(rec._async),
        "broken": bool(rec._broken),
        "buffer": [ref(f) for f in rec._buffer],
        "good_tail": [ref(f) for f in rec._good_tail],
        "first_frame": ref(rec._first_frame) if rec._first_frame is not None else None,
        "dtype": str(rec.dtype).removeprefix("torch."),
    }
    if rec._pending is not None:
        tail, pred, rgb, window_index = rec._pending
        meta["pending"] = {"frames": [ref(f) for f in tail], "window_index": int(window_index)}
        _put_pred(p, "pending.pred", pred)
        p.put("pending.rgb", rgb)
    else:
        meta["pending"] = None
    if state is not None:
        meta["memory"] = {
            "window_index": int(state.window_index), "frames_seen": int(state.frames_seen),
            "ttt": [w is not None for w in state.ttt], "swa": [kv is not None for kv in state.swa],
        }
        for j, w in enumerate(state.ttt):
            for i, t in enumerate(w or ()):
                p.put(f"memory.ttt.{j}.{i}", t)
        for j, kv in enumerate(state.swa):
            for i, t in enumerate(kv or ()):
                p.put(f"memory.swa.{j}.{i}", t)
    else:
        meta["memory"] = None
    al = rec._aligner
    meta["aligner"] = {
        "window_index": int(al.window_index), "prev_frames": int(al._prev_frames), "prev": al._prev is not None,
        "block": al._block is not None, "transforms": len(al.transforms),
    }
    if al._prev is not None:
        _put_pred(p, "aligner.prev", al._prev)
    if al._block is not None:
        _put_transform(p, "aligner.block", al._block)
    for i, tf in enumerate(al.transforms):
        _put_transform(p, f"aligner.tf.{i}", tf)
    with rec._scale_lock:
        meta["scale"] = rec._scale.state_dict()
    meta["stats"] = asdict(rec.stats)
    meta["frames"] = frame_meta
    return SessionComponent(p.tensors, json.loads(json.dumps(meta)))


def restore_stream(rec: Any, comp: SessionComponent, path: Optional[str] = None) -> None:
    """Load ``comp`` (from :func:`capture_stream`) into a fresh reconstructor ``rec`` (no frame pushed
    yet). Tensors go to ``rec``'s device. Raises SessionStateError for a used reconstructor and
    SessionCorruptError for a component that does not hold what it should."""
    if rec._next_index != 0 or rec._state is not None or rec._buffer or rec.windows_in_flight:
        raise SessionStateError(path, "the reconstructor has already taken frames: restore into a fresh one")
    t = comp.tensors
    dev = rec.device
    try:
        meta = comp.meta
        saved: list[BufferedFrame] = []
        for k, fm in enumerate(meta["frames"]):
            geometry = ImageGeometry(tuple(fm["original_size"]), tuple(fm["model_size"]), tuple(fm["crop"]))
            prepared = PreparedImage(t[f"frame.{k}.rgb"].numpy().copy(), geometry)
            extra = {name: (t[f"frame.{k}.{name}"].numpy().copy() if fm[name] else None) for name in ("K", "depth", "odom")}
            saved.append(BufferedFrame(int(fm["index"]), int(fm["stamp_ns"]), prepared, extra["K"], extra["depth"], extra["odom"]))

        def pred(prefix: str) -> WindowPrediction:
            descriptors = t.get(f"{prefix}.descriptors")
            return WindowPrediction(*(t[f"{prefix}.{name}"].to(dev) for name in _PRED_FIELDS),
                                    None if descriptors is None else descriptors.to(dev))

        def transform(prefix: str) -> WindowTransform:
            return WindowTransform(t[f"{prefix}.R"].to(dev), t[f"{prefix}.t"].to(dev), t[f"{prefix}.scale"].to(dev))

        # A session of a lower-precision run (bf16 on a GPU) continues on a float32 run (e.g. a CPU)
        # with float32 memory; precisions do not mix inside the network.
        widen = rec.dtype == torch.float32

        def memory(name: str) -> torch.Tensor:
            x = t[name]
            return (x.float() if widen and x.is_floating_point() else x).to(dev)

        state = None
        if meta["memory"] is not None:
            m = meta["memory"]
            ttt = [tuple(memory(f"memory.ttt.{j}.{i}") for i in range(3)) if present else None
                   for j, present in enumerate(m["ttt"])]
            swa = [tuple(memory(f"memory.swa.{j}.{i}") for i in range(2)) if present else None
                   for j, present in enumerate(m["swa"])]
            state = MemoryState(ttt, swa, int(m["window_index"]), int(m["frames_seen"]))
        pending = None
        if meta["pending"] is not None:
            pm = meta["pending"]
            pending = ([saved[i] for i in pm["frames"]], pred("pending.pred"), t["pending.rgb"].to(dev),
                       int(pm["window_index"]))
        am = meta["aligner"]
        prev = pred("aligner.prev") if am["prev"] else None
        block = transform("aligner.block") if am["block"] else None
        transforms = [transform(f"aligner.tf.{i}") for i in range(int(am["transforms"]))]
        buffer = [saved[i] for i in meta["buffer"]]
        good_tail = [saved[i] for i in meta["good_tail"]]
        first = saved[meta["first_frame"]] if meta["first_frame"] is not None else None
        head, broken = int(meta["head"]), bool(meta["broken"])
        scale_state = meta["scale"]
        stats = meta["stats"]
        resolution = tuple(meta["resolution"]) if meta["resolution"] is not None else None
    except (KeyError, IndexError, TypeError, ValueError) as err:
        raise SessionCorruptError(path, f"its stream component is incomplete or malformed ({type(err).__name__}: "
                                  f"{err})") from None
    # The synchronous path keeps the last good window's shared frames at the head of its buffer; the
    # asynchronous one keeps them apart while the buffer runs ahead (see the reconstructor).
    if not meta["async"]:
        good_tail, broken = list(buffer[:head]), False
    if not rec._async and broken:
        buffer, head, broken = good_tail + buffer[head:], len(good_tail), False
    if ttt_or_swa_mismatch(state, rec):
        raise SessionCorruptError(path, "its memory has another number of TTT/SWA layers than the model")
    if resolution is not None and rec.config.resolution is not None and tuple(rec.config.resolution) != resolution:
        from loger_core.io.session import SessionConfigMismatchError

        raise SessionConfigMismatchError(path, f"was made at input size {resolution}, this run uses "
                                         f"{tuple(rec.config.resolution)}")
    rec._state = state
    rec._pending = pending
    al = rec._aligner
    al.window_index = int(am["window_index"])
    al._prev = prev
    al._prev_frames = int(am["prev_frames"])
    al._block = block
    al.transforms.clear()
    al.transforms.extend(transforms)
    rec._buffer = buffer
    rec._head = head
    rec._good_tail = good_tail
    rec._broken = broken
    rec._first_frame = first
    rec._next_index = int(meta["next_index"])
    rec._last_stamp = None if meta["last_stamp"] is None else int(meta["last_stamp"])
    if resolution is not None:  # else not chosen yet: the config's (or the first frame's) as in a fresh stream
        rec._resolution = resolution
    rec._view = CommittedView(state, al.snapshot(), list(good_tail))
    with rec._scale_lock:
        rec._scale.load_state_dict(scale_state)
    known = {f.name for f in fields(rec.stats)}
    for key, value in stats.items():
        if key in known:
            setattr(rec.stats, key, value)


def ttt_or_swa_mismatch(state: Optional[MemoryState], rec: Any) -> bool:
    init = getattr(rec.model, "init_state", None)
    if state is None or init is None:
        return False
    empty = init()
    return len(empty.ttt) != len(state.ttt) or len(empty.swa) != len(state.swa)

"""Cost of mapping sessions: size on disk and time to capture, write (atomic, fsynced), read
(checksummed) and restore.

- ``tiny`` (real): the node core with the tiny model on the CPU at its default input (about 10k
  pixels, window 16) maps --frames random 160x120 frames; then the session is captured on the
  inference thread, written, read back and restored into a fresh core (what a restart does).
- ``loger`` (shapes only, --full): a session holding the full model's memory at 504x280, window 32
  (18 TTT layers of fast weights, 4 SWA layers caching one window of keys/values; float32, and with
  the SWA cache in bfloat16 as under autocast on a GPU) plus a voxel map of --map-points voxels,
  written and read back. The network does not run: the I/O cost depends on the bytes only.

Prints a table and writes JSON (--out).

    python bench/session_io.py                 # tiny only
    python bench/session_io.py --full          # + the full model's memory (about 1.2 GB on disk)
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loger_core.mapping.voxel_map import MapConfig, VoxelMap  # noqa: E402
from loger_core.model import build_model  # noqa: E402
from loger_core.model.config import get_config  # noqa: E402
from loger_core.model.synthetic_weights import fill_deterministic_  # noqa: E402
from loger_core.io.session import (  # noqa: E402
    ModelIdentity, Session, SessionComponent, read_session, save_session, voxel_map_component,
)


def _component_bytes(session: Session) -> dict[str, int]:
    return {name: int(sum(t.numel() * t.element_size() for t in c.tensors.values()))
            for name, c in session.components.items()}


def _time_write_read(path: Path, session: Session) -> tuple[float, float]:
    """Seconds to write `session` to `path` atomically, then to read it back."""
    t0 = time.perf_counter()
    save_session(path, session)
    t_write = time.perf_counter() - t0
    t0 = time.perf_counter()
    read_session(path)
    return t_write, time.perf_counter() - t0


def bench_tiny(frames: int, folder: Path) -> dict:
    from loger_ros.conversions import rosbags_factory
    from loger_ros.mapping_core import MappingCore
    from loger_ros.params import NodeParams
    from loger_core.stream import StreamingReconstructor

    F = rosbags_factory("ros2_humble")
    model = fill_deterministic_(build_model("tiny", device="meta")).to("cpu").eval()
    path = folder / "tiny.loger.safetensors"
    params = NodeParams(model_config="tiny", allow_synthetic_weights=True, device="cpu", provisional_every=0,
                        output_dir=str(folder), session_path=str(path), async_windows="off")
    core = MappingCore(params, F, reconstructor=StreamingReconstructor(params.stream_config(), model=model))
    rng = np.random.default_rng(0)
    t_map = time.perf_counter()
    for i in range(frames):
        stamp = 1_700_000_000_000_000_000 + i * 66_000_000
        hdr = F.make("std_msgs/msg/Header", stamp=F.make("builtin_interfaces/msg/Time", sec=stamp // 10**9,
                                                        nanosec=stamp % 10**9), frame_id="cam")
        rgb = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        core.on_image(F.make("sensor_msgs/msg/Image", header=hdr, height=120, width=160, encoding="rgb8",
                             is_bigendian=0, step=480, data=rgb.reshape(-1)))
        core.process_all()
    t_map = time.perf_counter() - t_map
    t0 = time.perf_counter()
    _, session = core.sessions.capture()
    t_capture = time.perf_counter() - t0
    t_write, t_read = _time_write_read(path, session)
    resumed = NodeParams(**{**params.to_dict(), "resume_session": str(path)})
    t0 = time.perf_counter()
    again = MappingCore(resumed, F, reconstructor=StreamingReconstructor(resumed.stream_config(), model=model))
    t_resume = time.perf_counter() - t0
    assert again.sessions.resumed_from == path and len(again.trajectory()) == len(core.trajectory())
    return {
        "case": "tiny (real node core, CPU)", "frames": frames, "input": list(core.reconstructor.resolution),
        "window": core.window_size, "map_points": len(core.fusion), "mapping_s": t_map,
        "file_bytes": path.stat().st_size, "components_bytes": _component_bytes(session),
        "capture_s": t_capture, "write_s": t_write, "read_s": t_read, "resume_s": t_resume,
    }


def _full_state(swa_dtype: torch.dtype, window: int, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    cfg = get_config("loger")
    heads = cfg.dec_embed_dim // cfg.ttt_head_dim
    dh = cfg.ttt_head_dim * cfg.ttt_inter_multi
    tokens = window * ((size[0] // cfg.patch_size) * (size[1] // cfg.patch_size) + cfg.patch_start_idx)
    head_dim = cfg.dec_embed_dim // cfg.dec_num_heads
    g = torch.Generator().manual_seed(0)
    out = {}
    for j in range(len(cfg.ttt_insert_after)):
        out[f"memory.ttt.{j}.0"] = torch.randn(heads, cfg.ttt_head_dim, dh, generator=g)
        out[f"memory.ttt.{j}.1"] = torch.randn(heads, dh, cfg.ttt_head_dim, generator=g)
        out[f"memory.ttt.{j}.2"] = torch.randn(heads, cfg.ttt_head_dim, dh, generator=g)
    for j in range(len(cfg.attn_insert_after)):
        for i in range(2):
            out[f"memory.swa.{j}.{i}"] = torch.randn(1, cfg.dec_num_heads, tokens, head_dim, generator=g).to(swa_dtype)
    return out


def bench_full(folder: Path, map_points: int, swa_dtype: torch.dtype) -> dict:
    rng = np.random.default_rng(0)
    vmap = VoxelMap(MapConfig(voxel_size=0.05, max_points=map_points + 1))
    side = int(np.ceil(map_points ** (1 / 3)))
    grid = np.stack(np.meshgrid(*(np.arange(side),) * 3, indexing="ij"), -1).reshape(-1, 3)[:map_points]
    vmap.insert((grid * 0.05 + 0.025).astype(np.float32), rng.integers(0, 255, (len(grid), 3), dtype=np.uint8),
                rng.random(len(grid)).astype(np.float32))
    identity = ModelIdentity("loger", get_config("loger").to_dict(), "0" * 64)
    session = Session(identity, {}, {"stream": SessionComponent(_full_state(swa_dtype, 32, (504, 280)), {}),
                                     "map": voxel_map_component(vmap)})
    path = folder / "full.loger.safetensors"
    t_write, t_read = _time_write_read(path, session)
    size = path.stat().st_size
    path.unlink()
    return {
        "case": f"loger memory at 504x280 / window 32, SWA cache {str(swa_dtype).removeprefix('torch.')} (shapes only)",
        "map_points": len(vmap), "file_bytes": size, "components_bytes": _component_bytes(session),
        "capture_s": None, "write_s": t_write, "read_s": t_read, "resume_s": None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--full", action="store_true", help="also the full model's memory (about 1.2 GB written)")
    ap.add_argument("--map-points", type=int, default=2_000_000)
    ap.add_argument("--dir", type=Path, default=None, help="folder for the files (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=Path("bench_session_io.json"))
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        rows.append(bench_tiny(args.frames, folder))
        if args.full:
            for dtype in (torch.float32, torch.bfloat16):
                rows.append(bench_full(folder, args.map_points, dtype))
    print(f"{'case':<70} {'MiB':>8} {'capture s':>10} {'write s':>8} {'read s':>7} {'resume s':>9}")
    for r in rows:
        def f(v):
            return "-" if v is None else f"{v:.3f}"
        print(f"{r['case']:<70} {r['file_bytes'] / 2**20:>8.1f} {f(r['capture_s']):>10} {f(r['write_s']):>8} "
              f"{f(r['read_s']):>7} {f(r['resume_s']):>9}")
        print("    components (MiB): " + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in r["components_bytes"].items()))
    result = {"machine": platform.platform(), "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
              "rows": rows}
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

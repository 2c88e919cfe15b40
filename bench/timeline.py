"""Where the GPU idles during a run: a `torch.profiler` Chrome trace reduced to busy / idle time.

`gpu_timeline(trace, label)` takes the trace of a run wrapped in `record_function(label)` and returns
the run's wall time (the label's CPU span), the union of device activity in it (kernels, memcpy,
memset), device time by kind (attention, matmul, ..., host->device and device->host copies), and the
largest idle gaps, each with the CUDA runtime calls and CPU ops the host was in while the device
waited (a `cudaStreamSynchronize` there is a host sync; a run of `cudaLaunchKernel` is launch-bound).

    with torch.profiler.profile(activities=[CPU, CUDA]) as prof, record_function("run"):
        run()
    prof.export_chrome_trace("t.json"); print(format_timeline(gpu_timeline("t.json", "run")))
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Union

DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
# Kernel name fragments -> kind, first match wins (cuBLAS "nvjet", cuDNN / flash attention, Inductor).
KERNEL_KINDS = (
    ("attention", ("sdpa", "flash", "fmha", "attention")),
    ("matmul", ("nvjet", "gemm", "cutlass", "xmma", "cublas")),
    ("layer norm", ("layer_norm",)),
    ("fused (triton)", ("triton",)),
    ("copy / cat", ("copy", "cat", "elementwise_kernel_with_index", "direct_copy")),
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, frags in KERNEL_KINDS if any(f in low for f in frags)), "other")


def _device_kind(event: dict) -> str:
    if event.get("cat") == "gpu_memcpy":
        name = event.get("name", "")
        return "copy HtoD" if "HtoD" in name else "copy DtoH" if "DtoH" in name else "copy DtoD"
    if event.get("cat") == "gpu_memset":
        return "memset"
    return kernel_kind(event.get("name", ""))


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def gpu_timeline(trace: Union[str, Path, dict], label: str, top_gaps: int = 8, min_gap_us: float = 200.0) -> dict:
    """Busy / idle summary of the device inside the CPU span of `record_function(label)`. Times in ms."""
    if not isinstance(trace, dict):
        trace = json.loads(Path(trace).read_text())
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "dur" in e]
    spans = [e for e in events if e.get("name") == label and e.get("cat") in ("user_annotation", "cpu_op")]
    if not spans:
        raise ValueError(f"no CPU span named {label!r} in the trace")
    span = max(spans, key=lambda e: e["dur"])
    t0, t1 = float(span["ts"]), float(span["ts"]) + float(span["dur"])
    device = [e for e in events if e.get("cat") in DEVICE_CATS and t0 <= float(e["ts"]) < t1]
    by_kind: dict[str, float] = {}
    for e in device:
        by_kind[_device_kind(e)] = by_kind.get(_device_kind(e), 0.0) + float(e["dur"]) / 1000
    busy = _merge([(float(e["ts"]), min(float(e["ts"]) + float(e["dur"]), t1)) for e in device])
    gaps = []
    cursor = t0
    for start, end in busy + [(t1, t1)]:
        if start - cursor >= min_gap_us:
            gaps.append((cursor, start))
        cursor = max(cursor, end)
    host = [e for e in events if e.get("cat") in ("cuda_runtime", "cpu_op", "python_function") and e is not span]
    described = []
    for start, end in sorted(gaps, key=lambda g: g[0] - g[1])[:top_gaps]:
        inside: dict[str, float] = {}
        for e in host:
            s, d = float(e["ts"]), float(e["dur"])
            overlap = min(end, s + d) - max(start, s)
            if overlap > 0:
                inside[e["name"]] = inside.get(e["name"], 0.0) + overlap / 1000
        ranked = sorted(inside.items(), key=lambda kv: -kv[1])[:4]
        described.append({"at_ms": (start - t0) / 1000, "ms": (end - start) / 1000,
                          "host": [{"name": n[:80], "ms": round(ms, 3)} for n, ms in ranked]})
    busy_ms = sum(e - s for s, e in busy) / 1000
    wall_ms = (t1 - t0) / 1000
    return {"wall_ms": wall_ms, "busy_ms": busy_ms, "idle_ms": wall_ms - busy_ms,
            "device_ms_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
            "largest_gaps": described}


def format_timeline(name: str, t: dict) -> str:
    lines = [f"{name}: wall {t['wall_ms']:.1f} ms, device busy {t['busy_ms']:.1f} ms, idle {t['idle_ms']:.1f} ms "
             f"({100 * t['idle_ms'] / max(t['wall_ms'], 1e-9):.0f}%)"]
    lines += [f"  {ms:8.2f} ms  {kind}" for kind, ms in t["device_ms_by_kind"].items()]
    for g in t["largest_gaps"]:
        host = ", ".join(f"{h['name']} {h['ms']:.1f}" for h in g["host"])
        lines.append(f"  idle {g['ms']:6.2f} ms at {g['at_ms']:7.1f} ms  host: {host}")
    return "\n".join(lines)

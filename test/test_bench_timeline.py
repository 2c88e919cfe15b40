"""bench/timeline.py: device busy / idle time and idle gaps from a Chrome trace (synthetic traces)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from timeline import format_timeline, gpu_timeline, kernel_kind  # noqa: E402


def _x(name, cat, ts, dur):
    return {"ph": "X", "name": name, "cat": cat, "ts": ts, "dur": dur}


def _trace():
    return {"traceEvents": [
        _x("run", "user_annotation", 1000, 10_000),  # the labelled span: 10 ms
        _x("nvjet_gemm_bf16", "kernel", 1000, 2000),
        _x("cudnn_sdpa_fwd", "kernel", 2500, 1500),  # overlaps the gemm: busy counted once
        _x("Memcpy DtoH (Device -> Pageable)", "gpu_memcpy", 4000, 1000),
        _x("cudaStreamSynchronize", "cuda_runtime", 5000, 4000),  # the host waits in the 4 ms gap
        _x("triton_poi_fused_add_0", "kernel", 9000, 2500),  # ends after the span: clipped
        _x("before", "kernel", 0, 500),  # outside the span: ignored
        _x("Memcpy HtoD (Pageable -> Device)", "gpu_memcpy", 11_500, 100),  # after the span
    ]}


def test_busy_idle_and_gaps_inside_the_labelled_span():
    t = gpu_timeline(_trace(), "run", min_gap_us=200)
    assert t["wall_ms"] == pytest.approx(10.0)
    assert t["busy_ms"] == pytest.approx(6.0)  # 1-5 ms and 9-11 ms (the last kernel clipped at 11 ms)
    assert t["idle_ms"] == pytest.approx(4.0)
    assert t["device_ms_by_kind"] == pytest.approx({"matmul": 2.0, "attention": 1.5, "copy DtoH": 1.0,
                                                   "fused (triton)": 2.5})
    (gap,) = t["largest_gaps"]
    assert gap["at_ms"] == pytest.approx(4.0) and gap["ms"] == pytest.approx(4.0)
    assert gap["host"][0]["name"] == "cudaStreamSynchronize"
    text = format_timeline("x", t)
    assert "idle 4.0 ms (40%)" in text and "host: cudaStreamSynchronize 4.0" in text


def test_missing_label_and_kernel_kinds():
    with pytest.raises(ValueError, match="no CPU span"):
        gpu_timeline(_trace(), "other")
    assert kernel_kind("void at::native::layer_norm_kernel") == "layer norm"
    assert kernel_kind("sm90_xmma_gemm") == "matmul"
    assert kernel_kind("gatherKthValue") == "other"

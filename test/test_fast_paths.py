"""The GPU fast paths (`loger_core.model.fast_paths`) against the eager reference, on the CPU.

Each optimisation is checked where both it and its reference run on the CPU:
- bf16 weights under bf16 autocast: bitwise equal to fp32 weights under the same autocast (autocast
  casts those weights to bf16 at every call, so storing them in bf16 changes no arithmetic);
- the MLPs' GELU in the matmul epilogue: on the CPU the exact GELU, bitwise;
- the "fastest" attention policy: off CUDA it is the reference kernel, bitwise;
- `torch.compile` of the blocks and TTT layers: equal to eager fp32 to rounding on a first window
  (later windows pass through the bf16 Newton-Schulz step of the TTT update, which amplifies
  last-bit differences; the golden test covers multi-window parity of the reference path).
"""
import contextlib
import copy

import pytest
import torch

from loger_core.model import MemoryOptions, build_model
from loger_core.model.attention import CHOOSER, attention, reference_attention
from loger_core.model.fast_paths import FastPathConfig, default_fast_paths, enable_fast_paths
from loger_core.model.layers import Mlp, linear_gelu
from loger_core.stream import StreamConfig

OPTS = MemoryOptions(window_size=4, overlap_size=1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("tiny")
    for g in [*model.ttt_gate_projs, *model.swa_gate_projs]:  # memory branches carry real values
        torch.nn.init.constant_(g.bias, 0.5)
    return model


def run(model, clip, amp: bool, windows=((0, 4), (3, 7))):
    preds, state = [], None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        for s, e in windows:
            pred, state = model.forward_window(clip[:, s:e], state, OPTS)
            preds.append(pred)
    return preds


def clip(n=7):
    return torch.rand(1, n, 3, 56, 84, generator=torch.Generator().manual_seed(1))


def test_bf16_weights_are_bitwise_equal_under_autocast(tiny):
    x = clip()
    fast = enable_fast_paths(copy.deepcopy(tiny), FastPathConfig(attention="fastest", bf16_weights=True, compile=False))
    dtypes = {name: p.dtype for name, p in fast.named_parameters()}
    assert dtypes["decoder.0.attn.qkv.weight"] == torch.bfloat16
    assert dtypes["ttt_layers.0.lr_fc.weight"] == torch.float32  # runs with autocast off
    assert dtypes["point_head.proj.weight"] == torch.float32
    assert dtypes["decoder.0.norm1.weight"] == torch.float32  # norms are not autocast-cast
    for a, b in zip(run(tiny, x, amp=True), run(fast, x, amp=True)):
        for key in ("local_points", "conf", "camera_poses"):
            assert torch.equal(getattr(a, key), getattr(b, key)), key


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16_autocast"])
def test_fused_gelu_is_bitwise_the_mlp_on_the_cpu(tiny, amp):
    """On the CPU the epilogue GELU is the exact one, so the fused MLPs must equal the reference
    bitwise (on CUDA it is cuBLASLt's tanh form; the golden test bounds the bf16 fast path there)."""
    x = clip()
    fast = enable_fast_paths(copy.deepcopy(tiny), FastPathConfig(attention="reference", bf16_weights=False,
                                                                 compile=False, fused_gelu=True))
    assert all(m.fused_gelu for m in fast.modules() if isinstance(m, Mlp))
    assert not any(m.fused_gelu for m in tiny.modules() if isinstance(m, Mlp))
    for a, b in zip(run(tiny, x, amp=amp), run(fast, x, amp=amp)):
        for key in ("local_points", "conf", "camera_poses"):
            assert torch.equal(getattr(a, key), getattr(b, key)), key


def test_linear_gelu_keeps_leading_shape_and_autocast_dtype():
    fc = torch.nn.Linear(8, 16)
    x = torch.randn(2, 3, 5, 8)
    torch.testing.assert_close(linear_gelu(x, fc), torch.nn.functional.gelu(fc(x)), rtol=0, atol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = linear_gelu(x, fc)
    assert y.shape == (2, 3, 5, 16) and y.dtype == torch.bfloat16


def test_fastest_attention_is_the_reference_kernel_off_cuda():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 50, 16, generator=g) for _ in range(3))
    before = dict(CHOOSER.choices)  # CUDA tests that ran earlier in this process may have filled it
    assert torch.equal(attention(q, k, v, "fastest"), reference_attention(q, k, v))
    with pytest.raises(ValueError, match="policy"):
        attention(q, k, v, "quickest")
    assert CHOOSER.choices == before  # nothing was timed on the CPU


def test_compiled_blocks_equal_eager_on_a_first_window(tiny):
    x = clip(4)
    fast = enable_fast_paths(copy.deepcopy(tiny), FastPathConfig(attention="fastest", bf16_weights=False, compile=True))
    (ref,), (got,) = run(tiny, x, False, [(0, 4)]), run(fast, x, False, [(0, 4)])
    for key in ("local_points", "conf", "camera_poses"):
        torch.testing.assert_close(getattr(got, key), getattr(ref, key), rtol=1e-4, atol=1e-5)
    # The memory it hands on: the SWA cache to rounding. The TTT fast weights pass through the
    # bf16 Newton-Schulz orthogonalisation, whose bf16 roundings flip on last-bit input changes:
    # the eager path itself moves them by about 1% for a 1e-7 change of the input. So the compiled
    # path must stay within 3x that self-calibrated sensitivity.
    noise = 1e-7 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        _, s_ref = tiny.forward_window(x, None, OPTS)
        _, s_pert = tiny.forward_window(x + noise, None, OPTS)
        _, s_got = fast.forward_window(x, None, OPTS)
    for a, b in zip([t for kv in s_ref.swa for t in kv], [t for kv in s_got.swa for t in kv]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)

    def ttt_diff(s):
        return max(((a - b).norm() / a.norm()).item() for wa, wb in zip(s_ref.ttt, s.ttt) for a, b in zip(wa, wb))

    sensitivity = ttt_diff(s_pert)
    assert 0 < sensitivity < 0.05
    assert ttt_diff(s_got) <= 3 * sensitivity


def test_fast_paths_once_per_model_and_defaults(tiny):
    model = copy.deepcopy(tiny)
    cfg = FastPathConfig(attention="fastest", bf16_weights=False, compile=False)
    assert enable_fast_paths(model, cfg) is model
    assert enable_fast_paths(model, cfg) is model  # same config: no-op
    with pytest.raises(RuntimeError, match="already enabled"):
        enable_fast_paths(model, FastPathConfig())
    assert default_fast_paths(torch.device("cpu"), torch.float32) == FastPathConfig.off()
    assert default_fast_paths(torch.device("cuda"), torch.bfloat16) == FastPathConfig()
    assert default_fast_paths(torch.device("cuda"), torch.float32) == FastPathConfig.off()
    assert StreamConfig(model="tiny", device="cpu").fast_path_config() == FastPathConfig.off()
    assert StreamConfig(model="tiny", device="cpu", fast_paths="on").fast_path_config() == FastPathConfig()
    with pytest.raises(ValueError, match="attention"):
        FastPathConfig(attention="quickest")


def test_compiled_regions_are_entered_by_one_thread_at_a_time():
    """A compiled call waits while another thread is inside a compiled region (it may be tracing a
    new shape, which would make the call fail); an eager-regions call never waits."""
    import threading

    from loger_core.model.fast_paths import _COMPILED_CALLS, _compiled_or_eager, eager_regions

    forward = _compiled_or_eager(lambda x: x * 2 + 1, compile_fn=lambda f: torch.compile(f, backend="eager"))
    x = torch.arange(4.0)
    forward(x)  # compiled once, on this thread
    done = {}

    def call(name, eager=False):
        with eager_regions() if eager else contextlib.nullcontext():
            done[name] = torch.equal(forward(x), x * 2 + 1)

    with _COMPILED_CALLS:  # as if another thread were inside a compiled block
        waiting = threading.Thread(target=call, args=("compiled",))
        eager = threading.Thread(target=call, args=("eager", True))
        waiting.start(), eager.start()
        eager.join(5)
        waiting.join(0.3)
        assert done == {"eager": True} and waiting.is_alive()
    waiting.join(5)
    assert done == {"eager": True, "compiled": True}


def test_eager_regions_keep_a_thread_out_of_compiled_code():
    """A provisional pass on the main thread must never enter compiled code (or trace) while the
    window worker compiles: inside `eager_regions()` only that thread runs the eager original."""
    import threading

    from loger_core.model.fast_paths import _compiled_or_eager, eager_regions

    traced: list[tuple[str, bool]] = []

    def block(x):
        traced.append((threading.current_thread().name, torch.compiler.is_compiling()))
        return x * 2 + 1

    forward = _compiled_or_eager(block, compile_fn=lambda f: torch.compile(f, backend="eager"))
    x = torch.arange(4.0)

    def provisional():
        with eager_regions():
            assert torch.equal(forward(x), x * 2 + 1)

    t = threading.Thread(target=provisional, name="provisional")
    t.start()
    t.join()
    assert traced == [("provisional", False)]
    assert torch.equal(forward(x), x * 2 + 1)  # this thread: compiled (dynamo traces `block`)
    assert ("MainThread", True) in traced
    traced.clear()
    with eager_regions():
        forward(x)
    assert traced == [("MainThread", False)]
    forward(x)  # the region ended: back to the compiled code (its recorded side effect says so)
    assert traced == [("MainThread", False), ("MainThread", True)]

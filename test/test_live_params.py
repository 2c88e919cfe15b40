"""Parameters changed while the node maps (``ros2 param set``): the low-latency passes' knobs apply
from the next frame, every other change is refused with the reason, bad values are refused and change
nothing (ROS-free: the rule, the core and the stream; the rclpy callback is tested in test/ros/)."""
from __future__ import annotations

import numpy as np
import pytest

from loger_core.stream import StreamConfig, StreamingReconstructor
from loger_core.stream.errors import StreamInputError
from loger_ros.conversions import rosbags_factory
from loger_ros.mapping_core import MappingCore
from loger_ros.params import LIVE_PARAMETERS, NodeParams, ParamsError, parameter_update

H, W = 42, 56


def test_running_node_takes_only_the_live_parameters():
    current = NodeParams()
    new = parameter_update(current, {"provisional_every": 2, "provisional_budget": 0.8, "use_sim_time": True}, running=True)
    assert (new.provisional_every, new.provisional_budget) == (2, 0.8)
    assert new.window_size == current.window_size
    with pytest.raises(ParamsError, match="window_size: only read at start-up") as err:
        parameter_update(current, {"window_size": 8, "provisional_every": 2}, running=True)
    assert all(name in str(err.value) for name in LIVE_PARAMETERS)
    # The same value again is no change.
    assert parameter_update(current, {"window_size": current.window_size}, running=True) == current
    with pytest.raises(ParamsError, match="provisional_budget"):
        parameter_update(current, {"provisional_budget": 2.0}, running=True)


def test_a_node_that_is_not_running_takes_any_valid_change():
    new = parameter_update(NodeParams(), {"window_size": 8, "image_topic": "/cam/image"}, running=False)
    assert (new.window_size, new.image_topic) == (8, "/cam/image")


def test_stream_applies_new_pass_settings_from_the_next_frame(tiny):
    cfg = StreamConfig(model="tiny", device="cpu", resolution=(W, H), window_size=8, overlap_size=2, provisional_every=0,
                       provisional_budget=1.0)
    rec = StreamingReconstructor(cfg, tiny)
    clip = np.random.default_rng(0).integers(0, 256, size=(24, H, W, 3), dtype=np.uint8)
    before = [r for i in range(12) for r in rec.push(clip[i], 1000 + i) if r.provisional]
    assert before == []
    rec.set_provisional(every=1, anchors=1)
    after = [r for i in range(12, 24) for r in rec.push(clip[i], 1000 + i) if r.provisional]
    assert rec.config.provisional_every == 1 and rec.config.provisional_anchors == 1
    # A pass for (nearly) every new frame now; frames that complete a window get committed poses instead.
    assert {r.index for r in after} <= set(range(12, 24)) and len(after) >= 8
    with pytest.raises(StreamInputError, match="provisional_budget"):
        rec.set_provisional(budget=0.0)
    assert rec.config.provisional_budget == 1.0  # a refused change leaves the stream as it was


def test_core_hands_live_parameters_to_its_stream(tiny):
    F = rosbags_factory("ros2_humble")
    params = NodeParams(model_config="tiny", allow_synthetic_weights=True, device="cpu", input_width=W, input_height=H,
                        window_size=8, overlap_size=2, provisional_every=4, async_windows="off")

    class Log:
        def debug(self, text):
            pass

        info = warning = error = debug

    stream = StreamingReconstructor(params.stream_config(), tiny)
    core = MappingCore(params, F, reconstructor=stream, logger=Log())
    new = parameter_update(core.params, {"provisional_every": 2, "provisional_anchors": 1}, running=True)
    core.apply_live_params(new)
    assert (stream.config.provisional_every, stream.config.provisional_anchors) == (2, 1)
    assert core.params.provisional_every == 2

"""The one commit path (loger_core.pipeline.Mapper) and its back-end hook (FrameConsumer)."""
from __future__ import annotations

import numpy as np
import pytest

from loger_core.mapping.voxel_map import MapConfig
from loger_core.pipeline import CommittedFrame, FrameInput, Mapper, MappingPipeline, PoseCorrection, RecordEmitter
from loger_core.pipeline.map_fusion import MapFusion
from loger_ros.params import NodeParams
from test_node_core import FakeStream, ListLogger, image_msg, make_core, pose_matrix, stamp


class Recorder:
    """A dummy back end: records what it is offered; hands back a correction when told to."""

    def __init__(self, correction=None):
        self.frames: list[CommittedFrame] = []
        self.correction = correction

    def on_committed(self, frame: CommittedFrame) -> None:
        self.frames.append(frame)

    def poll_correction(self):
        correction, self.correction = self.correction, None
        return correction


def _params():
    return NodeParams(allow_synthetic_weights=True, queue_size=64, window_size=4, provisional_budget=1.0,
                      overlap_size=1, voxel_size=0.01)


def _rgb(i: int) -> np.ndarray:
    return np.full((12, 16, 3), (i * 20) % 256, np.uint8)


def test_a_ros_free_pipeline_offers_every_committed_frame_once_in_order_with_its_image():
    consumer = Recorder()
    pipe = MappingPipeline(_params(), RecordEmitter(), reconstructor=FakeStream(), logger=ListLogger(),
                           consumer=consumer)
    for i in range(11):
        pipe.on_frame(FrameInput(stamp(i), _rgb(i)))
        pipe.process_all()
    pipe.flush()
    stamps = [f.result.stamp_ns for f in consumer.frames]
    assert stamps == [stamp(i) for i in range(11)] == list(pipe.trajectory("camera").stamps_ns)
    for i, frame in enumerate(consumer.frames):
        np.testing.assert_array_equal(frame.image, _rgb(i))
        assert not frame.result.provisional
        np.testing.assert_allclose(frame.T_map_cam, pipe.trajectory("camera").poses[i])
    assert not pipe.mapper._images  # the image buffer is empty once everything is committed


def test_the_ros_core_offers_the_decoded_images_and_without_a_consumer_buffers_nothing():
    core = make_core()
    consumer = Recorder()
    core.mapper.consumer = consumer
    for i in range(6):
        core.on_image(image_msg(i))
        core.process_all()
    core.flush()
    assert [f.result.stamp_ns for f in consumer.frames] == [stamp(i) for i in range(6)]
    for i, frame in enumerate(consumer.frames):
        np.testing.assert_array_equal(frame.image, _rgb(i))
    plain = make_core()
    for i in range(6):
        plain.on_image(image_msg(i))
        plain.process_all()
        assert not plain.mapper._images
    plain.flush()
    np.testing.assert_array_equal(plain.map_snapshot()[0], core.map_snapshot()[0])


def _fusion():
    return MapFusion(MapConfig(voxel_size=0.05), None, "map", 0, ListLogger(), strict=True)


def _results(n=5):
    stream = FakeStream(window=n + 1, overlap=1)
    out = []
    for i in range(n + 1):
        out += stream.push(_rgb(i), stamp(i), provisional=False)
    return [r for r in out if not r.provisional]


@pytest.mark.parametrize("by_stamp", [False, True])
def test_a_correction_moves_the_trajectory_and_refuses_the_map(by_stamp):
    results = _results()
    assert len(results) == 5
    T = pose_matrix(x=1.0, y=-2.0, yaw_deg=30.0)
    correction = (PoseCorrection(poses={r.stamp_ns: T @ r.T_world_cam for r in results}) if by_stamp
                  else PoseCorrection(transform=T))
    consumer = Recorder()
    mapper = Mapper(_fusion(), consumer=consumer)
    mapper.commit(results[:4])
    consumer.correction = correction
    mapper.commit(results[4:])
    mapper.fusion.run_pending()
    # Reference: the same frames moved by T before fusion.
    ref = Mapper(_fusion())
    moved = []
    for r in results:
        r2 = type(r)(**{**r.__dict__, "T_world_cam": T @ r.T_world_cam,
                        "points": (r.points.astype(np.float64) @ T[:3, :3].T + T[:3, 3]).astype(np.float32)})
        moved.append(r2)
    ref.commit(moved)
    ref.fusion.run_pending()
    np.testing.assert_allclose(mapper.trajectory().poses, ref.trajectory().poses, atol=1e-12)
    a, b = mapper.fusion.snapshot(), ref.fusion.snapshot()
    np.testing.assert_allclose(np.sort(a[0], axis=0), np.sort(b[0], axis=0), atol=1e-5)
    assert [f.result.stamp_ns for f in consumer.frames] == [r.stamp_ns for r in results]


def test_the_mapper_skips_provisional_results_and_needs_a_fusion():
    with pytest.raises(ValueError):
        Mapper()
    mapper = Mapper(_fusion())
    r = _results(2)[0]
    provisional = type(r)(**{**r.__dict__, "provisional": True})
    assert mapper.commit([provisional]) == -1 and len(mapper) == 0


class LoopingBackEnd(Recorder):
    """A back end that, after the 6th frame, moves the world by a known similarity and reports a loop."""

    provides_clouds = True

    def __init__(self):
        super().__init__()
        S = np.eye(4)
        S[:3, 3] = (0.5, 0.0, 0.0)
        self.S = S
        self.closed = False

    def poll_correction(self):
        if len(self.frames) >= 6 and not self.closed:
            self.closed = True
            return PoseCorrection(transform=self.S)
        return None

    def loop_segments(self):
        return np.array([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]]) if self.closed else np.zeros((0, 2, 3))

    def stats(self):
        return {"keyframes": len(self.frames), "loop_closures": int(self.closed)}


def test_a_back_end_correction_goes_into_map_to_odom_and_its_loops_are_published_as_markers():
    consumer = LoopingBackEnd()
    pipe = MappingPipeline(NodeParams(allow_synthetic_weights=True, queue_size=64, window_size=4, provisional_budget=1.0,
                                      overlap_size=1, voxel_size=0.01, provisional_every=0),
                           RecordEmitter(), reconstructor=FakeStream(), logger=ListLogger(), consumer=consumer)
    records = []
    for i in range(12):
        pipe.on_frame(FrameInput(stamp(i), _rgb(i)))
        records += pipe.process_all()
    records += pipe.flush()
    odom = [r for r in records if r.channel == "odom"]
    tf = [r for r in records if r.channel == "tf"]
    markers = [r for r in records if r.channel == "loop_closures"]
    assert markers and markers[-1].fields["segments"].shape == (1, 2, 3)
    # The loop's ends in the map frame: the network world's points through T_map_world.
    T = pipe.tracker.T_map_world
    np.testing.assert_allclose(markers[-1].fields["segments"][0, 1], T[:3, :3] @ [1.0, 0.0, 0.0] + T[:3, 3])
    # map -> odom jumped by the correction; odom -> base_link stayed continuous (REP-105).
    map_odom = [item for r in tf for item in r.fields["items"] if item[1] == "map" and item[2] == "odom"]
    assert any(np.linalg.norm(item[3][:3, 3]) > 0.4 for item in map_odom)
    steps = [np.linalg.norm(b.fields["T"][:3, 3] - a.fields["T"][:3, 3]) for a, b in zip(odom[:-1], odom[1:])]
    assert max(steps) < 0.4  # FakeStream's motion per frame is far below the 0.5 correction
    # The trajectory after the correction is moved by it.
    traj = pipe.trajectory("camera")
    assert len(traj) == 12

"""Streaming reconstruction: frames in one at a time, poses / depth / world points out as each
window of the LoGeR network completes, with bounded memory. May import: ``model``, ``io``,
``mapping``.

    from loger_core.stream import StreamConfig, StreamingReconstructor
    rec = StreamingReconstructor(StreamConfig(model="loger_star", checkpoint="ckpts/LoGeR_star/latest.pt"))
    results = rec.push(rgb_uint8, stamp_ns)   # list[FrameResult], often empty
    results += rec.flush()                    # end of the sequence
"""
from .config import DEMO_PIXEL_LIMIT, DEMO_RESOLUTION, SCALE_SOURCES, ScaleConfig, StreamConfig
from .errors import StreamInputError
from .intrinsics import estimate_intrinsics, model_to_original, original_to_model
from .model_loading import SYNTHETIC_WEIGHTS_WARNING, load_stream_model
from .preprocess import ImageGeometry, PreparedImage, demo_resolution, prepare_image, resample_depth
from .reconstructor import StreamingReconstructor, reconstruct_sequence
from .results import FrameResult, StreamStats
from .scale import ScaleEstimate, ScaleObservation, make_scale_source
from .warm_up import WarmUpReport, warm_up, warm_up_frames, warm_up_wanted

__all__ = [
    "WarmUpReport",
    "warm_up",
    "warm_up_frames",
    "warm_up_wanted",
    "DEMO_PIXEL_LIMIT", "DEMO_RESOLUTION", "SCALE_SOURCES", "FrameResult", "ImageGeometry", "PreparedImage",
    "SYNTHETIC_WEIGHTS_WARNING", "ScaleConfig", "ScaleEstimate", "ScaleObservation", "StreamConfig",
    "StreamInputError", "StreamStats", "StreamingReconstructor", "demo_resolution", "estimate_intrinsics",
    "load_stream_model", "make_scale_source", "model_to_original", "original_to_model", "prepare_image",
    "reconstruct_sequence", "resample_depth",
]

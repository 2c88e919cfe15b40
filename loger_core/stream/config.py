"""Configuration of the streaming reconstructor (typed, validated dataclasses).

Every invalid value raises :class:`StreamInputError` naming the field and the value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import torch

from loger_core.model.config import CONFIGS
from loger_core.model.windowing import ALIGNMENTS, SCALE_MODES

from .errors import StreamInputError

SCALE_SOURCES = ("none", "depth", "odometry", "fixed")
RESIZE_MODES = ("resize", "crop")
OUT_OF_ORDER_POLICIES = ("drop", "raise")
FAST_PATH_MODES = ("auto", "on", "off")
ASYNC_WINDOW_MODES = ("auto", "on", "off")
CUDA_GRAPH_MODES = ("auto", "on", "off")
PROVISIONAL_OUTPUTS = ("pose", "full")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The authors' demo keeps the total pixel count of the network input under this limit when no
# target resolution is given.
DEMO_PIXEL_LIMIT = 255_000
DEMO_RESOLUTION = (504, 280)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ScaleConfig:
    """Where metric scale comes from.

    Attributes:
        source: 'none' (model scale, factor 1), 'depth' (robust median ratio of a metric depth
            image to the predicted depth over valid pixels), 'odometry' (ratio of an external
            odometry's displacement to the predicted camera displacement) or 'fixed' (`factor`).
        factor: the scale for source 'fixed' (> 0).
        depth_range_m: (min, max) sensor depths in metres that count as valid.
        depth_unit_m: metres per unit of integer (e.g. uint16 millimetre) depth images.
        min_valid_pixels: a depth frame with fewer valid pixels gives no sample.
        min_displacement_m: odometry displacement between two samples (so that noise on short
            baselines does not dominate the ratio).
        history: number of most recent per-frame samples the estimate is the median of (bounded
            memory; older samples are forgotten, so the estimate follows slow scale drift).
        freeze_after: 0 keeps updating; N > 0 freezes the estimate once N samples were taken, so
            that every later frame gets exactly the same factor.
    """

    source: str = "none"
    factor: float = 1.0
    depth_range_m: tuple[float, float] = (0.1, 50.0)
    depth_unit_m: float = 0.001
    min_valid_pixels: int = 50
    min_displacement_m: float = 0.05
    history: int = 200
    freeze_after: int = 0

    def __post_init__(self) -> None:
        if self.source not in SCALE_SOURCES:
            raise StreamInputError(f"ScaleConfig.source must be one of {SCALE_SOURCES}, got {self.source!r}")
        if not _is_number(self.factor) or self.factor <= 0:
            raise StreamInputError(f"ScaleConfig.factor must be a finite number > 0, got {self.factor!r}")
        r = self.depth_range_m
        if not (isinstance(r, (tuple, list)) and len(r) == 2 and all(_is_number(v) for v in r) and 0 <= r[0] < r[1]):
            raise StreamInputError(f"ScaleConfig.depth_range_m must be (min, max) with 0 <= min < max, got {r!r}")
        self.depth_range_m = (float(r[0]), float(r[1]))
        if not _is_number(self.depth_unit_m) or self.depth_unit_m <= 0:
            raise StreamInputError(f"ScaleConfig.depth_unit_m must be a finite number > 0, got {self.depth_unit_m!r}")
        if not _is_int(self.min_valid_pixels) or self.min_valid_pixels < 1:
            raise StreamInputError(f"ScaleConfig.min_valid_pixels must be an integer >= 1, got {self.min_valid_pixels!r}")
        if not _is_number(self.min_displacement_m) or self.min_displacement_m <= 0:
            raise StreamInputError(f"ScaleConfig.min_displacement_m must be a finite number > 0, got {self.min_displacement_m!r}")
        if not _is_int(self.history) or self.history < 1:
            raise StreamInputError(f"ScaleConfig.history must be an integer >= 1, got {self.history!r}")
        if not _is_int(self.freeze_after) or self.freeze_after < 0:
            raise StreamInputError(f"ScaleConfig.freeze_after must be an integer >= 0, got {self.freeze_after!r}")


@dataclass
class StreamConfig:
    """Everything that governs a :class:`~loger_core.stream.StreamingReconstructor`.

    Model
        model: 'loger', 'loger_star' or 'tiny' (see `loger_core.model.CONFIGS`).
        checkpoint: path of the authors' `latest.pt` or a `.safetensors` file; None builds the
            model with deterministic synthetic weights (NOT meaningful geometry; a warning is logged).
        allow_pickle: let `torch.load` unpickle non-tensor objects in a trusted checkpoint.
        device: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:1', ...
        dtype: 'auto' (bfloat16 on CUDA, float32 on CPU), 'float32', 'bfloat16' or 'float16'.
            Like the authors, weights stay float32 and lower precisions run under `torch.autocast`.
    Input
        resolution: network input size (W, H), both multiples of the patch size (14); None picks
            it from the first frame with the authors' demo rule (pixel count <= `pixel_limit`).
        pixel_limit: pixel budget of that rule.
        resize_mode: 'resize' stretches the whole image to `resolution` (the authors' demo);
            'crop' first centre-crops to the target aspect ratio (no distortion).
    Windows and memory (as the authors' windowed inference)
        window_size, overlap_size, reset_every, use_ttt, use_swa: see `MemoryOptions`.
        alignment: 'none', 'se3' or 'sim3'; None takes the model config's (se3 for loger_star).
        sim3_scale_mode: robust scale estimator of the sim3 alignment.
    Output
        conf_threshold: points whose confidence (sigmoid probability) is below are left out.
        conf_percentile: additionally leave out each frame's lowest `conf_percentile` percent
            (the authors' demo shows points above the 20th percentile).
        use_known_intrinsics: a K given to `push` is reported as the frame's intrinsics instead
            of the one estimated from the predicted points (the network never takes intrinsics).
        provisional_every: 0 = off; N > 0 runs an uncommitted pass every N new frames of an
            incomplete window and returns a provisional result for its newest frame.
        provisional_outputs: 'pose' (default) makes provisional results pose-only: only the
            camera poses leave the device, and `depth` / `confidence` / `valid` are (0, 0),
            `points` / `colors` (0, 3), `point_confidence` (0,), `K_model` the last committed
            frame's (NaN before the first window). What a provisional result is for is odometry;
            its masks, point selection and copies cost as much as the pass itself on a GPU.
            'full' fills every field as committed results do.
        provisional_anchors: how many of the frames shared with the last committed window a
            provisional pass carries before its newest frames: 0 = all `overlap_size` of them; N =
            the first N (the alignment's reference frame is the first). Fewer anchors make a pass
            cheaper (on an H100, full `loger`: 2 frames 33 ms, 4 frames 52 ms as CUDA graphs of the
            eager blocks) at the price of less context for the newest frames' poses.
        provisional_budget: the largest share of wall time provisional passes may take, in (0, 1].
            After a pass that took t seconds the next one waits t * (1 - budget) / budget, so
            passes that cost more than the camera period (e.g. eager passes on a busy host) are
            thinned out instead of making the caller fall behind the camera and drop frames.
        out_of_order: a frame whose stamp is not after the previous one is 'drop'ped (counted in
            the stats) or 'raise's StreamInputError.
        scale: metric scale source, see :class:`ScaleConfig`.

    Speed
        fast_paths: 'auto' (the GPU fast paths of `loger_core.model.fast_paths` on CUDA under
            bfloat16, none elsewhere), 'on' or 'off' (the eager reference path).
        point_voxel_size: 0 returns every valid pixel as a point; > 0 (metres, model scale before
            the metric factor) merges each frame's points per voxel of this edge on the model's
            device before they cross to the host: `points` are then voxel centroids, `colors` mean
            colours, `point_confidence` the highest confidence and `point_weights` the number of
            pixels merged (no point is lost: weights sum to the valid pixels).
        preprocess_threads: frames are resized on this many worker threads while the caller goes
            on (0 = in `push` itself).
        async_windows: 'auto' (on for CUDA), 'on' or 'off'. On: a completed window runs on a
            worker thread (on CUDA a low-priority stream) while `push` goes on taking frames and
            running provisional passes (on a high-priority stream) against the last committed
            memory, and the next window's forward is queued behind it before the host-side
            outputs of the previous one are built. Committed results are the same as 'off'; they
            are returned by a later `push`, `poll` or `flush`. Model errors of a window are then
            reported by `take_errors()` instead of being raised.
        cuda_graphs: 'auto' (on with async windows on CUDA), 'on' or 'off'. On: provisional
            passes replay a CUDA graph per input shape (captured on first use; see
            `provisional_graphs`) instead of launching every kernel from Python, and while
            `provisional_every` is 0 full committed windows do too (from the third window on; see
            `loger_core.model.window_graphs`). Same computation; a shape that cannot be captured
            runs eagerly.
        pass_priority: 'auto' (on with async windows on CUDA), 'on' or 'off'. On: while a
            provisional pass runs, the window worker launches no further transformer block, and it
            never queues more than a few blocks ahead of the device (`gpu_share.GpuShare`), so a
            pass waits for at most those blocks instead of competing with the whole window for the
            GPU and the interpreter. Same kernels and results; windows take longer by the passes'
            time.
    """

    model: str = "loger_star"
    checkpoint: Optional[str] = None
    allow_pickle: bool = False
    device: str = "auto"
    dtype: str = "auto"
    resolution: Optional[tuple[int, int]] = DEMO_RESOLUTION
    pixel_limit: int = DEMO_PIXEL_LIMIT
    resize_mode: str = "resize"
    window_size: int = 32
    overlap_size: int = 3
    reset_every: int = 0
    use_ttt: bool = True
    use_swa: bool = True
    alignment: Optional[str] = None
    sim3_scale_mode: str = "median"
    conf_threshold: float = 0.0
    conf_percentile: float = 20.0
    use_known_intrinsics: bool = True
    provisional_every: int = 0
    provisional_budget: float = 0.5
    provisional_anchors: int = 0
    provisional_outputs: str = "pose"
    out_of_order: str = "drop"
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    fast_paths: str = "auto"
    point_voxel_size: float = 0.0
    preprocess_threads: int = 0
    async_windows: str = "auto"
    cuda_graphs: str = "auto"
    pass_priority: str = "auto"

    def __post_init__(self) -> None:
        if self.model not in CONFIGS:
            raise StreamInputError(f"StreamConfig.model must be one of {sorted(CONFIGS)}, got {self.model!r}")
        if self.checkpoint is not None and not isinstance(self.checkpoint, str):
            self.checkpoint = str(self.checkpoint)
        self.torch_device()  # validates
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise StreamInputError(f"StreamConfig.dtype must be 'auto' or one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.resolution is not None:
            res = self.resolution
            if not (isinstance(res, (tuple, list)) and len(res) == 2 and all(_is_int(v) and v > 0 for v in res)):
                raise StreamInputError(f"StreamConfig.resolution must be (width, height) positive integers or None, got {res!r}")
            self.resolution = (int(res[0]), int(res[1]))
        if not _is_int(self.pixel_limit) or self.pixel_limit < 14 * 14:
            raise StreamInputError(f"StreamConfig.pixel_limit must be an integer >= 196, got {self.pixel_limit!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise StreamInputError(f"StreamConfig.resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")
        if not _is_int(self.window_size) or self.window_size < 1:
            raise StreamInputError(f"StreamConfig.window_size must be an integer >= 1, got {self.window_size!r}")
        if not _is_int(self.overlap_size) or not 0 <= self.overlap_size < self.window_size:
            raise StreamInputError(
                f"StreamConfig.overlap_size must be an integer in [0, window_size={self.window_size}), got {self.overlap_size!r}"
            )
        if not _is_int(self.reset_every) or self.reset_every < 0:
            raise StreamInputError(f"StreamConfig.reset_every must be an integer >= 0, got {self.reset_every!r}")
        if self.alignment is not None and self.alignment not in ALIGNMENTS:
            raise StreamInputError(f"StreamConfig.alignment must be None or one of {ALIGNMENTS}, got {self.alignment!r}")
        if self.sim3_scale_mode not in SCALE_MODES:
            raise StreamInputError(f"StreamConfig.sim3_scale_mode must be one of {SCALE_MODES}, got {self.sim3_scale_mode!r}")
        if not _is_number(self.conf_threshold) or not 0.0 <= self.conf_threshold <= 1.0:
            raise StreamInputError(f"StreamConfig.conf_threshold must be a probability in [0, 1], got {self.conf_threshold!r}")
        if not _is_number(self.conf_percentile) or not 0.0 <= self.conf_percentile < 100.0:
            raise StreamInputError(f"StreamConfig.conf_percentile must be in [0, 100), got {self.conf_percentile!r}")
        if not _is_int(self.provisional_every) or self.provisional_every < 0:
            raise StreamInputError(f"StreamConfig.provisional_every must be an integer >= 0, got {self.provisional_every!r}")
        if not _is_int(self.provisional_anchors) or self.provisional_anchors < 0:
            raise StreamInputError(f"StreamConfig.provisional_anchors must be an integer >= 0, got {self.provisional_anchors!r}")
        if not _is_number(self.provisional_budget) or not 0.0 < self.provisional_budget <= 1.0:
            raise StreamInputError(f"StreamConfig.provisional_budget must be in (0, 1], got {self.provisional_budget!r}")
        if self.out_of_order not in OUT_OF_ORDER_POLICIES:
            raise StreamInputError(f"StreamConfig.out_of_order must be one of {OUT_OF_ORDER_POLICIES}, got {self.out_of_order!r}")
        if self.fast_paths not in FAST_PATH_MODES:
            raise StreamInputError(f"StreamConfig.fast_paths must be one of {FAST_PATH_MODES}, got {self.fast_paths!r}")
        if not _is_number(self.point_voxel_size) or not self.point_voxel_size >= 0.0:
            raise StreamInputError(f"StreamConfig.point_voxel_size must be a number >= 0, got {self.point_voxel_size!r}")
        if not _is_int(self.preprocess_threads) or not 0 <= self.preprocess_threads <= 64:
            raise StreamInputError(f"StreamConfig.preprocess_threads must be an integer in [0, 64], got {self.preprocess_threads!r}")
        if self.async_windows not in ASYNC_WINDOW_MODES:
            raise StreamInputError(f"StreamConfig.async_windows must be one of {ASYNC_WINDOW_MODES}, got {self.async_windows!r}")
        for name in ("cuda_graphs", "pass_priority"):
            value = getattr(self, name)
            if isinstance(value, bool):  # YAML / older callers: true / false
                value = "on" if value else "off"
                setattr(self, name, value)
            if value not in CUDA_GRAPH_MODES:
                raise StreamInputError(f"StreamConfig.{name} must be one of {CUDA_GRAPH_MODES}, got {value!r}")
        if self.provisional_outputs not in PROVISIONAL_OUTPUTS:
            raise StreamInputError(
                f"StreamConfig.provisional_outputs must be one of {PROVISIONAL_OUTPUTS}, got {self.provisional_outputs!r}")
        if not isinstance(self.scale, ScaleConfig):
            raise StreamInputError(f"StreamConfig.scale must be a ScaleConfig, got {self.scale!r}")

    def torch_device(self) -> torch.device:
        """The resolved device ('auto' -> CUDA when available)."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            dev = torch.device(self.device)
        except (RuntimeError, TypeError):
            raise StreamInputError(f"StreamConfig.device must be 'auto' or a torch device string, got {self.device!r}") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise StreamInputError(f"StreamConfig.device is {self.device!r} but CUDA is not available")
        return dev

    def fast_path_config(self):
        """The `FastPathConfig` this configuration asks for on its device and dtype."""
        from loger_core.model.fast_paths import FastPathConfig, default_fast_paths

        if self.fast_paths == "off":
            return FastPathConfig.off()
        if self.fast_paths == "on":
            return FastPathConfig()
        return default_fast_paths(self.torch_device(), self.torch_dtype())

    def async_enabled(self) -> bool:
        """Whether completed windows run on a worker thread ('auto': on CUDA)."""
        if self.async_windows == "auto":
            return self.torch_device().type == "cuda"
        return self.async_windows == "on"

    def graphs_enabled(self) -> bool:
        """Whether provisional passes replay CUDA graphs: only with async windows on CUDA (the
        graphs' memory copies are refreshed by the window worker)."""
        if self.cuda_graphs == "off" or not self.async_enabled() or self.torch_device().type != "cuda":
            return False
        return True

    def pass_priority_enabled(self) -> bool:
        """Whether committed windows yield the device to provisional passes: only with async
        windows ('auto': on CUDA, where window and passes share one GPU)."""
        if self.pass_priority == "off" or not self.async_enabled():
            return False
        return self.pass_priority == "on" or self.torch_device().type == "cuda"

    def torch_dtype(self) -> torch.dtype:
        """The resolved compute dtype ('auto' -> bfloat16 on CUDA, float32 elsewhere)."""
        if self.dtype == "auto":
            return torch.bfloat16 if self.torch_device().type == "cuda" else torch.float32
        return DTYPES[self.dtype]

"""The geometric back end: keyframes, feature-verified relative poses, loop closure and a GTSAM pose
graph over the stream's committed frames. May import ``loger_core.stream`` types; never the pipeline,
ROS or the CLIs."""
from loger_core.backend.backend import GeometricBackend, KeyframeCloud, frame_input
from loger_core.backend.config import BackendConfig, BackendConfigError
from loger_core.backend.consumer import BackendConsumer

__all__ = ["BackendConfig", "BackendConfigError", "BackendConsumer", "GeometricBackend", "KeyframeCloud", "frame_input"]

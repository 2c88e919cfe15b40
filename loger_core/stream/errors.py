"""The one error type of the streaming engine."""
from __future__ import annotations


class StreamInputError(ValueError):
    """Bad input to the streaming engine: a configuration field, a frame (dtype, shape), a
    timestamp, an intrinsics matrix, a depth image or an odometry pose. The message names the
    field and the offending value."""

"""The error type of the ROS-free node core and the names of the reasons a frame is dropped."""
from __future__ import annotations

__all__ = ["CoreError", "DROP_REASONS"]

# Every dropped frame is counted under exactly one of these reasons (diagnostics keys dropped_<reason>).
DROP_REASONS: tuple[str, ...] = (
    "queue_full",  # the bounded input queue was full: the oldest waiting frame made room
    "decode",  # the message could not be converted (bad encoding, corrupt compressed data, ...)
    "out_of_order",  # stamp not after the previous accepted frame's
    "rejected",  # the streaming core refused the frame (StreamInputError)
    "inference_error",  # the network failed on the frame's window (e.g. out of GPU memory)
    "after_flush",  # arrived after the stream was finished (end of a replay)
    "shutdown",  # still queued, or arrived, when the node was shutting down (SIGINT/SIGTERM)
)


class CoreError(ValueError):
    """Bad input to or misuse of the node core; the message names the field and the value."""

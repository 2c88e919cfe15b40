"""Console scripts of loger_ros that need no ROS: each parses with its light parser first, then
imports its implementation (torch, the network, rosbags)."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from loger_ros.replay_args import build_arg_parser

__all__ = ["replay_main"]


def replay_main(argv: Optional[Sequence[str]] = None) -> int:
    """``loger-replay`` (see :func:`loger_ros.replay.main`)."""
    build_arg_parser().parse_args(argv)
    from loger_ros.replay import main

    return main(argv)


if __name__ == "__main__":
    sys.exit(replay_main())

"""Console scripts of loger_core: each parses with its light parser first (``--help`` and argument
errors answer in a tenth of a second), then imports its implementation (torch, the network)."""
from __future__ import annotations

import sys
from typing import Optional, Sequence

from loger_core.cli.reconstruct_args import build_parser as reconstruct_parser
from loger_core.training.train_args import build_parser as train_parser

__all__ = ["reconstruct_main", "train_main"]


def reconstruct_main(argv: Optional[Sequence[str]] = None) -> int:
    """``loger-reconstruct`` (see :func:`loger_core.cli.reconstruct.main`)."""
    reconstruct_parser().parse_args(argv)
    from loger_core.cli.reconstruct import main

    return main(argv)


def train_main(argv: Optional[Sequence[str]] = None) -> int:
    """``loger-train`` (see :func:`loger_core.training.train.main`)."""
    train_parser().parse_args(argv)
    from loger_core.training.train import main

    return main(None if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(reconstruct_main())

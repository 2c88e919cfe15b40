"""Ctrl-C and SIGTERM for the command-line tools: stop at the next frame, write what was done, exit 130.

The first signal only sets a flag that the tool's frame loop reads between frames: no
KeyboardInterrupt lands inside the network, a commit or a file write, so the state written (the
session, the trajectory, the map) is the consistent state after the last frame consumed, and
``--resume`` continues from the frame after it. A second signal exits at once (status 130); files
are written atomically (:mod:`loger_core.io.atomic`), so what was written before stays whole and
the temporary file of a write in progress is removed.

``LOGER_PROGRESS_FILE``: when set, the tools append ``frames N`` after each frame consumed and a
line per phase (``session``, ``outputs``) to that file, for supervisors and tests that want to stop
a run at a known point.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Optional

from loger_core.io.atomic import remove_in_progress

__all__ = ["INTERRUPTED_EXIT", "PROGRESS_FILE_ENV", "Progress", "StopRequest", "resume_command"]

INTERRUPTED_EXIT = 130
PROGRESS_FILE_ENV = "LOGER_PROGRESS_FILE"


class StopRequest:
    """SIGINT / SIGTERM handlers for the duration of a ``with`` block (main thread only; elsewhere
    nothing is installed and the flag stays down). ``stop()`` / :attr:`requested`: whether a signal came."""

    def __init__(self, prog: str, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.prog = prog
        self.signals = signals
        self.signum: Optional[int] = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            print(f"\n{self.prog}: {signal.Signals(signum).name}: stopping after this frame and writing what was done "
                  "(again to quit at once)", file=sys.stderr, flush=True)
            return
        print(f"\n{self.prog}: {signal.Signals(signum).name} again: quitting now (files already written are whole)",
              file=sys.stderr, flush=True)
        remove_in_progress()
        try:
            sys.stdout.flush()
        finally:
            os._exit(INTERRUPTED_EXIT)


class Progress:
    """Appends progress lines to ``$LOGER_PROGRESS_FILE`` (nothing when it is unset)."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = path if path is not None else os.environ.get(PROGRESS_FILE_ENV) or None

    def _line(self, text: str) -> None:
        if self.path:
            with open(self.path, "a") as f:
                f.write(text + "\n")

    def frames(self, n: int) -> None:
        self._line(f"frames {n}")

    def phase(self, name: str) -> None:
        self._line(name)


def resume_command(prog: str, argv, session: str, extra: tuple = ()) -> str:
    """The interrupted run's command line (``argv`` without any ``--resume`` / ``--session-out``,
    nor the ``extra`` flags) followed by ``--resume SESSION`` and ``extra``: what the user types to
    continue."""
    import shlex

    cleaned, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--resume", "--session-out"):
            skip = True
            continue
        if a.startswith(("--resume=", "--session-out=")) or a in extra:
            continue
        cleaned.append(a)
    return shlex.join([prog, *cleaned, "--resume", session, *extra])

"""What lnq's signal handler does to the process groups it started, for test children that stand
in for lnq: kill every live group, then die of the signal (``beam_jobs.cli`` then unwinds with
KeyboardInterrupt; a child dying of the signal is what its parent test can see)."""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

from pipeline.bounded import kill_all


def kill_on_signals() -> contextlib.AbstractContextManager[Any]:
    """Install the handler for SIGINT and SIGTERM (for good; the context is for the reader)."""

    def handler(number: int, frame: object) -> None:
        kill_all()
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)

    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, handler)
    return contextlib.nullcontext()

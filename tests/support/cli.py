"""``lnq`` as a child process, the way a user runs it (``LNQ + ["run", ...]``)."""

from __future__ import annotations

import sys

LNQ = [sys.executable, "-m", "beam_jobs.cli"]

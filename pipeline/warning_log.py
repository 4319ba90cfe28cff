"""Python warnings of the libraries, sent to the log at DEBUG instead of stderr.

highdicom warns about every one-component person name (IDC's LNQ series have them), once per
isolated child: printed to stderr, those warnings landed between the job's progress lines. The
``lnq`` command and each isolated child of a series install :func:`warning_to_debug_log`, so
they show with ``--log-level DEBUG`` and not otherwise. A library importing this module changes
nothing; only entry points call :func:`send_warnings_to_log`.
"""

from __future__ import annotations

import logging
import warnings
from typing import TextIO

LOGGER = "py.warnings"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The ``lnq`` command's log line format (its children log in it too)."""


def warning_to_debug_log(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """A ``warnings.showwarning`` that logs the warning at DEBUG on the ``py.warnings`` logger."""
    text = warnings.formatwarning(message, category, filename, lineno, line).strip()
    logging.getLogger(LOGGER).debug("%s", text)


def send_warnings_to_log(*, own_handler_at: int | None = None) -> None:
    """Route Python warnings to the log at DEBUG. ``own_handler_at``: in a process whose logging is
    not configured (an isolated child), the parent's level: at DEBUG the warnings get a stderr
    handler of their own, else they are dropped."""
    warnings.showwarning = warning_to_debug_log
    if own_handler_at is not None and own_handler_at <= logging.DEBUG:
        logger = logging.getLogger(LOGGER)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter(LOG_FORMAT))
            logger.addHandler(handler)
            logger.setLevel(logging.DEBUG)
            logger.propagate = False

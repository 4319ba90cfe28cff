"""This run's own temporary folder under ``--work-dir``, and the clean-up of abandoned ones.

A run works in ``WORK_DIR/lnq-run-<host>-<pid>-<random>/`` and holds an exclusive ``flock`` on its
``.owner`` file for its whole life; the kernel lets go of it when the process dies, however it
dies. A later run removes only folders whose ``.owner`` it can lock: provably abandoned, even when
several hosts or containers share the work dir (flock is honoured across processes on one kernel
and, through the lock manager, on NFS). A folder without an ``.owner`` (made by an older version, or
on a file system without locks) is never removed. The folder is created under another name and
renamed into place only once its owner holds the lock, so no run ever sees a live folder unlocked.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator

from beam_jobs.options import UsageError

logger = logging.getLogger(__name__)

PREFIX = "lnq-run-"
OWNER = ".owner"


@contextlib.contextmanager
def run_folder(base: str | None) -> Iterator[str]:
    """This run's folder for per-series temporary files and progress markers, removed at the end;
    abandoned folders of earlier runs are removed first."""
    base = base or tempfile.gettempdir()
    try:
        remove_abandoned(base)
        making = tempfile.mkdtemp(prefix=".lnq-new-", dir=base)
        fd = os.open(os.path.join(making, OWNER), os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:
        raise UsageError(f"work dir {base} cannot be written: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40]
        folder = os.path.join(base, f"{PREFIX}{host}-{os.getpid()}-{uuid.uuid4().hex[:10]}")
        os.rename(making, folder)
    except OSError as exc:
        os.close(fd)
        shutil.rmtree(making, ignore_errors=True)
        raise UsageError(f"work dir {base} cannot be used: {exc.strerror or exc}") from exc
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)


def remove_abandoned(base: str) -> list[str]:
    """Remove the run folders under ``base`` whose owner is gone (their ``.owner`` can be locked);
    returns the folders removed."""
    if not os.path.isdir(base):
        return []
    removed = []
    for name in sorted(os.listdir(base)):
        folder = os.path.join(base, name)
        if not name.startswith(PREFIX) or os.path.islink(folder) or not os.path.isdir(folder):
            continue
        try:
            fd = os.open(os.path.join(folder, OWNER), os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue  # no owner file: not provably abandoned
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its run is alive (or locks are not supported here)
            logger.info("removing %s, left by a run that ended without cleaning up", folder)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        finally:
            os.close(fd)
    return removed

"""Functions for isolation tests: they run in a child forked from the fork server, so they must
be importable by name (not closures defined in a test)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import time

from pipeline.enums import Stage
from pipeline.stage_clock import StageReporter


def returns(*, report: StageReporter, value: int) -> dict[str, int]:
    report(Stage.FETCH)
    return {"value": value, "pid": os.getpid(), "ppid": os.getppid()}


def panics(*, report: StageReporter) -> None:
    """Raise a BaseException that is not an Exception, as pylibjpeg-rle's Rust panic does."""
    report(Stage.DECODE)

    class PanicException(BaseException):
        pass

    raise PanicException("called `Result::unwrap()` on an `Err` value")


def aborts(*, report: StageReporter) -> None:
    """Die the way GDCM does on a corrupt JPEG 2000 frame: abort(), SIGABRT."""
    report(Stage.FETCH)
    report(Stage.DECODE)
    ctypes.CDLL(None).abort()


def segfaults(*, report: StageReporter) -> None:
    report(Stage.REFERENCE)
    ctypes.string_at(0)  # reads address 0: SIGSEGV


def hangs_with_grandchild(*, report: StageReporter, pid_file: str) -> None:
    """A stalled download: a grandchild process (as s5cmd would be) and no progress."""
    report(Stage.FETCH)
    grandchild = subprocess.Popen(["sleep", "300"])
    with open(pid_file, "w", encoding="utf-8") as f:
        f.write(str(grandchild.pid))
    time.sleep(300)


def allocates(*, report: StageReporter, gib: float) -> int:
    """Claim far more memory than the limit allows, as a SEG header claiming 2^31 frames makes
    highdicom do."""
    report(Stage.REFERENCE)
    block = bytearray(int(gib * 1024**3))
    return len(block)


def exits(*, report: StageReporter) -> None:
    report(Stage.DECODE)
    os._exit(7)


def frozen_objects(*, report: StageReporter) -> int:
    """How many objects the child inherited frozen out of the garbage collector's reach."""
    import gc

    report(Stage.MEASURE)
    return gc.get_freeze_count()


def warns_like_highdicom(*, report: StageReporter) -> str:
    """Make highdicom warn, as it does for every one-component patient name of IDC's LNQ series."""
    from highdicom.valuerep import check_person_name

    report(Stage.SEG_WRITE)
    check_person_name("case_0002")
    return "written"


class Payload:
    """Pickled as a call of ``os.makedirs(marker)``: whoever unpickles it creates the folder."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.makedirs, (self.marker,))


def returns_payload(*, report: StageReporter, marker: str) -> Payload:
    """A child taken over (a decoder exploit, say) hands back a pickle that runs code."""
    report(Stage.DECODE)
    return Payload(marker)


def sleeps(*, report: StageReporter, seconds: float) -> str:
    report(Stage.FETCH)
    time.sleep(seconds)
    return "slept"


def crashes_measuring(*, report: StageReporter) -> None:
    """A native crash after the inputs are read: in the measuring child (SimpleITK, highdicom)."""
    report(Stage.MEASURE)
    report(Stage.SEG_WRITE)
    ctypes.string_at(0)


def times_two_stages(*, report: StageReporter, fetch_s: float, decode_s: float) -> str:
    """Spend known seconds in two stages, as a series' reading child does."""
    time.sleep(fetch_s)
    report(Stage.DECODE)
    time.sleep(decode_s)
    return "done"

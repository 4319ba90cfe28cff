"""Attacks on what isolated children send back: a pickle that runs code, a message forged into the
parent's pipe by another process, a message too long. None is unpickled as code; each ends the
series with an ``IsolationError`` row."""

from __future__ import annotations

import os
import pickle
import struct
import threading
import time
from multiprocessing import Pipe
from pathlib import Path

import numpy as np
import pytest

from pipeline import channel, isolation
from pipeline.enums import NodeSource, Stage
from pipeline.errors import IsolatedFailure, SeriesError
from pipeline.geometry import Geometry
from pipeline.isolation import Limits, run_isolated
from pipeline.outcome import GridSummary, SourceNodes
from tests.support import isolated_targets as targets

LIMITS = Limits(timeout_s=60.0, memory_bytes=None)


def _failure(fn, **kwargs) -> SeriesError:  # type: ignore[no-untyped-def]
    with pytest.raises(IsolatedFailure) as caught:
        run_isolated(fn, series_uid="1.2.3", limits=LIMITS, first_stage=Stage.FETCH, **kwargs)
    return caught.value.error


def test_a_child_handing_back_code_is_refused_and_the_code_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    error = _failure(targets.returns_payload, marker=str(marker))
    assert (error.stage, error.error_type) == (Stage.DECODE, "IsolationError")
    assert "makedirs, which is not data" in error.message and "1.2.3" in error.message
    assert not marker.exists()
    pickle.loads(pickle.dumps(targets.Payload(str(marker))))  # what a plain unpickler would have done
    assert marker.is_dir()


def test_a_message_forged_into_the_parents_pipe_is_refused_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process of the same user opens the parent's end of the pipe through /proc and writes
    a well-formed result: without the child's key it is not taken for the child's."""
    receive, pipes = channel.receive, []

    def watching(conn, key):  # type: ignore[no-untyped-def]
        pipes.append(conn.fileno())
        return receive(conn, key)

    monkeypatch.setattr(channel, "receive", watching)

    def forge() -> None:
        while not pipes:
            time.sleep(0.01)
        forged = b"\0" * 32 + pickle.dumps(("result", {"forged": True}))
        with open(f"/proc/{os.getpid()}/fd/{pipes[0]}", "wb", buffering=0) as pipe:
            pipe.write(struct.pack("!i", len(forged)) + forged)

    forger = threading.Thread(target=forge)
    forger.start()
    error = _failure(targets.sleeps, seconds=30.0)
    forger.join(10)
    assert error.error_type == "IsolationError" and "did not come from the series' process" in error.message


def test_records_and_arrays_cross_as_data() -> None:
    key = channel.new_key()
    parent, child = Pipe(duplex=False)
    message = (
        "result",
        {
            "grid": GridSummary(n_slices=3, slice_spacing_mm=2.5),
            "nodes": SourceNodes(NodeSource.REFERENCE, ()),
            "geometry": Geometry((1, 2, 3), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)),
            "array": np.arange(6, dtype=np.float32).reshape(2, 3),
            "scalar": np.float64(2.5),
            "stages": {Stage.FETCH: 1.0},
            "set": {1, 2},
        },
    )
    channel.send(child, key, message)
    kind, got = channel.receive(parent, key)
    assert kind == "result" and got["grid"] == message[1]["grid"] and got["stages"] == {Stage.FETCH: 1.0}
    np.testing.assert_array_equal(got["array"], message[1]["array"])
    assert got["scalar"] == 2.5 and got["set"] == {1, 2}


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "did not come from"),  # one bit flipped
        (lambda data: b"\0" * 32 + data[32:], "did not come from"),
        (lambda data: data[:10], "did not come from"),  # shorter than a signature
    ],
)
def test_tampered_messages_are_refused(tamper, message: str) -> None:  # type: ignore[no-untyped-def]
    key = channel.new_key()
    parent, child = Pipe(duplex=False)
    payload = pickle.dumps(("stage", Stage.DECODE))
    child.send_bytes(tamper(channel._mac(key, payload) + payload))
    with pytest.raises(channel.ChannelError, match=message):
        channel.receive(parent, key)


def test_another_childs_key_does_not_open_a_message() -> None:
    parent, child = Pipe(duplex=False)
    channel.send(child, channel.new_key(), ("stage", Stage.FETCH))
    with pytest.raises(channel.ChannelError, match="did not come from"):
        channel.receive(parent, channel.new_key())


def test_a_message_over_the_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel, "MAX_MESSAGE_BYTES", 1000)
    key = channel.new_key()
    parent, child = Pipe(duplex=False)
    channel.send(child, key, ("result", b"x" * 5000))
    with pytest.raises(channel.ChannelError, match="longer than 1,000 bytes"):
        channel.receive(parent, key)


@pytest.mark.parametrize(
    "payload",
    [
        pickle.dumps(targets.Payload("/nonexistent/x")),
        b"cos\nsystem\n(S'true'\ntR.",  # protocol 0: os.system('true')
        b"\x80\x04\x95",  # truncated
    ],
)
def test_the_data_unpickler_refuses_code_and_garbage(payload: bytes) -> None:
    with pytest.raises(channel.ChannelError):
        channel.loads_data(payload)


def test_the_isolation_module_uses_the_channel_for_every_message() -> None:
    """No plain ``recv()``/``send()`` (pickle) is left on the isolated children's pipes."""
    source = Path(isolation.__file__).read_text()
    assert ".recv()" not in source and "conn.send(" not in source

"""The messages an isolated child sends back to the process that started it: authenticated, and
read back as data, never as code.

A child parses untrusted bytes (DICOM, bucket listings, model output); it is isolated so that a
crash, a hang or a memory bomb there is that series' error. Unpickling whatever arrives from it
would hand the parent to anything that takes the child over (a decoder exploit) or that can
write to the pipe (any process of the same user can open ``/proc/PID/fd/N``): a pickle can call
any function. So:

- each child gets a random key of its own; every message carries an HMAC-SHA256 of its bytes
  under that key, checked before anything else is done with it (:func:`receive`): a message that
  did not come from the child is refused unread;
- a message is at most :data:`MAX_MESSAGE_BYTES` long (``recv_bytes``' bound);
- its pickle is read by an unpickler that builds only containers, numbers, strings, numpy arrays
  and scalars, and the pipeline's own records named in :data:`RECORD_TYPES` (frozen dataclasses
  and enums, built without calling any code of theirs): a pickle naming any other global, such
  as ``os.system``, is refused, even from the child itself.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import pickle
import secrets
from multiprocessing.connection import Connection
from typing import Any

MAX_MESSAGE_BYTES = 1 << 30
"""The largest message read (1 GiB): a series' measurements with tens of thousands of nodes of a
noisy model are tens of MB pickled."""
KEY_BYTES = 32
_MAC_BYTES = hashlib.sha256().digest_size

RECORD_TYPES: frozenset[tuple[str, str]] = frozenset(
    {
        ("pipeline.enums", "Stage"),
        ("pipeline.enums", "NodeSource"),
        ("pipeline.enums", "SeriesStatus"),
        ("pipeline.enums", "ModelKind"),
        ("pipeline.outcome", "GridSummary"),
        ("pipeline.outcome", "SourceNodes"),
        ("pipeline.errors", "SeriesError"),
        ("pipeline.geometry", "Geometry"),
        ("pipeline.geometry", "CtVolume"),
        ("pipeline.inputs", "SeriesInputs"),
        ("pipeline.series_stages", "MeasuredSeries"),
        ("pipeline.measure.nodes", "NodeMeasurement"),
        ("pipeline.measure.quality", "NodeQuality"),
        ("pipeline.evaluate.lnq2023", "CaseScore"),
        ("pipeline.evaluate.detection", "Detection"),
        ("pipeline.evaluate.detection", "NodeMatch"),
        ("pipeline.models.base", "SavedPrediction"),
        ("pipeline.model_host", "InferenceRequest"),
        ("pipeline.model_host", "InferenceDone"),
        ("pipeline.training.export_case", "ExportedCase"),
        ("pipeline.training.labels", "LabelCounts"),
    }
)
"""The pipeline's records a child may send (frozen dataclasses and enums: unpickling builds them
from their fields, or looks the member up by value, and runs none of their code)."""

_NUMPY = frozenset(
    (module, name)
    for core in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{core}.multiarray", "_reconstruct"),
        (f"{core}.multiarray", "scalar"),
        (f"{core}.numeric", "_frombuffer"),
    )
) | {("numpy", "ndarray"), ("numpy", "dtype")}
"""What numpy arrays and scalars pickle as: they rebuild an array or a scalar from bytes."""

ALLOWED_GLOBALS = RECORD_TYPES | _NUMPY


class ChannelError(Exception):
    """A message that did not come from the child, is too long, or names code to run."""


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def send(conn: Connection, key: bytes, message: object) -> None:
    """Pickle ``message``, sign it with ``key`` and send it as one message."""
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    conn.send_bytes(_mac(key, payload) + payload)


def receive(conn: Connection, key: bytes) -> Any:
    """The next message, once its signature is checked; :class:`ChannelError` when it is not the
    child's, too long, or not data. ``EOFError``/``OSError`` when the other end is gone."""
    try:
        data = conn.recv_bytes(MAX_MESSAGE_BYTES)
    except OSError as exc:
        if "bad message length" in str(exc):
            raise ChannelError(f"a message longer than {MAX_MESSAGE_BYTES:,} bytes") from exc
        raise
    mac, payload = data[:_MAC_BYTES], data[_MAC_BYTES:]
    if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, _mac(key, payload)):
        raise ChannelError("a message that did not come from the series' process (its signature is wrong)")
    return loads_data(payload)


def loads_data(payload: bytes) -> Any:
    """Unpickle ``payload`` allowing only :data:`ALLOWED_GLOBALS`."""
    try:
        return _DataUnpickler(io.BytesIO(payload)).load()
    except ChannelError:
        raise
    except Exception as exc:  # a truncated or garbled pickle
        raise ChannelError(f"a message that cannot be read: {type(exc).__name__}: {exc}") from exc


def _mac(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, payload, hashlib.sha256).digest()


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise ChannelError(f"a message that names {module}.{name}, which is not data")
        return super().find_class(module, name)

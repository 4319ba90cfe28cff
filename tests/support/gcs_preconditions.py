"""The GCS emulator with generation preconditions honoured, for tests of the output lock.

gcp-storage-emulator accepts ``ifGenerationMatch`` on uploads and deletes but ignores it, so a test of
"only one writer wins" would pass against it even if the code under test never sent a precondition.
This module patches the emulator so that a write or delete whose ``ifGenerationMatch`` (query
parameter, or ``x-goog-if-generation-match`` header on the XML API) does not match the object's live
generation answers HTTP 412 with GCS's error body; ``0`` means "the object must not exist". As on GCS,
an upload is checked when it completes (for a resumable upload: at its last chunk), and a delete of a
missing object stays a 404. Batch requests and metadata PATCH are left as the emulator has them.

Run: ``python -m tests.support.gcs_preconditions --port P --bucket B [--host H]`` (in memory).
"""

from __future__ import annotations

import argparse
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any

from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects
from gcp_storage_emulator.storage import Storage

CONDITION_NOT_MET = "At least one of the pre-conditions you specified did not hold."
_PRECONDITION_FAILED_BODY: dict[str, Any] = {
    "error": {
        "code": 412,
        "message": CONDITION_NOT_MET,
        "errors": [
            {
                "message": CONDITION_NOT_MET,
                "domain": "global",
                "reason": "conditionNotMet",
                "locationType": "header",
                "location": "If-Match",
            }
        ],
    }
}
_HANDLER_NAMES = ("insert", "upload_partial", "xml_upload", "delete", "copy", "rewrite", "compose")

_request = threading.local()
_installed = False


class PreconditionFailed(Exception):
    """Raised inside a storage write when the request's ``ifGenerationMatch`` does not hold."""


def _expected_generation(request: Any) -> int | None:
    values = request.query.get("ifGenerationMatch")
    if values:
        return int(values[0])
    header = request.get_header("x-goog-if-generation-match")
    return None if header is None else int(header)


def _live_generation(storage: Storage, bucket_name: str, object_id: str) -> int:
    try:
        return int(storage.get_file_obj(bucket_name, object_id)["generation"])
    except NotFound:
        return 0


def _check(storage: Storage, bucket_name: str, object_id: str, *, missing_ok: bool) -> None:
    expected = getattr(_request, "expected_generation", None)
    if expected is None:
        return
    live = _live_generation(storage, bucket_name, object_id)
    if live == 0 and missing_ok:
        return
    if live != expected:
        raise PreconditionFailed(f"{bucket_name}/{object_id}: generation {live}, expected {expected}")


def _honouring_preconditions(handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    def wrapped(request: Any, response: Any, storage: Storage, *args: Any, **kwargs: Any) -> Any:
        _request.expected_generation = _expected_generation(request)
        try:
            return handler(request, response, storage, *args, **kwargs)
        except PreconditionFailed:
            response.status = HTTPStatus.PRECONDITION_FAILED
            response.json(_PRECONDITION_FAILED_BODY)
            return None
        finally:
            _request.expected_generation = None

    return wrapped


def install() -> None:
    """Patch the emulator's storage writes and object handlers in this process (idempotent)."""
    global _installed
    if _installed:
        return
    create_file = Storage.create_file
    delete_file = Storage.delete_file

    def checked_create_file(
        self: Storage, bucket_name: str, file_name: str, *args: Any, **kwargs: Any
    ) -> Any:
        _check(self, bucket_name, file_name, missing_ok=False)
        return create_file(self, bucket_name, file_name, *args, **kwargs)

    def checked_delete_file(self: Storage, bucket_name: str, file_name: str) -> Any:
        _check(self, bucket_name, file_name, missing_ok=True)
        return delete_file(self, bucket_name, file_name)

    Storage.create_file = checked_create_file  # type: ignore[method-assign]
    Storage.delete_file = checked_delete_file  # type: ignore[method-assign]

    wrapped = {}
    for name in _HANDLER_NAMES:
        original = getattr(objects, name)
        wrapped[original] = _honouring_preconditions(original)
        setattr(objects, name, wrapped[original])  # the router's upload fallback reads objects.insert
    for _, handlers in emulator_server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in wrapped:
                handlers[method] = wrapped[handler]
    _installed = True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--bucket", required=True, help="created at start, like the emulator's --default-bucket"
    )
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level)
    install()
    server = emulator_server.create_server(args.host, args.port, in_memory=True, default_bucket=args.bucket)
    server.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

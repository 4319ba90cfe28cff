"""DICOM UID grammar (PS3.5 section 9.1), checked before a UID reaches a path."""

from __future__ import annotations

import re

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
MAX_UID_LENGTH = 64


def uid_problem(value: object) -> str | None:
    """Why ``value`` is not a DICOM UID, or None when it is one."""
    if not isinstance(value, str):
        return f"expected a string, found {type(value).__name__}"
    if not value:
        return "empty"
    if len(value) > MAX_UID_LENGTH:
        return f"{len(value)} characters, at most {MAX_UID_LENGTH} allowed"
    if _UID_RE.match(value) is None:
        return f"{value!r} is not digits separated by dots (no leading zeros, no other characters)"
    return None

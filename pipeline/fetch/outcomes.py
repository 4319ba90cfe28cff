"""What an s5cmd failure means: can another attempt heal it, and how to say it in one line.

Retried: the network or a busy server (connection refused or reset, timeouts, 5xx, throttling).
Not retried: what another try cannot change (no such bucket or key, no objects, access denied,
a host that does not exist) and anything not known to heal.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline.bounded import BoundedResult

PERMANENT = (
    "no object found",
    "nosuchbucket",
    "nosuchkey",
    "notfound",
    "not found",
    "accessdenied",
    "access denied",
    "forbidden",
    "status code: 400",
    "status code: 401",
    "status code: 403",
    "status code: 404",
    "allaccessdisabled",
    "invalidbucketname",
    "no such host",
)
"""Errors that another try cannot heal: the series is not there, or not ours to read."""

HEALABLE = (
    "connection refused",
    "connection reset",
    "broken pipe",
    "timeout",
    "timed out",
    "eof",
    "status code: 429",
    "status code: 500",
    "status code: 502",
    "status code: 503",
    "status code: 504",
    "slowdown",
    "throttl",
    "toomanyrequests",
    "requestlimitexceeded",
    "internalerror",
    "serviceunavailable",
    "temporary failure",
    "server misbehaving",
    "network is unreachable",
    "no route to host",
)
"""Errors of the network or of a busy server: worth another try after a pause."""


def is_empty_listing(text: str) -> bool:
    """s5cmd found no object under the prefix: the series is not there."""
    return "no object found" in text.lower()


def can_heal(text: str) -> bool:
    """True for errors of the network or of a busy server, and none of the permanent kind."""
    lowered = text.lower()
    return not any(m in lowered for m in PERMANENT) and any(m in lowered for m in HEALABLE)


def summarize(done: BoundedResult, folder: str) -> str:
    """The errors s5cmd reported, short, with the local folder left out."""
    messages = []
    for line in (done.stderr + "\n" + done.stdout).splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            messages.append(line)
            continue
        if isinstance(entry, dict) and entry.get("error"):
            messages.append(str(entry["error"]))
    text = (
        "; ".join(dict.fromkeys(" ".join(m.split()) for m in messages))
        or f"s5cmd exit code {done.returncode}"
    )
    text = text.replace(str(Path(folder).resolve()), "<dest>").replace(folder, "<dest>")
    return text[:500]


def short_cause(text: str) -> str:
    """The root of an s5cmd error in a few words, for a one-line message: the first error's last
    ``caused by:`` part, without the request line and ``dial tcp:`` (``lookup s3.amazonaws.com on
    10.0.0.1:53: no such host``, ``connect: connection refused``)."""
    first = text.split("; ")[0]
    cause = first.rsplit("caused by: ", 1)[-1]
    cause = re.sub(r'^[A-Za-z]+ "[^"]*": ', "", cause)  # Go's 'Get "https://...": ' prefix
    cause = re.sub(r"^dial tcp( [^:]*)?: ", "", cause)
    return cause.strip() or first.strip()

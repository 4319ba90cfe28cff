"""Which s5cmd failures are retried."""

from __future__ import annotations

import pytest

from pipeline.bounded import BoundedResult
from pipeline.fetch.outcomes import can_heal, is_empty_listing, short_cause, summarize


@pytest.mark.parametrize(
    "text",
    [
        "dial tcp 127.0.0.1:9: connect: connection refused",
        "read tcp 10.0.0.2:5->52.1.1.1:443: read: connection reset by peer",
        "RequestError: send request failed caused by: net/http: TLS handshake timeout",
        "unexpected EOF",
        "SlowDown: Please reduce your request rate. status code: 503",
        "InternalError: We encountered an internal error. status code: 500",
        "dial tcp: lookup s3.amazonaws.com: Temporary failure in name resolution",
    ],
)
def test_network_and_busy_server_errors_heal(text: str) -> None:
    assert can_heal(text)


@pytest.mark.parametrize(
    "text",
    [
        "no object found",
        "NoSuchBucket: The specified bucket does not exist status code: 404",
        "NotFound: Not Found status code: 404",
        "NoSuchKey: The specified key does not exist. status code: 404",
        "AccessDenied: Access Denied status code: 403",
        "dial tcp: lookup no-such-endpoint.invalid: no such host",
        "fatal error: failed to reserve page summary memory",  # unknown: not retried
        "AccessDenied status code: 403 (after a connection reset)",  # permanent wins
    ],
)
def test_what_another_try_cannot_change_is_not_retried(text: str) -> None:
    assert not can_heal(text)


def test_summary_is_one_line_of_errors_without_the_local_folder() -> None:
    stderr = (
        '{"operation":"cp","command":"cp s3://b/k /work/x/ct/k","error":"NoSuchKey: gone\\ncaused by: 404"}\n'
        '{"operation":"cp","command":"cp s3://b/k /work/x/ct/k","error":"NoSuchKey: gone\\ncaused by: 404"}\n'
        "ERROR something at /work/x/ct/k\n"
    )
    done = BoundedResult(("s5cmd",), 1, '{"operation":"cp","success":true}\n', stderr, False, False, 0.1)
    assert summarize(done, "/work/x/ct") == "NoSuchKey: gone caused by: 404; ERROR something at <dest>/k"
    assert is_empty_listing("No object found")
    empty = BoundedResult(("s5cmd",), 2, "", "", False, False, 0.1)
    assert summarize(empty, "/x") == "s5cmd exit code 2"


def test_short_cause_keeps_the_root_once() -> None:
    """What `make run` printed offline: the s5cmd error twice, with a literal `<series>`."""
    offline = (
        "session: fetching region failed: RequestError: send request failed caused by: dial tcp: lookup "
        "s3.amazonaws.com on 10.255.255.53:53: no such host; RequestError: send request failed caused by: "
        'Get "https://s3.amazonaws.com/idc-open-data?list-type=2&prefix=abc%2F": dial tcp: lookup '
        "s3.amazonaws.com on 10.255.255.53:53: no such host"
    )
    assert short_cause(offline) == "lookup s3.amazonaws.com on 10.255.255.53:53: no such host"
    refused = (
        'RequestError: send request failed caused by: Get "http://127.0.0.1:9/b?list-type=2": '
        "dial tcp 127.0.0.1:9: connect: connection refused"
    )
    assert short_cause(refused) == "dial tcp 127.0.0.1:9: connect: connection refused"
    assert short_cause("NoSuchBucket: the bucket does not exist") == "NoSuchBucket: the bucket does not exist"

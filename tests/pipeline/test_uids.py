from __future__ import annotations

import pytest

from pipeline.uids import uid_problem


@pytest.mark.parametrize("uid", ["1.2.840.10008.5.1.4.1.1.2", "0", "2.25.1234567890", "1." + "2" * 62])
def test_valid_uids(uid: str) -> None:
    assert uid_problem(uid) is None
    assert uid_problem(uid) is None


@pytest.mark.parametrize(
    ("uid", "why"),
    [
        ("", "empty"),
        ("1.02.3", "not digits"),
        ("1..2", "not digits"),
        ("1.2.3.", "not digits"),
        ("../../etc/passwd", "not digits"),
        ("1.2/3", "not digits"),
        ("1.2.3 ", "not digits"),
        ("1." + "2" * 63, "65 characters"),
        (None, "expected a string"),
        (1.2, "expected a string"),
    ],
)
def test_invalid_uids(uid: object, why: str) -> None:
    assert uid_problem(uid) is not None
    assert why in (uid_problem(uid) or "")

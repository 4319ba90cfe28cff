"""Fault servers on loopback (tests.support.faults), started and stopped per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.fetch import s5cmd as s5
from tests.support.faults import Blackhole, S3FaultProxy


@pytest.fixture()
def blackhole() -> Iterator[Blackhole]:
    with Blackhole(lifetime_s=60) as server:
        yield server


@pytest.fixture()
def fault_proxy(s3_endpoint: str) -> Iterator[Callable[..., S3FaultProxy]]:
    """``fault_proxy(fault=...)``: an S3FaultProxy in front of the moto server, stopped after the test."""
    started: list[S3FaultProxy] = []

    def start(**kw: object) -> S3FaultProxy:
        proxy = S3FaultProxy(s3_endpoint, lifetime_s=60, **kw)  # type: ignore[arg-type]
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture()
def s5cmd_calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[], list[str]]:
    """Route fetches through a wrapper that logs each s5cmd command (then execs the real binary)."""
    log = tmp_path / "s5cmd-calls.log"
    wrapper = tmp_path / "counting-s5cmd"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec {s5.s5cmd_binary()} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(s5, "s5cmd_binary", lambda: str(wrapper))
    return lambda: log.read_text().splitlines() if log.exists() else []

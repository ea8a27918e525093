"""Fault-injection suite: run alone with ``pytest -m faults``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PLUGQ = str(Path(sys.executable).with_name("plugq"))


def pytest_collection_modifyitems(items):
    for item in items:
        if "/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.faults)


class Processes:
    """Child processes a test starts; every one is killed at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, **kwargs) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, **kwargs,
        )
        self.procs.append(proc)
        return proc

    def worker(self, url: str, *extra: str) -> subprocess.Popen[bytes]:
        return self.start(PLUGQ, "worker", "--url", url, "--logging-level", "warning", *extra)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)


@pytest.fixture
def procs():
    p = Processes()
    yield p
    p.kill_all()


def wait_for(predicate, timeout: float, what: str, every: float = 0.05, state=None):
    """Poll ``predicate``; on timeout fail, showing ``state()`` (what was seen) if given."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            seen = f"; last seen: {state()}" if state is not None else ""
            pytest.fail(f"timed out after {timeout} s waiting for {what}{seen}")
        time.sleep(every)

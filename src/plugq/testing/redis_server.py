"""A real ``redis-server`` for tests: the session fixture ``redis_server``.

Register it with ``pytest_plugins.append("plugq.testing.redis_server")``. It
starts ``redis-server`` on a free local port with persistence off, in a
temporary folder, and stops it at the end of the session. The handle can stop,
start and restart the server, for tests of what happens when Redis goes away.

Without a ``redis-server`` binary on PATH the tests that use it are skipped,
except under ``CI=true``, where a missing server is an error: CI must run them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``."""

    def __init__(self, binary: str, folder: Path, port: int | None = None, *, aof: bool = False) -> None:
        self.binary = binary
        self.folder = folder
        self.port = port or _free_port()
        #: Append-only file, fsync'd on every write: data survives a kill -9.
        self.aof = aof
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>`` (database 0; append ``/N`` for another)."""
        return f"redis://127.0.0.1:{self.port}"

    def db_url(self, db: int) -> str:
        return f"{self.url}/{db}"

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 10.0) -> None:
        """Start the server (same port) and wait until it answers PING."""
        if self.process is not None and self.process.poll() is None:
            return
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--dir", str(self.folder), "--databases", "16",
                *(("--appendonly", "yes", "--appendfsync", "always") if self.aof
                  else ("--appendonly", "no")),
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        end = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > end:
                raise RuntimeError(
                    f"redis-server on port {self.port} did not start; see {self.folder / 'redis.log'}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server and wait until the port no longer answers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def crash(self) -> None:
        """SIGKILL the server (no shutdown save); :meth:`start` brings it back."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def flushall(self) -> None:
        """Empty every database."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"FLUSHALL\r\n")
            s.recv(16)


def find_binary() -> str | None:
    return shutil.which("redis-server")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A running ``redis-server`` for the whole session (skipped if absent, unless CI)."""
    binary = find_binary()
    if binary is None:
        message = "redis-server is not installed (apt-get install -y redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; under CI=true the Redis tests must run")
        pytest.skip(message)
    folder = Path(tempfile.mkdtemp(prefix="plugq-redis-"))
    server = RedisServer(binary, folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def aof_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A separate ``redis-server`` with ``--appendonly yes --appendfsync always`` for one test."""
    binary = find_binary()
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server is not installed; under CI=true the Redis tests must run")
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    folder = tmp_path / "redis-aof"
    folder.mkdir()
    server = RedisServer(binary, folder, aof=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()

"""Running the real ``plugq`` command in subprocesses, for the CLI/config/example tests.

Not a conftest: these are plain functions the three test modules import.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

BIN = Path(sys.executable).parent
#: The installed console script, exactly what a user runs.
PLUGQ = str(BIN / "plugq")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without PLUGQ_* (a developer's settings must not leak in), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGQ_")}
    env.update(extra)
    return env


def plugq(
    *args: str, cwd: Path | str | None = None, env: Mapping[str, str] | None = None,
    timeout: float = 90,
) -> subprocess.CompletedProcess[str]:
    """Run ``plugq ARGS`` to completion and return its result (text output)."""
    return subprocess.run(
        [PLUGQ, *args], cwd=cwd, env=dict(env) if env is not None else clean_env(),
        capture_output=True, text=True, timeout=timeout,
    )


def plugq_json(*args: str, **kwargs: Any) -> Any:
    """Run a ``--json`` command, check it succeeded, return the parsed output."""
    result = plugq(*args, "--json", **kwargs)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: int, *fragments: str
) -> str:
    """The command failed with ``code``, one readable line on stderr, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def wait_until(
    condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition"
) -> Any:
    """Poll an observable condition until it is truthy; fail with ``what`` after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def unique_queue() -> str:
    return f"q-{uuid.uuid4().hex[:10]}"


def require_backend(url: str) -> None:
    """Skip (naming why) when the backend for ``url`` is not usable in this checkout yet."""
    import plugq
    from plugq.exceptions import BackendUnavailableError, NotSupportedError

    try:
        plugq.connect(url)
    except (NotSupportedError, BackendUnavailableError) as exc:
        pytest.skip(f"backend for {url.split('://')[0]} not available: {exc}")


def redis_url_or_skip(request: pytest.FixtureRequest) -> str:
    """The URL of the shared test Redis server (``redis_server`` fixture), or skip."""
    try:
        import plugq.testing.redis_server  # noqa: F401
    except ImportError:
        pytest.skip("plugq.testing.redis_server (the redis_server fixture) is not present yet")
    try:
        server = request.getfixturevalue("redis_server")
    except pytest.FixtureLookupError:
        pytest.skip("the redis_server fixture is not registered in conftest.py yet")
    url = str(server.url)
    require_backend(url)
    return url


class PtyProcess:
    """A command on a pseudo-terminal: what a user sees in a real terminal, as text."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: Path | str | None = None,
                 columns: int = 120, rows: int = 40) -> None:
        import pty

        master, slave = pty.openpty()
        env = dict(env)
        # rich sizes itself from these when it sees a terminal.
        env.update(COLUMNS=str(columns), LINES=str(rows), TERM="xterm-256color")
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(list(argv), stdin=slave, stdout=slave, stderr=slave,
                                     env=env, cwd=cwd, start_new_session=True)
        os.close(slave)
        self.master = master
        self.raw = b""

    def _read_some(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the other side closed
            return False
        if not chunk:
            return False
        self.raw += chunk
        return True

    @property
    def text(self) -> str:
        """Everything written so far, with colour and cursor codes removed."""
        return ANSI.sub("", self.raw.decode("utf-8", errors="replace"))

    def expect(self, pattern: str, timeout: float = 30.0, start: int = 0) -> re.Match[str]:
        """Read until ``pattern`` matches the text after offset ``start``."""
        end = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.text[start:])
            if match:
                return match
            if time.monotonic() > end:
                raise AssertionError(f"{pattern!r} never appeared; output so far:\n{self.text}")
            if not self._read_some(0.1) and self.proc.poll() is not None:
                match = re.search(pattern, self.text[start:])
                if match:
                    return match
                raise AssertionError(
                    f"process exited ({self.proc.returncode}) before {pattern!r}:\n{self.text}"
                )

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 60.0) -> int:
        """Read to the end and return the exit code."""
        end = time.monotonic() + timeout
        while self._read_some(0.1):
            if self.proc.poll() is not None:
                # Drain what is left in the pty buffer, then stop.
                while self._read_some(0.05) and select.select([self.master], [], [], 0)[0]:
                    pass
                break
            if time.monotonic() > end:
                self.proc.kill()
                raise AssertionError(f"still running after {timeout}s:\n{self.text}")
        return self.proc.wait(timeout=max(1.0, end - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)

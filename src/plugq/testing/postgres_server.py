"""A real PostgreSQL for tests: the ``postgres_*`` fixtures.

Register with ``pytest_plugins.append("plugq.testing.postgres_server")``.

The server is, in order: the one at ``PLUGQ_TEST_POSTGRES_URL`` (a URL of a
role that may create databases), else the local server at
``postgresql://postgres@127.0.0.1:5432`` if it answers, else a cluster the
tests make themselves (``initdb`` in a temporary folder, run as a non-root
user, on a free port). The tests' data goes into a throwaway database created
for the session and dropped at its end; each test gets a fresh schema in it.

``postgres_cluster`` always starts a cluster of its own, so a test may stop,
restart or crash it (a server the tests did not start is never restarted).

Without psycopg or any server, the tests that use these fixtures are skipped,
except under ``CI=true``, where that is an error: CI must run them.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _unavailable(message: str) -> None:
    if _in_ci():
        pytest.fail(f"{message}; under CI=true the PostgreSQL tests must run")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_db(url: str, dbname: str) -> str:
    """``url`` pointing at database ``dbname`` (query parameters kept)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


def _admin(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=3)


def _answers(url: str) -> bool:
    try:
        with _admin(url):
            return True
    except Exception:
        return False


class PostgresServer:
    """A server the tests may create and drop databases on."""

    def __init__(self, url: str) -> None:
        #: URL of the maintenance database (``postgres``) as a superuser or a role with CREATEDB.
        self.url = url if urlpath(url) else _with_db(url, "postgres")

    def database_url(self, dbname: str) -> str:
        return _with_db(self.url, dbname)

    def create_database(self) -> str:
        """Create an empty database with a unique name; returns its URL."""
        name = f"plugq_test_{uuid.uuid4().hex[:12]}"
        with _admin(self.url) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`create_database`, ending its sessions."""
        name = urlpath(url)
        with _admin(self.url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def urlpath(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path.lstrip("/")


def find_binary(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, else the newest Debian-style install."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return candidates[-1] if candidates else None


def _run_as() -> tuple[int, int] | None:
    """The (uid, gid) to run the server as: initdb and postgres refuse root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root and there is no 'postgres' or 'nobody' user to run PostgreSQL as")


class PostgresCluster(PostgresServer):
    """A cluster made with ``initdb`` in ``folder``, on ``127.0.0.1:port``; start, stop, crash."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or _free_port()
        self.data = folder / "data"
        self.log = folder / "postgres.log"
        self.user = _run_as()
        super().__init__(f"postgresql://postgres@127.0.0.1:{self.port}/postgres")
        initdb = find_binary("initdb")
        if initdb is None:
            raise RuntimeError("initdb is not installed (apt-get install -y postgresql)")
        self.bin = Path(initdb).parent
        if self.user is not None:
            os.chown(folder, *self.user)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-instructions")

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs = {"user": self.user[0], "group": self.user[1], "extra_groups": []}
        return subprocess.run(list(args), capture_output=True, check=check, cwd=self.folder, **kwargs)

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (same port) and wait until it accepts connections."""
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
            "-t", str(int(timeout)), "-o",
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c max_connections=60 -c shared_buffers=32MB",
            "start",
        )
        end = time.monotonic() + timeout
        while not _answers(self.url):
            if time.monotonic() > end:
                raise RuntimeError(f"PostgreSQL on port {self.port} did not start; see {self.log}")
            time.sleep(0.05)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions, close sessions)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop",
                  check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def crash(self) -> None:
        """SIGKILL the postmaster and its children, as a power cut would; :meth:`start` recovers."""
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
            end = time.monotonic() + 10
            while time.monotonic() < end:
                os.kill(pid, 0)
                time.sleep(0.05)
        # The children notice the postmaster is gone and exit; wait for the port to close.
        end = time.monotonic() + 10
        while _answers(self.url) and time.monotonic() < end:
            time.sleep(0.05)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


def _require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'plugq[postgres]')")


def _new_cluster() -> PostgresCluster:
    if find_binary("initdb") is None:
        _unavailable("no PostgreSQL server answers and initdb is not installed "
                     "(apt-get install -y postgresql)")
    folder = Path(tempfile.mkdtemp(prefix="plugq-pg-"))
    cluster = PostgresCluster(folder)
    cluster.start()
    return cluster


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session (see the module's docstring for which one)."""
    _require_psycopg()
    env = os.environ.get("PLUGQ_TEST_POSTGRES_URL")
    if env:
        yield PostgresServer(env)
        return
    if _answers(_with_db(LOCAL_URL, "postgres")):
        yield PostgresServer(LOCAL_URL)
        return
    cluster = _new_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a throwaway database, created for the session and dropped at its end."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture
def postgres_url(postgres_database: str) -> Iterator[str]:
    """A ``postgresql://`` URL on a fresh schema of the session's database, dropped after the test."""
    from plugq.connection import forget

    name = f"t_{uuid.uuid4().hex[:12]}"
    url = f"{postgres_database}?schema={name}"
    yield url
    forget(url)  # a storage plugq.connect() cached for the URL closes its pool
    with contextlib.suppress(Exception), _admin(postgres_database) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A cluster of the test's own (initdb, started), which it may stop, restart or crash."""
    _require_psycopg()
    cluster = _new_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()

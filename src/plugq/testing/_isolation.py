"""A fresh backend per test, made the default, and a clock a test can move.

Used by the pytest fixtures in :mod:`plugq.testing.pytest_plugin`, and usable
on its own (``unittest``, a notebook) through :func:`isolated_backend`.

How each URL becomes "fresh state":

* ``memory://…`` (the default): a new, uniquely named store on a
  :class:`~plugq.ManualClock` (``memory://plugq-test-<hex>?clock=manual``);
  any other query parameter of the given URL (``lease=``) is kept. The store is
  flushed and dropped from the connection cache afterwards.
* ``sqlite://``, ``sqlite:///`` or a file name without a directory
  (``sqlite:///plugq.db``): a new database file of that name (default
  ``plugq.db``) in the test's own temporary directory. Dropped afterwards.
* ``sqlite:///some/dir/file.db`` (a path with a directory) and every other
  URL (``redis://…``, ``fakeredis://``…): the same store for every test,
  **emptied before each test** — for Redis that is ``FLUSHDB`` of the
  URL's database, so point it at a database you use for nothing else.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

from plugq.backend import Backend
from plugq.connection import connect, forget, pop_default, push_default
from plugq.exceptions import ConfigurationError
from plugq.storage import Clock, JobStatus, ManualClock, Storage

#: The backend the fixtures use when neither ``--plugq-url`` nor the variable is set.
DEFAULT_TEST_URL = "memory://"
#: Environment variable read when ``--plugq-url`` is not given.
TEST_URL_ENV = "PLUGQ_TEST_URL"


class ClockControl:
    """The clock of a backend under test: read it, and move it forward.

    On a backend running on a :class:`~plugq.ManualClock` (``memory://`` in
    the fixtures) :meth:`advance` moves time at once: scheduled jobs, retry
    intervals and TTLs that fall within the jump become due immediately, with
    no real waiting. On a backend that reads the real clock (SQLite, Redis),
    :meth:`advance` really sleeps that long, so the same test still passes —
    give such runs short intervals (see :attr:`manual`).

    ``advance`` makes things *due*; a worker (:func:`plugq.testing.drain`)
    is what then runs a due job, exactly as in production.
    """

    def __init__(self, clock: Clock) -> None:
        #: The backend's own clock object.
        self.clock = clock

    def __repr__(self) -> str:
        kind = "manual" if self.manual else "real"
        return f"<ClockControl {kind} now={self.utcnow().isoformat()}>"

    @property
    def manual(self) -> bool:
        """True when :meth:`advance` jumps instead of sleeping."""
        return isinstance(self.clock, ManualClock)

    def now(self) -> float:
        """The backend's current time, in epoch seconds."""
        return self.clock.now()

    def utcnow(self) -> datetime:
        """The backend's current time as an aware UTC datetime (for ``enqueue_at``)."""
        return datetime.fromtimestamp(self.clock.now(), tz=UTC)

    def advance(self, seconds: float | timedelta) -> float:
        """Move the backend's time forward by ``seconds``; returns the new :meth:`now`.

        Raises:
            ValueError: ``seconds`` is negative (time only moves forward).
        """
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        if seconds < 0:
            raise ValueError(f"a clock only moves forward; got advance({seconds!r})")
        if isinstance(self.clock, ManualClock):
            return self.clock.advance(seconds)
        time.sleep(seconds)
        return self.clock.now()

    #: ``sleep`` is ``advance`` (reads naturally in code that "waits").
    sleep = advance


def resolve_test_url(option: str | None = None, env: dict[str, str] | None = None) -> str:
    """The URL the fixtures run on: ``option``, else ``$PLUGQ_TEST_URL``, else ``memory://``."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    assert env is not None
    return option or env.get(TEST_URL_ENV) or DEFAULT_TEST_URL


def _scheme(url: str) -> str:
    if "://" not in url:
        raise ConfigurationError(
            f"--plugq-url / {TEST_URL_ENV}={url!r} is not a URL; use memory://, "
            "sqlite:///FILE or redis://HOST:PORT/DB"
        )
    return url.split("://", 1)[0].lower()


def _sqlite_placeholder(url: str) -> str | None:
    """For a directory-less ``sqlite://`` URL, the file name to create; else None."""
    if _scheme(url) != "sqlite":
        return None
    path = url.split("://", 1)[1].split("?", 1)[0]
    path = path[1:] if path.startswith("/") else path
    if "/" in path or path == ":memory:":
        return None
    return path or "plugq.db"


def needs_tmp_dir(url: str) -> bool:
    """True when ``url`` is a SQLite placeholder that becomes a new file per test."""
    return _sqlite_placeholder(url) is not None


def fresh_url(url: str, tmp_dir: Path | None = None) -> tuple[str, bool]:
    """The URL to use for one test, and whether it is private to that test.

    A private URL (a new memory store, a new SQLite file) starts empty; a
    shared one must be emptied (see :func:`reset_backend`).

    Raises:
        ConfigurationError: ``url`` is not a URL, or a SQLite placeholder is
            given without ``tmp_dir``.
    """
    scheme = _scheme(url)
    if scheme == "memory":
        params = [(k, v) for k, v in parse_qsl(urlsplit(url).query) if k != "clock"]
        params.append(("clock", "manual"))
        return f"memory://plugq-test-{uuid.uuid4().hex[:12]}?{urlencode(params)}", True
    name = _sqlite_placeholder(url)
    if name is not None:
        if tmp_dir is None:
            raise ConfigurationError(
                f"{url!r} names no directory: a fresh database needs a temporary directory"
            )
        query = url.split("?", 1)[1] if "?" in url else ""
        return f"sqlite:///{tmp_dir / name}" + (f"?{query}" if query else ""), True
    return url, False


def reset_backend(backend: Backend) -> None:
    """Empty a shared backend before a test.

    Uses the storage's (or backend's) ``flush()`` when it has one; for the RQ
    backend, ``FLUSHDB`` on its Redis client (the whole database of the URL);
    a :class:`~plugq.storage.Storage` without ``flush`` is emptied through
    its primitives.

    Raises:
        ConfigurationError: the backend offers no way to empty it.
    """
    storage = getattr(backend, "storage", None)  # plugq's engine over a storage
    flush = getattr(storage if storage is not None else backend, "flush", None)
    if callable(flush):
        flush()
        return
    client = getattr(backend, "redis", None)  # the RQ backend's redis.Redis client
    if client is not None and callable(getattr(client, "flushdb", None)):
        client.flushdb()
        return
    if isinstance(storage, Storage):
        for queue in storage.queues():
            for status in JobStatus:
                for job_id in storage.ids(queue, status):
                    storage.remove(job_id)
        for worker in storage.list_workers():
            storage.unregister_worker(worker.name)
        return
    raise ConfigurationError(
        f"cannot give each test a fresh {backend.safe_url()}: {type(backend).__name__} has no "
        "flush(); use a URL the tests may own (a new SQLite file, memory://)"
    )


@contextmanager
def isolated_backend(url: str | None = None, tmp_dir: Path | None = None) -> Iterator[Backend]:
    """A backend with fresh state, made the default for ``Queue()`` while the block runs.

    Parameters:
        url: where to run (``None``: ``$PLUGQ_TEST_URL`` or ``memory://``);
            see this module's docstring for how each URL is made fresh.
        tmp_dir: a directory for a private SQLite file when ``url`` is a
            directory-less ``sqlite://`` placeholder.

    Inside the block ``Queue()``, ``Worker()``, ``Job.fetch(id)`` and
    ``connect()`` with no URL all use this backend, and ``PLUGQ_URL`` names it
    (so a ``plugq worker`` subprocess finds the same SQLite or Redis store).
    Afterwards the default and ``PLUGQ_URL`` are restored and a private store
    is closed and forgotten.

    Raises:
        ConfigurationError: the URL is malformed or cannot be made fresh.
        UnknownBackendError: no plugin serves the URL's scheme.
    """
    chosen, private = fresh_url(resolve_test_url(url), tmp_dir)
    backend = connect(chosen)
    if not private:
        reset_backend(backend)
    old_env = os.environ.get("PLUGQ_URL")
    os.environ["PLUGQ_URL"] = chosen
    push_default(backend)
    try:
        yield backend
    finally:
        pop_default(backend)
        if old_env is None:
            os.environ.pop("PLUGQ_URL", None)
        else:
            os.environ["PLUGQ_URL"] = old_env
        if private:
            if _scheme(chosen) == "memory":
                reset_backend(backend)
            forget(chosen)

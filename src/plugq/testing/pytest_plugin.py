"""plugq's pytest plugin: fixtures that give each test a fresh backend and its clock.

Loaded automatically (the ``pytest11`` entry point ``plugq``) wherever plugq
is installed, and **inert until a test asks for one of its fixtures**: it
adds the ``--plugq-url`` option and three fixtures, and nothing else — no
autouse fixture, no collection or reporting hook, no import of a backend, no
change to ``PLUGQ_URL`` or plugq's default backend — so a test that does not
name a ``plugq_*`` fixture runs exactly as if the plugin were absent. Disable
it entirely with ``-p no:plugq``.

Fixtures:

``plugq_backend``
    A fresh backend per test, pushed as plugq's default so application code
    calling ``Queue()``, ``Worker()`` or ``Job.fetch(id)`` without a
    connection uses it; popped and closed after the test. ``memory://`` on a
    :class:`~plugq.ManualClock` unless ``--plugq-url URL`` (or
    ``PLUGQ_TEST_URL``) says otherwise; see :mod:`plugq.testing._isolation`
    for how each URL is made fresh (SQLite placeholder URLs get a new file in
    the test's ``tmp_path``; other URLs are flushed — Redis: ``FLUSHDB`` —
    before each test).
``plugq_queue``
    ``Queue('default')`` on that backend.
``plugq_clock``
    A :class:`~plugq.testing.ClockControl` for the backend's clock:
    ``.now()``, ``.utcnow()``, ``.advance(seconds | timedelta)`` and
    ``.manual``. On ``memory://`` advancing is instant; on SQLite and Redis it
    really sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from plugq.backend import Backend
    from plugq.queue import Queue
    from plugq.testing._isolation import ClockControl


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--plugq-url`` (the only thing the plugin does at start-up)."""
    group = parser.getgroup("plugq", "plugq task queue testing")
    group.addoption(
        "--plugq-url",
        dest="plugq_url",
        default=None,
        metavar="URL",
        help=(
            "run tests that use the plugq_backend fixture on this backend instead of a "
            "fresh memory:// store: sqlite:///NAME.db (a new file per test in tmp_path), "
            "sqlite:///DIR/FILE.db or redis://HOST:PORT/DB (emptied before each test; Redis "
            "gets FLUSHDB). Default: $PLUGQ_TEST_URL, else memory://"
        ),
    )


@pytest.fixture
def plugq_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """A fresh plugq backend for this test, made the default for ``Queue()``."""
    from plugq.testing._isolation import isolated_backend, needs_tmp_dir, resolve_test_url

    url = resolve_test_url(request.config.getoption("plugq_url"))
    tmp_dir: Path | None = None
    if needs_tmp_dir(url):
        # Asked for only when needed, so memory:// tests create no directory.
        tmp_dir = request.getfixturevalue("tmp_path")
    with isolated_backend(url, tmp_dir) as backend:
        yield backend


@pytest.fixture
def plugq_queue(plugq_backend: Backend) -> Queue:
    """``Queue('default')`` on :func:`plugq_backend`."""
    from plugq.queue import Queue

    return Queue("default", connection=plugq_backend)


@pytest.fixture
def plugq_clock(plugq_backend: Backend) -> ClockControl:
    """The clock of :func:`plugq_backend`: ``.now()``, ``.advance(seconds | timedelta)``."""
    from plugq.testing._isolation import ClockControl

    return ClockControl(plugq_backend.clock)

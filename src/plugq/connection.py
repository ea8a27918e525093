"""``connect()``: from a URL (or a storage, or a foreign connection) to a backend object.

A plugin's factory returns a :class:`~plugq.storage.Storage` (then plugq's
engine runs over it) or a complete :class:`~plugq.backend.Backend`.
"""

from __future__ import annotations

import threading
from typing import Any

from ._context import _current
from ._engine import engine_for
from .backend import Backend
from .config import mask_url, resolve_url
from .exceptions import UnknownBackendError
from .plugins import backends, hook
from .storage import Storage

_lock = threading.RLock()
_cache: dict[str, Backend] = {}
_default: list[Backend] = []


def connect(url: str | None = None) -> Backend:
    """The backend for ``url`` (resolved by the configuration order when None).

    The same URL in one process returns the same backend object. Without a
    URL, inside a running job (any worker class, any backend, sync mode) it
    is the backend running that job: a task's bare ``Queue()`` must put its
    children where its own worker looks, not wherever the configuration of
    the worker's working directory points.

    Raises:
        UnknownBackendError: no installed plugin serves the URL's scheme (the
            message lists the installed ones).
        ConfigurationError: the URL is malformed.
    """
    if url is None:
        job = _current.get()
        if job is not None:
            return job.connection
        if _default:
            return _default[-1]
    resolved = resolve_url(url)
    with _lock:
        backend = _cache.get(resolved)
        if backend is not None:
            return backend
        scheme = resolved.split("://", 1)[0].lower()
        entries = backends()
        entry = entries.get(scheme)
        if entry is None:
            installed = ", ".join(f"{s}://" for s in sorted(entries)) or "none"
            raise UnknownBackendError(
                f"no backend for {mask_url(resolved)!r}: scheme {scheme!r} is not installed; "
                f"installed schemes: {installed}"
            )
        made = entry.factory(resolved)
        backend = engine_for(made) if isinstance(made, Storage) else made
        _cache[resolved] = backend
        return backend


def resolve_connection(connection: Any = None) -> Backend:
    """Accept what RQ code passes as ``connection=`` and return a backend.

    None uses the configured default; a string is a URL; a backend is used as
    is; a storage gets its engine; anything else (a ``redis.Redis`` client) is offered to the plugins.

    Raises:
        TypeError: no plugin knows the object.
    """
    if connection is None:
        return connect()
    if isinstance(connection, Backend):
        return connection
    if isinstance(connection, Storage):
        return engine_for(connection)
    if isinstance(connection, str):
        return connect(connection)
    backend = hook().plugq_adapt_connection(connection=connection)
    if isinstance(backend, Storage):
        return engine_for(backend)
    if backend is None:
        raise TypeError(
            f"connection={connection!r} is not a backend URL, a plugq backend, or a connection "
            "an installed plugin knows (a redis.Redis client needs plugq[redis])"
        )
    return backend


def push_default(backend: Backend) -> None:
    """Make ``backend`` what ``connect()`` without a URL returns, until popped."""
    with _lock:
        _default.append(backend)


def pop_default(backend: Backend) -> None:
    """Undo :func:`push_default`."""
    with _lock:
        if backend in _default:
            _default.remove(backend)


def forget(url: str) -> None:
    """Drop a cached backend (tests that delete a database file)."""
    with _lock:
        backend = _cache.pop(url, None)
    if backend is not None:
        backend.close()

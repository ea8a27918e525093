"""``redis://``, ``rediss://``, ``unix://`` and ``fakeredis://``: Redis in rq's own layout.

:class:`~plugq_rq.storage.RedisStorage` is a :class:`plugq.storage.Storage`
whose primitives are Lua scripts over rq 2.x's keys; plugq's engine runs the
lifecycle on it, and rq's worker, CLI and dashboard work on the same data.

This module stays importable without rq and redis-py installed: the hook
implementations below import them only when a URL or client is used, so a
missing extra is reported as ``pip install 'plugq[redis]'`` at that moment.
See ``docs/redis.md``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from plugq import hookimpl

if TYPE_CHECKING:
    from plugq.hookspecs import RegisterBackend

    from .storage import RedisStorage

__version__ = "0.1.0"

SCHEMES = ("redis", "rediss", "unix", "fakeredis")

_adapted: dict[int, tuple[Any, RedisStorage]] = {}
_adapted_lock = threading.Lock()


def make_backend(url: str) -> RedisStorage:
    """Build the storage for ``url`` (plugq's engine runs on it).

    Raises:
        BackendUnavailableError: rq/redis-py missing (naming the extra), or the
            server unreachable, refusing the password, or lacking the database.
    """
    from ._connection import require_redis

    require_redis()
    from .storage import RedisStorage

    return RedisStorage(url)


def url_for_client(client: Any) -> str:
    """A plugq URL describing an existing redis-py client (password included)."""
    kwargs = client.connection_pool.connection_kwargs
    if "server" in kwargs and type(client).__module__.startswith("fakeredis"):
        return f"fakeredis://client-{id(client):x}"
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    auth = ""
    if kwargs.get("password"):
        auth = f"{kwargs.get('username') or ''}:{kwargs['password']}@"
    scheme = "rediss" if "ssl" in str(client.connection_pool.connection_class).lower() else "redis"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"{scheme}://{auth}{host}:{port}/{db}"


@hookimpl
def plugq_register_backends(register: RegisterBackend) -> None:
    for scheme in SCHEMES:
        register(scheme, make_backend)


@hookimpl
def plugq_adapt_connection(connection: Any) -> RedisStorage | None:
    """``Queue(connection=redis.Redis(...))``: wrap the client, one storage per client."""
    try:
        import redis
    except ImportError:
        return None
    if not isinstance(connection, redis.Redis):
        return None
    from .storage import RedisStorage

    with _adapted_lock:
        known = _adapted.get(id(connection))
        if known is not None and known[0] is connection:
            return known[1]
        storage = RedisStorage(url_for_client(connection), client=connection)
        _adapted[id(connection)] = (connection, storage)
        return storage

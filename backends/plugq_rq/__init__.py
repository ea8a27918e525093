"""``redis://``, ``rediss://``, ``unix://`` and ``fakeredis://``: real RQ on Redis.

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

    from .backend import RQBackend

__version__ = "0.1.0"

SCHEMES = ("redis", "rediss", "unix", "fakeredis")

_adapted: dict[int, tuple[Any, RQBackend]] = {}
_adapted_lock = threading.Lock()


def make_backend(url: str) -> RQBackend:
    """Build the backend for ``url``.

    Raises:
        BackendUnavailableError: rq/redis-py missing (naming the extra), or the
            server unreachable, refusing the password, or lacking the database.
    """
    from ._connection import require_redis

    require_redis()
    from .backend import RQBackend

    return RQBackend(url)


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
def plugq_adapt_connection(connection: Any) -> RQBackend | None:
    """``Queue(connection=redis.Redis(...))``: wrap the client, one backend per client."""
    try:
        import redis
    except ImportError:
        return None
    if not isinstance(connection, redis.Redis):
        return None
    from .backend import RQBackend

    with _adapted_lock:
        known = _adapted.get(id(connection))
        if known is not None and known[0] is connection:
            return known[1]
        backend = RQBackend(url_for_client(connection), client=connection)
        _adapted[id(connection)] = (connection, backend)
        return backend

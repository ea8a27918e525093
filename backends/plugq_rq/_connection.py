"""From a plugq URL to a ``redis.Redis`` client, and Redis errors to plugq's.

``redis://``, ``rediss://`` and ``unix://`` go to :meth:`redis.Redis.from_url`
unchanged (plugq-only query parameters removed first); ``fakeredis://NAME``
gives a :class:`fakeredis.FakeRedis` on one in-process ``FakeServer`` per URL,
so every backend object made from the same URL sees the same data.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from plugq.config import mask_exception, mask_url
from plugq.exceptions import BackendUnavailableError, ConfigurationError

EXTRA_HINT = "pip install 'plugq[redis]'"

#: Query parameters plugq reads itself and does not pass to redis-py.
PLUGQ_PARAMS = ("worker_class", "lease", "scheduler_interval")

_servers: dict[str, Any] = {}
_servers_lock = threading.Lock()

F = TypeVar("F", bound=Callable[..., Any])


def require_redis() -> None:
    """Import rq and redis, or explain which extra to install.

    Raises:
        BackendUnavailableError: rq or redis-py is not installed.
    """
    try:
        import redis  # noqa: F401

        # Found, not imported: plugq's storage writes rq's format without calling
        # rq, and importing it would load all of rq into every plugq worker.
        if importlib.util.find_spec("rq") is None:
            raise ImportError("No module named 'rq'")
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the Redis backend needs rq and redis-py, which are not installed ({exc}); "
            f"install them with: {EXTRA_HINT}"
        ) from None


def split_options(url: str) -> tuple[str, dict[str, str]]:
    """Return ``url`` without plugq's own query parameters, and those parameters."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in PLUGQ_PARAMS:
            ours[key] = value
        else:
            theirs.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


#: Query parameters redis-py takes from a URL besides its typed ones
#: (``URL_QUERY_ARGUMENT_PARSERS``): strings handed to the connection as they are.
_REDIS_STRING_PARAMS = ("client_name", "username", "password")


def accepted_params(url: str) -> list[str]:
    """The query parameters a ``redis://``, ``rediss://``, ``unix://`` or ``fakeredis://`` URL takes."""
    scheme = urlsplit(url).scheme.lower()
    accepted = set(PLUGQ_PARAMS)
    if scheme == "fakeredis":
        return sorted(accepted)
    try:
        from redis.connection import URL_QUERY_ARGUMENT_PARSERS
    except ImportError:
        # Without redis-py the backend fails anyway, naming the extra to install.
        return sorted(accepted)
    accepted.update(URL_QUERY_ARGUMENT_PARSERS)
    accepted.update(_REDIS_STRING_PARAMS)
    if scheme != "rediss":
        accepted = {k for k in accepted if not k.startswith("ssl_")}
    else:
        accepted.update(("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile",
                         "ssl_ca_path", "ssl_ciphers"))
    return sorted(accepted)


def refuse_unknown_params(url: str) -> None:
    """Refuse a query parameter nothing reads (a typo such as ``?leese=3``).

    redis-py passes an unknown one on to the connection class, which fails
    with a TypeError at the first command: a traceback for a user's typo.

    Raises:
        ConfigurationError: names the parameter and lists the accepted ones.
    """
    accepted = accepted_params(url)
    for key, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if key not in accepted:
            raise ConfigurationError(
                f"{mask_url(url)}: unknown parameter {key!r}; accepted: {', '.join(accepted)}"
            )


def make_client(url: str) -> Any:
    """A redis-py client (bytes responses, as rq needs) for ``url``.

    Raises:
        BackendUnavailableError: the extra is missing (fakeredis for ``fakeredis://``).
        ConfigurationError: the URL cannot be parsed by redis-py.
    """
    require_redis()
    # urlsplit, not split("://"): split_options() turns a bare "fakeredis://"
    # into "fakeredis:" (urlunsplit drops an empty netloc's slashes).
    scheme = urlsplit(url).scheme.lower()
    if scheme == "fakeredis":
        try:
            import fakeredis
        except ImportError:
            raise BackendUnavailableError(
                f"fakeredis:// needs the fakeredis package; install it with: {EXTRA_HINT}"
            ) from None
        with _servers_lock:
            server = _servers.get(url)
            if server is None:
                server = _servers[url] = fakeredis.FakeServer()
        return fakeredis.FakeRedis(server=server)
    import redis

    check_url(url)
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30,
                                    **_no_setinfo(redis))
    except ValueError as exc:
        raise ConfigurationError(
            f"{mask_url(url)!r} is not a valid Redis URL: {mask_url(str(exc), url)}"
        ) from None


@functools.cache
def _no_setinfo(redis: Any) -> dict[str, Any]:
    """The option that turns off CLIENT SETINFO on each new connection.

    redis-py sends two CLIENT SETINFO commands per connection and, to build
    them, reads its own package metadata from disk every time: about half of
    what a new connection costs. A ``fork`` worker opens new connections in
    every job's child, so that is paid per job. Only ``CLIENT LIST`` would show
    the library name. redis-py 8 names the option ``driver_info`` (and warns
    about the older ``lib_name``/``lib_version``, which 5 to 7 take).
    """
    params = inspect.signature(redis.connection.AbstractConnection.__init__).parameters
    if "driver_info" in params:
        return {"driver_info": None}
    return {"lib_name": None, "lib_version": None}


def check_url(url: str) -> None:
    """Refuse what redis-py would silently reinterpret or fail on later, with the reason.

    A database path that is not a number (``redis://host/abc``) would select
    db 0; a port out of range fails only at the first command, as an error
    that is not a connection error.

    Raises:
        ConfigurationError: naming the URL (masked) and the part at fault.
    """
    parts = urlsplit(url)
    shown = mask_url(url)
    if parts.scheme.lower() in ("redis", "rediss"):
        try:
            port = parts.port
        except ValueError:
            port = -1
        if port is not None and not 0 < port < 65536:
            raise ConfigurationError(
                f"{shown!r}: the port must be a number from 1 to 65535 (a password holding "
                "'/', '#', '?' or '@' must be percent-encoded, e.g. %2F)"
            )
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ConfigurationError(
                f"{shown!r}: the path must be a database number, e.g. redis://host:6379/0, "
                f"not {mask_url(db, url)!r}"
            )
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "db" and not value.isdigit():
            raise ConfigurationError(f"{shown!r}: db={mask_url(value, url)!r} must be a number")


def unavailable(url: str, exc: BaseException) -> BackendUnavailableError:
    """The one error plugq raises for an unreachable or refusing Redis."""
    import redis

    text = mask_url(str(exc), url) or type(exc).__name__
    if isinstance(exc, redis.exceptions.AuthenticationError) or "WRONGPASS" in text or "NOAUTH" in text:
        why = f"authentication failed ({text}); check the user and password in the URL"
    elif "DB index" in text or "invalid DB" in text.lower():
        why = f"the database number in the URL is not available on this server ({text})"
    elif isinstance(exc, redis.exceptions.TimeoutError):
        why = f"the server did not answer in time ({text})"
    else:
        why = f"cannot connect ({text}); is redis-server running there?"
    return BackendUnavailableError(f"Redis at {mask_url(url)} is unavailable: {why}")


def is_connection_error(exc: BaseException) -> bool:
    """True for errors that mean 'Redis is not usable right now' rather than a bug."""
    import redis

    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return True
    text = str(exc)
    return isinstance(exc, redis.exceptions.ResponseError) and (
        "DB index" in text or "NOAUTH" in text or "WRONGPASS" in text
    )


def translation(url: str, exc: Exception) -> BackendUnavailableError | None:
    """For ``exc`` raised by a primitive: masks the URL in it; the error to raise instead, if any.

    A connection error becomes BackendUnavailableError; any other is raised as it is.
    """
    # The client library's message (and anything chained to it) may quote the URL.
    mask_exception(exc, url)
    return unavailable(url, exc) if is_connection_error(exc) else None


@contextlib.contextmanager
def translated(url: str) -> Iterator[None]:
    """Turn redis-py connection errors raised inside the block into BackendUnavailableError."""
    try:
        yield
    except BackendUnavailableError:
        raise
    except Exception as exc:
        instead = translation(url, exc)
        if instead is not None:
            raise instead from exc
        raise


def translate_errors(method: F) -> F:
    """Decorate a backend method so connection errors surface as BackendUnavailableError.

    A ``try`` in the wrapper rather than ``with translated(...)``: a generator
    context manager costs more than a primitive's own Python work.
    """

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except BackendUnavailableError:
            raise
        except Exception as exc:
            instead = translation(self.url, exc)
            if instead is not None:
                raise instead from exc
            raise

    return wrapper  # type: ignore[return-value]


class NoReply:
    """Commands sent on a connection of their own with ``CLIENT REPLY OFF``: not waited for.

    For a write whose answer nobody needs but whose sending must happen *before*
    what follows (see ``RedisStorage.claim``): it costs a ``sendall`` instead of
    a round trip through redis-py's pool. Bytes handed to the kernel reach
    Redis even if this process is SIGKILLed right after. :meth:`send` returns
    False when such a connection is not available (fakeredis, a server or ACL
    refusing ``CLIENT REPLY``, a broken connection): the caller then sends the
    command the ordinary way.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = 0
        self._refused = False

    def _connect(self) -> Any:
        pool = self._client.connection_pool
        conn = pool.connection_class(**pool.connection_kwargs)
        conn.connect()  # TLS, AUTH and SELECT as the pool's own connections
        # Asked with replies on first, so a refusal is read (with replies off,
        # an error would not come back, and every later reply would pile up unread).
        conn.send_command("CLIENT", "REPLY", "ON", check_health=False)
        try:
            answer = conn.read_response()
        except Exception:
            answer = None
        if answer not in (b"OK", "OK", True):
            self._refused = True  # not tried again in this process
            conn.disconnect()
            return None
        conn.send_command("CLIENT", "REPLY", "OFF", check_health=False)
        return conn

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None and self._pid == os.getpid():
            with contextlib.suppress(Exception):
                conn.disconnect()

    def send(self, *args: Any) -> bool:
        """Send one command (its arguments, or one ``bytes`` already in RESP)."""
        if self._refused:
            return False
        with self._lock:
            conn = self._conn
            try:
                if conn is None or self._pid != os.getpid():
                    # A connection inherited over fork() is the parent's: never written here.
                    self._conn, self._pid = None, os.getpid()
                    conn = self._conn = self._connect()
                    if conn is None:
                        return False
                elif conn.can_read(timeout=0):
                    # Something came back on a connection that should stay silent
                    # (the server closed it): start over next time.
                    raise ConnectionError("unexpected data")
                if len(args) == 1 and isinstance(args[0], bytes):
                    conn.send_packed_command([args[0]], check_health=False)  # already RESP
                else:
                    conn.send_command(*args, check_health=False)
                return True
            except Exception:
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.disconnect()
                self._conn = None
                return False


class _Heads(dict[int, bytes]):
    """``$<n>``, the head of a RESP bulk string of n bytes, made once per length."""

    def __missing__(self, n: int) -> bytes:
        head = b"$%d" % n
        if n < 65536:
            self[n] = head
        return head


_HEADS = _Heads()


def resp_command(head: Sequence[bytes], values: Sequence[bytes | str]) -> bytes:
    """One command in RESP: ``head`` (already bytes) then ``values`` (text is sent as UTF-8).

    For the batch insert's tens of thousands of arguments: redis-py's
    ``pack_command`` checks and converts each one through several layers; here
    each costs an encode, a length and a slot in one ``join``.
    """
    enc = list(head)
    # type(), not isinstance(): a fifth cheaper per value, which mypy does not follow
    enc += [v.encode() if type(v) is str else v for v in values]  # type: ignore[misc]
    out: list[bytes] = [b""] * (2 * len(enc) + 1)
    out[0] = b"*%d" % len(enc)
    out[1::2] = [_HEADS[n] for n in map(len, enc)]
    out[2::2] = enc
    out.append(b"")
    # "*N", "$len", value, "$len", value, …, "" joined by CRLF: RESP's framing.
    return b"\r\n".join(out)


class Direct:
    """Scripts run on a connection of this thread's own, outside redis-py's pool.

    The per-job primitives (claim, put, insert) cost one round trip each; what
    redis-py adds per command around it — the pool's lock and checkout with its
    health check, ``execute_command``'s retry and instrumentation layers,
    ``Script.__call__`` — was measured at several times the cost of the Lua
    itself (~70-100 µs of client CPU per call). Here: pack, ``sendall``, read.
    Connection settings (TLS, AUTH, db, timeouts) are the pool's own. As
    redis-py does by default, a connection error is retried once on a new
    connection.
    """

    def __init__(self, client: Any) -> None:
        import redis

        self._client = client
        self._no_script = redis.exceptions.NoScriptError
        self._lost = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
        self._local = threading.local()
        #: Every connection made here in this process, for close().
        self._made: list[Any] = []
        self._lock = threading.Lock()

    def _connection(self) -> Any:
        local = self._local
        conn = local.__dict__.get("conn")
        if conn is None or local.pid != os.getpid():
            # One per thread, and never one inherited over fork().
            pool = self._client.connection_pool
            conn = local.conn = pool.connection_class(**pool.connection_kwargs)
            with self._lock:
                if local.__dict__.get("pid") != os.getpid():
                    self._made = [c for c in self._made if c.pid == os.getpid()]
                self._made.append(conn)
            local.pid = os.getpid()
        return conn

    def close(self) -> None:
        with self._lock:
            made, self._made = self._made, []
        for conn in made:
            with contextlib.suppress(Exception):
                if conn.pid == os.getpid():
                    conn.disconnect()

    def run(self, script: Any, args: list[Any]) -> Any:
        conn = self._connection()
        return self._send(conn, script, conn.pack_command("EVALSHA", script.sha, 0, *args))

    def run_values(self, script: Any, values: Sequence[bytes | str]) -> Any:
        """:meth:`run` for arguments that are all text or bytes, packed by :func:`resp_command`."""
        head = (b"EVALSHA", script.sha.encode() if isinstance(script.sha, str) else script.sha, b"0")
        return self._send(self._connection(), script, [resp_command(head, values)])

    def _send(self, conn: Any, script: Any, packed: Any) -> Any:
        for attempt in range(3):
            try:
                conn.send_packed_command(packed, check_health=False)
                return conn.read_response()
            except self._no_script:
                if attempt == 2:
                    raise
                # The server lost its scripts (restart, SCRIPT FLUSH): load it again.
                self._client.script_load(script.script)
            except self._lost:
                conn.disconnect()
                if attempt:
                    raise
        raise AssertionError("unreachable")

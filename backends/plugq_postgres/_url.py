"""``postgresql://`` URLs: plugq's own parameters out, libpq's passed through, the rest refused."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from plugq.config import mask_url
from plugq.exceptions import ConfigurationError

_FORM = "postgresql://USER:PASSWORD@HOST:PORT/DATABASE[?schema=plugq&lease=60]"

#: Parameters plugq reads itself, with what each must be.
PLUGQ_PARAMS = {
    "schema": "a lower-case identifier ([a-z_][a-z0-9_]*, at most 50 characters), default plugq",
    "lease": "seconds > 0 without a heartbeat after which a worker's jobs are abandoned, "
             "default 60",
    "pool_size": "the most connections a process opens, an integer >= 1, default 8",
    "reconnect_timeout": "seconds > 0 to wait out a lost server before raising, default 60",
}

#: libpq connection parameters passed through unchanged.
LIBPQ_PARAMS = (
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "connect_timeout",
    "application_name", "options", "sslmode", "sslrootcert", "sslcert", "sslkey",
    "sslpassword", "sslcrl", "sslcompression", "gssencmode", "channel_binding",
    "target_session_attrs", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "tcp_user_timeout", "service",
)

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,49}")


@dataclass(frozen=True)
class Settings:
    """What a ``postgresql://`` URL says."""

    #: The URL for libpq: plugq's parameters removed.
    conninfo: str
    schema: str
    lease: float
    pool_size: int
    reconnect_timeout: float


def _positive(shown: str, key: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise ConfigurationError(
            f"{shown}: {key}={value!r} is not valid; {key} must be {PLUGQ_PARAMS[key]}"
        )
    return number


def parse_url(url: str) -> Settings:
    """Read a ``postgresql://`` (or ``postgres://``) URL.

    Raises:
        ConfigurationError: another scheme, an unknown or repeated parameter,
            a bad value; one line naming it, with passwords masked.
    """
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"{shown!r} is not a valid URL ({exc}); expected {_FORM}") from None
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ConfigurationError(f"{shown!r} is not a PostgreSQL URL; expected {_FORM}")
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in seen:
            raise ConfigurationError(f"{shown}: parameter {key!r} is given more than once")
        seen.add(key)
        if key in PLUGQ_PARAMS:
            ours[key] = value
        elif key in LIBPQ_PARAMS:
            theirs.append((key, value))
        else:
            raise ConfigurationError(
                f"{shown}: unknown parameter {key!r}; the postgres backend accepts "
                + "; ".join(f"{k} ({v})" for k, v in PLUGQ_PARAMS.items())
                + "; and libpq's " + ", ".join(LIBPQ_PARAMS)
            )
    schema = ours.get("schema", "plugq")
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigurationError(
            f"{shown}: schema={schema!r} is not valid; schema must be {PLUGQ_PARAMS['schema']}"
        )
    lease = _positive(shown, "lease", ours["lease"]) if "lease" in ours else 60.0
    reconnect = (
        _positive(shown, "reconnect_timeout", ours["reconnect_timeout"])
        if "reconnect_timeout" in ours else 60.0
    )
    pool_size = 8
    if "pool_size" in ours:
        raw = ours["pool_size"]
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigurationError(
                f"{shown}: pool_size={raw!r} is not valid; pool_size must be "
                f"{PLUGQ_PARAMS['pool_size']}"
            )
        pool_size = int(raw)
    if not any(key == "connect_timeout" for key, _ in theirs):
        # libpq waits forever by default; a worker must notice a dead server.
        theirs.append(("connect_timeout", "10"))
    conninfo = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(theirs)))
    return Settings(conninfo, schema, lease, pool_size, reconnect)

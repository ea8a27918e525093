"""Configuration: where the backend URL and defaults come from.

Order (first wins): an explicit argument or ``--url``, ``PLUGQ_URL``,
``[tool.plugq]`` in the nearest ``pyproject.toml`` upward from the working
directory, then ``sqlite:///plugq.db``.
"""

from __future__ import annotations

import os
import re
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from ._validate import number_error, queue_name_error
from .exceptions import ConfigurationError

DEFAULT_URL = "sqlite:///plugq.db"
#: A module path in allowed_modules: dotted identifiers, nothing else.
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")

#: Keys accepted in ``[tool.plugq]`` and the type each must have.
KNOWN_KEYS: dict[str, tuple[type, ...]] = {
    "url": (str,),
    "serializer": (str,),
    "job_timeout": (int, float),
    "result_ttl": (int,),
    "queues": (list,),
    "allowed_modules": (list,),
}


@dataclass
class Settings:
    """Resolved settings and, for each, where it came from (for error messages)."""

    url: str = DEFAULT_URL
    serializer: str = "pickle"
    #: seconds; -1.0 means no timeout; None means not configured (RQ's 180 s applies).
    job_timeout: float | None = None
    result_ttl: int | None = None
    queues: list[str] = field(default_factory=lambda: ["default"])
    allowed_modules: list[str] | None = None
    sources: dict[str, str] = field(default_factory=dict)


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest ``pyproject.toml`` at or above ``start`` (default: the cwd)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _read_tool_table(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from None
    table = data.get("tool", {}).get("plugq", {})
    if not isinstance(table, dict):
        raise ConfigurationError(f"{path}: [tool.plugq] must be a table")
    return table


def load_settings(start: Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read ``[tool.plugq]`` and the environment; validate every value.

    Raises:
        ConfigurationError: naming the key, the bad value and where it came from.
    """
    env = dict(os.environ) if env is None else env
    settings = Settings(sources={"url": "default"})
    path = find_pyproject(start)
    if path is not None:
        table = _read_tool_table(path)
        where = f"[tool.plugq] in {path}"
        for key, value in table.items():
            if key not in KNOWN_KEYS:
                raise ConfigurationError(
                    f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(KNOWN_KEYS))}"
                )
            _apply(settings, key, value, where)
    if env.get("PLUGQ_URL"):
        _apply(settings, "url", env["PLUGQ_URL"], "environment variable PLUGQ_URL")
    if env.get("PLUGQ_ALLOWED_MODULES"):
        mods = [m.strip() for m in env["PLUGQ_ALLOWED_MODULES"].split(",") if m.strip()]
        _apply(settings, "allowed_modules", mods, "environment variable PLUGQ_ALLOWED_MODULES")
    return settings


def _apply(settings: Settings, key: str, value: Any, where: str) -> None:
    types = KNOWN_KEYS[key]
    # any(...) rather than isinstance(value, types): checks the same without
    # narrowing `value` to `object` for the checks below.
    if isinstance(value, bool) or not any(isinstance(value, t) for t in types):
        raise ConfigurationError(
            f"{where}: {key} = {value!r} must be {' or '.join(t.__name__ for t in types)}"
        )
    if key == "url":
        validate_url(value, where=f"{where}: url")
    elif key == "serializer":
        from .serializers import SERIALIZERS

        if value not in SERIALIZERS:
            raise ConfigurationError(
                f"{where}: serializer = {value!r}; choose one of {', '.join(sorted(SERIALIZERS))}"
            )
    elif key == "job_timeout":
        problem = number_error(value, key, minimum=0, exclusive=True, allow_none_marker=True)
        if problem is not None:
            raise ConfigurationError(f"{where}: {problem} (-1 means no timeout)")
        # -1 stays -1 ("no timeout", as Queue(default_timeout=-1)); None means "not set".
        value = float(value)
    elif key == "result_ttl":
        problem = number_error(value, key, minimum=-1)
        if problem is not None:
            raise ConfigurationError(f"{where}: {problem}")
    elif key in ("queues", "allowed_modules"):
        if not value or not all(isinstance(v, str) and v for v in value):
            raise ConfigurationError(f"{where}: {key} = {value!r} must be a list of names")
        for name in value:
            problem = (queue_name_error(name) if key == "queues" else
                       None if _MODULE_NAME.match(name) else
                       f"{name!r} is not a dotted module name such as 'myapp.tasks'")
            if problem is not None:
                raise ConfigurationError(f"{where}: {key} = {value!r}: {problem}")
    setattr(settings, key, value)
    settings.sources[key] = where


def validate_url(url: str, *, where: str = "url") -> str:
    """Check a backend URL has the form ``scheme://…``.

    Raises:
        ConfigurationError: naming the URL (password masked) and the expected form.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(
            f"{where}: {mask_url(str(url))!r} is not a backend URL; expected scheme://…, "
            "e.g. sqlite:///plugq.db, memory://, redis://localhost:6379/0"
        )
    scheme = url.split("://", 1)[0]
    if not scheme or not scheme.replace("+", "").replace("-", "").isalnum():
        raise ConfigurationError(f"{where}: {mask_url(url)!r} has no valid scheme before '://'")
    return url


def current_settings() -> Settings:
    """:func:`load_settings` for the current directory and environment, cached.

    ``Queue()`` reads its defaults here, so ``pyproject.toml`` is parsed once
    per working directory and environment rather than on every queue or
    enqueue. Call :func:`clear_settings_cache` after editing the file in the
    same process.

    Inside :func:`pinned_settings` (a worker's run), the settings as found
    when it began, without looking at the directory or the environment.

    Raises:
        ConfigurationError: as :func:`load_settings`.
    """
    pinned = _pinned_settings.get()
    if pinned is not None:
        return pinned
    key = (
        os.getcwd(),
        os.environ.get("PLUGQ_URL", ""),
        os.environ.get("PLUGQ_ALLOWED_MODULES", ""),
    )
    with _settings_lock:
        cached = _settings_cache.get(key)
        if cached is None:
            cached = _settings_cache[key] = load_settings()
        return cached


@contextmanager
def pinned_settings() -> Iterator[Settings]:
    """:func:`current_settings` read once, for everything run in this context until it exits.

    A worker asks for the settings for each job (the allow-list, the
    serializer policy); the cache key alone cost a ``getcwd`` system call
    and two environment reads each time. A worker's settings are those of
    its start, as they are for every other option: a task that changes
    directory does not change them.

    Raises:
        ConfigurationError: as :func:`load_settings`.
    """
    settings = current_settings()
    token = _pinned_settings.set(settings)
    try:
        yield settings
    finally:
        _pinned_settings.reset(token)


def clear_settings_cache() -> None:
    """Forget the settings :func:`current_settings` has read."""
    with _settings_lock:
        _settings_cache.clear()


_settings_lock = threading.Lock()
_pinned_settings: ContextVar[Settings | None] = ContextVar("plugq_settings", default=None)
_settings_cache: dict[tuple[str, str, str], Settings] = {}


def resolve_url(url: str | None = None) -> str:
    """The backend URL by the documented order of precedence."""
    if url:
        return validate_url(url)
    return current_settings().url


#: ``scheme://user:PASSWORD@`` anywhere in a text. The password runs to the
#: last '@' of the token, so one holding '/', '#', '?' or '@' unencoded (which
#: URL parsers split elsewhere) is masked whole.
_USERINFO = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"<>]*:)(?P<secret>[^\s'\"<>]*)@"
    r"(?=[^\s'\"<>@]*(?:[\s'\"<>]|\Z))"
)
#: ``?password=…`` / ``&password=…`` (redis-py reads these), and ``password: '…'``
#: / ``password=…`` in reprs of keyword arguments.
_SECRET_WORDS = r"(?:password|passwd|pwd|pass|secret|token|ssl_password|sentinel_password|api_key)"
_QUERY_SECRET = re.compile(rf"(?i)(?P<head>[?&;]{_SECRET_WORDS}=)(?P<secret>[^&;#\s'\"<>]*)")
_KWARG_SECRET = re.compile(
    rf"(?i)(?P<head>['\"]?\b{_SECRET_WORDS}['\"]?\s*[:=]\s*)(?P<secret>'[^']*'|\"[^\"]*\"|[^,\s}})&]+)"
)


def _secrets_of(url: str) -> set[str]:
    """Every password ``url`` holds, in the forms it could appear in a message."""
    found: set[str] = set()
    for pattern in (_USERINFO, _QUERY_SECRET):
        for m in pattern.finditer(url):
            secret = m.group("secret")
            if secret:
                plain = unquote(secret)
                # As given, decoded, and re-encoded (a client may rebuild the URL).
                found.update({secret, plain, quote(plain, safe=""), quote_plus(plain, safe="")})
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password:
        # What a URL parser makes of it (possibly a fragment of the real one).
        found.update({password, unquote(password)})
    # A parser that split the URL at an unencoded '/', '#', '?' or '@' inside
    # the password quotes only a piece of it ("port 'hunter' is not a number").
    pieces = {piece for secret in found for piece in re.split(r"[/#?@]", secret)}
    # Short pieces would mask ordinary words in the message ("ss" in "password").
    return {s for s in found if len(s) >= 2} | {p for p in pieces if len(p) >= 4}


def mask_url(text: str, *urls: str) -> str:
    """``text`` with every password replaced by ``***``: the one masking function.

    ``text`` may be a URL or any message holding URLs. Masked: the userinfo
    password of every ``scheme://user:pass@host`` (also when it contains
    ``/``, ``#``, ``?`` or ``@``, encoded or not), ``password=`` query
    parameters, ``password: '…'`` in reprs, and every occurrence of a
    password of ``urls`` (a client library's message may quote a fragment of
    the URL it failed to parse).
    """
    if not isinstance(text, str):
        text = str(text)
    for secret in sorted(set().union(*(_secrets_of(u) for u in urls)) if urls else (), key=len,
                         reverse=True):
        text = text.replace(secret, "***")
    # Query first: a password holding '@' must not be read as userinfo instead.
    text = _QUERY_SECRET.sub(lambda m: m.group("head") + "***", text)
    text = _USERINFO.sub(lambda m: m.group("head") + "***@", text)
    return _KWARG_SECRET.sub(lambda m: m.group("head") + "***", text)


def mask_exception(exc: BaseException, *urls: str) -> BaseException:
    """Mask passwords in ``exc`` and every exception chained to it, in place; returns ``exc``.

    Client libraries put URLs (and fragments of them) in their messages; the
    traceback of a chained error prints them all, so each link is rewritten.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(
            mask_url(arg, *urls) if isinstance(arg, str) else arg for arg in current.args
        )
        current = current.__cause__ or current.__context__
    return exc

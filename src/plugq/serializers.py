"""Serializers for job arguments, results and meta.

Arguments are serialized at enqueue on every backend (the memory one too), so
a value that cannot cross a process boundary fails in a unit test exactly as
it would in production.
"""

from __future__ import annotations

import json
import pickle
from typing import Any, Protocol

from .exceptions import ConfigurationError, SerializationError


class Serializer(Protocol):
    """What a serializer provides: a name and a ``dumps``/``loads`` pair."""

    name: str

    def dumps(self, obj: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class PickleSerializer:
    """The default, as RQ's: any picklable object. Reading a pickle runs code."""

    name = "pickle"

    def dumps(self, obj: Any) -> bytes:
        try:
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize {_short(obj)} with the pickle serializer: {exc}"
            ) from exc

    def loads(self, data: bytes) -> Any:
        return pickle.loads(data)


class JSONSerializer:
    """JSON only: no object is ever constructed from stored data."""

    name = "json"

    def dumps(self, obj: Any) -> bytes:
        try:
            return json.dumps(obj, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"cannot serialize {_short(obj)} with the json serializer: {exc}; "
                "pass JSON types (str, int, float, bool, None, list, dict) or use "
                "serializer='pickle'"
            ) from exc

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


SERIALIZERS: dict[str, Serializer] = {"pickle": PickleSerializer(), "json": JSONSerializer()}


def get_serializer(name: str | Serializer | type[Any] | None) -> Serializer:
    """Return the serializer called ``name`` (None means pickle)."""
    if name is None:
        return SERIALIZERS["pickle"]
    if isinstance(name, type):
        # rq's form: serializer=JSONSerializer (the class, not an instance).
        if getattr(name, "name", None) in SERIALIZERS and isinstance(SERIALIZERS[name.name], name):
            return SERIALIZERS[name.name]
        raise ConfigurationError(
            f"unknown serializer class {name.__name__}; use 'pickle', 'json', "
            "plugq.serializers.PickleSerializer or plugq.serializers.JSONSerializer"
        )
    if not isinstance(name, str):
        return name
    try:
        return SERIALIZERS[name]
    except KeyError:
        raise ConfigurationError(
            f"unknown serializer {name!r}; choose one of: {', '.join(sorted(SERIALIZERS))}"
        ) from None


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 80 else text[:77] + "..."

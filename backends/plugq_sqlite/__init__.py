"""``sqlite:///PATH``: one SQLite file shared by many processes (being built)."""

from __future__ import annotations

from plugq import hookimpl
from plugq.exceptions import NotSupportedError


def _not_yet(url: str):  # type: ignore[no-untyped-def]
    raise NotSupportedError(f"the sqlite backend is not built yet ({url})")


@hookimpl
def plugq_register_backends(register):  # type: ignore[no-untyped-def]
    register("sqlite", _not_yet)

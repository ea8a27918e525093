"""``redis://`` and friends: real RQ on Redis (being built)."""

from __future__ import annotations

from plugq import hookimpl
from plugq.exceptions import NotSupportedError


def _not_yet(url: str):  # type: ignore[no-untyped-def]
    raise NotSupportedError(f"the rq backend is not built yet ({url})")


@hookimpl
def plugq_register_backends(register):  # type: ignore[no-untyped-def]
    for scheme in ("redis", "rediss", "unix", "fakeredis"):
        register(scheme, _not_yet)

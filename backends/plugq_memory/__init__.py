"""``memory://[NAME]``: an in-process store, for unit tests and notebooks.

Thread-safe (one lock), storing serialized payloads exactly as the durable
backends do, and reading the time from an injectable clock so tests can
fast-forward schedules, retry intervals and TTLs. ``memory://NAME`` names a
process-wide store, so application code calling ``Queue()`` and a test's
``Worker`` meet in the same one.

Query parameter ``clock=manual`` starts the store on a
:class:`~plugq.ManualClock`; ``lease=SECONDS`` sets the worker lease.

The storage module is imported when a ``memory://`` URL is first used (or
:class:`MemoryStorage` is asked for), not when plugins are loaded: a worker
on another backend does not carry it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from plugq import hookimpl

if TYPE_CHECKING:
    from .storage import MemoryBackend, MemoryStorage

__version__ = "0.1.0"


def make_storage(url: str) -> MemoryStorage:
    """Build the storage for ``url`` (see :class:`~plugq_memory.storage.MemoryStorage`)."""
    from .storage import MemoryStorage

    return MemoryStorage(url)


@hookimpl
def plugq_register_backends(register):  # type: ignore[no-untyped-def]
    register("memory", make_storage)


def __getattr__(name: str) -> Any:
    if name in ("MemoryBackend", "MemoryStorage"):
        from . import storage

        return getattr(storage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["MemoryBackend", "MemoryStorage"]

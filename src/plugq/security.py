"""Guards for untrusted payloads: module allow-list, HMAC signing, serializer policy.

Anyone who can write to the store (the Redis server, the SQLite file) can
make a worker import and call any function, and with pickle, run any code
while the payload is read. These checks run in the worker *before* anything
is imported or deserialized:

* ``allowed_modules`` (``[tool.plugq]`` or ``PLUGQ_ALLOWED_MODULES``): a job
  whose function (or callback) lives outside these modules is failed unrun.
* ``PLUGQ_SECRET_KEY``: producers seal each payload with an HMAC-SHA256 over
  the function name, the serializer and the serialized arguments; a worker
  with the key refuses unsigned or tampered jobs.
* a worker configured with ``serializer = "json"`` refuses pickle payloads, so
  a pickle planted in the store is never read.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from .exceptions import PlugqError
from .storage import JobRecord

MAGIC = b"PQS1"
_MAC_LEN = 32


class UntrustedJobError(PlugqError):
    """A job failed a security check and was not run; the message says which."""


def secret_key() -> bytes | None:
    """The signing key from ``PLUGQ_SECRET_KEY`` (None when unset)."""
    key = os.environ.get("PLUGQ_SECRET_KEY")
    return key.encode() if key else None


def _mac(
    key: bytes, func_name: str, serializer: str, callbacks: tuple[str | None, str | None], data: bytes
) -> bytes:
    # Callbacks are covered too: they are imported and called like the function.
    parts = (func_name, serializer, callbacks[0] or "", callbacks[1] or "")
    msg = b"\x00".join((*(p.encode() for p in parts), data))
    return hmac.new(key, msg, hashlib.sha256).digest()


def seal(
    func_name: str, serializer: str, data: bytes,
    on_success: str | None = None, on_failure: str | None = None, key: bytes | None = None,
) -> bytes:
    """Prefix ``data`` with its MAC when a key is configured; else return it unchanged."""
    key = key if key is not None else secret_key()
    if not key:
        return data
    return MAGIC + _mac(key, func_name, serializer, (on_success, on_failure), data) + data


def is_sealed(payload: bytes) -> bool:
    return payload[:4] == MAGIC and len(payload) >= 4 + _MAC_LEN


def unseal(payload: bytes) -> bytes:
    """The serialized arguments inside ``payload``, without checking the MAC.

    For reading a job's arguments in the producer or a monitor; the worker
    uses :func:`verified_payload` instead.
    """
    return payload[4 + _MAC_LEN:] if is_sealed(payload) else payload


def verified_payload(rec: JobRecord, key: bytes | None = None) -> bytes:
    """The arguments of ``rec`` after every check a worker makes before running it.

    Raises:
        UntrustedJobError: outside the allow-list, unsigned or tampered while a
            key is set, or a pickle payload on a json-only worker.
    """
    from .config import current_settings

    # Read once per job: current_settings() costs a getcwd() and environment
    # lookups to find its cache entry, and this runs before every job.
    settings = current_settings()
    _check_allowed(rec, settings.allowed_modules)
    if settings.serializer == "json" and rec.serializer != "json":
        raise UntrustedJobError(
            f"job {rec.id} uses the {rec.serializer!r} serializer but this worker is configured "
            "with serializer = 'json' and refuses anything else (nothing was deserialized)"
        )
    key = key if key is not None else secret_key()
    if not key:
        return unseal(rec.payload)
    if not is_sealed(rec.payload):
        raise UntrustedJobError(
            f"job {rec.id} is not signed and PLUGQ_SECRET_KEY is set: refused unrun"
        )
    mac, data = rec.payload[4:4 + _MAC_LEN], rec.payload[4 + _MAC_LEN:]
    expected = _mac(key, rec.func_name, rec.serializer, (rec.on_success, rec.on_failure), data)
    if not hmac.compare_digest(mac, expected):
        raise UntrustedJobError(
            f"job {rec.id} has a bad signature (tampered, or signed with another key): refused unrun"
        )
    return data


def module_allowed(func_name: str, allowed: list[str] | None) -> bool:
    if allowed is None:
        return True
    return any(func_name == m or func_name.startswith(m + ".") for m in allowed)


def _check_allowed(rec: JobRecord, allowed: list[str] | None) -> None:
    if allowed is None:
        return
    for what, name in (("function", rec.func_name), ("on_success", rec.on_success),
                       ("on_failure", rec.on_failure)):
        if name and not module_allowed(name, allowed):
            raise UntrustedJobError(
                f"job {rec.id}: {what} {name!r} is outside allowed_modules {allowed!r}; "
                "refused without importing it"
            )

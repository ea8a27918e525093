"""Guards for untrusted payloads: module allow-list, HMAC signing, serializer policy.

Anyone who can write to the store (the Redis server, the SQLite file) can
make a worker import and call any function, and with pickle, run any code
while the payload is read. These checks run in the worker *before* anything
is imported or deserialized:

* ``allowed_modules`` (``[tool.plugq]`` or ``PLUGQ_ALLOWED_MODULES``): a job
  whose function (or callback) lives outside these modules is failed unrun.
* ``PLUGQ_SECRET_KEY``: producers seal each payload with an HMAC-SHA256 over
  the function name, the serializer, the serialized arguments and every other
  field a worker acts on (see :func:`_bound_fields`); a worker with the key
  refuses unsigned or tampered jobs. The seal is versioned by its 4-byte
  prefix: :data:`MAGIC` (v3, written now) also binds issue 16's ``priority``,
  ``unique_key`` and ``rate_limit``; :data:`LEGACY_MAGIC` (v2, written before)
  is still verified, over the fields v2 bound, so jobs stored before v3 run.
* a worker configured with ``serializer = "json"`` refuses pickle payloads, so
  a pickle planted in the store is never read.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

from ._execution import resolve
from .config import Settings, current_settings
from .exceptions import ConfigurationError, PlugqError
from .serializers import get_serializer
from .storage import JobRecord

#: Prefix of a payload sealed in the current format (v3: the MAC binds :func:`_bound_fields`
#: with ``version=3``, issue 16's fields included).
MAGIC = b"PQS3"
#: Prefix of a payload sealed by plugq before v3 (the MAC binds the v2 fields): still
#: verified, never written. Same length as :data:`MAGIC`, so :func:`unseal` reads both.
LEGACY_MAGIC = b"PQS1"
#: Prefix of a sealed meta or result blob (bound to its job id and kind).
BLOB_MAGIC = b"PQB1"
_MAC_LEN = 32


class UntrustedJobError(PlugqError):
    """A job failed a security check and was not run; the message says which."""


#: The key as a worker's run read it at its start (see :func:`pinned_secret_key`).
_pinned_key: ContextVar[tuple[bytes | None] | None] = ContextVar("plugq_secret_key", default=None)


def secret_key() -> bytes | None:
    """The signing key from ``PLUGQ_SECRET_KEY`` (None when unset).

    Inside :func:`pinned_secret_key` (a worker's run), the key as read when it began.

    Raises:
        ConfigurationError: the variable is set but empty. An empty key would
            silently turn verification off, which is never what setting it meant.
    """
    pinned = _pinned_key.get()
    if pinned is not None:
        return pinned[0]
    key = os.environ.get("PLUGQ_SECRET_KEY")
    if key is None:
        return None
    if not key.strip():
        raise ConfigurationError(
            "environment variable PLUGQ_SECRET_KEY is set but empty; set it to a long random "
            "secret, or unset it to run without signing"
        )
    return key.encode()


@contextmanager
def pinned_secret_key() -> Iterator[bytes | None]:
    """Read ``PLUGQ_SECRET_KEY`` once, for everything run in this context until it exits.

    A worker's run asks for the key several times a job (verify, sign the
    outcome, the storage's own signing); reading the environment each time
    was a measurable part of a job's cost. The key is a process's setting,
    fixed for a worker's run: as every other setting, a change takes a
    worker restart.

    Raises:
        ConfigurationError: as :func:`secret_key`.
    """
    key = secret_key()
    token = _pinned_key.set((key,))
    try:
        yield key
    finally:
        _pinned_key.reset(token)


def _bound_fields(rec: JobRecord, version: int = 3) -> tuple[str, ...]:
    # Everything a worker deserializes or acts on besides the payload: which
    # code runs (function, callbacks), how the payload is read (serializer),
    # which job and queue it is (so a copy under another id or in another
    # queue fails), when it may run (dependencies) and how often (retry intervals).
    core = (
        rec.id, rec.origin, rec.func_name, rec.serializer,
        rec.on_success or "", rec.on_failure or "",
        json.dumps(list(rec.depends_on)), "1" if rec.allow_dependency_failure else "0",
        json.dumps([float(v) for v in rec.retry_intervals]),
    )
    if version == 2:
        # The format before v3 (payloads prefixed LEGACY_MAGIC), verified as it was
        # written: a workflow step's pipe bound only when set; priority,
        # unique_key and rate_limit not bound at all.
        fields = ("plugq-job-v2", *core)
        return fields if rec.pipe is None else (*fields, "pipe", rec.pipe)
    # v3 binds, set or not, what a step is called with (its pipe names the jobs
    # whose results become its leading arguments), where it is taken in its
    # queue (priority), which job a Unique enqueue answers with (unique_key) and
    # how often it may run (its RateLimit). One JSON element: null (unset) and
    # "" differ, and no value can carry the separator into its neighbour.
    if rec.pipe is None and rec.unique_key is None and rec.rate_limit is None and not rec.priority:
        return ("plugq-job-v3", *core, _UNSET_V3)  # most jobs: the JSON below, made once
    extra = json.dumps([rec.pipe, rec.priority, rec.unique_key, rec.rate_limit], default=repr)
    return ("plugq-job-v3", *core, extra)


#: The v3 element of a job with no pipe, priority, unique key or rate limit.
_UNSET_V3 = json.dumps([None, 0, None, None])


def _mac(key: bytes, rec: JobRecord, data: bytes, version: int = 3) -> bytes:
    msg = b"\x00".join((*(p.encode("utf-8", "surrogateescape") for p in _bound_fields(rec, version)),
                        data))
    return hmac.new(key, msg, hashlib.sha256).digest()


def seal(rec: JobRecord, data: bytes, key: bytes | None = None) -> bytes:
    """``data`` (the serialized arguments of ``rec``) prefixed with its MAC when a key is set.

    Always the current format (:data:`MAGIC`, v3): the MAC covers the fields
    listed in :func:`_bound_fields` as ``rec`` holds them now.
    """
    key = key if key is not None else secret_key()
    if not key:
        return data
    return MAGIC + _mac(key, rec, data) + data


def _seal_verifies(key: bytes, rec: JobRecord, payload: bytes) -> bool:
    """Whether ``payload`` is sealed for ``rec`` with ``key``, in the version its prefix names.

    A v2 seal is checked over the v2 fields only; relabelling a v3 seal as v2
    (to drop the binding of the newer fields) fails, since the v2 MAC over the
    same data is another value, which takes the key to compute.
    """
    head = payload[:4]
    version = 3 if head == MAGIC else 2 if head == LEGACY_MAGIC else None
    if version is None or len(payload) < 4 + _MAC_LEN:
        return False
    data = payload[4 + _MAC_LEN:]
    return hmac.compare_digest(payload[4:4 + _MAC_LEN], _mac(key, rec, data, version))


def is_sealed(payload: bytes) -> bool:
    """Whether ``payload`` carries a seal, of either version (its MAC unchecked)."""
    head = payload[:4]
    return head in (MAGIC, LEGACY_MAGIC) and len(payload) >= 4 + _MAC_LEN


def unseal(payload: bytes) -> bytes:
    """The serialized arguments inside ``payload``, without checking the MAC.

    For handing a payload to a backend that signs in its own format; every
    read that deserializes goes through :func:`verified_payload` or :func:`load_stored`.
    """
    return payload[4 + _MAC_LEN:] if is_sealed(payload) else payload


def _blob_mac(key: bytes, job_id: str, kind: str, blob: bytes) -> bytes:
    head = f"plugq-blob\x00{kind}\x00{job_id}\x00".encode("utf-8", "surrogateescape")
    return hmac.new(key, head + blob, hashlib.sha256).digest()


def seal_blob(job_id: str, kind: str, blob: bytes, key: bytes | None = None) -> bytes:
    """A meta or result blob with a MAC bound to its job and kind, when a key is set."""
    key = key if key is not None else secret_key()
    if not key or not blob:
        return blob
    return BLOB_MAGIC + _blob_mac(key, job_id, kind, blob) + blob


def strip_blob(blob: bytes) -> bytes:
    """The serialized value inside a (possibly) sealed blob, unchecked (for re-signing)."""
    if blob[:4] == BLOB_MAGIC and len(blob) >= 4 + _MAC_LEN:
        return blob[4 + _MAC_LEN:]
    return blob


def load_stored(rec: JobRecord, kind: str, blob: bytes, *, verified_by_backend: bool = False) -> Any:
    """Deserialize a stored meta or result blob of ``rec`` after the checks a reader makes.

    * ``serializer = "json"`` configured: a job of any other serializer is
      refused unread, whatever the record says.
    * with a key: the blob must carry a MAC for this job id and ``kind``
      (unless the backend verified it in its own format, ``verified_by_backend``).
    * without a key the store is trusted (monitors work without the key).

    Raises:
        UntrustedJobError: the value cannot be verified; nothing was deserialized.
    """
    if current_settings().serializer == "json" and rec.serializer != "json":
        raise UntrustedJobError(
            f"job {rec.id}: its {kind} uses the {rec.serializer!r} serializer but serializer = "
            "'json' is configured; not deserialized"
        )
    key = secret_key()
    if key and not verified_by_backend:
        sealed = blob[:4] == BLOB_MAGIC and len(blob) >= 4 + _MAC_LEN
        if not sealed or not hmac.compare_digest(
            blob[4:4 + _MAC_LEN], _blob_mac(key, rec.id, kind, blob[4 + _MAC_LEN:])
        ):
            raise UntrustedJobError(
                f"job {rec.id}: its stored {kind} is not signed for this job with "
                "PLUGQ_SECRET_KEY; not deserialized"
            )
    return get_serializer(rec.serializer).loads(strip_blob(blob))


def load_arguments(rec: JobRecord, *, verified_by_backend: bool = False) -> tuple[Any, Any]:
    """``(args, kwargs)`` of ``rec`` for a reader (producer, monitor): verified, never run.

    Raises:
        UntrustedJobError: as :func:`load_stored`; nothing was deserialized.
    """
    if current_settings().serializer == "json" and rec.serializer != "json":
        raise UntrustedJobError(
            f"job {rec.id}: its arguments use the {rec.serializer!r} serializer but serializer = "
            "'json' is configured; not deserialized"
        )
    key = secret_key()
    data = rec.payload
    if key and not verified_by_backend and not _seal_verifies(key, rec, data):
        raise UntrustedJobError(
            f"job {rec.id}: its arguments are not signed for this job with PLUGQ_SECRET_KEY; "
            "not deserialized"
        )
    args, kwargs = get_serializer(rec.serializer).loads(unseal(data))
    return args, kwargs


def verified_payload(
    rec: JobRecord, key: bytes | None = None, settings: Settings | None = None
) -> bytes:
    """The arguments of ``rec`` after every check a worker makes before running it.

    Raises:
        UntrustedJobError: outside the allow-list, unsigned or tampered while a
            key is set, signed while this worker has no key, or a pickle payload
            on a json-only worker.
    """
    # Read once per job (the caller may pass what it read): current_settings()
    # costs a getcwd() and environment lookups, and this runs before every job.
    settings = settings if settings is not None else current_settings()
    _check_allowed(rec, settings.allowed_modules)
    if settings.serializer == "json" and rec.serializer != "json":
        raise UntrustedJobError(
            f"job {rec.id} uses the {rec.serializer!r} serializer but this worker is configured "
            "with serializer = 'json' and refuses anything else (nothing was deserialized)"
        )
    key = key if key is not None else secret_key()
    if not key:
        if is_sealed(rec.payload):
            # Its producer meant it to be verified; this worker cannot.
            raise UntrustedJobError(
                f"job {rec.id} is signed but this worker has no PLUGQ_SECRET_KEY to verify it: "
                "refused unrun"
            )
        return rec.payload
    if not is_sealed(rec.payload):
        raise UntrustedJobError(
            f"job {rec.id} is not signed and PLUGQ_SECRET_KEY is set: refused unrun"
        )
    if not _seal_verifies(key, rec, rec.payload):
        raise UntrustedJobError(
            f"job {rec.id} has a bad signature (tampered, copied, or signed with another key): "
            "refused unrun"
        )
    return rec.payload[4 + _MAC_LEN:]


def module_allowed(func_name: str, allowed: list[str] | None) -> bool:
    """Whether the module part of ``func_name`` is an allowed module or a submodule of one.

    ``module.attr``: the module part is everything before the last dot, so
    ``myapp.tasks.os.system`` names module ``myapp.tasks.os``, which is only
    allowed if it is a real submodule (see :func:`resolve_allowed`).
    """
    if allowed is None:
        return True
    module, _, attr = func_name.rpartition(".")
    if not module or not attr:
        return False
    return any(module == m or module.startswith(m + ".") for m in allowed)


def resolve_allowed(func_name: str, allowed: list[str] | None) -> Callable[..., Any]:
    """Import the callable ``func_name`` names, refusing anything the allow-list does not cover.

    With an allow-list the path must be ``module.attr`` where ``module`` is an
    allowed module (or submodule) imported *as a module* — not an attribute
    chain through one, so ``myapp.tasks.os.system`` does not reach
    :func:`os.system` — and ``attr`` must be defined in that module (its
    ``__module__`` is the module), not imported into it.

    Raises:
        UntrustedJobError: outside the allow-list; nothing outside it was imported.
        InvalidTaskError: the module or attribute does not exist.
    """
    if allowed is None:
        return resolve(func_name)
    if not module_allowed(func_name, allowed):
        raise UntrustedJobError(
            f"{func_name!r} is outside allowed_modules {allowed!r}; refused without importing it"
        )
    module_name, _, attr = func_name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UntrustedJobError(
            f"{func_name!r}: {module_name!r} is not an importable module ({exc}); only "
            f"functions defined in allowed_modules {allowed!r} are run"
        ) from None
    # The module's own namespace, not getattr: a module-level __getattr__
    # could hand out anything.
    obj = vars(module).get(attr)
    if obj is None or not callable(obj) or getattr(obj, "__module__", None) != module.__name__:
        raise UntrustedJobError(
            f"{func_name!r} is not a function defined in module {module_name!r} (an imported "
            f"name or object is not run); allowed_modules {allowed!r}"
        )
    return cast("Callable[..., Any]", obj)


def check_allowed(rec: JobRecord) -> None:
    """Refuse a job whose function or callbacks are outside ``allowed_modules``.

    Raises:
        UntrustedJobError: naming the function and the allow-list.
    """
    _check_allowed(rec, current_settings().allowed_modules)


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


def sign_fields(job_id: str, fields: Any, key: bytes | None = None) -> str | None:
    """A MAC over a job's extra code and URLs (``on_stopped``, webhooks); None without a key.

    They live in the job's ``meta`` (outside the sealed payload), so a worker
    with a key acts on them only when :func:`fields_verified` holds.
    """
    key = key if key is not None else secret_key()
    if not key:
        return None
    msg = job_id.encode() + b"\x00" + json.dumps(fields, sort_keys=True).encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def fields_verified(job_id: str, fields: Any, sig: str | None, key: bytes | None = None) -> bool:
    """Whether ``fields`` may be acted on: no key is set, or ``sig`` is their MAC."""
    key = key if key is not None else secret_key()
    if not key:
        return True
    expected = sign_fields(job_id, fields, key)
    return sig is not None and expected is not None and hmac.compare_digest(sig, expected)

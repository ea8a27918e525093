"""plugq's security guards (``plugq.security``) on rq's job format.

rq keeps a job as a hash: ``data`` is the serialized ``(func_name, instance,
args, kwargs)``, ``meta`` and results are serialized with the same
serializer, callbacks are plain fields. Reading a pickle runs code, so the
checks below run in :func:`plugq_rq.layout.from_hash` (every read of a job
hash, in every process: worker, producer, monitor) *before* anything of it is
deserialized:

* ``allowed_modules``: the function name is read from ``data`` without
  deserializing it (JSON is parsed; a pickle's first opcode is decoded with
  :mod:`pickletools`, nothing is loaded), and the callbacks from their fields;
* ``serializer = "json"``: a pickle payload is refused unread;
* ``PLUGQ_SECRET_KEY``: jobs are written with a :class:`SignedSerializer`
  (every blob — data, meta, return values — carries an HMAC, checked before
  the inner serializer sees it) and the job hash carries ``plugq_sig``, an
  HMAC over the job id, ``data``, the three callback names and the other
  fields a worker acts on (:func:`bound_values`). A job missing either, or
  not matching, is refused. ``plugq_sig`` is versioned: ``v3:<hex>`` (written
  now) also binds issue 16's ``plugq_priority``, ``plugq_unique_key`` and
  ``plugq_rate_limit``, present or not; a bare ``<hex>`` (v2, written before)
  is still verified over the fields v2 bound.

A refused job (:func:`refusal` names why) is read as a record whose payload is
empty or sealed with no valid MAC, so nothing of it is ever deserialized: the
engine's own checks (``plugq.security``) refuse that record again and the
worker fails the job unrun.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import zlib
from collections.abc import Callable
from typing import Any

from plugq.config import current_settings
from plugq.security import UntrustedJobError, module_allowed, secret_key

#: Prefix of a signed blob: MAGIC + 32-byte HMAC-SHA256 + the inner serializer's bytes.
MAGIC = b"PQR1"
_MAC_LEN = 32
#: Job hash field holding the job-level signature: :data:`SIG_PREFIX` + hex (v3), or
#: bare hex (v2, written before v3; still verified).
SIG_FIELD = "plugq_sig"
#: Prefix of a v3 ``plugq_sig``.
SIG_PREFIX = "v3:"
CALLBACK_FIELDS = ("success_callback_name", "failure_callback_name", "stopped_callback_name")
#: Other hash fields the worker acts on, covered by ``plugq_sig`` too: the queue
#: (a job moved to another queue fails), dependencies, retry and repeat
#: settings, the timeout and rq's webhooks (HTTP requests the worker sends).
BOUND_FIELDS = (
    "origin", "dependency_ids", "allow_dependency_failures", "webhooks", "retry_intervals",
    "plugq_retry_intervals", "timeout", "repeat_intervals",
)
#: v2's fields covered only when present (a job without them kept the signature
#: it was written with): a workflow step's inputs, the jobs whose results become
#: its leading arguments. Adding or removing one breaks the signature too.
OPTIONAL_BOUND_FIELDS = ("plugq_pipe",)
#: v3 binds these whether present or not (absent and empty differ): the pipe,
#: and issue 16's fields, where the job is taken in its queue, which job a
#: Unique enqueue answers with and how often it may run.
V3_BOUND_FIELDS = ("plugq_pipe", "plugq_priority", "plugq_unique_key", "plugq_rate_limit")
#: The v3 element of a hash with none of :data:`V3_BOUND_FIELDS`.
_UNSET_V3 = json.dumps([None] * len(V3_BOUND_FIELDS))


def bound_values(value_of: Callable[[str], str | None], version: int = 3) -> tuple[str, ...]:
    """The signed values of :data:`BOUND_FIELDS` and the version's other bound fields.

    ``value_of(field)`` is the field's stored text, None when absent. v2 (a
    bare-hex ``plugq_sig``): the present :data:`OPTIONAL_BOUND_FIELDS` as
    ``name=value``. v3: :data:`V3_BOUND_FIELDS` as one JSON list (null when
    absent), so no value can carry the separator into its neighbour.
    """
    base = tuple(value_of(name) or "" for name in BOUND_FIELDS)
    if version == 2:
        present = tuple(f"{name}={value}" for name in OPTIONAL_BOUND_FIELDS
                        if (value := value_of(name)))
        return (*base, *present)
    extra = [value_of(name) for name in V3_BOUND_FIELDS]
    return (*base, _UNSET_V3 if not any(v is not None for v in extra) else json.dumps(extra))


def _blob_mac(key: bytes, inner: bytes) -> bytes:
    return hmac.new(key, b"plugq-rq-blob\x00" + inner, hashlib.sha256).digest()


def sign_blob(key: bytes, inner: bytes) -> bytes:
    """``inner`` (a serializer's bytes) signed as :class:`SignedSerializer` writes it."""
    return MAGIC + _blob_mac(key, inner) + inner


def verified_inner(key: bytes, blob: bytes) -> bytes | None:
    """The inner bytes of a signed blob whose MAC matches ``key``; None otherwise."""
    if not is_signed(blob):
        return None
    inner = blob[4 + _MAC_LEN:]
    return inner if hmac.compare_digest(blob[4:4 + _MAC_LEN], _blob_mac(key, inner)) else None


def is_signed(blob: bytes) -> bool:
    return blob[:4] == MAGIC and len(blob) >= 4 + _MAC_LEN


def inner_bytes(blob: bytes) -> bytes:
    """The inner serializer's bytes of a (possibly) signed blob, unchecked."""
    return blob[4 + _MAC_LEN:] if is_signed(blob) else blob


class SignedSerializer:
    """An rq serializer whose every blob carries an HMAC made with ``PLUGQ_SECRET_KEY``.

    ``loads`` checks the MAC before the inner serializer reads a byte; without
    a key in this process it only strips the MAC (no key: the store is trusted).
    """

    def __init__(self, inner: Any, name: str) -> None:
        self.inner = inner
        self.name = name

    def __repr__(self) -> str:
        return f"SignedSerializer({self.name!r})"

    def dumps(self, obj: Any) -> bytes:
        key = secret_key()
        if not key:
            raise UntrustedJobError("cannot sign: PLUGQ_SECRET_KEY is not set in this process")
        inner = self.inner.dumps(obj)
        return MAGIC + _blob_mac(key, inner) + inner

    def loads(self, blob: bytes) -> Any:
        key = secret_key()
        if key:
            if not is_signed(blob):
                raise UntrustedJobError("unsigned value refused (PLUGQ_SECRET_KEY is set)")
            if not hmac.compare_digest(blob[4:4 + _MAC_LEN], _blob_mac(key, blob[4 + _MAC_LEN:])):
                raise UntrustedJobError("value with a bad signature refused")
        return self.inner.loads(inner_bytes(blob))


class RefusingSerializer:
    """The serializer of a refused job: nothing of it is ever deserialized (or re-signed)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def dumps(self, obj: Any) -> bytes:
        if obj is None:
            # rq's failure Result serializes its (absent) return value, then drops it.
            return b""
        raise UntrustedJobError(self.reason)

    def loads(self, blob: bytes) -> Any:
        raise UntrustedJobError(self.reason)


def __getattr__(name: str) -> Any:
    """``SIGNED_PICKLE`` and ``SIGNED_JSON``, made on first use.

    They wrap rq's serializers, for rq-side code (``rq.Queue(serializer=…)``,
    interop). Importing rq here would load all of rq (its worker, queue and
    registries) into every plugq process, a plugq worker included, which
    never calls rq: several MB of RSS for nothing.
    """
    if name in ("SIGNED_PICKLE", "SIGNED_JSON"):
        from rq.serializers import DefaultSerializer, JSONSerializer

        made = {"SIGNED_PICKLE": SignedSerializer(DefaultSerializer, "pickle"),
                "SIGNED_JSON": SignedSerializer(JSONSerializer, "json")}
        globals().update(made)
        return made[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def serializer_for(name: str, *, signed: bool) -> Any:
    """rq's serializer for a plugq serializer name, signed or not (imports rq, see above)."""
    if signed:
        return __getattr__("SIGNED_JSON" if name == "json" else "SIGNED_PICKLE")
    from rq.serializers import DefaultSerializer, JSONSerializer

    return JSONSerializer if name == "json" else DefaultSerializer


def sniff(data: bytes) -> tuple[str, bool]:
    """``(serializer name, signed?)`` of rq's (possibly zlib-compressed) ``data``."""
    try:
        raw = zlib.decompress(data)
    except zlib.error:
        raw = data
    signed = is_signed(raw)
    inner = inner_bytes(raw)
    return ("json" if inner[:1] in (b"[", b"{") else "pickle"), signed


def peek_func_name(inner: bytes, serializer: str) -> str | None:
    """The function name in rq's job data, read without deserializing anything.

    rq stores ``(func_name, instance, args, kwargs)``. JSON is parsed as data;
    for a pickle only the opcodes up to the first string are decoded (no
    class is looked up, nothing is called). None when the shape is not that.
    """
    if serializer == "json":
        try:
            value = json.loads(inner)
        except ValueError:
            return None
        return value[0] if isinstance(value, list) and value and isinstance(value[0], str) else None
    # Imported here, by the one check that reads pickles (only with allowed
    # modules configured): pickletools' opcode tables cost a worker ~130 KiB.
    import pickletools

    try:
        for op, arg, _pos in pickletools.genops(inner):
            if op.name in ("PROTO", "FRAME", "MARK"):
                continue
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE") and isinstance(
                arg, str
            ):
                return arg
            return None
    except Exception:
        return None
    return None


def job_mac(
    key: bytes, job_id: str, data: bytes, callbacks: tuple[str, str, str],
    bound: tuple[str, ...] = (), version: int = 3,
) -> str:
    """The job-level signature: id, ``data`` (uncompressed), callback names and ``bound``.

    ``bound`` is :func:`bound_values` for the same ``version``. v3 (written):
    ``"v3:" + hex``; v2 (verified only, for jobs signed before v3): bare hex,
    over another message, so a v3 signature relabelled v2 does not verify.
    """
    parts = (job_id, *callbacks, *bound)
    tag = b"plugq-rq-job-v3" if version == 3 else b"plugq-rq-job-v2"
    msg = b"\x00".join((tag, *(p.encode("utf-8", "surrogateescape") for p in parts), data))
    digest = hmac.new(key, msg, hashlib.sha256).hexdigest()
    return SIG_PREFIX + digest if version == 3 else digest


def _text(raw: dict[Any, Any], field: str) -> str:
    return _value(raw, field) or ""


def _value(raw: dict[Any, Any], field: str) -> str | None:
    value = raw.get(field.encode(), raw.get(field))
    if value is None:
        return None
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def refusal(job_id: str, raw: dict[Any, Any], data: bytes) -> tuple[str | None, str | None]:
    """Why this process must not deserialize or run the stored job, or None.

    ``raw`` is the job hash, ``data`` its uncompressed ``data`` field. Returns
    ``(reason, func_name)``: the messages are ``plugq.security``'s, so a refused
    job reads the same on every backend.
    """
    settings = current_settings()
    inner = inner_bytes(data)
    name = "json" if inner[:1] in (b"[", b"{") else "pickle"
    allowed = settings.allowed_modules
    func = peek_func_name(inner, name) if allowed is not None else None
    if allowed is not None:
        if func is None:
            return (f"job {job_id}: its function name cannot be read without deserializing "
                    f"the payload; refused against allowed_modules {allowed!r}"), None
        checks = [("function", func)] + [
            (what, _text(raw, field))
            for what, field in zip(("on_success", "on_failure", "on_stopped"), CALLBACK_FIELDS, strict=True)
        ]
        for what, value in checks:
            if value and not module_allowed(value, allowed):
                return (f"job {job_id}: {what} {value!r} is outside allowed_modules {allowed!r}; "
                        "refused without importing it"), func
    if settings.serializer == "json" and name != "json":
        return (f"job {job_id} uses the {name!r} serializer but this worker is configured "
                "with serializer = 'json' and refuses anything else (nothing was deserialized)"), func
    key = secret_key()
    if key:
        sig = _text(raw, SIG_FIELD)
        if not is_signed(data) or not sig:
            return f"job {job_id} is not signed and PLUGQ_SECRET_KEY is set: refused unrun", func
        callbacks = tuple(_text(raw, f) for f in CALLBACK_FIELDS)
        # The version the signature names: "v3:…" now, bare hex before v3.
        version = 3 if sig.startswith(SIG_PREFIX) else 2
        bound = bound_values(lambda name: _value(raw, name), version)
        expected = job_mac(key, job_id, data, callbacks, bound, version)  # type: ignore[arg-type]
        blob_ok = hmac.compare_digest(data[4:4 + _MAC_LEN], _blob_mac(key, inner))
        if not blob_ok or not hmac.compare_digest(sig, expected):
            return (f"job {job_id} has a bad signature (tampered, or signed with another key): "
                    "refused unrun"), func
    return None, func

"""``RedisStorage``: the :class:`plugq.storage.Storage` primitives on Redis, in rq's own layout.

Every primitive that writes is one Lua script (:mod:`plugq_rq._lua`), so it
is atomic and costs one round trip: ``claim`` (pop, mark started, lease in
rq's started registry), ``put`` (compare-and-set, placement, results stream,
the dependents waiting on the job, and for the end of a worker's job the
claim of its next one: *claim ahead*), ``insert`` (any batch, with its
unique check). Reads are pipelines. plugq's engine runs the lifecycle on top;
nothing here decides what a job becomes. The records are kept as rq 2.x keeps
jobs (:mod:`plugq_rq.layout`), so rq's worker, ``rq info``/``rq requeue``/
``rq empty`` and rq-dashboard work on the same data.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Collection, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from plugq._quarantine import quarantined_worker
from plugq.config import mask_url
from plugq.exceptions import (
    BackendUnavailableError,
    ConfigurationError,
    DuplicateJobError,
)
from plugq.security import secret_key, unseal
from plugq.storage import (
    Clock,
    JobRecord,
    JobStatus,
    ResultRecord,
    Storage,
    UniqueKey,
    WorkerRecord,
)

from . import _lua
from ._connection import (
    Direct,
    NoReply,
    check_url,
    make_client,
    refuse_unknown_params,
    split_options,
    translate_errors,
    translated,
)
from .layout import (
    fmt_time,
    from_hash,
    kept_fields,
    parse_time,
    result_fields,
    round_times,
    shared_fields,
    to_fields,
)
from .poison import WORKER_FIELDS, describe, field_problems, job_field_problems

WORKERS_KEY = "rq:workers"
#: plugq's named values (cron entries, rate-limit state): one hash.
VALUES_KEY = "plugq:values"
WORKER_PREFIX = "rq:worker:"
#: Records whose rq ``data`` was made from a payload this process read, kept so
#: that writing the record back does not serialize the arguments again.
MADE_CACHE = 4096
#: How often an idle ``wait`` looks at the queues' lengths (jobs queued by rq publish nothing).
POLL_IDLE = 0.25

_REGISTRY_SCORE_NOW = (JobStatus.DEFERRED, JobStatus.CANCELED, JobStatus.RATE_LIMITED)
_REGISTRY_SCORE_EXPIRY = (JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED)


#: Connection errors raised by a primitive surface as BackendUnavailableError.
_translated = translate_errors


def _text(value: Any) -> bytes | str:
    """A value as a script argument: bytes and text as they are, a float by repr, any other by str.

    The scripts' arguments are sent one per value (``_connection.resp_command``):
    Redis splits them in C, where parsing one packed ``<length>:<bytes>``
    argument (the scripts' ``unpack_values``) cost a script more than most of
    its writes.
    """
    if type(value) is bytes or type(value) is str:
        return value
    return repr(value) if type(value) is float else str(value)


def unpack(blob: bytes) -> list[bytes]:
    """The values of a script's ``packed`` answer."""
    out: list[bytes] = []
    pos, end = 0, len(blob)
    find = blob.index
    while pos < end:
        colon = find(b":", pos)
        start = colon + 1
        stop = start + int(blob[pos:colon])
        out.append(blob[start:stop])
        pos = stop
    return out


#: ``EVAL <BEGUN> 0`` in RESP, the head of every BEGUN command (see _begun_command).
_BEGUN_HEAD = b"*5\r\n$4\r\nEVAL\r\n$%d\r\n%b\r\n$1\r\n0\r\n" % (
    len(_lua.BEGUN.encode()), _lua.BEGUN.encode())


def _begun_command(job_id: str, token: str) -> bytes:
    """BEGUN for one job as RESP bytes: redis-py's command packing cost more than the send."""
    a, b = job_id.encode(), token.encode()
    return _BEGUN_HEAD + b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(a), a, len(b), b)


def _pairs(flat: Sequence[Any] | dict[Any, Any] | None) -> dict[bytes, bytes]:
    if not flat:
        return {}
    if isinstance(flat, dict):
        return flat
    it = iter(flat)
    return dict(zip(it, it, strict=True))


class RedisStorage(Storage):
    """Jobs and workers in Redis, as rq 2.x keeps them; see the module docstring."""

    scheme: ClassVar[str] = "redis"
    #: Issue 16's primitives, native (docs/redis.md, "Beyond rq").
    #: ``limit_rule``: the claim scripts admit RateLimit jobs by plugq.storage.ADMISSION_RULE
    #: (_lua.LIMIT_RULE), so a limited job costs no round trip more than a plain one.
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"priority", "unique_keys", "progress", "values", "pipes", "limit_rule"}
    )

    def __init__(self, url: str, clock: Clock | None = None, *, client: Any = None) -> None:
        super().__init__(url, clock)
        if client is None:
            # On the URL as given: split_options re-encodes the query, after which
            # a password holding an unencoded '?' no longer reads as one.
            check_url(url)
        refuse_unknown_params(url)
        redis_url, options = split_options(url)
        # One class for every scheme it is registered under (redis, rediss, unix, fakeredis).
        self.scheme = urlsplit(url).scheme.lower() or "redis"  # type: ignore[misc]
        self.is_fake = self.scheme == "fakeredis"
        if self.is_fake:
            # fakeredis keeps its data in this process: no fork or spawn worker.
            self.capabilities = type(self).capabilities | {"process_local"}  # type: ignore[misc]
        #: ``?worker_class=``: the class a ``Worker(worker_class=None)`` runs with.
        self.default_worker_class = options.get("worker_class") or "simple"
        if self.default_worker_class not in ("fork", "simple", "spawn"):
            raise ConfigurationError(
                f"{self.safe_url()}: worker_class={self.default_worker_class!r}; "
                "choose fork, simple or spawn"
            )
        try:
            self.scheduler_interval = float(options.get("scheduler_interval", "1"))
        except ValueError:
            self.scheduler_interval = float("nan")
        if not 0 < self.scheduler_interval <= 86400:
            raise ConfigurationError(
                f"{self.safe_url()}: scheduler_interval={options['scheduler_interval']!r} must be "
                "seconds, > 0 and at most 86400"
            )
        if "lease" in options:
            try:
                lease = float(options["lease"])
            except ValueError:
                lease = -1.0
            if not (lease >= 1.0 and lease < float("inf")):
                raise ConfigurationError(
                    f"{self.safe_url()}: lease={options['lease']!r}; give whole or fractional "
                    "seconds, at least 1"
                )
            self.lease = lease
        try:
            self.redis = client if client is not None else make_client(redis_url)
        except ConfigurationError as exc:
            raise ConfigurationError(mask_url(str(exc), url)) from None
        if self.redis.connection_pool.connection_kwargs.get("decode_responses"):
            raise ConfigurationError(
                "the Redis backend needs a client with decode_responses=False (rq stores bytes)"
            )
        with translated(url):
            self.redis.ping()
        reg = self.redis.register_script
        self._insert = reg(_lua.INSERT)
        self._put = reg(_lua.PUT)
        self._claim = reg(_lua.CLAIM)
        self._remove = reg(_lua.REMOVE)
        self._set_meta = reg(_lua.SET_META)
        self._remove_queued = reg(_lua.REMOVE_QUEUED)
        self._listing = reg(_lua.LISTING)
        self._queues = reg(_lua.QUEUES)
        self._due = reg(_lua.DUE)
        self._dependents = reg(_lua.DEPENDENTS)
        self._heartbeat = reg(_lua.HEARTBEAT)
        self._unregister = reg(_lua.UNREGISTER)
        self._unclaim_ahead = reg(_lua.UNCLAIM_AHEAD)
        #: Sends BEGUN without waiting (see :meth:`claim`).
        self._no_reply = NoReply(self.redis)
        #: The per-job scripts (insert, put, claim) outside redis-py's pool (see Direct);
        #: fakeredis keeps the ordinary path.
        self._direct = None if self.is_fake else Direct(self.redis)
        self._started = reg(_lua.STARTED)
        self._set_progress = reg(_lua.SET_PROGRESS)
        self._swap_value = reg(_lua.SWAP_VALUE)
        self._check_scripting(url)
        self._made: dict[str, tuple[bytes, bytes, bool]] = {}
        #: Dependents a put of an ending record found waiting (handed to the next dependents()).
        self._waiting: dict[str, list[str]] = {}
        #: job id -> whether its limit's line held anyone after the put that ended it
        #: (handed to the next limit_waiting()).
        self._lines: dict[str, bool] = {}
        #: worker name -> (queues, pid, thread) of its last claim here.
        self._claimers: dict[str, tuple[tuple[str, ...], int, int]] = {}
        #: worker name -> (job claimed ahead, the execution id of that claim).
        self._ahead: dict[str, tuple[JobRecord, str]] = {}
        #: job id -> the corrupt fields of its hash as last read here: a rewrite
        #: of its stand-in record keeps them, so the job stays refused (requeued too).
        self._corrupt: dict[str, str] = {}
        #: Per thread: the pub/sub connection ``wait`` listens on.
        self._local = threading.local()

    def _check_scripting(self, url: str) -> None:
        from redis.exceptions import NoPermissionError, ResponseError

        try:
            with translated(url):
                self._queues()
        except (NoPermissionError, ResponseError) as exc:
            text = str(exc).lower()
            if "permission" in text or "unknown command" in text or "noperm" in text:
                raise BackendUnavailableError(
                    f"Redis at {self.safe_url()} refuses Lua scripting ({exc}); plugq's Redis "
                    "storage runs each primitive as a script: allow EVAL/EVALSHA/SCRIPT for this "
                    "user (ACL +@scripting)"
                ) from None
            raise

    # -- helpers ---------------------------------------------------------------

    def _hot(self, script: Any, args: list[Any]) -> Any:
        """Run one of the per-job scripts: on this thread's own connection when there is one."""
        if self._direct is None:
            return script(args=args)
        return self._direct.run(script, args)

    def _remember(self, job_id: str, payload: bytes, made: tuple[bytes, bool] | None) -> None:
        if made is None:
            return
        if len(self._made) >= MADE_CACHE:
            self._made.clear()
        self._made[job_id] = (payload, made[0], made[1])

    def _known(self, rec: JobRecord) -> tuple[bytes, bool] | None:
        got = self._made.pop(rec.id, None)
        if got is not None and got[0] == rec.payload:
            return got[1], got[2]
        return None

    def _score(self, rec: JobRecord, now: float) -> Any:
        status = rec.status
        if status is JobStatus.SCHEDULED:
            return rec.scheduled_for if rec.scheduled_for is not None else now
        if status in _REGISTRY_SCORE_EXPIRY:
            return "+inf" if rec.expires_at is None else rec.expires_at
        if status in _REGISTRY_SCORE_NOW:
            return now
        return 0

    def _block(self, rec: JobRecord, key: bytes | None, now: float, *, with_meta: bool) -> list[Any]:
        # rq keeps dates to the microsecond; the caller's record then reads as stored.
        round_times(rec)
        made = self._known(rec)
        # A rewrite (put) of a payload read here keeps the stored data as it is.
        stored = made is not None and not with_meta
        fields = to_fields(rec, key, made, with_meta=with_meta, data_stored=stored)
        kind, rv, exc = result_fields(rec, key)
        return [
            rec.id, rec.origin, rec.status.value, "1" if rec.at_front else "0",
            self._score(rec, now), "" if rec.expires_at is None else repr(rec.expires_at),
            uuid.uuid4().hex if rec.status is JobStatus.STARTED else "",
            rec.worker_name or "", kind, rv, exc,
            ",".join(filter(None, (kept_fields(rec, with_meta=with_meta, data_stored=stored),
                                   self._corrupt.pop(rec.id, "")))),
            len(rec.depends_on), *rec.depends_on, len(fields), *fields,
        ]

    def _record(self, job_id: str, flat: Any, entry: Any, now: float) -> JobRecord | None:
        h = _pairs(flat)
        if not h:
            return None
        rec, made, problem = from_hash(job_id, h, _pairs(entry), secret_key(), now)
        if problem is not None:
            self._corrupt[job_id] = problem
        self._remember(job_id, rec.payload, made)
        return rec

    # -- jobs ------------------------------------------------------------------

    @_translated
    def insert(
        self, records: Sequence[JobRecord], *, unique_ids: Collection[str] = (),
        unique_keys: Sequence[UniqueKey] = (),
    ) -> None:
        key = secret_key()
        now = self.clock.now()
        # INSERT's arguments, one Redis argument per value (see _lua.INSERT):
        # Redis splits them, which cost the script more than all its writes
        # when it parsed one packed string itself.
        values: list[bytes | str] = [repr(now), repr(float(self.lease)), str(len(unique_ids)),
                                     *unique_ids]
        values += self._unique_values(unique_keys, [r for r in records if r.unique_key is not None])
        values.append(str(len(records)))
        plain = self._plain_fields
        last: tuple[Any, ...] | None = None
        for rec in records:
            fields = plain(rec, key)
            if fields is None:
                values.append("g")
                values += [_text(v) for v in self._block(rec, key, now, with_meta=True)]
                continue
            # Where the job goes (queue, end, priority level) and the fields the
            # jobs of a batch share (layout.shared_fields), sent when they change:
            # once for a batch of one queue. The TTLs as text: 500 == 500.0.
            here = (rec.origin, rec.at_front, rec.priority, rec.timeout, str(rec.result_ttl),
                    str(rec.failure_ttl), rec.enqueued_at)
            if here != last:
                last = here
                shared = shared_fields(rec)
                values += ("p", rec.origin, "1" if rec.at_front else "0",
                           str(int(rec.priority)) if rec.priority else "0", str(len(shared)))
                values += shared
            values += ("q", rec.id, str(len(fields)))
            values += fields
        if self._direct is None:
            answer = self._insert(args=values)
        else:
            answer = self._direct.run_values(self._insert, values)
        if answer and answer[0] == b"dup":
            raise DuplicateJobError(f"Job {answer[1].decode()} is already {answer[2].decode()}")
        if answer and answer[0] == b"dupkey":
            holder = answer[1].decode()
            raise DuplicateJobError(
                f"Job {holder} holds unique key {answer[3].decode()!r} ({answer[2].decode()})",
                job_id=holder,
            )

    def _plain_fields(self, rec: JobRecord, key: bytes | None) -> list[bytes | str] | None:
        """The hash of a plain queued job for INSERT's short block, without the fields a
        batch shares; None for any other record.

        Plain: nothing for the script to do but write the hash and queue the
        id (no result, dependencies, expiry, fields kept from a stored hash).
        """
        if (rec.status is not JobStatus.QUEUED or rec.expires_at is not None or rec.result is not None
                or rec.exc_info or rec.depends_on or rec.id in self._corrupt or not unseal(rec.payload)):
            return None
        round_times(rec)
        return to_fields(rec, key, self._known(rec), with_meta=True, shared=False)

    @staticmethod
    def _unique_values(conditions: Sequence[UniqueKey], keyed: Sequence[JobRecord]) -> list[str]:
        """INSERT's unique-key values: the conditions to check, then the records to index.

        A record's ``created_at`` is its score in ``plugq:unique:<key>``, so a
        condition's ``since`` is one range query (the records are rounded to
        the microsecond here, as they are stored).
        """
        values: list[str] = [str(len(conditions))]
        for cond in conditions:
            values += [cond.key, ",".join(sorted(s.value for s in cond.statuses)),
                       "" if cond.since is None else repr(float(cond.since))]
        values.append(str(len(keyed)))
        for rec in keyed:
            round_times(rec)
            values += [rec.id, repr(float(rec.created_at))]
        return values

    @_translated
    def get(self, job_id: str) -> JobRecord | None:
        return self.get_many([job_id])[0]

    @_translated
    def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        if not job_ids:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hgetall(f"rq:job:{job_id}")
                pipe.xrevrange(f"rq:results:{job_id}", "+", "-", count=1)
            answers = pipe.execute()
        now = self.clock.now()
        out: list[JobRecord | None] = []
        for i, job_id in enumerate(job_ids):
            entries = answers[2 * i + 1]
            out.append(self._record(job_id, answers[2 * i], entries[0][1] if entries else {}, now))
        return out

    @_translated
    def put(
        self, record: JobRecord, *, expected: Collection[JobStatus] | None = None,
        expected_attempts: int | None = None,
    ) -> bool:
        now = self.clock.now()
        ahead = self._ahead_request(record, expected, expected_attempts)
        # PUT's arguments (see _lua.PUT), one Redis argument per value.
        values: list[bytes | str] = [
            repr(now), repr(float(self.lease)), "0" if expected is None else "1",
            ",".join(s.value for s in expected or ()),
            "" if expected_attempts is None else str(expected_attempts),
            *ahead,
            repr(float(record.created_at)),  # its unique-key score, should the key change
        ]
        values += [_text(v) for v in self._block(record, secret_key(), now, with_meta=False)]
        if self._direct is None:
            answer = self._put(args=values)
        else:
            answer = self._direct.run_values(self._put, values)
        if not answer or not int(answer[0]):
            return False
        if (expected is not None and JobStatus.STARTED in expected
                and record.status not in (JobStatus.QUEUED, JobStatus.STARTED)):
            # The end of a run: the engine asks for the job's dependents next.
            if len(self._waiting) >= MADE_CACHE:
                self._waiting.clear()
            self._waiting[record.id] = [d.decode() for d in answer[1]]
        if len(answer) > 3 and answer[3] is not None:
            # A limited job left started: the script read its limit's line (see limit_waiting).
            if len(self._lines) >= MADE_CACHE:
                self._lines.clear()
            self._lines[record.id] = bool(answer[3])
        if ahead[0] and len(answer) > 2 and answer[2]:
            taken = self._taken(answer[2], ahead[0], ahead[2], now)
            if taken is not None:
                self._ahead[ahead[0]] = (taken, ahead[1])
        return True

    def _ahead_request(
        self, record: JobRecord, expected: Collection[JobStatus] | None, attempts: int | None
    ) -> list[str]:
        """Claim-ahead arguments for a put that ends the job a worker claimed here.

        The worker's next job is claimed in the same round trip as the outcome
        of its last one: stored started, as any claim, and marked
        ``plugq_ahead`` until the worker begins it (:meth:`claim`). A worker
        that stops hands it back (:meth:`unregister_worker`); one that dies
        before beginning it leaves it to :meth:`started_by_dead_workers`, which
        puts it back unrun, its attempts as they were. Only for the thread that
        made the worker's last claim, in this process.
        """
        name = record.worker_name
        if (name is None or expected is None or attempts is None or record.status is JobStatus.STARTED
                or JobStatus.STARTED not in expected or name in self._ahead):
            return ["", "", "", "0"]
        known = self._claimers.get(name)
        if known is None or known[1] != os.getpid() or known[2] != threading.get_ident():
            return ["", "", "", "0"]
        now = self.clock.now()
        return [name, uuid.uuid4().hex, fmt_time(now), str(len(known[0])), *known[0]]

    def _taken(self, answer: Any, worker_name: str, started: str, now: float) -> JobRecord | None:
        """The record a claim took, or None for a poison hash.

        A poison hash never reaches the engine: it is stored failed (naming the
        field) here.
        """
        job_id = answer[0].decode()
        h = _pairs(unpack(answer[1]))
        problems = job_field_problems(h)
        if not problems:
            # What the script wrote, applied to the hash it read.
            h[b"status"], h[b"started_at"] = b"started", started.encode()
            h[b"worker_name"] = worker_name.encode()
            h[b"plugq_attempts"] = str(int(h.get(b"plugq_attempts") or 0) + 1).encode()
            h.pop(b"plugq_expires_at", None)
        rec, made, problem = from_hash(
            job_id, h, _pairs(unpack(answer[2])), secret_key(), now, problems
        )
        if problem is not None:
            self._corrupt[job_id] = problem
            self.put(rec)
            self.report_quarantined(rec)
            return None
        self._remember(job_id, rec.payload, made)
        return rec

    @_translated
    def remove(self, job_id: str) -> bool:
        self._made.pop(job_id, None)
        return bool(self._remove(args=[job_id]))

    # -- results history -------------------------------------------------------------
    # A job's *earlier* outcomes (rq's ``job.results()``): its latest lives in the
    # hash and rq's results stream as rq writes it; the history is plugq's own
    # list, ``plugq:history:<id>`` (newest first), which rq's tools ignore.

    @staticmethod
    def _history_key(job_id: str) -> str:
        return f"plugq:history:{job_id}"

    @_translated
    def add_result(self, entry: ResultRecord, *, keep: int = 10) -> None:
        doc = json.dumps({
            "type": entry.type, "created_at": entry.created_at,
            "result": base64.b64encode(entry.result).decode() if entry.result is not None else None,
            "exc_info": entry.exc_info, "worker_name": entry.worker_name,
            "expires_at": entry.expires_at, "serializer": entry.serializer,
        })
        key = self._history_key(entry.job_id)
        pipe = self.redis.pipeline(transaction=True)  # push and trim together
        pipe.lpush(key, doc)
        pipe.ltrim(key, 0, max(0, keep - 1))
        pipe.execute()

    @_translated
    def results(self, job_id: str, *, now: float | None = None) -> list[ResultRecord]:
        out = []
        for raw in self.redis.lrange(self._history_key(job_id), 0, -1):
            try:
                d = json.loads(raw)
                rec = ResultRecord(
                    job_id=job_id, type=str(d["type"]), created_at=float(d["created_at"]),
                    result=base64.b64decode(d["result"]) if d.get("result") is not None else None,
                    exc_info=d.get("exc_info"), worker_name=d.get("worker_name"),
                    expires_at=float(d["expires_at"]) if d.get("expires_at") is not None else None,
                    serializer=str(d.get("serializer") or "pickle"),
                )
            except (ValueError, TypeError, KeyError):
                continue  # a corrupt entry is left out, never fatal to the reader
            if now is not None and rec.expires_at is not None and rec.expires_at <= now:
                continue
            out.append(rec)
        return out

    @_translated
    def remove_results(self, job_id: str) -> None:
        self.redis.delete(self._history_key(job_id))

    # -- groups: rq's own keys (``rq:group:<name>`` set, ``rq:groups``), so rq's
    # ``Group`` sees plugq's groups; plus plugq's list of the members in the
    # order added, which a set does not keep. -------------------------------------

    @_translated
    def add_to_group(self, group: str, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        pipe = self.redis.pipeline(transaction=True)  # all members or none
        pipe.sadd(f"rq:group:{group}", *job_ids)
        pipe.sadd("rq:groups", group)
        pipe.rpush(f"plugq:group:{group}", *job_ids)
        pipe.execute()

    @_translated
    def group_members(self, group: str) -> list[str]:
        ordered = [m.decode() for m in self.redis.lrange(f"plugq:group:{group}", 0, -1)]
        if ordered:
            return list(dict.fromkeys(ordered))
        # A group rq made: its set only, so no order to keep.
        return sorted(m.decode() for m in self.redis.smembers(f"rq:group:{group}"))

    @_translated
    def remove_from_group(self, group: str, job_ids: Sequence[str]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for job_id in job_ids:
            pipe.srem(f"rq:group:{group}", job_id)
            pipe.lrem(f"plugq:group:{group}", 0, job_id)
        pipe.execute()
        if not self.redis.scard(f"rq:group:{group}"):
            pipe = self.redis.pipeline(transaction=True)
            pipe.srem("rq:groups", group)
            pipe.delete(f"rq:group:{group}", f"plugq:group:{group}")
            pipe.execute()

    @_translated
    def groups(self) -> list[str]:
        names = sorted(n.decode() for n in self.redis.smembers("rq:groups"))
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(f"rq:group:{name}")
        return [n for n, there in zip(names, pipe.execute(), strict=True) if there]

    # -- worker commands: plugq's list per worker (rq's own commands go over
    # pub/sub to rq's workers and signal their process). ----------------------------

    @_translated
    def send_command(self, worker_name: str, command: dict[str, str], *, ttl: float = 60.0) -> None:
        key = f"plugq:commands:{worker_name}"
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(key, json.dumps(command))
        pipe.expire(key, max(1, int(ttl)))
        pipe.execute()

    @_translated
    def take_commands(self, worker_name: str) -> list[dict[str, str]]:
        key = f"plugq:commands:{worker_name}"
        pipe = self.redis.pipeline(transaction=True)  # each command handed out once
        pipe.lrange(key, 0, -1)
        pipe.delete(key)
        raw, _ = pipe.execute()
        out = []
        for item in raw:
            try:
                cmd = json.loads(item)
            except ValueError:
                continue  # a corrupt command is dropped, never fatal to the worker
            if isinstance(cmd, dict):
                out.append({str(k): str(v) for k, v in cmd.items()})
        return out

    @_translated
    def set_meta(self, job_id: str, meta: bytes) -> bool:
        from .layout import blob_to_rq

        blob = blob_to_rq(meta, secret_key()) if meta else b""
        return bool(self._set_meta(args=[job_id, blob]))

    @_translated
    def claim(self, queues: Sequence[str], worker_name: str, now: float) -> JobRecord | None:
        if not queues:
            return None
        self._claimers[worker_name] = (tuple(queues), os.getpid(), threading.get_ident())
        ahead = self._ahead.pop(worker_name, None)
        if ahead is not None:
            # The worker begins the job it claimed ahead: from now on a death of
            # the worker costs the job an attempt, as for any claim. Sent before
            # the job runs, and not waited for: the mark is gone long before a
            # lease could run out, and a job whose mark outlived a crash is only
            # put back with the attempt not counted.
            rec, exec_id = ahead
            token = f"{len(exec_id)}:{exec_id}"
            if not self._no_reply.send(_begun_command(rec.id, token)):
                self.redis.eval(_lua.BEGUN, 0, rec.id, token)
            return rec
        started = fmt_time(now)
        args = [now, self.lease, worker_name, uuid.uuid4().hex, started, *queues]
        while True:
            answer = self._hot(self._claim, args)
            if not answer:
                return None
            taken = self._taken(answer, worker_name, started, now)
            if taken is not None:
                return taken

    # -- listings ----------------------------------------------------------------

    def _list(self, queue: str, status: JobStatus, offset: int, length: int, now: float | None,
              count: bool) -> Any:
        return self._listing(args=[
            queue, status.value, "" if now is None else repr(now), offset, length, "1" if count else "0",
        ])

    @_translated
    def ids(
        self, queue: str, status: JobStatus, offset: int = 0, length: int = -1, *,
        now: float | None = None,
    ) -> list[str]:
        return [i.decode() for i in self._list(queue, status, offset, length, now, False)]

    @_translated
    def count_status(self, queue: str, status: JobStatus, *, now: float | None = None) -> int:
        return int(self._list(queue, status, 0, -1, now, True))

    @_translated
    def queues(self) -> list[str]:
        return sorted(n for n in (q.decode() for q in self._queues()) if n)

    @_translated
    def due(self, now: float, limit: int = 100) -> list[str]:
        flat = self._due(args=[repr(now), limit])
        found = sorted((float(flat[i + 1]), flat[i].decode()) for i in range(0, len(flat), 2))
        return [job_id for _, job_id in found[:limit]]

    @_translated
    def expired(self, now: float, limit: int = 100) -> list[str]:
        return [i.decode() for i in self.redis.zrangebyscore("plugq:expires", "-inf", now, 0, limit)]

    @_translated
    def dependents(self, job_id: str) -> list[str]:
        known = self._waiting.pop(job_id, None)
        if known is not None:
            return known
        return [i.decode() for i in self._dependents(args=[job_id])]

    @_translated
    def started_by_dead_workers(self, now: float, exclude: str | None = None) -> list[JobRecord]:
        flat = self._started()
        if not flat:
            return []
        beats = {w.name: w.last_heartbeat for w in self.list_workers()}
        dead: list[str] = []
        pairs: list[str] = []
        # A caller may ask with a ``now`` past the present (a worker back from an
        # outage asks for every started job, then keeps its own): claims are
        # undone only for workers dead by the clock.
        present = min(now, self.clock.now())
        for i in range(0, len(flat), 2):
            job_id, worker = flat[i].decode(), flat[i + 1].decode()
            if worker == exclude and exclude is not None:
                continue
            beat = beats.get(worker)
            if beat is None or beat + self.lease <= now:
                dead.append(job_id)
                if beat is None or beat + self.lease <= present:
                    pairs.extend((job_id, worker))
        if pairs:
            # Claimed ahead by a worker that died before beginning them: the
            # engine never saw these claims, so they are undone here (back to
            # the front of their queue, no attempt spent), not recovered as abandoned.
            back = {i.decode() for i in self._unclaim_ahead(args=pairs)}
            if back:
                dead = [i for i in dead if i not in back]
                for name, (rec, _) in list(self._ahead.items()):
                    if rec.id in back:
                        self._ahead.pop(name, None)
        return [r for r in self.get_many(dead) if r is not None and r.status is JobStatus.STARTED]

    # -- bulk deletes --------------------------------------------------------------

    @_translated
    def remove_queued(self, queue: str) -> int:
        return int(self._remove_queued(args=[queue]))

    # -- workers ---------------------------------------------------------------------

    def _worker_ttl(self) -> int:
        return int(self.lease) + 60

    @_translated
    def register_worker(self, worker: WorkerRecord) -> None:
        key = WORKER_PREFIX + worker.name
        mapping: dict[str, Any] = {
            "birth": fmt_time(worker.birth), "last_heartbeat": fmt_time(worker.last_heartbeat),
            "queues": ",".join(worker.queues), "pid": worker.pid, "hostname": worker.hostname,
            "ip_address": "", "state": worker.state, "version": "plugq",
            "python_version": sys.version.split()[0],
            "successful_job_count": worker.successful_jobs, "failed_job_count": worker.failed_jobs,
            "total_working_time": 0,
        }
        if worker.current_job_id:
            mapping["current_job"] = worker.current_job_id
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=mapping)
            pipe.sadd(WORKERS_KEY, key)
            for q in worker.queues:
                pipe.sadd(f"rq:workers:{q}", key)
            pipe.expire(key, self._worker_ttl())
            pipe.execute()

    @_translated
    def heartbeat(
        self, name: str, now: float, *, state: str, current_job_id: str | None,
        successful: int = 0, failed: int = 0,
    ) -> None:
        self._heartbeat(args=[
            name, fmt_time(now), state, current_job_id or "", successful, failed, now, self.lease,
            self._worker_ttl(),
        ])

    @_translated
    def unregister_worker(self, name: str) -> None:
        self._claimers.pop(name, None)
        ahead = self._ahead.pop(name, None)
        if ahead is not None:
            # Claimed ahead and never begun: back to the front of its queue, as it was.
            self._unclaim_ahead(args=[ahead[0].id, name])
        self._unregister(args=[name])

    @_translated
    def list_workers(self) -> list[WorkerRecord]:
        keys = sorted(self.redis.smembers(WORKERS_KEY))
        if not keys:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            raws = pipe.execute()
        found = []
        for key, raw in zip(keys, raws, strict=True):
            if not raw:
                continue  # expired: its worker is gone
            name = key.decode("utf-8", "replace")[len(WORKER_PREFIX):]
            problems = field_problems(raw, WORKER_FIELDS)
            if problems:
                # One corrupt worker hash must not break `plugq info` or a worker's start.
                found.append(quarantined_worker(
                    WorkerRecord(name=name, queues=[], pid=0, hostname="", birth=0.0,
                                 last_heartbeat=0.0), describe(problems)))
                continue
            queues = raw.get(b"queues", b"").decode()
            found.append(WorkerRecord(
                name=name,
                queues=[q for q in queues.split(",") if q],
                pid=int(raw.get(b"pid") or 0),
                hostname=raw.get(b"hostname", b"").decode(),
                birth=parse_time(raw.get(b"birth")) or 0.0,
                last_heartbeat=parse_time(raw.get(b"last_heartbeat")) or 0.0,
                state=raw.get(b"state", b"idle").decode() or "idle",
                current_job_id=raw.get(b"current_job", b"").decode() or None,
                successful_jobs=int(raw.get(b"successful_job_count") or 0),
                failed_jobs=int(raw.get(b"failed_job_count") or 0),
            ))
        return found

    # -- progress and named values (issue 16) -----------------------------------------
    # Progress is one field of the job hash (``plugq_progress``), written by a
    # single HSET and kept by every rewrite of the record; named values are the
    # fields of one hash, ``plugq:values``, compare-and-set by a script.

    @_translated
    def set_progress(self, job_id: str, progress: str) -> bool:
        return bool(self._set_progress(args=[job_id, progress]))

    @_translated
    def get_progress(self, job_ids: Sequence[str]) -> list[str | None]:
        if not job_ids:
            return []
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(f"rq:job:{job_id}", "plugq_progress")
            raw = pipe.execute()
        return [None if v is None else v.decode("utf-8", "replace") for v in raw]

    @_translated
    def get_value(self, key: str) -> str | None:
        raw = self.redis.hget(VALUES_KEY, key)
        return None if raw is None else raw.decode("utf-8", "replace")

    @_translated
    def swap_value(self, key: str, expected: str | None, new: str | None) -> bool:
        return bool(self._swap_value(args=[
            key, "0" if expected is None else "1", expected or "",
            "0" if new is None else "1", new or "",
        ]))

    def limit_waiting(self, job_id: str) -> bool | None:
        # Read by the PUT script that ended the job (_lua.LIMIT_RULE's limit_line_waiting).
        return self._lines.pop(job_id, None)

    @_translated
    def values(self, prefix: str) -> dict[str, str]:
        # One hash of a few entries (cron entries, rate-limit keys): read whole.
        out = {}
        for k, v in self.redis.hgetall(VALUES_KEY).items():
            name = k.decode("utf-8", "replace")
            if name.startswith(prefix):
                out[name] = v.decode("utf-8", "replace")
        return out

    # -- waiting and closing -------------------------------------------------------------

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block until a job is queued on one of ``queues`` (a publish on
        ``plugq:wake:<queue>``, sent by the scripts that queue a job), or ``timeout``.

        Queue lengths are looked at first and every ``POLL_IDLE`` seconds, so
        jobs queued by rq itself (which publishes nothing) are noticed too.
        """
        end = time.monotonic() + timeout
        keys = [f"rq:queue:{q}" for q in queues]
        try:
            pubsub = self._pubsub(queues)
            while True:
                with self.redis.pipeline(transaction=False) as pipe:
                    for k in keys:
                        pipe.llen(k)
                    for q in queues:
                        pipe.exists(f"plugq:levels:{q}")  # jobs of other priorities than 0
                    if any(pipe.execute()):
                        return
                left = end - time.monotonic()
                if left <= 0:
                    return
                if pubsub.get_message(timeout=min(POLL_IDLE, left)) is not None:
                    return
        except Exception:
            self._local.__dict__.pop("pubsub", None)
            return  # the caller's next primitive reports the error

    def _pubsub(self, queues: Sequence[str]) -> Any:
        local = self._local
        wanted = tuple(queues)
        pubsub = local.__dict__.get("pubsub")
        if pubsub is None or local.queues != wanted or local.pid != os.getpid():
            if pubsub is not None and local.pid == os.getpid():
                with contextlib.suppress(Exception):
                    pubsub.close()
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(*[f"plugq:wake:{q}" for q in queues])
            local.pubsub, local.queues, local.pid = pubsub, wanted, os.getpid()
        return pubsub

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        self._no_reply.close()
        with contextlib.suppress(Exception):
            self.redis.close()


"""The storage contract: where jobs live, as a small set of atomic primitives.

plugq's lifecycle (retries, timeouts, schedules, dependencies, TTLs,
abandoned jobs, hooks) is written once, in plugq's engine, over a
:class:`Storage`. A storage keeps :class:`JobRecord` and :class:`WorkerRecord`
values and answers the primitives below; it makes no decision about what a
job should become. Memory, SQLite and PostgreSQL are storages; a third party
adds one by subclassing :class:`Storage` and registering a factory under a
URL scheme (see docs/backends.md). ``plugq.testing.storage.StorageConformance``
checks every primitive.

Rules every primitive follows:

* **Atomic on its own.** Each primitive is one transaction (a lock, a
  ``BEGIN … COMMIT``, one statement). The engine never needs two primitives to
  be atomic together: every transition it makes goes through :meth:`Storage.put`
  with a compare-and-set on the stored status, and the loser of a race sees
  ``False``.
* **Records are values.** A storage returns copies: changing a returned record
  changes nothing stored until it is passed to :meth:`Storage.put`.
* **Opaque data.** ``payload``, ``result`` and ``meta`` are bytes to keep as
  they are; times are epoch seconds (``float``).
* **Queue order.** A queue is the ``QUEUED`` records of one ``origin``, in the
  order :meth:`Storage.claim` hands them out and :meth:`Storage.ids` lists them:
  higher ``priority`` first; among records of one priority, a record enters at
  the back, or at the front when ``at_front`` is set. A storage that does not
  declare the ``priority`` capability only ever sees priority 0 (the engine
  refuses any other).
* **Reads never write.** :meth:`Storage.get`, :meth:`Storage.ids`,
  :meth:`Storage.count_status` and the other listings change nothing; expired
  records are deleted only when the engine asks (:meth:`Storage.expired`, then
  :meth:`Storage.remove`).

This module imports nothing of plugq's engine or public API; it re-exports
:class:`~plugq.exceptions.DuplicateJobError`, the one error a primitive raises
on purpose, so a storage needs no other plugq import.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import ClassVar, Protocol

from .config import mask_url
from .exceptions import DuplicateJobError, NotSupportedError


class JobStatus(StrEnum):
    """A job's status, as RQ names it. A ``str`` enum: ``status == 'queued'`` holds."""

    QUEUED = "queued"
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    DEFERRED = "deferred"
    SCHEDULED = "scheduled"
    CANCELED = "canceled"
    STOPPED = "stopped"
    #: waiting for a slot of its ``RateLimit`` (plugq's, as rq's unreleased one names it).
    RATE_LIMITED = "rate_limited"


#: RQ's defaults, in seconds: job timeout, how long a result is kept, how long a failure is kept.
DEFAULT_TIMEOUT = 180.0
DEFAULT_RESULT_TTL = 500
DEFAULT_FAILURE_TTL = 365 * 24 * 3600


@dataclass
class JobRecord:
    """One job as a storage keeps it: strings, bytes, numbers and lists of strings.

    Attributes mirror RQ's job hash. ``payload`` is the serialized ``(args,
    kwargs)`` (sealed); ``result`` and ``meta`` are serialized with
    ``serializer``. ``expires_at`` is when the job may be forgotten (``ttl`` of
    a queued job, ``result_ttl`` of a finished one, ``failure_ttl`` of a
    failed one); None means never. A storage stores every field and gives
    them back unchanged.
    """

    id: str
    func_name: str
    origin: str
    payload: bytes
    serializer: str = "pickle"
    status: JobStatus = JobStatus.QUEUED
    description: str = ""
    created_at: float = 0.0
    enqueued_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    #: seconds; None means no timeout (RQ's -1).
    timeout: float | None = DEFAULT_TIMEOUT
    #: seconds; -1 keeps the result forever, 0 deletes the job on success.
    result_ttl: int = DEFAULT_RESULT_TTL
    failure_ttl: int = DEFAULT_FAILURE_TTL
    ttl: int | None = None
    meta: bytes = b""
    result: bytes | None = None
    exc_info: str | None = None
    worker_name: str | None = None
    retries_left: int | None = None
    retry_intervals: list[float] = field(default_factory=list)
    depends_on: list[str] = field(default_factory=list)
    allow_dependency_failure: bool = False
    on_success: str | None = None
    on_failure: str | None = None
    scheduled_for: float | None = None
    expires_at: float | None = None
    #: where the job goes when it (re)enters its queue: the front or the back.
    at_front: bool = False
    #: how many times the job was claimed (retries and abandonment count).
    attempts: int = 0
    #: higher is taken first within a queue; 0 unless the job asked (capability ``priority``).
    priority: int = 0
    #: the key a ``Unique`` enqueue deduplicates on, kept with the job (capability ``unique_keys``).
    unique_key: str | None = None
    #: the job's ``RateLimit``, as the engine encodes it (opaque text to a storage).
    rate_limit: str | None = None
    #: a workflow step's inputs (the previous step, or a group's members), as the
    #: engine encodes them (opaque text to a storage).
    pipe: str | None = None

    def copy(self) -> JobRecord:
        """A copy whose lists are not shared with this one."""
        # Every enqueue, claim and completion copies a record; going through
        # dataclasses.replace (a getattr and an __init__ argument per field)
        # cost 5.6 us a copy against 1.1 us for a __dict__ copy.
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.retry_intervals = list(self.retry_intervals)
        new.depends_on = list(self.depends_on)
        return new


@dataclass
class WorkerRecord:
    """A worker as a storage tracks it; ``birth`` and ``last_heartbeat`` are epoch seconds."""

    name: str
    queues: list[str]
    pid: int
    hostname: str
    birth: float
    last_heartbeat: float
    #: ``idle`` or ``busy``.
    state: str = "idle"
    current_job_id: str | None = None
    successful_jobs: int = 0
    failed_jobs: int = 0


#: ``origin`` prefix of the records the default side-record primitives keep
#: (results history, groups, commands); no queue name contains ``:``.
HIDDEN_PREFIX = "plugq:"


@dataclass
class ResultRecord:
    """One earlier outcome of a job (rq's ``Result``): ``type`` is ``successful``,
    ``failed``, ``stopped`` or ``retried``; ``result`` is serialized with ``serializer``."""

    job_id: str
    type: str
    created_at: float
    result: bytes | None = None
    exc_info: str | None = None
    worker_name: str | None = None
    expires_at: float | None = None
    serializer: str = "pickle"


class Clock:
    """The wall clock: seconds since the epoch, as ``time.time()``.

    Every time-dependent decision (schedules, retry intervals, TTLs, leases)
    reads a storage's clock, so a test can swap in a :class:`ManualClock`.
    """

    def now(self) -> float:
        """Return the current time as epoch seconds."""
        return time.time()

    def now_datetime(self) -> datetime:
        """Return the current time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now(), tz=UTC)

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        if seconds > 0:
            time.sleep(seconds)


class ManualClock(Clock):
    """A clock that only moves when told to; starts at the real time (or ``start``).

    ``sleep`` advances the clock instead of blocking, so code that waits on
    this clock (a retry interval, a scheduler tick) completes at once.
    """

    def __init__(self, start: float | None = None) -> None:
        # Whole microseconds, as datetime holds them: a job scheduled with
        # enqueue_in(delta) is then due after exactly advance(delta), with no
        # float rounding between the datetime and the epoch-seconds paths.
        self._us = round((time.time() if start is None else start) * 1_000_000)
        self._lock = threading.Lock()

    def now(self) -> float:
        """Return this clock's time as epoch seconds."""
        with self._lock:
            return self._us / 1_000_000

    def advance(self, seconds: float | timedelta) -> float:
        """Move the clock forward; returns the new time.

        Raises:
            ValueError: ``seconds`` is negative.
        """
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        if seconds < 0:
            raise ValueError(f"a clock only moves forward; got advance({seconds!r})")
        with self._lock:
            self._us += round(seconds * 1_000_000)
            return self._us / 1_000_000

    def set(self, when: float | datetime) -> None:
        """Jump to ``when`` (epoch seconds or an aware datetime).

        Raises:
            ValueError: ``when`` is earlier than the clock's time.
        """
        target = round((when.timestamp() if isinstance(when, datetime) else float(when)) * 1_000_000)
        with self._lock:
            if target < self._us:
                raise ValueError("a clock only moves forward")
            self._us = target

    def sleep(self, seconds: float) -> None:
        """Advance the clock by ``seconds`` (never blocks)."""
        if seconds > 0:
            self.advance(seconds)


#: Every capability a storage may declare in :attr:`Storage.capabilities`, and what it promises.
CAPABILITIES: dict[str, str] = {
    "manual_clock": "takes a ManualClock: every time it compares comes from its clock",
    "process_local": "its data lives in this process only: worker_class fork and spawn are refused",
    "priority": "orders each queue by JobRecord.priority (higher first), the claim still an "
                "index lookup",
    "unique_keys": "insert(unique_keys=…) refuses a record whose unique_key is held by a "
                   "stored record in the given statuses, atomically with the write",
    "progress": "set_progress / get_progress keep a running job's progress apart from its record",
    "values": "get_value / swap_value / values: small named values with compare-and-set "
              "(cron entries, rate-limit windows)",
    "gated_claim": "claim_gated runs the engine's admission check (rate limits) inside the "
                   "claim's own transaction: one commit, no compare-and-set round trips",
    "limit_rule": "claim admits a rate-limited record itself, by the admission rule of "
                  "ADMISSION_RULE, atomically with the claim; limit_waiting tells whether "
                  "the put that ended a limited job left anyone in its limit's line",
    "pipes": "keeps JobRecord.pipe (a workflow step's inputs); the other fields of issue 16 "
             "(priority, unique_key, rate_limit) are kept by the capabilities above",
}


@dataclass(frozen=True)
class UniqueKey:
    """A unique-key condition checked by :meth:`Storage.insert` (capability ``unique_keys``).

    A stored record *holds* ``key`` when its ``unique_key`` equals it, its
    status is in ``statuses`` and (when ``since`` is given) its
    ``created_at > since``.
    """

    key: str
    statuses: frozenset[JobStatus]
    since: float | None = None

    def holds(self, rec: JobRecord) -> bool:
        """Whether ``rec`` holds this key (the rule every storage applies)."""
        return (
            rec.unique_key == self.key and rec.status in self.statuses
            and (self.since is None or rec.created_at > self.since)
        )

#: The rate-limit admission rule, stated once. The engine's reference
#: implementation is :func:`plugq._limits._decide` (run by its generic path and
#: by the gate of :meth:`Storage.claim_gated`); a storage declaring
#: ``limit_rule`` runs it itself inside :meth:`Storage.claim`, and
#: ``plugq.testing.storage.StorageConformance`` checks that its answers, its
#: line and its state equal the reference's over sequences of admissions,
#: ends, wake-ups and clock moves.
ADMISSION_RULE = """
A claimed record J whose ``rate_limit`` is set (the text of
``plugq.ratelimit.RateLimit.dumps``: JSON ``[key, concurrency, limit,
period]``, ``null`` for an absent one) is admitted under its limit L at the
moment t (the claim's ``now``) by reading and rewriting the named value
``limit:<key>`` (absent = ``[[], [], []]``), in the same atomic step as the
claim. The value is JSON ``[holders, starts, waiting]``: ``holders`` the
ids holding a slot (concurrency form), ``starts`` a flat list ``[time,
count, time, count, ...]`` of the starts in the period, times ascending
(rate form), ``waiting`` the ids in line, first first. Writers may differ
in whitespace and number spelling (times written with at least 17
significant digits, so a reader gets the same float back); readers parse
JSON.

1. If J is among the holders, its first occurrence leaves them (a retry
   asks again).
2. Rate form: drop the leading (time, count) pairs with time <= t - period
   (a Python ``bisect_right`` of t - period over the times).
3. place = J's index in waiting (its first occurrence), else len(waiting).
   free = the smaller of (concurrency - len(holders)) and (limit - the sum
   of the counts), for the forms L has, and at least 0.
4. If place >= free, or len(holders) >= 32: repair. A holder stays only if
   its record exists with status ``started``; an id in line stays only if
   its record exists with status ``rate_limited``, ``queued`` or
   ``started``. Then 2 and 3 again.
5. If place < free, J is admitted: J is appended to holders (concurrency
   form); a start at t is counted (rate form: if starts is empty or t >= the
   last time, then when limit > 16 and t and the last time fall in the same
   slice of the clock (Python's float ``t // (period / 16)`` equal) the
   last pair takes time t and count + 1, else (t, 1) is appended; if t is
   earlier than the last time, (t, 1) is inserted before the first pair
   whose time is > t); J's first occurrence leaves waiting. J is stored
   started, as :meth:`Storage.claim` says.
6. Else J is refused: appended to waiting unless already in it, and
   stored as the engine's gate leaves a refused record: status
   ``rate_limited`` (in that status's listing, entered at t), attempts as
   before the claim, no ``started_at``, ``worker_name`` or ``expires_at``;
   the claim then takes the next record.

The new value is stored in either case.
"""


class ClaimValues(Protocol):
    """Named values and job statuses, read and written inside one claim (:meth:`Storage.claim_gated`).

    Every call runs in the claim's transaction: what :meth:`set_value`
    writes commits with the claim or not at all, and nothing else changes
    the values meanwhile, so no compare-and-set is needed.
    """

    def get_value(self, key: str) -> str | None:
        """The named value ``key`` as this transaction sees it, or None."""
        ...

    def set_value(self, key: str, value: str) -> None:
        """Store ``value`` under ``key`` (created or replaced)."""
        ...

    def statuses(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """The status of each of ``job_ids`` that exists (absent ones are left out)."""
        ...


#: The engine's admission check for :meth:`Storage.claim_gated`: called as
#: ``gate(record, values, moment)`` for a claimed record whose ``rate_limit`` is
#: set. True: the record may run. False: the gate changed ``record`` into the
#: form to store instead (``RATE_LIMITED``, not started).
ClaimGate = Callable[[JobRecord, ClaimValues, float], bool]

#: A read the engine makes inside a claim's transaction (:meth:`Storage.claim_gated`'s
#: ``peek``): called as ``peek(values)`` whether or not the claim found a record.
#: It only reads (:meth:`ClaimValues.get_value`, :meth:`ClaimValues.statuses`).
ClaimPeek = Callable[[ClaimValues], None]


class Storage(ABC):
    """Where jobs and workers are kept: the primitives plugq's engine composes.

    Subclass, set :attr:`scheme` and :attr:`capabilities`, accept the URL in
    ``__init__`` (call ``super().__init__(url, clock)``) and implement every
    abstract method. Each primitive documents what is atomic; see the module
    docstring for the rules all of them share.
    """

    #: The URL scheme the storage is registered under (``memory``, ``sqlite``…).
    scheme: ClassVar[str] = ""
    #: What this storage promises beyond the primitives (keys of :data:`CAPABILITIES`).
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: Seconds without a heartbeat after which a worker counts as dead and its
    #: started jobs as abandoned.
    lease: float = 60.0

    def __init__(self, url: str, clock: Clock | None = None) -> None:
        """Keep ``url`` and ``clock`` (the wall clock when None).

        Raises:
            NotSupportedError: ``clock`` is a :class:`ManualClock` and the
                storage does not declare ``manual_clock``.
        """
        unknown = self.capabilities - CAPABILITIES.keys()
        if unknown:
            raise TypeError(f"{type(self).__name__} declares unknown capabilities {sorted(unknown)}")
        #: The URL this storage was made from (passwords included; see :meth:`safe_url`).
        self.url = url
        if isinstance(clock, ManualClock) and "manual_clock" not in self.capabilities:
            raise NotSupportedError(
                f"{type(self).__name__} ({mask_url(url)}) cannot run on a ManualClock"
            )
        #: Where every time-dependent decision reads the time.
        self.clock: Clock = clock or Clock()

    def safe_url(self) -> str:
        """The URL with any password replaced by ``***``, for logs and errors."""
        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.safe_url()}>"

    # -- poison records (see plugq._quarantine) ------------------------------

    #: Most quarantines kept for the engine to report; a store that no worker
    #: drains (a script that only claims) does not grow without bound.
    QUARANTINE_BACKLOG: ClassVar[int] = 1000

    def report_quarantined(self, rec: JobRecord) -> None:
        """Called by the storage once it has failed a poison record in the store.

        ``rec`` is the quarantined stand-in (:func:`plugq._quarantine.quarantined`).
        The engine takes it with :meth:`take_quarantined` and reports it as
        any failed job (hook, dependents): that policy stays in one place,
        however many storages quarantine. A stand-in only read (``get``) is
        not reported: nothing was stored.
        """
        backlog = self.__dict__.get("_quarantined")
        if backlog is None:
            backlog = self.__dict__.setdefault(
                "_quarantined", deque(maxlen=self.QUARANTINE_BACKLOG))
        backlog.append(rec)

    def take_quarantined(self) -> list[JobRecord]:
        """The records quarantined since the last call, each given out once (thread-safe)."""
        backlog = self.__dict__.get("_quarantined")
        taken: list[JobRecord] = []
        while backlog:
            try:
                taken.append(backlog.popleft())
            except IndexError:  # another thread took the last one
                break
        return taken

    def _unsupported(self, capability: str) -> NotSupportedError:
        return NotSupportedError(
            f"{type(self).__name__} ({self.safe_url()}) does not declare the {capability!r} "
            f"capability: {CAPABILITIES[capability]}"
        )

    # -- jobs -------------------------------------------------------------

    @abstractmethod
    def insert(
        self, records: Sequence[JobRecord], *, unique_ids: Collection[str] = (),
        unique_keys: Sequence[UniqueKey] = (),
    ) -> None:
        """Store new records, all or none; a record with the same id is replaced.

        Parameters:
            records: complete records. A ``QUEUED`` one enters the back of its
                queue (the front when ``at_front``); any other status is only
                kept (and listed by :meth:`ids` under that status).
            unique_ids: ids that must not be stored as ``QUEUED`` or
                ``STARTED`` already; checked in the same transaction as the write.
            unique_keys: conditions no stored record may hold (see
                :class:`UniqueKey`); only passed to a storage that declares
                ``unique_keys``. Two inserts racing on one key serialise: the
                second sees the first's record.

        Raises:
            DuplicateJobError: an id in ``unique_ids`` is queued or started, or
                a stored record holds a key of ``unique_keys`` (its id is the
                error's ``job_id``); nothing of the batch was written.

        Atomic: the whole batch, and the unique checks with it.
        """

    @abstractmethod
    def get(self, job_id: str) -> JobRecord | None:
        """The stored record (expired or not: the engine decides), or None if absent."""

    def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """One record or None per id, in the order given. Override to batch."""
        return [self.get(job_id) for job_id in job_ids]

    @abstractmethod
    def put(
        self, record: JobRecord, *, expected: Collection[JobStatus] | None = None,
        expected_attempts: int | None = None,
    ) -> bool:
        """Overwrite a stored record, every field but ``meta`` (compare-and-set).

        Parameters:
            record: the new state.
            expected: when given, write only if the stored status is one of
                these; an empty collection never writes.
            expected_attempts: when given, write only if the stored
                ``attempts`` equals it (a worker that stalled past its lease
                cannot overwrite the attempt that replaced it).

        Placement: a record that becomes ``QUEUED`` from another status, or
        moves to another ``origin``, enters the back of its queue (front when
        ``at_front``); one that keeps its status and origin keeps its place;
        one that leaves ``QUEUED`` leaves the queue.

        Returns:
            True if written; False if absent or a condition did not hold.

        Atomic: the conditions and the write.
        """

    @abstractmethod
    def remove(self, job_id: str) -> bool:
        """Delete the record wherever it is; True if it existed. Atomic."""

    @abstractmethod
    def set_meta(self, job_id: str, meta: bytes) -> bool:
        """Replace only ``meta`` (a running job's other fields are untouched).

        Returns:
            True if the record exists. Atomic.
        """

    @abstractmethod
    def claim(self, queues: Sequence[str], worker_name: str, now: float) -> JobRecord | None:
        """Take the next runnable job for ``worker_name``.

        Looks at ``queues`` in the order given and takes the first record in
        queue order whose ``expires_at`` is None or later than ``now`` (an
        expired queued record is skipped, and may be deleted). The taken
        record is stored with status ``STARTED``, ``started_at=now``,
        ``worker_name``, ``expires_at=None`` and ``attempts + 1``, and leaves
        its queue.

        Returns:
            The record as stored, or None when no queue has a runnable job.

        Atomic: exactly one caller gets each job, however many claim at once.
        A record with an unusable field (:func:`plugq._quarantine.job_problem`)
        is never returned: the storage fails it in the store, hands it to
        :meth:`report_quarantined` and takes the next.

        With the ``limit_rule`` capability, a record whose ``rate_limit`` is
        set is admitted by :data:`ADMISSION_RULE` in the same atomic step: an
        admitted one is returned started, a refused one is stored waiting and
        the claim takes the next. (A ``rate_limit`` that is not a valid
        ``RateLimit`` text is claimed as if it had none, and so quarantined
        by the claim's check of the fields.)
        """

    # -- listings (reads; none of them writes) -----------------------------

    @abstractmethod
    def ids(
        self, queue: str, status: JobStatus, offset: int = 0, length: int = -1, *,
        now: float | None = None,
    ) -> list[str]:
        """Ids of ``queue``'s records in ``status``.

        Parameters:
            offset, length: a slice of the listing; ``length=-1`` means all.
            now: when given, records with ``expires_at <= now`` are left out.

        Returns:
            ``QUEUED``: queue order. Other statuses: the order the records
            entered that status, oldest first.
        """

    @abstractmethod
    def count_status(self, queue: str, status: JobStatus, *, now: float | None = None) -> int:
        """How many of ``queue``'s records are in ``status`` (``now`` as in :meth:`ids`)."""

    @abstractmethod
    def queues(self) -> list[str]:
        """Every ``origin`` that has at least one record, sorted ('' left out)."""

    @abstractmethod
    def due(self, now: float, limit: int = 100) -> list[str]:
        """Ids of ``SCHEDULED`` records with ``scheduled_for <= now``, earliest first, at most ``limit``."""

    @abstractmethod
    def expired(self, now: float, limit: int = 100) -> list[str]:
        """Ids of records with ``expires_at <= now``, at most ``limit``."""

    @abstractmethod
    def dependents(self, job_id: str) -> list[str]:
        """Ids of ``DEFERRED`` records whose ``depends_on`` contains ``job_id``."""

    @abstractmethod
    def started_by_dead_workers(self, now: float, exclude: str | None = None) -> list[JobRecord]:
        """``STARTED`` records whose worker's ``last_heartbeat + lease <= now``.

        A started record whose worker is not registered at all counts too.
        ``exclude`` names a worker to leave out (the caller itself).
        """

    # -- bulk deletes ------------------------------------------------------

    @abstractmethod
    def remove_queued(self, queue: str) -> int:
        """Delete every ``QUEUED`` record of ``queue``; returns how many. Atomic."""

    # -- workers -----------------------------------------------------------

    @abstractmethod
    def register_worker(self, worker: WorkerRecord) -> None:
        """Add or replace a worker's record. Atomic."""

    @abstractmethod
    def heartbeat(
        self, name: str, now: float, *, state: str, current_job_id: str | None,
        successful: int = 0, failed: int = 0,
    ) -> None:
        """Record that worker ``name`` is alive at ``now``, with its state and counters.

        An unregistered ``name`` is ignored (no error, no record). Atomic.
        """

    @abstractmethod
    def unregister_worker(self, name: str) -> None:
        """Forget a worker (stopped, or found dead); no error if absent."""

    @abstractmethod
    def list_workers(self) -> list[WorkerRecord]:
        """Every registered worker, live or not yet reaped."""

    # -- side records: results history, groups, worker commands ------------
    #
    # Optional primitives, each with a default written over the primitives
    # above: the data is kept as ordinary records under an ``origin`` that no
    # queue can have (queue names never contain ``:``), so a storage works
    # without overriding any of them. A storage with a native form (rq's
    # results stream, group sets and command channel on Redis) overrides
    # them all together. None of them is atomic with a job's own write.

    def add_result(self, entry: ResultRecord, *, keep: int = 10) -> None:
        """Append ``entry`` to its job's results history, keeping the newest ``keep``.

        The history holds a job's *earlier* outcomes; the latest one is the
        job record itself (its ``result`` / ``exc_info``). ``entry.expires_at``
        (None: never) is when the entry may be forgotten.
        """
        import os

        origin = f"{HIDDEN_PREFIX}results:{entry.job_id}"
        self.insert([JobRecord(
            id=f"{origin}:{os.urandom(8).hex()}", func_name=entry.type, origin=origin,
            payload=b"", status=JobStatus.FINISHED, created_at=entry.created_at,
            ended_at=entry.created_at, result=entry.result, exc_info=entry.exc_info,
            worker_name=entry.worker_name, expires_at=entry.expires_at,
            description=entry.serializer, serializer=entry.serializer,
        )])
        ids = self.ids(origin, JobStatus.FINISHED)
        for old in ids[: max(0, len(ids) - keep)]:
            self.remove(old)

    def results(self, job_id: str, *, now: float | None = None) -> list[ResultRecord]:
        """The job's earlier outcomes, newest first (expired ones left out when ``now`` is given)."""
        origin = f"{HIDDEN_PREFIX}results:{job_id}"
        ids = self.ids(origin, JobStatus.FINISHED, now=now)
        out = [
            ResultRecord(job_id=job_id, type=r.func_name, created_at=r.created_at,
                         result=r.result, exc_info=r.exc_info, worker_name=r.worker_name,
                         expires_at=r.expires_at, serializer=r.serializer)
            for r in self.get_many(ids) if r is not None
        ]
        out.reverse()  # ids() lists in the order added, oldest first
        return out

    def remove_results(self, job_id: str) -> None:
        """Forget a job's results history (the job is being deleted)."""
        for rid in self.ids(f"{HIDDEN_PREFIX}results:{job_id}", JobStatus.FINISHED):
            self.remove(rid)

    def add_to_group(self, group: str, job_ids: Sequence[str]) -> None:
        """Record ``job_ids`` as members of ``group`` (created on first use). Atomic."""
        origin = f"{HIDDEN_PREFIX}group:{group}"
        now = self.clock.now()
        # One record per member, and one naming the group (a storage's
        # queues() lists queue names only, so groups keep their own list).
        self.insert([
            JobRecord(id=f"{HIDDEN_PREFIX}groups:{group}", func_name=group,
                      origin=f"{HIDDEN_PREFIX}groups", payload=b"",
                      status=JobStatus.FINISHED, created_at=now),
            *(JobRecord(id=f"{origin}:{job_id}", func_name=job_id, origin=origin, payload=b"",
                        status=JobStatus.FINISHED, created_at=now)
              for job_id in job_ids),
        ])

    def group_members(self, group: str) -> list[str]:
        """Ids of ``group``'s members in the order they were added (deleted jobs included)."""
        origin = f"{HIDDEN_PREFIX}group:{group}"
        return [i[len(origin) + 1:] for i in self.ids(origin, JobStatus.FINISHED)]

    def remove_from_group(self, group: str, job_ids: Sequence[str]) -> None:
        """Forget ``job_ids`` as members of ``group`` (the jobs themselves stay).

        A group left without members is forgotten too.
        """
        for job_id in job_ids:
            self.remove(f"{HIDDEN_PREFIX}group:{group}:{job_id}")
        if not self.count_status(f"{HIDDEN_PREFIX}group:{group}", JobStatus.FINISHED):
            self.remove(f"{HIDDEN_PREFIX}groups:{group}")

    def groups(self) -> list[str]:
        """Names of every group with at least one member, sorted."""
        prefix = f"{HIDDEN_PREFIX}groups:"
        return sorted(i[len(prefix):] for i in self.ids(f"{HIDDEN_PREFIX}groups", JobStatus.FINISHED))

    def send_command(self, worker_name: str, command: dict[str, str], *, ttl: float = 60.0) -> None:
        """Leave ``command`` for worker ``worker_name``; forgotten after ``ttl`` seconds unread."""
        import json
        import os

        origin = f"{HIDDEN_PREFIX}commands:{worker_name}"
        now = self.clock.now()
        self.insert([JobRecord(
            id=f"{origin}:{os.urandom(8).hex()}", func_name="command", origin=origin,
            payload=json.dumps(command).encode(), created_at=now, enqueued_at=now,
            expires_at=now + ttl,
        )])

    def take_commands(self, worker_name: str) -> list[dict[str, str]]:
        """The commands left for ``worker_name``, oldest first; each is handed out once."""
        import json

        origin = f"{HIDDEN_PREFIX}commands:{worker_name}"
        ids = self.ids(origin, JobStatus.QUEUED)
        if not ids:
            return []
        out = []
        for rec in self.get_many(ids):
            if rec is not None and self.remove(rec.id):
                out.append(json.loads(rec.payload))
        return out
    # -- optional primitives (declared by a capability) --------------------

    def set_progress(self, job_id: str, progress: str) -> bool:
        """Store ``progress`` (opaque text) for ``job_id``, apart from its record (``progress``).

        Cheap by design: one small write that never touches the job's record,
        so a task may report often. Removing the job forgets it.

        Returns:
            True if the job exists. Atomic.
        """
        raise self._unsupported("progress")

    def get_progress(self, job_ids: Sequence[str]) -> list[str | None]:
        """The progress last stored for each id (None if none), in the order given."""
        raise self._unsupported("progress")

    def get_value(self, key: str) -> str | None:
        """The named value ``key``, or None (capability ``values``)."""
        raise self._unsupported("values")

    def swap_value(self, key: str, expected: str | None, new: str | None) -> bool:
        """Compare-and-set a named value (capability ``values``).

        Parameters:
            expected: the value that must be stored now; None means "absent".
            new: the value to store; None deletes it.

        Returns:
            True if the stored value was ``expected`` and is now ``new``.

        Atomic: exactly one of several callers swapping from one value wins.
        """
        raise self._unsupported("values")

    def values(self, prefix: str) -> dict[str, str]:
        """Every named value whose key starts with ``prefix`` (capability ``values``)."""
        raise self._unsupported("values")

    def claim_gated(
        self, queues: Sequence[str], worker_name: str, now: float, gate: ClaimGate,
        peek: ClaimPeek | None = None,
    ) -> JobRecord | None:
        """:meth:`claim`, with the engine's admission check inside the same transaction.

        Capability ``gated_claim``; optional: without it the engine claims,
        then admits with :meth:`get_value` / :meth:`swap_value`. A storage
        whose every call is a round trip (a file, a server) offers it so that a
        rate-limited job costs no more commits than a plain one.

        Takes the next runnable record exactly as :meth:`claim` does. If the
        record's ``rate_limit`` is set, calls ``gate(record, values, moment)``
        before committing, with ``values`` (:class:`ClaimValues`) bound to the
        claim's transaction and ``moment`` the storage's clock read inside it,
        once the claim holds its lock (not ``now``, read before any wait for
        the lock: a start counted that early would leave a rate limit's
        period early). When the gate returns False, the record it
        changed is stored in place of the started one (as :meth:`put` would,
        unconditionally: the transaction still holds the claim). The storage
        decides nothing: the gate is the policy.

        Returns:
            The record as stored: ``STARTED`` when it may run, else the
            gate's form of it (``RATE_LIMITED``); None when no queue has a
            runnable job.

        Atomic: the claim, the values the gate set and the refused record
        commit together or not at all. The gate may be called again if the
        storage retries the transaction (it reads everything it uses from
        ``values``).
        """
        raise self._unsupported("gated_claim")

    def limit_waiting(self, job_id: str) -> bool | None:
        """Whether anyone waited in line for ``job_id``'s rate limit after its end (``limit_rule``).

        Answers for the last :meth:`put` *through this storage object* that
        took ``job_id`` (with ``rate_limit`` set) out of ``STARTED``: True if
        the limit's ``waiting`` list was not empty as that put left it (read
        inside the put, and after any claim the put made), False if it was
        empty. None when this object made no such put (another process did,
        or the answer was already taken): the engine then reads the value.
        Each answer is given once. A storage where a put is a round trip
        keeps the engine from paying a second one at every limited job's end.
        """
        raise self._unsupported("limit_rule")

    # -- waiting and closing ----------------------------------------------

    def wait(self, queues: Sequence[str], timeout: float) -> None:
        """Block until one of ``queues`` may have a queued job, or ``timeout`` seconds pass.

        Returning early without work is allowed (the caller looks again).
        The default sleeps the whole timeout: correct but slow to notice new
        work; override to wake on a change (a condition variable, a counter).
        """
        time.sleep(timeout)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files. The default does nothing."""


__all__ = [
    "ADMISSION_RULE",
    "CAPABILITIES",
    "DEFAULT_FAILURE_TTL",
    "DEFAULT_RESULT_TTL",
    "DEFAULT_TIMEOUT",
    "HIDDEN_PREFIX",
    "ClaimGate",
    "ClaimPeek",
    "ClaimValues",
    "Clock",
    "DuplicateJobError",
    "JobRecord",
    "JobStatus",
    "ManualClock",
    "ResultRecord",
    "Storage",
    "UniqueKey",
    "WorkerRecord",
]

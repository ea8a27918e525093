"""Rate and concurrency limits in the engine, over a storage's named values.

Each key has one named value, ``limit:<key>``: the jobs holding a slot, the
recent start times (rate form) and the line of waiting jobs. Every change is
atomic on that one value (a compare-and-set, or inside the claim's
transaction, below), so workers in any number of processes agree. State is
repaired as it is read: a holder that is no longer started
(it ended, was abandoned and recovered, was deleted) frees its slot, and a
waiting job that no longer waits leaves the line. So a job's end writes
nothing (one write per limited job, at admission), and a crashed worker never
leaks a slot for longer than its lease.

A storage with the ``gated_claim`` capability runs the admission inside its
claim (:meth:`~plugq.storage.Storage.claim_gated` with :func:`gate`): the
claim, the key's new state and a refused job's ``rate_limited`` record commit
together, in one transaction. Elsewhere the worker claims, then :func:`admit`
compare-and-sets the key. Both go through :func:`_decide`, the one policy.

A storage that cannot call Python inside its claim (Redis: the claim is a Lua
script, and runs inside the put of the previous job's outcome) declares
``limit_rule`` instead: it runs the same rule itself, as the storage contract
states it (:data:`plugq.storage.ADMISSION_RULE`, of which :func:`_decide` is
the reference implementation and the conformance suite the check), and its
put that ends a limited job tells :func:`release` whether anyone waits
(:meth:`~plugq.storage.Storage.limit_waiting`). The rule then lives in two
languages, but it is specified once and each storage's answers are checked
against :func:`_decide`; the waking, the repair on wake and the maintenance
pass stay here. (The alternative of keeping the rule only in Python cannot
save the round trips: the admission must be atomic with other workers' and
must precede the job's run, and the claim that precedes it is a script.)
The state's format, ``[holders, starts, waiting]`` as JSON (below), is part
of that contract.
"""

from __future__ import annotations

import json
import logging
import weakref
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from json.encoder import encode_basestring_ascii as _json_str

from . import _rules
from .ratelimit import RateLimit
from .storage import ClaimValues, JobRecord, JobStatus, Storage

log = logging.getLogger("plugq.limits")

# The rule's constants below are part of plugq.storage.ADMISSION_RULE: a
# ``limit_rule`` storage (Redis's Lua, plugq_rq._lua.LIMIT_RULE) has its own
# copy, checked against these by the conformance suite.
PREFIX = "limit:"
#: A waiting job still counts as in line in these statuses (queued: woken, not yet claimed).
_IN_LINE = frozenset({JobStatus.RATE_LIMITED, JobStatus.QUEUED, JobStatus.STARTED})
#: The rate form keeps every start time for a limit of up to STARTS_EXACT
#: per period; above, one entry per period / STARTS_SLICES of the clock
#: (see :meth:`_State.add_start`).
STARTS_EXACT = 16
STARTS_SLICES = 16
#: Holders listed before the dead ones are swept out even with slots free,
#: so a high ``concurrency`` does not grow the state with every job that ran.
TIDY_AT = 32

#: Job id -> status, for the ids given that still exist.
StatusesOf = Callable[[list[str]], dict[str, JobStatus]]

#: Per storage, the value of each limit key as this process last read or wrote it.
#: An admission compare-and-sets against it before reading: when no other
#: process changed the key (one worker, or a quiet limit) that saves a round
#: trip per job; a stale guess only fails the swap, and the loop then reads.
_seen: weakref.WeakKeyDictionary[Storage, dict[str, str | None]] = weakref.WeakKeyDictionary()


#: The JSON text of start times and job ids (see :meth:`_State.dumps`); cleared when large.
_TEXT: dict[float | str, str] = {}


def _text(value: float | str) -> str:
    if len(_TEXT) >= 4096:
        _TEXT.clear()
    # What json.dumps writes for one value, without its per-call set-up (a
    # new holder and the newest start time miss the table at every admission):
    # a finite float's repr; an id as JSON's ASCII-escaped string.
    text = _TEXT[value] = _json_str(value) if type(value) is str else repr(value)
    return text


def _pair(at: float, count: float) -> str:
    # A start time as repr writes it (as json.dumps does), its count as a whole number.
    return f"{_TEXT.get(at) or _text(at)}, {count!r}"


#: The last state text this process wrote, with its state (see :meth:`_State.loads`).
_last: tuple[str, _State] | None = None


@dataclass
class _State:
    """A key's state; its JSON form ``[holders, starts, waiting]`` is part of the
    storage contract (:data:`plugq.storage.ADMISSION_RULE`)."""

    holders: list[str] = field(default_factory=list)
    #: ``[time, count, time, count, …]``, times ascending: ``count`` starts
    #: counted as made at ``time`` (the clock's own float, so a period ends
    #: exactly when it should). One flat list, because the state is parsed
    #: and written at every limited start and nested pairs cost several
    #: times as much.
    starts: list[float] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)
    #: The JSON text of each (time, count) pair of ``starts``, kept in step
    #: with it by the methods below (None: not known, made by :meth:`dumps`).
    #: Only the newest pair changes from one admission to the next, and
    #: writing up to 17 pairs' text again was most of an admission's cost.
    pairs: list[str] | None = field(default=None, compare=False, repr=False)

    def dumps(self) -> str:
        global _last
        # What json.dumps([holders, starts, waiting]) writes, each start's
        # text kept with the state (see pairs): the same starts are written at
        # every limited claim until they leave the period, and a float's text
        # is the costly part of the state (~0.5 us each, up to 17 of them).
        pairs = self.pairs
        if pairs is None:
            starts = self.starts
            pairs = self.pairs = [_pair(starts[k], starts[k + 1]) for k in range(0, len(starts), 2)]
        # Ids too: a holder is written at every admission while it is listed.
        get = _TEXT.get
        holders = ", ".join([get(i) or _text(i) for i in self.holders])
        waiting = ", ".join([get(i) or _text(i) for i in self.waiting]) if self.waiting else ""
        raw = f"[[{holders}], [{', '.join(pairs)}], [{waiting}]]"
        # Kept as it is, not copied: whoever dumps a state is done changing it
        # (loads hands out copies).
        _last = (raw, self)
        return raw

    @classmethod
    def loads(cls, raw: str | None) -> _State:
        if raw is None:
            return cls()
        last = _last
        if last is not None and last[0] == raw:
            # The value this process wrote last (one worker, or a quiet key):
            # a copy of it, without parsing the JSON again at every claim.
            return last[1].copy()
        holders, starts, waiting = json.loads(raw)
        return cls(holders, starts, waiting)

    def copy(self) -> _State:
        pairs = self.pairs
        return _State(list(self.holders), list(self.starts), list(self.waiting),
                      None if pairs is None else list(pairs))

    def started(self) -> int:
        return int(sum(self.starts[1::2]))

    def expire(self, limit: RateLimit, now: float) -> None:
        starts = self.starts
        # Most admissions find the oldest start still in the period: no bisect.
        if limit.period is not None and starts and starts[0] <= now - limit.period:
            gone = bisect_right(starts[0::2], now - limit.period)
            del starts[: 2 * gone]
            if self.pairs is not None:
                del self.pairs[:gone]

    def add_start(self, limit: RateLimit, now: float) -> None:
        """Count a start at ``now``, keeping the rate form's state small.

        A limit of up to :data:`STARTS_EXACT` starts per period keeps every
        start (never more than the limit: a refused job adds none), so it is
        exact. A larger limit keeps one entry per slice
        of the clock ``period / STARTS_SLICES`` wide: a start joins the last
        entry when it falls in the same slice, and the entry takes the later
        time, so its starts leave the period a little late, never early: the
        limit is never exceeded, and a slot may come free up to one slice
        late. Either way a period holds at most max(STARTS_EXACT,
        STARTS_SLICES + 1) entries whatever the limit, and adding one is O(1).
        """
        assert limit.period is not None and limit.limit is not None
        at, starts = now, self.starts
        if not starts or at >= starts[-2]:
            width = limit.period / STARTS_SLICES
            # The same slice of the clock, not "close to the last entry": that
            # would let one entry creep forward and swallow a whole period.
            if starts and limit.limit > STARTS_EXACT and at // width == starts[-2] // width:
                starts[-2] = at
                starts[-1] += 1
                if self.pairs is not None:
                    self.pairs[-1] = _pair(at, starts[-1])
            else:
                starts += (at, 1)
                if self.pairs is not None:
                    self.pairs.append(_pair(at, 1))
        else:
            # Another process's clock (or claim) was a little behind: keep the order.
            i = 2 * bisect_right(starts[0::2], at)
            starts[i:i] = (at, 1)
            if self.pairs is not None:
                self.pairs.insert(i // 2, _pair(at, 1))


@lru_cache(maxsize=256)
def _limit(text: str) -> RateLimit:
    # Read on every claim and end of a limited job; a few distinct values.
    return RateLimit.loads(text)


def _repaired(statuses_of: StatusesOf, limit: RateLimit, st: _State, now: float) -> _State:
    ids = list(dict.fromkeys(st.holders + st.waiting))
    found = statuses_of(ids) if ids else {}
    holders = [i for i in st.holders if found.get(i) is JobStatus.STARTED]
    waiting = [i for i in st.waiting if found.get(i) in _IN_LINE]
    repaired = _State(holders, st.starts, waiting, st.pairs)
    repaired.expire(limit, now)
    return repaired


def _statuses_via(storage: Storage) -> StatusesOf:
    def statuses_of(ids: list[str]) -> dict[str, JobStatus]:
        return {r.id: r.status for r in storage.get_many(ids) if r is not None}
    return statuses_of


def _free(limit: RateLimit, st: _State) -> int:
    # A RateLimit has at least one of the two forms (RateLimit checks it).
    free = limit.concurrency - len(st.holders) if limit.concurrency is not None else None
    if limit.limit is not None:
        left = limit.limit - st.started()
        if free is None or left < free:
            free = left
    assert free is not None
    return free if free > 0 else 0


def _decide(
    limit: RateLimit, raw: str | None, job_id: str, now: float, statuses_of: StatusesOf
) -> tuple[bool, _State]:
    """The policy: may ``job_id`` start now? With the key's state to store either way."""
    st = _State.loads(raw)
    if job_id in st.holders:
        st.holders.remove(job_id)  # a retry of a job that held a slot: it asks again
    st.expire(limit, now)
    place = st.waiting.index(job_id) if job_id in st.waiting else len(st.waiting)
    free = _free(limit, st)
    if place >= free or len(st.holders) >= TIDY_AT:
        # Only a refusal (or a long holder list) pays for reading the holders:
        # a dead one frees a slot.
        st = _repaired(statuses_of, limit, st, now)
        place = st.waiting.index(job_id) if job_id in st.waiting else len(st.waiting)
        free = _free(limit, st)
    if place < free:
        if limit.concurrency is not None:
            st.holders.append(job_id)
        if limit.limit is not None:
            st.add_start(limit, now)
        if job_id in st.waiting:
            st.waiting.remove(job_id)
        return True, st
    if job_id not in st.waiting:
        st.waiting.append(job_id)
    return False, st


def admit(storage: Storage, rec: JobRecord) -> bool:
    """Give the claimed ``rec`` a slot, or make it ``rate_limited`` in line; True if it may run.

    The generic path: a compare-and-set loop on the key's named value, for a
    storage without the ``gated_claim`` capability (else :func:`gate` runs
    inside its claim).
    """
    assert rec.rate_limit is not None
    limit = _limit(rec.rate_limit)
    key = PREFIX + limit.key
    seen = _seen.setdefault(storage, {})
    statuses_of = _statuses_via(storage)
    for attempt in range(50):
        raw = seen[key] if attempt == 0 and key in seen else storage.get_value(key)
        admitted, st = _decide(limit, raw, rec.id, storage.clock.now(), statuses_of)
        new = st.dumps()
        if storage.swap_value(key, raw, new):
            seen[key] = new
            if not admitted:
                _wait(storage, rec)
            return admitted
    # Lost 50 races in a row: put it back in line rather than run over the limit.
    log.warning("rate limit %s: too much contention; job %s waits", limit.key, rec.id)
    _wait(storage, rec)
    return False


def gate(rec: JobRecord, values: ClaimValues, now: float) -> bool:
    """:func:`admit` for :meth:`Storage.claim_gated`: run inside the claim's transaction.

    Nobody else writes the key meanwhile, so no compare-and-set: read,
    decide, write. A refused ``rec`` is left changed into its waiting form,
    for the storage to store with the claim.
    """
    assert rec.rate_limit is not None
    limit = _limit(rec.rate_limit)
    key = PREFIX + limit.key
    admitted, st = _decide(limit, values.get_value(key), rec.id, now, values.statuses)
    values.set_value(key, st.dumps())
    if not admitted:
        _to_waiting(rec)
    return admitted


def _to_waiting(rec: JobRecord) -> None:
    rec.status = JobStatus.RATE_LIMITED
    rec.attempts -= 1  # the claim did not start it
    rec.started_at = None
    rec.worker_name = None


def _wait(storage: Storage, rec: JobRecord) -> None:
    claimed = rec.attempts
    _to_waiting(rec)
    storage.put(rec, expected={JobStatus.STARTED}, expected_attempts=claimed)


def release(storage: Storage, rec: JobRecord) -> None:
    """``rec`` ended (or went back to wait for a retry): wake who is next in line.

    The slot itself needs no write: a holder that is no longer started counts
    as gone the next time the key is read, so a job's end costs one read
    when nobody waits (on a ``gated_claim`` storage the worker loop makes
    that read in its next claim's transaction instead, see :class:`Ended`);
    none on a ``limit_rule`` storage, whose put that
    ended ``rec`` read the line already, nor under a limit of the rate form
    alone (its slots come free with the clock; the maintenance pass,
    :func:`wake_all`, wakes those).
    """
    assert rec.rate_limit is not None
    limit = _limit(rec.rate_limit)
    if "limit_rule" in storage.capabilities:
        # The put that ended rec read the line (None: another process's put; read it here).
        waiting = storage.limit_waiting(rec.id)
        if waiting is not None:
            if waiting:
                wake(storage, limit)
            return
    if limit.concurrency is None:
        # The rate form frees a slot when a start leaves its period, not when a
        # job ends: the maintenance pass (wake_all) wakes those jobs; a job's
        # end has nothing to read.
        return
    raw = storage.get_value(PREFIX + limit.key)
    if "gated_claim" not in storage.capabilities:
        # For admit's first guess (a gated claim reads the value in its transaction).
        _seen.setdefault(storage, {})[PREFIX + limit.key] = raw
    if _line_holds_anyone(raw):
        wake(storage, limit)


def _line_holds_anyone(raw: str | None) -> bool:
    # _State.dumps writes the line last: "…, []]" is a state nobody waits in,
    # told without parsing it (this runs at the end of every limited job).
    return raw is not None and not raw.endswith(", []]") and bool(_State.loads(raw).waiting)


class Ended:
    """:func:`release` for a ``gated_claim`` storage, its read riding on the next claim.

    The worker loop hands the end of a job holding a concurrency slot to its
    next claim (:meth:`~plugq.storage.Storage.claim_gated`'s ``peek``): the
    line is read in that claim's transaction, which reads the key anyway when
    the next job carries the same limit (SQLite's claim statement reads it
    along), instead of in a statement of its own between the job's end and
    the claim. :meth:`settle` then wakes who waits, as :func:`release` would
    have just before; a claim that ran no peek (it failed) leaves the read to
    :meth:`settle`.
    """

    __slots__ = ("limit", "raw", "read", "rec")

    def __init__(self, rec: JobRecord, limit: RateLimit) -> None:
        self.rec = rec
        self.limit = limit
        self.raw: str | None = None
        self.read = False

    def peek(self, values: ClaimValues) -> None:
        self.raw = values.get_value(PREFIX + self.limit.key)
        self.read = True

    def settle(self, storage: Storage) -> None:
        """Wake who waits in the line as the peek read it (or read it now: no peek ran)."""
        if not self.read:
            release(storage, self.rec)
        elif _line_holds_anyone(self.raw):
            wake(storage, self.limit)


def ended(rec: JobRecord) -> Ended | None:
    """The end of ``rec`` for :class:`Ended` (a ``gated_claim`` storage); None: nothing to read.

    A limit of the rate form alone frees no slot when a job ends (see
    :func:`release`): nothing to hand on.
    """
    assert rec.rate_limit is not None
    limit = _limit(rec.rate_limit)
    return None if limit.concurrency is None else Ended(rec, limit)


def wake(storage: Storage, limit: RateLimit) -> int:
    """Queue (at the front) as many waiting jobs, first in line first, as there are free slots."""
    key = PREFIX + limit.key
    raw = storage.get_value(key)
    if raw is None:
        return 0
    now = storage.clock.now()
    st = _repaired(_statuses_via(storage), limit, _State.loads(raw), now)
    woken = 0
    for job_id in st.waiting[: _free(limit, st)]:
        waiting = storage.get(job_id)
        if waiting is None or waiting.status is not JobStatus.RATE_LIMITED:
            continue  # already woken (queued) or being admitted
        _rules.mark_queued(waiting, now)
        waiting.at_front = True
        woken += storage.put(waiting, expected={JobStatus.RATE_LIMITED})
    return woken


def wake_all(storage: Storage) -> int:
    """The maintenance pass: wake what the clock freed (a start left its period)."""
    woken = 0
    for key, raw in storage.values(PREFIX).items():
        st = _State.loads(raw)
        if not st.waiting:
            continue
        head = storage.get(st.waiting[0])
        if head is None or head.rate_limit is None:
            # Cannot tell the limit from a gone job: repair through any waiting one.
            others = [r for r in storage.get_many(st.waiting) if r is not None and r.rate_limit]
            if not others:
                storage.swap_value(key, raw, _State(st.holders, st.starts, []).dumps())
                continue
            head = others[0]
        assert head.rate_limit is not None
        woken += wake(storage, _limit(head.rate_limit))
    return woken

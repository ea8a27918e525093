"""Rate and concurrency limits in the engine, over a storage's named values.

Each key has one named value, ``limit:<key>``: the jobs holding a slot, the
recent start times (rate form) and the line of waiting jobs. Every change is a
compare-and-set of that one value, so workers in any number of processes
agree. State is repaired as it is read: a holder that is no longer started
(it ended, was abandoned and recovered, was deleted) frees its slot, and a
waiting job that no longer waits leaves the line. So a job's end writes
nothing (one write per limited job, at admission), and a crashed worker never
leaks a slot for longer than its lease.
"""

from __future__ import annotations

import json
import logging
import weakref
from dataclasses import dataclass, field

from . import _rules
from .ratelimit import RateLimit
from .storage import JobRecord, JobStatus, Storage

log = logging.getLogger("plugq.limits")

PREFIX = "limit:"
#: A waiting job still counts as in line in these statuses (queued: woken, not yet claimed).
_IN_LINE = frozenset({JobStatus.RATE_LIMITED, JobStatus.QUEUED, JobStatus.STARTED})

#: Per storage, the value of each limit key as this process last read or wrote it.
#: An admission compare-and-sets against it before reading: when no other
#: process changed the key (one worker, or a quiet limit) that saves a round
#: trip per job; a stale guess only fails the swap, and the loop then reads.
_seen: weakref.WeakKeyDictionary[Storage, dict[str, str | None]] = weakref.WeakKeyDictionary()


@dataclass
class _State:
    holders: list[str] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)

    def dumps(self) -> str:
        return json.dumps([self.holders, self.starts, self.waiting])

    @classmethod
    def loads(cls, raw: str | None) -> _State:
        if raw is None:
            return cls()
        holders, starts, waiting = json.loads(raw)
        return cls(list(holders), [float(t) for t in starts], list(waiting))


def _repaired(storage: Storage, limit: RateLimit, st: _State, now: float) -> _State:
    ids = list(dict.fromkeys(st.holders + st.waiting))
    found = dict(zip(ids, storage.get_many(ids), strict=True)) if ids else {}
    holders = [i for i in st.holders
               if (r := found.get(i)) is not None and r.status is JobStatus.STARTED]
    waiting = [i for i in st.waiting if (r := found.get(i)) is not None and r.status in _IN_LINE]
    starts = st.starts
    if limit.period is not None:
        starts = [t for t in starts if t > now - limit.period]
    return _State(holders, starts, waiting)


def _free(limit: RateLimit, st: _State) -> int:
    free = []
    if limit.concurrency is not None:
        free.append(limit.concurrency - len(st.holders))
    if limit.limit is not None:
        free.append(limit.limit - len(st.starts))
    return max(min(free), 0)


def admit(storage: Storage, rec: JobRecord) -> bool:
    """Give the claimed ``rec`` a slot, or make it ``rate_limited`` in line; True if it may run."""
    assert rec.rate_limit is not None
    limit = RateLimit.loads(rec.rate_limit)
    key = PREFIX + limit.key
    seen = _seen.setdefault(storage, {})
    for attempt in range(50):
        raw = seen[key] if attempt == 0 and key in seen else storage.get_value(key)
        now = storage.clock.now()
        st = _State.loads(raw)
        if rec.id in st.holders:
            st.holders.remove(rec.id)  # a retry of a job that held a slot: it asks again
        if limit.period is not None:
            st.starts = [t for t in st.starts if t > now - limit.period]
        place = st.waiting.index(rec.id) if rec.id in st.waiting else len(st.waiting)
        if place >= _free(limit, st):
            # Only a refusal pays for reading the holders: a dead one frees a slot.
            st = _repaired(storage, limit, st, now)
            place = st.waiting.index(rec.id) if rec.id in st.waiting else len(st.waiting)
        if place < _free(limit, st):
            if limit.concurrency is not None:
                st.holders.append(rec.id)
            if limit.limit is not None:
                st.starts.append(now)
            if rec.id in st.waiting:
                st.waiting.remove(rec.id)
            new = st.dumps()
            if storage.swap_value(key, raw, new):
                seen[key] = new
                return True
            continue
        if rec.id not in st.waiting:
            st.waiting.append(rec.id)
        new = st.dumps()
        if storage.swap_value(key, raw, new):
            seen[key] = new
            _wait(storage, rec)
            return False
    # Lost 50 races in a row: put it back in line rather than run over the limit.
    log.warning("rate limit %s: too much contention; job %s waits", limit.key, rec.id)
    _wait(storage, rec)
    return False


def _wait(storage: Storage, rec: JobRecord) -> None:
    claimed = rec.attempts
    rec.status = JobStatus.RATE_LIMITED
    rec.attempts -= 1  # the claim did not start it
    rec.started_at = None
    rec.worker_name = None
    storage.put(rec, expected={JobStatus.STARTED}, expected_attempts=claimed)


def release(storage: Storage, rec: JobRecord) -> None:
    """``rec`` ended (or went back to wait for a retry): wake who is next in line.

    The slot itself needs no write: a holder that is no longer started counts
    as gone the next time the key is read, so a job's end costs one read
    when nobody waits.
    """
    assert rec.rate_limit is not None
    limit = RateLimit.loads(rec.rate_limit)
    raw = storage.get_value(PREFIX + limit.key)
    _seen.setdefault(storage, {})[PREFIX + limit.key] = raw
    if raw is not None and _State.loads(raw).waiting:
        wake(storage, limit)


def wake(storage: Storage, limit: RateLimit) -> int:
    """Queue (at the front) as many waiting jobs, first in line first, as there are free slots."""
    key = PREFIX + limit.key
    raw = storage.get_value(key)
    if raw is None:
        return 0
    now = storage.clock.now()
    st = _repaired(storage, limit, _State.loads(raw), now)
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
        woken += wake(storage, RateLimit.loads(head.rate_limit))
    return woken

"""What the dashboard shows, read through the public API only, as plain data.

Every page and every ``/api/…`` answer is built from these functions, so the
HTML, the JSON and ``/metrics`` can never disagree about a count. Nothing
here knows a backend: queues, registries, ``Job`` and ``Worker.all()`` are
the same on memory, SQLite and Redis.
"""

from __future__ import annotations

import math
import reprlib
import time
from dataclasses import asdict
from datetime import datetime
from typing import Any

from .. import security
from ..backend import Backend
from ..exceptions import PlugqError
from ..job import Job
from ..queue import Queue
from ..registry import BaseRegistry
from ..worker import Worker

#: Statuses the public API can count per queue, in the order a job moves through them.
#: ('stopped' has no registry in the public API, so it is not listed.)
STATUSES: tuple[str, ...] = (
    "queued", "started", "deferred", "scheduled", "finished", "failed", "canceled",
)
#: Statuses of which the job page offers an action.
REQUEUEABLE = frozenset({"failed", "canceled", "stopped"})
CANCELABLE = frozenset({"queued", "deferred", "scheduled"})

#: The throughput chart: one bar per minute over the last hour.
CHART_MINUTES = 60
#: The most recent jobs per queue and outcome the chart reads (the newest end of
#: the registry); beyond it the chart says it is truncated rather than take seconds.
CHART_SCAN_LIMIT = 5000
_CHART_PAGE = 500

_repr = reprlib.Repr()
_repr.maxstring = 400
_repr.maxother = 400
_repr.maxlong = 100
_repr.maxlevel = 4
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 20


def safe_repr(value: Any) -> str:
    """A bounded repr that never raises (a broken ``__repr__`` says so)."""
    try:
        return _repr.repr(value)
    except Exception as exc:
        return f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"


def _ts(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def registry(queue: Queue, status: str) -> BaseRegistry:
    """The public registry of ``queue`` for ``status`` (not 'queued': that is the queue)."""
    regs: dict[str, BaseRegistry] = {
        "started": queue.started_job_registry,
        "deferred": queue.deferred_job_registry,
        "scheduled": queue.scheduled_job_registry,
        "finished": queue.finished_job_registry,
        "failed": queue.failed_job_registry,
        "canceled": queue.canceled_job_registry,
    }
    try:
        return regs[status]
    except KeyError:
        raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}") from None


def count(queue: Queue, status: str) -> int:
    return queue.count if status == "queued" else registry(queue, status).count


def queue_names(backend: Backend) -> list[str]:
    return sorted(q.name for q in Queue.all(connection=backend))


# -- overview -----------------------------------------------------------------


def worker_rows(backend: Backend, now: float | None = None) -> list[dict[str, Any]]:
    now = time.time() if now is None else now
    rows = []
    for w in sorted(Worker.all(connection=backend), key=lambda w: w.name):
        rec = w.record
        if rec is None:
            continue
        row = asdict(rec)
        row["heartbeat_age"] = max(0.0, now - rec.last_heartbeat) if rec.last_heartbeat else None
        rows.append(row)
    return rows


def overview(backend: Backend) -> dict[str, Any]:
    """Every queue and status count, the totals and the workers."""
    now = time.time()
    queues = []
    totals = dict.fromkeys(STATUSES, 0)
    for name in queue_names(backend):
        q = Queue(name, connection=backend)
        counts = {s: count(q, s) for s in STATUSES}
        for s, n in counts.items():
            totals[s] += n
        queues.append({"name": name, "counts": counts})
    workers = worker_rows(backend, now)
    return {
        "url": backend.safe_url(),
        "time": now,
        "statuses": list(STATUSES),
        "queues": queues,
        "totals": totals,
        "workers": workers,
        "worker_states": _worker_states(workers),
    }


def _worker_states(workers: list[dict[str, Any]]) -> dict[str, int]:
    states: dict[str, int] = {}
    for w in workers:
        states[str(w.get("state") or "unknown")] = states.get(str(w.get("state") or "unknown"), 0) + 1
    return states


def oldest_queued_age(backend: Backend, name: str, now: float | None = None) -> float | None:
    """Seconds since the job at the head of queue ``name`` was enqueued (None: empty)."""
    now = time.time() if now is None else now
    q = Queue(name, connection=backend)
    ids = q.get_job_ids(0, 1)
    if not ids:
        return None
    job = q.fetch_job(ids[0])
    when = _ts(job.enqueued_at or job.created_at) if job is not None else None
    return None if when is None else max(0.0, now - when)


class EndedAtCache:
    """``ended_at`` of finished and failed jobs, remembered between chart refreshes.

    A job's ``ended_at`` does not change while it stays finished (or failed),
    so a refresh fetches only the jobs it has not seen. The exception, a
    failed job requeued by hand that fails again, is read anew once its entry
    is ``max_age`` seconds old.
    """

    def __init__(self, max_age: float = 600.0) -> None:
        self.max_age = max_age
        self._entries: dict[tuple[str, str], tuple[float | None, float]] = {}
        self._seen: set[tuple[str, str]] = set()

    def ended_at(self, backend: Backend, status: str, ids: list[str]) -> list[float | None]:
        now = time.monotonic()
        keys = [(status, i) for i in ids]
        missing = [k for k in keys
                   if (e := self._entries.get(k)) is None or now - e[1] > self.max_age]
        if missing:
            jobs = Job.fetch_many([k[1] for k in missing], connection=backend)
            for k, job in zip(missing, jobs, strict=True):
                self._entries[k] = (_ts(job.ended_at) if job is not None else None, now)
        self._seen.update(keys)
        return [self._entries[k][0] for k in keys]

    def prune(self) -> None:
        """Forget the jobs the last refresh did not come across."""
        self._entries = {k: v for k, v in self._entries.items() if k in self._seen}
        self._seen = set()


def throughput(backend: Backend, now: float | None = None, scan_limit: int = CHART_SCAN_LIMIT,
               cache: EndedAtCache | None = None) -> dict[str, Any]:
    """Finished and failed jobs per minute over the last hour, from ``ended_at`` in the store.

    Reads each queue's finished and failed registries from their newest end
    and stops at the first page wholly older than the hour, or after
    ``scan_limit`` jobs per queue and outcome (then ``truncated`` is true and
    the oldest bars may be short). Registries drop jobs whose result or
    failure TTL ran out, so neither do the bars count them. With a ``cache``
    only jobs not seen by an earlier call are fetched.
    """
    now = time.time() if now is None else now
    cache = cache if cache is not None else EndedAtCache()
    end = (math.floor(now / 60) + 1) * 60  # the end of the current minute
    start = end - CHART_MINUTES * 60
    series = {"finished": [0] * CHART_MINUTES, "failed": [0] * CHART_MINUTES}
    truncated = False
    for name in queue_names(backend):
        q = Queue(name, connection=backend)
        for status in ("finished", "failed"):
            reg = registry(q, status)
            n = reg.count
            # One read of the newest ids (an offset costs a skip per call on
            # some stores), then their jobs a page at a time, newest first.
            ids_all = reg.get_job_ids(max(0, n - scan_limit), n - 1) if n else []
            for hi in range(len(ids_all), 0, -_CHART_PAGE):
                ids = ids_all[max(0, hi - _CHART_PAGE):hi]
                in_window = 0
                for ended in cache.ended_at(backend, status, ids):
                    if ended is None or not start <= ended < end:
                        continue
                    in_window += 1
                    series[status][int((ended - start) // 60)] += 1
                if in_window == 0:
                    # Registries are kept in completion (or expiry) order: a page
                    # wholly before the window means the rest is older still.
                    break
            else:
                # Every id read was in the hour and older ones were not read.
                truncated = truncated or n > scan_limit
    cache.prune()
    return {"start": start, "minutes": CHART_MINUTES, "truncated": truncated, **series}


# -- a queue page -------------------------------------------------------------


def queue_page(backend: Backend, name: str, status: str, page: int, per_page: int) -> dict[str, Any]:
    """One page of a queue's jobs in one status, newest first."""
    q = Queue(name, connection=backend)
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
    total = count(q, status)
    pages = max(1, math.ceil(total / per_page))
    page = min(max(1, page), pages)
    # Stored order is oldest first: the newest page is the tail.
    hi = total - 1 - (page - 1) * per_page
    lo = max(0, hi - per_page + 1)
    if hi < 0:
        ids: list[str] = []
    elif status == "queued":
        ids = q.get_job_ids(lo, hi - lo + 1)
    else:
        ids = registry(q, status).get_job_ids(lo, hi)
    ids.reverse()
    jobs = [job_summary(j) for j in Job.fetch_many(ids, connection=backend) if j is not None]
    return {
        "queue": name,
        "status": status,
        "statuses": list(STATUSES),
        "counts": {s: count(q, s) for s in STATUSES},
        "page": page,
        "pages": pages,
        "per_page": per_page,
        "total": total,
        "jobs": jobs,
    }


def job_summary(job: Job) -> dict[str, Any]:
    rec_status = job.get_status(refresh=False)
    return {
        "id": job.id,
        "func_name": job.func_name,
        "description": job.description,
        "status": str(rec_status.value),
        "origin": job.origin,
        "created_at": _ts(job.created_at),
        "enqueued_at": _ts(job.enqueued_at),
        "started_at": _ts(job.started_at),
        "ended_at": _ts(job.ended_at),
        "scheduled_for": _ts(job.scheduled_for),
        "worker_name": job.worker_name,
    }


def jobs_in(backend: Backend, status: str, limit: int = 100) -> list[dict[str, Any]]:
    """The newest ``limit`` jobs of every queue in ``status`` (the failed and scheduled pages)."""
    out: list[dict[str, Any]] = []
    for name in queue_names(backend):
        q = Queue(name, connection=backend)
        reg = registry(q, status)
        n = reg.count
        if n == 0:
            continue
        ids = reg.get_job_ids(max(0, n - limit), n - 1)
        ids.reverse()
        out.extend(job_summary(j) for j in Job.fetch_many(ids, connection=backend) if j is not None)
    key = "scheduled_for" if status == "scheduled" else "ended_at"
    out.sort(key=lambda j: j.get(key) or 0.0, reverse=status != "scheduled")
    return out[:limit]


# -- one job ------------------------------------------------------------------


def read_payload(job: Job) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The job's arguments, read under the rules a worker applies before running it.

    The allow-list first (a worker refuses such a job unread), then the
    reader's path every monitor shares (:func:`plugq.security.load_arguments`
    behind ``job.args``): json-only policy and the HMAC signature are checked
    before anything is deserialized; without a key the store is trusted, so
    the dashboard works without it, as ``plugq jobs`` does.

    Raises:
        plugq.security.UntrustedJobError: a worker would refuse this job.
        Exception: the payload cannot be deserialized here (e.g. a class of an
            argument is not importable in the dashboard's process).
    """
    security.check_allowed(job.record)
    return job.args, job.kwargs


def job_detail(backend: Backend, job_id: str) -> dict[str, Any]:
    """Everything the job page shows.

    Raises:
        NoSuchJobError: no job with that id (or it expired).
    """
    job = Job.fetch(job_id, connection=backend)
    d = job_summary(job)
    d.update(
        timeout=job.timeout,
        result_ttl=job.result_ttl,
        failure_ttl=job.failure_ttl,
        ttl=job.ttl,
        attempts=job.attempts,
        retries_left=job.retries_left,
        serializer=job.serializer,
        dependency_ids=job.dependency_ids,
        exc_info=job.record.exc_info,
        unreadable=None,
        args=None,
        kwargs=None,
        meta=None,
        result=None,
    )
    try:
        args, kwargs = read_payload(job)
    except security.UntrustedJobError as exc:
        d["unreadable"] = f"refused, as a worker would: {exc}"
    except Exception as exc:
        d["unreadable"] = f"cannot be read here: {type(exc).__name__}: {safe_repr(str(exc))[1:-1]}"
    else:
        d["args"] = [safe_repr(a) for a in args]
        d["kwargs"] = {str(k): safe_repr(v) for k, v in kwargs.items()}
        # Result and meta use the job's serializer too: read only once the
        # payload passed the worker's checks.
        try:
            d["meta"] = {str(k): safe_repr(v) for k, v in job.meta.items()}
        except Exception as exc:
            d["meta"] = {"(unreadable)": f"{type(exc).__name__}"}
        if d["status"] == "finished":
            try:
                d["result"] = safe_repr(job.return_value(refresh=False))
            except Exception as exc:
                d["result"] = f"(unreadable: {type(exc).__name__})"
    d["actions"] = actions_for(d["status"])
    return d


def actions_for(status: str) -> list[str]:
    """The POST actions the job page offers for a job in ``status``."""
    acts = []
    if status in REQUEUEABLE:
        acts.append("requeue")
    if status in CANCELABLE:
        acts.append("cancel")
    if status == "started":
        acts.append("stop")
    acts.append("delete")
    return acts


def find_job(backend: Backend, job_id: str) -> bool:
    try:
        return Job.exists(job_id.strip(), connection=backend)
    except (PlugqError, ValueError):
        return False


"""Cron: enqueue jobs on a schedule, from any number of schedulers, each tick once.

A config module registers entries::

    # cron_config.py
    from plugq import cron
    from myapp.tasks import cleanup, report

    cron.register(cleanup, queue_name="default", interval=300)         # every 5 minutes
    cron.register(report, args=("daily",), cron="0 6 * * *")           # 06:00 UTC daily

and ``plugq cron cron_config`` (or a file path) runs a scheduler alone, while
``plugq worker … --cron cron_config`` runs one inside each worker. Run as many
as you like: every entry's next run is a named value in the store, and a
scheduler enqueues a tick only after it won the compare-and-set that moves
that value to the following tick. The losers see the new value and do
nothing, so each tick is enqueued exactly once whether one scheduler runs or
fifty (no process lock, no leader to elect, nothing to fail over).

Ticks missed while every scheduler was down are enqueued **once** at the
next start, never as a burst: the next run then jumps to the first tick
after now. A new ``interval`` entry runs at once, a new ``cron`` entry at its
next match. Cron strings (``m h dom mon dow``, UTC) are parsed by croniter.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .backend import Backend
from .job import Job, func_path, new_job_id

log = logging.getLogger("plugq.cron")

#: Prefix of the named values that hold each entry's state.
KEY_PREFIX = "cron:"
#: Longest real pause of a scheduler loop between two looks.
MAX_SLEEP = 1.0


@dataclass(frozen=True)
class CronEntry:
    """One registered schedule (made by :func:`register`)."""

    name: str
    func_name: str
    queue_name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    interval: float | None = None
    cron: str | None = None
    job_timeout: Any = None
    result_ttl: Any = None
    failure_ttl: Any = None
    meta: dict[str, Any] | None = None

    @property
    def spec(self) -> str:
        """The schedule as text (``every 60s`` or the cron string)."""
        return f"every {self.interval:g}s" if self.interval is not None else str(self.cron)

    def first(self, now: float) -> float:
        """When a new entry runs first: at once (interval) or at the next match (cron)."""
        return now if self.interval is not None else self._cron_after(now)

    def following(self, due: float, now: float) -> float:
        """The first tick after ``now``, counting from the tick ``due`` (missed ones skipped)."""
        if self.interval is not None:
            steps = math.floor((now - due) / self.interval) + 1
            return due + max(steps, 1) * self.interval
        return self._cron_after(now)

    def _cron_after(self, t: float) -> float:
        from croniter import croniter

        base = datetime.fromtimestamp(t, tz=UTC)
        return float(croniter(self.cron, base).get_next(float))


_REGISTRY: dict[str, CronEntry] = {}
_LOCK = threading.Lock()


def register(
    func: Callable[..., Any] | str,
    queue_name: str = "default",
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    interval: float | None = None,
    cron: str | None = None,
    job_timeout: Any = None,
    result_ttl: Any = None,
    failure_ttl: Any = None,
    meta: dict[str, Any] | None = None,
    name: str | None = None,
) -> CronEntry:
    """Register ``func(*args, **kwargs)`` to be enqueued on ``queue_name`` on a schedule.

    Give exactly one of ``interval`` (seconds) and ``cron`` (``"m h dom mon
    dow"``, UTC). ``name`` identifies the entry's state in the store; the
    default derives it from the function, queue, schedule and arguments, so
    the same config loaded by many schedulers names the same entries.

    Raises:
        ValueError: neither or both schedules, a bad interval or cron string.
        InvalidTaskError: ``func`` is not importable by a worker.
    """
    if (interval is None) == (cron is None):
        raise ValueError("cron.register needs exactly one of interval=SECONDS and cron='m h …'")
    if interval is not None and (isinstance(interval, bool)
                                 or not isinstance(interval, (int, float)) or interval <= 0):
        raise ValueError(f"interval must be a number of seconds > 0, got {interval!r}")
    if cron is not None:
        from croniter import croniter

        if not isinstance(cron, str) or not croniter.is_valid(cron):
            raise ValueError(f"cron={cron!r} is not a valid cron expression ('m h dom mon dow')")
    path = func_path(func)
    args, kwargs = tuple(args), dict(kwargs or {})
    if name is None:
        name = f"{path}@{queue_name} {interval if interval is not None else cron}"
        if args or kwargs:
            digest = hashlib.sha256(repr((args, sorted(kwargs.items()))).encode()).hexdigest()
            name += f" {digest[:12]}"
    entry = CronEntry(
        name=name, func_name=path, queue_name=queue_name, args=args, kwargs=kwargs,
        interval=None if interval is None else float(interval), cron=cron,
        job_timeout=job_timeout, result_ttl=result_ttl, failure_ttl=failure_ttl, meta=meta,
    )
    with _LOCK:
        _REGISTRY[name] = entry
    return entry


def registered() -> list[CronEntry]:
    """Every entry registered in this process."""
    with _LOCK:
        return list(_REGISTRY.values())


def clear() -> None:
    """Forget every registered entry (tests)."""
    with _LOCK:
        _REGISTRY.clear()


def load(config: str) -> list[CronEntry]:
    """Import a config (a ``.py`` file path or a dotted module) and return the entries it registered.

    Raises:
        ValueError: the config cannot be found or imported (the message says why).
    """
    before = set(_REGISTRY)
    try:
        if config.endswith(".py") or os.sep in config or os.path.isfile(config):
            path = os.path.abspath(config)
            if not os.path.isfile(path):
                raise ValueError(f"cron config {config!r}: no such file")
            mod_name = "plugq_cron_config_" + hashlib.sha256(path.encode()).hexdigest()[:12]
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise ValueError(f"cron config {config!r} cannot be loaded as Python")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            spec.loader.exec_module(module)
        else:
            if config in sys.modules:
                importlib.reload(sys.modules[config])
            else:
                importlib.import_module(config)
    except ValueError:
        raise
    except Exception as exc:
        raise ValueError(f"cron config {config!r} failed to import: {exc!r}") from exc
    with _LOCK:
        entries = list(_REGISTRY.values())
    if not entries:
        raise ValueError(f"cron config {config!r} registered no entry (call cron.register)")
    del before
    return entries


@dataclass
class EntryState:
    """An entry's state in the store: the next tick, the last one and the job it made."""

    next: float
    spec: str
    last: float | None = None
    job_id: str | None = None

    def dumps(self) -> str:
        return json.dumps([self.next, self.spec, self.last, self.job_id])

    @classmethod
    def loads(cls, text: str) -> EntryState:
        nxt, spec, last, job_id = json.loads(text)
        return cls(float(nxt), spec, last, job_id)


class Scheduler:
    """Enqueues the ticks of ``entries`` (default: every registered one) on a backend.

    :meth:`tick` does one pass (tests call it after moving a ManualClock);
    :meth:`run` loops; :meth:`start` loops in a daemon thread (a worker's ``--cron``).
    """

    def __init__(self, connection: Any = None, entries: Sequence[CronEntry] | None = None) -> None:
        from .connection import resolve_connection

        self.backend: Backend = resolve_connection(connection)
        self.backend.require("values", " (cron keeps each entry's next run there)")
        self.entries = list(entries) if entries is not None else registered()
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> list[Job]:
        """Enqueue every entry that is due now (each at most once); returns the jobs made here."""
        made = []
        for entry in self.entries:
            try:
                job = self._run_entry(entry)
            except Exception:
                log.exception("cron entry %s failed to enqueue", entry.name)
                continue
            if job is not None:
                made.append(job)
        return made

    def _run_entry(self, entry: CronEntry) -> Job | None:
        b = self.backend
        key = KEY_PREFIX + entry.name
        for _ in range(5):
            now = b.clock.now()
            raw = b.get_value(key)
            state = EntryState.loads(raw) if raw is not None else None
            if state is None or state.spec != entry.spec:
                fresh = EntryState(entry.first(now), entry.spec)
                if not b.swap_value(key, raw, fresh.dumps()):
                    continue  # another scheduler made it first: read theirs
                raw, state = fresh.dumps(), fresh
            if state.next > now:
                return None
            job_id = new_job_id()
            claimed = EntryState(entry.following(state.next, now), entry.spec, state.next, job_id)
            if not b.swap_value(key, raw, claimed.dumps()):
                return None  # another scheduler took this tick
            return self._enqueue(entry, job_id, state.next)
        return None

    def _enqueue(self, entry: CronEntry, job_id: str, tick: float) -> Job:
        from .queue import Queue

        meta = dict(entry.meta or {})
        meta.update(cron=entry.name, cron_tick=tick)
        job = Queue(entry.queue_name, connection=self.backend).enqueue_call(
            entry.func_name, args=entry.args, kwargs=entry.kwargs, timeout=entry.job_timeout,
            result_ttl=entry.result_ttl, failure_ttl=entry.failure_ttl, job_id=job_id, meta=meta,
        )
        log.info("cron %s: enqueued %s for the tick at %s", entry.name, job.id,
                 datetime.fromtimestamp(tick, tz=UTC).isoformat())
        return job

    def next_wake(self) -> float:
        """Real seconds until the earliest next run (at most :data:`MAX_SLEEP`)."""
        now = self.backend.clock.now()
        soonest = MAX_SLEEP
        for entry in self.entries:
            raw = self.backend.get_value(KEY_PREFIX + entry.name)
            if raw is None:
                return 0.0
            soonest = min(soonest, EntryState.loads(raw).next - now)
        return max(soonest, 0.0)

    def run(self, *, burst: bool = False) -> None:
        """Tick until :meth:`stop` (``burst``: one pass)."""
        log.info("cron scheduler on %s: %d entr%s (%s)", self.backend.safe_url(),
                 len(self.entries), "y" if len(self.entries) == 1 else "ies",
                 "; ".join(f"{e.name}: {e.spec}" for e in self.entries))
        while not self.stop_event.is_set():
            self.tick()
            if burst:
                return
            try:
                pause = self.next_wake()
            except Exception:
                log.exception("cron scheduler could not read its entries; retrying")
                pause = MAX_SLEEP
            self.stop_event.wait(max(pause, 0.01))

    def start(self) -> threading.Thread:
        """Run :meth:`run` in a daemon thread (how ``plugq worker --cron`` runs it)."""
        self._thread = threading.Thread(target=self.run, name="plugq-cron", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def status(backend: Backend) -> list[dict[str, Any]]:
    """Every entry's state in the store: name, schedule, last and next run, last job id."""
    if "values" not in backend.features:
        return []
    found = []
    for key, raw in sorted(backend.values(KEY_PREFIX).items()):
        st = EntryState.loads(raw)
        found.append({"name": key[len(KEY_PREFIX):], "schedule": st.spec, "last_run": st.last,
                      "next_run": st.next, "last_job_id": st.job_id})
    return found


__all__ = ["CronEntry", "Scheduler", "clear", "load", "register", "registered", "status"]

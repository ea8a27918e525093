"""The worker loop of plugq's engine, and sync mode.

``perform`` is the one path a job takes to run, used by the loop and by
``Queue(is_async=False)`` alike. The loop runs a
:class:`~plugq.backend.WorkerSpec` (plain data), never the public ``Worker``.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import _events, _extras, _lifecycle, _limits, _rules, _webhooks, _workflows
from ._context import _current
from ._execution import Running, call, format_exc_info, install_alarm_handler
from ._process import Horse, HorseEnd, child_options, run_isolated, worker_class
from ._supervisor import JobBeacon
from .backend import WorkerSpec
from .config import current_settings
from .exceptions import (
    BackendUnavailableError,
    CorruptRecordError,
    JobStoppedException,
    WorkHorseKilledException,
)
from .retry import Retry
from .security import (
    UntrustedJobError,
    fields_verified,
    resolve_allowed,
    seal_blob,
    verified_payload,
)
from .serializers import get_serializer
from .storage import Clock, JobRecord, JobStatus, WorkerRecord

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger("plugq.worker")

#: Real seconds between maintenance passes while the worker is busy.
MAINTENANCE_EVERY = 1.0
#: Longest idle wait before the loop looks again (schedules, stop requests).
IDLE_WAIT = 1.0
#: Real seconds between looks for worker commands (stop-job, kill-horse, shutdown).
COMMAND_POLL = 0.25
#: Shortest gap between two writes of a worker's state (job start/end) to the backend.
STATE_WRITE_GAP = 0.1


#: rq's default callback timeout, in seconds.
CALLBACK_TIMEOUT = 60.0


def _run_callback(path: str, timeout: float | None, *args: Any) -> None:
    try:
        # The allow-list check of the function applies to callbacks alike.
        func = resolve_allowed(path, current_settings().allowed_modules)
        call(func, args, {}, timeout if timeout is not None else CALLBACK_TIMEOUT)
    except Exception:
        # A callback's failure (or timeout) must not change the job's outcome (RQ logs it too).
        log.exception("callback %s failed", path)


def _handle_exception(worker: WorkerSpec, job: Any, exc: BaseException) -> None:
    """rq's exception handler chain: each handler in order until one returns False."""
    for handler in worker.options.get("exception_handlers") or ():
        try:
            fallthrough = handler(job, type(exc), exc, exc.__traceback__)
        except Exception:
            log.exception("exception handler %r failed", handler)
            fallthrough = True
        if fallthrough is not None and not fallthrough:
            break


def perform(
    engine: Engine, rec: JobRecord, worker: WorkerSpec | None, running: Running | None = None
) -> JobRecord:
    """Run a started job and store its outcome. Returns the record as stored."""
    storage = engine.storage
    job = _events.job_for(engine, rec)
    if worker is not None:
        _events.started(job, worker.hook_worker)
    token = _current.set(job)
    serializer = get_serializer(rec.serializer)
    extras = _extras.read(rec)
    cb_timeouts = extras.get("callback_timeouts") or {}
    try:
        settings = current_settings()
        data = verified_payload(rec, settings=settings)  # before anything is imported or read
        func = resolve_allowed(rec.func_name, settings.allowed_modules)
        args, kwargs = serializer.loads(data)
        if rec.pipe is not None:
            args = (*_workflows.inputs(engine, rec), *args)
        value = call(func, args, kwargs, rec.timeout, running)
        if isinstance(value, Retry):
            status = _lifecycle.retry_requested(storage, rec, value)
            log.info("%s: %s asked to be retried (%s)", rec.origin, rec.id,
                     status.value if status else "gone")
            _webhooks.fire(rec, extras)
            return rec
        result = seal_blob(rec.id, "result", serializer.dumps(value))
    except JobStoppedException as exc:
        _stopped(engine, rec, job, worker, format_exc_info(exc), extras)
    except (Exception, SystemExit) as exc:
        _failed(engine, rec, job, exc, worker, format_exc_info(exc), extras)
    else:
        if _lifecycle.finish(storage, rec, result):
            log.info("%s: Job OK (%s)", rec.origin, rec.id)
            if rec.result_ttl == 0:
                log.info("Result discarded immediately")
            elif rec.result_ttl < 0:
                log.info("Result will never expire, clean up result key manually")
            else:
                log.info("Result is kept for %s seconds", rec.result_ttl)
        if rec.on_success:
            _run_callback(rec.on_success, cb_timeouts.get("success"), job, engine, value)
        _events.finished(job, value)
        _webhooks.fire(rec, extras)
        if worker is not None:
            worker.stats.successful += 1
    finally:
        _current.reset(token)
    return rec


def _stopped(
    engine: Engine, rec: JobRecord, job: Any, worker: WorkerSpec | None, exc_info: str,
    extras: dict[str, Any],
) -> None:
    """Store ``rec`` stopped (a stop-job command), run its ``on_stopped`` callback; never retried."""
    if _lifecycle.stop(engine.storage, rec, exc_info):
        log.info("%s: %s stopped", rec.origin, rec.id)
        if extras.get("on_stopped") and fields_verified(
            rec.id, {"webhooks": extras.get("webhooks"), "on_stopped": extras["on_stopped"]},
            extras.get("sig"),
        ):
            cb_timeouts = extras.get("callback_timeouts") or {}
            _run_callback(extras["on_stopped"], cb_timeouts.get("stopped"), job, engine)
        _webhooks.fire(rec, extras)
    if worker is not None:
        worker.stats.failed += 1


def _failed(
    engine: Engine, rec: JobRecord, job: Any, exc: BaseException, worker: WorkerSpec | None,
    exc_info: str, extras: dict[str, Any], horse: HorseEnd | None = None,
) -> None:
    storage = engine.storage
    cb_timeouts = extras.get("callback_timeouts") or {}
    default = worker is None or not worker.options.get("disable_default_exception_handler")
    if not default:
        # rq's disable_default_exception_handler: the job fails without
        # entering the failed registry (registries are views by status
        # here, so it leaves its queue's registries).
        rec.origin = "" if rec.retries_left in (None, 0) else rec.origin
    _lifecycle.fail(storage, rec, exc_info)
    # The whole traceback: the log is where a user looks first
    # (--logging-level CRITICAL hides it).
    log.error("%s: %s failed (%s): %s\n%s", rec.origin, rec.id, rec.status.value,
              exc_info.strip().splitlines()[-1], exc_info.rstrip())
    if rec.on_failure and not isinstance(exc, UntrustedJobError):
        _run_callback(rec.on_failure, cb_timeouts.get("failure"), job, engine, type(exc), exc,
                      exc.__traceback__)
    if worker is not None:
        if isinstance(exc, WorkHorseKilledException):
            handler = worker.options.get("work_horse_killed_handler")
            if handler is not None:
                # rq's arguments: the work horse's pid, its raw wait status
                # and rusage; an in-process job has no horse of its own.
                pid, status, rusage = horse if horse is not None else (os.getpid(), -1, None)
                try:
                    handler(job, pid, status, rusage)
                except Exception:
                    log.exception("work_horse_killed_handler failed")
        else:
            _handle_exception(worker, job, exc)
    _events.failed(job, (type(exc), exc, exc.__traceback__))
    _webhooks.fire(rec, extras)
    if worker is not None:
        worker.stats.failed += 1


def report_quarantined(engine: Engine, worker: WorkerSpec | None) -> int:
    """Report the poison records the storage failed unrun, as any failed job is reported.

    ``plugq_job_failed`` fires with a :class:`~plugq.exceptions.CorruptRecordError`
    naming the field, and the job's dependents are released or left exactly
    as a failed parent's are (``allow_failure`` ones run). What a failed
    *run* does beyond that is skipped on purpose: the record's own
    callbacks, webhooks and meta are untrusted, and the worker's exception
    handlers are for exceptions its jobs raised. Returns how many were reported.
    """
    taken = engine.storage.take_quarantined()
    for rec in taken:
        lines = (rec.exc_info or "").strip().splitlines()
        message = lines[-1].split(": ", 1)[-1] if lines else f"job {rec.id!r}: corrupt record"
        log.error("%s: %s quarantined: %s", rec.origin, rec.id, message)
        _lifecycle.enqueue_dependents(engine.storage, rec)
        exc = CorruptRecordError(message)
        _events.failed(_events.job_for(engine, rec), (CorruptRecordError, exc, None))
        if worker is not None:
            worker.stats.failed += 1
    return len(taken)


def fail_outside(
    engine: Engine, rec: JobRecord, exc: BaseException, worker: WorkerSpec | None, exc_info: str,
    horse: HorseEnd | None = None,
) -> None:
    """Store a failure of ``rec`` decided outside its run (its process was killed or died)."""
    _failed(engine, rec, _events.job_for(engine, rec), exc, worker, exc_info, _extras.read(rec),
            horse)


def stop_outside(
    engine: Engine, rec: JobRecord, exc: BaseException, worker: WorkerSpec | None, exc_info: str
) -> None:
    """Store ``rec`` stopped, decided outside its run (a stop-job command killed its process)."""
    _stopped(engine, rec, _events.job_for(engine, rec), worker, exc_info, _extras.read(rec))


class WorkerLoop:
    """One worker's run on one engine."""

    def __init__(self, engine: Engine, worker: WorkerSpec) -> None:
        self.engine = engine
        self.storage = engine.storage
        #: The storage admits rate-limited jobs inside its claim: by the engine's gate
        #: (``gated_claim``), or by the contract's rule, in the storage (``limit_rule``).
        self._gated = not {"gated_claim", "limit_rule"}.isdisjoint(self.storage.capabilities)
        self._by_gate = "gated_claim" in self.storage.capabilities
        #: A limited job that ended here, its line read by the next claim (see _limits.Ended).
        self._ended: _limits.Ended | None = None
        self.worker = worker
        self.queues = list(worker.queues)
        self._state = "idle"
        self._current: str | None = None
        self._beat_stop = threading.Event()
        # Set when a job starts or ends: the heartbeat thread then writes the
        # state, current job and counters at once, so `plugq info` is live.
        self._changed = threading.Event()
        # True from a change until the heartbeat thread takes it: the job path
        # sets the Event (a lock and a notify) once per write, not once per job.
        self._dirty = False
        # One write at a time, each of the state as it is when written: the
        # loop's own beat and the heartbeat thread's must not cross.
        self._beat_lock = threading.Lock()
        self._last_beat = 0.0
        #: the job claimed now (its id, and the call or process running it), for a
        #: stop-job or kill-horse command; set at the claim, so a command that
        #: comes before the function is called still finds it.
        self._running: tuple[str, Running | Horse] | None = None
        self._last_maint = 0.0
        # Held by the heartbeat thread while it talks to the store, and by the
        # loop around os.fork(): a child forked while another thread is inside
        # a client library (SQLite's global mutexes, a socket mid-reply) would
        # inherit that lock held and hang on its first store call.
        self._fork_lock = threading.Lock()
        # Under `--concurrency N`: where to report the job running in this
        # process, so the supervisor can kill a job stuck past its timeout.
        self._beacon = JobBeacon.from_env()

    def _beat(self) -> None:
        with self._beat_lock:
            self._last_beat = self.storage.clock.now()
            self.storage.heartbeat(
                self.worker.name, self._last_beat, state=self._state,
                current_job_id=self._current, successful=self.worker.stats.successful,
                failed=self.worker.stats.failed,
            )

    def _state_changed(self, state: str, current: str | None) -> None:
        self._state, self._current = state, current
        if not self._dirty:
            self._dirty = True
            self._changed.set()

    def _beat_forever(self) -> None:
        interval = max(0.05, min(self.storage.lease / 3.0, 5.0))
        next_beat = time.monotonic() + interval
        while not self._beat_stop.is_set():
            changed = self._changed.wait(min(interval, COMMAND_POLL))
            if self._beat_stop.is_set():
                break
            try:
                with self._fork_lock:
                    self._take_commands()
                    if changed or time.monotonic() >= next_beat:
                        # Clear, then reset the flag: a change in between is not
                        # lost (its values are read by the write below).
                        self._changed.clear()
                        self._dirty = False
                        next_beat = time.monotonic() + interval
                        self._beat()
            except Exception:
                log.exception("heartbeat failed; will retry")
            if changed:
                # The write happens off the job path, in this thread, and a run
                # of short jobs is coalesced into at most one write per
                # STATE_WRITE_GAP: a worker doing thousands of jobs a second
                # pays for ~10 writes.
                self._beat_stop.wait(STATE_WRITE_GAP)

    def _take_commands(self) -> None:
        """rq's worker commands (``plugq.command``), delivered through the storage."""
        for cmd in self.storage.take_commands(self.worker.name):
            kind = cmd.get("command")
            claimed = self._running
            if kind == "shutdown":
                self.worker.stop.set()
            elif kind == "kill-horse":
                if claimed is not None:
                    claimed[1].interrupt(WorkHorseKilledException)
            elif kind == "stop-job":
                if claimed is not None and cmd.get("job_id") == claimed[0]:
                    claimed[1].interrupt(JobStoppedException)
            else:
                log.warning("Worker %s: unknown command %r ignored", self.worker.name, kind)
                continue
            # Logged once acted on: a reader of the log sees a command that has taken effect.
            log.info("Worker %s: received command %s", self.worker.name, cmd)

    def _register(self) -> None:
        b = self.storage
        now = b.clock.now()
        for other in b.list_workers():
            if other.name == self.worker.name and other.last_heartbeat + b.lease > now:
                raise ValueError(
                    f"There exists an active worker named {self.worker.name!r} already"
                )
        b.register_worker(
            WorkerRecord(
                name=self.worker.name, queues=list(self.queues), pid=os.getpid(),
                hostname=socket.gethostname(), birth=now, last_heartbeat=now,
            )
        )
        self._last_beat = now

    def _maintain(self, scheduler: bool) -> None:
        _lifecycle.maintenance(self.storage, scheduler=scheduler, me=self.worker.name)
        report_quarantined(self.engine, self.worker)

    def _claim(self) -> JobRecord | None:
        """The next job; on a ``gated_claim`` or ``limit_rule`` storage, admitted in the claim."""
        b = self.storage
        if not self._by_gate:
            return b.claim(self.queues, self.worker.name, b.clock.now())
        ended, self._ended = self._ended, None
        if ended is None:
            return b.claim_gated(self.queues, self.worker.name, b.clock.now(), _limits.gate)
        try:
            rec = b.claim_gated(self.queues, self.worker.name, b.clock.now(), _limits.gate,
                                ended.peek)
        except BaseException:
            self._ended = ended  # settled at the next claim, or when the worker stops
            raise
        # The claimed job runs even if this fails (else it would sit started
        # until its lease ran out).
        self._settle(ended)
        return rec

    def _limited_job_ended(self, rec: JobRecord) -> None:
        """Wake the line of ``rec``'s limit now, or (``gated_claim``) at the next claim."""
        if self._by_gate:
            self._ended = _limits.ended(rec)  # read by the next claim, or as the worker stops
        else:
            _limits.release(self.storage, rec)

    def _settle(self, ended: _limits.Ended) -> None:
        """Wake the line ``ended`` read; with the store away, leave it to the maintenance pass."""
        try:
            ended.settle(self.storage)
        except BackendUnavailableError as exc:
            log.warning("could not wake the jobs waiting for a rate limit (the maintenance "
                        "pass wakes them): %s", exc)

    def _step(self, kind: str, burst: bool, with_scheduler: bool) -> bool | None:
        """Claim and run one job. True: one ran; False: none yet; None: burst found no work."""
        b = self.storage
        if time.monotonic() - self._last_maint > MAINTENANCE_EVERY:
            self._maintain(with_scheduler)
            self._last_maint = time.monotonic()
        if b.clock.now() - self._last_beat > b.lease / 3.0:
            self._beat()
        rec = self._claim()
        if rec is None:
            # Nothing runnable: let the scheduler and the reaper look
            # before deciding the queues are really empty.
            self._maintain(with_scheduler)
            self._last_maint = time.monotonic()
            rec = self._claim()
        # Poison records the claims failed on their way to this one (or to none).
        report_quarantined(self.engine, self.worker)
        if rec is None:
            if burst:
                return None
            b.wait(self.queues, IDLE_WAIT)
            return False
        # From the claim on the job is started under this worker's name, so a
        # stop-job command may come for it at once: it must find the job here.
        handle: Running | Horse = Running() if kind == "simple" else Horse()
        self._running = (rec.id, handle)
        try:
            if rec.rate_limit is not None and not (
                rec.status is JobStatus.STARTED if self._gated else _limits.admit(b, rec)
            ):
                return False  # now rate_limited, in line for its key
            self._state_changed("busy", rec.id)
            log.info("%s: %s (%s)", rec.origin, rec.description, rec.id)
            started = time.monotonic()
            try:
                if isinstance(handle, Running):
                    if self._beacon is not None:
                        self._beacon.started(rec.id, rec.attempts, rec.timeout,
                                             self.worker.name)
                    try:
                        perform(self.engine, rec, self.worker, handle)
                    finally:
                        if self._beacon is not None:
                            self._beacon.ended()
                else:
                    run_isolated(self.engine, rec, self.worker, kind, perform, fail_outside,
                                 stop_outside, horse=handle, fork_guard=self._fork_lock)
            finally:
                if rec.rate_limit is not None:
                    self._limited_job_ended(rec)
        finally:
            self._running = None
        self.worker.stats.working_time += time.monotonic() - started
        self._state_changed("idle", None)
        return True

    def _recover_after_outage(self) -> None:
        """After the store came back: register again; fail the jobs whose outcome was lost."""
        b = self.storage
        try:
            now = b.clock.now()
            b.register_worker(WorkerRecord(
                name=self.worker.name, queues=list(self.queues), pid=os.getpid(),
                hostname=socket.gethostname(), birth=now, last_heartbeat=now))
            self._last_beat = now
            self._state, self._current = "idle", None
            # This worker runs nothing now, so any job still started under its
            # name lost its outcome, or was claimed by a call whose answer the
            # outage lost: failed (and so retried if it may be), as an abandoned one.
            # A no-op for a job whose outcome was stored (compare-and-set).
            mine = [r for r in b.started_by_dead_workers(float("inf"))
                    if r.worker_name == self.worker.name]
            for rec in mine:
                _lifecycle.fail(b, rec, "plugq.exceptions.BackendUnavailableError: the worker "
                                "lost the store while the job ran; its outcome was not stored\n")
        except BackendUnavailableError:
            pass  # still away: the loop waits and tries again

    def run(self, *, burst: bool, max_jobs: int | None, with_scheduler: bool) -> bool:
        b = self.storage
        kind = worker_class(b, self.worker.worker_class)
        if kind != "simple":
            child_options(self.worker, kind)  # a handler a spawned child cannot get: refused now
        self._register()
        beater = threading.Thread(target=self._beat_forever, name="plugq-heartbeat", daemon=True)
        beater.start()
        processed = 0
        log.info("Worker %s started on %s, queues: %s", self.worker.name, b.safe_url(),
                 ", ".join(self.queues))
        restore_alarm = install_alarm_handler()
        try:
            self._maintain(with_scheduler)
            self._last_maint = time.monotonic()
            backoff = 0.5
            while not self.worker.stop.is_set():
                try:
                    done = self._step(kind, burst, with_scheduler)
                except BackendUnavailableError as exc:
                    if burst:
                        raise
                    # The store went away: keep the worker alive and look again.
                    log.warning("%s; retrying in %.1f s", exc, backoff)
                    self.worker.stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
                    self._recover_after_outage()
                    continue
                backoff = 0.5
                if done is None:
                    break
                if done:
                    processed += 1
                    if max_jobs is not None and processed >= max_jobs:
                        break
        finally:
            # The line of a limited job that ended last, if no claim read it since.
            ended, self._ended = self._ended, None
            if ended is not None:
                self._settle(ended)
            restore_alarm()
            self._beat_stop.set()
            self._changed.set()
            # Not a write left running after the worker returned: its caller may
            # close the store next (a SQLite connection closed under a running
            # statement crashes the process).
            beater.join(10)
            try:
                b.unregister_worker(self.worker.name)
            except BackendUnavailableError:
                log.warning("could not unregister worker %s: the store is unavailable", self.worker.name)
            log.info("Worker %s stopped after %d job(s)", self.worker.name, processed)
        return processed > 0


def drive_sync(
    clock: Clock,
    stored: JobRecord,
    fetch: Callable[[str], JobRecord | None],
    promote: Callable[[JobRecord], object],
    run: Callable[[JobRecord], object],
) -> JobRecord:
    """Sync mode's loop, on every backend: run ``stored`` here until it ends.

    ``fetch(id)`` reads the job; ``promote(rec)`` moves a due scheduled job to
    its queue; ``run(rec)`` takes the queued job (a worker may take it first:
    then the loop just looks again) and runs it. A retry interval is waited
    out on ``clock`` (a manual clock just moves forward).

    Returns:
        The job as it ended (``stored`` if it was deleted meanwhile).
    """
    while True:
        current = fetch(stored.id)
        if current is None:
            return stored
        if current.status is JobStatus.SCHEDULED and current.scheduled_for is not None:
            clock.sleep(current.scheduled_for - clock.now())
            promote(current)
            continue
        if current.status is not JobStatus.QUEUED:
            return current
        run(current)


def run_sync(engine: Engine, rec: JobRecord) -> JobRecord:
    """``Queue(is_async=False)``: enqueue, then run here through :func:`perform`."""
    storage = engine.storage
    stored = _lifecycle.enqueue(storage, [rec], unique=False)[0]
    if stored.status is not JobStatus.QUEUED:
        return storage.get(stored.id) or stored
    name = f"sync.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}"
    now = storage.clock.now()
    storage.register_worker(
        WorkerRecord(name=name, queues=[rec.origin], pid=os.getpid(),
                     hostname=socket.gethostname(), birth=now, last_heartbeat=now)
    )

    def take_and_run(current: JobRecord) -> None:
        now = storage.clock.now()
        storage.heartbeat(name, now, state="busy", current_job_id=current.id)
        _rules.mark_started(current, name, now)
        if storage.put(current, expected={JobStatus.QUEUED}):
            perform(engine, current, None)

    try:
        return drive_sync(
            storage.clock, stored, storage.get,
            lambda current: _lifecycle.promote(storage, current.id, JobStatus.SCHEDULED),
            take_and_run,
        )
    finally:
        storage.unregister_worker(name)

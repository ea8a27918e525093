"""Process isolation for the worker loop: worker classes ``simple``, ``fork``, ``spawn``.

``simple`` runs each job in the worker's own process (the default, and the
fastest). ``fork`` runs each job in a forked child and ``spawn`` in a fresh
interpreter; in both the parent enforces the job's timeout from outside: a
child still running ``KILL_GRACE`` seconds after its timeout (stuck in C code
that never returns to the interpreter, where the child's own alarm cannot
fire) is killed with SIGKILL, the job is failed with a
:class:`~plugq.exceptions.JobTimeoutException` in its exc_info (retried if it
has retries left), and the worker takes the next job. Worker commands reach
the child as rq's do: ``stop-job`` kills it and the parent stores the job
``stopped`` (its ``on_stopped`` callback runs in the parent), ``kill-horse``
kills it and the job fails with :class:`~plugq.exceptions.WorkHorseKilledException`
(retried if it may be; the ``work_horse_killed_handler`` gets the child's pid,
wait status and rusage). A child that dies otherwise (killed, crashed) fails
its job the same way.

Any storage whose data other processes share can run them; one that keeps
its data in this process only declares the ``process_local`` capability and
refuses them.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import pickle
import select
import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ._execution import format_exc_info, timeout_message
from .backend import WorkerSpec
from .exceptions import (
    ConfigurationError,
    JobStoppedException,
    JobTimeoutException,
    NotSupportedError,
    WorkHorseKilledException,
)
from .storage import JobRecord, JobStatus, Storage

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger("plugq.worker")

WORKER_CLASSES = ("simple", "fork", "spawn")
#: Seconds past a job's timeout before the parent kills its process (the
#: child's own alarm ends Python code at the timeout itself).
KILL_GRACE = 1.0


def worker_class(storage: Storage, name: str | None) -> str:
    """The worker class to run: ``name``, else the storage's default, else ``simple``.

    Raises:
        ConfigurationError: an unknown class.
        NotSupportedError: fork or spawn on a storage whose data lives in this process.
    """
    chosen = name or getattr(storage, "default_worker_class", None) or "simple"
    if chosen not in WORKER_CLASSES:
        raise ConfigurationError(
            f"worker_class={chosen!r} is not a worker class; choose simple, fork or spawn"
        )
    if chosen != "simple" and "process_local" in storage.capabilities:
        raise NotSupportedError(
            f"worker_class={chosen!r} is not supported on {storage.safe_url()} (its data lives in "
            "this process and does not cross a fork or spawn); use worker_class='simple'"
        )
    if chosen == "fork" and not hasattr(os, "fork"):
        chosen = "spawn"
    return chosen


Perform = Callable[["Engine", JobRecord, Any], Any]
#: ``(engine, rec, exc, worker, exc_info, horse)``: store a failure decided in
#: the parent; ``horse`` is ``(pid, wait status, rusage)`` of the child that died.
FailOutside = Callable[["Engine", JobRecord, BaseException, Any, str, "HorseEnd | None"], Any]
#: ``(engine, rec, exc, worker, exc_info)``: store a stop decided in the parent.
StopOutside = Callable[["Engine", JobRecord, BaseException, Any, str], Any]
#: How a child ended: its pid, its raw wait status (as ``os.wait4`` gives it) and its rusage.
HorseEnd = tuple[int, int, Any]

#: What a stopped job's exc_info says when its process was killed (rq's words).
STOPPED_MESSAGE = "Job stopped by user, work-horse terminated."
#: Options of a Worker that its job process uses (the others act in the parent).
CHILD_OPTIONS = ("exception_handlers", "disable_default_exception_handler")


class Horse:
    """The process running the current job, for a stop-job or kill-horse command.

    :meth:`interrupt` records why and kills the process with SIGKILL, as rq
    kills its work horse: a Python-level interrupt cannot reach a child stuck
    in C. An interrupt that comes before the process exists keeps it from
    being started; one that comes after the process ended does nothing (the
    parent marks it :meth:`over` before reaping it, so a late kill can never
    reach another process that got the same pid).
    """

    def __init__(self) -> None:
        #: Held around starting the process, so an interrupt either sees its pid or stops the start.
        self.lock = threading.Lock()
        #: The exception the command asked for (JobStoppedException or WorkHorseKilledException).
        self.exc: type[BaseException] | None = None
        self.pid: int | None = None
        self._over = False

    def interrupt(self, exc: type[BaseException]) -> bool:
        """Kill the job's process for ``exc``; False if it already ended or was interrupted."""
        with self.lock:
            if self._over or self.exc is not None:
                return False
            self.exc = exc
            if self.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            return True

    def over(self) -> None:
        """The process ended (not yet reaped): later interrupts do nothing."""
        with self.lock:
            self._over = True

    def kill(self) -> None:
        """Kill the process now unless it already ended (the worker is going away)."""
        with self.lock:
            if self.pid is not None and not self._over:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)


def child_options(worker: WorkerSpec, kind: str) -> dict[str, Any]:
    """The Worker options a job process needs; for ``spawn``, checked to cross to a new interpreter.

    Raises:
        ConfigurationError: a spawn worker's exception handler that cannot be
            pickled (a lambda, a function defined inside another).
    """
    options = {k: worker.options[k] for k in CHILD_OPTIONS if k in worker.options}
    if kind == "spawn":
        for handler in options.get("exception_handlers") or ():
            try:
                pickle.dumps(handler)
            except Exception:
                raise ConfigurationError(
                    f"worker_class='spawn' runs each job in a new interpreter, which gets the "
                    f"exception handlers by import: {handler!r} cannot be sent there; use a "
                    "function defined at the top level of a module"
                ) from None
    return options


def run_isolated(
    engine: Engine, rec: JobRecord, worker: WorkerSpec, kind: str, perform: Perform,
    fail_outside: FailOutside, stop_outside: StopOutside, *, horse: Horse | None = None,
    fork_guard: AbstractContextManager[Any] | None = None,
) -> None:
    """Run the claimed ``rec`` in a child process (``fork`` or ``spawn``) and wait for it.

    ``perform`` is the worker loop's one path a job takes to run (called in
    the child); ``fail_outside`` and ``stop_outside`` store an outcome the
    child could not store. The parent kills the child ``KILL_GRACE`` seconds
    after the job's timeout, or when ``horse`` is interrupted (a stop-job or
    kill-horse command), and stores that outcome; the child stores any other
    outcome itself. ``fork_guard`` is held around ``os.fork()``: the caller's
    other threads that use the store take it too, so none is inside a client
    library (and holding its locks) at the moment the child is made.
    """
    horse = horse or Horse()
    deadline = None if rec.timeout is None else time.monotonic() + rec.timeout + KILL_GRACE
    proc: Any = None
    pid: int | None = None
    with fork_guard or contextlib.nullcontext(), horse.lock:
        # Interrupted before its process existed: the job is never started.
        if horse.exc is None and kind == "fork":
            pid = os.fork()
            if pid == 0:  # the child: run the job through the one path, then leave at once
                code = 0
                try:
                    perform(engine, rec, worker)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
        elif horse.exc is None:
            options = child_options(worker, kind)
            # Imported by the spawn class only: simple and fork workers never use
            # multiprocessing, and it costs every worker ~160 KiB.
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            proc = ctx.Process(target=_spawn_main,
                               args=(perform, engine.url, rec.id, rec.attempts, worker.name, options),
                               name=f"plugq-job-{rec.id}", daemon=True)
            proc.start()
            pid = proc.pid
        horse.pid = pid
    if pid is None:
        _settle(engine, rec, worker, False, None, horse.exc, fail_outside, stop_outside)
        return
    try:
        timed_out, ended = _wait_child(pid, deadline, horse, proc)
    except BaseException:
        # A cold shutdown (or an error) unwinds the worker: the job's process
        # goes with it, as rq's horse does, rather than run on orphaned. Its
        # job stays started under a worker that is gone: found abandoned and
        # retried or failed, as a simple worker's job is.
        horse.kill()
        with contextlib.suppress(ChildProcessError):
            _, status = os.waitpid(pid, 0)
            if proc is not None:
                proc._popen.returncode = _exit_code(status)
        raise
    _settle(engine, rec, worker, timed_out, ended, horse.exc, fail_outside, stop_outside)


def _wait_child(pid: int, deadline: float | None, horse: Horse, proc: Any) -> tuple[bool, HorseEnd]:
    """Wait for the child ``pid``, killing it at ``deadline``; reap it.

    Returns ``(timed out, (pid, raw wait status, rusage))``. The child is
    marked over before it is reaped: until then its pid is not reused.
    """
    ended, reaped = _await_exit(pid, deadline)
    if not ended:
        os.kill(pid, signal.SIGKILL)
    horse.over()
    if reaped is None:
        _, status, rusage = os.wait4(pid, 0)
        reaped = (status, rusage)
    if proc is not None:
        # multiprocessing would wait for this child itself (and keep it in its
        # list of children forever once we reaped it): give it the exit code.
        proc._popen.returncode = _exit_code(reaped[0])
    return not ended, (pid, *reaped)


def _await_exit(pid: int, deadline: float | None) -> tuple[bool, tuple[int, Any] | None]:
    """Wait until ``pid`` ends or ``deadline``: ``(ended, (status, rusage) if already reaped)``."""
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                # Readable when the child ends (it stays unreaped): no polling
                # between its end and our notice. poll(), not select(): a
                # worker holding 1,024 descriptors or more (an application's
                # connections and files) gets a pidfd that select() refuses.
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready = poller.poll(None if left is None else math.ceil(left * 1000))
            finally:
                os.close(fd)
            return bool(ready), None
    if deadline is None and hasattr(os, "waitid"):
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # blocks until it ends; not reaped
        return True, None
    pause = 0.0005
    while True:
        if hasattr(os, "waitid"):
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True, None
        else:
            # No way to look without reaping here (macOS before Python 3.13):
            # reap now; the pid-reuse window is the few instructions until over().
            done, status, rusage = os.wait4(pid, os.WNOHANG)
            if done:
                return True, (status, rusage)
        if deadline is not None and time.monotonic() >= deadline:
            return False, None
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 0


def killed_at_timeout(rec: JobRecord) -> JobTimeoutException:
    """The error a job gets when its process was killed past its timeout."""
    return JobTimeoutException(
        f"{timeout_message(rec.timeout or 0)}; the job's process was killed "
        "(it did not return to the interpreter)"
    )


def fail_killed(
    engine: Engine, rec: JobRecord, worker: WorkerSpec, exc: BaseException,
    fail_outside: FailOutside, ended: HorseEnd | None = None,
) -> None:
    """Store ``exc`` (raised, for its traceback) as the outcome of ``rec``, whose process is gone.

    ``ended`` is the process's (pid, wait status, rusage) when this process reaped it.
    """
    try:
        raise exc
    except BaseException as raised:
        log.error("%s: %s (%s): %s", rec.origin, rec.id, rec.description, raised)
        fail_outside(engine, rec, raised, worker, format_exc_info(raised), ended)


def _settle(
    engine: Engine, rec: JobRecord, worker: WorkerSpec, timed_out: bool, ended: HorseEnd | None,
    interrupted: type[BaseException] | None, fail_outside: FailOutside, stop_outside: StopOutside,
) -> None:
    """After the child ended: count the outcome; store the job's end if the child could not.

    ``interrupted`` is what a command asked for (stop-job, kill-horse);
    ``ended`` is None when the child was never started.
    """
    stored = engine.storage.get(rec.id)
    still_running = (stored is not None and stored.status is JobStatus.STARTED
                     and stored.attempts == rec.attempts)
    if not still_running:  # the child stored its outcome (a command came too late to matter)
        if stored is not None and stored.status is JobStatus.FINISHED:
            worker.stats.successful += 1
        else:
            worker.stats.failed += 1
        return
    exc: BaseException
    if interrupted is JobStoppedException:
        exc = JobStoppedException(STOPPED_MESSAGE)
    elif timed_out and interrupted is None:
        exc = killed_at_timeout(rec)
    elif ended is None:
        exc = WorkHorseKilledException("Work-horse killed before it started")
    else:
        status = ended[1]
        signal_msg = f" (signal {os.WTERMSIG(status)})" if status and os.WIFSIGNALED(status) else ""
        # rq's words for a work horse that died without storing an outcome
        # (killed by kill-horse, by someone else, or crashed).
        exc = WorkHorseKilledException(
            f"Work-horse terminated unexpectedly; waitpid returned {status}{signal_msg}; "
        )
    if isinstance(exc, JobStoppedException):
        try:
            raise exc
        except JobStoppedException as raised:
            log.error("%s: %s (%s): %s", rec.origin, rec.id, rec.description, raised)
            stop_outside(engine, rec, raised, worker, format_exc_info(raised))
        return
    fail_killed(engine, rec, worker, exc, fail_outside, ended)


#: Opens a URL in a spawned child (named, not imported here: connection imports the engine).
CONNECT = "plugq.connection:connect"


def _spawn_main(
    perform: Perform, url: str, job_id: str, attempts: int, worker_name: str,
    options: dict[str, Any],
) -> None:
    """A spawned child: open the store by URL, run the claimed job, exit.

    ``options`` are the Worker's options the job's run uses (its exception
    handlers, which arrive by import).
    """
    module, _, name = CONNECT.partition(":")
    engine: Any = getattr(importlib.import_module(module), name)(url)
    rec = engine.storage.get(job_id)
    if rec is None or rec.status is not JobStatus.STARTED or rec.attempts != attempts:
        return  # canceled, deleted or taken over meanwhile
    perform(engine, rec, WorkerSpec(name=worker_name, queues=[rec.origin], options=options))

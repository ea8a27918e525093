"""Process isolation for the worker loop: worker classes ``simple``, ``fork``, ``spawn``.

``simple`` runs each job in the worker's own process (the default, and the
fastest). ``fork`` runs each job in a forked child and ``spawn`` in a fresh
interpreter; in both the parent enforces the job's timeout from outside: a
child still running ``KILL_GRACE`` seconds after its timeout (stuck in C code
that never returns to the interpreter, where the child's own alarm cannot
fire) is killed with SIGKILL, the job is failed with a
:class:`~plugq.exceptions.JobTimeoutException` in its exc_info (retried if it
has retries left), and the worker takes the next job. A child that dies
otherwise (killed, crashed) leaves its job failed with the cause.

Any storage whose data other processes share can run them; one that keeps
its data in this process only declares the ``process_local`` capability and
refuses them.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import select
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from ._execution import format_exc_info, timeout_message
from .backend import WorkerSpec
from .exceptions import ConfigurationError, JobTimeoutException, NotSupportedError
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
FailOutside = Callable[["Engine", JobRecord, BaseException, Any, str], Any]


def run_isolated(
    engine: Engine, rec: JobRecord, worker: WorkerSpec, kind: str, perform: Perform,
    fail_outside: FailOutside, *, fork_guard: AbstractContextManager[Any] | None = None,
) -> None:
    """Run the claimed ``rec`` in a child process (``fork`` or ``spawn``) and wait for it.

    ``perform`` is the worker loop's one path a job takes to run (called in
    the child); ``fail_outside`` stores a failure the child could not store.
    The parent kills the child ``KILL_GRACE`` seconds after the job's timeout
    and stores the failure; the child stores any other outcome itself.
    ``fork_guard`` is held around ``os.fork()``: the caller's other threads
    that use the store take it too, so none is inside a client library (and
    holding its locks) at the moment the child is made.
    """
    deadline = None if rec.timeout is None else time.monotonic() + rec.timeout + KILL_GRACE
    if kind == "fork":
        with fork_guard or contextlib.nullcontext():
            pid = os.fork()
        if pid == 0:  # the child: run the job through the one path, then leave at once
            code = 0
            try:
                perform(engine, rec, worker)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        killed, status = _wait_pid(pid, deadline)
    else:
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=_spawn_main,
                           args=(perform, engine.url, rec.id, rec.attempts, worker.name),
                           name=f"plugq-job-{rec.id}", daemon=True)
        proc.start()
        killed = False
        proc.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
            killed = True
        status = proc.exitcode or 0
    _settle(engine, rec, worker, killed, status, fail_outside)


def _wait_pid(pid: int, deadline: float | None) -> tuple[bool, int]:
    """Wait for ``pid``; kill it at ``deadline``. Returns ``(killed, exit status)``."""
    if deadline is None:
        return False, _exit_code(os.waitpid(pid, 0)[1])
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                # Readable when the child ends: no polling between its end and our notice.
                ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            finally:
                os.close(fd)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                return True, _exit_code(os.waitpid(pid, 0)[1])
            return False, _exit_code(os.waitpid(pid, 0)[1])
    pause = 0.0005
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return False, _exit_code(status)
        if deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            return True, _exit_code(status)
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
    fail_outside: FailOutside,
) -> None:
    """Store ``exc`` (raised, for its traceback) as the outcome of ``rec``, whose process is gone."""
    try:
        raise exc
    except BaseException as raised:
        log.error("%s: %s (%s): %s", rec.origin, rec.id, rec.description, raised)
        fail_outside(engine, rec, raised, worker, format_exc_info(raised))


def _settle(
    engine: Engine, rec: JobRecord, worker: WorkerSpec, killed: bool, code: int,
    fail_outside: FailOutside,
) -> None:
    """After the child ended: count the outcome; fail the job if the child could not."""
    stored = engine.storage.get(rec.id)
    still_running = (stored is not None and stored.status is JobStatus.STARTED
                     and stored.attempts == rec.attempts)
    if killed or still_running:
        if killed:
            exc: BaseException = killed_at_timeout(rec)
        else:
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            exc = RuntimeError(f"the job's process ended ({how}) before storing an outcome")
        fail_killed(engine, rec, worker, exc, fail_outside)
        return
    if stored is not None and stored.status is JobStatus.FINISHED:
        worker.stats.successful += 1
    else:
        worker.stats.failed += 1


#: Opens a URL in a spawned child (named, not imported here: connection imports the engine).
CONNECT = "plugq.connection:connect"


def _spawn_main(perform: Perform, url: str, job_id: str, attempts: int, worker_name: str) -> None:
    """A spawned child: open the store by URL, run the claimed job, exit."""
    module, _, name = CONNECT.partition(":")
    engine: Any = getattr(importlib.import_module(module), name)(url)
    rec = engine.storage.get(job_id)
    if rec is None or rec.status is not JobStatus.STARTED or rec.attempts != attempts:
        return  # canceled, deleted or taken over meanwhile
    perform(engine, rec, WorkerSpec(name=worker_name, queues=[rec.origin]))

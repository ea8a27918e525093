"""``plugq worker --concurrency N``: N worker processes under one supervisor.

Each child is a plain ``plugq worker`` process (``python -m plugq.cli worker
…``) in a session of its own, so a Ctrl-C on the terminal reaches only the
supervisor, which forwards it: the children see exactly one signal per
signal the user sent (first warm, second cold), never a doubled one.

A child that dies (non-zero exit, killed by a signal) is restarted, with a
growing pause when it dies right after starting, so a worker that cannot
start does not spin. A child that exits 0 finished on purpose (burst mode
drained its queues, ``--max-jobs`` reached) and is not restarted; the
supervisor returns when no child is left. Exit code 2 from a child is a
configuration error that a restart cannot fix: everything stops with 2.

Hard timeouts for the ``simple`` class: a child reports each job it starts
and ends through a pipe (a :class:`JobBeacon`), with the job's timeout. A job
stuck where the child's own timeout cannot reach it (inside C code that never
returns to the interpreter) is still running ``KILL_GRACE`` seconds after its
timeout: the supervisor kills that child with SIGKILL, hands the job to
``on_overrun`` (which fails it with a timeout error, as the ``fork`` class's
parent does) and starts a new child, as Celery's prefork pool does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger("plugq.worker")

#: Environment variable through which a child learns its supervisor's pid.
SUPERVISOR_ENV = "PLUGQ_SUPERVISOR_PID"
#: A child that lived less than this many seconds "died at start".
QUICK_DEATH = 2.0
#: Longest pause before restarting a child that keeps dying at start.
MAX_BACKOFF = 10.0
#: Seconds between two looks at the children while they all run.
POLL = 0.05
#: Environment variable naming the pipe through which a child reports its job.
BEACON_ENV = "PLUGQ_SUPERVISOR_FD"
#: Seconds past a job's timeout before the supervisor kills its worker (the
#: child's own timeout ends Python code at the timeout itself).
KILL_GRACE = 1.0


@dataclass(frozen=True)
class RunningJob:
    """What a child reported it is running."""

    job_id: str
    attempts: int
    timeout: float | None
    worker: str
    since: float  # time.monotonic() in the supervisor when the report arrived

    @property
    def deadline(self) -> float | None:
        return None if self.timeout is None else self.since + self.timeout + KILL_GRACE


#: Called with a job the supervisor killed its worker for (after the kill).
OnOverrun = Callable[[RunningJob], None]


class JobBeacon:
    """In a child: tells the supervisor which job runs (one line per change).

    Each report is one ``write`` of less than ``PIPE_BUF`` bytes, so it
    arrives whole. A supervisor that is gone makes the write fail; the
    beacon then goes quiet (``watch_supervisor`` stops the worker).
    """

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def from_env(cls) -> JobBeacon | None:
        """The beacon a supervisor gave this process, else None.

        Taken out of the environment, so processes this one starts (a task's
        own subprocesses) do not report as if they were the worker.
        """
        raw = os.environ.pop(BEACON_ENV, None)
        if not raw or not raw.isdigit():
            return None
        return cls(int(raw))

    def _send(self, message: dict[str, object]) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, json.dumps(message).encode() + b"\n")
        except OSError:
            self._fd = None

    def started(self, job_id: str, attempts: int, timeout: float | None, worker: str) -> None:
        self._send({"job": job_id, "attempts": attempts, "timeout": timeout, "worker": worker})

    def ended(self) -> None:
        self._send({})


@dataclass
class _Slot:
    index: int
    generation: int = 0
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0
    reports: int | None = None  # read end of the child's beacon pipe
    pending: bytes = b""
    running: RunningJob | None = None
    overran: RunningJob | None = None


class Supervisor:
    """Runs ``count`` children built by ``command(index, generation)``."""

    def __init__(
        self,
        count: int,
        command: Callable[[int, int], Sequence[str]],
        env: dict[str, str] | None = None,
        on_overrun: OnOverrun | None = None,
    ) -> None:
        self.count = count
        self.command = command
        self.env = dict(os.environ if env is None else env)
        self.env[SUPERVISOR_ENV] = str(os.getpid())
        self.on_overrun = on_overrun
        self.slots = [_Slot(i + 1) for i in range(count)]
        self.signals_received = 0
        self._wake = threading.Event()

    # -- signals ------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals_received += 1
        kind = "Warm" if self.signals_received == 1 else "Cold"
        log.warning("%s shut down requested (signal %d); forwarding to %d worker(s)",
                    kind, signum, len(self._alive()))
        self._wake.set()
        for slot in self._alive():
            assert slot.process is not None
            # Always SIGTERM: the child counts signals itself, so the second
            # one forwarded is its cold shutdown. It may have just exited.
            with contextlib.suppress(ProcessLookupError):
                slot.process.send_signal(signal.SIGTERM)

    @property
    def stopping(self) -> bool:
        return self.signals_received > 0

    def _alive(self) -> list[_Slot]:
        return [s for s in self.slots if s.process is not None]

    # -- children -----------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        argv = list(self.command(slot.index, slot.generation))
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        env = dict(self.env, **{BEACON_ENV: str(write_end)})
        try:
            slot.process = subprocess.Popen(argv, env=env, start_new_session=True,
                                            pass_fds=(write_end,))
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        slot.reports, slot.pending, slot.running, slot.overran = read_end, b"", None, None
        slot.started = time.monotonic()
        log.info("Supervisor: worker %d started (pid %d)", slot.index, slot.process.pid)

    @staticmethod
    def _read_reports(slot: _Slot) -> None:
        """Take the child's reports so far; remember the job it runs now."""
        if slot.reports is None:
            return
        while True:
            try:
                chunk = os.read(slot.reports, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            slot.pending += chunk
        *lines, slot.pending = slot.pending.split(b"\n")
        for line in lines:
            try:
                msg = json.loads(line)
                slot.running = RunningJob(
                    str(msg["job"]), int(msg["attempts"]),
                    None if msg["timeout"] is None else float(msg["timeout"]),
                    str(msg["worker"]), time.monotonic(),
                ) if msg else None
            except (ValueError, KeyError, TypeError):
                log.warning("Supervisor: worker %d sent an unreadable report %r",
                            slot.index, line[:80])

    def _kill_overruns(self) -> None:
        """SIGKILL a child whose job is past its timeout plus the grace."""
        now = time.monotonic()
        for slot in self._alive():
            self._read_reports(slot)
            job = slot.running
            if job is None or job.deadline is None or now < job.deadline or slot.overran:
                continue
            assert slot.process is not None
            log.error("Supervisor: worker %d (pid %d) is still running job %s %.1fs after its "
                      "%gs timeout; killing it", slot.index, slot.process.pid, job.job_id,
                      now - job.since - (job.timeout or 0), job.timeout or 0)
            slot.overran = job
            with contextlib.suppress(ProcessLookupError):
                slot.process.send_signal(signal.SIGKILL)

    def _settle_overrun(self, slot: _Slot) -> None:
        job, slot.overran = slot.overran, None
        if job is None or self.on_overrun is None:
            return
        try:
            self.on_overrun(job)
        except Exception:  # the store may be down: lease recovery takes the job later
            log.exception("Supervisor: could not fail job %s after killing its worker",
                          job.job_id)

    @staticmethod
    def _close_reports(slot: _Slot) -> None:
        if slot.reports is not None:
            os.close(slot.reports)
            slot.reports = None

    @staticmethod
    def _reap(by_pid: dict[int, _Slot]) -> tuple[int, int] | None:
        for pid in by_pid:
            try:
                got, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return pid, 0  # reaped elsewhere: it ended; treat as a clean exit
            if got:
                return got, status
        return None

    def run(self) -> int:
        """Start the children and look after them until none is left. Returns the exit code."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        exit_code = 0
        try:
            for slot in self.slots:
                self._start(slot)
            by_pid = {s.process.pid: s for s in self.slots if s.process is not None}
            while by_pid:
                # Reap only our own children, by pid: os.wait() would also
                # take the exit status of any other child of this process (a
                # server a test started, another Popen) and could block on it.
                ended = self._reap(by_pid)
                if not ended:
                    self._kill_overruns()
                    time.sleep(POLL)
                    continue
                pid, status = ended
                slot = by_pid.pop(pid)
                self._close_reports(slot)
                self._settle_overrun(slot)
                code = os.waitstatus_to_exitcode(status)
                if slot.process is not None:
                    # Reaped here, not by Popen: tell it, so it never waits on the pid again.
                    slot.process.returncode = code
                slot.process = None
                lived = time.monotonic() - slot.started
                if code == 0 or self.stopping:
                    log.info("Supervisor: worker %d (pid %d) exited with %d", slot.index, pid, code)
                    continue
                if code == 2:
                    log.error("Supervisor: worker %d exited with a configuration error; "
                              "stopping all workers", slot.index)
                    exit_code = 2
                    self._on_signal(signal.SIGTERM, None)
                    continue
                slot.quick_deaths = slot.quick_deaths + 1 if lived < QUICK_DEATH else 0
                pause = min(MAX_BACKOFF, 0.5 * (2 ** (slot.quick_deaths - 1))) \
                    if slot.quick_deaths else 0.0
                how = f"was killed by signal {-code}" if code < 0 else f"died with exit code {code}"
                log.warning("Supervisor: worker %d (pid %d) %s; restarting%s", slot.index, pid,
                            how, f" in {pause:.1f}s" if pause else "")
                if pause and self._wake.wait(pause) and self.stopping:
                    continue
                if self.stopping:
                    continue
                slot.generation += 1
                self._start(slot)
                assert slot.process is not None
                by_pid[slot.process.pid] = slot
        finally:
            for slot in self.slots:
                self._close_reports(slot)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return exit_code


def watch_supervisor(stop: Callable[[], None], interval: float = 1.0) -> threading.Thread | None:
    """In a child: call ``stop`` (a warm shutdown) if the supervisor disappears.

    The children run in sessions of their own, so nothing else would stop
    them if the supervisor were killed with SIGKILL.
    """
    expected = os.environ.get(SUPERVISOR_ENV)
    if not expected or sys.platform == "win32":
        return None

    def watch() -> None:
        done = threading.Event()
        while not done.wait(interval):
            if str(os.getppid()) != expected:
                log.warning("Supervisor %s is gone; finishing the current job and stopping",
                            expected)
                stop()
                return

    thread = threading.Thread(target=watch, name="plugq-supervisor-watch", daemon=True)
    thread.start()
    return thread

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
"""

from __future__ import annotations

import contextlib
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


@dataclass
class _Slot:
    index: int
    generation: int = 0
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_deaths: int = 0


class Supervisor:
    """Runs ``count`` children built by ``command(index, generation)``."""

    def __init__(
        self,
        count: int,
        command: Callable[[int, int], Sequence[str]],
        env: dict[str, str] | None = None,
    ) -> None:
        self.count = count
        self.command = command
        self.env = dict(os.environ if env is None else env)
        self.env[SUPERVISOR_ENV] = str(os.getpid())
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
        slot.process = subprocess.Popen(argv, env=self.env, start_new_session=True)
        slot.started = time.monotonic()
        log.info("Supervisor: worker %d started (pid %d)", slot.index, slot.process.pid)

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
                    time.sleep(POLL)
                    continue
                pid, status = ended
                slot = by_pid.pop(pid)
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

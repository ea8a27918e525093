"""What every benchmarked system provides, and the harness that drives worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: Seconds between two latency samples: long enough for the worker to finish
#: the previous job and go idle again.
LATENCY_GAP = 0.05


#: The packages plugq is made of (the core and its four backends).
PLUGQ_PACKAGES = ("plugq", "plugq_memory", "plugq_sqlite", "plugq_rq", "plugq_postgres")


def byte_compile_plugq() -> list[str]:
    """Byte-compile plugq's packages where they are imported from, as installing them does.

    The peers (rq, redis-py, huey, …) are installed wheels, byte-compiled by pip
    at install time; plugq runs from this checkout (an editable install), and
    where bytecode is not written (``PYTHONDONTWRITEBYTECODE``, a read-only
    tree) every worker process would compile plugq's ~400 KB of source, which
    no installed plugq does: ~2 MiB of a worker's peak RSS and ~100 ms of its
    start. Returns the folders compiled.
    """
    import compileall
    import importlib.util

    done = []
    for name in PLUGQ_PACKAGES:
        spec = importlib.util.find_spec(name)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(folder, quiet=1)
            done.append(folder)
    return done


class NotApplicable(Exception):
    """The system has no such operation (huey has no bulk enqueue); the message says why."""


@dataclass
class Config:
    jobs: int
    runs: int
    quick: bool
    latency_samples: int
    workers_n: int


@dataclass
class ProcessRun:
    """One timed drain: ``jobs`` results stored in ``seconds``, then verified."""

    seconds: float
    jobs: int
    verified: bool
    rss_kb: int | None = None
    detail: str = ""


@dataclass
class Metric:
    """A figure: the median of its runs, and whether every run's results checked out."""

    value: float | None
    unit: str
    runs: list[float] = field(default_factory=list)
    verified: bool | None = None
    note: str = ""
    jobs: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "value": self.value, "unit": self.unit, "runs": self.runs,
            "verified": self.verified, "note": self.note, "jobs": self.jobs,
        }


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 100 samples is the 99th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def new_hexes(n: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(n)]


def wait_for(predicate: Callable[[], bool], timeout: float, poll: float = 0.005,
             what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)


class WorkerProc:
    """A ``benchmarks._worker`` subprocess, started and ready (imports done)."""

    def __init__(self, spec: dict[str, Any], log_path: Path | None = None) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p
        )
        # Workers log as their users' would (rq and huey at INFO); the log goes to
        # a file so a failure can be read afterwards, not to the table.
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            cwd=str(ROOT), env=env, text=True, start_new_session=True,
        )
        line = self._readline(60.0)
        if line.strip() != "READY":
            self.kill()
            raise RuntimeError(f"worker {spec.get('kind')} did not start (said {line!r}); see {log_path}")

    def _readline(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError("worker process did not answer")
        return self.proc.stdout.readline()

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def report(self, timeout: float = 600.0) -> dict[str, Any]:
        line = self._readline(timeout)
        if not line:
            raise RuntimeError(f"worker exited with {self.proc.wait()} before reporting")
        data: dict[str, Any] = json.loads(line)
        self.proc.wait(30)
        self._close()
        return data

    def stop(self) -> None:
        """Warm shutdown (SIGTERM: rq and huey finish the current job), then kill."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.kill()
        self._close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close()

    def _close(self) -> None:
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None and not f.closed:
                f.close()
        if self._log is not subprocess.DEVNULL and hasattr(self._log, "close"):
            self._log.close()


class System(ABC):
    """One benchmarked queue system. Subclasses implement the store-specific parts.

    Handles (``Any``) are whatever identifies an enqueued job on that system.
    """

    #: Name in the table and for ``--only``.
    name: str = ""
    #: Other names ``--only`` accepts.
    aliases: frozenset[str] = frozenset()
    #: The system this one is compared with (ratio column), or None.
    peer: str | None = None
    #: False when a sibling system already measures this store's enqueue rates
    #: (rq's forking and simple workers share one enqueue path).
    measures_enqueue: bool = True
    #: Fraction of --jobs used for processing runs (forking workers are slow).
    job_scale: float = 1.0
    #: Whether a run with N worker processes makes sense.
    multi_process: bool = True
    #: Whether results are stored (latency reads the start time from the result).
    has_results: bool = True

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.run_no = 0

    def unavailable(self) -> str | None:
        """Why this system cannot run here (missing package, backend not built), or None."""
        return None

    def log_path(self, what: str) -> Path:
        return self.workdir / f"{self.name}-{what}-{self.run_no}.log"

    # -- per-run store ----------------------------------------------------

    @abstractmethod
    def reset(self) -> None:
        """Start a fresh, empty store for the next run."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release what the system holds at the end (connections, files)."""

    # -- enqueueing -------------------------------------------------------

    @abstractmethod
    def enqueue_single(self, hexes: Sequence[str]) -> list[Any]:
        """Enqueue one job per hex, one call each (this is what is timed)."""

    def enqueue_bulk(self, hexes: Sequence[str]) -> list[Any]:
        """Enqueue all jobs in the system's bulk form (timed)."""
        raise NotApplicable("no bulk enqueue")

    def prefill(self, hexes: Sequence[str]) -> list[Any]:
        """Enqueue the jobs of a processing run (not timed): bulk when there is one."""
        try:
            return self.enqueue_bulk(hexes)
        except NotApplicable:
            return self.enqueue_single(hexes)

    @abstractmethod
    def queued_count(self) -> int:
        """Jobs waiting on the queue (to check an enqueue run stored everything)."""

    # -- processing -------------------------------------------------------

    @abstractmethod
    def worker_spec(self, mode: str, workers: int) -> dict[str, Any]:
        """The ``benchmarks._worker`` spec for one worker process (``workers`` for huey's pool)."""

    def worker_processes(self, workers: int) -> int:
        """How many worker processes to start for ``workers`` workers."""
        return workers

    def done_count(self) -> int | None:
        """Results stored so far, for systems whose workers have no burst mode; else None."""
        return None

    @abstractmethod
    def verify(self, handles: Sequence[Any], hexes: Sequence[str]) -> tuple[bool, str]:
        """Every job finished with a stored result; spot-check values. (ok, detail)."""

    def process(self, hexes: Sequence[str], workers: int) -> ProcessRun:
        """Fill the queue, start workers (imports done), then time until the last result is stored."""
        handles = self.prefill(hexes)
        procs = [
            WorkerProc(self.worker_spec("burst", workers), self.log_path(f"w{workers}-{i}"))
            for i in range(self.worker_processes(workers))
        ]
        try:
            start = time.time()
            for p in procs:
                p.send("GO")
            if self.done_count() is None:
                reports = [p.report() for p in procs]
                end = max(r["end"] for r in reports)
            else:
                n = len(hexes)
                wait_for(lambda: (self.done_count() or 0) >= n, timeout=600, what="all results")
                end = time.time()
                for p in procs:
                    p.send("STOP")
                reports = [p.report() for p in procs]
        finally:
            for p in procs:
                p.kill()
        ok, detail = self.verify(handles, hexes)
        rss = max(max(r["rss_kb"], r["children_rss_kb"]) for r in reports)
        return ProcessRun(end - start, len(hexes), ok, rss, detail)

    # -- latency ----------------------------------------------------------

    def enqueue_stamp(self, hex_string: str) -> Any:
        """Enqueue one :func:`benchmarks.tasks.stamp` job."""
        raise NotApplicable("no result store to read the start time from")

    def stamp_result(self, handle: Any) -> tuple[float, int] | None:
        """The stamp job's result, or None while it has not finished."""
        raise NotApplicable("no result store")

    def latency(self, samples: int) -> list[float]:
        """Seconds from calling enqueue to the job starting, on an idle, running worker."""
        if not self.has_results:
            raise NotApplicable("no result store to read the job's start time from")
        self.reset()
        proc = WorkerProc(self.worker_spec("serve", 1), self.log_path("serve"))
        try:
            warm = self.enqueue_stamp(new_hexes(1)[0])
            wait_for(lambda: self.stamp_result(warm) is not None, timeout=60, what="warm-up job")
            time.sleep(0.2)
            sent: list[tuple[float, Any]] = []
            for h in new_hexes(samples):
                t = time.time()
                sent.append((t, self.enqueue_stamp(h)))
                time.sleep(LATENCY_GAP)
            results: list[tuple[float, int] | None] = [None] * len(sent)

            def all_done() -> bool:
                for i, (_, handle) in enumerate(sent):
                    if results[i] is None:
                        results[i] = self.stamp_result(handle)
                        if results[i] is None:
                            return False
                return True

            wait_for(all_done, timeout=120, poll=0.05, what="latency jobs")
        finally:
            proc.stop()
        return [r[0] - t for (t, _), r in zip(sent, results, strict=True) if r is not None]

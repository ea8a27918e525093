"""``plugq demo``: enqueue digit-sum jobs, work them off, show it live, report throughput.

The producer runs in a thread and enqueues in ``enqueue_many`` chunks while
the workers already drain the queue, so the two progress bars (enqueued,
done) move together. Workers are ``plugq worker`` processes on a backend
shared between processes (SQLite, Redis) and threads of this process on
``memory://``, whose store lives in one process.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from . import _monitor
from .backend import Backend
from .connection import connect, forget
from .exceptions import PlugqError
from .queue import Queue
from .storage import JobStatus
from .testing.tasks import digit_sum
from .worker import Worker

#: Jobs per ``enqueue_many`` batch: large enough to amortise a transaction,
#: small enough that workers start on the first batch at once.
CHUNK = 100
#: Seconds between two refreshes of the live view.
REFRESH = 0.1
#: Seconds a worker process gets to finish its job after SIGTERM.
STOP_GRACE = 30.0


class DemoError(PlugqError):
    """The demo could not complete (a worker died, the producer failed)."""


@dataclass
class DemoResult:
    """What the demo measured."""

    url: str
    jobs: int
    workers: int
    finished: int
    failed: int
    seconds: float
    samples: list[tuple[str, Any, bool]] = field(default_factory=list)
    first_error: str | None = None

    @property
    def throughput(self) -> float:
        return self.finished / self.seconds if self.seconds > 0 else 0.0


class _DemoProgress(Progress):
    """A progress display with the live queue table under the bars."""

    extra: RenderableType = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        yield self.extra


class _Producer(threading.Thread):
    def __init__(self, queue: Queue, jobs: int) -> None:
        super().__init__(name="plugq-demo-producer", daemon=True)
        self.queue = queue
        self.jobs = jobs
        self.enqueued = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while self.enqueued < self.jobs:
                size = min(CHUNK, self.jobs - self.enqueued)
                batch = [
                    Queue.prepare_data(digit_sum, (uuid.uuid4().hex,)) for _ in range(size)
                ]
                self.queue.enqueue_many(batch)
                self.enqueued += size
        except BaseException as exc:  # reported by the main thread
            self.error = exc


class _Workers:
    """The demo's workers: threads on memory://, processes elsewhere."""

    def __init__(self, backend: Backend, url: str, queue: str, count: int, logdir: Path) -> None:
        self.backend = backend
        self.url = url
        self.queue = queue
        self.count = count
        self.logdir = logdir
        self.threads: list[tuple[Worker, threading.Thread]] = []
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.in_process = backend.scheme == "memory"

    def start(self) -> None:
        tag = uuid.uuid4().hex[:6]
        for i in range(1, self.count + 1):
            name = f"demo-{tag}-{i}"
            if self.in_process:
                worker = Worker([self.queue], connection=self.backend, name=name)
                thread = threading.Thread(
                    target=worker.work, kwargs={"with_scheduler": False}, daemon=True
                )
                thread.start()
                self.threads.append((worker, thread))
                continue
            env = dict(os.environ)
            # The URL goes through the environment, not argv: no password in `ps`.
            env["PLUGQ_URL"] = self.url
            log = (self.logdir / f"{name}.log").open("wb")
            argv = [sys.executable, "-m", "plugq.cli", "worker", self.queue, "--name", name,
                    "--without-scheduler", "--logging-level", "WARNING"]
            self.processes.append((name, subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )))
            log.close()

    def check(self) -> None:
        """Raise if a worker ended while the demo still needs it."""
        for name, p in self.processes:
            code = p.poll()
            if code is not None:
                tail = _tail(self.logdir, name)
                raise DemoError(
                    f"worker {name} (pid {p.pid}) exited with code {code}"
                    + (f": {tail}" if tail else "")
                )
        for worker, thread in self.threads:
            if not thread.is_alive() and not worker.stop_requested:
                raise DemoError(f"worker thread {worker.name} stopped unexpectedly")

    def stop(self) -> None:
        """Warm shutdown of every worker; waits for them, killing a process that hangs."""
        for worker, _ in self.threads:
            worker.request_stop()
        for _, thread in self.threads:
            thread.join(STOP_GRACE)
        for _, p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in self.processes:
            try:
                p.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _tail(logdir: Path, name: str) -> str:
    path = logdir / f"{name}.log"
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _counts_table(backend: Backend, queue: str, workers: int) -> Table:
    snap = {
        "queues": {queue: _monitor.queue_counts(backend, queue)},
        "workers": [],
    }
    table = _monitor.queues_table(snap, title=f"Live queue counts ({workers} worker(s))")
    return table


def run_demo(
    jobs: int, workers: int, url: str | None, console: Console, refresh: float = REFRESH
) -> DemoResult:
    """Run the demo and return its measurements (the caller prints them).

    Raises:
        DemoError: a worker died or the producer failed.
    """
    tmp = Path(tempfile.mkdtemp(prefix="plugq-demo-"))
    own_db = url is None
    if url is None:
        # Not the configured default: the demo must not fill the user's database.
        url = f"sqlite:///{tmp / 'demo.db'}"
    # Worker log lines would tear the live view; the summary reports failures.
    plugq_log = logging.getLogger("plugq")
    old_level = plugq_log.level
    plugq_log.setLevel(logging.CRITICAL)
    try:
        backend = connect(url)
        queue_name = f"demo-{uuid.uuid4().hex[:8]}"
        queue = Queue(queue_name, connection=backend)
        producer = _Producer(queue, jobs)
        pool = _Workers(backend, url, queue_name, workers, tmp)
        progress = _DemoProgress(
            TextColumn("{task.description:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            refresh_per_second=10,
        )
        enq_task = progress.add_task("enqueued", total=jobs, rate="")
        done_task = progress.add_task("done", total=jobs, rate="")
        started = time.monotonic()
        finished = failed = 0
        stop = threading.Event()
        try:
            with progress:
                producer.start()
                pool.start()
                while True:
                    if producer.error is not None:
                        raise DemoError(f"enqueueing failed: {producer.error}") from producer.error
                    pool.check()
                    finished = backend.count(queue_name, JobStatus.FINISHED)
                    failed = backend.count(queue_name, JobStatus.FAILED)
                    elapsed = max(time.monotonic() - started, 1e-9)
                    progress.extra = _counts_table(backend, queue_name, workers)
                    progress.update(enq_task, completed=producer.enqueued,
                                    rate=f"{producer.enqueued / elapsed:,.0f}/s")
                    progress.update(done_task, completed=finished + failed,
                                    rate=f"{(finished + failed) / elapsed:,.0f}/s")
                    if finished + failed >= jobs:
                        break
                    stop.wait(refresh)
                seconds = time.monotonic() - started
                progress.refresh()
        finally:
            pool.stop()
            producer.join(STOP_GRACE)
        result = DemoResult(backend.safe_url(), jobs, workers, finished, failed, seconds)
        for job in queue.finished_job_registry.get_job_ids()[:5]:
            j = queue.fetch_job(job)
            if j is None:
                continue
            arg = j.args[0]
            value = j.return_value()
            result.samples.append((arg, value, value == digit_sum(arg)))
        failed_ids = queue.failed_job_registry.get_job_ids()[:1]
        if failed_ids:
            j = queue.fetch_job(failed_ids[0])
            if j is not None and j.exc_info:
                result.first_error = j.exc_info.strip().splitlines()[-1]
        if not own_db:
            # Leave the user's backend as we found it, but for finished results
            # that expire on their own (result_ttl).
            queue.delete(delete_jobs=True)
        return result
    finally:
        plugq_log.setLevel(old_level)
        if own_db:
            forget(url)
        shutil.rmtree(tmp, ignore_errors=True)

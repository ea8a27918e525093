"""The ``plugq`` command line: run workers, look at queues, run the demo.

Every command takes ``--url``; without it the URL comes from ``PLUGQ_URL``,
then ``[tool.plugq] url`` in the nearest pyproject.toml, then
``sqlite:///plugq.db``.

Exit codes: 0 success; 1 a job or usage error; 2 a configuration or
connection error. Errors a user can cause print one line on stderr, never a
traceback, and never a password.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import unquote, urlsplit

import click

from . import __version__
from ._engine import Engine
from ._process import fail_killed, killed_at_timeout
from ._worker_loop import fail_outside
from .backend import Backend, WorkerSpec
from .config import Settings, current_settings, mask_url, resolve_url, validate_url
from .connection import connect
from .exceptions import (
    BackendUnavailableError,
    ConfigurationError,
    InvalidJobOperation,
    NoSuchJobError,
    NotSupportedError,
    PlugqError,
    UnknownBackendError,
)
from .progress import Progress
from .security import UntrustedJobError
from .storage import JobStatus

if TYPE_CHECKING:
    from rich.console import Console

# rich (~2 MiB of a process's memory) is imported by the commands that draw
# tables (info, jobs, backends, config, demo), inside them: `plugq worker`,
# which prints only log lines, runs its jobs without it.

F = TypeVar("F", bound=Callable[..., Any])

#: Errors that mean "plugq cannot reach or set up the backend": exit code 2.
CONFIG_ERRORS: tuple[type[BaseException], ...] = (
    ConfigurationError,
    UnknownBackendError,
    BackendUnavailableError,
)

EXIT_OK, EXIT_ERROR, EXIT_CONFIG = 0, 1, 2

log = logging.getLogger("plugq.worker")


def _mask(text: str) -> str:
    """``text`` through :func:`mask_url`, also masking the passwords of the URLs this
    command was given (a library's message may quote a fragment of one)."""
    given = [a for a in sys.argv if "://" in a]
    if os.environ.get("PLUGQ_URL"):
        given.append(os.environ["PLUGQ_URL"])
    return mask_url(text, *given)


class CliError(click.ClickException):
    """A failure reported as one line with a chosen exit code."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _is_connection_error(exc: BaseException) -> bool:
    """A failure to reach a server or open a file, from a client library plugq does not import."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    module = type(exc).__module__.split(".")[0]
    name = type(exc).__name__
    if module == "redis" and name in ("ConnectionError", "TimeoutError", "AuthenticationError"):
        return True
    return module in ("sqlite3", "_sqlite3") and name == "OperationalError"


def url_option(func: F) -> F:
    """``--url`` on every command (``PLUGQ_URL`` is read by the config, not by click)."""
    return click.option(
        "--url", "-u", metavar="URL", default=None,
        help="Backend URL (memory://, sqlite:///PATH, redis://…). "
             "Default: PLUGQ_URL, then [tool.plugq] url, then sqlite:///plugq.db.",
    )(func)


def _settings() -> Settings:
    """Read and validate the configuration now, so a bad value fails at start."""
    return current_settings()


def _backend(url: str | None, *, read_only: bool = False) -> Backend:
    """The backend of ``--url`` or the configuration.

    ``read_only``: the command only looks, so it must not create a SQLite
    file; a missing one (a typo, or a relative path run from another folder)
    would otherwise read as an empty backend, "no queues yet".
    """
    _settings()
    if url:
        validate_url(url, where="--url")
    if read_only:
        _refuse_missing_sqlite_file(resolve_url(url or None))
    return connect(url or None)


def _refuse_missing_sqlite_file(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        return  # not a plain file URL: the backend reports what is wrong with it
    path = unquote(parts.path[1:])
    if not path or path.endswith("/") or path == ":memory:":
        return
    full = os.path.abspath(path)
    if not os.path.exists(full):
        raise CliError(
            f"{full} does not exist ({mask_url(url)}, working directory {os.getcwd()}); this "
            "command only reads and never creates a database: check the file name, or run it "
            "from the folder a relative path is meant for",
            EXIT_CONFIG,
        )


def _console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, default=str, sort_keys=True))


# -- the group --------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="plugq")
def cli() -> None:
    """plugq: RQ's Queue / Job / Worker over memory, SQLite and Redis backends."""


# -- worker -----------------------------------------------------------------


class _Shutdown:
    """SIGINT/SIGTERM in a worker process: first warm, second cold."""

    def __init__(self, request_stop: Callable[[], None]) -> None:
        self.request_stop = request_stop
        self.count = 0

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self)

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count == 1:
            log.warning("Warm shut down requested (signal %d): finishing the current job; "
                        "send it again to stop at once", signum)
            self.request_stop()
            return
        log.warning("Cold shut down (signal %d)", signum)
        # Raised in the main thread, it unwinds the worker loop, whose
        # `finally` unregisters the worker: the interrupted job is then
        # found abandoned at once and retried or failed, never lost.
        raise _ColdShutdown()


class _ColdShutdown(BaseException):
    """Not an Exception: a job's ``except Exception`` must not swallow it."""


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    # "rq" too: the Redis backend runs rq's own worker, which logs there; with
    # a handler already in place rq does not install its own.
    for name in ("plugq", "rq"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False


@cli.command()
@click.argument("queues", nargs=-1)
@click.option("--burst", "-b", is_flag=True, help="Stop when the queues are empty.")
@click.option("--name", "-n", help="Worker name (default: host.pid.random).")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes to run under one supervisor that restarts any that die.")
@click.option("--max-jobs", type=click.IntRange(min=1), help="Stop after this many jobs.")
@click.option("--with-scheduler/--without-scheduler", default=True, show_default=True,
              help="Also move due scheduled jobs onto their queues.")
@click.option("--path", "-P", "paths", multiple=True, default=["."], show_default=True,
              type=click.Path(file_okay=False), help="Add to sys.path to import tasks.")
@click.option("--logging-level", "-l", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False))
@click.option("--worker-class", type=click.Choice(["fork", "simple", "spawn"]),
              help="simple (default): jobs run in the worker's process; fork: a child process "
                   "per job, killed past its timeout even when stuck in C code; spawn: a fresh "
                   "interpreter per job. fork and spawn need a store shared between processes "
                   "(SQLite, Redis, PostgreSQL).")
@click.option("--cron", "cron_config", metavar="CONFIG",
              help="Also run the cron entries CONFIG registers (a .py path or a dotted module); "
                   "any number of workers may: each tick is enqueued once.")
@url_option
def worker(
    queues: tuple[str, ...], burst: bool, name: str | None, concurrency: int,
    max_jobs: int | None, with_scheduler: bool, paths: tuple[str, ...], logging_level: str,
    worker_class: str | None, cron_config: str | None, url: str | None,
) -> int:
    """Take jobs from QUEUES (default: [tool.plugq] queues, else 'default') and run them.

    Queues are served in the order given. SIGINT/SIGTERM: finish the current
    job and stop; a second signal stops at once.
    """
    settings = _settings()
    _configure_logging(logging_level)
    names = list(queues) or list(settings.queues)
    for path in reversed(paths):
        sys.path.insert(0, os.path.abspath(path))
    if concurrency > 1:
        return _supervise(names, concurrency, burst, name, max_jobs, with_scheduler, paths,
                          logging_level, worker_class, url, cron_config)
    from ._supervisor import watch_supervisor
    from .worker import Worker

    backend = _backend(url)
    _refuse_memory(backend, "plugq worker",
                   "no other process can enqueue to this worker and it would wait forever")
    scheduler = _cron_scheduler(backend, cron_config) if cron_config else None
    w = Worker(names, connection=backend, name=name, worker_class=worker_class)
    shutdown = _Shutdown(w.request_stop)
    shutdown.install()
    watch_supervisor(w.request_stop)
    if scheduler is not None:
        scheduler.start()
    try:
        w.work(burst=burst, max_jobs=max_jobs, with_scheduler=with_scheduler,
               logging_level=logging_level.upper())
    except _ColdShutdown:
        return EXIT_OK
    except ConfigurationError:
        raise  # exit 2 (an empty PLUGQ_SECRET_KEY, say), not the name clash below
    except NotSupportedError as exc:
        # A worker class the backend cannot run: the configuration's mistake.
        raise CliError(str(exc), EXIT_CONFIG) from None
    except ValueError as exc:
        # The one ValueError work() documents: the name is taken by a live worker.
        raise CliError(str(exc)) from None
    finally:
        if scheduler is not None:
            scheduler.stop()
    return EXIT_OK


def _cron_scheduler(backend: Backend, config: str) -> Any:
    from . import cron

    try:
        entries = cron.load(config)
        return cron.Scheduler(backend, entries)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from None
    except NotSupportedError as exc:
        raise CliError(str(exc), EXIT_CONFIG) from None


def _refuse_memory(backend: Backend, what: str, why: str) -> None:
    """A command-line process on memory:// sees a store no other process shares: refuse it."""
    if backend.scheme == "memory":
        raise CliError(
            f"{backend.safe_url()} lives in one process; {what}: {why}; use a backend shared "
            "between processes (sqlite:///PATH, redis://…)",
            EXIT_CONFIG,
        )


def _supervise(
    names: list[str], concurrency: int, burst: bool, name: str | None, max_jobs: int | None,
    with_scheduler: bool, paths: Sequence[str], logging_level: str, worker_class: str | None,
    url: str | None, cron_config: str | None = None,
) -> int:
    from ._supervisor import RunningJob, Supervisor

    backend = _backend(url)
    _refuse_memory(backend, "--concurrency", "each worker process would see a store of its own")
    env = dict(os.environ)
    # Children get the URL resolved here, through the environment so that a
    # password does not show in `ps`.
    env["PLUGQ_URL"] = backend.url

    def command(index: int, generation: int) -> list[str]:
        argv = [sys.executable, "-m", "plugq.cli", "worker", *names,
                "--logging-level", logging_level]
        for path in paths:
            argv += ["--path", os.path.abspath(path)]
        if name:
            # A restarted child needs a fresh name: its dead predecessor's
            # registration may still look alive until its lease runs out.
            argv += ["--name", f"{name}.{index}" + (f".r{generation}" if generation else "")]
        if burst:
            argv.append("--burst")
        if max_jobs is not None:
            argv += ["--max-jobs", str(max_jobs)]
        argv.append("--with-scheduler" if with_scheduler else "--without-scheduler")
        if worker_class:
            argv += ["--worker-class", worker_class]
        if cron_config:
            argv += ["--cron", os.path.abspath(cron_config) if os.path.isfile(cron_config)
                     else cron_config]
        return argv

    def fail_overrun(job: RunningJob) -> None:
        # The worker was killed for running past the job's timeout: store the
        # timeout failure its process could not (the fork class's rule).
        if not isinstance(backend, Engine):
            return  # a backend with its own runner: its lease recovery takes the job
        rec = backend.storage.get(job.job_id)
        if rec is None or rec.status is not JobStatus.STARTED or rec.attempts != job.attempts:
            return  # it ended, or was taken over, before the kill
        spec = WorkerSpec(name=job.worker, queues=[rec.origin])
        fail_killed(backend, rec, spec, killed_at_timeout(rec), fail_outside)

    log.info("Supervisor %d: starting %d workers on %s, queues: %s", os.getpid(), concurrency,
             backend.safe_url(), ", ".join(names))
    return Supervisor(concurrency, command, env, on_overrun=fail_overrun).run()


# -- cron -------------------------------------------------------------------


@cli.command("cron")
@click.argument("config")
@click.option("--path", "-P", "paths", multiple=True, default=["."], show_default=True,
              type=click.Path(file_okay=False), help="Add to sys.path to import tasks.")
@click.option("--burst", "-b", is_flag=True, help="Enqueue what is due now, then stop.")
@click.option("--logging-level", "-l", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                                case_sensitive=False))
@url_option
def cron_command(config: str, paths: tuple[str, ...], burst: bool, logging_level: str,
                 url: str | None) -> int:
    """Run the cron entries CONFIG registers (a .py path or a dotted module), alone.

    Any number of schedulers (and workers started with --cron) may run the
    same CONFIG: each tick is enqueued exactly once. Ticks missed while none
    ran are enqueued once at start, never as a burst.
    """
    _configure_logging(logging_level)
    for path in reversed(paths):
        sys.path.insert(0, os.path.abspath(path))
    backend = _backend(url)
    if not burst:
        _refuse_memory(backend, "plugq cron", "no worker in another process would see its jobs")
    scheduler = _cron_scheduler(backend, config)
    shutdown = _Shutdown(scheduler.stop_event.set)
    shutdown.install()
    try:
        scheduler.run(burst=burst)
    except _ColdShutdown:
        return EXIT_OK
    return EXIT_OK


# -- info -------------------------------------------------------------------


@cli.command()
@click.argument("queues", nargs=-1)
@click.option("--interval", "-i", type=click.FloatRange(min=0.05), default=None,
              help="Redraw every SECONDS until Ctrl-C (with --json: one line per interval).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@url_option
def info(queues: tuple[str, ...], interval: float | None, as_json: bool, url: str | None) -> int:
    """Queues with their job counts per status, and workers with their state."""
    from rich.live import Live

    from . import _monitor

    backend = _backend(url, read_only=True)
    if interval is None:
        snap = _monitor.snapshot(backend, queues)
        if as_json:
            _echo_json(snap)
        else:
            _console().print(_monitor.render(snap))
        return EXIT_OK
    try:
        if as_json:
            while True:
                _echo_json(_monitor.snapshot(backend, queues))
                sys.stdout.flush()
                time.sleep(interval)
        console = _console()
        with Live(_monitor.render(_monitor.snapshot(backend, queues)), console=console,
                  auto_refresh=False, redirect_stdout=False) as live:
            while True:
                time.sleep(interval)
                live.update(_monitor.render(_monitor.snapshot(backend, queues)), refresh=True)
    except KeyboardInterrupt:
        # Ctrl-C is how a live view ends: not an error.
        return EXIT_OK


# -- enqueue, jobs, empty, requeue ------------------------------------------


def _parse_arg(text: str) -> Any:
    """JSON where it parses (numbers, lists, objects, true/null), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class _EnqueueCommand(click.Command):
    """Options are options wherever they stand; an unknown one says how to pass a dash argument.

    A mistyped option after FUNC used to become a task argument, silently
    (``--quue high`` enqueued ``f(1, '--quue', 'high')``).
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            raise click.UsageError(
                f"{exc.format_message()} Task arguments that start with '-' go after '--', "
                "e.g. plugq enqueue tasks.add -- -1 2", ctx=ctx,
            ) from None


@cli.command(cls=_EnqueueCommand)
@click.option("--queue", "-q", default="default", show_default=True)
@click.argument("func")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@url_option
def enqueue(queue: str, func: str, args: tuple[str, ...], url: str | None) -> int:
    """Enqueue FUNC (a dotted path, e.g. tasks.add) with ARGS; prints the job id.

    Each ARG is parsed as JSON where it parses (1, 2.5, true, null, [1,2],
    {"a": 1}, "\\"quoted\\""), else passed as a string. Options may stand
    anywhere; ARGS that start with '-' go after '--':
    plugq enqueue tasks.add --queue high -- -1 2
    """
    from .job import func_path
    from .queue import Queue

    backend = _backend(url)
    q = Queue(queue, connection=backend)
    func_path(func)  # a mistake in the command itself is reported before the backend's
    _refuse_memory(backend, "plugq enqueue",
                   "the job would be lost when this command exits")
    job = q.enqueue(func, *(_parse_arg(a) for a in args))
    click.echo(job.id)
    return EXIT_OK


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


@cli.command()
@click.argument("queue")
@click.option("--status", "-s", default=JobStatus.QUEUED.value, show_default=True,
              type=click.Choice([s.value for s in JobStatus]))
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@url_option
def jobs(queue: str, status: str, limit: int, as_json: bool, url: str | None) -> int:
    """List QUEUE's jobs in one status (queued: in the order workers take them)."""
    from .job import Job

    backend = _backend(url, read_only=True)
    if status == JobStatus.RATE_LIMITED.value:
        backend.require("rate_limit")
    ids = backend.job_ids(queue, JobStatus(status), 0, limit)
    found = [Job(backend, r) for r in backend.fetch_jobs(ids) if r is not None]
    reports: list[str | None] = [None] * len(found)
    if "progress" in backend.features:
        reports = backend.get_progress([job.id for job in found])
    rows = []
    for job, report in zip(found, reports, strict=True):
        progress = Progress.loads(report)
        outcome: Any = None
        if job.is_finished:
            try:
                outcome = job.return_value(refresh=False)
            except UntrustedJobError as exc:
                # Shown, never deserialized: a listing must not run a planted value.
                outcome = f"<unreadable: {exc}>"
        elif job.exc_info:
            outcome = job.exc_info.strip().splitlines()[-1]
        rows.append({
            "id": job.id, "status": job.get_status(refresh=False).value,
            "description": job.description, "enqueued_at": job.enqueued_at,
            "scheduled_for": job.scheduled_for, "ended_at": job.ended_at, "result": outcome,
            "progress": None if progress is None else asdict(progress),
        })
    if as_json:
        _echo_json(rows)
        return EXIT_OK
    # One line per job whatever the terminal's width: the id whole (it is what
    # `plugq job ID` takes), the rest cut with "…" rather than folded into a
    # column of fragments; `plugq job ID` shows a job in full.
    from rich import box
    from rich.table import Table

    table = Table(title=f"{queue}: {status} ({len(rows)} shown, limit {limit})",
                  title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False,
                  expand=True)
    table.add_column("id", no_wrap=True, min_width=36)
    scheduled = status == JobStatus.SCHEDULED.value
    whens = [_when(row["scheduled_for"] if scheduled else row["enqueued_at"]) for row in rows]
    table.add_column("due" if scheduled else "enqueued", no_wrap=True,
                     min_width=max((len(w) for w in whens), default=8))
    table.add_column("description", no_wrap=True, overflow="ellipsis", ratio=1, min_width=8)
    progressed = any(row["progress"] for row in rows)
    if progressed:
        table.add_column("progress", no_wrap=True, overflow="ellipsis", min_width=8)
    # Queued, scheduled, deferred jobs have no outcome: the width goes to the description.
    outcomes = any(row["result"] is not None for row in rows)
    if outcomes:
        table.add_column("result / error", no_wrap=True, overflow="ellipsis", ratio=1,
                         min_width=8)
    for row, when in zip(rows, whens, strict=True):
        cells = [row["id"], when, row["description"]]
        if progressed:
            cells.append(str(Progress(**row["progress"])) if row["progress"] else "")
        if outcomes:
            cells.append("" if row["result"] is None else _short(row["result"]))
        table.add_row(*cells)
    _console().print(table)
    return EXIT_OK


def _when(moment: datetime | None) -> str:
    """A time of day, with the date when it is not today (a job due tomorrow)."""
    if moment is None:
        return "-"
    local = moment.astimezone()
    if local.date() == datetime.now().astimezone().date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%Y-%m-%d %H:%M:%S")


# -- job ----------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """``value`` if JSON can hold it, else its repr (a result of any type must print)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


@cli.command("job")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@url_option
def job_command(job_id: str, as_json: bool, url: str | None) -> int:
    """One job whole: status, times, worker, attempts, arguments, result or full traceback."""
    from .job import Job

    backend = _backend(url, read_only=True)
    job = Job.fetch(job_id, connection=backend)
    status = job.get_status(refresh=False)
    try:
        args: Any = [_plain(a) for a in job.args]
        kwargs: Any = {k: _plain(v) for k, v in job.kwargs.items()}
    except Exception as exc:
        # Arguments a reader cannot load (an unimportable class, a refused
        # payload) must not hide the rest of the job.
        args = kwargs = f"<cannot be shown: {exc}>"
    data: dict[str, Any] = {
        "id": job.id, "status": status.value, "queue": job.origin,
        "func_name": job.func_name, "description": job.description,
        "args": args, "kwargs": kwargs,
        "created_at": job.created_at, "enqueued_at": job.enqueued_at,
        "scheduled_for": job.scheduled_for, "started_at": job.started_at,
        "ended_at": job.ended_at, "worker_name": job.worker_name,
        "attempts": job.attempts, "retries_left": job.retries_left,
        "timeout": job.timeout, "result_ttl": job.result_ttl,
        "depends_on": job.dependency_ids,
        "result": _plain(job.return_value(refresh=False)) if job.is_finished else None,
        "exc_info": job.exc_info,
    }
    if as_json:
        _echo_json(data)
        return EXIT_OK
    width = max(len(k) for k in data)
    for key, value in data.items():
        if key in ("result", "exc_info") or value is None or value == []:
            continue
        shown = value.isoformat(sep=" ") if isinstance(value, datetime) else value
        click.echo(f"{key:<{width}}  {shown}")
    if job.is_finished:
        click.echo(f"{'result':<{width}}  {data['result']!r}")
    if data["exc_info"]:
        click.echo("")
        click.echo(data["exc_info"].rstrip())
    return EXIT_OK


@cli.command()
@click.argument("queues", nargs=-1, required=True)
@url_option
def empty(queues: tuple[str, ...], url: str | None) -> int:
    """Delete every queued job of each QUEUE."""
    backend = _backend(url)
    for name in queues:
        removed = backend.empty_queue(name)
        click.echo(f"{name}: {removed} job(s) removed")
    return EXIT_OK


@cli.command()
@click.argument("job_ids", nargs=-1)
@click.option("--queue", "-q", default="default", show_default=True,
              help="The queue whose failed jobs --all requeues.")
@click.option("--all", "all_failed", is_flag=True, help="Requeue every failed job of --queue.")
@url_option
def requeue(job_ids: tuple[str, ...], queue: str, all_failed: bool, url: str | None) -> int:
    """Put failed (or canceled, stopped) jobs back on their queue: --all, or JOB_ID…"""
    if all_failed == bool(job_ids):
        raise CliError("plugq requeue: give either --all or one or more JOB_IDs")
    backend = _backend(url)
    ids = list(job_ids) or backend.job_ids(queue, JobStatus.FAILED)
    done, errors = 0, 0
    for job_id in ids:
        try:
            backend.requeue_job(job_id)
            done += 1
        except (NoSuchJobError, InvalidJobOperation) as exc:
            click.echo(f"plugq: {job_id}: {_mask(str(exc))}", err=True)
            errors += 1
    click.echo(f"Requeued {done} job(s)")
    return EXIT_ERROR if errors else EXIT_OK


# -- backends, config -------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def backends(as_json: bool) -> int:
    """The installed backends: URL scheme, the plugin that serves it, its version."""
    from .plugins import backends as registered

    entries = sorted(registered().values(), key=lambda e: e.scheme)
    if as_json:
        _echo_json([{"scheme": e.scheme, "plugin": e.plugin, "version": e.version}
                    for e in entries])
        return EXIT_OK
    from rich.table import Table

    table = Table(title="Installed backends", title_justify="left")
    for column in ("scheme", "plugin", "version"):
        table.add_column(column)
    for e in entries:
        table.add_row(f"{e.scheme}://", e.plugin, e.version or "-")
    _console().print(table)
    return EXIT_OK


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@url_option
def config(as_json: bool, url: str | None) -> int:
    """The resolved settings and where each one came from (does not connect)."""
    from .queue import DEFAULT_RESULT_TTL, DEFAULT_TIMEOUT

    settings = _settings()
    # Not configured means RQ's defaults apply: show the value a job gets, not null.
    timeout = settings.job_timeout if settings.job_timeout is not None else DEFAULT_TIMEOUT
    values: dict[str, Any] = {
        "url": mask_url(url) if url else mask_url(settings.url),
        "serializer": settings.serializer,
        "job_timeout": int(timeout) if float(timeout).is_integer() else timeout,
        "result_ttl": settings.result_ttl if settings.result_ttl is not None
        else DEFAULT_RESULT_TTL,
        "queues": settings.queues,
        "allowed_modules": settings.allowed_modules,
    }
    if url:
        validate_url(url, where="--url")
    sources = {key: settings.sources.get(key, "default") for key in values}
    if url:
        sources["url"] = "--url"
    if as_json:
        _echo_json({"settings": values, "sources": sources})
        return EXIT_OK
    from rich.table import Table
    from rich.text import Text

    table = Table(title="plugq configuration", title_justify="left")
    for column in ("key", "value", "from"):
        table.add_column(column)
    for key, value in values.items():
        # Text, not markup: "[tool.plugq] in …" would be taken for a style tag.
        table.add_row(Text(key), Text(json.dumps(value)), Text(sources[key]))
    _console().print(table)
    return EXIT_OK


# -- demo -------------------------------------------------------------------


@cli.command()
@click.option("--jobs", "n_jobs", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@url_option
def demo(n_jobs: int, workers: int, url: str | None) -> int:
    """Enqueue digit-sum jobs, work them off live, report throughput.

    Without --url it runs on SQLite in a temporary file (not your configured
    backend); with --url it runs, unchanged, on redis://… or memory://.
    """
    from ._demo import run_demo

    _settings()
    console = _console()
    result = run_demo(n_jobs, workers, url, console)
    console.print(
        f"[bold]{result.finished}[/] of {result.jobs} jobs finished, {result.failed} failed, "
        f"with {result.workers} worker(s) on [cyan]{result.url}[/] in {result.seconds:.2f} s: "
        f"[bold green]{result.throughput:,.0f} jobs/s[/]"
    )
    if result.samples:
        console.print("Sample results:")
        for arg, value, ok in result.samples:
            mark = "[green]✓[/]" if ok else "[red]✗ wrong[/]"
            console.print(f"  digit_sum({arg!r}) = {value!r} {mark}")
    if result.first_error:
        console.print(f"[red]First failure:[/] {result.first_error}")
    all_ok = result.failed == 0 and all(ok for _, _, ok in result.samples)
    return EXIT_OK if all_ok else EXIT_ERROR


# -- dashboard: the command lives in plugq.dashboard._cli ---------------------

from .dashboard._cli import register as _register_dashboard  # noqa: E402

_register_dashboard(cli)


# -- entry point ------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"plugq: error: {_mask(message)}", err=True)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point: run the command and map errors to exit codes."""
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="plugq",
                      standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", EXIT_ERROR)
    except CliError as exc:
        _fail(exc.format_message(), exc.code)
    except click.ClickException as exc:
        # Usage mistakes (bad option, missing argument): click's message and
        # hint, but exit code 1; 2 is kept for configuration errors.
        exc.show()
        sys.exit(EXIT_ERROR)
    except CONFIG_ERRORS as exc:
        _fail(str(exc), EXIT_CONFIG)
    except PlugqError as exc:
        _fail(str(exc), EXIT_ERROR)
    except ValueError as exc:
        # Raised by the public API for bad input (a queue name, a job id, a
        # TTL): a user mistake, reported as one line. PLUGQ_DEBUG=1 shows
        # the traceback, for when it is plugq's mistake instead.
        if os.environ.get("PLUGQ_DEBUG"):
            raise
        _fail(str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        if _is_connection_error(exc):
            _fail(f"cannot reach the backend: {exc}", EXIT_CONFIG)
        raise
    sys.exit(rv if isinstance(rv, int) else EXIT_OK)


if __name__ == "__main__":
    main()

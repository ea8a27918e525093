"""What ``plugq info`` and ``plugq demo`` show: a snapshot of queues and workers.

The snapshot is plain data (it is also the ``--json`` output); the rich
renderables are built from it, so the live view and the JSON can never
disagree about a count.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .backend import Backend
from .exceptions import NotSupportedError
from .progress import Progress
from .storage import JobStatus

#: Column order of the queue table: the path a job takes, then the side exits.
STATUS_ORDER: tuple[JobStatus, ...] = (
    JobStatus.QUEUED,
    JobStatus.STARTED,
    JobStatus.DEFERRED,
    JobStatus.SCHEDULED,
    JobStatus.FINISHED,
    JobStatus.FAILED,
    JobStatus.CANCELED,
    JobStatus.STOPPED,
)

_STATUS_STYLE = {
    JobStatus.QUEUED: "cyan",
    JobStatus.STARTED: "yellow",
    JobStatus.FINISHED: "green",
    JobStatus.FAILED: "red",
}


def queue_counts(backend: Backend, queue: str) -> dict[str, int]:
    """Counts per status for one queue (a status the backend cannot count is left out)."""
    counts: dict[str, int] = {}
    extra = (JobStatus.RATE_LIMITED,) if "rate_limit" in backend.features else ()
    for status in (*STATUS_ORDER, *extra):
        try:
            counts[status.value] = backend.count(queue, status)
        except NotSupportedError:
            # e.g. a backend without a 'stopped' registry: leave the column empty
            # rather than fail the whole view.
            continue
    return counts


def snapshot(backend: Backend, queues: Sequence[str] = ()) -> dict[str, Any]:
    """Queues (``queues``, or every queue the backend knows) and workers, as plain data."""
    names = list(queues) or backend.queue_names()
    workers = []
    for record in sorted(backend.workers(), key=lambda w: w.name):
        entry = asdict(record)
        if queues and not set(entry.get("queues") or ()) & set(names):
            continue
        workers.append(entry)
    snap: dict[str, Any] = {
        "url": backend.safe_url(),
        "time": time.time(),
        "queues": {name: queue_counts(backend, name) for name in names},
        "workers": workers,
    }
    if "progress" in backend.features:
        running = [w["current_job_id"] for w in workers if w.get("current_job_id")]
        reports = dict(zip(running, backend.get_progress(running), strict=True))
        for w in workers:
            found = Progress.loads(reports.get(w.get("current_job_id") or ""))
            w["progress"] = None if found is None else asdict(found)
    if "values" in backend.features:
        from . import cron

        snap["cron"] = cron.status(backend)
    return snap


def queues_table(snap: dict[str, Any], title: str | None = "Queues") -> Table:
    """One row per queue, one column per status."""
    # One space between borderless columns, so that nine of them fit in 80.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0),
                  pad_edge=False, show_edge=False)
    table.add_column("queue", style="bold", overflow="fold", min_width=5)
    # rate_limited gets a column only while some job waits for a RateLimit.
    limited = any(c.get(JobStatus.RATE_LIMITED.value) for c in snap["queues"].values())
    order = (*STATUS_ORDER, JobStatus.RATE_LIMITED) if limited else STATUS_ORDER
    for status in order:
        table.add_column(status.value, justify="right", style=_STATUS_STYLE.get(status),
                         no_wrap=True, min_width=len(status.value))
    for name, counts in snap["queues"].items():
        table.add_row(name, *(_cell(counts.get(s.value)) for s in order))
    if not snap["queues"]:
        table.add_row(Text("no queues yet", style="dim"), *([""] * len(order)))
    return table


def workers_table(snap: dict[str, Any]) -> Table:
    """One row per registered worker: its state and what it is running."""
    table = Table(title="Workers", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 0),
                  pad_edge=False, show_edge=False)
    for column in ("name", "state", "queues", "current job", "ok", "failed", "pid"):
        table.add_column(column, justify="right" if column in ("ok", "failed", "pid") else "left")
    for w in snap["workers"]:
        state = str(w.get("state") or "?")
        table.add_row(
            str(w["name"]),
            Text(state, style="yellow" if state == "busy" else "green"),
            ", ".join(w.get("queues") or ()),
            str(w.get("current_job_id") or "-") + _progress_text(w.get("progress")),
            str(w.get("successful_jobs", "")),
            str(w.get("failed_jobs", "")),
            f"{w.get('pid', '')}@{w.get('hostname', '')}",
        )
    if not snap["workers"]:
        table.add_row(Text("no workers", style="dim"), "", "", "", "", "", "")
    return table


def render(snap: dict[str, Any]) -> RenderableType:
    """The whole ``plugq info`` view."""
    header = Text.assemble(
        ("plugq ", "bold"),
        (snap["url"], "cyan"),
        f"  {len(snap['queues'])} queue(s), {len(snap['workers'])} worker(s)  ",
        (time.strftime("%H:%M:%S", time.localtime(snap["time"])), "dim"),
    )
    parts: list[RenderableType] = [header, queues_table(snap), workers_table(snap)]
    if snap.get("cron"):
        parts.append(cron_table(snap))
    return Group(*parts)


def cron_table(snap: dict[str, Any]) -> Table:
    """One row per cron entry the store knows: schedule, last and next run."""
    table = Table(title="Cron", title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1),
                  pad_edge=False, show_edge=False)
    for column in ("entry", "schedule", "last run (UTC)", "next run (UTC)", "last job"):
        table.add_column(column, overflow="fold")
    for e in snap["cron"]:
        table.add_row(e["name"], e["schedule"], _utc(e["last_run"]), _utc(e["next_run"]),
                      e["last_job_id"] or "-")
    return table


def _utc(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _progress_text(progress: dict[str, Any] | None) -> str:
    if not progress:
        return ""
    return f" ({Progress(**progress)})"


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)

"""The Starlette application: pages, actions, ``/api/…`` and ``/metrics``."""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..backend import Backend
from ..command import send_stop_job_command
from ..connection import connect, resolve_connection
from ..exceptions import InvalidJobOperation, NoSuchJobError
from ..job import Job
from ..queue import Queue
from . import _data, _metrics

HERE = Path(__file__).parent
CSRF_COOKIE = "plugq_csrf"
CSRF_FIELD = "csrf_token"
PER_PAGE = 50
#: How long a computed chart is reused: every open page polls it.
CHART_CACHE_SECONDS = 5.0

#: Scripts and styles only from the package itself: an injected inline script
#: would not run even if something escaped the templates' autoescaping.
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _fmt_time(ts: float | None) -> str:
    if ts is None:
        return "\u2013"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _fmt_age(seconds: float | None) -> str:
    if seconds is None:
        return "\u2013"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    return f"{s // 3600}h {s % 3600 // 60}m"


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``USER:PASSWORD`` (the password may contain ':'); None for empty.

    Raises:
        ValueError: no ':' or an empty user or password.
    """
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ValueError("--auth / PLUGQ_DASHBOARD_AUTH must be USER:PASSWORD")
    return user, password


class _Guard(BaseHTTPMiddleware):
    """HTTP Basic auth (when configured), the CSRF cookie, and security headers."""

    def __init__(self, app: Any, auth: tuple[str, str] | None) -> None:
        super().__init__(app)
        self.auth = auth

    def _authorized(self, request: Request) -> bool:
        if self.auth is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        # Both compared, always, so the time taken does not tell which was wrong.
        ok_user = hmac.compare_digest(user.encode(), self.auth[0].encode())
        ok_password = hmac.compare_digest(password.encode(), self.auth[1].encode())
        return ok_user and ok_password

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        started = time.perf_counter()
        if not self._authorized(request):
            response: Response = PlainTextResponse(
                "authentication required\n", status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="plugq dashboard", charset="UTF-8"'},
            )
        else:
            token = request.cookies.get(CSRF_COOKIE) or ""
            fresh = None
            if len(token) < 32:
                fresh = token = secrets.token_urlsafe(32)
            request.state.csrf = token
            response = await call_next(request)
            if fresh is not None:
                response.set_cookie(CSRF_COOKIE, fresh, httponly=True, samesite="strict",
                                    path=request.scope.get("root_path") or "/")
        for k, v in _SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        # The time spent in the app (reading the store, rendering): what the
        # benchmark measures, and what a browser's network panel shows.
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
        return response


class Dashboard:
    """The routes, over one backend."""

    def __init__(self, backend: Backend, *, read_only: bool) -> None:
        self.backend = backend
        self.read_only = read_only
        self._chart: tuple[float, dict[str, Any]] | None = None
        self._ended = _data.EndedAtCache()
        self._chart_lock = threading.Lock()
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["time"] = _fmt_time
        self.env.filters["age"] = _fmt_age
        self.env.filters["q"] = lambda s: quote(str(s), safe="")

    # -- helpers --------------------------------------------------------------

    def render(self, request: Request, name: str, status_code: int = 200, **ctx: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        html = self.env.get_template(name).render(
            base=base, csrf=request.state.csrf, read_only=self.read_only,
            url=self.backend.safe_url(), request_path=request.url.path, now=time.time(), **ctx,
        )
        return HTMLResponse(html, status_code=status_code)

    def chart(self) -> dict[str, Any]:
        """The throughput chart, computed at most once per CHART_CACHE_SECONDS."""
        with self._chart_lock:  # many pages poll it: one computes, the others wait
            now = time.monotonic()
            if self._chart is None or now - self._chart[0] > CHART_CACHE_SECONDS:
                self._chart = (now, _data.throughput(self.backend, cache=self._ended))
            return self._chart[1]

    def _redirect_back(self, request: Request, form: Any, default: str) -> RedirectResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        target = str(form.get("next") or "")
        # Only a path on this site: never an absolute or scheme-relative URL.
        parts = urlsplit(target)
        if not target.startswith("/") or target.startswith("//") or parts.scheme or parts.netloc:
            target = default
        return RedirectResponse(base + target, status_code=303)

    async def _checked_form(self, request: Request) -> Any:
        """The POSTed form, or a 403 response when the CSRF check or read-only mode refuses it."""
        if self.read_only:
            return PlainTextResponse("read-only dashboard: actions are disabled\n", status_code=403)
        origin = request.headers.get("origin")
        if origin and origin != "null":
            host = request.headers.get("host", "")
            if urlsplit(origin).netloc != host:
                return PlainTextResponse("cross-site request refused\n", status_code=403)
        form = await request.form()
        sent = str(form.get(CSRF_FIELD) or "")
        cookie = request.cookies.get(CSRF_COOKIE) or ""
        if not sent or not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
            return PlainTextResponse("missing or wrong CSRF token: nothing was changed\n",
                                     status_code=403)
        return form

    # -- pages ----------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        return self.render(request, "overview.html", snap=_data.overview(self.backend),
                           page="overview")

    def queue(self, request: Request) -> Response:
        name = request.path_params["name"]
        status = request.query_params.get("status", "queued")
        if status not in _data.STATUSES:
            return self.render(request, "error.html", 404, message=f"unknown status {status!r}")
        page = _int(request.query_params.get("page"), 1)
        try:
            data = _data.queue_page(self.backend, name, status, page, PER_PAGE)
        except ValueError as exc:  # not a valid queue name
            return self.render(request, "error.html", 404, message=str(exc))
        return self.render(request, "queue.html", data=data, page="queue",
                           message=request.query_params.get("message"))

    def find(self, request: Request) -> Response:
        job_id = (request.query_params.get("id") or "").strip()
        base = request.scope.get("root_path", "").rstrip("/")
        if job_id and _data.find_job(self.backend, job_id):
            return RedirectResponse(f"{base}/jobs/{quote(job_id, safe='')}", status_code=303)
        return self.render(request, "error.html", 404, message=f"no job with id {job_id!r}")

    def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        try:
            detail = _data.job_detail(self.backend, job_id)
        except (NoSuchJobError, ValueError):
            return self.render(request, "error.html", 404,
                               message=f"no job with id {job_id!r} (deleted, expired or never there)")
        return self.render(request, "job.html", job=detail, page="job")

    def workers(self, request: Request) -> Response:
        return self.render(request, "workers.html", workers=_data.worker_rows(self.backend),
                           page="workers")

    def scheduled(self, request: Request) -> Response:
        return self.render(request, "jobs.html", jobs=_data.jobs_in(self.backend, "scheduled"),
                           title="Scheduled jobs", page="scheduled", queues=[])

    def failed(self, request: Request) -> Response:
        snap = _data.overview(self.backend)
        queues = [q for q in snap["queues"] if q["counts"]["failed"]]
        return self.render(request, "jobs.html", jobs=_data.jobs_in(self.backend, "failed"),
                           title="Failed jobs", page="failed", queues=queues)

    # -- actions --------------------------------------------------------------

    async def job_action(self, request: Request) -> Response:
        checked = await self._checked_form(request)
        if isinstance(checked, Response):
            return checked
        # The store is read and written blocking: off the event loop.
        return await run_in_threadpool(self._job_action, request, checked)

    def _job_action(self, request: Request, checked: Any) -> Response:
        job_id = request.path_params["job_id"]
        action = request.path_params["action"]
        try:
            job = Job.fetch(job_id, connection=self.backend)
            if action == "stop":
                # rq's stop-job command: the worker running it interrupts it
                # (status stopped); a job that is not running is a 409 below.
                send_stop_job_command(self.backend, job_id)
            elif action == "requeue":
                job.requeue()
            elif action == "cancel":
                job.cancel()
            elif action == "delete":
                job.delete()
                return self._redirect_back(request, checked,
                                           f"/queues/{quote(job.origin, safe='')}")
            else:
                return PlainTextResponse(f"unknown action {action!r}\n", status_code=404)
        except NoSuchJobError:
            return self.render(request, "error.html", 404, message=f"no job with id {job_id!r}")
        except InvalidJobOperation as exc:
            return self.render(request, "error.html", 409, message=str(exc))
        return self._redirect_back(request, checked, f"/jobs/{quote(job_id, safe='')}")

    async def queue_action(self, request: Request) -> Response:
        checked = await self._checked_form(request)
        if isinstance(checked, Response):
            return checked
        return await run_in_threadpool(self._queue_action, request)

    def _queue_action(self, request: Request) -> Response:
        name = request.path_params["name"]
        action = request.path_params["action"]
        q = Queue(name, connection=self.backend)
        if action == "empty":
            n = q.empty()
            message = f"removed {n} queued job(s)"
        elif action == "requeue-failed":
            reg = q.failed_job_registry
            n = 0
            for job_id in reg.get_job_ids():
                try:
                    reg.requeue(job_id)
                    n += 1
                except (InvalidJobOperation, NoSuchJobError):
                    continue  # requeued or deleted meanwhile
            message = f"requeued {n} failed job(s)"
        else:
            return PlainTextResponse(f"unknown action {action!r}\n", status_code=404)
        base = request.scope.get("root_path", "").rstrip("/")
        return RedirectResponse(
            f"{base}/queues/{quote(name, safe='')}?message={quote(message)}", status_code=303)

    # -- machine-readable -----------------------------------------------------

    def metrics(self, request: Request) -> Response:
        return Response(_metrics.render(self.backend, self.chart),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    def api_overview(self, request: Request) -> Response:
        return JSONResponse({**_data.overview(self.backend), "read_only": self.read_only})

    def api_chart(self, request: Request) -> Response:
        return JSONResponse(self.chart())

    def api_queue(self, request: Request) -> Response:
        status = request.query_params.get("status", "queued")
        if status not in _data.STATUSES:
            return JSONResponse({"error": f"unknown status {status!r}"}, status_code=404)
        return JSONResponse(_data.queue_page(
            self.backend, request.path_params["name"], status,
            _int(request.query_params.get("page"), 1), PER_PAGE))

    def api_job(self, request: Request) -> Response:
        try:
            return JSONResponse(_data.job_detail(self.backend, request.path_params["job_id"]))
        except (NoSuchJobError, ValueError):
            return JSONResponse({"error": "no such job"}, status_code=404)

    def api_workers(self, request: Request) -> Response:
        return JSONResponse({"workers": _data.worker_rows(self.backend)})

    def api_jobs(self, request: Request) -> Response:
        status = request.path_params["status"]
        if status not in ("failed", "scheduled"):
            return JSONResponse({"error": f"unknown list {status!r}"}, status_code=404)
        return JSONResponse({"jobs": _data.jobs_in(self.backend, status)})


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


def create_app(url: str | Backend | None = None, *, read_only: bool = False,
               auth: str | tuple[str, str] | None = None) -> Starlette:
    """The dashboard as an ASGI application over the backend at ``url`` (or a backend object).

    ``auth`` is ``"USER:PASSWORD"`` or a ``(user, password)`` pair; None
    leaves the dashboard open (the CLI refuses that on a non-loopback host).
    ``read_only`` hides every action and refuses their POSTs with 403.
    """
    credentials = parse_auth(auth) if isinstance(auth, str) or auth is None else auth
    backend = connect(url) if url is None or isinstance(url, str) else resolve_connection(url)
    d = Dashboard(backend, read_only=read_only)
    routes = [
        Route("/", d.overview),
        Route("/queues/{name}", d.queue),
        Route("/queues/{name}/{action}", d.queue_action, methods=["POST"]),
        Route("/find", d.find),
        Route("/jobs/{job_id}", d.job),
        Route("/jobs/{job_id}/{action}", d.job_action, methods=["POST"]),
        Route("/workers", d.workers),
        Route("/scheduled", d.scheduled),
        Route("/failed", d.failed),
        Route("/metrics", d.metrics),
        Route("/api/overview", d.api_overview),
        Route("/api/chart", d.api_chart),
        Route("/api/queues/{name}", d.api_queue),
        Route("/api/jobs/{job_id}", d.api_job),
        Route("/api/workers", d.api_workers),
        Route("/api/lists/{status}", d.api_jobs),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_Guard, auth=credentials)])
    app.state.dashboard = d
    return app

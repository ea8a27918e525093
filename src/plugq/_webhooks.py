"""Webhooks (rq 2.x ``Webhook``): an HTTP request when a job finishes or fails.

Off unless the job asks (``enqueue(…, webhooks=[Webhook(…)])``); only
``http``/``https``; each request has a timeout and runs in a helper thread
the worker waits on for at most that timeout, so a slow endpoint never holds
the worker longer. With ``PLUGQ_SECRET_KEY`` set, the URLs are covered by the
job's signature (:func:`plugq.security.fields_verified`): a tampered list is
not called. A failed request is logged, never raised.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any
from urllib.parse import urlparse

from ._clock import to_datetime
from .security import fields_verified
from .storage import JobRecord, JobStatus

log = logging.getLogger("plugq.webhook")

_WHEN = {JobStatus.FINISHED: "finished", JobStatus.FAILED: "failed"}


def check(url: Any, job_status: Any, method: Any, timeout: Any) -> None:
    """Raise ValueError unless the webhook is one plugq will send."""
    parsed = urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
    if job_status not in ("finished", "failed"):
        raise ValueError(f"job_status must be 'finished' or 'failed', got {job_status!r}")
    if method not in ("GET", "POST"):
        raise ValueError(f"method must be 'GET' or 'POST', got {method!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")


def _payload(rec: JobRecord, status: str) -> dict[str, Any]:
    enqueued, ended = to_datetime(rec.enqueued_at), to_datetime(rec.ended_at)
    body: dict[str, Any] = {
        "job_id": rec.id, "func_name": rec.func_name, "status": status,
        "enqueued_at": enqueued.isoformat() if enqueued else None,
        "ended_at": ended.isoformat() if ended else None,
    }
    if status == "failed":
        body["exc_info"] = rec.exc_info
    return body


def send(hook: dict[str, Any], rec: JobRecord, status: str) -> None:
    """One request, bounded by the hook's timeout; errors are logged."""
    # urllib.request (with http.client, email, ssl's helpers: ~600 KiB of a
    # worker's memory) is imported by the first webhook sent, not by every worker.
    from urllib.request import Request, urlopen

    try:
        check(hook["url"], hook["job_status"], hook.get("method", "GET"), hook.get("timeout", 10))
        headers = dict(hook.get("headers") or {})
        if hook.get("method", "GET") == "GET":
            request = Request(hook["url"], headers=headers, method="GET")
        else:
            headers.setdefault("Content-Type", "application/json")
            request = Request(hook["url"], data=json.dumps(_payload(rec, status)).encode(),
                              headers=headers, method="POST")
        with urlopen(request, timeout=hook.get("timeout", 10)):
            pass
    except Exception:
        log.warning("webhook %s for job %s failed", hook.get("url"), rec.id, exc_info=True)


def fire(rec: JobRecord, extras: dict[str, Any]) -> None:
    """Send the job's webhooks for the status it ended in (none: nothing happens)."""
    hooks = extras.get("webhooks")
    if not hooks:
        return
    status = _WHEN.get(rec.status)
    if status is None:
        return
    if not fields_verified(rec.id, {"webhooks": hooks, "on_stopped": extras.get("on_stopped")},
                           extras.get("sig")):
        log.error("job %s: webhooks not covered by its signature; not sent", rec.id)
        return
    for hook in hooks:
        if hook.get("job_status") != status:
            continue
        t = threading.Thread(target=send, args=(hook, rec, status), name="plugq-webhook",
                             daemon=True)
        t.start()
        t.join(float(hook.get("timeout", 10)))

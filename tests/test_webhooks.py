"""Webhooks (rq 2.x ``Webhook``) on the engine: off unless asked, http(s) only, bounded, signed.

Every request goes to an HTTP server this test starts on 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from plugq import Queue, Webhook, Worker, _extras
from plugq.testing import tasks
from plugq_memory import MemoryStorage


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.delay = 0.0
        self.url = ""


@pytest.fixture
def server() -> Iterator[Recorder]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _record(self, body: bytes) -> None:
            time.sleep(rec.delay)
            rec.requests.append({"method": self.command, "path": self.path, "body": body,
                                 "headers": dict(self.headers)})
            self.send_response(200)
            self.end_headers()

        def do_GET(self) -> None:
            self._record(b"")

        def do_POST(self) -> None:
            self._record(self.rfile.read(int(self.headers.get("Content-Length", 0))))

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    rec.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield rec
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def queue() -> Queue:
    return Queue("hooks", connection=MemoryStorage(f"memory://hooks-{uuid.uuid4().hex}"))


def run(queue: Queue) -> None:
    Worker([queue], connection=queue.backend).work(burst=True)


def test_finished_and_failed_webhooks(server, queue):
    ok = queue.enqueue(tasks.add, 1, 2, webhooks=[
        Webhook(f"{server.url}/done", job_status="finished"),
        Webhook(f"{server.url}/failed", job_status="failed"),
    ])
    bad = queue.enqueue(tasks.fail, "nope", webhooks=[
        Webhook(f"{server.url}/failed", job_status="failed", method="POST",
                headers={"X-Token": "t"}),
    ])
    run(queue)
    assert ok.result == 3 and bad.get_status() == "failed"
    assert [(r["method"], r["path"]) for r in server.requests] == [
        ("GET", "/done"), ("POST", "/failed")]
    body = json.loads(server.requests[1]["body"])
    assert body["job_id"] == bad.id and body["status"] == "failed" and "nope" in body["exc_info"]
    assert server.requests[1]["headers"]["X-Token"] == "t"


def test_off_unless_asked(server, queue):
    queue.enqueue(tasks.add, 1, 2)
    queue.enqueue(tasks.fail)
    run(queue)
    assert server.requests == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "127.0.0.1:80/x",
                                 "http://"])
def test_only_http_and_https(url):
    with pytest.raises(ValueError, match="http"):
        Webhook(url, job_status="finished")


@pytest.mark.parametrize("kwargs", [{"job_status": "started"}, {"job_status": "finished",
                                                                 "method": "PUT"},
                                    {"job_status": "finished", "timeout": 0}])
def test_bad_settings_refused(kwargs):
    with pytest.raises(ValueError):
        Webhook("http://127.0.0.1/x", **kwargs)


def test_a_slow_endpoint_holds_the_worker_at_most_its_timeout(server, queue):
    server.delay = 10
    job = queue.enqueue(tasks.add, 1, 2,
                        webhooks=[Webhook(f"{server.url}/slow", job_status="finished", timeout=1)])
    nxt = queue.enqueue(tasks.add, 2, 2)
    started = time.monotonic()
    run(queue)
    assert time.monotonic() - started < 5
    assert job.result == 3 and nxt.result == 4


def test_webhook_urls_are_covered_by_the_signature(server, queue, monkeypatch):
    monkeypatch.setenv("PLUGQ_SECRET_KEY", "k" * 32)
    good = queue.enqueue(tasks.add, 1, 1,
                         webhooks=[Webhook(f"{server.url}/good", job_status="finished")])
    bad = queue.enqueue(tasks.add, 1, 2,
                        webhooks=[Webhook(f"{server.url}/bad", job_status="finished")])
    # Someone with write access to the store points the second job elsewhere.
    storage = queue.backend.storage
    rec = storage.get(bad.id)
    meta, extras = _extras.split(rec)  # (the attacker has no key: what it writes is unsigned)
    extras["webhooks"][0]["url"] = f"{server.url}/evil"
    storage.set_meta(bad.id, _extras.join(bad.id, rec.serializer, meta, extras))
    run(queue)
    assert good.result == 2 and bad.result == 3
    assert [r["path"] for r in server.requests] == ["/good"]


def test_extras_are_hidden_from_job_meta(queue, server):
    job = queue.enqueue(tasks.add, 1, 2, meta={"mine": 1},
                        webhooks=[Webhook(f"{server.url}/x", job_status="finished")])
    assert job.meta == {"mine": 1}
    job.meta["more"] = 2
    job.save_meta()
    job.refresh()
    assert job.meta == {"mine": 1, "more": 2}
    run(queue)
    assert [r["path"] for r in server.requests] == ["/x"]

"""The dashboard over HTTP (no browser): pages, JSON, /metrics, CSRF, auth, read-only, payload rules."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
import warnings

import pytest
from prometheus_client.parser import text_string_to_metric_families

with warnings.catch_warnings():
    # Starlette 1.x asks for httpx2 behind its TestClient; httpx still works.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from plugq import Job, Queue, Worker
from plugq.dashboard import create_app
from plugq.testing import tasks


@pytest.fixture(params=["sqlite", "redis"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dash.db'}"
    server = request.getfixturevalue("redis_server")
    server.flushall()
    return server.url


@pytest.fixture
def mem_url():
    return f"memory://dash-{uuid.uuid4().hex}"


def client(url, **kw):
    return TestClient(create_app(url, **kw), base_url="http://127.0.0.1:9181")


def csrf(c: TestClient) -> str:
    c.get("/")
    return c.cookies["plugq_csrf"]


def seed(url):
    q, h = Queue("default", connection=url), Queue("high", connection=url)
    for i in range(3):
        q.enqueue(tasks.add, i, 1)
    failed = h.enqueue(tasks.fail, "bad")
    Worker([h, q], connection=url, name=f"w-{uuid.uuid4().hex[:6]}").work(burst=True)
    queued = [q.enqueue(tasks.add, 5, 5) for _ in range(2)]
    return failed, queued


def test_overview_and_api_counts(url):
    failed, _ = seed(url)
    c = client(url)
    r = c.get("/")
    assert r.status_code == 200
    snap = c.get("/api/overview").json()
    counts = {q["name"]: q["counts"] for q in snap["queues"]}
    assert counts["default"]["finished"] == 3 and counts["default"]["queued"] == 2
    assert counts["high"]["failed"] == 1
    chart = c.get("/api/chart").json()
    assert sum(chart["finished"]) == 3 and sum(chart["failed"]) == 1
    assert c.get(f"/jobs/{failed.id}").status_code == 200
    assert "ValueError" in c.get(f"/api/jobs/{failed.id}").json()["exc_info"]


def test_metrics_parse_with_prometheus_client(url):
    seed(url)
    text = client(url).get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    jobs = {(s.labels["queue"], s.labels["status"]): s.value for s in families["plugq_jobs"].samples}
    assert jobs[("default", "finished")] == 3
    assert jobs[("default", "queued")] == 2
    assert jobs[("high", "failed")] == 1
    assert "plugq_workers" in families
    ages = {s.labels["queue"]: s.value for s in families["plugq_queue_oldest_job_age_seconds"].samples}
    assert ages["default"] >= 0 and ages["high"] == 0
    ended = {s.labels["status"]: s.value for s in families["plugq_jobs_ended_last_hour"].samples}
    assert ended == {"finished": 3, "failed": 1}
    assert "plugq_worker_jobs_finished" in families  # counter: samples end in _total


def test_queue_page_newest_first_and_paginated(mem_url):
    q = Queue("many", connection=mem_url)
    ids = [q.enqueue(tasks.add, i, i).id for i in range(120)]
    c = client(mem_url)
    first = c.get("/api/queues/many?status=queued").json()
    assert first["total"] == 120 and first["pages"] == 3
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:50]
    last = c.get("/api/queues/many?status=queued&page=3").json()
    assert [j["id"] for j in last["jobs"]] == ids[::-1][100:]
    assert c.get("/queues/many?status=queued&page=2").status_code == 200
    assert c.get("/queues/no such?status=queued").status_code == 404


def test_find_by_id(mem_url):
    job = Queue("q", connection=mem_url).enqueue(tasks.add, 1, 2)
    c = client(mem_url)
    r = c.get(f"/find?id={job.id}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith(f"/jobs/{job.id}")
    assert c.get("/find?id=nope").status_code == 404
    assert c.get("/jobs/nope").status_code == 404


def test_actions_need_the_csrf_token(mem_url):
    failed, queued = seed(mem_url)
    c = client(mem_url)
    token = csrf(c)
    # No token, a wrong token, a foreign Origin: 403 and nothing changes.
    assert c.post(f"/jobs/{failed.id}/requeue").status_code == 403
    assert c.post(f"/jobs/{failed.id}/requeue", data={"csrf_token": "x" * 43}).status_code == 403
    r = c.post(f"/jobs/{failed.id}/requeue", data={"csrf_token": token},
               headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    assert c.post("/queues/default/empty").status_code == 403
    assert failed.get_status() == "failed" and len(Queue("default", connection=mem_url)) == 2
    # A token in the form but no cookie (a cross-site POST carries no SameSite cookie).
    fresh = TestClient(create_app(mem_url), base_url="http://127.0.0.1:9181")
    assert fresh.post(f"/jobs/{failed.id}/delete", data={"csrf_token": token}).status_code == 403
    assert Job.exists(failed.id, connection=mem_url)
    # With the token: done.
    r = c.post(f"/jobs/{failed.id}/requeue", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and failed.get_status() == "queued"
    r = c.post(f"/jobs/{queued[0].id}/cancel", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and queued[0].get_status() == "canceled"
    assert c.post(f"/jobs/{queued[0].id}/cancel", data={"csrf_token": token}).status_code == 409
    r = c.post(f"/jobs/{queued[0].id}/delete", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and not Job.exists(queued[0].id, connection=mem_url)
    # Stop is for a running job only: a failed one is a conflict, and unchanged.
    assert c.post(f"/jobs/{failed.id}/stop", data={"csrf_token": token}).status_code == 409
    assert failed.get_status() == "queued"
    # A redirect target is a local path only.
    r = c.post(f"/jobs/{failed.id}/cancel",
               data={"csrf_token": token, "next": "//evil.example/"}, follow_redirects=False)
    assert r.headers["location"] == f"/jobs/{failed.id}"


def test_stop_a_running_job_from_the_page(mem_url):
    q = Queue("default", connection=mem_url)
    job = q.enqueue(tasks.sleep, 30)
    w = Worker([q], connection=mem_url, name=f"dash-stop-{uuid.uuid4().hex[:6]}")
    t = threading.Thread(target=w.work, kwargs={"burst": True}, daemon=True)
    t.start()
    try:
        end = time.monotonic() + 15
        while job.get_status() != "started":
            assert time.monotonic() < end, "job did not start"
            time.sleep(0.02)
        c = client(mem_url)
        page = c.get(f"/jobs/{job.id}").text
        assert re.search(r'data-action="stop"(?![^>]*hidden)', page), "no Stop button on a running job"
        r = c.post(f"/jobs/{job.id}/stop", data={"csrf_token": csrf(c)}, follow_redirects=False)
        assert r.status_code == 303
        while job.get_status() == "started":
            assert time.monotonic() < end + 10, "job was not stopped"
            time.sleep(0.02)
    finally:
        t.join(30)
    assert job.get_status() == "stopped"
    assert "JobStoppedException" in job.exc_info
    assert not re.search(r'data-action="stop"(?![^>]*hidden)', client(mem_url).get(f"/jobs/{job.id}").text)


def test_queue_actions_empty_and_requeue_all(mem_url):
    h = Queue("h", connection=mem_url)
    for _ in range(3):
        h.enqueue(tasks.fail, "x")
    Worker([h], connection=mem_url).work(burst=True)
    q = Queue("q", connection=mem_url)
    for _ in range(4):
        q.enqueue(tasks.add, 1, 1)
    c = client(mem_url)
    token = csrf(c)
    r = c.post("/queues/h/requeue-failed", data={"csrf_token": token})
    assert r.status_code == 200 and "requeued 3 failed job(s)" in r.text
    assert h.failed_job_registry.count == 0 and len(h) == 3
    r = c.post("/queues/q/empty", data={"csrf_token": token})
    assert "removed 4 queued job(s)" in r.text and len(q) == 0


def test_read_only_hides_and_refuses(mem_url):
    failed, _ = seed(mem_url)
    c = client(mem_url, read_only=True)
    token = csrf(c)
    page = c.get(f"/jobs/{failed.id}").text
    assert "<form method=\"post\"" not in page and "read-only" in page
    assert "<form method=\"post\"" not in c.get("/queues/high?status=failed").text
    assert c.post(f"/jobs/{failed.id}/requeue", data={"csrf_token": token}).status_code == 403
    assert c.post("/queues/high/requeue-failed", data={"csrf_token": token}).status_code == 403
    assert failed.get_status() == "failed"
    assert c.get("/api/overview").json()["read_only"] is True


def test_basic_auth(mem_url):
    c = client(mem_url, auth="admin:s3:cret")
    r = c.get("/")
    assert r.status_code == 401 and "Basic" in r.headers["www-authenticate"]
    assert c.get("/metrics", auth=("admin", "wrong")).status_code == 401
    assert c.get("/", auth=("admin", "s3:cret")).status_code == 200
    assert c.get("/metrics", auth=("admin", "s3:cret")).status_code == 200
    with pytest.raises(ValueError):
        create_app(mem_url, auth="no-colon")


def test_everything_is_escaped(mem_url):
    evil = "<script>window.__pwned=1</script><img src=x onerror=alert(1)>"
    q = Queue("x", connection=mem_url)
    job = q.enqueue(tasks.fail, evil, meta={"<b>": evil})
    Worker([q], connection=mem_url).work(burst=True)
    c = client(mem_url)
    for path in (f"/jobs/{job.id}", "/queues/x?status=failed", "/failed"):
        html = c.get(path).text
        assert "<script>window" not in html and "<img src=x" not in html
        assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in html
    r = c.get(f"/jobs/{job.id}")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"


class _Planted:
    """Unpickling this calls tasks.append_line: the proof that a payload was read."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (tasks.append_line, (self.path, "unpickled"))


def test_payload_shown_under_the_workers_rules(mem_url, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    q = Queue("p", connection=mem_url)
    job = q.enqueue(tasks.echo, _Planted(str(marker)))
    assert not marker.exists()
    c = client(mem_url)
    # A worker with an allow-list would refuse it unread; so does the dashboard.
    monkeypatch.setenv("PLUGQ_ALLOWED_MODULES", "myapp.tasks")
    d = c.get(f"/api/jobs/{job.id}").json()
    assert d["args"] is None and "refused, as a worker would" in d["unreadable"]
    assert "outside allowed_modules" in d["unreadable"]
    assert "refused, as a worker would" in c.get(f"/jobs/{job.id}").text
    monkeypatch.delenv("PLUGQ_ALLOWED_MODULES")
    # Signing on, and the job is unsigned: refused, still unread.
    monkeypatch.setenv("PLUGQ_SECRET_KEY", "k" * 32)
    d = c.get(f"/api/jobs/{job.id}").json()
    assert "not signed" in d["unreadable"]
    assert not marker.exists()
    monkeypatch.delenv("PLUGQ_SECRET_KEY")
    # A job that cannot be read says so (its module is gone from this process).
    monkeypatch.setenv("PLUGQ_SECRET_KEY", "k" * 32)
    signed = q.enqueue(tasks.echo, "fine")
    assert c.get(f"/api/jobs/{signed.id}").json()["args"] == ["'fine'"]


def test_unreadable_payload_says_so(mem_url, tmp_path, monkeypatch):
    # An argument whose class this process cannot import (as when the dashboard
    # runs without the app's code): the job page says so instead of failing.
    (tmp_path / "gone_mod.py").write_text("class Thing:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import gone_mod

    job = Queue("u", connection=mem_url).enqueue(tasks.echo, gone_mod.Thing())
    monkeypatch.delitem(sys.modules, "gone_mod")
    (tmp_path / "gone_mod.py").unlink()
    sys.path.remove(str(tmp_path))
    c = client(mem_url)
    d = c.get(f"/api/jobs/{job.id}").json()
    assert d["args"] is None
    assert d["unreadable"].startswith("cannot be read here: ModuleNotFoundError")
    assert "cannot be read here" in c.get(f"/jobs/{job.id}").text


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 20) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "plugq.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_cli_refuses_a_public_host_without_auth(tmp_path):
    r = run_cli("dashboard", "--url", f"sqlite:///{tmp_path / 'x.db'}", "--host", "0.0.0.0")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "without --auth" in lines[0]


def test_cli_masks_the_password(tmp_path):
    from _dashboard_helpers import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "plugq.cli", "dashboard", "--url", f"sqlite:///{tmp_path / 'x.db'}",
         "--host", "127.0.0.1", "--port", str(port)],
        stderr=subprocess.PIPE, text=True,
        env={**__import__("os").environ, "PLUGQ_DASHBOARD_AUTH": "admin:hunter2secret"},
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "admin" in line and "hunter2secret" not in line and "password hidden" in line
        assert re.search(rf":{port}/", line)
    finally:
        proc.terminate()
        proc.wait(10)


def test_mounted_under_a_prefix(mem_url):
    from starlette.applications import Starlette
    from starlette.routing import Mount

    failed, _ = seed(mem_url)
    outer = Starlette(routes=[Mount("/ops/plugq", app=create_app(mem_url))])
    c = TestClient(outer, base_url="http://127.0.0.1:8000")
    page = c.get("/ops/plugq/").text
    assert 'src="/ops/plugq/static/dashboard.js"' in page
    assert 'data-base="/ops/plugq"' in page
    assert c.get("/ops/plugq/static/dashboard.css").status_code == 200
    token = c.cookies["plugq_csrf"]
    r = c.post(f"/ops/plugq/jobs/{failed.id}/requeue", data={"csrf_token": token},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/ops/plugq/jobs/{failed.id}"
    assert failed.get_status() == "queued"


def test_cli_bad_auth_is_a_configuration_error(tmp_path):
    r = run_cli("dashboard", "--url", f"sqlite:///{tmp_path / 'x.db'}", "--auth", "nocolon")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "plugq: error: --auth / PLUGQ_DASHBOARD_AUTH must be USER:PASSWORD"]


def test_chart_bins_by_minute_from_ended_at(monkeypatch):
    from plugq import ManualClock
    from plugq.dashboard import _data
    from plugq_memory import MemoryBackend

    clock = ManualClock(1_800_000_000.0)  # on a minute boundary
    backend = MemoryBackend(f"memory://chart-{uuid.uuid4().hex}", clock=clock)
    q = Queue("c", connection=backend)
    for minute in range(5):  # minute m: m+1 finished, one failed on odd minutes
        for i in range(minute + 1):
            q.enqueue(tasks.add, i, 1, result_ttl=-1)
        if minute % 2:
            q.enqueue(tasks.fail, "x")
        Worker([q], connection=backend).work(burst=True)
        clock.advance(60)
    chart = _data.throughput(backend, now=clock.now() - 1)
    assert chart["finished"][-5:] == [1, 2, 3, 4, 5]
    assert chart["failed"][-5:] == [0, 1, 0, 1, 0]
    assert sum(chart["finished"]) == 15 and not chart["truncated"]
    # Two hours on, everything is older than the window: nothing, not truncated.
    later = _data.throughput(backend, now=clock.now() + 7200)
    assert sum(later["finished"]) == 0 and not later["truncated"]
    # Reading only the newest jobs is said.
    capped = _data.throughput(backend, now=clock.now() - 1, scan_limit=4)
    assert capped["truncated"] and sum(capped["finished"]) == 4
    # A cache makes the second computation read no job it has seen.
    cache = _data.EndedAtCache()
    first = _data.throughput(backend, now=clock.now() - 1, cache=cache)
    calls = []
    original = Job.fetch_many

    def spy(ids, connection=None):
        calls.append(ids)
        return original(ids, connection=connection)

    monkeypatch.setattr(Job, "fetch_many", spy)
    assert _data.throughput(backend, now=clock.now() - 1, cache=cache) == first
    assert calls == []

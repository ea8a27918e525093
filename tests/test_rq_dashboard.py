"""The real rq-dashboard on plugq's Redis data: counts per registry, a job's details, and
its requeue, delete and empty actions, which plugq then sees.

rq-dashboard's own Flask app (its ``make_flask_app`` and ``setup_rq_connection``, as its
``create_app`` does) is driven through Flask's test client, against the test redis-server.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

pytest.importorskip("rq")
pytest.importorskip("rq_dashboard")

from plugq import JobStatus, Queue, Worker
from plugq.testing import tasks

pytestmark = pytest.mark.redis


@pytest.fixture
def url(redis_server) -> str:
    redis_server.flushall()
    return redis_server.url + "/4"


@pytest.fixture
def dashboard(url):
    from rq_dashboard.cli import make_flask_app
    from rq_dashboard.web import setup_rq_connection

    app = make_flask_app(None, None, None, "")
    app.config["RQ_DASHBOARD_REDIS_URL"] = url
    app.config["TESTING"] = True
    setup_rq_connection(app)
    with app.test_client() as client:
        yield client


def _get(client, path: str) -> dict:
    answer = client.get(path)
    assert answer.status_code == 200, answer.data[:500]
    return answer.get_json()


def _post(client, path: str) -> dict:
    answer = client.post(path)
    assert answer.status_code == 200, answer.data[:500]
    return answer.get_json()


def _counts(client, name: str) -> dict[str, int]:
    queues = {q["name"]: q for q in _get(client, "/0/data/queues.json")["queues"]}
    q = queues[name]
    return {
        "queued": q["count"],
        **{r: q[f"{r}_job_registry_count"]
           for r in ("started", "finished", "failed", "deferred", "scheduled", "canceled")},
    }


def _listed(client, name: str, registry: str) -> list[str]:
    page = _get(client, f"/0/data/jobs/{name}/{registry}/100/asc/1.json")
    return [j["id"] for j in page["jobs"]]


def test_rq_dashboard_shows_and_acts_on_plugq_jobs(url, dashboard, tmp_path):
    q = Queue("dash", connection=url)
    ok = q.enqueue(tasks.add, 2, 3)
    flaky = q.enqueue(tasks.fail_until, str(tmp_path / "calls"), 1)
    assert Worker([q]).work(burst=True)
    waiting = q.enqueue(tasks.add, 1, 1)
    later = q.enqueue_in(timedelta(hours=1), tasks.add, 0, 0)
    deferred = q.enqueue(tasks.add, 5, 5, depends_on=later)
    assert (ok.get_status(), flaky.get_status(), waiting.get_status(), later.get_status(),
            deferred.get_status()) == ("finished", "failed", "queued", "scheduled", "deferred")

    # -- what rq-dashboard shows
    assert _counts(dashboard, "dash") == {
        "queued": 1, "started": 0, "finished": 1, "failed": 1, "deferred": 1, "scheduled": 1,
        "canceled": 0,
    }
    assert _listed(dashboard, "dash", "queued") == [waiting.id]
    assert _listed(dashboard, "dash", "finished") == [ok.id]
    assert _listed(dashboard, "dash", "failed") == [flaky.id]
    assert _listed(dashboard, "dash", "scheduled") == [later.id]
    assert _listed(dashboard, "dash", "deferred") == [deferred.id]
    shown = _get(dashboard, f"/0/data/job/{ok.id}.json")
    assert (shown["id"], shown["status"], shown["origin"], shown["result"]) == (
        ok.id, "finished", "dash", 5)
    assert shown["description"] == "plugq.testing.tasks.add(2, 3)"
    assert shown["enqueued_at"] and shown["started_at"] and shown["ended_at"]
    failed = _get(dashboard, f"/0/data/job/{flaky.id}.json")
    assert failed["status"] == "failed"
    assert "attempt 1 fails on purpose" in failed["exc_info"]
    # (rq-dashboard 0.9's page of a job with dependencies calls .decode() on rq 2.x's
    # dependency_ids, which are str: a 500 for rq's own jobs too, so not looked at here.)

    # -- its actions, as plugq then sees them
    assert _post(dashboard, f"/job/{ok.id}/delete") == {"status": "OK"}
    assert q.fetch_job(ok.id) is None
    assert q.finished_job_registry.count == 0

    assert _post(dashboard, "/queue/dash/queued/empty") == {"status": "OK"}
    assert q.count == 0 and q.get_job_ids() == []
    assert q.fetch_job(waiting.id) is None

    assert _post(dashboard, f"/job/{flaky.id}/requeue") == {"status": "OK"}
    assert flaky.get_status() == "queued"
    assert q.get_job_ids() == [flaky.id] and q.failed_job_registry.count == 0
    assert Worker([q]).work(burst=True)
    assert flaky.get_status() == "finished" and flaky.result == 2  # its second call

    assert _post(dashboard, "/queue/dash/scheduled/empty") == {"status": "OK"}
    assert q.fetch_job(later.id) is None
    assert q.backend.count("dash", JobStatus.SCHEDULED) == 0

    assert _counts(dashboard, "dash") == {
        "queued": 0, "started": 0, "finished": 1, "failed": 0, "deferred": 1, "scheduled": 0,
        "canceled": 0,
    }
    assert _listed(dashboard, "dash", "finished") == [flaky.id]

"""What a newcomer trips over on the command line (issue 19), each as a test.

Option parsing of ``plugq enqueue``, ``plugq job ID``, tracebacks of failed
jobs in the worker's log, absolute SQLite paths, read-only commands that
never create a database, ``plugq config``'s table, ``plugq jobs`` at 80
columns, and memory:// refused where it cannot work.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from _cli_helpers import (
    PLUGQ,
    assert_one_line_error,
    clean_env,
    plugq,
    plugq_json,
    redis_url_or_skip,
    unique_queue,
    wait_until,
)
from plugq import Job, Queue


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "first.db"


@pytest.fixture
def url(db: Path) -> str:
    return f"sqlite:///{db}"


@pytest.fixture(params=["sqlite", "redis"])
def any_url(request: pytest.FixtureRequest, url: str) -> str:
    if request.param == "redis":
        return redis_url_or_skip(request)
    return url


def _run_burst(url: str, queue: str, *extra: str) -> subprocess.CompletedProcess[str]:
    r = plugq("worker", queue, "--burst", "--url", url, *extra)
    assert r.returncode == 0, r.stderr
    return r


# -- plugq enqueue: options wherever they stand, dash arguments after -- ---------


def test_enqueue_options_may_follow_the_task_arguments(url: str) -> None:
    q = unique_queue()
    r = plugq("enqueue", "plugq.testing.tasks.echo", "1", "--queue", q, "2", "--url", url)
    assert r.returncode == 0, r.stderr
    [job] = plugq_json("jobs", q, "--url", url)
    assert job["description"] == "plugq.testing.tasks.echo(1, 2)"


def test_enqueue_mistyped_option_is_refused_not_stored(url: str, db: Path) -> None:
    r = plugq("enqueue", "plugq.testing.tasks.echo", "1", "--quue", "high", "--url", url)
    assert r.returncode == 1
    assert "--quue" in r.stderr and "'--'" in r.stderr
    assert "Traceback" not in r.stderr
    assert not db.exists(), "nothing may be enqueued (or created) for a mistyped option"


def test_enqueue_arguments_starting_with_a_dash_go_after_double_dash(url: str) -> None:
    q = unique_queue()
    r = plugq("enqueue", "--url", url, "plugq.testing.tasks.echo", "-q", q, "--", "-1", "--x")
    assert r.returncode == 0, r.stderr
    _run_burst(url, q)
    [job] = plugq_json("jobs", q, "--status", "finished", "--url", url)
    assert job["result"]["args"] == [-1, "--x"]


# -- plugq job ID, and the traceback in the worker's log ---------------------------


def test_job_shows_a_failed_job_whole(any_url: str) -> None:
    q = unique_queue()
    job = Queue(q, connection=any_url).enqueue("plugq.testing.tasks.fail", "card declined")
    work = _run_burst(any_url, q, "--name", f"w-{q}")
    # The worker's log carries the whole traceback, on every backend.
    assert "Traceback (most recent call last)" in work.stderr
    assert "ValueError: card declined" in work.stderr

    text = plugq("job", job.id, "--url", any_url)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert re.search(r"^status\s+failed$", out, re.M), out
    assert re.search(rf"^worker_name\s+w-{q}$", out, re.M), out
    assert re.search(r"^attempts\s+1$", out, re.M), out
    assert re.search(r"^args\s+\['card declined'\]$", out, re.M), out
    assert "Traceback (most recent call last)" in out
    assert out.rstrip().endswith("ValueError: card declined")

    data = plugq_json("job", job.id, "--url", any_url)
    assert data["status"] == "failed" and data["queue"] == q
    assert data["args"] == ["card declined"] and data["kwargs"] == {}
    assert data["worker_name"] == f"w-{q}" and data["attempts"] == 1
    assert data["started_at"] and data["ended_at"] and data["enqueued_at"]
    assert data["exc_info"].startswith("Traceback (most recent call last)")
    assert data["exc_info"].rstrip().endswith("ValueError: card declined")
    assert data["result"] is None


def test_job_shows_a_finished_jobs_result(any_url: str) -> None:
    q = unique_queue()
    job = Queue(q, connection=any_url).enqueue("plugq.testing.tasks.add", 2, 3)
    _run_burst(any_url, q)
    text = plugq("job", job.id, "--url", any_url)
    assert text.returncode == 0, text.stderr
    assert re.search(r"^result\s+5$", text.stdout, re.M), text.stdout
    data = plugq_json("job", job.id, "--url", any_url)
    assert (data["status"], data["result"], data["exc_info"]) == ("finished", 5, None)


def test_job_unknown_id_is_one_line(url: str) -> None:
    Queue("default", connection=url).enqueue("plugq.testing.tasks.add", 1, 1)
    assert_one_line_error(plugq("job", "no-such-job", "--url", url), 1, "plugq: error:",
                          "no-such-job")


def test_worker_traceback_can_be_turned_down(url: str) -> None:
    q = unique_queue()
    Queue(q, connection=url).enqueue("plugq.testing.tasks.fail", "card declined")
    quiet = _run_burst(url, q, "--logging-level", "CRITICAL")
    assert "Traceback" not in quiet.stderr and "card declined" not in quiet.stderr


# -- relative SQLite paths ---------------------------------------------------------


def test_worker_start_line_and_info_name_the_absolute_file(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    Queue("default", connection=f"sqlite:///{folder / 'rel.db'}").enqueue(
        "plugq.testing.tasks.add", 1, 1)
    env = clean_env(PLUGQ_URL="sqlite:///rel.db")
    work = subprocess.run([PLUGQ, "worker", "--burst"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=90)
    assert work.returncode == 0, work.stderr
    assert f"started on sqlite:///{folder / 'rel.db'}," in work.stderr
    snap = plugq_json("info", cwd=folder, env=env)
    assert snap["url"] == f"sqlite:///{folder / 'rel.db'}"


@pytest.mark.parametrize("command", [["info"], ["jobs", "default"], ["job", "some-id"]])
def test_read_only_commands_never_create_a_database(tmp_path: Path, command: list[str]) -> None:
    env = clean_env(PLUGQ_URL="sqlite:///tpyo.db")
    r = plugq(*command, cwd=tmp_path, env=env)
    assert_one_line_error(r, 2, "plugq: error:", str(tmp_path / "tpyo.db"), "does not exist")
    assert list(tmp_path.iterdir()) == []


def test_config_never_creates_a_database(tmp_path: Path) -> None:
    r = plugq("config", "--url", "sqlite:///tpyo.db", cwd=tmp_path, env=clean_env())
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.iterdir()) == []


# -- plugq config ------------------------------------------------------------------


def test_config_table_shows_the_source_and_the_default_values(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.plugq]\nurl = "sqlite:///app.db"\n')
    r = plugq("config", cwd=tmp_path, env=clean_env(COLUMNS="200"))
    assert r.returncode == 0, r.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
            for line in r.stdout.splitlines() if line.count("│") == 4}
    assert rows["url"] == ['"sqlite:///app.db"', f"[tool.plugq] in {tmp_path / 'pyproject.toml'}"]
    assert rows["job_timeout"] == ["180", "default"]
    assert rows["result_ttl"] == ["500", "default"]
    data = plugq_json("config", cwd=tmp_path, env=clean_env())
    assert (data["settings"]["job_timeout"], data["settings"]["result_ttl"]) == (180, 500)


# -- plugq jobs ---------------------------------------------------------------------


def test_jobs_table_is_one_line_per_job_at_80_columns(url: str) -> None:
    q = unique_queue()
    queue = Queue(q, connection=url)
    ids = [queue.enqueue("plugq.testing.tasks.echo", "x" * 60, n).id for n in range(3)]
    r = plugq("jobs", q, "--url", url, env=clean_env(COLUMNS="80"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, r.stdout
    for job_id in ids:
        [row] = [line for line in lines if job_id in line]
        assert "plugq.testing.tasks.echo(" in row


def test_jobs_shows_when_a_scheduled_job_is_due(url: str) -> None:
    q = unique_queue()
    job = Queue(q, connection=url).enqueue_in(timedelta(hours=30), "plugq.testing.tasks.add", 1, 2)
    due = job.scheduled_for
    assert due is not None
    r = plugq("jobs", q, "--status", "scheduled", "--url", url, env=clean_env(COLUMNS="100"))
    assert r.returncode == 0, r.stderr
    assert "due" in r.stdout
    [row] = [line for line in r.stdout.splitlines() if job.id in line]
    assert due.astimezone().strftime("%Y-%m-%d %H:%M:%S") in row
    [listed] = plugq_json("jobs", q, "--status", "scheduled", "--url", url)
    assert listed["scheduled_for"] is not None


# -- memory:// where another process is needed; worker classes ---------------------


def test_enqueue_on_memory_is_refused_not_lost() -> None:
    r = plugq("enqueue", "plugq.testing.tasks.add", "1", "2", "--url", "memory://")
    assert_one_line_error(r, 2, "memory://", "lost")
    assert r.stdout == ""


def test_worker_on_memory_is_refused_not_waiting_forever() -> None:
    r = plugq("worker", "--url", "memory://", timeout=30)
    assert_one_line_error(r, 2, "memory://", "wait forever")


def test_fork_and_spawn_worker_classes_run_jobs_on_sqlite(url: str) -> None:
    for worker_class in ("fork", "spawn"):
        job = Queue("default", connection=url).enqueue("plugq.testing.tasks.add", 1, 1)
        r = plugq("worker", "--burst", "--worker-class", worker_class, "--url", url)
        assert r.returncode == 0, r.stderr
        assert Job.fetch(job.id, connection=url).result == 2


def test_requeue_without_arguments_is_a_plugq_error_line() -> None:
    r = plugq("requeue", "--url", "memory://")
    line = assert_one_line_error(r, 1, "plugq: error:", "--all or one or more JOB_IDs")
    assert line.startswith("plugq: error:")


def test_unimportable_task_error_names_the_folder_and_path_option(url: str,
                                                                tmp_path: Path) -> None:
    q = unique_queue()
    job = Queue(q, connection=url).enqueue("nosuchtasks_xyz.send", 1)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([PLUGQ, "worker", q, "--burst", "--url", url], cwd=elsewhere,
                       env=clean_env(), capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    last = job.exc_info.strip().splitlines()[-1]
    assert "'nosuchtasks_xyz' cannot be imported" in last
    assert str(elsewhere) in last and "--path DIR" in last
    assert json.loads(json.dumps(last))  # one line: the whole hint is in the last line


# -- signals on Redis --------------------------------------------------------------


def test_redis_second_signal_within_a_second_is_a_cold_shutdown(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = redis_url_or_skip(request)
    q = unique_queue()
    started, release = tmp_path / "started", tmp_path / "release"
    job = Queue(q, connection=url).enqueue("plugq.testing.tasks.touch_then_wait", str(started),
                                           str(release), 120)
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        w = subprocess.Popen([PLUGQ, "worker", q, "--url", url], stdout=log,
                             stderr=subprocess.STDOUT, env=clean_env(), start_new_session=True)
    try:
        wait_until(started.exists, what="the job to start")
        w.send_signal(signal.SIGINT)
        wait_until(lambda: "warm shut down" in log_path.read_text().lower(),
                   what="the warm shutdown to be logged")
        w.send_signal(signal.SIGINT)  # well within rq's one-second window
        assert w.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
    assert "cold shut down" in log_path.read_text().lower()
    assert not release.exists()
    assert job.get_status() != "finished"

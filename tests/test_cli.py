"""The ``plugq`` command line, run as a user runs it: real commands in subprocesses.

Producer, worker and monitor are separate processes sharing a backend
(SQLite file, test Redis server); every assertion reads state back through
the CLI's own ``--json`` output or the public API.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from _cli_helpers import (
    PLUGQ,
    PtyProcess,
    assert_one_line_error,
    clean_env,
    plugq,
    plugq_json,
    redis_url_or_skip,
    require_backend,
    unique_queue,
    wait_until,
)
from plugq import Queue
from plugq.testing import tasks

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A backend URL several processes share: a fresh SQLite file, the test Redis, or PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cli.db'}"
        require_backend(url)
        return url
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return redis_url_or_skip(request)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    require_backend(url)
    return url


def counts(url: str, queue: str) -> dict[str, int]:
    snap = plugq_json("info", queue, "--url", url)
    return snap["queues"][queue]


# -- the main cross-process flow ------------------------------------------


def test_enqueue_then_burst_worker_in_another_process_then_info(shared_url: str) -> None:
    q = unique_queue()
    ids = []
    for a in (1, 2, 3):
        r = plugq("enqueue", "--queue", q, "--url", shared_url, "plugq.testing.tasks.add", str(a), "2")
        assert r.returncode == 0, r.stderr
        ids.append(r.stdout.strip())
    r = plugq("enqueue", "-q", q, "--url", shared_url, "plugq.testing.tasks.fail", "on purpose")
    failing = r.stdout.strip()
    assert r.returncode == 0, r.stderr
    assert all(re.fullmatch(r"[0-9a-f-]{36}", i) for i in [*ids, failing])

    before = counts(shared_url, q)
    assert before["queued"] == 4 and before["finished"] == 0

    work = plugq("worker", q, "--burst", "--url", shared_url, "--worker-class", "simple")
    assert work.returncode == 0, work.stderr
    log = work.stderr
    # RQ's log lines: "queue: description (id)", "queue: Job OK (id)", the TTL line.
    assert f"{q}: plugq.testing.tasks.add(1, 2) ({ids[0]})" in log
    assert f"{q}: Job OK ({ids[0]})" in log
    # rq 2.x words it "job <id> result is kept for 500 seconds".
    assert re.search(r"[Rr]esult is kept for 500 seconds", log)

    after = counts(shared_url, q)
    assert after["queued"] == 0
    assert after["finished"] == 3
    assert after["failed"] == 1
    assert after["started"] == 0

    finished = plugq_json("jobs", q, "--status", "finished", "--url", shared_url)
    assert sorted(j["result"] for j in finished) == [3, 4, 5]
    assert {j["id"] for j in finished} == set(ids)
    failed = plugq_json("jobs", q, "--status", "failed", "--url", shared_url)
    assert [j["id"] for j in failed] == [failing]
    assert "on purpose" in failed[0]["result"]

    # The burst worker unregistered itself.
    snap = plugq_json("info", q, "--url", shared_url)
    assert snap["workers"] == []

    r = plugq("requeue", "--queue", q, "--all", "--url", shared_url)
    assert r.returncode == 0, r.stderr
    assert "Requeued 1 job(s)" in r.stdout
    assert counts(shared_url, q)["queued"] == 1
    assert counts(shared_url, q)["failed"] == 0

    r = plugq("empty", q, "--url", shared_url)
    assert r.returncode == 0 and f"{q}: 1 job(s) removed" in r.stdout
    assert counts(shared_url, q)["queued"] == 0


def test_enqueue_parses_arguments_as_json_else_strings(sqlite_url: str) -> None:
    q = unique_queue()
    # "-5" starts with a dash: after "--", where options end.
    r = plugq("enqueue", "-q", q, "--url", sqlite_url, "plugq.testing.tasks.echo", "--",
              "1", '"1"', "[1, 2]", '{"a": 1}', "hello world", "true", "null", "-5", "2.5")
    assert r.returncode == 0, r.stderr
    assert plugq("worker", q, "--burst", "--url", sqlite_url).returncode == 0
    [job] = plugq_json("jobs", q, "--status", "finished", "--url", sqlite_url)
    assert job["result"]["args"] == [1, "1", [1, 2], {"a": 1}, "hello world", True, None, -5, 2.5]


def test_worker_serves_queues_in_the_order_given(sqlite_url: str) -> None:
    low, high = unique_queue(), unique_queue()
    plugq("enqueue", "-q", low, "--url", sqlite_url, "plugq.testing.tasks.add", "0", "1")
    plugq("enqueue", "-q", high, "--url", sqlite_url, "plugq.testing.tasks.add", "0", "2")
    work = plugq("worker", high, low, "--burst", "--url", sqlite_url)
    assert work.returncode == 0, work.stderr
    first_high = work.stderr.index(f"{high}: plugq.testing.tasks.add(0, 2)")
    first_low = work.stderr.index(f"{low}: plugq.testing.tasks.add(0, 1)")
    assert first_high < first_low


def test_max_jobs_stops_the_worker(sqlite_url: str) -> None:
    q = unique_queue()
    for i in range(3):
        plugq("enqueue", "-q", q, "--url", sqlite_url, "plugq.testing.tasks.add", str(i), "0")
    work = plugq("worker", q, "--max-jobs", "2", "--url", sqlite_url)
    assert work.returncode == 0, work.stderr
    c = counts(sqlite_url, q)
    assert (c["finished"], c["queued"]) == (2, 1)


def test_path_option_makes_a_project_task_importable(sqlite_url: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "mytasks.py").write_text("def triple(x):\n    return 3 * x\n")
    q = unique_queue()
    plugq("enqueue", "-q", q, "--url", sqlite_url, "mytasks.triple", "7")
    # Run from elsewhere: without --path the module could not be imported.
    work = plugq("worker", q, "--burst", "--path", str(project), "--url", sqlite_url, cwd=tmp_path)
    assert work.returncode == 0, work.stderr
    [job] = plugq_json("jobs", q, "--status", "finished", "--url", sqlite_url)
    assert job["result"] == 21


# -- concurrency and signals ------------------------------------------------


def test_concurrency_burst_runs_n_processes_and_exits_when_done(sqlite_url: str) -> None:
    q = unique_queue()
    for _ in range(6):
        plugq("enqueue", "-q", q, "--url", sqlite_url, "plugq.testing.tasks.sleep", "0.2")
    work = plugq("worker", q, "--burst", "--concurrency", "3", "--url", sqlite_url)
    assert work.returncode == 0, work.stderr
    started = set(re.findall(r"Worker (\S+) started", work.stderr))
    assert len(started) == 3, work.stderr
    assert work.stderr.count("exited with 0") == 3
    assert counts(sqlite_url, q)["finished"] == 6


def test_supervisor_kills_a_simple_worker_stuck_in_c_past_its_timeout(shared_url: str) -> None:
    """The ``simple`` class's hard timeout: under ``--concurrency`` the supervisor
    kills a worker whose job is stuck in C past its timeout, fails the job with
    a timeout error and starts a new worker."""
    q = Queue(unique_queue(), connection=shared_url)
    # 2e9 PBKDF2 rounds (near its 2**31 limit): many minutes inside one C call; only a kill ends it.
    stuck = q.enqueue(tasks.stuck_in_c, 2 * 10**9, job_timeout=1)
    work = plugq("worker", q.name, "--burst", "--concurrency", "2", "--url", shared_url,
                 timeout=60)
    assert work.returncode == 0, work.stderr
    assert "killing it" in work.stderr, work.stderr
    assert stuck.get_status() == "failed"
    assert "JobTimeoutException" in stuck.exc_info and "was killed" in stuck.exc_info
    assert stuck.attempts == 1
    # Two workers, then the killed one's replacement (which found the queue empty).
    assert len(re.findall(r"Supervisor: worker \d+ started", work.stderr)) == 3, work.stderr


def test_concurrency_on_memory_is_refused() -> None:
    r = plugq("worker", "--concurrency", "2", "--url", "memory://")
    assert_one_line_error(r, 2, "memory://", "--concurrency")


def _worker_records(url: str, q: str) -> list[dict]:
    return plugq_json("info", q, "--url", url)["workers"]


def test_supervisor_restarts_a_killed_worker_and_stops_warmly(
    sqlite_url: str, tmp_path: Path
) -> None:
    q = unique_queue()
    log_path = tmp_path / "supervisor.log"
    with log_path.open("w") as log:
        sup = subprocess.Popen(
            [PLUGQ, "worker", q, "--concurrency", "2", "--name", "sup", "--url", sqlite_url],
            stdout=log, stderr=subprocess.STDOUT, env=clean_env(),
        )
    try:
        workers = wait_until(lambda: len(_worker_records(sqlite_url, q)) == 2
                             and _worker_records(sqlite_url, q), what="two workers")
        names = {w["name"] for w in workers}
        assert names == {"sup.1", "sup.2"}
        victim = next(w for w in workers if w["name"] == "sup.1")
        os.kill(victim["pid"], signal.SIGKILL)

        def restarted() -> list[dict]:
            return [w for w in _worker_records(sqlite_url, q) if w["name"] == "sup.1.r1"]

        [replacement] = wait_until(restarted, what="the restarted worker")
        assert replacement["pid"] != victim["pid"]
        assert "was killed by signal 9; restarting" in log_path.read_text()

        # The pool still works after the restart.
        plugq("enqueue", "-q", q, "--url", sqlite_url, "plugq.testing.tasks.add", "20", "22")
        wait_until(lambda: counts(sqlite_url, q)["finished"] == 1, what="the job to finish")
    finally:
        sup.send_signal(signal.SIGTERM)
        code = sup.wait(timeout=60)
    assert code == 0, log_path.read_text()
    text = log_path.read_text()
    assert "Warm shut down requested" in text
    live = [w["name"] for w in _worker_records(sqlite_url, q)]
    # The killed worker's record may linger until its lease runs out; the
    # ones stopped warmly unregistered themselves.
    assert "sup.2" not in live and "sup.1.r1" not in live


def _start_blocking_job(url: str, q: str, tmp_path: Path) -> tuple[str, Path, Path]:
    started, release = tmp_path / "started", tmp_path / "release"
    r = plugq("enqueue", "-q", q, "--url", url, "plugq.testing.tasks.touch_then_wait",
              str(started), str(release), "120")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip(), started, release


def test_sigterm_is_a_warm_shutdown_the_current_job_finishes(
    sqlite_url: str, tmp_path: Path
) -> None:
    q = unique_queue()
    job_id, started, release = _start_blocking_job(sqlite_url, q, tmp_path)
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        w = subprocess.Popen([PLUGQ, "worker", q, "--url", sqlite_url],
                             stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    try:
        wait_until(started.exists, what="the job to start")
        w.send_signal(signal.SIGTERM)
        wait_until(lambda: "Warm shut down requested" in log_path.read_text(),
                   what="the warm shutdown to be logged")
        # The worker is still inside the job: it must not have stopped yet.
        assert w.poll() is None
        release.touch()
        assert w.wait(timeout=60) == 0
    finally:
        if w.poll() is None:
            w.kill()
    [job] = plugq_json("jobs", q, "--status", "finished", "--url", sqlite_url)
    assert job["id"] == job_id


def test_second_signal_is_a_cold_shutdown_and_the_job_is_not_lost(
    sqlite_url: str, tmp_path: Path
) -> None:
    q = unique_queue()
    job_id, started, release = _start_blocking_job(sqlite_url, q, tmp_path)
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        w = subprocess.Popen([PLUGQ, "worker", q, "--url", sqlite_url],
                             stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    try:
        wait_until(started.exists, what="the job to start")
        w.send_signal(signal.SIGINT)
        wait_until(lambda: "Warm shut down requested" in log_path.read_text(),
                   what="the warm shutdown to be logged")
        w.send_signal(signal.SIGINT)
        # Exits without the job being released.
        assert w.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if w.poll() is None:
            w.kill()
    assert "Cold shut down" in log_path.read_text()
    assert not release.exists()
    # The interrupted job's worker is gone, so the next worker finds it
    # abandoned and fails it with a reason (no retries were asked for).
    again = plugq("worker", q, "--burst", "--url", sqlite_url)
    assert again.returncode == 0, again.stderr
    [job] = plugq_json("jobs", q, "--status", "failed", "--url", sqlite_url)
    assert job["id"] == job_id
    assert "Abandoned" in job["result"]


# -- other commands -----------------------------------------------------------


def test_backends_lists_every_installed_scheme_with_plugin_and_version() -> None:
    found = {b["scheme"]: b for b in plugq_json("backends")}
    for scheme, plugin in [("memory", "memory"), ("sqlite", "sqlite"), ("redis", "rq"),
                           ("fakeredis", "rq"), ("postgresql", "postgres"), ("postgres", "postgres")]:
        assert found[scheme]["plugin"] == plugin
        assert found[scheme]["version"]
    table = plugq("backends")
    assert table.returncode == 0
    assert re.search(r"memory://\s+.*memory\s+.*\d+\.\d+", table.stdout)


def test_info_table_shows_queue_counts_and_workers(sqlite_url: str) -> None:
    q = unique_queue()
    plugq("enqueue", "-q", q, "--url", sqlite_url, "plugq.testing.tasks.add", "1", "1")
    r = plugq("info", "--url", sqlite_url, env=clean_env(COLUMNS="120"))
    assert r.returncode == 0, r.stderr
    header = next(ln for ln in r.stdout.splitlines() if "queued" in ln)
    assert header.split() == ["queue", "queued", "started", "deferred", "scheduled", "finished",
                              "failed", "canceled", "stopped"]
    row = next(ln for ln in r.stdout.splitlines() if ln.startswith(q))
    assert row.split() == [q, "1", "0", "0", "0", "0", "0", "0", "0"]
    assert "no workers" in r.stdout


def test_info_interval_is_a_live_view_redrawn_in_place(sqlite_url: str) -> None:
    q = unique_queue()
    plugq("enqueue", "-q", q, "--url", sqlite_url, "plugq.testing.tasks.add", "1", "1")
    view = PtyProcess([PLUGQ, "info", q, "--interval", "0.1", "--url", sqlite_url], clean_env())
    try:
        view.expect(rf"{q}\s+1\s+0\s+0")
        mark = len(view.text)
        plugq("enqueue", "-q", q, "--url", sqlite_url, "plugq.testing.tasks.add", "2", "2")
        view.expect(rf"{q}\s+2\s+0\s+0", start=mark)
        view.interrupt()
        assert view.wait() == 0
    finally:
        view.close()
    raw = view.raw.decode("utf-8", errors="replace")
    # Redrawn in place: rich moves the cursor up over the previous frame
    # (ESC [ n A) instead of scrolling a new copy below it.
    assert re.search(r"\x1b\[\d*A", raw), raw[:500]
    assert "Workers" in view.text
    assert "Traceback" not in view.text


def test_info_interval_json_prints_one_snapshot_per_line(sqlite_url: str) -> None:
    q = unique_queue()
    plugq("enqueue", "-q", q, "--url", sqlite_url, "plugq.testing.tasks.add", "1", "1")
    proc = subprocess.Popen([PLUGQ, "info", q, "--interval", "0.1", "--json", "--url", sqlite_url],
                            stdout=subprocess.PIPE, text=True, env=clean_env())
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(3)]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    assert [snap["queues"][q]["queued"] for snap in lines] == [1, 1, 1]
    assert lines[0]["time"] < lines[2]["time"]


# -- the demo -----------------------------------------------------------------


def test_the_readme_main_job_as_a_new_user_runs_it(tmp_path: Path) -> None:
    """`plugq demo --jobs 200 --workers 2` in an empty folder, no configuration at all."""
    require_backend(f"sqlite:///{tmp_path / 'probe.db'}")
    home = tmp_path / "newuser"
    home.mkdir()
    r = plugq("demo", "--jobs", "200", "--workers", "2", cwd=home, timeout=180)
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = r.stdout
    assert "200 of 200 jobs finished, 0 failed, with 2 worker(s) on sqlite:///" in " ".join(
        out.split())
    assert re.search(r"[\d,]+ jobs/s", out)
    samples = re.findall(r"digit_sum\('([0-9a-f]{32})'\) = (\d+) ✓", out)
    assert len(samples) == 5
    for hex_string, value in samples:
        assert int(value) == sum(int(c, 16) for c in hex_string)
    # It used a temporary database, not ./plugq.db, and cleaned it up.
    assert list(home.iterdir()) == []
    db = re.search(r"sqlite:///(\S+?demo\.db)", " ".join(out.split()))
    assert db is not None and not Path(db.group(1)).exists()


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
def test_demo_runs_unchanged_on_other_backends(kind: str, request: pytest.FixtureRequest) -> None:
    url = "memory://" if kind == "memory" else redis_url_or_skip(request)
    r = plugq("demo", "--jobs", "60", "--workers", "2", "--url", url, timeout=180)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "60 of 60 jobs finished, 0 failed" in " ".join(r.stdout.split())
    assert r.stdout.count("✓") == 5


def test_demo_live_view_under_a_terminal(tmp_path: Path) -> None:
    require_backend(f"sqlite:///{tmp_path / 'probe.db'}")
    view = PtyProcess([PLUGQ, "demo", "--jobs", "200", "--workers", "2"], clean_env(), cwd=tmp_path)
    try:
        code = view.wait(timeout=180)
    finally:
        view.close()
    text = view.text
    assert code == 0, text
    assert re.search(r"enqueued\s+━+\s+200/200", text), text
    assert re.search(r"done\s+━+\s+200/200", text), text
    assert "Live queue counts (2 worker(s))" in text
    assert re.search(r"demo-[0-9a-f]{8}\s+0\s+0\s+0\s+0\s+200\s+0", text), text
    assert "Sample results:" in text and text.count("✓") == 5
    # A progress display, redrawn in place while the jobs drained.
    raw = view.raw.decode("utf-8", errors="replace")
    assert re.search(r"\x1b\[\d*A", raw)


# -- errors and exit codes --------------------------------------------------


def test_unknown_scheme_is_a_configuration_error_with_the_password_masked() -> None:
    r = plugq("info", "--url", "nosuch://admin:s3cret@example.com/0")
    line = assert_one_line_error(r, 2, "nosuch", "installed schemes")
    assert "s3cret" not in r.stderr and "admin:***@" in line


def test_malformed_url_is_a_configuration_error() -> None:
    r = plugq("info", "--url", "just-a-path.db")
    assert_one_line_error(r, 2, "--url", "just-a-path.db", "scheme://")


def test_unreachable_redis_is_a_connection_error_with_the_password_masked(
    request: pytest.FixtureRequest,
) -> None:
    redis_url_or_skip(request)  # the rq backend must be installed for this check
    # Port 1 on localhost: nothing listens there.
    r = plugq("info", "--url", "redis://:hunter2@127.0.0.1:1/0", timeout=60)
    assert_one_line_error(r, 2)
    assert "hunter2" not in r.stderr + r.stdout


@pytest.mark.postgres
def test_unreachable_postgres_is_a_connection_error_with_the_password_masked() -> None:
    # Port 1 on localhost: nothing listens there.
    r = plugq("info", "--url", "postgresql://app:hunter2@127.0.0.1:1/jobs", timeout=60)
    line = assert_one_line_error(r, 2, "app:***@127.0.0.1:1")
    assert "hunter2" not in r.stderr + r.stdout
    assert "cannot connect" in line


@pytest.mark.postgres
def test_unknown_postgres_parameter_is_one_line_listing_the_accepted_ones() -> None:
    r = plugq("info", "--url", "postgresql://app:hunter2@127.0.0.1:1/jobs?leese=5", timeout=60)
    line = assert_one_line_error(r, 2, "unknown parameter 'leese'", "lease", "schema", "sslmode")
    assert "hunter2" not in line


@pytest.mark.postgres
def test_worker_on_postgres_wakes_on_enqueue_from_another_process(postgres_url: str) -> None:
    q = unique_queue()
    w = subprocess.Popen([PLUGQ, "worker", q, "--url", postgres_url], env=clean_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: plugq_json("info", q, "--url", postgres_url)["workers"],
                   what="the worker to register")
        r = plugq("enqueue", "-q", q, "--url", postgres_url, "plugq.testing.tasks.add", "20", "22")
        assert r.returncode == 0, r.stderr
        wait_until(lambda: counts(postgres_url, q)["finished"] == 1, what="the job to finish")
        [job] = plugq_json("jobs", q, "--status", "finished", "--url", postgres_url)
        assert job["result"] == 42
    finally:
        w.send_signal(signal.SIGTERM)
        assert w.wait(30) == 0


def test_unopenable_sqlite_file_is_a_configuration_error(tmp_path: Path) -> None:
    require_backend(f"sqlite:///{tmp_path / 'probe.db'}")
    r = plugq("info", "--url", f"sqlite:///{tmp_path}/no/such/dir/x.db")
    assert_one_line_error(r, 2)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["nosuchcommand"], "No such command"),
        (["jobs"], "Missing argument"),
        (["worker", "--concurrency", "0", "--url", "memory://"], "--concurrency"),
        (["requeue", "--url", "memory://"], "--all or one or more JOB_IDs"),
        (["requeue", "--all", "abc", "--url", "memory://"], "--all or one or more JOB_IDs"),
        (["jobs", "default", "--status", "nosuch", "--url", "memory://"], "--status"),
    ],
)
def test_usage_errors_exit_1_without_traceback(args: list[str], fragment: str) -> None:
    r = plugq(*args)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert fragment in r.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["enqueue", "--url", "memory://", "nodots"], "dotted path"),
        (["enqueue", "--url", "memory://", "-q", "bad queue!", "m.f"], "queue name"),
        (["requeue", "--url", "memory://", "no-such-job"], "no-such-job"),
    ],
)
def test_job_errors_exit_1_with_one_line(args: list[str], fragment: str) -> None:
    r = plugq(*args)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert fragment in r.stderr


def test_help_and_version_exit_0() -> None:
    r = plugq("--help")
    assert r.returncode == 0
    for command in ("worker", "info", "enqueue", "jobs", "empty", "requeue", "backends", "demo"):
        assert command in r.stdout
    v = plugq("--version")
    assert v.returncode == 0 and re.search(r"plugq, version \d", v.stdout)


def test_module_entry_point_matches_console_script() -> None:
    r = subprocess.run([sys.executable, "-m", "plugq.cli", "backends", "--json"],
                       capture_output=True, text=True, env=clean_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == plugq_json("backends")


def test_children_stop_when_the_supervisor_is_killed(sqlite_url: str) -> None:
    q = unique_queue()
    sup = subprocess.Popen(
        [PLUGQ, "worker", q, "-c", "2", "--name", "orphan", "--url", sqlite_url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(),
    )
    try:
        workers = wait_until(lambda: len(_worker_records(sqlite_url, q)) == 2
                             and _worker_records(sqlite_url, q), what="two workers")
    finally:
        sup.kill()
        sup.wait()
    # Each child notices its supervisor is gone, stops warmly and unregisters.
    wait_until(lambda: _worker_records(sqlite_url, q) == [], timeout=30,
               what="the orphaned workers to stop")
    for w in workers:
        wait_until(lambda pid=w["pid"]: _gone(pid), timeout=10, what=f"pid {w['pid']} to exit")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _exits(code_by_generation: dict[int, int]) -> Callable[[int, int], list[str]]:
    """A child command exiting with the code given for its generation (0 after)."""
    def command(index: int, generation: int) -> list[str]:
        code = code_by_generation.get(generation, 0)
        return [sys.executable, "-c", f"raise SystemExit({code})"]
    return command


def test_supervisor_restarts_a_dead_child_but_not_a_finished_one() -> None:
    from plugq._supervisor import Supervisor

    sup = Supervisor(2, _exits({0: 1}))
    assert sup.run() == 0
    # Each child died once (exit 1), was restarted, then finished (exit 0).
    assert [slot.generation for slot in sup.slots] == [1, 1]


def test_supervisor_stops_on_a_child_configuration_error() -> None:
    from plugq._supervisor import Supervisor

    sup = Supervisor(2, _exits({0: 2}))
    assert sup.run() == 2
    assert [slot.generation for slot in sup.slots] == [0, 0]

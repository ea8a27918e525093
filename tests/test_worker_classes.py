"""Worker classes on every multi-process storage: simple (default), fork, spawn.

With fork (and spawn) the parent enforces a job's timeout from outside: a job
stuck in C code that never returns to the interpreter is killed at its
timeout, failed with a timeout error, and the worker takes the next job.
"""

from __future__ import annotations

import time
import uuid

import pytest

from plugq import NotSupportedError, Queue, Worker
from plugq.testing import tasks


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'classes.db'}"
    pytest.importorskip("rq")
    server = request.getfixturevalue("redis_server")
    server.flushall()
    return server.db_url(0)


@pytest.mark.slow
def test_fork_kills_a_job_stuck_in_c_past_its_timeout_and_goes_on(url):
    q = Queue(f"stuck-{uuid.uuid4().hex[:6]}", connection=url)
    stuck = q.enqueue(tasks.stuck_in_c, 10**9, job_timeout=1)
    after = q.enqueue(tasks.add, 2, 3)
    began = time.monotonic()
    w = Worker([q], worker_class="fork")
    assert w.work(burst=True)
    took = time.monotonic() - began
    assert took < 30, f"the stuck job held the worker {took:.1f} s"
    assert stuck.get_status() == "failed"
    assert "JobTimeoutException" in stuck.exc_info and "killed" in stuck.exc_info
    assert after.get_status() == "finished" and after.result == 5
    assert (w.successful_job_count, w.failed_job_count) == (1, 1)


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["fork", "spawn"])
def test_isolated_classes_run_jobs_with_results_meta_and_failures(url, worker_class):
    q = Queue(f"iso-{uuid.uuid4().hex[:6]}", connection=url)
    ok = q.enqueue(tasks.report_progress, 2)
    bad = q.enqueue(tasks.fail, "nope")
    slow = q.enqueue(tasks.busy, 5, job_timeout=1)
    assert Worker([q], worker_class=worker_class).work(burst=True)
    assert ok.result == 2 and ok.get_meta()["progress"] == 2 and ok.attempts == 1
    assert bad.get_status() == "failed" and "ValueError: nope" in bad.exc_info
    assert slow.get_status() == "failed" and "JobTimeoutException" in slow.exc_info


def test_simple_is_the_default_and_memory_refuses_fork():
    q = Queue("mem-classes", connection=f"memory://{uuid.uuid4().hex}")
    job = q.enqueue(tasks.add, 1, 1)
    with pytest.raises(NotSupportedError, match="simple"):
        Worker([q], worker_class="fork").work(burst=True)
    assert Worker([q]).work(burst=True) and job.result == 2


def _forked_children() -> list[int]:
    """Children of this process running this same program (a fork worker's job processes)."""
    import os
    from pathlib import Path

    me = os.getpid()
    cmdline = Path(f"/proc/{me}/cmdline").read_bytes()
    found = []
    for task in Path(f"/proc/{me}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline:
                    found.append(int(pid))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_a_sigkilled_fork_child_fails_its_job_which_is_retried_and_the_worker_goes_on(url, tmp_path):
    import os
    import signal
    import threading

    from plugq import Retry

    q = Queue(f"kill-{uuid.uuid4().hex[:6]}", connection=url)
    started, release = tmp_path / "started", tmp_path / "release"
    victim = q.enqueue(tasks.touch_then_wait, str(started), str(release), retry=Retry(max=1))
    after = q.enqueue(tasks.add, 1, 1)
    w = Worker([q], worker_class="fork")
    t = threading.Thread(target=lambda: w.work(burst=True), daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    children = _forked_children()
    assert len(children) == 1, children
    killed_at = time.monotonic()
    os.kill(children[0], signal.SIGKILL)
    release.touch()  # the retry runs through
    t.join(60)
    assert not t.is_alive()
    assert time.monotonic() - killed_at < 30
    assert victim.get_status() == "finished" and victim.attempts == 2
    assert after.get_status() == "finished" and after.result == 2


# -- worker commands in each worker class (issue 15) ------------------------------------

def _case(backend: str, worker_class: str):
    marks = {"redis": [pytest.mark.redis], "postgres": [pytest.mark.postgres]}.get(backend, [])
    if worker_class != "simple":
        marks = [*marks, pytest.mark.slow]
    return pytest.param(backend, worker_class, marks=marks, id=f"{backend}-{worker_class}")


#: memory keeps its data in this process (simple only); the others run all three classes.
COMMAND_CASES = [_case("memory", "simple")] + [
    _case(backend, cls) for backend in ("sqlite", "redis", "postgres")
    for cls in ("simple", "fork", "spawn")
]


def _backend_url(backend: str, request, tmp_path) -> str:
    if backend == "memory":
        return f"memory://commands-{uuid.uuid4().hex}"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'commands.db'}"
    if backend == "postgres":
        return request.getfixturevalue("postgres_url")
    pytest.importorskip("rq")
    server = request.getfixturevalue("redis_server")
    server.flushall()
    return server.db_url(0)


def _wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def _reaped(pid: int) -> bool:
    """True if ``pid`` is no child of this process (any more): it ended and was reaped."""
    import os

    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.mark.parametrize(("backend", "worker_class"), COMMAND_CASES)
def test_stop_a_running_job_in_each_worker_class(backend, worker_class, request, tmp_path):
    import os
    import threading

    from plugq import Result, Retry
    from plugq.command import send_stop_job_command

    url = _backend_url(backend, request, tmp_path)
    q = Queue(f"stop-{uuid.uuid4().hex[:6]}", connection=url)
    started, release, record = tmp_path / "started", tmp_path / "release", tmp_path / "stopped"
    job = q.enqueue(tasks.pid_then_wait, str(started), str(release), retry=Retry(max=2),
                    on_stopped=tasks.on_stopped_record, meta={"path": str(record)})
    after = q.enqueue(tasks.add, 2, 3)
    w = Worker([q], worker_class=worker_class)
    t = threading.Thread(target=w.work, kwargs={"burst": True}, daemon=True)
    t.start()
    try:
        _wait_for(started.exists, "the job to run")
        pid = int(started.read_text())
        assert job.get_status() == "started"
        send_stop_job_command(q.connection, job.id)
        # The stopped job never returns on its own (release is not there):
        # the worker ends its burst only once the stop took effect.
        t.join(60)
        assert not t.is_alive(), "the stop did not end the job"
    finally:
        release.touch()
        t.join(60)
    if worker_class == "simple":
        assert pid == os.getpid()  # in-process: interrupted as a timeout is
    else:
        assert pid != os.getpid() and _reaped(pid)  # its process was killed (and reaped)
    assert job.get_status() == "stopped" and job.is_stopped
    assert job.retries_left == 2 and job.result is None  # never retried, never returned
    assert "JobStoppedException" in job.exc_info
    assert job.latest_result().type == Result.Type.STOPPED
    assert record.read_text().split() == ["stopped", job.id]  # on_stopped ran, once
    # As the simple class keeps it: in no registry (registries are views by status).
    assert job.id not in q.started_job_registry.get_job_ids()
    assert job.id not in q.failed_job_registry.get_job_ids()
    assert after.get_status() == "finished" and after.result == 5  # the worker went on
    assert (w.successful_job_count, w.failed_job_count) == (1, 1)


@pytest.mark.parametrize(("backend", "worker_class"), COMMAND_CASES)
def test_kill_horse_in_each_worker_class(backend, worker_class, request, tmp_path):
    import os
    import resource
    import signal
    import threading

    from plugq import Result, Retry
    from plugq.command import send_kill_horse_command

    url = _backend_url(backend, request, tmp_path)
    q = Queue(f"kill-{uuid.uuid4().hex[:6]}", connection=url)
    started, release, handled = tmp_path / "started", tmp_path / "release", tmp_path / "handled"
    job = q.enqueue(tasks.pid_then_wait, str(started), str(release), retry=Retry(max=1),
                    meta={"path": str(handled)})
    after = q.enqueue(tasks.add, 2, 3)
    killed: list[tuple] = []
    w = Worker([q], worker_class=worker_class,
               work_horse_killed_handler=lambda *args: killed.append(args),
               exception_handlers=[tasks.record_exception])
    t = threading.Thread(target=w.work, kwargs={"burst": True}, daemon=True)
    t.start()
    try:
        _wait_for(started.exists, "the job to run")
        pid = int(started.read_text())
        send_kill_horse_command(q.connection, w.name)
        _wait_for(lambda: killed, "the work_horse_killed_handler")
    finally:
        release.touch()  # the retry (and, on a failure above, the first run) runs through
        t.join(60)
    assert not t.is_alive()
    [(handler_job, handler_pid, status, rusage)] = killed
    assert handler_job.id == job.id
    if worker_class == "simple":
        # No work horse: the worker's own pid, no wait status, no rusage.
        assert (handler_pid, status, rusage) == (os.getpid(), -1, None)
    else:
        # rq's arguments: the horse's pid, its raw wait status (killed by SIGKILL), its rusage.
        assert handler_pid == pid != os.getpid() and _reaped(pid)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert isinstance(rusage, resource.struct_rusage)
    # Failed as a killed horse, then retried (Retry obeyed): the second run finished.
    assert job.get_status() == "finished" and job.attempts == 2 and job.result == str(release)
    latest, first = job.results()[:2]
    assert latest.type == Result.Type.SUCCESSFUL and first.type == Result.Type.FAILED
    assert "WorkHorseKilledException" in first.exc_string
    if worker_class != "simple":
        assert "Work-horse terminated unexpectedly" in first.exc_string
    assert not handled.exists()  # as in rq, exception handlers are not called for a killed horse
    assert after.get_status() == "finished" and after.result == 5
    assert (w.successful_job_count, w.failed_job_count) == (2, 1)


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["fork", "spawn"])
def test_isolated_classes_run_the_workers_exception_handlers(worker_class, tmp_path):
    q = Queue(f"handlers-{uuid.uuid4().hex[:6]}", connection=f"sqlite:///{tmp_path / 'h.db'}")
    path = tmp_path / "handlers"
    job = q.enqueue(tasks.fail, "nope", meta={"path": str(path)})
    w = Worker([q], worker_class=worker_class,
               exception_handlers=[tasks.record_exception, tasks.stop_chain, tasks.never_called])
    assert w.work(burst=True)
    assert job.get_status() == "failed"
    assert path.read_text().split("\n")[:2] == ["handler1 ValueError", "handler2"]


def test_spawn_refuses_an_exception_handler_it_cannot_send(tmp_path):
    from plugq import ConfigurationError

    q = Queue("spawn-lambda", connection=f"sqlite:///{tmp_path / 'l.db'}")
    job = q.enqueue(tasks.add, 1, 2)
    w = Worker([q], worker_class="spawn", exception_handlers=[lambda *exc: True])
    with pytest.raises(ConfigurationError, match="top level of a module"):
        w.work(burst=True)
    assert job.get_status() == "queued"  # refused before any job was taken


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["fork", "spawn"])
def test_a_cold_shutdown_kills_the_job_process_too(worker_class, tmp_path):
    """A second signal ends the worker at once, and its job's process with it (no orphan)."""
    import os
    import signal
    import subprocess

    from _cli_helpers import PLUGQ, clean_env, plugq, plugq_json

    url = f"sqlite:///{tmp_path / 'cold.db'}"
    q = Queue("cold", connection=url)
    started, release = tmp_path / "started", tmp_path / "release"
    job = q.enqueue(tasks.pid_then_wait, str(started), str(release), 120)
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log:
        w = subprocess.Popen([PLUGQ, "worker", "cold", "--url", url, "--worker-class", worker_class],
                             stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    try:
        _wait_for(started.exists, "the job to run")
        pid = int(started.read_text())
        assert pid != w.pid
        w.send_signal(signal.SIGINT)
        _wait_for(lambda: "Warm shut down requested" in log_path.read_text(), "the warm shutdown")
        w.send_signal(signal.SIGINT)
        assert w.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if w.poll() is None:
            w.kill()
    # The worker killed and reaped its child before it exited.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not release.exists() and job.get_status() == "started"
    # Its worker is gone: the next worker finds the job abandoned (no retries asked for).
    again = plugq("worker", "cold", "--burst", "--url", url)
    assert again.returncode == 0, again.stderr
    [failed] = plugq_json("jobs", "cold", "--status", "failed", "--url", url)
    assert failed["id"] == job.id and "Abandoned" in failed["result"]


@pytest.mark.parametrize("worker_class", ["fork", "spawn"])
def test_isolated_classes_run_in_a_process_holding_over_1024_descriptors(worker_class, tmp_path):
    """A worker whose process holds 1,024 descriptors or more (an application's
    connections and files) runs jobs in fork and spawn children: the wait for the
    child must not use select(), which refuses a descriptor past 1,023."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 1300
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"this system allows {hard} open files; the test needs {need}")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    held: list[int] = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        q = Queue("fds", connection=f"sqlite:///{tmp_path}/fds.db")
        job = q.enqueue(tasks.add, 2, 3)
        assert Worker([q], connection=q.backend, worker_class=worker_class).work(burst=True)
        assert job.get_status() == "finished"
        assert job.result == 5
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

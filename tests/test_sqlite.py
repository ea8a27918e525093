"""The SQLite backend: the conformance suite, then what only a shared file can show."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from plugq import BackendUnavailableError, ConfigurationError, JobStatus, Queue, Retry, Worker
from plugq.connection import connect, forget
from plugq.testing import tasks
from plugq.testing.conformance import BackendConformance
from plugq_sqlite import DatabaseLockedError, SqliteStorage, schema


class TestSqliteConformance(BackendConformance):
    """The whole suite on a fresh file, with a short lease so abandonment shows quickly."""

    @pytest.fixture
    def backend(self, tmp_path):
        b = SqliteStorage(f"sqlite:///{tmp_path / 'conformance.db'}?lease=2")
        yield b
        b.close()


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll an observable condition until it holds, failing the test at the deadline."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def db(tmp_path) -> str:
    return str(tmp_path / "jobs.db")


# -- URLs -------------------------------------------------------------------------------


class TestUrl:
    def test_relative_path_is_resolved_against_the_working_directory(self, tmp_path, monkeypatch):
        monkeypatch.chdir(tmp_path)
        b = SqliteStorage("sqlite:///sub.db")
        try:
            assert b.path == str(tmp_path / "sub.db")
            assert (tmp_path / "sub.db").exists()
        finally:
            b.close()

    def test_absolute_path_and_parameters(self, db):
        b = SqliteStorage(f"sqlite:///{db}?lease=5&busy_timeout=2.5&synchronous=full&poll=0.005")
        try:
            assert b.path == db
            assert b.lease == 5.0
            assert b.busy_timeout == 2.5
            assert b.synchronous == "FULL"
            assert b.poll_max == 0.005
        finally:
            b.close()

    def test_defaults(self, db):
        b = SqliteStorage(f"sqlite:///{db}")
        try:
            assert b.lease == 60.0
            assert b.busy_timeout == 30.0
            assert b.synchronous == "NORMAL"
            assert b.poll_max == 0.01
        finally:
            b.close()

    @pytest.mark.parametrize(
        ("query", "words"),
        [
            ("lease=soon", ["lease", "'soon'", "seconds", "?lease=30"]),
            ("lease=0", ["lease", "'0'", "seconds"]),
            ("lease=-3", ["lease", "'-3'"]),
            ("lease=", ["lease", "''"]),
            ("busy_timeout=x", ["busy_timeout", "'x'", "?busy_timeout=30"]),
            ("synchronous=off", ["synchronous", "'off'", "normal", "full"]),
            ("poll=inf", ["poll", "'inf'", "?poll=0.005"]),
            ("mode=rwc", ["mode", "'rwc'", "ro"]),
            ("leese=5", ["unknown parameter", "'leese'", "lease"]),
            ("lease=1&lease=2", ["lease", "2 times"]),
        ],
    )
    def test_bad_parameter_names_key_value_and_form(self, db, query, words):
        with pytest.raises(ConfigurationError) as info:
            SqliteStorage(f"sqlite:///{db}?{query}")
        for word in words:
            assert word in str(info.value)
        assert not os.path.exists(db), "a refused URL must not create the file"

    @pytest.mark.parametrize(
        "url", ["sqlite://host/jobs.db", "sqlite://", "sqlite:///", "sqlite:///:memory:"]
    )
    def test_malformed_url_shows_the_right_form(self, url):
        with pytest.raises(ConfigurationError) as info:
            SqliteStorage(url)
        assert "sqlite:///relative/path.db" in str(info.value) or "memory://" in str(info.value)

    def test_missing_folder_is_a_clear_error(self, tmp_path):
        with pytest.raises(BackendUnavailableError) as info:
            SqliteStorage(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}")
        assert "folder" in str(info.value)

    def test_registered_for_the_sqlite_scheme(self, db):
        url = f"sqlite:///{db}"
        try:
            backend = connect(url)
            assert isinstance(backend.storage, SqliteStorage)
            assert connect(url) is backend
        finally:
            forget(url)


# -- the file ---------------------------------------------------------------------------


class TestFile:
    def test_new_database_and_its_wal_files_are_owner_only(self, db):
        old = os.umask(0o022)  # a typical umask would otherwise leave them world-readable
        try:
            b = SqliteStorage(f"sqlite:///{db}")
            Queue("q", connection=b).enqueue(tasks.add, 1, 2)
        finally:
            os.umask(old)
        try:
            for suffix in ("", "-wal", "-shm"):
                assert os.path.exists(db + suffix)
                assert stat.S_IMODE(os.stat(db + suffix).st_mode) == 0o600, suffix
        finally:
            b.close()

    def test_existing_file_mode_is_left_alone(self, db):
        SqliteStorage(f"sqlite:///{db}").close()
        os.chmod(db, 0o640)
        SqliteStorage(f"sqlite:///{db}").close()
        assert stat.S_IMODE(os.stat(db).st_mode) == 0o640

    def test_file_is_a_versioned_wal_database(self, db):
        SqliteStorage(f"sqlite:///{db}").close()
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
            assert conn.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        finally:
            conn.close()

    def test_jobs_survive_reopening(self, db):
        b = SqliteStorage(f"sqlite:///{db}")
        job = Queue("q", connection=b).enqueue(tasks.add, 2, 3)
        b.close()
        again = SqliteStorage(f"sqlite:///{db}")
        try:
            q = Queue("q", connection=again)
            assert q.get_job_ids() == [job.id]
            Worker([q], connection=again).work(burst=True)
            assert q.fetch_job(job.id).return_value() == 5
        finally:
            again.close()

    def test_an_empty_file_is_adopted(self, db):
        Path(db).touch()
        b = SqliteStorage(f"sqlite:///{db}")
        try:
            assert Queue("q", connection=b).enqueue(tasks.add, 1, 1).get_status() == "queued"
        finally:
            b.close()


class TestReadOnly:
    def test_mode_ro_reads_and_refuses_writes_without_touching_the_file(self, tmp_path):
        db = tmp_path / "ro.db"
        rw = SqliteStorage(f"sqlite:///{db}")
        kept = Queue("q", connection=rw).enqueue(tasks.add, 1, 2)
        rw.close()
        before = db.read_bytes()
        ro = SqliteStorage(f"sqlite:///{db}?mode=ro")
        try:
            q = Queue("q", connection=ro)
            assert q.get_job_ids() == [kept.id]
            assert q.fetch_job(kept.id).args == (1, 2)
            with pytest.raises(BackendUnavailableError) as info:
                q.enqueue(tasks.add, 3, 4)
            assert "read-only" in str(info.value) and "mode=ro" in str(info.value)
        finally:
            ro.close()
        assert db.read_bytes() == before

    def test_mode_ro_never_creates_a_file(self, tmp_path):
        db = tmp_path / "absent.db"
        with pytest.raises(BackendUnavailableError) as info:
            SqliteStorage(f"sqlite:///{db}?mode=ro")
        assert "does not exist" in str(info.value)
        assert not db.exists()

    def test_full_disk_is_a_clear_error_and_writes_nothing(self, db):
        b = SqliteStorage(f"sqlite:///{db}")
        q = Queue("q", connection=b)
        kept = q.enqueue(tasks.add, 1, 2)
        conn = b._conn()
        # Cap the file at its size: growing it then fails as a full disk does.
        conn.execute(f"PRAGMA max_page_count = {conn.execute('PRAGMA page_count').fetchone()[0]}")
        with pytest.raises(BackendUnavailableError) as info:
            q.enqueue_many([Queue.prepare_data(tasks.echo, ("x" * 4000,)) for _ in range(100)])
        assert "full" in str(info.value) and "nothing of this call was written" in str(info.value)
        conn.execute("PRAGMA max_page_count = 1073741823")
        assert q.get_job_ids() == [kept.id]
        b.close()


class TestRefusedFiles:
    """A file that is not ours is refused with a clear error and left byte for byte as it was."""

    @staticmethod
    def snapshot(folder: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}

    def test_garbage_file(self, tmp_path):
        db = tmp_path / "notes.db"
        db.write_bytes(b"these are my notes, not a database\n" * 50)
        before = self.snapshot(tmp_path)
        with pytest.raises(BackendUnavailableError) as info:
            SqliteStorage(f"sqlite:///{db}")
        assert "not a plugq database" in str(info.value) and str(db) in str(info.value)
        assert self.snapshot(tmp_path) == before

    def test_sqlite_file_with_a_broken_body(self, tmp_path):
        db = tmp_path / "broken.db"
        db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
        before = self.snapshot(tmp_path)
        with pytest.raises(BackendUnavailableError) as info:
            SqliteStorage(f"sqlite:///{db}")
        assert "plugq will not touch it" in str(info.value)
        assert self.snapshot(tmp_path) == before

    def test_another_applications_database(self, tmp_path):
        db = tmp_path / "app.db"
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
        conn.commit()
        conn.close()
        before = self.snapshot(tmp_path)
        with pytest.raises(BackendUnavailableError) as info:
            SqliteStorage(f"sqlite:///{db}")
        message = str(info.value)
        assert "another application" in message and "users" in message
        assert self.snapshot(tmp_path) == before

    def test_newer_plugq_schema(self, tmp_path):
        db = tmp_path / "future.db"
        SqliteStorage(f"sqlite:///{db}").close()
        conn = sqlite3.connect(db)
        conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        before = self.snapshot(tmp_path)
        with pytest.raises(BackendUnavailableError) as info:
            SqliteStorage(f"sqlite:///{db}")
        message = str(info.value)
        assert f"schema version {schema.SCHEMA_VERSION + 1}" in message
        assert "upgrade plugq" in message
        assert self.snapshot(tmp_path) == before


class TestCreatingAtOnce:
    """Processes opening one new file together: the schema appears whole or not at all."""

    def test_inspect_reads_the_file_in_one_snapshot(self, db):
        """Another process commits the whole schema between inspect()'s first two reads.

        Read from one snapshot, the file is still empty (0: create it);
        read one statement at a time, it would show the new tables without
        the application_id read just before, and be refused as foreign.
        """
        creator = sqlite3.connect(db, isolation_level=None)
        creator.execute("PRAGMA journal_mode = WAL")  # a reader's snapshot lets the writer commit

        class CommitsMidway(sqlite3.Connection):
            committed = False

            def execute(self, sql, *args):  # type: ignore[override]
                if sql == "PRAGMA user_version" and not self.committed:
                    type(self).committed = True
                    schema.migrate(creator, db)
                return super().execute(sql, *args)

        reader = sqlite3.connect(db, isolation_level=None, factory=CommitsMidway)
        try:
            assert schema.inspect(reader, db) == 0
            assert CommitsMidway.committed
            assert not reader.in_transaction  # the snapshot was released
            # Afterwards, a fresh snapshot sees the finished plugq file.
            assert schema.inspect(reader, db) == schema.SCHEMA_VERSION
        finally:
            reader.close()
            creator.close()

    def test_inspect_leaves_a_busy_database_to_the_retry_loop(self, db):
        SqliteStorage(f"sqlite:///{db}").close()
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("PRAGMA journal_mode = DELETE")
        holder.execute("BEGIN EXCLUSIVE")  # no reader may start until it ends
        reader = sqlite3.connect(db, isolation_level=None, timeout=0)
        try:
            with pytest.raises(sqlite3.OperationalError) as info:
                schema.inspect(reader, db)
            assert schema.is_busy(info.value)  # not turned into "not a usable database"
            assert not reader.in_transaction
        finally:
            holder.execute("ROLLBACK")
            holder.close()
            reader.close()

    @pytest.mark.slow
    def test_processes_creating_one_new_file_at_once_all_succeed(self, tmp_path):
        """6 processes open the same new path at one barrier, 25 times over: none is refused."""
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        procs_n, rounds = 6, 25
        for round_no in range(rounds):
            path = tmp_path / f"new-{round_no}.db"
            barrier = ctx.Barrier(procs_n)
            errors = ctx.Queue()
            procs = [
                ctx.Process(target=_open_new_file_at_barrier, args=(str(path), barrier, errors, n))
                for n in range(procs_n)
            ]
            for p in procs:
                p.start()
            for p in procs:
                p.join(120)
            if any(p.exitcode != 0 for p in procs):
                failed = []
                with contextlib.suppress(queue.Empty):
                    while True:
                        failed.append(errors.get(timeout=1))
                pytest.fail(f"round {round_no}: exit codes {[p.exitcode for p in procs]}, {failed}")
            check = SqliteStorage(f"sqlite:///{path}")
            try:
                assert sorted(check.ids("q", JobStatus.QUEUED)) == sorted(
                    f"job-{n}" for n in range(procs_n)
                )
            finally:
                check.close()
            conn = sqlite3.connect(path)
            try:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
                assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION
                assert conn.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
            finally:
                conn.close()


def _open_new_file_at_barrier(path: str, barrier, errors, n: int) -> None:
    try:
        barrier.wait(60)
        b = SqliteStorage(f"sqlite:///{path}")
        try:
            Queue("q", connection=b).enqueue(tasks.add, n, n, job_id=f"job-{n}")
        finally:
            b.close()
    except BaseException as exc:  # reported to the parent, which fails the test with it
        errors.put(f"process {n}: {exc!r}")
        raise


# -- queries ----------------------------------------------------------------------------


class TestIndexes:
    """Every hot query is an index search: O(log n) however many rows the file holds."""

    @pytest.mark.parametrize(
        ("sql", "params", "index"),
        [
            ("claim", None, "jobs_by_status"),
            ("SELECT id FROM jobs WHERE status = 'scheduled' AND scheduled_for <= ? "
             "ORDER BY scheduled_for, id LIMIT ?", (1.0, 10), "jobs_due"),
            ("SELECT id FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= ? "
             "ORDER BY expires_at LIMIT ?", (1.0, 10), "jobs_expiry"),
            ("SELECT j.id, j.depends_on FROM job_dependencies d JOIN jobs j ON j.id = d.job_id "
             "WHERE d.depends_on = ? AND j.status = 'deferred'", ("x",),
             "job_dependencies_by_parent"),
            ("SELECT count(*) FROM jobs WHERE origin = ? AND status = ?", ("q", "failed"),
             "jobs_by_status"),
        ],
    )
    def test_query_plan_uses_an_index(self, db, sql, params, index):
        from plugq_sqlite import backend as impl

        if sql == "claim":
            sql, params = impl._CLAIM, (1.0, "w", 1.0, "q", 1.0)
        SqliteStorage(f"sqlite:///{db}").close()
        conn = sqlite3.connect(db)
        try:
            plan = " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
        finally:
            conn.close()
        assert index in plan
        assert "SCAN jobs" not in plan and "SCAN j " not in plan, plan

    def test_claim_takes_jobs_in_order_with_a_large_queue(self, db):
        b = SqliteStorage(f"sqlite:///{db}")
        try:
            q = Queue("big", connection=b)
            jobs = q.enqueue_many([Queue.prepare_data(tasks.add, (i, i)) for i in range(20_000)])
            front = q.enqueue(tasks.add, 0, 1, at_front=True)
            started = time.perf_counter()
            claimed = [b.claim(["big"], "w", time.time()) for _ in range(3)]
            assert time.perf_counter() - started < 0.5
            assert [r.id for r in claimed if r] == [front.id, jobs[0].id, jobs[1].id]
            assert q.count == 20_000 - 2
        finally:
            b.close()


# -- concurrency inside one process ------------------------------------------------------


class TestLocking:
    def test_lock_held_too_long_raises_a_clear_error(self, db):
        b = SqliteStorage(f"sqlite:///{db}?busy_timeout=0.3")
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(DatabaseLockedError) as info:
                Queue("q", connection=b).enqueue(tasks.add, 1, 2)
            assert time.monotonic() - started < 10
            message = str(info.value)
            assert "locked" in message and "busy_timeout" in message and db in message
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # Nothing half-written: the queue is as it was, and usable again.
        q = Queue("q", connection=b)
        assert q.count == 0
        q.enqueue(tasks.add, 1, 2)
        assert q.count == 1
        b.close()

    def test_short_lock_is_waited_out(self, db):
        b = SqliteStorage(f"sqlite:///{db}?busy_timeout=10")
        holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        releaser = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
        releaser.start()
        try:
            job = Queue("q", connection=b).enqueue(tasks.add, 1, 2)
            assert job.get_status() == "queued"
        finally:
            releaser.join()
            holder.close()
            b.close()

    def test_threads_share_a_backend_with_a_connection_each(self, db):
        b = SqliteStorage(f"sqlite:///{db}")
        q = Queue("q", connection=b)
        errors: list[BaseException] = []

        def produce(n: int) -> None:
            try:
                for i in range(200):
                    q.enqueue(tasks.add, n, i)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert q.count == 800
        assert len(b._conns) >= 1
        b.close()

    def test_wait_wakes_on_new_work_and_times_out_otherwise(self, db):
        b = SqliteStorage(f"sqlite:///{db}")
        other = SqliteStorage(f"sqlite:///{db}")  # as another process would
        try:
            started = time.monotonic()
            b.wait(["q"], 0.3)
            assert 0.25 < time.monotonic() - started < 2.0

            woke = threading.Event()

            def waiter() -> None:
                b.wait(["q"], 30.0)
                woke.set()

            t = threading.Thread(target=waiter)
            t.start()
            Queue("other-queue", connection=other).enqueue(tasks.add, 1, 1)
            assert not woke.wait(0.3), "work on a queue not watched must not wake the waiter"
            Queue("q", connection=other).enqueue(tasks.add, 1, 1)
            assert woke.wait(5.0), "wait() did not notice the new job"
            t.join()
        finally:
            other.close()
            b.close()


# -- many processes ---------------------------------------------------------------------

PRODUCER = textwrap.dedent(
    """
    import sys
    from plugq import Queue
    from plugq.testing.tasks import append_line
    url, out, me, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    q = Queue("mp", connection=url)
    for i in range(0, n, 2):
        q.enqueue(append_line, out, f"{me}-{i}")
        q.enqueue_many([Queue.prepare_data(append_line, (out, f"{me}-{i + 1}"))])
    print("produced", n)
    """
)

WORKER = textwrap.dedent(
    """
    import os, sys, threading, time
    from plugq import Queue, Worker, JobStatus
    url, done, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    q = Queue("mp", connection=url)
    w = Worker([q], connection=url)

    def stop_when_all_done():
        # Stop once every producer has finished and every job has ended.
        while True:
            if os.path.exists(done) and q.finished_job_registry.count >= total:
                w.request_stop()
                return
            time.sleep(0.05)

    threading.Thread(target=stop_when_all_done, daemon=True).start()
    w.work()
    print("worker", w.name, "ran", w.successful_job_count, "failed", w.failed_job_count)
    """
)


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
def test_many_producers_and_workers_on_one_file(tmp_path):
    """3 producers and 3 workers, started together on a file that does not exist yet."""
    db = tmp_path / "shared.db"
    url = f"sqlite:///{db}?lease=10"
    out = tmp_path / "out.txt"
    done = tmp_path / "producers-done"
    producers_n, per_producer = 3, 1000
    total = producers_n * per_producer

    workers = [_python(WORKER, url, str(done), str(total)) for _ in range(3)]
    producers = [
        _python(PRODUCER, url, str(out), f"p{n}", str(per_producer)) for n in range(producers_n)
    ]
    outputs = []
    try:
        for p in producers:
            outputs.append(p.communicate(timeout=120))
            assert p.returncode == 0, outputs[-1][1]
        done.touch()
        for w in workers:
            outputs.append(w.communicate(timeout=120))
            assert w.returncode == 0, outputs[-1][1]
    finally:
        for proc in (*producers, *workers):
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    stderr = "\n".join(err for _, err in outputs)
    assert "locked" not in stderr.lower() and "Traceback" not in stderr, stderr[-3000:]
    # Every job ran exactly once: one line each, no line twice.
    lines = out.read_text().splitlines()
    expected = {f"p{n}-{i}" for n in range(producers_n) for i in range(per_producer)}
    assert len(lines) == total
    assert set(lines) == expected
    # And the store agrees: all finished, nothing queued, started or failed.
    b = SqliteStorage(url)
    try:
        q = Queue("mp", connection=b)
        assert q.count == 0
        assert q.started_job_registry.count == 0
        assert q.failed_job_registry.count == 0
        assert q.finished_job_registry.count == total
        assert b.list_workers() == []
        # Work was shared: each of the three workers ran some of it.
        ran = [int(o.split()[3]) for o, _ in outputs[producers_n:]]
        assert sum(ran) == total and all(n > 0 for n in ran), ran
    finally:
        b.close()


CRASHING_WORKER = textwrap.dedent(
    """
    import sys
    from plugq import Queue, Worker
    url = sys.argv[1]
    Worker([Queue("crash", connection=url)], connection=url, name="doomed").work()
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("retry", [True, False], ids=["retried", "failed"])
def test_worker_killed_mid_job(tmp_path, retry):
    """SIGKILL a worker while it runs a job: the job is never silently lost."""
    url = f"sqlite:///{tmp_path / 'crash.db'}?lease=1"
    b = SqliteStorage(url)
    q = Queue("crash", connection=b)
    started, release = tmp_path / "started", tmp_path / "release"
    job = q.enqueue(
        tasks.touch_then_wait, str(started), str(release), retry=Retry(max=1) if retry else None
    )
    others = [q.enqueue(tasks.add, i, i) for i in range(5)]

    doomed = _python(CRASHING_WORKER, url)
    try:
        wait_for(started.exists, what="the job to start in the doomed worker")
        assert job.get_status() == "started"
        assert job.worker_name == "doomed"
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait()
    assert doomed.returncode == -signal.SIGKILL
    # The other jobs were never touched by the dead worker.
    assert all(o.get_status() == "queued" for o in others)

    # Any process's maintenance notices the silence once the lease has run out.
    release.touch()

    def recovered() -> bool:
        q.backend.maintenance()
        return job.get_status() != "started"

    wait_for(recovered, timeout=15, what="the abandoned job to be recovered")
    assert [w.name for w in b.list_workers()] == []

    Worker([q], connection=b, name="survivor").work(burst=True)
    job.refresh()
    if retry:
        assert job.get_status() == "finished"
        assert job.worker_name == "survivor"
        assert job.return_value() == str(release)
        assert job.retries_left == 0
        assert q.failed_job_registry.count == 0
    else:
        assert job.get_status() == "failed"
        assert q.failed_job_registry.get_job_ids() == [job.id]
        assert "AbandonedJobError" in job.exc_info and "abandoned" in job.exc_info
        assert "'doomed'" in job.exc_info
    for i, other in enumerate(others):
        assert other.get_status() == "finished"
        assert other.return_value() == 2 * i
    assert q.count == 0 and q.started_job_registry.count == 0
    b.close()


@pytest.mark.slow
def test_forked_children_reopen_their_own_connections(tmp_path):
    """A backend made before fork() works in the children (each opens its own connection)."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'fork.db'}"
    b = SqliteStorage(url)
    q = Queue("forked", connection=b)
    q.enqueue(tasks.add, 0, 0)  # the parent's connection is open and used before forking
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=_enqueue_in_child, args=(b, n)) for n in range(3)]
    for c in children:
        c.start()
    for c in children:
        c.join(60)
        assert c.exitcode == 0
    # The parent's own connection still works after its children used theirs.
    assert q.count == 1 + 3 * 50
    Worker([q], connection=b).work(burst=True)
    assert q.finished_job_registry.count == 151
    assert q.fetch_job(q.finished_job_registry.get_job_ids()[0]).get_status() == JobStatus.FINISHED
    b.close()


def _enqueue_in_child(backend: SqliteStorage, n: int) -> None:
    q = Queue("forked", connection=backend)
    for i in range(50):
        q.enqueue(tasks.add, n, i)

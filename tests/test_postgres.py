"""The PostgreSQL backend: the conformance suite, then what only a database server can show."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest

import plugq_postgres
from plugq import (
    BackendUnavailableError,
    ConfigurationError,
    DuplicateJobError,
    JobStatus,
    Queue,
    Retry,
    Worker,
)
from plugq.connection import connect, forget
from plugq.testing import tasks
from plugq.testing.conformance import BackendConformance
from plugq.testing.storage import StorageConformance
from plugq_postgres import PostgresStorage, schema
from plugq_postgres._url import parse_url

PLUGQ = str(Path(sys.executable).with_name("plugq"))

pytestmark = pytest.mark.postgres


class TestPostgresConformance(BackendConformance):
    """The whole suite on a fresh schema, with a short lease so abandonment shows quickly."""

    @pytest.fixture
    def backend(self, postgres_url):
        b = PostgresStorage(f"{postgres_url}&lease=2")
        yield b
        b.close()


class TestPostgresStorageConformance(StorageConformance):
    """Every primitive of plugq.storage.Storage, on a fresh schema."""

    @pytest.fixture
    def storage(self, postgres_url):
        s = PostgresStorage(f"{postgres_url}&lease=2")
        yield s
        s.close()


def wait_for(predicate, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll an observable condition until it holds, failing the test at the deadline."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def storage(postgres_url):
    s = PostgresStorage(postgres_url)
    yield s
    s.close()


def admin(url: str) -> psycopg.Connection:
    """A plain connection to the test database (plugq's parameters removed)."""
    return psycopg.connect(parse_url(url).conninfo, autocommit=True)


# -- URLs -------------------------------------------------------------------------------


class TestUrl:
    def test_both_schemes_are_registered_and_cached(self, postgres_url):
        other = postgres_url.replace("postgresql://", "postgres://", 1)
        try:
            a = connect(postgres_url)
            assert isinstance(a.storage, PostgresStorage) and connect(postgres_url) is a
            b = connect(other)
            assert isinstance(b.storage, PostgresStorage) and b.storage.schema == a.storage.schema
        finally:
            forget(postgres_url)
            forget(other)

    def test_defaults_and_parameters(self, postgres_url):
        s = PostgresStorage(f"{postgres_url}&lease=7.5&pool_size=3&reconnect_timeout=9"
                            "&application_name=plugq-test")
        try:
            assert s.lease == 7.5
            assert s.settings.pool_size == 3 and s.settings.reconnect_timeout == 9
            assert "application_name=plugq-test" in s.settings.conninfo
            assert "lease" not in s.settings.conninfo and "schema" not in s.settings.conninfo
        finally:
            s.close()
        s = PostgresStorage(postgres_url)
        try:
            assert s.lease == 60.0 and s.settings.pool_size == 8
            assert s.settings.reconnect_timeout == 60.0
            assert "connect_timeout=10" in s.settings.conninfo
        finally:
            s.close()

    def test_password_is_masked_in_repr_and_errors(self):
        url = "postgresql://app:hunter2@127.0.0.1:1/jobs?connect_timeout=2"
        with pytest.raises(BackendUnavailableError) as err:
            PostgresStorage(url)
        assert "hunter2" not in str(err.value) and "app:***@" in str(err.value)

    def test_missing_psycopg_names_the_extra_and_the_scheme_still_lists(self, tmp_path):
        script = textwrap.dedent("""
            import sys
            sys.modules["psycopg"] = None          # as if plugq[postgres] were not installed
            sys.modules["psycopg_pool"] = None
            import plugq
            from plugq.plugins import backends
            print("listed", "postgresql" in backends() and "postgres" in backends())
            try:
                plugq.connect("postgresql://app:pw@127.0.0.1/jobs")
            except plugq.BackendUnavailableError as exc:
                print("error", exc)
        """)
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
        assert "listed True" in out.stdout, out.stderr
        assert "error" in out.stdout and "pip install 'plugq[postgres]'" in out.stdout


# -- the schema ---------------------------------------------------------------------------


class TestSchema:
    def test_created_in_the_named_schema_with_its_version(self, storage, postgres_url):
        with admin(postgres_url) as conn:
            tables = {row[0] for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (storage.schema,))}
            assert {"jobs", "workers", "plugq_schema"} <= tables
            version = conn.execute(
                f'SELECT max(version) FROM "{storage.schema}".plugq_schema').fetchone()[0]
        assert version == schema.SCHEMA_VERSION

    def test_reopening_keeps_the_data(self, storage, postgres_url):
        job = Queue("keep", connection=storage).enqueue(tasks.add, 1, 2)
        again = PostgresStorage(postgres_url)
        try:
            assert Queue("keep", connection=again).get_job_ids() == [job.id]
        finally:
            again.close()

    def test_newer_schema_version_is_refused_and_left_alone(self, storage, postgres_url):
        Queue("x", connection=storage).enqueue(tasks.add, 1, 2)
        with admin(postgres_url) as conn:
            conn.execute(f'INSERT INTO "{storage.schema}".plugq_schema (version) VALUES (99)')
        with pytest.raises(BackendUnavailableError) as err:
            PostgresStorage(postgres_url)
        assert "version 99" in str(err.value) and "upgrade plugq" in str(err.value)
        with admin(postgres_url) as conn:
            assert conn.execute(f'SELECT count(*) FROM "{storage.schema}".jobs').fetchone()[0] == 1

    def test_schema_of_another_application_is_refused_and_left_alone(self, postgres_url):
        name = parse_url(postgres_url).schema
        with admin(postgres_url) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
            conn.execute(f'CREATE TABLE "{name}".orders (id int)')
        with pytest.raises(BackendUnavailableError) as err:
            PostgresStorage(postgres_url)
        assert "another application" in str(err.value) and "orders" in str(err.value)
        with admin(postgres_url) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (name,))]
        assert tables == ["orders"]

    def test_processes_creating_one_schema_at_once_create_it_once(self, postgres_url):
        made: list[PostgresStorage] = []
        failures: list[BaseException] = []

        def open_one() -> None:
            try:
                made.append(PostgresStorage(postgres_url))
            except BaseException as exc:  # pragma: no cover - reported below
                failures.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in made:
            s.close()
        assert not failures and len(made) == 6
        with admin(postgres_url) as conn:
            rows = conn.execute(
                f'SELECT version FROM "{made[0].schema}".plugq_schema').fetchall()
        # One row per migration step, each made once.
        assert rows == [(v,) for v in range(1, schema.SCHEMA_VERSION + 1)]

    def test_upgrade_from_version_2_keeps_queued_jobs_in_priority_order(self, postgres_url):
        """Version 3 rebuilds qrank (so -2**31 no longer overflows); queued rows keep their order."""
        from plugq.storage import JobRecord
        from plugq_postgres.storage import _params, _Sql

        name = parse_url(postgres_url).schema
        with admin(postgres_url) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
            conn.execute(f'CREATE TABLE "{name}".plugq_schema (version integer NOT NULL, '
                         "migrated_at timestamptz NOT NULL DEFAULT now())")
            steps = schema.migrations(name)
            for version in (1, 2):
                conn.execute(steps[version])
                conn.execute(f'INSERT INTO "{name}".plugq_schema (version) VALUES (%s)',
                             (version,))
            insert = _Sql(name).insert
            for job_id, priority in [("mid", 0), ("low", -(2**31) + 1), ("high", 5)]:
                rec = JobRecord(id=job_id, func_name="plugq.testing.tasks.add", origin="up",
                                payload=b"", status=JobStatus.QUEUED, priority=priority)
                conn.execute(insert, (*_params(rec), False))
        upgraded = PostgresStorage(postgres_url)
        try:
            lowest = Queue("up", connection=upgraded).enqueue(tasks.add, 1, 2, priority=-(2**31))
            taken = [upgraded.claim(["up"], "w", 1.0) for _ in range(5)]
        finally:
            upgraded.close()
        assert [r.id if r else None for r in taken] == ["high", "mid", "low", lowest.id, None]
        with admin(postgres_url) as conn:
            versions = conn.execute(f'SELECT version FROM "{name}".plugq_schema').fetchall()
        assert versions == [(v,) for v in range(1, schema.SCHEMA_VERSION + 1)]


# -- the claim --------------------------------------------------------------------------


class TestClaim:
    def test_claim_reads_the_queue_index(self, storage, postgres_url):
        q = Queue("idx", connection=storage)
        q.enqueue_many([Queue.prepare_data(tasks.add, (i, i)) for i in range(3000)])
        s = f'"{storage.schema}"'
        with admin(postgres_url) as conn:
            conn.execute(f"ANALYZE {s}.jobs")
            plan = "\n".join(row[0] for row in conn.execute(
                f"EXPLAIN SELECT id FROM {s}.jobs WHERE origin = 'idx' AND status = 'queued' "
                "AND (expires_at IS NULL OR expires_at > 0) ORDER BY qrank, pos LIMIT 1 "
                "FOR UPDATE SKIP LOCKED"))
        assert "jobs_by_status" in plan, plan

    def test_a_row_locked_by_another_transaction_is_skipped_not_waited_for(
        self, storage, postgres_url
    ):
        q = Queue("skip", connection=storage)
        first = q.enqueue(tasks.add, 1, 1)
        second = q.enqueue(tasks.add, 2, 2)
        with admin(postgres_url) as conn, conn.transaction():
            conn.execute(f'SELECT 1 FROM "{storage.schema}".jobs WHERE id = %s FOR UPDATE',
                         (first.id,))
            started = time.monotonic()
            rec = storage.claim(["skip"], "w1", time.time())
            assert time.monotonic() - started < 2
            assert rec is not None and rec.id == second.id
        rec = storage.claim(["skip"], "w1", time.time())
        assert rec is not None and rec.id == first.id

    def test_concurrent_claimers_take_each_job_exactly_once(self, storage):
        n = 400
        Queue("race", connection=storage).enqueue_many(
            [Queue.prepare_data(tasks.add, (i, i), job_id=f"race-{i}") for i in range(n)])
        taken: list[str] = []
        lock = threading.Lock()

        def claimer(name: str) -> None:
            while (rec := storage.claim(["race"], name, time.time())) is not None:
                with lock:
                    taken.append(rec.id)

        threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(taken) == sorted(f"race-{i}" for i in range(n))

    def test_queues_are_taken_in_the_order_given_in_one_call(self, storage):
        low = Queue("low", connection=storage).enqueue(tasks.add, 0, 1)
        high = Queue("high", connection=storage).enqueue(tasks.add, 0, 2)
        assert storage.claim(["high", "low"], "w", time.time()).id == high.id
        assert storage.claim(["high", "low"], "w", time.time()).id == low.id
        assert storage.claim(["high", "low"], "w", time.time()) is None


# -- waking idle workers ------------------------------------------------------------------


class TestWakeUp:
    def _waiter(self, storage, queues, timeout):
        result: dict[str, float] = {}

        def run() -> None:
            started = time.monotonic()
            storage.wait(queues, timeout)
            result["returned"] = time.monotonic()
            result["waited"] = result["returned"] - started

        thread = threading.Thread(target=run)
        thread.start()
        return thread, result

    def test_notify_wakes_a_waiting_worker_at_once(self, storage, postgres_url):
        other = PostgresStorage(postgres_url)  # another "process": its own pool
        try:
            thread, result = self._waiter(storage, ["wake"], 20)
            time.sleep(0.3)  # the waiter is asleep on its socket
            assert "returned" not in result
            enqueued = time.monotonic()
            Queue("wake", connection=other).enqueue(tasks.add, 1, 1)
            thread.join(5)
            assert "returned" in result
            assert result["returned"] - enqueued < 0.5
        finally:
            other.close()

    def test_a_job_on_another_queue_does_not_wake_it(self, storage):
        thread, result = self._waiter(storage, ["mine"], 0.8)
        time.sleep(0.2)
        Queue("theirs", connection=storage).enqueue(tasks.add, 1, 1)
        thread.join(5)
        assert result["waited"] >= 0.7

    def test_a_queued_job_returns_at_once(self, storage):
        Queue("ready", connection=storage).enqueue(tasks.add, 1, 1)
        started = time.monotonic()
        storage.wait(["ready"], 5)
        assert time.monotonic() - started < 0.5

    def test_a_retry_put_back_on_its_queue_wakes_it(self, storage):
        q = Queue("retry", connection=storage)
        job = q.enqueue(tasks.fail, retry=Retry(max=1))
        rec = storage.claim(["retry"], "w", time.time())
        assert rec is not None and rec.id == job.id
        thread, result = self._waiter(storage, ["retry"], 20)
        time.sleep(0.3)
        rec.status = JobStatus.QUEUED
        assert storage.put(rec, expected={JobStatus.STARTED})
        thread.join(5)
        assert result["waited"] < 2


# -- transactional enqueue ----------------------------------------------------------------


@pytest.fixture
def app_conn(postgres_url):
    """The application's own psycopg connection, with a table of its own."""
    with admin(postgres_url) as conn:
        table = f'"{parse_url(postgres_url).schema}_orders"'
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
        conn.table = table  # type: ignore[attr-defined]
        yield conn
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def outside(fn):
    """Run ``fn`` in another thread: outside this thread's plugq_postgres.transaction()."""
    result = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join(30)
    return result[0]


class TestTransactionalEnqueue:
    def test_commit_makes_one_job_that_runs_once(self, storage, postgres_url, app_conn, tmp_path):
        out = tmp_path / "ran.txt"
        q = Queue("tx", connection=postgres_url)
        with plugq_postgres.transaction(app_conn):
            app_conn.execute(f"INSERT INTO {app_conn.table} VALUES (1)")
            job = q.enqueue(tasks.append_line, str(out), "order-1")
            # Inside the transaction plugq reads through it too.
            assert job.get_status() == "queued"
            # Nobody else sees the job yet (another thread is outside the block).
            assert outside(lambda: storage.get(job.id)) is None
            assert outside(lambda: storage.claim(["tx"], "early", time.time())) is None
        assert storage.get(job.id) is not None
        Worker([Queue("tx", connection=storage)], connection=storage).work(burst=True)
        Worker([Queue("tx", connection=storage)], connection=storage).work(burst=True)
        assert job.get_status() == "finished"
        assert out.read_text().splitlines() == ["order-1"]

    def test_rollback_means_the_job_never_exists(self, storage, postgres_url, app_conn, tmp_path):
        out = tmp_path / "ran.txt"
        q = Queue("tx", connection=postgres_url)
        with pytest.raises(RuntimeError), plugq_postgres.transaction(app_conn):
            app_conn.execute(f"INSERT INTO {app_conn.table} VALUES (2)")
            job = q.enqueue(tasks.append_line, str(out), "order-2")
            many = q.enqueue_many([Queue.prepare_data(tasks.add, (i, i)) for i in range(10)])
            raise RuntimeError("payment declined")
        assert storage.get(job.id) is None
        assert all(storage.get(j.id) is None for j in many)
        assert len(Queue("tx", connection=storage)) == 0
        assert app_conn.execute(f"SELECT count(*) FROM {app_conn.table}").fetchone()[0] == 0
        assert Worker([Queue("tx", connection=storage)], connection=storage).work(burst=True) is False
        assert not out.exists()

    def test_inside_an_app_transaction_the_block_is_a_savepoint(
        self, storage, postgres_url, app_conn
    ):
        q = Queue("tx", connection=postgres_url)
        with admin(postgres_url) as conn:
            conn.autocommit = False  # psycopg's default: statements open a transaction
            conn.execute(f"INSERT INTO {app_conn.table} VALUES (5)")
            with plugq_postgres.transaction(conn):
                job = q.enqueue(tasks.add, 1, 2)
            assert storage.get(job.id) is None  # not committed by the block
            conn.rollback()
        assert storage.get(job.id) is None
        assert app_conn.execute(f"SELECT count(*) FROM {app_conn.table}").fetchone()[0] == 0

    def test_the_worker_wakes_on_commit(self, storage, postgres_url, app_conn):
        q = Queue("txwake", connection=postgres_url)
        result: dict[str, float] = {}

        def wait() -> None:
            storage.wait(["txwake"], 20)
            result["returned"] = time.monotonic()

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.3)
        with plugq_postgres.transaction(app_conn):
            q.enqueue(tasks.add, 1, 2)
            time.sleep(0.5)
            assert "returned" not in result, "woke before the commit"
        committed = time.monotonic()
        thread.join(5)
        assert "returned" in result and result["returned"] - committed < 0.5

    @pytest.mark.slow
    def test_a_worker_process_runs_the_job_once_after_commit_and_never_before(
        self, storage, postgres_url, app_conn, tmp_path
    ):
        out = tmp_path / "ran.txt"
        q = Queue("txproc", connection=postgres_url)
        worker = subprocess.Popen([PLUGQ, "worker", "txproc", "--url", postgres_url,
                                   "--logging-level", "warning"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for(lambda: storage.list_workers(), 30, "the worker to register")
            time.sleep(0.3)  # idle: LISTENing
            with plugq_postgres.transaction(app_conn):
                job = q.enqueue(tasks.append_line, str(out), "after-commit")
                time.sleep(1.0)
                assert not out.exists(), "the worker ran a job that was not committed"
            committed = time.monotonic()
            wait_for(out.exists, 10, "the job to run after the commit")
            assert time.monotonic() - committed < 2
            wait_for(lambda: storage.get(job.id).status is JobStatus.FINISHED, 10, "finished")
            with pytest.raises(RuntimeError), plugq_postgres.transaction(app_conn):
                never = q.enqueue(tasks.append_line, str(out), "rolled-back")
                raise RuntimeError("abort")
            time.sleep(1.0)
            assert storage.get(never.id) is None
            assert out.read_text().splitlines() == ["after-commit"]
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(30) == 0, worker.stderr.read() if worker.stderr else ""

    def test_a_refused_unique_job_leaves_the_app_transaction_usable(
        self, storage, postgres_url, app_conn
    ):
        q = Queue("txu", connection=postgres_url)
        q.enqueue(tasks.add, 1, 2, job_id="only-once")
        with plugq_postgres.transaction(app_conn):
            app_conn.execute(f"INSERT INTO {app_conn.table} VALUES (3)")
            with pytest.raises(DuplicateJobError):
                q.enqueue(tasks.add, 1, 2, job_id="only-once", unique=True)
            app_conn.execute(f"INSERT INTO {app_conn.table} VALUES (4)")
        rows = app_conn.execute(f"SELECT id FROM {app_conn.table} ORDER BY id").fetchall()
        assert rows == [(3,), (4,)]

    def test_a_queue_on_another_database_is_refused(self, storage, postgres_server, app_conn):
        other_db = postgres_server.create_database()
        other = f"{other_db}?schema=elsewhere"
        try:
            q = Queue("x", connection=other)
            with pytest.raises(ConfigurationError, match="database"), \
                    plugq_postgres.transaction(app_conn):
                q.enqueue(tasks.add, 1, 2)
        finally:
            forget(other)
            postgres_server.drop_database(other_db)

    def test_only_a_psycopg_connection_is_accepted(self):
        with pytest.raises(TypeError, match=r"psycopg\.Connection"), \
                plugq_postgres.transaction(object()):
            pass


# -- connections ------------------------------------------------------------------------


class TestConnections:
    def test_terminated_connections_are_replaced_without_an_error(self, storage, postgres_url):
        q = Queue("lost", connection=storage)
        q.enqueue(tasks.add, 1, 1)
        with admin(postgres_url) as conn:
            killed = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
        assert killed >= 1
        assert len(q) == 1
        q.enqueue(tasks.add, 2, 2)
        assert len(q) == 2

    def test_a_forked_child_uses_its_own_connections(self, storage):
        q = Queue("fork", connection=storage)
        q.enqueue(tasks.add, 1, 1)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                Queue("fork", connection=storage).enqueue(tasks.add, 2, 2)
                code = 0 if len(Queue("fork", connection=storage)) == 2 else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's pooled connections were not closed by the child.
        assert len(q) == 2
        q.enqueue(tasks.add, 3, 3)
        assert len(q) == 3

    def test_pool_is_bounded(self, postgres_url):
        s = PostgresStorage(f"{postgres_url}&pool_size=2")
        try:
            q = Queue("pool", connection=s)
            errors: list[BaseException] = []

            def hammer() -> None:
                try:
                    for i in range(20):
                        q.enqueue(tasks.add, i, i)
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=hammer) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors and len(q) == 120
            assert s._pool().get_stats()["pool_size"] <= 2
        finally:
            s.close()


# -- many processes -----------------------------------------------------------------------

PRODUCER = textwrap.dedent("""
    import sys
    from plugq import Queue
    from plugq.testing import tasks
    url, out, me, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    q = Queue("multi", connection=url)
    half = n // 2
    for i in range(half):
        q.enqueue(tasks.append_line, f"{out}/{me}.txt", f"{me}-{i}", job_id=f"{me}-{i}")
    q.enqueue_many([
        Queue.prepare_data(tasks.append_line, (f"{out}/{me}.txt", f"{me}-{i}"), job_id=f"{me}-{i}")
        for i in range(half, n)
    ])
""")


@pytest.mark.slow
def test_three_producers_three_workers_every_job_exactly_once(postgres_url, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    n = 400
    workers = [
        subprocess.Popen([PLUGQ, "worker", "multi", "--url", postgres_url, "--logging-level",
                          "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    try:
        producers = [
            subprocess.Popen([sys.executable, "-c", PRODUCER, postgres_url, str(out), f"p{k}",
                              str(n)])
            for k in range(3)
        ]
        for p in producers:
            assert p.wait(120) == 0
        storage = PostgresStorage(postgres_url)
        try:
            wait_for(lambda: storage.count_status("multi", JobStatus.FINISHED) == 3 * n, 120,
                     "every job to finish")
            assert storage.count_status("multi", JobStatus.FAILED) == 0
            assert storage.count_status("multi", JobStatus.QUEUED) == 0
        finally:
            storage.close()
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            assert w.wait(30) == 0, w.stderr.read() if w.stderr else ""
    lines = [line for f in out.iterdir() for line in f.read_text().split()]
    assert len(lines) == 3 * n
    assert sorted(lines) == sorted(f"p{k}-{i}" for k in range(3) for i in range(n))


def test_a_traceback_with_nul_and_surrogates_is_stored(storage):
    q = Queue("odd", connection=storage)
    job = q.enqueue(tasks.fail, "bad \x00 byte and \udcff surrogate")
    Worker([q], connection=storage).work(burst=True)
    assert job.get_status() == "failed"
    assert "bad \\x00 byte" in job.exc_info and "\\udcff" in job.exc_info

"""PostgreSQL: plugq's postgres backend beside procrastinate and pgqueuer, on one server.

The server is ``PLUGQ_BENCH_POSTGRES_URL`` (a role that may create databases)
or, when unset, ``postgresql://postgres@127.0.0.1:5432``. Each run gets a fresh
database (peers) or schema (plugq), dropped when the next run starts and at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from benchmarks.common import NotApplicable, System
from benchmarks.plugq_systems import BULK_BATCH, PlugqSystem

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432"


def server_url() -> str:
    return os.environ.get("PLUGQ_BENCH_POSTGRES_URL") or DEFAULT_URL


def with_db(url: str, dbname: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}", query=""))


def admin() -> Any:
    import psycopg

    return psycopg.connect(with_db(server_url(), "postgres"), autocommit=True, connect_timeout=3)


def server_missing() -> str | None:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install plugq[postgres])"
    try:
        with admin():
            return None
    except Exception as exc:
        return f"no PostgreSQL server at {server_url()} (set PLUGQ_BENCH_POSTGRES_URL): {exc}"


class _Databases:
    """A fresh database per run; the previous one is dropped."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.current: str | None = None

    def fresh(self) -> str:
        self.drop()
        self.current = f"{self.prefix}_{uuid.uuid4().hex[:10]}"
        with admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.current}"')
        return with_db(server_url(), self.current)

    def drop(self) -> None:
        if self.current is not None:
            with contextlib.suppress(Exception), admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.current}" WITH (FORCE)')
            self.current = None


class PlugqPostgres(PlugqSystem):
    """plugq's postgres backend with its defaults (one claim per job, LISTEN/NOTIFY)."""

    name = "plugq-postgres"
    aliases = frozenset({"postgres", "plugq-postgres", "plugq"})
    peer = "procrastinate"

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.db = _Databases("plugq_bench")
        self._url: str | None = None

    def unavailable(self) -> str | None:
        return server_missing() or super().unavailable()

    def url(self) -> str:
        assert self._url is not None
        return self._url

    def reset(self) -> None:
        from plugq.connection import forget

        if self._url is not None:
            forget(self._url)
        self._url = self.db.fresh()
        super().reset()

    def close(self) -> None:
        from plugq.connection import forget

        if self._url is not None:
            forget(self._url)
        self.db.drop()


# -- procrastinate ------------------------------------------------------------------------


class Procrastinate(System):
    """procrastinate 3 as its docs show: ``task.defer()`` (sync), ``batch_defer``, a worker
    with ``wait=False`` (burst) and concurrency 1. It stores no results: a job counts as
    done when its status is ``succeeded``."""

    name = "procrastinate"
    aliases = frozenset({"procrastinate"})
    has_results = False

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.db = _Databases("procrastinate_bench")
        self.url: str | None = None
        self.app: Any = None

    def unavailable(self) -> str | None:
        try:
            import procrastinate  # noqa: F401
        except ImportError:
            return "procrastinate is not installed (pip install plugq[bench])"
        return server_missing()

    def reset(self) -> None:
        from benchmarks.procrastinate_app import make_app

        self.close_app()
        self.run_no += 1
        self.url = self.db.fresh()
        self.app = make_app(self.url)
        self.app.open()
        self.app.schema_manager.apply_schema()

    def close_app(self) -> None:
        if self.app is not None:
            with contextlib.suppress(Exception):
                self.app.close()
            self.app = None

    def close(self) -> None:
        self.close_app()
        self.db.drop()

    def enqueue_single(self, hexes: Sequence[str]) -> list[Any]:
        defer = self.app.tasks["digit_sum"].defer
        return [defer(hex_string=h) for h in hexes]

    def enqueue_bulk(self, hexes: Sequence[str]) -> list[Any]:
        task = self.app.tasks["digit_sum"]
        ids: list[Any] = []
        for i in range(0, len(hexes), BULK_BATCH):
            ids += task.batch_defer(*({"hex_string": h} for h in hexes[i:i + BULK_BATCH]))
        return ids

    def _count(self, status: str) -> int:
        import psycopg

        assert self.url is not None
        with psycopg.connect(self.url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = %s", (status,)
            ).fetchone()
        return int(row[0]) if row else 0

    def queued_count(self) -> int:
        return self._count("todo")

    def worker_spec(self, mode: str, workers: int) -> dict[str, Any]:
        return {"kind": "procrastinate", "mode": mode, "url": self.url}

    def verify(self, handles: Sequence[Any], hexes: Sequence[str]) -> tuple[bool, str]:
        done = self._count("succeeded")
        return done == len(hexes), f"{done}/{len(hexes)} succeeded (no result store)"


# -- pgqueuer ----------------------------------------------------------------------------


class PgQueuer(System):
    """pgqueuer 1.6 as its docs show: ``SyncQueries.enqueue`` (psycopg), a ``QueueManager``
    on asyncpg in drain mode, claiming ``batch_size`` jobs a query. It keeps no results:
    done means logged ``successful``."""

    aliases = frozenset({"pgqueuer"})
    has_results = False

    def __init__(self, workdir: Path, batch_size: int) -> None:
        super().__init__(workdir)
        self.batch_size = batch_size
        self.name = f"pgqueuer-b{batch_size}"
        self.aliases = frozenset({"pgqueuer", self.name})
        self.measures_enqueue = batch_size == 1
        #: The batch size changes only the worker: enqueue figures come from pgqueuer-b1.
        self.enqueue_from = "pgqueuer-b1"
        self.db = _Databases("pgqueuer_bench")
        self.url: str | None = None
        self.conn: Any = None

    def unavailable(self) -> str | None:
        try:
            import asyncpg  # noqa: F401
            import pgqueuer  # noqa: F401
        except ImportError:
            return "pgqueuer or asyncpg is not installed (pip install plugq[bench])"
        return server_missing()

    def reset(self) -> None:
        import psycopg
        from pgqueuer.db import SyncPsycopgDriver
        from pgqueuer.queries import SyncQueries

        self.close_conn()
        self.run_no += 1
        self.url = self.db.fresh()
        asyncio.run(self._install(self.url))
        self.conn = psycopg.connect(self.url, autocommit=True)
        self.queries = SyncQueries(SyncPsycopgDriver(self.conn))

    @staticmethod
    async def _install(url: str) -> None:
        import asyncpg
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        conn = await asyncpg.connect(url)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()

    def close_conn(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None

    def close(self) -> None:
        self.close_conn()
        self.db.drop()

    def enqueue_single(self, hexes: Sequence[str]) -> list[Any]:
        enqueue = self.queries.enqueue
        return [enqueue("digit_sum", h.encode()) for h in hexes]

    def enqueue_bulk(self, hexes: Sequence[str]) -> list[Any]:
        ids: list[Any] = []
        for i in range(0, len(hexes), BULK_BATCH):
            chunk = hexes[i:i + BULK_BATCH]
            ids += self.queries.enqueue(
                ["digit_sum"] * len(chunk), [h.encode() for h in chunk], [0] * len(chunk)
            )
        return ids

    def queued_count(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM pgqueuer WHERE status = 'queued'").fetchone()
        return int(row[0])

    def worker_spec(self, mode: str, workers: int) -> dict[str, Any]:
        return {"kind": "pgqueuer", "mode": mode, "url": self.url, "batch_size": self.batch_size}

    def verify(self, handles: Sequence[Any], hexes: Sequence[str]) -> tuple[bool, str]:
        left = int(self.conn.execute("SELECT count(*) FROM pgqueuer").fetchone()[0])
        done = int(self.conn.execute(
            "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'").fetchone()[0])
        ok = left == 0 and done == len(hexes)
        return ok, f"{done}/{len(hexes)} logged successful, {left} left (no result store)"

    def enqueue_stamp(self, hex_string: str) -> Any:
        raise NotApplicable("no result store to read the start time from")


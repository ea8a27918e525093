"""The PostgreSQL backend: the conformance suite, then what only a database server can show."""

from __future__ import annotations

import pytest

from plugq.testing.conformance import BackendConformance
from plugq_postgres import PostgresStorage

pytestmark = pytest.mark.postgres


class TestPostgresConformance(BackendConformance):
    """The whole suite on a fresh schema, with a short lease so abandonment shows quickly."""

    @pytest.fixture
    def backend(self, postgres_url):
        b = PostgresStorage(f"{postgres_url}&lease=2")
        yield b
        b.close()

"""Shared fixtures. Backend-specific server fixtures live in plugq.testing modules."""

from __future__ import annotations

import os

import pytest

# Other helpers append their fixture registrations below this line, one import each.
pytest_plugins: list[str] = []
pytest_plugins.append("plugq.testing.redis_server")
pytest_plugins.append("plugq.testing.postgres_server")

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def tmp_db(tmp_path):
    """A SQLite URL in a fresh temporary folder."""
    return f"sqlite:///{tmp_path / 'plugq.db'}"


@pytest.fixture(params=["memory", "sqlite", "redis", "fakeredis",
                        pytest.param("postgres", marks=pytest.mark.postgres)])
def walkthrough_url(request, tmp_path):
    """A URL per backend in the repo, fresh for each test."""
    import uuid

    if request.param == "memory":
        return f"memory://walkthrough-{uuid.uuid4().hex}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'walkthrough.db'}"
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    if request.param == "fakeredis":
        return f"fakeredis://walkthrough-{uuid.uuid4().hex}"
    server = request.getfixturevalue("redis_server")
    server.flushall()
    return server.url

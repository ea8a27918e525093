"""The plugin system: entry points, third-party schemes, conflicts, hooks."""

from __future__ import annotations

import subprocess
import sys
import types
import uuid

import pytest

import plugq
from plugq import Queue, Worker, connect, hookimpl
from plugq.connection import forget
from plugq.exceptions import UnknownBackendError
from plugq.plugins import DuplicateSchemeError, backends, get_plugin_manager, register, unregister
from plugq.testing import tasks
from plugq_memory import MemoryStorage


class ThirdPartyBackend(MemoryStorage):
    scheme = "thirdparty"


def make_plugin(scheme: str) -> types.ModuleType:
    module = types.ModuleType(f"plugin_{scheme}_{uuid.uuid4().hex[:6]}")

    @hookimpl
    def plugq_register_backends(register):
        register(scheme, ThirdPartyBackend)

    module.plugq_register_backends = plugq_register_backends  # type: ignore[attr-defined]
    return module


def test_builtin_backends_come_from_entry_points():
    entries = backends()
    assert entries["memory"].plugin == "memory"
    assert {"memory", "sqlite", "redis", "rediss", "unix", "fakeredis"} <= set(entries)
    names = {name for name, _ in get_plugin_manager().list_name_plugin()}
    assert {"memory", "sqlite", "rq"} <= names


def test_third_party_scheme_is_found_by_connect():
    plugin = make_plugin("thirdparty")
    register(plugin, name="thirdparty-plugin")
    try:
        assert backends()["thirdparty"].plugin == "thirdparty-plugin"
        backend = connect("thirdparty://one")
        assert isinstance(backend.storage, ThirdPartyBackend)
        assert connect("thirdparty://one") is backend
        q = Queue("tp", connection="thirdparty://one")
        job = q.enqueue(tasks.add, 1, 2)
        Worker([q]).work(burst=True)
        assert job.result == 3
    finally:
        unregister(name="thirdparty-plugin")
        forget("thirdparty://one")
    assert "thirdparty" not in backends()


def test_two_plugins_claiming_one_scheme_fail_naming_both():
    register(make_plugin("clash"), name="first-clash")
    register(make_plugin("clash"), name="second-clash")
    try:
        with pytest.raises(DuplicateSchemeError) as err:
            connect("clash://x")
        assert "first-clash" in str(err.value) and "second-clash" in str(err.value)
    finally:
        unregister(name="first-clash")
        unregister(name="second-clash")


def test_builtin_scheme_conflict_names_builtin_plugin():
    register(make_plugin("memory"), name="memory-impostor")
    try:
        with pytest.raises(DuplicateSchemeError, match=r"'memory'.*'memory-impostor'"):
            backends()
    finally:
        unregister(name="memory-impostor")


def test_unknown_scheme_lists_installed():
    with pytest.raises(UnknownBackendError) as err:
        connect("nosuch://host")
    message = str(err.value)
    assert "nosuch" in message and "memory://" in message and "sqlite://" in message


def test_misspelled_hook_fails_loudly():
    module = types.ModuleType("misspelled")

    @hookimpl
    def plugq_regster_backends(register):  # misspelled on purpose
        pass

    module.plugq_regster_backends = plugq_regster_backends  # type: ignore[attr-defined]
    from pluggy import PluginValidationError

    with pytest.raises(PluginValidationError):
        register(module, name="misspelled")
    unregister(name="misspelled")


def test_lifecycle_hooks_fire():
    seen: list[tuple[str, str]] = []

    class Recorder:
        @hookimpl
        def plugq_job_enqueued(self, job):
            seen.append(("enqueued", job.id))

        @hookimpl
        def plugq_job_started(self, job, worker):
            seen.append(("started", job.id))

        @hookimpl
        def plugq_job_finished(self, job, result):
            seen.append(("finished", f"{job.id}={result}"))

        @hookimpl
        def plugq_job_failed(self, job, exc_info):
            seen.append(("failed", f"{job.id}:{exc_info[0].__name__}"))

    register(Recorder(), name="recorder")
    try:
        q = Queue("hooks", connection=f"memory://hooks-{uuid.uuid4().hex}")
        ok = q.enqueue(tasks.add, 1, 1)
        bad = q.enqueue(tasks.fail)
        Worker([q]).work(burst=True)
    finally:
        unregister(name="recorder")
    assert seen == [
        ("enqueued", ok.id), ("enqueued", bad.id),
        ("started", ok.id), ("finished", f"{ok.id}=2"),
        ("started", bad.id), ("failed", f"{bad.id}:ValueError"),
    ]


def test_disable_plugins_env_blocks_entry_point():
    code = (
        "from plugq.plugins import backends\n"
        "print(sorted(backends()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**__import__('os').environ, "PLUGQ_DISABLE_PLUGINS": "rq,sqlite,postgres"},
    ).stdout
    assert out.strip() == "['memory']"


def test_public_api_exports():
    for name in plugq.__all__:
        assert hasattr(plugq, name), name

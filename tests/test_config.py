"""Configuration: where the URL comes from, what [tool.plugq] may set, how bad values fail.

Precedence and errors are checked through the real ``plugq`` command in a
temporary project folder; Queue's defaults in-process with the public API.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import plugq as pq
from _cli_helpers import assert_one_line_error, clean_env, plugq, plugq_json
from plugq.config import DEFAULT_URL, clear_settings_cache, load_settings
from plugq.exceptions import ConfigurationError
from plugq.testing import tasks


def write_config(folder: Path, body: str) -> Path:
    path = folder / "pyproject.toml"
    path.write_text(f'[project]\nname = "app"\n\n[tool.plugq]\n{body}\n')
    return path


def resolved(cwd: Path, *args: str, **env: str) -> tuple[str, str]:
    data = plugq_json("config", *args, cwd=cwd, env=clean_env(**env))
    return data["settings"]["url"], data["sources"]["url"]


# -- precedence: --url > PLUGQ_URL > [tool.plugq] > default -------------------


def test_default_when_nothing_is_configured(tmp_path: Path) -> None:
    assert resolved(tmp_path) == (DEFAULT_URL, "default")


def test_pyproject_beats_the_default(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'url = "memory://from-file"')
    url, source = resolved(tmp_path)
    assert url == "memory://from-file"
    assert source == f"[tool.plugq] in {path}"


def test_nearest_pyproject_upward_is_used(tmp_path: Path) -> None:
    write_config(tmp_path, 'url = "memory://outer"')
    inner = tmp_path / "pkg"
    (inner / "deep" / "er").mkdir(parents=True)
    write_config(inner, 'url = "memory://inner"')
    assert resolved(inner / "deep" / "er")[0] == "memory://inner"
    assert resolved(tmp_path)[0] == "memory://outer"


def test_environment_beats_pyproject(tmp_path: Path) -> None:
    write_config(tmp_path, 'url = "memory://from-file"')
    assert resolved(tmp_path, PLUGQ_URL="memory://from-env") == (
        "memory://from-env", "environment variable PLUGQ_URL")


def test_flag_beats_environment_and_pyproject(tmp_path: Path) -> None:
    write_config(tmp_path, 'url = "memory://from-file"')
    assert resolved(tmp_path, "--url", "memory://from-flag", PLUGQ_URL="memory://from-env") == (
        "memory://from-flag", "--url")


def test_the_resolved_url_is_the_one_commands_use(tmp_path: Path) -> None:
    db = tmp_path / "configured.db"
    write_config(tmp_path, f'url = "sqlite:///{db}"')
    # info only reads: it refuses a file that does not exist rather than create it.
    assert plugq("info", cwd=tmp_path, env=clean_env()).returncode == 2
    assert not db.exists()
    assert plugq("enqueue", "plugq.testing.tasks.add", "1", "2", cwd=tmp_path,
                 env=clean_env()).returncode == 0
    snap = plugq_json("info", cwd=tmp_path, env=clean_env())
    assert snap["url"] == f"sqlite:///{db}"
    assert snap["queues"]["default"]["queued"] == 1
    # And the flag wins over the file for the same command.
    snap = plugq_json("info", "--url", "memory://", cwd=tmp_path, env=clean_env())
    assert snap["url"] == "memory://"


def test_worker_default_queues_come_from_the_config(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    write_config(tmp_path, f'url = "sqlite:///{db}"\nqueues = ["high", "low"]')
    for queue in ("low", "high"):
        assert plugq("enqueue", "-q", queue, "plugq.testing.tasks.add", "1", "1",
                     cwd=tmp_path).returncode == 0
    work = plugq("worker", "--burst", cwd=tmp_path)
    assert work.returncode == 0, work.stderr
    assert "queues: high, low" in work.stderr
    # Served in the configured order: high first although low was enqueued first.
    assert work.stderr.index("high: plugq.testing") < work.stderr.index("low: plugq.testing")


# -- invalid values: key, value, source; exit 2; one line --------------------


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ('serializer = "yaml"', ["serializer", "'yaml'", "json", "pickle"]),
        ("job_timeout = 0", ["job_timeout", "0"]),
        ('job_timeout = "soon"', ["job_timeout", "'soon'"]),
        ('result_ttl = "500"', ["result_ttl", "'500'", "int"]),
        ("result_ttl = -7", ["result_ttl", "-7"]),
        ("queues = []", ["queues", "[]"]),
        ('queues = "default"', ["queues", "'default'"]),
        ('url = "plugq.db"', ["url", "'plugq.db'", "scheme://"]),
        ('urll = "memory://"', ["unknown key 'urll'", "url"]),
        ("allowed_modules = [1]", ["allowed_modules", "[1]"]),
    ],
)
def test_invalid_value_names_key_value_and_source(
    tmp_path: Path, body: str, fragments: list[str]
) -> None:
    path = write_config(tmp_path, body)
    for command in (["info"], ["worker", "--burst"], ["enqueue", "m.f"], ["config"]):
        r = plugq(*command, cwd=tmp_path)
        line = assert_one_line_error(r, 2, *fragments)
        assert f"[tool.plugq] in {path}" in line, line


def test_invalid_environment_url_names_the_variable(tmp_path: Path) -> None:
    r = plugq("info", cwd=tmp_path, env=clean_env(PLUGQ_URL="not a url"))
    assert_one_line_error(r, 2, "environment variable PLUGQ_URL", "'not a url'")


def test_unparseable_pyproject_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.plugq\nurl = ")
    r = plugq("info", cwd=tmp_path)
    assert_one_line_error(r, 2, "pyproject.toml", "not valid TOML")


def test_passwords_are_masked_in_config_output_and_errors(tmp_path: Path) -> None:
    write_config(tmp_path, 'url = "redis://app:hunter2@db.internal:6379/0"')
    r = plugq("config", cwd=tmp_path)
    assert r.returncode == 0 and "hunter2" not in r.stdout
    data = plugq_json("config", cwd=tmp_path)
    assert data["settings"]["url"] == "redis://app:***@db.internal:6379/0"
    bad = plugq("info", cwd=tmp_path, env=clean_env(PLUGQ_URL="nope://u:hunter2@h/0"))
    assert_one_line_error(bad, 2, "u:***@h")
    assert "hunter2" not in bad.stderr


# -- Queue takes its defaults from the configuration --------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PLUGQ_URL", raising=False)
    clear_settings_cache()
    yield tmp_path
    clear_settings_cache()


def memory_url() -> str:
    return f"memory://config-{uuid.uuid4().hex}"


def test_queue_uses_configured_serializer_timeout_and_result_ttl(project: Path) -> None:
    write_config(project, 'serializer = "json"\njob_timeout = 30\nresult_ttl = 60')
    job = pq.Queue(connection=memory_url()).enqueue(tasks.add, 1, 2)
    assert job.serializer == "json"
    assert job.timeout == 30
    assert job.result_ttl == 60


def test_explicit_arguments_beat_the_configuration(project: Path) -> None:
    write_config(project, 'serializer = "json"\njob_timeout = 30\nresult_ttl = 60')
    q = pq.Queue(connection=memory_url(), serializer="pickle", default_timeout=45)
    job = q.enqueue(tasks.add, 1, 2, result_ttl=7)
    assert (job.serializer, job.timeout, job.result_ttl) == ("pickle", 45, 7)
    assert q.enqueue(tasks.add, 1, 2, job_timeout=5).timeout == 5


def test_configured_job_timeout_minus_one_means_no_timeout(project: Path) -> None:
    write_config(project, "job_timeout = -1")
    assert pq.Queue(connection=memory_url()).enqueue(tasks.add, 1, 2).timeout is None


def test_without_configuration_rq_defaults_apply(project: Path) -> None:
    job = pq.Queue(connection=memory_url()).enqueue(tasks.add, 1, 2)
    assert (job.serializer, job.timeout, job.result_ttl) == ("pickle", 180, 500)


def test_configured_defaults_reach_the_worker(project: Path) -> None:
    write_config(project, "result_ttl = 0")
    q = pq.Queue(connection=memory_url())
    job = q.enqueue(tasks.add, 2, 3)
    pq.Worker([q]).work(burst=True)
    # result_ttl = 0: the job is deleted as soon as it succeeds.
    assert q.fetch_job(job.id) is None
    assert q.finished_job_registry.count == 0


def test_settings_are_read_once_not_per_queue(project: Path) -> None:
    path = write_config(project, 'serializer = "json"')
    assert pq.Queue(connection=memory_url()).serializer.name == "json"
    # Break the file: the cached settings keep serving new queues...
    path.write_text("[tool.plugq]\nserializer = 'yaml'\n")
    assert pq.Queue(connection=memory_url()).serializer.name == "json"
    # ...until the cache is cleared, when the bad value is reported.
    clear_settings_cache()
    with pytest.raises(ConfigurationError, match="serializer = 'yaml'"):
        pq.Queue(connection=memory_url())


def test_load_settings_reports_sources(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'url = "memory://x"\nqueues = ["a"]')
    settings = load_settings(start=tmp_path, env={"PLUGQ_URL": "memory://y"})
    assert settings.url == "memory://y"
    assert settings.sources["url"] == "environment variable PLUGQ_URL"
    assert settings.queues == ["a"]
    assert settings.sources["queues"] == f"[tool.plugq] in {path}"

"""Each example runs as examples/README.md says, on a copy of the folder.

The copy keeps the repository clean (the SQLite examples write plugq.db in
the working folder) and proves the examples need nothing from the repo but
an installed plugq.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _cli_helpers import (
    PLUGQ,
    clean_env,
    plugq,
    plugq_json,
    redis_url_or_skip,
    require_backend,
    unique_queue,
    wait_until,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.slow


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    target = tmp_path / "examples"
    shutil.copytree(EXAMPLES, target, ignore=shutil.ignore_patterns("__pycache__", "*.db*"))
    return target


def python(script: str, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, script, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_readme_lists_every_example() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    for name in ("tasks.py", "producer.py", "consumer.py", "monitor.py", "test_tasks.py",
                 "config/pyproject.toml"):
        assert (EXAMPLES / name).exists(), name
        assert f"`{name}`" in readme, name


def test_unit_testing_tasks_in_memory(examples: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "test_tasks.py"], cwd=examples, env=clean_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"\b5 passed\b", r.stdout), r.stdout
    # memory:// only: nothing was written next to the tests.
    assert not list(examples.glob("*.db"))


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def test_producer_then_consumer_in_another_process(
    kind: str, examples: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        env = clean_env()  # the documented default: sqlite:///plugq.db in the folder
        require_backend(f"sqlite:///{examples / 'probe.db'}")
        (examples / "probe.db").unlink(missing_ok=True)
        url = f"sqlite:///{examples / 'plugq.db'}"
        queue = "default"
    else:
        url = redis_url_or_skip(request)
        env = clean_env(PLUGQ_URL=url)
        queue = unique_queue()  # the Redis server is shared by the session

    produced = python("producer.py", "--jobs", "20", "--queue", queue, cwd=examples, env=env)
    assert produced.returncode == 0, produced.stderr
    assert "Enqueued 20 jobs on" in produced.stdout
    if kind == "sqlite":
        assert (examples / "plugq.db").exists()

    before = python("monitor.py", cwd=examples, env=env)
    assert before.returncode == 0, before.stderr
    assert re.search(rf"^{queue}: queued=20 started=0 finished=0 failed=0", before.stdout, re.M)

    consumed = python("consumer.py", queue, "--burst", cwd=examples, env=env)
    assert consumed.returncode == 0, consumed.stderr
    assert "20 finished, 0 failed, 0 still queued on" in consumed.stdout
    assert re.search(rf"{queue}: tasks\.digit_sum\('[0-9a-f]{{32}}'\) \(", consumed.stderr)

    after = python("monitor.py", cwd=examples, env=env)
    assert re.search(rf"^{queue}: queued=0 started=0 finished=20 failed=0", after.stdout, re.M)

    # The CLI sees the same state, and every result is right.
    jobs = plugq_json("jobs", queue, "--status", "finished", "--limit", "100", "--url", url)
    assert len(jobs) == 20
    for job in jobs:
        arg = re.fullmatch(r"tasks\.digit_sum\('([0-9a-f]{32})'\)", job["description"])
        assert arg is not None
        assert job["result"] == sum(int(c, 16) for c in arg.group(1))


def test_plugq_worker_runs_the_example_tasks(examples: Path) -> None:
    require_backend(f"sqlite:///{examples / 'probe.db'}")
    env = clean_env()
    assert python("producer.py", "--jobs", "3", cwd=examples, env=env).returncode == 0
    work = plugq("worker", "--burst", cwd=examples, env=env)
    assert work.returncode == 0, work.stderr
    assert work.stderr.count("default: Job OK") == 3


def test_config_example_switches_backend_by_one_line(examples: Path) -> None:
    folder = examples / "config"
    require_backend(f"sqlite:///{folder / 'probe.db'}")
    (folder / "probe.db").unlink(missing_ok=True)
    env = clean_env()
    data = plugq_json("config", cwd=folder, env=env)
    assert data["settings"]["url"] == "sqlite:///plugq.db"
    assert data["sources"]["url"] == f"[tool.plugq] in {folder / 'pyproject.toml'}"
    assert data["settings"]["queues"] == ["high", "default"]

    # As documented: produce onto 'high', work with the configured queues.
    produced = python("../producer.py", "--jobs", "4", "--queue", "high", cwd=folder, env=env)
    assert produced.returncode == 0, produced.stderr
    work = plugq("worker", "--burst", "--path", "..", cwd=folder, env=env)
    assert work.returncode == 0, work.stderr
    assert "queues: high, default" in work.stderr
    snap = plugq_json("info", cwd=folder, env=env)
    assert snap["queues"]["high"]["finished"] == 4
    assert (folder / "plugq.db").exists()

    # One line switched: the same command now resolves to Redis.
    pyproject = folder / "pyproject.toml"
    original = pyproject.read_text()
    switched_text = original.replace('url = "sqlite:///plugq.db"', 'url = "redis://localhost:6379/0"')
    changed = [a for a, b in zip(original.splitlines(), switched_text.splitlines(), strict=True)
               if a != b]
    assert changed == ['url = "sqlite:///plugq.db"']
    pyproject.write_text(switched_text)
    switched = plugq_json("config", cwd=folder, env=env)
    assert switched["settings"]["url"] == "redis://localhost:6379/0"


def test_monitor_with_no_queues(tmp_path: Path, examples: Path) -> None:
    env = clean_env(PLUGQ_URL=f"memory://monitor-{tmp_path.name}")
    r = python("monitor.py", cwd=examples, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["no queues yet", "workers: 0"]


def test_monitor_shows_a_running_worker(examples: Path) -> None:
    url = f"sqlite:///{examples / 'monitor.db'}"
    require_backend(url)
    env = clean_env(PLUGQ_URL=url)
    worker = subprocess.Popen([PLUGQ, "worker", "--name", "watched"], cwd=examples, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: plugq_json("info", "--url", url)["workers"], what="the worker")
        r = python("monitor.py", cwd=examples, env=env)
        assert r.returncode == 0, r.stderr
        assert "workers: 1" in r.stdout
        assert "  watched idle on default current job: -" in r.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0

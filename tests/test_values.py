"""NaN, infinities, negative and out-of-range numbers, and the one queue-name rule (issue 12, class 6).

API: a ValueError naming the field. Configuration (``[tool.plugq]``, URL
parameters): exit 2, one line, naming the key, the value and where it came from.
"""

from __future__ import annotations

import math
import uuid

import pytest

from _cli_helpers import assert_one_line_error, clean_env, plugq
from plugq import Queue, Retry
from plugq.config import clear_settings_cache, load_settings
from plugq.exceptions import ConfigurationError
from plugq.testing import tasks

NAN, INF = float("nan"), float("inf")
BAD_NUMBERS = [NAN, INF, -INF, -5, 10**12]


@pytest.fixture
def queue():
    return Queue("values", connection=f"memory://values-{uuid.uuid4().hex}")


@pytest.mark.parametrize("value", BAD_NUMBERS, ids=repr)
@pytest.mark.parametrize("field", ["job_timeout", "result_ttl", "failure_ttl", "ttl"])
def test_enqueue_refuses_bad_numbers(queue, field, value):
    with pytest.raises(ValueError, match=field):
        queue.enqueue(tasks.add, 1, 2, **{field: value})
    assert len(queue) == 0


@pytest.mark.parametrize("value", BAD_NUMBERS, ids=repr)
@pytest.mark.parametrize("field", ["timeout", "result_ttl", "failure_ttl", "ttl"])
def test_enqueue_call_and_prepare_data_refuse_bad_numbers(queue, field, value):
    with pytest.raises(ValueError):
        queue.enqueue_call(tasks.add, args=(1, 2), **{field: value})
    data = Queue.prepare_data(tasks.add, (1, 2), **{field: value})
    with pytest.raises(ValueError):
        queue.enqueue_many([data])
    assert len(queue) == 0


@pytest.mark.parametrize("value", [NAN, INF, -INF, -5, 0, 10**12], ids=repr)
def test_default_timeout_refused(value):
    with pytest.raises(ValueError, match="default_timeout"):
        Queue("values", connection="memory://", default_timeout=value)


@pytest.mark.parametrize("interval", [NAN, INF, -1, [1, NAN], [INF], 10**12], ids=repr)
def test_retry_interval_refused(interval):
    with pytest.raises(ValueError, match="interval"):
        Retry(max=2, interval=interval)


@pytest.mark.parametrize("count", [0, -1, 10**9, 1.5, True])
def test_retry_max_refused(count):
    with pytest.raises(ValueError, match="max"):
        Retry(max=count)


def test_sane_values_still_work(queue):
    job = queue.enqueue(tasks.add, 1, 2, job_timeout=-1, result_ttl=-1, failure_ttl=0, ttl=60)
    assert job.timeout is None and job.result_ttl == -1 and math.isclose(job.ttl, 60)
    assert Retry(max=3, interval=[0, 1.5]).intervals == [0.0, 1.5]


@pytest.mark.parametrize("name", ["a\n", "a*", "", "a b", "a\x00", "q\r", "é", 5, None])
def test_one_queue_name_rule(name):
    with pytest.raises(ValueError, match="queue name"):
        Queue(name, connection="memory://")


# -- [tool.plugq] -----------------------------------------------------------------------

CONFIG_CASES = {
    "job_timeout nan": ("job_timeout = nan", "job_timeout"),
    "job_timeout inf": ("job_timeout = inf", "job_timeout"),
    "job_timeout -inf": ("job_timeout = -inf", "job_timeout"),
    "job_timeout negative": ("job_timeout = -5", "job_timeout"),
    "job_timeout huge": ("job_timeout = 1e12", "job_timeout"),
    "result_ttl negative": ("result_ttl = -5", "result_ttl"),
    "result_ttl huge": ("result_ttl = 1000000000000", "result_ttl"),
    "queue with newline": ('queues = ["a\\n"]', "queues"),
    "queue wildcard": ('queues = ["a*"]', "queues"),
    "allowed_modules not a module": ('allowed_modules = ["myapp tasks"]', "allowed_modules"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_config_values_refused_at_load(tmp_path, case):
    line, key = CONFIG_CASES[case]
    (tmp_path / "pyproject.toml").write_text(f"[tool.plugq]\n{line}\n")
    with pytest.raises(ConfigurationError) as err:
        load_settings(tmp_path, env={})
    message = str(err.value)
    assert key in message and "pyproject.toml" in message and "\n" not in message.strip()


@pytest.mark.parametrize("case", ["job_timeout nan", "job_timeout inf", "queue with newline",
                                  "queue wildcard"])
def test_config_values_exit_2_naming_key_value_and_source(tmp_path, case):
    line, key = CONFIG_CASES[case]
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.plugq]\nurl = "sqlite:///{tmp_path / "v.db"}"\n{line}\n'
    )
    result = plugq("worker", "--burst", cwd=tmp_path, env=clean_env())
    text = assert_one_line_error(result, 2, key, "pyproject.toml")
    value = line.split("=", 1)[1].strip().strip('[]"').replace("\\n", "")
    assert value in text


def test_env_queue_rule_and_allowed_modules(monkeypatch):
    monkeypatch.setenv("PLUGQ_ALLOWED_MODULES", "myapp.tasks,os system")
    clear_settings_cache()
    try:
        with pytest.raises(ConfigurationError, match="PLUGQ_ALLOWED_MODULES"):
            load_settings(env={"PLUGQ_ALLOWED_MODULES": "myapp.tasks,os system"})
    finally:
        clear_settings_cache()


@pytest.mark.parametrize("url", [
    "memory://v?lease=nan", "memory://v?lease=inf", "memory://v?lease=-1",
    "sqlite:///v.db?lease=nan", "sqlite:///v.db?busy_timeout=inf", "sqlite:///v.db?poll=-1",
])
def test_url_parameters_refused(url, tmp_path):
    result = plugq("info", "--url", url, cwd=tmp_path, env=clean_env())
    assert_one_line_error(result, 2, url.split("?", 1)[1].split("=")[0])


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6399/0?lease=nan", "redis://127.0.0.1:6399/0?scheduler_interval=inf",
    "redis://127.0.0.1/abc", "redis://127.0.0.1:99999/0", "redis://127.0.0.1:abc/0",
    "redis://127.0.0.1:6399/0?db=x",
])
def test_redis_url_values_refused(url, tmp_path):
    pytest.importorskip("rq")
    result = plugq("info", "--url", url, cwd=tmp_path, env=clean_env())
    assert_one_line_error(result, 2)

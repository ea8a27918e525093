"""An unknown URL query parameter is refused on every backend: one line, exit 2,
naming the parameter and listing the accepted ones; from a producer, a
``ConfigurationError`` before anything is connected."""

from __future__ import annotations

import pytest

from _cli_helpers import assert_one_line_error, clean_env, plugq
from plugq import Queue
from plugq.exceptions import ConfigurationError

CASES = [
    ("memory://typo?leese=3", "lease"),
    ("sqlite:///{tmp}/typo.db?leese=3", "lease"),
    # Refused before any connection: no server needs to listen on these.
    ("redis://localhost:1/0?leese=3", "lease"),
    ("rediss://localhost:1/0?leese=3", "ssl_cert_reqs"),
    ("unix:///tmp/nothing.sock?db=0&leese=3", "socket_timeout"),
    ("fakeredis://typo?leese=3", "worker_class"),
]


@pytest.mark.parametrize(("template", "accepted"), CASES,
                         ids=[c[0].split(":")[0] for c in CASES])
def test_cli_refuses_an_unknown_parameter(template, accepted, tmp_path):
    url = template.format(tmp=tmp_path)
    r = plugq("enqueue", "plugq.testing.tasks.add", "1", "2", "--url", url,
              cwd=tmp_path, env=clean_env())
    line = assert_one_line_error(r, 2, "plugq: error:", "'leese'", accepted)
    assert "unknown parameter" in line
    assert not (tmp_path / "typo.db").exists()


@pytest.mark.parametrize(("template", "accepted"), CASES,
                         ids=[c[0].split(":")[0] for c in CASES])
def test_producer_gets_one_configuration_error(template, accepted, tmp_path):
    url = template.format(tmp=tmp_path)
    with pytest.raises(ConfigurationError) as caught:
        Queue(connection=url)
    message = str(caught.value)
    assert "'leese'" in message and accepted in message
    assert "\n" not in message


def test_redis_password_in_a_refused_url_is_masked(tmp_path):
    r = plugq("info", "--url", "redis://u:hunter2@localhost:1/0?leese=3", cwd=tmp_path,
              env=clean_env())
    line = assert_one_line_error(r, 2, "'leese'")
    assert "hunter2" not in line


def test_known_redis_parameters_are_still_accepted(redis_server):
    q = Queue("params", connection=f"{redis_server.url}?socket_timeout=5&lease=30&client_name=x")
    assert q.backend.storage.lease == 30
    assert q.count == 0

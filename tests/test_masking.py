"""No password is ever printed: every URL form x every output path (issue 12, class 5).

The real test server is given the password (``requirepass``) so that the
paths that need a working connection — ``plugq info --json``, the demo, the
supervisor's log, ``repr(backend)`` — run for real; the failing paths (a
wrong port, an unparseable URL) print errors and chained exceptions. Each
password is made of pieces no output would contain by chance, and the test
asserts that no piece of it appears anywhere.
"""

from __future__ import annotations

import re
import traceback
from urllib.parse import quote

import pytest

from _cli_helpers import clean_env, plugq
from plugq import Queue, connect
from plugq.config import clear_settings_cache, mask_url
from plugq.exceptions import PlugqError
from plugq.testing import tasks

#: password -> its pieces (none may appear in any output).
PASSWORDS = {
    "Secr3tPa55": ["Secr3tPa55"],
    "Secr3t/Pa55": ["Secr3t", "Pa55"],
    "Secr3t#Pa55": ["Secr3t", "Pa55"],
    "Secr3t?Pa55": ["Secr3t", "Pa55"],
    "Secr3t@Pa55": ["Secr3t", "Pa55"],
}


#: Passwords run through every command; the others through one (the masking code is shared).
FULL_MATRIX = ("Secr3tPa55", "Secr3t@Pa55")


def forms(host: str, password: str) -> dict[str, str]:
    """Every way a URL carries ``password``."""
    enc = quote(password, safe="")
    return {
        "user:pass@": f"redis://default:{enc}@{host}/0",
        ":pass@": f"redis://:{enc}@{host}/0",
        "?password=": f"redis://{host}/0?password={enc}",
        "raw user:pass@": f"redis://default:{password}@{host}/0",
        "raw ?password=": f"redis://{host}/0?password={password}",
    }


def assert_masked(text: str, password: str, where: str) -> None:
    for piece in PASSWORDS[password]:
        assert piece not in text, f"{where}: {piece!r} printed in:\n{text}"
        assert quote(piece, safe="") not in text, f"{where}: encoded {piece!r} printed"


@pytest.mark.parametrize("password", list(PASSWORDS))
def test_mask_url_every_form(password):
    for name, url in forms("127.0.0.1:6379", password).items():
        for form in (url, url.replace("redis://", "rediss://"), f"error at {url}: refused",
                     f"'{url}'", repr({"url": url})):
            assert_masked(mask_url(form, url), password, f"{name}: {form}")
    unix = f"unix:///tmp/redis.sock?db=0&password={quote(password, safe='')}"
    assert_masked(mask_url(unix), password, "unix ?password=")
    assert mask_url("redis://localhost:6379/0") == "redis://localhost:6379/0"


@pytest.fixture
def protected(redis_server):
    """The test server, requiring a password for the test's duration."""
    from redis import Redis

    current: dict[str, str] = {}

    def require(password: str) -> None:
        admin = Redis(host="127.0.0.1", port=redis_server.port, password=current.get("pw"))
        admin.config_set("requirepass", password)
        admin.close()
        current["pw"] = password

    yield require
    if current.get("pw"):
        admin = Redis(host="127.0.0.1", port=redis_server.port, password=current["pw"])
        admin.config_set("requirepass", "")
        admin.flushall()
        admin.close()


def _working_forms(host: str, password: str) -> dict[str, str]:
    found = dict(forms(host, password))
    if password != "Secr3tPa55":
        # An unencoded '/', '#' or '?' is a different URL to every parser; those are the
        # failing-path cases below.
        found = {k: v for k, v in found.items() if not k.startswith("raw")} | (
            {"raw user:pass@": found["raw user:pass@"]} if "@" in password else {})
    return found


@pytest.mark.redis
@pytest.mark.parametrize("password", list(PASSWORDS))
def test_working_connection_outputs_are_masked(redis_server, protected, password, tmp_path):
    protected(password)
    host = f"127.0.0.1:{redis_server.port}"
    env = clean_env()
    for name, url in _working_forms(host, password).items():
        outputs: dict[str, str] = {}
        backend = connect(url)
        outputs["repr(backend)"] = repr(backend) + backend.safe_url()
        Queue("mask", connection=url).enqueue(tasks.add, 1, 2)
        for args in (["info"], ["info", "--json"], ["config"], ["config", "--json"],
                     ["jobs", "mask"], ["worker", "mask", "--burst", "--concurrency", "2"],
                     ["demo", "--jobs", "5", "--workers", "1"]):
            result = plugq(*args, "--url", url, cwd=tmp_path, env=env)
            assert result.returncode == 0, (name, args, result.stderr)
            outputs[" ".join(args)] = result.stdout + result.stderr
        result = plugq("info", "--json", cwd=tmp_path, env=clean_env(PLUGQ_URL=url))
        outputs["PLUGQ_URL info --json"] = result.stdout + result.stderr
        (tmp_path / "pyproject.toml").write_text(f'[tool.plugq]\nurl = "{url}"\n')
        result = plugq("config", cwd=tmp_path, env=env)
        outputs["[tool.plugq] config"] = result.stdout + result.stderr
        (tmp_path / "pyproject.toml").unlink()
        for where, text in outputs.items():
            assert_masked(text, password, f"{name} / {where}")


def _failing_urls(port: int, password: str) -> dict[str, str]:
    """URLs that fail: a closed port, a wrong password, a form no parser reads whole."""
    found = {f"closed {k}": v for k, v in forms(f"127.0.0.1:{port}", password).items()}
    found["rediss closed"] = found["closed :pass@"].replace("redis://", "rediss://")
    found["unix missing"] = (f"unix:///nonexistent/redis.sock?db=0&password="
                             f"{quote(password, safe='')}")
    return found


@pytest.mark.parametrize("password", list(PASSWORDS))
def test_error_outputs_are_masked(password, tmp_path, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    env = clean_env()
    monkeypatch.chdir(tmp_path)
    clear_settings_cache()
    for name, url in _failing_urls(port, password).items():
        outputs: dict[str, str] = {}
        commands = [["info"], ["info", "--json"], ["worker", "q", "--burst"],
                    ["enqueue", "plugq.testing.tasks.add", "1", "2"]]
        if password not in FULL_MATRIX:
            commands = commands[:1]  # the other special characters: one command, same code path
        for args in commands:
            result = plugq(*args, "--url", url, cwd=tmp_path, env=env, timeout=60)
            assert result.returncode in (1, 2), (name, args, result.returncode, result.stderr)
            assert "Traceback" not in result.stderr, (name, args, result.stderr)
            outputs[" ".join(args)] = result.stdout + result.stderr
        try:
            Queue("q", connection=url).enqueue(tasks.add, 1, 2)
        except (PlugqError, ValueError) as exc:
            outputs["exception"] = "".join(traceback.format_exception(exc)) + repr(exc)
        else:
            pytest.fail(f"{name}: enqueue to {mask_url(url)} did not fail")
        for where, text in outputs.items():
            assert_masked(text, password, f"{name} / {where}")
        # The message still says where: the host (or socket) is shown.
        assert re.search(r"127\.0\.0\.1|nonexistent|redis", outputs["info"]), outputs["info"]

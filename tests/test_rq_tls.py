"""``rediss://``: TLS with certificate verification on by default."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest

from plugq import BackendUnavailableError, Queue, Worker
from plugq.testing import tasks

IN_CI = os.environ.get("CI", "").lower() == "true"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    binary, openssl = shutil.which("redis-server"), shutil.which("openssl")
    if not binary or not openssl:
        if IN_CI:
            pytest.fail("redis-server and openssl are needed for the TLS test under CI")
        pytest.skip("redis-server or openssl missing")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    end = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > end:
                proc.kill()
                pytest.fail("TLS redis-server did not start")
            time.sleep(0.05)
    yield port, cert
    proc.kill()
    proc.wait()


def test_self_signed_certificate_is_refused_by_default(tls_redis):
    port, _ = tls_redis
    url = f"rediss://:secretpw@localhost:{port}/0"
    with pytest.raises(BackendUnavailableError) as err:
        Queue(f"tls-{uuid.uuid4().hex[:6]}", connection=url).enqueue(tasks.add, 1, 2)
    message = str(err.value)
    assert f"localhost:{port}" in message
    assert "secretpw" not in message


def test_tls_works_with_the_ca_given(tls_redis):
    port, cert = tls_redis
    url = f"rediss://localhost:{port}/0?ssl_ca_certs={cert}&worker_class=simple"
    q = Queue(f"tls-{uuid.uuid4().hex[:6]}", connection=url)
    job = q.enqueue(tasks.add, 1, 2)
    Worker([q]).work(burst=True)
    assert job.get_status() == "finished"
    assert job.result == 3

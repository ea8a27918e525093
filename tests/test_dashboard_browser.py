"""The dashboard in a real browser (Debian's chromium), on SQLite and on a real Redis.

Under CI=true these never skip: a missing chromium fails them.
``PLUGQ_UPDATE_SCREENSHOT=1`` makes :func:`test_screenshot` rewrite
``docs/img/dashboard.png``.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from _dashboard_helpers import chrome, free_port, serve
from plugq import Job, ManualClock, Queue, Worker
from plugq.dashboard import create_app
from plugq.testing import tasks

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chrome() as driver:
        yield driver


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'dash.db'}"
    server = request.getfixturevalue("redis_server")
    server.flushall()
    return str(server.url)


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # the element is being replaced by a live update
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or predicate}: last {last!r}")


def text(driver: Any, selector: str) -> str:
    """An element's text, read again if a live update replaced the element in between."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            return str(css(driver, selector).text)
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"{selector} kept being replaced")


def click(driver: Any, selector: str) -> None:
    """Click, again if a live update replaced the element in between."""
    from selenium.common.exceptions import StaleElementReferenceException

    for _ in range(20):
        try:
            css(driver, selector).click()
            return
        except StaleElementReferenceException:
            time.sleep(0.05)
    raise AssertionError(f"{selector} kept being replaced")


def drain(url: str, *queues: str) -> None:
    Worker(list(queues), connection=url, name=f"w-{uuid.uuid4().hex[:8]}",
           worker_class="simple").work(burst=True)


def test_overview_shows_the_counts_and_updates_live(browser: Any, store_url: str) -> None:
    q, h = Queue("default", connection=store_url), Queue("high", connection=store_url)
    for i in range(3):
        q.enqueue(tasks.add, i, i)
    h.enqueue(tasks.fail, "no")
    drain(store_url, "high", "default")
    q.enqueue(tasks.add, 1, 1)
    with serve(create_app(store_url)) as base:
        browser.get(base + "/")
        cell = 'tr[data-queue="{}"] a[data-count="{}"]'
        assert text(browser, cell.format("default", "finished")) == "3"
        assert text(browser, cell.format("default", "queued")) == "1"
        assert text(browser, cell.format("high", "failed")) == "1"
        assert text(browser, '[data-total="finished"]') == "3"
        # New work shows up without a reload: a marker set in the page survives.
        browser.execute_script("window.__sameDocument = true;")
        q.enqueue(tasks.add, 2, 2)
        wait_for(lambda: text(browser, cell.format("default", "queued")) == "2",
                 what="the queued count to reach 2")
        assert browser.execute_script("return window.__sameDocument === true;")
        wait_for(lambda: "3 finished, 1 failed" in text(browser, "#chart-note"), what="the chart")
        assert browser.find_elements("css selector", "#chart svg rect.bar.finished")


def test_failed_job_traceback_requeue_and_finish(browser: Any, store_url: str, tmp_path: Path) -> None:
    h = Queue("high", connection=store_url)
    job = h.enqueue(tasks.fail_until, str(tmp_path / "calls"), 1)
    drain(store_url, "high")
    assert job.get_status() == "failed"
    with serve(create_app(store_url)) as base:
        browser.get(base + "/")
        click(browser, 'tr[data-queue="high"] a[data-count="failed"]')
        wait_for(lambda: "status=failed" in browser.current_url, what="the failed list")
        click(browser, f'tr[data-job="{job.id}"] td.id a')
        wait_for(lambda: browser.current_url.endswith(f"/jobs/{job.id}"), what="the job page")
        assert css(browser, "#job-status").text == "failed"
        traceback = css(browser, "#exc-info").text
        assert "Traceback" in traceback and "RuntimeError: attempt 1 fails on purpose" in traceback
        click(browser, "button#requeue")
        wait_for(lambda: css(browser, "#job-status").text == "queued", what="status queued")
        assert job.get_status() == "queued"
        browser.execute_script("window.__sameDocument = true;")
        drain(store_url, "high")
        # The page follows the job by itself.
        wait_for(lambda: css(browser, "#job-status").text == "finished", what="status finished")
        assert browser.execute_script("return window.__sameDocument === true;")
        assert css(browser, "#job-result").text == "2"
        assert not css(browser, 'form[data-action="requeue"]').is_displayed()


def test_script_in_arguments_and_traceback_is_inert(browser: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'xss.db'}"
    evil = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"
    q = Queue("x", connection=url)
    job = q.enqueue(tasks.fail, evil, description=evil, meta={"note": evil})
    drain(url, "x")
    with serve(create_app(url)) as base:
        for path in ("/", f"/jobs/{job.id}", "/queues/x?status=failed", "/failed"):
            browser.get(base + path)
            time.sleep(0.3)
            assert browser.execute_script("return window.__pwned === undefined;"), path
            assert not browser.find_elements("css selector", "main script, main img")
        browser.get(base + f"/jobs/{job.id}")
        wait_for(lambda: "<script>window.__pwned = 1</script>" in css(browser, "#exc-info").text,
                 what="the traceback shown as text")
        assert evil in css(browser, "#job-args").text
        time.sleep(2.5)  # a live update has replaced the traceback: still text
        assert browser.execute_script("return window.__pwned === undefined;")


class _Attacker(BaseHTTPRequestHandler):
    """Another site whose page posts to the dashboard without a token."""

    target = ""

    def do_GET(self) -> None:
        html = (f'<!doctype html><form id="f" method="post" action="{self.target}">'
                '<input type="hidden" name="next" value="/"></form>'
                '<script>document.getElementById("f").submit();</script>').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(html)))
        self.end_headers()
        self.wfile.write(html)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_cross_site_post_is_refused(browser: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'csrf.db'}"
    q = Queue("c", connection=url)
    job = q.enqueue(tasks.add, 1, 1)
    with serve(create_app(url)) as base:
        browser.get(base + "/")  # the browser now holds the dashboard's cookie
        port = free_port()
        handler = type("Attack", (_Attacker,), {"target": f"{base}/jobs/{job.id}/delete"})
        evil = ThreadingHTTPServer(("127.0.0.1", port), handler)
        threading.Thread(target=evil.serve_forever, daemon=True).start()
        try:
            # 'localhost' is another site than '127.0.0.1' for the browser.
            browser.get(f"http://localhost:{port}/")
            wait_for(lambda: "refused" in css(browser, "body").text
                     or "CSRF" in css(browser, "body").text, what="the refusal")
            assert browser.current_url.startswith(base)
        finally:
            evil.shutdown()
            evil.server_close()
        assert Job.exists(job.id, connection=url)
        assert job.get_status() == "queued"


def test_read_only_mode(browser: Any, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ro.db'}"
    h = Queue("h", connection=url)
    job = h.enqueue(tasks.fail, "x")
    h.enqueue(tasks.add, 1, 2)
    drain(url, "h")
    h.enqueue(tasks.add, 1, 2)
    with serve(create_app(url, read_only=True)) as base:
        for path in (f"/jobs/{job.id}", "/queues/h?status=failed", "/queues/h", "/failed"):
            browser.get(base + path)
            assert css(browser, "#read-only").text == "read-only"
            assert not browser.find_elements("css selector", "form[method=post], main button")
        browser.get(base + f"/jobs/{job.id}")
        assert css(browser, "#job-status").text == "failed"
        assert "ZeroDivisionError" in css(browser, "#exc-info").text or "ValueError" in css(
            browser, "#exc-info").text
        # A POST the page did not offer is refused too.
        status = browser.execute_script(
            "var x = new XMLHttpRequest(); x.open('POST', arguments[0], false);"
            "x.setRequestHeader('Content-Type', 'application/x-www-form-urlencoded');"
            "x.send('csrf_token=whatever'); return x.status;", f"{base}/jobs/{job.id}/requeue")
        assert status == 403
    assert job.get_status() == "failed"


def test_screenshot(browser: Any, tmp_path: Path) -> None:
    """A populated dashboard, an hour of history, as docs/img/dashboard.png shows it."""
    from plugq_memory import MemoryBackend

    clock = ManualClock(time.time() - 3540)
    backend = MemoryBackend(f"memory://demo-{uuid.uuid4().hex[:6]}", clock=clock)
    queues = {n: Queue(n, connection=backend) for n in ("high", "default", "emails")}
    for minute in range(60):
        for n, q in queues.items():
            for i in range((minute * 7 + len(n)) % 9 + (3 if n == "default" else 0)):
                q.enqueue(tasks.add, minute, i, result_ttl=7200)
            if minute % 6 == len(n) % 6:
                q.enqueue(tasks.fail, f"SMTP 451 from relay {minute}")
        Worker(list(queues.values()), connection=backend, name="burst").work(burst=True)
        clock.advance(60)
    for i in range(14):
        queues["default"].enqueue(tasks.add, i, i)
    release = tmp_path / "release"
    queues["emails"].enqueue(tasks.wait_for_file, str(release), 60)
    queues["high"].enqueue_in(timedelta(hours=2), tasks.add, 1, 2)
    workers = [Worker([queues["emails"]], connection=backend, name="mail-1"),
               Worker([queues["high"]], connection=backend, name="api-1")]
    threads = [threading.Thread(target=workers[0].work, daemon=True)]
    threads[0].start()
    wait_for(lambda: any(w.state == "busy" for w in Worker.all(connection=backend)), what="busy")
    # api-1 waits on an empty queue: an idle worker in the picture.
    threads.append(threading.Thread(target=workers[1].work, daemon=True))
    threads[1].start()
    wait_for(lambda: len(Worker.all(connection=backend)) == 2, what="two workers")
    try:
        with serve(create_app(backend)) as base:
            browser.get(base + "/")
            wait_for(lambda: browser.find_elements("css selector", "#chart svg rect"), what="chart")
            time.sleep(0.5)
            out = tmp_path / "dashboard.png"
            browser.save_screenshot(str(out))
            assert out.stat().st_size > 10_000
            if os.environ.get("PLUGQ_UPDATE_SCREENSHOT") == "1":
                target = REPO / "docs" / "img" / "dashboard.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(out.read_bytes())
    finally:
        for w in workers:
            w.request_stop()
        release.touch()
        for t in threads:
            t.join(15)

"""Running one job's function: import, deserialize, call with a timeout.

Shared by the worker loop and ``Queue(is_async=False)`` so both take the same
path. The timeout works in the main thread (SIGALRM, which interrupts a
blocking call), in any other thread and where SIGALRM does not exist (the
function runs in a helper thread; on timeout the job fails at once and the
helper gets an asynchronous exception, as RQ's TimerDeathPenalty does).
"""

from __future__ import annotations

import contextvars
import importlib
import inspect
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .exceptions import InvalidTaskError, JobTimeoutException

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def resolve(func_name: str) -> Callable[..., Any]:
    """Import ``package.module.attr[.attr]`` and return the callable.

    Raises:
        InvalidTaskError: the module or attribute does not exist, or is not callable.
    """
    if "." not in func_name:
        raise InvalidTaskError(f"task {func_name!r} is not a dotted path 'module.function'")
    # The longest importable prefix is the module; the rest are attributes
    # (a method of a class defined in the module, say).
    parts = func_name.split(".")
    obj: Any = None
    for cut in range(len(parts) - 1, 0, -1):
        try:
            # From the second job on the module is loaded: take it from
            # sys.modules (import_module's locking costs ~2 us a job) unless
            # another thread is still executing it.
            obj = sys.modules.get(".".join(parts[:cut]))
            if obj is None or getattr(getattr(obj, "__spec__", None), "_initializing", False):
                obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as exc:
            if exc.name and ".".join(parts[:cut]).startswith(exc.name) is False:
                raise
            continue
        for attr in parts[cut:]:
            try:
                obj = getattr(obj, attr)
            except AttributeError:
                raise InvalidTaskError(
                    f"task {func_name!r}: module {'.'.join(parts[:cut])!r} has no attribute "
                    f"{attr!r} (was it renamed or removed?)"
                ) from None
        break
    else:
        # The usual cause: the worker runs in another folder than the one
        # holding the module (the worker's working directory is on sys.path).
        raise InvalidTaskError(
            f"task {func_name!r}: module {parts[0]!r} cannot be imported from the worker's "
            f"working directory ({os.getcwd()}) or its sys.path; start the worker in the "
            "folder that holds it, or add that folder with plugq worker --path DIR"
        )
    if not callable(obj):
        raise InvalidTaskError(f"task {func_name!r} is not callable")
    return obj


def timeout_message(timeout: float) -> str:
    return f"Task exceeded maximum timeout value ({timeout:g} seconds)"


def raise_in_thread(thread_id: int, exc: type[BaseException]) -> None:
    """Make ``exc`` raise in another thread at its next bytecode (a job run off the main thread).

    ctypes (~180 KiB of a worker's memory) is imported here, the first time a
    job thread is interrupted, not with this module: a worker whose jobs run
    on its main thread (the default) stops them with SIGALRM and never needs it.
    """
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc))


class Running:
    """A job being called, so another thread (a worker's command watcher) can interrupt it.

    :meth:`interrupt` makes the call raise the given exception the way a
    timeout does: through SIGALRM in the main thread (which also breaks a
    blocking sleep), else as an asynchronous exception in the thread that runs
    the function. Before the call began (the job is claimed, its function not
    yet imported or called) it is only recorded, and the call raises it at
    its start without calling the function: a signal then would land in the
    worker's own code. Once the call has returned it is a no-op.
    """

    def __init__(self) -> None:
        self.thread_id = threading.get_ident()
        #: the helper thread running the function (a timed call off the main thread).
        self.helper_id: int | None = None
        self.exc: type[BaseException] | None = None
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._begun = False
        self._over = False

    def interrupt(self, exc: type[BaseException]) -> bool:
        """Make the running call raise ``exc``; False if it already returned."""
        with self._lock:
            if self._over or self.exc is not None:
                return False
            self.exc = exc
            self.wake.set()
            if not self._begun:
                return True  # raised by begin(), before the function is called
            target = self.helper_id or self.thread_id
            if (target == threading.main_thread().ident and hasattr(signal, "SIGALRM")
                    and signal.getsignal(signal.SIGALRM) is _on_alarm):
                signal.pthread_kill(target, signal.SIGALRM)
            elif self.helper_id is None:
                raise_in_thread(target, exc)
            return True

    def begin(self) -> None:
        """The call starts: from now on an interrupt is delivered; one that came before is raised."""
        with self._lock:
            self._begun = True
            if self.exc is not None:
                raise self.exc(f"job interrupted before it was called: {self.exc.__name__}")

    def over(self) -> None:
        """The call returned (or raised): later interrupts do nothing."""
        with self._lock:
            self._over = True


#: The call running in the main thread, whose interrupt SIGALRM delivers.
_main_running: Running | None = None


def call(
    func: Callable[..., Any], args: Any, kwargs: Any, timeout: float | None,
    running: Running | None = None,
) -> Any:
    """Call ``func`` (sync or ``async def``), raising JobTimeoutException after ``timeout`` s.

    With ``running``, another thread may interrupt the call (see :class:`Running`).
    """
    global _main_running
    if running is None:
        return _call(func, args, kwargs, timeout, None)
    main = threading.current_thread() is threading.main_thread()
    outer = _main_running
    if main:
        _main_running = running
    try:
        running.begin()
        return _call(func, args, kwargs, timeout, running)
    finally:
        running.over()
        if main:
            _main_running = outer


def _call(
    func: Callable[..., Any], args: Any, kwargs: Any, timeout: float | None,
    running: Running | None,
) -> Any:
    if inspect.iscoroutinefunction(func):
        return _call_async(func, args, kwargs, timeout)
    main = threading.current_thread() is threading.main_thread()
    if timeout is None or timeout <= 0:
        if running is not None and not main:
            # Off the main thread only a helper thread can be left behind
            # when a stop interrupts a blocking call.
            return _call_in_thread(func, args, kwargs, None, running)
        return func(*args, **kwargs)
    if main and hasattr(signal, "SIGALRM"):
        return _call_with_alarm(func, args, kwargs, timeout)
    return _call_in_thread(func, args, kwargs, timeout, running)


def _call_async(func: Callable[..., Any], args: Any, kwargs: Any, timeout: float | None) -> Any:
    # Imported here, not at module level: asyncio costs ~20 ms to import and
    # only async tasks need it; every worker start and sync job paid for it.
    import asyncio

    async def runner() -> Any:
        if timeout is None or timeout <= 0:
            return await func(*args, **kwargs)
        try:
            return await asyncio.wait_for(func(*args, **kwargs), timeout)
        except TimeoutError:
            raise JobTimeoutException(timeout_message(timeout)) from None

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(runner())
    # Called from inside a running loop (a notebook, an async test): run the
    # coroutine on a loop of its own in a helper thread.
    ctx = contextvars.copy_context()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = ctx.run(asyncio.run, runner())
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")


#: Timeout of the job now running under SIGALRM (main thread), for the message.
_alarm_timeout = 0.0


def _on_alarm(signum: int, frame: Any) -> None:
    running = _main_running
    if running is not None and running.exc is not None:
        if running._over:
            return  # an interrupt that arrived as the call returned: nothing left to stop
        raise running.exc(f"job interrupted: {running.exc.__name__}")
    raise JobTimeoutException(timeout_message(_alarm_timeout))


def install_alarm_handler() -> Callable[[], None]:
    """Keep plugq's SIGALRM handler installed for a worker's run; returns the undo.

    Installing a handler per job (two ``signal.signal`` calls, each with enum
    conversions) cost ~6 us of a ~35 us memory job; with the handler in place
    a job only arms and disarms the timer. Outside the main thread: a no-op.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        return lambda: None
    previous = signal.signal(signal.SIGALRM, _on_alarm)

    def restore() -> None:
        signal.signal(signal.SIGALRM, previous)

    return restore


def _call_with_alarm(func: Callable[..., Any], args: Any, kwargs: Any, timeout: float) -> Any:
    global _alarm_timeout
    # A task may have replaced the handler: check, rather than trust the worker's install.
    installed = signal.getsignal(signal.SIGALRM) is _on_alarm
    previous = None if installed else signal.signal(signal.SIGALRM, _on_alarm)
    outer, _alarm_timeout = _alarm_timeout, timeout
    # A job may run another job (a sync queue inside a task): the inner timer
    # must not outlive or cancel the outer one, so it is saved and re-armed.
    outer_left = signal.getitimer(signal.ITIMER_REAL)[0]
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, min(timeout, outer_left) if outer_left > 0 else timeout)
    try:
        return func(*args, **kwargs)
    finally:
        if outer_left > 0:
            signal.setitimer(signal.ITIMER_REAL, max(outer_left - (time.monotonic() - started), 1e-6))
        else:
            signal.setitimer(signal.ITIMER_REAL, 0)
        _alarm_timeout = outer
        if not installed:
            signal.signal(signal.SIGALRM, previous)


def _call_in_thread(
    func: Callable[..., Any], args: Any, kwargs: Any, timeout: float | None,
    running: Running | None = None,
) -> Any:
    ctx = contextvars.copy_context()
    box: dict[str, Any] = {}
    # An interrupt (stop, kill) wakes the wait as the job's end does.
    done = running.wake if running is not None else threading.Event()

    def target() -> None:
        try:
            box["value"] = ctx.run(func, *args, **kwargs)
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    t = threading.Thread(target=target, name="plugq-job", daemon=True)
    t.start()
    if running is not None:
        running.helper_id = t.ident
    finished = done.wait(timeout)
    if running is not None and running.exc is not None and "value" not in box and "error" not in box:
        if t.ident is not None:
            raise_in_thread(t.ident, running.exc)
        raise running.exc(f"job interrupted: {running.exc.__name__}")
    if not finished:
        # Ask the runaway thread to stop at its next bytecode; the job is failed
        # now regardless, so the worker can take the next one.
        if t.ident is not None:
            raise_in_thread(t.ident, JobTimeoutException)
        raise JobTimeoutException(timeout_message(timeout or 0))
    if "error" in box:
        raise box["error"]
    return box.get("value")


def format_exc_info(exc: BaseException) -> str:
    """The traceback text stored as ``job.exc_info``."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

"""One asyncio event loop on a background thread, owned by the library.

Keywords run on Robot's main thread and submit coroutines here with :meth:`LoopThread.run`,
which waits with a timeout and cancels the coroutine when the timeout passes, so no keyword
can hang past its timeout. uvloop is used when it is installed, never required.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop: uvloop's when it is installed, else the standard one."""
    try:
        import uvloop  # noqa: PLC0415 (optional dependency)
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopTimeout(TimeoutError):
    """A coroutine submitted to the loop did not finish within its timeout."""

    ROBOT_SUPPRESS_NAME = True


class LoopThread:
    """Runs an event loop forever on a daemon thread until :meth:`stop`."""

    def __init__(self, name: str = "apex-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        self.start()
        assert self._loop is not None
        return self._loop

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            loop = new_event_loop()
            ready = threading.Event()

            def _run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(target=_run, name=self._name, daemon=True)
            thread.start()
            if not ready.wait(10):
                raise RuntimeError("The library's event loop thread did not start within 10 s.")
            self._loop, self._thread = loop, thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the loop and return a thread-safe future."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("LoopThread.run called from the loop thread itself (would deadlock).")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None, what: str = "operation") -> T:
        """Run ``coro`` on the loop and wait at most ``timeout`` seconds for its result.

        On timeout the coroutine is cancelled and :class:`LoopTimeout` names ``what``.
        Exceptions raised by the coroutine propagate unchanged.
        """
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            # Give the cancellation a moment to run so the coroutine's cleanup happens.
            try:
                future.result(1.0)
            except BaseException:  # noqa: BLE001 (cancelled or failed while cancelling)
                pass
            raise LoopTimeout(f"{what} did not finish within {_fmt_secs(timeout)}.") from None

    def call(self, fn, *args) -> Any:
        """Run a plain function on the loop thread and return its result (5 s limit)."""

        async def _call():
            return fn(*args)

        return self.run(_call(), 5.0, what=getattr(fn, "__name__", "call"))

    def stop(self, timeout: float = 5.0) -> None:
        """Cancel every task still on the loop, stop it and join the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def _shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(_shutdown(), loop).result(timeout)
        except BaseException:  # noqa: BLE001 (best effort at shutdown)
            pass
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()


def _fmt_secs(seconds: float | None) -> str:
    if seconds is None:
        return "no timeout"
    return f"{seconds:g} s"

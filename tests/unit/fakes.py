"""Test doubles and helpers shared by the unit tests (importable because tests/unit is on sys.path)."""

import asyncio
import time

from MessagingLibrary.engine.mock_process import MockProcess, start_mock

#: apex-mock arguments for a mock that answers at once (the load engine's tests: counts, not pacing).
INSTANT = ("--processing-ms", "0")


def start_instant_mock(*faults: str) -> MockProcess:
    """An apex-mock process that answers at once, with ``faults``; the caller stops it."""
    return start_mock(faults=list(faults), extra_args=INSTANT, timeout=15)


def run(coro, timeout: float = 10.0):
    """Run ``coro`` in a fresh event loop; fail after ``timeout`` seconds instead of hanging."""

    async def guarded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(guarded())


async def poll(predicate, timeout: float = 3.0, what: str = "condition"):
    """Wait until ``predicate()`` is truthy (checked every 5 ms) and return it; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class FakeClock:
    """A monotonic clock in seconds that moves only when told to."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Keywords:
    """Calls a library's keywords by their Python names, as Robot would after argument conversion."""

    def __init__(self, library) -> None:
        self.library = library

    def __getattr__(self, name):
        def call(*args, **kwargs):
            return self.library.run_keyword(name, list(args), kwargs)

        return call

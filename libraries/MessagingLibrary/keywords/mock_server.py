"""Keywords that start and stop the built-in mock server (apex_mock) in its own process."""

from __future__ import annotations

import itertools
from datetime import timedelta

from html import escape

from robot.api import logger
from robot.api.deco import keyword

from ..context import LibraryComponent, Owned, seconds
from ..dialects import dialect_class
from ..engine.mock_process import MockProcess, start_mock

_numbers = itertools.count(1)


class MockServerKeywords(LibraryComponent):
    """Start, stop and inspect the built-in mock server."""

    @property
    def _mocks(self) -> list[MockProcess]:
        return [owned.resource for owned in self.ctx.owners if isinstance(owned.resource, MockProcess)]

    @keyword(tags=("mock",))
    def start_mock_server(
        self,
        *faults: str,
        processing_ms: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout: timedelta = timedelta(seconds=15),
        dialect: str = "apex",
    ) -> str:
        """Starts the built-in mock server in its own process and returns its WebSocket URL.

        ``faults`` are mock fault modes (see `apex-mock --help`); each item may also be a
        comma-separated list, so a variable holding ``reorder,slow`` works. Port ``0`` picks a
        free port. The keyword waits until the server prints its listening line and answers
        ``GET /health``, at most ``timeout``. The server's log goes to
        ``${OUTPUT DIR}/apex-mock-N.log``.

        ``dialect`` is the client's dialect (see `Configure Target`): the mock speaks the
        dialect of the built-in mock that client talks to (``apex-mock --dialect``), so
        ``netra`` starts a netra mock and a copy of the apex dialect an apex one. In a dialect
        whose tokens are JWTs the mock verifies them with ``APEX_JWT_SECRET`` from the
        environment, else the development secret.

        A server started in a suite setup is stopped when that suite ends, one started in a
        test when the suite of that test ends, even when something failed.

        | ${url} =    Start Mock Server
        | ${url} =    Start Mock Server    reorder    processing_ms=5
        | ${url} =    Start Mock Server    dialect=netra
        """
        wire = dialect_class(dialect).mock_dialect  # DialectError names the dialect and the problem
        if wire is None:
            raise ValueError(
                f"Dialect '{dialect}' names no dialect of the built-in mock (its mock_dialect is None): "
                "point the suites at a server that speaks it (resources/variables/staging.py)."
            )
        names = [name.strip() for item in faults for name in str(item).split(",") if name.strip()]
        extra = ["--processing-ms", str(processing_ms)] if processing_ms is not None else []
        if wire != "apex":
            extra += ["--dialect", wire]
        log_file = self.ctx.output_dir() / f"apex-mock-{next(_numbers)}.log"
        mock = start_mock(
            faults=names, host=host, port=port, log_file=log_file, extra_args=extra, timeout=seconds(timeout) or 15.0
        )
        # A mock outlives the test that started it: its suite stops it.
        self.ctx.owners.append(Owned(self.ctx.suite_scope, mock))
        faults_text = ", ".join(names) if names else "none"
        logger.info(
            f"Mock server started at {mock.url} (pid {mock.pid}, dialect {wire}, faults: {faults_text}); "
            f'log: <a href="{escape(log_file.name)}">{escape(log_file.name)}</a>',
            html=True,
        )
        return mock.url

    @keyword(tags=("mock",))
    def stop_mock_server(self, timeout: timedelta = timedelta(seconds=5)) -> None:
        """Stops every mock server this library started and still runs.

        Stopping is graceful (SIGTERM) and escalates to a kill after ``timeout``. Usually not
        needed: servers are stopped automatically at the end of the suite that started them.

        | Stop Mock Server
        """
        for owned in [o for o in self.ctx.owners if isinstance(o.resource, MockProcess)]:
            code = owned.resource.stop(seconds(timeout) or 5.0)
            self.ctx.owners.remove(owned)
            logger.info(f"Mock server {owned.resource.url} stopped (exit code {code}).")

    @keyword(tags=("mock",))
    def mock_server_should_be_running(self) -> None:
        """Fails unless the most recently started mock server process is alive.

        | Mock Server Should Be Running
        """
        mocks = self._mocks
        if not mocks:
            raise AssertionError("No mock server was started by this library.")
        mock = mocks[-1]
        if not mock.running:
            raise AssertionError(f"Mock server {mock.url} (pid {mock.pid}) is not running: exit code {mock.process.poll()}.")

    def _server_pid(self) -> int | None:
        mocks = [m for m in self._mocks if m.running]
        return mocks[-1].pid if mocks else None


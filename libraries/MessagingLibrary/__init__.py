"""MessagingLibrary: Robot Framework keywords to test a real-time AI chat platform over WebSocket.

See the library documentation (``libdoc MessagingLibrary``), DESIGN.md and docs/protocol.md.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from robotlibcore import DynamicCore

from .context import Context, UserStrategy, seconds
from .engine.mock_process import MockProcess
from .engine.monitor import ResourceMonitor
from .engine.proxy import FaultProxy
from .engine.session import Session
from .keywords import (
    CheckKeywords,
    ConnectionKeywords,
    FaultProxyKeywords,
    LoadKeywords,
    MockServerKeywords,
    OfflineQueueKeywords,
    ReportingKeywords,
    ResourceKeywords,
    ResponseKeywords,
    SendingKeywords,
    StateKeywords,
)

__version__ = "0.1.0"


class MessagingLibrary(DynamicCore):
    """Keywords that prove a real-time chat platform keeps its promises under stress.

    = Overview =

    The library talks JSON over WebSocket to the Apex platform or to the built-in mock server
    (`Start Mock Server`). One background asyncio loop owns every connection; each connection
    has a reader task that timestamps every frame into a History and routes replies by
    ``request_id``, so state queries never steal chat replies. Keywords are synchronous and
    every one has a timeout.

    = Scope of checks =

    Checks and counts look at what happened since the current test started: the History is
    marked at each test's start. Connections opened in a test are closed when it ends; those
    opened in a suite setup, and mock servers, when that suite ends.

    = Assertions =

    Measuring keywords return their value and take an optional assertion operator and
    expected value (robotframework-assertion-engine): ``Get Delivery Ratio    >=    0.95``.
    Times are seconds and thresholds accept Robot time strings (``500 ms``). Every asserted
    value is kept for the test's table: call `Log Measurements` in the teardown.

    = Offline queue =

    Messages for a user who is away are pushed from an admin connection (`Push Messages`),
    named by labels (``N1``, ``H1:high``); after `Reconnect`, `Wait For Queued Deliveries`
    and the checks (`Delivered Messages Should Be`, `Deliveries Should Follow Priority Order`,
    `Offline Messages Should Be Accounted For`) judge what came back.

    = Test users =

    Each test acts as its own fresh user (see `Configure Target`); tokens never appear in the
    log (pass them as Secret variables).

    | *** Settings ***
    | Library    MessagingLibrary
    |
    | *** Test Cases ***
    | Messages Are Answered In Order
    |     ${url} =    Start Mock Server
    |     Configure Target    ${url}    ${APEX_TOKEN}
    |     Connect
    |     Send Numbered Messages    20    100 ms
    |     Wait For Responses    20
    |     Responses Should Be In Send Order
    """

    ROBOT_LIBRARY_SCOPE = "GLOBAL"
    ROBOT_LISTENER_API_VERSION = 3
    ROBOT_LIBRARY_VERSION = __version__

    def __init__(self, timeout: timedelta = timedelta(seconds=10)) -> None:
        """``timeout`` is the default for keywords that take one and were not given it."""
        self.ctx = Context(default_timeout=seconds(timeout) or 10.0)
        self.ROBOT_LIBRARY_LISTENER = self
        self._suites: list[str] = []
        connections = ConnectionKeywords(self.ctx)
        self._proxies = FaultProxyKeywords(self.ctx)
        components = [
            MockServerKeywords(self.ctx),
            connections,
            SendingKeywords(self.ctx),
            ResponseKeywords(self.ctx),
            StateKeywords(self.ctx),
            OfflineQueueKeywords(self.ctx, connections),
            CheckKeywords(self.ctx),
            LoadKeywords(self.ctx, connections),
            ResourceKeywords(self.ctx),
            self._proxies,
            ReportingKeywords(self.ctx),
        ]
        super().__init__(components)

    # -- listener: close what each test and suite opened -------------------------------------

    def _start_suite(self, data, result) -> None:
        self._suites.append(f"suite:{data.id}")
        self.ctx.scope = self.ctx.suite_scope = self._suites[-1]
        self.ctx.test_mark = self.ctx.history.mark()

    def _end_suite(self, data, result) -> None:
        scope = f"suite:{data.id}"
        self._release(scope)
        if self._suites and self._suites[-1] == scope:
            self._suites.pop()
        self.ctx.scope = self.ctx.suite_scope = self._suites[-1] if self._suites else "library"

    def _start_test(self, data, result) -> None:
        fixed = self.ctx.target.strategy is UserStrategy.fixed
        self.ctx.id_suffix = f"~{uuid.uuid4().hex[:8]}" if fixed else ""
        self.ctx.scope = f"test:{data.id}"
        self.ctx.test_mark = self.ctx.history.mark()
        self.ctx.test_started_ns = time.perf_counter_ns()
        self.ctx.measurements = []

    def _end_test(self, data, result) -> None:
        if result.failed:
            note = self.ctx.fault_note()
            if note and note not in result.message:
                result.message += note
        self._release(f"test:{data.id}")
        self.ctx.scope = self.ctx.suite_scope
        self.ctx.test_mark = self.ctx.history.mark()

    def _close(self) -> None:
        for owned in list(self.ctx.owners):
            self._release(owned.scope)
        self.ctx.loop.stop()

    def _release(self, scope: str) -> None:
        # Connections first, then what they ran through: a proxy, then the server itself.
        owned_here = [o for o in self.ctx.owners if o.scope == scope]
        order = {Session: 0, ResourceMonitor: 1, FaultProxy: 2, MockProcess: 3}
        owned_here.sort(key=lambda o: order.get(type(o.resource), 1))
        for owned in owned_here:
            self.ctx.owners.remove(owned)
            resource = owned.resource
            try:
                if isinstance(resource, Session):
                    self.ctx.run(resource.close(2.0), 3.0, f"Closing '{resource.alias}'")
                    if self.ctx.sessions.get(resource.alias) is resource:
                        del self.ctx.sessions[resource.alias]
                        if self.ctx.current == resource.alias:
                            self.ctx.current = next(iter(self.ctx.sessions), None)
                elif isinstance(resource, MockProcess):
                    resource.stop()
                elif isinstance(resource, FaultProxy):
                    self._proxies.release(resource)
                elif isinstance(resource, ResourceMonitor):
                    if resource.running:
                        self.ctx.run(resource.stop(), 5.0, "Stopping the resource monitor")
                    if self.ctx.monitor is resource:
                        self.ctx.monitor = None
            except Exception:  # noqa: BLE001 (cleanup must not fail the run)
                pass

    # Robot calls listener methods by these names; keep them out of the keyword list.
    start_suite = _start_suite
    end_suite = _end_suite
    start_test = _start_test
    end_test = _end_test
    close = _close

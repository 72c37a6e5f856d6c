"""Keywords that measure process resources: the client's and the server's memory, never mixed."""

from __future__ import annotations

import enum
from typing import Any

import psutil
from assertionengine import AssertionOperator
from robot.api import SkipExecution, logger
from robot.api.deco import keyword

from ..context import LibraryComponent
from ..engine.mock_process import MockProcess
from ..engine.session import ServerError

MB = 1024 * 1024


class ProcessRole(enum.Enum):
    """Whose resources: this test process (``client``) or the server's process (``server``)."""

    client = "client"
    server = "server"


class ResourceKeywords(LibraryComponent):
    """Memory snapshots of the client and of the server process, reported separately."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self._baseline: dict[ProcessRole, int | None] = {}

    def _rss(self, role: ProcessRole) -> int | None:
        if role is ProcessRole.client:
            return psutil.Process().memory_info().rss
        mocks = [o.resource for o in self.ctx.owners if isinstance(o.resource, MockProcess) and o.resource.running]
        if mocks:
            return psutil.Process(mocks[-1].pid).memory_info().rss
        if self.ctx.current is None:
            return None
        session = self.ctx.session()
        try:
            stats = self.ctx.run(session.request({"type": "get_server_stats"}, 5.0), 5.0, "get_server_stats")
        except ServerError:
            return None
        value = stats.get("rss_bytes")
        return int(value) if isinstance(value, (int, float)) else None

    @keyword(tags=("resources",))
    def take_memory_baseline(self) -> dict[str, Any]:
        """Records the resident memory of the client process and of the server process, now.

        The server's figure comes from its own process: read with psutil when this library
        started the mock, else from ``server_stats.rss_bytes`` of the current connection.
        Returns both in MB (``None`` when the server's is not available).

        | Take Memory Baseline
        """
        self._baseline = {role: self._rss(role) for role in ProcessRole}
        snapshot = {role.value: _mb(value) for role, value in self._baseline.items()}
        logger.info(f"Memory baseline (MB): {snapshot}")
        return snapshot

    @keyword(tags=("resources", "measure"))
    def get_memory_growth(
        self,
        process: ProcessRole = ProcessRole.server,
        operator: AssertionOperator | None = None,
        expected: Any = None,
    ) -> float:
        """Returns how many MB the ``server`` or ``client`` process grew since `Take Memory Baseline`.

        Client and server are measured separately, never summed. Skips the test when the
        server's memory cannot be read (a staging server without ``get_server_stats``).

        | Get Memory Growth    server    <    100
        | Get Memory Growth    client    <    100
        """
        if process not in self._baseline:
            raise RuntimeError("No memory baseline: call 'Take Memory Baseline' first.")
        before, now = self._baseline[process], self._rss(process)
        if before is None or now is None:
            raise SkipExecution(f"The {process.value} process's memory cannot be read on this target.")
        growth = round((now - before) / MB, 3)
        return self.ctx.check(
            f"{process.value} memory growth", growth, operator, expected, unit="MB",
            message=f"{_mb(before)} MB -> {_mb(now)} MB",
        )


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 3)

"""Keywords that measure process resources: the client's and the server's memory, never mixed."""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from datetime import timedelta
from html import escape
from typing import Any

import orjson
import psutil
from assertionengine import AssertionOperator
from robot.api import SkipExecution, logger
from robot.api.deco import keyword

from ..context import LibraryComponent, seconds
from ..engine.mock_process import MockProcess
from ..engine.monitor import CLIENT, SERVER, ResourceMonitor, psutil_reader
from ..engine.session import ServerError

MB = 1024 * 1024
_reports = itertools.count(1)


class ProcessRole(enum.Enum):
    """Whose resources: this test process (``client``) or the server's process (``server``)."""

    client = "client"
    server = "server"


class ResourceFigure(enum.Enum):
    """A figure of the resource monitor (see `Get Resource Figure`)."""

    growth_mb = "growth_mb"
    peak_growth_mb = "peak_growth_mb"
    peak_mb = "peak_mb"
    slope_mb_per_min = "slope_mb_per_min"
    bytes_per_message = "bytes_per_message"
    bytes_per_connection = "bytes_per_connection"
    cpu_percent_mean = "cpu_percent_mean"
    cpu_percent_peak = "cpu_percent_peak"
    recovery = "recovery"


_FIGURE_UNITS = {
    ResourceFigure.growth_mb: "MB",
    ResourceFigure.peak_growth_mb: "MB",
    ResourceFigure.peak_mb: "MB",
    ResourceFigure.slope_mb_per_min: "MB/min",
    ResourceFigure.bytes_per_message: "B/msg",
    ResourceFigure.bytes_per_connection: "B/conn",
    ResourceFigure.cpu_percent_mean: "%",
    ResourceFigure.cpu_percent_peak: "%",
    ResourceFigure.recovery: "ratio",
}


class ResourceKeywords(LibraryComponent):
    """Memory snapshots of the client and of the server process, reported separately."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self._baseline: dict[ProcessRole, int | None] = {}

    def _rss(self, role: ProcessRole) -> int | None:
        if role is ProcessRole.client:
            return psutil.Process().memory_info().rss
        reader, _ = self._server_reader()
        if reader is None:
            return None
        reading = self.ctx.run(reader(), 10.0, "Reading the server's memory")
        return None if reading is None else reading[0]

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


    # -- the background monitor ----------------------------------------------------------------

    def _server_reader(self):
        """How to read the server's (rss, cpu): the mock's process when this library started it,
        else ``server_stats`` over the current connection; ``(None, "")`` when neither exists."""
        mocks = [o.resource for o in self.ctx.owners if isinstance(o.resource, MockProcess) and o.resource.running]
        if mocks:
            return psutil_reader(mocks[-1].pid), f"mock server process, pid {mocks[-1].pid} (psutil)"
        if self.ctx.current is None:
            return None, ""
        session = self.ctx.session()

        async def read() -> tuple[int, float | None] | None:
            try:
                stats = await session.request({"type": "get_server_stats"}, 5.0)
            except ServerError:
                return None
            rss, cpu = stats.get("rss_bytes"), stats.get("cpu_seconds")
            if not isinstance(rss, (int, float)):
                return None
            return int(rss), float(cpu) if isinstance(cpu, (int, float)) else None

        return read, f"server_stats of the server (connection '{session.alias}')"

    @keyword(tags=("resources", "monitor"))
    def start_resource_monitor(self, interval: timedelta = timedelta(milliseconds=100)) -> None:
        """Starts sampling the client's and the server's memory and CPU every ``interval`` in the background.

        The client is this test process; the server is the mock's own process when this
        library started it, else what the server reports in ``server_stats`` over the current
        connection. Load runs mark the monitor (before connecting, connected, end) so
        `Get Resource Figure` can give the cost per connection and per message. The monitor
        stops when the test ends; `Stop Resource Monitor` stops it earlier and logs a table.

        | Start Resource Monitor
        | Start Resource Monitor    interval=250 ms
        """
        if self.ctx.monitor is not None and self.ctx.monitor.running:
            raise RuntimeError("A resource monitor is already running: stop it first ('Stop Resource Monitor').")
        reader, source = self._server_reader()
        monitor = ResourceMonitor(reader, source, seconds(interval) or 0.1)
        self.ctx.run(monitor.start(), 10.0, "Starting the resource monitor")
        self.ctx.monitor = monitor
        self.ctx.own(monitor)
        logger.info(f"Resource monitor started: client = this process, server = {source or 'not available'}.")

    def _monitor(self) -> ResourceMonitor:
        if self.ctx.monitor is None:
            raise RuntimeError("No resource monitor: call 'Start Resource Monitor' first.")
        return self.ctx.monitor

    @keyword(tags=("resources", "monitor"))
    def stop_resource_monitor(self) -> dict[str, Any]:
        """Stops the resource monitor, logs its figures for client and server, and returns them.

        The figures are also written to ``${OUTPUT DIR}/resources/resources-N.json``.

        | ${figures} =    Stop Resource Monitor
        """
        monitor = self._monitor()
        if monitor.running:
            self.ctx.run(monitor.stop(), 10.0, "Stopping the resource monitor")
        figures = {role: monitor.figures(role) for role in (CLIENT, SERVER)}
        path = self.ctx.output_dir() / "resources" / f"resources-{next(_reports)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
        logger.info(_figures_html(figures, path.name), html=True)
        return figures

    @keyword(tags=("resources", "monitor", "measure"))
    def get_resource_figure(
        self,
        process: ProcessRole,
        figure: ResourceFigure,
        operator: AssertionOperator | None = None,
        expected: Any = None,
    ) -> Any:
        """Returns a figure of the ``server`` or ``client`` process from the resource monitor, optionally asserting it.

        ``growth_mb`` (at the end of the latest load run, from the first sample),
        ``peak_growth_mb``, ``peak_mb``, ``slope_mb_per_min`` (least squares over the load),
        ``bytes_per_message`` (growth during the latest load run / messages answered),
        ``bytes_per_connection`` (growth from opening its connections / connections opened),
        ``cpu_percent_mean``, ``cpu_percent_peak``, ``recovery`` (share of the peak growth
        given back since; 1.0 when the peak growth is under the 20 MB noise floor). Client and
        server are never mixed. Skips the test when the server's figures cannot be read.

        | Get Resource Figure    server    bytes_per_message    <=    1024
        | Get Resource Figure    server    growth_mb    <=    200
        | Get Resource Figure    client    growth_mb    <=    50
        """
        monitor = self._monitor()
        figures = monitor.figures(process.value)
        if figures is None:
            raise SkipExecution(f"The {process.value} process's resources cannot be read on this target.")
        value = figures[figure.value]
        if value is None:
            raise RuntimeError(
                f"No {figure.value.replace('_', ' ')} yet: it needs a load run while the monitor runs."
            )
        return self.ctx.check(
            f"{process.value} {figure.value.replace('_', ' ')}", value, operator, expected,
            unit=_FIGURE_UNITS[figure], message=f"source: {figures['source']}",
        )

    @keyword(tags=("resources", "monitor", "measure"))
    def wait_for_memory_recovery(
        self,
        process: ProcessRole = ProcessRole.server,
        minimum: float = 0.95,
        timeout: timedelta = timedelta(seconds=10),
    ) -> float:
        """Waits until the process has given back at least ``minimum`` of its peak memory growth; returns the share.

        Polls the running monitor's samples; fails after ``timeout`` naming the peak, the
        memory now and the share recovered. Growth under the 20 MB noise floor counts as
        recovered (1.0).

        | Wait For Memory Recovery    server    minimum=0.95    timeout=5 s
        """
        monitor = self._monitor()
        if not monitor.running:
            raise RuntimeError("The resource monitor is stopped: recovery can only be watched while it runs.")
        deadline = time.monotonic() + (seconds(timeout) or 0.0)
        while True:
            self.ctx.run(monitor.sample(), 10.0, "Sampling resources")
            figures = monitor.figures(process.value)
            if figures is None:
                raise SkipExecution(f"The {process.value} process's memory cannot be read on this target.")
            if figures["recovery"] >= minimum or time.monotonic() >= deadline:
                break
            self.ctx.run(_pause(monitor.interval_s), 10.0, "Waiting between samples")
        return self.ctx.check(
            f"{process.value} memory recovery", figures["recovery"], AssertionOperator[">="], minimum, unit="ratio",
            message=f"peak {figures['peak_mb']} MB, now {figures['final_mb']} MB, baseline {figures['baseline_mb']} MB",
        )


async def _pause(interval: float) -> None:
    await asyncio.sleep(interval)


def _figures_html(figures: dict[str, Any], file_name: str) -> str:
    roles = [r for r in (CLIENT, SERVER) if figures.get(r)]
    if not roles:
        return "No resource figures."
    names = list(figures[roles[0]])
    head = "<tr><th>figure</th>" + "".join(f"<th>{escape(r)}</th>" for r in roles) + "</tr>"
    body = "".join(
        f"<tr><td>{escape(n)}</td>" + "".join(f"<td>{escape(str(figures[r].get(n)))}</td>" for r in roles) + "</tr>"
        for n in names
    )
    link = f'<a href="resources/{escape(file_name)}">resources/{escape(file_name)}</a>'
    return f"<table border='1'>{head}{body}</table>Figures: {link}"


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / MB, 3)

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
from assertionengine import AssertionOperator, verify_assertion
from robot.api import SkipExecution, logger
from robot.api.deco import keyword

from ..context import Artefact, LibraryComponent, coerce_expected, seconds
from ..engine.mock_process import MockProcess
from ..engine.monitor import CLIENT, SERVER, UNITS, ResourceMonitor, psutil_reader
from ..engine.session import ServerError

_reports = itertools.count(1)


class ProcessRole(enum.Enum):
    """Whose resources: this test process (``client``) or the server's process (``server``)."""

    client = "client"
    server = "server"


class ResourceFigure(enum.Enum):
    """A figure of the resource monitor (see `Get Resource Figure`); its measurement row is ``<process> <figure>``."""

    memory_growth = "memory_growth"
    peak_memory_growth = "peak_memory_growth"
    peak_memory = "peak_memory"
    memory_slope = "memory_slope"
    bytes_per_message = "bytes_per_message"
    bytes_per_connection = "bytes_per_connection"
    mean_cpu = "mean_cpu"
    peak_cpu = "peak_cpu"
    memory_recovery = "memory_recovery"


class ResourceKeywords(LibraryComponent):
    """The resource monitor: the client's and the server process's memory and CPU, reported separately."""

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
        """Takes the baseline of the client's and the server's memory and CPU, then samples them every ``interval``.

        The first sample is the baseline every growth is measured from. The client is this
        test process; the server is the mock's own process when this library started it, else
        what the server reports in ``server_stats`` over the current connection. Load runs
        mark the monitor (before connecting, connected, end) so `Get Resource Figure` can give
        the cost per connection and per message. The monitor stops when the test ends; `Stop
        Resource Monitor` stops it earlier and logs a table.

        | Start Resource Monitor
        | Start Resource Monitor    interval=250 ms
        """
        if self.ctx.monitor is not None and self.ctx.monitor.running:
            raise RuntimeError("A resource monitor is already running: stop it first ('Stop Resource Monitor').")
        reader, source = self._server_reader()
        monitor = ResourceMonitor(reader, source, seconds(interval) or 0.1)
        self.ctx.run(monitor.start(), 10.0, "Starting the resource monitor")
        self.ctx.monitor = monitor
        self.ctx.artefacts.append(Artefact("monitor", monitor, self.ctx.step))
        self.ctx.own(monitor)
        logger.info(f"Resource monitor started: client = this process, server = {source or 'not available'}.")

    def _monitor(self) -> ResourceMonitor:
        if self.ctx.monitor is None:
            raise RuntimeError("No resource monitor: call 'Start Resource Monitor' first.")
        return self.ctx.monitor

    @keyword(tags=("resources", "monitor"))
    def stop_resource_monitor(self) -> dict[str, Any]:
        """Stops the resource monitor, logs its figures for client and server, and returns them.

        The figures are also written to ``${OUTPUT DIR}/monitor/resources-N.json`` (with
        their ``units``).

        | ${figures} =    Stop Resource Monitor
        """
        monitor = self._monitor()
        if monitor.running:
            self.ctx.run(monitor.stop(), 10.0, "Stopping the resource monitor")
        figures = {role: monitor.figures(role) for role in (CLIENT, SERVER)}
        path = self.ctx.output_dir() / "monitor" / f"resources-{next(_reports)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps({**figures, "units": UNITS}, option=orjson.OPT_INDENT_2))
        logger.info(_figures_html(figures, path.name), html=True)
        return figures

    def _figures(self, monitor: ResourceMonitor, process: ProcessRole) -> dict[str, Any]:
        """The process's figures including a sample taken now (while the monitor runs); skips if unreadable."""
        if monitor.running:
            self.ctx.run(monitor.sample(), 10.0, "Sampling resources")
        figures = monitor.figures(process.value)
        if figures is None:
            if process is ProcessRole.server:
                raise self.ctx.unsupported(
                    "get_server_stats", "the server is not a process of this machine started by the library, so its "
                    "memory and CPU can only come from that query",
                )
            raise SkipExecution(f"The {process.value} process's resources cannot be read on this target.")
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

        | =Figure=             | =Unit= | =What=                                                              |
        | memory growth        | MB     | from the baseline to the end of the latest load run (or to now)       |
        | peak memory growth   | MB     | from the baseline to the highest sample                               |
        | peak memory          | MB     | the highest sample                                                    |
        | memory slope         | MB/min | least squares over the latest load run                                |
        | bytes per message    | B/msg  | growth during the latest load run / messages answered                 |
        | bytes per connection | B/conn | growth from opening its connections / connections opened              |
        | mean CPU, peak CPU   | %      | over the whole monitor; between samples                               |
        | memory recovery      | ratio  | share of the peak growth given back since (1.0 under the 20 MB noise floor) |

        The measurement row is named ``<process> <figure>`` (``server memory growth``). Client
        and server are never mixed. Skips the test when the process's figures cannot be read
        (a staging server without ``server_stats``).

        | Get Resource Figure    server    bytes per message    <=    1024
        | Get Resource Figure    server    memory growth    <=    200
        | Get Resource Figure    client    memory growth    <=    50
        """
        figures = self._figures(self._monitor(), process)
        value = figures[figure.value]
        name = figure.value.replace("_", " ")
        if value is None:
            raise RuntimeError(f"No {name} yet: it needs a load run while the monitor runs.")
        return self.ctx.check(
            f"{process.value} {name}", value, operator, expected,
            unit=UNITS[figure.value], message=f"source: {figures['source']}",
            meta={"process": process.value, "figure": figure.value, "baseline_mb": figures.get("baseline_mb")},
        )

    @keyword(tags=("resources", "monitor", "measure", "wait"))
    def wait_for_memory_recovery(
        self,
        operator: AssertionOperator = AssertionOperator[">="],
        expected: Any = 0.95,
        *,
        process: ProcessRole = ProcessRole.server,
        timeout: timedelta = timedelta(seconds=10),
    ) -> float:
        """Waits until the process's ``memory recovery`` figure passes the assertion; returns the figure.

        ``memory recovery`` is the share of its peak memory growth the process has given back
        (see `Get Resource Figure`; 1.0 when the growth stayed under the 20 MB noise floor).
        Samples the running monitor until ``memory recovery operator expected`` holds; fails
        after ``timeout`` naming the peak, the memory now and the share recovered. The row is
        ``<process> memory recovery``, as for `Get Resource Figure`.

        | Wait For Memory Recovery    >=    0.95    timeout=5 s
        | Wait For Memory Recovery    >=    0.9    process=client
        """
        monitor = self._monitor()
        if not monitor.running:
            raise RuntimeError("The resource monitor is stopped: recovery can only be watched while it runs.")
        deadline = time.monotonic() + (seconds(timeout) or 0.0)
        wanted = coerce_expected(expected, 1.0, "ratio", operator)
        while True:
            figures = self._figures(monitor, process)
            try:
                verify_assertion(figures["memory_recovery"], operator, wanted, "")
                break
            except AssertionError:
                if time.monotonic() >= deadline:
                    break
            self.ctx.run(_pause(monitor.interval_s), 10.0, "Waiting between samples")
        return self.ctx.check(
            f"{process.value} memory recovery", figures["memory_recovery"], operator, expected, unit="ratio",
            message=f"peak {figures['peak_memory']} MB, now {figures['final_mb']} MB, baseline {figures['baseline_mb']} MB",
        )


async def _pause(interval: float) -> None:
    await asyncio.sleep(interval)


def _figures_html(figures: dict[str, Any], file_name: str) -> str:
    roles = [r for r in (CLIENT, SERVER) if figures.get(r)]
    if not roles:
        return "No resource figures."
    names = list(figures[roles[0]])
    head = "<tr><th>figure</th><th>unit</th>" + "".join(f"<th>{escape(r)}</th>" for r in roles) + "</tr>"
    body = "".join(
        f"<tr><td>{escape(n.replace('_', ' '))}</td><td>{escape(UNITS.get(n, ''))}</td>"
        + "".join(f"<td>{escape(str(figures[r].get(n)))}</td>" for r in roles)
        + "</tr>"
        for n in names
    )
    link = f'<a href="monitor/{escape(file_name)}">monitor/{escape(file_name)}</a>'
    return f"<table border='1'>{head}{body}</table>Figures: {link}"

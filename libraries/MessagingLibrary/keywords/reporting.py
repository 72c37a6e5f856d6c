"""Keywords that report: the measured-vs-threshold table, metrics JSON, and the History file."""

from __future__ import annotations

import re
from html import escape
from typing import Any

import orjson
from robot.api import logger
from robot.api.deco import keyword
from robot.libraries.BuiltIn import BuiltIn

from ..context import LibraryComponent, Measurement, format_value
from ..engine.history import FAULT, Event


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "run"


class ReportingKeywords(LibraryComponent):
    """What stakeholders read: a table per test and files under the output directory."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self._written: set = set()

    @keyword(tags=("reporting",))
    def record_measurement(
        self, name: str, value: float, unit: str = "", operator: str = "", threshold: Any = None
    ) -> None:
        """Adds a row to this test's measurement table without asserting anything.

        Use it for figures a resource keyword checked itself.

        | Record Measurement    send duration    ${report}[duration_s]    s
        """
        passed = None
        self.ctx.measurements.append(Measurement(name, value, unit, operator, threshold, passed))

    @keyword(tags=("reporting",))
    def log_measurements(self) -> list[dict[str, Any]]:
        """Logs this test's measured values against their thresholds as a table, and saves them.

        Every measuring keyword with an assertion adds a row (also when it failed). The rows
        are appended to ``${OUTPUT DIR}/metrics.jsonl`` (started afresh by each run) with the
        suite and test names, and the table is cleared. When the fault proxy injected faults
        in this test, a second table lists them with their times (the cause next to the
        effect). Call it in the test teardown. Returns the rows.

        | [Teardown]    Log Measurements
        """
        self._log_injected_faults()
        rows, self.ctx.measurements = list(self.ctx.measurements), []
        if not rows:
            logger.info("No measurements in this test.")
            return []
        variables = BuiltIn().get_variables()
        record = {
            "suite": variables.get("${SUITE NAME}"),
            "test": variables.get("${TEST NAME}"),
            "measurements": [row.as_dict() for row in rows],
        }
        path = self.ctx.output_dir() / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        # A run starts the file afresh; later tests of the same run append to it.
        mode = "ab" if path in self._written else "wb"
        self._written.add(path)
        with path.open(mode) as out:
            out.write(orjson.dumps(record) + b"\n")
        logger.info(_table(rows), html=True)
        return record["measurements"]

    def _log_injected_faults(self) -> None:
        events = self.ctx.history.select(self.ctx.test_mark, direction=FAULT)
        if events:
            logger.info(_fault_table(events, self.ctx.test_started_ns), html=True)

    @keyword(tags=("reporting",))
    def save_history(self, name: str | None = None) -> str:
        """Writes every frame sent and received so far to ``${OUTPUT DIR}/history-NAME.jsonl``.

        One JSON object per line: index, monotonic timestamp (ns), direction, connection,
        type, intended send time for scheduled sends, and the frame. Logs a link; returns
        the path. ``name`` defaults to the suite name.

        | Save History
        """
        label = _safe_name(name or BuiltIn().get_variable_value("${SUITE NAME}", "run"))
        path = self.ctx.output_dir() / f"history-{label}.jsonl"
        count = self.ctx.history.write_jsonl(path)
        logger.info(
            f'History: {count} events in <a href="{escape(path.name)}">{escape(path.name)}</a>', html=True
        )
        return str(path)


#: Rows of the injected-faults table; the History keeps every one.
MAX_FAULT_ROWS = 50


def _fault_table(events: list[Event], started_ns: int) -> str:
    head = "<tr><th>at (s)</th><th>connection</th><th>fault</th><th>detail</th></tr>"
    body = []
    for event in events[:MAX_FAULT_ROWS]:
        details = {k: v for k, v in event.frame.items() if k not in ("type", "fault")}
        frame = details.pop("frame", None)
        text = "; ".join(f"{k}: {v}" for k, v in details.items())
        if frame:
            text += ("; " if text else "") + "frame: " + " ".join(f"{k}={v}" for k, v in frame.items())
        at = f"{(event.ts_ns - started_ns) / 1e9:.3f}"
        body.append(
            f"<tr><td style='text-align:right'>{at}</td><td>{escape(event.connection)}</td>"
            f"<td>{escape(str(event.frame.get('fault')))}</td><td>{escape(text)}</td></tr>"
        )
    more = len(events) - MAX_FAULT_ROWS
    tail = f"<tr><td colspan='4'>... and {more} more (all in the History file)</td></tr>" if more > 0 else ""
    return (
        "<b>Network faults injected by the fault proxy in this test</b>"
        "<table border='1' style='border-collapse:collapse' cellpadding='4'>" + head + "".join(body) + tail + "</table>"
    )


#: Colours of a row's verdict in the measurement table.
_VERDICT_COLOURS = {"PASS": "#1a7f37", "FAIL": "#cf222e", "INCONCLUSIVE": "#9a6700", "": "inherit"}


def _table(rows: list[Measurement]) -> str:
    """The measured-vs-threshold table: the server's figures, then the load generator's own.

    A row is PASS or FAIL against its threshold, INCONCLUSIVE when the load generator fell
    behind its schedule (its reason in the cell's title), or blank when only recorded.
    """
    head = "<tr><th>of</th><th>measure</th><th>measured</th><th>check</th><th>threshold</th><th>result</th></tr>"
    body = []
    for row in sorted(rows, key=lambda r: r.source != "server"):
        verdict = row.verdict
        colour = _VERDICT_COLOURS[verdict]
        threshold = "" if row.expected is None else format_value(row.expected, row.unit)
        title = f" title='{escape(row.inconclusive, quote=True)}'" if row.inconclusive else ""
        body.append(
            "<tr>"
            f"<td>{escape(row.source)}</td>"
            f"<td>{escape(row.name)}</td>"
            f"<td style='text-align:right'>{escape(format_value(row.value, row.unit))}</td>"
            f"<td style='text-align:center'>{escape(row.operator)}</td>"
            f"<td style='text-align:right'>{escape(threshold)}</td>"
            f"<td style='color:{colour};font-weight:bold'{title}>{verdict}</td>"
            "</tr>"
        )
    return (
        "<table border='1' style='border-collapse:collapse' cellpadding='4'>"
        + head
        + "".join(body)
        + "</table>"
    )

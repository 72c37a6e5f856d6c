"""Keywords that report: the measured-vs-threshold table, metrics JSON, and the History file."""

from __future__ import annotations

import base64
import os
import re
from html import escape
from typing import Any
from urllib.parse import urlsplit

import orjson
from robot.api import logger
from robot.api.deco import keyword
from robot.libraries.BuiltIn import BuiltIn

from ..context import LibraryComponent, Measurement, format_interval, format_value
from ..engine.history import FAULT, Event
from ..version import __version__


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
        """Logs this test's measured values against their thresholds, with its charts, and saves them.

        Every measuring keyword with an assertion adds a row (also when it failed). What a
        reader gets:

        - the test's documentation gains the table of the server's figures (what was measured,
          the sample count and 95% confidence interval of a percentile, the threshold and the
          verdict), so it shows at the test's level of the log and in ``report.html`` without
          expanding anything; a template's rows are grouped by the template row that measured
          them;
        - this keyword's log message: the same table, the load generator's own figures in a
          second table, and the charts drawn from what the test measured (latency spectrum,
          offered vs answered rate, rate steps, agent run timeline and gaps, memory and CPU,
          offline queue: see ``report_charts``), thresholds as in the table, failures marked;
        - a line per test in ``${OUTPUT DIR}/metrics.jsonl`` (started afresh by each run) with
          the suite and test names, and the figures for ``summary.html``.

        When the fault proxy injected faults in this test, a further table lists them with
        their times (the cause next to the effect). Call it in the test teardown. Returns the
        rows.

        | [Teardown]    Log Measurements
        """
        self._log_injected_faults()
        rows, self.ctx.measurements = list(self.ctx.measurements), []
        for start, step in self.ctx.step_marks:  # each row belongs to the template row it came in
            for row in rows[start:]:
                row.step = step
        self.ctx.step_marks = []
        artefacts, self.ctx.artefacts = list(self.ctx.artefacts), []
        drawn = self._charts(artefacts, rows)
        figures = [figure_of(row) for row in rows]
        self.ctx.test_record = {"figures": figures, "charts": drawn}
        if not rows and not drawn:
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
        server = [row for row in rows if row.source == "server"]
        if server or drawn:
            try:
                BuiltIn().set_test_documentation(doc_table(server) + doc_charts(drawn[:DOC_CHARTS]), append=True)
            except RuntimeError:
                pass  # not in a test (a suite teardown): the log message still has it
        payload = base64.b64encode(orjson.dumps({"version": 1, "figures": figures})).decode("ascii")
        charts_html = "".join(
            f"<div class='apex-chart-box' style='margin:8px 0'>{svg}</div>" for _, svg in drawn
        )
        logger.info(_table(rows) + charts_html + f"<!--apex-record:{payload}-->", html=True)
        return record["measurements"]

    @keyword(tags=("reporting",))
    def set_run_metadata(self, mock_faults: str = "", proxy: str = "", proxy_faults: str = "") -> dict[str, str]:
        """Says what this run tested, as metadata of the whole run (``report.html``, ``log.html``, ``summary.html``).

        Call it after `Configure Target`. Sets ``Target`` (``built-in mock``, or the target's
        name and URL: a run against the mock must not read like one against staging; runs are
        compared with earlier runs of the same target), ``Target URL``, ``Dialect``,
        ``Faults`` (of the built-in mock), ``Proxy`` (the fault proxy), ``Library version``
        and ``Run summary`` (a link to ``summary.html``). Returns them. Tokens and passwords
        never appear: a URL's user info and query are left out.

        The calling suite also gets its own ``Target URL`` (each suite starts its own mock, so
        the run's names only the latest), and, under pabot, ``Pabot process``: which of pabot's
        processes ran the suite and the folder of its files (``pabot_results/N/``).

        | Set Run Metadata    mock_faults=${APEX_MOCK_FAULTS}    proxy=${APEX_PROXY}    proxy_faults=${APEX_PROXY_FAULTS}
        """
        target = self.ctx.target
        if target.url is None:
            raise RuntimeError("No target is configured: use 'Configure Target' before 'Set Run Metadata'.")
        where = _host_of(target.url)
        proxied = bool(proxy_faults) or str(proxy).strip().lower() in ("on", "yes", "true", "1")
        described = {
            # The mock's port changes every run; the target's name must not (runs are compared by it).
            "Target": "built-in mock" if target.name == "mock" else f"{target.name}: {where}",
            "Target URL": where,
            "Dialect": target.dialect.name,
            "Faults": (mock_faults or "none") if target.name == "mock" else "not applicable (not the built-in mock)",
            "Proxy": ("on, faults: " + proxy_faults if proxy_faults else "on, no standing fault") if proxied else "off",
            "Library version": __version__,
            # Written at the end of the run next to log.html and report.html.
            "Run summary": "[summary.html|summary.html: every guarantee on one page]",
        }
        pabot = self.ctx.pabot
        if pabot is not None:
            # Written by `apex-summary output.xml` once pabot has merged (no process writes it).
            described["Run summary"] += " (after pabot: ``apex-summary output.xml``)"
        builtin = BuiltIn()
        for name, value in described.items():
            builtin.set_suite_metadata(name, value, top=True)
        # The suite's own: under pabot the merged run's top-level value is that of one process.
        builtin.set_suite_metadata("Target URL", where)
        if pabot is not None:
            builtin.set_suite_metadata("Pabot process", pabot.describe())
        self.ctx.run_metadata = described
        return described

    def _charts(self, artefacts: list, rows: list[Measurement]) -> list[tuple[str, str]]:
        """The test's charts; a chart that cannot be drawn is a warning, never a failed test.

        ``APEX_CHARTS=off`` in the environment draws none (the tables stay): for runs whose
        logs nobody reads, such as a fault matrix's faulted rows (``apex-faults --charts``).
        """
        if not artefacts or os.environ.get("APEX_CHARTS", "").strip().lower() in ("0", "off", "no", "false"):
            return []
        try:
            # Imported here: matplotlib costs about half a second, paid only by a run that draws.
            from ..report_charts import charts_for

            return charts_for(artefacts, rows)
        except Exception as error:  # noqa: BLE001 (a report must not change a verdict)
            logger.warn(f"The charts of this test could not be drawn: {type(error).__name__}: {error}")
            return []

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
_CELL = "style='border:1px solid #d0d7de;padding:3px 8px"


def _host_of(url: str) -> str:
    """``ws://host:port/path`` without user info or query (a token may sit in either)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def label_of(name: str) -> str:
    """A row's name in words: ``agent_state.memory_usage.total_objects`` → ``agent state: memory usage: total objects``.

    Names that are already words are kept (they are what failure messages and the fault
    catalogue say).
    """
    dotted = re.fullmatch(r"([a-z_]+)\.([a-z_.]+)", name)
    if dotted:
        return ": ".join(part.replace("_", " ") for part in name.split("."))
    return name


def measured_text(row: Measurement) -> str:
    """The measured value in human units."""
    return format_value(row.value, row.unit)


def samples_text(row: Measurement) -> str:
    return "" if row.samples is None else f"{row.samples:,}"


def figure_of(row: Measurement) -> dict[str, Any]:
    """A row as the run summary reads it (MessagingLibrary.summary.Figure)."""
    return {
        "key": row.name,
        "label": label_of(row.name),
        "value": row.value if isinstance(row.value, (int, float)) and not isinstance(row.value, bool) else None,
        "unit": row.unit,
        "display": measured_text(row),
        "operator": row.operator,
        "threshold": row.expected if isinstance(row.expected, (int, float)) and not isinstance(row.expected, bool) else None,
        "threshold_display": "" if row.expected is None else format_value(row.expected, row.unit),
        "verdict": row.verdict,
        "reason": row.inconclusive,
        "samples": row.samples,
        "ci_display": format_interval(row.interval, row.unit),
        "source": row.source,
        "step": row.step,
    }


#: Charts shown in the test's documentation (visible without a click; all are in the log message).
DOC_CHARTS = 2


def doc_charts(drawn: list[tuple[str, str]]) -> str:
    """Charts as images in Robot documentation syntax (``[data:image/svg+xml;base64,...|title]``)."""
    if not drawn:
        return ""
    from .. import charts

    images = []
    for title, svg in drawn:
        name = re.sub(r"[\[\]|]", " ", title)
        images.append(f"[{charts.svg_data_uri(svg)}|{name}]")
    return ("\n\n" + "\n\n".join(images)) if images else ""


def _cell(text: str) -> str:
    """A cell of a Robot documentation table: no pipe, no line break."""
    return " ".join(str(text).replace("|", "/").split()) or " "


def doc_table(rows: list[Measurement]) -> str:
    """The server's figures as a Robot documentation table (shown at the test's level and in report.html)."""
    if not rows:
        return ""
    lines = ["", "", "*Measured in this run*", "", "| =Figure= | =Measured= | =Samples (95% CI)= | =Threshold= | =Result= |"]
    step = None
    for row in rows:
        if row.step and row.step != step:
            step = row.step
            lines.append(f"| *{_cell(step)}* | | | | |")
        threshold = "" if row.expected is None else f"{row.operator} {format_value(row.expected, row.unit)}"
        interval = format_interval(row.interval, row.unit).removeprefix("95% CI ")
        samples = samples_text(row) + (f" ({interval})" if interval else "")
        verdict = row.verdict or "recorded"  # an inconclusive row's reason is in the test's message
        lines.append(f"| {_cell(label_of(row.name))} | {_cell(measured_text(row))} | {_cell(samples)} | "
                     f"{_cell(threshold)} | {_cell(verdict)} |")
    return "\n".join(lines)


def _table(rows: list[Measurement]) -> str:
    """The measured-vs-threshold tables: the server's figures, then the load generator's own.

    A row is PASS or FAIL against its threshold, INCONCLUSIVE when it could not be judged (the
    load generator fell behind, or too few samples for the percentile: the reason in the row),
    or blank when only recorded. A template's rows are grouped under the row that measured them.
    """
    server = [r for r in rows if r.source != "generator"]
    generator = [r for r in rows if r.source == "generator"]
    html = ""
    if server:
        html += "<b>Measured in this test</b>" + _html_table(server)
    if generator:
        html += ("<b>The load generator's own figures</b> (whether it kept its schedule, and so could judge "
                 "the server)" + _html_table(generator))
    return html


def _html_table(rows: list[Measurement]) -> str:
    head = "".join(
        f"<th {_CELL};background:#f6f8fa'>{h}</th>"
        for h in ("figure", "measured", "samples", "95% confidence interval", "check", "threshold", "result")
    )
    body = []
    step = None
    for row in rows:
        if row.step and row.step != step:
            step = row.step
            body.append(f"<tr><td colspan='7' {_CELL};background:#eaeef2;font-weight:bold'>{escape(step)}</td></tr>")
        verdict = row.verdict
        colour = _VERDICT_COLOURS[verdict]
        threshold = "" if row.expected is None else format_value(row.expected, row.unit)
        reason = f"<br><small>{escape(row.inconclusive)}</small>" if row.inconclusive else ""
        body.append(
            "<tr>"
            f"<td {_CELL}'>{escape(label_of(row.name))}</td>"
            f"<td {_CELL};text-align:right'>{escape(measured_text(row))}</td>"
            f"<td {_CELL};text-align:right'>{escape(samples_text(row))}</td>"
            f"<td {_CELL}'>{escape(format_interval(row.interval, row.unit).removeprefix('95% CI '))}</td>"
            f"<td {_CELL};text-align:center'>{escape(row.operator)}</td>"
            f"<td {_CELL};text-align:right'>{escape(threshold)}</td>"
            f"<td {_CELL};color:{colour};font-weight:bold'>{verdict or 'recorded'}{reason}</td>"
            "</tr>"
        )
    return (
        "<table class='apex-measurements' style='border-collapse:collapse;margin:4px 0 10px 0'>"
        f"<tr>{head}</tr>" + "".join(body) + "</table>"
    )

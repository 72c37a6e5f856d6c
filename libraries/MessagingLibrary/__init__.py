"""MessagingLibrary: Robot Framework keywords to test a real-time AI chat platform over WebSocket.

See the library documentation (``apex-docs`` writes it to results/docs/) and docs/protocol.md.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import fields as dataclass_fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from robot.libraries.BuiltIn import BuiltIn
from robot.running.context import EXECUTION_CONTEXTS
from robot.running.model import TestCase as TestCaseData
from robotlibcore import DynamicCore

from .context import Context, UserStrategy, seconds
from .engine.console import console
from .engine.mock_process import MockProcess
from .engine.monitor import ResourceMonitor
from .engine.proxy import FaultProxy
from .engine.session import Session
from .keywords import (
    AgentRunKeywords,
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

from .parallel import rebase_links
from .summary import Figure, RunModel, TestEntry, verdict_line, write_summary
from .version import __version__


class MessagingLibrary(DynamicCore):
    """Keywords that prove a real-time chat platform keeps its promises under stress.

    = Overview =

    The library talks JSON over WebSocket to the Apex platform or to the built-in mock server
    (`Start Mock Server`). One background asyncio loop owns every connection; each connection
    has a reader task that timestamps every frame into a History and routes replies by
    ``request_id``, so state queries never steal chat replies. Keywords are synchronous and
    every one has a timeout. The parts, each with an example below: `Target and test users`,
    `Dialects`, `Connections and sending`, `Checks`, `Offline queue`, `Load engine`, `Fault proxy`,
    `Resource monitor`, `Reporting` and `The mock`.

    = Vocabulary =

    One name per idea, in every keyword:

    | =Argument=            | =Means=                                                                 |
    | ``connection``        | one of this library's connections, by the name given to `Connect` (``alice``); default: the current connection (for checks and counts: every connection) |
    | ``user``              | the user a push is for, or whose offline queue is meant, named by one of its connections, open or closed (``alice``) |
    | ``pusher``            | the admin connection a push goes from (default ``admin``, opened with the admin token on first use) |
    | ``process``           | whose resources: ``client`` (this test process) or ``server``           |
    | ``figure``            | what a getter returns: `Get Load Figure`, `Get Resource Figure`, `Get Connection Health` |
    | ``operator``, ``expected`` | the optional assertion of a measuring keyword (see `Assertions`)    |
    | ``timeout``           | how long a keyword may wait, as a Robot time (``5 s``, ``500 ms``)      |
    | ``count``, ``interval``, ``rate``, ``duration`` | how many, how far apart, messages per second, how long |

    = Target and test users =

    `Configure Target` sets the server and how each test gets a fresh user of its own (tokens
    are Secret values and never appear in the log). `Check Target`, in the suite setup, checks
    once and quickly that the target answers, accepts a test user and has what the suite needs,
    so a bad target fails the suite in seconds with one line naming it.

    | Configure Target    ${url}    ${APEX_TOKEN}    admin_token=${APEX_ADMIN_TOKEN}
    | Check Target    admin    timeout=5 s
    | Require Pristine Test User

    = Dialects =

    A dialect is how the scenarios look on the wire: where the token goes, how a session
    opens, and how each frame sent and received is spelt. The checks read one canonical
    vocabulary (the apex protocol of ``docs/protocol.md``), so a scenario means the same in
    every dialect; the History keeps each translated frame in both forms, canonical and raw.
    Two dialects ship:

    | =Dialect= | =Speaks=                                                                 |
    | ``apex``  | the protocol of ``docs/protocol.md``: the default, and the built-in mock's |
    | ``netra`` | the real Netra Apex platform's (``docs/protocol.md`` section 13): a JWT (subprotocol ``jwt.<token>``, ``Authorization`` header or query ``token``), the thread handshake, answers as agent event streams; queries and test control as ``apex.<op>`` extension frames |

    ``APEX_DIALECT`` selects the dialect (``-v APEX_DIALECT:netra``, or the environment
    variable read by ``resources/variables/mock.py`` and ``staging.py``) and ``APEX_AUTH_IN``
    where the token goes (``header``, ``subprotocol`` or ``query``, as the dialect allows;
    default its first). The suites pass both to `Configure Target` and `Start Mock Server`.
    A dialect of your own is ``package.module:ClassName``, its directory on the Python path
    (``robot --pythonpath DIR``): copy ``docs/dialect_template.py``, which ``docs/dialects.md``
    explains. A misspelt name or a class that does not load fails the suite setup, naming
    it. Where the target lacks an operation a scenario needs, the scenario is skipped,
    naming the operation and the dialect; where it lacks a guarantee, the scenario fails.

    | ${url} =    Start Mock Server    dialect=netra
    | Configure Target    ${url}    dialect=netra    auth_in=header    jwt_secret=${APEX_JWT_SECRET}

    = Connections and sending =

    `Connect` opens a named connection as a new test user and makes it current; `Disconnect`,
    `Drop Connection` (no close frame) and `Reconnect` (same user, timed) end and resume it.
    Sending keywords run on an open-loop schedule fixed in advance: a late send goes out late
    and its lateness is recorded, and response times count from the intended send time.

    | Connect    alice
    | Send Numbered Messages    20    100 ms
    | Send Message    Hello    m1    connection=alice
    | Wait Until Messages Are Settled    10 s
    | Get Agent State    message_count    ==    20

    = Checks =

    Checks look at what happened since the current test started (the History is marked at
    each test's start), optionally on one ``connection``, and fail naming the messages that
    broke the guarantee: ``seq-msg-7 (sequence 7) was answered after seq-msg-9``.

    | Responses Should Be In Send Order
    | Responses Should Have No Duplicates
    | Every Message Should Have Exactly One Outcome
    | Get Delivery Ratio    >=    0.95
    | Get Response Time    p95    <=    1 s

    = Assertions =

    Measuring keywords are getters with an optional assertion: ``Get X    [figure]    operator
    expected`` (robotframework-assertion-engine). They return the value; with an operator they
    assert it and fail with ``<row> was <value>, expected <operator> <expected>``. Times are
    seconds and thresholds accept Robot time strings (``500 ms``). Every value read this way
    becomes a row of the test's measurement table, asserted or not (see `Reporting`).

    | Get Connection Health    missed pings    ==    0
    | ${ratio} =    Get Delivery Ratio

    = Offline queue =

    Messages for a user who is away are pushed from an admin connection (`Push Messages`),
    named by labels (``N1``, ``H1:high``: the label is the content, ``:PRIORITY`` its
    priority). After `Reconnect`, `Wait For Queued Deliveries` and the checks judge what came
    back, naming messages by label: ``H1 (high) was delivered after N1 (normal)``.

    | Disconnect    alice
    | Push Messages    alice    N1    H1:high    C:critical
    | Reconnect    alice
    | Wait For Queued Deliveries    alice    count=3
    | Delivered Messages Should Be    C H1 N1    connection=alice
    | Offline Messages Should Be Accounted For    alice

    = Load engine =

    `Run Load` and `Run Load In Phases` offer an open-loop rate (like wrk2) over fresh
    connections: every message has an intended send time, latency runs from it to the answer
    (no coordinated omission) into HDR histograms, and order, loss and duplicates are judged
    per connection in bounded memory. The figures of the latest run are read with `Get Load
    Figure` and `Get Load Latency`.

    | Run Load    1000    3 s    connections=10    name=baseline
    | Get Load Figure    delivery ratio    >=    0.95
    | Get Load Latency    p99    <=    500 ms
    | Load Should Preserve Order Per Connection

    = Inconclusive runs: the generator judges itself =

    Every open-loop run (a load run, or the scheduled sends of `Send Numbered Messages` and
    its siblings) also measures its own generator: late sends, writes that waited on the
    server's socket buffer (TCP backpressure, whose lateness is the server's), event-loop lag
    and client CPU, shown in the measurement table as rows of the ``generator``. When more than
    1% of its sends were over 50 ms late for its own reasons, the generator *fell behind*: the
    rate and latency assertions after that run are recorded as ``INCONCLUSIVE``, not asserted,
    and a test that otherwise passed ends ``SKIP`` with ``Inconclusive: the load generator fell
    behind its schedule (...)`` and the tag ``inconclusive``. Loss, order, duplicates and memory
    are still judged. See ``docs/measuring.md`` and `Run Load`'s ``behind_threshold`` and
    ``max_late_fraction``.

    An assertion on a percentile is inconclusive in the same way when its sample is too small
    to support it (its 95% confidence interval from order statistics would reach past the
    largest sample: a p95 needs 72 samples, a p99 368); every percentile row shows its sample
    count and interval.

    = Fault proxy =

    `Start Fault Proxy` puts a WebSocket-aware proxy (in this library, on 127.0.0.1) in front of
    the target; connections opened afterwards go through it. Keywords then inject network
    trouble, now or ``starting_in`` a delay during a load run: latency, partitions that heal
    or cut, TCP resets, frames dropped, duplicated, delayed or reordered. Every fault is
    recorded in the History, listed under the test's measurements and summarised in a failed
    test's message.

    | Start Fault Proxy
    | Connect    alice
    | Start Network Partition    alice    duration=1 s    then=heal
    | Drop Frames    ai_response    count=1    connection=alice
    | Send TCP Reset    alice

    = Resource monitor =

    `Start Resource Monitor` takes the baseline and samples the client (this process) and the
    server (the mock's own process, or ``server_stats`` of a running server) in the background,
    never mixing the two. `Get Resource Figure` reads a figure (``memory growth``, ``bytes per
    message``, ...), `Wait For Memory Recovery` waits for memory to be given back, `Stop
    Resource Monitor` logs a table. Load runs mark the monitor, so memory per message and per
    connection are measured over the run.

    | Start Resource Monitor
    | Run Load    5000    3 s    connections=10
    | Get Resource Figure    server    bytes per message    <=    1024
    | Get Resource Figure    client    memory growth    <=    50
    | Wait For Memory Recovery    >=    0.95    timeout=5 s

    = Reporting =

    All files go to the output directory (``--outputdir``, ``results/`` in the README):

    - the measurement table: `Log Measurements` (call it in the test teardown) adds each row
      (value in human units, sample count and 95% confidence interval of a percentile,
      operator, threshold, PASS/FAIL/INCONCLUSIVE) to the test's documentation, so it shows at
      the test's level and in ``report.html``; logs it with the charts drawn from what the test
      measured; and appends it to ``metrics.jsonl``, one line per test: ``{suite, test,
      measurements: [{name, value, unit, operator, threshold, passed, samples, interval,
      step}]}``; `Record Measurement` adds a row of your own. Rows of a template test are
      labelled by their template row;
    - the run summary: when the run ends the library writes ``summary.html`` (every test as a
      guarantee with its verdict, headline figures, charts and the regressions since the last
      run, kept under ``apex-runs/``); ``apex-summary output.xml`` rebuilds it. Under pabot
      each process keeps its files in its own ``pabot_results/N/`` (the merged log links
      there) and writes no summary: ``apex-summary <outputdir>/output.xml`` writes the whole
      run's once pabot has merged;
    - `Set Run Metadata` says what the run tested (target, dialect, faults, proxy, version);
    - the history: `Save History` writes ``history-<suite>.jsonl``, every frame sent and
      received (and every injected fault) with monotonic nanosecond timestamps;
    - the load JSON: every load run writes ``load/<run>.json`` (rates, latency percentiles,
      per phase and per connection);
    - the monitor JSON: `Stop Resource Monitor` writes ``monitor/resources-N.json``.

    | [Teardown]    Log Measurements
    | Save History

    = The mock =

    `Start Mock Server` starts the built-in mock (``apex-mock``, a real WebSocket server with
    the platform's semantics) in its own process on a free port and returns its URL; fault
    modes break one guarantee each, deterministically, so each scenario can be shown to fail.
    Its log goes to ``apex-mock-N.log`` in the output directory.

    | ${url} =    Start Mock Server
    | ${url} =    Start Mock Server    reorder    processing_ms=5
    | Mock Server Should Be Running

    = Scope =

    Connections opened in a test are closed when it ends; those opened in a suite setup, and
    mock servers, fault proxies and monitors, when their test or suite ends.

    | *** Settings ***
    | Library    MessagingLibrary
    |
    | *** Test Cases ***
    | Messages Are Answered In Order
    |     ${url} =    Start Mock Server
    |     Configure Target    ${url}    ${APEX_TOKEN}
    |     Check Target
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
        #: What summary.html is written from at the end of the run (see _close).
        self._entries: list[Any] = []
        self._run_started = ""
        self._output_dir: Path | None = None
        self._dry_run = False
        self._template_rows = 0
        connections = ConnectionKeywords(self.ctx)
        load = LoadKeywords(self.ctx, connections)
        self._proxies = FaultProxyKeywords(self.ctx)
        components = [
            MockServerKeywords(self.ctx),
            connections,
            SendingKeywords(self.ctx),
            ResponseKeywords(self.ctx),
            StateKeywords(self.ctx),
            OfflineQueueKeywords(self.ctx, connections),
            CheckKeywords(self.ctx),
            load,
            AgentRunKeywords(self.ctx, load),
            ResourceKeywords(self.ctx),
            self._proxies,
            ReportingKeywords(self.ctx),
        ]
        super().__init__(components)

    # -- listener: close what each test and suite opened -------------------------------------

    def _start_suite(self, data, result) -> None:
        if self._output_dir is None:
            self._output_dir = self.ctx.output_dir()
            self.ctx.pabot = self.ctx.pabot_process(self._output_dir)
            running = EXECUTION_CONTEXTS.current
            self._dry_run = bool(running is not None and running.dry_run)
            # The top suite's start, as apex-summary reads it from output.xml: the same run is
            # then one entry of the history, whichever wrote it.
            started = getattr(result, "start_time", None)
            top = result
            while getattr(top, "parent", None) is not None:
                top = top.parent
            started = getattr(top, "start_time", None) or started
            self._run_started = started.isoformat(sep=" ") if started else datetime.now().isoformat(sep=" ")
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
        self.ctx.artefacts = []
        self.ctx.test_record = None
        self.ctx.step = ""
        self.ctx.step_marks = []
        self._template_rows = 0
        self.ctx.generator = None
        self.ctx.inconclusive = []

    def _start_keyword(self, data, result) -> None:
        """A template row is a step of its test: its measurements are labelled ``row N: arguments``."""
        test = getattr(data, "parent", None)
        if not isinstance(test, TestCaseData) or not test.template or data.type != "KEYWORD":
            return  # not a template row (its setup and teardown are no rows)
        self._template_rows += 1
        self.ctx.step = f"row {self._template_rows}: " + ", ".join(_shown_argument(a) for a in data.args)
        self.ctx.step_marks.append((len(self.ctx.measurements), self.ctx.step))

    def _log_message(self, message) -> None:
        """Under pabot, a link the library logs to one of its files points there from the merged log.

        The files stay in this process's output directory (``pabot_results/N/``); the merged
        ``log.html`` is written two folders up (see MessagingLibrary.parallel).
        """
        pabot = self.ctx.pabot
        if pabot is None or not message.html or not pabot.link_prefix:
            return
        message.message = rebase_links(message.message, pabot.link_prefix, pabot.output_dir)

    def _end_test(self, data, result) -> None:
        self._release(f"test:{data.id}")  # closing cleanly completes the trust checks of its connections
        _judge_trust(result, self.ctx.trust.take())
        if result.failed:
            note = self.ctx.fault_note()
            if note and note not in result.message:
                result.message += note
        _judge_inconclusive(result, self.ctx.inconclusive)
        self._entries.append(_summary_entry(result, self.ctx.test_record))
        self.ctx.test_record = None
        self.ctx.step = ""
        self.ctx.scope = self.ctx.suite_scope
        self.ctx.test_mark = self.ctx.history.mark()

    def _close(self) -> None:
        for owned in list(self.ctx.owners):
            self._release(owned.scope)
        self.ctx.loop.stop()
        self._write_summary()

    def _write_summary(self) -> None:
        """``summary.html`` in the output directory, from this run's tests (``apex-summary`` rebuilds it from output.xml)."""
        if not self._entries or self._output_dir is None or self._dry_run:
            return  # nothing ran (a --dryrun measures nothing)
        if os.environ.get("APEX_SUMMARY", "").lower() in ("0", "off", "no"):
            return
        if self.ctx.pabot is not None:
            # One pabot process ran only some suites, and writes no log.html to link into: the
            # whole run's summary (and its place in apex-runs/) comes from the merged output.xml.
            merged = (self.ctx.pabot.report_dir or Path("<pabot --outputdir>")) / "output.xml"
            console(f"[apex] pabot process: summary.html of the whole run: apex-summary {merged}")
            return
        run = RunModel(
            metadata=dict(self.ctx.run_metadata),
            started=self._run_started,
            ended=datetime.now().isoformat(sep=" "),
            tests=list(self._entries),
        )
        try:
            path = write_summary(self._output_dir, run)
            console(f"Summary: {path}  ({verdict_line(run)})")
        except Exception as error:  # noqa: BLE001 (a report must not break the run's end)
            console(f"[apex] summary.html not written: {type(error).__name__}: {error}")

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
                    try:
                        self.ctx.run(resource.close(2.0), 3.0, f"Closing '{resource.alias}'")
                    except Exception:  # noqa: BLE001 (a close that ran out of time: abort it, on its loop)
                        if resource.ws is not None and self.ctx.loop.running:
                            self.ctx.loop.loop.call_soon_threadsafe(resource.ws.transport.abort)
                    finally:
                        # Forgotten however the close went: the next test opens its own 'main'.
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
    start_keyword = _start_keyword
    end_test = _end_test
    close = _close


def _shown_argument(argument: Any) -> str:
    """A template row's argument with its variables replaced (``rate=2500``), as written if it cannot be."""
    try:
        return str(BuiltIn().replace_variables(argument))
    except Exception:  # noqa: BLE001 (a label must not fail a test)
        return str(argument)


def _summary_entry(result, record: dict[str, Any] | None) -> TestEntry:
    """One test as summary.html shows it: its verdict, message, figures and charts."""
    known = {f.name for f in dataclass_fields(Figure)}
    figures = [Figure(**{k: v for k, v in figure.items() if k in known}) for figure in (record or {}).get("figures", [])]
    return TestEntry(
        id=result.id,
        suite=result.parent.name if result.parent is not None else "",
        name=result.name,
        doc=result.doc,
        status=result.status,
        message=result.message,
        tags=list(result.tags),
        figures=figures,
        charts=list((record or {}).get("charts", [])),
    )


def _judge_trust(result, violations: list[str]) -> None:
    """A test in which a frame contradicted what the client sent fails, naming each defect (engine.trust).

    Whatever the test was looking at: cross-talk, a wrong echo, a false redelivery flag or a
    wrong queued count is a defect of the server in its own right.
    """
    if not violations:
        return
    text = "Server frames contradicted what this client sent: " + "; ".join(violations) + "."
    if result.passed or result.skipped:
        result.status = "FAIL"
        result.message = text
    elif text not in result.message:
        result.message = (result.message + "\n\n" + text).strip()


def _judge_inconclusive(result, reasons: list[str]) -> None:
    """A test whose rate or latency could not be judged ends SKIP, ``Inconclusive: ...``, tagged ``inconclusive``.

    Only a test that otherwise passed: a failure found anyway (a message lost, an answer out of
    order) stays a failure, with the note added. See docs/measuring.md.
    """
    if not reasons:
        return
    text = "Inconclusive: " + "; ".join(reasons) + "."
    result.tags.add("inconclusive")
    if result.passed:
        result.status = "SKIP"
        result.message = text
    elif text not in result.message:
        result.message = (result.message + " [" + text + "]").strip()

"""``apex-summary``: the one-page run summary (``summary.html``) for stakeholders.

It answers "did the platform keep its promises, and is anything worse than last time?":
an overall verdict naming the target, one row per business guarantee (its verdict in
words, the measured-vs-promised figures, why it failed, a link into ``log.html``), the
charts that matter, and the regressions since the previous run of the same output folder.

    apex-summary                                  # results/output.xml -> results/summary.html
    apex-summary out/output.xml --previous old/output.xml --tolerance 0.25
    apex-summary --no-history                     # don't save this run under apex-runs/

The page is self-contained: inline CSS, inline SVG charts, no script, no network.

Where the figures come from: ``Log Measurements`` logs, per test, an HTML INFO message
carrying ``<!--apex-record:BASE64-->``, BASE64 being UTF-8 JSON ``{"version": 1,
"figures": [{Figure fields}]}``; charts are HTML INFO messages holding
``<svg class="apex-chart" aria-label="title">...</svg>`` elements. A listener can also
build a :class:`RunModel` itself and call :func:`write_summary`.

Each run's figures (no charts) are kept as JSON under ``<output dir>/apex-runs/``; the next
summary written to that folder compares against the newest earlier one (preferring a run
against the same target and dialect).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import math
import os
import re
import secrets
import sys
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from html import escape, unescape
from pathlib import Path
from typing import Any

#: Version of the ``apex-record`` JSON embedded in the log and of the run JSON under apex-runs/.
RECORD_VERSION = 1
RUN_FORMAT = "apex-run"
HISTORY_DIR = "apex-runs"

PASSED, FAILED, SKIPPED, INCONCLUSIVE = "passed", "failed", "skipped", "inconclusive"


# --------------------------------------------------------------------------- the model


@dataclass
class Figure:
    """One row of a test's measured-vs-threshold table."""

    key: str
    label: str
    value: float | int | None
    unit: str
    display: str
    operator: str = ""
    threshold: float | int | None = None
    threshold_display: str = ""
    verdict: str = ""
    reason: str = ""
    samples: int | None = None
    ci_display: str = ""
    source: str = "server"


@dataclass
class TestEntry:
    """One test: one business guarantee."""

    __test__ = False  # not a pytest test class

    id: str
    suite: str
    name: str
    doc: str
    status: str
    message: str
    tags: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    charts: list[tuple[str, str]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return verdict_of(self)


@dataclass
class RunModel:
    """A whole run: its metadata, times and tests (in execution order)."""

    metadata: dict[str, str]
    started: str
    ended: str
    tests: list[TestEntry]


def verdict_of(test: TestEntry) -> str:
    """``passed``, ``failed``, ``skipped`` or ``inconclusive`` (a skip tagged/saying so)."""
    status = (test.status or "").upper()
    if status == "PASS":
        return PASSED
    if status == "FAIL":
        return FAILED
    tags = {t.strip().lower() for t in test.tags or ()}
    if "inconclusive" in tags or (test.message or "").lstrip().lower().startswith("inconclusive:"):
        return INCONCLUSIVE
    return SKIPPED


_SEVERAL = re.compile(r"^\s*Several failures occurred:\s*", re.IGNORECASE)
_NUMBERED = re.compile(r"(?:^|\n\n)(\d+)\) ")


def reason_text(message: str) -> str:
    """The message to show: the first of Robot's "Several failures occurred" and "+N more"."""
    message = (message or "").strip()
    match = _SEVERAL.match(message)
    if not match:
        return message
    rest = message[match.end():]
    parts = [p.strip() for p in _NUMBERED.split(rest)[2::2] if p.strip()]
    if not parts:
        return message
    more = len(parts) - 1
    return parts[0] + (f" (+{more} more)" if more else "")


# --------------------------------------------------------------------------- loading output.xml

_RECORD = re.compile(r"<!--\s*apex-record:([A-Za-z0-9+/=\s]+?)\s*-->")
_SVG_START = re.compile(r"<svg\b[^>]*>", re.IGNORECASE)
_SVG_END = re.compile(r"</svg\s*>", re.IGNORECASE)
_CHART_CLASS = re.compile(r"""\bclass\s*=\s*["'](?:[^"']*\s)?apex-chart(?:\s[^"']*)?["']""", re.IGNORECASE)
_ARIA_LABEL = re.compile(r"""\baria-label\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_SVG_TITLE = re.compile(r"<title\b[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)
_UNSAFE_SVG = re.compile(r"<script|<foreignobject|javascript:|\son[a-z]+\s*=", re.IGNORECASE)


def parse_records(text: str) -> list[Figure]:
    """Every figure of every ``<!--apex-record:BASE64-->`` comment in ``text`` (bad ones skipped)."""
    figures: list[Figure] = []
    for match in _RECORD.finditer(text or ""):
        try:
            raw = base64.b64decode(re.sub(r"\s+", "", match.group(1)), validate=True)
            record = json.loads(raw.decode("utf-8"))
        except (binascii.Error, ValueError, UnicodeDecodeError):
            continue
        if not isinstance(record, dict) or not isinstance(record.get("figures"), list):
            continue
        figures += [_figure_from_dict(item) for item in record["figures"] if isinstance(item, dict)]
    return figures


def extract_charts(text: str) -> list[tuple[str, str]]:
    """``(title, markup)`` of every ``<svg class="apex-chart" ...>...</svg>`` in ``text``, in order."""
    charts = []
    position = 0
    text = text or ""
    while True:
        start = _SVG_START.search(text, position)
        if start is None:
            return charts
        end = _SVG_END.search(text, start.end())
        if end is None:
            return charts
        position = end.end()
        if not _CHART_CLASS.search(start.group(0)):
            continue
        markup = text[start.start():end.end()]
        charts.append((_chart_title(start.group(0), markup, len(charts) + 1), markup))


def _chart_title(start_tag: str, markup: str, number: int) -> str:
    label = _ARIA_LABEL.search(start_tag)
    if label:
        return unescape(label.group(1) if label.group(1) is not None else label.group(2)).strip()
    title = _SVG_TITLE.search(markup)
    if title:
        return unescape(re.sub(r"<[^>]+>", "", title.group(1))).strip()
    return f"Chart {number}"


def load_output_xml(path: str | Path) -> RunModel:
    """A :class:`RunModel` from a Robot Framework ``output.xml`` (figures and charts from the log).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for one Robot can't read.
    """
    from robot.api import ExecutionResult, ResultVisitor
    from robot.errors import DataError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        result = ExecutionResult(str(path))
    except DataError as error:
        raise ValueError(f"{path}: not a readable Robot Framework output ({error})") from error

    class Collector(ResultVisitor):
        def __init__(self) -> None:
            self.tests: list[TestEntry] = []
            self.current: TestEntry | None = None

        def start_test(self, test) -> None:
            self.current = TestEntry(
                id=test.id,
                suite=test.parent.name if test.parent is not None else "",
                name=test.name,
                doc=test.doc or "",
                status=test.status,
                message=test.message or "",
                tags=list(test.tags),
            )

        def end_test(self, test) -> None:
            if self.current is not None:
                self.tests.append(self.current)
            self.current = None

        def visit_message(self, msg) -> None:
            if self.current is None or not msg.message:
                return
            if "apex-record:" in msg.message:
                self.current.figures += parse_records(msg.message)
            if msg.html and "apex-chart" in msg.message:
                self.current.charts += extract_charts(msg.message)

    collector = Collector()
    result.suite.visit(collector)
    return RunModel(
        metadata=_merged_metadata(result.suite),
        started=_time_text(result.suite.start_time),
        ended=_time_text(result.suite.end_time),
        tests=collector.tests,
    )


def _merged_metadata(top) -> dict[str, str]:
    """The top suite's metadata, then any key only a child suite set (first one wins)."""
    merged = {str(k): str(v) for k, v in top.metadata.items()}
    seen = {_norm(k) for k in merged}
    stack = list(top.suites)
    while stack:
        suite = stack.pop(0)
        for key, value in suite.metadata.items():
            if _norm(key) not in seen:
                merged[str(key)] = str(value)
                seen.add(_norm(key))
        stack[0:0] = list(suite.suites)
    return merged


def _time_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return str(value)


# --------------------------------------------------------------------------- run JSON (history)


def run_to_dict(run: RunModel) -> dict[str, Any]:
    """The run as JSON-able data, without charts."""
    return {
        "format": RUN_FORMAT,
        "version": RECORD_VERSION,
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "metadata": dict(run.metadata),
        "started": run.started,
        "ended": run.ended,
        "tests": [
            {
                "id": t.id,
                "suite": t.suite,
                "name": t.name,
                "doc": t.doc,
                "status": t.status,
                "message": t.message,
                "tags": list(t.tags),
                "figures": [asdict(f) for f in t.figures],
            }
            for t in run.tests
        ],
    }


def run_from_dict(data: Any) -> RunModel:
    if not isinstance(data, dict) or not isinstance(data.get("tests"), list):
        raise ValueError("not an apex run JSON (no 'tests' list)")
    tests = []
    for item in data["tests"]:
        if not isinstance(item, dict):
            continue
        tests.append(
            TestEntry(
                id=str(item.get("id", "")),
                suite=str(item.get("suite", "")),
                name=str(item.get("name", "")),
                doc=str(item.get("doc", "")),
                status=str(item.get("status", "")),
                message=str(item.get("message", "")),
                tags=[str(t) for t in item.get("tags") or []],
                figures=[_figure_from_dict(f) for f in item.get("figures") or [] if isinstance(f, dict)],
                charts=[],
            )
        )
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    return RunModel(
        metadata={str(k): str(v) for k, v in metadata.items()},
        started=str(data.get("started") or ""),
        ended=str(data.get("ended") or ""),
        tests=tests,
    )


def load_run_json(path: str | Path) -> RunModel:
    """A :class:`RunModel` (no charts) from a run JSON written by :func:`write_summary`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    try:
        return run_from_dict(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def load_previous(path: str | Path) -> RunModel:
    """An earlier run from its ``output.xml`` or its run JSON (told apart by content)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with path.open("rb") as source:
        head = source.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"{"):
        return load_run_json(path)
    return load_output_xml(path)


def _figure_from_dict(data: dict[str, Any]) -> Figure:
    """A Figure from JSON, tolerant of missing/extra fields and odd types."""
    known = {f.name for f in fields(Figure)}
    values = {k: v for k, v in data.items() if k in known}
    key = str(values.get("key") or values.get("label") or "")
    label = str(values.get("label") or key)
    value = _number_or_none(values.get("value"))
    unit = str(values.get("unit") or "")
    display = str(values.get("display") or "")
    if not display and value is not None:
        display = f"{value} {unit}".strip()
    samples = values.get("samples")
    return Figure(
        key=key,
        label=label,
        value=value,
        unit=unit,
        display=display,
        operator=str(values.get("operator") or "").strip(),
        threshold=_number_or_none(values.get("threshold")),
        threshold_display=str(values.get("threshold_display") or ""),
        verdict=str(values.get("verdict") or "").upper(),
        reason=str(values.get("reason") or ""),
        samples=int(samples) if isinstance(samples, (int, float)) and not isinstance(samples, bool) else None,
        ci_display=str(values.get("ci_display") or ""),
        source=str(values.get("source") or "server"),
    )


def _number_or_none(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------- comparison

#: Smallest move worth flagging, by unit: noise on tiny numbers isn't a regression.
_FLOORS = {"s": 0.005, "ms": 5.0, "ratio": 0.02, "%": 2.0}
_COUNT_UNITS = {
    "count", "counts", "violations", "violation", "runs", "messages", "msgs", "msg", "frames",
    "connections", "errors", "events", "duplicates", "gaps", "lost",
}  # fmt: skip


def noise_floor(unit: str) -> float:
    """The absolute change below which a figure in ``unit`` is never flagged."""
    unit = (unit or "").strip().lower()
    if unit in _FLOORS:
        return _FLOORS[unit]
    if unit in _COUNT_UNITS:
        return 1.0
    return 0.0


@dataclass
class Change:
    """One thing that moved since the previous run."""

    kind: str  # "regression" or "improvement"
    suite: str
    test: str
    test_id: str
    figure: str  # the figure's label, or "" for the test's verdict
    was: str
    now: str
    change: str  # "+38%", "passed -> failed"
    why: str


@dataclass
class FigureChange:
    previous: Figure
    text: str  # "+38% (was 9.1 ms)"
    kind: str  # "regression", "improvement" or ""


@dataclass
class Comparison:
    previous: RunModel
    changes: list[Change]
    figures: dict[tuple[str, str, str], FigureChange]
    verdicts: dict[tuple[str, str], str]  # (suite, test) -> previous verdict
    new_tests: int
    gone_tests: int

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.kind == "regression"]

    @property
    def improvements(self) -> list[Change]:
        return [c for c in self.changes if c.kind == "improvement"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _percent(was: float, now: float) -> str:
    if now == was:
        return "unchanged"
    if was == 0:
        return "up from 0" if now > was else "down from 0"
    pct = (now - was) / abs(was) * 100
    return f"{pct:+.1f}%" if abs(pct) < 10 else f"{pct:+.0f}%"


def figure_movement(previous: Figure, current: Figure, tolerance: float) -> str:
    """``regression``, ``improvement`` or "" for a figure present in two runs.

    Direction from the operator (``<``/``<=``: lower is better; ``>``/``>=``: higher is
    better; ``==``: closer to the threshold is better); flagged when it moved more than
    ``tolerance`` (relative to the earlier value) and more than the unit's noise floor.
    """
    was, now, op = previous.value, current.value, current.operator or previous.operator
    if not (_is_number(was) and _is_number(now)) or op not in ("<", "<=", ">", ">=", "=="):
        return ""
    if op == "==":
        target = current.threshold if _is_number(current.threshold) else previous.threshold
        if _is_number(target):
            worse = abs(now - target) - abs(was - target)
            base = abs(was - target)
        else:
            worse, base = abs(now - was), 0.0
    else:
        worse = (now - was) if op in ("<", "<=") else (was - now)
        base = abs(was)
    amount = abs(worse)
    if amount == 0 or amount <= noise_floor(current.unit or previous.unit):
        return ""
    if base != 0 and amount / base <= tolerance:
        return ""
    return "regression" if worse > 0 else "improvement"


def compare_runs(current: RunModel, previous: RunModel, tolerance: float = 0.5) -> Comparison:
    """Every change between ``previous`` and ``current``, matching tests by suite and name."""
    before = {(t.suite, t.name): t for t in reversed(previous.tests)}
    now_keys = {(t.suite, t.name) for t in current.tests}
    changes: list[Change] = []
    figures: dict[tuple[str, str, str], FigureChange] = {}
    verdicts: dict[tuple[str, str], str] = {}
    new_tests = 0
    for test in current.tests:
        old = before.get((test.suite, test.name))
        if old is None:
            new_tests += 1
            continue
        was_verdict, now_verdict = old.verdict, test.verdict
        verdicts[(test.suite, test.name)] = was_verdict
        if was_verdict == PASSED and now_verdict in (FAILED, INCONCLUSIVE):
            changes.append(
                Change("regression", test.suite, test.name, test.id, "", was_verdict, now_verdict,
                       f"{was_verdict} \u2192 {now_verdict}", f"was {was_verdict}, now {now_verdict}")
            )  # fmt: skip
        elif was_verdict == FAILED and now_verdict == PASSED:
            changes.append(
                Change("improvement", test.suite, test.name, test.id, "", was_verdict, now_verdict,
                       f"{was_verdict} \u2192 {now_verdict}", f"was {was_verdict}, now {now_verdict}")
            )  # fmt: skip
        old_figures: dict[str, Figure] = {}
        for figure in old.figures:
            old_figures.setdefault(figure.key, figure)
        seen: set[str] = set()
        for figure in test.figures:
            if figure.key in seen or figure.key not in old_figures:
                continue
            seen.add(figure.key)
            prev = old_figures[figure.key]
            kind = figure_movement(prev, figure, tolerance)
            why = f"{'worse' if kind == 'regression' else 'better'} by more than {tolerance:.0%}"
            if prev.verdict == "PASS" and figure.verdict in ("FAIL", "INCONCLUSIVE"):
                kind, why = "regression", f"now {figure.verdict.lower()} against its threshold" + (
                    f"; {why}" if kind == "regression" else ""
                )
            elif prev.verdict == "FAIL" and figure.verdict == "PASS" and kind != "regression":
                kind, why = "improvement", "now meets its threshold"
            if _is_number(prev.value) and _is_number(figure.value):
                moved = _percent(prev.value, figure.value)
            else:
                moved = "changed" if prev.display != figure.display else "unchanged"
            figures[(test.suite, test.name, figure.key)] = FigureChange(prev, f"{moved} (was {prev.display})", kind)
            if kind:
                changes.append(
                    Change(kind, test.suite, test.name, test.id, figure.label, prev.display, figure.display, moved, why)
                )
    gone = sum(1 for key in {(t.suite, t.name) for t in previous.tests} if key not in now_keys)
    return Comparison(previous, changes, figures, verdicts, new_tests, gone)


# --------------------------------------------------------------------------- rendering

_COLOURS = {PASSED: "#1a7f37", FAILED: "#cf222e", INCONCLUSIVE: "#9a6700", SKIPPED: "#57606a"}
_WORDS = {PASSED: "PASSED", FAILED: "FAILED", INCONCLUSIVE: "INCONCLUSIVE", SKIPPED: "SKIPPED"}
_FIGURE_WORDS = {"PASS": (PASSED, "met"), "FAIL": (FAILED, "missed"), "INCONCLUSIVE": (INCONCLUSIVE, "inconclusive")}
_OPERATOR_WORDS = {"<=": "at most", "<": "below", ">=": "at least", ">": "above", "==": "exactly"}
_KNOWN_METADATA = ("Target", "Dialect", "Faults", "Proxy", "Library version")

_CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f2328;margin:0 auto;
max-width:1200px;padding:16px 24px;line-height:1.4;font-size:14px;-webkit-print-color-adjust:exact;
print-color-adjust:exact}
h1{font-size:28px;margin:4px 0 8px}
h2{font-size:20px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
.verdict{padding:12px 16px;border-radius:6px;color:#fff}
.verdict.passed{background:#1a7f37;color:#fff}.verdict.failed{background:#cf222e;color:#fff}
.verdict.inconclusive{background:#9a6700;color:#fff}
.target{font-size:20px;margin:12px 0 4px}
.target b{font-size:22px}
.mock{display:inline-block;border:2px solid #9a6700;color:#9a6700;padding:0 6px;border-radius:4px;
font-size:13px;font-weight:bold;margin-left:8px;vertical-align:middle}
.note{color:#57606a}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}
dl.meta dt{font-weight:bold}dl.meta dd{margin:0}
.box{border:2px solid #d0d7de;border-radius:6px;padding:8px 14px;margin:16px 0;break-inside:avoid}
.box.bad{border-color:#cf222e}.box.good{border-color:#1a7f37}.box h2{border:0;margin:4px 0}
table{border-collapse:collapse;width:100%}
th,td{border:1px solid #d0d7de;padding:6px 8px;vertical-align:top;text-align:left}
th{background:#f6f8fa}
tr{break-inside:avoid}
td.v{font-weight:bold;white-space:nowrap;width:1%}td.g{width:35%}
.w{font-weight:bold}
.passed{color:#1a7f37}.failed{color:#cf222e}.inconclusive{color:#9a6700}.skipped{color:#57606a}
td.v.passed{background:#dafbe1}td.v.failed{background:#ffebe9}td.v.inconclusive{background:#fff8c5}
td.v.skipped{background:#f6f8fa}
table.figs{width:100%;margin:0}table.figs td,table.figs th{border:0;border-bottom:1px solid #eaeef2;padding:2px 6px}
table.figs th{background:none;font-weight:normal;color:#57606a;font-size:12px}
.num{text-align:right;white-space:nowrap}
.small{font-size:12px;color:#57606a}
.reason{margin-top:4px}
.regression{color:#cf222e;font-weight:bold}.improvement{color:#1a7f37}
figure{margin:8px 0 16px;break-inside:avoid}figcaption{font-weight:bold;margin-bottom:4px}
svg.apex-chart{max-width:100%;height:auto}
.charts{display:flex;flex-wrap:wrap;gap:16px}.charts figure{flex:1 1 480px;min-width:0}
@media print{body{max-width:none;padding:0;font-size:11px}a{color:inherit}h2{break-after:avoid}}
"""


def _e(value: Any) -> str:
    return escape(str(value if value is not None else ""), quote=True)


def _norm(key: str) -> str:
    return re.sub(r"[\s_]+", "", str(key)).lower()


def _meta(metadata: dict[str, str], name: str) -> str:
    wanted = _norm(name)
    for key, value in metadata.items():
        if _norm(key) == wanted:
            return str(value)
    return ""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def overall(run: RunModel) -> tuple[str, str]:
    """``(css class, one-line verdict in words)`` of the run."""
    counts = {v: 0 for v in (PASSED, FAILED, INCONCLUSIVE, SKIPPED)}
    for test in run.tests:
        counts[test.verdict] += 1
    total = len(run.tests)
    extra = []
    if counts[INCONCLUSIVE]:
        extra.append(f"{counts[INCONCLUSIVE]} inconclusive")
    if counts[SKIPPED]:
        extra.append(f"{counts[SKIPPED]} skipped")
    tail = (", " + ", ".join(extra)) if extra else ""
    if total == 0:
        return INCONCLUSIVE, "No guarantees were checked"
    if counts[FAILED]:
        word = "guarantee" if total == 1 else "guarantees"
        return FAILED, f"{counts[FAILED]} of {total} {word} broken{tail}"
    if extra:
        return INCONCLUSIVE, f"{counts[PASSED]} of {_plural(total, 'guarantee')} kept{tail}"
    if total == 1:
        return PASSED, "The 1 guarantee checked was kept"
    return PASSED, f"All {total} guarantees kept"


def verdict_line(run: RunModel) -> str:
    """The one-line overall verdict, naming the target."""
    target = _meta(run.metadata, "Target") or "target not recorded"
    dialect = _meta(run.metadata, "Dialect")
    return f"{overall(run)[1]} (target: {target}" + (f", dialect: {dialect})" if dialect else ")")


def is_mock_target(target: str) -> bool:
    text = target.lower()
    return "mock" in text or "127.0.0.1" in text or "localhost" in text


def _first_sentence(doc: str) -> str:
    paragraph = re.split(r"\n\s*\n", (doc or "").strip(), maxsplit=1)[0]
    paragraph = re.sub(r"\s+", " ", paragraph).strip()
    for match in re.finditer(r"[.!?](?=\s|$)", paragraph):
        before = paragraph[: match.start()].rsplit(" ", 1)[-1].lower()
        if before in ("e.g", "i.e", "etc", "vs", "approx", "cf") or re.fullmatch(r"[a-z]", before):
            continue
        return paragraph[: match.end()]
    return paragraph


def _safe_chart(markup: str) -> str | None:
    markup = (markup or "").strip()
    start = _SVG_START.match(markup)
    if not markup.startswith("<svg") or start is None or not _CHART_CLASS.search(start.group(0)):
        return None
    if _UNSAFE_SVG.search(markup):
        return None
    return markup


def _anchor(test_id: str, suite: str, name: str) -> str:
    """The row's ``id``: Robot's test id (as in log.html), else one made of suite and name."""
    ident = re.sub(r"[^A-Za-z0-9_.:-]", "-", test_id or "")
    return ident or "test-" + re.sub(r"[^A-Za-z0-9]+", "-", f"{suite}-{name}").strip("-").lower()


def _threshold_text(figure: Figure) -> str:
    if not figure.operator:
        return ""
    shown = figure.threshold_display or ("" if figure.threshold is None else str(figure.threshold))
    words = _OPERATOR_WORDS.get(figure.operator, figure.operator)
    return f"{words} {shown}".strip()


def _figure_rows(test: TestEntry, comparison: Comparison | None) -> str:
    headline = [f for f in test.figures if f.operator and f.source == "server"]
    others = [f for f in test.figures if f not in headline]
    parts = []
    if headline:
        head = "<tr><th>figure</th><th class='num'>measured</th><th class='num'>promised</th><th>result</th>"
        head += "<th>since last run</th></tr>" if comparison else "</tr>"
        rows = []
        for figure in headline:
            measured = f"<span class='w'>{_e(figure.display)}</span>"
            detail = []
            if figure.samples is not None:
                detail.append(f"{figure.samples:,} samples")
            if figure.ci_display:
                detail.append(figure.ci_display)
            if detail:
                measured += f"<br><span class='small'>{_e('; '.join(detail))}</span>"
            css, word = _FIGURE_WORDS.get(figure.verdict, ("", figure.verdict.lower() or "recorded"))
            result = f"<span class='w {css}'>{_e(word)}</span>"
            if figure.reason and figure.verdict != "PASS":
                result += f"<br><span class='small'>{_e(figure.reason)}</span>"
            row = (
                f"<tr><td>{_e(figure.label)}</td><td class='num'>{measured}</td>"
                f"<td class='num' title='{_e(figure.operator)}'>{_e(_threshold_text(figure))}</td><td>{result}</td>"
            )
            if comparison:
                change = comparison.figures.get((test.suite, test.name, figure.key))
                if change is None:
                    row += "<td class='small'>new</td>"
                else:
                    flag = {"regression": " <span class='regression'>REGRESSION</span>",
                            "improvement": " <span class='improvement'>better</span>"}.get(change.kind, "")  # fmt: skip
                    row += f"<td class='{change.kind}'>{_e(change.text)}{flag}</td>"
            rows.append(row + "</tr>")
        parts.append(f"<table class='figs'>{head}{''.join(rows)}</table>")
    if others:
        items = []
        for figure in others:
            who = "load generator: " if figure.source == "generator" else ""
            text = f"{who}{figure.label} {figure.display}"
            if figure.operator:
                text += f" ({_threshold_text(figure)}"
                text += f", {figure.verdict.lower()})" if figure.verdict else ")"
            items.append(_e(text))
        parts.append(f"<div class='small'>Also recorded: {'; '.join(items)}</div>")
    if not parts:
        parts.append("<span class='small'>No figures recorded.</span>")
    return "".join(parts)


def _test_row(test: TestEntry, comparison: Comparison | None, log_name: str) -> str:
    verdict = test.verdict
    anchor = _anchor(test.id, test.suite, test.name)
    guarantee = f"<div class='w'>{_e(test.name)}</div>"
    sentence = _first_sentence(test.doc)
    if sentence:
        guarantee += f"<div>{_e(sentence)}</div>"
    if verdict != PASSED:
        reason = reason_text(test.message)
        if verdict == INCONCLUSIVE:
            reason = re.sub(r"^\s*inconclusive:\s*", "", reason, flags=re.IGNORECASE)
        if reason:
            label = {FAILED: "Why it failed", INCONCLUSIVE: "Why inconclusive", SKIPPED: "Why skipped"}[verdict]
            guarantee += f"<div class='reason'><span class='w {verdict}'>{label}:</span> {_e(reason)}</div>"
    if comparison:
        was = comparison.verdicts.get((test.suite, test.name))
        if was is None:
            guarantee += "<div class='small'>Not in the last run.</div>"
        elif was != verdict:
            css = "regression" if was == PASSED else ("improvement" if verdict == PASSED else "")
            guarantee += f"<div class='small {css}'>Last run: {_e(was)}</div>"
    link = f"{log_name}#{test.id}" if test.id else log_name
    guarantee += f"<div class='small'><a href='{_e(link)}'>details in the log</a></div>"
    return (
        f"<tr id='{_e(anchor)}'><td class='v {verdict}'>{_WORDS[verdict]}</td>"
        f"<td class='g'>{guarantee}</td><td>{_figure_rows(test, comparison)}</td></tr>"
    )


def _changes_box(comparison: Comparison | None, run: RunModel) -> str:
    if comparison is None:
        return (
            "<div class='box'><h2>Changes since the last run</h2><p>No earlier run to compare with "
            "(run again with the same output directory to compare).</p></div>"
        )
    previous = comparison.previous
    when = _shown_time(previous.started) if previous.started else "at an unknown time"
    target, dialect = _meta(previous.metadata, "Target"), _meta(previous.metadata, "Dialect")
    about = f"Compared with the run started {when}" + (f" against {target}" if target else "")
    about += f" ({dialect})" if dialect else ""
    warn = ""
    if (target, dialect) != (_meta(run.metadata, "Target"), _meta(run.metadata, "Dialect")):
        warn = " <span class='w inconclusive'>Note: that run had a different target or dialect.</span>"
    notes = []
    if comparison.new_tests:
        notes.append(f"{_plural(comparison.new_tests, 'guarantee')} not in the last run")
    if comparison.gone_tests:
        notes.append(f"{_plural(comparison.gone_tests, 'guarantee')} of the last run not run this time")
    note = f"<p class='small'>{_e('; '.join(notes))}.</p>" if notes else ""
    regressions, improvements = comparison.regressions, comparison.improvements
    if regressions:
        title = f"Regressions since the last run ({len(regressions)})"
        body = _changes_table(regressions, "regression")
        css = "bad"
    else:
        title, body, css = "No regressions since the last run", "", "good"
    if improvements:
        body += f"<h3>Improvements ({len(improvements)})</h3>" + _changes_table(improvements, "improvement")
    return (
        f"<div class='box {css}' id='regressions'><h2>{_e(title)}</h2>"
        f"<p class='small'>{_e(about)}.{warn} A figure is flagged when it moved the wrong way by more than "
        f"the tolerance (relative) and more than its noise floor.</p>{body}{note}</div>"
    )


def _changes_table(changes: list[Change], css: str) -> str:
    rows = []
    for change in changes:
        figure = change.figure or "verdict"
        anchor = _anchor(change.test_id, change.suite, change.test)
        rows.append(
            f"<tr><td>{_e(change.suite)}</td><td><a href='#{_e(anchor)}'>{_e(change.test)}</a></td>"
            f"<td>{_e(figure)}</td><td class='num'>{_e(change.was)} \u2192 {_e(change.now)}</td>"
            f"<td class='{css}'>{_e(change.change)}</td><td class='small'>{_e(change.why)}</td></tr>"
        )
    head = "<tr><th>suite</th><th>guarantee</th><th>figure</th><th>was \u2192 now</th><th>change</th><th>why</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _charts_section(run: RunModel) -> str:
    order = {FAILED: 0, INCONCLUSIVE: 1, PASSED: 2, SKIPPED: 3}
    ranked = sorted(enumerate(run.tests), key=lambda item: (order[item[1].verdict], item[0]))
    blocks = []
    for _, test in ranked:
        charts = [(title, svg) for title, svg in ((t, _safe_chart(m)) for t, m in test.charts) if svg][:2]
        if not charts:
            continue
        figures = "".join(
            f"<figure><figcaption>{_e(title or 'Chart')}</figcaption>{svg}</figure>" for title, svg in charts
        )
        verdict = test.verdict
        anchor = _anchor(test.id, test.suite, test.name)
        blocks.append(
            f"<h3><span class='w {verdict}'>{_WORDS[verdict]}</span> {_e(test.suite)}: "
            f"<a href='#{_e(anchor)}'>{_e(test.name)}</a></h3><div class='charts'>{figures}</div>"
        )
    if not blocks:
        return ""
    return "<h2 id='charts'>Charts that matter</h2>" + "".join(blocks)


#: Metadata the page does not repeat (a link to this very page, for log.html and report.html;
#: which pabot process ran a suite, a fact of that suite and not of the run).
_NOT_SHOWN = {"runsummary", "pabotprocess"}


def _header(run: RunModel) -> str:
    css, line = overall(run)
    target = _meta(run.metadata, "Target")
    dialect = _meta(run.metadata, "Dialect")
    target_html = f"<b>{_e(target)}</b>" if target else "<b class='inconclusive'>not recorded</b>"
    if target and is_mock_target(target):
        target_html += "<span class='mock'>MOCK, not a deployed platform</span>"
    dialect_html = f"<b>{_e(dialect)}</b>" if dialect else "<b class='inconclusive'>not recorded</b>"
    rows = []
    for name in _KNOWN_METADATA[2:]:
        value = _meta(run.metadata, name)
        rows.append(f"<dt>{_e(name)}</dt><dd>{_e(value) if value else '<span class=note>none recorded</span>'}</dd>")
    known = {_norm(k) for k in _KNOWN_METADATA}
    for key, value in run.metadata.items():
        if _norm(key) not in known and _norm(key) not in _NOT_SHOWN:
            rows.append(f"<dt>{_e(key)}</dt><dd>{_e(value)}</dd>")
    rows.append(f"<dt>Started</dt><dd>{_e(_shown_time(run.started))}</dd>")
    rows.append(f"<dt>Ended</dt><dd>{_e(_shown_time(run.ended))}{_e(_duration(run.started, run.ended))}</dd>")
    return (
        f"<h1 class='verdict {css}'>{_e(line)}</h1>"
        f"<div class='target'>Target: {target_html} &nbsp; Dialect: {dialect_html}</div>"
        f"<dl class='meta'>{''.join(rows)}</dl>"
    )


def _shown_time(text: str) -> str:
    """A time to the second for people (the stored one keeps its precision)."""
    value = _parse_time(text)
    if value is None:
        return text or "unknown"
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _duration(started: str, ended: str) -> str:
    a, b = _parse_time(started), _parse_time(ended)
    if a is None or b is None or b < a:
        return ""
    seconds = int((b - a).total_seconds())
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours} h {minutes} min" if hours else (f"{minutes} min {seconds} s" if minutes else f"{seconds} s")
    return f" (took {text})"


def render_summary(
    run: RunModel, *, previous: RunModel | None = None, tolerance: float = 0.5, log_name: str = "log.html"
) -> str:
    """The self-contained summary page (HTML) of ``run``, compared with ``previous`` if given."""
    comparison = compare_runs(run, previous, tolerance) if previous is not None else None
    target = _meta(run.metadata, "Target") or "target not recorded"
    title = f"Apex acceptance: {overall(run)[1]} \u2014 {target}"
    suites: dict[str, list[TestEntry]] = {}
    for test in run.tests:
        suites.setdefault(test.suite, []).append(test)
    tables = []
    for suite, tests in suites.items():
        kept = sum(1 for t in tests if t.verdict == PASSED)
        rows = "".join(_test_row(test, comparison, log_name) for test in tests)
        tables.append(
            f"<h2>{_e(suite or 'Tests')} <span class='small'>{kept} of {len(tests)} kept</span></h2>"
            "<table><tr><th>result</th><th>guarantee</th><th>measured vs promised</th></tr>"
            f"{rows}</table>"
        )
    if not tables:
        tables.append("<p>No tests in this run.</p>")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"{_header(run)}{_changes_box(comparison, run)}{''.join(tables)}{_charts_section(run)}"
        f"<p class='small'>Generated by apex-summary. Full details: <a href='{_e(log_name)}'>{_e(log_name)}</a>.</p>"
        "</body></html>\n"
    )


# --------------------------------------------------------------------------- files


def _parse_time(text: str) -> datetime | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
        for pattern in ("%Y%m%d %H:%M:%S.%f", "%Y%m%d %H:%M:%S"):
            try:
                value = datetime.strptime(text, pattern)
                break
            except ValueError:
                continue
    if value is None:
        return None
    return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone().replace(tzinfo=None)


def _history_candidates(folder: Path, exclude: Path | None) -> list[tuple[Path, RunModel, float]]:
    """Each run saved in ``folder``, with its file's mtime.

    Other processes may be saving runs meanwhile (pabot, or two runs sharing an output
    folder): a run is written to a hidden temporary file and renamed into place (see
    :func:`_write_atomic`), which ``*.json`` does not match; a file that is gone or not (yet)
    valid JSON is skipped, never an error.
    """
    found = []
    for path in sorted(folder.glob("*.json")):
        if path.name.startswith(".") or (exclude is not None and path.resolve() == exclude.resolve()):
            continue
        try:
            found.append((path, load_run_json(path), path.stat().st_mtime))
        except (OSError, ValueError):
            continue
    return found


def find_previous(output_dir: Path, run: RunModel, exclude: Path | None = None) -> RunModel | None:
    """The newest run saved under ``output_dir/apex-runs`` that started before ``run``.

    A run against the same target and dialect is preferred; one that started at the same
    time as ``run`` (the same run saved again) is never chosen.
    """
    folder = Path(output_dir) / HISTORY_DIR
    if not folder.is_dir():
        return None
    now = _parse_time(run.started)
    candidates = []
    for path, earlier, mtime in _history_candidates(folder, exclude):
        if run.started and earlier.started == run.started:
            continue
        when = _parse_time(earlier.started)
        if now is not None and when is not None and when >= now:
            continue
        stamp = when or datetime.fromtimestamp(mtime)
        candidates.append((stamp, path.name, earlier))
    if not candidates:
        return None
    same = (_meta(run.metadata, "Target"), _meta(run.metadata, "Dialect"))
    matching = [c for c in candidates if (_meta(c[2].metadata, "Target"), _meta(c[2].metadata, "Dialect")) == same]
    return max(matching or candidates, key=lambda c: (c[0], c[1]))[2]


def save_run(output_dir: Path, run: RunModel) -> Path:
    """Write ``run`` (no charts) to ``output_dir/apex-runs/<start>-<pid>-<random>.json``; return the path.

    The same run saved again (same start time) replaces its earlier file. Processes saving
    runs into the same folder at once never clash: each run gets a file name of its own and
    is written atomically (readers see the whole file or none).
    """
    folder = Path(output_dir) / HISTORY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    started = _parse_time(run.started)
    stamp = (started or datetime.now(timezone.utc).replace(tzinfo=None)).strftime("%Y%m%dT%H%M%S")
    target = None
    if run.started:
        for path, earlier, _ in _history_candidates(folder, None):
            if earlier.started == run.started:
                target = path
                break
    target = target or folder / f"{stamp}-{os.getpid()}-{secrets.token_hex(3)}.json"
    _write_atomic(target, json.dumps(run_to_dict(run), indent=1, ensure_ascii=False))
    return target


def _write_atomic(path: Path, text: str) -> None:
    """Write ``path`` whole or not at all: a hidden temporary file of this writer, then a rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_summary(
    output_dir: str | Path,
    run: RunModel,
    *,
    previous: RunModel | None = None,
    tolerance: float = 0.5,
    keep_history: bool = True,
) -> Path:
    """Write ``output_dir/summary.html`` and return its path.

    With ``keep_history``, the run is saved under ``output_dir/apex-runs/`` and, when
    ``previous`` is None, the newest earlier run saved there is compared with.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if keep_history:
        saved = save_run(output_dir, run)
        if previous is None:
            previous = find_previous(output_dir, run, exclude=saved)
    path = output_dir / "summary.html"
    _write_atomic(path, render_summary(run, previous=previous, tolerance=tolerance))
    return path


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="apex-summary", description=__doc__.split("\n")[0])
    parser.add_argument(
        "output_xml", nargs="?", type=Path, default=Path("results/output.xml"),
        help="Robot Framework output.xml (default: results/output.xml)",
    )  # fmt: skip
    parser.add_argument(
        "--output-dir", type=Path, default=None, help="where summary.html goes (default: the xml's folder)"
    )
    parser.add_argument(
        "--previous", type=Path, default=None, help="an earlier output.xml or apex-runs/*.json to compare with"
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.5, help="relative move flagged as a regression (default: 0.5)"
    )
    parser.add_argument(
        "--no-history", action="store_true", help="don't save this run under apex-runs/ nor read earlier ones"
    )
    args = parser.parse_args(argv)
    if args.tolerance < 0 or not math.isfinite(args.tolerance):
        print(f"apex-summary: error: --tolerance must be 0 or more, not {args.tolerance}", file=sys.stderr)
        return 2
    try:
        run = load_output_xml(args.output_xml)
        previous = load_previous(args.previous) if args.previous is not None else None
        output_dir = args.output_dir if args.output_dir is not None else args.output_xml.resolve().parent
        path = write_summary(
            output_dir, run, previous=previous, tolerance=args.tolerance, keep_history=not args.no_history
        )
    except (OSError, ValueError) as error:
        text = str(error) if isinstance(error, ValueError) or not getattr(error, "filename", None) else (
            f"{error.filename}: {error.strerror or error}"
        )
        print(f"apex-summary: error: {text}", file=sys.stderr)
        return 2
    print(path)
    print(verdict_line(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())

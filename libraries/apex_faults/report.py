"""Write the fault matrix as ``matrix.json``, ``matrix.md`` and ``matrix.html``.

The three files say the same: one table per suite (rows are fault modes, columns the suite's
scenarios), each row's verdict and problems, and the failing check of every failure.

Cells and verdicts are words, never emoji or symbols a default font may lack (the reports are
plain ASCII but for quoted messages and fragments): a cell says ``pass``, ``failed as expected``, ``fail:
unexpected``, ``fail: wrong reason``, ``pass: missed!``, ``inconclusive``, ``skip``, ``not run``
or ``n/a`` (:func:`mark`), and the HTML page adds a background colour read the way a
stakeholder reads it: a guarded scenario failing under its fault is expected (calm blue), a
caught row good news (green), missed, wrong-reason, gap and a red baseline bad news (red),
collateral amber, inconclusive grey-amber (:data:`VERDICT_TEXT`, :func:`verdict_text`).

A failure is shown by its failing check (:func:`apex_faults.runner.headline`): for Robot's
``Several failures occurred:`` the first numbered failure, with ``(+N more)``; for a guarded
scenario, the failure that carries the expected message.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalogue import Suite, fragment_matches
from .runner import (
    BASELINE_FAILED,
    CAUGHT,
    COLLATERAL,
    FAIL,
    GAP,
    GREEN,
    INCONCLUSIVE,
    MISSED,
    NA,
    NOT_RUN,
    PASS,
    RED,
    SKIP,
    WRONG_REASON,
    CellResult,
    Matrix,
    RowResult,
    headline,
)

TITLE = "Fault matrix"


def title(matrix: Matrix) -> str:
    """The report's title and heading, naming the wire protocol the runs spoke: ``Fault matrix (netra dialect)``."""
    return f"{TITLE} ({matrix.dialect} dialect)"

LEGEND = (
    "Each row runs the suites under one fault mode: of the built-in mock, or of the fault proxy every "
    "connection goes through. `none` and `proxy` are the no-fault baselines: every scenario must pass "
    "(a skip is shown, not a failure); such a row is **green** when they do and **red** when a scenario "
    "fails. In a fault row failing is the point: a fault is **caught** (good news: the suites detect it) "
    "when every scenario guarding its guarantee fails with the expected message and nothing else fails; "
    "**caught+collateral** when other scenarios fail too; **missed** when a guarding scenario does not "
    "fail; **wrong-reason** when it fails with another message; **gap** when no scenario fails at all; "
    "**inconclusive** when a scenario that decides the row could not be judged (the load generator fell "
    "behind its schedule, say) even after one re-run: a guarded scenario then is not caught and a "
    "baseline not green; **n/a** when it needs the built-in mock and the target is another server. "
    "Missed, wrong-reason, gap and a red baseline are the bad news."
)


@dataclass(frozen=True)
class CellKind:
    """One kind of cell: its CSS class, its words, its colour's name and what it means."""

    css: str
    words: str
    colour: str
    meaning: str


#: Every kind of cell, as the legend lists them.
CELL_KINDS = (
    CellKind("pass", "pass", "green", "the scenario passed"),
    CellKind("expected", "failed as expected", "blue",
             "a scenario guarding this fault failed with the expected message: the fault was detected (good)"),
    CellKind("missed", "pass: missed!", "red",
             "a scenario guarding this fault did not fail (also `skip: missed!` and `not run: missed!`)"),
    CellKind("wrong", "fail: wrong reason", "red",
             "a scenario guarding this fault failed, but without the expected message"),
    CellKind("failed", "fail: unexpected", "red", "in a baseline: a scenario failed although there was no fault"),
    CellKind("collateral", "fail: unexpected", "amber",
             "in a fault row: a scenario that does not guard this fault failed too (collateral)"),
    CellKind("inconclusive", "inconclusive", "grey-amber",
             "neither passed nor failed: the run could not judge it, also when re-run once"),
    CellKind("skip", "skip", "grey", "skipped (the target lacks an operation, say)"),
    CellKind("notrun", "not run", "grey", "not part of this row's run"),
    CellKind("na", "n/a", "grey", "not applicable: needs the built-in mock"),
)  # fmt: skip
KINDS = {kind.css: kind for kind in CELL_KINDS}

#: A row's verdict in words: what it says to a stakeholder (inconclusive adds its reason).
VERDICT_TEXT = {
    GREEN: "green (no fault: every scenario passed)",
    RED: "red (no fault, yet a scenario failed)",
    CAUGHT: "caught (good: the suites detect this fault)",
    COLLATERAL: "caught+collateral (detected, but other scenarios failed too)",
    MISSED: "missed (bad: a guarding scenario did not fail)",
    WRONG_REASON: "wrong-reason (bad: a guarding scenario failed for another reason)",
    GAP: "gap (bad: no scenario noticed this fault)",
    INCONCLUSIVE: "inconclusive (not judged)",
    NA: "n/a (needs the built-in mock)",
}
#: How a verdict reads: good news, bad news, a warning, unsure or neutral (its colour).
VERDICT_TONE = {
    GREEN: "good",
    CAUGHT: "good",
    RED: "bad",
    MISSED: "bad",
    WRONG_REASON: "bad",
    GAP: "bad",
    COLLATERAL: "warn",
    INCONCLUSIVE: "unsure",
    NA: "neutral",
}
#: How long an inconclusive row's reason may be in its verdict's words.
REASON_CHARS = 90


def verdict_text(row: RowResult) -> str:
    """The row's verdict in words (:data:`VERDICT_TEXT`), with what made it so where that varies.

    A red baseline whose runs broke without a failed scenario says so; a green one with skips
    says they were skipped; an inconclusive row names its reason (:func:`inconclusive_reason`).
    """
    kinds = {p.kind for p in row.problems}
    if row.verdict == RED and BASELINE_FAILED not in kinds:
        return "red (no fault, yet a run timed out or crashed)"
    if row.verdict == GREEN and any(r.outcome(t).status == SKIP for r in row.cells for t in r.cell.suite.tests):
        return "green (no fault: every scenario passed or was skipped)"
    if row.verdict == INCONCLUSIVE:
        return f"inconclusive (not judged: {inconclusive_reason(row)})"
    return VERDICT_TEXT.get(row.verdict, row.verdict)


def inconclusive_reason(row: RowResult) -> str:
    """Why the row could not be judged, in a few words: ``the load generator fell behind its schedule``.

    The first deciding inconclusive test's message (a guarded one, or any in a baseline), without
    ``Inconclusive:`` and cut at its first parenthesis, colon or semicolon; ``(re-run once)``
    when it was re-run.
    """
    for result in row.cells:
        for test in result.cell.suite.tests:
            outcome = result.outcome(test)
            if not outcome.inconclusive or not (row.fault.is_baseline or test in result.cell.expected):
                continue
            text = headline(outcome.message).removeprefix("Inconclusive:").strip()
            short = re.split(r" \(|: |; ", text, maxsplit=1)[0].rstrip(".").strip() or "the run could not judge it"
            if len(short) > REASON_CHARS:
                short = short[: REASON_CHARS - 3].rstrip() + "..."
            rerun = " (re-run once)" if result.rerun is not None and test in result.rerun.tests else ""
            return f"{short}{rerun}"
    return "a deciding scenario could not be judged"


# --------------------------------------------------------------------------- cell marks


@dataclass(frozen=True)
class Mark:
    """How one (row, test) cell is shown: its words, a CSS class (:data:`CELL_KINDS`), and a tooltip."""

    words: str
    css: str
    tooltip: str = ""


_MISSED_WORDS = {PASS: "pass: missed!", SKIP: "skip: missed!", NOT_RUN: "not run: missed!"}
_PLAIN = {PASS: ("pass", "pass"), SKIP: ("skip", "skip"), NOT_RUN: ("not run", "notrun")}


def mark(result: CellResult, test: str) -> Mark:
    """The mark of ``test`` in ``result``'s cell, judged against the row's expectation."""
    outcome = result.outcome(test)
    if outcome.status == NA:
        return Mark("n/a", "na", "needs the built-in mock")
    fragment = result.cell.expected.get(test)
    if outcome.inconclusive:
        rerun = " (re-run once, still inconclusive)" if result.rerun and test in result.rerun.tests else ""
        return Mark("inconclusive", "inconclusive", f"inconclusive{rerun}: {outcome.first_line}")
    if fragment is not None:
        if outcome.status != FAIL:
            how = outcome.status.lower() + (f" ({outcome.first_line})" if outcome.first_line else "")
            return Mark(_MISSED_WORDS[outcome.status], "missed", f"missed: must fail ({fragment}) but: {how}")
        if fragment_matches(fragment, outcome.message):
            return Mark("failed as expected", "expected", f"failed as expected: {shown_failure(result, test)}")
        return Mark("fail: wrong reason", "wrong", f"wrong reason (expected: {fragment}): {outcome.first_line}")
    if outcome.status == FAIL:
        if result.cell.row.is_baseline:
            return Mark("fail: unexpected", "failed", f"failed without a fault: {outcome.first_line}")
        return Mark("fail: unexpected", "collateral", f"failed, not guarded by this fault: {outcome.first_line}")
    words, css = _PLAIN[outcome.status]
    return Mark(words, css, outcome.first_line)


def shown_failure(result: CellResult, test: str) -> str:
    """The failing check to show for ``test``: for a guarded test the one with its expected message."""
    return headline(result.outcome(test).message, result.cell.expected.get(test))


# --------------------------------------------------------------------------- summary


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def summary_line(matrix: Matrix) -> str:
    """``23 fault modes, 23 caught, 0 gaps; no-fault runs green``."""
    counts = Counter(row.verdict for row in matrix.faults)
    parts = [_plural(len(matrix.faults), "fault mode"), f"{counts[CAUGHT]} caught"]
    optional = ((COLLATERAL, "caught+collateral"), (MISSED, "missed"), (WRONG_REASON, "wrong-reason"))
    parts += [f"{counts[verdict]} {label}" for verdict, label in optional if counts[verdict]]
    parts.append(_plural(counts[GAP], "gap"))
    if counts[INCONCLUSIVE]:
        parts.append(f"{counts[INCONCLUSIVE]} inconclusive")
    if counts[NA]:
        parts.append(f"{counts[NA]} n/a (needs the built-in mock)")
    return ", ".join(parts) + f"; no-fault runs {baselines_state(matrix)}"


def baselines_state(matrix: Matrix) -> str:
    """``green``, ``red``, or ``inconclusive`` (no baseline red, one could not be judged)."""
    verdicts = {row.verdict for row in matrix.baselines}
    if verdicts <= {GREEN}:
        return GREEN
    return INCONCLUSIVE if verdicts <= {GREEN, INCONCLUSIVE} else "red"


def reruns(matrix: Matrix) -> list[tuple[RowResult, CellResult]]:
    """Every cell whose inconclusive tests were re-run, in row order."""
    return [(row, result) for row in matrix.rows for result in row.cells if result.rerun is not None]


def rerun_text(result: CellResult) -> str:
    """``suite 3: re-ran 2 inconclusive test(s) once (3.6, 3.10): 1 still inconclusive``."""
    rerun = result.rerun
    assert rerun is not None
    suite = result.cell.suite
    labels = ", ".join(suite.label(t) if t in suite.tests else t for t in rerun.tests)
    still = sum(1 for t in rerun.tests if result.outcome(t).inconclusive)
    after = f"robot failed: {rerun.error.splitlines()[0]}" if rerun.error else (
        f"{still} still inconclusive" if still else "none inconclusive any more"
    )
    return f"suite {suite.key}: re-ran {_plural(len(rerun.tests), 'inconclusive test')} once ({labels}): {after}"


def _relative(path: Path | None, matrix: Matrix) -> str | None:
    if path is None:
        return None
    if matrix.output is None:
        return path.as_posix()
    return Path(os.path.relpath(path, matrix.output)).as_posix()


def _rows_in(matrix: Matrix, suite: Suite) -> list[tuple[RowResult, CellResult]]:
    return [(row, cell) for row in matrix.rows if (cell := row.cell(suite.key)) is not None]


def _failures(row: RowResult) -> list[tuple[Suite, str, str]]:
    """(suite, test, failing check) for every failed test of the row, in suite order."""
    found = []
    for result in row.cells:
        for test in result.cell.suite.tests:
            outcome = result.outcome(test)
            if outcome.status == FAIL:
                found.append((result.cell.suite, test, shown_failure(result, test)))
    return found


# --------------------------------------------------------------------------- json


def to_json(matrix: Matrix) -> dict[str, Any]:
    """Everything in the matrix as plain JSON data."""
    return {
        "title": title(matrix),
        "dialect": matrix.dialect,
        "command": list(matrix.command),
        "started": matrix.started.isoformat(timespec="seconds") if matrix.started else None,
        "exit_code": matrix.exit_code,
        "strict": matrix.strict,
        "summary": {
            "line": summary_line(matrix),
            "fault_modes": len(matrix.faults),
            "verdicts": dict(Counter(row.verdict for row in matrix.rows)),
            "baselines_green": all(row.verdict == GREEN for row in matrix.baselines),
            "reruns": len(reruns(matrix)),
        },
        "suites": [_suite_json(suite) for suite in matrix.suites],
        "rows": [_row_json(row, matrix) for row in matrix.rows],
        "not_selected": list(matrix.not_selected),
    }


def _suite_json(suite: Suite) -> dict[str, Any]:
    return {
        "key": suite.key,
        "file": suite.file,
        "title": suite.title,
        "exclusive": suite.exclusive,
        "tests": [{"label": suite.label(test), "name": test} for test in suite.tests],
    }


def _row_json(row: RowResult, matrix: Matrix) -> dict[str, Any]:
    return {
        "name": row.fault.name,
        "layer": row.fault.layer,
        "breaks": row.fault.breaks,
        "baseline": row.fault.is_baseline,
        "guarded": row.guarded,
        "verdict": row.verdict,
        "verdict_text": verdict_text(row),
        "verdict_tone": VERDICT_TONE.get(row.verdict, "neutral"),
        "problems": [{"kind": p.kind, "text": p.text} for p in row.problems],
        "cells": {result.cell.suite.key: _cell_json(result) for result in row.cells},
        "runs": {result.cell.suite.key: _run_json(result, matrix) for result in row.cells},
    }


def _cell_json(result: CellResult) -> dict[str, Any]:
    expected = result.cell.expected
    return {test: _test_json(result, test, expected.get(test)) for test in result.cell.suite.tests}


def _test_json(result: CellResult, test: str, fragment: str | None) -> dict[str, Any]:
    outcome = result.outcome(test)
    shown = mark(result, test)
    return {
        "status": outcome.status,
        "inconclusive": outcome.inconclusive,
        "rerun": bool(result.rerun and test in result.rerun.tests),
        "message_first_line": shown_failure(result, test),
        "failures": max(1, len(outcome.checks)) if outcome.status == FAIL else 0,  # failing checks in its message
        "expected_fragment": fragment,
        "shown": shown.words,
        "kind": shown.css,
    }


def _run_json(result: CellResult, matrix: Matrix) -> dict[str, Any]:
    return {
        "ran": result.cell.runnable,
        "tests": list(result.cell.tests) or None,
        "seconds": round(result.seconds, 3),
        "returncode": result.returncode,
        "output_dir": _relative(result.output_dir, matrix),
        "variables": dict(result.variables),
        "error": result.error,
        "rerun": None if result.rerun is None else {
            "tests": list(result.rerun.tests),
            "output_dir": _relative(result.rerun.output_dir, matrix),
            "seconds": round(result.rerun.seconds, 3),
            "returncode": result.rerun.returncode,
            "error": result.rerun.error,
            "still_inconclusive": [t for t in result.rerun.tests if result.outcome(t).inconclusive],
        },
    }


# --------------------------------------------------------------------------- markdown


def to_markdown(matrix: Matrix) -> str:
    """The matrix as Markdown: legend, summary, one table per suite, problems, failures."""
    lines = [f"# {title(matrix)}", "", LEGEND, "", *_md_cell_legend(), f"**{summary_line(matrix)}**", ""]
    lines += _md_run_info(matrix)
    for suite in matrix.suites:
        lines += _md_suite(matrix, suite)
    lines += _md_problems(matrix)
    lines += _md_reruns(matrix)
    lines += _md_failures(matrix)
    return "\n".join(lines).rstrip() + "\n"


def _md_cell_legend() -> list[str]:
    lines = ["Cells (in the HTML page on a background of the colour named):", ""]
    lines += [f"- `{kind.words}` ({kind.colour}): {kind.meaning}" for kind in CELL_KINDS]
    return [*lines, ""]


def _md_run_info(matrix: Matrix) -> list[str]:
    started = matrix.started.isoformat(timespec="seconds") if matrix.started else "?"
    lines = [f"Started {started}; exit code {matrix.exit_code}; command: `{' '.join(matrix.command)}`", ""]
    if matrix.not_selected:
        lines += [f"Not run (none of their suites selected): {', '.join(matrix.not_selected)}.", ""]
    return lines


def _md_suite(matrix: Matrix, suite: Suite) -> list[str]:
    rows = _rows_in(matrix, suite)
    if not rows:
        return []
    labels = [suite.label(test) for test in suite.tests]
    lines = [f"## Suite {suite.key}: {suite.title} (`{suite.file}`)", ""]
    lines.append("| fault | " + " | ".join(labels) + " |")
    lines.append("|---|" + "---|" * len(labels))
    for row, result in rows:
        marks = " | ".join(mark(result, test).words for test in suite.tests)
        lines.append(f"| `{row.fault.name}`: {verdict_text(row)} | {marks} |")
    lines.append("")
    lines += [f"- **{label}** {test}" for label, test in zip(labels, suite.tests, strict=True)]
    return [*lines, ""]


def _md_problems(matrix: Matrix) -> list[str]:
    rows = [row for row in matrix.rows if row.problems]
    if not rows:
        return []
    lines = ["## Problems", ""]
    for row in rows:
        lines += [f"- `{row.fault.name}` ({row.verdict}): {problem.text}" for problem in row.problems]
    return [*lines, ""]


def _md_reruns(matrix: Matrix) -> list[str]:
    found = reruns(matrix)
    if not found:
        return []
    lines = ["## Re-runs", "", "Inconclusive tests are run once more (only they, same fault); their second outcome counts.", ""]
    lines += [f"- `{row.fault.name}` ({row.verdict}): {rerun_text(result)}" for row, result in found]
    return [*lines, ""]


def _md_failures(matrix: Matrix) -> list[str]:
    lines = ["## Failures", ""]
    for row in matrix.rows:
        failures = _failures(row)
        if failures:
            lines += [f"### `{row.fault.name}` ({row.verdict})", ""]
            lines += [f"- **{s.label(test)}** {test}: {first}" for s, test, first in failures]
            lines.append("")
    if len(lines) == 2:
        lines += ["No test failed.", ""]
    return lines


# --------------------------------------------------------------------------- html

#: Background and text colour of each cell kind and verdict tone: good green, expected calm blue,
#: bad red, collateral amber, unsure grey-amber, neutral grey (dark text on light ground).
COLOURS = {
    "green": ("#d3f0d3", "#14532d"),
    "blue": ("#dbe7f5", "#1e3a5f"),
    "red": ("#f7c4c4", "#7f0000"),
    "amber": ("#ffdf9e", "#633d00"),
    "grey-amber": ("#ebe4cf", "#574519"),
    "grey": ("#ececec", "#555555"),
}
TONE_COLOURS = {"good": "green", "bad": "red", "warn": "amber", "unsure": "grey-amber", "neutral": "grey"}


def _css() -> str:
    """One rule per cell kind (``.expected``) and verdict tone (``.tone-good``): its colours."""
    named = [(f".{kind.css}", kind.colour) for kind in CELL_KINDS]
    named += [(f".tone-{tone}", colour) for tone, colour in TONE_COLOURS.items()]
    return "\n".join(f"{selector} {{ background: {COLOURS[c][0]}; color: {COLOURS[c][1]}; }}" for selector, c in named)


CSS = (
    """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: center; }
td.row { text-align: left; min-width: 14em; max-width: 30em; }
td.cell { font-size: 0.85em; }
td a { text-decoration: none; color: inherit; display: block; }
.missed, .wrong, .failed { font-weight: bold; }
.missed { outline: 2px solid #c00; outline-offset: -2px; }
.verdict { display: inline-block; margin-top: 2px; padding: 1px 6px; border-radius: 3px; }
.tone-bad { font-weight: bold; }
table.legend td { text-align: left; }
.summary { font-size: 1.2em; font-weight: bold; }
code { background: #f4f4f4; padding: 0 3px; }
"""
    + _css()
    + "\n"
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def to_html(matrix: Matrix) -> str:
    """One self-contained page (inline CSS, no script) with the same content as the Markdown."""
    body = [f"<h1>{_e(title(matrix))}</h1>", f"<p>{_md_inline_to_html(LEGEND)}</p>", *_html_cell_legend()]
    body.append(f'<p class="summary">{_e(summary_line(matrix))}</p>')
    started = matrix.started.isoformat(timespec="seconds") if matrix.started else "?"
    body.append(
        f"<p>Started {_e(started)}; exit code {matrix.exit_code}; command: <code>{_e(' '.join(matrix.command))}</code></p>"
    )
    if matrix.not_selected:
        body.append(f"<p>Not run (none of their suites selected): {_e(', '.join(matrix.not_selected))}.</p>")
    for suite in matrix.suites:
        body += _html_suite(matrix, suite)
    body += _html_problems(matrix)
    body += _html_reruns(matrix)
    body += _html_failures(matrix)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title(matrix))}</title><style>{CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _md_inline_to_html(text: str) -> str:
    """The legend's ``**bold**`` and ```code``` as HTML (after escaping)."""
    out, parts = [], _e(text).split("**")
    for i, part in enumerate(parts):
        code = part.split("`")
        part = "".join(f"<code>{c}</code>" if j % 2 else c for j, c in enumerate(code))
        out.append(f"<b>{part}</b>" if i % 2 else part)
    return "".join(out)


def _html_cell_legend() -> list[str]:
    """The cell kinds as a table: each kind's words on its own colour, and what it means."""
    rows = [
        f'<tr><td class="cell {kind.css}">{_e(kind.words)}</td><td>{_md_inline_to_html(kind.meaning)}</td></tr>'
        for kind in CELL_KINDS
    ]
    return ['<table class="legend"><tr><th>cell</th><th>means</th></tr>', *rows, "</table>"]


def _html_verdict(row: RowResult) -> str:
    """The row's verdict in words, on the colour of its tone (good, bad, warn, unsure, neutral)."""
    tone = VERDICT_TONE.get(row.verdict, "neutral")
    return f'<span class="verdict {_verdict_css(row.verdict)} tone-{tone}">{_e(verdict_text(row))}</span>'


def _html_suite(matrix: Matrix, suite: Suite) -> list[str]:
    rows = _rows_in(matrix, suite)
    if not rows:
        return []
    head = "".join(f'<th title="{_e(test)}">{_e(suite.label(test))}</th>' for test in suite.tests)
    lines = [
        f"<h2>Suite {_e(suite.key)}: {_e(suite.title)} (<code>{_e(suite.file)}</code>)</h2>",
        f"<table><tr><th>fault</th>{head}</tr>",
    ]
    for row, result in rows:
        cells = "".join(_html_cell(matrix, result, test) for test in suite.tests)
        name = f'<td class="row"><code>{_e(row.fault.name)}</code><br>{_html_verdict(row)}</td>'
        lines.append(f"<tr>{name}{cells}</tr>")
    lines.append("</table><ul>")
    lines += [f"<li><b>{_e(suite.label(test))}</b> {_e(test)}</li>" for test in suite.tests]
    return [*lines, "</ul>"]


def _verdict_css(verdict: str) -> str:
    """A CSS class for a verdict: ``caught+collateral`` -> ``v-caught-collateral``, ``n/a`` -> ``v-na``."""
    return "v-" + verdict.replace("+", "-").replace("/", "")


def _html_cell(matrix: Matrix, result: CellResult, test: str) -> str:
    shown = mark(result, test)
    title = f' title="{_e(shown.tooltip)}"' if shown.tooltip else ""
    content = _e(shown.words)
    run_dir = _relative(result.output_dir, matrix)
    if result.rerun is not None and test in result.rerun.tests:
        run_dir = _relative(result.rerun.output_dir, matrix)
    if run_dir is not None and result.cell.runnable:
        anchor = result.outcome(test).id
        href = f"{run_dir}/log.html" + (f"#{anchor}" if anchor else "")
        content = f'<a href="{_e(href)}">{content}</a>'
    return f'<td class="cell {shown.css}"{title}>{content}</td>'


def _html_problems(matrix: Matrix) -> list[str]:
    rows = [row for row in matrix.rows if row.problems]
    if not rows:
        return []
    lines = ["<h2>Problems</h2>", "<ul>"]
    for row in rows:
        lines += [
            f"<li><code>{_e(row.fault.name)}</code> ({_e(row.verdict)}): {_e(problem.text)}</li>"
            for problem in row.problems
        ]
    return [*lines, "</ul>"]


def _html_reruns(matrix: Matrix) -> list[str]:
    found = reruns(matrix)
    if not found:
        return []
    lines = ["<h2>Re-runs</h2>", "<p>Inconclusive tests are run once more (only they, same fault); their second outcome counts.</p><ul>"]
    lines += [
        f"<li><code>{_e(row.fault.name)}</code> ({_e(row.verdict)}): {_e(rerun_text(result))}</li>" for row, result in found
    ]
    return [*lines, "</ul>"]


def _html_failures(matrix: Matrix) -> list[str]:
    lines = ["<h2>Failures</h2>"]
    for row in matrix.rows:
        failures = _failures(row)
        if failures:
            lines.append(f"<h3><code>{_e(row.fault.name)}</code> ({_e(row.verdict)})</h3><ul>")
            lines += [f"<li><b>{_e(s.label(t))}</b> {_e(t)}: {_e(first)}</li>" for s, t, first in failures]
            lines.append("</ul>")
    if len(lines) == 1:
        lines.append("<p>No test failed.</p>")
    return lines


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class Written:
    """The report's three files."""

    json: Path
    markdown: Path
    html: Path


def write_report(matrix: Matrix, output: Path) -> Written:
    """Write matrix.json, matrix.md and matrix.html under ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    written = Written(output / "matrix.json", output / "matrix.md", output / "matrix.html")
    written.json.write_text(json.dumps(to_json(matrix), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    written.markdown.write_text(to_markdown(matrix), encoding="utf-8")
    written.html.write_text(to_html(matrix), encoding="utf-8")
    return written

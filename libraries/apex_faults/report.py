"""Write the fault matrix as ``matrix.json``, ``matrix.md`` and ``matrix.html``.

The three files say the same: one table per suite (rows are fault modes, columns the suite's
scenarios), each row's verdict and problems, and the first line of every failure.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalogue import Suite, fragment_matches
from .runner import (
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
    SKIP,
    WRONG_REASON,
    CellResult,
    Matrix,
    RowResult,
)

TITLE = "Fault matrix"


def title(matrix: Matrix) -> str:
    """The report's title and heading, naming the wire protocol the runs spoke: ``Fault matrix (netra dialect)``."""
    return f"{TITLE} ({matrix.dialect} dialect)"

LEGEND = (
    "Each row runs the suites under one fault mode: of the built-in mock, or of the fault proxy every "
    "connection goes through. `none` and `proxy` are the no-fault baselines: every scenario must pass "
    "(a skip is shown, not a failure). A fault is **caught** when every scenario guarding its guarantee "
    "fails with the expected message and nothing else fails; **caught+collateral** when other scenarios "
    "fail too; **missed** when a guarding scenario does not fail; **wrong-reason** when it fails with "
    "another message; **gap** when no scenario fails at all; **n/a** when it needs the built-in mock and "
    "the target is another server; **inconclusive** when a scenario that decides the row could not be "
    "judged (the load generator fell behind its schedule, say) even after one re-run: a guarded "
    "scenario then is not caught and a baseline not green. Cells: ✅ passed, ❌ failed as guarded, ⚠️ "
    "failed but not expected (collateral, a baseline failure) or for the wrong reason, ❗ expected to "
    "fail but passed (or was skipped or did not run), ◐ inconclusive (neither passed nor failed), "
    "⏭ skipped, · not run, n/a not applicable."
)


# --------------------------------------------------------------------------- cell marks


@dataclass(frozen=True)
class Mark:
    """How one (row, test) cell is shown: a symbol, a CSS class, and a tooltip."""

    symbol: str
    css: str
    tooltip: str = ""


def mark(result: CellResult, test: str) -> Mark:
    """The mark of ``test`` in ``result``'s cell, judged against the row's expectation."""
    outcome = result.outcome(test)
    if outcome.status == NA:
        return Mark("n/a", "na", "needs the built-in mock")
    fragment = result.cell.expected.get(test)
    if outcome.inconclusive:
        rerun = " (re-run once, still inconclusive)" if result.rerun and test in result.rerun.tests else ""
        return Mark("◐", "inconclusive", f"inconclusive{rerun}: {outcome.first_line}")
    if fragment is not None:
        if outcome.status != FAIL:
            return Mark("❗", "missed", f"expected to fail ({fragment}) but: {outcome.status.lower()}")
        if fragment_matches(fragment, outcome.message):
            return Mark("❌", "guarded", outcome.first_line)
        return Mark("⚠️", "unexpected", f"wrong reason (expected: {fragment}): {outcome.first_line}")
    if outcome.status == FAIL:
        return Mark("⚠️", "unexpected", outcome.first_line)
    symbols = {PASS: ("✅", "pass"), SKIP: ("⏭", "skip"), NOT_RUN: ("·", "notrun")}
    symbol, css = symbols[outcome.status]
    return Mark(symbol, css, outcome.first_line)


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
    """(suite, test, first message line) for every failed test of the row, in suite order."""
    found = []
    for result in row.cells:
        for test in result.cell.suite.tests:
            outcome = result.outcome(test)
            if outcome.status == FAIL:
                found.append((result.cell.suite, test, outcome.first_line))
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
        "problems": [{"kind": p.kind, "text": p.text} for p in row.problems],
        "cells": {result.cell.suite.key: _cell_json(result) for result in row.cells},
        "runs": {result.cell.suite.key: _run_json(result, matrix) for result in row.cells},
    }


def _cell_json(result: CellResult) -> dict[str, Any]:
    expected = result.cell.expected
    return {
        test: {
            "status": (outcome := result.outcome(test)).status,
            "inconclusive": outcome.inconclusive,
            "rerun": bool(result.rerun and test in result.rerun.tests),
            "message_first_line": outcome.first_line,
            "expected_fragment": expected.get(test),
        }
        for test in result.cell.suite.tests
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
    lines = [f"# {title(matrix)}", "", LEGEND, "", f"**{summary_line(matrix)}**", ""]
    lines += _md_run_info(matrix)
    for suite in matrix.suites:
        lines += _md_suite(matrix, suite)
    lines += _md_problems(matrix)
    lines += _md_reruns(matrix)
    lines += _md_failures(matrix)
    return "\n".join(lines).rstrip() + "\n"


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
        marks = " | ".join(mark(result, test).symbol for test in suite.tests)
        lines.append(f"| `{row.fault.name}` ({row.verdict}) | {marks} |")
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

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: center; }
td.row { text-align: left; white-space: nowrap; }
td a { text-decoration: none; color: inherit; display: block; }
.pass { background: #d9f2d9; } .guarded { background: #f5c6c6; } .unexpected { background: #ffe0a3; }
.missed { background: #ffe0a3; font-weight: bold; outline: 2px solid #c00; }
.skip, .notrun, .na { background: #eee; color: #666; }
.inconclusive { background: #e3dcf5; color: #4b2a8c; font-weight: bold; }
.v-inconclusive { color: #5b2fa8; }
.v-green, .v-caught { color: #176c17; } .v-red, .v-missed, .v-wrong-reason, .v-gap { color: #b00; }
.v-caught-collateral { color: #a66300; } .v-na { color: #666; }
.summary { font-size: 1.2em; font-weight: bold; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def to_html(matrix: Matrix) -> str:
    """One self-contained page (inline CSS, no script) with the same content as the Markdown."""
    body = [f"<h1>{_e(title(matrix))}</h1>", f"<p>{_md_inline_to_html(LEGEND)}</p>"]
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
        name = f'<td class="row"><code>{_e(row.fault.name)}</code> <span class="{_verdict_css(row.verdict)}">{_e(row.verdict)}</span></td>'
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
    content = _e(shown.symbol)
    run_dir = _relative(result.output_dir, matrix)
    if result.rerun is not None and test in result.rerun.tests:
        run_dir = _relative(result.rerun.output_dir, matrix)
    if run_dir is not None and result.cell.runnable:
        anchor = result.outcome(test).id
        href = f"{run_dir}/log.html" + (f"#{anchor}" if anchor else "")
        content = f'<a href="{_e(href)}">{content}</a>'
    return f'<td class="{shown.css}"{title}>{content}</td>'


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

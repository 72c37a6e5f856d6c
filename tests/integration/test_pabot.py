"""``pabot --processes 2 suites/``: every suite in a robot process of its own, each with its own mock.

One pabot run (about the time of its longest suite, suite 3) feeds every check, then
``apex-summary`` builds the whole run's summary from pabot's merged output.xml:

- pabot exits 0 and its merged output.xml holds every test of every suite file, each passed
  (or inconclusive: the load generator could not keep its schedule on this machine, which a
  second suite running at the same time makes likelier; never failed);
- each suite ran in a robot process of its own, two at a time, and started its own mock: the
  suites that ran at the same time used different ports;
- every file the library wrote is in the output directory of the process that wrote it, once,
  whole, and the merged log.html links to it there; no process wrote a partial summary;
- the summary built from the merged output covers every suite.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from apex_faults.processes import kill_group, popen
from apex_faults.runner import INCONCLUSIVE_TAG, robot_environment
from robot.api import ExecutionResult, ResultVisitor
from robot.api import TestSuiteBuilder as SuiteBuilder  # not collected by pytest

from .robot_runs import ROOT

pytestmark = pytest.mark.suite

SUITES = ROOT / "suites"
#: Well above a sequential run of all four suites (about two minutes): a hung run, not a slow one.
TIMEOUT_S = 600
#: A link in a log message: href="..." (the output.xml keeps messages' HTML as text).
LINK = re.compile(r'\b(?:href|src)="([^"]*)"')


@dataclass
class PabotRun:
    returncode: int
    console: str
    work: Path  # pabot's working directory
    out: Path  # its --outputdir
    summary: subprocess.CompletedProcess[str]  # apex-summary on the merged output.xml


@pytest.fixture(scope="module")
def pabot_run(tmp_path_factory) -> PabotRun:
    work = tmp_path_factory.mktemp("pabot")
    out = work / "results"
    command = [
        sys.executable, "-m", "pabot.pabot", "--processes", "2",
        "--command", sys.executable, "-m", "robot", "--end-command",
        "--outputdir", str(out), str(SUITES),
    ]  # fmt: skip
    # pabot starts each robot in a session of its own: on a timeout, end them all by pid.
    process = popen(command, cwd=work, env=robot_environment(ROOT), stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        console, _ = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _kill_tree(process)
        pytest.fail(f"pabot did not finish in {TIMEOUT_S} s; it and its robots were killed")
    summary = subprocess.run(
        [sys.executable, "-m", "MessagingLibrary.summary", str(out / "output.xml")],
        capture_output=True, text=True, timeout=120, check=False, cwd=work, env=robot_environment(ROOT),
    )  # fmt: skip
    return PabotRun(process.returncode, console, work, out, summary)


def _kill_tree(process: subprocess.Popen[str]) -> None:
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    kill_group(process)
    for child in children:
        try:
            child.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    process.communicate()


# --------------------------------------------------------------------------- what the run left


def expected_tests() -> dict[str, list[str]]:
    """Each suite's tests, read from the suite files (as ``robot --dryrun suites/`` would list them)."""
    top = SuiteBuilder().build(str(SUITES))
    return {suite.name: [test.name for test in suite.tests] for suite in top.suites}


def merged(run: PabotRun):
    return ExecutionResult(str(run.out / "output.xml")).suite


class _Messages(ResultVisitor):
    def __init__(self) -> None:
        self.texts: list[str] = []

    def visit_message(self, message) -> None:
        self.texts.append(message.message)


def messages(suite) -> list[str]:
    collector = _Messages()
    suite.visit(collector)
    return collector.texts


@dataclass(frozen=True)
class Process:
    """One robot process of the run: pabot's item number, its pool slot, its output directory."""

    item: str
    pool: str
    folder: Path
    suite: str  # the one suite it ran


def processes(run: PabotRun) -> dict[str, Process]:
    """Each suite's process, from pabot's per-process folders: the argument file pabot gave
    robot (its pool slot) and the output.xml robot wrote there (the suite it ran)."""
    found = {}
    for folder in sorted(p for p in (run.out / "pabot_results").iterdir() if p.is_dir()):
        # robot_argfile.txt, or user_command_argfile.txt with pabot's --command
        argfiles = list(folder.glob("*argfile.txt"))
        assert len(argfiles) == 1, f"{folder}: {argfiles}"
        arguments = argfiles[0].read_text(encoding="utf-8")
        pool = re.search(r"^--variable PABOTEXECUTIONPOOLID:(\S+)$", arguments, re.M)
        assert pool, f"{folder}: no pool id in pabot's argument file"
        ran = [s for s in ExecutionResult(str(folder / "output.xml")).suite.suites if s.test_count]
        assert len(ran) == 1, f"{folder} ran {[s.name for s in ran]}, not one suite"
        suite = ran[0].name
        assert suite not in found, f"{suite} ran in {found[suite].folder.name} and in {folder.name}"
        found[suite] = Process(folder.name, pool.group(1), folder, suite)
    return found


def port(url: str) -> int:
    return urlsplit(url).port


def overlap(a, b) -> bool:
    return a.start_time < b.end_time and b.start_time < a.end_time


# --------------------------------------------------------------------------- checks


def test_pabot_runs_every_test_of_every_suite_and_merges_them(pabot_run):
    assert pabot_run.returncode == 0, pabot_run.console[-4000:]
    expected = expected_tests()
    top = merged(pabot_run)
    assert {s.name: [t.name for t in s.tests] for s in top.suites} == expected
    assert top.test_count == sum(len(tests) for tests in expected.values())
    wrong = {
        f"{s.name} / {t.name}": f"{t.status}: {t.message}"
        for s in top.suites for t in s.tests
        if t.status != "PASS" and not (t.status == "SKIP" and INCONCLUSIVE_TAG in t.tags)
    }  # fmt: skip
    assert not wrong, wrong


def test_each_suite_ran_in_a_process_of_its_own_with_its_own_mock(pabot_run):
    ran_in = processes(pabot_run)
    assert sorted(ran_in) == sorted(expected_tests()), "not every suite ran in a pabot process"
    assert {p.pool for p in ran_in.values()} == {"0", "1"}, "pabot did not use its two processes"
    suites = {s.name: s for s in merged(pabot_run).suites}
    urls = {}
    for name, suite in suites.items():
        process = ran_in[name]
        # The merged report says which process ran the suite, with a link to its files.
        assert suite.metadata["Pabot process"] == (
            f"pabot process {process.pool}, item {process.item}, "
            f"files in [pabot_results/{process.item}/|pabot_results/{process.item}/]"
        )
        # The suite's own mock: the URL its setup recorded is the one its mock log says it listened on.
        url = suite.metadata["Target URL"]
        started = [m for m in messages(suite.setup) if m.startswith("Mock server started at ")]
        assert len(started) == 1 and f"at {url} " in started[0], started
        first = (process.folder / "apex-mock-1.log").read_text(encoding="utf-8").splitlines()[0]
        assert json.loads(first.split(" apex_mock ", 1)[1])["port"] == port(url), first
        assert not (process.folder / "apex-mock-2.log").exists(), f"{name} started a second mock"
        urls[name] = url
    # Two processes at once, each with its own mock: suites that ran at the same time in
    # different processes used different ports (a later suite may get a freed port again).
    together = [
        (a, b) for a in suites for b in suites
        if a < b and ran_in[a].pool != ran_in[b].pool and overlap(suites[a], suites[b])
    ]  # fmt: skip
    assert together, "no two suites ran at the same time"
    for a, b in together:
        assert port(urls[a]) != port(urls[b]), f"{a} and {b} ran at the same time on one port: {urls[a]}"


def test_every_file_is_in_its_own_process_folder_once_whole_and_linked_from_the_merged_log(pabot_run):
    out = pabot_run.out
    expected = expected_tests()
    ran_in = processes(pabot_run)
    written = [p for p in (out / "pabot_results").rglob("*") if p.is_file()]
    linked = Counter()
    for suite in merged(pabot_run).suites:
        process = ran_in[suite.name]
        folder = f"pabot_results/{process.item}/"
        # Every file a message links to is in this suite's process folder, relative to the merged log.
        for text in messages(suite):
            for target in LINK.findall(text):
                if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:|#", target):
                    continue  # ws:// URLs, anchors inside a chart
                assert target.startswith(folder), f"{suite.name} links {target!r}, not into {folder}"
                assert (out / unescape(target)).is_file(), f"{suite.name} links {target!r}: no such file"
                linked[unescape(target)] += 1
        # metrics.jsonl: one line per test of this suite, each once, and nothing of another suite.
        lines = [json.loads(line) for line in (process.folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
        assert {line["suite"] for line in lines} == {f"Apex Acceptance.{suite.name}"}
        assert sorted(line["test"] for line in lines) == sorted(expected[suite.name])
        # history-<suite>.jsonl: written by this process alone (its events numbered 0, 1, 2, ...).
        histories = list(process.folder.glob("history-*.jsonl"))
        assert [h.name for h in histories] == [f"history-Apex_Acceptance.{suite.name.replace(' ', '_')}.jsonl"]
        events = [json.loads(line) for line in histories[0].read_text(encoding="utf-8").splitlines()]
        assert [e["i"] for e in events] == list(range(len(events)))
        # load/<run>-N.json: whole JSON of the run its name says.
        for path in (process.folder / "load").glob("*.json"):
            assert json.loads(path.read_text(encoding="utf-8"))["name"] == path.stem.rsplit("-", 1)[0], path
        # No partial summary, no partial history: the whole run's comes from the merged output.
        assert not (process.folder / "summary.html").exists()
        assert not (process.folder / "apex-runs").exists()
    # Each load and monitor file is linked once (from the test that wrote it), each history once.
    loads = [p for p in written if p.parent.name in ("load", "monitor") or p.name.startswith("history-")]
    assert loads and all(linked[p.relative_to(out).as_posix()] == 1 for p in loads), {
        p.relative_to(out).as_posix(): linked[p.relative_to(out).as_posix()] for p in loads
    }
    # One metrics.jsonl and one mock log per process, each in its process's folder.
    for name in ("metrics.jsonl", "apex-mock-1.log"):
        assert sorted(p.parent for p in written if p.name == name) == sorted(p.folder for p in ran_in.values()), name
    # pabot's own file is all that is left in its working directory.
    assert sorted(p.name for p in pabot_run.work.iterdir()) == [".pabotsuitenames", "results"]


def test_the_summary_built_from_the_merged_output_covers_every_suite(pabot_run):
    done = pabot_run.summary
    assert done.returncode == 0, done.stdout + done.stderr
    top = merged(pabot_run)
    page = (pabot_run.out / "summary.html").read_text(encoding="utf-8")
    for suite in top.suites:
        for test in suite.tests:
            assert f"log.html#{test.id}" in page, f"{suite.name} / {test.name} is not in summary.html"
    assert f"{top.test_count} guarantees" in done.stdout, done.stdout
    saved = list((pabot_run.out / "apex-runs").glob("*.json"))
    assert len(saved) == 1, saved
    run = json.loads(saved[0].read_text(encoding="utf-8"))
    assert Counter(t["suite"] for t in run["tests"]) == Counter(
        {name: len(tests) for name, tests in expected_tests().items()}
    )

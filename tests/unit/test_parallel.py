"""Under pabot: links from the merged log into a process's own folder, and a history safe for concurrent writers."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from MessagingLibrary.parallel import PabotProcess, pabot_process, rebase_links
from MessagingLibrary.summary import RunModel, TestEntry, _history_candidates, find_previous, save_run


class Variables:
    def __init__(self, **values):
        self.values = {f"${{{k}}}": v for k, v in values.items()}

    def get_variable_value(self, name):
        return self.values.get(name)


def test_pabot_process_is_none_without_pabot(tmp_path):
    assert pabot_process(Variables(), tmp_path) is None


def test_pabot_process_knows_its_folder_relative_to_the_merged_log(tmp_path):
    own = tmp_path / "results" / "pabot_results" / "3"
    process = pabot_process(Variables(PABOTQUEUEINDEX="3", PABOTEXECUTIONPOOLID="1"), own)
    assert process == PabotProcess("3", "1", own.resolve(), (tmp_path / "results").resolve())
    assert process.link_prefix == "pabot_results/3/"
    assert process.describe() == "pabot process 1, item 3, files in [pabot_results/3/|pabot_results/3/]"
    # not pabot's layout (an --outputdir of the user's own): no link is rebased
    elsewhere = pabot_process(Variables(PABOTQUEUEINDEX="0"), tmp_path / "mine")
    assert elsewhere.report_dir is None and elsewhere.link_prefix == ""


def test_links_to_the_process_files_are_rebased_and_nothing_else(tmp_path):
    (tmp_path / "load").mkdir()
    (tmp_path / "load" / "rate-100-1.json").write_text("{}")
    (tmp_path / "apex-mock-1.log").write_text("")
    message = (
        '<a href="load/rate-100-1.json">load/rate-100-1.json</a> '
        '<a href="apex-mock-1.log">log</a> '
        '<a href="ws://127.0.0.1:1/ws">ws</a> <use xlink:href="#clip-1"/> '
        '<a href="missing.json">gone</a> <a href="/abs/x">abs</a> <a href="../../up.html">up</a>'
    )
    rebased = rebase_links(message, "pabot_results/2/", tmp_path)
    assert rebased == (
        '<a href="pabot_results/2/load/rate-100-1.json">load/rate-100-1.json</a> '
        '<a href="pabot_results/2/apex-mock-1.log">log</a> '
        '<a href="ws://127.0.0.1:1/ws">ws</a> <use xlink:href="#clip-1"/> '
        '<a href="missing.json">gone</a> <a href="/abs/x">abs</a> <a href="../../up.html">up</a>'
    )
    assert rebase_links(rebased, "pabot_results/2/", tmp_path) == rebased  # only once
    assert rebase_links(message, "", tmp_path) == message


def _run(started: str, suite: str) -> RunModel:
    return RunModel({"Target": "built-in mock"}, started, started, [TestEntry(f"{suite}-t1", suite, "T", "", "PASS", "", [], [], [])])


def _save_many(folder: str, writer: int, count: int) -> None:
    for n in range(count):
        save_run(Path(folder), _run(f"2026-01-01 10:{writer:02d}:{n:02d}.000000", f"writer {writer}"))


def test_concurrent_processes_saving_runs_never_clash_and_readers_see_whole_files(tmp_path):
    writers, each = 4, 15
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_save_many, args=(str(tmp_path), w, each)) for w in range(writers)]
    for process in processes:
        process.start()
    seen_while_writing = 0
    while any(p.is_alive() for p in processes):
        # A reader meanwhile: never an error, never a half-written run.
        for _, run, _ in _history_candidates(tmp_path / "apex-runs", None):
            assert len(run.tests) == 1
            seen_while_writing += 1
        find_previous(tmp_path, _run("2027-01-01 00:00:00.000000", "reader"))
    for process in processes:
        process.join()
        assert process.exitcode == 0
    saved = list((tmp_path / "apex-runs").iterdir())
    assert len(saved) == writers * each, sorted(p.name for p in saved)  # no temporary file left, none lost
    runs = [run for _, run, _ in _history_candidates(tmp_path / "apex-runs", None)]
    assert sorted(r.started for r in runs) == sorted(
        f"2026-01-01 10:{w:02d}:{n:02d}.000000" for w in range(writers) for n in range(each)
    )

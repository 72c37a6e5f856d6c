"""Running under pabot (``pabot --processes N suites/``): which process this is, and where its files are.

pabot runs each suite (or test, with ``--testlevelsplit``) in a robot process of its own, with
its own output directory, ``<outputdir>/pabot_results/<item>/``, then merges their
``output.xml`` files into ``<outputdir>/output.xml``, ``log.html`` and ``report.html``. The
library writes every file into its own process's output directory, so two processes never
write the same file; what needs care is what points at those files from the merged log:

- a link the library logs (``load/x.json``, ``apex-mock-1.log``, ``history-S.jsonl``,
  ``monitor/resources-1.json``) is relative to the process's output directory, where no
  ``log.html`` is written; the merged ``log.html`` is two folders up. :func:`rebase_links`
  makes such a link relative to the merged log's folder (``pabot_results/3/load/x.json``);
- ``summary.html`` of one process would cover its suites only and link into a ``log.html``
  that is never written there; the whole run's summary is built from the merged output:
  ``apex-summary <outputdir>/output.xml``.

pabot says so with the variables it passes each process (``PABOTQUEUEINDEX``,
``PABOTEXECUTIONPOOLID``; see pabot's README).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

#: The folder under pabot's ``--outputdir`` that holds each process's output directory.
PABOT_RESULTS = "pabot_results"


@dataclass(frozen=True)
class PabotProcess:
    """This robot process as one item of a pabot run."""

    #: pabot's number for the item (suite or test) this process runs: 0, 1, 2, ...
    queue_index: str
    #: Which of pabot's ``--processes`` slots runs it: 0 .. N-1.
    pool_id: str
    #: This process's own output directory (``<outputdir>/pabot_results/<item>``).
    output_dir: Path
    #: Where pabot writes the merged output.xml, log.html and report.html; None when the
    #: output directory is not in pabot's usual layout (then no link is rebased).
    report_dir: Path | None

    @property
    def link_prefix(self) -> str:
        """This process's output directory relative to the merged log's folder, ``/``-separated,
        ending with ``/`` (``pabot_results/3/``); empty when that folder is not known."""
        if self.report_dir is None:
            return ""
        relative = Path(os.path.relpath(self.output_dir, self.report_dir)).as_posix()
        return "" if relative == "." else relative.rstrip("/") + "/"

    def describe(self) -> str:
        """One line for the suite's metadata: the slot, the item and (a link to) its files."""
        where = self.link_prefix
        files = f", files in [{where}|{where}]" if where else f", files in {self.output_dir}"
        return f"pabot process {self.pool_id}, item {self.queue_index}{files}"


def pabot_process(variables: Any, output_dir: Path) -> PabotProcess | None:
    """This process as pabot started it, or None when pabot did not start it.

    ``variables`` answers ``get_variable_value(name)`` (Robot's BuiltIn).
    """
    queue_index = variables.get_variable_value("${PABOTQUEUEINDEX}")
    if queue_index is None:
        return None
    pool_id = variables.get_variable_value("${PABOTEXECUTIONPOOLID}")
    output_dir = Path(output_dir).resolve()
    report_dir = next((p.parent for p in output_dir.parents if p.name == PABOT_RESULTS), None)
    return PabotProcess(str(queue_index), "?" if pool_id is None else str(pool_id), output_dir, report_dir)


#: ``href="..."`` / ``src="..."`` in an HTML log message.
_LINK = re.compile(r'\b(href|src)="([^"]*)"')
#: A link that is not relative to the output directory: a scheme (``ws:``, ``https:``,
#: ``javascript:``), an absolute path, a fragment, a query, or one already leaving the folder.
_NOT_RELATIVE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:|[/\\#?]|\.\./)")


def rebase_links(message: str, prefix: str, output_dir: Path) -> str:
    """``message`` with every link to a file under ``output_dir`` made relative to the merged log.

    Only links to files that exist in ``output_dir`` change (the library logs a link after
    writing its file), so a link to anything else is left as it is.
    """
    if not prefix or ("href=" not in message and "src=" not in message):
        return message

    def rebased(match: re.Match[str]) -> str:
        attribute, target = match.groups()
        if not target or _NOT_RELATIVE.match(target) or target.startswith(prefix):
            return match.group(0)
        path = unescape(target).split("#", 1)[0]
        if not path or not (output_dir / path).exists():
            return match.group(0)
        return f'{attribute}="{prefix}{target}"'

    return _LINK.sub(rebased, message)

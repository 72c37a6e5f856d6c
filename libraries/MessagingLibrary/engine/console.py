"""Progress lines on the console, safe from any thread.

Robot's log must only be written from the thread that runs the keywords; progress of a long run
comes from the loop thread, so it goes straight to the console Robot writes to (its original
standard output), never through ``robot.api.logger``.
"""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()


def console(line: str) -> None:
    """Write ``line`` to the console (the process's original standard output), whole."""
    stream = sys.__stdout__
    if stream is None:
        return
    with _lock:
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # a closed console must not break a load run

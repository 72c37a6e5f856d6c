"""Child processes that never outlive the process that started them.

Two guarantees, for every process the fault matrix (and its tests) start:

- **The child dies with its parent.** On Linux, :func:`die_with_parent` is a ``preexec_fn``
  that asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGTERM)``) to send the child SIGTERM when
  its parent goes, however the parent goes (SIGKILL, a crash, a CI timeout). The kernel fires
  that signal when the parent *thread* that forked the child ends, not the process, so
  :func:`popen` always forks from one long-lived thread of its own. A parent that died
  between the fork and the ``prctl`` is caught by comparing ``os.getppid()`` with the
  parent's pid: the child then exits at once. Elsewhere (macOS) ``die_with_parent`` only does
  that check.
- **A group is ended as a whole.** :func:`popen` starts the child in a session (process group)
  of its own; :func:`kill_group` sends the group SIGTERM, waits up to a grace period for every
  member to be gone, then SIGKILLs what is left and waits again.

Only the standard library is used, so that other packages (the library's mock starter,
``MessagingLibrary/engine/mock_process.py``) can import this module without the rest of
``apex_faults``::

    from apex_faults.processes import popen
    process = popen(command, stdout=subprocess.PIPE, text=True)  # instead of subprocess.Popen
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: How long a group gets between SIGTERM and SIGKILL.
KILL_GRACE_S = 10.0
#: How long to wait for the group to be gone after SIGKILL (the kernel needs a moment).
AFTER_KILL_S = 5.0
_POLL_S = 0.02

PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """libc's ``prctl``, looked up once in the parent (the child only calls it), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


_PRCTL = _load_prctl()


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get ``signum`` when its parent (thread) ends.

    Call it in the parent, just before the fork (it records the parent's pid)::

        subprocess.Popen(command, preexec_fn=die_with_parent(), start_new_session=True)

    Use it from a long-lived thread (see :func:`popen`): the signal fires when the thread
    that forked ends.
    """
    parent = os.getpid()
    prctl = _PRCTL

    def _in_child() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(128 + int(signum))

    return _in_child


# --------------------------------------------------------------------------- forking thread


class _Forker:
    """One long-lived daemon thread that does every fork, so PDEATHSIG means "the process died"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], queue.SimpleQueue[tuple[bool, Any]]]] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None

    def call(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the forking thread and return (or raise) what it did."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="apex-forker", daemon=True)
                self._thread.start()
        answer: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self._requests.put((function, answer))
        ok, value = answer.get()
        if ok:
            return value
        raise value

    def _serve(self) -> None:
        while True:
            function, answer = self._requests.get()
            try:
                answer.put((True, function()))
            except BaseException as error:  # noqa: BLE001 - handed back to the caller
                answer.put((False, error))


_FORKER = _Forker()


def popen(command: list[str] | tuple[str, ...], **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(command, **kwargs)`` in a session of its own, dying with this process.

    The fork happens on a long-lived thread of this module, with :func:`die_with_parent` as
    ``preexec_fn`` (an existing ``preexec_fn`` runs after it). ``start_new_session`` defaults
    to True: :func:`kill_group` can then end the child and everything it starts.
    """
    kwargs.setdefault("start_new_session", True)
    extra = kwargs.pop("preexec_fn", None)

    def _start() -> subprocess.Popen[Any]:
        dies = die_with_parent()

        def _preexec() -> None:
            dies()
            if extra is not None:
                extra()

        return subprocess.Popen(list(command), preexec_fn=_preexec, **kwargs)

    return _FORKER.call(_start)


# --------------------------------------------------------------------------- ending a group


def group_members(pgid: int) -> list[int]:
    """The pids of the living (not zombie) processes of group ``pgid``.

    Read from ``/proc`` on Linux (a zombie nobody reaps must not count as alive); elsewhere,
    ``[pgid]`` while the group can still be signalled.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended while we looked
        fields = stat.rsplit(")", 1)[1].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def wait_group_gone(pgid: int, timeout: float, leader: subprocess.Popen[Any] | None = None) -> bool:
    """Poll until no living member of group ``pgid`` is left (reaping ``leader``); True if so."""
    deadline = time.monotonic() + timeout
    while True:
        if leader is not None:
            leader.poll()  # reap it, or it stays a zombie of ours
        if not group_members(pgid):
            if leader is not None:
                try:
                    leader.wait(1.0)  # it has exited (at most a zombie): this only reaps it
                except subprocess.TimeoutExpired:
                    pass
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)  # polling interval of a condition with a deadline


def signal_group(pgid: int, signum: int) -> None:
    """``killpg`` that does not mind a group already gone."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass  # gone already (PermissionError: only a zombie leader of another owner is left)


def kill_group(process: subprocess.Popen[Any], grace: float = KILL_GRACE_S) -> bool:
    """End the process group ``process`` leads and wait until it is gone; True when it is.

    SIGTERM to the whole group, up to ``grace`` s for every member to exit, then SIGKILL to
    what is left and up to :data:`AFTER_KILL_S` more. The leader is reaped.
    """
    pgid = process.pid
    signal_group(pgid, signal.SIGTERM)
    if wait_group_gone(pgid, grace, process):
        return True
    signal_group(pgid, signal.SIGKILL)
    return wait_group_gone(pgid, AFTER_KILL_S, process)


def kill_groups(processes: list[subprocess.Popen[Any]], grace: float = KILL_GRACE_S) -> None:
    """:func:`kill_group` for several groups at once: SIGTERM to all, one grace period, SIGKILL to all."""
    for process in processes:
        signal_group(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        wait_group_gone(process.pid, max(0.0, deadline - time.monotonic()), process)
    for process in processes:
        if group_members(process.pid):
            signal_group(process.pid, signal.SIGKILL)
    for process in processes:
        wait_group_gone(process.pid, AFTER_KILL_S, process)


__all__ = [
    "KILL_GRACE_S",
    "die_with_parent",
    "group_members",
    "kill_group",
    "kill_groups",
    "popen",
    "signal_group",
    "wait_group_gone",
]

"""Process helpers over /proc: liveness, identity checks and stopping by PID.

The lab's daemons are not our children once they daemonise, so nothing here
relies on ``wait()``: a process counts as gone once /proc says it is gone or a
zombie (PID 1 reaps it a little later).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")


def _stat_state(pid: int) -> str | None:
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # "pid (comm) S ...": comm may contain spaces and parentheses.
    return text.rsplit(")", 1)[1].split()[0]


def is_alive(pid: int | None) -> bool:
    """True if ``pid`` exists and is neither a zombie nor dead."""
    if not pid or pid <= 0:
        return False
    return _stat_state(pid) not in (None, "Z", "X", "x")


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def mount_namespace(pid: int | str) -> str:
    """``mnt:[4026532...]`` of ``pid`` ('' if unreadable, e.g. for a zombie)."""
    try:
        return os.readlink(PROC / str(pid) / "ns" / "mnt")
    except OSError:
        return ""


def own_mount_namespace() -> str:
    return mount_namespace("self")


def is_lab_process(pid: int | None, marker: str, mount_ns: str = "") -> bool:
    """``pid`` is alive, mentions ``marker`` (a path) on its command line and, when
    ``mount_ns`` is given, lives in that mount namespace: a guard against PID reuse."""
    if pid is None or not is_alive(pid):
        return False
    if not any(marker in part for part in cmdline(pid)):
        return False
    return not mount_ns or mount_namespace(pid) == mount_ns


def pids_in_mount_namespace(mount_ns: str) -> list[int]:
    """Every live process in ``mount_ns``; never the caller's own namespace."""
    if not mount_ns or mount_ns == own_mount_namespace():
        return []
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and is_alive(int(entry.name)):
            if mount_namespace(entry.name) == mount_ns:
                found.append(int(entry.name))
    return sorted(found)


def pids_seeing(directory: Path, mounted_at: str) -> list[int]:
    """Live processes for which ``mounted_at`` (e.g. ``/etc/libvirt``) is ``directory``:
    the members of a lab host's mount namespace, where the host's directory is
    bind-mounted there. Looked up through ``/proc/PID/root``, i.e. in each process's own
    mount namespace; unlike a namespace id, which the kernel may reuse, this cannot
    match a stranger."""
    try:
        wanted = directory.stat()
    except OSError:
        return []
    own = os.getpid()
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            seen = os.stat(f"{entry}/root{mounted_at}")
        except OSError:
            continue
        same = (seen.st_dev, seen.st_ino) == (wanted.st_dev, wanted.st_ino)
        if same and is_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def pids_mentioning(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker``."""
    own = os.getpid()
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit() and int(entry.name) != own and is_alive(int(entry.name)):
            if any(marker in part for part in cmdline(int(entry.name))):
                found.append(int(entry.name))
    return sorted(found)


def _signal(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until every PID is gone (or a zombie); return those still alive."""
    remaining = [pid for pid in pids if is_alive(pid)]
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        time.sleep(0.05)
        remaining = [pid for pid in remaining if is_alive(pid)]
    return remaining


def terminate(pids: Iterable[int], timeout: float = 15.0) -> list[int]:
    """SIGTERM, then SIGKILL after ``timeout``; return the PIDs that survived both."""
    targets = [pid for pid in pids if is_alive(pid)]
    if not targets:
        return []
    _signal(targets, signal.SIGTERM)
    survivors = wait_gone(targets, timeout)
    if survivors:
        _signal(survivors, signal.SIGKILL)
        survivors = wait_gone(survivors, 5.0)
    return survivors


def read_pid_file(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None

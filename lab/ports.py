"""Free TCP ports for lab hosts, disjoint across hosts *and* across labs.

Each lab host needs a libvirtd port and a block of migration ports. A port
that binds now may still be "taken" by another lab whose migration range is
idle, so every lab on the machine books its ports in one small registry
(``/run/xenweb-lab/ports.json``, flock-guarded) and skips what others booked.
A booking dies with its host: entries whose libvirtd is gone (or that never got
a PID within ``PENDING_GRACE_S``) are dropped by the next reader.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .procs import is_alive

REGISTRY_DIR = Path(os.environ.get("XENWEB_LAB_PORT_REGISTRY", "/run/xenweb-lab"))
MIGRATION_BLOCK = 16
PENDING_GRACE_S = 600.0
# libvirtd ports: near libvirt's own 16509, skipping its defaults 16509 (tcp) and 16514 (tls).
LIBVIRTD_PORTS = range(16520, 17000)
# Migration blocks: below the kernel's ephemeral range when possible, so that
# outgoing connections never grab them.
MIGRATION_PORTS = range(20000, 32768 - MIGRATION_BLOCK, MIGRATION_BLOCK)


class NoFreePort(RuntimeError):
    pass


def port_is_free(port: int, address: str = "127.0.0.1") -> bool:
    """Whether a listener could bind ``port`` now. SO_REUSEADDR as libvirtd and QEMU use
    it: connections lingering in TIME_WAIT do not make a port busy, a listener does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Booking:
    port: int
    migration_ports: tuple[int, int]


def _entry_key(root: Path, name: str) -> str:
    return f"{root.resolve()}#{name}"


def _is_stale(entry: dict[str, Any], now: float) -> bool:
    pid = entry.get("pid")
    if pid:
        return not is_alive(int(pid))
    return now - float(entry.get("booked_at", 0)) > PENDING_GRACE_S


@contextmanager
def _registry() -> Iterator[dict[str, dict[str, Any]]]:
    REGISTRY_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = REGISTRY_DIR / "ports.json"
    with open(REGISTRY_DIR / "ports.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                entries = json.loads(path.read_text())
            except (OSError, ValueError):
                entries = {}
            now = time.time()
            entries = {k: v for k, v in entries.items() if not _is_stale(v, now)}
            yield entries
            tmp = path.with_name(".ports.json.tmp")
            tmp.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _taken(entries: dict[str, dict[str, Any]]) -> set[int]:
    taken: set[int] = set()
    for entry in entries.values():
        taken.add(int(entry["port"]))
        low, high = entry["migration_ports"]
        taken.update(range(int(low), int(high) + 1))
    return taken


def _pick_port(prefer: int, taken: set[int]) -> int:
    candidates = [prefer] if prefer else []
    candidates += [port for port in LIBVIRTD_PORTS if port != prefer]
    for port in candidates:
        if port not in taken and port_is_free(port):
            return port
    raise NoFreePort(
        f"no free TCP port for libvirtd in {LIBVIRTD_PORTS.start}-{LIBVIRTD_PORTS.stop - 1}"
    )


def _pick_block(prefer: tuple[int, int], taken: set[int]) -> tuple[int, int]:
    starts = [prefer[0]] if prefer[0] else []
    starts += [start for start in MIGRATION_PORTS if start != prefer[0]]
    for start in starts:
        block = range(start, start + MIGRATION_BLOCK)
        if taken.isdisjoint(block) and all(port_is_free(port) for port in block):
            return (block.start, block.stop - 1)
    raise NoFreePort(
        f"no free block of {MIGRATION_BLOCK} migration ports in "
        f"{MIGRATION_PORTS.start}-{MIGRATION_PORTS.stop + MIGRATION_BLOCK - 1}"
    )


def book(
    root: Path, name: str, *, prefer_port: int = 0, prefer_range: tuple[int, int] = (0, 0)
) -> Booking:
    """Book a libvirtd port and a migration port block for host ``name`` of lab ``root``.

    The previous ports are preferred, so that a restarted host keeps its URI.
    """
    key = _entry_key(root, name)
    with _registry() as entries:
        entries.pop(key, None)
        taken = _taken(entries)
        port = _pick_port(prefer_port, taken)
        block = _pick_block(prefer_range, taken | {port})
        entries[key] = {"port": port, "migration_ports": list(block), "booked_at": time.time()}
    return Booking(port=port, migration_ports=block)


def confirm(root: Path, name: str, pid: int) -> None:
    """Tie a booking to the libvirtd that uses it: it lives as long as that PID."""
    key = _entry_key(root, name)
    with _registry() as entries:
        if key in entries:
            entries[key]["pid"] = pid


def release(root: Path, name: str) -> None:
    with _registry() as entries:
        entries.pop(_entry_key(root, name), None)

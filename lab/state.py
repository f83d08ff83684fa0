"""The lab's on-disk state: one JSON file per lab root, guarded by a lock file.

A lab root (``lab_dir()`` by default) holds::

    lab.json            hosts, ports, pids (this module)
    lab.lock            flock: one lab_up/lab_down at a time per root
    shared/             the "NFS" directory every host mounts as pool lab-shared
    hosts/<name>/       etc, run, lib, log, cache, images, overlay of one host
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "lab.json"
LOCK_FILE = "lab.lock"
STATE_VERSION = 1


@dataclass(frozen=True)
class LabHost:
    """One lab host as the outside world sees it."""

    name: str
    uri: str
    port: int
    pid: int | None
    hostname: str
    host_uuid: str
    root: Path
    running: bool
    migration_address: str = ""
    migration_ports: tuple[int, int] = (0, 0)
    virtlogd_pid: int | None = None


@dataclass
class HostRecord:
    """What the lab remembers about one host between calls (and processes)."""

    name: str
    index: int
    host_uuid: str
    port: int = 0
    migration_ports: tuple[int, int] = (0, 0)
    pid: int | None = None
    virtlogd_pid: int | None = None
    mount_ns: str = ""
    hide_kvm: bool = True
    started_at: float = 0.0

    @property
    def hostname(self) -> str:
        return f"xenweb-{self.name}"

    @property
    def uri(self) -> str:
        return f"qemu+tcp://127.0.0.1:{self.port}/system"

    @property
    def migration_address(self) -> str:
        # libvirt refuses 127.0.0.1 and "localhost*" as migration_host/address
        # ("must not be the address of the local machine"); any other loopback
        # address works, and one per host keeps each host's listener apart.
        return f"127.1.0.{self.index}"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["migration_ports"] = list(self.migration_ports)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostRecord:
        known = {name for name in cls.__dataclass_fields__}
        values = {key: value for key, value in data.items() if key in known}
        values["migration_ports"] = tuple(values.get("migration_ports") or (0, 0))
        return cls(**values)


def host_root(root: Path, name: str) -> Path:
    return root / "hosts" / name


def shared_dir(root: Path) -> Path:
    return root / "shared"


def load(root: Path) -> dict[str, HostRecord]:
    """The hosts recorded under ``root``, by name (empty if there is no state yet)."""
    path = root / STATE_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise OSError(f"cannot read the lab state {path}: {exc}") from exc
    hosts = data.get("hosts", {}) if isinstance(data, dict) else {}
    return {name: HostRecord.from_json(item) for name, item in sorted(hosts.items())}


def save(root: Path, hosts: dict[str, HostRecord]) -> None:
    path = root / STATE_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    payload = {
        "version": STATE_VERSION,
        "hosts": {name: record.to_json() for name, record in sorted(hosts.items())},
    }
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """Exclusive use of the lab under ``root`` (blocks while another process holds it)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

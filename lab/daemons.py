"""Several independent libvirt hosts on this one machine, for demos and integration tests.

``lab_up(count)`` starts lab hosts ``lab1``..``labN`` (each a libvirtd and a
virtlogd in their own mount and UTS namespaces, see ``launch.py``), keeping
those already running; ``lab_down()`` stops everything the lab started, guests
included; ``lab_status()`` reports. State lives in ``lab_dir()``
(``$XENWEB_DATA_DIR/lab``), so every appliance data dir has its own lab; every
function also takes an explicit ``root`` for a lab elsewhere (tests).

Each host answers at ``qemu+tcp://127.0.0.1:PORT/system`` (unauthenticated
loopback: lab only, enrolled with ``allow_insecure_transport``) and has two dir pools:
``lab-shared`` (the same ``<root>/shared`` on every host, standing in for the
NFS export all dom0s mount) and ``local`` (``<root>/hosts/<name>/images``), and the
network ``default`` on the lab's bridge (``lab.bridge``).
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
import uuid
from pathlib import Path

from . import bridge, control, ports, preflight, procs
from .errors import LabError, LabUnavailable
from .launch import LIBVIRT_DIRS, HostDirs, LaunchError, log_tail, start_host
from .paths import lab_dir
from .state import HostRecord, LabHost, host_root, load, locked, save, shared_dir

__all__ = [
    "LabError",
    "LabHost",
    "LabUnavailable",
    "lab_down",
    "lab_status",
    "lab_up",
]

logger = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT_S = 120.0
KEPT_HOST_PROBE_S = 15.0


def _lab_root(root: Path | None) -> Path:
    path = Path(root) if root is not None else lab_dir()
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _dirs(root: Path, name: str) -> HostDirs:
    return HostDirs(host_root(root, name))


def _marker(root: Path, name: str) -> str:
    """What every command line of the host's daemons contains: its directory, with a
    trailing slash so that lab1 never matches lab10."""
    return f"{_dirs(root, name).root}/"


def _is_running(root: Path, record: HostRecord) -> bool:
    return procs.is_lab_process(record.pid, _marker(root, record.name), record.mount_ns)


def _view(root: Path, record: HostRecord) -> LabHost:
    running = _is_running(root, record)
    return LabHost(
        name=record.name,
        uri=record.uri,
        port=record.port,
        pid=record.pid if running else None,
        hostname=record.hostname,
        host_uuid=record.host_uuid,
        root=_dirs(root, record.name).root,
        running=running,
        migration_address=record.migration_address,
        migration_ports=record.migration_ports,
        virtlogd_pid=record.virtlogd_pid if running else None,
    )


def _keep_kvm(kvm: bool | None) -> bool:
    """Offer KVM to lab guests only where it was asked for or really boots Linux."""
    if kvm is not None:
        return kvm
    forced = os.environ.get("XENWEB_LAB_KVM", "").strip().lower()
    if forced in ("0", "1", "true", "false", "yes", "no"):
        return forced in ("1", "true", "yes")
    from lab.kvmprobe import kvm_boots_linux

    return kvm_boots_linux()


# --- stopping ---------------------------------------------------------------------------


def _daemon_pids(root: Path, record: HostRecord) -> tuple[list[int], list[int]]:
    """(libvirtd, virtlogd) PIDs of the host, from the state and from the pid files."""
    dirs = _dirs(root, record.name)
    marker = _marker(root, record.name)

    def live(*candidates: int | None) -> list[int]:
        found = {pid for pid in candidates if pid and procs.is_lab_process(pid, marker)}
        return sorted(found)

    return (
        live(record.pid, procs.read_pid_file(dirs.libvirtd_pid_file)),
        live(record.virtlogd_pid, procs.read_pid_file(dirs.virtlogd_pid_file)),
    )


def _stop_host(root: Path, record: HostRecord) -> list[int]:
    """Stop one host (guests, libvirtd, virtlogd, stragglers); the PIDs that survived."""
    dirs = _dirs(root, record.name)
    if _is_running(root, record):
        try:
            destroyed = control.destroy_guests(record.uri)
            if destroyed:
                logger.info("%s: destroyed guests %s", record.name, ", ".join(destroyed))
        except Exception as exc:  # a wedged libvirtd: its guests are killed below
            logger.warning("%s: could not destroy guests through libvirt: %s", record.name, exc)
    libvirtds, virtlogds = _daemon_pids(root, record)
    survivors = procs.terminate(libvirtds, timeout=20.0)
    survivors += procs.terminate(virtlogds, timeout=10.0)
    # Stragglers (QEMU of guests libvirt could not destroy...): whatever still lives in
    # the host's mount namespace. Twice, in case something forked meanwhile.
    for grace in (10.0, 5.0):
        members = procs.pids_seeing(dirs.etc, LIBVIRT_DIRS["etc"])
        survivors += procs.terminate(members, timeout=grace)
    dirs.clear_run()
    ports.release(root, record.name)
    record.pid = None
    record.virtlogd_pid = None
    record.mount_ns = ""
    return sorted(pid for pid in set(survivors) if procs.is_alive(pid))


def _recorded_and_found(root: Path) -> dict[str, HostRecord]:
    """Hosts in the state file, plus host directories the state has lost track of."""
    hosts = load(root)
    hosts_dir = root / "hosts"
    if hosts_dir.is_dir():
        for entry in sorted(hosts_dir.iterdir()):
            name = entry.name
            if name not in hosts and name.startswith("lab") and name[3:].isdigit():
                hosts[name] = HostRecord(name=name, index=int(name[3:]), host_uuid="")
    return hosts


def lab_down(root: Path | None = None) -> None:
    """Stop every lab host under ``root`` (default ``lab_dir()``) with its guests.

    Host definitions, pools and images stay on disk for the next ``lab_up``.
    Raises ``LabError`` naming any process that survived SIGKILL.
    """
    root = _lab_root(root)
    with locked(root):
        hosts = _recorded_and_found(root)
        survivors: list[int] = []
        for record in hosts.values():
            survivors += _stop_host(root, record)
            if record.host_uuid:
                save(root, {n: r for n, r in hosts.items() if r.host_uuid})
        bridge.remove_bridge(root)
    if survivors:
        raise LabError(f"these lab processes did not stop: {survivors}")


# --- starting ---------------------------------------------------------------------------


def _start_host(
    root: Path,
    record: HostRecord,
    hosts: dict[str, HostRecord],
    tools: preflight.Tools,
    timeout: float,
) -> None:
    dirs = _dirs(root, record.name)
    began = time.monotonic()
    _stop_host(root, record)  # leftovers of an earlier run (a lone virtlogd, a stale qemu...)
    try:
        booking = ports.book(
            root, record.name, prefer_port=record.port, prefer_range=record.migration_ports
        )
    except ports.NoFreePort as exc:
        raise LabError(f"lab host {record.name} cannot start: {exc}") from exc
    record.port, record.migration_ports = booking.port, booking.migration_ports
    try:
        started = start_host(record, dirs, tools)
        record.pid, record.virtlogd_pid = started.pid, started.virtlogd_pid
        record.mount_ns = started.mount_ns
        record.started_at = time.time()
        save(root, hosts)  # from here on, lab_down can find the processes
        ports.confirm(root, record.name, started.pid)
        logger.debug("%s: started %s", record.name, started.argv)
        control.wait_until_answering(record.uri, timeout, alive=lambda: procs.is_alive(started.pid))
        control.ensure_pools(
            record.uri,
            [
                control.PoolSpec(control.SHARED_POOL, shared_dir(root)),
                control.PoolSpec(control.LOCAL_POOL, dirs.images),
            ],
        )
        control.ensure_network(record.uri, bridge.ensure_bridge(root))
    except (LaunchError, control.ControlError, subprocess.CalledProcessError) as exc:
        tail = log_tail(dirs)
        _stop_host(root, record)
        save(root, hosts)
        raise LabError(f"lab host {record.name} did not start: {exc}\n{tail}") from exc
    logger.info(
        "%s: answering at %s after %.1f s", record.name, record.uri, time.monotonic() - began
    )


def _healthy(root: Path, record: HostRecord) -> bool:
    if not _is_running(root, record):
        return False
    try:
        control.wait_until_answering(
            record.uri, KEPT_HOST_PROBE_S, alive=lambda: procs.is_alive(record.pid)
        )
    except control.ControlError as exc:
        logger.warning("%s runs but does not answer (%s): restarting it", record.name, exc)
        return False
    return True


def lab_up(
    count: int = 2,
    root: Path | None = None,
    *,
    timeout: float = DEFAULT_START_TIMEOUT_S,
    kvm: bool | None = None,
) -> list[LabHost]:
    """Make sure lab hosts ``lab1``..``lab<count>`` run under ``root`` (default ``lab_dir()``).

    Idempotent: hosts that run and answer are kept (so are running hosts beyond
    ``count``), missing or dead ones are started. ``kvm`` keeps ``/dev/kvm``
    visible to the hosts (default: hidden, guests run under TCG; the environment
    variable ``XENWEB_LAB_KVM=1`` changes the default). Returns every running host.
    Raises ``LabUnavailable`` when the machine cannot run the lab, ``LabError``
    (with the host's log tail) when a host does not come up.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    tools = preflight.require()
    root = _lab_root(root)
    shared_dir(root).mkdir(parents=True, exist_ok=True)
    with locked(root):
        hosts = load(root)
        for index in range(1, count + 1):
            name = f"lab{index}"
            record = hosts.get(name) or HostRecord(
                name=name, index=index, host_uuid=str(uuid.uuid4())
            )
            hosts[name] = record
            if _healthy(root, record):
                continue
            record.hide_kvm = not _keep_kvm(kvm)
            _start_host(root, record, hosts, tools, timeout)
            save(root, hosts)
        return [_view(root, r) for r in hosts.values() if _is_running(root, r)]


def lab_status(root: Path | None = None) -> list[LabHost]:
    """Every host the lab under ``root`` knows of, running or not."""
    root = _lab_root(root)
    return [_view(root, record) for record in load(root).values()]

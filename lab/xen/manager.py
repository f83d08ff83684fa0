"""Real Xen 4.17 dom0s for the lab: ``xen_up(count)``, ``xen_down()``, ``xen_status()``.

Each host ``xen1``..``xenN`` is Debian 12 with Xen 4.17 and libvirt's libxl driver, booted
under QEMU with TCG (KVM is not usable for nested Xen here), reachable only on loopback at
``xen+ssh://root@127.0.0.1:PORT/system`` with the appliance's own key. The lab generates each
host's SSH host key, so it knows the fingerprint to confirm at enrolment
(``XenHost.host_key_fingerprint``).

Settings that each fixed a failure under TCG (``boot.py``): ``-cpu max,vendor=GenuineIntel,
-svm,+vme,x-force-features=on`` (without ``+vme`` dom0's libvirtd cannot find a CPU model;
with an AMD vendor and ``-svm`` libvirt reports no CPUs) and Xen's ``smap=0 smep=0 cet=0``
(dom0 crashes without them). Xen then offers PV guests only (``virt_caps: pv``): the very
"no VT-x" case of a real machine.

State lives in ``lab_dir()/xen/`` (``xen.json``, a lock file, ``hosts/<name>/``). Ports come
from the lab's port registry (``lab.ports``), so they never collide with QEMU lab hosts.

``xen1`` and ``xen2`` share a storage network (``boot.PeerLink``: ``10.99.0.1`` and
``10.99.0.2``, a point-to-point QEMU socket link that xen1 always offers) and storage both can
write: xen1 exports its image store ``/var/lib/xen/images`` (its ``default`` pool) over NFS
to that network; once both run, ``xen_up`` starts xen1's NFS server (``shared.py``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hosts.virt import VirtTarget
from lab import ports
from lab.errors import LabError, LabUnavailable
from lab.paths import lab_dir
from lab.state import locked

from . import boot, hypervisor
from .image import Dom0Image, ensure_dom0_image

logger = logging.getLogger(__name__)

STATE_FILE = "xen.json"
# Generous: TCG on a machine busy with other work may take minutes.
DEFAULT_BOOT_TIMEOUT_S = 600.0
PROBE_TIMEOUT_S = 20.0
# Where the tiny guest's files sit in every dom0 (lab.tinyguest).
TINY_GUEST_DIR = "/var/lib/xen/images/tiny-guest"
TINY_GUEST_KERNEL = f"{TINY_GUEST_DIR}/vmlinuz"
TINY_GUEST_INITRD = f"{TINY_GUEST_DIR}/initrd.gz"
# The storage network joins xen1 (listening) and xen2 (connecting).
PEERED = ("xen1", "xen2")
# xen1 exports this directory over NFS; both dom0s mount it (netfs pools, made through the
# app) at the same path, so a guest's disks and saved memory have one path on both hosts.
SHARED_DIR = "/srv/xen-shared"
EXPORTS = f"{SHARED_DIR} {boot.PEER_NETWORK}.0/24(rw,sync,no_subtree_check,no_root_squash)\n"


@dataclass(frozen=True)
class XenHost:
    """One Xen lab host as the outside world sees it."""

    name: str
    uri: str
    ssh_port: int
    pid: int | None
    hostname: str
    host_key_fingerprint: str
    root: Path
    console_log: Path
    running: bool
    storage_address: str = ""  # on the storage network between xen1 and xen2

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file with only this host's key (for the lab's own SSH commands)."""
        return self.root / "known_hosts"


@dataclass
class _Record:
    name: str
    index: int
    ssh_port: int = 0
    pid: int | None = None
    host_key_fingerprint: str = ""
    started_at: float = 0.0
    peer_port: int = 0  # xen1: where its storage-network NIC listens
    migration_ports: tuple[int, int] = (0, 0)

    @property
    def hostname(self) -> str:
        return f"xenweb-{self.name}"

    @property
    def uri(self) -> str:
        return f"xen+ssh://root@127.0.0.1:{self.ssh_port}/system"


def xen_root(root: Path | None = None) -> Path:
    path = Path(root) if root is not None else lab_dir() / "xen"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def _files(root: Path, name: str) -> boot.HostFiles:
    return boot.HostFiles(root / "hosts" / name)


def _load(root: Path) -> dict[str, _Record]:
    try:
        data = json.loads((root / STATE_FILE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise LabError(f"cannot read the Xen lab state {root / STATE_FILE}: {exc}") from exc
    known = set(_Record.__dataclass_fields__)
    records = {}
    for name, item in sorted(data.get("hosts", {}).items()):
        record = _Record(**{k: v for k, v in item.items() if k in known})
        record.migration_ports = tuple(record.migration_ports)  # type: ignore[assignment]
        records[name] = record
    return records


def _save(root: Path, records: dict[str, _Record]) -> None:
    path = root / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.tmp")
    payload = {"hosts": {name: asdict(rec) for name, rec in sorted(records.items())}}
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def _view(root: Path, record: _Record) -> XenHost:
    files = _files(root, record.name)
    running = boot.is_running(record.pid, files)
    return XenHost(
        name=record.name,
        uri=record.uri,
        ssh_port=record.ssh_port,
        pid=record.pid if running else None,
        hostname=record.hostname,
        host_key_fingerprint=record.host_key_fingerprint,
        root=files.root,
        console_log=files.console_log,
        running=running,
        storage_address=f"{boot.PEER_NETWORK}.{record.index}" if record.name in PEERED else "",
    )


def preflight_problems() -> list[str]:
    """What keeps this machine from running Xen lab hosts at all."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (debootstrap and chroot need root)")
    tools = (boot.QEMU, boot.QEMU_IMG, "debootstrap", "mkfs.ext4", "ssh-keyscan",
             *hypervisor.BUILD_TOOLS)
    for tool in tools:
        if shutil.which(tool) is None:
            problems.append(f"{tool} is not installed")
    return problems


def xen_status(*, root: Path | None = None) -> list[XenHost]:
    base = xen_root(root)
    return [_view(base, record) for record in _load(base).values()]


def xen_up(
    count: int,
    *,
    root: Path | None = None,
    timeout: float = DEFAULT_BOOT_TIMEOUT_S,
    tiny_guest: bool = True,
) -> list[XenHost]:
    """Start Xen hosts ``xen1``..``xenN`` (keeping those running) and wait until each one's
    libvirt answers over xen+ssh. On failure the hosts started by this call are stopped and
    ``LabError`` says why (with the tail of the console log)."""
    if count < 1:
        raise ValueError("count must be at least 1")
    problems = preflight_problems()
    if problems:
        raise LabUnavailable("Xen lab hosts cannot run here: " + "; ".join(problems))
    image = ensure_dom0_image()
    extra = _tiny_guest_files() if tiny_guest else {}
    base = xen_root(root)
    with locked(base):
        records = _load(base)
        starting: list[_Record] = []
        try:
            for index in range(1, count + 1):
                name = f"xen{index}"
                record = records.get(name) or _Record(name=name, index=index)
                records[name] = record
                if boot.is_running(record.pid, _files(base, name)):
                    continue
                _boot(base, record, image, extra, _peer(record, records))
                starting.append(record)
                _save(base, records)
            with ThreadPoolExecutor(max_workers=max(1, len(starting))) as pool:
                list(pool.map(lambda rec: _wait_ready(base, rec, timeout), starting))
            hosts = [_view(base, records[f"xen{i}"]) for i in range(1, count + 1)]
            if count >= len(PEERED):
                from .shared import ensure_shared_storage

                ensure_shared_storage(hosts[0], hosts[1])
        except BaseException:
            for record in starting:
                _stop(base, record)
            _save(base, records)
            raise
        _save(base, records)
        return hosts


def _tiny_guest_files() -> dict[str, Path]:
    from lab.tinyguest import ensure_tiny_guest

    tiny = ensure_tiny_guest()
    return {TINY_GUEST_KERNEL: tiny.kernel, TINY_GUEST_INITRD: tiny.initrd}


def _peer(record: _Record, records: dict[str, _Record]) -> boot.PeerLink | None:
    """xen1 listens on the storage network (always: xen2 may come later), xen2 connects."""
    if record.name == PEERED[0]:
        return boot.PeerLink(index=record.index, listen=record.peer_port or None)
    if record.name == PEERED[1]:
        first = records.get(PEERED[0])
        return boot.PeerLink(index=record.index, connect=first.peer_port if first else None)
    return None


def _peer_key_files(base: Path) -> boot.HostFiles:
    """The SSH key the peered dom0s log in to each other with (libvirt's peer-to-peer
    migration: the source libvirtd opens xen+ssh to the target's storage address)."""
    return boot.HostFiles(base / "peer-key")


def peer_migration_uri(host: XenHost) -> str:
    """How the other dom0's libvirtd reaches ``host``: over the storage network."""
    return f"xen+ssh://root@{host.storage_address}/system" if host.storage_address else ""


def _peer_ssh_texts(base: Path) -> dict[str, str]:
    """dom0 to dom0 SSH: the shared peer key, both host keys pinned by storage address, and
    the hostnames on the storage network (libxl sends the memory to the target's hostname)."""
    key = _peer_key_files(base)
    boot.ensure_host_key(key)
    known, hosts = [], ["127.0.0.1 localhost"]
    for index, name in enumerate(PEERED, start=1):
        address = f"{boot.PEER_NETWORK}.{index}"
        known.append(f"{address} {boot.ensure_host_key(_files(base, name))}")
        hosts.append(f"{address} xenweb-{name}")
    return {
        "/root/.ssh/id_ed25519": key.host_key.read_text(),
        "/root/.ssh/known_hosts": "\n".join(known) + "\n",
        "/etc/hosts": "\n".join(hosts) + "\n",
    }


def _boot(
    base: Path, record: _Record, image: Dom0Image, extra: dict[str, Path],
    peer: boot.PeerLink | None,
) -> None:
    from xenweb.appliance.sshkeys import fingerprint, public_key

    files = _files(base, record.name)
    files.root.mkdir(parents=True, exist_ok=True)
    host_key = boot.ensure_host_key(files)
    record.host_key_fingerprint = fingerprint(host_key)
    booking = ports.book(base, record.name, prefer_port=record.ssh_port,
                         prefer_range=record.migration_ports)
    record.ssh_port = booking.port
    record.migration_ports = booking.migration_ports
    files.known_hosts.write_text(f"[127.0.0.1]:{record.ssh_port} {host_key}\n")
    texts: dict[str, str] = {}
    if peer is not None:
        if record.name == PEERED[0]:
            # The first port of the host's booked block: nobody else uses it.
            record.peer_port = booking.migration_ports[0]
            peer = boot.PeerLink(index=peer.index, listen=record.peer_port)
        elif not peer.connect:
            raise LabError(f"{record.name} joins xen1's storage network: start xen1 first")
        texts["/etc/systemd/network/10-storage.network"] = peer.network_file()
        texts.update(_peer_ssh_texts(base))
    authorized = public_key().strip()
    if peer is not None:
        authorized += "\n" + boot.ensure_host_key(_peer_key_files(base))
    boot.make_overlay(image, files)
    boot.make_seed(files, authorized_key=authorized, hostname=record.hostname, extra=extra,
                   texts=texts)
    argv = boot.qemu_argv(image, files, name=record.name, ssh_port=record.ssh_port, peer=peer)
    logger.info("starting %s: %s", record.name, argv)
    try:
        record.pid = boot.start_qemu(argv, files)
    except LabError:
        ports.release(base, record.name)
        raise
    record.started_at = time.time()
    ports.confirm(base, record.name, record.pid)


def _wait_ready(base: Path, record: _Record, timeout: float) -> None:
    """Until libvirt answers over xen+ssh (checked against the host's own known key)."""
    from hosts.virt import VirtError, probe

    files = _files(base, record.name)
    uri = f"{record.uri}?known_hosts={files.known_hosts}"
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not boot.is_running(record.pid, files):
            raise LabError(
                f"{record.name}: QEMU exited while booting; console:\n{boot.console_tail(files)}"
            )
        try:
            info = probe(VirtTarget(uri), timeout=PROBE_TIMEOUT_S)
        except VirtError as exc:
            last = str(exc)
            time.sleep(2.0)
            continue
        if info.hypervisor_type.lower() == "xen":
            logger.info(
                "%s: libvirt answers %.0f s after QEMU started",
                record.name, time.time() - record.started_at,
            )
            return
        last = f"hypervisor type {info.hypervisor_type!r}"
        time.sleep(2.0)
    raise LabError(
        f"{record.name}: libvirt did not answer over {record.uri} within {timeout:.0f} s "
        f"(last: {last}); console:\n{boot.console_tail(files)}"
    )


def _stop(base: Path, record: _Record) -> None:
    files = _files(base, record.name)
    boot.stop_qemu(record.pid, files)
    boot.remove_disks(files)
    ports.release(base, record.name)
    record.pid = None


def xen_down(*, root: Path | None = None) -> None:
    """Stop every Xen lab host (their guests die with them) and remove their disks.

    Host keys and console logs stay, so a host keeps its identity across restarts."""
    base = xen_root(root)
    with locked(base):
        records = _load(base)
        errors: list[str] = []
        for record in records.values():
            try:
                _stop(base, record)
            except LabError as exc:
                errors.append(str(exc))
        _save(base, records)
    if errors:
        raise LabError("; ".join(errors))


def status_rows(hosts: list[XenHost]) -> list[dict[str, Any]]:
    return [
        {"name": h.name, "uri": h.uri, "pid": h.pid, "running": h.running,
         "host_key": h.host_key_fingerprint}
        for h in hosts
    ]

"""Configuration files of one lab host: libvirtd.conf, qemu.conf, virtlogd.conf and,
when the system lacks them, passwd/group overlays with libvirt's QEMU account.

libvirt's config syntax is ``key = value`` with quoted strings, integers and
lists; values are rendered from Python values, never pasted into text.
"""

from __future__ import annotations

import grp
import pwd
from collections.abc import Mapping
from pathlib import Path

from .state import HostRecord

ConfValue = str | int | list[str]

# Debian builds libvirt with this QEMU user/group and resolves it before reading
# qemu.conf, even when qemu.conf says user = "root": without the account,
# libvirtd's QEMU driver fails with "Failed to parse user 'libvirt-qemu'".
QEMU_ACCOUNT = "libvirt-qemu"
QEMU_GROUPS = ("libvirt-qemu", "kvm")
FIRST_SYSTEM_ID = 64055


def _quote(value: str) -> str:
    if any(char in value for char in '"\n\r\\'):
        raise ValueError(f"cannot put {value!r} in a libvirt config file")
    return f'"{value}"'


def render(values: Mapping[str, ConfValue]) -> str:
    lines = ["# Written by xenweb's lab (lab/config.py); rewritten on each start."]
    for key, value in values.items():
        if isinstance(value, bool):
            raise TypeError(f"{key}: use 0/1, not a bool")
        if isinstance(value, int):
            text = str(value)
        elif isinstance(value, list):
            text = "[" + ", ".join(_quote(item) for item in value) + "]"
        else:
            text = _quote(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


def libvirtd_conf(record: HostRecord, log_dir: Path) -> dict[str, ConfValue]:
    return {
        "listen_tls": 0,
        "listen_tcp": 1,
        "listen_addr": "127.0.0.1",
        "tcp_port": str(record.port),
        # Unauthenticated loopback transport: acceptable for lab hosts only (the
        # app enrols them with allow_insecure_transport=True, lab.register).
        "auth_tcp": "none",
        "auth_unix_ro": "none",
        "auth_unix_rw": "none",
        "host_uuid": record.host_uuid,
        "log_outputs": f"3:file:{log_dir / 'libvirtd.log'}",
    }


def qemu_conf(record: HostRecord) -> dict[str, ConfValue]:
    low, high = record.migration_ports
    return {
        "user": "root",
        "group": "root",
        "security_driver": "none",
        "migration_address": record.migration_address,
        "migration_host": record.migration_address,
        "migration_port_min": low,
        "migration_port_max": high,
        "vnc_listen": "127.0.0.1",
        "spice_listen": "127.0.0.1",
        # No cgroups: two hosts on one kernel would share (and fight over) the
        # machine cgroup tree; no per-guest /dev namespace either.
        "cgroup_controllers": [],
        "namespaces": [],
    }


def virtlogd_conf(log_dir: Path) -> dict[str, ConfValue]:
    return {"log_outputs": f"3:file:{log_dir / 'virtlogd.log'}"}


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _free_id(used: set[int]) -> int:
    candidate = FIRST_SYSTEM_ID
    while candidate in used:
        candidate += 1
    used.add(candidate)
    return candidate


def account_overlays(overlay_dir: Path) -> dict[str, Path]:
    """Copies of /etc/passwd and /etc/group with the QEMU account added, for what is
    missing: ``{"/etc/passwd": copy, ...}`` to bind inside the namespace."""
    binds: dict[str, Path] = {}
    missing_groups = [name for name in QEMU_GROUPS if not _has_group(name)]
    gids = {entry.gr_gid for entry in grp.getgrall()}
    group_ids = {name: _free_id(gids) for name in missing_groups}
    if missing_groups:
        lines = [f"{name}:x:{gid}:" for name, gid in group_ids.items()]
        binds["/etc/group"] = _overlay(overlay_dir / "group", Path("/etc/group"), lines)
    if not _has_user(QEMU_ACCOUNT):
        uid = _free_id({entry.pw_uid for entry in pwd.getpwall()})
        gid = group_ids.get(QEMU_ACCOUNT) or grp.getgrnam(QEMU_ACCOUNT).gr_gid
        gecos, home, shell = "Libvirt Qemu (xenweb lab)", "/nonexistent", "/usr/sbin/nologin"
        line = f"{QEMU_ACCOUNT}:x:{uid}:{gid}:{gecos}:{home}:{shell}"
        binds["/etc/passwd"] = _overlay(overlay_dir / "passwd", Path("/etc/passwd"), [line])
    return binds


def hosts_overlay(overlay_dir: Path, record: HostRecord) -> Path:
    """/etc/hosts where the host's own name resolves (to its migration address), as on
    a real dom0; libvirt looks its host name up on every getHostname()."""
    line = f"{record.migration_address}\t{record.hostname}"
    return _overlay(overlay_dir / "hosts", Path("/etc/hosts"), [line])


def no_kvm_file(overlay_dir: Path) -> Path:
    """An empty regular file, bound read-only over /dev/kvm to hide KVM from libvirt."""
    path = overlay_dir / "no-kvm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def _overlay(target: Path, original: Path, extra: list[str]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    text = original.read_text()
    if text and not text.endswith("\n"):
        text += "\n"
    target.write_text(text + "\n".join(extra) + "\n")
    target.chmod(0o644)
    return target


def write_host_configs(record: HostRecord, etc_dir: Path, log_dir: Path) -> None:
    etc_dir.mkdir(parents=True, exist_ok=True)
    (etc_dir / "libvirtd.conf").write_text(render(libvirtd_conf(record, log_dir)))
    (etc_dir / "qemu.conf").write_text(render(qemu_conf(record)))
    (etc_dir / "virtlogd.conf").write_text(render(virtlogd_conf(log_dir)))

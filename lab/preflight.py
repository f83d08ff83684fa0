"""What the lab needs from the machine, checked up front with plain-words answers."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from .errors import LabUnavailable

SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

PROGRAMS = {
    "unshare": "util-linux (unshare)",
    "mount": "mount",
    "libvirtd": "libvirt-daemon (libvirtd)",
    "virtlogd": "libvirt-daemon (virtlogd)",
    "qemu-system-x86_64": "qemu-system-x86 (qemu-system-x86_64)",
}


@dataclass(frozen=True)
class Tools:
    unshare: str
    mount: str
    libvirtd: str
    virtlogd: str
    qemu: str


def which(program: str) -> str | None:
    return shutil.which(program, path=SBIN_PATH) or shutil.which(program)


def _check_namespaces(unshare: str) -> str | None:
    try:
        result = subprocess.run(
            [unshare, "--mount", "--uts", "--propagation", "private", "--", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run unshare: {exc}"
    if result.returncode != 0:
        detail = result.stderr.strip() or f"exit status {result.returncode}"
        return f"cannot create mount and UTS namespaces (unshare: {detail})"
    return None


def problems() -> list[str]:
    """Everything that keeps lab hosts from starting here (empty: all is there)."""
    found: list[str] = []
    if os.geteuid() != 0:
        found.append(
            "the lab needs root (it bind-mounts libvirt's directories in a private mount "
            "namespace and runs system libvirtd instances); run it as root"
        )
    paths = {name: which(name) for name in PROGRAMS}
    for name, path in paths.items():
        if path is None:
            found.append(f"{name} is missing: install {PROGRAMS[name]}")
    if not found:
        unshare_problem = _check_namespaces(str(paths["unshare"]))
        if unshare_problem:
            found.append(unshare_problem)
    return found


def require() -> Tools:
    """The programs the lab runs, or ``LabUnavailable`` naming everything missing."""
    found = problems()
    if found:
        raise LabUnavailable("The lab cannot start on this machine: " + "; ".join(found) + ".")
    return Tools(
        unshare=str(which("unshare")),
        mount=str(which("mount")),
        libvirtd=str(which("libvirtd")),
        virtlogd=str(which("virtlogd")),
        qemu=str(which("qemu-system-x86_64")),
    )

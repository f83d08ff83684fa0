"""Starting one lab host: its directories, config files and the namespaced daemons.

A host is ``virtlogd`` plus ``libvirtd``, both inside one private mount and UTS
namespace made by ``unshare`` where the host's own directories are bind-mounted
over ``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``,
``/var/log/libvirt`` and ``/var/cache/libvirt`` (see ``nsinit.py``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import config
from .preflight import SBIN_PATH, Tools
from .procs import is_alive, mount_namespace, read_pid_file
from .state import HostRecord

NSINIT = Path(__file__).with_name("nsinit.py")
LIBVIRT_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}
LAUNCH_TIMEOUT_S = 60.0


class LaunchError(RuntimeError):
    pass


@dataclass(frozen=True)
class HostDirs:
    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def overlay(self) -> Path:
        return self.root / "overlay"

    @property
    def libvirtd_pid_file(self) -> Path:
        return self.run / "libvirtd.pid"

    @property
    def virtlogd_pid_file(self) -> Path:
        return self.run / "virtlogd.pid"

    @property
    def launch_log(self) -> Path:
        return self.log / "launch.log"

    @property
    def libvirtd_log(self) -> Path:
        return self.log / "libvirtd.log"

    def create(self) -> None:
        for sub in (*LIBVIRT_DIRS, "images", "overlay"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def clear_run(self) -> None:
        """Remove pid files, sockets and stale runtime state of a stopped host."""
        if not self.run.is_dir():
            return
        for entry in self.run.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


@dataclass(frozen=True)
class Started:
    pid: int
    virtlogd_pid: int | None
    mount_ns: str
    argv: list[str]


def build_argv(record: HostRecord, dirs: HostDirs, tools: Tools) -> list[str]:
    """The whole command line: ``unshare ... -- python -I nsinit.py ...``."""
    argv = [
        tools.unshare, "--mount", "--uts", "--propagation", "private", "--",
        sys.executable, "-I", str(NSINIT), "--hostname", record.hostname,
    ]  # fmt: skip
    for sub, target in LIBVIRT_DIRS.items():
        argv += ["--bind", str(dirs.root / sub), target]
    overlays = config.account_overlays(dirs.overlay)
    overlays["/etc/hosts"] = config.hosts_overlay(dirs.overlay, record)
    for target, source in overlays.items():
        argv += ["--bind", str(source), target]
    if record.hide_kvm and Path("/dev/kvm").exists():
        # Lab hosts advertise TCG only (KVM may be unusable, e.g. a software module
        # that hangs booting Linux). libvirt treats /dev/kvm as usable when it is
        # writable, so an empty file on a read-only bind replaces it: a writable
        # stand-in such as /dev/null would invalidate the QEMU capabilities cache on
        # every call ("KVM is now usable") and cost seconds per API call.
        argv += ["--bind-ro", str(config.no_kvm_file(dirs.overlay)), "/dev/kvm"]
    argv += [
        "--spawn", tools.virtlogd, "--daemon",
        "--pid-file", str(dirs.virtlogd_pid_file), "--config", str(dirs.etc / "virtlogd.conf"),
        "--exec", tools.libvirtd, "--daemon", "--listen",
        "--pid-file", str(dirs.libvirtd_pid_file), "--config", str(dirs.etc / "libvirtd.conf"),
    ]  # fmt: skip
    return argv


def _wait_for_pid(path: Path, timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = read_pid_file(path)
        if pid and is_alive(pid):
            return pid
        time.sleep(0.05)
    return None


def log_tail(dirs: HostDirs, lines: int = 25) -> str:
    parts = []
    for path in (dirs.launch_log, dirs.libvirtd_log):
        try:
            text = path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            continue
        if text:
            parts.append(f"--- {path} (last {len(text)} lines)\n" + "\n".join(text))
    return "\n".join(parts) or "(no log written)"


def start_host(record: HostRecord, dirs: HostDirs, tools: Tools) -> Started:
    """Write the host's files and start its daemons; return once libvirtd has a PID."""
    dirs.create()
    dirs.clear_run()
    config.write_host_configs(record, dirs.etc, dirs.log)
    argv = build_argv(record, dirs, tools)
    env = {"PATH": SBIN_PATH, "LC_ALL": "C.UTF-8", "HOME": "/root"}
    with open(dirs.launch_log, "a") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {record.name}\n")
        log.flush()
        try:
            result = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, cwd=dirs.root, timeout=LAUNCH_TIMEOUT_S, check=False,
                start_new_session=True,
            )  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LaunchError(f"starting {record.name} failed: {exc}") from exc
    virtlogd_pid = read_pid_file(dirs.virtlogd_pid_file)
    if result.returncode != 0:
        raise LaunchError(
            f"starting {record.name} failed (exit status {result.returncode})",
        )
    pid = _wait_for_pid(dirs.libvirtd_pid_file, 30.0)
    if pid is None:
        raise LaunchError(f"libvirtd of {record.name} did not stay up")
    return Started(
        pid=pid,
        virtlogd_pid=virtlogd_pid if is_alive(virtlogd_pid) else None,
        mount_ns=mount_namespace(pid),
        argv=argv,
    )

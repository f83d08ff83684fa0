"""Entry point that runs *inside* a lab host's fresh mount and UTS namespaces.

Started by ``lab.launch`` as
``unshare --mount --uts --propagation private -- python -I nsinit.py ...``. It
bind-mounts the host's own directories over libvirt's fixed paths, sets the
host name, starts a helper daemon (virtlogd) and finally replaces itself with
libvirtd. Everything it does dies with the namespace: when the last process
inside exits, the kernel drops the mounts.

Standalone on purpose (run with ``python -I``): no Django, no project imports.

Usage::

    nsinit.py --hostname NAME [--bind SRC DST]... [--bind-ro SRC DST]...
              [--spawn ARGV...]... --exec ARGV...
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field

MOUNT = shutil.which("mount") or "/usr/bin/mount"


@dataclass
class Plan:
    hostname: str = ""
    binds: list[tuple[str, str, bool]] = field(default_factory=list)
    spawn: list[list[str]] = field(default_factory=list)
    exec_argv: list[str] = field(default_factory=list)


def parse(argv: list[str]) -> Plan:
    plan = Plan()
    current: list[str] | None = None
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--exec":
            plan.exec_argv = argv[index + 1 :]
            break
        if arg == "--spawn":
            current = []
            plan.spawn.append(current)
        elif current is not None:
            current.append(arg)
        elif arg == "--hostname":
            plan.hostname = argv[index + 1]
            index += 1
        elif arg in ("--bind", "--bind-ro"):
            plan.binds.append((argv[index + 1], argv[index + 2], arg == "--bind-ro"))
            index += 2
        else:
            raise SystemExit(f"nsinit: unexpected argument {arg!r}")
        index += 1
    if not plan.exec_argv or not plan.hostname:
        raise SystemExit("nsinit: --hostname and --exec ARGV are required")
    return plan


def bind(source: str, target: str, read_only: bool) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)  # an empty mount point on the real file system
    elif not os.path.exists(target):
        raise SystemExit(f"nsinit: cannot bind {source} over missing file {target}")
    subprocess.run([MOUNT, "--bind", source, target], check=True)
    if read_only:
        subprocess.run([MOUNT, "-o", "remount,bind,ro", target], check=True)


def main(argv: list[str]) -> None:
    plan = parse(argv)
    for source, target, read_only in plan.binds:
        bind(source, target, read_only)
    socket.sethostname(plan.hostname)
    for spawn_argv in plan.spawn:
        subprocess.run(spawn_argv, check=True, stdin=subprocess.DEVNULL)
    sys.stdout.flush()
    os.execv(plan.exec_argv[0], plan.exec_argv)  # noqa: S606


if __name__ == "__main__":
    main(sys.argv[1:])

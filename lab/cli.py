"""The lab's command line (``python -m lab``): start, stop and list the lab hosts, and enrol
them in the app. Needs Django set up first (``lab/__main__.py`` does it)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from hosts.services import HostError
from hosts.virt import VirtError
from lab.daemons import LabError, LabHost, lab_down, lab_status, lab_up
from lab.register import register_lab_host
from lab.xen.manager import XenHost, xen_down, xen_status, xen_up


class UsageError(Exception):
    """A bad option value; the message says which."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab",
        description=(
            "Local lab: several independent libvirt/QEMU hosts on this machine (root only), "
            "for demos and integration tests, and real Xen 4.17 dom0s booted under QEMU "
            "(--xen N). State in $XENWEB_DATA_DIR/lab."
        ),
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="{up,down,status}")
    up = actions.add_parser("up", help="start lab hosts (keeps those already running)")
    up.add_argument("--hosts", type=int, default=None,
                    help="how many QEMU hosts (default 2, or 0 with --xen)")
    up.add_argument(
        "--xen",
        type=int,
        default=0,
        metavar="N",
        help="also start N real Xen 4.17 dom0s under QEMU/TCG (xen1..xenN; about 1.6 GB "
        "of RAM and a few minutes each), reachable at xen+ssh://root@127.0.0.1:PORT",
    )
    up.add_argument(
        "--register",
        action="store_true",
        help="enrol each lab host in the app (skips hosts enrolled already); Xen hosts "
        "over xen+ssh with the appliance's key and their host key pinned",
    )
    actions.add_parser("down", help="stop every lab host (QEMU and Xen) and its guests")
    actions.add_parser("status", help="list the lab hosts")
    return parser


def run(
    argv: Sequence[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run the command line ``argv``; the exit status (argparse exits on bad usage)."""
    opts = build_parser().parse_args(list(argv))
    lab = _Lab(stdout or sys.stdout, stderr or sys.stderr)
    try:
        if opts.action == "up":
            count = opts.hosts
            if count is None:
                count = 0 if opts.xen else 2
            lab.up(count, opts.register)
            if opts.xen:
                lab.xen_up(opts.xen, opts.register)
        elif opts.action == "down":
            lab.down()
        else:
            lab.status()
    except (LabError, UsageError) as exc:
        lab.err(f"Error: {exc}")
        return 1
    return 0


class _Lab:
    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self._stdout = stdout
        self._stderr = stderr

    def out(self, line: str) -> None:
        print(line, file=self._stdout, flush=True)

    def err(self, line: str) -> None:
        print(line, file=self._stderr, flush=True)

    def up(self, count: int, register: bool) -> None:
        if count < 0:
            raise UsageError("--hosts must be at least 0")
        if count == 0:
            return
        began = time.monotonic()
        hosts = lab_up(count)
        self.out(f"Lab up in {time.monotonic() - began:.1f} s.")
        self._print(hosts)
        if register:
            for host in hosts:
                self._register(host)

    def down(self) -> None:
        began = time.monotonic()
        lab_down()
        xen_down()
        self.out(f"Lab stopped in {time.monotonic() - began:.1f} s.")

    def status(self) -> None:
        qemu, xen = lab_status(), xen_status()
        if qemu or not xen:
            self._print(qemu)
        if xen:
            self._print_xen(xen)

    def _print(self, hosts: list[LabHost]) -> None:
        if not hosts:
            self.out("No lab hosts (start them with: python -m lab up).")
            return
        self.out(f"{'NAME':<8} {'URI':<38} {'PID':>8}  STATE")
        for host in hosts:
            pid = str(host.pid) if host.pid else "-"
            state = "running" if host.running else "stopped"
            self.out(f"{host.name:<8} {host.uri:<38} {pid:>8}  {state}")

    def xen_up(self, count: int, register: bool) -> None:
        if count < 1:
            raise UsageError("--xen must be at least 1")
        began = time.monotonic()
        hosts = xen_up(count)
        self.out(f"Xen hosts up in {time.monotonic() - began:.1f} s.")
        self._print_xen(hosts)
        if register:
            for host in hosts:
                self._register_xen(host)

    def _print_xen(self, hosts: list[XenHost]) -> None:
        self.out(f"{'NAME':<8} {'URI':<42} {'PID':>8}  {'STATE':<8} HOST KEY")
        for host in hosts:
            pid = str(host.pid) if host.pid else "-"
            state = "running" if host.running else "stopped"
            self.out(
                f"{host.name:<8} {host.uri:<42} {pid:>8}  {state:<8} {host.host_key_fingerprint}"
            )

    def _register_xen(self, host: XenHost) -> None:
        from lab.xen.register import register_xen_host

        try:
            row, created = register_xen_host(host)
        except (HostError, VirtError) as exc:
            self.err(f"{host.name}: not enrolled: {exc}")
            return
        said = "enrolled as" if created else "enrolled already as"
        self.out(f"{host.name}: {said} host #{row.pk} ({host.uri})")

    def _register(self, host: LabHost) -> None:
        try:
            row, created = register_lab_host(host)
        except (HostError, VirtError) as exc:
            self.err(f"{host.name}: not enrolled: {exc}")
            return
        said = "enrolled as" if created else "enrolled already as"
        self.out(f"{host.name}: {said} host #{row.pk} ({host.uri})")

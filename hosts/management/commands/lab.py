from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hosts.services import HostError
from hosts.virt import VirtError
from lab.daemons import LabError, LabHost, lab_down, lab_status, lab_up
from lab.register import register_lab_host
from lab.xen.manager import XenHost, xen_down, xen_status, xen_up


class Command(BaseCommand):
    help = (
        "Local lab: several independent libvirt/QEMU hosts on this machine (root only), "
        "for demos and integration tests, and real Xen 4.17 dom0s booted under QEMU "
        "(--xen N). State in $XENWEB_DATA_DIR/lab."
    )

    def add_arguments(self, parser: CommandParser) -> None:
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

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            if opts["action"] == "up":
                count = opts["hosts"]
                if count is None:
                    count = 0 if opts["xen"] else 2
                self._up(count, opts["register"])
                if opts["xen"]:
                    self._xen_up(opts["xen"], opts["register"])
            elif opts["action"] == "down":
                began = time.monotonic()
                lab_down()
                xen_down()
                self.stdout.write(f"Lab stopped in {time.monotonic() - began:.1f} s.")
            else:
                qemu, xen = lab_status(), xen_status()
                if qemu or not xen:
                    self._print(qemu)
                if xen:
                    self._print_xen(xen)
        except LabError as exc:
            raise CommandError(str(exc)) from exc

    def _up(self, count: int, register: bool) -> None:
        if count < 0:
            raise CommandError("--hosts must be at least 0")
        if count == 0:
            return
        began = time.monotonic()
        hosts = lab_up(count)
        self.stdout.write(f"Lab up in {time.monotonic() - began:.1f} s.")
        self._print(hosts)
        if register:
            for host in hosts:
                self._register(host)

    def _print(self, hosts: list[LabHost]) -> None:
        if not hosts:
            self.stdout.write("No lab hosts (start them with: manage.py lab up).")
            return
        self.stdout.write(f"{'NAME':<8} {'URI':<38} {'PID':>8}  STATE")
        for host in hosts:
            pid = str(host.pid) if host.pid else "-"
            state = "running" if host.running else "stopped"
            self.stdout.write(f"{host.name:<8} {host.uri:<38} {pid:>8}  {state}")

    def _xen_up(self, count: int, register: bool) -> None:
        if count < 1:
            raise CommandError("--xen must be at least 1")
        began = time.monotonic()
        hosts = xen_up(count)
        self.stdout.write(f"Xen hosts up in {time.monotonic() - began:.1f} s.")
        self._print_xen(hosts)
        if register:
            for host in hosts:
                self._register_xen(host)

    def _print_xen(self, hosts: list[XenHost]) -> None:
        self.stdout.write(f"{'NAME':<8} {'URI':<42} {'PID':>8}  {'STATE':<8} HOST KEY")
        for host in hosts:
            pid = str(host.pid) if host.pid else "-"
            state = "running" if host.running else "stopped"
            self.stdout.write(
                f"{host.name:<8} {host.uri:<42} {pid:>8}  {state:<8} {host.host_key_fingerprint}"
            )

    def _register_xen(self, host: XenHost) -> None:
        from lab.xen.register import register_xen_host

        try:
            row, created = register_xen_host(host)
        except (HostError, VirtError) as exc:
            self.stderr.write(f"{host.name}: not enrolled: {exc}")
            return
        said = "enrolled as" if created else "enrolled already as"
        self.stdout.write(f"{host.name}: {said} host #{row.pk} ({host.uri})")

    def _register(self, host: LabHost) -> None:
        try:
            row, created = register_lab_host(host)
        except (HostError, VirtError) as exc:
            self.stderr.write(f"{host.name}: not enrolled: {exc}")
            return
        said = "enrolled as" if created else "enrolled already as"
        self.stdout.write(f"{host.name}: {said} host #{row.pk} ({host.uri})")

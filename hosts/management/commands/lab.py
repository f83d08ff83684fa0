from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from hosts.lab.daemons import LabError, LabHost, lab_down, lab_status, lab_up
from hosts.lab.register import register_lab_host
from hosts.services import HostError
from hosts.virt import VirtError


class Command(BaseCommand):
    help = (
        "Local lab: several independent libvirt/QEMU hosts on this machine (root only), "
        "for demos and integration tests. State in $XENWEB_DATA_DIR/lab."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{up,down,status}")
        up = actions.add_parser("up", help="start lab hosts (keeps those already running)")
        up.add_argument("--hosts", type=int, default=2, help="how many hosts (default 2)")
        up.add_argument(
            "--register",
            action="store_true",
            help="enrol each lab host in the app (skips hosts enrolled already)",
        )
        actions.add_parser("down", help="stop every lab host and its guests")
        actions.add_parser("status", help="list the lab hosts")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            if opts["action"] == "up":
                self._up(opts["hosts"], opts["register"])
            elif opts["action"] == "down":
                began = time.monotonic()
                lab_down()
                self.stdout.write(f"Lab stopped in {time.monotonic() - began:.1f} s.")
            else:
                self._print(lab_status())
        except LabError as exc:
            raise CommandError(str(exc)) from exc

    def _up(self, count: int, register: bool) -> None:
        if count < 1:
            raise CommandError("--hosts must be at least 1")
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

    def _register(self, host: LabHost) -> None:
        try:
            row, created = register_lab_host(host)
        except (HostError, VirtError) as exc:
            self.stderr.write(f"{host.name}: not enrolled: {exc}")
            return
        said = "enrolled as" if created else "enrolled already as"
        self.stdout.write(f"{host.name}: {said} host #{row.pk} ({host.uri})")

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from inventory.watcher import RECONCILE_INTERVAL, Watcher, run_once


class Command(BaseCommand):
    help = (
        "Watch every enrolled host: libvirt guest events into the inventory and to the "
        "browsers, reconnects, and a full reconcile every 30 s."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--reconcile-interval", "--interval", dest="interval", type=float,
            default=RECONCILE_INTERVAL, help="seconds between full reconciles",
        )
        parser.add_argument(
            "--once", action="store_true", help="probe and reconcile every host once, then exit"
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["once"]:
            for host in run_once():
                self.stdout.write(f"{host}: {host.state} {host.last_error}".rstrip())
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.stdout.write("Watching hosts (Ctrl-C to stop)")
        Watcher(reconcile_interval=opts["interval"]).run(stop)
        self.stdout.write("Stopped watching hosts")

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from hosts.monitor import refresh_all_hosts


class Command(BaseCommand):
    help = "Watch every enrolled host and keep its state (online/unreachable) current."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interval", type=float, default=10.0, help="seconds per round")
        parser.add_argument("--once", action="store_true", help="one round, then exit")

    def handle(self, *args: Any, **opts: Any) -> None:
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        self.stdout.write("Watching hosts (Ctrl-C to stop)")
        while not stop.is_set():
            try:
                for host in refresh_all_hosts():
                    self.stdout.write(f"{host}: {host.state} {host.last_error}".rstrip())
            except Exception as exc:  # keep watching: the database or Redis may come back
                self.stderr.write(f"watch round failed: {exc}")
            if opts["once"]:
                break
            stop.wait(opts["interval"])
            close_old_connections()  # a long-lived process: drop connections that went bad

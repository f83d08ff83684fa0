from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from xenweb.appliance.first_boot import announce_setup_token_if_needed


class Command(BaseCommand):
    help = "Print the setup token (creating it) if first-boot setup is not done yet."

    def handle(self, *args: Any, **opts: Any) -> None:
        token = announce_setup_token_if_needed()
        if token:
            self.stdout.write(f"Setup token: {token}  (open /setup/ in the browser)")
        else:
            self.stdout.write("Setup is complete.")

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from hosts.services import HostError
from hosts.virt import VirtError
from wizard import services
from xenweb.appliance.setup_state import setup_done


class Command(BaseCommand):
    help = "Finish first-boot setup without the browser wizard."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--admin-user", required=True)
        parser.add_argument("--admin-password", required=True)
        parser.add_argument("--admin-email", default="")
        parser.add_argument("--name", default="xenweb", help="appliance name")
        parser.add_argument("--time-zone", default="UTC")
        parser.add_argument(
            "--host-uri", default=None,
            help="default: this machine's own hypervisor (XENWEB_LOCAL_HYPERVISOR), else the "
            "embedded demo host",
        )
        parser.add_argument("--host-name", default=None)
        parser.add_argument("--no-host", action="store_true", help="enrol no host")

    def handle(self, *args: Any, **opts: Any) -> None:
        if setup_done():
            raise CommandError("Setup is complete already.")
        try:
            with transaction.atomic():  # all or nothing: bad input leaves no half-setup
                user = self._setup(opts)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        except (VirtError, HostError, services.SetupError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Setup complete; administrator '{user}'."))

    def _setup(self, opts: dict[str, Any]) -> Any:
        user = services.create_admin(
            opts["admin_user"], opts["admin_password"], opts["admin_email"]
        )
        services.save_appliance_settings(name=opts["name"], time_zone=opts["time_zone"])
        if not opts["no_host"]:
            default_name, default_uri = services.default_first_host()
            uri = opts["host_uri"] or default_uri
            name = opts["host_name"] or (default_name if opts["host_uri"] is None else "host1")
            services.add_first_host(name=name, uri=uri, user=user)
        services.complete_setup(user=user)
        return user

"""Starting a migration: refused (with every failed check) or queued as a job."""

from __future__ import annotations

from typing import Any

from guests.errors import GuestError
from guests.job_kinds import MIGRATE_KIND
from guests.migration.preflight import MigrationOptions, Preflight, preflight
from guests.models import Guest
from hosts.models import Host
from xenweb.audit.services import record
from xenweb.jobs.models import Job
from xenweb.jobs.services import start_job

MIGRATE_TASK = "guests.tasks.migrate"
MODES = ("live", "paused", "offline", "cold")


class MigrationBlocked(GuestError):
    def __init__(self, checks: Preflight) -> None:
        super().__init__("The migration is blocked: " + checks.summary())
        self.checks = checks


def request_migration(
    guest: Guest, target: Host, *, mode: str = "live", block_copy: bool = False,
    user: Any, request: Any = None, **tuning: Any,
) -> Job:
    """Queue the migration job after a passing preflight (raises MigrationBlocked)."""
    if mode not in MODES:
        raise GuestError(f"Unknown migration mode '{mode}': use {', '.join(MODES)}.")
    checks = preflight(guest, target, MigrationOptions(mode=mode, block_copy=block_copy))
    if not checks.ok:
        record("guest.migrate", user=user, request=request, target=guest, result="refused",
               message=checks.summary(), host=target.name)
        raise MigrationBlocked(checks)

    params = {"target": target.pk, "mode": mode, "block_copy": block_copy,
              **{key: value for key, value in tuning.items() if value is not None}}
    record("guest.migrate", user=user, request=request, target=guest, host=target.name,
           mode=mode)
    return start_job(MIGRATE_TASK, kind=MIGRATE_KIND, owner=user,
                     title=f"Migrate {guest} to {target} ({mode})", target=guest,
                     params=params, request=request, in_process=guest.host.in_process_only)

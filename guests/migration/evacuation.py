"""Evacuating a host: live-migrate every running guest away, each to a target that passes
all preflight checks, and report the guests that could not move and why.

Each guest moves as its own migration job (its lock, progress and page), run one after
the other inside the evacuation job; the biggest guests are placed first, while the most
room is left.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guests.errors import GuestError
from guests.job_kinds import MIGRATE_KIND
from guests.migration.job import migrate_body
from guests.migration.preflight import MigrationOptions, preflight
from guests.models import Guest
from guests.placement.automatic import HEADROOM_MIB, free_memory_mib
from hosts.models import Host
from xenweb.audit.services import record
from xenweb.jobs.errors import JobError
from xenweb.jobs.models import Job, JobState
from xenweb.jobs.progress import ProgressReporter
from xenweb.jobs.runner import run_job
from xenweb.jobs.selectors import require_target
from xenweb.jobs.services import start_job

EVACUATE_KIND = "host.evacuate"
EVACUATE_TASK = "guests.tasks.evacuate"
MOVABLE_STATES = ("running", "blocked", "paused")


@dataclass(frozen=True)
class PlannedMove:
    guest: Guest
    target: Host | None
    reasons: list[str]


def movable_guests(source: Host) -> list[Guest]:
    """The guests an evacuation moves, biggest first (placed while the most room is left)."""
    return list(source.guests.filter(state__in=MOVABLE_STATES, is_privileged=False)
                .order_by("-memory_mib", "name"))


def choose_target(guest: Guest, source: Host, planned: dict[int, int] | None = None,
                  ) -> tuple[Host | None, list[str]]:
    """The host with the most free memory whose preflight passes, or None and why not.
    `planned`: memory (MiB) already promised per host id by a plan being made."""
    planned = planned or {}
    reasons = []

    def room(host: Host) -> int:
        return free_memory_mib(host) - planned.get(host.pk, 0)

    for host in sorted(Host.objects.exclude(pk=source.pk), key=room, reverse=True):
        if planned.get(host.pk) and room(host) < guest.memory_mib + HEADROOM_MIB:
            reasons.append(f"{host}: only {room(host)} MiB free after the guests planned "
                           "there before it.")
            continue
        checks = preflight(guest, host, MigrationOptions(mode="live"))
        if checks.ok:
            return host, []
        reasons.append(f"{host}: {checks.summary()}")
    return None, reasons or ["no other host is enrolled"]


def evacuation_plan(source: Host) -> list[PlannedMove]:
    """Where each guest would go if the evacuation started now: the job's own choice, each
    placement counting the memory of those planned before it. The job chooses again as it
    goes (time passes, guests start and stop)."""
    planned: dict[int, int] = {}
    moves = []
    for guest in movable_guests(source):
        target, reasons = choose_target(guest, source, planned)
        if target is not None:
            planned[target.pk] = planned.get(target.pk, 0) + guest.memory_mib
        moves.append(PlannedMove(guest, target, reasons))
    return moves


def evacuate_host(host: Host, *, maintenance: bool = True, user: Any,
                  request: Any = None) -> Job:
    """Queue the evacuation (after turning maintenance mode on, unless told not to)."""
    running = Job.objects.filter(kind=EVACUATE_KIND, target_type="hosts.host",
                                 target_id=str(host.pk), state__in=(JobState.QUEUED,
                                                                    JobState.RUNNING)).first()
    if running is not None:
        raise JobError(f"{host} is being evacuated already (job #{running.pk}).")
    from hosts.services import set_maintenance

    if maintenance and host.state != Host.State.MAINTENANCE:
        set_maintenance(host, True, user=user, request=request)
    record("host.evacuate", user=user, request=request, target=host)
    return start_job(EVACUATE_TASK, kind=EVACUATE_KIND, owner=user, title=f"Evacuate {host}",
                     target=host, params={"maintenance": maintenance}, request=request,
                     in_process=host.in_process_only)


def evacuate_body(job: Job, reporter: ProgressReporter) -> dict[str, Any]:
    source = require_target(job, Host.objects.all(), gone="The host no longer exists.")
    guests = movable_guests(source)
    reporter.update(0, total=max(1, len(guests)), message=f"{len(guests)} guests to move",
                    force=True)
    moved: list[dict[str, Any]] = []
    stayed: list[dict[str, Any]] = []
    for number, guest in enumerate(guests, start=1):
        target, reasons = choose_target(guest, source)
        if target is None:
            stayed.append({"guest": guest.pk, "name": guest.name, "reasons": reasons})
            reporter.log(f"{guest} stays: {' '.join(reasons)}")
            reporter.update(number, force=True)
            continue
        try:
            child = start_job(None, kind=MIGRATE_KIND, owner=job.owner,
                              title=f"Migrate {guest} to {target} (evacuating {source})",
                              target=guest, params={"target": target.pk, "mode": "live"},
                              enqueue=False)
        except GuestError as exc:  # another job took the guest since its preflight
            stayed.append({"guest": guest.pk, "name": guest.name, "reasons": [str(exc)]})
            reporter.log(f"{guest} stays: {exc}")
            reporter.update(number, force=True)
            continue
        reporter.update(number - 1, force=True,
                        message=f"Moving {guest} to {target} ({number}/{len(guests)}): "
                                f"job #{child.pk}")
        run_job(child.pk, migrate_body, task_id=f"{job.celery_task_id}-{child.pk}",
                worker=job.worker or "evacuation")
        child.refresh_from_db()
        if child.state == JobState.SUCCEEDED:
            moved.append({"guest": guest.pk, "name": guest.name, "host": target.name,
                          "job": child.pk})
        else:
            stayed.append({"guest": guest.pk, "name": guest.name, "job": child.pk,
                           "reasons": [child.error or child.state]})
        reporter.log(f"{guest} → {target}: {child.state}")
        reporter.update(number, force=True)
    summary = f"{len(moved)} moved, {len(stayed)} could not move"
    reporter.update(len(guests), message=summary, force=True)
    return {"host": source.pk, "moved": moved, "stayed": stayed, "summary": summary}

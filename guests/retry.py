"""Starting a failed or interrupted guest or host job again.

A retry is the action again, for the user who asks: it goes through the action's own
service, so it passes every check the first start passed (the target exists and is not
busy, the guest's state allows it, the migration's preflight), and the job's owner is the
user who retried. The permission the action needs is checked before (xenweb.jobs.services
.retry_job, from the task's `Retry`).
"""

from __future__ import annotations

from typing import Any

from guests.errors import GuestError
from guests.models import Guest
from hosts.models import Host
from xenweb.jobs.errors import JobError
from xenweb.jobs.models import Job
from xenweb.jobs.selectors import job_target

# What a migration job's params may carry besides target, mode and block_copy.
MIGRATION_TUNING = ("max_downtime_ms", "bandwidth_mib", "auto_converge", "postcopy")


def _guest(job: Job) -> Guest:
    guest = job_target(job, Guest.objects.select_related("host"))
    if guest is None:
        raise JobError(f"Job #{job.pk}: its guest no longer exists.")
    return guest


def restart_shutdown(job: Job, user: Any, request: Any) -> Job:
    from guests.services import request_action

    params = {"timeout": job.params["timeout"]} if "timeout" in job.params else {}
    try:
        outcome = request_action(_guest(job), "shutdown", user=user, request=request, **params)
    except GuestError as exc:
        raise JobError(str(exc)) from exc
    if not isinstance(outcome, Job):  # the guest is off already: nothing left to repeat
        raise JobError(f"Job #{job.pk}: nothing to repeat.")
    return outcome


def restart_migration(job: Job, user: Any, request: Any) -> Job:
    from guests.migration.services import request_migration

    guest = _guest(job)
    target = Host.objects.filter(pk=job.params.get("target")).first()
    if target is None:
        raise JobError(f"Job #{job.pk}: its target host no longer exists.")
    tuning = {key: job.params[key] for key in MIGRATION_TUNING if key in job.params}
    try:
        return request_migration(guest, target, mode=job.params.get("mode", "live"),
                                 block_copy=bool(job.params.get("block_copy", False)),
                                 user=user, request=request, **tuning)
    except GuestError as exc:
        raise JobError(str(exc)) from exc


def restart_evacuation(job: Job, user: Any, request: Any) -> Job:
    from guests.migration.evacuation import evacuate_host

    host = job_target(job, Host.objects.all())
    if host is None:
        raise JobError(f"Job #{job.pk}: its host no longer exists.")
    return evacuate_host(host, maintenance=bool(job.params.get("maintenance", True)),
                         user=user, request=request)

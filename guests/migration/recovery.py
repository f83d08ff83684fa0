"""A migration job whose worker died: abort what libvirt may still be copying (where the
driver can), then point the guest's row at the one host that runs it."""

from __future__ import annotations

import logging
import time
from typing import Any

from guests.job_kinds import MIGRATE_KIND
from guests.migration.job import settle
from guests.models import Guest
from hosts.models import Host
from hosts.virt import migration as vm
from xenweb.jobs.models import Job
from xenweb.jobs.selectors import job_target
from xenweb.jobs.signals import job_interrupted

log = logging.getLogger(__name__)
ABORT_WAIT_SECONDS = 30.0


def recover(job: Job) -> None:
    guest = job_target(job, Guest.objects.select_related("host"))
    target = Host.objects.filter(pk=job.params.get("target")).first()
    if guest is None or target is None:
        return
    source = guest.host
    host, uuid = source.virt_target, str(guest.uuid)
    try:
        stats = vm.job_stats(host, uuid)
        if stats is not None and stats.active and vm.features_for(
                source.hypervisor_type).abort:
            vm.abort(host, uuid)
            deadline = time.monotonic() + ABORT_WAIT_SECONDS
            while time.monotonic() < deadline:
                stats = vm.job_stats(host, uuid)
                if stats is None or not stats.active:
                    break
                time.sleep(0.2)
        settle(guest, source, target)
    except Exception:  # the next inventory round settles it; never break the reaper
        log.exception("after interrupted migration job %s of %s", job.pk, guest)


def _on_interrupted(sender: Any, job: Job, **kwargs: Any) -> None:
    if job.kind == MIGRATE_KIND:
        recover(job)


def connect() -> None:
    job_interrupted.connect(_on_interrupted, dispatch_uid="guests.migration.recovery")

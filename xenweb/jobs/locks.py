"""The per-object lock: at most one active exclusive job per target, kept by the database.

A job with a target (a guest, a volume, a host) is exclusive unless its kind only reads
(models.SHARED_KINDS). The partial unique index `jobs_one_active_exclusive_job_per_target`
(models.Job.Meta) admits one queued or running exclusive job per (target_type, target_id):
a second insert fails in the database whatever the processes and the timing, and is
answered as the target's app answers a busy object (the model's `busy_error`, a 409 in
its views). A job leaves the lock by leaving the active states: succeeded, failed,
cancelled, interrupted (the reaper's too).

Actions that run in the request instead of as a job (deleting a guest or a volume,
resizing a volume, a guest's quick actions, snapshots taken, reverted or deleted at once)
take the same lock for as long as they run (`hold`): a running row, removed afterwards.
The apps' pre-checks (`busy_job`) stay for their friendly answers before anything is
done; this is what makes them true.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from xenweb.jobs.errors import JobRefused
from xenweb.jobs.models import ACTIVE_STATES, Job, JobState, is_exclusive
from xenweb.jobs.runner import Heartbeat

WORKER = f"{socket.gethostname()}/web"
# An insert refused by a holder that finished before it could be named is tried again.
ATTEMPTS = 3


def target_key(target: models.Model) -> tuple[str, str]:
    return target._meta.label_lower, str(target.pk)


def active_job(target: models.Model, *, exclusive_only: bool = False) -> Job | None:
    """The object's queued or running job (the one holding its lock, if any), else None."""
    target_type, target_id = target_key(target)
    jobs = Job.objects.filter(target_type=target_type, target_id=target_id,
                              state__in=ACTIVE_STATES)
    if exclusive_only:
        jobs = jobs.filter(exclusive=True)
    return jobs.order_by("-exclusive", "created_at", "id").first()


def _refusal(target: models.Model, message: str) -> Exception:
    error = getattr(type(target), "busy_error", JobRefused)
    return error(message)


def busy(target: models.Model, holder: Job) -> Exception:
    """The refusal its app gives for an object a job works on (what `busy_job` says)."""
    noun = str(target._meta.verbose_name).capitalize()
    return _refusal(target, f"{noun} '{target}' is busy with job #{holder.pk} "
                            f"({holder.title}); wait for it to finish.")


def create_job(target: models.Model | None, **fields: Any) -> Job:
    """The one way job rows are made: inserted in a savepoint (a refusal leaves the
    caller's transaction usable), the lock's IntegrityError answered with `busy`.

    An exclusive job whose target was deleted while it waited for the lock (the delete
    held it) is refused too: it would only fail later."""
    if target is not None:
        target_type, target_id = target_key(target)
        fields.update(target_type=target_type, target_id=target_id,
                      target_label=str(target)[:255])
    if target is None or not is_exclusive(fields.get("kind", ""), fields["target_type"]):
        return Job.objects.create(**fields)
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with transaction.atomic():
                job = Job.objects.create(**fields)
            break
        except IntegrityError as exc:
            holder = active_job(target, exclusive_only=True)
            if holder is not None:
                raise busy(target, holder) from exc
            if attempt == ATTEMPTS:  # no holder to be seen: not the lock that refused
                raise
    if not type(target)._default_manager.filter(pk=target.pk).exists():
        Job.objects.filter(pk=job.pk).delete()
        noun = str(target._meta.verbose_name).capitalize()
        raise _refusal(target, f"{noun} '{target}' no longer exists.")
    return job


@contextmanager
def hold(target: models.Model, *, kind: str, title: str, owner: Any = None) -> Iterator[Job]:
    """The object's lock for an action that runs here and now: a running row (with a
    heartbeat, so that the reaper frees it should this process die), removed at the end.

    Raises the target's busy refusal while another exclusive job works on it."""
    now = timezone.now()
    job = create_job(
        target, kind=kind, title=title, message=title, state=JobState.RUNNING,
        owner=owner if getattr(owner, "is_authenticated", False) else None,
        started_at=now, heartbeat_at=now, worker=WORKER, cancellable=False,
        celery_task_id=f"request-{uuid.uuid4()}",
    )
    heartbeat = Heartbeat(job.pk)
    heartbeat.start()
    try:
        yield job
    finally:
        heartbeat.stop()
        Job.objects.filter(pk=job.pk).delete()

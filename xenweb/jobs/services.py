"""Starting, cancelling and reaping jobs."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import connection, models, transaction
from django.utils import timezone

from xenweb.audit.services import record
from xenweb.jobs import dispatch, locks
from xenweb.jobs.errors import JobError
from xenweb.jobs.models import Job, JobState
from xenweb.jobs.notify import notify_job
from xenweb.jobs.registry import retry_rule, task_named
from xenweb.jobs.runner import WORKER_LOST, mark_interrupted
from xenweb.jobs.visibility import can_cancel, can_view


def start_job(
    task: str | None,
    *,
    kind: str,
    owner: Any,
    title: str = "",
    target: models.Model | None = None,
    params: dict[str, Any] | None = None,
    unit: str = Job.Unit.STEPS,
    total: int | None = None,
    request: Any = None,
    queue: str | None = None,
    in_process: bool = False,
    enqueue: bool = True,
) -> Job:
    """Create the job row and enqueue the task named `task` once the transaction commits.

    `task` is a registered Celery task name (xenweb.jobs.registry); None makes a row for a
    job that a running job drives itself (an evacuation's migrations).

    An exclusive job on a target another exclusive job holds is refused by the database
    (xenweb.jobs.locks): the target's busy refusal is raised and nothing is enqueued.

    `queue` routes the task to the workers of one place (a host's own queue);
    `in_process` runs it in a thread of this process instead (the demo host, whose state
    only this process sees); without `enqueue` the caller runs it (a job's own sub-jobs).
    """
    if task is not None:
        task_named(task)  # an unknown name fails here, before any row exists
    task_id = str(uuid.uuid4())
    job = locks.create_job(
        target,
        kind=kind,
        title=title or kind,
        owner=owner if getattr(owner, "is_authenticated", False) else None,
        params=params or {},
        unit=unit,
        total=total,
        celery_task_id=task_id,
        task_name=task or "",
        message="Waiting for a worker",
    )
    record("job.start", user=owner, request=request, target=job, kind=kind)
    if not enqueue:
        return job
    if in_process:
        transaction.on_commit(lambda: _run_here(task, job.pk, task_id))
    else:
        options = {"queue": queue} if queue else {}
        transaction.on_commit(lambda: dispatch.send(job, options))
    return job


def start_inline_job(
    kind: str,
    target: models.Model,
    *,
    owner: Any,
    title: str,
    request: Any = None,
    params: dict[str, Any] | None = None,
    unit: str = Job.Unit.BYTES,
    total: int | None = None,
) -> Job:
    """The row of a job that the request itself runs (an upload or download streams through
    the web process): no task, the target's lock taken like any exclusive job's."""
    job = locks.create_job(
        target, kind=kind, title=title,
        owner=owner if getattr(owner, "is_authenticated", False) else None,
        params=params or {}, unit=unit, total=total, message="Starting",
        celery_task_id=f"request-{uuid.uuid4()}",
    )
    record("job.start", user=owner, request=request, target=job, kind=kind)
    return job


def _run_here(task: str, job_id: int, task_id: str) -> None:
    def run() -> None:
        try:
            task_named(task).apply(args=[job_id], task_id=task_id)
        finally:
            connection.close()  # the thread's own; nothing else would close it

    threading.Thread(target=run, name=f"job-{job_id}", daemon=True).start()


def cancel_job(job: Job, *, user: Any, request: Any = None) -> Job:
    """Cancel a queued job at once; ask a running one to stop at its next progress report.

    Only its owner or an administrator may (xenweb.jobs.visibility.can_cancel); others get
    PermissionDenied (403)."""
    if not can_cancel(user, job):
        record("job.cancel", user=user, request=request, target=job, result="refused",
               message="not the job's owner")
        raise PermissionDenied("Only the job's owner or an administrator can cancel it.")
    if not job.is_active:
        raise JobError(f"Job #{job.pk} has already finished ({job.state}).")
    if job.state == JobState.RUNNING and not job.cancellable:
        raise JobError(
            f"Job #{job.pk} cannot be cancelled: {job.message or 'the hypervisor cannot abort it'}."
        )
    now = timezone.now()
    stopped_before_start = Job.objects.filter(pk=job.pk, state=JobState.QUEUED).update(
        state=JobState.CANCELLED, cancel_requested=True, finished_at=now, message="Cancelled"
    )
    if not stopped_before_start:
        Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(
            cancel_requested=True, message="Cancelling…"
        )
    job.refresh_from_db()
    record("job.cancel", user=user, request=request, target=job)
    notify_job(job)
    return job


def reap_stale_jobs(*, stale_after: float | None = None) -> list[int]:
    """Mark running jobs whose worker stopped sending heartbeats as interrupted."""
    seconds = settings.JOB_STALE_SECONDS if stale_after is None else stale_after
    limit = timezone.now() - timedelta(seconds=seconds)
    reaped = []
    for job in Job.objects.filter(state=JobState.RUNNING, heartbeat_at__lt=limit):
        since = timezone.localtime(job.heartbeat_at).strftime("%Y-%m-%d %H:%M:%S %Z")
        reason = f"no heartbeat from worker {job.worker or '?'} since {since}"
        mark_interrupted(job, WORKER_LOST.format(reason=reason))
        reaped.append(job.pk)
    return reaped


def interrupt_jobs_of_worker(worker: str, reason: str) -> list[int]:
    """A worker that (re)starts cannot be running anything: its old jobs died with it."""
    jobs = list(Job.objects.filter(state=JobState.RUNNING, worker=worker))
    for job in jobs:
        mark_interrupted(job, WORKER_LOST.format(reason=reason))
    return [job.pk for job in jobs]


def retry_job(job: Job, *, user: Any, request: Any = None) -> Job:
    """A new job doing what a failed or interrupted one set out to do, where that is safe.

    A retry is the job's action again, by this user: it needs the permission that action
    needs and passes the action's own checks (Retry.restart), whoever started the job.
    Raises PermissionDenied (403) or JobError (409)."""
    if not can_view(user, job):
        raise PermissionDenied("You cannot see this job.")
    if job.state not in (JobState.FAILED, JobState.INTERRUPTED):
        raise JobError(f"Job #{job.pk} is {job.state}: only a failed or interrupted job can "
                       "be started again.")
    rule = retry_rule(job.task_name)
    if rule is None:
        raise JobError(f"Job #{job.pk} ({job.kind}) is not safe to repeat automatically: "
                       "check its target and start the action again yourself.")
    if not user.has_perm(rule.permission):
        record("job.retry", user=user, request=request, target=job, result="refused",
               message=f"needs {rule.permission}")
        raise PermissionDenied(f"Your role does not allow repeating job #{job.pk} "
                               f"({job.kind}).")
    if rule.restart is not None:
        retried = rule.restart(job, user, request)
    elif job.target_type:
        raise JobError(f"Job #{job.pk} ({job.kind}) has a target: start the action again "
                       "yourself.")
    else:
        retried = start_job(job.task_name, kind=job.kind, owner=user,
                            title=job.title, params=job.params, unit=job.unit,
                            total=job.total, request=request)
    record("job.retry", user=user, request=request, target=job, new_job=retried.pk)
    return retried

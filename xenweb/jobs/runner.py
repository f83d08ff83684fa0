"""Running a job's body inside a Celery task: claim, heartbeat, outcome.

A job runs at most once. The claim is a conditional update from queued to running;
a redelivered message (the worker died, the broker handed it out again) finds the job
running or finished and never runs the body a second time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from xenweb.jobs.errors import JobCancelled, JobError
from xenweb.jobs.models import Job, JobState
from xenweb.jobs.notify import notify_job
from xenweb.jobs.progress import ProgressReporter
from xenweb.jobs.signals import job_failed, job_interrupted

log = logging.getLogger(__name__)

JobBody = Callable[[Job, ProgressReporter], Any]

WORKER_LOST = (
    "The worker running this job stopped ({reason}). The job was not restarted "
    "automatically; check the target's state and start it again if needed."
)


class Heartbeat(threading.Thread):
    """Touches the job row while the body runs, even through long silent steps."""

    def __init__(self, job_id: int) -> None:
        super().__init__(name=f"job-{job_id}-heartbeat", daemon=True)
        self.job_id = job_id
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(settings.JOB_HEARTBEAT_SECONDS):
                try:
                    Job.objects.filter(pk=self.job_id, state=JobState.RUNNING).update(
                        heartbeat_at=timezone.now()
                    )
                except DatabaseError as exc:
                    # A busy database (SQLite's "database is locked") only delays this beat;
                    # the job is judged lost after several missed beats, not one.
                    log.warning("job %s: heartbeat not written: %s", self.job_id, exc)
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=5)


def claim(job_id: int, *, task_id: str, worker: str) -> Job | None:
    """Move the job from queued to running, or explain why not and return None."""
    now = timezone.now()
    claimed = Job.objects.filter(pk=job_id, state=JobState.QUEUED).update(
        state=JobState.RUNNING, started_at=now, heartbeat_at=now, worker=worker,
        celery_task_id=task_id, message="Started",
    )
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        log.warning("job %s vanished before it ran", job_id)
        return None
    if claimed:
        notify_job(job)
        return job
    if job.state == JobState.RUNNING and job.celery_task_id == task_id:
        mark_interrupted(job, WORKER_LOST.format(reason="its task was delivered again"))
    elif job.state == JobState.RUNNING:
        log.warning("job %s: ignoring task %s, the job runs as task %s", job_id, task_id,
                    job.celery_task_id)
    return None


def finish(job: Job, state: str, **fields: Any) -> None:
    fields.setdefault("finished_at", timezone.now())
    updated = Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(state=state, **fields)
    job.refresh_from_db()
    if updated:
        notify_job(job, seq=1 << 30)
        if state in (JobState.FAILED, JobState.INTERRUPTED):
            job_failed.send(sender=Job, job=job)


def mark_interrupted(job: Job, reason: str) -> None:
    finish(job, JobState.INTERRUPTED, error=reason, message="Interrupted")
    if job.state == JobState.INTERRUPTED:
        job_interrupted.send(sender=Job, job=job)


def _log_detail(reporter: ProgressReporter, exc: BaseException) -> None:
    """The raw words of the error behind a failure (libvirt's, kept in a `detail`
    attribute), into the job's log when its message says them otherwise."""
    seen: BaseException | None = exc
    while seen is not None:
        detail = getattr(seen, "detail", None)
        if isinstance(detail, str) and detail and detail not in str(exc):
            reporter.log(f"The hypervisor said: {detail}")
            return
        seen = seen.__cause__


def run_job(job_id: int, body: JobBody, *, task_id: str, worker: str) -> None:
    job = claim(job_id, task_id=task_id, worker=worker)
    if job is None:
        return
    reporter = ProgressReporter(job)
    heartbeat = Heartbeat(job.pk)
    heartbeat.start()
    try:
        result = body(job, reporter)
    except JobCancelled:
        reporter.log("Cancelled by request")
        finish(job, JobState.CANCELLED, message="Cancelled", log=reporter.job.log)
    except SoftTimeLimitExceeded:
        limit = settings.CELERY_TASK_SOFT_TIME_LIMIT
        finish(job, JobState.FAILED, error=f"The job ran longer than {limit} s and was stopped.",
               message="Failed", log=reporter.job.log)
    except JobError as exc:
        _log_detail(reporter, exc)
        finish(job, JobState.FAILED, error=str(exc), message="Failed", log=reporter.job.log)
    except Exception as exc:
        log.exception("job %s failed", job.pk)
        finish(job, JobState.FAILED, error=f"Internal error: {exc.__class__.__name__}: {exc}",
               message="Failed", log=reporter.job.log)
    else:
        done = job.total if job.total else job.done
        finish(job, JobState.SUCCEEDED, result=result, progress=1.0, done=done,
               eta_seconds=0, message="Done", log=reporter.job.log)
    finally:
        heartbeat.stop()

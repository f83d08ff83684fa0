"""Reading a job's target: the row it acts on, of the kind the job body expects."""

from __future__ import annotations

from typing import TypeVar

from django.db import models

from xenweb.jobs.errors import JobError
from xenweb.jobs.models import Job

M = TypeVar("M", bound=models.Model)


def job_target(job: Job, rows: models.QuerySet[M]) -> M | None:
    """The job's target as a row of `rows` (a queryset of the model the job acts on), or
    None when it is gone or the job's target is another kind of object."""
    if not job.target_id or job.target_type != rows.model._meta.label_lower:
        return None
    return rows.filter(pk=job.target_id).first()


def require_target(job: Job, rows: models.QuerySet[M], *, gone: str) -> M:
    """job_target, or JobError(gone) for a job body that cannot go on without it."""
    target = job_target(job, rows)
    if target is None:
        raise JobError(gone)
    return target

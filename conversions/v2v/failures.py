"""How a V2V job body ends on an error: audited, then raised as the job runner expects."""

from __future__ import annotations

from typing import Any, NoReturn

from xenweb.audit.services import record
from xenweb.jobs.errors import JobCancelled, JobError
from xenweb.jobs.models import Job


def fail(job: Job, action: str, exc: Exception, outcome: str, **fields: Any) -> NoReturn:
    """Record `action` as failed (or cancelled) for the job; a cancel or a JobError is raised
    as it is, anything else as a JobError whose message ends with `outcome`."""
    cancelled = isinstance(exc, JobCancelled)
    record(action, user=job.owner, target=job, result="failed",
           message="cancelled" if cancelled else str(exc), **fields)
    if cancelled or isinstance(exc, JobError):
        raise exc
    raise JobError(f"{exc} {outcome}") from exc

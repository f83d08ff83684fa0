"""`job_task`: turn a plain function `body(job, reporter) -> result` into a Celery task.

The task takes only the job's id (a task loads rows, calls one service).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import shared_task

from xenweb.jobs.models import Job
from xenweb.jobs.runner import JobBody, run_job

# Repeats a job's action for a user through the action's own service (which does the
# object-level checks the first start did: the target exists, is not busy, preflight…)
# and returns the new job; raises JobError when the action is refused.
Restart = Callable[[Job, Any, Any], Job]


@dataclass(frozen=True)
class Retry:
    """How a failed or interrupted job may be started again (retry_job)."""

    # The permission the original action needs (the API view's `action_permissions`
    # entry): a retry is that action again, so the retrying user needs it too.
    permission: str
    # None: the same task with the same params (only for jobs without a target).
    restart: Restart | None = None


# Tasks a failed or interrupted job may be started again with (they check the state they
# find first, so a second run cannot do harm), and what a retry needs.
RETRYABLE: dict[str, Retry] = {}


def job_task(name: str, *, retry: Retry | None = None, retry_safe: bool = False) -> Any:
    if retry_safe and retry is None:
        raise TypeError(f"{name}: a repeatable task names the permission its action needs "
                        "(retry=Retry(permission=…)), retry_safe alone is not enough")
    if retry is not None:
        RETRYABLE[name] = retry

    def decorate(body: JobBody) -> Any:
        @shared_task(name=name, bind=True, acks_late=True, reject_on_worker_lost=True)
        def task(self: Any, job_id: int) -> None:
            run_job(job_id, body, task_id=self.request.id or "", worker=self.request.hostname or "")

        task.body = body
        return task

    return decorate

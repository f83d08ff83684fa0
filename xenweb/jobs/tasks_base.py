"""`job_task`: turn a plain function `body(job, reporter) -> result` into a Celery task.

The task takes only the job's id (a task loads rows, calls one service).
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from xenweb.jobs.runner import JobBody, run_job

# Tasks a failed or interrupted job may simply be started again with (they check the
# state they find first, so a second run cannot do harm).
RETRY_SAFE: set[str] = set()


def job_task(name: str, *, retry_safe: bool = False) -> Any:
    if retry_safe:
        RETRY_SAFE.add(name)

    def decorate(body: JobBody) -> Any:
        @shared_task(name=name, bind=True, acks_late=True, reject_on_worker_lost=True)
        def task(self: Any, job_id: int) -> None:
            run_job(job_id, body, task_id=self.request.id or "", worker=self.request.hostname or "")

        task.body = body
        return task

    return decorate

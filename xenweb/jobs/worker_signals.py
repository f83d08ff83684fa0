"""Worker-side reconciliation: jobs whose worker process died are not left running."""

from __future__ import annotations

import logging
from typing import Any

from billiard.exceptions import WorkerLostError
from celery.signals import task_failure, worker_ready

log = logging.getLogger(__name__)


@worker_ready.connect
def _interrupt_orphans(sender: Any = None, **kwargs: Any) -> None:
    from xenweb.jobs.services import interrupt_jobs_of_worker, reap_stale_jobs

    hostname = getattr(sender, "hostname", "")
    if hostname:
        interrupt_jobs_of_worker(hostname, "the worker was restarted")
    reap_stale_jobs()


@task_failure.connect
def _worker_process_lost(
    sender: Any = None, task_id: str = "", exception: Any = None, args: Any = None, **kw: Any
) -> None:
    if not isinstance(exception, WorkerLostError) or not args:
        return
    from xenweb.jobs.models import Job
    from xenweb.jobs.runner import WORKER_LOST, mark_interrupted

    job = Job.objects.filter(pk=args[0]).first()
    if job is not None:
        mark_interrupted(job, WORKER_LOST.format(reason=f"its process died: {exception}"))

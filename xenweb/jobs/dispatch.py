"""Sending a job's task to the broker, and sending it later when the broker is down.

Redis may be unreachable when a job is created (restarted, out of memory). The job row is
kept (queued, saying why it waits), the request does not fail, and the message is sent
once the broker answers again: by a thread of this process that retries, and by the
periodic `redispatch_pending_jobs` task of beat should this process end first.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import current_app
from django.db import connection
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from xenweb.jobs.models import Job, JobState
from xenweb.jobs.notify import notify_job

log = logging.getLogger(__name__)

BROKER_ERRORS = (OperationalError, RedisConnectionError, RedisTimeoutError, OSError)
WAITING = ("Waiting for the message broker (Redis is unreachable): the job starts once it "
           "is back")
RETRY_SECONDS = 2.0


def send(job: Job, options: dict[str, Any]) -> bool:
    """Send the job's task now; on a broker failure mark it pending and retry in the
    background. Returns whether it was sent."""
    try:
        current_app.send_task(job.task_name, args=[job.pk], task_id=job.celery_task_id,
                              **options)
    except BROKER_ERRORS as exc:
        log.warning("job %s: the broker is unreachable (%s); it will be sent later", job.pk, exc)
        Job.objects.filter(pk=job.pk, state=JobState.QUEUED).update(
            dispatch_pending=True, message=WAITING)
        job.refresh_from_db()
        notify_job(job)
        _retrier.wake(options)
        return False
    return True


def redispatch_pending(options: dict[str, Any] | None = None) -> list[int]:
    """Send every queued job whose message is still pending; stops at the first broker
    failure. Returns the jobs sent."""
    sent = []
    for job in Job.objects.filter(dispatch_pending=True, state=JobState.QUEUED):
        try:
            current_app.send_task(job.task_name, args=[job.pk], task_id=job.celery_task_id,
                                  **(options or {}))
        except BROKER_ERRORS:
            break
        Job.objects.filter(pk=job.pk).update(dispatch_pending=False,
                                             message="Waiting for a worker")
        sent.append(job.pk)
    return sent


class _Retrier:
    """One background thread per process, alive while jobs wait for the broker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._options: dict[str, Any] = {}

    def wake(self, options: dict[str, Any]) -> None:
        with self._lock:
            self._options = options
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="job-redispatch",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        stop = threading.Event()
        try:
            while not stop.wait(RETRY_SECONDS):
                redispatch_pending(self._options)
                if not Job.objects.filter(dispatch_pending=True,
                                          state=JobState.QUEUED).exists():
                    return
        finally:
            connection.close()


_retrier = _Retrier()

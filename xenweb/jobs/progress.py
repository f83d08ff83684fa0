"""The one helper a task uses to report progress.

`update()` may be called as often as the work loop likes: the row is written and a
hint broadcast at most every JOB_PROGRESS_INTERVAL seconds (and always on `force`).
Every write also refreshes the heartbeat and reads the cancel flag, so a long loop
that reports progress is cancellable for free.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from xenweb.jobs.errors import JobCancelled
from xenweb.jobs.models import Job, JobState
from xenweb.jobs.notify import notify_job

LOG_LINES_KEPT = 500


class RateMeter:
    """Units per second, smoothed so a single slow write does not swing the ETA."""

    def __init__(self, smoothing: float = 0.3) -> None:
        self.smoothing = smoothing
        self.rate: float | None = None
        self._last: tuple[float, int] | None = None

    def sample(self, now: float, done: int) -> float | None:
        if self._last is not None:
            then, before = self._last
            elapsed = now - then
            if elapsed <= 0 or done < before:
                return self.rate
            instant = (done - before) / elapsed
            self.rate = (
                instant
                if self.rate is None
                else self.smoothing * instant + (1 - self.smoothing) * self.rate
            )
        self._last = (now, done)
        return self.rate


class ProgressReporter:
    def __init__(self, job: Job, *, interval: float | None = None) -> None:
        self.job = job
        self.interval = settings.JOB_PROGRESS_INTERVAL if interval is None else interval
        self.meter = RateMeter()
        self.seq = 0
        self._last_write: float | None = None  # the first update is always written
        self._dirty = False

    # -- what a task calls --------------------------------------------------------------
    def update(
        self,
        done: int,
        total: int | None = None,
        message: str | None = None,
        *,
        unit: str | None = None,
        force: bool = False,
    ) -> None:
        job = self.job
        if total is not None:
            job.total = total
        if unit is not None:
            job.unit = unit
        if message is not None:
            job.message = message[:500]
        job.done = done
        if job.total:
            job.progress = max(0.0, min(1.0, done / job.total))
        now = time.monotonic()
        job.rate = self.meter.sample(now, done)
        if job.rate and job.total:
            job.eta_seconds = max(0.0, (job.total - done) / job.rate)
        self._dirty = True
        if force or self._last_write is None or now - self._last_write >= self.interval:
            self.flush()

    def log(self, line: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # shown in the appliance's zone
        self.job.log = [*(self.job.log or []), [stamp, line]][-LOG_LINES_KEPT:]
        self._dirty = True

    def check_cancelled(self) -> None:
        """Raise JobCancelled if the user asked to cancel (reads the row)."""
        if Job.objects.filter(pk=self.job.pk, cancel_requested=True).exists():
            raise JobCancelled()

    def configure(self, *, cancellable: bool | None = None, estimated: bool | None = None) -> None:
        if cancellable is not None:
            self.job.cancellable = cancellable
        if estimated is not None:
            self.job.estimated = estimated
        self._dirty = True

    # -- persistence ------------------------------------------------------------------------
    def flush(self) -> None:
        if not self._dirty:
            return
        job = self.job
        job.heartbeat_at = timezone.now()
        fields = self._fields()
        written = Job.objects.filter(pk=job.pk, state=JobState.RUNNING).update(**fields)
        self._last_write = time.monotonic()
        self._dirty = False
        self.seq += 1
        notify_job(job, seq=self.seq)
        if written and Job.objects.filter(pk=job.pk, cancel_requested=True).exists():
            job.cancel_requested = True
            raise JobCancelled()

    def _fields(self) -> dict[str, Any]:
        job = self.job
        names = (
            "progress", "done", "total", "unit", "rate", "eta_seconds", "message", "log",
            "heartbeat_at", "cancellable", "estimated",
        )
        return {name: getattr(job, name) for name in names}

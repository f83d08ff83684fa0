from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.urls import reverse

from xenweb.jobs.display import appliance_zone, log_time


class JobState(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"
    # The worker running it died or lost contact; a failure the operator may retry.
    INTERRUPTED = "interrupted", "interrupted"


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING)
FINAL_STATES = (
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.INTERRUPTED,
)

# Kinds that only read their target: any number may run on one object, beside each other
# and beside an exclusive job (xenweb.jobs.locks). Every other job with a target is
# exclusive: a new kind is locked unless it is named here.
SHARED_KINDS = frozenset({
    "volume.download",
    "guest.export",  # reads the guest's disks
    "guest.import",  # its target is the pool it creates new volumes in
})
ONE_ACTIVE_EXCLUSIVE_JOB = "jobs_one_active_exclusive_job_per_target"


def is_exclusive(kind: str, target_type: str) -> bool:
    return bool(target_type) and kind not in SHARED_KINDS


class Job(models.Model):
    """A long action: the row is the truth, websocket messages are only hints."""

    class Unit(models.TextChoices):
        BYTES = "bytes", "bytes"
        STEPS = "steps", "steps"

    kind = models.CharField(max_length=64, db_index=True)
    title = models.CharField(max_length=255, blank=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=255, blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    params = models.JSONField(default=dict, blank=True)

    state = models.CharField(
        max_length=12, choices=JobState.choices, default=JobState.QUEUED, db_index=True
    )
    progress = models.FloatField(default=0.0)  # 0..1
    done = models.BigIntegerField(default=0)
    total = models.BigIntegerField(null=True, blank=True)
    unit = models.CharField(max_length=8, choices=Unit.choices, default=Unit.STEPS)
    rate = models.FloatField(null=True, blank=True)  # units per second
    eta_seconds = models.FloatField(null=True, blank=True)
    estimated = models.BooleanField(default=False)  # progress is an estimate (Xen migration)
    cancellable = models.BooleanField(default=True)
    message = models.CharField(max_length=500, blank=True)
    log = models.JSONField(default=list, blank=True)  # [[iso time, line], ...], capped
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    cancel_requested = models.BooleanField(default=False)

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True)
    # The Celery task that runs it, and whether its message still has to be sent (the
    # broker was unreachable when the job was created: it is sent once Redis is back).
    task_name = models.CharField(max_length=128, blank=True)
    dispatch_pending = models.BooleanField(default=False, db_index=True)
    worker = models.CharField(max_length=255, blank=True)
    # Holds its target's lock while queued or running (set on creation: is_exclusive).
    exclusive = models.BooleanField(default=False, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        # cancel_job: one's own jobs (operators); the two below are the administrators'
        # (xenweb.accounts.roles keeps them from operators; xenweb.jobs.visibility).
        permissions = [("cancel_job", "Can cancel own jobs"),
                       ("view_all_jobs", "Can see every user's jobs"),
                       ("cancel_any_job", "Can cancel every user's jobs")]
        indexes = [models.Index(fields=["target_type", "target_id", "state"])]
        # The per-object lock: one queued or running exclusive job per target, kept by the
        # database whatever the processes and the timing (xenweb.jobs.locks).
        constraints = [models.UniqueConstraint(
            fields=["target_type", "target_id"],
            condition=models.Q(exclusive=True,
                               state__in=[state.value for state in ACTIVE_STATES]),
            name=ONE_ACTIVE_EXCLUSIVE_JOB,
        )]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title or self.kind}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self._state.adding:  # however the row is made, it takes the lock it needs
            self.exclusive = is_exclusive(self.kind, self.target_type)
        super().save(*args, **kwargs)

    def get_absolute_url(self) -> str:
        return reverse("jobs:detail", args=[self.pk])

    @property
    def can_retry(self) -> bool:
        """Failed or interrupted, and its task is safe to run again (see tasks_base)."""
        from xenweb.jobs.registry import retry_rule

        return self.state in (JobState.FAILED, JobState.INTERRUPTED) and \
            retry_rule(self.task_name) is not None

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def log_lines(self) -> list[str]:
        """The log with its times in the appliance's time zone."""
        zone = appliance_zone()
        return [f"{log_time(stamp, zone)} {line}" for stamp, line in (self.log or [])]

    @property
    def percent(self) -> int:
        return round(self.progress * 100)

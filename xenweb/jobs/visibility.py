"""Who sees and cancels which job: the one rule for every place a job is read.

- A user sees the jobs they own.
- `jobs.view_all_jobs` (administrators) sees every job.
- Another user's job is seen by whoever may act on its target: a job on a guest by those
  holding `guests.change_guest`, on a volume `storage.change_volume`, on a host
  `hosts.change_host`, i.e. operators see guest and storage jobs of others, not host jobs
  (evacuations) nor jobs without a target (self-tests, P2V).
- Viewers act on nothing: they see their own jobs only.
- Cancel: the owner (with `jobs.cancel_job`) or `jobs.cancel_any_job` (administrators).

The API list and detail, the job pages, the dashboard, the guest and pool pages, the job
websocket and the events websocket's job summaries all go through these functions.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from xenweb.jobs.models import Job
from xenweb.realtime import all_jobs_group, job_target_group, user_group

VIEW_ALL = "jobs.view_all_jobs"
CANCEL_ANY = "jobs.cancel_any_job"
CHANGE_PREFIX = "change_"


def _may_use_jobs(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.is_active
                and user.has_perm("jobs.view_job"))


def operable_target_types(user: Any) -> set[str]:
    """The target types ('guests.guest', 'storage.volume'…) whose objects the user may
    change: another user's job on such an object is visible to them."""
    types = set()
    for perm in user.get_all_permissions():
        app_label, _, codename = perm.partition(".")
        if codename.startswith(CHANGE_PREFIX):
            types.add(f"{app_label}.{codename[len(CHANGE_PREFIX):]}")
    return types


def visible_jobs(user: Any, queryset: QuerySet[Job] | None = None) -> QuerySet[Job]:
    jobs = Job.objects.all() if queryset is None else queryset
    if not _may_use_jobs(user):
        return jobs.none()
    if user.has_perm(VIEW_ALL):
        return jobs
    return jobs.filter(Q(owner=user) | Q(target_type__in=sorted(operable_target_types(user))))


def can_view(user: Any, job: Job) -> bool:
    if not _may_use_jobs(user):
        return False
    if user.has_perm(VIEW_ALL) or (job.owner_id is not None and job.owner_id == user.pk):
        return True
    return bool(job.target_type) and job.target_type in operable_target_types(user)


def can_cancel(user: Any, job: Job) -> bool:
    if not (can_view(user, job) and user.has_perm("jobs.cancel_job")):
        return False
    return (job.owner_id is not None and job.owner_id == user.pk) or user.has_perm(CANCEL_ANY)


def can_retry(user: Any, job: Job) -> bool:
    """Whether to offer "Start again": retry_job itself checks all of this again."""
    from xenweb.jobs.registry import retry_rule

    rule = retry_rule(job.task_name)
    return (job.can_retry and rule is not None and can_view(user, job)
            and user.has_perm("jobs.add_job") and user.has_perm(rule.permission))


def audience(job: Job) -> list[str]:
    """The channel groups a job's summary goes to: exactly the users who can see it."""
    groups = [all_jobs_group()]
    if job.owner_id:
        groups.append(user_group(job.owner_id))
    if job.target_type:
        groups.append(job_target_group(job.target_type))
    return groups


def summary_groups_for(user: Any) -> list[str]:
    """The groups whose job summaries the user's `/ws/events/` socket receives (besides
    the user's own group, which carries their own jobs)."""
    if not _may_use_jobs(user):
        return []
    if user.has_perm(VIEW_ALL):
        return [all_jobs_group()]
    return [job_target_group(label) for label in sorted(operable_target_types(user))]

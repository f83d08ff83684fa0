"""A retry never replays a stored host path (independent check of issue 18): jobs created
by an older version carry `path` (save/restore) or `kernel`/`initrd` params; none of them is
repeated with its params. Save, restore, snapshots, clones, imports and P2V are not
repeatable at all; the repeatable ones go through their action's own service, which takes
only its own, named params; an old save or restore job still queued ignores its `path`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from conversions.tasks import export_task, import_task, p2v_task
from guests.models import Guest
from guests.tasks import guest_migrate, guest_restore, guest_save, guest_shutdown
from hosts.models import Host
from storage.tasks import clone_task, wipe_task
from tests.conftest import logged_in
from tests.security.test_job_access import new_job, post
from xenweb.jobs.models import Job, JobState
from xenweb.jobs.runner import run_job
from xenweb.jobs.tasks_base import RETRYABLE

pytestmark = pytest.mark.django_db
HOSTILE = {"path": "/etc/shadow", "kernel": "/boot/vmlinuz", "initrd": "/etc/shadow",
           "source": "/etc", "destination": "/etc/cron.d/x", "file": "../../etc/shadow"}
NOT_REPEATABLE = [guest_save, guest_restore, clone_task, wipe_task, import_task, export_task,
                  p2v_task]


def test_only_actions_that_take_no_path_are_repeatable() -> None:
    assert set(RETRYABLE) == {"guests.tasks.shutdown", "guests.tasks.migrate",
                              "guests.tasks.evacuate", "xenweb.jobs.tasks.selftest"}


@pytest.mark.parametrize("task", NOT_REPEATABLE, ids=lambda task: task.name)
@pytest.mark.parametrize("state", [JobState.FAILED, JobState.INTERRUPTED])
def test_a_job_with_a_path_is_not_repeated(admin_user: Any, operator_user: Any, demo: Host,
                                           task: Any, state: str) -> None:
    web = Guest.objects.get(name="web01", host=demo)
    for user in (operator_user, admin_user):
        job = new_job(task, owner=user, target=web, params=dict(HOSTILE), state=state)
        before = Job.objects.count()
        answer = post(logged_in(user), f"/api/v1/jobs/{job.pk}/retry/")
        assert answer.status_code == 409, answer.content
        assert "not safe to repeat" in answer.json()["detail"]
        assert Job.objects.count() == before


@pytest.mark.parametrize("task", [guest_shutdown, guest_migrate], ids=lambda t: t.name)
def test_a_repeated_guest_job_drops_stored_paths(operator_user: Any, demo: Host,
                                                 task: Any) -> None:
    web = Guest.objects.get(name="web01", host=demo)
    job = new_job(task, owner=operator_user, target=web,
                  params={**HOSTILE, "target": demo.pk, "mode": "cold"},
                  state=JobState.FAILED)
    answer = post(logged_in(operator_user), f"/api/v1/jobs/{job.pk}/retry/")
    if answer.status_code == 202:
        again = Job.objects.get(pk=answer.json()["id"])
        assert not set(HOSTILE) & set(again.params), again.params
    else:  # the action's own checks (the demo host cannot migrate to itself)
        assert answer.status_code == 409, answer.content
    assert not any(set(HOSTILE) & set(j.params) for j in Job.objects.exclude(pk=job.pk))


def test_a_queued_save_of_an_older_version_ignores_its_path(operator_user: Any, demo: Host,
                                                            tmp_path: Path) -> None:
    web = Guest.objects.get(name="web01", host=demo)
    target = tmp_path / "shadow"
    target.write_text("root-only\n")
    job = new_job(guest_save, owner=operator_user, target=web,
                  params={"path": str(target)})
    run_job(job.pk, _save_body(), task_id="t-save", worker="test")
    job.refresh_from_db()
    assert target.read_text() == "root-only\n"
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.result["path"] != str(target)
    restore = new_job(guest_restore, owner=operator_user, target=web,
                      params={"path": str(target)})
    run_job(restore.pk, _restore_body(), task_id="t-restore", worker="test")
    restore.refresh_from_db()
    assert restore.state == JobState.SUCCEEDED, restore.error
    assert target.read_text() == "root-only\n"


def _save_body() -> Any:
    from guests.slow_actions import save_body

    return save_body


def _restore_body() -> Any:
    from guests.slow_actions import restore_body

    return restore_body


def test_the_page_retry_refuses_too(operator_client: Client, operator_user: Any,
                                    demo: Host) -> None:
    web = Guest.objects.get(name="web01", host=demo)
    job = new_job(guest_save, owner=operator_user, target=web, params=dict(HOSTILE),
                  state=JobState.FAILED)
    before = Job.objects.count()
    answer = operator_client.post(f"/jobs/{job.pk}/retry/")
    assert answer.status_code in (302, 409), answer.status_code
    assert Job.objects.count() == before

"""Who sees, cancels and repeats which job (issue 18, M1 and "jobs visibility").

The rule (xenweb.jobs.visibility): a user sees their own jobs, administrators every job,
and others' jobs on objects the user may act on (operators: guests and storage, not host
evacuations nor jobs without a target); viewers their own only. Cancel: owner or
administrator. Retry: the permission of the action it repeats, and that action's checks.
Checked in every place a job is read: API list and detail, job pages, dashboard, guest
page, `/ws/jobs/<id>/` and the job summaries of `/ws/events/`.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.exceptions import PermissionDenied
from django.test import Client

from guests.api.guests import ACTION_ATTRS, GuestViewSet
from guests.api.migration import GuestMigrationViewSet, HostEvacuationViewSet
from guests.models import Guest
from guests.tasks import guest_migrate, guest_shutdown, host_evacuate
from hosts.models import Host
from tests.conftest import logged_in, make_user
from xenweb.accounts.roles import ADMIN, OPERATOR, VIEWER, set_role
from xenweb.asgi import application
from xenweb.audit.models import AuditRecord
from xenweb.jobs import services
from xenweb.jobs.api import JobViewSet
from xenweb.jobs.models import Job, JobState
from xenweb.jobs.notify import notify_job
from xenweb.jobs.tasks import selftest
from xenweb.jobs.tasks_base import RETRYABLE
from xenweb.realtime import broadcast, user_group

# The action each repeatable task repeats, as the API view that starts it names its
# permission: a retry must need exactly that.
ORIGINAL_ACTION = {
    "guests.tasks.evacuate": HostEvacuationViewSet.action_permissions["evacuate"],
    "guests.tasks.migrate": GuestMigrationViewSet.action_permissions["migrate"],
    "guests.tasks.shutdown": GuestViewSet.action_permissions[ACTION_ATTRS["shutdown"]],
    "xenweb.jobs.tasks.selftest": JobViewSet.action_permissions["selftest"],
}
TASKS = {"guests.tasks.evacuate": host_evacuate, "guests.tasks.migrate": guest_migrate,
         "guests.tasks.shutdown": guest_shutdown, "xenweb.jobs.tasks.selftest": selftest}


def post(client: Client, path: str) -> Any:
    return client.post(path, {}, content_type="application/json")


def new_job(task: Any, *, owner: Any, target: Any = None, params: dict | None = None,
            state: str = JobState.QUEUED, kind: str = "") -> Job:
    job = services.start_job(task.name, kind=kind or task.name, owner=owner, target=target,
                             params=params or {}, title=f"{task.name} test", enqueue=False)
    Job.objects.filter(pk=job.pk).update(state=state)
    job.refresh_from_db()
    return job


def job_for(task_name: str, *, owner: Any, demo: Host, state: str,
            guest: str = "web01") -> Job:
    """A job as the action that starts this task makes it (target and params)."""
    web = Guest.objects.get(name=guest, host=demo)
    made = {
        "guests.tasks.evacuate": {"target": demo, "params": {"maintenance": True},
                                  "kind": "host.evacuate"},
        "guests.tasks.migrate": {"target": web, "params": {"target": demo.pk, "mode": "live"},
                                 "kind": "guest.migrate"},
        "guests.tasks.shutdown": {"target": web, "params": {}, "kind": "guest.shutdown"},
        "xenweb.jobs.tasks.selftest": {"params": {"steps": 1}, "kind": "selftest"},
    }[task_name]
    return new_job(TASKS[task_name], owner=owner, state=state, **made)


@pytest.fixture
def olga(appliance_ready: Any) -> Any:
    """A second operator."""
    return make_user("olga-operator", OPERATOR)


# --- retry (M1) -------------------------------------------------------------------------

def test_every_retry_needs_the_permission_of_the_action_it_repeats() -> None:
    assert set(RETRYABLE) == set(ORIGINAL_ACTION), "a new repeatable task: add its action"
    for name, rule in RETRYABLE.items():
        assert rule.permission == ORIGINAL_ACTION[name], name
        # A job with a target is repeated through its action's own service (its checks).
        assert rule.restart is not None or name == "xenweb.jobs.tasks.selftest", name


ADMIN_ONLY_TASKS = ["guests.tasks.evacuate"]


@pytest.mark.django_db
def test_the_admin_only_list_is_complete(operator_user: Any) -> None:
    assert sorted(name for name, rule in RETRYABLE.items()
                  if not operator_user.has_perm(rule.permission)) == ADMIN_ONLY_TASKS


@pytest.mark.django_db
@pytest.mark.parametrize("task_name", ADMIN_ONLY_TASKS)
def test_operator_cannot_retry_an_admins_job(task_name: str, admin_user: Any,
                                             operator_user: Any, demo: Host) -> None:
    job = job_for(task_name, owner=admin_user, demo=demo, state=JobState.INTERRUPTED)
    client = logged_in(operator_user)
    before = Job.objects.count()
    # The admin's host job is not even visible to the operator: 404, as for no job.
    assert post(client, f"/api/v1/jobs/{job.pk}/retry/").status_code == 404
    assert client.post(f"/jobs/{job.pk}/retry/").status_code == 404
    # The service refuses as well, whoever calls it.
    with pytest.raises(PermissionDenied):
        services.retry_job(job, user=operator_user)
    assert Job.objects.count() == before


@pytest.mark.django_db
@pytest.mark.parametrize("task_name", ADMIN_ONLY_TASKS)
def test_a_demoted_admin_cannot_retry_their_own_admin_job(task_name: str, admin_user: Any,
                                                          demo: Host) -> None:
    """The job is theirs and visible; the action it repeats is no longer allowed: 403."""
    former = make_user("fred-former-admin", ADMIN)
    job = job_for(task_name, owner=former, demo=demo, state=JobState.INTERRUPTED)
    set_role(former, OPERATOR)
    former = type(former).objects.get(pk=former.pk)  # fresh permission cache
    client = logged_in(former)
    assert client.get(f"/api/v1/jobs/{job.pk}/").status_code == 200
    assert 'id="retry-job"' not in client.get(f"/jobs/{job.pk}/").content.decode()
    before = Job.objects.count()
    answer = post(client, f"/api/v1/jobs/{job.pk}/retry/")
    assert answer.status_code == 403, answer.content
    assert client.post(f"/jobs/{job.pk}/retry/").status_code == 403
    assert Job.objects.count() == before
    assert AuditRecord.objects.filter(action="job.retry", result="refused",
                                      username=former.username).exists()


@pytest.mark.django_db
def test_admin_retries_an_evacuation_through_the_evacuation_itself(
        admin_client: Client, admin_user: Any, demo: Host) -> None:
    job = job_for("guests.tasks.evacuate", owner=admin_user, demo=demo,
                  state=JobState.INTERRUPTED)
    answer = post(admin_client, f"/api/v1/jobs/{job.pk}/retry/")
    assert answer.status_code == 202, answer.content
    again = Job.objects.get(pk=answer.json()["id"])
    assert (again.kind, again.target_type, again.target_id) == (
        "host.evacuate", "hosts.host", str(demo.pk))
    assert again.params == {"maintenance": True}
    # The evacuation's own check: one at a time per host.
    refused = post(admin_client, f"/api/v1/jobs/{job.pk}/retry/")
    assert refused.status_code == 409 and "being evacuated already" in refused.json()["detail"]


@pytest.mark.django_db
def test_operator_retries_their_own_guest_jobs(operator_user: Any, demo: Host) -> None:
    client = logged_in(operator_user)
    shutdown = job_for("guests.tasks.shutdown", owner=operator_user, demo=demo,
                       state=JobState.INTERRUPTED)
    answer = post(client, f"/api/v1/jobs/{shutdown.pk}/retry/")
    assert answer.status_code == 202, answer.content
    again = Job.objects.get(pk=answer.json()["id"])
    assert (again.kind, again.owner, again.target_id) == (
        "guest.shutdown", operator_user, shutdown.target_id)
    # The guest's own check: it is busy with that job now.
    busy = post(client, f"/api/v1/jobs/{shutdown.pk}/retry/")
    assert busy.status_code == 409 and "is busy with job" in busy.json()["detail"]

    # A migration is repeated through the migration's own start, preflight included: the
    # demo host's test driver cannot migrate, and the preflight says so.
    Job.objects.filter(pk=again.pk).update(state=JobState.SUCCEEDED)  # frees the guest
    migration = job_for("guests.tasks.migrate", owner=operator_user, demo=demo,
                        state=JobState.FAILED)
    blocked = post(client, f"/api/v1/jobs/{migration.pk}/retry/")
    assert blocked.status_code == 409 and "migration is blocked" in blocked.json()["detail"]
    Job.objects.filter(pk=migration.pk).update(params={"target": 999999, "mode": "live"})
    gone = post(client, f"/api/v1/jobs/{migration.pk}/retry/")
    assert gone.status_code == 409 and "no longer exists" in gone.json()["detail"]


@pytest.mark.django_db
def test_viewer_retries_nothing(viewer_user: Any, admin_user: Any, demo: Host) -> None:
    own = job_for("xenweb.jobs.tasks.selftest", owner=viewer_user, demo=demo,
                  state=JobState.FAILED)
    assert post(logged_in(viewer_user), f"/api/v1/jobs/{own.pk}/retry/").status_code == 403


# --- visibility ---------------------------------------------------------------------------

@pytest.fixture
def jobs(admin_user: Any, operator_user: Any, olga: Any, demo: Host) -> dict[str, Job]:
    return {
        "admin_host": job_for("guests.tasks.evacuate", owner=admin_user, demo=demo,
                              state=JobState.RUNNING),
        "admin_selftest": job_for("xenweb.jobs.tasks.selftest", owner=admin_user, demo=demo,
                                  state=JobState.RUNNING),
        "admin_guest": job_for("guests.tasks.shutdown", owner=admin_user, demo=demo,
                               state=JobState.RUNNING),
        # Another guest: one active job per guest (xenweb.jobs.locks).
        "olga_guest": job_for("guests.tasks.migrate", owner=olga, demo=demo,
                              state=JobState.QUEUED, guest="mail01"),
        "oscar_selftest": job_for("xenweb.jobs.tasks.selftest", owner=operator_user,
                                  demo=demo, state=JobState.QUEUED),
    }


SEES = {
    "alice-admin": {"admin_host", "admin_selftest", "admin_guest", "olga_guest",
                    "oscar_selftest"},
    "oscar-operator": {"admin_guest", "olga_guest", "oscar_selftest"},
    "vera-viewer": set(),
}


@pytest.mark.django_db
@pytest.mark.parametrize("username", sorted(SEES))
def test_jobs_are_read_only_where_visible(username: str, jobs: dict[str, Job],
                                          viewer_user: Any) -> None:
    user = type(viewer_user).objects.get(username=username)
    client = logged_in(user)
    names = {job.pk: name for name, job in jobs.items()}
    listed = {names[row["id"]] for row in client.get("/api/v1/jobs/?page_size=100")
              .json()["results"]}
    assert listed == SEES[username]
    page = client.get("/jobs/").content.decode()
    dashboard = client.get("/").content.decode()
    for name, job in jobs.items():
        visible = name in SEES[username]
        assert client.get(f"/api/v1/jobs/{job.pk}/").status_code == (200 if visible else 404)
        assert client.get(f"/jobs/{job.pk}/").status_code == (200 if visible else 404)
        assert (f'href="/jobs/{job.pk}/"' in page) == visible, name
        assert (f'href="/jobs/{job.pk}/"' in dashboard) == visible, name
    web = jobs["admin_guest"].target_id
    guest_page = client.get(f"/guests/{web}/").content.decode()
    assert (f'/jobs/{jobs["admin_guest"].pk}/' in guest_page) == ("admin_guest" in SEES[username])
    if username == "vera-viewer":  # the busy guest is still shown as busy, without the job
        assert "Busy with another user's job" in guest_page


@pytest.mark.django_db
def test_cancel_only_by_owner_or_admin(jobs: dict[str, Job], operator_user: Any, olga: Any,
                                       admin_client: Client) -> None:
    oscar = logged_in(operator_user)
    olgas = jobs["olga_guest"]
    # Oscar sees Olga's guest job but may not cancel it, through the API or the page.
    assert oscar.get(f"/api/v1/jobs/{olgas.pk}/").status_code == 200
    assert 'class="job-cancel' not in oscar.get(f"/jobs/{olgas.pk}/").content.decode()
    assert post(oscar, f"/api/v1/jobs/{olgas.pk}/cancel/").status_code == 403
    assert oscar.post(f"/jobs/{olgas.pk}/cancel/").status_code == 403
    with pytest.raises(PermissionDenied):
        services.cancel_job(olgas, user=operator_user)
    assert Job.objects.get(pk=olgas.pk).state == JobState.QUEUED
    assert AuditRecord.objects.filter(action="job.cancel", result="refused").exists()
    # Nor the admin's (not even visible), nor the admin's guest job (visible).
    assert post(oscar, f"/api/v1/jobs/{jobs['admin_host'].pk}/cancel/").status_code == 404
    assert post(oscar, f"/api/v1/jobs/{jobs['admin_guest'].pk}/cancel/").status_code == 403
    assert Job.objects.get(pk=jobs["admin_guest"].pk).cancel_requested is False
    # The owner may, and an administrator may cancel anyone's.
    own = jobs["oscar_selftest"]
    assert 'class="job-cancel' in oscar.get(f"/jobs/{own.pk}/").content.decode()
    assert post(oscar, f"/api/v1/jobs/{own.pk}/cancel/").json()["state"] == "cancelled"
    assert post(logged_in(olga), f"/api/v1/jobs/{olgas.pk}/cancel/").status_code == 200
    assert post(admin_client, f"/api/v1/jobs/{jobs['admin_guest'].pk}/cancel/") \
        .json()["cancel_requested"] is True


# --- websockets -----------------------------------------------------------------------------

def _headers(client: Client) -> list[tuple[bytes, bytes]]:
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    return [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1"),
            (b"cookie", cookie.encode())]


async def _job_socket(client: Client, job: Job) -> tuple[bool, Any]:
    communicator = WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/",
                                         headers=_headers(client))
    connected, code = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return connected, code


@pytest.fixture
def tx_users(transactional_db: Any) -> dict[str, Any]:
    from django.utils import timezone

    from xenweb.appliance.models import ApplianceSettings

    row = ApplianceSettings.load()
    row.setup_completed_at = timezone.now()
    row.save()
    return {"admin": make_user("alice-admin", ADMIN), "oscar": make_user("oscar-operator",
                                                                          OPERATOR),
            "vera": make_user("vera-viewer", VIEWER)}


def _tx_jobs(users: dict[str, Any]) -> dict[str, Job]:
    """Jobs on a host and a guest rows (no hypervisor needed to broadcast them)."""
    host = Host.objects.create(name="h1", uri="qemu+ssh://root@h1/system")
    guest = Guest.objects.create(name="g1", host=host, uuid="6ba7b810-9dad-11d1-80b4-00c04fd430c8")
    return {
        "admin_host": new_job(host_evacuate, owner=users["admin"], target=host,
                              state=JobState.RUNNING),
        "admin_guest": new_job(guest_shutdown, owner=users["admin"], target=guest,
                               state=JobState.RUNNING),
        "admin_selftest": new_job(selftest, owner=users["admin"], state=JobState.RUNNING),
        "vera_selftest": new_job(selftest, owner=users["vera"], state=JobState.RUNNING),
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_job_websocket_only_for_those_who_see_the_job(tx_users: dict[str, Any]) -> None:
    jobs = await sync_to_async(_tx_jobs)(tx_users)
    oscar, vera, admin = [await sync_to_async(logged_in)(tx_users[name])
                          for name in ("oscar", "vera", "admin")]
    for name, job in jobs.items():
        assert (await _job_socket(admin, job))[0], name
    assert (await _job_socket(oscar, jobs["admin_guest"]))[0]
    assert await _job_socket(oscar, jobs["admin_host"]) == (False, 4404)
    assert await _job_socket(oscar, jobs["admin_selftest"]) == (False, 4404)
    assert await _job_socket(oscar, jobs["vera_selftest"]) == (False, 4404)
    assert await _job_socket(vera, jobs["admin_guest"]) == (False, 4404)
    assert (await _job_socket(vera, jobs["vera_selftest"]))[0]


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_events_socket_carries_only_visible_job_summaries(
        tx_users: dict[str, Any]) -> None:
    jobs = await sync_to_async(_tx_jobs)(tx_users)
    sockets = {}
    for name in ("admin", "oscar", "vera"):
        client = await sync_to_async(logged_in)(tx_users[name])
        communicator = WebsocketCommunicator(application, "/ws/events/",
                                             headers=_headers(client))
        assert (await communicator.connect(timeout=5))[0]
        assert (await communicator.receive_json_from(timeout=5))["type"] == "hello"
        sockets[name] = communicator
    expected = {"admin": set(jobs), "oscar": {"admin_guest"}, "vera": {"vera_selftest"}}
    try:
        for job in jobs.values():
            await sync_to_async(notify_job)(job)
        # Then a marker into each user's own group: sent after every summary, it arrives
        # after them, so whatever came before it is all that came.
        for user in tx_users.values():
            await sync_to_async(broadcast)([user_group(user.pk)], {"type": "job.update",
                                                                   "job": {"id": "end"}})
        names = {job.pk: name for name, job in jobs.items()}
        for user, communicator in sockets.items():
            received = []
            while (message := await communicator.receive_json_from(timeout=10))["job"][
                    "id"] != "end":
                job_id = message["job"]["id"]
                # An admin sees every job of the appliance, so the admin's stream may also
                # carry a job another test's worker finished meanwhile: no leak, not ours.
                if user == "admin" and job_id not in names:
                    continue
                received.append(names.get(job_id, f"foreign job {job_id}"))
            assert sorted(received) == sorted(expected[user]), user
    finally:
        for communicator in sockets.values():
            await communicator.disconnect()

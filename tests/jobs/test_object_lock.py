"""The per-object lock (xenweb.jobs.locks): one active exclusive job per guest, volume or
host, kept by the database's partial unique index, not by a query before the insert.

Two conflicting requests run at once in two threads, each with its own database
connection, through the real API (or, for migrations, the service the API calls after
its preflight: the demo host's test driver cannot migrate). A rendezvous around the one
function every job row is made by (`locks.create_job`, the real one is called) makes
both requests pass every friendly pre-check before either inserts its row, and lets
neither go on before both tried: only the database can refuse one of them. Exactly one
wins; the other gets 409 naming the job that holds the object. Run on SQLite and on
PostgreSQL (DATABASE_URL=postgres://…).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone

from guests.errors import GuestError
from guests.models import Guest
from guests.tasks import guest_migrate
from hosts.models import Host
from storage import services as storage_services
from storage.models import Pool, Volume
from tests.conftest import logged_in
from xenweb.jobs import locks, services
from xenweb.jobs.models import ONE_ACTIVE_EXCLUSIVE_JOB, Job, JobState
from xenweb.jobs.runner import claim, finish

pytestmark = pytest.mark.django_db(transaction=True)

# Guards against a deadlock in the test itself, not a timed assertion.
MEET_TIMEOUT = 60


@dataclass
class Outcome:
    won: bool
    status: int
    detail: str
    job_id: int | None = None


class Rendezvous:
    """Wraps the real locks.create_job: two threads meet before their insert and again
    after it (committed or refused), once each."""

    def __init__(self, real: Callable[..., Job]) -> None:
        self.real = real
        self.before = threading.Barrier(2, timeout=MEET_TIMEOUT)
        self.after = threading.Barrier(2, timeout=MEET_TIMEOUT)
        self.local = threading.local()
        self.met = 0

    def __call__(self, target: Any, **fields: Any) -> Job:
        if getattr(self.local, "met", False):
            return self.real(target, **fields)
        self.local.met = True
        self.before.wait()
        self.met += 1
        try:
            return self.real(target, **fields)
        finally:
            self.after.wait()

    def abort(self) -> None:
        self.before.abort()
        self.after.abort()


@pytest.fixture
def rendezvous(monkeypatch: pytest.MonkeyPatch) -> Rendezvous:
    meeting = Rendezvous(locks.create_job)
    monkeypatch.setattr(locks, "create_job", meeting)
    return meeting


def race(meeting: Rendezvous, *sides: Callable[[], Outcome]) -> list[Outcome]:
    """Runs the sides at once, each in its own thread (its own database connection)."""
    results: list[Outcome | BaseException | None] = [None] * len(sides)

    def run(index: int, side: Callable[[], Outcome]) -> None:
        try:
            results[index] = side()
        except BaseException as exc:  # reported below; the other side must not wait
            results[index] = exc
            meeting.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, side)) for i, side in enumerate(sides)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    assert meeting.met == 2, "both requests reached the insert: the pre-checks let both by"
    return results  # type: ignore[return-value]


def one_wins(outcomes: list[Outcome], *, noun: str, name: str) -> tuple[Outcome, Outcome]:
    winners = [o for o in outcomes if o.won]
    losers = [o for o in outcomes if not o.won]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    loser = losers[0]
    assert loser.status == 409, loser
    assert loser.detail.startswith(f"{noun} '{name}' is busy with job #"), loser.detail
    assert loser.detail.endswith("wait for it to finish."), loser.detail
    return winners[0], loser


def wait_until_settled() -> None:
    """The demo host runs its jobs in threads of this process: let them end before the
    database is emptied (the lock tests do not depend on what they do)."""
    deadline = time.monotonic() + MEET_TIMEOUT
    while Job.objects.filter(state__in=(JobState.QUEUED, JobState.RUNNING),
                             task_name__gt="").exclude(celery_task_id="").exists():
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)


# --- the sides: what one request does ------------------------------------------------------

def api(client: Client, method: str, path: str, **kwargs: Any) -> Callable[[], Outcome]:
    def side() -> Outcome:
        response = getattr(client, method)(path, **kwargs)
        body = response.json() if response.content else {}
        job_id = body.get("id") if "state" in body else None
        # An upload answers with its job even when the transfer failed (the demo host's
        # test driver cannot receive one): it held the volume's lock all the same.
        won = response.status_code < 300 or job_id is not None
        return Outcome(won, response.status_code, body.get("detail", ""), job_id)
    return side


def migrate(guest: Guest, target: Host, user: Any) -> Callable[[], Outcome]:
    """What request_migration does once the preflight passed (guests.migration.services)."""
    def side() -> Outcome:
        try:
            job = services.start_job(guest_migrate.name, kind="guest.migrate", owner=user,
                                     title=f"Migrate {guest} to {target} (cold)",
                                     target=guest, params={"target": target.pk,
                                                           "mode": "cold"},
                                     enqueue=False)
        except GuestError as exc:
            return Outcome(False, 409, str(exc))
        return Outcome(True, 202, "", job.pk)
    return side


def post(client: Client, path: str) -> Callable[[], Outcome]:
    return api(client, "post", path, data={}, content_type="application/json")


def delete_guest(client: Client, guest: Guest) -> Callable[[], Outcome]:
    return api(client, "delete", f"/api/v1/guests/{guest.pk}/?confirm={guest.name}")


@pytest.fixture
def other_host(demo: Host) -> Host:
    """A migration target row (never contacted: the migrations here are not run)."""
    return Host.objects.create(name="other", uri="xen+ssh://root@other.invalid/system")


def guest(name: str) -> Guest:
    return Guest.objects.select_related("host").get(name=name)


# --- two requests at once: exactly one wins --------------------------------------------------

def test_two_migrations_of_one_guest(rendezvous: Rendezvous, demo: Host, other_host: Host,
                                     admin_user: Any) -> None:
    mail = guest("mail01")
    winner, loser = one_wins(race(rendezvous, migrate(mail, other_host, admin_user),
                                  migrate(mail, other_host, admin_user)),
                             noun="Guest", name="mail01")
    assert f"job #{winner.job_id} (Migrate mail01 to other (cold))" in loser.detail
    assert list(Job.objects.filter(target_id=str(mail.pk)).values_list("pk", flat=True)) \
        == [winner.job_id]


def test_a_migration_and_a_delete_of_one_guest(rendezvous: Rendezvous, demo: Host,
                                               other_host: Host, admin_user: Any) -> None:
    mail = guest("mail01")
    migrated, deleted = race(rendezvous, migrate(mail, other_host, admin_user),
                             delete_guest(logged_in(admin_user), mail))
    winner, loser = one_wins([migrated, deleted], noun="Guest", name="mail01")
    if winner is migrated:  # the guest stays, with its migration queued
        assert "(Migrate mail01" in loser.detail
        assert Guest.objects.filter(pk=mail.pk).exists()
        assert Job.objects.get(pk=migrated.job_id).state == JobState.QUEUED
    else:  # the guest is gone, and no migration of it waits
        assert deleted.status == 204 and "(Delete mail01)" in loser.detail
        assert not Guest.objects.filter(pk=mail.pk).exists()
        assert not Job.objects.filter(kind="guest.migrate").exists()
    # The delete's hold is released either way: nothing holds the guest's lock any more.
    assert not Job.objects.filter(kind="guest.delete").exists()


@pytest.fixture
def saved_web(demo: Host, admin_user: Any) -> Guest:
    """web01 saved (its memory in the app's save image, shut off): what a restore needs.
    Made before the rendezvous fixture wraps create_job (requested first by the test)."""
    web = guest("web01")
    answer = logged_in(admin_user).post(f"/api/v1/guests/{web.pk}/save/", data={},
                                        content_type="application/json")
    assert answer.status_code == 202, answer.content
    wait_until_settled()
    web = Guest.objects.get(pk=web.pk)
    assert web.state == "shutoff" and (web.saved_path or web.saved_volume_id), web
    return web


def test_a_restore_and_a_delete_of_one_guest(saved_web: Guest, rendezvous: Rendezvous,
                                             admin_user: Any) -> None:
    """Both are allowed on a saved, shut-off guest (a save needs a running one, a delete a
    stopped one: the state check, not the lock, keeps those two apart)."""
    restored, deleted = race(rendezvous, post(logged_in(admin_user),
                                              f"/api/v1/guests/{saved_web.pk}/restore/"),
                             delete_guest(logged_in(admin_user), saved_web))
    winner, loser = one_wins([restored, deleted], noun="Guest", name="web01")
    wait_until_settled()
    if winner is restored:
        assert restored.status == 202 and "(Restore web01)" in loser.detail
        assert Guest.objects.filter(pk=saved_web.pk).exists()
    else:
        assert deleted.status == 204 and "(Delete web01)" in loser.detail
        assert not Guest.objects.filter(pk=saved_web.pk).exists()


def test_a_save_and_a_quick_action_on_one_guest(rendezvous: Rendezvous, demo: Host,
                                                admin_user: Any) -> None:
    """A quick action (force off) holds the lock for as long as it runs, as a save does."""
    web = guest("web01")
    saved, destroyed = race(rendezvous,
                            post(logged_in(admin_user), f"/api/v1/guests/{web.pk}/save/"),
                            post(logged_in(admin_user), f"/api/v1/guests/{web.pk}/destroy/"))
    winner, loser = one_wins([saved, destroyed], noun="Guest", name="web01")
    wait_until_settled()
    title = "(Save web01)" if winner is saved else "(Destroy web01)"
    assert title in loser.detail
    assert not Job.objects.filter(kind="guest.destroy").exists()  # the hold is gone


def test_two_saves_of_one_guest(rendezvous: Rendezvous, demo: Host, admin_user: Any) -> None:
    web = guest("web01")
    path = f"/api/v1/guests/{web.pk}/save/"
    winner, loser = one_wins(race(rendezvous, post(logged_in(admin_user), path),
                                  post(logged_in(admin_user), path)),
                             noun="Guest", name="web01")
    wait_until_settled()
    assert winner.status == 202 and f"job #{winner.job_id} (Save web01)" in loser.detail
    assert Job.objects.filter(kind="guest.save").count() == 1


@pytest.fixture
def scratch(demo: Host, admin_user: Any) -> Volume:
    pool = Pool.objects.get(host=demo, name="default")
    return storage_services.create_volume(pool, name="scratch.img", capacity=1024**2,
                                          user=admin_user)


def test_an_upload_and_a_delete_of_one_volume(rendezvous: Rendezvous, scratch: Volume,
                                              admin_user: Any) -> None:
    path = f"/api/v1/volumes/{scratch.pk}/content/"
    uploaded, deleted = race(
        rendezvous,
        api(logged_in(admin_user), "put", path, data=b"\0" * 4096,
            content_type="application/octet-stream"),
        api(logged_in(admin_user), "delete", f"/api/v1/volumes/{scratch.pk}/"))
    winner, loser = one_wins([uploaded, deleted], noun="Volume", name="scratch.img")
    if winner is uploaded:
        assert uploaded.job_id is not None and "(Upload to scratch.img)" in loser.detail
    else:
        assert deleted.status == 204 and "(Delete scratch.img)" in loser.detail
        assert not Job.objects.filter(kind="volume.upload").exists()
    assert not Job.objects.filter(state__in=(JobState.QUEUED, JobState.RUNNING)).exists()


def test_two_deletes_of_one_volume(rendezvous: Rendezvous, scratch: Volume,
                                   admin_user: Any) -> None:
    path = f"/api/v1/volumes/{scratch.pk}/"
    one_wins(race(rendezvous, api(logged_in(admin_user), "delete", path),
                  api(logged_in(admin_user), "delete", path)),
             noun="Volume", name="scratch.img")
    assert not Volume.objects.filter(pk=scratch.pk).exists()


# --- the lock itself --------------------------------------------------------------------------

def _row(guest: Guest, kind: str = "guest.migrate", **fields: Any) -> Job:
    return Job.objects.create(kind=kind, title=kind, target_type="guests.guest",
                              target_id=str(guest.pk), target_label=guest.name, **fields)


def test_the_database_refuses_a_second_active_exclusive_job(demo: Host) -> None:
    """However a row is made (here straight through the ORM), the index holds."""
    mail = guest("mail01")
    first = _row(mail)
    assert first.exclusive
    with pytest.raises(IntegrityError) as refused, transaction.atomic():
        _row(mail, kind="guest.shutdown", state=JobState.RUNNING)
    assert ONE_ACTIVE_EXCLUSIVE_JOB in str(refused.value) or "UNIQUE" in str(refused.value)
    # Another object, jobs without a target and finished jobs are not held back.
    _row(guest("web01"))
    Job.objects.create(kind="selftest", title="a")
    Job.objects.create(kind="selftest", title="b")
    _row(mail, state=JobState.FAILED)
    assert Job.objects.count() == 5


def test_reading_jobs_share_a_volume(scratch: Volume, admin_user: Any) -> None:
    """Downloads only read: several run at once, beside the job that holds the volume."""
    upload = locks.create_job(scratch, kind="volume.upload", title="up")
    downloads = [locks.create_job(scratch, kind="volume.download", title=f"down {n}")
                 for n in range(2)]
    assert upload.exclusive and not any(d.exclusive for d in downloads)
    assert locks.active_job(scratch, exclusive_only=True) == upload
    with pytest.raises(storage_services.StorageError, match=f"busy with job #{upload.pk}"):
        storage_services.delete_volume(scratch, user=admin_user)


@pytest.mark.parametrize("ending", ["succeeded", "failed", "cancelled", "interrupted"])
def test_a_finished_job_frees_the_object(ending: str, demo: Host, other_host: Host,
                                         admin_user: Any) -> None:
    mail = guest("mail01")
    first = migrate(mail, other_host, admin_user)()
    assert first.won
    busy = migrate(mail, other_host, admin_user)()
    assert not busy.won and f"busy with job #{first.job_id}" in busy.detail
    job = Job.objects.get(pk=first.job_id)
    if ending == "cancelled":  # the owner cancels it before a worker takes it
        services.cancel_job(job, user=admin_user)
    else:
        job = claim(job.pk, task_id=job.celery_task_id, worker="w@test")
        assert job is not None
        if ending == "interrupted":  # the reaper: its worker stopped sending heartbeats
            Job.objects.filter(pk=job.pk).update(
                heartbeat_at=timezone.now() - timedelta(hours=1))
            assert services.reap_stale_jobs() == [job.pk]
        else:
            finish(job, ending)
    assert Job.objects.get(pk=first.job_id).state == ending
    again = migrate(mail, other_host, admin_user)()
    assert again.won, again


def test_a_hold_ends_with_its_action(demo: Host, admin_user: Any) -> None:
    """A quick action's hold is a running row only while the action runs; a failed action
    releases it too."""
    mail = guest("mail01")
    with locks.hold(mail, kind="guest.start", title="Start mail01", owner=admin_user) as held:
        assert Job.objects.get(pk=held.pk).state == JobState.RUNNING
        with pytest.raises(GuestError, match=f"busy with job #{held.pk} \\(Start mail01\\)"):
            with locks.hold(mail, kind="guest.delete", title="Delete mail01"):
                pass
    assert not Job.objects.filter(pk=held.pk).exists()
    with pytest.raises(RuntimeError), locks.hold(mail, kind="guest.start", title="x"):
        raise RuntimeError("the action failed")
    assert locks.active_job(mail) is None


def test_a_job_on_a_deleted_object_is_refused(demo: Host, other_host: Host,
                                              admin_user: Any) -> None:
    """A request that loaded the guest before a delete took (and released) its lock."""
    mail = guest("mail01")
    Guest.objects.filter(pk=mail.pk).delete()
    refused = migrate(mail, other_host, admin_user)()
    assert not refused.won and refused.detail == "Guest 'mail01' no longer exists."
    assert not Job.objects.exists()


# --- the migration that adds the lock ----------------------------------------------------

@pytest.fixture
def before_the_lock() -> Iterator[Any]:
    """The database as it was before 0004, then migrated back to the latest state."""
    previous = [("jobs", "0003_permissions_to_see_and_cancel_others_jobs")]
    executor = MigrationExecutor(connection)
    executor.migrate(previous)
    yield executor.loader.project_state(previous).apps
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_the_migration_interrupts_all_but_the_newest_of_racing_jobs(
        before_the_lock: Any) -> None:
    OldJob = before_the_lock.get_model("jobs", "Job")
    older = OldJob.objects.create(kind="guest.migrate", title="older", state="running",
                                  target_type="guests.guest", target_id="7")
    newer = OldJob.objects.create(kind="guest.save", title="newer", state="queued",
                                  target_type="guests.guest", target_id="7")
    other = OldJob.objects.create(kind="guest.save", title="other", state="queued",
                                  target_type="guests.guest", target_id="8")
    downloads = [OldJob.objects.create(kind="volume.download", title="d", state="running",
                                       target_type="storage.volume", target_id="3")
                 for _ in range(2)]
    loose = OldJob.objects.create(kind="selftest", title="t", state="running")
    executor = MigrationExecutor(connection)
    executor.migrate([("jobs", "0004_one_active_exclusive_job_per_target")])
    state = dict(Job.objects.values_list("pk", "state"))
    assert state[older.pk] == "interrupted"
    assert "per-object job lock" in Job.objects.get(pk=older.pk).error
    assert state[newer.pk] == state[other.pk] == "queued"
    assert [state[d.pk] for d in downloads] == ["running", "running"]
    assert state[loose.pk] == "running"
    assert set(Job.objects.filter(exclusive=True).values_list("pk", flat=True)) == {
        older.pk, newer.pk, other.pk}

"""An operator's retry of their own migration on real libvirt/QEMU lab hosts: it passes
the migration's own preflight (which the demo host's test driver cannot) and is queued
as a new migration job of theirs (issue 18, M1)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from guests.models import Guest
from guests.tasks import guest_migrate
from hosts.models import Host
from tests.conftest import logged_in, make_user
from tests.lab.conftest import lab_hosts  # noqa: F401
from tests.lab.test_migration_lab import _make_guest, hosts, made  # noqa: F401
from xenweb.accounts.roles import OPERATOR
from xenweb.jobs import services
from xenweb.jobs.models import Job, JobState

pytestmark = pytest.mark.django_db(transaction=True)


def test_operator_retries_their_own_migration(hosts: tuple[Host, Host],  # noqa: F811
                                              admin_client_tx: Client,
                                              made: list[Guest]) -> None:  # noqa: F811
    source, target = hosts
    guest = _make_guest(admin_client_tx, source)
    made.append(guest)
    operator = make_user("oscar-operator", OPERATOR)
    failed = services.start_job(guest_migrate.name, kind="guest.migrate", owner=operator,
                                target=guest, params={"target": target.pk, "mode": "cold"},
                                enqueue=False)
    Job.objects.filter(pk=failed.pk).update(state=JobState.FAILED)
    client = logged_in(operator)
    answer: Any = client.post(f"/api/v1/jobs/{failed.pk}/retry/", {},
                              content_type="application/json")
    assert answer.status_code == 202, answer.content
    again = Job.objects.get(pk=answer.json()["id"])
    assert (again.kind, again.owner, again.target_id) == (
        "guest.migrate", operator, str(guest.pk))
    assert again.params["target"] == target.pk and again.params["mode"] == "cold"
    # Nobody runs it here: the owner cancels it before a worker could.
    cancelled = client.post(f"/api/v1/jobs/{again.pk}/cancel/", {},
                            content_type="application/json")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"

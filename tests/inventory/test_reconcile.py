"""The periodic inventory reconcile on beat, on libvirt's test driver (``test:///default``,
one shared host per process): drift in the guest cache is corrected without the watcher."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtError, VirtTarget, demo_uri
from hosts.virt import domains as virt
from inventory import monitor
from inventory.reconcile import enrolling, reconcile_all
from inventory.tasks import reconcile_inventory

pytestmark = pytest.mark.django_db
URI = "test:///default"


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every inventory hint the reconcile broadcasts (host state, guests)."""
    messages: list[dict[str, Any]] = []
    for target in ("inventory.monitor.broadcast", "guests.inventory.broadcast"):
        monkeypatch.setattr(target, lambda _groups, msg: messages.append(msg))
    return messages


def test_the_beat_task_corrects_a_drifted_guest(sent: list[dict[str, Any]]) -> None:
    host = Host.objects.create(name="t", uri=URI)
    assert reconcile_inventory() == {"t": Host.State.ONLINE}
    guest = host.guests.get(name="test")
    truth = virt.get_domain(VirtTarget(URI), str(guest.uuid))
    Guest.objects.filter(pk=guest.pk).update(state="crashed", vcpus=99)  # drift
    phantom = Guest.objects.create(host=host, name="gone",
                                   uuid="00000000-0000-4000-8000-0000000000aa")

    reconcile_inventory.apply()  # as a worker runs it

    guest.refresh_from_db()
    assert guest.state == truth.state and guest.vcpus == truth.xml.vcpus
    assert not Guest.objects.filter(pk=phantom.pk).exists()
    assert host.pools.exists()  # pools and capabilities are re-read too
    host.refresh_from_db()
    assert host.capabilities and host.state == Host.State.ONLINE


def test_nothing_changed_means_no_writes_to_guests_and_no_hints(
    sent: list[dict[str, Any]],
) -> None:
    host = Host.objects.create(name="t", uri=URI, state=Host.State.ONLINE)
    reconcile_all()
    stamps = dict(host.guests.values_list("pk", "updated_at"))
    sent.clear()
    reconcile_all()
    assert dict(host.guests.values_list("pk", "updated_at")) == stamps
    assert sent == []


def test_hosts_being_enrolled_and_the_demo_host_are_left_alone() -> None:
    host = Host.objects.create(name="t", uri=URI)
    Host.objects.create(name="demo", uri=demo_uri())
    with enrolling(host):
        assert reconcile_all() == {}
    assert not host.guests.exists()
    assert reconcile_all() == {"t": Host.State.ONLINE}
    assert host.guests.exists()


def test_a_setting_changed_meanwhile_is_kept() -> None:
    host = Host.objects.create(name="t", uri=URI, state=Host.State.ONLINE)
    Host.objects.filter(pk=host.pk).update(state=Host.State.MAINTENANCE)
    assert reconcile_all() == {"t": Host.State.MAINTENANCE}


def test_one_failing_host_does_not_stop_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    Host.objects.create(name="a", uri="xen+ssh://root@a.invalid/system")
    Host.objects.create(name="b", uri=URI)
    real = monitor.refresh_host

    def refresh(host: Host) -> bool:
        if host.name == "a":
            raise RuntimeError("database hiccup")
        return real(host)

    monkeypatch.setattr("inventory.reconcile.refresh_host", refresh)
    assert reconcile_all() == {"b": Host.State.ONLINE}


def test_beat_runs_it_every_few_minutes() -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["reconcile-inventory"]
    assert entry["task"] == reconcile_inventory.name == "inventory.tasks.reconcile_inventory"
    assert entry["schedule"] == settings.INVENTORY_RECONCILE_INTERVAL == 300.0
    assert entry["options"]["expires"] == entry["schedule"]
    metrics = settings.CELERY_BEAT_SCHEDULE["sample-metrics"]["task"]
    assert metrics == "hosts.tasks.sample_metrics"  # kept when the task moved to inventory


def test_a_worker_finds_both_beat_tasks_of_the_inventory() -> None:
    from xenweb.celery import app

    app.loader.import_default_modules()  # what a worker does at start (autodiscovery)
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in app.tasks


def test_enrolment_syncs_the_inventory_while_marked_as_enrolling(
    admin_user: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hosts.services import enrol_host
    from inventory import reconcile

    seen: list[bool] = []

    def sync(host: Host) -> None:
        seen.append(reconcile.is_enrolling(host))
        monitor.sync_inventory(host)

    monkeypatch.setattr(reconcile, "sync_inventory", sync)
    host = enrol_host(name="t", uri=URI, user=admin_user)
    assert seen == [True]  # the beat reconcile would have left it alone meanwhile
    assert not reconcile.is_enrolling(host)
    assert host.guests.exists() and host.capabilities and host.last_error == ""


def test_a_failed_first_sync_leaves_the_host_enrolled_with_the_error(
    admin_user: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hosts.services import enrol_host
    from inventory import reconcile

    def sync(host: Host) -> None:
        raise VirtError("the host went away")

    monkeypatch.setattr(reconcile, "sync_inventory", sync)
    host = enrol_host(name="t", uri=URI, user=admin_user)
    assert host.last_error == "the host went away"
    assert Host.objects.get(pk=host.pk).last_error == "the host went away"
    assert not reconcile.is_enrolling(host)

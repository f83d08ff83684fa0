"""Placement rules (conflict sets of labels) and the migration API's refusals, on the
embedded demo host (libvirt's test driver: it cannot migrate, which the preflight says)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from guests.models import ConflictSet, Guest
from hosts.models import Host
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job

pytestmark = pytest.mark.django_db


def send(client: Client, method: str, path: str, data: Any = None) -> Any:
    return getattr(client, method)(path, data or {}, content_type="application/json")


def guest(name: str) -> Guest:
    return Guest.objects.get(name=name)


def test_conflict_set_keeps_the_firewalls_apart(admin_client: Client, demo: Host) -> None:
    made = send(admin_client, "post", "/api/v1/conflict-sets/",
                {"name": "firewalls", "labels": [" dmz ", "lan"], "description": "seed"})
    assert made.status_code == 201 and made.json()["labels"] == ["dmz", "lan"]
    external, internal = guest("fw-external"), guest("fw-internal")
    for item, label in ((external, "dmz"), (internal, "lan")):
        labelled = send(admin_client, "put", f"/api/v1/guests/{item.pk}/labels/",
                        {"labels": [label]})
        assert labelled.status_code == 200 and labelled.json() == {"labels": [label]}
    assert internal.state == "running"
    if external.state != "shutoff":
        send(admin_client, "post", f"/api/v1/guests/{external.pk}/destroy/")

    refused = send(admin_client, "post", f"/api/v1/guests/{external.pk}/start/")
    assert refused.status_code == 409
    assert ("'fw-internal' (lan) runs on demo, and conflict set 'firewalls' forbids "
            "'fw-external' on the same host.") in refused.json()["detail"]
    assert guest("fw-external").state == "shutoff"
    assert AuditRecord.objects.filter(action="guest.start", result="refused").exists()

    created = send(admin_client, "post", "/api/v1/guests/", {
        "name": "fw-third", "host": demo.pk, "type": "pv", "memory_mib": 128,
        "bootloader": "pygrub", "labels": ["lan"]})
    assert created.status_code == 400
    assert "'fw-internal' (lan) runs on demo" in str(created.json())
    automatic = send(admin_client, "post", "/api/v1/guests/", {
        "name": "fw-third", "type": "pv", "memory_mib": 128, "bootloader": "pygrub",
        "labels": ["dmz"]})
    assert automatic.status_code == 400 and "No host can take this guest" in str(
        automatic.json())

    assert send(admin_client, "post", f"/api/v1/guests/{internal.pk}/destroy/").status_code == 200
    started = send(admin_client, "post", f"/api/v1/guests/{external.pk}/start/")
    assert started.status_code == 200 and started.json()["state"] == "running"


def test_bad_labels_and_sets_are_refused(admin_client: Client, demo: Host) -> None:
    web = guest("web01")
    empty = send(admin_client, "put", f"/api/v1/guests/{web.pk}/labels/", {"labels": ["  "]})
    assert empty.status_code == 400 and "labels" in empty.json()
    no_labels = send(admin_client, "post", "/api/v1/conflict-sets/", {"name": "x", "labels": []})
    assert no_labels.status_code == 400 and "at least one label" in str(no_labels.json())
    assert not ConflictSet.objects.exists()


def test_viewer_cannot_change_placement(viewer_client: Client, demo: Host) -> None:
    web = guest("web01")
    assert send(viewer_client, "put", f"/api/v1/guests/{web.pk}/labels/",
                {"labels": ["a"]}).status_code == 403
    assert send(viewer_client, "post", "/api/v1/conflict-sets/",
                {"name": "x", "labels": ["a"]}).status_code == 403
    assert send(viewer_client, "post", f"/api/v1/guests/{web.pk}/migrate/",
                {"host": 1}).status_code == 403
    assert viewer_client.get("/api/v1/conflict-sets/").status_code == 200


def test_preflight_explains_what_blocks_a_migration(admin_client: Client, demo: Host) -> None:
    other = Host.objects.create(name="other", uri="test:///default", state=Host.State.ONLINE,
                                hypervisor_type="Test", accepts_migrations=False)
    web = guest("web01")
    missing = admin_client.get(f"/api/v1/guests/{web.pk}/migrate/preflight/")
    assert missing.status_code == 400 and "?host=" in missing.json()["detail"]
    answer = admin_client.get(f"/api/v1/guests/{web.pk}/migrate/preflight/?host={other.pk}")
    assert answer.status_code == 200
    body = answer.json()
    checks = {check["check"]: check for check in body["checks"]}
    assert body["ok"] is False and body["features"]["supported"] is False
    assert not checks["target host"]["ok"]
    assert "not on this appliance's migration allow-list" in checks["target host"]["message"]
    assert not checks["hypervisor"]["ok"]
    assert "same hypervisor" in checks["hypervisor"]["message"]
    same = admin_client.get(f"/api/v1/guests/{web.pk}/migrate/preflight/?host={demo.pk}")
    assert "already runs on demo" in {c["check"]: c for c in same.json()["checks"]}[
        "target host"]["message"]
    dom0 = guest("Domain-0")
    blocked = send(admin_client, "post", f"/api/v1/guests/{dom0.pk}/migrate/",
                   {"host": other.pk})
    assert blocked.status_code == 409
    assert "Domain-0 is the host's management domain" in blocked.json()["detail"]
    assert AuditRecord.objects.filter(action="guest.migrate", result="refused").exists()
    offline = send(admin_client, "post", f"/api/v1/guests/{web.pk}/migrate/",
                   {"host": other.pk, "mode": "offline"})
    assert offline.status_code == 409


def test_pages_for_labels_conflict_sets_and_the_migration_dialog(
        admin_client: Client, viewer_client: Client, demo: Host) -> None:
    web = guest("web01")
    page = admin_client.get(web.get_absolute_url()).content.decode()
    assert 'id="migrate-modal"' in page and 'id="open-migrate"' in page
    assert f"/api/v1/guests/{web.pk}/migrate/preflight/" in page
    viewer_page = viewer_client.get(web.get_absolute_url()).content.decode()
    assert 'id="migrate-modal"' not in viewer_page and 'name="labels"' not in viewer_page
    assert "migrate-modal" not in admin_client.get(guest("Domain-0").get_absolute_url(
        )).content.decode()

    set_labels = admin_client.post(f"/guests/{web.pk}/labels/", {"labels": "web, dmz ,web"})
    assert set_labels.status_code == 302 and guest("web01").labels == ["dmz", "web"]
    assert viewer_client.post(f"/guests/{web.pk}/labels/", {"labels": "x"}).status_code == 403

    created = admin_client.post("/guests/conflict-sets/new/",
                                {"name": "fw", "labels": "dmz, lan", "description": "d"})
    assert created.status_code == 302 and ConflictSet.objects.get(name="fw").labels == [
        "dmz", "lan"]
    again = admin_client.post("/guests/conflict-sets/new/", {"name": "fw", "labels": "a"},
                              follow=True)
    assert "exists already" in again.content.decode()
    listing = admin_client.get("/guests/conflict-sets/").content.decode()
    assert "fw" in listing and "web01" in listing
    viewer_listing = viewer_client.get("/guests/conflict-sets/").content.decode()
    assert "New conflict set" not in viewer_listing
    assert viewer_client.post("/guests/conflict-sets/new/",
                              {"name": "v", "labels": "a"}).status_code == 403
    item = ConflictSet.objects.get(name="fw")
    assert viewer_client.post(f"/guests/conflict-sets/{item.pk}/delete/").status_code == 403
    assert admin_client.post(f"/guests/conflict-sets/{item.pk}/delete/").status_code == 302
    assert not ConflictSet.objects.exists()


def test_evacuate_button_starts_a_job(admin_client: Client, operator_client: Client,
                                      demo: Host) -> None:
    page = admin_client.get(demo.get_absolute_url()).content.decode()
    assert 'id="evacuate-host"' in page
    assert 'id="evacuate-host"' not in operator_client.get(demo.get_absolute_url()).content.decode()
    assert operator_client.post(f"/hosts/{demo.pk}/evacuate/").status_code == 403
    answer = admin_client.post(f"/hosts/{demo.pk}/evacuate/")
    assert answer.status_code == 302 and "/jobs/" in answer["Location"]
    assert Host.objects.get(pk=demo.pk).state == Host.State.MAINTENANCE
    again = admin_client.post(f"/hosts/{demo.pk}/evacuate/", follow=True)
    assert "is being evacuated already" in again.content.decode()


def test_evacuation_shows_its_plan_before_it_starts(admin_client: Client,
                                                    operator_client: Client, demo: Host,
                                                    admin_user: Any) -> None:
    from hosts.services import enrol_host

    assert operator_client.get(f"/hosts/{demo.pk}/evacuate/").status_code == 403
    page = admin_client.get(f"/hosts/{demo.pk}/evacuate/").content.decode()
    running = Guest.objects.filter(host=demo, state="running", is_privileged=False)
    assert running.exists()
    for guest in running:
        assert f'data-guest="{guest.name}" data-target=""' in page
    assert "no other host is enrolled" in page
    assert "move 0 guests" in page
    enrol_host(name="plain", uri="test:///default", user=admin_user)
    page = admin_client.get(f"/hosts/{demo.pk}/evacuate/").content.decode()
    assert "plain: " in page and "does not authenticate" in page  # why not there
    assert Host.objects.get(pk=demo.pk).state == Host.State.ONLINE  # a plan changes nothing
    assert not Job.objects.exists()


def test_the_migration_dialog_greys_out_hosts_that_cannot_take_the_guest(
        admin_client: Client, demo: Host, admin_user: Any) -> None:
    from hosts.services import enrol_host

    plain = enrol_host(name="plain", uri="test:///default", user=admin_user)
    web = Guest.objects.get(host=demo, name="web01")
    page = admin_client.get(web.get_absolute_url()).content.decode()
    snippet = page[page.index('id="migrate-host"'):][:1200]
    assert re.search(rf'<option value="{plain.pk}" disabled title="[^"]*does not '
                     r'authenticate the peer[^"]*">plain \(TEST, online\) — not possible',
                     snippet), snippet
    assert f'data-target-reason="{plain.pk}">plain: plain is reached over' in page

"""The guest pages: detail with the actions the state allows, forms, create wizard."""

from __future__ import annotations

import pytest
from django.test import Client

from guests.models import Guest
from hosts.models import Host

pytestmark = pytest.mark.django_db


def test_detail_offers_what_the_state_allows(admin_client: Client, demo: Host) -> None:
    page = admin_client.get(Guest.objects.get(name="mail01").get_absolute_url()).content.decode()
    assert 'data-action="start"' in page and 'data-action="shutdown"' not in page
    assert 'data-confirm-typed="mail01"' in page  # deletion needs the typed name
    page = admin_client.get(Guest.objects.get(name="web01").get_absolute_url()).content.decode()
    assert 'data-action="shutdown"' in page and 'data-action="start"' not in page
    dom0 = admin_client.get(Guest.objects.get(name="Domain-0").get_absolute_url())
    text = dom0.content.decode()
    assert "privileged management domain" in text
    for action in ("shutdown", "destroy", "reboot", "pause", "save"):
        assert f'data-action="{action}"' not in text
    assert 'id="delete-form"' not in text


def test_actions_and_delete_through_forms(admin_client: Client, demo: Host) -> None:
    mail = Guest.objects.get(name="mail01")
    response = admin_client.post(f"/guests/{mail.pk}/start/")
    assert response.status_code == 302
    assert Guest.objects.get(pk=mail.pk).state == "running"
    refused = admin_client.post(f"/guests/{mail.pk}/resume/", follow=True)
    assert "cannot be resumed" in refused.content.decode()
    admin_client.post(f"/guests/{mail.pk}/destroy/")
    wrong = admin_client.post(f"/guests/{mail.pk}/delete/", {"confirm": "mail"}, follow=True)
    assert "Type the guest&#x27;s name" in wrong.content.decode()
    gone = admin_client.post(f"/guests/{mail.pk}/delete/", {"confirm": "mail01"}, follow=True)
    assert "was deleted" in gone.content.decode()
    assert not Guest.objects.filter(pk=mail.pk).exists()


def test_create_wizard(admin_client: Client, demo: Host) -> None:
    assert admin_client.get("/guests/new/").status_code == 200
    bad = admin_client.post("/guests/new/", {"name": "<bad>", "type": "pv",
                                              "memory_mib": "256", "host": demo.pk})
    assert bad.status_code == 200 and "Guest names" in bad.content.decode()
    response = admin_client.post("/guests/new/", {
        "name": "from-ui", "type": "hvm", "memory_mib": "512", "vcpus": "2",
        "host": demo.pk, "bridge": "xenbr0",
    })
    assert response.status_code == 302
    created = Guest.objects.get(name="from-ui")
    assert created.vcpus == 2 and created.devices["nics"][0]["mac"].startswith("00:16:3e:")


def test_viewer_sees_no_buttons(viewer_client: Client, demo: Host) -> None:
    page = viewer_client.get(Guest.objects.get(name="web01").get_absolute_url())
    assert 'data-action=' not in page.content.decode()
    assert viewer_client.post(f"/guests/{Guest.objects.get(name='web01').pk}/destroy/") \
        .status_code == 403


def test_add_host_page_shows_the_appliance_key(admin_client: Client) -> None:
    page = admin_client.get("/hosts/add/").content.decode()
    assert 'id="appliance-public-key">ssh-ed25519 ' in page


def test_guest_rows_carry_what_live_updates_need(admin_client: Client, demo: Host) -> None:
    web = Guest.objects.get(name="web01")
    for path in ("/guests/", demo.get_absolute_url()):
        page = admin_client.get(path).content.decode()
        assert f'data-guest="{web.uuid}"' in page and "guest-state" in page


def test_hardware_forms(admin_client: Client, demo: Host) -> None:
    mail = Guest.objects.get(name="mail01")
    page = admin_client.get(mail.get_absolute_url()).content.decode()
    # Every demo volume is some guest's disk: none is offered (tests.guests.test_create_choices).
    assert 'id="no-spare-volumes"' in page and "Add interface" in page
    response = admin_client.post(f"/guests/{mail.pk}/hardware/attach-nic/",
                                 {"nic": "bridge:xenbr0"}, follow=True)
    assert "change applied at the next boot" in response.content.decode() or \
        "change applied now" in response.content.decode()
    assert len(Guest.objects.get(pk=mail.pk).devices["nics"]) == 2
    bad = admin_client.post(f"/guests/{mail.pk}/hardware/vcpus/", {"vcpus": "lots"},
                            follow=True)
    assert "whole number" in bad.content.decode()


def test_memory_form_says_what_was_set(admin_client: Client, demo: Host) -> None:
    web = Guest.objects.get(name="web01")
    done = admin_client.post(f"/guests/{web.pk}/memory/", {"memory_mib": "256"}, follow=True)
    assert "web01: memory set to 256 MiB." in done.content.decode()
    assert Guest.objects.get(pk=web.pk).memory_mib == 256
    for bad, says in (("abc", "whole number of MiB"), ("8", "between 64 MiB")):
        refused = admin_client.post(f"/guests/{web.pk}/memory/", {"memory_mib": bad},
                                    follow=True)
        assert says in refused.content.decode(), bad
    assert Guest.objects.get(pk=web.pk).memory_mib == 256

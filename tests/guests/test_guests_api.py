"""Guests through the API on the embedded demo host (libvirt's test driver)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from guests.models import Guest
from guests.slow_actions import restore_body, save_body
from hosts.models import Host
from hosts.services import enrol_host
from hosts.virt import VirtTarget, demo_uri
from hosts.virt.capabilities import HVM_UNAVAILABLE, parse_capabilities
from storage.models import Pool, Volume
from tests.bootfiles import demo_boot_files
from tests.paths import TESTDATA
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db


def guest(name: str) -> Guest:
    return Guest.objects.get(name=name)


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


def test_list_filters_and_detail(admin_client: Client, demo: Host) -> None:
    listed = admin_client.get(f"/api/v1/guests/?host={demo.pk}").json()
    assert listed["count"] == 8
    running = admin_client.get("/api/v1/guests/?state=running").json()["results"]
    assert {g["name"] for g in running} >= {"Domain-0", "web01", "win2019"}
    assert all(g["state"] == "running" for g in running)
    found = admin_client.get("/api/v1/guests/?name=fw-").json()["results"]
    assert sorted(g["name"] for g in found) == ["fw-external", "fw-internal"]
    detail = admin_client.get(f"/api/v1/guests/{guest('web01').pk}/").json()
    assert detail["host"] == demo.pk and detail["type"] == "PV" and detail["vcpus"] >= 1
    assert detail["disks"][0]["source"].startswith("/var/lib/xen/images/")
    assert detail["nics"][0]["mac"].startswith("00:16:3e:")
    hosts = admin_client.get("/api/v1/hosts/").json()["results"]
    assert hosts[0]["uri"] == demo_uri() and hosts[0]["state"] == "online"
    assert "hvm" in hosts[0]["capabilities"]["guest_types"]
    assert hosts[0]["capabilities"]["max_vcpus"] == 32  # what the test driver reports
    assert "free_memory_mib" in hosts[0]["capabilities"]


def test_quick_actions_follow_the_state(admin_client: Client, demo: Host) -> None:
    mail = guest("mail01")
    base = f"/api/v1/guests/{mail.pk}"
    assert post(admin_client, f"{base}/start/").json()["state"] == "running"
    assert post(admin_client, f"{base}/pause/").json()["state"] == "paused"
    refused = post(admin_client, f"{base}/pause/")
    assert refused.status_code == 409
    assert "mail01' is paused: it cannot be paused now" in refused.json()["detail"]
    assert post(admin_client, f"{base}/resume/").json()["state"] == "running"
    assert post(admin_client, f"{base}/reboot/").status_code == 200
    assert post(admin_client, f"{base}/autostart/", {"enabled": True}).json()["autostart"]
    assert post(admin_client, f"{base}/destroy/").json()["state"] == "shutoff"
    resume = post(admin_client, f"{base}/resume/")
    assert resume.status_code == 409 and "needs to be paused" in resume.json()["detail"]
    unknown = admin_client.post(f"{base}/explode/")
    assert unknown.status_code == 404


def test_domain0_is_protected(admin_client: Client, demo: Host) -> None:
    dom0 = guest("Domain-0")
    for action in ("shutdown", "destroy", "reboot", "pause", "save"):
        response = post(admin_client, f"/api/v1/guests/{dom0.pk}/{action}/")
        assert response.status_code == 409, action
        assert "privileged management domain" in response.json()["detail"]
    deleted = admin_client.delete(f"/api/v1/guests/{dom0.pk}/?confirm=Domain-0")
    assert deleted.status_code == 409 and "cannot be deleted" in deleted.json()["detail"]
    assert guest("Domain-0").state == "running"
    balloon = admin_client.patch(f"/api/v1/guests/{dom0.pk}/", {"memory_mib": 3072},
                                 content_type="application/json")
    assert balloon.status_code == 200 and balloon.json()["memory_mib"] == 3072


def test_save_and_restore_are_jobs(admin_client: Client, demo: Host) -> None:
    web = guest("web01")
    response = post(admin_client, f"/api/v1/guests/{web.pk}/save/")
    assert response.status_code == 202
    job = Job.objects.get(pk=response.json()["id"])
    busy = post(admin_client, f"/api/v1/guests/{web.pk}/start/")
    assert busy.status_code == 409 and f"busy with job #{job.pk}" in busy.json()["detail"]
    run_job(job.pk, save_body, task_id="t", worker="w")  # what the worker runs
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    assert guest("web01").state == "shutoff" and guest("web01").saved_path
    response = post(admin_client, f"/api/v1/guests/{web.pk}/restore/")
    job = Job.objects.get(pk=response.json()["id"])
    run_job(job.pk, restore_body, task_id="t", worker="w")
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    assert guest("web01").state == "running"


def test_viewer_cannot_act(viewer_client: Client, demo: Host) -> None:
    web = guest("web01")
    assert viewer_client.get(f"/api/v1/guests/{web.pk}/").status_code == 200
    for action in ("start", "shutdown", "destroy", "pause", "save", "autostart"):
        assert post(viewer_client, f"/api/v1/guests/{web.pk}/{action}/").status_code == 403
    assert viewer_client.delete(f"/api/v1/guests/{web.pk}/?confirm=web01").status_code == 403
    assert post(viewer_client, "/api/v1/guests/", {"name": "x", "memory_mib": 64}).status_code \
        == 403
    assert guest("web01").state == "running"


def test_create_pv_guest_with_new_volume_and_delete_it(admin_client: Client,
                                                       demo: Host) -> None:
    pool = Pool.objects.get(host=demo, name="default")
    kernel, _initrd = demo_boot_files(demo)
    response = post(admin_client, "/api/v1/guests/", {
        "name": "new-pv", "host": demo.pk, "type": "pv", "vcpus": 2, "memory_mib": 512,
        "max_memory_mib": 1024, "kernel_file": kernel, "cmdline": "root=/dev/xvda1",
        "disks": [{"pool": pool.pk, "size_gib": 1, "format": "raw"}],
        "nics": [{"bridge": "xenbr0"}],
    })
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created["state"] == "shutoff" and created["type"] == "PV"
    assert created["nics"][0]["mac"].startswith("00:16:3e:")
    assert created["disks"][0]["target"] == "xvda"
    disk = created["disks"][0]["source"]
    assert disk.endswith("new-pv-disk0.img")

    wrong = admin_client.delete(f"/api/v1/guests/{created['id']}/?confirm=nope")
    assert wrong.status_code == 409 and "Type the guest's name" in wrong.json()["detail"]
    gone = admin_client.delete(f"/api/v1/guests/{created['id']}/?confirm=new-pv"
                               "&delete_volumes=true")
    assert gone.status_code == 204
    assert not Guest.objects.filter(name="new-pv").exists()
    from hosts.virt.pools import list_pools

    paths = [v.path for p in list_pools(VirtTarget(demo.uri)) for v in p.volumes]
    assert disk not in paths


def test_hvm_is_refused_on_a_host_without_vt_before_anything_is_made(
    admin_client: Client, demo: Host
) -> None:
    # The host's capabilities as a real Xen host without VT-x/AMD-V reports them.
    caps = parse_capabilities((TESTDATA / "xen-caps" / "xen-x86_64.xml").read_text())
    demo.capabilities = {"guests": [g.__dict__ for g in caps.guests],
                         "guest_types": list(caps.guest_types())}
    demo.save()
    volumes_before = Volume.objects.count()
    pool = Pool.objects.get(host=demo, name="default")
    response = post(admin_client, "/api/v1/guests/", {
        "name": "win", "host": demo.pk, "type": "hvm", "memory_mib": 1024,
        "disks": [{"pool": pool.pk, "size_gib": 10}],
    })
    assert response.status_code == 400
    assert response.json()["detail"] == HVM_UNAVAILABLE
    assert HVM_UNAVAILABLE == ("HVM guest support is unavailable: is VT/AMD-V supported by "
                               "your CPU and enabled in your BIOS?")
    assert not Guest.objects.filter(name="win").exists()
    from hosts.virt.pools import list_pools

    pools = list_pools(VirtTarget(demo.uri))
    assert not [v for p in pools for v in p.volumes if v.name.startswith("win-")]
    assert Volume.objects.count() == volumes_before


@pytest.mark.parametrize("name", ["<script>", "a&b", "x" * 300, "quote'd", ""])
def test_hostile_names_are_refused(admin_client: Client, demo: Host, name: str) -> None:
    response = post(admin_client, "/api/v1/guests/", {"name": name, "host": demo.pk,
                                                      "type": "pv", "memory_mib": 256,
                                                      "bootloader": "pygrub"})
    assert response.status_code == 400
    assert not Guest.objects.filter(name=name).exists()


def test_automatic_placement_and_duplicates(admin_client: Client, demo: Host) -> None:
    response = post(admin_client, "/api/v1/guests/", {"name": "placed", "type": "hvm",
                                                      "memory_mib": 256})
    assert response.status_code == 201 and response.json()["host"] == demo.pk
    again = post(admin_client, "/api/v1/guests/", {"name": "placed", "type": "hvm",
                                                   "memory_mib": 256, "host": demo.pk})
    assert again.status_code == 400 and "already" in again.json()["detail"]
    huge = post(admin_client, "/api/v1/guests/", {"name": "huge", "type": "hvm",
                                                  "memory_mib": 10_000_000})
    assert huge.status_code == 400 and "No host can take this guest" in huge.json()["detail"]


def test_hosts_api(admin_client: Client, demo: Host, operator_client: Client) -> None:
    on = post(admin_client, f"/api/v1/hosts/{demo.pk}/maintenance/", {"enabled": True})
    assert on.json()["state"] == "maintenance"
    refused = post(admin_client, "/api/v1/guests/", {"name": "m", "host": demo.pk,
                                                     "type": "hvm", "memory_mib": 256})
    assert "in maintenance" in refused.json()["detail"]
    assert post(operator_client, f"/api/v1/hosts/{demo.pk}/maintenance/",
                {"enabled": False}).status_code == 403
    bad = post(admin_client, "/api/v1/hosts/", {"name": "x", "uri": "qemu+tcp://10.1.1.1/system"})
    assert bad.status_code == 400 and "unauthenticated" in bad.json()["detail"]
    key = admin_client.get("/api/v1/appliance/ssh-key/").json()["public_key"]
    assert key.startswith("ssh-ed25519 ")


def test_networks_list_and_isolated_network(admin_client: Client, demo: Host,
                                            operator_client: Client) -> None:
    listed = admin_client.get(f"/api/v1/hosts/{demo.pk}/networks/").json()
    by_name = {n["name"]: n for n in listed}
    assert by_name["xenbr0"]["bridge"] == "xenbr0" and by_name["xenbr0"]["forward_mode"] == \
        "bridge"
    assert by_name["internal"]["forward_mode"] == ""
    created = post(admin_client, f"/api/v1/hosts/{demo.pk}/networks/",
                   {"name": "dmz", "bridge": "xenbr9"})
    assert created.status_code == 201 and created.json()["forward_mode"] == ""
    bad = post(admin_client, f"/api/v1/hosts/{demo.pk}/networks/",
               {"name": "x" * 20, "bridge": "br"})
    assert bad.status_code == 400 and "not a valid network name" in bad.json()["detail"]
    assert post(operator_client, f"/api/v1/hosts/{demo.pk}/networks/",
                {"name": "n2", "bridge": "b2"}).status_code == 403
    page = admin_client.get(f"/hosts/{demo.pk}/networks/").content.decode()
    assert "dmz" in page and "xenbr9" in page


def test_vcpus_disks_and_nics(admin_client: Client, demo: Host) -> None:
    web = guest("web01")
    too_many = admin_client.patch(f"/api/v1/guests/{web.pk}/", {"vcpus": 999},
                                  content_type="application/json")
    assert too_many.status_code == 409 and "maximum" in too_many.json()["detail"]
    # A volume no running guest writes (db01's own disks may not be attached elsewhere).
    made = post(admin_client, "/api/v1/volumes/", {
        "pool": Pool.objects.get(host=demo, name="default").pk, "name": "spare.img",
        "size": "64M", "format": "raw"})
    assert made.status_code == 201, made.json()
    spare = Volume.objects.get(pk=made.json()["id"])
    # The test driver cannot hot-plug: a running guest gets it at its next boot.
    running = post(admin_client, f"/api/v1/guests/{web.pk}/disks/", {"volume": spare.pk})
    assert running.status_code == 200 and running.json()["applied"] == "next boot"

    assert [d["source"] for d in guest("web01").devices["next_boot_disks"]] == [spare.path]

    mail = guest("mail01")  # shut off: the definition is what it runs next
    base = f"/api/v1/guests/{mail.pk}"
    # web01 will write `spare` after its next boot: nobody else may have it writable.
    taken = post(admin_client, f"{base}/disks/", {"volume": spare.pk})
    assert taken.status_code == 409 and "guest 'web01'" in taken.json()["detail"]
    made = post(admin_client, "/api/v1/volumes/", {
        "pool": Pool.objects.get(host=demo, name="default").pk, "name": "spare2.img",
        "size": "64M", "format": "raw"})
    spare = Volume.objects.get(pk=made.json()["id"])
    attached = post(admin_client, f"{base}/disks/", {"volume": spare.pk})
    assert attached.status_code == 200, attached.json()
    targets = [d["target"] for d in attached.json()["guest"]["disks"]]
    assert "xvdb" in targets
    again = post(admin_client, f"{base}/disks/", {"volume": spare.pk})
    assert again.status_code == 409 and "attached" in again.json()["detail"]
    detached = admin_client.delete(f"{base}/disks/xvdb/")
    assert detached.status_code == 200
    assert "xvdb" not in [d["target"] for d in detached.json()["guest"]["disks"]]

    nic = post(admin_client, f"{base}/nics/", {"bridge": "xenbr0"})
    assert nic.status_code == 200
    macs = [n["mac"] for n in nic.json()["guest"]["nics"]]
    assert len(macs) == 2 and all(m.startswith("00:16:3e:") for m in macs)
    gone = admin_client.delete(f"{base}/nics/{macs[-1]}/")
    assert gone.status_code == 200 and len(gone.json()["guest"]["nics"]) == 1
    missing = admin_client.delete(f"{base}/nics/00:16:3e:00:00:00/")
    assert missing.status_code == 409 and "no such interface" in missing.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_demo_host_jobs_run_in_the_web_process(admin_client_tx: Client) -> None:
    """The demo host's state lives in the web process only, so its jobs run there too
    (no worker needed, and the result is what the next page shows)."""
    import time

    from hosts.virt.connection import drop_connection

    drop_connection(demo_uri())
    user = admin_client_tx.get("/api/v1/me/").json()
    assert user["role"] == "admin"
    from django.contrib.auth import get_user_model

    enrol_host(name="demo", uri=demo_uri(),
               user=get_user_model().objects.get(username=user["username"]))
    web = guest("web01")
    for action in ("save", "restore"):
        response = post(admin_client_tx, f"/api/v1/guests/{web.pk}/{action}/")
        assert response.status_code == 202
        deadline = time.monotonic() + 30
        while Job.objects.get(pk=response.json()["id"]).state in ("queued", "running"):
            assert time.monotonic() < deadline, f"the demo {action} job did not finish"
            time.sleep(0.1)
        job = Job.objects.get(pk=response.json()["id"])
        assert job.state == "succeeded", job.error
    assert guest("web01").state == "running"

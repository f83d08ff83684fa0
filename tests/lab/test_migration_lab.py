"""Migration between the two real libvirt/QEMU lab hosts, through the API: the preflight
(each check failing for its own reason), live migration with progress over the websocket,
cancel, and cold migration. The guests are the lab's tiny guest, with a disk on the lab's
shared pool (the stand-in for NFS)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from guests.migration.job import migrate_body
from guests.models import ConflictSet, Guest
from hosts.models import Host
from hosts.virt import VirtObjectNotFound, VirtTarget
from hosts.virt import domains as virt
from hosts.virt import migration as vm
from hosts.virt.console import read_console_until
from hosts.virt.volumes import create_volume, refresh_pool
from lab.bootfiles import lab_boot_files
from lab.control import SHARED_POOL
from lab.register import register_lab_host
from lab.tinyguest import (
    TINY_GUEST_DIRTYING,
    TINY_GUEST_TICK,
    tiny_guest_cmdline,
)
from storage.inventory import reconcile_pools
from storage.models import Volume
from tests.live.processes import WebServer
from tests.live.ws import job_messages_while
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db(transaction=True)


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


@pytest.fixture
def hosts(lab_hosts: list[Any], admin_client_tx: Client) -> tuple[Host, Host]:
    source, _ = register_lab_host(lab_hosts[0])
    target, _ = register_lab_host(lab_hosts[1])
    return source, target


def _make_guest(client: Client, host: Host, *, memory_mib: int = 128, pool: str = SHARED_POOL,
                dirty_mib: int = 0) -> Guest:
    kernel, initrd = lab_boot_files(host)
    name = f"mig-{uuid.uuid4().hex[:6]}"
    created = post(client, "/api/v1/guests/", {
        "name": name, "host": host.pk, "type": "hvm", "memory_mib": memory_mib,
        "kernel_file": kernel, "initrd_file": initrd,
        "cmdline": tiny_guest_cmdline(dirty_mib),
    })
    assert created.status_code == 201, created.json()
    guest = Guest.objects.get(pk=created.json()["id"])
    if pool:
        disk = create_volume(VirtTarget(host.uri, allow_insecure=True),
                             pool, f"{name}.img", 8 * 1024**2)
        reconcile_pools(host)
        volume = Volume.objects.get(pool__host=host, path=disk.path)
        attached = post(client, f"/api/v1/guests/{guest.pk}/disks/", {"volume": volume.pk})
        assert attached.status_code == 200, attached.json()
    return Guest.objects.get(pk=guest.pk)


def _remove(guest: Guest, *hosts: Host) -> None:
    for host in hosts:
        try:
            info = virt.get_domain(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid))
        except VirtObjectNotFound:
            continue
        if info.state != "shutoff":
            virt.destroy(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid))
        virt.undefine(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid))
        for disk in info.xml.disks:
            if disk.source.endswith(".img") and "mig-" in disk.source:
                from hosts.virt.pools import delete_volume_by_path

                try:
                    delete_volume_by_path(VirtTarget(host.uri, allow_insecure=True), disk.source)
                except Exception:  # noqa: S110 - best-effort cleanup
                    pass


@pytest.fixture
def made(hosts: tuple[Host, Host]) -> Iterator[list[Guest]]:
    guests: list[Guest] = []
    yield guests
    for guest in guests:
        _remove(guest, *hosts)


def _checks(client: Client, guest: Guest, target: Host, **query: str) -> dict[str, dict]:
    extra = "".join(f"&{key}={value}" for key, value in query.items())
    answer = client.get(f"/api/v1/guests/{guest.pk}/migrate/preflight/?host={target.pk}{extra}")
    assert answer.status_code == 200, answer.content
    return {check["check"]: check for check in answer.json()["checks"]}


def _start(client: Client, guest: Guest) -> None:
    started = post(client, f"/api/v1/guests/{guest.pk}/start/")
    assert started.status_code == 200 and started.json()["state"] == "running", started.json()


def _running_guest(client: Client, host: Host, made: list[Guest], **options: Any) -> Guest:
    """A new tiny guest, started; removed again after the test (``made``)."""
    guest = _make_guest(client, host, **options)
    made.append(guest)
    _start(client, guest)
    return guest


def test_preflight_passes_and_each_check_fails_for_its_reason(
        hosts: tuple[Host, Host], admin_client_tx: Client, made: list[Guest]) -> None:
    client, (source, target) = admin_client_tx, hosts
    guest = _running_guest(client, source, made)
    checks = _checks(client, guest, target)
    assert [c["message"] for c in checks.values() if not c["ok"]] == []
    assert "is online and accepts migrations" in checks["target host"]["message"]

    # Not on the allow-list.
    Host.objects.filter(pk=target.pk).update(accepts_migrations=False)
    refused = post(client, f"/api/v1/guests/{guest.pk}/migrate/", {"host": target.pk})
    assert refused.status_code == 409
    failed = {c["check"]: c for c in refused.json()["checks"] if not c["ok"]}
    assert list(failed) == ["target host"]
    assert "not on this appliance's migration allow-list" in refused.json()["detail"]
    Host.objects.filter(pk=target.pk).update(accepts_migrations=True)

    # A conflict set: the other firewall runs on the target.
    other = _make_guest(client, target, pool="")
    made.append(other)
    _start(client, other)
    ConflictSet.objects.create(name="firewalls", labels=["fw-ext", "fw-int"])
    Guest.objects.filter(pk=guest.pk).update(labels=["fw-ext"])
    Guest.objects.filter(pk=other.pk).update(labels=["fw-int"])
    placement = _checks(client, guest, target)["placement rules"]
    assert not placement["ok"]
    assert f"'{other.name}' (fw-int) runs on {target.name}" in placement["message"]

    # A disk on the source's local pool; a NIC on a network the target lacks; too much memory.
    local = _make_guest(client, source, pool="local")
    made.append(local)
    # More memory than any lab host has: creating it is refused (a guest gets at most its
    # host's RAM), so the cached row says it.
    Guest.objects.filter(pk=local.pk).update(memory_mib=64 * 1024)
    checks = _checks(client, local, target)
    assert not checks["storage"]["ok"]
    assert "is not on storage lab2 shares" in checks["storage"]["message"].replace(
        target.name, "lab2")
    assert not checks["memory"]["ok"] and "needs 65536 MiB" in checks["memory"]["message"]
    assert not checks["guest state"]["ok"]  # shut off: not for a live migration
    assert _checks(client, local, target, block_copy="true")["storage"]["ok"]
    local.devices = {**local.devices, "nics": [
        {"mac": "52:54:00:00:00:01", "kind": "bridge", "source": "nosuchbr0", "model": ""},
        {"mac": "52:54:00:00:00:02", "kind": "network", "source": "nosuchnet", "model": ""}]}
    local.save()
    networks = _checks(client, local, target)["networks"]
    assert not networks["ok"]
    assert "bridge 'nosuchbr0' is not known on" in networks["message"]
    assert "network 'nosuchnet' does not exist or is not active" in networks["message"]

    # A guest on the target writes the same (not shareable) volume on the shared pool.
    shared_disk = Guest.objects.get(pk=guest.pk).devices["disks"][0]["source"]
    # The file came from lab1.
    refresh_pool(VirtTarget(target.uri, allow_insecure=True), SHARED_POOL)
    reconcile_pools(target)
    volume = Volume.objects.get(pool__host=target, path=shared_disk)
    writer = _make_guest(client, target, pool="")
    made.append(writer)
    attached = post(client, f"/api/v1/guests/{writer.pk}/disks/", {"volume": volume.pk})
    assert attached.status_code == 409, attached.json()  # the rule holds at attach too
    assert f"attached writable to guest '{guest.name}'" in attached.json()["detail"]


def _run(job_id: int) -> Job:
    run_job(job_id, migrate_body, task_id=f"t{job_id}", worker="test")
    return Job.objects.get(pk=job_id)


def _located(guest: Guest, host: Host) -> str | None:
    try:
        return virt.get_domain(VirtTarget(host.uri, allow_insecure=True), str(guest.uuid)).state
    except VirtObjectNotFound:
        return None


def test_live_migration_with_progress_over_the_websocket(
        hosts: tuple[Host, Host], admin_client_tx: Client, web_server: WebServer,
        made: list[Guest]) -> None:
    client, (source, target) = admin_client_tx, hosts
    guest = _running_guest(client, source, made)
    answer = post(client, f"/api/v1/guests/{guest.pk}/migrate/", {"host": target.pk})
    assert answer.status_code == 202, answer.json()
    busy = post(client, f"/api/v1/guests/{guest.pk}/migrate/", {"host": target.pk})
    assert busy.status_code == 409 and "busy with job" in busy.json()["detail"]

    cookie = client.cookies["sessionid"].value
    job, messages = asyncio.run(job_messages_while(
        web_server, cookie, f"/ws/jobs/{answer.json()['id']}/", lambda: _run(answer.json()["id"])))
    assert job.state == "succeeded", job.error
    assert job.result["downtime_ms"] is not None and job.result["total_s"] > 0
    assert job.result["bytes"] and job.result["target"] == target.pk
    states = [m["state"] for m in messages]
    assert states[-1] == "succeeded" and "running" in states
    dones = [m["done"] for m in messages if m["state"] == "running"]
    assert dones == sorted(dones)  # in order, never backwards
    assert _located(guest, target) == "running"
    assert _located(guest, source) is None
    moved = Guest.objects.get(pk=guest.pk)
    assert moved.host_id == target.pk and moved.state == "running"
    assert Guest.objects.filter(uuid=guest.uuid).count() == 1


def test_live_migration_while_the_guest_dirties_64_mib(
        hosts: tuple[Host, Host], admin_client_tx: Client, made: list[Guest]) -> None:
    client, (source, target) = admin_client_tx, hosts
    guest = _running_guest(client, source, made, memory_mib=4 * 64 + 64, dirty_mib=64)
    console = read_console_until(VirtTarget(source.uri, allow_insecure=True),
                                 str(guest.uuid), TINY_GUEST_DIRTYING, 180)
    assert TINY_GUEST_DIRTYING in console, console[-500:]
    answer = post(client, f"/api/v1/guests/{guest.pk}/migrate/", {"host": target.pk})
    assert answer.status_code == 202, answer.json()
    job = _run(answer.json()["id"])
    assert job.state == "succeeded", job.error
    assert job.result["downtime_ms"] is not None
    assert job.result["bytes"] >= 64 * 1024**2  # at least the dirtied memory went across
    assert _located(guest, target) == "running" and _located(guest, source) is None
    after = read_console_until(VirtTarget(target.uri, allow_insecure=True),
                               str(guest.uuid), TINY_GUEST_TICK, 60)
    assert TINY_GUEST_TICK in after  # still alive and printing on the target


def test_cancel_keeps_the_guest_on_the_source(
        hosts: tuple[Host, Host], admin_client_tx: Client, made: list[Guest]) -> None:
    client, (source, target) = admin_client_tx, hosts
    guest = _running_guest(client, source, made, memory_mib=256)
    limit = vm.max_downtime(VirtTarget(source.uri, allow_insecure=True), str(guest.uuid))
    answer = post(client, f"/api/v1/guests/{guest.pk}/migrate/",
                  {"host": target.pk, "bandwidth_mib": 1})  # ~256 s: it will be cancelled
    assert answer.status_code == 202, answer.json()
    job_id = answer.json()["id"]
    runner = threading.Thread(target=_run, args=(job_id,))
    runner.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not Job.objects.get(pk=job_id).done:
        time.sleep(0.2)
    assert Job.objects.get(pk=job_id).cancellable
    cancelled = post(client, f"/api/v1/jobs/{job_id}/cancel/")
    assert cancelled.status_code in (200, 202), cancelled.json()
    runner.join(180)
    job = Job.objects.get(pk=job_id)
    assert job.state == "cancelled", (job.state, job.error)
    assert _located(guest, source) == "running"
    assert _located(guest, target) is None
    assert Guest.objects.get(pk=guest.pk).host_id == source.pk
    # The job set its own downtime target before it started; the guest stays with its own.
    assert vm.max_downtime(VirtTarget(source.uri, allow_insecure=True), str(guest.uuid)) == limit


def test_offline_migration_through_the_shared_pool(
        hosts: tuple[Host, Host], admin_client_tx: Client, made: list[Guest]) -> None:
    client, (source, target) = admin_client_tx, hosts
    guest = _running_guest(client, source, made)
    read_console_until(VirtTarget(source.uri, allow_insecure=True),
                       str(guest.uuid), TINY_GUEST_TICK, 90)
    answer = post(client, f"/api/v1/guests/{guest.pk}/migrate/",
                  {"host": target.pk, "mode": "offline"})
    assert answer.status_code == 202, answer.json()
    job = _run(answer.json()["id"])
    assert job.state == "succeeded", job.error
    assert job.result["mode"] == "offline" and job.result["downtime_ms"] > 0
    assert _located(guest, target) == "running" and _located(guest, source) is None
    assert not Path(job.result["save_path"]).exists()  # the saved memory was removed
    assert TINY_GUEST_TICK in read_console_until(VirtTarget(target.uri, allow_insecure=True),
                                                 str(guest.uuid), TINY_GUEST_TICK,
                                                 60)
    moved = Guest.objects.get(pk=guest.pk)
    assert moved.host_id == target.pk and moved.state == "running"


def test_cold_migration_moves_the_definition(
        hosts: tuple[Host, Host], admin_client_tx: Client, made: list[Guest]) -> None:
    client, (source, target) = admin_client_tx, hosts
    guest = _make_guest(client, source)
    made.append(guest)
    live = post(client, f"/api/v1/guests/{guest.pk}/migrate/", {"host": target.pk})
    assert live.status_code == 409 and "use cold migration" in live.json()["detail"]
    answer = post(client, f"/api/v1/guests/{guest.pk}/migrate/",
                  {"host": target.pk, "mode": "cold"})
    assert answer.status_code == 202, answer.json()
    job = _run(answer.json()["id"])
    assert job.state == "succeeded", job.error
    assert _located(guest, target) == "shutoff" and _located(guest, source) is None
    assert Guest.objects.get(pk=guest.pk).host_id == target.pk


def test_a_volume_deleted_by_another_host_does_not_break_pool_listing(
        hosts: tuple[Host, Host]) -> None:
    from hosts.virt.pools import delete_volume_by_path, list_pools
    from hosts.virt.volumes import refresh_pool

    source, target = hosts
    made = create_volume(VirtTarget(source.uri, allow_insecure=True),
                         SHARED_POOL, f"gone-{uuid.uuid4().hex[:6]}.img", 1024**2)
    seen = refresh_pool(VirtTarget(target.uri, allow_insecure=True), SHARED_POOL)
    assert made.path in [vol.path for vol in seen.volumes]
    delete_volume_by_path(VirtTarget(source.uri, allow_insecure=True), made.path)
    pools = {pool.name: pool for pool in list_pools(VirtTarget(target.uri, allow_insecure=True))}
    assert made.path not in [vol.path for vol in pools[SHARED_POOL].volumes]


def test_evacuation_places_guests_by_the_rules_and_reports_who_stays(
        hosts: tuple[Host, Host], admin_client_tx: Client, made: list[Guest]) -> None:
    from guests.migration.evacuation import evacuate_body
    from lab.daemons import lab_up

    client, (source, second) = admin_client_tx, hosts
    third, _ = register_lab_host({h.name: h for h in lab_up(3)}["lab3"])
    ConflictSet.objects.create(name="firewalls", labels=["dmz", "lan"])
    ConflictSet.objects.create(name="web", labels=["web"])
    # D (lan) on lab2 keeps A (dmz) off lab2; E (web) on lab3 keeps B (web) off lab3;
    # C has its disk on lab1's local pool, which no other host shares.
    blocker_d = _make_guest(client, second, memory_mib=96, pool="")
    blocker_e = _make_guest(client, third, memory_mib=96, pool="")
    guest_a = _make_guest(client, source, memory_mib=192)
    guest_b = _make_guest(client, source, memory_mib=160)
    guest_c = _make_guest(client, source, memory_mib=96, pool="local")
    made.extend([blocker_d, blocker_e, guest_a, guest_b, guest_c])
    for item, labels in ((blocker_d, ["lan"]), (blocker_e, ["web"]), (guest_a, ["dmz"]),
                         (guest_b, ["web"])):
        Guest.objects.filter(pk=item.pk).update(labels=labels)
    for item in (blocker_d, blocker_e, guest_a, guest_b, guest_c):
        _start(client, item)

    # The plan shown before it starts is what the job then does.
    plan = client.get(f"/hosts/{source.pk}/evacuate/").content.decode()
    assert f'data-guest="{guest_a.name}" data-target="lab3"' in plan
    assert f'data-guest="{guest_b.name}" data-target="lab2"' in plan
    assert f'data-guest="{guest_c.name}" data-target=""' in plan
    assert "move 2 guests" in plan
    answer = post(client, f"/api/v1/hosts/{source.pk}/evacuate/")
    assert answer.status_code == 202, answer.json()
    assert Host.objects.get(pk=source.pk).state == Host.State.MAINTENANCE
    run_job(answer.json()["id"], evacuate_body, task_id="evac", worker="test")
    job = Job.objects.get(pk=answer.json()["id"])
    assert job.state == "succeeded", job.error
    moved = {entry["name"]: entry["host"] for entry in job.result["moved"]}
    stayed = {entry["name"]: " ".join(entry["reasons"]) for entry in job.result["stayed"]}
    assert moved == {guest_a.name: "lab3", guest_b.name: "lab2"}
    assert list(stayed) == [guest_c.name]
    assert "is not on storage lab2 shares" in stayed[guest_c.name]
    assert "is not on storage lab3 shares" in stayed[guest_c.name]
    assert job.result["summary"] == "2 moved, 1 could not move"
    for name, host_name in moved.items():
        item = Guest.objects.get(name=name)
        assert item.host.name == host_name and _located(item, item.host) == "running"
        assert _located(item, source) is None
    assert _located(guest_c, source) == "running"
    assert Job.objects.filter(kind="guest.migrate", state="succeeded").count() == 2
    for item in (blocker_e, guest_a):
        _remove(item, Host.objects.get(pk=third.pk))


def _wait_for_copying(job_id: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = Job.objects.get(pk=job_id)
        if job.state == "running" and job.done:
            return
        assert job.state in ("queued", "running"), (job.state, job.error)
        time.sleep(0.2)
    raise AssertionError("the migration did not start copying")


def _slow_migration(client: Client, guest: Guest, target: Host) -> int:
    answer = post(client, f"/api/v1/guests/{guest.pk}/migrate/",
                  {"host": target.pk, "bandwidth_mib": 2})  # ~64 s for 128 MiB
    assert answer.status_code == 202, answer.json()
    return answer.json()["id"]


def _exactly_on(guest: Guest, host: Host, other: Host, timeout: float = 60) -> None:
    """The guest runs on ``host`` and (soon) nowhere else; its row says so."""
    deadline = time.monotonic() + timeout
    while _located(guest, other) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _located(guest, other) is None
    assert _located(guest, host) == "running"
    rows = Guest.objects.filter(uuid=guest.uuid)
    assert [row.host_id for row in rows] == [host.pk]


def test_target_libvirtd_killed_during_a_migration(
        hosts: tuple[Host, Host], admin_client_tx: Client, made: list[Guest]) -> None:
    import os
    import signal

    from lab.daemons import lab_up

    client, (source, target) = admin_client_tx, hosts
    guest = _running_guest(client, source, made)
    job_id = _slow_migration(client, guest, target)
    runner = threading.Thread(target=_run, args=(job_id,))
    runner.start()
    _wait_for_copying(job_id)
    running = {h.name: h for h in lab_up(2)}
    os.kill(running[target.name].pid, signal.SIGKILL)
    runner.join(180)
    job = Job.objects.get(pk=job_id)
    assert job.state == "failed" and "The migration failed" in job.error, job.error
    assert _located(guest, source) == "running"
    restarted = {h.name: h for h in lab_up(2)}[target.name]
    assert restarted.uri == target.uri
    _exactly_on(guest, source, target)


def test_worker_killed_during_a_migration(
        hosts: tuple[Host, Host], admin_client_tx: Client, made: list[Guest]) -> None:
    from tests.live.processes import CeleryWorker
    from xenweb.jobs.services import reap_stale_jobs

    client, (source, target) = admin_client_tx, hosts
    guest = _running_guest(client, source, made)
    worker = CeleryWorker()
    try:
        job_id = _slow_migration(client, guest, target)
        _wait_for_copying(job_id)
        worker.kill()
    finally:
        worker.stop()
    time.sleep(3)  # heartbeats every second in the tests: the job is now stale
    assert job_id in reap_stale_jobs(stale_after=2)
    job = Job.objects.get(pk=job_id)
    assert job.state == "interrupted" and "no heartbeat from worker" in job.error
    _exactly_on(guest, source, target)

"""P2V end to end: a real sshd in a network namespace of its own (reached over a veth pair)
as the "physical server", its disks real loop devices (partition table, ext4, known
files; or the lab's bootable disk), copied into the `local` pool of a real libvirt/QEMU lab
host through the API and the job body; the copy of the bootable disk is started and boots."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from conversions.p2v import ssh as p2v_ssh
from conversions.p2v.job import p2v_body, volume_name
from conversions.v2v.guest_devices import SATA
from guests.models import Guest
from hosts.virt import VirtTarget
from lab.bootdisk import ensure_boot_disk
from lab.register import register_lab_host
from storage.inventory import reconcile_pools
from storage.models import Pool, Volume
from tests.conversions.boot_disks import (
    boot_to_banner,
    damaged_copy,
    defined_macs,
    remove_guest,
)
from tests.conversions.p2v.p2v_source import (
    IP,
    MIB,
    SSHD,
    LoopDisk,
    NamespaceUnavailable,
    SourceNetwork,
    SshServer,
    attach,
    detach,
    is_attached,
    link_exists,
    loop_disks,
    make_source_network,
    shadow_line,
)
from xenweb.appliance.sshkeys import P2V_IDENTITY, P2V_TRUST
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = b"hello from the physical server\n"
# The bootable server's host name: its sshd's, and its disk's /etc/hostname.
BOOT_HOSTNAME = "p2v-phys-01"
# Spaces, quotes, a shell variable, a backslash, a non-ASCII letter: nothing may interpret it.
SOURCE_PASSWORD = "p2v-Pw 7f3a $HOME 'q' \\ ;ü"


def post(client: Client, path: str, data: dict[str, Any]) -> Any:
    return client.post(path, data, content_type="application/json")


def _remove_p2v_leftovers(host: Any, pool_name: str) -> None:
    """Guests and volumes named p2v-* on the lab host (the lab outlives the test)."""
    from hosts.virt import domains, pools

    for domain in domains.list_domains(VirtTarget(host.uri, allow_insecure=True)):
        if domain.name.startswith("p2v-"):
            domains.undefine(VirtTarget(host.uri, allow_insecure=True), domain.uuid)
    for info in pools.list_pools(VirtTarget(host.uri, allow_insecure=True)):
        for volume in info.volumes if info.name == pool_name else ():
            if volume.name.startswith("p2v-"):
                pools.delete_volume_by_path(VirtTarget(host.uri, allow_insecure=True), volume.path)


@pytest.fixture
def pool(lab_hosts: list[Any]) -> Iterator[Pool]:
    _remove_p2v_leftovers(lab_hosts[0], "local")  # before the host's guests are cached
    host, _ = register_lab_host(lab_hosts[0])
    reconcile_pools(host)
    yield Pool.objects.get(host=host, name="local")
    _remove_p2v_leftovers(host, "local")


@pytest.fixture(scope="session")
def source_network() -> Iterator[SourceNetwork]:
    """The source's own network namespace and veth pair, for the whole session."""
    if os.geteuid() != 0:
        pytest.skip("the P2V source runs in a network namespace, which needs root")
    for program in (IP, SSHD):
        if not os.access(program, os.X_OK):
            pytest.skip(f"the P2V source needs {program} (iproute2, openssh-server)")
    network = SourceNetwork(tag=os.getpid())
    try:
        network.up()  # removes what it made when it fails
    except NamespaceUnavailable as exc:
        pytest.skip(f"no network namespace can be made for the P2V source here: {exc}")
    try:
        yield network
    finally:
        network.down()


def _serving(server: SshServer) -> Iterator[SshServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
        P2V_TRUST.unpin(server.address, server.port)


def _key_source(tmp_path: Path, network: SourceNetwork, **extra: Any) -> Iterator[SshServer]:
    """A source whose root logs in with the appliance's P2V key only, served for a test."""
    root = tmp_path / "sshd"
    root.mkdir()
    yield from _serving(SshServer(root=root, authorized_key=P2V_IDENTITY.public_key(),
                                  network=network, **extra))


@pytest.fixture
def sshd(tmp_path: Path, admin_client_tx: Client,
         source_network: SourceNetwork) -> Iterator[SshServer]:
    """The source: root logs in with the appliance's P2V key only."""
    yield from _key_source(tmp_path, source_network)


@pytest.fixture
def password_sshd(tmp_path: Path, admin_client_tx: Client,
                  source_network: SourceNetwork) -> Iterator[SshServer]:
    """The source: root logs in with SOURCE_PASSWORD only (no authorized key at all)."""
    root = tmp_path / "sshd"
    root.mkdir()
    yield from _serving(SshServer(root=root, authorized_key="", network=source_network,
                                  root_password=SOURCE_PASSWORD))


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[dict[str, LoopDisk]]:
    yield from loop_disks(tmp_path, {
        "full": (48, {"hello.txt": HELLO, "random.bin": os.urandom(32 * MIB)}),
        "sparse": (160, {"hello.txt": HELLO, "small.bin": os.urandom(4 * MIB)}),
        "big": (128, {"random.bin": os.urandom(100 * MIB)}),
    })


def inventory(client: Client, server: SshServer, **extra: Any) -> dict[str, Any]:
    answer = post(client, "/api/v1/p2v/inventory/", {"address": server.address,
                                                     "port": server.port, **extra})
    assert answer.status_code == 200, answer.json()
    return answer.json()


def start(client: Client, server: SshServer, fingerprint: str, pool: Pool, devices: list[str],
          name: str, **extra: Any) -> Any:
    return post(client, "/api/v1/p2v/", {
        "address": server.address, "port": server.port, "host_key_fingerprint": fingerprint,
        "disks": devices, "host": pool.host.pk, "pool": pool.pk, "name": name,
        "network": "default", **extra})


def run(job_id: int) -> Job:
    """Run the job here, unless a live worker of the session took it first: then wait."""
    run_job(job_id, p2v_body, task_id=f"test-{job_id}", worker="test")
    deadline = time.monotonic() + 900
    while Job.objects.get(pk=job_id).is_active and time.monotonic() < deadline:
        time.sleep(0.5)
    return Job.objects.get(pk=job_id)


def file_sha256(path: str) -> str:
    return subprocess.run(["sha256sum", path], capture_output=True, text=True,
                          check=True).stdout.split()[0]


def allocated(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0


def when_allocated(path: Path, threshold: int, action: Any) -> threading.Thread:
    """Run ``action`` once the volume file holds more than ``threshold`` bytes."""
    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and allocated(path) <= threshold:
            time.sleep(0.05)
        action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_inventory_copy_verify_and_guest(admin_client_tx: Client, pool: Pool, sshd: SshServer,
                                         disks: dict[str, LoopDisk],
                                         source_network: SourceNetwork) -> None:
    client = admin_client_tx
    found = inventory(client, sshd)
    key = subprocess.run(["/usr/bin/ssh-keygen", "-lf", str(sshd.host_key)], check=True,
                         capture_output=True, text=True).stdout.split()[1]
    assert found["host_key_fingerprint"] == key
    assert found["public_key"] == P2V_IDENTITY.public_key()
    facts = found["inventory"]
    assert facts["hostname"] == socket.gethostname()
    assert facts["cpu"]["count"] == os.cpu_count() and facts["cpu"]["lm"] is True
    assert facts["memory_bytes"] > 0 and facts["firmware"] in ("bios", "uefi")
    # The source sees its own network: the namespace's end of the veth pair, nothing else.
    assert [nic["name"] for nic in facts["nics"]] == [source_network.source_link]
    assert facts["root"] is True and "python3" in facts["tools"]
    by_path = {disk["path"]: disk for disk in facts["disks"]}
    full = by_path[disks["full"].device]
    assert full["size"] == 48 * MIB and full["pttype"] == "dos"
    assert [part["fstype"] for part in full["partitions"]] == ["ext4"]
    assert full["partitions"][0]["size"] == 47 * MIB
    assert found["proposal"]["type"] == "hvm" and found["proposal"]["vcpus"] >= 1

    fingerprint = found["host_key_fingerprint"]
    devices = [disks["full"].device, disks["sparse"].device]
    started = start(client, sshd, fingerprint, pool, devices, "p2v-full")
    assert started.status_code == 202, started.json()
    job = run(started.json()["id"])
    assert job.state == "succeeded", job.error
    result = job.result
    full_copy, sparse_copy = result["disks"]
    assert file_sha256(full_copy["path"]) == disks["full"].sha256()
    assert file_sha256(sparse_copy["path"]) == disks["sparse"].sha256()
    # The mostly empty disk: far fewer bytes crossed the wire than its size, and the
    # volume stays sparse.
    assert sparse_copy["bytes_sent"] < sparse_copy["size"] // 5
    assert allocated(Path(sparse_copy["path"])) < sparse_copy["size"] // 4
    assert job.done == job.total == 48 * MIB + 160 * MIB

    guest = Guest.objects.get(pk=result["guest"])
    assert guest.name == "p2v-full" and guest.state != "running"
    assert result["checks"] and result["guest_url"].endswith(f"/{guest.pk}/")
    assert set(Volume.objects.filter(pool=pool, name__startswith="p2v-full").values_list(
        "path", flat=True)) == {full_copy["path"], sparse_copy["path"]}
    assert AuditRecord.objects.filter(action="p2v.run", result="ok").exists()
    print(f"\nP2V full: {full_copy['size'] // MIB} MiB in {full_copy['seconds']} s, "
          f"sent {full_copy['bytes_sent'] // MIB} MiB; sparse: {sparse_copy['size'] // MIB} "
          f"MiB in {sparse_copy['seconds']} s, sent {sparse_copy['bytes_sent'] / MIB:.1f} MiB")


@pytest.mark.parametrize("io", ["file", "libvirt"])
def test_dropped_connection_resumes(admin_client_tx: Client, pool: Pool, sshd: SshServer,
                                    disks: dict[str, LoopDisk], io: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Resumed at the last finished segment, writing the lab volume's file (this machine
    holds it) and, as for a remote host, through libvirt upload streams."""
    from django.contrib.auth import get_user_model

    from conversions.p2v import job as p2v_job
    from storage.volume_io import IO_ENV

    if io == "libvirt":
        monkeypatch.setenv(IO_ENV, "libvirt")
    fingerprint = inventory(admin_client_tx, sshd)["host_key_fingerprint"]
    name = f"p2v-resume-{io}"
    wanted = p2v_job.Request(source=p2v_ssh.Source(sshd.address, sshd.port),
                             fingerprint=fingerprint, disks=[disks["big"].device],
                             host=pool.host, pool=pool, name=name, bwlimit=16 * MIB)
    user = get_user_model().objects.get(username="alice-admin")
    job_id = p2v_job.start_p2v(wanted, user=user, enqueue=False).pk  # runs here, with `io`
    path = Path(pool.target_path) / volume_name(name, 0)
    killed: list[int] = []
    # Past the first 64 MiB segment: the resumed pass must start there, not at zero.
    watcher = when_allocated(path, 72 * MIB, lambda: killed.append(sshd.kill_sessions()))
    job = run(job_id)
    watcher.join(timeout=60)
    assert killed and killed[0] >= 1
    assert job.state == "succeeded", job.error
    copied = job.result["disks"][0]
    assert copied["attempts"] == 2
    assert copied["bytes_sent"] < 1.3 * copied["size"]  # not started again from zero
    assert file_sha256(copied["path"]) == disks["big"].sha256()
    assert any("Resuming at offset" in line for _stamp, line in job.log)


def test_cancel_removes_the_half_made_volume(admin_client_tx: Client, pool: Pool,
                                             sshd: SshServer,
                                             disks: dict[str, LoopDisk]) -> None:
    fingerprint = inventory(admin_client_tx, sshd)["host_key_fingerprint"]
    started = start(admin_client_tx, sshd, fingerprint, pool, [disks["big"].device],
                    "p2v-cancel", bwlimit_mib=16)
    job_id = started.json()["id"]
    path = Path(pool.target_path) / volume_name("p2v-cancel", 0)

    def cancel() -> None:
        try:
            Job.objects.filter(pk=job_id).update(cancel_requested=True)
        finally:
            connection.close()

    watcher = when_allocated(path, 16 * MIB, cancel)
    job = run(job_id)
    watcher.join(timeout=60)
    assert job.state == "cancelled"
    assert not path.exists()
    assert not Volume.objects.filter(pool=pool, name=volume_name("p2v-cancel", 0)).exists()
    assert not Guest.objects.filter(name="p2v-cancel").exists()


def test_changed_host_key_and_missing_disk_are_refused(admin_client_tx: Client, pool: Pool,
                                                       sshd: SshServer,
                                                       disks: dict[str, LoopDisk]) -> None:
    fingerprint = inventory(admin_client_tx, sshd)["host_key_fingerprint"]
    missing = start(admin_client_tx, sshd, fingerprint, pool, ["/dev/no-such-disk"], "p2v-x")
    assert missing.status_code == 400
    assert "has no disk /dev/no-such-disk" in missing.json()["detail"]

    sshd.stop()
    sshd.start(new_key=True)
    changed = start(admin_client_tx, sshd, fingerprint, pool, [disks["full"].device], "p2v-x")
    assert changed.status_code == 400
    assert "does not match the confirmed fingerprint" in changed.json()["detail"]
    again = post(admin_client_tx, "/api/v1/p2v/inventory/",
                 {"address": sshd.address, "port": sshd.port})
    assert again.status_code == 400 and "changed" in again.json()["detail"]
    assert not Job.objects.filter(kind="p2v").exists()
    assert not Volume.objects.filter(pool=pool, name__startswith="p2v-x").exists()
    assert AuditRecord.objects.filter(action="p2v.start", result="failed").count() == 2


def test_verify_names_the_region_that_differs(pool: Pool) -> None:
    import hashlib

    from conversions.p2v.copy import DiskCopy, Target
    from conversions.p2v.verify import VerifyMismatch, verify_disk
    from hosts.virt import volumes as virt

    host = pool.host
    info = virt.create_volume(VirtTarget(host.uri, allow_insecure=True),
                              pool.name, f"p2v-verify-{os.getpid()}.img", 3 * MIB,
                              "raw")
    try:
        data = os.urandom(3 * MIB)
        with virt.VolumeUpload(VirtTarget(host.uri, allow_insecure=True), info.path) as upload:
            upload.write(data)
        copy = DiskCopy(device="/dev/sdz", size=3 * MIB, digests={
            offset: hashlib.sha256(data[offset:offset + MIB]).digest()
            for offset in range(0, 3 * MIB, MIB)})
        target = Target(host.uri, info.path, True, files_local=True)
        verify_disk(copy, target)  # equal: no error
        copy.digests[MIB] = bytes(32)
        with pytest.raises(VerifyMismatch) as refused:
            verify_disk(copy, target)
        assert refused.value.regions == [(MIB, 2 * MIB)]
        assert "differs from the source in bytes 1048576-2097151" in str(refused.value)
    finally:
        virt.delete_volume(VirtTarget(host.uri, allow_insecure=True), info.path)


def test_p2v_page_previews_and_starts(admin_client_tx: Client, pool: Pool, sshd: SshServer,
                                      disks: dict[str, LoopDisk], viewer_client: Any) -> None:
    page = admin_client_tx.get("/storage/p2v/")
    assert page.status_code == 200 and P2V_IDENTITY.public_key() in page.content.decode()
    assert viewer_client.get("/storage/p2v/").status_code == 403
    preview = admin_client_tx.post("/storage/p2v/", {"step": "inventory",
                                                     "address": sshd.address,
                                                     "port": sshd.port})
    html = preview.content.decode()
    assert preview.status_code == 200 and disks["full"].device in html, html[-2000:]
    fingerprint = preview.context["fingerprint"]
    assert fingerprint in html
    assert '<option value="qcow2">qcow2</option>' in html  # the volume format is a choice
    assert 'id="start-password"' not in html  # the key logged in: no password to ask again
    started = admin_client_tx.post("/storage/p2v/", {
        "step": "start", "address": sshd.address, "port": sshd.port, "fingerprint": fingerprint,
        "disks": [disks["full"].device], "host": pool.host.pk, "pool": pool.pk,
        "name": "p2v-page", "network": "default", "keep_macs": "on"})
    job = Job.objects.get(kind="p2v")
    assert started.status_code == 302 and started.url == f"/jobs/{job.pk}/"
    assert job.params["disks"] == [{"device": disks["full"].device, "size": 48 * MIB}]
    done = run(job.pk)
    assert done.state == "succeeded", done.error
    assert Guest.objects.get(pk=done.result["guest"]).name == "p2v-page"


def test_a_disk_that_vanished_before_the_job_ran(admin_client_tx: Client, pool: Pool,
                                                 sshd: SshServer,
                                                 disks: dict[str, LoopDisk]) -> None:
    fingerprint = inventory(admin_client_tx, sshd)["host_key_fingerprint"]
    started = start(admin_client_tx, sshd, fingerprint, pool, [disks["full"].device],
                    "p2v-vanished")
    assert started.status_code == 202, started.json()
    detach(disks["full"])  # unplugged between the start and the worker taking the job
    job = run(started.json()["id"])
    assert job.state == "failed"
    assert f"no longer has the disk {disks['full'].device}" in job.error
    assert not Volume.objects.filter(pool=pool, name__startswith="p2v-vanished").exists()
    assert not (Path(pool.target_path) / volume_name("p2v-vanished", 0)).exists()
    assert not Guest.objects.filter(name="p2v-vanished").exists()
    assert AuditRecord.objects.filter(action="p2v.run", result="failed").exists()


def test_a_pool_without_room_is_refused_before_anything_is_made(
        admin_client_tx: Client, pool: Pool, sshd: SshServer,
        disks: dict[str, LoopDisk]) -> None:
    fingerprint = inventory(admin_client_tx, sshd)["host_key_fingerprint"]
    Pool.objects.filter(pk=pool.pk).update(available=40 * MIB)  # the disk needs 48 MiB
    refused = start(admin_client_tx, sshd, fingerprint, pool, [disks["full"].device],
                    "p2v-full-pool")
    assert refused.status_code == 400
    assert refused.json()["detail"] == (f"Pool '{pool.name}' has 40 MiB free; the disks "
                                        "need 48 MiB.")
    Pool.objects.filter(pk=pool.pk).update(available=90 * MIB)  # raw fits, qcow2 does not
    qcow2 = start(admin_client_tx, sshd, fingerprint, pool, [disks["full"].device],
                  "p2v-full-pool", format="qcow2")
    assert qcow2.status_code == 400
    assert qcow2.json()["detail"] == (f"Pool '{pool.name}' has 90 MiB free; the disks need "
                                      "96 MiB (a qcow2 disk is converted from a raw copy on "
                                      "the host).")
    assert not Job.objects.filter(kind="p2v").exists()
    assert not (Path(pool.target_path) / volume_name("p2v-full-pool", 0)).exists()


def test_the_source_network_is_taken_down_when_a_test_fails(tmp_path: Path) -> None:
    """Namespace, veth pair, sshd and loop devices go, also when the block raises."""
    seen: dict[str, Any] = {}
    with pytest.raises(RuntimeError, match="the test failed"), \
            make_source_network(index=1) as network, \
            contextlib.contextmanager(loop_disks)(tmp_path, {"d": (8, {})}) as made:
        server = SshServer(root=tmp_path, authorized_key=P2V_IDENTITY.public_key(),
                           network=network)
        server.start()
        seen.update(network=network, sshd=server.proc, disk=made["d"])
        assert network.exists() and link_exists(network.host_link)
        assert is_attached(made["d"])
        raise RuntimeError("the test failed")
    network = seen["network"]
    assert not network.exists()
    assert not link_exists(network.host_link)
    assert seen["sshd"].wait(timeout=30) is not None  # killed with the namespace
    assert not is_attached(seen["disk"])


# --- password logins ---------------------------------------------------------------------

def _shown_by(pid: int, secret: bytes) -> bool:
    """Whether ``secret`` is in the process's arguments or environment (after its exec)."""
    proc = Path(f"/proc/{pid}")
    for _ in range(200):  # the child may still be between fork and exec
        with contextlib.suppress(OSError):
            if os.readlink(proc / "exe") == "/usr/bin/ssh":
                break
        time.sleep(0.01)
    return any(secret in (proc / name).read_bytes() for name in ("cmdline", "environ"))


def _redis_values_holding(secret: bytes) -> list[str]:
    """Keys of the session's Redis databases (broker, channels, cache) whose value holds
    ``secret``, and any P2V handoff key still there."""
    import redis
    from django.conf import settings

    from conversions.p2v.handoff import redis_key

    found = []
    for offset in range(3):
        url = f"{settings.REDIS_URL}/{settings.REDIS_DB_BASE + offset}"
        with redis.Redis.from_url(url) as client:
            for key in client.scan_iter(count=500):
                value = client.dump(key) or b""
                if secret in value or key.decode(errors="replace").startswith(redis_key("")):
                    found.append(f"db{offset}:{key!r}")
    return found


def _data_dir_files_holding(secret: bytes) -> list[str]:
    from django.conf import settings

    found = subprocess.run(["grep", "-rlaF", "--", secret, str(settings.DATA_DIR)],
                           capture_output=True, check=False)
    return found.stdout.decode(errors="replace").split()


def _assert_nowhere(secret: str, job: Job, caplog: pytest.LogCaptureFixture) -> None:
    """The password is in no job row, audit record, log line, Redis value or data file."""
    raw = secret.encode()
    assert secret not in repr(list(Job.objects.filter(pk=job.pk).values()))
    assert secret not in repr(list(AuditRecord.objects.values()))
    assert secret not in caplog.text
    assert _redis_values_holding(raw) == []
    assert _data_dir_files_holding(raw) == []
    assert not list(Path(tempfile.gettempdir()).glob("xenweb-askpass-*"))


def test_password_login_copies_and_leaves_no_trace(
        admin_client_tx: Client, pool: Pool, password_sshd: SshServer,
        disks: dict[str, LoopDisk], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = admin_client_tx
    keyed = post(client, "/api/v1/p2v/inventory/", {"address": password_sshd.address,
                                                    "port": password_sshd.port})
    assert keyed.status_code == 400  # the P2V key is not enough: only the password is
    assert "refused the appliance's P2V key" in keyed.json()["detail"]
    found = inventory(client, password_sshd, password=SOURCE_PASSWORD)
    assert found["inventory"]["root"] is True

    inspected: list[bool] = []
    real_session = p2v_ssh.session

    @contextlib.contextmanager
    def inspecting(source: Any, command: list[str]) -> Iterator[Any]:
        with real_session(source, command) as proc:
            inspected.append(_shown_by(proc.pid, SOURCE_PASSWORD.encode()))
            yield proc

    monkeypatch.setattr(p2v_ssh, "session", inspecting)
    started = start(client, password_sshd, found["host_key_fingerprint"], pool,
                    [disks["full"].device], "p2v-password", password=SOURCE_PASSWORD)
    assert started.status_code == 202, started.json()
    queued = Job.objects.get(pk=started.json()["id"])
    assert queued.params["login"] == "password" and "password" not in queued.params["source"]
    job = run(queued.pk)
    assert job.state == "succeeded", job.error
    assert file_sha256(job.result["disks"][0]["path"]) == disks["full"].sha256()
    # Where this process ran the copy, no ssh it started (the copy's session and the
    # commands around it) showed the password in argv or env.
    assert (inspected and not any(inspected)) or (not inspected and job.worker != "test")
    audit = AuditRecord.objects.get(action="p2v.start", result="ok")
    assert audit.detail["login"] == "password"
    _assert_nowhere(SOURCE_PASSWORD, job, caplog)


def test_a_wrong_password_is_refused_and_leaves_nothing(
        admin_client_tx: Client, pool: Pool, password_sshd: SshServer,
        disks: dict[str, LoopDisk], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = admin_client_tx
    refusal = f"The source refused the password for root@{password_sshd.address}:22."
    wrong = "not-the-Pw 91c2"
    preview = post(client, "/api/v1/p2v/inventory/", {
        "address": password_sshd.address, "port": password_sshd.port, "password": wrong})
    assert preview.status_code == 400 and preview.json()["detail"] == refusal
    fingerprint = inventory(client, password_sshd,
                            password=SOURCE_PASSWORD)["host_key_fingerprint"]
    refused = start(client, password_sshd, fingerprint, pool, [disks["full"].device],
                    "p2v-wrong", password=wrong)
    assert refused.status_code == 400 and refused.json()["detail"] == refusal
    assert not Job.objects.filter(kind="p2v").exists()

    # The password changes while the copy runs and the connection drops: the reconnect is
    # refused, not retried, and the half-made volume goes.
    started = start(client, password_sshd, fingerprint, pool, [disks["big"].device],
                    "p2v-wrong", password=SOURCE_PASSWORD, bwlimit_mib=16)
    assert started.status_code == 202, started.json()
    path = Path(pool.target_path) / volume_name("p2v-wrong", 0)

    def change_password() -> None:
        (password_sshd.root / "shadow").write_text(shadow_line("root", "changed meanwhile"))
        password_sshd.kill_sessions()

    watcher = when_allocated(path, 16 * MIB, change_password)
    job = run(started.json()["id"])
    watcher.join(timeout=60)
    assert job.state == "failed"
    assert job.error.startswith(refusal), job.error
    # One reconnect after the drop, which the source refused: no second try.
    assert sum("Resuming at offset" in line for _stamp, line in job.log) == 1
    assert not path.exists()
    assert not Volume.objects.filter(pool=pool, name__startswith="p2v-wrong").exists()
    assert not Guest.objects.filter(name="p2v-wrong").exists()
    assert AuditRecord.objects.filter(action="p2v.run", result="failed").exists()
    _assert_nowhere(wrong, job, caplog)
    _assert_nowhere(SOURCE_PASSWORD, job, caplog)


def test_a_source_without_password_logins_says_so(admin_client_tx: Client,
                                                  sshd: SshServer) -> None:
    answer = post(admin_client_tx, "/api/v1/p2v/inventory/", {
        "address": sshd.address, "port": sshd.port, "password": SOURCE_PASSWORD})
    assert answer.status_code == 400
    assert "does not accept password logins (it offers: publickey)" in answer.json()["detail"]


def test_p2v_page_with_a_password(admin_client_tx: Client, pool: Pool,
                                  password_sshd: SshServer,
                                  disks: dict[str, LoopDisk]) -> None:
    page = admin_client_tx.get("/storage/p2v/").content.decode()
    assert 'type="password" id="password" name="password" autocomplete="off"' in page
    form = {"address": password_sshd.address, "port": password_sshd.port}
    preview = admin_client_tx.post("/storage/p2v/", {"step": "inventory", **form,
                                                     "password": SOURCE_PASSWORD})
    html = preview.content.decode()
    assert preview.status_code == 200 and disks["full"].device in html, html[-2000:]
    assert "p2v-Pw 7f3a" not in html  # the password is never sent back, escaped or not
    assert 'id="start-password" name="password" autocomplete="off" required' in html
    started = admin_client_tx.post("/storage/p2v/", {
        "step": "start", **form, "password": SOURCE_PASSWORD,
        "fingerprint": preview.context["fingerprint"], "disks": [disks["full"].device],
        "host": pool.host.pk, "pool": pool.pk, "name": "p2v-page-pw", "network": "default"})
    job = Job.objects.get(kind="p2v")
    assert started.status_code == 302 and started.url == f"/jobs/{job.pk}/"
    done = run(job.pk)
    assert done.state == "succeeded", done.error
    assert file_sha256(done.result["disks"][0]["path"]) == disks["full"].sha256()


# --- qcow2 volumes -------------------------------------------------------------------------

def qemu_img_identical(raw: Path, qcow2_path: str) -> bool:
    """qemu-img compares what a guest sees on both (explicit formats, no probing)."""
    return subprocess.run(["/usr/bin/qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2",
                           str(raw), qcow2_path], check=False).returncode == 0


def test_qcow2_copy_is_converted_on_the_host_and_verified(admin_client_tx: Client, pool: Pool,
                                                          sshd: SshServer,
                                                          disks: dict[str, LoopDisk]) -> None:
    from hosts.virt import domains

    fingerprint = inventory(admin_client_tx, sshd)["host_key_fingerprint"]
    started = start(admin_client_tx, sshd, fingerprint, pool,
                    [disks["full"].device, disks["sparse"].device], "p2v-qcow2",
                    format="qcow2")
    assert started.status_code == 202, started.json()
    job = run(started.json()["id"])
    assert job.state == "succeeded", job.error
    full_copy, sparse_copy = job.result["disks"]
    for copied, disk in ((full_copy, disks["full"]), (sparse_copy, disks["sparse"])):
        assert copied["format"] == "qcow2" and copied["path"].endswith(".qcow2")
        info = json.loads(subprocess.run(
            ["/usr/bin/qemu-img", "info", "--output=json", "-f", "qcow2", copied["path"]],
            check=True, capture_output=True, text=True).stdout)
        assert info["format"] == "qcow2" and info["virtual-size"] == disk.size
        assert "backing-filename" not in info
        assert qemu_img_identical(disk.image, copied["path"])
    assert allocated(Path(sparse_copy["path"])) < sparse_copy["size"] // 4
    # The raw staging copies are gone; the pool holds exactly the two qcow2 volumes.
    left = sorted(path.name for path in Path(pool.target_path).glob("p2v-qcow2-*"))
    assert left == ["p2v-qcow2-p2v-disk0.qcow2", "p2v-qcow2-p2v-disk1.qcow2"]
    volumes = Volume.objects.filter(pool=pool, name__startswith="p2v-qcow2")
    assert sorted(volumes.values_list("format", flat=True)) == ["qcow2", "qcow2"]
    guest = Guest.objects.get(pk=job.result["guest"])
    defined = domains.get_domain(VirtTarget(pool.host.uri, allow_insecure=True), str(guest.uuid))
    assert [(disk.source, disk.format) for disk in defined.xml.disks] == [
        (full_copy["path"], "qcow2"), (sparse_copy["path"], "qcow2")]
    assert any("converted to qcow2, verified" in line for _stamp, line in job.log)


def test_a_cancel_during_the_conversion_waits_for_it_and_removes_everything(
        admin_client_tx: Client, pool: Pool, sshd: SshServer, disks: dict[str, LoopDisk],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from django.contrib.auth import get_user_model

    from conversions.p2v import job as p2v_job

    fingerprint = inventory(admin_client_tx, sshd)["host_key_fingerprint"]
    wanted = p2v_job.Request(source=p2v_ssh.Source(sshd.address, sshd.port),
                             fingerprint=fingerprint, disks=[disks["full"].device],
                             host=pool.host, pool=pool, name="p2v-qcancel", format="qcow2")
    user = get_user_model().objects.get(username="alice-admin")
    job_id = p2v_job.start_p2v(wanted, user=user, enqueue=False).pk  # runs here, patched
    real_clone = p2v_job.virt.clone_volume
    seen: list[bool] = []

    def clone_after_a_cancel(*args: Any, progress: Any, **kwargs: Any) -> Any:
        Job.objects.filter(pk=job_id).update(cancel_requested=True)
        seen.append(Job.objects.get(pk=job_id).cancellable)
        progress(0)  # the cancel is seen while the host converts: it must not stop it
        return real_clone(*args, progress=progress, **kwargs)

    monkeypatch.setattr(p2v_job.virt, "clone_volume", clone_after_a_cancel)
    job = run(job_id)
    assert job.state == "cancelled"
    assert seen == [False]  # the job said it could not be cancelled while converting
    assert not list(Path(pool.target_path).glob("p2v-qcancel-*"))
    assert not Volume.objects.filter(pool=pool, name__startswith="p2v-qcancel").exists()
    assert not Guest.objects.filter(name="p2v-qcancel").exists()


def test_verify_reads_a_qcow2_volume_as_the_guest_sees_it(pool: Pool) -> None:
    import hashlib

    from conversions.p2v.copy import DiskCopy, Target
    from conversions.p2v.verify import VerifyMismatch, verify_disk
    from hosts.virt import volumes as virt

    host = pool.host
    name = f"p2v-qverify-{os.getpid()}"
    raw = virt.create_volume(VirtTarget(host.uri, allow_insecure=True),
                             pool.name, f"{name}.img", 5 * MIB, "raw")
    made = [raw.path]
    try:
        data = os.urandom(MIB) + bytes(2 * MIB) + os.urandom(2 * MIB)
        with virt.VolumeUpload(VirtTarget(host.uri, allow_insecure=True), raw.path) as upload:
            upload.write(data)
        converted = virt.clone_volume(VirtTarget(host.uri, allow_insecure=True),
                                      raw.path, f"{name}.qcow2", fmt="qcow2")
        made.append(converted.path)
        assert converted.format == "qcow2"
        copy = DiskCopy(device="/dev/sdz", size=5 * MIB, digests={
            offset: hashlib.sha256(data[offset:offset + MIB]).digest()
            for offset in range(0, 5 * MIB, MIB)})
        verify_disk(copy, Target(host.uri, converted.path, True, "qcow2", files_local=True))
        copy.digests[4 * MIB] = bytes(32)
        with pytest.raises(VerifyMismatch) as refused:
            verify_disk(copy, Target(host.uri, converted.path, True, "qcow2", files_local=True))
        assert refused.value.regions == [(4 * MIB, 5 * MIB)]
    finally:
        for path in made:
            virt.delete_volume(VirtTarget(host.uri, allow_insecure=True), path)


# --- the copy boots ------------------------------------------------------------------------

@pytest.fixture
def named_sshd(tmp_path: Path, admin_client_tx: Client,
               source_network: SourceNetwork) -> Iterator[SshServer]:
    """The source under its own host name (BOOT_HOSTNAME): root logs in with the P2V key."""
    yield from _key_source(tmp_path, source_network, hostname=BOOT_HOSTNAME)


@pytest.fixture
def boot_disks(tmp_path: Path) -> Iterator[Callable[[bool], LoopDisk]]:
    """Loop devices backed by copies of the lab's bootable disk (its fstab and kernel
    command line name the root /dev/sda2; hostname BOOT_HOSTNAME), or by a copy whose
    partition table is damaged; detached however the test ends."""
    made: list[LoopDisk] = []

    def attached(damaged: bool = False) -> LoopDisk:
        disk = ensure_boot_disk(BOOT_HOSTNAME, "device").path
        image = tmp_path / f"boot{len(made)}.img"
        if damaged:
            damaged_copy(disk, image)
        else:
            shutil.copy(disk, image)
        made.append(attach(image))
        return made[-1]

    yield attached
    for disk in made:
        detach(disk)


@pytest.mark.timeout(1200)
def test_the_copy_of_a_bootable_server_boots_and_shows_its_hostname(
        admin_client_tx: Client, pool: Pool, named_sshd: SshServer,
        boot_disks: Callable[[bool], LoopDisk]) -> None:
    """The root is named /dev/sda2: the guest finds it only on a bus Linux names sd*
    (the lab hosts' default for a new guest is virtio, vd*)."""
    from hosts.virt import domains

    client = admin_client_tx
    disk = boot_disks(False)
    found = inventory(client, named_sshd)
    assert found["inventory"]["hostname"] == BOOT_HOSTNAME
    started = start(client, named_sshd, found["host_key_fingerprint"], pool, [disk.device],
                    "p2v-boot", vcpus=1, memory_mib=256)
    assert started.status_code == 202, started.json()
    job = run(started.json()["id"])
    assert job.state == "succeeded", job.error
    guest = Guest.objects.select_related("host").get(pk=job.result["guest"])
    try:
        assert file_sha256(job.result["disks"][0]["path"]) == disk.sha256()
        devices = job.result["devices"]
        assert devices[0].startswith("Disks: sata (the guest has ahci; the root is named "
                                     "/dev/sda2)"), devices
        assert devices[1] == "NICs: virtio (the guest has virtio_net)."
        logged = [line for _stamp, line in job.log]
        assert all(note in logged for note in devices)
        defined = domains.get_domain(VirtTarget(pool.host.uri, allow_insecure=True),
                                     str(guest.uuid)).xml
        assert [(d.target, d.bus) for d in defined.disks] == [("sda", SATA.bus)]
        assert [nic.model for nic in defined.nics] == ["virtio"]
        assert defined_macs(guest) == [nic["mac"] for nic in found["inventory"]["nics"]]
        assert defined.description == f"P2V of {BOOT_HOSTNAME} ({found['inventory']['os_name']})"
        boot_to_banner(client, guest, BOOT_HOSTNAME)
    finally:
        remove_guest(guest, [copied["path"] for copied in job.result["disks"]])


def test_a_damaged_partition_table_fails_the_job_and_leaves_nothing(
        admin_client_tx: Client, pool: Pool, sshd: SshServer,
        boot_disks: Callable[[bool], LoopDisk]) -> None:
    """Refused by the inspection of the verified copy, which is not kept."""
    disk = boot_disks(True)
    fingerprint = inventory(admin_client_tx, sshd)["host_key_fingerprint"]
    started = start(admin_client_tx, sshd, fingerprint, pool, [disk.device], "p2v-damaged")
    assert started.status_code == 202, started.json()
    job = run(started.json()["id"])
    assert job.state == "failed"
    assert job.error.startswith(f"Inspecting the copy of {disk.device}: "), job.error
    assert "partition table is damaged" in job.error and "were kept" not in job.error
    assert not list(Path(pool.target_path).glob("p2v-damaged-*"))
    assert not Volume.objects.filter(pool=pool, name__startswith="p2v-damaged").exists()
    assert not Guest.objects.filter(name="p2v-damaged").exists()
    assert AuditRecord.objects.filter(action="volume.delete",
                                      target_label=volume_name("p2v-damaged", 0)).exists()
    assert AuditRecord.objects.filter(action="p2v.run", result="failed").exists()

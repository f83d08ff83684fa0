"""Issue 18, C2: a guest's kernel and initrd are never a host path from the request.

They are a volume chosen by id (on the guest's host, no guest's disk) or a file chosen by
name from the host's boot files directory, which only administrators set. Everything else
is refused with a 400 naming the field, and no guest is defined. On the demo host (libvirt's
test driver) and on a real lab host (libvirt/QEMU), where the refused files really exist.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from defusedxml import ElementTree as SafeET
from django.test import Client

from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtError, VirtTarget
from hosts.virt import domains as virt_domains
from hosts.virt.connection import get_connection
from hosts.virt.console import read_console_until
from hosts.virt.volumes import create_volume
from lab.paths import lab_dir
from lab.register import register_lab_host
from lab.tinyguest import TINY_GUEST_BANNER, ensure_tiny_guest, tiny_guest_cmdline
from storage.inventory import reconcile_pools
from storage.models import Volume
from tests.bootfiles import (
    DEMO_BOOT_DIR,
    INITRD,
    KERNEL,
    demo_boot_files,
    lab_boot_dir,
    lab_boot_files,
)
from tests.lab.conftest import lab_hosts  # noqa: F401
from xenweb.audit.models import AuditRecord

pytestmark = pytest.mark.django_db

WEB_DISK = "/var/lib/xen/images/web01.img"  # the demo guest web01's disk
PATHS = ["/boot/vmlinuz", "boot/vmlinuz", "vmlinuz", "../../etc/shadow",
         "/var/lib/xen/boot/../../../etc/shadow", "/proc/self/environ", "/dev/sda",
         "/dev/null", "/etc/shadow"]
BAD_NAMES = ["/etc/shadow", "/var/lib/xen/boot/vmlinuz", "../vmlinuz", "..", ".", ".hidden",
             "sub/vmlinuz", "vmlinuz/../../etc/shadow", "/proc/self/environ", "a\x00b",
             "vmlinuz\n", "-"]


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


def put(client: Client, path: str, data: dict) -> Any:
    return client.put(path, data, content_type="application/json")


def domain_names(host: Host) -> set[str]:
    conn = get_connection(host.virt_target)
    return {dom.name() for dom in conn.listAllDomains(0)}


def refused(client: Client, host: Host, field: str, **boot: Any) -> str:
    """Create a PV (demo) or HVM (lab) guest with `boot`; assert a 400 on `field` and that
    no guest exists, in the app or in libvirt. Returns the message."""
    name = f"boot-{uuid.uuid4().hex[:6]}"
    kind = "hvm" if host.is_lab else "pv"
    response = post(client, "/api/v1/guests/", {"name": name, "host": host.pk, "type": kind,
                                                "memory_mib": 160, **boot})
    assert response.status_code == 400, response.json()
    assert field in response.json(), response.json()
    assert not Guest.objects.filter(name=name).exists()
    assert name not in domain_names(host)
    return " ".join(response.json()[field])


def kernel_in_definition(host: Host, guest_id: int) -> tuple[str, str]:
    """The <os> kernel and initrd of the guest's definition, as libvirt holds it."""
    guest = Guest.objects.get(pk=guest_id)
    conn = get_connection(host.virt_target)
    root = SafeET.fromstring(conn.lookupByUUIDString(str(guest.uuid)).XMLDesc(0))
    return root.findtext("os/kernel", ""), root.findtext("os/initrd", "")


# --- demo host ----------------------------------------------------------------------------


@pytest.fixture
def booted(demo: Host, admin_user: Any) -> Host:
    demo_boot_files(demo, admin_user)
    demo.refresh_from_db()
    return demo


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("field", ["kernel", "initrd"])
def test_a_host_path_is_refused(operator_client: Client, booted: Host, field: str,
                                path: str) -> None:
    message = refused(operator_client, booted, field, **{field: path})
    assert "Host paths are not accepted" in message


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("field", ["kernel_file", "initrd_file"])
def test_a_boot_file_name_that_is_a_path_is_refused(operator_client: Client, booted: Host,
                                                     field: str, name: str) -> None:
    boot = {field: name}
    if field == "initrd_file":
        boot["kernel_file"] = KERNEL
    refused(operator_client, booted, field, **boot)


def test_a_file_not_in_the_directory_is_refused(operator_client: Client, booted: Host) -> None:
    assert "There is no file 'shadow'" in refused(operator_client, booted, "kernel_file",
                                                  kernel_file="shadow")
    assert AuditRecord.objects.filter(action="guest.create", result="refused").exists()


def test_no_boot_files_without_a_directory(operator_client: Client, demo: Host) -> None:
    assert "no boot files directory" in refused(operator_client, demo, "kernel_file",
                                                kernel_file=KERNEL)


def test_another_guests_disk_is_refused(operator_client: Client, booted: Host) -> None:
    disk = Volume.objects.get(path=WEB_DISK)
    assert "is a disk of guest 'web01'" in refused(operator_client, booted, "kernel_volume",
                                                   kernel_volume=disk.pk)
    assert "is a disk of guest 'web01'" in refused(
        operator_client, booted, "initrd_volume", kernel_file=KERNEL, initrd_volume=disk.pk)


def test_the_new_guests_own_disk_is_refused(operator_client: Client, booted: Host) -> None:
    spare = create_volume(VirtTarget(booted.uri), "default", "spare.img", 1024**2)
    reconcile_pools(booted)
    volume = Volume.objects.get(path=spare.path)
    assert "also one of the new guest's disks" in refused(
        operator_client, booted, "kernel_volume", kernel_volume=volume.pk,
        disks=[{"volume": volume.pk}])


def test_a_volume_of_another_host_is_refused(operator_client: Client, booted: Host,
                                             admin_user: Any) -> None:
    from hosts.services import enrol_host

    other = enrol_host(name="other", uri="test:///default", user=admin_user)
    made = create_volume(VirtTarget(other.uri),
                         "default-pool", f"k-{uuid.uuid4().hex[:6]}", 1024**2)
    reconcile_pools(other)
    foreign = Volume.objects.get(pool__host=other, path=made.path)
    message = refused(operator_client, booted, "kernel_volume", kernel_volume=foreign.pk)
    assert "is on host 'other', not on the guest's host 'demo'" in message
    assert "There is no volume with id" in refused(operator_client, booted, "kernel_volume",
                                                   kernel_volume=999999)


def test_kernel_and_initrd_from_the_boot_files_directory(operator_client: Client,
                                                          booted: Host) -> None:
    response = post(operator_client, "/api/v1/guests/", {
        "name": "direct", "host": booted.pk, "type": "pv", "memory_mib": 128,
        "kernel_file": KERNEL, "initrd_file": INITRD, "cmdline": "console=hvc0"})
    assert response.status_code == 201, response.json()
    assert kernel_in_definition(booted, response.json()["id"]) == (
        f"{DEMO_BOOT_DIR}/{KERNEL}", f"{DEMO_BOOT_DIR}/{INITRD}")


def test_kernel_from_a_volume_by_id(operator_client: Client, booted: Host) -> None:
    kernel = Volume.objects.get(pool__host=booted, path=f"{DEMO_BOOT_DIR}/{KERNEL}")
    response = post(operator_client, "/api/v1/guests/", {
        "name": "by-id", "host": booted.pk, "type": "pv", "memory_mib": 128,
        "kernel_volume": kernel.pk})
    assert response.status_code == 201, response.json()
    assert kernel_in_definition(booted, response.json()["id"]) == (kernel.path, "")


def test_the_boot_files_are_listed(viewer_client: Client, booted: Host) -> None:
    listed = viewer_client.get(f"/api/v1/hosts/{booted.pk}/boot-files/").json()
    assert listed == {"boot_files_dir": DEMO_BOOT_DIR, "files": [INITRD, KERNEL]}


def test_the_host_page_lists_the_boot_files_and_its_form_sets_the_directory(
        admin_client: Client, booted: Host) -> None:
    page = admin_client.get(booted.get_absolute_url()).content.decode()
    assert f"<code>{INITRD}</code>, <code>{KERNEL}</code>" in page
    assert f'action="/hosts/{booted.pk}/boot-files-dir/"' in page
    answer = admin_client.post(f"/hosts/{booted.pk}/boot-files-dir/", {"boot_files_dir": ""})
    assert answer.status_code == 302 and answer.url == booted.get_absolute_url()
    booted.refresh_from_db()
    assert booted.boot_files_dir == ""
    page = admin_client.get(booted.get_absolute_url()).content.decode()
    assert f"<code>{KERNEL}</code>" not in page


def test_only_an_admin_sets_the_boot_files_directory(admin_client: Client,
                                                     operator_client: Client,
                                                     viewer_client: Client,
                                                     demo: Host) -> None:
    url = f"/api/v1/hosts/{demo.pk}/boot-files-dir/"
    for client in (operator_client, viewer_client):
        assert put(client, url, {"boot_files_dir": "/"}).status_code == 403
        assert client.post(f"/hosts/{demo.pk}/boot-files-dir/",
                           {"boot_files_dir": "/"}).status_code == 403
    demo.refresh_from_db()
    assert demo.boot_files_dir == ""
    answer = put(admin_client, url, {"boot_files_dir": DEMO_BOOT_DIR})
    assert answer.status_code == 200 and answer.json()["boot_files_dir"] == DEMO_BOOT_DIR
    assert AuditRecord.objects.filter(action="host.boot_files_dir").exists()
    assert put(admin_client, url, {"boot_files_dir": ""}).json()["boot_files_dir"] == ""


@pytest.mark.parametrize("directory", ["relative/dir", "/", "/etc", "/etc/xen", "/proc/self",
                                       "/dev", "/boot", "/root", "/var/lib/xen/../../../etc",
                                       "/var/lib/xen/./boot", "/var/lib/xen/.boot",
                                       "/var/lib/xen/boot\n/etc"])
def test_a_directory_of_the_hosts_own_files_is_refused(admin_client: Client, demo: Host,
                                                       directory: str) -> None:
    answer = put(admin_client, f"/api/v1/hosts/{demo.pk}/boot-files-dir/",
                 {"boot_files_dir": directory})
    assert answer.status_code == 400 and "boot_files_dir" in answer.json()
    demo.refresh_from_db()
    assert demo.boot_files_dir == ""


def test_the_wizard_offers_files_and_refuses_paths(operator_client: Client,
                                                   booted: Host) -> None:
    page = operator_client.get("/guests/new/").content.decode()
    assert f'value="file:{KERNEL}"' in page and f'value="file:{INITRD}"' in page
    form = {"name": "wiz", "host": booted.pk, "type": "pv", "memory_mib": 128,
            "kernel": "/etc/shadow"}
    answer = operator_client.post("/guests/new/", form)
    assert answer.status_code == 200 and "Host paths are not accepted" in answer.content.decode()
    assert not Guest.objects.filter(name="wiz").exists()
    answer = operator_client.post("/guests/new/", {**form, "kernel": "file:../shadow"})
    assert "is not a boot file name" in answer.content.decode()
    answer = operator_client.post("/guests/new/", {**form, "kernel": f"file:{KERNEL}",
                                                   "initrd": f"file:{INITRD}"})
    assert answer.status_code == 302, answer.content.decode()
    created = Guest.objects.get(name="wiz")
    assert kernel_in_definition(booted, created.pk)[0] == f"{DEMO_BOOT_DIR}/{KERNEL}"


# --- a real lab host (libvirt/QEMU): the refused files exist --------------------------------


@pytest.fixture
def lab(lab_hosts: list[Any], admin_user: Any) -> Host:  # noqa: F811
    host, _ = register_lab_host(lab_hosts[0])
    lab_boot_files(host, admin_user)
    host.refresh_from_db()
    return host


def _block_device() -> str | None:
    for name in sorted(os.listdir("/dev")):
        if stat.S_ISBLK(os.lstat(f"/dev/{name}").st_mode):
            return f"/dev/{name}"
    return None


@pytest.fixture
def traps(lab: Host) -> Iterator[tuple[Path, list[str]]]:
    """Files in the lab's boot files directory that must never boot: links out of it (to a
    root-only secret, /proc/self/environ, device nodes), a copy of the secret, a directory
    and a FIFO. Yields the secret and the trap names."""
    secret = lab_dir() / f"secret-{uuid.uuid4().hex[:6]}"  # outside the boot directory
    secret.write_text("TOP-SECRET root-only host file\n")
    secret.chmod(0o600)
    directory = lab_boot_dir()
    links = {"link-secret": str(secret), "link-environ": "/proc/self/environ",
             "link-null": "/dev/null", "link-up": f"../{secret.name}"}
    block = _block_device()
    if block:
        links["link-block"] = block
    made: list[Path] = []
    for name, target in links.items():
        (directory / name).symlink_to(target)
        made.append(directory / name)
    (directory / "copy-secret").write_bytes(secret.read_bytes())
    (directory / "subdir").mkdir()
    os.mkfifo(directory / "fifo")
    made += [directory / "copy-secret", directory / "subdir", directory / "fifo"]
    try:
        yield secret, [path.name for path in made]
    finally:
        for path in made:
            path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
        secret.unlink()


def test_lab_refuses_host_paths_and_traps_in_the_boot_directory(
        operator_client: Client, lab: Host, traps: tuple[Path, list[str]]) -> None:
    secret, names = traps
    image = ensure_tiny_guest()
    for path in (str(image.kernel), str(lab_boot_dir() / KERNEL), str(secret),
                 "/proc/self/environ", "/dev/loop0", f"../../{secret.name}"):
        assert "Host paths are not accepted" in refused(operator_client, lab, "kernel",
                                                        kernel=path)
        refused(operator_client, lab, "initrd", kernel_file=KERNEL, initrd=path)
    reasons = {}
    for name in names:
        reasons[name] = refused(operator_client, lab, "kernel_file", kernel_file=name)
        refused(operator_client, lab, "initrd_file", kernel_file=KERNEL, initrd_file=name)
    # libvirt lists a link as the file it points to: what it points to is refused.
    for name in ("link-secret", "link-environ", "link-up", "copy-secret"):
        assert "is not a kernel image" in reasons[name], reasons
    for name in ("link-null", "fifo"):  # libvirt does not list them
        assert "There is no file" in reasons[name], reasons
    assert "not a regular file" in reasons["subdir"], reasons
    for name in ("../" + secret.name, secret.name, "link-secret/.."):
        refused(operator_client, lab, "kernel_file", kernel_file=name)


def test_lab_refuses_a_disk_and_another_hosts_volume(
        operator_client: Client, lab: Host, lab_hosts: list[Any],  # noqa: F811
        admin_user: Any) -> None:
    disk = create_volume(VirtTarget(lab.uri, allow_insecure=True),
                         "local", f"disk-{uuid.uuid4().hex[:6]}.img", 1024**2)
    reconcile_pools(lab)
    volume = Volume.objects.get(pool__host=lab, path=disk.path)
    owner = post(operator_client, "/api/v1/guests/", {
        "name": f"owner-{uuid.uuid4().hex[:6]}", "host": lab.pk, "type": "hvm",
        "memory_mib": 64, "disks": [{"volume": volume.pk}]})
    assert owner.status_code == 201, owner.json()
    try:
        assert f"is a disk of guest '{owner.json()['name']}'" in refused(
            operator_client, lab, "kernel_volume", kernel_volume=volume.pk)
        other, _ = register_lab_host(lab_hosts[1])
        theirs = create_volume(VirtTarget(other.uri, allow_insecure=True),
                               "local", f"k-{uuid.uuid4().hex[:6]}", 1024**2)
        reconcile_pools(other)
        foreign = Volume.objects.get(pool__host=other, path=theirs.path)
        assert "not on the guest's host" in refused(operator_client, lab, "kernel_volume",
                                                    kernel_volume=foreign.pk)
    finally:
        guest = Guest.objects.get(pk=owner.json()["id"])
        virt_domains.undefine(VirtTarget(lab.uri, allow_insecure=True), str(guest.uuid))


def test_lab_guest_boots_the_kernel_and_initrd_chosen_by_name(operator_client: Client,
                                                               lab: Host) -> None:
    name = f"direct-{uuid.uuid4().hex[:6]}"
    created = post(operator_client, "/api/v1/guests/", {
        "name": name, "host": lab.pk, "type": "hvm", "memory_mib": 160,
        "kernel_file": KERNEL, "initrd_file": INITRD, "cmdline": tiny_guest_cmdline()})
    assert created.status_code == 201, created.json()
    guest = Guest.objects.get(pk=created.json()["id"])
    directory = lab_boot_dir()
    assert kernel_in_definition(lab, guest.pk) == (str(directory / KERNEL),
                                                   str(directory / INITRD))
    boots_then_goes(operator_client, lab, guest)


def boots_then_goes(client: Client, lab: Host, guest: Guest, kernel: str = "") -> None:
    """The guest (defined with `kernel`, when given) starts and prints the tiny guest's
    banner; then it is removed."""
    try:
        if kernel:
            assert kernel_in_definition(lab, guest.pk)[0] == kernel
        started = post(client, f"/api/v1/guests/{guest.pk}/start/")
        assert started.status_code == 200, started.json()
        assert TINY_GUEST_BANNER in read_console_until(VirtTarget(lab.uri, allow_insecure=True),
                                                       str(guest.uuid),
                                                       TINY_GUEST_BANNER, 120)
    finally:
        try:
            virt_domains.destroy(VirtTarget(lab.uri, allow_insecure=True), str(guest.uuid))
        except VirtError:
            pass
        virt_domains.undefine(VirtTarget(lab.uri, allow_insecure=True), str(guest.uuid))


def test_lab_kernel_volume_by_id_boots(operator_client: Client, lab: Host) -> None:
    """A kernel an operator put into a pool of the host (here copied into the lab host's
    'local' pool), chosen by its volume id."""
    name = f"vmlinuz-{uuid.uuid4().hex[:6]}"
    made = create_volume(VirtTarget(lab.uri, allow_insecure=True), "local", name, 1024)
    Path(made.path).write_bytes(ensure_tiny_guest().kernel.read_bytes())
    reconcile_pools(lab)
    kernel = Volume.objects.get(pool__host=lab, path=made.path)
    created = post(operator_client, "/api/v1/guests/", {
        "name": f"byid-{uuid.uuid4().hex[:6]}", "host": lab.pk, "type": "hvm",
        "memory_mib": 160, "kernel_volume": kernel.pk, "initrd_file": INITRD,
        "cmdline": tiny_guest_cmdline()})
    assert created.status_code == 201, created.json()
    guest = Guest.objects.get(pk=created.json()["id"])
    try:
        boots_then_goes(operator_client, lab, guest, kernel=made.path)
    finally:
        os.unlink(made.path)


def test_changing_the_directory_follows_on_the_host(operator_client: Client, booted: Host,
                                                    admin_user: Any) -> None:
    """A directory an existing pool serves is used as it is (its disks stay refused as
    kernels); the app's own pool for the former directory goes; none means no boot files."""
    from hosts.virt.bootfiles import BOOT_POOL
    from storage.bootfiles import set_boot_files_dir

    set_boot_files_dir(booted, "/var/lib/xen/images", user=admin_user)
    names = {pool.name() for pool in get_connection(VirtTarget(booted.uri)).listAllStoragePools(0)}
    assert "default" in names and BOOT_POOL not in names
    assert "is a disk of guest 'web01'" in refused(operator_client, booted, "kernel_file",
                                                   kernel_file="web01.img")
    set_boot_files_dir(booted, "", user=admin_user)
    assert "no boot files directory" in refused(operator_client, booted, "kernel_file",
                                                kernel_file=KERNEL)

"""C1 of issue 18: save and restore take no host path from anyone, and a restore refuses a
save image whose domain XML is not the guest's own.

On the embedded demo host (libvirt's test driver, which writes from inside this process):
every way of sending a path is refused before anything is written, saves land only in the
data dir's saves folder under the guest's UUID, a tampered save image is refused (the
guest stays off, the image stays), volumes of other hosts or the demo pools are refused,
viewers cannot save or restore. The XML comparison itself is checked on hand-made pairs.
The lab QEMU host versions (save volumes, uploads of edited images) are in
test_save_restore_paths_lab.py.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from guests.models import Guest
from guests.save_images import demo_save_path, volume_name
from guests.slow_actions import restore_body, save_body
from hosts.models import Host
from hosts.services import enrol_host
from hosts.virt import VirtOperationError, VirtTarget, save_image, save_xml
from hosts.virt import domains as virt
from storage.errors import StorageError
from storage.inventory import reconcile_pools
from storage.models import Pool, Volume
from storage.services import check_name, create_volume
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

pytestmark = pytest.mark.django_db

TEST_MAGIC = b"TestGuestMagic\x00"


def post(client: Client, path: str, data: Any = None) -> Any:
    return client.post(path, {} if data is None else data, content_type="application/json")


def guest(name: str) -> Guest:
    return Guest.objects.select_related("host").get(name=name)


@pytest.fixture
def saves_dir(settings: Any, tmp_path: Path) -> Path:
    """The data dir of this test (its `saves` folder is where demo saves may go)."""
    settings.DATA_DIR = tmp_path / "data"
    settings.DATA_DIR.mkdir()
    return settings.DATA_DIR / "saves"


def run(response: Any, body: Any) -> Job:
    assert response.status_code == 202, response.json()
    job = Job.objects.get(pk=response.json()["id"])
    run_job(job.pk, body, task_id="t", worker="w")  # what the Celery worker runs
    job.refresh_from_db()
    return job


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


# -- no path, ever ----------------------------------------------------------------------


def hostile_paths(tmp_path: Path) -> list[str]:
    victim = tmp_path / "victim"
    victim.write_text("root only\n")
    victim.chmod(0o600)
    link = tmp_path / "link.save"
    link.symlink_to(victim)
    return [str(victim), "victim.save", "../../../../tmp/c1.save", "saves/../../c1.save",
            "/proc/self/environ", "/proc/self/fd/1", "/dev/null", "/dev/sda", str(link),
            "/etc/../etc/shadow", "", "~root/.ssh/authorized_keys", "file:///etc/passwd"]


@pytest.mark.parametrize("action", ["save", "restore"])
def test_a_path_is_refused_and_nothing_written(admin_client: Client, demo: Host,
                                               saves_dir: Path, tmp_path: Path,
                                               action: str) -> None:
    web = guest("web01")
    if action == "restore":
        virt.destroy(VirtTarget(demo.uri), str(web.uuid))
        web.state = "shutoff"
        web.save()
    paths = hostile_paths(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    for path in paths:
        response = post(admin_client, f"/api/v1/guests/{web.pk}/{action}/", {"path": path})
        assert response.status_code == 400, (path, response.json())
        assert "take no host path" in response.json()["path"][0], path
    # Alongside a legitimate parameter, as a list, as an object: refused the same way.
    for data in ({"path": "/tmp/x", "pool": 1}, {"path": ["/etc/shadow"]},
                 {"path": {"file": "/etc/shadow"}}):
        assert post(admin_client, f"/api/v1/guests/{web.pk}/{action}/", data).status_code \
            == 400
    assert not Job.objects.exists()
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert not saves_dir.exists()
    assert guest("web01").state == ("running" if action == "save" else "shutoff")


def test_parameters_belong_to_their_action(admin_client: Client, demo: Host) -> None:
    """Unknown or misplaced parameters are refused, not ignored."""
    web = guest("web01")
    base = f"/api/v1/guests/{web.pk}"
    for action, data in (("start", {"pool": 1}), ("save", {"volume": 1}),
                         ("restore", {"pool": 1}), ("shutdown", {"timeout": 30, "path": "/x"}),
                         ("pause", {"kernel": "/etc/shadow"}), ("save", {"pool": "/tmp"}),
                         ("restore", {"volume": "../x"}), ("save", {"pool": 0})):
        response = post(admin_client, f"{base}/{action}/", data)
        assert response.status_code == 400, (action, data, response.json())
    assert post(admin_client, f"{base}/save/", ["/etc/shadow"]).status_code == 400
    assert not Job.objects.exists()
    assert guest("web01").state == "running"


def test_the_demo_host_takes_no_pool(admin_client: Client, demo: Host, saves_dir: Path) -> None:
    web = guest("web01")
    pool = Pool.objects.get(host=demo, name="default")
    response = post(admin_client, f"/api/v1/guests/{web.pk}/save/", {"pool": pool.pk})
    assert response.status_code == 400
    assert "data directory" in response.json()["detail"]
    assert not Job.objects.exists() and not saves_dir.exists()


def test_the_page_refuses_a_path_too(admin_client: Client, demo: Host, saves_dir: Path,
                                     tmp_path: Path) -> None:
    """The page's action form ignores everything but its own fields: a posted path never
    reaches a job's parameters, the save goes where the app says."""
    web = guest("web01")
    victim = tmp_path / "victim"
    response = admin_client.post(f"/guests/{web.pk}/save/", {"path": str(victim)})
    assert response.status_code == 302
    job = Job.objects.get(kind="guest.save")
    assert "path" not in job.params
    run_job(job.pk, save_body, task_id="t", worker="w")
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    assert not victim.exists()
    assert files_under(saves_dir) == {demo_save_path(guest("web01"))}


# -- the demo round trip ----------------------------------------------------------------


def test_demo_save_goes_to_the_saves_folder_and_restore_removes_it(
        admin_client: Client, demo: Host, saves_dir: Path) -> None:
    web = guest("web01")
    job = run(post(admin_client, f"/api/v1/guests/{web.pk}/save/"), save_body)
    assert job.state == "succeeded", job.error
    image = saves_dir / f"{web.uuid}.save"
    assert files_under(saves_dir) == {image}
    assert image.read_bytes().startswith(TEST_MAGIC)
    saved = guest("web01")
    assert saved.state == "shutoff" and saved.saved_path == str(image)
    assert saved.saved_volume is None and "<uuid>" in saved.saved_definition
    page = admin_client.get(f"/guests/{web.pk}/").content.decode()
    assert 'data-action="restore"' in page and str(image) in page

    job = run(post(admin_client, f"/api/v1/guests/{web.pk}/restore/"), restore_body)
    assert job.state == "succeeded", job.error
    restored = guest("web01")
    assert restored.state == "running" and restored.saved_path == ""
    assert files_under(saves_dir) == set()  # the app's own save image is removed
    # Nothing saved any more: a restore is refused up front.
    virt.destroy(VirtTarget(demo.uri), str(web.uuid))
    Guest.objects.filter(pk=web.pk).update(state="shutoff")
    again = post(admin_client, f"/api/v1/guests/{web.pk}/restore/")
    assert again.status_code == 400 and "no saved memory" in again.json()["detail"]


def test_the_guest_page_buttons_save_and_restore(admin_client: Client, demo: Host,
                                                 saves_dir: Path) -> None:
    web = guest("web01")
    assert 'data-action="save"' in admin_client.get(f"/guests/{web.pk}/").content.decode()
    assert admin_client.post(f"/guests/{web.pk}/save/").status_code == 302
    run_job(Job.objects.get(kind="guest.save").pk, save_body, task_id="t", worker="w")
    assert guest("web01").state == "shutoff"
    assert admin_client.post(f"/guests/{web.pk}/restore/").status_code == 302
    job = Job.objects.get(kind="guest.restore")
    run_job(job.pk, restore_body, task_id="t", worker="w")
    job.refresh_from_db()
    assert job.state == "succeeded", job.error
    assert guest("web01").state == "running"


# -- tampered images --------------------------------------------------------------------


def read_test_image(path: Path) -> str:
    data = path.read_bytes()
    assert data.startswith(TEST_MAGIC)
    (length,) = struct.unpack_from("<i", data, len(TEST_MAGIC))
    return data[len(TEST_MAGIC) + 4:len(TEST_MAGIC) + 4 + length].decode().rstrip("\0")


def write_test_image(path: Path, xml: str) -> None:
    body = xml.encode() + b"\0"
    path.write_bytes(TEST_MAGIC + struct.pack("<i", len(body)) + body)


WEB01_DISK = "<source file='/var/lib/xen/images/web01.img'/>"


def tampered(xml: str, variant: str) -> str:
    """The attack of the finding and its variants, made on the XML inside the image."""
    devices = "<devices>"
    edits = {
        "disk is a root-only host file": (WEB01_DISK, "<source file='/etc/shadow'/>"),
        "disk is dom0's own disk": (WEB01_DISK,
                                    "<source file='/dev/sda'/>"),
        "disk is another guest's disk": (WEB01_DISK,
                                         "<source file='/var/lib/xen/images/db01-root.img'/>"),
        "another guest's uuid": ("1afbaad2-706f-40d4-9e75-b6b808d7739a",
                                 "e6bc01b1-6fd6-492d-afe1-8f9b75c9d75c"),
        "a new uuid": ("1afbaad2-706f-40d4-9e75-b6b808d7739a",
                       "11111111-2222-3333-4444-555555555555"),
        "another name": ("<name>web01</name>", "<name>web02</name>"),
        "an extra disk": (devices, devices + "<disk type='block' device='disk'>"
                          "<source dev='/dev/vda'/><target dev='xvdz' bus='xen'/></disk>"),
        "a serial log to a host file": (devices, devices + "<serial type='file'>"
                                        "<source path='/root/.ssh/authorized_keys'/></serial>"),
        "a kernel from the host": ("<bootloader>/usr/lib/xen-4.17/bin/pygrub</bootloader>",
                                   "<os><kernel>/boot/vmlinuz</kernel></os>"
                                   "<bootloader>/usr/lib/xen-4.17/bin/pygrub</bootloader>"),
        "another bootloader": ("/usr/lib/xen-4.17/bin/pygrub", "/bin/sh"),
        "an emulator": (devices, devices + "<emulator>/tmp/evil</emulator>"),
        "a host filesystem": (devices, devices + "<filesystem type='mount'>"
                              "<source dir='/'/><target dir='root'/></filesystem>"),
        "a host PCI device": (devices, devices + "<hostdev mode='subsystem' type='pci' "
                              "managed='yes'><source><address domain='0' bus='0' slot='31' "
                              "function='2'/></source></hostdev>"),
        "another bridge": ("<source bridge='xenbr0'/>", "<source bridge='xenbr-mgmt'/>"),
        "a vif script": ("<source bridge='xenbr0'/>",
                         "<source bridge='xenbr0'/><script path='/tmp/evil.sh'/>"),
        "a static root label": ("</devices>", "</devices><seclabel type='static' model='dac' "
                                "relabel='no'><label>+0:+0</label></seclabel>"),
    }
    old, new = edits[variant]
    assert old in xml, (variant, xml)
    return xml.replace(old, new, 1)


VARIANTS = ["disk is a root-only host file", "disk is dom0's own disk",
            "disk is another guest's disk", "another guest's uuid", "a new uuid",
            "another name", "an extra disk", "a serial log to a host file",
            "a kernel from the host", "another bootloader", "an emulator", "a host filesystem",
            "a host PCI device", "another bridge", "a vif script", "a static root label"]


def test_a_tampered_save_image_is_refused(admin_client: Client, demo: Host,
                                          saves_dir: Path) -> None:
    """The app's own save file, changed behind its back (only the appliance can write the
    saves folder, so this is defence in depth): every change but libvirt's own is refused
    before libvirt restores anything; the guest stays off and the image is kept."""
    web = guest("web01")
    assert run(post(admin_client, f"/api/v1/guests/{web.pk}/save/"), save_body).state \
        == "succeeded"
    image = demo_save_path(web)
    original = image.read_bytes()
    xml = read_test_image(image)
    for variant in VARIANTS:
        write_test_image(image, tampered(xml, variant))
        response = post(admin_client, f"/api/v1/guests/{web.pk}/restore/")
        assert response.status_code == 400, (variant, response.json())
        detail = response.json()["detail"]
        assert "differs from the guest's own" in detail or "not of 'web01'" in detail, \
            (variant, detail)
    refusals = AuditRecord.objects.filter(action="guest.restore", result="refused")
    assert refusals.count() == len(VARIANTS)
    assert any("/etc/shadow" in r.message for r in refusals)
    # Changed between the request's check and the job: the job checks again.
    image.write_bytes(original)
    response = post(admin_client, f"/api/v1/guests/{web.pk}/restore/")
    assert response.status_code == 202
    write_test_image(image, tampered(xml, "disk is a root-only host file"))
    job = Job.objects.get(pk=response.json()["id"])
    run_job(job.pk, restore_body, task_id="t", worker="w")
    job.refresh_from_db()
    assert job.state == "failed" and "/etc/shadow" in job.error
    assert virt.get_domain(VirtTarget(demo.uri), str(web.uuid)).state == "shutoff"
    assert guest("web01").saved_path == str(image) and image.exists()  # nothing lost

    for junk in (b"", b"not a save image", TEST_MAGIC + b"\xff\xff\xff\x7f"):
        image.write_bytes(junk)
        response = post(admin_client, f"/api/v1/guests/{web.pk}/restore/")
        assert response.status_code == 400, junk
        assert "holds no libvirt save image" in response.json()["detail"]
    image.write_bytes(original)  # put back: the restore works
    assert run(post(admin_client, f"/api/v1/guests/{web.pk}/restore/"), restore_body).state \
        == "succeeded"
    assert guest("web01").state == "running"


def test_a_replaced_save_file_is_refused(admin_client: Client, demo: Host,
                                         saves_dir: Path, tmp_path: Path) -> None:
    """The save file swapped for another guest's save, a symlink (to that save, a host
    file, a device) or a FIFO."""
    web, db = guest("web01"), guest("db01")
    assert run(post(admin_client, f"/api/v1/guests/{db.pk}/save/"), save_body).state \
        == "succeeded"
    assert run(post(admin_client, f"/api/v1/guests/{web.pk}/save/"), save_body).state \
        == "succeeded"
    image = demo_save_path(web)
    image.write_bytes(demo_save_path(db).read_bytes())
    response = post(admin_client, f"/api/v1/guests/{web.pk}/restore/")
    assert response.status_code == 400 and "not of 'web01'" in response.json()["detail"]
    for target in (demo_save_path(db), Path("/etc/passwd"), Path("/dev/zero")):
        image.unlink()
        image.symlink_to(target)
        response = post(admin_client, f"/api/v1/guests/{web.pk}/restore/")
        assert response.status_code == 400, target
        assert "cannot be opened" in response.json()["detail"], target
    image.unlink()
    os.mkfifo(image)  # a reader that would block for ever
    response = post(admin_client, f"/api/v1/guests/{web.pk}/restore/")
    assert response.status_code == 400 and "not a regular file" in response.json()["detail"]
    assert virt.get_domain(VirtTarget(demo.uri), str(web.uuid)).state == "shutoff"
    # A saved_path that is not the app's own (a row from an older version): refused.
    Guest.objects.filter(pk=web.pk).update(saved_path=str(tmp_path / "elsewhere.save"))
    response = post(admin_client, f"/api/v1/guests/{web.pk}/restore/")
    assert response.status_code == 400 and "gone" in response.json()["detail"]


# -- volumes chosen by id ---------------------------------------------------------------


def test_restore_from_a_volume_of_another_host_or_the_demo_pools(
        admin_client: Client, admin_user: Any, demo: Host, saves_dir: Path) -> None:
    other = enrol_host(name="other", uri="test:///default", user=admin_user)
    reconcile_pools(other)
    foreign = create_volume(Pool.objects.filter(host=other).first(), name="x.save",
                            capacity=2**20)
    web = guest("web01")
    virt.destroy(VirtTarget(demo.uri), str(web.uuid))
    Guest.objects.filter(pk=web.pk).update(state="shutoff")
    response = post(admin_client, f"/api/v1/guests/{web.pk}/restore/", {"volume": foreign.pk})
    assert response.status_code == 400
    assert "not on demo" in response.json()["detail"]
    own_disk = Volume.objects.get(pool__host=demo, name="web01.img")
    response = post(admin_client, f"/api/v1/guests/{web.pk}/restore/", {"volume": own_disk.pk})
    assert response.status_code == 400 and "hold no data" in response.json()["detail"]
    missing = post(admin_client, f"/api/v1/guests/{web.pk}/restore/", {"volume": 999999})
    assert missing.status_code == 400 and "No volume" in missing.json()["detail"]
    assert not Job.objects.exists()
    assert virt.get_domain(VirtTarget(demo.uri), str(web.uuid)).state == "shutoff"


# -- roles ------------------------------------------------------------------------------


def test_a_viewer_cannot_save_or_restore(viewer_client: Client, operator_client: Client,
                                         demo: Host, saves_dir: Path) -> None:
    web = guest("web01")
    for action in ("save", "restore", "managedsave"):
        assert post(viewer_client, f"/api/v1/guests/{web.pk}/{action}/").status_code == 403
        assert viewer_client.post(f"/guests/{web.pk}/{action}/").status_code == 403
    assert not Job.objects.exists() and not saves_dir.exists()
    # An operator may, through the same checks.
    assert post(operator_client, f"/api/v1/guests/{web.pk}/save/",
                {"path": "/etc/shadow"}).status_code == 400
    assert post(operator_client, f"/api/v1/guests/{web.pk}/save/").status_code == 202


# -- names and the comparison -----------------------------------------------------------


@pytest.mark.parametrize("name", ["../../etc/cron.d/x", ".hidden", "a/b", "..", "web 01;rm",
                                  "x" * 300, "", "-", "web01"])
def test_save_volume_names_are_safe(demo: Host, name: str) -> None:
    web = guest("web01")
    web.name = name
    made = volume_name(web)
    pool = Pool.objects.get(host=demo, name="default")
    check_name(pool, made)  # raises if unsafe
    assert "/" not in made and ".." not in made and not made.startswith(".")
    assert made.endswith(".save")


@pytest.mark.parametrize("bad", ["../x", "a/b", ".hidden", "a..b", "..", "/etc/passwd", ""])
def test_volume_names_refuse_path_tricks(demo: Host, bad: str) -> None:
    with pytest.raises(StorageError):
        check_name(Pool.objects.get(host=demo, name="default"), bad)


DEFINITION = """<domain type='kvm'>
  <name>g</name><uuid>6a91cf01-b8f0-4eb5-98d7-4af991143781</uuid>
  <memory unit='KiB'>163840</memory><currentMemory unit='KiB'>163840</currentMemory>
  <os><type arch='x86_64'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>
    <nvram>/var/lib/libvirt/qemu/nvram/g_VARS.fd</nvram></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='/pool/g.img'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
      <source file='/iso/debian.iso'/><target dev='sda' bus='sata'/><readonly/></disk>
    <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/>
      <model type='virtio'/></interface>
    <interface type='network'><mac address='52:54:00:00:00:02'/>
      <source network='default'/></interface>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <graphics type='vnc' port='-1' autoport='yes'/>
    <hostdev mode='subsystem' type='pci' managed='yes'><source>
      <address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/></source></hostdev>
  </devices>
</domain>"""

# What libvirt itself writes into a running domain's XML.
RUNNING = (DEFINITION
           .replace("<domain type='kvm'>", "<domain type='kvm' id='7'>")
           .replace("<currentMemory unit='KiB'>163840", "<currentMemory unit='KiB'>131072")
           .replace("<source file='/pool/g.img'/>",
                    "<source file='/pool/g.img' index='1'/><backingStore/>"
                    "<alias name='virtio-disk0'/><address type='pci' domain='0x0000' "
                    "bus='0x00' slot='0x04' function='0x0'/>")
           .replace("<model type='virtio'/></interface>",
                    "<model type='virtio'/><target dev='vnet3'/><alias name='net0'/>"
                    "</interface>")
           .replace("<source network='default'/>", "<source network='default' portid="
                    "'0d3c3c52-3f4e-4a4f-9b7e-5c0e8e2b9f10' bridge='virbr0'/>")
           .replace("<serial type='pty'>", "<serial type='pty'><source path='/dev/pts/4'/>")
           .replace("<console type='pty'>",
                    "<console type='pty' tty='/dev/pts/4'><source path='/dev/pts/4'/>")
           .replace("port='-1' autoport='yes'", "port='5903' autoport='yes' passwd='s3cret'")
           .replace("</devices>", "</devices><seclabel type='dynamic' model='dac' "
                    "relabel='yes'><label>+64055:+994</label><imagelabel>+64055:+994"
                    "</imagelabel></seclabel><resource><partition>/machine</partition>"
                    "</resource>"))


def test_what_libvirt_changes_is_accepted() -> None:
    assert save_xml.differences(RUNNING, DEFINITION) == []
    assert save_xml.differences(DEFINITION, DEFINITION) == []


@pytest.mark.parametrize(("old", "new"), [
    ("/pool/g.img", "/etc/shadow"),
    ("/pool/g.img", "/pool/other-guest.img"),
    ("<driver name='qemu' type='raw'/>\n      <source file='/pool/g.img'",
     "<driver name='qemu' type='qcow2'/>\n      <source file='/pool/g.img'"),
    ("<target dev='sda' bus='sata'/><readonly/>", "<target dev='sda' bus='sata'/>"),
    ("/usr/share/OVMF/OVMF_CODE.fd", "/etc/shadow"),
    ("/var/lib/libvirt/qemu/nvram/g_VARS.fd", "/root/.ssh/authorized_keys"),
    ("/usr/bin/qemu-system-x86_64", "/tmp/qemu"),
    ("<source bridge='br0'/>", "<source bridge='mgmt0'/>"),
    ("<source network='default' ", "<source network='isolated' "),
    ("bus='0x03'", "bus='0x00'"),
    ("6a91cf01-b8f0-4eb5-98d7-4af991143781", "6a91cf01-b8f0-4eb5-98d7-4af991143782"),
    ("<name>g</name>", "<name>h</name>"),
    ("<serial type='pty'><source path='/dev/pts/4'/>",
     "<serial type='file'><source path='/etc/passwd'/>"),
    ("<serial type='pty'><source path='/dev/pts/4'/>",
     "<serial type='pty'><source path='/dev/pts/4'/><log file='/etc/passwd'/>"),
    ("<backingStore/>", "<backingStore type='file'><format type='raw'/>"
     "<source file='/dev/sda'/></backingStore>"),
    ("<source file='/pool/g.img' index='1'/>",
     "<source file='/pool/g.img'><seclabel model='dac' relabel='no'/></source>"),
    ("</devices>", "</devices><seclabel type='static' model='dac' relabel='no'>"
     "<label>+0:+0</label></seclabel>"),
    ("</devices>", "</devices><seclabel type='dynamic' model='selinux' relabel='yes'>"
     "<baselabel>system_u:system_r:unconfined_t:s0</baselabel></seclabel>"),
    ("</devices>", "</devices><resource><partition>/</partition></resource>"),
    ("</devices>", "</devices><qemu:commandline xmlns:qemu="
     "'http://libvirt.org/schemas/domain/qemu/1.0'><qemu:arg value='-drive'/>"
     "<qemu:arg value='file=/dev/sda'/></qemu:commandline>"),
    ("<devices>", "<devices><filesystem type='mount'><source dir='/'/>"
     "<target dir='r'/></filesystem>"),
    ("<devices>", "<devices><rng model='virtio'><backend model='random'>/dev/sda"
     "</backend></rng>"),
    ("<devices>", "<devices><tpm model='tpm-tis'><backend type='passthrough'>"
     "<device path='/dev/sda'/></backend></tpm>"),
    ("<devices>", "<devices><shmem name='x'><server path='/run/x.sock'/></shmem>"),
    ("<os>", "<os><kernel>/boot/vmlinuz</kernel><initrd>/etc/shadow</initrd>"),
])
def test_any_other_change_is_refused(old: str, new: str) -> None:
    assert old in RUNNING
    changed = RUNNING.replace(old, new, 1)
    assert save_xml.differences(changed, DEFINITION), new


@pytest.mark.parametrize("junk", ["", "not xml", "<network/>", "<!DOCTYPE d [<!ENTITY e "
                                  "SYSTEM 'file:///etc/passwd'>]><domain>&e;</domain>"])
def test_unreadable_image_xml_is_refused(junk: str) -> None:
    with pytest.raises(save_xml.SaveImageXmlError):
        save_xml.differences(junk, DEFINITION)


def test_paths_never_reach_libvirt_from_the_adapter() -> None:
    """The adapter's own last guard (app code never passes such paths)."""
    for path in ("relative.save", "/var/lib/../../etc/shadow", "/proc/self/mem", "/dev/sda",
                 "/sys/x", "/a/./b", "/a//b", "/x\0y"):
        with pytest.raises(VirtOperationError):
            virt.check_app_path(path)
    assert virt.check_app_path("/var/lib/libvirt/images/g.save")
    assert os.sep == "/"


# -- reading the image's header (never libvirt's saveImageGetXMLDesc: QEMU's driver runs
# the emulator an untrusted image names to parse it) -------------------------------------

XML = "<domain type='xen'><name>g</name></domain>"


def qemu_image(xml: bytes, *, version: int = 2, data_len: int | None = None,
               cookie: int = 0, magic: bytes = save_image.QEMU_MAGIC) -> bytes:
    body = xml + b"\0"
    size = len(body) + 64 if data_len is None else data_len
    header = magic + struct.pack("<5I", version, size, 1, 0, cookie) + bytes(56)
    return header + body.ljust(max(size, len(body)), b"\0") + b"QEVM" * 10


def libxl_image(xml: bytes, *, version: int = 2, xml_len: int | None = None) -> bytes:
    body = xml + b"\0"
    size = len(body) if xml_len is None else xml_len
    return save_image.LIBXL_MAGIC + struct.pack("<2I", version, size) + bytes(40) + body \
        + b"\x00\x01libxl stream"


def parsed(data: bytes) -> str:
    return save_image.parse(lambda count: data[:count])


def test_the_header_of_each_libvirt_format_is_read() -> None:
    assert parsed(qemu_image(XML.encode())) == XML
    assert parsed(libxl_image(XML.encode())) == XML
    assert parsed(save_image.TEST_MAGIC + struct.pack("<i", len(XML)) + XML.encode()) == XML
    # libvirt reads a C string: what follows the first NUL is not part of it.
    assert parsed(qemu_image(XML.encode() + b"\0<domain><name>evil</name></domain>")) == XML
    big = "<domain>" + "<description>" + "x" * 100_000 + "</description></domain>"
    assert parsed(libxl_image(big.encode())) == big  # beyond the first read


@pytest.mark.parametrize("data", [
    b"", b"LibvirtQemudSav", qemu_image(b"<domain/>", magic=save_image.QEMU_PARTIAL),
    qemu_image(b"<domain/>", version=3), qemu_image(b"<domain/>", version=0),
    qemu_image(b"<domain/>", data_len=0), qemu_image(b"<domain/>", data_len=2**31),
    qemu_image(b"<domain/>", cookie=10**6), qemu_image(b"<domain/>")[:100],
    libxl_image(b"<domain/>", version=9), libxl_image(b"<domain/>", xml_len=2**30),
    libxl_image(b"<domain/>")[:40],
    save_image.TEST_MAGIC + struct.pack("<i", -1), save_image.TEST_MAGIC + struct.pack("<i", 9000),
    libxl_image(b"<domain/>").replace(b"<domain/>\0", b"<domain/>x"),  # no NUL in the area
    libxl_image(b"<domain>\xff\xfe</domain>"),
    libxl_image(b"<!DOCTYPE d [<!ENTITY e SYSTEM 'file:///etc/shadow'>]><domain>&e;</domain>"),
    b"QFI\xfb" + bytes(4092), bytes(8192),
])
def test_anything_else_is_no_save_image(data: bytes) -> None:
    with pytest.raises(save_image.SaveImageFormatError):
        parsed(data)
